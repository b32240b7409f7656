#include "child_run.hpp"

#include <unistd.h>

#include <cstdio>
#include <fstream>
#include <optional>
#include <stdexcept>

#include "launcher.hpp"
#include "nnpar/safetensors.hpp"
#include "results.hpp"

namespace nnpar {
namespace fs = std::filesystem;

std::vector<std::string> child_train_args(const ChildRunOptions& o, const std::string& label) {
  std::vector<std::string> args{"train", o.config.string(), "--strategy", label};
  for (auto& s : o.overrides) args.insert(args.end(), {"--set", s});
  for (auto& p : o.plugin_paths) args.insert(args.end(), {"--plugin-path", p});
  if (o.quiet) args.push_back("--quiet");
  if (o.grids > 0) args.insert(args.end(), {"--grids", std::to_string(o.grids)});
  if (o.progress != nullptr && o.progress->mode() == OutputMode::json) args.push_back("--json");
  if (o.progress != nullptr) args.insert(args.end(), {"--progress-style", o.progress->child_style()});
  return args;
}

RunResult run_in_child(const ChildRunOptions& o, const RunConfig& config, const StrategyEntry& entry) {
  const fs::path dir = fs::temp_directory_path() /
                       ("nnpar-run-" + std::to_string(::getpid()) + "-" + file_name_part(entry.label));
  fs::remove_all(dir);
  fs::create_directories(dir);
  std::vector<std::string> args = child_train_args(o, entry.label);
  args.insert(args.end(), {"--run-output", dir.string()});
  const bool tracing = o.trace != nullptr && o.trace->on();
  if (tracing) args.insert(args.end(), {"--trace", (dir / "trace.json").string()});
  const auto command = mpi_command(config.mpi, entry.ranks, args);
  if (!o.quiet) std::printf("[%s] starting %d ranks: %s\n", entry.label.c_str(), entry.ranks, join_command(command).c_str());
  std::fflush(stdout);
  int status = 0;
  {
    std::optional<Progress::RealStdout> real_stdout;
    if (o.progress != nullptr) real_stdout.emplace(*o.progress);
    status = run_and_wait(command);
  }
  if (status != 0 || !fs::exists(dir / "run.json")) {
    fs::remove_all(dir);
    throw std::runtime_error("strategy '" + entry.label + "' on " + std::to_string(entry.ranks) +
                             " ranks failed (exit status " + std::to_string(status) + "); its messages are above");
  }
  std::ifstream in(dir / "run.json");
  RunResult run = run_from_json(nlohmann::json::parse(in));
  run.final_parameters.resize(parameter_count(config.model));
  load_checkpoint(dir / "final.safetensors", config.model, run.final_parameters);
  if (tracing && fs::exists(dir / "trace.json")) o.trace->add_child(dir / "trace.json");
  fs::remove_all(dir);
  return run;
}

}  // namespace nnpar
