#include "grid_sweep.hpp"

#include <algorithm>
#include <cstdio>
#include <memory>

namespace nnpar {
namespace {

bool is_hybrid(const std::string& plugin) { return plugin == "mpi-hybrid" || plugin == "nccl-hybrid"; }

// The expanded runs are those whose label ends in "-<d>x<s>" or is the added tensor entry.
bool in_sweep(const RunResult& run, int workers) {
  if (run.world_size != workers) return false;
  return is_hybrid(run.strategy) || run.strategy == "mpi-tensor" || run.strategy == "nccl-tensor";
}

}  // namespace

void expand_grids(RunConfig& config, int workers) {
  if (workers < 1) throw ConfigError("--grids " + std::to_string(workers) + ": the number of workers must be >= 1");
  const int layers = config.model.linear_count();
  std::vector<StrategyEntry> expanded;
  std::vector<std::string> tensor_plugins;
  for (const StrategyEntry& e : config.strategies) {
    if (!is_hybrid(e.name)) {
      expanded.push_back(e);
      continue;
    }
    for (int data = workers; data >= 1; --data) {
      if (workers % data != 0 || workers / data > layers) continue;
      StrategyEntry grid = e;
      grid.label = e.label + "-" + std::to_string(data) + "x" + std::to_string(workers / data);
      grid.ranks = workers;
      auto table = std::make_shared<toml::table>(*e.table);
      table->insert_or_assign("data", data);
      table->insert_or_assign("stages", 0);
      table->insert_or_assign("label", grid.label);
      if (table->contains("ranks")) table->insert_or_assign("ranks", workers);
      grid.table = table;
      grid.where = e.where + " (--grids " + std::to_string(workers) + ")";
      expanded.push_back(grid);
    }
    const std::string tensor = e.name == "nccl-hybrid" ? "nccl-tensor" : "mpi-tensor";
    if (std::find(tensor_plugins.begin(), tensor_plugins.end(), tensor) == tensor_plugins.end())
      tensor_plugins.push_back(tensor);
  }
  if (tensor_plugins.empty())
    throw ConfigError("--grids " + std::to_string(workers) + ": " + config.file.string() +
                      " has no [[strategy]] of plugin mpi-hybrid or nccl-hybrid to arrange as grids");
  for (const std::string& tensor : tensor_plugins) {
    const std::string label = tensor + "-" + std::to_string(workers);
    // The config may already run that plugin on as many ranks.
    if (std::any_of(expanded.begin(), expanded.end(),
                    [&](auto& e) { return e.label == label || (e.name == tensor && e.ranks == workers); }))
      continue;
    StrategyEntry t;
    t.name = tensor;
    t.label = label;
    t.ranks = workers;
    t.table = std::make_shared<toml::table>();
    t.where = "--grids " + std::to_string(workers);
    expanded.push_back(t);
  }
  config.strategies = std::move(expanded);
}

std::string grid_ranking(const std::vector<RunResult>& runs, int workers) {
  std::vector<const RunResult*> sweep;
  for (const RunResult& r : runs)
    if (in_sweep(r, workers)) sweep.push_back(&r);
  if (sweep.empty()) return "";
  std::stable_sort(sweep.begin(), sweep.end(),
                   [](auto* a, auto* b) { return a->samples_per_second > b->samples_per_second; });
  std::string out = "grids on " + std::to_string(workers) + " workers, fastest first:";
  char line[256];
  for (const RunResult* r : sweep) {
    std::snprintf(line, sizeof line, "\n  %-24s %11.0f samples/s  %5.2fx the slowest", r->label.c_str(),
                  r->samples_per_second, r->samples_per_second / sweep.back()->samples_per_second);
    out += line;
  }
  return out + "\nwinner: " + sweep.front()->label + " (" + sweep.front()->device + ")\n";
}

}  // namespace nnpar
