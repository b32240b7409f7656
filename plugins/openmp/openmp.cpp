// The OpenMP multicore strategy: one process, T threads, two ways to split a step.
//
//  mode = "intra_op"       one model; every GEMM of a step is split GotoBLAS-style: its op(B)
//                          (a weight, or an activation for the weight gradient) is packed ONCE
//                          per step, cooperatively, and the threads split the M x N tile grid in
//                          2D, each packing only its own rows of op(A). Bias+sigmoid, the
//                          sigmoid derivative and the SGD update run in the epilogue of the
//                          thread that produced those elements, so a step of n layers takes
//                          2n+1 barriers. The kernels' per-element operation sequence does not
//                          depend on the tile an element is computed in: the weights are
//                          bit-identical to serial for any T.
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

#include "nnpar/gemm_packed.hpp"
#include "nnpar/kernels.hpp"
#include "nnpar/strategy.hpp"
#include "../common/tile_grid.hpp"

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

// Thread t's rectangle of C [M x N] in a tm x tn grid of the micro-tile rows and B panels.
struct Tile {
  int m0 = 0, m1 = 0, p0 = 0, p1 = 0;
  int tn = 1;  // threads sharing one row range
  bool empty() const { return m0 >= m1 || p0 >= p1; }
};

// The grid is plugins/common/tile_grid.hpp's choice (nnpar plan models the same one).
Tile tile_of(int M, const kn::PackedB& l, int t, int T) {
  const long mp = (M + l.mr - 1) / l.mr;  // micro-tile rows
  const int best_tm = tile_grid(M, l.panels * l.nr, l.mr, l.nr, T).tm;
  const int tn = T / best_tm;
  const Range r = shard_range(std::size_t(mp), t / tn, best_tm);
  const Range p = shard_range(std::size_t(l.panels), t % tn, tn);
  return {int(std::min<std::size_t>(M, r.begin * l.mr)), int(std::min<std::size_t>(M, r.end * l.mr)),
          int(p.begin), int(p.end), tn};
}

// Thread t's tile of C = alpha * op(A) * B (B packed as `L` in Bp) + beta * C, computed one
// MC row block at a time; epilogue(r0, r1, c0, c1) runs on each finished block while it is
// still in cache. Returns the tile.
template <class Epilogue>
Tile tiled_product(const kn::PackedB& L, int M, int t, int T, const float* A, int lda, bool transA,
                   const float* Bp, float beta, float* C, int ldc, Epilogue&& epilogue) {
  const Tile tile = tile_of(M, L, t, T);
  const int c0 = L.panel_begin_col(tile.p0), c1 = L.panel_begin_col(tile.p1);
  for (int r = tile.m0; !tile.empty() && r < tile.m1; r += L.mc) {
    const int r1 = std::min(r + L.mc, tile.m1);
    kn::gemm_packed_rows(L, r, r1, tile.p0, tile.p1, 1.0f, A, lda, transA, Bp, beta, C, ldc);
    epilogue(r, r1, c0, c1);
  }
  return tile;
}

// Thread t's share of the panels of one packed operand. `turn` rotates which threads get the
// remainder panels, so many small operands packed in one phase do not all land on thread 0.
Range panel_share(int panels, int t, int T, int& turn) {
  const Range r = shard_range(std::size_t(panels), (t + T - turn % T) % T, T);
  turn += panels % T;
  return r;
}

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
      for (int i = 0; i < n; ++i) {
        const int in = spec_.layer_sizes[i], out = spec_.layer_sizes[i + 1];
        wf_.push_back(kn::packed_b_layout(in, out));  // forward: op(B) = W^T
        wb_.push_back(kn::packed_b_layout(out, in));  // input gradient: op(B) = W
        wf_data_.push_back(untouched_aligned(wf_[i].floats()));
        wb_data_.push_back(untouched_aligned(i > 0 ? wb_[i].floats() : 0));
        ab_data_.push_back(untouched_aligned(kn::packed_b_layout(B, in).floats()));
      }
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
        // Packed operands: first touched by the thread that packs those panels every step.
        int turn = 0;
        for (int i = 0; i < n; ++i) {
          touch_panels(wf_[i], wf_data_[i].get(), t, T, turn);
          if (i > 0) touch_panels(wb_[i], wb_data_[i].get(), t, T, turn);
        }
        for (int i = 0; i < n; ++i)
          touch_panels(kn::packed_b_layout(B, spec_.layer_sizes[i]), ab_data_[i].get(), t, T, turn);
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

  static void touch_panels(const kn::PackedB& l, float* data, int t, int T, int& turn) {
    const Range r = panel_share(l.panels, t, T, turn);
    const std::size_t per = std::size_t(l.K) * l.nr;
    std::fill(data + r.begin * per, data + r.end * per, 0.0f);
  }

  // One step in 2n+1 phases (n = layers), each ended by the only barrier it needs:
  //   P:   gather this thread's rows of the batch; pack its share of every W (both layouts)
  //   F_i: its tile of act[i+1] = act[i] * W_i^T, + bias, sigmoid (epilogue); the last one
  //        also runs softmax-CE on its rows and packs every act[i] for the weight gradients
  //   B_i: its tile of dW_i = G^T act[i] (K = batch whole) + SGD update of that tile; its
  //        slice of db_i + update; its tile of grad_act[i] = G * W_i, * sigmoid' (epilogue)
  // Raw W is read only by P and by the update: F and B read the packed copies, so the update
  // can run inside B_i without a barrier of its own.
  void intra_op_step(const Team& tm, std::span<const std::uint32_t> batch, int rows) {
    const int T = threads_, t = tm.t, n = spec_.linear_count();
    const std::vector<int>& size = spec_.layer_sizes;
    const Range rs = shard_range(rows, t, T);
    const int my_rows = int(rs.size());
    gather_batch(*ctx_.train_data, batch.subspan(rs.begin, my_rows),
                 act_[0].get() + rs.begin * size[0], labels_.data() + rs.begin);
    tm.lap(&PhaseTimes::data);
    int turn = 0;
    for (int i = 0; i < n; ++i) {
      const float* W = params_.get() + offset_[i];
      const Range f = panel_share(wf_[i].panels, t, T, turn);
      kn::pack_b_panels(wf_[i], W, size[i], true, int(f.begin), int(f.end), wf_data_[i].get());
      if (i > 0) {
        const Range g = panel_share(wb_[i].panels, t, T, turn);
        kn::pack_b_panels(wb_[i], W, size[i], false, int(g.begin), int(g.end), wb_data_[i].get());
      }
    }
    tm.barrier(&PhaseTimes::forward);

    bool softmax_done = false;
    for (int i = 0; i < n; ++i) {  // act[i+1] = sigmoid(act[i] * W^T + bias); no sigmoid on logits
      const int in = size[i], out = size[i + 1];
      const kn::PackedB& L = wf_[i];
      const float* bias = params_.get() + offset_[i] + std::size_t(out) * in;
      const float* A = act_[i].get();
      float* Y = act_[i + 1].get();
      const bool hidden = i + 1 < n;
      const Tile tl = tiled_product(L, rows, t, T, A, in, false, wf_data_[i].get(), 0.0f, Y, out,
                                    [&](int r0, int r1, int c0, int c1) {
                                      for (int q = r0; q < r1; ++q) {
                                        float* y = Y + std::size_t(q) * out + c0;
                                        if (hidden) kn::bias_sigmoid_rows(1, c1 - c0, bias + c0, y);
                                        else kn::add_bias_rows(1, c1 - c0, bias + c0, y);
                                      }
                                    });
      if (!hidden) {
        // Every activation is final now: pack them as op(B) of the weight-gradient GEMMs.
        for (int j = 0; j < n; ++j) {
          const kn::PackedB la = kn::packed_b_layout(rows, size[j]);
          const Range g = panel_share(la.panels, t, T, turn);
          kn::pack_b_panels(la, act_[j].get(), size[j], false, int(g.begin), int(g.end), ab_data_[j].get());
        }
        if (tl.tn == 1) {  // this thread holds whole rows of logits: no barrier before softmax
          softmax_rows(tl.m0, tl.m1, rows);
          softmax_done = true;
        }
      }
      tm.barrier(&PhaseTimes::forward);
    }
    if (!softmax_done) {  // more classes than one panel: logits rows were split by columns
      softmax_rows(int(rs.begin), int(rs.end), rows);
      tm.barrier(&PhaseTimes::forward);
    }
    tm.collect(tally_);

    for (int i = n - 1; i >= 0; --i) {
      const int in = size[i], out = size[i + 1];
      const std::size_t off = offset_[i], boff = off + std::size_t(out) * in;
      float* dW = grads_.get() + off;
      const float* G = grad_act_[i + 1].get();  // [rows, out]
      // dW[out, in] += G^T * act[i]: split over output tiles, K = rows stays whole, so every
      // element sums in serial's order. Each finished block is applied and re-zeroed at once.
      tiled_product(kn::packed_b_layout(rows, in), out, t, T, G, out, true, ab_data_[i].get(), 1.0f, dW, in,
                    [&](int r0, int r1, int c0, int c1) {
                      for (int q = r0; q < r1; ++q) update_and_clear(off + std::size_t(q) * in + c0, std::size_t(c1 - c0));
                    });
      // db += column sums of G over a slice of columns. column_sums reads a dense matrix, so a
      // slice is copied out first (cheap: rows x slice floats); its per-column order is unchanged.
      const Range c = line_share(out, t, T);
      float* db = grads_.get() + boff;
      if (c.size() == std::size_t(out)) {
        kn::column_sums(rows, out, 1.0f, G, 1.0f, db);
      } else if (c.size() > 0) {
        float* tmp = bias_tmp_[t].data();
        for (int r = 0; r < rows; ++r)
          std::copy_n(G + std::size_t(r) * out + c.begin, c.size(), tmp + std::size_t(r) * c.size());
        kn::column_sums(rows, int(c.size()), 1.0f, tmp, 1.0f, db + c.begin);
      }
      update_and_clear(boff + c.begin, c.size());
      if (i > 0) {  // grad_act[i] = (G * W) .* act[i] .* (1 - act[i])
        float* GA = grad_act_[i].get();
        const float* H = act_[i].get();
        tiled_product(wb_[i], rows, t, T, G, out, false, wb_data_[i].get(), 0.0f, GA, in,
                      [&](int r0, int r1, int d0, int d1) {
                        for (int q = r0; q < r1; ++q) {
                          const std::size_t at = std::size_t(q) * in + d0;
                          kn::sigmoid_backward(std::size_t(d1 - d0), H + at, GA + at, GA + at);
                        }
                      });
      }
      tm.barrier(&PhaseTimes::backward);
    }
  }

  // Softmax, loss and its gradient for logits rows [r0, r1).
  void softmax_rows(int r0, int r1, int rows) {
    const int n = spec_.linear_count(), C = spec_.layer_sizes[n];
    Tally& tally = tally_[omp_get_thread_num()];
    tally = Tally{};
    if (r0 >= r1) return;
    const std::size_t at = std::size_t(r0) * C;
    const std::int32_t* labels = labels_.data() + r0;
    tally.loss = kn::softmax_xent_forward(r1 - r0, C, act_[n].get() + at, labels, probs_.get() + at);
    tally.correct = kn::count_correct(r1 - r0, C, probs_.get() + at, labels);
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
  info.version = "1.1";  // 1.1: intra_op on shared packed operands, 2D tiles, fused epilogues
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
