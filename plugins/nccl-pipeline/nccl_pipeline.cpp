// Pipeline model parallelism on GPUs: one process (stage) per GPU, each holding only its own
// Linear layers and running our CUDA kernels; activations and activation gradients move
// between neighbouring GPUs with NCCL send/recv. The algorithm (partition, schedules,
// micro-batches) is plugins/common/pipeline.hpp, unchanged from mpi-pipeline; the stage engine
// is plugins/common/gpu_stage.hpp. Plain launches (no CUDA graphs yet); the host runs at most
// one step ahead of the GPU (GpuStage::end_step).
//
// Why several NCCL communicators. All operations of one NCCL communicator run in order on its
// one stream, and a recv holds that stream until the peer's matching send runs (MPI has no
// such constraint: a posted irecv holds back no later send). With one communicator, stage s
// posts the receive of micro-batch m's output gradient right after F_m; under 1F1B (and under
// GPipe from 2 stages with several micro-batches) the next stage needs later activations
// before it can run B_m, but those sends are queued behind the receive that waits for B_m: a
// cycle. Splitting by direction only (one communicator for activations, one for gradients) is
// not enough either: a middle stage's activation stream then holds receives from s-1 and sends
// to s+1, its gradient stream receives from s+1 and sends to s-1, and 1F1B deadlocks from 4
// stages and 5 micro-batches (stage 1's gradient send 0 to stage 0 queues behind its gradient
// receives 1, 2 from stage 2; stage 2 needs activation 3 from stage 1, which queues behind the
// receive of input 4, which stage 0 sends only after B_0, i.e. after that gradient 0).
//
// So every stage's four kinds of message get their own queue: PipelineTrainer::separate_channels
// puts activations and gradients on different communicators AND alternates communicators
// between even and odd links (s, s+1). A stage's two links differ in parity, so its activation
// receives, activation sends, gradient receives and gradient sends are four streams, each
// holding one peer's messages of one kind in ascending micro-batch order. Why that cannot
// deadlock, for GPipe and 1F1B alike:
//  1. Matching: both ends of a link post a channel's messages in ascending micro-batch order
//     (forwards and backwards each run in ascending m in both schedules, receives are posted in
//     ascending m), so the k-th send meets the k-th receive; NCCL requires that, MPI's tags did
//     not need it.
//  2. No new waits: a queue now holds exactly the sequence of messages that MPI would match in
//     order on that (peer, tag) anyway, so its in-order execution forbids nothing that the
//     schedule does not already forbid; the other cross-queue edges (an NCCL op waits for the
//     compute queued before it; compute waits for a request only where the trainer calls
//     wait()) are the host program order of mpi-pipeline, which completes.
// Checked by simulating the trainer's exact posting sequence on per-rank in-order queues
// (compute plus one per channel) with rendezvous send/recv (a send completes only together
// with its receive): 4 channels drain for GPipe and 1F1B, 1..8 stages, 1..16 micro-batches;
// one channel deadlocks 80 of 108 (schedule, 1..6 stages, 1..9 micro-batches) cases, two
// channels (by direction) 15 (1F1B, 4+ stages, 5+ micro-batches). With 2 stages there is one
// link, so 2 communicators (activations, gradients) are all it takes.
#include <memory>
#include <stdexcept>
#include <string>
#include <vector>

#include <cuda_runtime_api.h>

#include "../common/gpu_stage.hpp"
#include "nnpar/comm_mpi.hpp"
#include "nnpar/comm_nccl.hpp"

namespace {

using namespace nnpar;

void check(cudaError_t status, const char* what) {
  if (status != cudaSuccess) throw std::runtime_error(std::string("nccl-pipeline: ") + what + ": " + cudaGetErrorString(status));
}

class NcclPipelineStrategy final : public Strategy {
 public:
  ~NcclPipelineStrategy() override {
    // The communicators and the engine synchronise with the compute stream as they go.
    trainer_.reset();
    if (stream_ != nullptr) cudaStreamDestroy(stream_);
  }

  void setup(const StrategyContext& context) override {
    int devices = 0;
    if (cudaGetDeviceCount(&devices) != cudaSuccess || devices == 0)
      throw std::runtime_error("nccl-pipeline: no CUDA device available");
    mpi::initialize();
    const int device = nccl::local_rank();
    // world() selects the GPU: the compute stream must be created after it, on that GPU (a
    // stream of another device makes every event record fail with "invalid resource handle").
    auto forward = nccl::world(device);
    check(cudaSetDevice(device), "cudaSetDevice");
    check(cudaStreamCreateWithFlags(&stream_, cudaStreamNonBlocking), "stream");
    forward->set_compute_stream(stream_);
    // Channel 0 (activations over even links) is the main communicator. The others are
    // independent communicators over the same ranks rather than splits: the same thing here,
    // and world() returns the NcclCommunicator that can be ordered after the compute stream.
    auto channels = PipelineTrainer::make_channels(forward->size(), [&]() -> std::unique_ptr<Communicator> {
      auto comm = nccl::world(device);
      comm->set_compute_stream(stream_);
      return comm;
    });
    // Every rank computes (and validates) the same plan before any message is exchanged.
    StagePlan plan = make_stage_plan(context, forward->rank(), forward->size());
    cudaDeviceProp props{};
    check(cudaGetDeviceProperties(&props, device), "properties");
    device_name_ = props.name;
    auto engine = std::make_unique<GpuStage>(context, plan, stream_);
    trainer_ = std::make_unique<PipelineTrainer>(context, std::move(plan), std::move(forward), std::move(engine));
    trainer_->separate_channels(std::move(channels));
    host_comm_ = mpi::world();
    trainer_->host_reduce_ = [this](double* values, std::size_t n) { host_comm_->allreduce(values, n); };
  }
  EpochReport train_epoch(int epoch) override { return trainer_->train_epoch(epoch); }
  void get_parameters(std::span<float> out) override { trainer_->get_parameters(out); }
  std::string device_description() const override {
    const StagePlan& p = trainer_->plan();
    return device_name_ + " x" + std::to_string(p.stages) + " (NCCL pipeline " + partition_text(p.partition) +
           " layers, " + p.schedule_name + ", " + std::to_string(p.micro_batches) +
           (p.micro_batches == 1 ? " micro-batch)" : " micro-batches)");
  }

 private:
  cudaStream_t stream_ = nullptr;
  std::unique_ptr<PipelineTrainer> trainer_;
  std::unique_ptr<Communicator> host_comm_;
  std::string device_name_;
};

StrategyInfo nccl_pipeline_info() {
  StrategyInfo info;
  info.name = "nccl-pipeline";
  info.version = "1.2";  // 1.2: the last stage on the multi-block softmax
  info.description = "pipeline model parallel over GPUs with NCCL: one stage per GPU (rank), GPipe or 1F1B";
  info.parity = ParityClass::exact;
  info.uses_gpu = true;
  info.needs_mpi = true;
  info.min_world_size = 1;
  info.max_world_size = 0;
  info.options = pipeline_options();
  return info;
}

}  // namespace

NNPAR_REGISTER_STRATEGY(NcclPipelineStrategy, nccl_pipeline_info)
