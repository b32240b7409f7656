// Collective and point-to-point communication between the workers of one run, independent
// of any strategy. Two implementations: MPI on host buffers (comm_mpi.hpp) and NCCL on
// device buffers (comm_nccl.hpp). Every call is made by all ranks of the communicator
// (collectives) or by the two peers (send/recv), as in MPI and NCCL.
#pragma once
#include <cstddef>
#include <cstdint>
#include <memory>
#include <stdexcept>
#include <string>

namespace nnpar {

// A peer failed, a timeout expired, or the library reported an error. The message names
// the operation and, where known, the rank.
class CommError : public std::runtime_error {
 public:
  using std::runtime_error::runtime_error;
};

enum class DataType { f32, f64, i64 };
enum class ReduceOp { sum, average };
enum class MemorySpace { host, device };

inline std::size_t size_of(DataType type) { return type == DataType::f32 ? 4 : 8; }

// A pending non-blocking operation. wait() blocks until it completes (or throws CommError);
// destroying an unfinished request waits for it.
class CommRequest {
 public:
  virtual ~CommRequest() = default;
  virtual void wait() = 0;
  // Moves the operation on from the host where the backend needs the host for that, without
  // blocking; true once it needs nothing more from the host (complete, or carried on by the
  // device, as NCCL's are). MPI: MPI_Test. Where the shared-memory transport cannot copy
  // between processes in one step (no CMA, e.g. a container without ptrace rights), a large
  // send moves only while its sender is inside MPI, so a sender about to compute calls this.
  virtual bool progress() { return true; }
};

class Communicator {
 public:
  virtual ~Communicator() = default;
  virtual int rank() const = 0;
  virtual int size() const = 0;
  virtual MemorySpace memory() const = 0;  // where the buffers passed in must live
  virtual std::string backend() const = 0;  // "mpi", "nccl"

  // In place. average divides the sum by size() (for floating types).
  virtual void allreduce(void* data, std::size_t count, DataType type, ReduceOp op) = 0;
  virtual std::unique_ptr<CommRequest> allreduce_async(void* data, std::size_t count,
                                                       DataType type, ReduceOp op) = 0;
  virtual void broadcast(void* data, std::size_t count, DataType type, int root) = 0;
  virtual void send(const void* data, std::size_t count, DataType type, int peer, int tag) = 0;
  virtual void recv(void* data, std::size_t count, DataType type, int peer, int tag) = 0;
  virtual std::unique_ptr<CommRequest> isend(const void* data, std::size_t count, DataType type,
                                             int peer, int tag) = 0;
  virtual std::unique_ptr<CommRequest> irecv(void* data, std::size_t count, DataType type,
                                             int peer, int tag) = 0;
  virtual void barrier() = 0;
  // Ranks with the same color form a new communicator, ordered by key (then by old rank).
  virtual std::unique_ptr<Communicator> split(int color, int key) = 0;

  // Typed conveniences.
  void allreduce(float* data, std::size_t count, ReduceOp op = ReduceOp::sum) {
    allreduce(data, count, DataType::f32, op);
  }
  void allreduce(double* data, std::size_t count, ReduceOp op = ReduceOp::sum) {
    allreduce(data, count, DataType::f64, op);
  }
  void allreduce(std::int64_t* data, std::size_t count, ReduceOp op = ReduceOp::sum) {
    allreduce(data, count, DataType::i64, op);
  }
  void broadcast(float* data, std::size_t count, int root) { broadcast(data, count, DataType::f32, root); }
};

}  // namespace nnpar
