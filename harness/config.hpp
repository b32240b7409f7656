// The run configuration: a TOML file (toml++) validated into typed settings. Every error
// names file:line:col and the key path, e.g.
//   configs/demo.toml:7:1: train.lrr: unknown key (did you mean 'lr'?)
// Overrides from the command line (--set train.lr=0.5) go through the same validation and
// are reported as "--set train.lr".
#pragma once
#include <filesystem>
#include <memory>
#include <stdexcept>
#include <string>
#include <vector>

#include <toml++/toml.h>

#include "nnpar/data.hpp"
#include "nnpar/model.hpp"
#include "nnpar/strategy.hpp"

namespace nnpar {

class ConfigError : public std::runtime_error {
 public:
  using std::runtime_error::runtime_error;
};

struct DataConfig {
  std::filesystem::path dir;        // resolved: [data] dir, else $NNPAR_DATA, else ../shared/data
  std::string format = "idx";       // "idx" or "csv"
  std::filesystem::path train_images, train_labels, test_images, test_labels;  // idx (resolved against dir)
  std::filesystem::path train_csv, test_csv;                                    // csv (resolved against dir)
  DataOptions options;              // transpose, label_offset, normalize, limit (train), num_classes
  std::size_t test_limit = 0;       // [data] test_limit; 0 = all
};

struct OutputConfig {
  std::filesystem::path dir = "results";  // resolved against the current directory
  std::filesystem::path save_checkpoint;  // empty = none
  bool write_results = true;
};

struct ParityConfig {
  std::string reference = "serial";  // label of the strategy the others are checked against
  double weight_rtol = 1e-3;         // exact class: |a-b| <= atol + rtol*|b| elementwise
  double weight_atol = 1e-5;
  double accuracy_pp = 0.1;          // exact class: test accuracy within this many points
  double approx_accuracy_pp = 1.0;   // approximate class
};

// One [[strategy]] entry. Its own options are validated later, against the plugin's
// OptionSpec list, by validate_strategy_options.
struct StrategyEntry {
  std::string name;   // plugin name
  std::string label;  // display name, unique in the config; defaults to name
  std::shared_ptr<const toml::table> table;  // the entry as written (for positions)
  std::string where;  // "file:line:col" of the entry
  int ranks = 1;      // processes nnpar starts through the MPI launcher for this entry
};

// How nnpar starts multi-rank strategies itself: LAUNCHER -np RANKS ARGS... nnpar train ...
struct MpiConfig {
  std::string launcher = "mpirun";
  std::vector<std::string> launcher_args{"--oversubscribe"};
  // Seconds a rank may go without a heartbeat from a peer on its node before it presumes the
  // peer lost and ends the job naming it (rank_watchdog.hpp); 0 = off.
  double rank_timeout = 30;
};

struct RunConfig {
  std::filesystem::path file;
  DataConfig data;
  ModelSpec model;
  std::filesystem::path init_checkpoint;  // [model] init_checkpoint; empty = use init
  TrainSettings train;
  int eval_every = 1;                     // [train] eval_every: test accuracy every N epochs (0 = only at the end)
  OutputConfig output;
  ParityConfig parity;
  std::vector<std::filesystem::path> plugin_paths;  // [plugins] paths
  MpiConfig mpi;
  std::vector<StrategyEntry> strategies;
  toml::table resolved;                   // the merged document after overrides, for results
  // The parsed file after overrides, with source positions: for tables other commands read
  // and validate themselves ([search], read by nnpar search).
  std::shared_ptr<const toml::table> document;
};

// Parses and validates. overrides are "dotted.key=value" strings; value is parsed as a TOML
// value when it is one (0.5, true, [1,2], "x"), else taken as a bare string. An override of
// a [[strategy]] key uses strategy.<label>.<key>.
RunConfig load_config(const std::filesystem::path& file, const std::vector<std::string>& overrides = {});
// The same from TOML text; `shown` names it in messages, relative paths resolve against base_dir.
RunConfig load_config_text(const std::string& text, const std::string& shown,
                           const std::filesystem::path& base_dir,
                           const std::vector<std::string>& overrides = {});

// Checks a strategy entry against its plugin's options: unknown keys (with a suggestion),
// types, ranges, choices; fills defaults.
StrategyOptions validate_strategy_options(const StrategyEntry& entry, const std::vector<OptionSpec>& specs);

// "did you mean" helper: the candidate closest to `key` by edit distance, or "" if none is
// close enough.
std::string closest_match(const std::string& key, const std::vector<std::string>& candidates);

// ${VAR} expansion in paths; an unset variable is an error naming it.
std::string expand_env(const std::string& text, const std::string& where);

}  // namespace nnpar
