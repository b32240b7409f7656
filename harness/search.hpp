// Hyper-parameter search: the [search] table, the space of trials (grid, random), the
// rungs of successive halving, and the schedulers that decide which trial to train next.
// Everything here is pure logic (no training, no files, no MPI), so it is tested directly;
// search_run.cpp executes it.
#pragma once
#include <cstdint>
#include <optional>
#include <set>
#include <map>
#include <string>
#include <vector>

#include <nlohmann/json.hpp>

#include "config.hpp"

namespace nnpar {

enum class SearchMethod { grid, random, halving };
enum class SearchMode { trial_parallel, data_parallel, both };
std::string to_string(SearchMethod method);
std::string to_string(SearchMode mode);

// The learning rate: a list of values, or a log-uniform range [min, max] (continuous for
// random search; `count` log-spaced points when given, which grid search requires).
struct LrDimension {
  std::vector<double> values;  // empty: the continuous range below
  double min = 0, max = 0;
};

struct SearchSpace {
  std::vector<int> layers;      // number of hidden layers
  std::vector<int> width;       // neurons in every hidden layer
  LrDimension lr;
  std::vector<int> batch_size;  // global batch
  std::vector<int> epochs;      // not with halving (its rungs set the epochs)
};

// One configuration of the space. With halving, epochs is the last rung's.
struct TrialParams {
  int layers = 1, width = 1;
  double lr = 0.1;
  int batch_size = 32, epochs = 1;
  bool operator==(const TrialParams&) const = default;
};
nlohmann::json to_json(const TrialParams& p);
TrialParams trial_params_from_json(const nlohmann::json& j);
// "layers 2, width 128, lr 0.3, batch 32"
std::string describe(const TrialParams& p);

struct SearchSettings {
  SearchMethod method = SearchMethod::grid;
  SearchMode mode = SearchMode::trial_parallel;
  SearchSpace space;
  std::string sample = "random";  // halving: configurations drawn at random ("random") or the grid
  int trials = 0;                 // random, and halving with sample = "random"
  std::uint64_t seed = 1;
  double validation = 0.1;        // fraction of the training set held out for the metric
  std::optional<double> target_accuracy;  // fraction; time until the best reaches it is reported
  int workers = 2;
  int min_epochs = 1, max_epochs = 1, eta = 3;  // halving
  std::string trial_strategy = "serial";  // [[strategy]] label (or plugin name) for trial_parallel
  std::string data_strategy;              // [[strategy]] label for data_parallel
  bool trial_strategy_listed = false;     // false: a plugin name with default options
  // What identifies the search for --resume: everything that changes a trial's result.
  nlohmann::json fingerprint;
};

// Reads and validates [search] from config.document; errors are ConfigError naming
// file:line:col and search.<key> (or --set search.<key>).
SearchSettings load_search_settings(const RunConfig& config);

// The configurations, in a fixed order: the grid's product (layers outermost, epochs
// fastest), or `count` draws from the space with `seed`.
std::vector<TrialParams> grid_trials(const SearchSpace& space);
std::vector<TrialParams> random_trials(const SearchSpace& space, int count, std::uint64_t seed);
// The configurations a search trains (trial i of the results is pool[i - 1]).
std::vector<TrialParams> search_pool(const SearchSettings& settings);

// Successive halving's epoch budgets: min, min*eta, min*eta^2, ... below max, then max.
std::vector<int> halving_rungs(int min_epochs, int max_epochs, int eta);
// Configurations per rung that synchronous halving trains: n, floor(n/eta), ...
std::vector<int> halving_plan(int pool_size, int rungs, int eta);

// The model a trial trains: [model] layers' input and output sizes around its hidden layers.
ModelSpec trial_model(const ModelSpec& base, const TrialParams& params);

// One trial trained from from_epochs (0: its initial weights; else its checkpoint after
// that many epochs) up to to_epochs.
struct TrialJob {
  int trial = 0;  // 1-based index into the pool
  int from_epochs = 0, to_epochs = 0;
};

// A finished job, as appended to trials.jsonl.
struct TrialRecord {
  int trial = 0;
  TrialParams params;
  int from_epochs = 0, epochs = 0;   // trained from .. to
  std::string status = "ok";         // "ok" or "diverged" (loss not finite: lr too large)
  double val_accuracy = 0, val_loss = 0, train_loss = 0;
  double seconds = 0;                // wall time of the job on its worker (set-up, training, validation)
  double train_seconds = 0;          // of which training epochs
  double finished_at = 0;            // seconds since the search started (across resumed sessions)
  int worker = 0;                    // trial_parallel: 1..workers; data_parallel: 0 (all of them)
  std::string device;
  std::string checkpoint;            // relative to the mode's folder; empty when none was kept
};
nlohmann::json to_json(const TrialRecord& r);
TrialRecord trial_record_from_json(const nlohmann::json& j);
// Ranking of records for "best": higher validation accuracy, then more epochs, then the
// lower trial number; a diverged record is never best.
bool better(const TrialRecord& a, const TrialRecord& b);

// Decides which job to start next. Plain (grid, random): every trial once with its own
// epochs. Halving, synchronous: rung by rung, the top floor(n/eta) of a complete rung go on.
// Halving, asynchronous (ASHA): a trial is promoted as soon as it is in the top
// floor(n/eta) of the n trials completed at its rung; otherwise a new trial starts.
// State is derived from the finished records and the jobs in flight, so a resumed search
// feeds the records it finds on disk through finished() and carries on.
class TrialScheduler {
 public:
  TrialScheduler(std::vector<TrialParams> pool, bool halving, std::vector<int> rungs, int eta, bool asynchronous);

  // The job to start now (marked in flight), or nullopt: wait for a running job (running() > 0)
  // or the search is complete (done()).
  std::optional<TrialJob> next();
  void finished(const TrialRecord& record);
  bool done() const;
  int running() const { return int(in_flight_.size()); }
  int jobs_done() const { return jobs_done_; }
  // Jobs not yet started, as planned (asynchronous halving may run a few more).
  int jobs_left() const;
  // Epochs trained so far, and planned in all (for the ETA).
  long epochs_done() const { return epochs_done_; }
  long epochs_planned() const;
  long epochs_in_flight() const;
  // Trials completed at rung k (halving; plain: rung 0 holds every trial).
  std::vector<int> rung_members(int k) const;
  const std::vector<int>& rungs() const { return rungs_; }
  const std::vector<TrialParams>& pool() const { return pool_; }
  bool halving() const { return halving_; }

 private:
  int rung_of(int epochs) const;
  // The trials of completed rung k that may go on, best first: the top floor(n/eta),
  // diverged ones excluded.
  std::vector<int> top_of_rung(int k) const;
  std::optional<TrialJob> peek() const;

  std::vector<TrialParams> pool_;
  bool halving_;
  std::vector<int> rungs_;
  int eta_;
  bool asynchronous_;
  std::vector<std::map<int, TrialRecord>> completed_;  // per rung: trial -> record
  std::set<std::pair<int, int>> in_flight_;             // (rung, trial)
  int jobs_done_ = 0;
  long epochs_done_ = 0;
};

}  // namespace nnpar
