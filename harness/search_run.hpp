// `nnpar search CONFIG`: runs a hyper-parameter search (search.hpp) in trial_parallel mode
// (rank 0 hands trials out to worker ranks, each trial on one worker) and/or data_parallel
// mode (trials one after another, each on every worker through a parallel strategy), writes
// every finished trial at once, and resumes from what it finds. See docs/search.md.
#pragma once
#include <string>
#include <vector>

#include "nnpar/data.hpp"

namespace nnpar {

struct SearchCommand {
  std::string config;
  std::vector<std::string> overrides;
  std::vector<std::string> plugin_paths;
  std::string resume;      // --resume DIR: carry on with the search in DIR
  std::string search_dir;  // (internal) a process started by the search: run in this folder...
  std::string run_mode;    // (internal) ...this mode only
  bool quiet = false;
  // (testing) end the process abruptly, as a kill would, once this many results of this
  // session are written; 0 = never. The exit status is kStoppedForTest.
  int stop_after = 0;
};
inline constexpr int kStoppedForTest = 3;

// Returns the exit status (0 ok, 2 error); errors are thrown as ConfigError, DataError, ...
int run_search_command(const SearchCommand& command, const std::string& command_line);

// The training set split into the part trials train on and the held-out part their metric
// is measured on: a fixed pseudo-random `fraction` of the samples (the same for every search
// on the same data), both parts kept in file order.
struct ValidationSplit {
  Dataset train, validation;
};
ValidationSplit split_validation(const Dataset& all, double fraction);

}  // namespace nnpar
