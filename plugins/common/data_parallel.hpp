// Data parallelism, written once over two abstractions: a Communicator (MPI on host
// buffers, NCCL on device buffers) and a ReplicaEngine (the maths of one model replica on
// one device: CPU kernels or CUDA kernels). mpi-data and nccl-data are this class with
// different engines and communicators.
//
//  sync:      every global batch is split into contiguous shards (shard_range), one per rank;
//             each rank back-propagates the mean loss of the GLOBAL batch over its shard, the
//             gradients are summed across ranks layer by layer as soon as each layer is done
//             (overlapping the backward of earlier layers), and every rank applies the same
//             SGD step. The same maths as serial (exact parity class).
//  local_sgd: every rank steps on its own shard (mean over its shard), and every `period`
//             steps (and at the end of each epoch) the weights are averaged, each rank
//             weighted by the samples it processed since the last average (approximate class).
#pragma once
#include <algorithm>
#include <cstdint>
#include <memory>
#include <span>
#include <string>
#include <vector>

#include "nnpar/communicator.hpp"
#include "nnpar/strategy.hpp"

namespace nnpar {

class ReplicaEngine {
 public:
  virtual ~ReplicaEngine() = default;
  // Flat buffers in the communicator's memory space.
  virtual float* parameters() = 0;
  virtual float* gradients() = 0;
  virtual std::size_t parameter_count() const = 0;
  // Stages the samples `indices` as the next batch (may be empty).
  virtual void load_batch(std::span<const std::uint32_t> indices) = 0;
  // Forward of the staged batch, accumulating its loss sum and correct count.
  virtual void forward() = 0;
  // Zeroes the gradients, then backward with the given loss scale; after_layer(i) runs when
  // Linear i's gradients are complete and visible to the communicator.
  virtual void backward(float loss_scale, const std::function<void(int)>& after_layer) = 0;
  virtual void sgd_step() = 0;
  // Multiplies the parameters by `factor` (for weighted averaging).
  virtual void scale_parameters(float factor) = 0;
  // Loss sum and correct predictions since the last call, then reset.
  virtual std::pair<double, double> take_metrics() = 0;
  virtual void copy_parameters_to_host(std::span<float> out) = 0;
  // Blocks until the engine's queued work is done (GPU engines; a no-op on the CPU).
  virtual void synchronize() {}
};

inline std::vector<OptionSpec> data_parallel_options() {
  return {
      {"mode", OptionType::string, std::string("sync"),
       "sync: allreduce gradients every step (exact); local_sgd: average weights every `period` steps",
       -1e300, 1e300, {"sync", "local_sgd"}},
      {"period", OptionType::integer, std::int64_t{1}, "local_sgd: local steps between weight averages", 1, 1e9, {}},
      {"overlap", OptionType::boolean, true,
       "sync: start each layer's gradient allreduce as soon as its backward is done", -1e300, 1e300, {}},
  };
}

class DataParallelTrainer {
 public:
  DataParallelTrainer(const StrategyContext& context, std::unique_ptr<Communicator> comm,
                      std::unique_ptr<ReplicaEngine> engine)
      : context_(context), comm_(std::move(comm)), engine_(std::move(engine)) {
    const StrategyOptions& o = *context.options;
    local_sgd_ = o.get_string("mode") == "local_sgd";
    period_ = int(o.get_int("period"));
    overlap_ = o.get_bool("overlap");
    const ModelSpec& spec = *context.model;
    for (int i = 0; i < spec.linear_count(); ++i) {
      const std::size_t begin = parameter_offset(spec, i);
      const std::size_t end = i + 1 < spec.linear_count() ? parameter_offset(spec, i + 1) : parameter_count(spec);
      layer_slices_.push_back({begin, end});
    }
    // Warm-up outside the timed epochs: NCCL sets up its connections on the first collective
    // (about a second on 2 H200s), which would otherwise land in epoch 1 and in every
    // time-to-accuracy figure. The gradients are zero here, so the sum changes nothing.
    comm_->allreduce(engine_->gradients(), engine_->parameter_count(), DataType::f32, ReduceOp::sum);
    for (auto [b, e] : layer_slices_)
      comm_->allreduce_async(engine_->gradients() + b, e - b, DataType::f32, ReduceOp::sum)->wait();
    engine_->synchronize();
  }

  Communicator& comm() { return *comm_; }
  ReplicaEngine& engine() { return *engine_; }

  EpochReport train_epoch(int epoch) {
    const TrainSettings& train = *context_.train;
    const Dataset& data = *context_.train_data;
    const auto order = epoch_order(data.count, train.seed, epoch, train.shuffle);
    const int rank = comm_->rank(), world = comm_->size();
    EpochReport report;
    PhaseClock clock;
    std::vector<std::unique_ptr<CommRequest>> pending;
    double samples_since_average = 0;
    int steps_since_average = 0;

    for (std::size_t begin = 0; begin < order.size(); begin += train.batch_size) {
      const std::size_t rows = std::min<std::size_t>(train.batch_size, order.size() - begin);
      if (train.drop_last && rows < std::size_t(train.batch_size)) break;
      const Range mine = shard_range(rows, rank, world);
      engine_->load_batch(std::span(order).subspan(begin + mine.begin, mine.size()));
      clock.lap(report.phases.data);

      engine_->forward();
      clock.lap(report.phases.forward);

      if (!local_sgd_) {
        // Every rank scales by the global batch: the allreduced sum is then exactly the
        // gradient of the global batch's mean loss.
        const float scale = 1.0f / float(rows);
        engine_->backward(scale, [&](int layer) {
          if (!overlap_) return;
          const auto [b, e] = layer_slices_[layer];
          pending.push_back(comm_->allreduce_async(engine_->gradients() + b, e - b, DataType::f32, ReduceOp::sum));
        });
        clock.lap(report.phases.backward);
        if (overlap_) {
          for (auto& r : pending) r->wait();
          pending.clear();
        } else {
          comm_->allreduce(engine_->gradients(), engine_->parameter_count(), DataType::f32, ReduceOp::sum);
        }
        clock.lap(report.phases.communication);
        engine_->sgd_step();
        clock.lap(report.phases.update);
      } else {
        if (mine.size() > 0) {
          engine_->backward(1.0f / float(mine.size()), {});
          clock.lap(report.phases.backward);
          engine_->sgd_step();
          clock.lap(report.phases.update);
        }
        samples_since_average += double(mine.size());
        if (++steps_since_average == period_) {
          average_weights(samples_since_average);
          samples_since_average = 0;
          steps_since_average = 0;
          clock.lap(report.phases.communication);
        }
      }
      report.samples += rows;
      report.steps += 1;
    }
    if (local_sgd_ && steps_since_average > 0) {
      average_weights(samples_since_average);
      clock.lap(report.phases.communication);
    }
    // The report describes the whole world's work: loss and accuracy summed over ranks.
    engine_->synchronize();
    auto [loss_sum, correct] = engine_->take_metrics();
    double totals[2] = {loss_sum, correct};
    host_allreduce(totals, 2);
    report.loss_sum = totals[0];
    report.correct = std::size_t(totals[1] + 0.5);
    clock.lap(report.phases.communication);
    return report;
  }

  void get_parameters(std::span<float> out) {
    engine_->synchronize();
    engine_->copy_parameters_to_host(out);
  }

 // w = sum_r(n_r * w_r) / sum_r(n_r): a rank that saw more samples counts more, and a rank
  // that saw none (a tiny last batch) does not pull the average towards stale weights.
  void average_weights(double my_samples) {
    double total = my_samples;
    host_allreduce(&total, 1);
    if (total <= 0) return;
    engine_->scale_parameters(float(my_samples / total));
    comm_->allreduce(engine_->parameters(), engine_->parameter_count(), DataType::f32, ReduceOp::sum);
  }

 private:
  // Metrics live on the host; a device communicator needs them staged in device memory,
  // which the engine's communicator handles through host_reduce below.
  void host_allreduce(double* values, std::size_t count) {
    if (comm_->memory() == MemorySpace::host) {
      comm_->allreduce(values, count, ReduceOp::sum);
    } else {
      host_reduce_(values, count);
    }
  }

 public:
  // For device communicators: how to sum a few host doubles across ranks (e.g. over MPI).
  std::function<void(double*, std::size_t)> host_reduce_;

 private:
  StrategyContext context_;
  std::unique_ptr<Communicator> comm_;
  std::unique_ptr<ReplicaEngine> engine_;
  bool local_sgd_ = false, overlap_ = true;
  int period_ = 1;
  std::vector<std::pair<std::size_t, std::size_t>> layer_slices_;
};

}  // namespace nnpar
