// Per-phase wall-clock accounting that strategies fill and the harness reports.
#pragma once
#include <atomic>
#include <chrono>

namespace nnpar {

// Seconds spent in each phase of training, summed over an epoch (per rank for multi-rank
// strategies). "idle" is time a worker waits for others (pipeline bubble, stragglers).
struct PhaseTimes {
  double data = 0, forward = 0, backward = 0, update = 0, communication = 0, idle = 0;
  double total() const { return data + forward + backward + update + communication + idle; }
  PhaseTimes& operator+=(const PhaseTimes& o) {
    data += o.data; forward += o.forward; backward += o.backward;
    update += o.update; communication += o.communication; idle += o.idle;
    return *this;
  }
};

// The hook through which every lap reaches a trace (`nnpar train --trace`, include/nnpar/trace.hpp),
// defined in libnnpar_core so the harness and every plugin share it. Off unless a trace is
// being recorded: a lap then costs one relaxed load more than it would without tracing.
namespace trace_hook {
extern std::atomic<bool> recording;
void record_lap(const double* phase, std::chrono::steady_clock::time_point start,
                std::chrono::steady_clock::time_point end, double seconds);
}  // namespace trace_hook

// Adds the time since the last lap() (or construction) to the given phase, and returns it.
class PhaseClock {
 public:
  using clock = std::chrono::steady_clock;
  PhaseClock() : last_(clock::now()) {}
  double lap(double& phase) {
    const auto now = clock::now();
    const double seconds = std::chrono::duration<double>(now - last_).count();
    phase += seconds;
    if (trace_hook::recording.load(std::memory_order_relaxed)) [[unlikely]]
      trace_hook::record_lap(&phase, last_, now, seconds);
    last_ = now;
    return seconds;
  }
  void reset() { last_ = clock::now(); }

 private:
  clock::time_point last_;
};

}  // namespace nnpar
