#include "nnpar/comm_nccl.hpp"

#include <mpi.h>
#include <nccl.h>

#include <algorithm>
#include <atomic>
#include <chrono>
#include <cstdio>
#include <cstdlib>
#include <memory>
#include <string>
#include <thread>
#include <utility>
#include <vector>

#include "nnpar/comm_mpi.hpp"

namespace nnpar::nccl {
namespace {

void check_cuda(cudaError_t status, const char* what) {
  if (status != cudaSuccess) throw CommError(std::string("NCCL communicator: ") + what + ": " + cudaGetErrorString(status));
}

ncclDataType_t nccl_type(DataType type) {
  switch (type) {
    case DataType::f32: return ncclFloat32;
    case DataType::f64: return ncclFloat64;
    case DataType::i64: return ncclInt64;
  }
  return ncclFloat32;
}

class Comm;

// A device-side completion: wait() orders the compute stream after it.
class NcclRequest final : public CommRequest {
 public:
  NcclRequest(cudaEvent_t done, cudaStream_t compute) : done_(done), compute_(compute) {}
  ~NcclRequest() override {
    if (done_ != nullptr) {
      cudaStreamWaitEvent(compute_, done_, 0);
      cudaEventDestroy(done_);
    }
  }
  void wait() override {
    if (done_ == nullptr) return;
    check_cuda(cudaStreamWaitEvent(compute_, done_, 0), "stream wait");
    cudaEventDestroy(done_);
    done_ = nullptr;
  }

 private:
  cudaEvent_t done_;
  cudaStream_t compute_;
};

class Comm final : public NcclCommunicator {
 public:
  Comm(ncclComm_t comm, int device, double timeout) : comm_(comm), device_(device), timeout_(timeout) {
    check_cuda(cudaSetDevice(device_), "cudaSetDevice");
    check_cuda(cudaStreamCreateWithFlags(&stream_, cudaStreamNonBlocking), "stream create");
    check_cuda(cudaEventCreateWithFlags(&ready_, cudaEventDisableTiming), "event create");
    ncclCommUserRank(comm_, &rank_);
    ncclCommCount(comm_, &size_);
  }
  ~Comm() override {
    if (comm_ != nullptr) {
      cudaStreamSynchronize(stream_);
      for (auto [window, buffer] : windows_) {
        ncclCommWindowDeregister(comm_, window);
        ncclMemFree(buffer);
      }
      ncclCommDestroy(comm_);
    }
    cudaFree(flag_);
    cudaEventDestroy(ready_);
    cudaStreamDestroy(stream_);
  }

  int rank() const override { return rank_; }
  int size() const override { return size_; }
  MemorySpace memory() const override { return MemorySpace::device; }
  std::string backend() const override { return "nccl"; }
  void set_compute_stream(cudaStream_t stream) override { compute_ = stream; }
  cudaStream_t stream() const override { return stream_; }
  void synchronize(cudaStream_t stream, const char* what) override { wait_for(stream, what); }

  void allreduce(void* data, std::size_t count, DataType type, ReduceOp op) override {
    enqueue_allreduce(data, count, type, op);
    wait_for_stream("allreduce");
  }
  std::unique_ptr<CommRequest> allreduce_async(void* data, std::size_t count, DataType type,
                                               ReduceOp op) override {
    enqueue_allreduce(data, count, type, op);
    return completion();
  }
  void broadcast(void* data, std::size_t count, DataType type, int root) override {
    after_compute();
    check(ncclBroadcast(data, data, count, nccl_type(type), root, comm_, stream_), "broadcast");
    wait_for_stream("broadcast");
  }
  void send(const void* data, std::size_t count, DataType type, int peer, int) override {
    after_compute();
    check(ncclSend(data, count, nccl_type(type), peer, comm_, stream_), "send");
    wait_for_stream("send");
  }
  void recv(void* data, std::size_t count, DataType type, int peer, int) override {
    after_compute();
    check(ncclRecv(data, count, nccl_type(type), peer, comm_, stream_), "recv");
    wait_for_stream("recv");
  }
  std::unique_ptr<CommRequest> isend(const void* data, std::size_t count, DataType type, int peer,
                                     int) override {
    after_compute();
    check(ncclSend(data, count, nccl_type(type), peer, comm_, stream_), "send");
    return completion();
  }
  std::unique_ptr<CommRequest> irecv(void* data, std::size_t count, DataType type, int peer,
                                     int) override {
    after_compute();
    check(ncclRecv(data, count, nccl_type(type), peer, comm_, stream_), "recv");
    return completion();
  }
  void barrier() override {
    // NCCL has no barrier: a one-element allreduce is one.
    if (barrier_buffer_ == nullptr) check_cuda(cudaMalloc(&barrier_buffer_, sizeof(float)), "cudaMalloc");
    allreduce(barrier_buffer_, 1, DataType::f32, ReduceOp::sum);
  }
  void* allocate_symmetric(std::size_t bytes) override {
    // Every rank must take the same path (registration is collective), so each step's
    // success is agreed on (a min over ranks) before the next.
    void* buffer = nullptr;
    bytes = (std::max<std::size_t>(bytes, 1) + NCCL_WIN_REQUIRED_ALIGNMENT - 1) / NCCL_WIN_REQUIRED_ALIGNMENT *
            NCCL_WIN_REQUIRED_ALIGNMENT;
    const bool allocated = ncclMemAlloc(&buffer, bytes) == ncclSuccess && buffer != nullptr;
    if (!all_ranks(allocated)) {
      if (allocated) ncclMemFree(buffer);
      return nullptr;
    }
    ncclWindow_t window = nullptr;
    const bool registered =
        ncclCommWindowRegister(comm_, buffer, bytes, &window, NCCL_WIN_COLL_SYMMETRIC) == ncclSuccess && window != nullptr;
    if (!all_ranks(registered)) {
      if (registered) ncclCommWindowDeregister(comm_, window);
      ncclMemFree(buffer);
      return nullptr;
    }
    check_cuda(cudaMemset(buffer, 0, bytes), "clear symmetric buffer");
    windows_.emplace_back(window, buffer);
    return buffer;
  }
  std::unique_ptr<Communicator> split(int color, int key) override {
    ncclComm_t child = nullptr;
    check(ncclCommSplit(comm_, color, key, &child, nullptr), "split");
    if (child == nullptr) throw CommError("NCCL split: this rank's color produced no communicator");
    // The child orders its operations after the same compute stream as its parent: without
    // it a split communicator would send buffers the compute stream has not written yet.
    auto comm = std::make_unique<Comm>(child, device_, timeout_);
    comm->set_compute_stream(compute_);
    return comm;
  }

 private:
  void after_compute() {
    if (compute_ == nullptr) return;
    check_cuda(cudaEventRecord(ready_, compute_), "event record");
    check_cuda(cudaStreamWaitEvent(stream_, ready_, 0), "stream wait");
  }
  void enqueue_allreduce(void* data, std::size_t count, DataType type, ReduceOp op) {
    after_compute();
    check(ncclAllReduce(data, data, count, nccl_type(type), op == ReduceOp::average ? ncclAvg : ncclSum,
                        comm_, stream_),
          "allreduce");
  }
  std::unique_ptr<CommRequest> completion() {
    cudaEvent_t done = nullptr;
    check_cuda(cudaEventCreateWithFlags(&done, cudaEventDisableTiming), "event create");
    check_cuda(cudaEventRecord(done, stream_), "event record");
    return std::make_unique<NcclRequest>(done, compute_ != nullptr ? compute_ : stream_);
  }
  void wait_for_stream(const char* what) { wait_for(stream_, what); }
  // True on every rank iff `ok` on every rank (a min over an NCCL allreduce, so it works on
  // split communicators too).
  bool all_ranks(bool ok) {
    if (flag_ == nullptr) check_cuda(cudaMalloc(&flag_, sizeof(int)), "cudaMalloc");
    int value = ok ? 1 : 0;
    check_cuda(cudaMemcpy(flag_, &value, sizeof value, cudaMemcpyHostToDevice), "flag");
    ncclResult_t result = ncclAllReduce(flag_, flag_, 1, ncclInt32, ncclMin, comm_, stream_);
    check(result, "agree");
    wait_for_stream("agree");
    check_cuda(cudaMemcpy(&value, flag_, sizeof value, cudaMemcpyDeviceToHost), "flag");
    return value == 1;
  }
  // Polls instead of cudaStreamSynchronize so that a dead peer is noticed and reported.
  void wait_for(cudaStream_t stream, const char* what) {
    if (comm_ == nullptr) throw CommError(std::string("NCCL ") + what + ": the communicator was aborted earlier");
    const auto start = std::chrono::steady_clock::now();
    for (;;) {
      const cudaError_t status = cudaStreamQuery(stream);
      if (status == cudaSuccess) return;
      if (status != cudaErrorNotReady) check_cuda(status, what);
      ncclResult_t async = ncclSuccess;
      ncclCommGetAsyncError(comm_, &async);
      if (async != ncclSuccess && async != ncclInProgress) abort_with(what, ncclGetErrorString(async));
      const double waited = std::chrono::duration<double>(std::chrono::steady_clock::now() - start).count();
      if (waited > timeout_)
        end_job_after_timeout(what, "no progress for " + std::to_string(int(timeout_)) +
                                        " s: a peer rank is probably gone (NNPAR_COMM_TIMEOUT sets the limit)");
      // Spin (yielding) for the first 50 ms: a GPU epoch or step usually ends within that, and
      // a 50 us sleep is ~100 us with the kernel's timer slack, paid at every epoch's end
      // (docs/results/2026-11-26-data-parallel-5.md). Past that, sleep so an idle wait costs no core.
      if (waited < 0.05) std::this_thread::yield();
      else std::this_thread::sleep_for(std::chrono::microseconds(50));
    }
  }
  // A peer that stopped answering leaves this rank's NCCL kernels (queued in CUDA graphs too)
  // waiting for it: on the GPU machines ncclCommAbort then did not return, and unwinding would
  // block again in the CUDA calls of the destructors. So the message goes out first, the abort
  // gets a few seconds in a helper thread, and the job ends here (MPI_Abort ends every rank,
  // the stopped one included), as the error path of the harness would.
  [[noreturn]] void end_job_after_timeout(const char* what, const std::string& why) {
    int world = 1;
    if (mpi::initialized()) world = mpi::world_size();
    std::fprintf(stderr, "nnpar: [rank %d of %d] error: NCCL %s on rank %d failed: %s\n", mpi::world_rank(), world, what,
                 rank_, why.c_str());
    std::fflush(stderr);
    auto done = std::make_shared<std::atomic<bool>>(false);
    std::thread([comm = comm_, done] {
      ncclCommAbort(comm);
      done->store(true);
    }).detach();
    for (int i = 0; i < 100 && !done->load(); ++i) std::this_thread::sleep_for(std::chrono::milliseconds(50));
    if (!done->load()) std::fprintf(stderr, "nnpar: [rank %d] ncclCommAbort did not return within 5 s; ending the job\n", rank_);
    std::fflush(stderr);
    mpi::abort(2);  // MPI_Abort if MPI is up, else exit(2)
    std::_Exit(2);
  }
  [[noreturn]] void abort_with(const char* what, const char* why) {
    ncclCommAbort(comm_);
    comm_ = nullptr;
    throw CommError(std::string("NCCL ") + what + " on rank " + std::to_string(rank_) + " failed: " + why);
  }
  void check(ncclResult_t result, const char* what) {
    if (result != ncclSuccess && result != ncclInProgress) abort_with(what, ncclGetErrorString(result));
  }

  ncclComm_t comm_;
  int device_;
  double timeout_;
  int rank_ = 0, size_ = 1;
  cudaStream_t stream_ = nullptr;
  cudaStream_t compute_ = nullptr;
  cudaEvent_t ready_ = nullptr;
  float* barrier_buffer_ = nullptr;
  int* flag_ = nullptr;
  std::vector<std::pair<ncclWindow_t, void*>> windows_;  // symmetric buffers, freed with the communicator
};

}  // namespace

int local_rank() {
  for (const char* var : {"OMPI_COMM_WORLD_LOCAL_RANK", "MPI_LOCALRANKID", "SLURM_LOCALID", "LOCAL_RANK"})
    if (const char* v = std::getenv(var)) return std::atoi(v);
  return 0;
}

std::unique_ptr<NcclCommunicator> world(int device, double timeout_seconds) {
  mpi::initialize();
  if (timeout_seconds <= 0) {
    const char* env = std::getenv("NNPAR_COMM_TIMEOUT");
    timeout_seconds = env != nullptr ? std::atof(env) : 300.0;
    if (timeout_seconds <= 0) timeout_seconds = 300.0;
  }
  int device_count = 0;
  check_cuda(cudaGetDeviceCount(&device_count), "cudaGetDeviceCount");
  if (device < 0 || device >= device_count)
    throw CommError("NCCL communicator: rank " + std::to_string(mpi::world_rank()) + " wants GPU " +
                    std::to_string(device) + " but this host has " + std::to_string(device_count) +
                    " (one rank per GPU: start at most that many ranks per host)");
  check_cuda(cudaSetDevice(device), "cudaSetDevice");
  ncclUniqueId id;
  if (mpi::world_rank() == 0 && ncclGetUniqueId(&id) != ncclSuccess)
    throw CommError("NCCL: ncclGetUniqueId failed");
  MPI_Bcast(&id, sizeof id, MPI_BYTE, 0, MPI_COMM_WORLD);
  ncclComm_t comm = nullptr;
  const ncclResult_t result = ncclCommInitRank(&comm, mpi::world_size(), id, mpi::world_rank());
  if (result != ncclSuccess)
    throw CommError(std::string("NCCL: ncclCommInitRank failed on rank ") + std::to_string(mpi::world_rank()) +
                    ": " + ncclGetErrorString(result));
  return std::make_unique<Comm>(comm, device, timeout_seconds);
}

}  // namespace nnpar::nccl
