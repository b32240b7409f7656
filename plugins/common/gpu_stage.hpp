// The GPU StageEngine: the maths of one pipeline stage with the CUDA kernels, on one
// compute stream, for a device communicator (NCCL) ordered after that stream. Everything is
// queued asynchronously: the host never waits for the GPU inside an epoch, so it can post a
// whole step's kernels and transfers and let the streams' events order them.
//
// Differences from CpuStage, all inside the engine (stages only ever talk to the same engine):
// - The message between stages is the gradient with respect to the previous stage's
//   PRE-activation output: the sending stage fuses that sigmoid's derivative into its input
//   gradient (linear_input_grad with H = its input, which is the previous stage's sigmoid
//   output), exactly as the single-GPU cuda strategy does between layers. output_grad() is
//   therefore dL/dz, not dL/da.
// - The last stage computes the loss in backward, not forward: softmax_xent is one fused
//   kernel for loss, metrics and dlogits and needs the loss scale, which only backward gets.
//   On the last stage every forward is followed at once by its backward (warm-up 0 in both
//   schedules), and the metrics are read only at the end of the epoch, so nothing observes
//   the difference except the phase split.
// - Weight gradients accumulate over micro-batches inside linear_weight_grad (accumulate
//   after the step's first backward), so zero_grad costs no kernel.
#pragma once
#include <algorithm>
#include <chrono>
#include <cstdint>
#include <cstdlib>
#include <thread>
#include <set>
#include <stdexcept>
#include <string>
#include <vector>

#include <cuda_runtime_api.h>

#include "nnpar/cuda_kernels.hpp"
#include "pipeline.hpp"

namespace nnpar {

class GpuStage final : public StageEngine {
 public:
  GpuStage(const StrategyContext& context, const StagePlan& plan, cudaStream_t stream)
      : plan_(plan), stream_(stream), classes_(context.model->layer_sizes.back()),
        sgd_(context.train->sgd) {
    const ModelSpec& spec = *context.model;
    const Dataset& data = *context.train_data;
    const std::size_t rows = std::size_t(plan.max_micro_rows);
    pixel_scale_ = data.pixel_scale;
    if (plan.first()) {
      pixels_ = alloc<std::uint8_t>(data.pixels.size());
      check(cudaMemcpy(pixels_, data.pixels.data(), data.pixels.size(), cudaMemcpyHostToDevice), "upload pixels");
    }
    if (plan.last()) {
      labels_ = alloc<std::int32_t>(data.labels.size());
      check(cudaMemcpy(labels_, data.labels.data(), data.labels.size() * 4, cudaMemcpyHostToDevice), "upload labels");
      stats_ = alloc<Stats>(1);
      // The multi-block softmax (a warp per row), as cuda and nccl-data run it: without scratch
      // it is one block looping over the rows (with it, 1F1B steps of 512-row micro-batches ran
      // 1.09x faster, docs/results/2026-11-27-plan-validation-7.md). One scratch serves every
      // slot, since the stage's kernels run in order on its stream.
      if (const std::size_t n = cuda::softmax_xent_scratch(int(rows), classes_); n > 0)
        softmax_scratch_ = alloc<double>(n);
    }
    // Each sample is loaded once per epoch per stage and the trainer synchronises at the
    // end of an epoch, so a ring of one epoch's indices never overwrites indices a queued
    // kernel has yet to read, without the host ever waiting inside the epoch.
    order_capacity_ = data.count + std::size_t(context.train->batch_size);
    if (plan.first() || plan.last()) {
      order_device_ = alloc<std::uint32_t>(order_capacity_);
      check(cudaMallocHost(reinterpret_cast<void**>(&order_host_), order_capacity_ * sizeof(std::uint32_t)),
            "pinned indices");
    }
    params_ = alloc<float>(plan.param_count);
    grads_ = alloc<float>(plan.param_count);
    if (sgd_.momentum != 0.0f) velocity_ = alloc<float>(plan.param_count);
    check(cudaMemcpy(params_, context.initial_parameters.data() + plan.param_offset, plan.param_count * 4,
                     cudaMemcpyHostToDevice), "upload parameters");

    // Split-K scratch is planned per shape: every micro-batch size a step can produce.
    const std::set<int> micro_rows = micro_batch_rows(plan, context.train->batch_size, data.count);
    for (int i = plan.first_layer; i < plan.first_layer + plan.layer_count; ++i) {
      Layer L;
      L.in = spec.layer_sizes[i];
      L.out = spec.layer_sizes[i + 1];
      L.offset = parameter_offset(spec, i) - plan.param_offset;
      L.sigmoid = i + 1 < spec.linear_count();
      L.model_first = i == 0;
      L.fwd = scratch_for(cuda::GemmForm::forward, micro_rows, L.out, L.in);
      if (!L.model_first) L.dgrad = scratch_for(cuda::GemmForm::input_grad, micro_rows, L.out, L.in);
      // dL/dz of this layer; on the compute stream in order, so one per layer serves every slot.
      L.dz = alloc<float>(rows * L.out);
      layers_.push_back(L);
    }
    slots_.resize(plan.slots);
    for (Slot& s : slots_) {
      s.input = alloc<float>(rows * plan.input_features);
      for (const Layer& L : layers_) s.activations.push_back(alloc<float>(rows * L.out));
      if (!plan.last()) s.output_grad = alloc<float>(rows * plan.output_features);
      if (!plan.first()) s.input_grad = alloc<float>(rows * plan.input_features);
    }
    for (cudaEvent_t& e : step_done_) check(cudaEventCreateWithFlags(&e, cudaEventDisableTiming), "event create");
    if (const char* env = std::getenv("NNPAR_COMM_TIMEOUT"); env != nullptr && std::atof(env) > 0)
      timeout_s_ = std::atof(env);
    check(cudaDeviceSynchronize(), "stage setup");
  }
  ~GpuStage() override {
    cudaStreamSynchronize(stream_);
    for (cudaEvent_t e : step_done_) cudaEventDestroy(e);
    for (void* p : allocations_) cudaFree(p);
    if (order_host_ != nullptr) cudaFreeHost(order_host_);
  }

  float* parameters() override { return params_; }
  float* gradients() override { return grads_; }
  float* input(int slot) override { return slots_[slot].input; }
  float* output(int slot) override { return slots_[slot].activations.back(); }
  float* output_grad(int slot) override { return slots_[slot].output_grad; }
  float* input_grad(int slot) override { return slots_[slot].input_grad; }

  void load(int slot, std::span<const std::uint32_t> indices) override {
    if (!plan_.first() && !plan_.last()) return;  // a middle stage needs neither pixels nor labels
    if (order_used_ + indices.size() > order_capacity_) synchronize();  // not within one epoch
    std::copy(indices.begin(), indices.end(), order_host_ + order_used_);
    std::uint32_t* device = order_device_ + order_used_;
    check(cudaMemcpyAsync(device, order_host_ + order_used_, indices.size() * sizeof(std::uint32_t),
                          cudaMemcpyHostToDevice, stream_), "upload indices");
    order_used_ += indices.size();
    slots_[slot].indices = device;
  }

  void forward(int slot, int rows) override {
    Slot& s = slots_[slot];
    const float* x = s.input;
    for (std::size_t l = 0; l < layers_.size(); ++l) {
      const Layer& L = layers_[l];
      float* y = s.activations[l];
      if (L.model_first)
        // Gathers the pixels straight from the dataset; keeps the floats for the weight gradient.
        cuda::linear_forward_gather(rows, L.out, L.in, pixels_, pixel_scale_, {s.indices, nullptr, rows}, s.input,
                                    W(L), B(L), L.sigmoid, y, L.fwd, stream_);
      else
        cuda::linear_forward(rows, L.out, L.in, x, W(L), B(L), L.sigmoid, y, L.fwd, stream_);
      x = y;
    }
  }

  void backward(int slot, int rows, float loss_scale) override {
    Slot& s = slots_[slot];
    const float* dz;  // dL/dz of the current layer
    if (plan_.last()) {
      Layer& L = layers_.back();
      cuda::softmax_xent(rows, classes_, s.activations.back(), labels_, {s.indices, nullptr, rows}, loss_scale,
                         nullptr, L.dz, &stats_->loss_sum, &stats_->correct, false, stream_, softmax_scratch_);
      dz = L.dz;
    } else {
      dz = s.output_grad;
    }
    for (int l = int(layers_.size()) - 1; l >= 0; --l) {
      const Layer& L = layers_[l];
      const float* x = l == 0 ? s.input : s.activations[l - 1];
      cuda::linear_weight_grad(rows, L.out, L.in, dz, x, accumulate_, weight_grad(L), bias_grad(L), cuda::FusedSgd{},
                               stream_);
      if (L.model_first) break;  // its input is the data
      // The previous layer's sigmoid derivative is fused: H is that sigmoid's output (this
      // stage's input for l == 0, which the previous stage's last layer produced).
      float* dx = l == 0 ? s.input_grad : layers_[l - 1].dz;
      cuda::linear_input_grad(rows, L.out, L.in, dz, W(L), x, dx, L.dgrad, stream_);
      dz = dx;
    }
    accumulate_ = true;
  }

  void zero_grad() override { accumulate_ = false; }  // the next weight gradient overwrites
  void sgd_step() override {
    cuda::sgd_update(plan_.param_count, sgd_.lr, sgd_.momentum, sgd_.weight_decay, params_, grads_, velocity_,
                     stream_);
  }
  std::pair<double, double> take_metrics() override {
    Stats stats{};
    if (stats_ != nullptr) {
      check(cudaMemcpyAsync(&stats, stats_, sizeof stats, cudaMemcpyDeviceToHost, stream_), "read metrics");
      check(cudaMemsetAsync(stats_, 0, sizeof(Stats), stream_), "reset metrics");
    }
    synchronize();
    return {stats.loss_sum, double(stats.correct)};
  }
  float* scratch(std::size_t count) override {
    if (count > gather_count_) {
      gather_ = alloc<float>(count);
      gather_count_ = count;
    }
    return gather_;
  }
  void copy_to_host(const float* source, std::size_t count, float* host) override {
    synchronize();
    check(cudaMemcpy(host, source, count * sizeof(float), cudaMemcpyDeviceToHost), "read parameters");
  }
  void synchronize() override {
    cudaEvent_t all = step_done_[step_ % 2];
    check(cudaEventRecord(all, stream_), "event record");
    wait_for(all, "the end of the epoch");
    order_used_ = 0;  // nothing queued reads the indices any more
  }
  // The host may queue step k only once step k-1 has finished on this GPU. Without a bound
  // the host queues a whole epoch ahead, and the launch queues (CUDA's and NCCL's) fill while
  // they wait on peers, so a full queue blocks a host that still has to post the sends its
  // peers are waiting for. One step of slack keeps the next step's launches hidden behind the
  // current step's compute.
  void end_step() override {
    check(cudaEventRecord(step_done_[step_ % 2], stream_), "event record");
    ++step_;
    if (step_ >= 2) wait_for(step_done_[step_ % 2], ("step " + std::to_string(step_ - 2)).c_str());
  }

 private:
  struct Stats {
    double loss_sum;
    unsigned long long correct;
  };
  struct Layer {
    int in = 0, out = 0;
    std::size_t offset = 0;  // of its weight in this stage's slice
    bool sigmoid = false, model_first = false;
    cuda::GemmScratch fwd, dgrad;
    float* dz = nullptr;
  };
  struct Slot {
    float* input = nullptr;  // from the previous stage, or the gathered pixels on the first
    std::vector<float*> activations;
    float* output_grad = nullptr;  // dL/dz of this stage's last layer, from the next stage
    float* input_grad = nullptr;   // dL/dz of the previous stage's last layer
    const std::uint32_t* indices = nullptr;
  };

  // Polls rather than blocking in cudaEventSynchronize, so that a stage whose peer stopped
  // (a dead rank, a deadlock) ends with a message instead of hanging forever.
  void wait_for(cudaEvent_t event, const char* what) const {
    const auto start = std::chrono::steady_clock::now();
    for (int spins = 0;; ++spins) {
      const cudaError_t status = cudaEventQuery(event);
      if (status == cudaSuccess) return;
      if (status != cudaErrorNotReady) check(status, what);
      if (std::chrono::duration<double>(std::chrono::steady_clock::now() - start).count() > timeout_s_)
        throw std::runtime_error("GPU stage " + std::to_string(plan_.stage) + ": " + what + " did not complete within " +
                                 std::to_string(int(timeout_s_)) +
                                 " s (a neighbouring stage is stuck or gone; NNPAR_COMM_TIMEOUT sets the limit)");
      if (spins > 1000) std::this_thread::sleep_for(std::chrono::microseconds(20));
    }
  }
  static void check(cudaError_t status, const char* what) {
    if (status != cudaSuccess) throw std::runtime_error(std::string("GPU stage: ") + what + ": " + cudaGetErrorString(status));
  }
  template <class T>
  T* alloc(std::size_t count) {
    void* p = nullptr;
    const std::size_t bytes = std::max<std::size_t>(count, 1) * sizeof(T);
    check(cudaMalloc(&p, bytes), "cudaMalloc");
    allocations_.push_back(p);
    check(cudaMemset(p, 0, bytes), "cudaMemset");
    return static_cast<T*>(p);
  }
  cuda::GemmScratch scratch_for(cuda::GemmForm form, const std::set<int>& rows, int out, int in) {
    std::size_t floats = 0, counters = 0;
    cuda::gemm_scratch_size(form, rows, out, in, &floats, &counters);
    if (floats == 0) return {};
    return {alloc<float>(floats), alloc<unsigned>(counters), floats, counters};
  }
  float* W(const Layer& L) const { return params_ + L.offset; }
  float* B(const Layer& L) const { return W(L) + std::size_t(L.out) * L.in; }
  float* weight_grad(const Layer& L) const { return grads_ + L.offset; }
  float* bias_grad(const Layer& L) const { return weight_grad(L) + std::size_t(L.out) * L.in; }

  StagePlan plan_;
  cudaStream_t stream_;
  int classes_;
  SgdSettings sgd_;
  float pixel_scale_ = 1.0f;
  std::vector<void*> allocations_;
  std::uint8_t* pixels_ = nullptr;
  std::int32_t* labels_ = nullptr;
  Stats* stats_ = nullptr;
  double* softmax_scratch_ = nullptr;  // the multi-block softmax's per-block sums (last stage)
  std::uint32_t *order_device_ = nullptr, *order_host_ = nullptr;
  std::size_t order_capacity_ = 0, order_used_ = 0;
  float *params_ = nullptr, *grads_ = nullptr, *velocity_ = nullptr;
  float* gather_ = nullptr;
  std::size_t gather_count_ = 0;
  std::vector<Layer> layers_;
  std::vector<Slot> slots_;
  bool accumulate_ = false;
  cudaEvent_t step_done_[2] = {nullptr, nullptr};
  long step_ = 0;
  double timeout_s_ = 300;
};

}  // namespace nnpar
