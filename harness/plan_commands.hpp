// The `calibrate` and `plan` subcommands (issue 11), registered on nnpar's CLI by main().
#pragma once
#include <memory>
#include <optional>
#include <string>

#include <CLI/CLI.hpp>

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

}  // namespace nnpar
