// Tensor (intra-layer) parallelism over NCCL, one process per GPU: the GPU engine of
// plugins/mpi-tensor (same split, same maths, same comments where they still apply). Every
// Linear layer's weight is split by output neurons across the ranks ("column parallel"), so
// each rank stores and updates 1/P of every layer on its GPU. All ranks see the whole batch.
//
//   forward   Y_r = X W_r^T + b_r (the rank's columns), sigmoid fused, then an all-gather of
//             the columns gives every rank the full activation for the next layer;
//   loss      softmax cross-entropy on the gathered logits, redundantly on every rank;
//   backward  dW_r = G_r^T X and db_r from the rank's columns G_r of the output gradient;
//             dX = sum_r G_r W_r is a sum over ranks: an allreduce.
//
// The all-gather is an allreduce of a zero-filled buffer in which each rank wrote its own
// columns: adding zeros is exact, so the gather itself changes no bit (the GEMM may still
// split its K sums differently, since split-K is planned per shape and a shard is narrower).
// The input gradient carries the sigmoid derivative fused: it is elementwise, so applying it
// to each rank's partial product before the sum gives the same result up to rounding. Only
// summation order differs from serial: exact parity class.
//
// Ordering, all on one compute stream (the host never blocks inside a step): each layer's
// weight gradient has the SGD update fused, and it is queued after that layer's input
// gradient, the last reader of the old W_r. The input gradient's allreduce runs on the
// communicator's stream while the weight gradient runs on the compute stream; the next layer
// waits for the allreduce on the GPU (CommRequest::wait). Phase times are therefore host-side
// queueing times; the epoch's wall time, which the harness measures, is the real one.
//
// Plain launches per step (no CUDA graphs yet): ~6 launches and 2 collectives per layer.
#include <algorithm>
#include <cstdint>
#include <memory>
#include <set>
#include <stdexcept>
#include <string>
#include <vector>

#include <cuda_runtime_api.h>

#include "nnpar/comm_mpi.hpp"
#include "nnpar/comm_nccl.hpp"
#include "../common/fused_sgd.hpp"
#include "nnpar/cuda_kernels.hpp"
#include "nnpar/strategy.hpp"

namespace {

using namespace nnpar;
namespace gpu = nnpar::cuda;

void check(cudaError_t status, const char* what) {
  if (status != cudaSuccess) throw std::runtime_error(std::string("nccl-tensor: ") + what + ": " + cudaGetErrorString(status));
}

struct Stats {
  double loss_sum;
  unsigned long long correct;
};

struct LayerShard {
  int in = 0, out = 0;   // the full layer
  Range cols;            // this rank's output neurons
  int width() const { return int(cols.size()); }
  std::size_t offset = 0;  // of this rank's weight rows in the local flat buffers
  float* local_out = nullptr;   // [batch, width]: this rank's columns before the all-gather
  float* grad_local = nullptr;  // [batch, width]: this rank's columns of the output gradient
  gpu::GemmScratch fwd, dgrad;
};

class NcclTensorStrategy final : public Strategy {
 public:
  ~NcclTensorStrategy() override {
    if (stream_ != nullptr) cudaStreamSynchronize(stream_);
    comm_.reset();  // before the stream it orders itself after
    for (void* p : allocations_) cudaFree(p);
    if (stream_ != nullptr) cudaStreamDestroy(stream_);
  }

  void setup(const StrategyContext& context) override {
    int devices = 0;
    if (cudaGetDeviceCount(&devices) != cudaSuccess || devices == 0)
      throw std::runtime_error("nccl-tensor: no CUDA device available");
    context_ = context;
    mpi::initialize();
    const int device = nccl::local_rank();
    comm_ = nccl::world(device);  // also makes `device` current
    check(cudaStreamCreateWithFlags(&stream_, cudaStreamNonBlocking), "stream");
    comm_->set_compute_stream(stream_);
    host_comm_ = mpi::world();
    cudaDeviceProp props{};
    check(cudaGetDeviceProperties(&props, device), "properties");
    ranks_ = comm_->size();
    device_ = std::string(props.name) + " x" + std::to_string(ranks_);

    const ModelSpec& spec = *context.model;
    const Dataset& data = *context.train_data;
    const int rank = comm_->rank();
    const int batch = context.train->batch_size;
    const int L = spec.linear_count();

    pixels_ = alloc<std::uint8_t>(data.pixels.size(), "dataset");
    labels_ = alloc<std::int32_t>(data.labels.size(), "labels");
    order_ = alloc<std::uint32_t>(data.count, "order");
    check(cudaMemcpy(pixels_, data.pixels.data(), data.pixels.size(), cudaMemcpyHostToDevice), "upload dataset");
    check(cudaMemcpy(labels_, data.labels.data(), data.labels.size() * 4, cudaMemcpyHostToDevice), "upload labels");

    // Every batch size a step can have: full batches and the epoch's last one (split-K
    // scratch is sized per shape).
    std::set<int> rows{batch};
    if (data.count % std::size_t(batch) != 0) rows.insert(int(data.count % std::size_t(batch)));

    std::size_t local = 0;
    for (int i = 0; i < L; ++i) {
      LayerShard s;
      s.in = spec.layer_sizes[i];
      s.out = spec.layer_sizes[i + 1];
      s.cols = shard_range(std::size_t(s.out), rank, ranks_);
      s.offset = local;
      local += std::size_t(s.width()) * (s.in + 1);
      layers_.push_back(s);
    }
    local_count_ = local;
    params_ = alloc<float>(local, "parameters");
    grads_ = alloc<float>(local, "gradients");
    if (context.train->sgd.momentum != 0.0f) velocity_ = alloc<float>(local, "velocity");
    // This rank's slices of the initial weights: rows cols of each W, entries cols of each b.
    std::vector<float> host(local);
    for (int i = 0; i < L; ++i) {
      const LayerShard& s = layers_[i];
      const float* W = context.initial_parameters.data() + parameter_offset(spec, i);
      const float* b = W + std::size_t(s.out) * s.in;
      std::copy(W + s.cols.begin * s.in, W + s.cols.end * s.in, host.data() + s.offset);
      std::copy(b + s.cols.begin, b + s.cols.end, host.data() + s.offset + std::size_t(s.width()) * s.in);
    }
    check(cudaMemcpy(params_, host.data(), local * sizeof(float), cudaMemcpyHostToDevice), "upload parameters");

    // acts_[i]: the full input of Linear i ([batch, in_i]); acts_[L]: the full logits.
    // grad_full_[i]: the full output gradient of Linear i ([batch, out_i]).
    for (int i = 0; i <= L; ++i) acts_.push_back(alloc<float>(std::size_t(batch) * spec.layer_sizes[i], "activations"));
    for (int i = 0; i < L; ++i)
      grad_full_.push_back(alloc<float>(std::size_t(batch) * spec.layer_sizes[i + 1], "gradients"));
    for (int i = 0; i < L; ++i) {
      LayerShard& s = layers_[i];
      s.local_out = alloc<float>(std::size_t(batch) * s.width(), "local output");
      s.grad_local = alloc<float>(std::size_t(batch) * s.width(), "local gradient");
      s.fwd = scratch_for(gpu::GemmForm::forward, rows, s.width(), s.in);
      if (i > 0) s.dgrad = scratch_for(gpu::GemmForm::input_grad, rows, s.width(), s.in);
    }
    stats_ = alloc<Stats>(1, "stats");
    // The multi-block softmax (a warp per row), as cuda and nccl-data run it; without scratch
    // it is one block looping over the batch's rows.
    if (const std::size_t n = gpu::softmax_xent_scratch(batch, spec.layer_sizes.back()); n > 0)
      softmax_scratch_ = alloc<double>(n, "softmax scratch");
    // The first epoch on 2 H200s ran ~0.93 s longer than the next ones (single-GPU cuda:
    // +16 ms), which we put down to NCCL connecting its peers lazily at the first collectives;
    // that would land in timed training. One allreduce of every size a full step uses, on
    // buffers that every step overwrites before reading, moves it into setup (untimed).
    if (ranks_ > 1)
      for (int i = 0; i < L; ++i) {
        comm_->allreduce(acts_[i + 1], std::size_t(batch) * layers_[i].out, DataType::f32, ReduceOp::sum);
        if (i > 0) comm_->allreduce(grad_full_[i - 1], std::size_t(batch) * layers_[i].in, DataType::f32, ReduceOp::sum);
      }
    check(cudaDeviceSynchronize(), "setup");
  }

  EpochReport train_epoch(int epoch) override {
    const TrainSettings& train = *context_.train;
    const Dataset& data = *context_.train_data;
    const auto order = epoch_order(data.count, train.seed, epoch, train.shuffle);
    const int L = int(layers_.size());
    EpochReport report;
    PhaseClock clock;
    // Stream-ordered behind the previous epoch's readers; from pageable memory the copy has
    // consumed `order` when it returns.
    check(cudaMemcpyAsync(order_, order.data(), order.size() * sizeof(std::uint32_t), cudaMemcpyHostToDevice, stream_),
          "upload order");
    clock.lap(report.phases.data);
    const SgdSettings& sgd = train.sgd;
    for (std::size_t begin = 0; begin < order.size(); begin += train.batch_size) {
      const int rows = int(std::min<std::size_t>(train.batch_size, order.size() - begin));
      if (train.drop_last && rows < train.batch_size) break;
      const gpu::RowIndex index{order_ + begin, nullptr, rows};

      for (int i = 0; i < L; ++i) {
        LayerShard& s = layers_[i];
        const bool sigmoid = i + 1 < L;
        // One rank owns every column: its output is already the full activation.
        float* y = ranks_ == 1 ? acts_[i + 1] : s.local_out;
        if (s.width() > 0) {
          if (i == 0)
            gpu::linear_forward_gather(rows, s.width(), s.in, data_pixels(), data.pixel_scale, index, acts_[0],
                                       weight(s), bias(s), sigmoid, y, s.fwd, stream_);
          else
            gpu::linear_forward(rows, s.width(), s.in, acts_[i], weight(s), bias(s), sigmoid, y, s.fwd, stream_);
        }
        clock.lap(report.phases.forward);
        if (ranks_ > 1) all_gather_columns(rows, s, s.local_out, acts_[i + 1]);
        clock.lap(report.phases.communication);
      }
      const int classes = layers_.back().out;
      gpu::softmax_xent(rows, classes, acts_[L], labels_, index, 1.0f / float(rows), nullptr, grad_full_[L - 1],
                        &stats_->loss_sum, &stats_->correct, false, stream_, softmax_scratch_);
      clock.lap(report.phases.forward);

      for (int i = L - 1; i >= 0; --i) {
        LayerShard& s = layers_[i];
        // This rank's columns of the output gradient, contiguous for the GEMMs.
        const float* G = grad_full_[i];
        if (ranks_ > 1) {
          if (s.width() > 0)
            check(cudaMemcpy2DAsync(s.grad_local, std::size_t(s.width()) * 4, grad_full_[i] + s.cols.begin,
                                    std::size_t(s.out) * 4, std::size_t(s.width()) * 4, rows,
                                    cudaMemcpyDeviceToDevice, stream_),
                  "extract gradient columns");
          G = s.grad_local;
        }
        std::unique_ptr<CommRequest> pending;
        if (i > 0) {
          // dX partial = (G_r W_r) * H(1-H) over this rank's output neurons; the sum over
          // ranks is dX. It reads the old W_r, so it is queued before the fused update.
          float* dX = grad_full_[i - 1];
          if (s.width() > 0)
            gpu::linear_input_grad(rows, s.width(), s.in, G, weight(s), acts_[i], dX, s.dgrad, stream_);
          else
            check(cudaMemsetAsync(dX, 0, std::size_t(rows) * s.in * sizeof(float), stream_), "zero input gradient");
          clock.lap(report.phases.backward);
          if (ranks_ > 1) pending = comm_->allreduce_async(dX, std::size_t(rows) * s.in, DataType::f32, ReduceOp::sum);
          clock.lap(report.phases.communication);
        }
        // Runs on the compute stream while the allreduce above runs on the communicator's.
        if (s.width() > 0) {
          const gpu::FusedSgd update =
              fused_sgd(sgd, weight(s), s.width(), s.in, velocity_ != nullptr ? velocity_ + s.offset : nullptr);
          float* dW = grads_ + s.offset;
          gpu::linear_weight_grad(rows, s.width(), s.in, G, acts_[i], false, dW, dW + std::size_t(s.width()) * s.in,
                                  update, stream_);
        }
        clock.lap(report.phases.update);
        if (pending) pending->wait();  // the next layer's extraction reads the sum
      }
      report.samples += rows;
      report.steps += 1;
    }
    // Metrics are identical on every rank (each computed the full loss): rank 0's are the world's.
    Stats stats{};
    check(cudaMemcpyAsync(&stats, stats_, sizeof stats, cudaMemcpyDeviceToHost, stream_), "read metrics");
    check(cudaMemsetAsync(stats_, 0, sizeof(Stats), stream_), "reset metrics");
    comm_->synchronize(stream_, "end of epoch");  // polled: a lost peer must end the run
    clock.lap(report.phases.idle);  // waiting for the queued GPU work
    report.loss_sum = stats.loss_sum;
    report.correct = std::size_t(stats.correct);
    return report;
  }

  // Every rank writes its rows into a zeroed full vector; the sum over ranks is the model.
  void get_parameters(std::span<float> out) override {
    const ModelSpec& spec = *context_.model;
    comm_->synchronize(stream_, "read parameters");
    std::vector<float> local(local_count_);
    check(cudaMemcpy(local.data(), params_, local_count_ * sizeof(float), cudaMemcpyDeviceToHost), "read parameters");
    std::vector<float> full(parameter_count(spec), 0.0f);
    for (int i = 0; i < spec.linear_count(); ++i) {
      const LayerShard& s = layers_[i];
      float* W = full.data() + parameter_offset(spec, i);
      float* b = W + std::size_t(s.out) * s.in;
      std::copy_n(local.data() + s.offset, std::size_t(s.width()) * s.in, W + s.cols.begin * s.in);
      std::copy_n(local.data() + s.offset + std::size_t(s.width()) * s.in, s.width(), b + s.cols.begin);
    }
    if (ranks_ > 1) host_comm_->allreduce(full.data(), full.size(), ReduceOp::sum);
    std::copy_n(full.begin(), std::min(full.size(), out.size()), out.begin());
  }

  std::string device_description() const override {
    return device_ + " (NCCL, tensor parallel, column split)";
  }

 private:
  // full[rows, s.out] = this rank's local[rows, s.width()] in its columns, the others' in theirs.
  void all_gather_columns(int rows, const LayerShard& s, const float* local, float* full) {
    check(cudaMemsetAsync(full, 0, std::size_t(rows) * s.out * sizeof(float), stream_), "zero activations");
    if (s.width() > 0)
      check(cudaMemcpy2DAsync(full + s.cols.begin, std::size_t(s.out) * 4, local, std::size_t(s.width()) * 4,
                              std::size_t(s.width()) * 4, rows, cudaMemcpyDeviceToDevice, stream_),
            "scatter columns");
    comm_->allreduce_async(full, std::size_t(rows) * s.out, DataType::f32, ReduceOp::sum)->wait();
  }

  template <class T>
  T* alloc(std::size_t count, const char* what) {
    void* p = nullptr;
    check(cudaMalloc(&p, std::max<std::size_t>(count, 1) * sizeof(T)), what);
    allocations_.push_back(p);
    check(cudaMemset(p, 0, std::max<std::size_t>(count, 1) * sizeof(T)), what);
    return static_cast<T*>(p);
  }

  gpu::GemmScratch scratch_for(gpu::GemmForm form, const std::set<int>& rows, int out, int in) {
    if (out == 0) return {};
    std::size_t floats = 0, counters = 0;
    gpu::gemm_scratch_size(form, rows, out, in, &floats, &counters);
    if (floats == 0) return {};
    return {alloc<float>(floats, "gemm scratch"), alloc<unsigned>(counters, "gemm counters")};
  }

  const std::uint8_t* data_pixels() const { return pixels_; }
  float* weight(const LayerShard& s) const { return params_ + s.offset; }
  float* bias(const LayerShard& s) const { return params_ + s.offset + std::size_t(s.width()) * s.in; }

  StrategyContext context_;
  std::unique_ptr<nccl::NcclCommunicator> comm_;
  std::unique_ptr<Communicator> host_comm_;
  cudaStream_t stream_ = nullptr;
  int ranks_ = 1;
  std::string device_;
  std::vector<LayerShard> layers_;
  std::size_t local_count_ = 0;
  std::uint8_t* pixels_ = nullptr;
  std::int32_t* labels_ = nullptr;
  std::uint32_t* order_ = nullptr;
  float *params_ = nullptr, *grads_ = nullptr, *velocity_ = nullptr;
  std::vector<float*> acts_, grad_full_;
  Stats* stats_ = nullptr;
  double* softmax_scratch_ = nullptr;  // the multi-block softmax's per-block sums
  std::vector<void*> allocations_;
};

StrategyInfo nccl_tensor_info() {
  StrategyInfo info;
  info.name = "nccl-tensor";
  info.version = "1.1";  // 1.1: the multi-block softmax
  info.description = "tensor parallel over GPUs (one rank per GPU) with NCCL: every layer split by output neurons";
  info.parity = ParityClass::exact;
  info.uses_gpu = true;
  info.needs_mpi = true;
  info.min_world_size = 1;
  info.max_world_size = 0;
  return info;
}

}  // namespace

NNPAR_REGISTER_STRATEGY(NcclTensorStrategy, nccl_tensor_info)
