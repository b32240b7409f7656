#include "nnpar/trace.hpp"

#include <algorithm>
#include <cstddef>
#include <cstdint>
#include <map>
#include <mutex>
#include <utility>

namespace nnpar {

namespace {

struct Lap {
  const double* address;
  int thread;
  std::int64_t start_ns, end_ns;
  double seconds;
};

struct Sink {
  std::mutex mutex;
  std::vector<Lap> pending;           // laps not yet named by attribute_laps
  std::vector<trace::Event> events;   // named laps and harness spans
  std::size_t max_events = 0, dropped = 0;
};

Sink& sink() {
  static Sink s;
  return s;
}

std::atomic<int> next_thread{0};

int thread_id() {
  thread_local const int id = next_thread.fetch_add(1);
  return id;
}

std::int64_t ns(trace::Clock::time_point t) {
  return std::chrono::duration_cast<std::chrono::nanoseconds>(t.time_since_epoch()).count();
}

bool full(const Sink& s) { return s.pending.size() + s.events.size() >= s.max_events; }

}  // namespace

namespace trace_hook {

std::atomic<bool> recording{false};

void record_lap(const double* phase, std::chrono::steady_clock::time_point start,
                std::chrono::steady_clock::time_point end, double seconds) {
  const int thread = thread_id();
  Sink& s = sink();
  std::lock_guard lock(s.mutex);
  if (!recording.load(std::memory_order_relaxed)) return;
  if (full(s)) {
    ++s.dropped;
    return;
  }
  s.pending.push_back({phase, thread, ns(start), ns(end), seconds});
}

}  // namespace trace_hook

namespace trace {

void start(std::size_t max_events) {
  Sink& s = sink();
  std::lock_guard lock(s.mutex);
  s.pending.clear();
  s.events.clear();
  s.dropped = 0;
  s.max_events = max_events;
  trace_hook::recording.store(true);
}

bool recording() { return trace_hook::recording.load(std::memory_order_relaxed); }

void attribute_laps(const PhaseTimes& reported) {
  static constexpr std::pair<const char*, std::size_t> kPhases[] = {
      {"data", offsetof(PhaseTimes, data)},       {"forward", offsetof(PhaseTimes, forward)},
      {"backward", offsetof(PhaseTimes, backward)}, {"update", offsetof(PhaseTimes, update)},
      {"communication", offsetof(PhaseTimes, communication)}, {"idle", offsetof(PhaseTimes, idle)}};
  if (!recording()) return;
  auto value_at = [&](std::size_t offset) {
    return *reinterpret_cast<const double*>(reinterpret_cast<const char*>(&reported) + offset);
  };
  Sink& s = sink();
  std::lock_guard lock(s.mutex);
  // The sum of each address's laps, added in the order the plugin added them.
  std::map<std::uintptr_t, double> sums;
  for (const Lap& lap : s.pending) sums[reinterpret_cast<std::uintptr_t>(lap.address)] += lap.seconds;
  // Each address whose sum equals a reported phase votes for where the PhaseTimes starts; the
  // start most addresses agree on names every address inside it by its offset. Votes, not
  // first matches, so that two phases that happen to sum to the same value cannot swap names.
  std::map<std::uintptr_t, int> base_votes;
  std::map<std::uintptr_t, std::vector<const char*>> matches;
  for (auto& [address, sum] : sums)
    for (auto& [name, offset] : kPhases)
      if (sum != 0 && sum == value_at(offset) && address >= offset) {
        ++base_votes[address - offset];
        matches[address].push_back(name);
      }
  std::uintptr_t base = 0;
  int votes = 0;
  for (auto& [b, n] : base_votes)
    if (n > votes) base = b, votes = n;
  std::map<std::uintptr_t, const char*> names;
  std::vector<std::string> claimed;
  for (auto& [address, sum] : sums)
    if (votes > 0)
      for (auto& [name, offset] : kPhases)
        if (address == base + offset) {
          names[address] = name;
          claimed.push_back(name);
        }
  // Outside it (a copy the plugin added in later): a phase its struct did not lap, matched
  // by exactly one address; anything else stays unattributed rather than guessed.
  std::map<std::string, int> claims;
  for (auto& [address, candidates] : matches) {
    if (names.count(address)) continue;
    std::erase_if(candidates, [&](const char* n) { return std::find(claimed.begin(), claimed.end(), n) != claimed.end(); });
    if (candidates.size() == 1) ++claims[candidates.front()];
  }
  for (auto& [address, candidates] : matches)
    if (!names.count(address) && candidates.size() == 1 && claims[candidates.front()] == 1)
      names[address] = candidates.front();
  for (const Lap& lap : s.pending) {
    const auto it = names.find(reinterpret_cast<std::uintptr_t>(lap.address));
    s.events.push_back({it == names.end() ? "unattributed" : it->second, "phase", lap.thread, lap.start_ns, lap.end_ns});
  }
  s.pending.clear();
}

void add_span(const std::string& name, Clock::time_point start, Clock::time_point end) {
  if (!recording()) return;
  const int thread = thread_id();
  Sink& s = sink();
  std::lock_guard lock(s.mutex);
  if (full(s)) {
    ++s.dropped;
    return;
  }
  s.events.push_back({name, "harness", thread, ns(start), ns(end)});
}

std::vector<Event> stop() {
  Sink& s = sink();
  std::lock_guard lock(s.mutex);
  trace_hook::recording.store(false);
  for (const Lap& lap : s.pending) s.events.push_back({"unattributed", "phase", lap.thread, lap.start_ns, lap.end_ns});
  s.pending.clear();
  return std::exchange(s.events, {});
}

std::size_t dropped() {
  Sink& s = sink();
  std::lock_guard lock(s.mutex);
  return s.dropped;
}

}  // namespace trace
}  // namespace nnpar
