// The single-GPU strategy: the whole training step on one CUDA device with our own kernels
// (kernels/cuda), replayed from CUDA graphs.
//
// Setup copies the uint8 dataset and the parameters to the device once. Each epoch uploads
// the sample order (the same epoch_order as the CPU strategies: that is what parity needs)
// and runs every step with no host synchronisation; the loss sum and the correct count are
// accumulated on the device and read once at the end of the epoch.
//
// A step is 3L kernels for L Linear layers (L forward products, softmax+cross-entropy, L-1
// input-gradient products, L weight-gradient products with the SGD update fused in). The
// batch's position in the order is a device-side step counter that the softmax kernel
// advances, so one captured graph of `graph_steps` steps is replayed for consecutive chunks of
// the epoch without touching its parameters. Weight gradients of the upper layers run on a
// second stream (a parallel branch of the graph): only the input-gradient chain is on the
// critical path.
//
// Per-step latency is the whole game (docs/results/2026-11-26-cuda-2.md, one H100): the
// kernels of a step are dependent, and the cheapest of them costs ~1.7 us in a graph chain, so
// the launch options below attack the gaps and the in-kernel round trips: `pdl` (programmatic
// dependent launch; auto = batches <= 128, where it was measured to win), `gemv_rows` (warp
// kernels for batches <= 8), `warp_softmax` (softmax over many blocks), `k_stage` (four K tiles
// per GEMM stage), `split_blocks`; `fuse_head` (softmax + last input gradient in one kernel)
// is correct but measured slower, so off. `kernel_timing` prints each kernel's time in a graph.
// Round 4 (docs/results/2026-11-26-cuda-4.md): `stage_input` writes the epoch's input once as
// floats in its order, so forward 0 and the last weight gradient read contiguous rows through
// the step counter (no order lookup, no uint8 conversion in the step); `fuse_logits`=head runs
// the last forward, the softmax and the last input gradient as one kernel, a block per row (one
// dependent kernel instead of three on the critical path). Both on by default (head up to a
// last hidden width of 256). Measured with the defaults, 784-256-256-26, one H100: batch 1 45k
// samples/s, 32 899k, 128 2.78M (46.0 us/step; round 3: 2.31M, 55.5 us), 1024 6.73M (measured
// with fuse_logits=head set, which auto picks since); PyTorch with the step in a CUDA graph
// (round 2, same GPU type): 16k / 1.09M (128) / 6.34M. The `persistent`
// variant (one cooperative kernel per epoch, kernels/cuda/persistent_mlp.cu) matches serial
// but is 0.49-0.80x of the graph even with round 3's deep plan (docs/results/2026-11-26-cuda-3.md:
// its phases, not its grid barriers, are slow), so `graph` stays the default. The `resident`
// variant (kernels/cuda/resident_mlp.cu) keeps the model in one thread-block cluster's shared
// memory: batch 1 84k samples/s vs the graph's 47k (H200), faster up to batch 4; `auto` picks it there.
// Round 5 (docs/results/2026-11-27-cuda-tf32.md, one H200): `precision` = "tf32" runs the
// tiled products on tensor cores (the approximate parity class; the whole-set test accuracy
// stayed within 0.02 pp of fp32): batch 128 3.89M samples/s (fp32 2.88M), batch 1024 10.9M.
// `precision` = "bf16" does the same with BF16 operands (plugin 1.5; docs/results/2026-11-27-cuda-bf16.md):
// batch 128 4.08M samples/s, 1.05x tf32, the same whole-set accuracy. Plugin 1.6
// (docs/results/2026-11-27-cuda-resident-bf16.md, one H100): `variant = "resident"` with
// `precision = "bf16"` runs the resident kernel on tensor cores for batches up to 128
// (kernels/cuda/resident_mma.cu): 1.05-1.36x the bf16 graph from batch 1 to 64, 0.81x at 128.
// Plugin 1.7 (docs/results/2026-11-28-cuda-resident-4.md, one H100): the fp32 resident kernel's
// exchanges are st.async stores counted on the receiver's mbarrier instead of the cluster
// barrier (a third of the latency): batch 1 89.7k samples/s against 74.4k, the same bits.
// Plugin 1.8 (docs/results/2026-11-28-cuda-resident-5.md, one H100): those exchanges wait with
// an acquire at CTA scope, which does not invalidate L1: batch 1 90.4k (1.009x), the same bits.
// Where issue 4 ends (docs/results/2026-11-28-cuda-final.md, one H100, every precision and
// shape against PyTorch): batch 128 4.03M samples/s (bf16), batch 1 90.9k (fp32); the goals
// (10M, 200k) are not met, and that page says what each step's phases leave for them.
#include <algorithm>
#include <chrono>
#include <cstdint>
#include <cstdio>
#include <cstdlib>
#include <map>
#include <memory>
#include <stdexcept>
#include <string>
#include <utility>
#include <vector>

#include <cuda_runtime_api.h>

#include "nnpar/cuda_kernels.hpp"
#include "nnpar/cuda_persistent.hpp"
#include "nnpar/cuda_resident.hpp"
#include "nnpar/strategy.hpp"
#include "../common/cuda_kernel_options.hpp"
#include "../common/epoch_order_ahead.hpp"
#include "../common/pinned_orders.hpp"
#include "../common/fused_sgd.hpp"

namespace {

using namespace nnpar;
namespace gpu = nnpar::cuda;

void check(cudaError_t status, const char* what) {
  if (status != cudaSuccess) throw std::runtime_error(std::string("cuda: ") + what + ": " + cudaGetErrorString(status));
}

// A device allocation freed with the strategy.
template <class T>
class DeviceBuffer {
 public:
  DeviceBuffer() = default;
  DeviceBuffer(const DeviceBuffer&) = delete;
  DeviceBuffer& operator=(const DeviceBuffer&) = delete;
  DeviceBuffer(DeviceBuffer&& o) noexcept : ptr_(std::exchange(o.ptr_, nullptr)), count_(std::exchange(o.count_, 0)) {}
  DeviceBuffer& operator=(DeviceBuffer&&) = delete;
  ~DeviceBuffer() { if (ptr_ != nullptr) cudaFree(ptr_); }
  void allocate(std::size_t count, const char* what) {
    if (ptr_ != nullptr) cudaFree(ptr_);
    ptr_ = nullptr;
    count_ = count;
    if (count == 0) return;
    check(cudaMalloc(reinterpret_cast<void**>(&ptr_), count * sizeof(T)), what);
    check(cudaMemset(ptr_, 0, count * sizeof(T)), what);
  }
  T* get() const { return ptr_; }
  std::size_t size() const { return count_; }

 private:
  T* ptr_ = nullptr;
  std::size_t count_ = 0;
};

// Read once per epoch; zeroed at its start.
struct DeviceStats {
  double loss_sum;
  unsigned long long correct;
  int step;  // the batch index within the epoch; advanced by softmax_xent
};

class CudaStrategy final : public Strategy {
 public:
  ~CudaStrategy() override {
    // No throwing from here: best-effort release.
    for (auto& [key, exec] : graphs_) cudaGraphExecDestroy(exec);
    for (cudaEvent_t e : dgrad_done_) cudaEventDestroy(e);
    if (side_done_ != nullptr) cudaEventDestroy(side_done_);
    if (start_ != nullptr) cudaEventDestroy(start_);
    if (stop_ != nullptr) cudaEventDestroy(stop_);
    if (side_ != nullptr) cudaStreamDestroy(side_);
    if (main_ != nullptr) cudaStreamDestroy(main_);
  }

  void setup(const StrategyContext& context) override {
    context_ = context;
    int devices = 0;
    const cudaError_t status = cudaGetDeviceCount(&devices);
    if (status != cudaSuccess || devices == 0) {
      throw std::runtime_error(std::string("cuda: no CUDA device available (cudaGetDeviceCount: ") +
                               (status != cudaSuccess ? cudaGetErrorString(status) : "0 devices") + ")");
    }
    const StrategyOptions& options = *context.options;
    const int device = int(options.get_int("device"));
    if (device >= devices) {
      throw std::runtime_error("cuda: device " + std::to_string(device) + " requested, but only " +
                               std::to_string(devices) + " CUDA device(s) are visible");
    }
    check(cudaSetDevice(device), "cudaSetDevice");
    cudaDeviceProp props{};
    check(cudaGetDeviceProperties(&props, device), "cudaGetDeviceProperties");
    device_name_ = props.name;
    use_graph_ = options.get_bool("graph");
    graph_steps_ = int(options.get_int("graph_steps"));
    batch_ = context.train->batch_size;
    // pdl auto: on for batches of <= 128 rows (docs/results/2026-11-26-cuda-3.md).
    gpu::KernelOptions kernel_options = apply_cuda_kernel_options(options, props.major, batch_);
    precision_ = options.get_string("precision");
    if (tensor_cores()) {
      if (props.major < 8) {
        throw std::runtime_error("cuda: precision = \"" + precision_ + "\" needs " + mma_name() +
                                 " tensor cores (compute capability 8.0+); device " + std::to_string(device) + " (" +
                                 device_name_ + ") is " + std::to_string(props.major) + "." + std::to_string(props.minor));
      }
      kernel_options.precision = precision_ == "tf32" ? gpu::MmaPrecision::tf32 : gpu::MmaPrecision::bf16;
      gpu::set_kernel_options(kernel_options);
    }
    kernel_timing_ = options.get_bool("kernel_timing");
    fuse_head_ = options.get_bool("fuse_head");
    stage_input_ = options.get_bool("stage_input");
    const LogitsFusion fusion =
        resolve_logits_fusion(options.get_string("fuse_logits"), context.model->layer_sizes, fuse_head_, "cuda");
    fuse_logits_ = fusion.logits;
    fuse_logits_input_grad_ = fusion.input_grad;

    const ModelSpec& spec = *context.model;
    const TrainSettings& train = *context.train;
    const Dataset& data = *context.train_data;
    if (data.features() != spec.layer_sizes.front()) {
      throw std::runtime_error("cuda: the model reads " + std::to_string(spec.layer_sizes.front()) +
                               " features, the data has " + std::to_string(data.features()));
    }
    sizes_ = spec.layer_sizes;
    batch_ = train.batch_size;
    const int layers = spec.linear_count();

    check(cudaStreamCreateWithFlags(&main_, cudaStreamNonBlocking), "stream");
    check(cudaStreamCreateWithFlags(&side_, cudaStreamNonBlocking), "stream");
    dgrad_done_.resize(layers, nullptr);
    for (auto& e : dgrad_done_) check(cudaEventCreateWithFlags(&e, cudaEventDisableTiming), "event");
    check(cudaEventCreateWithFlags(&side_done_, cudaEventDisableTiming), "event");
    check(cudaEventCreate(&start_), "event");
    check(cudaEventCreate(&stop_), "event");

    pixels_.allocate(data.pixels.size(), "dataset pixels");
    labels_.allocate(data.labels.size(), "dataset labels");
    order_.allocate(data.count, "order");
    pinned_orders_.allocate(data.count);
    const char* timing = std::getenv("NNPAR_EPOCH_TIMING");
    timing_ = timing != nullptr && std::string(timing) == "1";
    check(cudaMemcpy(pixels_.get(), data.pixels.data(), data.pixels.size(), cudaMemcpyHostToDevice), "upload pixels");
    check(cudaMemcpy(labels_.get(), data.labels.data(), data.labels.size() * sizeof(std::int32_t),
                     cudaMemcpyHostToDevice), "upload labels");

    const std::size_t count = parameter_count(spec);
    if (context.initial_parameters.size() != count) {
      throw std::runtime_error("cuda: initial parameters have " + std::to_string(context.initial_parameters.size()) +
                               " floats, the model needs " + std::to_string(count));
    }
    params_.allocate(count, "parameters");
    grads_.allocate(count, "gradients");
    if (train.sgd.momentum != 0.0f) velocity_.allocate(count, "velocity");
    check(cudaMemcpy(params_.get(), context.initial_parameters.data(), count * sizeof(float), cudaMemcpyHostToDevice),
          "upload parameters");
    stats_.allocate(1, "stats");

    // acts_[i]: input of Linear i ([batch, sizes[i]]; acts_[0] is the gathered batch);
    // acts_[layers]: the logits. grad_out_[i]: gradient w.r.t. Linear i's output (pre-activation).
    acts_.resize(layers + 1);
    grad_out_.resize(layers);
    for (int i = 0; i <= layers; ++i) acts_[i].allocate(std::size_t(batch_) * sizes_[i], "activations");
    for (int i = 0; i < layers; ++i) grad_out_[i].allocate(std::size_t(batch_) * sizes_[i + 1], "gradients");

    // One scratch region per split-K call site (concurrent branches must not share), sized for
    // the largest plan over the batch sizes an epoch uses (full and the partial tail).
    const std::size_t tail = data.count % std::size_t(batch_);
    std::vector<int> row_counts{std::min<int>(batch_, int(data.count))};
    if (tail != 0) row_counts.push_back(int(tail));
    fwd_scratch_.resize(layers);
    dgrad_scratch_.resize(layers);
    for (int i = 0; i < layers; ++i) {
      allocate_scratch(fwd_scratch_[i], gpu::GemmForm::forward, row_counts, sizes_[i + 1], sizes_[i]);
      if (i > 0) allocate_scratch(dgrad_scratch_[i], gpu::GemmForm::input_grad, row_counts, sizes_[i + 1], sizes_[i]);
    }
    const int rows = std::min<int>(batch_, int(data.count));
    softmax_scratch_.allocate(std::max(gpu::softmax_xent_scratch(rows, sizes_.back()),
                                       gpu::logits_softmax_xent_scratch(rows, sizes_.back())),
                              "softmax scratch");
    const std::string& variant = options.get_string("variant");
    if ((tensor_cores() && variant == "persistent") || (precision_ == "tf32" && variant == "resident")) {
      throw std::runtime_error("cuda: precision = \"" + precision_ + "\" runs the graph variant's tiled products; variant = \"" +
                               variant + "\" is fp32 only" + (variant == "resident" ? " or bf16" : ""));
    }
    const bool persistent = variant == "persistent" || (variant == "auto" && !tensor_cores() && persistent_wins(props));
    // auto: resident up to batch 4, where it measured faster than the graph; graph from batch 8.
    const bool resident_wanted =
        variant == "resident" ||
        (variant == "auto" && !persistent && !tensor_cores() && batch_ <= kAutoResidentMaxBatch && props.major >= 9);
    // What the persistent and resident kernels share: the model, the data and the metrics.
    gpu::EpochKernelInputs inputs;
    inputs.sizes = sizes_;
    inputs.params = params_.get();
    inputs.velocity = velocity_.get();
    inputs.lr = train.sgd.lr;
    inputs.momentum = train.sgd.momentum;
    inputs.weight_decay = train.sgd.weight_decay;
    inputs.pixels = pixels_.get();
    inputs.pixel_scale = data.pixel_scale;
    inputs.labels = labels_.get();
    inputs.order = order_.get();
    inputs.batch = batch_;
    inputs.loss_sum = &stats_.get()->loss_sum;
    inputs.correct = &stats_.get()->correct;
    inputs.step = &stats_.get()->step;
    inputs.device = device;
    // auto under bf16: the tensor-core resident kernel at the batches where it measured faster.
    const bool resident_mma_wanted =
        precision_ == "bf16" && (variant == "resident" || (variant == "auto" && batch_ <= kAutoResidentBf16MaxBatch && props.major >= 9));
    if (resident_mma_wanted) {
      try {
        resident_mma_ = std::make_unique<gpu::ResidentMmaTrainer>(inputs);
        device_name_ += " (resident, cluster of " + std::to_string(resident_mma_->cluster()) + ")";
      } catch (const std::runtime_error&) {
        if (variant == "resident") throw;  // auto: the graph variant instead
      }
      const std::int64_t cluster = options.get_int("resident_cluster");
      if (resident_mma_ && variant == "resident" && cluster != 0 && cluster != resident_mma_->cluster()) {
        throw std::runtime_error("cuda: resident_cluster = " + std::to_string(cluster) +
                                 " does not apply with precision = \"bf16\": that kernel's cluster is the hidden width / 16 = " +
                                 std::to_string(resident_mma_->cluster()) + " blocks (set 0)");
      }
    } else if (resident_wanted) {
      gpu::ResidentConfig rc;
      static_cast<gpu::EpochKernelInputs&>(rc) = inputs;
      rc.cluster = int(options.get_int("resident_cluster"));
      try {
        resident_ = std::make_unique<gpu::ResidentTrainer>(rc);
        device_name_ += " (resident, cluster of " + std::to_string(resident_->cluster()) + ")";
      } catch (const std::runtime_error&) {
        if (variant == "resident") throw;  // auto: the graph variant instead
      }
    }
    const bool resident = resident_ != nullptr || resident_mma_ != nullptr;
    if (stage_input_ && !persistent && !resident) {
      const std::size_t floats = data.count * std::size_t(data.features());
      try {
        staged_.allocate(floats, "stage_input buffer");
      } catch (const std::exception& e) {
        throw std::runtime_error(std::string("cuda: stage_input needs ") + std::to_string(floats * sizeof(float) >> 20) +
                                 " MiB of device memory for the epoch's input as floats (" + e.what() +
                                 "); set strategy.cuda.stage_input=false");
      }
    } else {
      stage_input_ = false;  // the persistent and resident kernels gather their own input
    }
    if (persistent) {
      gpu::PersistentConfig pc;
      static_cast<gpu::EpochKernelInputs&>(pc) = inputs;
      pc.blocks = int(options.get_int("persistent_blocks"));
      pc.deep = options.get_string("persistent_plan") == "deep";
      pc.prefetch = options.get_bool("persistent_prefetch");
      pc.spin_ns = int(options.get_int("persistent_spin_ns"));
      persistent_ = std::make_unique<gpu::PersistentTrainer>(pc);
      if (std::getenv("NNPAR_PERSISTENT_PLAN") != nullptr) {  // diagnosis only: which tile shapes run
        std::fprintf(stderr, "cuda persistent plan: %s\n", persistent_->describe(batch_).c_str());
      }
    }
    check(cudaDeviceSynchronize(), "setup");
  }

  EpochReport train_epoch(int epoch) override {
    const TrainSettings& train = *context_.train;
    const Dataset& data = *context_.train_data;
    EpochReport report;
    PhaseClock clock;
    if (kernel_timing_ && epoch == 0 && !persistent_ && !resident_ && !resident_mma_) time_kernels();
    const auto host_start = std::chrono::steady_clock::now();
    // The previous epoch ended with a synchronisation, so nothing still reads the order or its
    // pinned copies. take() moves out the order prepare_next made (the storage write_ahead
    // copied from), so begin_epoch finds it already pinned.
    const std::vector<std::uint32_t> order = orders_.take(train, data.count, epoch);
    check(cudaMemcpyAsync(order_.get(), pinned_orders_.begin_epoch(order), order.size() * sizeof(std::uint32_t),
                          cudaMemcpyHostToDevice, main_), "upload order");
    check(cudaMemsetAsync(stats_.get(), 0, sizeof(DeviceStats), main_), "reset stats");
    clock.lap(report.phases.data);

    const std::size_t full = data.count / std::size_t(batch_);
    const int tail = train.drop_last ? 0 : int(data.count % std::size_t(batch_));
    check(cudaEventRecord(start_, main_), "event");
    // Counted in the epoch's time: the staging is part of the work, only not of any step.
    if (stage_input_) {
      gpu::stage_epoch_input(data.count, int(data.features()), pixels_.get(), data.pixel_scale, order_.get(),
                             staged_.get(), main_);
    }
    if (resident_) {
      resident_->run(0, int(full), batch_, main_);
      if (tail > 0) resident_->run(full, 1, tail, main_);
    } else if (resident_mma_) {
      resident_mma_->run(0, int(full), batch_, main_);
      if (tail > 0) resident_mma_->run(full, 1, tail, main_);
    } else if (persistent_) {
      persistent_->run(0, int(full), batch_, main_);
      if (tail > 0) persistent_->run(full, 1, tail, main_);
    } else if (use_graph_) {
      const std::size_t chunk = std::min<std::size_t>(full, std::size_t(graph_steps_));
      if (chunk > 0) {
        for (std::size_t s = 0; s + chunk <= full; s += chunk) launch(graph(int(chunk), batch_));
        if (full % chunk != 0) launch(graph(int(full % chunk), batch_));
      }
      if (tail > 0) launch(graph(1, tail));
    } else {
      for (std::size_t s = 0; s < full; ++s) enqueue_step(batch_);
      if (tail > 0) enqueue_step(tail);
    }
    check(cudaEventRecord(stop_, main_), "event");
    // The host shuffles the next epoch while the device runs this one, into the pinned copy
    // the previous epoch's upload read.
    orders_.prepare_next(train, data.count, epoch);
    if (const std::vector<std::uint32_t>* next = orders_.prepared()) pinned_orders_.write_ahead(*next);
    DeviceStats stats{};
    check(cudaMemcpyAsync(&stats, stats_.get(), sizeof stats, cudaMemcpyDeviceToHost, main_), "read stats");
    check(cudaStreamSynchronize(main_), "epoch");
    float gpu_ms = 0;
    check(cudaEventElapsedTime(&gpu_ms, start_, stop_), "event time");
    if (timing_) {
      // NNPAR_EPOCH_TIMING=1: the device's time (staging and steps) against the host's.
      const double host_us = 1e6 * std::chrono::duration<double>(std::chrono::steady_clock::now() - host_start).count();
      std::fprintf(stderr, "[cuda timing] staging and steps %.1f us on the device; %.1f us on the host, %.1f us of it "
                   "not between the device's events\n", 1e3 * gpu_ms, host_us, host_us - 1e3 * gpu_ms);
    }

    report.steps = full + (tail > 0 ? 1 : 0);
    report.samples = full * std::size_t(batch_) + std::size_t(tail);
    report.loss_sum = stats.loss_sum;
    report.correct = std::size_t(stats.correct);
    if (stats.step != int(report.steps)) {
      throw std::runtime_error("cuda: the device ran " + std::to_string(stats.step) + " steps, expected " +
                               std::to_string(report.steps));
    }
    // The epoch is one stream of kernels with no host round trips, so per-phase times are not
    // observable without perturbing it: the GPU time between the two events is split between
    // forward and backward in proportion to their FLOPs (the update is fused into the
    // weight-gradient products, so it is counted in backward and `update` stays 0).
    const double seconds = gpu_ms * 1e-3;
    double fwd = 0, bwd = 0;
    for (std::size_t i = 0; i + 1 < sizes_.size(); ++i) {
      const double mac = double(sizes_[i]) * sizes_[i + 1];
      fwd += mac;
      bwd += (i > 0 ? 2 : 1) * mac;
    }
    report.phases.forward = seconds * fwd / (fwd + bwd);
    report.phases.backward = seconds * bwd / (fwd + bwd);
    clock.reset();
    return report;
  }

  void get_parameters(std::span<float> out) override {
    check(cudaStreamSynchronize(main_), "sync");
    check(cudaMemcpy(out.data(), params_.get(), std::min(out.size(), params_.size()) * sizeof(float),
                     cudaMemcpyDeviceToHost), "read parameters");
  }

  std::string device_description() const override {
    return (device_name_.empty() ? std::string("CUDA GPU") : device_name_) +
           (tensor_cores() ? " (" + std::string(mma_name()) + " products)" : "");
  }
  // TF32 and BF16 round the products' operands: the same algorithm, not the same bits as serial.
  std::optional<ParityClass> parity_class() const override {
    return tensor_cores() ? ParityClass::approximate : ParityClass::exact;
  }

 private:
  // `auto`: the persistent kernel where it measured faster than the graph (bench/cuda_variants.py).
  // It is not yet faster anywhere (round 1, H200: 0.55-0.9x of the graph's samples/s; round 3,
  // H100, deep plan: 0.49-0.80x at batch 1/32/128/1024), so no batch qualifies; raise the
  // bound once it wins.
  bool persistent_wins(const cudaDeviceProp& props) const {
    return props.cooperativeLaunch != 0 && sizes_.size() <= std::size_t(gpu::kPersistentMaxLayers) + 1 &&
           batch_ <= kAutoPersistentMaxBatch;
  }
  static constexpr int kAutoPersistentMaxBatch = 0;
  // auto picks the resident variant up to this batch (docs/results/2026-11-27-cuda-tf32.md, one
  // H200, 784-256-256-26: resident / graph = 1.80x at batch 1, 1.77x at 2, 1.41x at 4, 1.00x at 8,
  // 0.67x at 16; plugin 1.7, docs/results/2026-11-28-cuda-resident-4.md, one H100: 2.00x, 1.90x,
  // 1.54x, 1.00x, and 0.54x at 12).
  static constexpr int kAutoResidentMaxBatch = 4;
  // Under bf16, auto picks the tensor-core resident kernel up to this batch
  // (docs/results/2026-11-27-cuda-resident-bf16.md, call U7, one H100, 784-256-256-26, medians of
  // 2 repetitions: resident / bf16 graph = 1.05x at batch 1, 1.25x at 4, 1.35x at 8, 1.38x at 16,
  // 1.33x at 32, 1.18x at 48, 1.06x at 64, 0.86x at 96, 0.76x at 128).
  static constexpr int kAutoResidentBf16MaxBatch = 64;

  void allocate_scratch(DeviceBuffer<float>& partials_and_counters, gpu::GemmForm form, const std::vector<int>& rows,
                        int out, int in) {
    std::size_t floats = 0, counters = 0;
    gpu::gemm_scratch_size(form, rows, out, in, &floats, &counters);
    // Counters (unsigned) live after the partials in the same allocation, zeroed by allocate().
    partials_and_counters.allocate(floats + counters, "gemm scratch");
    scratch_counters_[partials_and_counters.get()] = floats;
  }

  gpu::GemmScratch scratch(const DeviceBuffer<float>& buffer) const {
    if (buffer.size() == 0) return {};
    const std::size_t floats = scratch_counters_.at(buffer.get());
    return {buffer.get(), reinterpret_cast<unsigned*>(buffer.get() + floats)};
  }

  // One SGD step on `rows` samples of the batch the device step counter points at. With
  // only >= 0 (kernel timing), just the only-th kernel of the step, on the main stream, with
  // the step counter left alone.
  void enqueue_step(int rows, int only = -1) {
    int op = -1;
    // Whether the next kernel of the step is enqueued; names it for the timing report.
    auto take = [&](const char* name) {
      ++op;
      if (only < 0) return true;
      if (op == only) op_name_ = name;
      return op == only;
    };
    cudaStream_t side = only < 0 ? side_ : main_;
    const TrainSettings& train = *context_.train;
    const ModelSpec& spec = *context_.model;
    const Dataset& data = *context_.train_data;
    const int layers = spec.linear_count();
    DeviceStats* stats = stats_.get();
    const gpu::RowIndex index{order_.get(), &stats->step, batch_};
    auto W = [&](int i) { return params_.get() + parameter_offset(spec, i); };
    auto B = [&](int i) { return W(i) + std::size_t(sizes_[i + 1]) * sizes_[i]; };

    // Forward. Layer 0 gathers its input from the uint8 dataset and keeps a float copy for
    // its weight gradient.
    for (int i = 0; i < layers; ++i) {
      const bool sigmoid = i + 1 < layers;
      if (fuse_logits_ && i == layers - 1) break;  // in the softmax kernel below
      if (!take(i == 0 ? (stage_input_ ? "forward 0 (staged)" : "forward 0 (gather)")
                       : i + 1 < layers ? "forward (sigmoid)" : "forward (logits)")) continue;
      if (i == 0 && stage_input_) {
        gpu::linear_forward_staged(rows, sizes_[1], sizes_[0], staged(0), W(0), B(0), sigmoid, acts_[1].get(),
                                   scratch(fwd_scratch_[0]), main_);
      } else if (i == 0) {
        gpu::linear_forward_gather(rows, sizes_[1], sizes_[0], pixels_.get(), data.pixel_scale, index, acts_[0].get(),
                                   W(0), B(0), sigmoid, acts_[1].get(), scratch(fwd_scratch_[0]), main_);
      } else {
        gpu::linear_forward(rows, sizes_[i + 1], sizes_[i], acts_[i].get(), W(i), B(i), sigmoid, acts_[i + 1].get(),
                            scratch(fwd_scratch_[i]), main_);
      }
    }
    // fuse_head: the softmax kernel also computes the last layer's input gradient.
    const bool head_fused = fuse_head_ && layers > 1 && sizes_.back() <= 32;
    if (head_fused) {
      if (take("softmax_xent + input grad")) {
        const int i = layers - 1;
        if (!gpu::softmax_xent_input_grad(rows, sizes_.back(), acts_[layers].get(), labels_.get(), index,
                                          1.0f / float(rows), grad_out_[i].get(), &stats->loss_sum, &stats->correct,
                                          only < 0, sizes_[i], W(i), acts_[i].get(), grad_out_[i - 1].get(), main_,
                                          softmax_scratch_.get())) {
          throw std::runtime_error("cuda: fuse_head does not apply to this shape");
        }
      }
    } else if (fuse_logits_) {
      if (take(fuse_logits_input_grad_ ? "forward (logits) + softmax_xent + input grad" : "forward (logits) + softmax_xent")) {
        const int i = layers - 1;
        if (!gpu::logits_softmax_xent(rows, sizes_.back(), sizes_[i], acts_[i].get(), W(i), B(i), acts_[layers].get(),
                                      labels_.get(), index, 1.0f / float(rows), grad_out_[i].get(), &stats->loss_sum,
                                      &stats->correct, only < 0, main_, softmax_scratch_.get(),
                                      fuse_logits_input_grad_ ? grad_out_[i - 1].get() : nullptr, true)) {
          throw std::runtime_error("cuda: fuse_logits does not apply to this shape");
        }
      }
    } else if (take("softmax_xent")) {
      gpu::softmax_xent(rows, sizes_.back(), acts_[layers].get(), labels_.get(), index, 1.0f / float(rows), nullptr,
                        grad_out_[layers - 1].get(), &stats->loss_sum, &stats->correct, only < 0, main_,
                        softmax_scratch_.get());
    }

    // Backward: the input-gradient chain on the main stream; each layer's weight gradient
    // (+ SGD update of that layer) on the side stream once its input gradient no longer
    // needs the old weights.
    for (int i = layers - 1; i >= 0; --i) {
      const gpu::FusedSgd sgd = fused_sgd(train.sgd, W(i), sizes_[i + 1], sizes_[i],
                                          velocity_.get() != nullptr ? velocity_.get() + parameter_offset(spec, i) : nullptr);
      float* dW = grads_.get() + parameter_offset(spec, i);
      float* db = dW + std::size_t(sizes_[i + 1]) * sizes_[i];
      if (i > 0) {
        const bool fused = (head_fused || fuse_logits_input_grad_) && i == layers - 1;  // in the softmax kernel
        if (!fused && take("input grad")) {
          gpu::linear_input_grad(rows, sizes_[i + 1], sizes_[i], grad_out_[i].get(), W(i), acts_[i].get(),
                                 grad_out_[i - 1].get(), scratch(dgrad_scratch_[i]), main_);
        }
        if (only < 0) {
          check(cudaEventRecord(dgrad_done_[i], main_), "event");
          check(cudaStreamWaitEvent(side_, dgrad_done_[i], 0), "wait");
        }
        if (take("weight grad + sgd (side)")) {
          gpu::linear_weight_grad(rows, sizes_[i + 1], sizes_[i], grad_out_[i].get(), acts_[i].get(), false, dW, db,
                                  sgd, side);
        }
      } else if (take("weight grad + sgd")) {
        if (stage_input_) {
          // The softmax has advanced the step counter, except when kernel_timing runs this alone.
          gpu::linear_weight_grad_staged(rows, sizes_[1], sizes_[0], grad_out_[0].get(), staged(only < 0 ? -1 : 0),
                                         false, dW, db, sgd, main_);
        } else {
          gpu::linear_weight_grad(rows, sizes_[1], sizes_[0], grad_out_[0].get(), acts_[0].get(), false, dW, db, sgd,
                                  main_);
        }
      }
    }
    if (layers > 1 && only < 0) {
      // Join: the next step reads the weights the side stream updated.
      check(cudaEventRecord(side_done_, side_), "event");
      check(cudaStreamWaitEvent(main_, side_done_, 0), "wait");
    }
  }

  // The current batch's rows of the staged epoch input; step_delta -1 once the softmax has
  // advanced the counter within the step.
  gpu::StagedRows staged(int step_delta) const {
    return {staged_.get(), &stats_.get()->step, batch_, step_delta};
  }

  // kernel_timing: each kernel of one full-batch step alone, as a graph of kRepeats copies of it
  // (so each copy waits for the previous one, as in the step's dependency chain), and the whole
  // step as a graph of kRepeats steps; microseconds per copy (per step) to stderr. The training
  // state is saved before and restored after (the copies apply the SGD update repeatedly).
  void time_kernels() {
    constexpr int kRepeats = 200;
    const std::size_t count = params_.size();
    DeviceBuffer<float> saved;
    saved.allocate(2 * count, "timing copy");
    check(cudaMemcpy(saved.get(), params_.get(), count * sizeof(float), cudaMemcpyDeviceToDevice), "save");
    if (velocity_.get() != nullptr) {
      check(cudaMemcpy(saved.get() + count, velocity_.get(), count * sizeof(float), cudaMemcpyDeviceToDevice), "save");
    }
    // Each launch starts from step 0: the whole-step graph advances the counter.
    auto time_graph = [&](cudaGraphExec_t exec, int repeats) {
      check(cudaMemsetAsync(stats_.get(), 0, sizeof(DeviceStats), main_), "reset stats");
      check(cudaGraphLaunch(exec, main_), "warm-up");
      check(cudaMemsetAsync(stats_.get(), 0, sizeof(DeviceStats), main_), "reset stats");
      check(cudaEventRecord(start_, main_), "event");
      check(cudaGraphLaunch(exec, main_), "graph launch");
      check(cudaEventRecord(stop_, main_), "event");
      check(cudaStreamSynchronize(main_), "timing");
      float ms = 0;
      check(cudaEventElapsedTime(&ms, start_, stop_), "event time");
      return 1e3 * double(ms) / repeats;
    };
    const gpu::KernelOptions o = gpu::kernel_options();
    std::fprintf(stderr, "cuda kernel timing (%s, batch %d, layers", device_name_.c_str(), batch_);
    for (int s : sizes_) std::fprintf(stderr, " %d", s);
    std::fprintf(stderr, ", pdl %d, gemv_rows %d, warp_softmax %d), us per kernel in a graph of %d copies:\n",
                 int(o.pdl), o.gemv_max_rows, int(o.warp_softmax), kRepeats);
    if (stage_input_) {
      // Once per epoch, off the steps' chain (the order is not uploaded yet: the values do not matter).
      const Dataset& data = *context_.train_data;
      check(cudaEventRecord(start_, main_), "event");
      gpu::stage_epoch_input(data.count, int(data.features()), pixels_.get(), data.pixel_scale, order_.get(),
                             staged_.get(), main_);
      check(cudaEventRecord(stop_, main_), "event");
      check(cudaStreamSynchronize(main_), "timing");
      float ms = 0;
      check(cudaEventElapsedTime(&ms, start_, stop_), "event time");
      std::fprintf(stderr, "  stage_input (once per epoch, %zu rows) %8.2f us\n", data.count, 1e3 * double(ms));
    }
    double sum = 0;
    for (int only = 0;; ++only) {
      op_name_ = nullptr;
      cudaGraphExec_t exec = capture([&] { for (int r = 0; r < kRepeats; ++r) enqueue_step(batch_, only); });
      const bool any = op_name_ != nullptr;
      const std::string name = any ? op_name_ : "";
      const double us = any ? time_graph(exec, kRepeats) : 0.0;
      cudaGraphExecDestroy(exec);
      if (!any) break;
      sum += us;
      std::fprintf(stderr, "  kernel %2d %-26s %8.2f us\n", only, name.c_str(), us);
    }
    // As many steps as the order has full batches for (the order holds one epoch).
    const int steps = int(std::min<std::size_t>(kRepeats, context_.train_data->count / std::size_t(batch_)));
    if (steps > 0) {
      cudaGraphExec_t exec = capture([&] { for (int r = 0; r < steps; ++r) enqueue_step(batch_); });
      const double step_us = time_graph(exec, steps);
      cudaGraphExecDestroy(exec);
      std::fprintf(stderr, "  sum of kernels %.2f us; whole step (graph of %d steps) %.2f us = %.0f samples/s\n", sum,
                   steps, step_us, batch_ / step_us * 1e6);
    }
    check(cudaMemcpy(params_.get(), saved.get(), count * sizeof(float), cudaMemcpyDeviceToDevice), "restore");
    if (velocity_.get() != nullptr) {
      check(cudaMemcpy(velocity_.get(), saved.get() + count, count * sizeof(float), cudaMemcpyDeviceToDevice), "restore");
    }
    check(cudaMemset(stats_.get(), 0, sizeof(DeviceStats)), "reset stats");
    check(cudaDeviceSynchronize(), "timing");
  }

  template <class Enqueue>
  cudaGraphExec_t capture(Enqueue&& enqueue) {
    check(cudaStreamBeginCapture(main_, cudaStreamCaptureModeThreadLocal), "begin capture");
    try {
      enqueue();
    } catch (...) {
      cudaGraph_t broken = nullptr;
      cudaStreamEndCapture(main_, &broken);
      if (broken != nullptr) cudaGraphDestroy(broken);
      throw;
    }
    cudaGraph_t g = nullptr;
    check(cudaStreamEndCapture(main_, &g), "end capture");
    cudaGraphExec_t exec = nullptr;
    const cudaError_t status = cudaGraphInstantiate(&exec, g, 0);
    cudaGraphDestroy(g);
    check(status, "graph instantiate");
    return exec;
  }

  cudaGraphExec_t graph(int steps, int rows) {
    const auto key = std::make_pair(steps, rows);
    if (auto it = graphs_.find(key); it != graphs_.end()) return it->second;
    cudaGraphExec_t exec = capture([&] {
      for (int s = 0; s < steps; ++s) enqueue_step(rows);
    });
    graphs_[key] = exec;
    return exec;
  }

  void launch(cudaGraphExec_t exec) { check(cudaGraphLaunch(exec, main_), "graph launch"); }

  StrategyContext context_;
  std::string device_name_;
  bool use_graph_ = true;
  bool kernel_timing_ = false;
  bool fuse_head_ = false;
  bool stage_input_ = false;
  EpochOrderAhead orders_;
  PinnedOrders pinned_orders_;  // an epoch's order on its way to order_
  bool timing_ = false;  // NNPAR_EPOCH_TIMING
  bool fuse_logits_ = false;
  std::string precision_ = "fp32";  // the option: fp32, tf32 or bf16
  bool tensor_cores() const { return precision_ != "fp32"; }
  const char* mma_name() const { return precision_ == "tf32" ? "TF32" : "BF16"; }
  bool fuse_logits_input_grad_ = false;  // fuse_logits=head
  const char* op_name_ = nullptr;  // kernel_timing: the kernel enqueue_step(rows, only) chose
  int graph_steps_ = 128;
  std::vector<int> sizes_;
  int batch_ = 0;
  cudaStream_t main_ = nullptr, side_ = nullptr;
  std::vector<cudaEvent_t> dgrad_done_;
  cudaEvent_t side_done_ = nullptr, start_ = nullptr, stop_ = nullptr;
  DeviceBuffer<std::uint8_t> pixels_;
  DeviceBuffer<std::int32_t> labels_;
  DeviceBuffer<std::uint32_t> order_;
  DeviceBuffer<float> params_, grads_, velocity_;
  DeviceBuffer<float> staged_;  // stage_input: the epoch's input rows as floats, in the epoch's order
  DeviceBuffer<DeviceStats> stats_;
  DeviceBuffer<double> softmax_scratch_;  // per-block partial sums of the multi-block softmax
  std::vector<DeviceBuffer<float>> acts_, grad_out_, fwd_scratch_, dgrad_scratch_;
  std::map<const float*, std::size_t> scratch_counters_;
  std::map<std::pair<int, int>, cudaGraphExec_t> graphs_;
  std::unique_ptr<gpu::PersistentTrainer> persistent_;  // set: the persistent variant runs the epochs
  std::unique_ptr<gpu::ResidentTrainer> resident_;      // set: the resident variant runs the epochs
  std::unique_ptr<gpu::ResidentMmaTrainer> resident_mma_;  // set: the resident variant on BF16 tensor cores
};

StrategyInfo cuda_info() {
  StrategyInfo info;
  info.name = "cuda";
  info.version = "1.8";
  info.description = "one CUDA GPU: own kernels (fp32, or TF32/BF16 tensor cores), the epoch replayed from CUDA graphs";
  info.parity = ParityClass::exact;
  info.uses_gpu = true;
  info.options = {
      {"precision", OptionType::string, std::string("fp32"),
       "arithmetic of the tiled products: fp32 (exact parity class); tf32 / bf16 (tensor cores, operands rounded to "
       "TF32 or BF16, fp32 sums and fp32 values in memory; approximate class; not with the persistent variant; "
       "of the two, only bf16 with the resident one; batches <= gemv_rows, weight gradients of batches <= 8 and the fused logits kernel stay fp32; "
       "the bf16 resident kernel runs every product on tensor cores and keeps the pixels and activations it exchanges in BF16; "
       "at batches <= 4 fp32 is faster: batch 1 on an H100 trains at 90k samples/s in fp32, 49k in bf16)",
       -1e300, 1e300, {"fp32", "tf32", "bf16"}},
      {"graph", OptionType::boolean, true, "capture the steps as CUDA graphs and replay them (false: plain launches)", -1e300, 1e300, {}},
      {"graph_steps", OptionType::integer, std::int64_t{128}, "steps captured in one graph (the epoch replays it)", 1,
       100000, {}},
      {"device", OptionType::integer, std::int64_t{0}, "CUDA device index", 0, 1024, {}},
      {"variant", OptionType::string, std::string("graph"),
       "graph: a CUDA graph of per-product kernels; persistent: one cooperative kernel per epoch with grid "
       "barriers between phases; resident: one thread-block cluster (sm_90) holds the model in its shared memory "
       "and runs the epoch in one launch (fp32: batch <= 16, models that fit; bf16: batch <= 128, 3 layers, equal "
       "hidden widths of 128 or 256, <= 32 classes); auto: resident where it fits and measured faster (fp32: "
       "batches <= 4; bf16: batches <= 64), else graph",
       -1e300, 1e300, {"graph", "persistent", "resident", "auto"}},
      {"resident_cluster", OptionType::integer, std::int64_t{0},
       "resident variant: blocks (SMs) of the cluster that holds the model, 8 or 16 (0: 16 where the device allows "
       "it and the model fits, else 8; under bf16 always hidden width / 16)", 0, 16, {}},
      {"persistent_blocks", OptionType::integer, std::int64_t{0},
       "grid size of the persistent kernel (0: one block per SM)", 0, 100000, {}},
      {"persistent_plan", OptionType::string, std::string("deep"),
       "tile shapes of the persistent kernel: deep (long reduction slabs, epilogue operands loaded ahead, the "
       "products of a phase planned together); classic (the first round's shapes)", -1e300, 1e300,
       {"deep", "classic"}},
      {"persistent_prefetch", OptionType::boolean, true,
       "persistent kernel: prefetch the next step's input rows into L2 during the current step", -1e300, 1e300, {}},
      {"persistent_spin_ns", OptionType::integer, std::int64_t{0},
       "persistent kernel: nanoseconds each block sleeps between polls of the grid barrier (0: spin)", 0, 100000, {}},
      {"stage_input", OptionType::boolean, true,
       "once per epoch, write the epoch's input rows as floats in its shuffled order (4 x features bytes per "
       "sample of device memory), so the first forward and last weight gradient read contiguous floats instead of "
       "gathering uint8 rows through the order in every step (graph variant)", -1e300, 1e300, {}},
      fuse_logits_option_spec(),
      {"fuse_head", OptionType::boolean, false,
       "softmax+cross-entropy and the last layer's input gradient in one kernel (<= 32 classes)", -1e300, 1e300, {}},
      {"kernel_timing", OptionType::boolean, false,
       "before the first epoch, time each kernel of one step alone in a graph and print microseconds to stderr",
       -1e300, 1e300, {}},
  };
  // The kernel launch options (shared with nccl-data), in their place before fuse_head.
  const auto kernel = cuda_kernel_option_specs();
  auto at = std::find_if(info.options.begin(), info.options.end(), [](const OptionSpec& o) { return o.name == "fuse_head"; });
  info.options.insert(at, kernel.begin(), kernel.end());
  return info;
}

}  // namespace

NNPAR_REGISTER_STRATEGY(CudaStrategy, cuda_info)
