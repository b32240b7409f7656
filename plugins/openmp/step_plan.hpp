// The work of one intra_op training step, cut into tasks and grouped into phases (one barrier
// after each). Pure bookkeeping, no threading: plugins/openmp/openmp.cpp hands a phase's tasks
// to its team, either one per thread (static) or from a shared counter (dynamic).
//
// Why dynamic: with one tile per thread, a phase lasts as long as its slowest thread, and the
// threads of a shared VM do not run at equal speeds (measured: the busiest thread worked 1.33x
// the mean with equal FLOPs each). Cutting each large GEMM into up to kTasksPerThread tiles per
// thread and handing them out largest first lets a fast thread take more of them; small tiles
// cost extra packing, hence kMinTileMflop. Which thread computes a tile never changes its
// arithmetic (see gemm_packed.hpp), so the weights stay bit-identical to serial either way.
#pragma once

#include <algorithm>
#include <array>
#include <initializer_list>
#include <cstdint>
#include <vector>

#include "nnpar/data.hpp"
#include "nnpar/gemm_packed.hpp"
#include "../common/tile_grid.hpp"

namespace nnpar::openmp {

enum class Job : std::uint8_t {
  forward,      // act[l+1] tile = act[l] * W^T, + bias, sigmoid (softmax-CE on the logits' rows)
  pack_act,     // panels [p0, p1) of act[l] as op(B) of dW_l = G^T act[l]
  pack_wf,      // panels of W_l^T (forward op(B))
  pack_wb,      // panels of W_l (input gradient op(B))
  weight_grad,  // dW_l tile = G^T act[l], then SGD update of that tile
  input_grad,   // grad_act[l] tile = G * W_l, * sigmoid'
  bias_grad,    // db_l columns [p0, p1) (columns, not panels), then SGD update
};

struct Task {
  Job job;
  int layer;
  int m0 = 0, m1 = 0;  // C rows (GEMMs)
  int p0 = 0, p1 = 0;  // B panels (GEMMs, packing) or columns (bias_grad)
  double cost = 0;     // for largest-first ordering only
};

// dynamic / static: every phase so. automatic: a phase is dynamic only where one of its GEMMs is
// cut into more than one tile per thread (dynamic_tiles_per_thread > 1). The idea: T equal tiles
// drawn from a counter balance nothing the static grid does not, and cost the counter's traffic
// and tile-to-thread affinity. Measured on the 32-core Xeon it did not hold: with one tile per
// thread the counter was 6-14% ahead of the static plan at 16 threads (medians of 2 runs,
// docs/results/2026-11-26-openmp-scaling-4.md), so dynamic stays the default.
enum class Schedule : std::uint8_t { fixed, dynamic, automatic };

constexpr int kTasksPerThread = 4;
// Dynamic tiles are not cut below this many MFLOP (2 x M x N x K / tiles): smaller tiles repack
// the same op(A) rows for more column groups and reuse each B panel for fewer rows. On the
// 32-core Xeon (docs/results/2026-11-26-openmp-scaling-3.md) 4 tiles per thread of 25.7 MFLOP
// (batch 1024, width 1024) did 13% more work than one tile per thread but waited 4% instead of
// 22% at the barriers, a net gain; 4 tiles per thread of 3.2 MFLOP (batch 128, width 1024)
// lost to one tile per thread.
constexpr int kMinTileMflop = 16;

// Rectangles of C [M x L.N] over `pieces` tiles in the tm x tn grid of tile_grid (whole micro-
// tile rows, whole panels). whole_rows: tn = 1, every tile spans all panels (softmax needs
// whole rows of logits). keep_empty keeps the grid's index order t = a * tn + b, empty tiles
// included (static: tile t is thread t's, as the grid promises); otherwise empties are dropped.
inline std::vector<Task> gemm_tiles(Job job, int layer, int M, const kernels::PackedB& L, int K,
                                    int pieces, bool whole_rows, bool keep_empty) {
  std::vector<Task> out;
  if (M <= 0 || L.panels <= 0) return out;
  const long micro_rows = (M + L.mr - 1) / L.mr;
  int tm = whole_rows ? int(std::min<long>(pieces, micro_rows)) : tile_grid(M, L.N, L.mr, L.nr, pieces).tm;
  int tn = whole_rows ? 1 : pieces / tm;
  if (whole_rows && keep_empty) tm = pieces;
  for (int a = 0; a < tm; ++a)
    for (int b = 0; b < tn; ++b) {
      const Range r = shard_range(std::size_t(micro_rows), a, tm);
      const Range p = shard_range(std::size_t(L.panels), b, tn);
      Task t{job, layer};
      t.m0 = int(std::min<std::size_t>(M, r.begin * L.mr));
      t.m1 = int(std::min<std::size_t>(M, r.end * L.mr));
      t.p0 = int(p.begin);
      t.p1 = int(p.end);
      const double cols = L.panel_begin_col(t.p1) - L.panel_begin_col(t.p0);
      t.cost = double(t.m1 - t.m0) * cols * (K + 8.0);  // + the epilogue's pass over the tile
      if (keep_empty || (t.m0 < t.m1 && t.p0 < t.p1)) out.push_back(t);
    }
  return out;
}

// Panel groups of one packed operand: at most `pieces` tasks, at least one panel each.
inline void pack_tasks(std::vector<Task>& out, Job job, int layer, const kernels::PackedB& L, int pieces) {
  const int n = std::min(L.panels, std::max(pieces, 1));
  for (int s = 0; s < n; ++s) {
    const Range p = shard_range(std::size_t(L.panels), s, n);
    Task t{job, layer, 0, 0, int(p.begin), int(p.end)};
    t.cost = double(p.size()) * L.nr * L.K;
    out.push_back(t);
  }
}

// Column slices of a bias gradient, 16 columns (a 64-byte line) at a time so that no two
// tasks write one cache line of db.
inline void bias_tasks(std::vector<Task>& out, int layer, int cols, int rows, int pieces) {
  const int lines = (cols + 15) / 16;
  const int n = std::min(lines, std::max(pieces, 1));
  for (int s = 0; s < n; ++s) {
    const Range u = shard_range(std::size_t(lines), s, n);
    Task t{Job::bias_grad, layer, 0, 0, std::min(cols, int(u.begin) * 16), std::min(cols, int(u.end) * 16)};
    t.cost = double(t.p1 - t.p0) * rows;
    if (t.p0 < t.p1) out.push_back(t);
  }
}

// Tasks [from, to) largest first (longest-processing-time order), stable so that equal tasks
// keep grid order.
inline void largest_first(std::vector<Task>& tasks, std::size_t from, std::size_t to) {
  std::stable_sort(tasks.begin() + long(from), tasks.begin() + long(to),
                   [](const Task& a, const Task& b) { return a.cost > b.cost; });
}

// The phases of one step for a batch of `rows` rows, model `sizes` (n = sizes.size() - 1 layers):
//   phase 0       P:   pack W_0^T (the batch's rows are gathered beside it, outside the plan)
//   phase 1+i     F_i: act[i+1] tiles; pack act[i] for dW_i (final since F_{i-1});
//                      F_0 also packs W_l^T and W_l of layers l >= 1, needed from F_1 / B_l on
//   phase n+1+j   B_i (i = n-1-j): dW_i tiles + update, grad_act[i] tiles (i > 0), db_i slices
// Static: GEMM tiles in tile_grid's order, tile t on thread t, the rest round-robin.
// Dynamic: up to tasks_per_thread tiles per thread (fewer where tiles would fall below
// min_tile_mflop), GEMM tiles largest first, then the small tasks.
// Automatic: each phase one or the other (Schedule::automatic).
struct StepPlan {
  int rows = 0;
  std::vector<std::vector<Task>> phases;
  // Per phase: its tasks come from the shared counter (dynamic), or task k runs on thread
  // k mod T (static: tile t of each product on thread t).
  std::vector<char> dynamic;
  int max_bias_cols = 0;  // widest bias_grad slice (per-thread scratch: rows x this)
  int logits_tasks = 0;   // forward tasks of the last layer = softmax tallies
};

// wf[l] / wb[l]: the packed layouts of W_l^T and W_l (the same for every batch).
inline StepPlan make_step_plan(const std::vector<int>& sizes, int rows, int T, Schedule schedule,
                               const std::vector<kernels::PackedB>& wf,
                               const std::vector<kernels::PackedB>& wb,
                               int tasks_per_thread = kTasksPerThread, int min_tile_mflop = kMinTileMflop) {
  const int n = int(sizes.size()) - 1;
  auto per_thread = [&](long M, long N, long K) {
    return schedule == Schedule::fixed ? 1 : dynamic_tiles_per_thread(M, N, K, T, tasks_per_thread, min_tile_mflop);
  };
  // Whether a phase with these GEMMs (M, N, K each) draws its tasks from the counter.
  auto phase_dynamic = [&](std::initializer_list<std::array<long, 3>> gemms) {
    if (schedule != Schedule::automatic) return schedule == Schedule::dynamic;
    for (const auto& g : gemms)
      if (per_thread(g[0], g[1], g[2]) > 1) return true;
    return false;
  };
  StepPlan plan;
  plan.rows = rows;
  plan.phases.resize(std::size_t(2 * n + 1));
  plan.dynamic.assign(plan.phases.size(), 0);
  // Tiles of one M x N x K product in a phase: T (static), else T x dynamic_tiles_per_thread
  // (tile_grid.hpp, shared with nnpar plan's model of this plugin).
  auto tiles = [&](bool dyn, Job job, int layer, int M, const kernels::PackedB& L, int K, bool whole_rows) {
    return gemm_tiles(job, layer, M, L, K, dyn ? T * per_thread(M, L.N, K) : T, whole_rows, !dyn);
  };
  auto pieces = [&](bool dyn) { return dyn ? T * std::max(tasks_per_thread, 1) : T; };
  auto finish = [&](std::size_t at, bool dyn, std::size_t gemms_end) {
    plan.dynamic[at] = dyn;
    if (!dyn) return;
    largest_first(plan.phases[at], 0, gemms_end);
    largest_first(plan.phases[at], gemms_end, plan.phases[at].size());
  };
  {
    const bool dyn = phase_dynamic({});
    pack_tasks(plan.phases[0], Job::pack_wf, 0, wf[0], pieces(dyn));
    finish(0, dyn, 0);
  }
  for (int i = 0; i < n; ++i) {
    const std::size_t at = std::size_t(1 + i);
    std::vector<Task>& ph = plan.phases[at];
    const bool last = i + 1 == n;
    const bool dyn = phase_dynamic({{rows, sizes[i + 1], sizes[i]}});
    ph = tiles(dyn, Job::forward, i, rows, wf[i], sizes[i], last);
    if (last) plan.logits_tasks = int(ph.size());
    const std::size_t gemms = ph.size();
    pack_tasks(ph, Job::pack_act, i, kernels::packed_b_layout(rows, sizes[i]), pieces(dyn));
    if (i == 0)
      for (int l = 1; l < n; ++l) {
        pack_tasks(ph, Job::pack_wf, l, wf[l], pieces(dyn));
        pack_tasks(ph, Job::pack_wb, l, wb[l], pieces(dyn));
      }
    finish(at, dyn, gemms);
  }
  for (int i = n - 1; i >= 0; --i) {
    const std::size_t at = std::size_t(n + 1 + (n - 1 - i));
    std::vector<Task>& ph = plan.phases[at];
    const int in = sizes[i], out = sizes[i + 1];
    const bool dyn = i > 0 ? phase_dynamic({{out, in, rows}, {rows, in, out}}) : phase_dynamic({{out, in, rows}});
    ph = tiles(dyn, Job::weight_grad, i, out, kernels::packed_b_layout(rows, in), rows, false);
    if (i > 0) {
      const std::vector<Task> g = tiles(dyn, Job::input_grad, i, rows, wb[i], out, false);
      ph.insert(ph.end(), g.begin(), g.end());
    }
    const std::size_t gemms = ph.size();
    bias_tasks(ph, i, out, rows, pieces(dyn));
    for (std::size_t k = gemms; k < ph.size(); ++k)
      plan.max_bias_cols = std::max(plan.max_bias_cols, ph[k].p1 - ph[k].p0);
    finish(at, dyn, gemms);
  }
  return plan;
}

// The two-schedule form (true: dynamic everywhere, false: static everywhere).
inline StepPlan make_step_plan(const std::vector<int>& sizes, int rows, int T, bool dynamic,
                               const std::vector<kernels::PackedB>& wf,
                               const std::vector<kernels::PackedB>& wb,
                               int tasks_per_thread = kTasksPerThread, int min_tile_mflop = kMinTileMflop) {
  return make_step_plan(sizes, rows, T, dynamic ? Schedule::dynamic : Schedule::fixed, wf, wb, tasks_per_thread,
                        min_tile_mflop);
}

}  // namespace nnpar::openmp
