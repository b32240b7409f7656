// A multi-rank entry run by a parent nnpar (compare, sweep): `nnpar train --run-output DIR`
// started under the MPI launcher with the entry's rank count; the parent reads the run back.
#pragma once
#include <filesystem>
#include <string>
#include <vector>

#include "config.hpp"
#include "progress.hpp"
#include "runner.hpp"
#include "trace_file.hpp"

namespace nnpar {

// How the parent was started, so the child loads exactly the same config.
struct ChildRunOptions {
  std::filesystem::path config;
  std::vector<std::string> overrides;
  std::vector<std::string> plugin_paths;
  bool quiet = false;
  Progress* progress = nullptr;  // json mode: the child's lines go to the real stdout
  TraceRecorder* trace = nullptr;  // when on, the child records one and it is merged in
  int grids = 0;                   // compare --grids N
};

// The arguments that make a child `nnpar train` run exactly this config and entry.
std::vector<std::string> child_train_args(const ChildRunOptions& o, const std::string& label);

// Runs the entry in child processes and returns its result with the final parameters.
// Throws std::runtime_error naming the entry when the child fails.
RunResult run_in_child(const ChildRunOptions& o, const RunConfig& config, const StrategyEntry& entry);

}  // namespace nnpar
