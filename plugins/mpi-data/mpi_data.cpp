// Data parallelism over MPI: one process per CPU core (or node), each with a full model
// replica running the CPU kernels; gradients or weights are combined with MPI allreduce.
// The algorithm is plugins/common/data_parallel.hpp; this file is the CPU engine.
#include <algorithm>
#include <memory>
#include <vector>

#include "../common/data_parallel.hpp"
#include "nnpar/comm_mpi.hpp"

namespace {

using namespace nnpar;

class CpuReplica final : public ReplicaEngine {
 public:
  CpuReplica(const StrategyContext& context)
      : data_(*context.train_data),
        model_(*context.model, context.train->batch_size),
        sgd_(context.train->sgd, model_.parameters().size()),
        x_(std::size_t(context.train->batch_size) * data_.features()),
        y_(context.train->batch_size) {
    std::copy(context.initial_parameters.begin(), context.initial_parameters.end(),
              model_.parameters().begin());
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
    if (rows_ > 0) {
      model_.backward(loss_scale, after_layer);
    } else if (after_layer) {
      // No samples this step: zero gradients still take part in every collective.
      for (int i = model_.linear_count() - 1; i >= 0; --i) after_layer(i);
    }
  }
  void sgd_step() override { sgd_.step(model_.parameters(), model_.gradients()); }
  void scale_parameters(float factor) override {
    for (float& p : model_.parameters()) p *= factor;
  }
  std::pair<double, double> take_metrics() override {
    std::pair<double, double> m{loss_sum_, correct_};
    loss_sum_ = correct_ = 0;
    return m;
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

class MpiDataStrategy final : public Strategy {
 public:
  void setup(const StrategyContext& context) override {
    auto comm = mpi::world();
    ranks_ = comm->size();
    mode_ = context.options->get_string("mode");
    trainer_ = std::make_unique<DataParallelTrainer>(context, std::move(comm),
                                                     std::make_unique<CpuReplica>(context));
  }
  EpochReport train_epoch(int epoch) override { return trainer_->train_epoch(epoch); }
  void get_parameters(std::span<float> out) override { trainer_->get_parameters(out); }
  std::string device_description() const override {
    return "CPU, " + std::to_string(ranks_) + " MPI ranks x 1 thread (" + mode_ + ")";
  }
  std::optional<ParityClass> parity_class() const override {
    return mode_ == "sync" ? ParityClass::exact : ParityClass::approximate;
  }

 private:
  std::unique_ptr<DataParallelTrainer> trainer_;
  int ranks_ = 1;
  std::string mode_;
};

StrategyInfo mpi_data_info() {
  StrategyInfo info;
  info.name = "mpi-data";
  info.version = "1.0";
  info.description = "data parallel over MPI ranks on CPUs: synchronous gradients or local SGD";
  info.parity = ParityClass::exact;  // for mode = sync; local_sgd reports approximate at run time
  info.needs_mpi = true;
  info.min_world_size = 1;
  info.max_world_size = 0;
  info.options = data_parallel_options();
  return info;
}

}  // namespace

NNPAR_REGISTER_STRATEGY(MpiDataStrategy, mpi_data_info)
