// The OpenMP multicore strategy: one process, T threads, two ways to split a step.
//
//  mode = "intra_op"       one model; every GEMM and element-wise op of a step is cut into T
//                          pieces along a dimension that leaves each output element's arithmetic
//                          untouched, so with the kernels' M/N-independent summation order the
//                          weights are bit-identical to serial for any T.
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
// at barriers as "idle" (load imbalance plus barrier cost).
#include <omp.h>

#include <algorithm>
#include <cstdlib>
#include <memory>
#include <stdexcept>
#include <string>
#include <vector>

#include "nnpar/kernels.hpp"
#include "nnpar/strategy.hpp"

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

// The kernels pack all of op(B) and all of op(A) on every call: cutting C by rows makes every
// thread pack the whole B, cutting by columns the whole A. Cut the dimension whose other
// operand is the smaller one, unless that would leave threads without work.
bool split_columns(int M, int N, int T) {
  return T > 1 && M < N && (std::size_t(N) + kLine - 1) / kLine >= std::size_t(T);
}

// new float[n] leaves the memory untouched, so the thread that first writes a page owns it.
using Buffer = std::unique_ptr<float[]>;
Buffer untouched(std::size_t n) { return Buffer(new float[std::max<std::size_t>(n, 1)]); }

int resolve_threads(std::int64_t requested) {
  if (requested > 0) return int(requested);
  if (const char* env = std::getenv("OMP_NUM_THREADS")) {
    const int n = std::atoi(env);  // "8,4" (nested levels) gives the outer 8
    if (n > 0) return n;
  }
  return std::max(1, omp_get_max_threads());
}

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
    const int B = context.train->batch_size, T = threads_, n = spec_.linear_count();
    params_count_ = parameter_count(spec_);
    params_ = untouched(params_count_);
    const bool momentum = context.train->sgd.momentum != 0.0f;
    if (momentum) velocity_ = untouched(params_count_);
    tally_.assign(T, Tally{});
    for (int i = 0; i < n; ++i) offset_.push_back(parameter_offset(spec_, i));
    if (intra_) {
      grads_ = untouched(params_count_);
      for (int i = 0; i <= n; ++i) {
        act_.push_back(untouched(std::size_t(B) * spec_.layer_sizes[i]));
        grad_act_.push_back(untouched(std::size_t(B) * spec_.layer_sizes[i]));
      }
      probs_ = untouched(std::size_t(B) * spec_.layer_sizes[n]);
      labels_.resize(B);
      bias_tmp_.resize(T);
    } else {
      workers_.resize(T);
    }
    const int widest = *std::max_element(spec_.layer_sizes.begin() + 1, spec_.layer_sizes.end());
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
      if (intra_) {
        std::fill(grads_.get() + p.begin, grads_.get() + p.end, 0.0f);
        const Range r = shard_range(B, t, T);
        for (int i = 0; i <= n; ++i) {
          const std::size_t w = spec_.layer_sizes[i];
          std::fill(act_[i].get() + r.begin * w, act_[i].get() + r.end * w, 0.0f);
          std::fill(grad_act_[i].get() + r.begin * w, grad_act_[i].get() + r.end * w, 0.0f);
        }
        const std::size_t c = spec_.layer_sizes[n];
        std::fill(probs_.get() + r.begin * c, probs_.get() + r.end * c, 0.0f);
        bias_tmp_[t].assign(std::size_t(B) * line_share(widest, 0, T).size(), 0.0f);
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
#pragma omp parallel num_threads(threads_)
    {
      Team tm{omp_get_thread_num(), &clock, &report};
      tm.lap(&PhaseTimes::idle);  // waking the team
      if (tm.t == 0) team = omp_get_num_threads();
      // A smaller team than asked for (OMP_THREAD_LIMIT, OMP_DYNAMIC) would drop shards: every
      // thread sees the same team size, so all skip the work together and we throw below.
      if (omp_get_num_threads() == threads_) {
        for (std::size_t b = 0; b < batches; ++b) {
          const int rows = int(std::min(B, order.size() - b * B));
          const auto batch = std::span<const std::uint32_t>(order).subspan(b * B, rows);
          if (intra_) intra_op_step(tm, batch, rows);
          else data_parallel_step(tm, batch, rows);
          if (tm.t == 0) {
            report.samples += rows;
            report.steps += 1;
          }
        }
      }
    }
    if (team != threads_) throw_team_error(team);
    return report;
  }

  void get_parameters(std::span<float> out) override {
    std::copy(params_.get(), params_.get() + params_count_, out.begin());
  }

  std::string device_description() const override {
    if (threads_ == 0) return "CPU (OpenMP)";  // before setup resolves the thread count
    return "CPU, " + std::to_string(threads_) + (threads_ == 1 ? " thread (" : " threads (") +
           (intra_ ? "intra_op" : "data_parallel") + ")";
  }

 private:
  // The calling thread's place in the team, and the master's phase accounting.
  struct Team {
    int t;
    PhaseClock* clock;
    EpochReport* report;
    void lap(double PhaseTimes::*phase) const {
      if (t == 0) clock->lap(report->phases.*phase);
    }
    // Master only, between the barrier after every tally is written and the barrier before
    // any is rewritten. Fixed thread order: a deterministic sum.
    void collect(const std::vector<Tally>& tally) const {
      if (t != 0) return;
      for (const Tally& s : tally) {
        report->loss_sum += s.loss;
        report->correct += s.correct;
      }
    }
    void barrier(double PhaseTimes::*phase) const {
      lap(phase);
#pragma omp barrier
      lap(&PhaseTimes::idle);
    }
  };

  void intra_op_step(const Team& tm, std::span<const std::uint32_t> batch, int rows) {
    const int T = threads_, t = tm.t, n = spec_.linear_count();
    const std::vector<int>& size = spec_.layer_sizes;
    const Range rs = shard_range(rows, t, T);
    const int my_rows = int(rs.size());
    const Range ps = line_share(params_count_, t, T);
    // Nothing reads the gradients before the backward pass, several barriers away.
    std::fill(grads_.get() + ps.begin, grads_.get() + ps.end, 0.0f);
    tm.lap(&PhaseTimes::backward);
    gather_batch(*ctx_.train_data, batch.subspan(rs.begin, my_rows),
                 act_[0].get() + rs.begin * size[0], labels_.data() + rs.begin);
    tm.barrier(&PhaseTimes::data);

    for (int i = 0; i < n; ++i) {  // act[i+1] = sigmoid(act[i] * W^T + bias); no sigmoid on logits
      const int in = size[i], out = size[i + 1];
      const float* W = params_.get() + offset_[i];
      const float* bias = W + std::size_t(out) * in;
      const float* A = act_[i].get();
      float* Y = act_[i + 1].get();
      const bool hidden = i + 1 < n;
      if (split_columns(rows, out, T)) {
        const Range c = line_share(out, t, T);
        if (c.size() > 0) {
          kn::gemm_nt(rows, int(c.size()), in, 1.0f, A, in, W + c.begin * in, in, 0.0f, Y + c.begin, out);
          for (int r = 0; r < rows; ++r) {
            float* y = Y + std::size_t(r) * out + c.begin;
            kn::add_bias_rows(1, int(c.size()), bias + c.begin, y);
            if (hidden) kn::sigmoid_forward(c.size(), y, y);
          }
        }
      } else {
        float* y = Y + rs.begin * out;
        kn::gemm_nt(my_rows, out, in, 1.0f, A + rs.begin * in, in, W, in, 0.0f, y, out);
        kn::add_bias_rows(my_rows, out, bias, y);
        if (hidden) kn::sigmoid_forward(std::size_t(my_rows) * out, y, y);
      }
      tm.barrier(&PhaseTimes::forward);
    }

    // Softmax, loss and its gradient touch only this thread's rows.
    const int C = size[n];
    const std::size_t r0 = rs.begin * C;
    const std::int32_t* labels = labels_.data() + rs.begin;
    tally_[t].loss = kn::softmax_xent_forward(my_rows, C, act_[n].get() + r0, labels, probs_.get() + r0);
    tally_[t].correct = kn::count_correct(my_rows, C, probs_.get() + r0, labels);
    tm.lap(&PhaseTimes::forward);
    kn::softmax_xent_backward(my_rows, C, probs_.get() + r0, labels, 1.0f / float(rows),
                              grad_act_[n].get() + r0);
    tm.barrier(&PhaseTimes::backward);
    tm.collect(tally_);

    for (int i = n - 1; i >= 0; --i) {
      const int in = size[i], out = size[i + 1];
      const float* W = params_.get() + offset_[i];
      float* dW = grads_.get() + offset_[i];
      float* db = dW + std::size_t(out) * in;
      const float* G = grad_act_[i + 1].get();  // [rows, out]
      const float* A = act_[i].get();           // [rows, in]
      // dW[out, in] += G^T * A: K = rows stays whole, so every element sums in serial's order.
      if (split_columns(out, in, T)) {
        const Range c = line_share(in, t, T);
        kn::gemm_tn(out, int(c.size()), rows, 1.0f, G, out, A + c.begin, in, 1.0f, dW + c.begin, in);
      } else {
        const Range o = shard_range(out, t, T);
        kn::gemm_tn(int(o.size()), in, rows, 1.0f, G + o.begin, out, A, in, 1.0f, dW + o.begin * in, in);
      }
      // db += column sums of G over a slice of columns. column_sums reads a dense matrix, so a
      // slice is copied out first (cheap: rows x slice floats); its per-column order is unchanged.
      const Range c = line_share(out, t, T);
      if (c.size() == std::size_t(out)) {
        kn::column_sums(rows, out, 1.0f, G, 1.0f, db);
      } else if (c.size() > 0) {
        float* tmp = bias_tmp_[t].data();
        for (int r = 0; r < rows; ++r)
          std::copy_n(G + std::size_t(r) * out + c.begin, c.size(), tmp + std::size_t(r) * c.size());
        kn::column_sums(rows, int(c.size()), 1.0f, tmp, 1.0f, db + c.begin);
      }
      if (i > 0) {  // grad_act[i] = (G * W) .* act[i] .* (1 - act[i]), in place
        float* GA = grad_act_[i].get();
        const float* H = act_[i].get();
        if (split_columns(rows, in, T)) {
          const Range cc = line_share(in, t, T);
          if (cc.size() > 0) {
            kn::gemm_nn(rows, int(cc.size()), out, 1.0f, G, out, W + cc.begin, in, 0.0f, GA + cc.begin, in);
            for (int r = 0; r < rows; ++r) {
              const std::size_t at = std::size_t(r) * in + cc.begin;
              kn::sigmoid_backward(cc.size(), H + at, GA + at, GA + at);
            }
          }
        } else {
          const std::size_t at = rs.begin * in;
          kn::gemm_nn(my_rows, in, out, 1.0f, G + rs.begin * out, out, W, in, 0.0f, GA + at, in);
          kn::sigmoid_backward(std::size_t(my_rows) * in, H + at, GA + at, GA + at);
        }
      }
      tm.barrier(&PhaseTimes::backward);
    }
    update(ps, grads_.get());
    tm.barrier(&PhaseTimes::update);
  }

  void data_parallel_step(const Team& tm, std::span<const std::uint32_t> batch, int rows) {
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
    tm.collect(tally_);

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
  std::size_t params_count_ = 0;
  Buffer params_, velocity_;
  std::vector<std::size_t> offset_;
  std::vector<Tally> tally_;
  // intra_op: one set of activations shared by the team. act[0] is the input batch, act[i] the
  // output of layer i (act[n] the logits); grad_act[i] the loss gradient w.r.t. act[i].
  Buffer grads_, probs_;
  std::vector<Buffer> act_, grad_act_;
  std::vector<std::int32_t> labels_;
  std::vector<std::vector<float>> bias_tmp_;  // per thread
  // data_parallel
  std::vector<std::unique_ptr<Worker>> workers_;
};

StrategyInfo openmp_info() {
  StrategyInfo info;
  info.name = "openmp";
  info.version = "1.0";
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
  info.options = {mode, threads};
  return info;
}

}  // namespace

NNPAR_REGISTER_STRATEGY(OpenMpStrategy, openmp_info)
