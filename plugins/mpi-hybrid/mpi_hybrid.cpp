// Hybrid data x pipeline parallelism over MPI (issue 7): the world is a grid of `data`
// replicas x `stages` pipeline stages,
//
//   world rank = replica * stages + stage,
//
// so the ranks of one pipeline are consecutive (with `--map-by` packing they share a node,
// and the frequent activation messages stay local) and the once-per-step gradient allreduce
// crosses replicas. Each replica is an mpi-pipeline over its own communicator and runs its
// contiguous shard of every global batch; each stage sums its gradient slice with the same
// stage of the other replicas before the SGD step. The trainer is plugins/common/pipeline.hpp
// (PipelineTrainer::replicate), the stage maths plugins/common/cpu_stage.hpp, shared with
// mpi-pipeline; docs/pipeline.md describes the grid.
#include <memory>
#include <stdexcept>
#include <string>
#include <vector>

#include "../common/cpu_stage.hpp"
#include "nnpar/comm_mpi.hpp"

namespace {

using namespace nnpar;

struct Grid {
  int data = 1, stages = 1;
};

// From the options and the world size alone, so every rank reaches the same verdict before
// any message: a grid that does not fit fails on every rank with the same message.
Grid resolve_grid(const StrategyOptions& o, int world) {
  const int data = int(o.get_int("data")), stages_option = int(o.get_int("stages"));
  const std::string given = "options data = " + std::to_string(data) + " and stages = " +
                            (stages_option == 0 ? std::string("0 (world / data)") : std::to_string(stages_option));
  if (stages_option == 0 && world % data != 0)
    throw std::invalid_argument(given + ": the world of " + std::to_string(world) +
                                " MPI ranks does not split into " + std::to_string(data) +
                                " replicas (data x stages must equal the world size; rank = replica * stages + stage)");
  const int stages = stages_option == 0 ? world / data : stages_option;
  if (data * stages != world)
    throw std::invalid_argument(given + ": a grid of " + std::to_string(data) + " x " + std::to_string(stages) + " = " +
                                std::to_string(data * stages) + " ranks, but the world has " + std::to_string(world) +
                                " MPI ranks (data x stages must equal the world size)");
  return {data, stages};
}

class MpiHybridStrategy final : public Strategy {
 public:
  void setup(const StrategyContext& context) override {
    auto world = mpi::world();
    grid_ = resolve_grid(*context.options, world->size());
    const int replica = world->rank() / grid_.stages, stage = world->rank() % grid_.stages;
    StagePlan plan;
    try {
      plan = make_stage_plan(context, stage, grid_.stages);
    } catch (const std::invalid_argument& e) {
      // The pipeline's messages count stages in MPI ranks; here they are world / data.
      throw std::invalid_argument(std::string(e.what()) + " [mpi-hybrid: " + std::to_string(grid_.data) + " x " +
                                  std::to_string(grid_.stages) + " grid, one stage per rank of each replica]");
    }
    // A replica sees at most its shard of a batch, so its micro-batches are that much smaller.
    const int shard = int(shard_range(std::size_t(context.train->batch_size), 0, grid_.data).size());
    plan.max_micro_rows = std::max(1, (shard + plan.micro_batches - 1) / plan.micro_batches);

    // Both splits are collective over the world, in the same order on every rank.
    auto pipeline = world->split(replica, stage);  // one replica's stages, ordered by stage
    auto data = world->split(stage, replica);      // one stage of every replica, ordered by replica
    auto engine = std::make_unique<CpuStage>(context, plan);
    trainer_ = std::make_unique<PipelineTrainer>(context, std::move(plan), std::move(pipeline), std::move(engine));
    overlap_ = context.options->get_bool("overlap");
    trainer_->replicate(std::move(data), overlap_);
  }
  EpochReport train_epoch(int epoch) override { return trainer_->train_epoch(epoch); }
  void get_parameters(std::span<float> out) override { trainer_->get_parameters(out); }
  std::string device_description() const override {
    const StagePlan& p = trainer_->plan();
    return "CPU, " + std::to_string(grid_.data * grid_.stages) + " MPI ranks (hybrid " + std::to_string(grid_.data) +
           " data x " + std::to_string(grid_.stages) + " stages, pipeline " + partition_text(p.partition) +
           " layers, " + p.schedule_name + ", " + std::to_string(p.micro_batches) +
           (p.micro_batches == 1 ? " micro-batch, " : " micro-batches, ") +
           (overlap_ ? "per-layer gradient allreduce)" : "one gradient allreduce per stage)");
  }

 private:
  Grid grid_;
  bool overlap_ = true;
  std::unique_ptr<PipelineTrainer> trainer_;
};

StrategyInfo mpi_hybrid_info() {
  StrategyInfo info;
  info.name = "mpi-hybrid";
  info.version = "1.0";
  info.description = "data x pipeline parallel over MPI ranks on CPUs: `data` pipeline replicas of world/data stages";
  info.parity = ParityClass::exact;
  info.needs_mpi = true;
  info.min_world_size = 1;
  info.max_world_size = 0;
  info.options = {
      {"data", OptionType::integer, std::int64_t{1},
       "data-parallel replicas of the pipeline (world size = data x stages)", 1, 1 << 20, {}},
      {"stages", OptionType::integer, std::int64_t{0},
       "pipeline stages per replica; 0 = world size / data", 0, 1 << 20, {}},
      {"overlap", OptionType::boolean, true,
       "start each layer's gradient allreduce during the step's last backward (else one per stage after it)",
       -1e300, 1e300, {}},
  };
  for (OptionSpec& o : pipeline_options()) info.options.push_back(std::move(o));
  return info;
}

}  // namespace

NNPAR_REGISTER_STRATEGY(MpiHybridStrategy, mpi_hybrid_info)
