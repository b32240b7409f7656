// Hybrid data x pipeline parallelism on GPUs: mpi-hybrid's grid (plugins/common/hybrid_grid.hpp)
// with nccl-pipeline's stage engine, one rank per GPU. Each replica is an nccl-pipeline over
// its own communicators (four channels, for the reason nccl-pipeline explains); each stage
// sums its gradient slice over the replicas with an NCCL allreduce on a third communicator
// before the SGD step. Every communicator is a split of the world, in the same order on every
// rank (splits are collective), and is ordered after this rank's one compute stream.
#include <memory>
#include <stdexcept>
#include <string>
#include <vector>

#include <cuda_runtime_api.h>

#include "../common/gpu_stage.hpp"
#include "../common/hybrid_grid.hpp"
#include "nnpar/comm_mpi.hpp"
#include "nnpar/comm_nccl.hpp"

namespace {

using namespace nnpar;

void check(cudaError_t status, const char* what) {
  if (status != cudaSuccess) throw std::runtime_error(std::string("nccl-hybrid: ") + what + ": " + cudaGetErrorString(status));
}

class NcclHybridStrategy final : public Strategy {
 public:
  ~NcclHybridStrategy() override {
    trainer_.reset();
    world_.reset();
    if (stream_ != nullptr) cudaStreamDestroy(stream_);
  }

  void setup(const StrategyContext& context) override {
    int devices = 0;
    if (cudaGetDeviceCount(&devices) != cudaSuccess || devices == 0)
      throw std::runtime_error("nccl-hybrid: no CUDA device available");
    mpi::initialize();
    // Validate the grid before any NCCL setup, so a bad grid fails at once on every rank.
    grid_ = resolve_hybrid_grid(*context.options, mpi::world_size(), "ranks (GPUs)");
    const int replica = grid_.replica_of(mpi::world_rank()), stage = grid_.stage_of(mpi::world_rank());
    StagePlan plan = make_hybrid_stage_plan(context, grid_, stage, "nccl-hybrid");

    const int device = nccl::local_rank();
    world_ = nccl::world(device);  // also makes `device` current
    check(cudaSetDevice(device), "cudaSetDevice");
    check(cudaStreamCreateWithFlags(&stream_, cudaStreamNonBlocking), "stream");
    world_->set_compute_stream(stream_);  // inherited by every split below
    auto pipeline = world_->split(replica, stage);
    auto channels = PipelineTrainer::make_channels(grid_.stages, [&] { return world_->split(replica, stage); });
    auto data = world_->split(stage, replica);

    auto host_world = mpi::world();
    host_pipeline_ = host_world->split(replica, stage);
    host_data_ = host_world->split(stage, replica);

    cudaDeviceProp props{};
    check(cudaGetDeviceProperties(&props, device), "properties");
    device_name_ = props.name;
    auto engine = std::make_unique<GpuStage>(context, plan, stream_);
    trainer_ = std::make_unique<PipelineTrainer>(context, std::move(plan), std::move(pipeline), std::move(engine));
    trainer_->separate_channels(std::move(channels));
    overlap_ = context.options->get_bool("overlap");
    trainer_->replicate(std::move(data), overlap_);
    trainer_->host_reduce_ = [this](double* v, std::size_t n) { host_pipeline_->allreduce(v, n); };
    trainer_->host_reduce_data_ = [this](double* v, std::size_t n) { host_data_->allreduce(v, n); };
  }
  EpochReport train_epoch(int epoch) override { return trainer_->train_epoch(epoch); }
  void get_parameters(std::span<float> out) override { trainer_->get_parameters(out); }
  std::string device_description() const override {
    return device_name_ + " x" + std::to_string(grid_.data * grid_.stages) + " (NCCL " +
           hybrid_description(grid_, trainer_->plan()) + ", " +
           (overlap_ ? "per-layer gradient allreduce)" : "one gradient allreduce per stage)");
  }

 private:
  HybridGrid grid_;
  bool overlap_ = true;
  cudaStream_t stream_ = nullptr;
  std::unique_ptr<nccl::NcclCommunicator> world_;
  std::unique_ptr<Communicator> host_pipeline_, host_data_;
  std::unique_ptr<PipelineTrainer> trainer_;
  std::string device_name_;
};

StrategyInfo nccl_hybrid_info() {
  StrategyInfo info;
  info.name = "nccl-hybrid";
  info.version = "1.2";  // 1.2: the last stage on the multi-block softmax
  info.description = "data x pipeline parallel over GPUs with NCCL: `data` pipeline replicas of world/data stages, one rank per GPU";
  info.parity = ParityClass::exact;
  info.uses_gpu = true;
  info.needs_mpi = true;
  info.min_world_size = 1;
  info.max_world_size = 0;
  info.options = hybrid_options();
  return info;
}

}  // namespace

NNPAR_REGISTER_STRATEGY(NcclHybridStrategy, nccl_hybrid_info)
