// How OpenMP intra_op cuts one product's output C [M x N] over T threads: a tm x tn grid
// (tm * tn = T) of micro-tile rows (mr rows each) and B panels (nr columns each). Shared by
// plugins/openmp and by nnpar plan's model of it, so the two cannot drift apart.
#pragma once

#include <algorithm>

namespace nnpar {

struct TileGrid {
  int tm = 1, tn = 1;             // threads along rows and along columns
  long rows = 0, cols = 0;        // the busiest thread's rows and columns (whole micro-tiles)
};

// What one row of A or one column of B costs the busiest thread, in C elements of work: per K,
// an element is 2 FLOPs (~16 ps at the 127 GFLOP/s one core reached, batch 128) and an operand
// row or column is one float of a line another core wrote (5-7 ns a 64-byte line with 16
// threads at work, bench_cpu_lines: 0.3-0.45 ns a float, 19-28 elements). Every operand of a
// step was written by other cores, so the traffic is priced at that rate
// (docs/results/2026-11-27-openmp-scaling-6.md).
constexpr long kTrafficPerElement = 25;

// tm a divisor of T: the least cost on the busiest thread, its work (whole micro-tiles) plus
// its operand traffic (its rows of A plus its columns of B, each read once per K) priced in
// elements; ties go to less traffic, then to fewer column groups (a 1-wide grid keeps whole
// rows together). traffic_per_element = 0 is the openmp plugin before 1.4: least work first.
inline TileGrid tile_grid(int M, int N, int mr, int nr, int T, long traffic_per_element = kTrafficPerElement) {
  const long micro_rows = (M + mr - 1) / mr, panels = (N + nr - 1) / nr;
  TileGrid best;
  long best_cost = -1, best_traffic = 0;
  for (int tm = 1; tm <= T; ++tm) {
    if (T % tm) continue;
    const int tn = T / tm;
    const long rows = (micro_rows + tm - 1) / tm * mr;
    const long cols = (panels + tn - 1) / tn * long(nr);
    const long traffic = rows + cols, cost = rows * cols + traffic_per_element * traffic;
    if (best_cost < 0 || cost < best_cost || (cost == best_cost && traffic < best_traffic) ||
        (cost == best_cost && traffic == best_traffic && tn < best.tn)) {
      best_cost = cost;
      best_traffic = traffic;
      best = {tm, tn, rows, cols};
    }
  }
  return best;
}

// The dynamic schedule's tiles per thread for one M x N x K product: up to tasks_per_thread,
// fewer where a tile would fall below min_tile_mflop (0: no minimum), at least one. The
// product is then cut into T times that many tiles (a multiple of T, so equal tiles still
// spread evenly: 25 tiles on 16 threads would make the phase last 2/25 of the work, not 1/16).
inline int dynamic_tiles_per_thread(long M, long N, long K, int T, int tasks_per_thread, int min_tile_mflop) {
  const int most = std::max(tasks_per_thread, 1);
  if (min_tile_mflop <= 0) return most;
  const double by_work = 2.0 * double(M) * double(N) * double(K) / (1e6 * min_tile_mflop);
  return int(std::clamp(by_work / T, 1.0, double(most)));
}

}  // namespace nnpar
