// Pipeline model parallelism, written once over two abstractions: a Communicator (MPI on
// host buffers, NCCL on device buffers) and a StageEngine (the maths of one pipeline stage
// on one device). mpi-pipeline is this trainer with a CPU engine; an nccl-pipeline would be
// the same trainer with a GPU engine. docs/pipeline.md describes the design.
//
// Each rank is one stage and owns a contiguous run of the model's Linear layers, i.e. a
// contiguous slice of the flat parameter buffer. Every global batch is cut into micro-batches
// (shard_range); activations flow forward stage to stage, activation gradients flow back, each
// stage accumulates its weight gradients over the micro-batches (loss scale 1/global rows)
// and takes one SGD step on its own slice per global batch: the maths of serial, exact class.
#pragma once
#include <algorithm>
#include <chrono>
#include <cstdint>
#include <functional>
#include <limits>
#include <memory>
#include <numeric>
#include <set>
#include <span>
#include <stdexcept>
#include <string>
#include <tuple>
#include <utility>
#include <vector>

#include "nnpar/communicator.hpp"
#include "nnpar/strategy.hpp"

namespace nnpar {

inline std::vector<OptionSpec> pipeline_options() {
  return {
      {"schedule", OptionType::string, std::string("1f1b"),
       "gpipe: all forwards then all backwards; 1f1b: one forward one backward (fewer activations held)",
       -1e300, 1e300, {"gpipe", "1f1b"}},
      {"micro_batches", OptionType::integer, std::int64_t{4},
       "micro-batches per global batch (more: smaller bubble, smaller GEMMs)", 1, 1 << 20, {}},
      {"partition", OptionType::string, std::string("auto"),
       "Linear layers per stage, e.g. \"2,1,1\"; auto balances the estimated compute", -1e300, 1e300, {}},
      {"send_progress_us", OptionType::integer, std::int64_t{100},
       "MPI ranks: after queueing a send, drive it from the host for up to this many microseconds (at most a "
       "quarter of the micro-batch just computed), so a waiting neighbour gets it before this stage's next "
       "micro-batch where MPI cannot copy between processes in one step (no CMA); 0: off; NCCL: no effect",
       0, 100000, {}},
  };
}

// ---------------------------------------------------------------------------------------------
// Partitioning

// Estimated compute of a Linear layer per sample: in*out multiply-adds for each of its GEMMs,
// forward, weight gradient and input gradient; the model's first layer has no input gradient
// (its input is the data), so it costs 2 GEMMs, not 3. The batch size is the same for every
// layer, so it does not change the balance; sigmoid and softmax are O(out) and ignored.
inline double linear_cost(const ModelSpec& spec, int layer) {
  const double gemms = layer == 0 ? 2.0 : 3.0;
  return gemms * double(spec.layer_sizes[layer]) * double(spec.layer_sizes[layer + 1]);
}

inline std::string layer_list(const ModelSpec& spec) {
  std::string s = "[";
  for (std::size_t i = 0; i < spec.layer_sizes.size(); ++i) {
    if (i) s += ", ";
    s += std::to_string(spec.layer_sizes[i]);
  }
  return s + "]";
}

inline void check_stage_count(const ModelSpec& spec, int stages) {
  const int layers = spec.linear_count();
  if (stages > layers)
    throw std::invalid_argument(
        "option partition: " + std::to_string(stages) + " pipeline stages (one per MPI rank) but the model " +
        layer_list(spec) + " has only " + std::to_string(layers) + " Linear layers; every stage needs at least "
        "one, so run on at most " + std::to_string(layers) + " ranks or add layers");
}

// Contiguous split of the Linear layers over `stages` that minimises the most expensive stage
// (the slowest stage sets the pace of the whole pipeline) and, among the splits that achieve
// it, the sum of squared stage costs (the most even one). Two O(stages * layers^2) passes.
inline std::vector<int> auto_partition(const ModelSpec& spec, int stages) {
  check_stage_count(spec, stages);
  const int L = spec.linear_count();
  std::vector<double> prefix(L + 1, 0.0);
  for (int i = 0; i < L; ++i) prefix[i + 1] = prefix[i] + linear_cost(spec, i);
  const double inf = std::numeric_limits<double>::infinity();
  auto cost = [&](int i, int j) { return prefix[j] - prefix[i]; };  // layers [i, j)

  // Pass 1: the smallest achievable maximum stage cost. Costs are integers below 2^53, so
  // the comparisons below are exact.
  std::vector<std::vector<double>> best(stages + 1, std::vector<double>(L + 1, inf));
  best[0][0] = 0;
  for (int k = 1; k <= stages; ++k)
    for (int j = k; j <= L; ++j)
      for (int i = k - 1; i < j; ++i) best[k][j] = std::min(best[k][j], std::max(best[k - 1][i], cost(i, j)));
  const double bound = best[stages][L];

  // Pass 2: the least sum of squares with every stage within that bound.
  std::vector<std::vector<double>> squares(stages + 1, std::vector<double>(L + 1, inf));
  std::vector<std::vector<int>> cut(stages + 1, std::vector<int>(L + 1, -1));
  squares[0][0] = 0;
  for (int k = 1; k <= stages; ++k)
    for (int j = k; j <= L; ++j)
      for (int i = k - 1; i < j; ++i) {
        const double c = cost(i, j);
        if (c > bound || squares[k - 1][i] == inf) continue;
        if (squares[k - 1][i] + c * c < squares[k][j]) {
          squares[k][j] = squares[k - 1][i] + c * c;
          cut[k][j] = i;
        }
      }
  std::vector<int> counts(stages);
  for (int k = stages, j = L; k > 0; --k) {
    const int i = cut[k][j];
    counts[k - 1] = j - i;
    j = i;
  }
  return counts;
}

// "2,1,1": Linear layers per stage, first stage first.
inline std::vector<int> parse_partition(const std::string& text, const ModelSpec& spec, int stages) {
  check_stage_count(spec, stages);
  const std::string where = "option partition = \"" + text + "\": ";
  std::vector<int> counts;
  std::size_t start = 0;
  while (true) {
    const std::size_t comma = text.find(',', start);
    std::string item = text.substr(start, comma == std::string::npos ? std::string::npos : comma - start);
    item.erase(0, item.find_first_not_of(" \t"));
    item.erase(item.find_last_not_of(" \t") + 1);
    const bool digits = !item.empty() && item.size() < 7 &&
                        std::all_of(item.begin(), item.end(), [](char c) { return c >= '0' && c <= '9'; });
    if (!digits || std::stoi(item) < 1)
      throw std::invalid_argument(where + "'" + item + "' is not a positive number of Linear layers "
                                  "(write \"auto\" or counts per stage like \"2,1,1\")");
    counts.push_back(std::stoi(item));
    if (comma == std::string::npos) break;
    start = comma + 1;
  }
  if (int(counts.size()) != stages)
    throw std::invalid_argument(where + "lists " + std::to_string(counts.size()) + " stages but the pipeline has " +
                                std::to_string(stages) + " (one per MPI rank)");
  const int sum = std::accumulate(counts.begin(), counts.end(), 0);
  if (sum != spec.linear_count())
    throw std::invalid_argument(where + "the counts sum to " + std::to_string(sum) + " Linear layers but the model " +
                                layer_list(spec) + " has " + std::to_string(spec.linear_count()));
  return counts;
}

inline std::vector<int> resolve_partition(const std::string& option, const ModelSpec& spec, int stages) {
  return option == "auto" ? auto_partition(spec, stages) : parse_partition(option, spec, stages);
}

// ---------------------------------------------------------------------------------------------
// Schedules

enum class PipelineSchedule { gpipe, one_f_one_b };

struct PipelineOp {
  bool forward = true;
  int micro = 0;
  bool operator==(const PipelineOp&) const = default;
};

// The order in which one stage runs the forwards and backwards of `micro` micro-batches.
// Backwards always go in ascending micro-batch order, in both schedules: every stage then
// accumulates the same gradient terms in the same order, so GPipe and 1F1B give bit-identical
// weights (the schedules differ only in when, not in what, they compute).
inline std::vector<PipelineOp> schedule_ops(PipelineSchedule schedule, int stage, int stages, int micro) {
  std::vector<PipelineOp> ops;
  if (schedule == PipelineSchedule::gpipe) {
    for (int m = 0; m < micro; ++m) ops.push_back({true, m});
    for (int m = 0; m < micro; ++m) ops.push_back({false, m});
    return ops;
  }
  // 1F1B: the warm-up fills the pipeline below this stage, so that the first backward
  // arrives just as the stage would otherwise wait; afterwards at most stages - stage
  // micro-batches are in flight here, whatever the number of micro-batches.
  const int warmup = std::min(stages - stage - 1, micro);
  for (int m = 0; m < warmup; ++m) ops.push_back({true, m});
  for (int i = 0; i + warmup < micro; ++i) {
    ops.push_back({true, warmup + i});
    ops.push_back({false, i});
  }
  for (int m = micro - warmup; m < micro; ++m) ops.push_back({false, m});
  return ops;
}

// Activation slots a stage needs: one per micro-batch in flight, plus one for 1F1B so the
// receive of the next forward's input can be posted while the current slots are all busy.
inline int schedule_slots(PipelineSchedule schedule, int stage, int stages, int micro_batches) {
  if (schedule == PipelineSchedule::gpipe) return micro_batches;
  return std::min(micro_batches, stages - stage + 1);
}

// The idle fraction of an ideal pipeline (equal stages, no communication cost) under
// either schedule: every stage waits S-1 forward+backward slots per step out of M+S-1.
inline double ideal_bubble_fraction(int stages, int micro) {
  return double(stages - 1) / double(micro + stages - 1);
}

// ---------------------------------------------------------------------------------------------
// What one stage owns

struct StagePlan {
  int stage = 0, stages = 1;
  std::vector<int> partition;            // Linear layers per stage
  int first_layer = 0, layer_count = 0;  // this stage's Linear layers
  std::size_t param_offset = 0, param_count = 0;  // its slice of the flat parameter buffer
  int input_features = 0, output_features = 0;
  int micro_batches = 1;                 // per global batch (fewer when a batch has fewer rows)
  int max_micro_rows = 1;
  int replicas = 1;                      // data x pipeline: pipelines sharing each batch
  int slots = 1;                         // micro-batches whose activations it can hold at once
  double send_progress_s = 0;            // the most a send is driven from the host (option send_progress_us)
  PipelineSchedule schedule = PipelineSchedule::one_f_one_b;
  std::string schedule_name;
  bool first() const { return stage == 0; }
  bool last() const { return stage == stages - 1; }
};

// The slice [offset, offset + count) of the flat buffer that stage `stage` owns: Linear
// layers are stored one after the other, so consecutive layers are one contiguous block.
inline std::pair<std::size_t, std::size_t> stage_slice(const ModelSpec& spec, const std::vector<int>& partition,
                                                       int stage) {
  const int first = std::accumulate(partition.begin(), partition.begin() + stage, 0);
  const int end = first + partition[stage];
  const std::size_t begin = parameter_offset(spec, first);
  const std::size_t finish = end < spec.linear_count() ? parameter_offset(spec, end) : parameter_count(spec);
  return {begin, finish - begin};
}

// Deterministic from the context alone, so every rank computes the same plan and every rank
// throws the same error for a bad configuration before any message is exchanged.
inline StagePlan make_stage_plan(const StrategyContext& context, int stage, int stages) {
  const ModelSpec& spec = *context.model;
  const StrategyOptions& o = *context.options;
  StagePlan plan;
  plan.stage = stage;
  plan.stages = stages;
  plan.partition = resolve_partition(o.get_string("partition"), spec, stages);
  plan.first_layer = std::accumulate(plan.partition.begin(), plan.partition.begin() + stage, 0);
  plan.layer_count = plan.partition[stage];
  std::tie(plan.param_offset, plan.param_count) = stage_slice(spec, plan.partition, stage);
  plan.input_features = spec.layer_sizes[plan.first_layer];
  plan.output_features = spec.layer_sizes[plan.first_layer + plan.layer_count];
  plan.micro_batches = int(o.get_int("micro_batches"));
  const int batch = context.train->batch_size;
  plan.max_micro_rows = (batch + plan.micro_batches - 1) / plan.micro_batches;
  plan.schedule_name = o.get_string("schedule");
  plan.schedule = plan.schedule_name == "gpipe" ? PipelineSchedule::gpipe : PipelineSchedule::one_f_one_b;
  plan.slots = schedule_slots(plan.schedule, stage, stages, plan.micro_batches);
  plan.send_progress_s = double(o.get_int("send_progress_us")) * 1e-6;
  return plan;
}

// Every micro-batch row count a stage can be given: full batches and the epoch's short last
// one, cut into the replicas' shards, then into micro-batches as PipelineTrainer::run_step
// cuts them. For engines that plan work per shape (the GPU's split-K scratch).
inline std::set<int> micro_batch_rows(const StagePlan& plan, int batch, std::size_t samples) {
  std::set<int> rows;
  for (const std::size_t total : {std::size_t(batch), samples % std::size_t(batch)})
    for (int r = 0; r < plan.replicas; ++r) {
      const std::size_t shard = shard_range(total, r, plan.replicas).size();
      const int micro = int(std::min<std::size_t>(std::size_t(plan.micro_batches), shard));
      for (int m = 0; m < micro; ++m) rows.insert(int(shard_range(shard, m, micro).size()));
    }
  rows.erase(0);
  return rows;
}

// "2+1+1"
inline std::string partition_text(const std::vector<int>& partition) {
  std::string s;
  for (std::size_t i = 0; i < partition.size(); ++i) {
    if (i) s += '+';
    s += std::to_string(partition[i]);
  }
  return s;
}

// ---------------------------------------------------------------------------------------------
// The maths of one stage

// Buffers are in the communicator's memory space and indexed by slot (micro-batch m uses slot
// m % plan.slots); each holds up to plan.max_micro_rows rows. An engine that computes
// asynchronously (GPU) must have an output or input gradient complete, as seen by the
// communicator, when forward or backward returns.
class StageEngine {
 public:
  virtual ~StageEngine() = default;
  virtual float* parameters() = 0;          // this stage's slice, plan.param_count floats
  virtual float* input(int slot) = 0;       // [rows, input_features] from the previous stage
  virtual float* output(int slot) = 0;      // [rows, output_features] for the next stage
  virtual float* output_grad(int slot) = 0; // [rows, output_features] from the next stage
  virtual float* input_grad(int slot) = 0;  // [rows, input_features] for the previous stage
  // Stages a micro-batch's samples: the pixels on the first stage, the labels on the last.
  virtual void load(int slot, std::span<const std::uint32_t> indices) = 0;
  // The last stage also computes the loss, accumulating its sum and the correct count.
  virtual void forward(int slot, int rows) = 0;
  // Accumulates this stage's weight gradients; fills input_grad unless it is the first stage.
  virtual void backward(int slot, int rows, float loss_scale) = 0;
  // The same, calling after_layer(i) (i: the model's Linear index) as soon as Linear i's
  // gradients are accumulated and visible to the communicator, last layer first, so a
  // data-parallel reduction can start while the stage's earlier layers still compute. An
  // engine that cannot tell need not override it: the trainer then reduces after backward.
  virtual void backward_reporting(int slot, int rows, float loss_scale, const std::function<void(int)>& after_layer) {
    (void)after_layer;
    backward(slot, rows, loss_scale);
  }
  // This stage's gradient slice (plan.param_count floats); needed only for data x pipeline
  // (hybrid) training, which sums it over the replicas.
  virtual float* gradients() { return nullptr; }
  virtual void zero_grad() = 0;
  virtual void sgd_step() = 0;
  // Loss sum and correct predictions since the last call (zero except on the last stage).
  virtual std::pair<double, double> take_metrics() = 0;
  // A buffer of `count` floats in the communicator's memory space, and a copy out of one.
  virtual float* scratch(std::size_t count) = 0;
  virtual void copy_to_host(const float* source, std::size_t count, float* host) = 0;
  virtual void synchronize() {}
  // Called after each step's SGD update. An asynchronous engine bounds here how far the host
  // may queue work ahead of the device (and notices a device that stopped making progress).
  virtual void end_step() {}
};

// ---------------------------------------------------------------------------------------------
// The trainer

class PipelineTrainer {
 public:
  PipelineTrainer(const StrategyContext& context, StagePlan plan, std::unique_ptr<Communicator> comm,
                  std::unique_ptr<StageEngine> engine)
      : context_(context), plan_(std::move(plan)), comm_(std::move(comm)), engine_(std::move(engine)),
        pending_sends_(plan_.slots) {
    if (comm_->size() != plan_.stages || comm_->rank() != plan_.stage)
      throw std::logic_error("PipelineTrainer: plan for stage " + std::to_string(plan_.stage) + " of " +
                             std::to_string(plan_.stages) + " on rank " + std::to_string(comm_->rank()) +
                             " of " + std::to_string(comm_->size()));
  }

  const StagePlan& plan() const { return plan_; }

  // Data x pipeline (hybrid): this pipeline becomes replica data->rank() of data->size()
  // identical pipelines, and `data` links this stage to the same stage of every replica. Each
  // replica runs its contiguous shard of every global batch (shard_range, as mpi-data), still
  // scaled by 1/rows of the GLOBAL batch, so summing the stage's gradient over the replicas
  // before the SGD step gives the serial gradient. `overlap`: reduce each Linear layer's
  // gradient as soon as the step's last backward has produced it (else one allreduce of the
  // stage's slice after it). Call before the first epoch, on every rank.
  void replicate(std::unique_ptr<Communicator> data, bool overlap) {
    if (!engine_->gradients())
      throw std::logic_error("PipelineTrainer: data x pipeline needs a StageEngine that exposes gradients()");
    data_ = std::move(data);
    overlap_ = overlap;
    const ModelSpec& spec = *context_.model;
    layer_slices_.clear();
    for (int i = plan_.first_layer; i < plan_.first_layer + plan_.layer_count; ++i) {
      const std::size_t end = i + 1 < spec.linear_count() ? parameter_offset(spec, i + 1) : parameter_count(spec);
      layer_slices_.push_back({parameter_offset(spec, i) - plan_.param_offset, end - parameter_offset(spec, i)});
    }
    started_.assign(layer_slices_.size(), false);
  }
  // Device communicators (NCCL) run all operations of one communicator in order on one
  // stream, unlike MPI, where a posted irecv holds back no later send. Sharing one queue, a
  // receive posted early waits for its peer while every send queued behind it waits too,
  // and the pipeline deadlocks (1F1B from 2 stages). separate_channels gives each of a
  // stage's four kinds of message its own communicator, hence its own in-order queue:
  // channel (gradient ? 2 : 0) + (link % 2) carries the activations (0, 1) or activation
  // gradients (2, 3) over link l = stages (l, l+1). A stage's two links have different
  // parities, so its activation receives, activation sends, gradient receives and gradient
  // sends never share a queue, and each queue holds one peer's messages of one kind in
  // ascending micro-batch order, which is the order they match in anyway. A null channel
  // is the main communicator. Each must link the same ranks in the same order. Call before
  // the first epoch, on every rank. (Splitting only by direction is not enough: from 4
  // stages on, a 1F1B stage's gradient send to s-1 can queue behind its gradient receive
  // from s+1; nccl-pipeline describes the simulation that showed it.)
  void separate_channels(std::vector<std::unique_ptr<Communicator>> channels) {
    if (channels.size() != 4) throw std::logic_error("PipelineTrainer: separate_channels takes 4 channels");
    for (auto& c : channels)
      if (c && (c->size() != comm_->size() || c->rank() != comm_->rank()))
        throw std::logic_error("PipelineTrainer: a channel must link the same ranks as the pipeline");
    channels_ = std::move(channels);
  }
  // The channels separate_channels needs for a pipeline of `stages`, each a new communicator
  // over the pipeline's ranks from `make` (called the same number of times on every rank, as
  // communicator creation is collective). Odd links exist only from 3 stages on.
  static std::vector<std::unique_ptr<Communicator>> make_channels(
      int stages, const std::function<std::unique_ptr<Communicator>()>& make) {
    std::vector<std::unique_ptr<Communicator>> channels(4);
    for (int c = 1; c < 4; ++c)
      if (c % 2 == 0 || stages > 2) channels[c] = make();
    return channels;
  }
  int replica() const { return data_ ? data_->rank() : 0; }
  int replicas() const { return data_ ? data_->size() : 1; }
  // idle / total of this rank's last epoch: the measured pipeline bubble.
  double last_bubble_fraction() const { return bubble_fraction_; }

  EpochReport train_epoch(int epoch) {
    PhaseClock clock;
    const TrainSettings& train = *context_.train;
    const Dataset& data = *context_.train_data;
    const auto order = epoch_order(data.count, train.seed, epoch, train.shuffle);
    EpochReport report;
    clock.lap(report.phases.data);
    for (std::size_t begin = 0; begin < order.size(); begin += train.batch_size) {
      const std::size_t rows = std::min<std::size_t>(train.batch_size, order.size() - begin);
      if (train.drop_last && rows < std::size_t(train.batch_size)) break;
      run_step(std::span(order).subspan(begin, rows), report.phases, clock);
      report.samples += rows;
      report.steps += 1;
    }
    for (auto& slot : pending_sends_) wait_all(slot);
    clock.lap(report.phases.communication);

    // Only the last stage saw the labels: its loss and accuracy become everyone's, so rank 0
    // reports the whole world's work (every replica's, when there are several).
    engine_->synchronize();
    const auto [loss_sum, correct] = engine_->take_metrics();
    double totals[2] = {loss_sum, correct};
    host_allreduce(totals, 2);
    if (data_) host_allreduce(*data_, host_reduce_data_, totals, 2);
    report.loss_sum = totals[0];
    report.correct = std::size_t(totals[1] + 0.5);
    clock.lap(report.phases.communication);
    const double total = report.phases.total();
    bubble_fraction_ = total > 0 ? report.phases.idle / total : 0;
    return report;
  }

  // Collective: every stage sends its slice to rank 0, which assembles the flat vector.
  // Replicas hold the same weights, so only replica 0 (whose stage 0 is world rank 0) gathers.
  void get_parameters(std::span<float> out) {
    engine_->synchronize();
    if (replica() != 0) return;
    if (plan_.stage != 0) {
      comm_->send(engine_->parameters(), plan_.param_count, DataType::f32, 0, kParameterTag);
      return;
    }
    engine_->copy_to_host(engine_->parameters(), plan_.param_count, out.data() + plan_.param_offset);
    for (int s = 1; s < plan_.stages; ++s) {
      const auto [offset, count] = stage_slice(*context_.model, plan_.partition, s);
      float* buffer = engine_->scratch(count);
      comm_->recv(buffer, count, DataType::f32, s, kParameterTag);
      engine_->copy_to_host(buffer, count, out.data() + offset);
    }
  }

  // For device communicators: how to sum a few host doubles across the ranks of the pipeline
  // (e.g. over MPI), and, for hybrid, across the replicas of this stage.
  std::function<void(double*, std::size_t)> host_reduce_, host_reduce_data_;

 private:
  // Activations only ever go from stage s to s+1 and gradients from s+1 to s, and MPI (like
  // NCCL) keeps messages between two ranks in order, so one tag per direction matches every
  // message to the right micro-batch.
  static constexpr int kActivationTag = 1, kGradientTag = 2, kParameterTag = 3;

  void run_step(std::span<const std::uint32_t> global_batch, PhaseTimes& t, PhaseClock& clock) {
    // The mean over the GLOBAL batch, whatever share of it this replica runs.
    const float loss_scale = 1.0f / float(global_batch.size());
    const Range mine = shard_range(global_batch.size(), replica(), replicas());
    const auto batch = global_batch.subspan(mine.begin, mine.size());
    const int rows = int(batch.size());
    // A batch smaller than micro_batches (a short last batch) gets one row per micro-batch;
    // a replica with no rows at all runs no micro-batch but still joins the reduction.
    const int micro = std::min(plan_.micro_batches, rows);
    auto samples = [&](int m) {
      const Range r = shard_range(std::size_t(rows), m, micro);
      return batch.subspan(r.begin, r.size());
    };
    auto slot = [&](int m) { return m % plan_.slots; };
    const int prev = plan_.stage - 1, next = plan_.stage + 1;
    const std::size_t in = std::size_t(plan_.input_features), out = std::size_t(plan_.output_features);
    std::vector<std::unique_ptr<CommRequest>> activation_in(micro), gradient_in(micro);
    int posted = 0, backwards_done = 0;

    // Post the receive of every upcoming forward input whose slot is free (its previous
    // micro-batch has finished its backward), so the data lands while this stage computes.
    auto post_receives = [&] {
      if (plan_.first()) return;
      for (; posted < micro && posted - plan_.slots < backwards_done; ++posted)
        activation_in[posted] = channel(false, prev).irecv(engine_->input(slot(posted)), samples(posted).size() * in,
                                             DataType::f32, prev, kActivationTag);
      clock.lap(t.communication);
    };

    engine_->zero_grad();
    clock.lap(t.update);
    post_receives();
    for (const PipelineOp& op : schedule_ops(plan_.schedule, plan_.stage, plan_.stages, micro)) {
      const int m = op.micro, s = slot(m), r = int(samples(m).size());
      if (op.forward) {
        if (m - plan_.slots >= backwards_done)
          throw std::logic_error("pipeline: slot of micro-batch " + std::to_string(m) + " still in use");
        // The slot's previous micro-batch may still be sending from these buffers.
        wait_all(pending_sends_[s]);
        clock.lap(t.communication);
        engine_->load(s, samples(m));
        clock.lap(t.data);
        if (!plan_.first()) {
          if (!activation_in[m]) throw std::logic_error("pipeline: forward input was never received");
          activation_in[m]->wait();  // waiting for the previous stage: the bubble
          clock.lap(t.idle);
        }
        engine_->forward(s, r);
        const double forward_s = clock.lap(t.forward);
        if (!plan_.last()) {
          pending_sends_[s].push_back(channel(false, plan_.stage).isend(engine_->output(s), r * out, DataType::f32, next, kActivationTag));
          drive(*pending_sends_[s].back(), forward_s);
          gradient_in[m] = channel(true, plan_.stage).irecv(engine_->output_grad(s), r * out, DataType::f32, next, kGradientTag);
          clock.lap(t.communication);
        }
      } else {
        if (!plan_.last()) {
          gradient_in[m]->wait();  // waiting for the next stage's backward
          clock.lap(t.idle);
        }
        // Backwards run in ascending micro-batch order, so the last one completes the step's
        // gradients: only its layers can start their reduction early.
        if (data_ && overlap_ && m == micro - 1)
          engine_->backward_reporting(s, r, loss_scale, [&](int layer) { reduce_layer(layer - plan_.first_layer); });
        else
          engine_->backward(s, r, loss_scale);
        const double backward_s = clock.lap(t.backward);
        if (!plan_.first()) {
          pending_sends_[s].push_back(channel(true, prev).isend(engine_->input_grad(s), r * in, DataType::f32, prev, kGradientTag));
          drive(*pending_sends_[s].back(), backward_s);
          clock.lap(t.communication);
        }
        ++backwards_done;
        post_receives();
      }
    }
    if (data_) reduce_gradients(t, clock);
    engine_->sgd_step();
    engine_->end_step();
    clock.lap(t.update);
  }

  // Starts summing local layer `l`'s gradient over the replicas. Every replica starts its
  // layers in the same (descending) order, also one that ran no micro-batch, so the
  // collectives on the data communicator match.
  void reduce_layer(int l) {
    if (l < 0 || l >= int(layer_slices_.size()) || started_[l]) return;
    started_[l] = true;
    const auto [offset, count] = layer_slices_[l];
    reductions_.push_back(data_->allreduce_async(engine_->gradients() + offset, count, DataType::f32, ReduceOp::sum));
  }

  void reduce_gradients(PhaseTimes& t, PhaseClock& clock) {
    if (overlap_) {
      // Whatever the last backward did not report (no micro-batch on this replica, or an
      // engine that does not report layers), in the same descending order.
      for (int l = int(layer_slices_.size()) - 1; l >= 0; --l) reduce_layer(l);
      for (auto& r : reductions_) r->wait();
    } else {
      data_->allreduce(engine_->gradients(), plan_.param_count, DataType::f32, ReduceOp::sum);
    }
    reductions_.clear();
    started_.assign(layer_slices_.size(), false);
    clock.lap(t.communication);
  }

  // The communicator for activations (or gradients) over link (link, link + 1).
  Communicator& channel(bool gradient, int link) {
    if (channels_.empty()) return *comm_;
    Communicator* c = channels_[(gradient ? 2 : 0) + link % 2].get();
    return c ? *c : *comm_;
  }

  // A send this stage is about to compute past: drive it from the host for a moment, so a
  // neighbour already waiting for it gets it now rather than after this stage's next
  // micro-batch. Where MPI cannot copy between processes in one step (no CMA, e.g. a
  // container without ptrace rights) a large message moves only while its sender is inside
  // MPI: on 2 workstation cores it took the small model's 1F1B pipeline from 77.7k to 92.9k
  // samples/s, the speed with CMA (docs/results/2026-11-26-pipeline-send-progress.md). At
  // most a quarter of the micro-batch just computed (`op_s`), so a neighbour that is busy
  // costs little. NCCL's sends need no host: at once.
  void drive(CommRequest& send, double op_s) const {
    const double window = std::min(plan_.send_progress_s, 0.25 * op_s);
    if (window <= 0) return;
    const auto give_up = std::chrono::steady_clock::now() + std::chrono::duration<double>(window);
    while (!send.progress() && std::chrono::steady_clock::now() < give_up) {
    }
  }

  static void wait_all(std::vector<std::unique_ptr<CommRequest>>& requests) {
    for (auto& r : requests) r->wait();
    requests.clear();
  }

  void host_allreduce(double* values, std::size_t count) { host_allreduce(*comm_, host_reduce_, values, count); }
  static void host_allreduce(Communicator& comm, const std::function<void(double*, std::size_t)>& host_reduce,
                             double* values, std::size_t count) {
    if (comm.memory() == MemorySpace::host) {
      comm.allreduce(values, count, ReduceOp::sum);
    } else {
      if (!host_reduce) throw std::logic_error("PipelineTrainer: a device communicator needs a host reduction");
      host_reduce(values, count);
    }
  }

  StrategyContext context_;
  StagePlan plan_;
  std::unique_ptr<Communicator> comm_;
  std::unique_ptr<StageEngine> engine_;
  std::vector<std::unique_ptr<Communicator>> channels_;  // separate_channels; empty: all on comm_
  // Sends still in flight from each slot's buffers; waited before the slot is reused, so a
  // send overlaps everything up to the next forward that needs the slot.
  std::vector<std::vector<std::unique_ptr<CommRequest>>> pending_sends_;
  double bubble_fraction_ = 0;
  // Hybrid only: the same stage of every replica, this stage's Linear layers as
  // (offset, count) in its gradient slice, and the step's gradient reductions in flight.
  std::unique_ptr<Communicator> data_;
  bool overlap_ = true;
  std::vector<std::pair<std::size_t, std::size_t>> layer_slices_;
  std::vector<bool> started_;
  std::vector<std::unique_ptr<CommRequest>> reductions_;
};

}  // namespace nnpar
