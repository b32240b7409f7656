// How fast one core runs while T cores run at once: the ceiling the host puts on any
// multicore speedup measured against a single thread (docs/results/2026-11-27-openmp-scaling-8.md).
//
//   bench_cpu_clock [--threads 1,8,16] [--ms 300] [--reps 3] [--kinds fma512,fma256,add]
//   bench_cpu_clock --load T --seconds S [--kinds fma512]
//   bench_cpu_clock --pairs [--ms 150] [--kinds fma512]
//
// Per repetition, kind and thread count T, T threads start together (one barrier) and each runs
// the kind's loop for --ms milliseconds, on registers only (no memory traffic, nothing shared):
//   fma512  12 independent chains of 512-bit FMAs (enough to keep two FMA ports busy): the
//           arithmetic of our GEMM micro-kernel without its loads (skipped without AVX-512)
//   fma256  the same with 256-bit FMAs (the AVX2 path)
//   add     one chain of dependent integer adds: one add per cycle, so adds/ns is the clock in
//           GHz whatever the power license
// Each thread reports its own rate; the table gives, per T, the median over repetitions of the
// mean and the slowest thread, and the mean thread's rate relative to T = 1. T x that ratio is
// the most a T-thread run of the kind can gain over one thread on this host, at that moment.
//
// --load runs T threads of the first kind for S seconds and prints their mean rate: the busy
// neighbours under which a single-threaded program (pinned elsewhere with taskset) runs at the
// clock the host gives when every core works.
//
// --pairs maps which of this guest's CPUs share a physical core: it times the first kind pinned
// to each CPU alone, then to every pair of CPUs at once. Two hyperthreads of one core share its
// FMA ports, so each runs at about half its solo rate; CPUs on separate cores keep theirs. A
// guest's lscpu may say "1 thread per core" while its vCPUs are the host's hyperthreads.
#include <immintrin.h>
#include <omp.h>
#include <pthread.h>
#include <sched.h>

#include <algorithm>
#include <atomic>
#include <chrono>
#include <cstdint>
#include <cstdio>
#include <cstdlib>
#include <cstring>
#include <stdexcept>
#include <string>
#include <thread>
#include <vector>

#include "bench_args.hpp"

namespace {

using Clock = std::chrono::steady_clock;

using nnpar_bench::int_in_range;
constexpr int kMaxArg = 4096;  // threads, ms, reps and seconds alike

// One block of each kind: the unit the timed loop repeats. Returns work done (FLOPs or adds).
constexpr int kBlockIterations = 4096;

__attribute__((target("avx512f"), noinline)) double fma512_block(float* sink) {
  __m512 a[12];
  for (int k = 0; k < 12; ++k) a[k] = _mm512_set1_ps(1.0f + 0.01f * float(k));
  const __m512 m = _mm512_set1_ps(0.999f), c = _mm512_set1_ps(1e-3f);
  for (int i = 0; i < kBlockIterations; ++i) {
    for (int k = 0; k < 12; ++k) a[k] = _mm512_fmadd_ps(a[k], m, c);
  }
  __m512 s = a[0];
  for (int k = 1; k < 12; ++k) s = _mm512_add_ps(s, a[k]);
  float lanes[16];
  _mm512_storeu_ps(lanes, s);
  for (float v : lanes) *sink += v;
  return double(kBlockIterations) * 12 * 16 * 2;
}

__attribute__((target("avx2,fma"), noinline)) double fma256_block(float* sink) {
  __m256 a[12];
  for (int k = 0; k < 12; ++k) a[k] = _mm256_set1_ps(1.0f + 0.01f * float(k));
  const __m256 m = _mm256_set1_ps(0.999f), c = _mm256_set1_ps(1e-3f);
  for (int i = 0; i < kBlockIterations; ++i) {
    for (int k = 0; k < 12; ++k) a[k] = _mm256_fmadd_ps(a[k], m, c);
  }
  __m256 s = a[0];
  for (int k = 1; k < 12; ++k) s = _mm256_add_ps(s, a[k]);
  float lanes[8];
  _mm256_storeu_ps(lanes, s);
  for (float v : lanes) *sink += v;
  return double(kBlockIterations) * 12 * 8 * 2;
}

// The adds are in assembly: a compiler would fold a chain of +1 into one addition. They add a
// register, not an immediate: recent Intel cores fold chains of immediate adds at rename, which
// would read as several adds a cycle.
__attribute__((noinline)) double add_block(float* sink) {
  std::uint64_t x = 0, one = 1;
  for (int i = 0; i < kBlockIterations / 64; ++i) {
    asm volatile(".rept 64\n\taddq %1, %0\n\t.endr" : "+r"(x) : "r"(one));
  }
  *sink += float(x & 1);
  return double(kBlockIterations / 64) * 64;
}

struct Kind {
  const char* name;
  const char* unit;  // of the rate (work per ns)
  double (*block)(float*);
};

double median(std::vector<double> v) {
  std::sort(v.begin(), v.end());
  const std::size_t n = v.size();
  return n % 2 ? v[n / 2] : 0.5 * (v[n / 2 - 1] + v[n / 2]);
}

double mean(const std::vector<double>& v) {
  double sum = 0.0;
  for (double x : v) sum += x;
  return sum / double(v.size());
}

// The calling thread runs the kind's block for `ms` milliseconds from now: its rate.
double timed_rate(const Kind& kind, float& sink, double ms) {
  const auto start = Clock::now();
  const auto until = start + std::chrono::duration<double, std::milli>(ms);
  double work = 0.0;
  Clock::time_point now;
  do {
    work += kind.block(&sink);
    now = Clock::now();
  } while (now < until);
  return work / double(std::chrono::duration_cast<std::chrono::nanoseconds>(now - start).count());
}

// T threads at once, each timing its own loop; returns each thread's rate.
std::vector<double> run_once(const Kind& kind, int threads, double ms) {
  std::vector<double> rate(std::size_t(threads), 0.0);
  float sink = 0.0f;
#pragma omp parallel num_threads(threads) reduction(+ : sink)
  {
    const int t = omp_get_thread_num();
    kind.block(&sink);  // warm: page in code, wake the core
#pragma omp barrier
    rate[std::size_t(t)] = timed_rate(kind, sink, ms);
  }
  if (sink == 12345.0f) std::puts("");  // keep the blocks' results alive
  return rate;
}

// Each of `cpus` gets one thread pinned to it; all run the kind for `ms` at once.
std::vector<double> run_pinned(const Kind& kind, const std::vector<int>& cpus, double ms) {
  std::vector<double> rate(cpus.size(), 0.0);
  std::vector<std::thread> threads;
  std::atomic<int> ready{0};
  for (std::size_t i = 0; i < cpus.size(); ++i) {
    threads.emplace_back([&, i] {
      cpu_set_t set;
      CPU_ZERO(&set);
      CPU_SET(cpus[i], &set);
      if (pthread_setaffinity_np(pthread_self(), sizeof set, &set) != 0) {
        rate[i] = -1.0;
        ready.fetch_add(1);
        return;
      }
      float sink = 0.0f;
      kind.block(&sink);
      ready.fetch_add(1);
      while (ready.load() < int(cpus.size())) {
      }
      rate[i] = timed_rate(kind, sink, ms);
      if (sink == 12345.0f) std::puts("");
    });
  }
  for (auto& t : threads) t.join();
  for (std::size_t i = 0; i < cpus.size(); ++i)
    if (rate[i] < 0) throw std::runtime_error("cannot pin a thread to CPU " + std::to_string(cpus[i]));
  return rate;
}

void map_pairs(const Kind& kind, double ms) {
  cpu_set_t allowed;
  if (sched_getaffinity(0, sizeof allowed, &allowed) != 0) throw std::runtime_error("sched_getaffinity failed");
  std::vector<int> cpus;
  for (int c = 0; c < CPU_SETSIZE; ++c)
    if (CPU_ISSET(c, &allowed)) cpus.push_back(c);
  if (cpus.size() < 2) throw std::runtime_error("--pairs needs at least 2 CPUs");
  // Solo rates: the best of two passes, so that a passing disturbance does not read as sharing.
  std::vector<double> solo(cpus.size(), 0.0);
  for (int pass = 0; pass < 2; ++pass)
    for (std::size_t i = 0; i < cpus.size(); ++i) solo[i] = std::max(solo[i], run_pinned(kind, {cpus[i]}, ms)[0]);
  std::printf("# --pairs, %s, %.0f ms a case: each CPU's solo rate (%s)\n", kind.name, ms, kind.unit);
  for (std::size_t i = 0; i < cpus.size(); ++i) std::printf("cpu %3d solo %8.2f\n", cpus[i], solo[i]);
  std::printf("# pair rate: the two CPUs' mean rate together, as a share of their solo rates\n");
  std::printf("%6s", "");
  for (int c : cpus) std::printf(" %5d", c);
  std::printf("\n");
  std::vector<std::vector<double>> share(cpus.size(), std::vector<double>(cpus.size(), 1.0));
  for (std::size_t i = 0; i < cpus.size(); ++i)
    for (std::size_t j = i + 1; j < cpus.size(); ++j) {
      const auto r = run_pinned(kind, {cpus[i], cpus[j]}, ms);
      share[i][j] = share[j][i] = 0.5 * (r[0] / solo[i] + r[1] / solo[j]);
    }
  for (std::size_t i = 0; i < cpus.size(); ++i) {
    std::printf("%6d", cpus[i]);
    for (std::size_t j = 0; j < cpus.size(); ++j) std::printf(i == j ? "     -" : " %5.2f", share[i][j]);
    std::printf("\n");
  }
  int shared = 0;
  for (std::size_t i = 0; i < cpus.size(); ++i)
    for (std::size_t j = i + 1; j < cpus.size(); ++j)
      if (share[i][j] < 0.7) {
        std::printf("cpus %d and %d: %.2f of their solo rates together (one core's hyperthreads?)\n", cpus[i], cpus[j],
                    share[i][j]);
        ++shared;
      }
  std::printf("# %d of %zu pairs below 0.70\n", shared, cpus.size() * (cpus.size() - 1) / 2);
  // Then every CPU at once, twice: which ones fall behind when all work (a barrier waits for them).
  for (int pass = 0; pass < 2; ++pass) {
    const auto r = run_pinned(kind, cpus, ms);
    std::printf("all %zu at once, pass %d: share of solo per cpu:", cpus.size(), pass + 1);
    for (std::size_t i = 0; i < cpus.size(); ++i) std::printf(" %.2f", r[i] / solo[i]);
    std::printf("; mean %.2f %s\n", mean(r), kind.unit);
  }
}

}  // namespace

int main(int argc, char** argv) {
  try {
    std::vector<int> thread_counts{1, 8, 16};
    double ms = 300;
    int reps = 3;
    std::vector<std::string> kinds_wanted{"fma512", "fma256", "add"};
    bool pairs = false;
    int load_threads = 0;
    double load_seconds = 0;
    for (int i = 1; i < argc; ++i) {
      const std::string arg = argv[i];
      auto value = [&]() -> std::string {
        if (i + 1 >= argc) throw std::invalid_argument(arg + " needs a value");
        return argv[++i];
      };
      if (arg == "--threads") {
        thread_counts = nnpar_bench::ints_in_range(arg, value(), 1, kMaxArg);
      } else if (arg == "--ms") {
        ms = int_in_range(arg, value(), 1, kMaxArg);
      } else if (arg == "--reps") {
        reps = int_in_range(arg, value(), 1, kMaxArg);
      } else if (arg == "--kinds") {
        kinds_wanted = nnpar_bench::split_commas(value());
      } else if (arg == "--pairs") {
        pairs = true;
      } else if (arg == "--load") {
        load_threads = int_in_range(arg, value(), 1, kMaxArg);
      } else if (arg == "--seconds") {
        load_seconds = int_in_range(arg, value(), 1, kMaxArg);
      } else if (arg == "--help" || arg == "-h") {
        std::puts("usage: bench_cpu_clock [--threads 1,8,16] [--ms 300] [--reps 3] [--kinds fma512,fma256,add]\n"
                  "       bench_cpu_clock --load T --seconds S [--kinds fma512]\n"
                  "       bench_cpu_clock --pairs [--ms 150] [--kinds fma512]\n"
                  "Per thread count T, T threads run a register-only loop at once; prints each kind's rate\n"
                  "per thread (mean and slowest, median over repetitions) and the mean's ratio to T = 1.\n"
                  "--load: T threads run the first kind for S seconds (a background load), then print their rate.\n"
                  "--pairs: the first kind pinned to each CPU alone, then to every pair at once: which CPUs\n"
                  "share a physical core.");
        return 0;
      } else {
        throw std::invalid_argument("unknown argument '" + arg + "' (see --help)");
      }
    }
    const Kind all[] = {{"fma512", "GFLOP/s", fma512_block}, {"fma256", "GFLOP/s", fma256_block}, {"add", "GHz", add_block}};
    std::vector<Kind> kinds;
    for (const auto& name : kinds_wanted) {
      const Kind* found = nullptr;
      for (const auto& k : all)
        if (name == k.name) found = &k;
      if (!found) throw std::invalid_argument("--kinds: unknown kind '" + name + "' (fma512, fma256, add)");
      if (name == "fma512" && !__builtin_cpu_supports("avx512f")) {
        std::printf("# fma512 skipped: this CPU has no AVX-512\n");
        continue;
      }
      if (name == "fma256" && !(__builtin_cpu_supports("avx2") && __builtin_cpu_supports("fma"))) {
        std::printf("# fma256 skipped: this CPU has no AVX2/FMA\n");
        continue;
      }
      kinds.push_back(*found);
    }
    if ((load_threads > 0) != (load_seconds > 0)) throw std::invalid_argument("--load and --seconds go together");
    if (kinds.empty()) throw std::invalid_argument("--kinds: none of the kinds can run on this CPU");
    if (pairs) {
      map_pairs(kinds.front(), ms);
      return 0;
    }
    if (load_threads > 0) {
      const auto rate = run_once(kinds.front(), load_threads, load_seconds * 1000.0);
      std::printf("# load: %d threads of %s for %.0f s: %.2f %s per thread\n", load_threads, kinds.front().name,
                  load_seconds, mean(rate), kinds.front().unit);
      return 0;
    }
    if (std::find(thread_counts.begin(), thread_counts.end(), 1) == thread_counts.end())
      thread_counts.insert(thread_counts.begin(), 1);  // the ratios are to one thread
    std::printf("# bench_cpu_clock: %d repetitions of %.0f ms, %d CPUs online\n", reps, ms, omp_get_num_procs());
    std::printf("%-7s %7s %14s %14s %8s %14s\n", "kind", "threads", "mean", "slowest", "mean/T=1", "T x mean/T=1");
    for (const auto& kind : kinds) {
      // Thread counts interleaved within each repetition, so that a drift of the host's speed
      // reaches every count alike.
      std::vector<std::vector<double>> means(thread_counts.size()), slowest(thread_counts.size());
      for (int r = 0; r < reps; ++r) {
        for (std::size_t c = 0; c < thread_counts.size(); ++c) {
          const auto rate = run_once(kind, thread_counts[c], ms);
          means[c].push_back(mean(rate));
          slowest[c].push_back(*std::min_element(rate.begin(), rate.end()));
        }
      }
      const double one = median(means[0]);
      for (std::size_t c = 0; c < thread_counts.size(); ++c) {
        const double typical = median(means[c]);
        std::printf("%-7s %7d %6.2f %-7s %6.2f %-7s %8.3f %14.2f\n", kind.name, thread_counts[c], typical, kind.unit,
                    median(slowest[c]), kind.unit, typical / one, double(thread_counts[c]) * typical / one);
      }
    }
    return 0;
  } catch (const std::exception& e) {
    std::fprintf(stderr, "bench_cpu_clock: %s\n", e.what());
    return 2;
  }
}
