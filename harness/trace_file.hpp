// `--trace FILE`: Chrome trace-event JSON (opens in https://ui.perfetto.dev and
// chrome://tracing). One process per (run, rank), named "LABEL rank R"; one thread track per
// thread that timed phases; complete ('X') events for the phases of every lap and for the
// harness's own spans (setup, epoch N, evaluate), which contain the laps of their epoch.
#pragma once
#include <filesystem>
#include <optional>
#include <string>
#include <vector>

#include <nlohmann/json.hpp>

#include "nnpar/strategy.hpp"
#include "nnpar/trace.hpp"

namespace nnpar {

class TraceFile {
 public:
  // One rank of one run.
  void add_process(const std::string& label, int rank, const std::vector<trace::Event>& events);
  // Every process of a trace another nnpar wrote (a multi-rank run in child processes).
  void add_file(const std::filesystem::path& file);
  void note_dropped(std::size_t events) { dropped_ += events; }
  // Timestamps in microseconds from the earliest event; otherData.clock_origin_us holds that
  // origin on the steady clock, so files from processes on one host can be merged again.
  nlohmann::json to_json() const;

 private:
  nlohmann::json events_ = nlohmann::json::array();    // timestamps on the steady clock, in us
  nlohmann::json processes_ = nlohmann::json::array();  // {pid, label, rank}
  int next_pid_ = 0;
  std::size_t dropped_ = 0;
};

// What one nnpar command records for --trace FILE: refuses an existing FILE before anything
// runs, records each run of this process, merges child runs' traces, writes FILE at the end
// (atomically, never over an existing file).
class TraceRecorder {
 public:
  explicit TraceRecorder(std::filesystem::path file);  // empty: tracing off
  bool on() const { return !file_.empty(); }
  const std::filesystem::path& file() const { return file_; }
  // Around one run made in this process. In a multi-rank run every rank calls finish (it is
  // collective) and rank 0 keeps all ranks' events.
  void start();
  void finish(const std::string& label, WorldInfo world = {});
  void add_child(const std::filesystem::path& child_trace);
  // Writes FILE; returns the path written (FILE, or FILE-2... if FILE appeared meanwhile).
  std::filesystem::path write();

 private:
  std::filesystem::path file_;
  TraceFile trace_;
};

}  // namespace nnpar
