// Results on disk: one JSON per run and a CSV summary per invocation, written atomically
// and never over an existing file.
#pragma once
#include <filesystem>
#include <string>
#include <utility>
#include <vector>

#include <nlohmann/json.hpp>

#include "config.hpp"
#include "parity.hpp"
#include "runner.hpp"

namespace nnpar {

struct MachineInfo {
  std::string host, cpu_model, os;
  unsigned cores = 0;
};
MachineInfo machine_info();

// Writes `content` to dir/<stem><ext>, or dir/<stem>-2<ext>, -3... if taken: the content
// goes to a temporary file first (fsync'd), then is linked to the final name, which fails
// rather than replaces when the name exists. Returns the path written.
std::filesystem::path write_new_file(const std::filesystem::path& dir, const std::string& stem,
                                     const std::string& ext, const std::string& content);
// Atomically replaces (or creates) `file` with content: temp + fsync + rename.
void write_file_atomic(const std::filesystem::path& file, const std::string& content);

// A label as a file-name part: letters, digits, '-', '_' and '.' kept, anything else '_'
// (labels are free text in the config; "a/b c" must not become a path).
std::string file_name_part(const std::string& label);

// "20261126-031500": a sortable stamp for file names.
std::string timestamp_for_files();
std::string iso_time_now();

nlohmann::json run_to_json(const RunConfig& config, const RunResult& run, const ParityReport* parity,
                           const std::string& command_line);

// The inverse of run_to_json for what compare needs from a run made in another process
// (a multi-rank strategy started through mpirun); final_parameters are not in the JSON.
RunResult run_from_json(const nlohmann::json& j);

// compare --repeat: one strategy's rounds.
struct RepeatSummary {
  int kept_round = 0;  // the round whose run stands for the strategy (median training time)
  std::vector<double> train_seconds, samples_per_second;  // per round
  std::vector<double> paired_speedup;  // per round: the reference's time / this strategy's
  double speedup = 0;                  // median of paired_speedup
  int rounds() const { return int(train_seconds.size()); }
  // The slowest and fastest round's samples/s ({0, 0} without rounds).
  std::pair<double, double> samples_per_second_range() const;
};
// The index of the median of xs (the lower middle for an even count); 0 for an empty list.
int median_index(const std::vector<double>& xs);
// The median of xs (the mean of the two middle values for an even count); 0 for an empty list.
// The one median of the harness: compare --repeat, calibrate's passes, plan --compare-results.
double median_of(std::vector<double> xs);
nlohmann::json repeat_json(const RepeatSummary& r);

struct SummaryRow {
  const RunResult* run = nullptr;
  const ParityReport* parity = nullptr;
  double speedup = 0;
  std::filesystem::path results_file;
  const RepeatSummary* repeats = nullptr;  // compare --repeat N > 1
};
std::string summary_csv(const std::vector<SummaryRow>& rows);

}  // namespace nnpar
