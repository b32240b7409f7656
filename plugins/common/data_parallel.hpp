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
//
// Two ways to run an epoch, with the same operations in the same order (so the same maths):
// the host drives every step (load_batch, forward, backward, ...), or, for engines that can
// record their queued work (CUDA graphs: replay_steps() > 0), the trainer stages the epoch's
// samples on the device once and has whole chunks of steps recorded once and replayed, so the
// host does nothing per step. Per-step host overhead is what bounds small GPU steps.
#pragma once
#include <algorithm>
#include <bit>
#include <cstdint>
#include <functional>
#include <memory>
#include <span>
#include <string>
#include <utility>
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
  // Optional: the gradient buckets backward() reports through after_layer(index), as
  // [begin, end) ranges of the flat buffer that together cover it (e.g. a large layer split
  // so its first part's allreduce overlaps the rest of its product). Empty, the default: one
  // bucket per Linear, index = the layer.
  virtual std::vector<std::pair<std::size_t, std::size_t>> gradient_buckets() const { return {}; }
  // Optional (sync with overlap): when true, the trainer calls update_after_reduce(begin,
  // end) right after queueing each bucket's allreduce, so the engine queues that bucket's SGD
  // update behind its own collective, and join_updates() instead of sgd_step() at the end of
  // the step. The same element-wise update, so the same weights.
  virtual bool updates_after_reduce() const { return false; }
  virtual void update_after_reduce(std::size_t begin, std::size_t end) { (void)begin, (void)end; }
  virtual void join_updates() {}
  // Optional (sync without overlap): the engine sums the ranks' gradients and applies the SGD
  // update itself after backward() (e.g. one kernel that reads the peers' gradients), instead
  // of the communicator's allreduce and sgd_step(). The same sum and update, so the same weights.
  virtual bool reduces_gradients() const { return false; }
  virtual void reduce_and_update() {}
  // Optional: backward and sgd_step as one, for local SGD steps where nothing has to happen
  // between the two, so an engine can fuse the update into the gradient products (the same
  // values). Returns false if the engine does not, and the trainer calls the two itself.
  virtual bool backward_and_update(float loss_scale) {
    (void)loss_scale;
    return false;
  }
  // Multiplies the parameters by `factor` (for weighted averaging).
  virtual void scale_parameters(float factor) = 0;
  // Loss sum and correct predictions since the last call, then reset.
  virtual std::pair<double, double> take_metrics() = 0;
  // Optional: the same, already summed over every rank by the engine's own communicator (a
  // GPU engine does it on the device, one wait instead of a read, a host sum and a wait).
  // False: not offered, and the trainer sums take_metrics() itself. queue_world_metrics()
  // may start that sum behind the queued work, before the host waits for it.
  virtual void queue_world_metrics() {}
  virtual bool take_world_metrics(double* loss_sum, double* correct) {
    (void)loss_sum, (void)correct;
    return false;
  }
  virtual void copy_parameters_to_host(std::span<float> out) = 0;
  // Blocks until the engine's queued work is done (GPU engines; a no-op on the CPU).
  virtual void synchronize() {}

  // Replay (optional). The most steps one recording may hold; 0: the host drives every step
  // and the three calls below are never made.
  virtual std::size_t replay_steps() const { return 0; }
  // This rank's samples for the whole epoch; also restarts the device step counter. The k-th
  // step that has samples (counted on the device) reads indices[k*stride, k*stride + rows),
  // so one recording serves any chunk of the epoch. `reading_steps` such steps will run.
  virtual void stage_epoch(std::span<const std::uint32_t> indices, std::size_t stride,
                           std::size_t reading_steps) {
    (void)indices, (void)stride, (void)reading_steps;
  }
  // Optional: the next epoch's stage_epoch indices, given while the device still runs this
  // epoch (after its work is queued), so the engine can copy them where the upload reads
  // them ahead of time instead of at the next epoch's start, with the device idle. The next
  // stage_epoch call then passes the same vector (same data pointer and size).
  virtual void stage_ahead(std::span<const std::uint32_t> indices) { (void)indices; }
  // While recording, instead of load_batch: the next step reads `rows` staged samples.
  virtual void load_staged(int rows) { (void)rows; }
  // Runs `record` (which queues a chunk of steps: engine and communicator work) under
  // recording the first time `key` is seen, then queues the recording; later calls with the
  // same key only queue the recording. Nothing `record` queues may block the host.
  virtual void replay(const std::string& key, const std::function<void()>& record) {
    (void)key;
    record();
  }
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
    buckets_ = engine_->gradient_buckets();
    if (buckets_.empty()) buckets_ = layer_slices_;
    // Warm-up outside the timed epochs: NCCL sets up its connections on the first collective
    // (about a second on 2 H200s), which would otherwise land in epoch 1 and in every
    // time-to-accuracy figure. The gradients are zero here, so the sum changes nothing.
    comm_->allreduce(engine_->gradients(), engine_->parameter_count(), DataType::f32, ReduceOp::sum);
    for (auto [b, e] : buckets_)
      comm_->allreduce_async(engine_->gradients() + b, e - b, DataType::f32, ReduceOp::sum)->wait();
    engine_->synchronize();
  }

  Communicator& comm() { return *comm_; }
  ReplicaEngine& engine() { return *engine_; }

  EpochReport train_epoch(int epoch) {
    if (engine_->replay_steps() > 0) return replay_epoch(epoch);
    const TrainSettings& train = *context_.train;
    const Dataset& data = *context_.train_data;
    const auto order = epoch_order(data.count, train.seed, epoch, train.shuffle);
    const int rank = comm_->rank(), world = comm_->size();
    EpochReport report;
    PhaseClock clock;
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
        sync_step(rows, false, report.phases, clock);
      } else {
        local_step(mine.size(), report.phases, clock);
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
    engine_->synchronize();
    add_world_metrics(report);
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
  // One sync step after its batch is staged. Every rank scales by the global batch: the
  // allreduced sum is then exactly the gradient of the global batch's mean loss.
  // `recording`: the host must not block, so the single allreduce becomes async + a device
  // wait (the same collective on the same buffer, so the same sum).
  void sync_step(std::size_t rows, bool recording, PhaseTimes& phases, PhaseClock& clock) {
    const float scale = 1.0f / float(rows);
    if (engine_->reduces_gradients()) {
      engine_->backward(scale, {});
      clock.lap(phases.backward);
      engine_->reduce_and_update();
      clock.lap(phases.update);
      return;
    }
    std::vector<std::unique_ptr<CommRequest>> pending;
    const bool per_bucket = overlap_ && engine_->updates_after_reduce();
    engine_->backward(scale, [&](int bucket) {
      if (!overlap_) return;
      const auto [b, e] = buckets_[bucket];
      pending.push_back(comm_->allreduce_async(engine_->gradients() + b, e - b, DataType::f32, ReduceOp::sum));
      if (per_bucket) engine_->update_after_reduce(b, e);
    });
    clock.lap(phases.backward);
    if (overlap_) {
      for (auto& r : pending) r->wait();
    } else if (recording) {
      comm_->allreduce_async(engine_->gradients(), engine_->parameter_count(), DataType::f32, ReduceOp::sum)->wait();
    } else {
      comm_->allreduce(engine_->gradients(), engine_->parameter_count(), DataType::f32, ReduceOp::sum);
    }
    clock.lap(phases.communication);
    if (per_bucket)
      engine_->join_updates();
    else
      engine_->sgd_step();
    clock.lap(phases.update);
  }

  // One local SGD step on this rank's shard of the batch (mean over the shard).
  void local_step(std::size_t mine, PhaseTimes& phases, PhaseClock& clock) {
    if (mine == 0) return;
    if (engine_->backward_and_update(1.0f / float(mine))) {
      clock.lap(phases.backward);
      return;
    }
    engine_->backward(1.0f / float(mine), {});
    clock.lap(phases.backward);
    engine_->sgd_step();
    clock.lap(phases.update);
  }

  // The report describes the whole world's work: loss and accuracy summed over ranks.
  void add_world_metrics(EpochReport& report) {
    double totals[2] = {0, 0};
    if (!engine_->take_world_metrics(&totals[0], &totals[1])) {
      auto [loss_sum, correct] = engine_->take_metrics();
      totals[0] = loss_sum;
      totals[1] = correct;
      host_allreduce(totals, 2);
    }
    report.loss_sum = totals[0];
    report.correct = std::size_t(totals[1] + 0.5);
  }

  // The epoch as recorded chunks: the operations of the host-driven loop, in its order. What
  // that loop learns as it goes is known up front: every rank's shard sizes follow from
  // shard_range, so local SGD's averaging weight (my samples / the world's samples since the
  // last average) needs no host collective, and a chunk's work is fixed by its sequence of
  // (global rows, my rows) steps and averaging weights, which is its key. Chunks hold at most
  // replay_steps() steps; for local SGD they are whole averaging periods (or, for periods
  // longer than a chunk, end at every average), so the epoch is a few distinct recordings
  // (the main chunk, the epoch's last one) replayed many times.
  struct Op {
    std::size_t rows = 0, mine = 0;  // a step (rows > 0) ...
    float factor = 0;                // ... or a weighted average (rows == 0)
  };
  struct Chunk {
    std::size_t begin = 0, end = 0;  // ops[begin, end)
    std::string key;
  };
  struct EpochPlan {
    int epoch = -1;
    std::size_t samples = 0;         // the order's length, checked against the epoch's
    std::vector<std::uint32_t> staged;  // this rank's samples, step after step
    std::size_t stride = 0, reading = 0;
    std::vector<Op> ops;
    std::vector<Chunk> chunks;
  };

  // Everything an epoch's replay needs from its order, computed on the host. For epoch e+1 it
  // is computed while the device runs epoch e (replay_epoch, after queueing), so the next
  // epoch starts with an upload and graph launches instead of ~0.1 ms of host work with the
  // device idle.
  EpochPlan plan_epoch(const std::vector<std::uint32_t>& order, int epoch) const {
    const TrainSettings& train = *context_.train;
    const int rank = comm_->rank(), world = comm_->size();
    const std::size_t batch = std::size_t(train.batch_size);
    EpochPlan plan;
    plan.epoch = epoch;
    plan.samples = order.size();

    std::vector<std::size_t> rows;  // global rows of each step; only the last may be partial
    for (std::size_t begin = 0; begin < order.size(); begin += batch) {
      const std::size_t n = std::min(batch, order.size() - begin);
      if (train.drop_last && n < batch) break;
      rows.push_back(n);
    }
    // Every full step has this rank's full-batch shard size, and a partial step can only be
    // the last, so the k-th step with samples starts at k * stride.
    plan.stride = shard_range(batch, rank, world).size();
    plan.staged.reserve(rows.size() * plan.stride);
    for (std::size_t s = 0; s < rows.size(); ++s) {
      const Range mine = shard_range(rows[s], rank, world);
      if (mine.size() == 0) continue;
      const auto first = order.begin() + std::ptrdiff_t(s * batch + mine.begin);
      plan.staged.insert(plan.staged.end(), first, first + std::ptrdiff_t(mine.size()));
      ++plan.reading;
    }

    std::vector<Op>& ops = plan.ops;
    double my_since = 0, world_since = 0;
    int steps_since = 0;
    for (std::size_t s = 0; s < rows.size(); ++s) {
      const std::size_t mine = shard_range(rows[s], rank, world).size();
      ops.push_back({rows[s], mine, 0.0f});
      if (!local_sgd_) continue;
      my_since += double(mine);
      world_since += double(rows[s]);  // what average_weights' host allreduce would return
      if (++steps_since == period_ || s + 1 == rows.size()) {
        ops.push_back({0, 0, float(my_since / world_since)});
        my_since = world_since = 0;
        steps_since = 0;
      }
    }

    const std::size_t most = engine_->replay_steps();
    const std::size_t period = std::size_t(period_);
    const std::size_t limit = local_sgd_ && period <= most ? most / period * period : most;
    for (std::size_t i = 0; i < ops.size();) {
      std::size_t end = i, steps = 0;
      std::string key = local_sgd_ ? "local" : "sync";
      while (end < ops.size()) {
        const Op& op = ops[end];
        if (op.rows > 0) {
          if (steps == limit) break;
          ++steps;
          key += " s" + std::to_string(op.rows) + "/" + std::to_string(op.mine);
          ++end;
        } else {
          key += " a" + std::to_string(std::bit_cast<std::uint32_t>(op.factor));  // exact, unlike %f
          ++end;
          if (period > most) break;
        }
      }
      plan.chunks.push_back({i, end, std::move(key)});
      i = end;
    }
    return plan;
  }

  EpochReport replay_epoch(int epoch) {
    const TrainSettings& train = *context_.train;
    const std::size_t count = context_.train_data->count;
    EpochReport report;
    PhaseClock clock;

    EpochPlan plan;
    if (next_plan_.epoch == epoch && next_plan_.samples == count) {
      plan = std::move(next_plan_);
    } else {
      plan = plan_epoch(epoch_order(count, train.seed, epoch, train.shuffle), epoch);
    }
    next_plan_ = EpochPlan{};
    engine_->stage_epoch(plan.staged, plan.stride, plan.reading);
    clock.lap(report.phases.data);

    PhaseTimes unused;
    PhaseClock unused_clock;
    for (const Chunk& chunk : plan.chunks) {
      engine_->replay(chunk.key, [&] {
        for (std::size_t j = chunk.begin; j < chunk.end; ++j) {
          const Op& op = plan.ops[j];
          if (op.rows == 0) {
            engine_->scale_parameters(op.factor);
            comm_->allreduce_async(engine_->parameters(), engine_->parameter_count(), DataType::f32, ReduceOp::sum)
                ->wait();
            continue;
          }
          engine_->load_staged(int(op.mine));
          engine_->forward();
          if (!local_sgd_)
            sync_step(op.rows, true, unused, unused_clock);
          else
            local_step(op.mine, unused, unused_clock);
        }
      });
      for (std::size_t j = chunk.begin; j < chunk.end; ++j) {
        if (plan.ops[j].rows == 0) continue;
        report.samples += plan.ops[j].rows;
        report.steps += 1;
      }
    }
    engine_->queue_world_metrics();
    // While the device runs the recordings: the next epoch's order and plan.
    if (epoch + 1 < train.epochs) {
      next_plan_ = plan_epoch(epoch_order(count, train.seed, epoch + 1, train.shuffle), epoch + 1);
      engine_->stage_ahead(next_plan_.staged);
    }
    engine_->synchronize();
    // The host does nothing per step, so the device's phases cannot be observed without
    // perturbing it: as in the cuda strategy, the time is split between forward and backward
    // by FLOPs (communication overlapped with them inside the replay included).
    double device = 0;
    clock.lap(device);
    double fwd = 0, bwd = 0;
    const std::vector<int>& sizes = context_.model->layer_sizes;
    for (std::size_t l = 0; l + 1 < sizes.size(); ++l) {
      const double mac = double(sizes[l]) * double(sizes[l + 1]);
      fwd += mac;
      bwd += (l > 0 ? 2 : 1) * mac;
    }
    report.phases.forward = device * fwd / (fwd + bwd);
    report.phases.backward = device * bwd / (fwd + bwd);
    add_world_metrics(report);
    clock.lap(report.phases.communication);
    return report;
  }

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
  EpochPlan next_plan_;  // replay: the next epoch's, made while the device runs this one
  bool local_sgd_ = false, overlap_ = true;
  int period_ = 1;
  std::vector<std::pair<std::size_t, std::size_t>> layer_slices_;
  std::vector<std::pair<std::size_t, std::size_t>> buckets_;  // sync's allreduces: layer_slices_ unless the engine splits them
};

}  // namespace nnpar
