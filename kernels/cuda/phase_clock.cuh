// Block 0's time per phase of a step, for diagnosis of the kernels that run many steps per
// launch (NNPAR_RESIDENT_PHASES): the GPU's nanosecond timer, the per-phase sums a kernel
// keeps in shared memory, and the host's buffer and report of them.
#pragma once
#include <cuda_runtime.h>

#include <algorithm>
#include <cstdio>
#include <cstdlib>
#include <string>
#include <vector>

#include "nnpar/cuda_kernels.hpp"

namespace nnpar::cuda {

__device__ __forceinline__ unsigned long long global_ns() {
  unsigned long long t;
  asm volatile("mov.u64 %0, %%globaltimer;" : "=l"(t));
  return t;
}

// `out` is the kernel's clock buffer: Phases sums, then the count of steps summed; null when the
// clock is off, and then mark() and flush() do nothing (no extra barriers in the step). A phase
// is the time from the previous mark, so it includes waiting for the block's slowest warp; the
// first step (warm-up) is not summed.
template <int Phases>
struct PhaseClock {
  unsigned long long sum[Phases];
  unsigned long long last;

  __device__ void start() {
    if (threadIdx.x < Phases) sum[threadIdx.x] = 0;
  }
  // A block barrier; then, in the timing block, the time since the previous mark goes to `phase`.
  __device__ void mark(const unsigned long long* out, bool timing_block, int step, int phase) {
    if (out == nullptr) return;
    __syncthreads();
    if (timing_block && threadIdx.x == 0) {
      const unsigned long long t = global_ns();
      if (step > 0) sum[phase] += t - last;
      last = t;
    }
  }
  // One thread of the timing block, after the last step.
  __device__ void flush(unsigned long long* out, int steps) const {
    if (out == nullptr) return;
    for (int i = 0; i < Phases; ++i) out[i] += sum[i];
    out[Phases] += steps - 1;
  }
};

// The host side: with NNPAR_RESIDENT_PHASES set, the device buffer a PhaseClock flushes into,
// and one report of the first launch of 8 steps or more (stderr).
template <int Phases>
class PhaseClockHost {
 public:
  PhaseClockHost() = default;
  PhaseClockHost(const PhaseClockHost&) = delete;
  PhaseClockHost& operator=(const PhaseClockHost&) = delete;
  ~PhaseClockHost() {
    if (sums_ != nullptr) cudaFree(sums_);
  }
  // Allocates the buffer if NNPAR_RESIDENT_PHASES is set (once the trainer's checks passed).
  void allocate_if_asked() {
    if (std::getenv("NNPAR_RESIDENT_PHASES") == nullptr || sums_ != nullptr) return;
    check(cudaMalloc(&sums_, (Phases + 1) * sizeof(unsigned long long)), "resident clocks");
    check(cudaMemset(sums_, 0, (Phases + 1) * sizeof(unsigned long long)), "resident clocks");
  }
  unsigned long long* device() const { return sums_; }  // the kernel's `out`; null when off
  // After a launch of `steps` steps on `stream`: "WHAT (block 0, mean ns over N steps DETAIL):"
  // and each phase's mean, names() giving the phases in index order (called only to report).
  template <typename Names>
  void report(cudaStream_t stream, int steps, const char* what, const std::string& detail, Names names) {
    if (sums_ == nullptr || steps < 8 || reported_) return;
    reported_ = true;
    unsigned long long t[Phases + 1] = {};
    check(cudaStreamSynchronize(stream), "resident clocks");
    check(cudaMemcpy(t, sums_, sizeof(t), cudaMemcpyDeviceToHost), "resident clocks");
    std::fprintf(stderr, "%s (block 0, mean ns over %llu steps%s):", what, t[Phases], detail.c_str());
    const std::vector<std::string> phase_names = names();
    for (std::size_t i = 0; i < phase_names.size() && i < std::size_t(Phases); ++i)
      std::fprintf(stderr, " %s %.0f", phase_names[i].c_str(), double(t[i]) / double(std::max(1ULL, t[Phases])));
    std::fprintf(stderr, "\n");
  }

 private:
  unsigned long long* sums_ = nullptr;
  bool reported_ = false;
};

}  // namespace nnpar::cuda
