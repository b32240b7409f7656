// The NCCL communicator: collectives and point-to-point on device buffers, one process per
// GPU. Ranks find each other through MPI (rank 0's ncclUniqueId is broadcast over it).
//
// Ordering: every operation is queued on the communicator's own stream after the work
// already queued on the compute stream (set_compute_stream); CommRequest::wait() makes the
// compute stream wait for the operation on the GPU without blocking the host. Blocking
// calls (allreduce, broadcast, send, recv, barrier) return when the operation finished.
// While the host waits, the communicator polls ncclCommGetAsyncError and a timeout: a failed
// peer aborts the communicator and throws CommError; a peer that stops answering for the
// timeout (NNPAR_COMM_TIMEOUT) ends the whole job with a message naming this rank (its stuck
// NCCL kernels would block the abort and every later CUDA call).
#pragma once
#include <cstddef>
#include <memory>

#include <cuda_runtime_api.h>

#include "nnpar/communicator.hpp"

namespace nnpar::nccl {

class NcclCommunicator : public Communicator {
 public:
  virtual void set_compute_stream(cudaStream_t stream) = 0;
  virtual cudaStream_t stream() const = 0;
  // Blocks until `stream` (e.g. the compute stream, whose queued graphs hold collectives) is
  // idle, polling like the blocking calls: a failed or vanished peer aborts the communicator
  // and throws CommError after the timeout instead of hanging in cudaStreamSynchronize.
  virtual void synchronize(cudaStream_t stream, const char* what) = 0;
  // Collective: `bytes` of device memory from ncclMemAlloc, registered on every rank as a
  // symmetric NCCL window (NCCL_WIN_COLL_SYMMETRIC). Allreduces of f32 sums on it, at the
  // same offset on every rank, can then use NCCL's symmetric-memory kernels, which read the
  // peers' buffers directly and cost less latency for small and medium messages over NVLink.
  // Returns null (on every rank) where any rank cannot (no CUDA VMM, no P2P, an older NCCL);
  // the caller then allocates plain memory. The communicator owns the buffer: it is
  // deregistered and freed with the communicator.
  virtual void* allocate_symmetric(std::size_t bytes) = 0;
};

// All ranks of MPI_COMM_WORLD, on GPU `device` (commonly the local rank). timeout_seconds
// bounds every host wait; 0 = the environment's NNPAR_COMM_TIMEOUT or 300 s.
std::unique_ptr<NcclCommunicator> world(int device, double timeout_seconds = 0);

// The local rank (rank among the processes on this host), for choosing a GPU.
int local_rank();

}  // namespace nnpar::nccl
