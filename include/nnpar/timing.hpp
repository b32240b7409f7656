// Per-phase wall-clock accounting that strategies fill and the harness reports.
#pragma once
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

// Adds the time since the last lap() (or construction) to the given phase.
class PhaseClock {
 public:
  using clock = std::chrono::steady_clock;
  PhaseClock() : last_(clock::now()) {}
  void lap(double& phase) {
    const auto now = clock::now();
    phase += std::chrono::duration<double>(now - last_).count();
    last_ = now;
  }
  void reset() { last_ = clock::now(); }

 private:
  clock::time_point last_;
};

}  // namespace nnpar
