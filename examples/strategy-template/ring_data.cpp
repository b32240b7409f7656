// ring-data: a strategy plugin built OUTSIDE the nnpar tree, against the installed package
// (see docs/plugins.md, "Building a strategy outside the tree"). It is mpi-data's synchronous
// data parallelism with one change: the gradient allreduce is a hand-written ring instead of
// MPI_Allreduce. Everything else comes from the installed headers: the step loop from
// <nnpar/data_parallel.hpp>, the model and SGD from <nnpar/model.hpp>.
#include <algorithm>
#include <memory>
#include <utility>
#include <vector>

#include <nnpar/comm_mpi.hpp>
#include <nnpar/data_parallel.hpp>
#include <nnpar/strategy.hpp>

namespace {

using namespace nnpar;

// A Communicator whose float sum-allreduce is a ring; every other call goes to the MPI
// communicator underneath, which also carries the ring's point-to-point messages.
//
// With n ranks the buffer is cut into n chunks (shard_range, so any size works, even fewer
// elements than ranks). Reduce-scatter: in n-1 steps each rank passes one chunk to its right
// neighbour and adds the chunk arriving from its left, so that rank r ends up owning the full
// sum of chunk r+1. All-gather: n-1 more steps pass those finished chunks around the ring.
// Each rank sends 2(n-1)/n of the buffer whatever n is, which is why NCCL and MPI use rings
// for large messages. The sums are formed in ring order, not serial order: equal up to float
// rounding, well inside the exact class's tolerance.
class RingCommunicator final : public Communicator {
 public:
  explicit RingCommunicator(std::unique_ptr<Communicator> inner) : inner_(std::move(inner)) {}

  void allreduce(void* data, std::size_t count, DataType type, ReduceOp op) override {
    if (type != DataType::f32 || inner_->size() == 1) return inner_->allreduce(data, count, type, op);
    float* x = static_cast<float*>(data);
    ring_allreduce(x, count);
    if (op == ReduceOp::average)
      for (std::size_t i = 0; i < count; ++i) x[i] /= float(inner_->size());
  }
  // The trainer overlaps per-layer allreduces with backward; this tutorial ring is blocking,
  // so the work happens here and the request is already complete.
  std::unique_ptr<CommRequest> allreduce_async(void* data, std::size_t count, DataType type,
                                               ReduceOp op) override {
    allreduce(data, count, type, op);
    return std::make_unique<Done>();
  }

  int rank() const override { return inner_->rank(); }
  int size() const override { return inner_->size(); }
  MemorySpace memory() const override { return MemorySpace::host; }
  std::string backend() const override { return "mpi-ring"; }
  void broadcast(void* d, std::size_t n, DataType t, int root) override { inner_->broadcast(d, n, t, root); }
  void send(const void* d, std::size_t n, DataType t, int p, int tag) override { inner_->send(d, n, t, p, tag); }
  void recv(void* d, std::size_t n, DataType t, int p, int tag) override { inner_->recv(d, n, t, p, tag); }
  std::unique_ptr<CommRequest> isend(const void* d, std::size_t n, DataType t, int p, int tag) override {
    return inner_->isend(d, n, t, p, tag);
  }
  std::unique_ptr<CommRequest> irecv(void* d, std::size_t n, DataType t, int p, int tag) override {
    return inner_->irecv(d, n, t, p, tag);
  }
  void barrier() override { inner_->barrier(); }
  std::unique_ptr<Communicator> split(int color, int key) override {
    return std::make_unique<RingCommunicator>(inner_->split(color, key));
  }

 private:
  struct Done final : CommRequest {
    void wait() override {}
  };

  void ring_allreduce(float* x, std::size_t count) {
    const int n = size(), r = rank();
    const int right = (r + 1) % n, left = (r + n - 1) % n;
    auto chunk = [&](int i) { return shard_range(count, ((i % n) + n) % n, n); };
    // Post the receive before the send: with both sides blocking in send, large chunks
    // (beyond MPI's eager limit) would deadlock the ring.
    auto exchange = [&](Range out, float* out_base, Range in, float* in_base, int tag) {
      auto rx = inner_->irecv(in_base, in.size(), DataType::f32, left, tag);
      auto tx = inner_->isend(out_base + out.begin, out.size(), DataType::f32, right, tag);
      rx->wait();
      tx->wait();
    };
    incoming_.resize(shard_range(count, 0, n).size());  // chunk 0 is never smaller than the others
    for (int s = 0; s < n - 1; ++s) {  // reduce-scatter
      const Range out = chunk(r - s), in = chunk(r - s - 1);
      exchange(out, x, in, incoming_.data(), kTag);
      for (std::size_t i = 0; i < in.size(); ++i) x[in.begin + i] += incoming_[i];
    }
    for (int s = 0; s < n - 1; ++s) {  // all-gather: received chunks are final, written in place
      const Range out = chunk(r + 1 - s), in = chunk(r - s);
      exchange(out, x, in, x + in.begin, kTag + 1);
    }
  }

  static constexpr int kTag = 7100;  // the trainer sends no point-to-point messages of its own
  std::unique_ptr<Communicator> inner_;
  std::vector<float> incoming_;
};

// One model replica on the CPU: the same engine as in-tree mpi-data (plugins/mpi-data).
class CpuReplica final : public ReplicaEngine {
 public:
  explicit CpuReplica(const StrategyContext& c)
      : data_(*c.train_data), model_(*c.model, c.train->batch_size),
        sgd_(c.train->sgd, model_.parameters().size()),
        x_(std::size_t(c.train->batch_size) * data_.features()), y_(c.train->batch_size) {
    std::copy(c.initial_parameters.begin(), c.initial_parameters.end(), model_.parameters().begin());
  }
  float* parameters() override { return model_.parameters().data(); }
  float* gradients() override { return model_.gradients().data(); }
  std::size_t parameter_count() const override { return model_.parameters().size(); }
  void load_batch(std::span<const std::uint32_t> indices) override {
    rows_ = int(indices.size());
    if (rows_ > 0) gather_batch(data_, indices, x_.data(), y_.data());
  }
  void forward() override {
    if (rows_ == 0) return;
    model_.forward({x_.data(), rows_, data_.features()}, y_.data());
    loss_sum_ += model_.last_loss_sum();
    correct_ += model_.last_correct();
  }
  void backward(float loss_scale, const std::function<void(int)>& after_layer) override {
    model_.zero_grad();
    if (rows_ > 0) return model_.backward(loss_scale, after_layer);
    // A rank with no samples this step still joins every collective, with zero gradients.
    if (after_layer)
      for (int i = model_.linear_count() - 1; i >= 0; --i) after_layer(i);
  }
  void sgd_step() override { sgd_.step(model_.parameters(), model_.gradients()); }
  void scale_parameters(float f) override {
    for (float& p : model_.parameters()) p *= f;
  }
  std::pair<double, double> take_metrics() override {
    return {std::exchange(loss_sum_, 0.0), std::exchange(correct_, 0.0)};
  }
  void copy_parameters_to_host(std::span<float> out) override {
    std::copy(model_.parameters().begin(), model_.parameters().end(), out.begin());
  }

 private:
  const Dataset& data_;
  Model model_;
  Sgd sgd_;
  std::vector<float> x_;
  std::vector<std::int32_t> y_;
  int rows_ = 0;
  double loss_sum_ = 0, correct_ = 0;
};

class RingDataStrategy final : public Strategy {
 public:
  void setup(const StrategyContext& context) override {
    auto comm = std::make_unique<RingCommunicator>(mpi::world());
    ranks_ = comm->size();
    mode_ = context.options->get_string("mode");
    trainer_ = std::make_unique<DataParallelTrainer>(context, std::move(comm),
                                                     std::make_unique<CpuReplica>(context));
  }
  EpochReport train_epoch(int epoch) override { return trainer_->train_epoch(epoch); }
  void get_parameters(std::span<float> out) override { trainer_->get_parameters(out); }
  std::string device_description() const override {
    return "CPU, " + std::to_string(ranks_) + " MPI ranks, ring allreduce (" + mode_ + ")";
  }
  std::optional<ParityClass> parity_class() const override {
    return mode_ == "sync" ? ParityClass::exact : ParityClass::approximate;
  }

 private:
  std::unique_ptr<DataParallelTrainer> trainer_;
  int ranks_ = 1;
  std::string mode_;
};

// The name must match nnpar_add_strategy(NAME ...), which names the file. nnpar builds this same
// file as its built-in `mpi-ring` (plugins/mpi-ring), defining the name there.
#ifndef NNPAR_RING_STRATEGY_NAME
#define NNPAR_RING_STRATEGY_NAME "ring-data"
#endif

StrategyInfo ring_data_info() {
  StrategyInfo info;
  info.name = NNPAR_RING_STRATEGY_NAME;
  info.version = "0.1";
  info.description = "data parallel over MPI ranks with a hand-written ring allreduce (SDK example)";
  info.parity = ParityClass::exact;  // for mode = sync
  info.needs_mpi = true;
  info.min_world_size = 1;
  info.max_world_size = 0;
  // mode = sync | local_sgd, period, overlap: the trainer's options. Local SGD's weight
  // averages go through the same ring.
  info.options = data_parallel_options();
  return info;
}

}  // namespace

NNPAR_REGISTER_STRATEGY(RingDataStrategy, ring_data_info)
