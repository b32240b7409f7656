// The SGD update of a data-parallel sync step with the gradient sum read straight from the
// peers' memory: each rank's kernel adds every rank's gradient (in rank order, so every rank
// computes the same sum, bit for bit) and applies the update, instead of an allreduce, a join
// and a separate update kernel. For GPUs of one host whose buffers are mapped into each
// other's address space (CUDA IPC over NVLink/PCIe P2P); nccl-data's `reduce = "fused_p2p"`
// and `"push_p2p"` (where grads[r] are local slots the peers' products wrote into).
//
// Synchronisation, all on the device (so the kernel can be captured in a graph): the first
// block to arrive tells every peer "my gradient of step t is complete" (a release store into
// the peer's inbox), and every block waits until every peer has said the same for step t.
// No second barrier: the caller alternates two gradient buffers, so the buffer a peer may
// still be reading (step t) is written again only at step t+2, after this rank has seen the
// peer's step-t+1 signal, which the peer sends after its step-t kernel ended.
//
// A peer that stops (a dead process) leaves this kernel spinning; the host never waits on it
// directly but through the communicator's polled waits, which end the job after
// NNPAR_COMM_TIMEOUT as they do for an NCCL kernel stuck on a lost peer.
#pragma once
#include <cstddef>

#include <cuda_runtime_api.h>

namespace nnpar::cuda {

constexpr int kPeerSgdMaxRanks = 8;

struct PeerSgdArgs {
  int ranks = 1, rank = 0;
  // Rank p's gradient buffer of this step (this rank's own at [rank]), mapped here.
  const float* grads[kPeerSgdMaxRanks] = {};
  // Where this rank announces its steps to rank p: p's inbox[rank] (null at [rank]).
  unsigned* signal[kPeerSgdMaxRanks] = {};
  // This rank's inbox: inbox[p] is the last step rank p announced. Zero before the first step.
  const unsigned* inbox = nullptr;
  // This rank's step counter, a count of finished blocks and a count of arrived blocks (three
  // words). Zero before the first step.
  unsigned* state = nullptr;
};

// params[i] -= lr * (sum over ranks of grads[r][i]) with sgd_update's weight decay and
// momentum; n floats, every buffer 16-byte aligned. Launched without programmatic dependent
// launch: it starts only when this rank's gradient is complete.
void peer_sgd_update(std::size_t n, float lr, float momentum, float weight_decay, float* params, float* velocity,
                     const PeerSgdArgs& args, cudaStream_t stream);

}  // namespace nnpar::cuda
