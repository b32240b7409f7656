// The `calibrate` and `plan` subcommands (issue 11), registered on nnpar's CLI by main().
#pragma once
#include <memory>
#include <optional>
#include <string>

#include <CLI/CLI.hpp>
#include <nlohmann/json.hpp>

namespace nnpar {

class PlanCommands {
 public:
  explicit PlanCommands(CLI::App& app);
  ~PlanCommands();
  // The exit status when `calibrate` or `plan` was the subcommand given, else nullopt.
  std::optional<int> run(const std::string& command_line);

 private:
  struct State;
  std::unique_ptr<State> state_;
};

// `plan --compare-results DIR --json` as a value: every result JSON under results_dir predicted
// with the profile (measured links within a node), rows and summary (schema
// nnpar-plan-compare/1, docs/plan.md). Throws perf::ProfileError or std::invalid_argument.
nlohmann::json predicted_beside_measured(const std::string& profile_file, const std::string& results_dir);

}  // namespace nnpar
