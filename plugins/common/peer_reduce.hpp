// nccl-data's `reduce = "fused_p2p"` and `"push_p2p"` (and nnpar-calibrate-gpu's "peer_sgd"
// and "peer_sgd_push", which time them for `nnpar plan`): the set-up of nnpar::cuda::peer_sgd_update (see
// include/nnpar/cuda_peer_sgd.hpp). Each rank allocates its gradient buffers and an inbox,
// exports them with CUDA IPC, and maps every other rank's; the handles travel over MPI.
// Possible only where every rank runs on one host and every pair of GPUs can address each
// other's memory (P2P: NVLink or PCIe); otherwise every rank gets the same reason and the
// caller falls back to the NCCL allreduce.
//
// Two ways to move the gradients (`push`): pull (fused_p2p), where the kernel reads each
// peer's gradient buffer over P2P at the step's end, and push (push_p2p), where each rank's
// weight-gradient products also write their values into a slot per sender in every peer's
// memory while they run (cuda::GradientCopies), so the kernel sums local slots only. Either
// way the kernel adds the same values in rank order: the same sums, bit for bit.
#pragma once
#include <mpi.h>

#include <algorithm>
#include <cstddef>
#include <cstring>
#include <string>
#include <vector>

#include <cuda_runtime_api.h>

#include "nnpar/cuda_kernels.hpp"
#include "nnpar/cuda_peer_sgd.hpp"

namespace nnpar {

class PeerReduce {
 public:
  // Collective over MPI_COMM_WORLD (every rank calls it, in the same order as its other
  // collectives). `count` floats per gradient buffer.
  PeerReduce(std::size_t count, int device, bool push = false)
      : count_(count), stride_((std::max<std::size_t>(count, 1) + 63) / 64 * 64), push_(push) {
    MPI_Comm_rank(MPI_COMM_WORLD, &rank_);
    MPI_Comm_size(MPI_COMM_WORLD, &ranks_);
    slots_ = push_ ? ranks_ : 1;
    args_.ranks = ranks_;
    args_.rank = rank_;
    std::string why = local_reason(device);
    if (!agree(why.empty(), why)) return;
    why = map_peers();
    if (!agree(why.empty(), why)) return;
    ok_ = true;
  }
  PeerReduce(const PeerReduce&) = delete;
  PeerReduce& operator=(const PeerReduce&) = delete;
  ~PeerReduce() {
    for (void* p : opened_) cudaIpcCloseMemHandle(p);
    cudaFree(own_);
    cudaFree(sync_);
  }

  // Whether the fused reduce can run; if not, reason() says why (the same text on every rank).
  bool available() const { return ok_; }
  const std::string& reason() const { return reason_; }
  // This rank's gradient buffer of step parity `parity` (0 or 1).
  float* gradients(int parity) const { return slot(own_, parity, push_ ? rank_ : 0); }
  // Push: where this rank's gradient of step parity `parity` must also be written, offset by
  // `offset` floats (a layer's place in the flat buffer): its slot in every peer's memory.
  // With `weights` > 0 the bias copies follow that many floats after the weights' (a layer's
  // layout: dW then db). Count 0 when pulling.
  cuda::GradientCopies copies(int parity, std::size_t offset, std::size_t weights = 0) const {
    cuda::GradientCopies c;
    if (!push_) return c;
    for (int p = 0; p < ranks_; ++p)
      if (p != rank_) {
        c.dW[c.count] = slot(peer_grads_[p], parity, rank_) + offset;
        if (weights > 0) c.db[c.count] = c.dW[c.count] + weights;
        ++c.count;
      }
    return c;
  }

  void update(int parity, float lr, float momentum, float weight_decay, float* params, float* velocity,
              cudaStream_t stream) const {
    cuda::PeerSgdArgs a = args_;
    for (int r = 0; r < ranks_; ++r) a.grads[r] = push_ ? slot(own_, parity, r) : slot(peer_grads_[r], parity, 0);
    cuda::peer_sgd_update(count_, lr, momentum, weight_decay, params, velocity, a, stream);
  }

 private:
  // Layout of the small synchronisation allocation: [inbox: kPeerSgdMaxRanks][state: 3].
  static constexpr std::size_t kSyncWords = cuda::kPeerSgdMaxRanks + 3;

  // A gradient allocation holds [parity][slot] buffers: one slot when pulling, one per sender
  // when pushing.
  float* slot(float* base, int parity, int sender) const {
    return base + (std::size_t(parity) * slots_ + std::size_t(sender)) * stride_;
  }

  std::string local_reason(int device) {
    if (ranks_ > cuda::kPeerSgdMaxRanks)
      return "more than " + std::to_string(cuda::kPeerSgdMaxRanks) + " ranks";
    MPI_Comm node = MPI_COMM_NULL;
    MPI_Comm_split_type(MPI_COMM_WORLD, MPI_COMM_TYPE_SHARED, rank_, MPI_INFO_NULL, &node);
    int on_host = 0;
    MPI_Comm_size(node, &on_host);
    MPI_Comm_free(&node);
    std::vector<int> devices(ranks_);
    MPI_Allgather(&device, 1, MPI_INT, devices.data(), 1, MPI_INT, MPI_COMM_WORLD);
    if (on_host != ranks_) return "the ranks are not all on one host (CUDA IPC is host-local)";
    for (int p = 0; p < ranks_; ++p) {
      if (devices[p] == device) continue;  // the same GPU needs no P2P
      int can = 0;
      if (cudaDeviceCanAccessPeer(&can, device, devices[p]) != cudaSuccess || can == 0)
        return "GPU " + std::to_string(device) + " cannot access GPU " + std::to_string(devices[p]) +
               " directly (no P2P between them)";
    }
    // Allocated here, before anyone maps them: zeroed and complete before the exchange.
    const std::size_t bytes = 2 * slots_ * stride_ * sizeof(float);
    if (cudaMalloc(reinterpret_cast<void**>(&own_), bytes) != cudaSuccess || cudaMemset(own_, 0, bytes) != cudaSuccess ||
        cudaMalloc(reinterpret_cast<void**>(&sync_), kSyncWords * sizeof(unsigned)) != cudaSuccess ||
        cudaMemset(sync_, 0, kSyncWords * sizeof(unsigned)) != cudaSuccess || cudaDeviceSynchronize() != cudaSuccess) {
      cudaGetLastError();
      return "device memory for the peer buffers: " + std::string(cudaGetErrorString(cudaGetLastError()));
    }
    return {};
  }

  std::string map_peers() {
    cudaIpcMemHandle_t mine[2]{};
    std::string why;
    if (cudaIpcGetMemHandle(&mine[0], own_) != cudaSuccess || cudaIpcGetMemHandle(&mine[1], sync_) != cudaSuccess) {
      why = std::string("cudaIpcGetMemHandle: ") + cudaGetErrorString(cudaGetLastError());
    }
    std::vector<cudaIpcMemHandle_t> all(2 * std::size_t(ranks_));
    MPI_Allgather(mine, int(sizeof mine), MPI_BYTE, all.data(), int(sizeof mine), MPI_BYTE, MPI_COMM_WORLD);
    if (!why.empty()) return why;
    args_.inbox = sync_;
    args_.state = sync_ + cuda::kPeerSgdMaxRanks;
    peer_grads_.assign(ranks_, nullptr);
    for (int p = 0; p < ranks_; ++p) {
      if (p == rank_) {
        peer_grads_[p] = own_;
        continue;
      }
      void* grads = nullptr;
      void* sync = nullptr;
      if (cudaIpcOpenMemHandle(&grads, all[2 * p], cudaIpcMemLazyEnablePeerAccess) != cudaSuccess) {
        return "cudaIpcOpenMemHandle (rank " + std::to_string(p) + "'s gradients): " +
               cudaGetErrorString(cudaGetLastError());
      }
      opened_.push_back(grads);
      if (cudaIpcOpenMemHandle(&sync, all[2 * p + 1], cudaIpcMemLazyEnablePeerAccess) != cudaSuccess) {
        return "cudaIpcOpenMemHandle (rank " + std::to_string(p) + "'s inbox): " +
               cudaGetErrorString(cudaGetLastError());
      }
      opened_.push_back(sync);
      peer_grads_[p] = static_cast<float*>(grads);
      args_.signal[p] = static_cast<unsigned*>(sync) + rank_;  // p's inbox[this rank]
    }
    return {};
  }

  // True iff `ok` on every rank; else reason_ is the first failing rank's reason, on all.
  bool agree(bool ok, const std::string& why) {
    const int mine = ok ? ranks_ : rank_;
    int first = 0;
    MPI_Allreduce(&mine, &first, 1, MPI_INT, MPI_MIN, MPI_COMM_WORLD);
    if (first == ranks_) return true;
    char text[256] = {};
    if (rank_ == first) std::strncpy(text, why.c_str(), sizeof text - 1);
    MPI_Bcast(text, int(sizeof text), MPI_CHAR, first, MPI_COMM_WORLD);
    reason_ = "rank " + std::to_string(first) + ": " + text;
    return false;
  }

  std::size_t count_;
  std::size_t stride_;  // floats from one buffer to the next: 256-byte aligned, as the kernel's vector loads need
  int rank_ = 0, ranks_ = 1;
  bool push_ = false;
  int slots_ = 1;  // gradient buffers per parity: ranks_ when pushing
  bool ok_ = false;
  std::string reason_;
  float* own_ = nullptr;
  unsigned* sync_ = nullptr;
  std::vector<float*> peer_grads_;
  std::vector<void*> opened_;
  cuda::PeerSgdArgs args_;
};

}  // namespace nnpar
