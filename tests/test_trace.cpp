// --trace: laps named by the phases their epoch reported, and Chrome trace files that are valid
// JSON with properly nested complete events on every track.
#include <gmock/gmock.h>
#include <gtest/gtest.h>

#include <algorithm>
#include <map>
#include <set>

#include <nlohmann/json.hpp>

#include "nnpar/trace.hpp"
#include "nnpar_cli.hpp"

using namespace nnpar_test;
using testing::HasSubstr;

namespace {

std::map<std::string, int> names_of(const std::vector<nnpar::trace::Event>& events) {
  std::map<std::string, int> n;
  for (auto& e : events) n[e.name] += 1;
  return n;
}

// Laps of a few microseconds each, like a strategy's.
void busy() {
  volatile double x = 0;
  for (int i = 0; i < 2000; ++i) x = x + 1;
}

TEST(TraceAttribution, LapsAreNamedByThePhaseTheirSumWasReportedAs) {
  nnpar::trace::start();
  nnpar::PhaseClock clock;
  nnpar::PhaseTimes phases;
  double split_later = 0;  // like GPU time a strategy divides between forward and backward
  for (int step = 0; step < 3; ++step) {
    busy();
    clock.lap(phases.data);
    busy();
    clock.lap(phases.forward);
    busy();
    clock.lap(phases.backward);
    busy();
    clock.lap(split_later);
  }
  // Reported through a copy, as a plugin returning its report by value does.
  const nnpar::PhaseTimes reported = phases;
  nnpar::trace::attribute_laps(reported);
  const auto names = names_of(nnpar::trace::stop());
  EXPECT_EQ(names.at("data"), 3);
  EXPECT_EQ(names.at("forward"), 3);
  EXPECT_EQ(names.at("backward"), 3);
  EXPECT_EQ(names.at("unattributed"), 3);
  EXPECT_EQ(names.size(), 4u);
}

TEST(TraceAttribution, AMemberChangedAfterItsLapsIsNamedByItsPlaceInThePhaseTimes) {
  nnpar::trace::start();
  nnpar::PhaseClock clock;
  nnpar::PhaseTimes phases;
  busy();
  clock.lap(phases.forward);
  busy();
  clock.lap(phases.idle);
  busy();
  clock.lap(phases.communication);
  phases.communication += 1.0;  // its sum no longer matches: the others locate the struct
  nnpar::trace::attribute_laps(phases);
  const auto names = names_of(nnpar::trace::stop());
  EXPECT_EQ(names.at("forward"), 1);
  EXPECT_EQ(names.at("idle"), 1);
  EXPECT_EQ(names.at("communication"), 1);
  EXPECT_EQ(names.count("unattributed"), 0u);
}

TEST(TraceAttribution, NothingIsRecordedWhenNotTracing) {
  nnpar::trace::start();
  nnpar::trace::stop();
  nnpar::PhaseClock clock;
  nnpar::PhaseTimes phases;
  for (int i = 0; i < 10; ++i) clock.lap(phases.forward);
  nnpar::trace::attribute_laps(phases);
  nnpar::trace::add_span("epoch 1", nnpar::trace::Clock::now(), nnpar::trace::Clock::now());
  nnpar::trace::start();
  EXPECT_TRUE(nnpar::trace::stop().empty());
}

TEST(TraceAttribution, EventsBeyondTheLimitAreCountedNotKept) {
  nnpar::trace::start(5);
  nnpar::PhaseClock clock;
  nnpar::PhaseTimes phases;
  for (int i = 0; i < 8; ++i) clock.lap(phases.forward);
  EXPECT_EQ(nnpar::trace::dropped(), 3u);
  nnpar::trace::attribute_laps(phases);
  EXPECT_EQ(nnpar::trace::stop().size(), 5u);
}

// Every track's complete events nest like a call stack (each inside or after the previous one)
// and have non-negative durations: what "balanced" means for 'X' events.
void expect_valid_chrome_trace(const nlohmann::json& t, std::set<std::string>* process_names = nullptr) {
  ASSERT_TRUE(t.contains("traceEvents"));
  const std::set<std::string> allowed = {"data", "forward", "backward", "update", "communication",
                                         "idle", "unattributed", "setup", "evaluate"};
  std::map<std::pair<int, int>, std::vector<std::pair<double, double>>> tracks;
  for (auto& e : t["traceEvents"]) {
    const std::string ph = e.at("ph");
    if (ph == "M") {
      if (e["name"] == "process_name" && process_names) process_names->insert(e["args"]["name"].get<std::string>());
      continue;
    }
    ASSERT_EQ(ph, "X") << e.dump();
    const std::string name = e.at("name");
    EXPECT_TRUE(allowed.count(name) || name.rfind("epoch ", 0) == 0) << name;
    const double ts = e.at("ts"), dur = e.at("dur");
    EXPECT_GE(ts, 0);
    EXPECT_GE(dur, 0);
    tracks[{e.at("pid").get<int>(), e.at("tid").get<int>()}].push_back({ts, ts + dur});
  }
  for (auto& [track, spans] : tracks) {
    std::sort(spans.begin(), spans.end(), [](auto& a, auto& b) { return a.first != b.first ? a.first < b.first : a.second > b.second; });
    std::vector<double> open;  // ends of the enclosing events
    const double slack = 1e-3;  // us: timestamps are rounded to the nanosecond
    for (auto& [begin, end] : spans) {
      while (!open.empty() && open.back() <= begin + slack) open.pop_back();
      if (!open.empty()) {
        EXPECT_LE(end, open.back() + slack) << "overlapping events on pid/tid " << track.first << "/" << track.second;
      }
      open.push_back(end);
    }
  }
}

class Trace : public CliTest {};

TEST_F(Trace, TrainWritesOneTrackPerThreadWithEveryPhase) {
  NNPAR_NEED_DATA();
  const fs::path config = tiny_config();
  const Output r = run("train " + config.string() + " --trace " + (dir_ / "serial.json").string());
  ASSERT_EQ(r.status, 0) << r.all();
  EXPECT_THAT(r.out, HasSubstr("trace: " + (dir_ / "serial.json").string()));
  const auto t = nlohmann::json::parse(slurp(dir_ / "serial.json"));
  std::set<std::string> processes;
  expect_valid_chrome_trace(t, &processes);
  EXPECT_EQ(processes, (std::set<std::string>{"serial rank 0"}));
  std::map<std::string, int> names;
  for (auto& e : t["traceEvents"])
    if (e["ph"] == "X") names[e["name"]] += 1;
  // 1,024 samples in batches of 32: 32 steps an epoch, 2 epochs.
  EXPECT_EQ(names["forward"], 64);
  EXPECT_EQ(names["backward"], 64);
  EXPECT_EQ(names["epoch 1"], 1);
  EXPECT_EQ(names["epoch 2"], 1);
  EXPECT_EQ(names["setup"], 1);
  EXPECT_EQ(names.count("unattributed"), 0u);
  EXPECT_EQ(t["otherData"]["dropped_events"], 0);
}

TEST_F(Trace, MultiRankRunsGetATrackPerRankMergedByRankZero) {
  NNPAR_NEED_DATA();
  const fs::path config = tiny_config("[[strategy]]\nname = \"serial\"\n[[strategy]]\nname = \"mpi-data\"\nranks = 2\n");
  const Output r = run("compare " + config.string() + " --trace " + (dir_ / "t.json").string());
  ASSERT_EQ(r.status, 0) << r.all();
  const auto t = nlohmann::json::parse(slurp(dir_ / "t.json"));
  std::set<std::string> processes;
  expect_valid_chrome_trace(t, &processes);
  EXPECT_EQ(processes, (std::set<std::string>{"serial rank 0", "mpi-data rank 0", "mpi-data rank 1"}));
  std::map<std::pair<int, std::string>, int> per_pid;
  for (auto& e : t["traceEvents"])
    if (e["ph"] == "X") per_pid[{e["pid"].get<int>(), e["name"].get<std::string>()}] += 1;
  for (auto& p : t["otherData"]["processes"]) {
    const int pid = p["pid"];
    EXPECT_EQ((per_pid[{pid, "forward"}]), 64) << p.dump();
    if (p["label"] == "mpi-data") {
      EXPECT_GE((per_pid[{pid, "communication"}]), 64) << p.dump();
    }
  }
  // Every rank's phases reach the results too.
  bool found = false;
  for (auto& f : fs::directory_iterator(dir_ / "results"))
    if (f.path().filename().string().find("mpi-data") != std::string::npos) {
      const auto j = nlohmann::json::parse(slurp(f.path()));
      ASSERT_EQ(j["totals"]["rank_phases"].size(), 2u);
      EXPECT_GT(j["totals"]["rank_phases"][1]["forward"].get<double>(), 0);
      found = true;
    }
  EXPECT_TRUE(found);
}

TEST_F(Trace, AnExistingTraceFileIsNeverReplaced) {
  NNPAR_NEED_DATA();
  const fs::path config = tiny_config();
  const fs::path existing = write("old.json", "keep me");
  const Output r = run("train " + config.string() + " --trace " + existing.string());
  EXPECT_EQ(r.status, 2);
  EXPECT_THAT(r.err, HasSubstr(existing.string()));
  EXPECT_EQ(slurp(existing), "keep me");
}

}  // namespace
