// The data x pipeline grid shared by mpi-hybrid and nccl-hybrid: the world is `data` replicas
// of a `stages`-deep pipeline,
//
//   world rank = replica * stages + stage,
//
// so the ranks of one pipeline are consecutive (with `--map-by` packing they share a node,
// and the frequent activation messages stay local) and the once-per-step gradient allreduce
// crosses replicas.
#pragma once
#include <cstdint>
#include <stdexcept>
#include <string>
#include <vector>

#include "pipeline.hpp"

namespace nnpar {

struct HybridGrid {
  int data = 1, stages = 1;
  int replica_of(int world_rank) const { return world_rank / stages; }
  int stage_of(int world_rank) const { return world_rank % stages; }
};

// From the options and the world size alone, so every rank reaches the same verdict before
// any message: a grid that does not fit fails on every rank with the same message.
inline HybridGrid resolve_hybrid_grid(const StrategyOptions& o, int world, const std::string& unit) {
  const int data = int(o.get_int("data")), stages_option = int(o.get_int("stages"));
  const std::string given = "options data = " + std::to_string(data) + " and stages = " +
                            (stages_option == 0 ? std::string("0 (world / data)") : std::to_string(stages_option));
  if (stages_option == 0 && world % data != 0)
    throw std::invalid_argument(given + ": the world of " + std::to_string(world) + " " + unit +
                                " does not split into " + std::to_string(data) +
                                " replicas (data x stages must equal the world size; rank = replica * stages + stage)");
  const int stages = stages_option == 0 ? world / data : stages_option;
  if (data * stages != world)
    throw std::invalid_argument(given + ": a grid of " + std::to_string(data) + " x " + std::to_string(stages) + " = " +
                                std::to_string(data * stages) + " ranks, but the world has " + std::to_string(world) +
                                " " + unit + " (data x stages must equal the world size)");
  return {data, stages};
}

// This rank's stage plan in the grid: the pipeline's, with micro-batches cut from the
// replica's shard of each batch instead of the whole batch.
inline StagePlan make_hybrid_stage_plan(const StrategyContext& context, const HybridGrid& grid, int stage,
                                        const std::string& plugin) {
  StagePlan plan;
  try {
    plan = make_stage_plan(context, stage, grid.stages);
  } catch (const std::invalid_argument& e) {
    // The pipeline's messages count stages in ranks; here they are world / data.
    throw std::invalid_argument(std::string(e.what()) + " [" + plugin + ": " + std::to_string(grid.data) + " x " +
                                std::to_string(grid.stages) + " grid, one stage per rank of each replica]");
  }
  const int shard = int(shard_range(std::size_t(context.train->batch_size), 0, grid.data).size());
  plan.max_micro_rows = std::max(1, (shard + plan.micro_batches - 1) / plan.micro_batches);
  plan.replicas = grid.data;
  return plan;
}

inline std::vector<OptionSpec> hybrid_options() {
  std::vector<OptionSpec> options = {
      {"data", OptionType::integer, std::int64_t{1},
       "data-parallel replicas of the pipeline (world size = data x stages)", 1, 1 << 20, {}},
      {"stages", OptionType::integer, std::int64_t{0},
       "pipeline stages per replica; 0 = world size / data", 0, 1 << 20, {}},
      {"overlap", OptionType::boolean, true,
       "start each layer's gradient allreduce during the step's last backward (else one per stage after it)",
       -1e300, 1e300, {}},
  };
  for (OptionSpec& o : pipeline_options()) options.push_back(std::move(o));
  return options;
}

inline std::string hybrid_description(const HybridGrid& grid, const StagePlan& p) {
  return "hybrid " + std::to_string(grid.data) + " data x " + std::to_string(grid.stages) + " stages, pipeline " +
         partition_text(p.partition) + " layers, " + p.schedule_name + ", " + std::to_string(p.micro_batches) +
         (p.micro_batches == 1 ? " micro-batch" : " micro-batches");
}

}  // namespace nnpar
