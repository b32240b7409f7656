#include "trace_file.hpp"

#include <algorithm>
#include <cmath>
#include <cstdio>
#include <fstream>
#include <limits>
#include <set>
#include <stdexcept>

#include "nnpar/comm_mpi.hpp"
#include "rank_gather.hpp"
#include "results.hpp"

namespace nnpar {
namespace fs = std::filesystem;

void TraceFile::add_process(const std::string& label, int rank, const std::vector<trace::Event>& events) {
  const int pid = next_pid_++;
  const std::string name = label + " rank " + std::to_string(rank);
  events_.push_back({{"name", "process_name"}, {"ph", "M"}, {"pid", pid}, {"args", {{"name", name}}}});
  events_.push_back({{"name", "process_sort_index"}, {"ph", "M"}, {"pid", pid}, {"args", {{"sort_index", pid}}}});
  std::set<int> threads;
  for (const auto& e : events) {
    threads.insert(e.thread);
    events_.push_back({{"name", e.name}, {"cat", e.category}, {"ph", "X"}, {"pid", pid}, {"tid", e.thread},
                       {"ts", double(e.start_ns) / 1e3}, {"dur", double(e.end_ns - e.start_ns) / 1e3}});
  }
  for (int t : threads)
    events_.push_back({{"name", "thread_name"}, {"ph", "M"}, {"pid", pid}, {"tid", t},
                       {"args", {{"name", "thread " + std::to_string(t)}}}});
  processes_.push_back({{"pid", pid}, {"label", label}, {"rank", rank}});
}

void TraceFile::add_file(const fs::path& file) {
  std::ifstream in(file);
  if (!in) throw std::runtime_error("cannot read trace '" + file.string() + "'");
  nlohmann::json j;
  try {
    j = nlohmann::json::parse(in);
  } catch (const std::exception& e) {
    throw std::runtime_error("trace '" + file.string() + "' is not valid JSON: " + e.what());
  }
  const auto& other = j.value("otherData", nlohmann::json::object());
  const double origin = other.value("clock_origin_us", 0.0);
  dropped_ += other.value("dropped_events", std::size_t(0));
  // Its pids become ours, after the ones already used.
  int last = -1;
  auto pid_of = [&](int theirs) {
    last = std::max(last, theirs);
    return next_pid_ + theirs;
  };
  for (auto e : j.at("traceEvents")) {
    e["pid"] = pid_of(e.at("pid").get<int>());
    if (e.contains("ts")) e["ts"] = e["ts"].get<double>() + origin;
    if (e.value("name", "") == "process_sort_index") e["args"]["sort_index"] = e["pid"];
    events_.push_back(std::move(e));
  }
  for (auto p : other.value("processes", nlohmann::json::array())) {
    p["pid"] = pid_of(p.at("pid").get<int>());
    processes_.push_back(std::move(p));
  }
  next_pid_ += last + 1;
}

nlohmann::json TraceFile::to_json() const {
  double origin = std::numeric_limits<double>::infinity();
  for (const auto& e : events_)
    if (e.contains("ts")) origin = std::min(origin, e["ts"].get<double>());
  if (!std::isfinite(origin)) origin = 0;
  nlohmann::json events = nlohmann::json::array();
  for (auto e : events_) {
    if (e.contains("ts")) e["ts"] = e["ts"].get<double>() - origin;
    events.push_back(std::move(e));
  }
  nlohmann::json other = {{"clock_origin_us", origin}, {"processes", processes_},
                          {"dropped_events", dropped_}, {"nnpar_version", NNPAR_VERSION},
                          {"git_commit", NNPAR_GIT_COMMIT}, {"date", iso_time_now()}};
  return {{"traceEvents", events}, {"displayTimeUnit", "ms"}, {"otherData", other}};
}

TraceRecorder::TraceRecorder(fs::path file) : file_(std::move(file)) {
  if (file_.empty()) return;
  std::error_code ec;
  if (fs::exists(file_, ec))
    throw std::runtime_error("--trace " + file_.string() + ": the file already exists; choose another name");
  if (file_.has_parent_path() && fs::exists(file_.parent_path(), ec) && !fs::is_directory(file_.parent_path(), ec))
    throw std::runtime_error("--trace " + file_.string() + ": '" + file_.parent_path().string() + "' is not a folder");
}

void TraceRecorder::start() {
  if (on()) trace::start();
}

void TraceRecorder::finish(const std::string& label, WorldInfo world) {
  if (!on()) return;
  const std::size_t dropped = trace::dropped();
  std::vector<trace::Event> events = trace::stop();
  if (world.size <= 1) {
    trace_.add_process(label, 0, events);
    trace_.note_dropped(dropped);
    return;
  }
  auto comm = mpi::world();
  double lost = double(dropped);
  comm->allreduce(&lost, 1);
  auto ranks = gather_rank_events(*comm, std::move(events));
  for (std::size_t r = 0; r < ranks.size(); ++r) trace_.add_process(label, int(r), ranks[r]);
  trace_.note_dropped(std::size_t(lost));
}

void TraceRecorder::add_child(const fs::path& child_trace) {
  if (on()) trace_.add_file(child_trace);
}

fs::path TraceRecorder::write() {
  const nlohmann::json j = trace_.to_json();
  const std::size_t dropped = j["otherData"]["dropped_events"].get<std::size_t>();
  if (dropped > 0)
    std::fprintf(stderr, "warning: the trace kept its first events only; %zu later events were dropped\n", dropped);
  const fs::path dir = file_.has_parent_path() ? file_.parent_path() : fs::path(".");
  const fs::path written = write_new_file(dir, file_.stem().string(), file_.extension().string(), j.dump() + "\n");
  return written.filename() == file_.filename() ? file_ : written;
}

}  // namespace nnpar
