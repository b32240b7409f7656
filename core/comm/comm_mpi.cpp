#include "nnpar/comm_mpi.hpp"

#include <mpi.h>

#include <cstdlib>
#include <string>

namespace nnpar::mpi {
namespace {

bool g_we_initialized = false;

void check(int code, const char* what) {
  if (code == MPI_SUCCESS) return;
  char text[MPI_MAX_ERROR_STRING] = {};
  int length = 0;
  MPI_Error_string(code, text, &length);
  throw CommError(std::string("MPI ") + what + " failed: " + text);
}

MPI_Datatype mpi_type(DataType type) {
  switch (type) {
    case DataType::f32: return MPI_FLOAT;
    case DataType::f64: return MPI_DOUBLE;
    case DataType::i64: return MPI_INT64_T;
  }
  return MPI_DATATYPE_NULL;
}

int checked_count(std::size_t count) {
  if (count > std::size_t(INT32_MAX)) throw CommError("MPI message of " + std::to_string(count) + " elements is too large");
  return int(count);
}

// Average = sum, then a local division: MPI has no average reduction.
void divide(void* data, std::size_t count, DataType type, int by) {
  if (type == DataType::f32) {
    float* p = static_cast<float*>(data);
    for (std::size_t i = 0; i < count; ++i) p[i] /= float(by);
  } else if (type == DataType::f64) {
    double* p = static_cast<double*>(data);
    for (std::size_t i = 0; i < count; ++i) p[i] /= double(by);
  } else {
    throw CommError("MPI allreduce: average is defined for floating-point data only");
  }
}

class MpiRequest final : public CommRequest {
 public:
  MpiRequest(MPI_Request request, void* data, std::size_t count, DataType type, int divide_by)
      : request_(request), data_(data), count_(count), type_(type), divide_by_(divide_by) {}
  ~MpiRequest() override {
    if (request_ != MPI_REQUEST_NULL) MPI_Wait(&request_, MPI_STATUS_IGNORE);
  }
  void wait() override {
    if (request_ == MPI_REQUEST_NULL) return;
    check(MPI_Wait(&request_, MPI_STATUS_IGNORE), "wait");
    finish();
  }
  bool progress() override {
    if (request_ == MPI_REQUEST_NULL) return true;
    int done = 0;
    check(MPI_Test(&request_, &done, MPI_STATUS_IGNORE), "test");
    if (done) finish();
    return done != 0;
  }

 private:
  void finish() {
    if (divide_by_ > 1) divide(data_, count_, type_, divide_by_);
    divide_by_ = 1;
  }

  MPI_Request request_;
  void* data_;
  std::size_t count_;
  DataType type_;
  int divide_by_;
};

class MpiCommunicator final : public Communicator {
 public:
  explicit MpiCommunicator(MPI_Comm comm) : comm_(comm) {
    // Errors come back as codes we turn into CommError instead of aborting inside MPI.
    MPI_Comm_set_errhandler(comm_, MPI_ERRORS_RETURN);
    MPI_Comm_rank(comm_, &rank_);
    MPI_Comm_size(comm_, &size_);
  }
  ~MpiCommunicator() override {
    int finalized = 0;
    MPI_Finalized(&finalized);
    if (!finalized) MPI_Comm_free(&comm_);
  }
  int rank() const override { return rank_; }
  int size() const override { return size_; }
  MemorySpace memory() const override { return MemorySpace::host; }
  std::string backend() const override { return "mpi"; }

  void allreduce(void* data, std::size_t count, DataType type, ReduceOp op) override {
    check(MPI_Allreduce(MPI_IN_PLACE, data, checked_count(count), mpi_type(type), MPI_SUM, comm_),
          "allreduce");
    if (op == ReduceOp::average) divide(data, count, type, size_);
  }
  std::unique_ptr<CommRequest> allreduce_async(void* data, std::size_t count, DataType type,
                                               ReduceOp op) override {
    MPI_Request request;
    check(MPI_Iallreduce(MPI_IN_PLACE, data, checked_count(count), mpi_type(type), MPI_SUM, comm_,
                         &request),
          "iallreduce");
    return std::make_unique<MpiRequest>(request, data, count, type,
                                        op == ReduceOp::average ? size_ : 1);
  }
  void broadcast(void* data, std::size_t count, DataType type, int root) override {
    check(MPI_Bcast(data, checked_count(count), mpi_type(type), root, comm_), "broadcast");
  }
  void send(const void* data, std::size_t count, DataType type, int peer, int tag) override {
    check(MPI_Send(data, checked_count(count), mpi_type(type), peer, tag, comm_), "send");
  }
  void recv(void* data, std::size_t count, DataType type, int peer, int tag) override {
    check(MPI_Recv(data, checked_count(count), mpi_type(type), peer, tag, comm_, MPI_STATUS_IGNORE),
          "recv");
  }
  std::unique_ptr<CommRequest> isend(const void* data, std::size_t count, DataType type, int peer,
                                     int tag) override {
    MPI_Request request;
    check(MPI_Isend(data, checked_count(count), mpi_type(type), peer, tag, comm_, &request), "isend");
    return std::make_unique<MpiRequest>(request, nullptr, 0, type, 1);
  }
  std::unique_ptr<CommRequest> irecv(void* data, std::size_t count, DataType type, int peer,
                                     int tag) override {
    MPI_Request request;
    check(MPI_Irecv(data, checked_count(count), mpi_type(type), peer, tag, comm_, &request), "irecv");
    return std::make_unique<MpiRequest>(request, nullptr, 0, type, 1);
  }
  void barrier() override { check(MPI_Barrier(comm_), "barrier"); }
  std::unique_ptr<Communicator> split(int color, int key) override {
    MPI_Comm child;
    check(MPI_Comm_split(comm_, color, key, &child), "split");
    return std::make_unique<MpiCommunicator>(child);
  }

 private:
  MPI_Comm comm_;
  int rank_ = 0, size_ = 1;
};

}  // namespace

bool launched_by_mpi() {
  for (const char* var : {"OMPI_COMM_WORLD_SIZE", "PMI_SIZE", "PMIX_RANK", "MPI_LOCALNRANKS", "SLURM_PROCID"})
    if (std::getenv(var) != nullptr) {
      // Under Slurm without srun's MPI plumbing SLURM_PROCID alone is not enough.
      if (std::string(var) == "SLURM_PROCID" && std::getenv("PMI_RANK") == nullptr &&
          std::getenv("PMIX_RANK") == nullptr)
        continue;
      return true;
    }
  return false;
}

bool initialized() {
  int flag = 0;
  MPI_Initialized(&flag);
  return flag != 0;
}

void initialize() {
  if (initialized()) return;
  int provided = 0;
  check(MPI_Init_thread(nullptr, nullptr, MPI_THREAD_FUNNELED, &provided), "init");
  g_we_initialized = true;
}

void finalize() {
  int finalized = 0;
  MPI_Finalized(&finalized);
  if (g_we_initialized && !finalized) MPI_Finalize();
}

void abort(int exit_code) {
  if (initialized()) MPI_Abort(MPI_COMM_WORLD, exit_code);
  std::exit(exit_code);
}

int world_rank() {
  int rank = 0;
  if (initialized()) MPI_Comm_rank(MPI_COMM_WORLD, &rank);
  return rank;
}

int world_size() {
  int size = 1;
  if (initialized()) MPI_Comm_size(MPI_COMM_WORLD, &size);
  return size;
}

std::unique_ptr<Communicator> world() {
  initialize();
  MPI_Comm comm;
  check(MPI_Comm_dup(MPI_COMM_WORLD, &comm), "comm_dup");
  return std::make_unique<MpiCommunicator>(comm);
}

}  // namespace nnpar::mpi
