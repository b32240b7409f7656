// `nnpar compare --grids N`: every way to arrange N workers as a data x pipeline grid, plus
// tensor parallelism on N, from the config's hybrid entries (issue 7).
#pragma once
#include <string>
#include <vector>

#include "config.hpp"
#include "runner.hpp"

namespace nnpar {

// Replaces every [[strategy]] entry of a hybrid plugin (mpi-hybrid, nccl-hybrid) by one entry
// per grid data x stages = workers with stages <= the model's Linear layers, labelled
// "<label>-<data>x<stages>" (N x 1 is pure data parallelism, 1 x N a pure pipeline), and
// adds tensor parallelism of the same backend on `workers` ranks ("<plugin>-<workers>")
// unless the config already runs that plugin on `workers` ranks. Deterministic, so a child `nnpar train
// --grids N` finds the same labels. Throws ConfigError when there is no hybrid entry.
void expand_grids(RunConfig& config, int workers);

// The lines printed after compare's table: the grids (and tensor run) fastest first.
std::string grid_ranking(const std::vector<RunResult>& runs, int workers);

}  // namespace nnpar
