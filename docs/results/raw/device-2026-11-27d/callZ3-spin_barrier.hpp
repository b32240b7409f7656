// A dissemination barrier for the OpenMP strategy's phases (Hensgen, Finkel and Manber 1988;
// Mellor-Crummey and Scott 1991). In round r of ceil(log2 T), thread t signals thread
// (t + 2^r) mod T and waits for thread (t - 2^r) mod T's signal: every flag has one writer and
// one reader, so no cache line is fought over by all T threads at once.
//
// Why not `#pragma omp barrier`: libgomp's barrier is one counter that every thread increments
// and one generation word that every thread then reads. On the 32-core Xeon that costs ~3 us at
// 16 threads and ~6 us at 32 (NNPAR_OMP_PROFILE's least wait), and a step of the intra_op mode
// has seven of them: at batch 128 they were 8-13% of the step. A write to a line that many
// cores hold costs 50-100 ns there, against ~5 ns with one other holder (bench_cpu_lines).
//
// Waiting spins, then yields the core (std::this_thread::yield) after kSpins polls, so a team
// larger than the machine's free cores (CI's 2 cores, tests with 5 threads) still progresses.
// Release/acquire on the flags: what a thread wrote before the barrier is visible to every
// thread after it (each thread's writes reach all others through the rounds' chains).
#pragma once

#include <atomic>
#include <cstdint>
#include <thread>
#include <vector>

#if defined(__x86_64__) || defined(__i386__)
#include <immintrin.h>
#endif

namespace nnpar::openmp {

class SpinBarrier {
 public:
  explicit SpinBarrier(int threads) : threads_(threads < 1 ? 1 : threads) {
    for (int d = 1; d < threads_; d *= 2) ++rounds_;
    flags_ = std::vector<Slot>(std::size_t(rounds_) * threads_);
    epochs_ = std::vector<Slot>(std::size_t(threads_));
  }
  int threads() const { return threads_; }

  // Called by every thread t in [0, threads) of the team; returns once all have called it.
  void wait(int t) {
    const std::uint64_t e = epochs_[t].value.load(std::memory_order_relaxed) + 1;
    epochs_[t].value.store(e, std::memory_order_relaxed);  // only thread t touches its epoch
    for (int r = 0, d = 1; r < rounds_; ++r, d *= 2) {
      flags_[std::size_t(r) * threads_ + std::size_t((t + d) % threads_)].value.store(e, std::memory_order_release);
      // A value past e is the peer already in the next barrier: it got here, so this round is done.
      const std::atomic<std::uint64_t>& mine = flags_[std::size_t(r) * threads_ + std::size_t(t)].value;
      for (int polls = 0; mine.load(std::memory_order_acquire) < e;) {
        if (++polls < kSpins) pause();
        else std::this_thread::yield();
      }
    }
  }

 private:
  static constexpr int kSpins = 256;
  static void pause() {
#if defined(__x86_64__) || defined(__i386__)
    _mm_pause();
#endif
  }
  struct alignas(64) Slot {  // one cache line each: a flag has exactly one writer and one reader
    std::atomic<std::uint64_t> value{0};
    Slot() = default;
    Slot(const Slot&) : value(0) {}
    Slot& operator=(const Slot&) { return *this; }
  };
  int threads_ = 1;
  int rounds_ = 0;
  std::vector<Slot> flags_;   // [round][thread]: the epoch of the last signal thread received
  std::vector<Slot> epochs_;  // [thread]: how many barriers it has entered
};

}  // namespace nnpar::openmp
