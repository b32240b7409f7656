// Pipeline model parallelism over MPI: one process per stage, each holding only its own
// Linear layers and running the CPU kernels. The algorithm (partition, schedules,
// communication) is plugins/common/pipeline.hpp, the CPU stage engine plugins/common/cpu_stage.hpp.
#include <algorithm>
#include <memory>
#include <vector>

#include "../common/cpu_stage.hpp"
#include "nnpar/comm_mpi.hpp"

namespace {

using namespace nnpar;

class MpiPipelineStrategy final : public Strategy {
 public:
  void setup(const StrategyContext& context) override {
    auto comm = mpi::world();
    // Every rank computes (and validates) the same plan before any message is exchanged:
    // a bad partition fails on all ranks alike instead of leaving peers waiting.
    StagePlan plan = make_stage_plan(context, comm->rank(), comm->size());
    auto engine = std::make_unique<CpuStage>(context, plan);
    trainer_ = std::make_unique<PipelineTrainer>(context, std::move(plan), std::move(comm), std::move(engine));
  }
  EpochReport train_epoch(int epoch) override { return trainer_->train_epoch(epoch); }
  void get_parameters(std::span<float> out) override { trainer_->get_parameters(out); }
  std::string device_description() const override {
    const StagePlan& p = trainer_->plan();
    return "CPU, " + std::to_string(p.stages) + (p.stages == 1 ? " MPI rank" : " MPI ranks") + " (pipeline " +
           partition_text(p.partition) + " layers, " + p.schedule_name + ", " + std::to_string(p.micro_batches) +
           (p.micro_batches == 1 ? " micro-batch)" : " micro-batches)");
  }

 private:
  std::unique_ptr<PipelineTrainer> trainer_;
};

StrategyInfo mpi_pipeline_info() {
  StrategyInfo info;
  info.name = "mpi-pipeline";
  info.version = "1.1";
  info.description = "pipeline model parallel over MPI ranks on CPUs: one stage per rank, GPipe or 1F1B";
  info.parity = ParityClass::exact;
  info.needs_mpi = true;
  info.min_world_size = 1;
  info.max_world_size = 0;
  info.options = pipeline_options();
  return info;
}

}  // namespace

NNPAR_REGISTER_STRATEGY(MpiPipelineStrategy, mpi_pipeline_info)
