// Block 0's time per phase of a step, for diagnosis of the kernels that run many steps per
// launch (NNPAR_RESIDENT_PHASES): the GPU's nanosecond timer, and the per-phase sums a kernel
// keeps in shared memory.
#pragma once

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

}  // namespace nnpar::cuda
