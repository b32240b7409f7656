// The OpenMP multicore strategy: one process, T threads, two ways to split a step.
//
//  mode = "intra_op"       one model; every GEMM of a step is split GotoBLAS-style: its op(B)
//                          (a weight, or an activation for the weight gradient) is packed ONCE
//                          per step, cooperatively, and the threads split the M x N tile grid in
//                          2D, each packing only its own rows of op(A). Bias+sigmoid, the
//                          sigmoid derivative and the SGD update run in the epilogue of the
//                          thread that produced those elements, so a step of n layers takes
//                          2n+1 barriers. schedule = "dynamic" (default) cuts each large GEMM
//                          into up to tasks_per_thread tiles per thread (none smaller than
//                          min_tile_mflop), handed out largest first from a shared counter;
//                          "static" gives each thread one tile (step_plan.hpp says why); "auto"
//                          picks per phase: static where every GEMM of the phase has one tile
//                          per thread anyway. The kernels' per-element operation sequence does
//                          not depend on the tile an element is computed in: the weights are
//                          bit-identical to serial for any T and any schedule.
//                          schedule = "stationary" splits the step by neurons instead (weight-
//                          stationary): thread t owns the same 16-column lines of every hidden
//                          layer. It computes those activations and their gradients, updates the
//                          weight rows that produce them, and packs its own weight panels into
//                          private buffers; only activations and their gradients cross cores. The
//                          logits are split by rows. 2n-1 barriers a step (n > 1). See
//                          stationary_step.
//  mode = "data_parallel"  T workers share one weight buffer; each runs forward/backward on its
//                          contiguous shard of the global batch, then the T gradient buffers are
//                          summed in a fixed pairwise tree (an order that depends on T only, never
//                          on scheduling: repeated runs are bit-identical) and one SGD step runs.
//
// Thread placement is left to the OpenMP runtime on purpose: set OMP_PROC_BIND (close/spread)
// and OMP_PLACES (cores/threads) to pin threads; nothing here overrides them. Thread t keeps
// the same place in every parallel region, so buffers first touched by thread t in setup stay
// on its NUMA node.
//
// Phase times are the master thread's view: its own compute per phase, and the time it waits
// at barriers as "idle" (load imbalance plus barrier cost). NNPAR_OMP_PROFILE=1 splits the two:
// every thread then times its work and its wait in each phase of a step, and after each epoch
// one line per phase goes to stderr (work mean/max over the threads, wait min/mean). The
// thread that arrives last waits only for the barrier itself, so the least wait is the
// barrier's cost and the rest of the mean wait is imbalance.
#include <omp.h>

#include <algorithm>
#include <atomic>
#include <chrono>
#include <cstdio>
#include <cstdlib>
#include <memory>
#include <stdexcept>
#include <string>
#include <vector>

#include "nnpar/gemm_packed.hpp"
#include "nnpar/kernels.hpp"
#include "nnpar/strategy.hpp"
#include "step_plan.hpp"

namespace {

using namespace nnpar;
namespace kn = nnpar::kernels;

// Column and flat-buffer splits are multiples of 16 floats (one 64-byte line), so two threads
// never write the same cache line of an output row.
constexpr std::size_t kLine = 16;

Range line_share(std::size_t n, int t, int T) {
  const Range u = shard_range((n + kLine - 1) / kLine, t, T);
  return {std::min(n, u.begin * kLine), std::min(n, u.end * kLine)};
}

// new float[n] leaves the memory untouched, so the thread that first writes a page owns it.
using Buffer = std::unique_ptr<float[]>;
Buffer untouched(std::size_t n) { return Buffer(new float[std::max<std::size_t>(n, 1)]); }

// Packed GEMM operands are read with aligned vector loads: 64-byte aligned, also untouched.
struct AlignedDelete {
  void operator()(float* p) const { ::operator delete[](p, std::align_val_t(64)); }
};
using Packed = std::unique_ptr<float[], AlignedDelete>;
Packed untouched_aligned(std::size_t n) {
  return Packed(static_cast<float*>(::operator new[](std::max<std::size_t>(n, 16) * sizeof(float),
                                                     std::align_val_t(64))));
}

using openmp::Job;
using openmp::StepPlan;
using openmp::Task;

int resolve_threads(std::int64_t requested) {
  if (requested > 0) return int(requested);
  if (const char* env = std::getenv("OMP_NUM_THREADS")) {
    const int n = std::atoi(env);  // "8,4" (nested levels) gives the outer 8
    if (n > 0) return n;
  }
  return std::max(1, omp_get_max_threads());
}

using Clock = std::chrono::steady_clock;

struct alignas(64) ThreadProfile {  // NNPAR_OMP_PROFILE: seconds per phase of a step
  std::vector<double> work, wait;
};

struct alignas(64) Tally {  // one per thread, padded so threads never share its cache line
  double loss = 0;
  std::size_t correct = 0;
};

struct Worker {  // data_parallel: one per thread, constructed by that thread
  Worker(const ModelSpec& spec, int max_rows, std::span<float> shared, int features)
      : model(spec, max_rows, shared), x(std::size_t(max_rows) * features), y(max_rows) {}
  Model model;
  std::vector<float> x;
  std::vector<std::int32_t> y;
};

class OpenMpStrategy final : public Strategy {
 public:
  void setup(const StrategyContext& context) override {
    ctx_ = context;
    spec_ = *context.model;
    threads_ = resolve_threads(context.options->get_int("threads"));
    intra_ = context.options->get_string("mode") == "intra_op";
    const std::string schedule = context.options->get_string("schedule");
    schedule_ = schedule == "dynamic" ? openmp::Schedule::dynamic
                : schedule == "auto"  ? openmp::Schedule::automatic
                                      : openmp::Schedule::fixed;
    stationary_ = intra_ && schedule == "stationary";
    tasks_per_thread_ = int(context.options->get_int("tasks_per_thread"));
    min_tile_mflop_ = int(context.options->get_int("min_tile_mflop"));
    if (const char* e = std::getenv("NNPAR_OMP_PROFILE"); e && *e && std::string(e) != "0") {
      const int n = context.model->linear_count();
      const int phases = stationary_ ? std::max(2 * n - 1, 2) : intra_ ? 2 * n + 1 : 2;
      profile_.assign(threads_, ThreadProfile{std::vector<double>(phases), std::vector<double>(phases)});
    }
    const int B = context.train->batch_size, T = threads_, n = spec_.linear_count();
    params_count_ = parameter_count(spec_);
    params_ = untouched(params_count_);
    const bool momentum = context.train->sgd.momentum != 0.0f;
    if (momentum) velocity_ = untouched(params_count_);
    tally_.assign(T, Tally{});
    for (int i = 0; i < n; ++i) offset_.push_back(parameter_offset(spec_, i));
    if (intra_) {
      grads_ = untouched(params_count_);
      for (int i = 0; i <= n; ++i) {  // stationary gathers its input per thread: no shared act[0]
        const std::size_t floats = i == 0 && stationary_ ? 0 : std::size_t(B) * spec_.layer_sizes[i];
        act_.push_back(untouched(floats));
        grad_act_.push_back(untouched(floats));
      }
      probs_ = untouched(std::size_t(B) * spec_.layer_sizes[n]);
      labels_.resize(B);
      bias_tmp_.resize(T);
      // Forward: op(B) = W^T; input gradient: op(B) = W. Stationary threads own 16-column
      // lines, so its panels are one line wide, and its packed operands are per thread.
      auto layout = stationary_ ? kn::packed_b_layout_narrow : kn::packed_b_layout;
      for (int i = 0; i < n; ++i) {
        const int in = spec_.layer_sizes[i], out = spec_.layer_sizes[i + 1];
        wf_.push_back(layout(in, out));
        wb_.push_back(layout(out, in));
        if (stationary_) continue;
        wf_data_.push_back(untouched_aligned(wf_[i].floats()));
        wb_data_.push_back(untouched_aligned(i > 0 ? wb_[i].floats() : 0));
        ab_data_.push_back(untouched_aligned(kn::packed_b_layout(B, in).floats()));
      }
      if (stationary_) stationary_buffers_.resize(T);
      else plan_for(B);
    } else {
      workers_.resize(T);
    }
    int team = 0;
#pragma omp parallel num_threads(T)
    {
      const int t = omp_get_thread_num();
      if (t == 0) team = omp_get_num_threads();
      // Each thread first-touches the parameter slice it updates and the rows it computes.
      const Range p = line_share(params_count_, t, T);
      std::copy(ctx_.initial_parameters.begin() + p.begin, ctx_.initial_parameters.begin() + p.end,
                params_.get() + p.begin);
      if (momentum) std::fill(velocity_.get() + p.begin, velocity_.get() + p.end, 0.0f);
      if (intra_) std::fill(grads_.get() + p.begin, grads_.get() + p.end, 0.0f);
      if (stationary_) {
        stationary_buffers_[t] = make_stationary_buffers(B, t);
      } else if (intra_) {
        const Range r = shard_range(B, t, T);
        for (int i = 0; i <= n; ++i) {
          const std::size_t w = spec_.layer_sizes[i];
          std::fill(act_[i].get() + r.begin * w, act_[i].get() + r.end * w, 0.0f);
          std::fill(grad_act_[i].get() + r.begin * w, grad_act_[i].get() + r.end * w, 0.0f);
        }
        const std::size_t c = spec_.layer_sizes[n];
        std::fill(probs_.get() + r.begin * c, probs_.get() + r.end * c, 0.0f);
        bias_tmp_[t].assign(std::size_t(B) * plans_.front().max_bias_cols, 0.0f);
        // Packed operands: first touched in equal panel shares. With the static schedule these
        // are roughly the panels a thread packs every step; with the dynamic one no thread
        // owns any, and a one-node machine does not care who touched a page first.
        for (int i = 0; i < n; ++i) {
          touch_panels(wf_[i], wf_data_[i].get(), t, T);
          if (i > 0) touch_panels(wb_[i], wb_data_[i].get(), t, T);
          touch_panels(kn::packed_b_layout(B, spec_.layer_sizes[i]), ab_data_[i].get(), t, T);
        }
      } else {
        // Shard 0 is the largest; a thread whose shard is empty still needs a (1-row) model.
        const int rows = std::max<int>(1, int(shard_range(B, 0, T).size()));
        workers_[t] = std::make_unique<Worker>(spec_, rows, std::span(params_.get(), params_count_),
                                               context.train_data->features());
      }
    }
    if (team != T) throw_team_error(team);
  }

  EpochReport train_epoch(int epoch) override {
    const TrainSettings& train = *ctx_.train;
    const std::vector<std::uint32_t> order =
        epoch_order(ctx_.train_data->count, train.seed, epoch, train.shuffle);
    const std::size_t B = train.batch_size;
    const std::size_t batches = train.drop_last ? order.size() / B : (order.size() + B - 1) / B;
    EpochReport report;
    PhaseClock clock;
    int team = 0;
    const StepPlan* full = nullptr;
    const StepPlan* last = nullptr;
    if (intra_ && !stationary_ && batches > 0) {  // plans are built here, outside the team, once per shape
      const int full_rows = int(std::min(B, order.size()));
      const int last_rows = int(std::min(B, order.size() - (batches - 1) * B));
      plan_for(full_rows);
      plan_for(last_rows);
      full = &plan_for(full_rows);  // both exist now: plans_ no longer grows, pointers stay valid
      last = &plan_for(last_rows);
    }
    next_task_.value.store(0, std::memory_order_relaxed);
#pragma omp parallel num_threads(threads_)
    {
      Team tm{omp_get_thread_num(), &clock, &report};
      if (!profile_.empty()) tm.profile = &profile_[std::size_t(tm.t)];
      tm.lap(&PhaseTimes::idle);  // waking the team
      tm.since = Clock::now();
      if (tm.t == 0) team = omp_get_num_threads();
      // A smaller team than asked for (OMP_THREAD_LIMIT, OMP_DYNAMIC) would drop shards: every
      // thread sees the same team size, so all skip the work together and we throw below.
      if (omp_get_num_threads() == threads_) {
        for (std::size_t b = 0; b < batches; ++b) {
          const int rows = int(std::min(B, order.size() - b * B));
          const auto batch = std::span<const std::uint32_t>(order).subspan(b * B, rows);
          if (stationary_) stationary_step(tm, batch, rows);
          else if (intra_) intra_op_step(tm, batch, b + 1 == batches ? *last : *full);
          else data_parallel_step(tm, batch, rows);
          if (tm.t == 0) {
            report.samples += rows;
            report.steps += 1;
          }
        }
      }
    }
    if (team != threads_) throw_team_error(team);
    if (!profile_.empty()) print_profile(epoch, report.steps);
    return report;
  }

  void get_parameters(std::span<float> out) override {
    std::copy(params_.get(), params_.get() + params_count_, out.begin());
  }

  std::string device_description() const override {
    if (threads_ == 0) return "CPU (OpenMP)";  // before setup resolves the thread count
    return "CPU, " + std::to_string(threads_) + (threads_ == 1 ? " thread (" : " threads (") +
           (stationary_ ? "intra_op, weight-stationary" : intra_ ? "intra_op" : "data_parallel") + ")";
  }

 private:
  // The calling thread's place in the team, and the master's phase accounting.
  struct Team {
    int t;
    PhaseClock* clock;
    EpochReport* report;
    long ticket_base = 0;  // dynamic schedule: next_task_'s value when this phase began
    ThreadProfile* profile = nullptr;  // NNPAR_OMP_PROFILE only
    std::size_t phase = 0;             // its phase in the step
    Clock::time_point since{};         // when that phase began for this thread
    void lap(double PhaseTimes::*phase) const {
      if (t == 0) clock->lap(report->phases.*phase);
    }
    // Master only, between the barrier after every tally is written and the barrier before
    // any is rewritten. Fixed order (threads, or intra_op's logits tiles): a deterministic sum.
    void collect(const std::vector<Tally>& tally, std::size_t count) const {
      if (t != 0) return;
      for (std::size_t k = 0; k < count; ++k) {
        report->loss_sum += tally[k].loss;
        report->correct += tally[k].correct;
      }
    }
    void barrier(double PhaseTimes::*which) {
      lap(which);
      Clock::time_point arrived{};
      if (profile) {
        arrived = Clock::now();
        profile->work[phase] += std::chrono::duration<double>(arrived - since).count();
      }
#pragma omp barrier
      if (profile) {
        since = Clock::now();
        profile->wait[phase] += std::chrono::duration<double>(since - arrived).count();
        phase = (phase + 1) % profile->work.size();
      }
      lap(&PhaseTimes::idle);
    }
  };

  void print_profile(int epoch, std::size_t steps) {
    const std::size_t phases = profile_[0].work.size();
    const int n = spec_.linear_count();
    std::fprintf(stderr, "openmp profile: epoch %d, %d threads, %s, %zu steps; ms per epoch, over threads:\n",
                 epoch + 1, threads_, !intra_                                        ? "data_parallel"
                 : stationary_                              ? "intra_op stationary"
                 : schedule_ == openmp::Schedule::dynamic   ? "intra_op dynamic"
                 : schedule_ == openmp::Schedule::automatic ? "intra_op auto"
                                                            : "intra_op static",
                 steps);
    std::fprintf(stderr, "  phase  work_mean  work_max  wait_min  wait_mean\n");
    double tot[4] = {0, 0, 0, 0};
    for (std::size_t p = 0; p < phases; ++p) {
      double wmean = 0, wmax = 0, imin = 1e300, imean = 0;
      for (ThreadProfile& tp : profile_) {
        wmean += tp.work[p] / threads_;
        wmax = std::max(wmax, tp.work[p]);
        imin = std::min(imin, tp.wait[p]);
        imean += tp.wait[p] / threads_;
        tp.work[p] = tp.wait[p] = 0;
      }
      char name[16];
      if (!intra_) std::snprintf(name, sizeof name, "%s", p == 0 ? "fwd+bwd" : "reduce+update");
      else if (stationary_ && p == 0) std::snprintf(name, sizeof name, n > 1 ? "B0+F0" : "F0");  // B_0 ends no phase
      else if (stationary_) std::snprintf(name, sizeof name, "%c%d", int(p) < n ? 'F' : 'B', int(p) < n ? int(p) : 2 * n - 1 - int(p));
      else if (p == 0) std::snprintf(name, sizeof name, "P");
      else std::snprintf(name, sizeof name, "%c%d", int(p) <= n ? 'F' : 'B', int(p) <= n ? int(p) - 1 : 2 * n - int(p));
      std::fprintf(stderr, "  %-6s %9.2f %9.2f %9.2f %9.2f\n", name, wmean * 1e3, wmax * 1e3, imin * 1e3, imean * 1e3);
      const double v[4] = {wmean, wmax, imin, imean};
      for (int k = 0; k < 4; ++k) tot[k] += v[k];
    }
    std::fprintf(stderr, "  total  %9.2f %9.2f %9.2f %9.2f  (wait = %.0f%% of work+wait: barrier %.0f%%, imbalance %.0f%%)\n",
                 tot[0] * 1e3, tot[1] * 1e3, tot[2] * 1e3, tot[3] * 1e3, 100 * tot[3] / (tot[0] + tot[3]),
                 100 * tot[2] / (tot[0] + tot[3]), 100 * (tot[3] - tot[2]) / (tot[0] + tot[3]));
  }

  static void touch_panels(const kn::PackedB& l, float* data, int t, int T) {
    const Range r = shard_range(std::size_t(l.panels), t, T);
    const std::size_t per = std::size_t(l.K) * l.nr;
    std::fill(data + r.begin * per, data + r.end * per, 0.0f);
  }

  // The plan for batches of `rows` rows, made on first use. Called outside parallel regions
  // only: it may grow plans_ and the per-thread scratch.
  const StepPlan& plan_for(int rows) {
    for (const StepPlan& p : plans_)
      if (p.rows == rows) return p;
    plans_.push_back(openmp::make_step_plan(spec_.layer_sizes, rows, threads_, schedule_, wf_, wb_, tasks_per_thread_,
                                            min_tile_mflop_));
    const StepPlan& p = plans_.back();
    if (logit_tally_.size() < std::size_t(p.logits_tasks)) logit_tally_.resize(p.logits_tasks);
    for (std::vector<float>& tmp : bias_tmp_)
      if (!tmp.empty() && tmp.size() < std::size_t(rows) * p.max_bias_cols) tmp.resize(std::size_t(rows) * p.max_bias_cols);
    return p;
  }

  // Runs this thread's tasks of phase `phase` (the caller's barrier ends it). Dynamic: every thread
  // draws task numbers from next_task_ until one is past the end; each thread thus draws
  // exactly one number too many per phase, so the phase after this one starts at
  // base + count + T, known to every thread without resetting the counter (a reset would
  // need a barrier of its own).
  template <class Run>
  void for_each_task(Team& tm, const StepPlan& plan, std::size_t phase, Run&& run) {
    const std::vector<Task>& tasks = plan.phases[phase];
    const long count = long(tasks.size());
    if (plan.dynamic[phase]) {
      for (;;) {
        const long k = next_task_.value.fetch_add(1, std::memory_order_relaxed) - tm.ticket_base;
        if (k >= count) break;
        run(tasks[std::size_t(k)], int(k));
      }
      tm.ticket_base += count + threads_;
    } else {
      for (long k = tm.t; k < count; k += threads_) run(tasks[std::size_t(k)], int(k));
    }
  }

  // One step in 2n+1 phases (n = layers), each ended by the only barrier it needs (the tasks
  // of each phase: step_plan.hpp):
  //   P:   gather this thread's rows of the batch; pack W_0^T
  //   F_i: tiles of act[i+1] = act[i] * W_i^T, + bias, sigmoid (epilogue), softmax-CE on the
  //        logits' rows; pack act[i] for dW_i; F_0 also packs W^T and W of the other layers
  //   B_i: tiles of dW_i = G^T act[i] (K = batch whole) + SGD update of the tile; slices of
  //        db_i + update; tiles of grad_act[i] = G * W_i, * sigmoid' (epilogue)
  // Raw W is read only by the packing (P, F_0) and by the update: F and B read the packed
  // copies, so the update can run inside B_i without a barrier of its own.
  void intra_op_step(Team& tm, std::span<const std::uint32_t> batch, const StepPlan& plan) {
    const int T = threads_, t = tm.t, n = spec_.linear_count(), rows = plan.rows;
    const std::vector<int>& size = spec_.layer_sizes;
    const Range rs = shard_range(rows, t, T);
    const int my_rows = int(rs.size());
    gather_batch(*ctx_.train_data, batch.subspan(rs.begin, my_rows),
                 act_[0].get() + rs.begin * size[0], labels_.data() + rs.begin);
    tm.lap(&PhaseTimes::data);
    auto run = [&](const Task& task, int k) { run_task(task, k, rows); };
    for_each_task(tm, plan, 0, run);
    tm.barrier(&PhaseTimes::forward);
    for (int i = 0; i < n; ++i) {
      for_each_task(tm, plan, std::size_t(1 + i), run);
      tm.barrier(&PhaseTimes::forward);
    }
    tm.collect(logit_tally_, std::size_t(plan.logits_tasks));
    for (int j = 0; j < n; ++j) {
      for_each_task(tm, plan, std::size_t(n + 1 + j), run);
      tm.barrier(&PhaseTimes::backward);
    }
  }

  // One task of a step (k: its index in the phase, which names its softmax tally).
  void run_task(const Task& task, int k, int rows) {
    const std::vector<int>& size = spec_.layer_sizes;
    const int n = spec_.linear_count(), i = task.layer, in = size[i], out = size[i + 1];
    const std::size_t off = offset_[i], boff = off + std::size_t(out) * in;
    const float* W = params_.get() + off;
    switch (task.job) {
      case Job::pack_wf:
        kn::pack_b_panels(wf_[i], W, in, true, task.p0, task.p1, wf_data_[i].get());
        return;
      case Job::pack_wb:
        kn::pack_b_panels(wb_[i], W, in, false, task.p0, task.p1, wb_data_[i].get());
        return;
      case Job::pack_act:
        kn::pack_b_panels(kn::packed_b_layout(rows, in), act_[i].get(), in, false, task.p0, task.p1,
                          ab_data_[i].get());
        return;
      case Job::forward: {  // act[i+1] = sigmoid(act[i] * W^T + bias); no sigmoid on logits
        const float* bias = params_.get() + boff;
        float* Y = act_[i + 1].get();
        const bool hidden = i + 1 < n;
        if (!hidden) logit_tally_[std::size_t(k)] = Tally{};
        tiled(wf_[i], task, act_[i].get(), in, false, wf_data_[i].get(), 0.0f, Y, out,
              [&](int r0, int r1, int c0, int c1) {
                for (int q = r0; q < r1; ++q) {
                  float* y = Y + std::size_t(q) * out + c0;
                  if (hidden) kn::bias_sigmoid_rows(1, c1 - c0, bias + c0, y);
                  else kn::add_bias_rows(1, c1 - c0, bias + c0, y);
                }
                if (!hidden) softmax_rows(r0, r1, rows, logit_tally_[std::size_t(k)]);  // whole rows
              });
        return;
      }
      case Job::weight_grad: {
        // dW[out, in] += G^T * act[i], K = rows whole, so every element sums in serial's order.
        // Each finished block is applied and re-zeroed at once.
        tiled(kn::packed_b_layout(rows, in), task, grad_act_[i + 1].get(), out, true, ab_data_[i].get(), 1.0f,
              grads_.get() + off, in, update_rows(off, in));
        return;
      }
      case Job::input_grad:
        input_gradient(task, wb_data_[i].get());
        return;
      case Job::bias_grad: {  // columns [p0, p1)
        const Range cols{std::size_t(task.p0), std::size_t(task.p1)};
        bias_gradient(i, rows, cols);
        update_and_clear(boff + cols.begin, cols.size());
        return;
      }
    }
  }

  // C tile of one task = op(A) * B (packed as L in Bp) + beta * C, one MC row block at a time;
  // epilogue(r0, r1, c0, c1) runs on each finished block while it is still in cache.
  template <class Epilogue>
  static void tiled(const kn::PackedB& L, const Task& task, const float* A, int lda, bool transA,
                    const float* Bp, float beta, float* C, int ldc, Epilogue&& epilogue) {
    if (task.m0 >= task.m1 || task.p0 >= task.p1) return;
    const int c0 = L.panel_begin_col(task.p0), c1 = L.panel_begin_col(task.p1);
    for (int r = task.m0; r < task.m1; r += L.mc) {
      const int r1 = std::min(r + L.mc, task.m1);
      kn::gemm_packed_rows(L, r, r1, task.p0, task.p1, 1.0f, A, lda, transA, Bp, beta, C, ldc);
      epilogue(r, r1, c0, c1);
    }
  }

  // Softmax, loss and its gradient for logits rows [r0, r1), added to `tally`.
  void softmax_rows(int r0, int r1, int rows, Tally& tally) {
    const int n = spec_.linear_count(), C = spec_.layer_sizes[n];
    if (r0 >= r1) return;
    const std::size_t at = std::size_t(r0) * C;
    const std::int32_t* labels = labels_.data() + r0;
    tally.loss += kn::softmax_xent_forward(r1 - r0, C, act_[n].get() + at, labels, probs_.get() + at);
    tally.correct += kn::count_correct(r1 - r0, C, probs_.get() + at, labels);
    kn::softmax_xent_backward(r1 - r0, C, probs_.get() + at, labels, 1.0f / float(rows),
                              grad_act_[n].get() + at);
  }

  // SGD on params[at, at+count) with the gradients there, which are then zeroed for the next
  // step's accumulation (the same beta = 1 onto zeros as serial's zero_grad + backward).
  void update_and_clear(std::size_t at, std::size_t count) {
    if (count == 0) return;
    update(Range{at, at + count}, grads_.get());
    std::fill(grads_.get() + at, grads_.get() + at + count, 0.0f);
  }

  // ---- schedule = "stationary" ----------------------------------------------------------
  // Thread t owns the lines own(h, t) of every hidden layer h's columns (act[h], grad_act[h]),
  // and so rows own(i+1, t) of W_i (i < n-1) and columns own(n-1, t) of the logits layer's
  // W_{n-1}. What it computes from them it keeps: its panels of W_i^T and W_i are packed from
  // weights it updated itself, or that nobody writes in a forward phase. A weight line is thus
  // read by at most one other core a step, and the update never invalidates many copies, which
  // measured at 38-105 ns a line on 16 cores (docs/results/2026-11-27-openmp-scaling-6.md).
  struct Stationary {
    Buffer x;                 // the whole batch, gathered by this thread (n = 1 or own(1) not empty)
    std::vector<std::int32_t> y;  // its labels
    std::vector<Packed> wf;   // W_i^T: own panels (i < n-1); all of it for the logits (i = n-1)
    std::vector<Packed> wb;   // W_i, i >= 1: the panels of own(i) (input-gradient op(B))
    std::vector<Packed> ab;   // act[i] as dW_i's op(B): all panels (i < n-1), own(n-1)'s (n-1)
  };

  Range own(int h, int t) const { return line_share(std::size_t(spec_.layer_sizes[h]), t, threads_); }
  static Range panels_of(const kn::PackedB& l, Range cols) {  // cols.begin is a multiple of 16, so of nr
    if (cols.size() == 0) return {};  // an empty range at an unaligned end would round up to a panel
    return {cols.begin / std::size_t(l.nr), (cols.end + std::size_t(l.nr) - 1) / std::size_t(l.nr)};
  }
  bool gathers_batch(int t) const { return spec_.linear_count() == 1 || own(1, t).size() > 0; }

  // Made by the thread that uses them, which is the only one to touch them.
  std::unique_ptr<Stationary> make_stationary_buffers(int B, int t) {
    const int n = spec_.linear_count();
    auto s = std::make_unique<Stationary>();
    // Every thread gathers at least its logits rows' labels (and so their images) into x.
    s->x = untouched(std::size_t(B) * spec_.layer_sizes[0]);
    // bias_gradient's slice copy: the widest of its own column ranges (own(h), h = 1..n-1).
    std::size_t widest = 0;
    for (int h = 1; h < n; ++h) widest = std::max(widest, own(h, t).size());
    bias_tmp_[std::size_t(t)].assign(std::size_t(B) * widest, 0.0f);
    s->y.resize(std::size_t(B));
    for (int i = 0; i < n; ++i) {
      s->wf.push_back(untouched_aligned(wf_[i].floats()));
      s->wb.push_back(untouched_aligned(i > 0 ? wb_[i].floats() : 0));
      s->ab.push_back(untouched_aligned(kn::packed_b_layout_narrow(B, spec_.layer_sizes[i]).floats()));
    }
    return s;
  }

  // One step in 2n-1 phases (n > 1):
  //   F_i (i < n-1): act[i+1][:, own(i+1)] = act[i] * (own rows of W_i)^T, + bias, sigmoid; pack
  //                  own(i+1)'s columns of W_{i+1} for its input gradient (no weight is written
  //                  in a forward phase, so any thread may read any weight here)
  //   F_{n-1}:       the logits of this thread's rows, softmax-CE; W_{n-1}^T packed whole
  //   B_{n-1}:       dW_{n-1}[:, own(n-1)] + update; grad_act[n-1][:, own(n-1)]; db_{n-1} (t = 0)
  //   B_i (i > 0):   dW_i[own(i+1), :] + update, db_i[own(i+1)]; grad_act[i][:, own(i)]
  //   B_0 (n > 1):   dW_0[own(1), :] + update, db_0[own(1)]; no barrier after it: the next
  //                  step's first reads of what B_0 writes are this thread's own (W_0 rows,
  //                  db_0), and what B_0 reads (grad_act[1]) is next written two barriers on.
  // A one-layer model has F_0 and B_0 only, each ended by a barrier (2 phases).
  void stationary_step(Team& tm, std::span<const std::uint32_t> batch, int rows) {
    const int t = tm.t, n = spec_.linear_count(), last = n - 1;
    const std::vector<int>& size = spec_.layer_sizes;
    Stationary& me = *stationary_buffers_[std::size_t(t)];
    const Range lr = shard_range(std::size_t(rows), t, threads_);  // this thread's logits rows
    if (gathers_batch(t)) {
      gather_batch(*ctx_.train_data, batch, me.x.get(), me.y.data());
      std::copy_n(me.y.data() + lr.begin, lr.size(), labels_.data() + lr.begin);
    } else {  // its logits rows' labels only
      gather_batch(*ctx_.train_data, batch.subspan(lr.begin, lr.size()), me.x.get(), labels_.data() + lr.begin);
    }
    tm.lap(&PhaseTimes::data);
    auto layer_input = [&](int i) -> const float* { return i == 0 ? me.x.get() : act_[i].get(); };
    for (int i = 0; i < last; ++i) {
      const int in = size[i], out = size[i + 1];
      const float* W = params_.get() + offset_[i];
      const float* bias = W + std::size_t(out) * in;
      const Range c = own(i + 1, t), p = panels_of(wf_[i], c);
      kn::pack_b_panels(wf_[i], W, in, true, int(p.begin), int(p.end), me.wf[i].get());
      float* Y = act_[i + 1].get();
      tiled(wf_[i], Task{Job::forward, i, 0, rows, int(p.begin), int(p.end)}, layer_input(i), in, false,
            me.wf[i].get(), 0.0f, Y, out, [&](int r0, int r1, int c0, int c1) {
              for (int q = r0; q < r1; ++q) kn::bias_sigmoid_rows(1, c1 - c0, bias + c0, Y + std::size_t(q) * out + c0);
            });
      const Range pb = panels_of(wb_[i + 1], c);
      kn::pack_b_panels(wb_[i + 1], params_.get() + offset_[i + 1], out, false, int(pb.begin), int(pb.end),
                        me.wb[i + 1].get());
      tm.barrier(&PhaseTimes::forward);
    }
    {  // F_{n-1}: the logits of rows lr
      const int in = size[last], C = size[n];
      const float* W = params_.get() + offset_[last];
      const float* bias = W + std::size_t(C) * in;
      kn::pack_b_panels(wf_[last], W, in, true, 0, wf_[last].panels, me.wf[last].get());
      Tally& tally = tally_[std::size_t(t)];
      tally = Tally{};
      float* Y = act_[n].get();
      tiled(wf_[last], Task{Job::forward, last, int(lr.begin), int(lr.end), 0, wf_[last].panels}, layer_input(last),
            in, false, me.wf[last].get(), 0.0f, Y, C, [&](int r0, int r1, int c0, int c1) {
              for (int q = r0; q < r1; ++q) kn::add_bias_rows(1, c1 - c0, bias + c0, Y + std::size_t(q) * C + c0);
              softmax_rows(r0, r1, rows, tally);
            });
      tm.barrier(&PhaseTimes::forward);
      tm.collect(tally_, tally_.size());
    }
    {  // B_{n-1}: this thread's columns of W_{n-1}
      const int in = size[last], C = size[n];
      const std::size_t off = offset_[last], boff = off + std::size_t(C) * in;
      const Range c = own(last, t);
      const kn::PackedB ab = kn::packed_b_layout_narrow(rows, in);
      const Range p = panels_of(ab, c);
      kn::pack_b_panels(ab, layer_input(last), in, false, int(p.begin), int(p.end), me.ab[last].get());
      tiled(ab, Task{Job::weight_grad, last, 0, C, int(p.begin), int(p.end)}, grad_act_[n].get(), C, true,
            me.ab[last].get(), 1.0f, grads_.get() + off, in, update_rows(off, in));
      if (t == 0) {
        bias_gradient(last, rows, Range{0, std::size_t(C)});
        update_and_clear(boff, std::size_t(C));
      }
      if (last > 0) input_gradient(own_input_grad(last, c, rows), me.wb[last].get());
      // Every thread reads all of W_{n-1} in the next F_{n-1}, and the next B_{n-2} reads
      // grad_act[n-1] whole.
      tm.barrier(&PhaseTimes::backward);
    }
    for (int i = last - 1; i >= 0; --i) {  // B_i: rows own(i+1) of W_i
      const int in = size[i], out = size[i + 1];
      const std::size_t off = offset_[i], boff = off + std::size_t(out) * in;
      const Range c = own(i + 1, t);
      if (c.size() > 0) {
        const kn::PackedB ab = kn::packed_b_layout_narrow(rows, in);
        kn::pack_b_panels(ab, layer_input(i), in, false, 0, ab.panels, me.ab[i].get());
        tiled(ab, Task{Job::weight_grad, i, int(c.begin), int(c.end), 0, ab.panels}, grad_act_[i + 1].get(), out,
              true, me.ab[i].get(), 1.0f, grads_.get() + off, in, update_rows(off, in));
        bias_gradient(i, rows, c);
        update_and_clear(boff + c.begin, c.size());
      }
      if (i > 0) {
        input_gradient(own_input_grad(i, own(i, t), rows), me.wb[i].get());
        tm.barrier(&PhaseTimes::backward);
      }
    }
    tm.lap(&PhaseTimes::backward);
  }

  // The input-gradient tile of all rows and columns `cols` of grad_act[i].
  Task own_input_grad(int i, Range cols, int rows) const {
    const Range p = panels_of(wb_[i], cols);
    return Task{Job::input_grad, i, 0, rows, int(p.begin), int(p.end)};
  }

  // ------------------------------------------------------------------------------------------
  // The products' epilogues and the bias sums, shared by both intra_op schedules.

  // The weight gradient's epilogue: each finished block of rows [r0, r1) x columns [c0, c1) of
  // dW (at params offset `off`, rows of `in`) is applied and re-zeroed at once.
  struct UpdateRows {
    OpenMpStrategy* self;
    std::size_t off;
    int in;
    void operator()(int r0, int r1, int c0, int c1) const {
      for (int q = r0; q < r1; ++q) self->update_and_clear(off + std::size_t(q) * in + c0, std::size_t(c1 - c0));
    }
  };
  UpdateRows update_rows(std::size_t off, int in) { return {this, off, in}; }

  // A tile of grad_act[i] = (grad_act[i+1] * W_i) .* act[i] .* (1 - act[i]), i = task.layer,
  // W_i packed in Wp (layout wb_[i]).
  void input_gradient(const Task& task, const float* Wp) {
    const int i = task.layer, in = spec_.layer_sizes[i], out = spec_.layer_sizes[i + 1];
    float* GA = grad_act_[i].get();
    const float* H = act_[i].get();
    tiled(wb_[i], task, grad_act_[i + 1].get(), out, false, Wp, 0.0f, GA, in, [&](int r0, int r1, int d0, int d1) {
      for (int q = r0; q < r1; ++q) {
        const std::size_t at = std::size_t(q) * in + d0;
        kn::sigmoid_backward(std::size_t(d1 - d0), H + at, GA + at, GA + at);
      }
    });
  }

  // db_i[cols] += column sums of grad_act[i+1][:, cols]. column_sums reads a dense matrix, so a
  // slice is copied out first (cheap: rows x slice floats); its per-column order, and so its
  // bits, are serial's.
  void bias_gradient(int i, int rows, Range cols) {
    const int out = spec_.layer_sizes[i + 1];
    const float* G = grad_act_[i + 1].get();
    float* db = grads_.get() + offset_[i] + std::size_t(out) * spec_.layer_sizes[i];
    const int w = int(cols.size());
    if (w == out) {
      kn::column_sums(rows, out, 1.0f, G, 1.0f, db);
      return;
    }
    std::vector<float>& tmp = bias_tmp_[std::size_t(omp_get_thread_num())];  // sized at setup
    for (int r = 0; r < rows; ++r) std::copy_n(G + std::size_t(r) * out + cols.begin, w, tmp.data() + std::size_t(r) * w);
    kn::column_sums(rows, w, 1.0f, tmp.data(), 1.0f, db + cols.begin);
  }

  void data_parallel_step(Team& tm, std::span<const std::uint32_t> batch, int rows) {
    const int T = threads_, t = tm.t;
    Worker& w = *workers_[t];
    const Range rs = shard_range(rows, t, T);
    const int my_rows = int(rs.size());
    if (my_rows > 0) gather_batch(*ctx_.train_data, batch.subspan(rs.begin, my_rows), w.x.data(), w.y.data());
    tm.lap(&PhaseTimes::data);
    tally_[t] = Tally{};
    if (my_rows > 0) {
      w.model.forward({w.x.data(), my_rows, ctx_.train_data->features()}, w.y.data());
      tally_[t].loss = w.model.last_loss_sum();
      tally_[t].correct = w.model.last_correct();
    }
    tm.lap(&PhaseTimes::forward);
    w.model.zero_grad();  // an empty shard contributes zeros to the sum
    if (my_rows > 0) w.model.backward(1.0f / float(rows));  // the GLOBAL batch's mean loss
    tm.barrier(&PhaseTimes::backward);
    tm.collect(tally_, tally_.size());

    // Tree reduction into worker 0, level by level (stride 1, 2, 4, ...: worker u += u+s).
    // Thread t owns one slice of the flat buffer at every level, so it only ever reads sums it
    // produced itself: no barrier between levels, and the order per element is fixed by T.
    const Range ps = line_share(params_count_, t, T);
    for (int s = 1; s < T; s *= 2) {
      for (int u = 0; u + s < T; u += 2 * s) {
        float* dst = workers_[u]->model.gradients().data();
        const float* src = workers_[u + s]->model.gradients().data();
        for (std::size_t e = ps.begin; e < ps.end; ++e) dst[e] += src[e];
      }
    }
    tm.lap(&PhaseTimes::communication);
    update(ps, workers_[0]->model.gradients().data());
    tm.barrier(&PhaseTimes::update);  // the next forward reads every slice
  }

  void update(Range ps, const float* grads) {
    const SgdSettings& sgd = ctx_.train->sgd;
    kn::sgd_update(ps.size(), sgd.lr, sgd.momentum, sgd.weight_decay, params_.get() + ps.begin,
                   grads + ps.begin, velocity_ ? velocity_.get() + ps.begin : nullptr);
  }

  [[noreturn]] void throw_team_error(int team) const {
    throw std::runtime_error("openmp: asked the OpenMP runtime for " + std::to_string(threads_) +
                             " threads but got " + std::to_string(team) +
                             " (check OMP_THREAD_LIMIT and OMP_DYNAMIC)");
  }

  StrategyContext ctx_;
  ModelSpec spec_;
  int threads_ = 0;
  bool intra_ = false;
  openmp::Schedule schedule_ = openmp::Schedule::dynamic;
  int tasks_per_thread_ = openmp::kTasksPerThread;
  int min_tile_mflop_ = openmp::kMinTileMflop;
  std::vector<ThreadProfile> profile_;  // NNPAR_OMP_PROFILE only: one per thread
  std::size_t params_count_ = 0;
  Buffer params_, velocity_;
  std::vector<std::size_t> offset_;
  std::vector<Tally> tally_;  // data_parallel: one per thread
  // intra_op: one set of activations shared by the team. act[0] is the input batch, act[i] the
  // output of layer i (act[n] the logits); grad_act[i] the loss gradient w.r.t. act[i].
  Buffer grads_, probs_;
  std::vector<Buffer> act_, grad_act_;
  std::vector<std::int32_t> labels_;
  std::vector<std::vector<float>> bias_tmp_;  // per thread
  std::vector<StepPlan> plans_;               // one per batch row count (the last may be short)
  bool stationary_ = false;                   // schedule = "stationary"
  std::vector<std::unique_ptr<Stationary>> stationary_buffers_;  // one per thread
  std::vector<Tally> logit_tally_;            // one per logits tile: sums in tile order
  struct alignas(64) Counter {
    std::atomic<long> value{0};
  };
  Counter next_task_;  // dynamic schedule: the team's shared task counter
  // intra_op packed GEMM operands, rewritten every step: wf = W^T (forward), wb = W (input
  // gradient, layers > 0), ab = act[i] (weight gradient; its layout depends on the batch rows).
  std::vector<kn::PackedB> wf_, wb_;
  std::vector<Packed> wf_data_, wb_data_, ab_data_;
  // data_parallel
  std::vector<std::unique_ptr<Worker>> workers_;
};

StrategyInfo openmp_info() {
  StrategyInfo info;
  info.name = "openmp";
  // 1.1: intra_op on shared packed operands, 2D tiles, fused epilogues; 1.2: dynamic schedule;
  // 1.3: schedule = auto; 1.4: tile grids priced by operand traffic beside work (tile_grid.hpp);
  // 1.5: schedule = stationary
  info.version = "1.5";
  info.description = "multicore CPU with OpenMP: intra-op split of every step, or data-parallel threads";
  info.parity = ParityClass::exact;
  OptionSpec mode;
  mode.name = "mode";
  mode.type = OptionType::string;
  mode.default_value = std::string("data_parallel");
  mode.choices = {"data_parallel", "intra_op"};
  mode.description = "data_parallel: a worker per thread, tree-summed gradients; "
                     "intra_op: every operation of one model split over the threads";
  OptionSpec threads;
  threads.name = "threads";
  threads.type = OptionType::integer;
  threads.default_value = std::int64_t{0};
  threads.min = 0;
  threads.max = 1024;
  threads.description = "number of threads; 0 = OMP_NUM_THREADS if set, else all the runtime offers";
  OptionSpec schedule;
  schedule.name = "schedule";
  schedule.type = OptionType::string;
  schedule.default_value = std::string("dynamic");
  schedule.choices = {"dynamic", "static", "auto", "stationary"};
  schedule.description = "intra_op only: dynamic: up to tasks_per_thread tiles per thread (none below "
                         "min_tile_mflop), drawn largest first from a shared counter; static: one tile per "
                         "thread; auto: per phase, static where every GEMM of it has one tile per thread, "
                         "else dynamic; stationary: each thread owns 16-column lines of every hidden layer "
                         "and the weights that produce them, so weights never cross cores (threads beyond "
                         "width/16 only compute logits rows). The weights are the same bits under all four";
  OptionSpec tasks;
  tasks.name = "tasks_per_thread";
  tasks.type = OptionType::integer;
  tasks.default_value = std::int64_t{openmp::kTasksPerThread};
  tasks.min = 1;
  tasks.max = 64;
  tasks.description = "intra_op dynamic only: tiles per thread each GEMM is cut into (more: finer balance, "
                      "more repacking of op(A) rows)";
  OptionSpec min_tile;
  min_tile.name = "min_tile_mflop";
  min_tile.type = OptionType::integer;
  min_tile.default_value = std::int64_t{openmp::kMinTileMflop};
  min_tile.min = 0;
  min_tile.max = 1000000;
  min_tile.description = "intra_op dynamic only: no GEMM is cut into tiles smaller than this (MFLOP), "
                         "down to one tile per thread; 0 = always tasks_per_thread tiles per thread";
  info.options = {mode, threads, schedule, tasks, min_tile};
  return info;
}

}  // namespace

NNPAR_REGISTER_STRATEGY(OpenMpStrategy, openmp_info)
