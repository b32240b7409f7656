// What one core pays for data another core wrote: the cost behind the OpenMP intra_op
// strategy's phases, which each read what other threads produced in the phase before
// (docs/results/2026-11-27-openmp-scaling-6.md).
//
//   bench_cpu_lines [--threads 1,2,8,16] [--kib 64,256] [--reps 40]
//
// Every thread owns a buffer of KIB KiB, first touched by itself. Per repetition and case,
// all threads run the case at once between two barriers, each timing only its own part:
//   local     read the buffer it wrote itself just before
//   neighbour read the buffer thread (t + T/2) mod T wrote just before (modified, remote)
//   gather    read 1/T of every thread's buffer (KIB KiB in all), each written just before
//             by its owner: the pattern of a phase that reads a matrix whose rows or columns
//             the other threads computed
//   clean     read a buffer nobody has written since setup (shared, read-only)
//   rewrite   write its own buffer after every thread has read it (each line shared by all)
//   demote    CLDEMOTE every line of every buffer (after reading them all, as for rewrite):
//             the hint that moves a line from this core's caches to the shared L3
//   rewrite-demoted  rewrite, but every reader demoted the lines it read beforehand
// (CLDEMOTE is a no-op hint where the CPU lacks it: then the last two say what the hint costs
// and that it changes nothing.)
// Prints, per thread count and size, the median over repetitions of the mean and the slowest
// thread's time, as ns per 64-byte line and GB/s per thread.
#include <omp.h>

#include <algorithm>
#include <chrono>
#include <cstdio>
#include <cstdlib>
#include <limits>
#include <stdexcept>
#include <string>
#include <vector>

#include "bench_args.hpp"

namespace {

using Clock = std::chrono::steady_clock;
constexpr std::size_t kLine = 64;

std::vector<int> positive_ints(const std::string& flag, const char* text) {
  return nnpar_bench::ints_in_range(flag, text, 1, std::numeric_limits<int>::max());
}

// Every case runs the same machine code (GCC would otherwise clone read_range for its calls
// with from = 0, and the clone read 2.5x faster than the general one: a code effect that
// looked like a memory one). noipa forbids the clone; clang does not clone across noinline.
#if defined(__clang__)
#define OPAQUE __attribute__((noinline))
#else
#define OPAQUE __attribute__((noipa))
#endif

// Loads one float from every 64-byte line of [from, to), into 8 independent sums: the loop
// costs far less than the line it brings in (summing every float cost 1.8 ns a line by itself
// on the workstation, as much as a line from another core). The result is kept so the loads
// are not elided.
OPAQUE float read_range(const float* p, std::size_t from, std::size_t to) {
  constexpr std::size_t step = kLine / sizeof(float);
  float a[8] = {};
  std::size_t i = from;
  for (; i + 8 * step <= to; i += 8 * step)
    for (int j = 0; j < 8; ++j) a[j] += p[i + j * step];
  for (; i < to; i += step) a[0] += p[i];
  float s = 0;
  for (float x : a) s += x;
  return s;
}

OPAQUE void write_range(float* p, std::size_t n, float v) { std::fill(p, p + n, v); }

OPAQUE void demote_range(const float* p, std::size_t n) {
#if defined(__x86_64__)
  for (std::size_t i = 0; i < n; i += kLine / sizeof(float)) asm volatile("cldemote %0" : : "m"(p[i]));
#else
  (void)p, (void)n;
#endif
}

double median(std::vector<double> v) {
  std::sort(v.begin(), v.end());
  return v.empty() ? 0 : v[v.size() / 2];
}

const char* kCases[] = {"local", "neighbour", "gather", "clean", "rewrite", "demote", "rewrite-demoted"};
constexpr int kCaseCount = 7;

}  // namespace

int main(int argc, char** argv) {
  std::vector<int> threads = {1, 2, 8, 16}, kib = {64, 256};
  int reps = 40;
  try {
    for (int i = 1; i < argc; ++i) {
      const std::string a = argv[i];
      if (a == "--help" || a == "-h") {
        std::puts("usage: bench_cpu_lines [--threads 1,2,8,16] [--kib 64,256] [--reps 40]");
        return 0;
      }
      if (i + 1 >= argc) throw std::invalid_argument(a + " needs a value");
      if (a == "--threads") threads = positive_ints(a, argv[++i]);
      else if (a == "--kib") kib = positive_ints(a, argv[++i]);
      else if (a == "--reps") reps = positive_ints(a, argv[++i]).front();
      else throw std::invalid_argument("unknown argument " + a);
    }
  } catch (const std::exception& e) {
    std::fprintf(stderr, "bench_cpu_lines: %s\n", e.what());
    return 2;
  }
  std::printf("| threads | KiB per thread | case | ns per line (mean thread) | ns per line (slowest) | GB/s per thread (mean) |\n");
  std::printf("|---:|---:|---|---:|---:|---:|\n");
  float sink = 0;
  for (int T : threads)
    for (int k : kib) {
      const std::size_t floats = std::size_t(k) * 1024 / sizeof(float);
      std::vector<float*> buf(T), clean(T);
      // seconds[case][rep][thread]
      std::vector<std::vector<std::vector<double>>> sec(kCaseCount, std::vector<std::vector<double>>(reps, std::vector<double>(T)));
#pragma omp parallel num_threads(T) reduction(+ : sink)
      {
        const int t = omp_get_thread_num();
        buf[t] = static_cast<float*>(std::aligned_alloc(kLine, floats * sizeof(float)));
        clean[t] = static_cast<float*>(std::aligned_alloc(kLine, floats * sizeof(float)));
        write_range(buf[t], floats, 1);
        write_range(clean[t], floats, 2);
#pragma omp barrier
        auto timed = [&](int c, int r, auto&& body) {
#pragma omp barrier
          const auto t0 = Clock::now();
          body();
          sec[c][r][t] = std::chrono::duration<double>(Clock::now() - t0).count();
#pragma omp barrier
        };
        for (int r = 0; r < reps; ++r) {
          const float v = float(r);
          write_range(buf[t], floats, v);
          timed(0, r, [&] { sink += read_range(buf[t], 0, floats); });
          write_range(buf[t], floats, v);
          timed(1, r, [&] { sink += read_range(buf[(t + T / 2) % T], 0, floats); });
          write_range(buf[t], floats, v);
          timed(2, r, [&] {
            for (int u = 0; u < T; ++u) {
              // Slice u of buffer t + u: the team reads every buffer once, each slice on one thread.
              sink += read_range(buf[(t + u) % T], floats * u / T, floats * (u + 1) / T);
            }
          });
          timed(3, r, [&] { sink += read_range(clean[(t + 1) % T], 0, floats); });
          for (int u = 0; u < T; ++u) sink += read_range(buf[u], 0, floats);  // every line shared by all
          timed(4, r, [&] { write_range(buf[t], floats, v + 1); });
          for (int u = 0; u < T; ++u) sink += read_range(buf[u], 0, floats);
          timed(5, r, [&] {
            for (int u = 0; u < T; ++u) demote_range(buf[u], floats);
          });
          timed(6, r, [&] { write_range(buf[t], floats, v + 2); });
        }
#pragma omp barrier
        std::free(buf[t]);
        std::free(clean[t]);
      }
      const double lines = double(floats * sizeof(float)) / kLine;
      for (int c = 0; c < kCaseCount; ++c) {
        std::vector<double> mean(reps), slowest(reps);
        for (int r = 0; r < reps; ++r) {
          double s = 0, m = 0;
          for (double x : sec[c][r]) s += x, m = std::max(m, x);
          mean[r] = s / T;
          slowest[r] = m;
        }
        const double mm = median(mean), ms = median(slowest);
        const double n = c == 5 ? lines * T : lines;  // demote touches every buffer
        std::printf("| %d | %d | %s | %.1f | %.1f | %.1f |\n", T, k, kCases[c], mm / n * 1e9, ms / n * 1e9,
                    n * kLine / mm / 1e9);
      }
    }
  std::fprintf(stderr, "(checksum %g)\n", double(sink));
  return 0;
}
