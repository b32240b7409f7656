// Timelines of training for Chrome/Perfetto traces (`--trace FILE`).
//
// Every strategy times its phases with PhaseClock::lap(report.phases.X), which only sees the
// address of the double it adds to. While recording, each lap is kept with that address;
// when the epoch's EpochReport comes back, attribute_laps() names them: the laps of an address
// summed in lap order (as the plugin summed them) equal one of the reported phases exactly, so
// that address is that member of the plugin's PhaseTimes, which locates the struct (by vote of
// all its addresses), and every address inside it is named by its offset. Laps into anything
// else (a local the plugin later splits, e.g. GPU time divided between forward and backward by
// FLOPs) are "unattributed". Plugins need no change; one built without this hook records nothing.
#pragma once
#include <chrono>
#include <cstdint>
#include <string>
#include <vector>

#include "nnpar/timing.hpp"

namespace nnpar::trace {

using Clock = std::chrono::steady_clock;

struct Event {
  std::string name;      // a phase (data, forward, backward, update, communication, idle),
                         // "unattributed", or a harness span (setup, epoch N, evaluate)
  std::string category;  // "phase" or "harness"
  int thread = 0;        // 0, 1, ... in the order threads first recorded in this process
  std::int64_t start_ns = 0, end_ns = 0;  // steady_clock: CLOCK_MONOTONIC, shared by the ranks of one host
};

// Starts recording in this process (clearing what was recorded before). At most max_events
// are kept; later ones are counted in dropped().
void start(std::size_t max_events = 4'000'000);
bool recording();
// Names the laps recorded since the previous call from the phases the strategy reported for
// the epoch they belong to. Called by the harness after every train_epoch.
void attribute_laps(const PhaseTimes& reported);
// A span the harness itself times, on the calling thread's track.
void add_span(const std::string& name, Clock::time_point start, Clock::time_point end);
// Stops recording and hands over the events, in recording order.
std::vector<Event> stop();
std::size_t dropped();

}  // namespace nnpar::trace
