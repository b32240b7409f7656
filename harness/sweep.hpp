// `nnpar sweep CONFIG --workers 1,2,4 --batch 32,128 --width 256,1024 [-o DIR]`: every
// [[strategy]] of CONFIG at every grid point, results collected in one folder (docs/reports.md).
#pragma once
#include <filesystem>
#include <string>
#include <vector>

#include "progress.hpp"

namespace nnpar {

struct SweepOptions {
  std::filesystem::path config;
  std::vector<std::string> overrides, plugin_paths;
  std::vector<int> workers, batch, width;  // empty: as configured
  std::filesystem::path out;               // empty: [output] dir / sweep-TIME
  bool quiet = false;
  bool trace = false;                      // a Chrome trace beside each run's JSON
};

// What --workers means for a strategy, from its plugin's metadata: MPI ranks for a plugin that
// runs on several ranks (needs_mpi, or a world size other than 1), else its `threads` option
// when it has one, else nothing (it runs once per batch size and width).
enum class WorkerKind { ranks, threads, single };
WorkerKind worker_kind(const StrategyInfo& info);
const char* worker_kind_name(WorkerKind kind);

// Returns the exit status: 0 every run ran and passed parity, 1 a parity check failed, 2 a run
// failed (the others still run; sweep.json records why). Throws on errors found before any run.
int run_sweep(const SweepOptions& options, Progress& progress, const std::string& command_line);

}  // namespace nnpar
