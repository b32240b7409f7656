// Hybrid data x pipeline parallelism over MPI (issue 7): the world is a grid of `data`
// replicas x `stages` pipeline stages (plugins/common/hybrid_grid.hpp). Each replica is an
// mpi-pipeline over its own communicator and runs its contiguous shard of every global batch;
// each stage sums its gradient slice with the same stage of the other replicas before the SGD
// step. The trainer is plugins/common/pipeline.hpp (PipelineTrainer::replicate), the stage
// maths plugins/common/cpu_stage.hpp, shared with mpi-pipeline; docs/pipeline.md describes
// the grid.
#include <memory>
#include <string>

#include "../common/cpu_stage.hpp"
#include "../common/hybrid_grid.hpp"
#include "nnpar/comm_mpi.hpp"

namespace {

using namespace nnpar;

class MpiHybridStrategy final : public Strategy {
 public:
  void setup(const StrategyContext& context) override {
    auto world = mpi::world();
    grid_ = resolve_hybrid_grid(*context.options, world->size(), "MPI ranks");
    const int replica = grid_.replica_of(world->rank()), stage = grid_.stage_of(world->rank());
    StagePlan plan = make_hybrid_stage_plan(context, grid_, stage, "mpi-hybrid");
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
    return "CPU, " + std::to_string(grid_.data * grid_.stages) + " MPI ranks (" +
           hybrid_description(grid_, trainer_->plan()) + ", " +
           (overlap_ ? "per-layer gradient allreduce)" : "one gradient allreduce per stage)");
  }

 private:
  HybridGrid grid_;
  bool overlap_ = true;
  std::unique_ptr<PipelineTrainer> trainer_;
};

StrategyInfo mpi_hybrid_info() {
  StrategyInfo info;
  info.name = "mpi-hybrid";
  info.version = "1.1";
  info.description = "data x pipeline parallel over MPI ranks on CPUs: `data` pipeline replicas of world/data stages";
  info.parity = ParityClass::exact;
  info.needs_mpi = true;
  info.min_world_size = 1;
  info.max_world_size = 0;
  info.options = hybrid_options();
  return info;
}

}  // namespace

NNPAR_REGISTER_STRATEGY(MpiHybridStrategy, mpi_hybrid_info)
