// Data parallelism over NCCL: one process per GPU, each with a full model replica running
// our CUDA kernels; gradients (sync) or weights (local SGD) are combined with NCCL allreduce
// on device buffers. The algorithm is plugins/common/data_parallel.hpp, shared with mpi-data;
// this file is the GPU engine.
//
// Overlap: the backward's input-gradient chain runs on the compute stream, the weight
// gradients of layers > 0 on a side stream (as in the cuda strategy); as soon as a layer's
// weight gradient is queued, its allreduce is queued on the communicator's stream behind it
// (an event), so the allreduce of layer i runs while layers i-1..0 are still being
// differentiated. The SGD update waits for all of them on the GPU; the host never blocks
// inside a step. (So the phase times the shared trainer records are host-side queueing
// times; the epoch's wall time, which the harness measures, is the real one.) Local SGD
// fuses each layer's update into its weight-gradient product.
//
// Graphs (option `graph`, default on): the shared trainer stages the epoch's samples once and
// hands whole chunks of steps to replay(), which captures them, NCCL allreduces included,
// into a CUDA graph the first time and replays it after. A device step counter, advanced by
// the softmax kernel, tells each replayed step where its samples are, so one graph serves
// every chunk of the epoch; the host queues a handful of graph launches per epoch instead of
// ~13 launches per step, which bounded small steps (docs/results/2026-11-26-data-parallel.md).
// The captured work is the same kernels and collectives in the same order as the plain
// launches, so the results are the same.
//
// Around the graphs, what the cuda strategy learned about an epoch's fixed costs
// (docs/results/2026-11-26-data-parallel-5.md): `stage_input` (default on) writes this rank's
// epoch input as floats once, in the order its steps read them, so the first forward and layer
// 0's weight gradient read contiguous rows instead of gathering; the order is uploaded from
// pinned memory, where it was copied while the device ran the previous epoch (stage_ahead;
// the trainer plans the next epoch then too); and the epoch's loss and accuracy are summed
// over ranks on the device and copied into pinned memory by one small recording queued behind
// the epoch's last graph, so the host waits once per epoch instead of three times.
// NNPAR_EPOCH_TIMING=1 prints where each epoch's time went (report_timing).
//
// The end of a sync step (what bounds it at 1024 rows per GPU): layer 0's weight gradient is
// the last product and its allreduce the last one, which nothing can hide. Three options aim
// at that tail: `symmetric` puts the gradients in an NCCL symmetric window (NCCL's
// symmetric-memory allreduce kernels), `layer0_chunks` splits layer 0's product into row
// blocks whose allreduces pipeline with the remaining blocks, and `bucket_update` queues each
// bucket's SGD update right behind its own allreduce. All are exact and off by default: on 2
// H100s none shortened the step, because every NCCL allreduce up to ~1 MB costs the same
// ~12 us floor and row blocks of this product are not cheaper than the whole
// (docs/results/2026-11-26-data-parallel-3.md).
//
// `reduce = "fused_p2p"` removes that tail's fixed costs instead: no NCCL call per step, but
// one kernel that waits on the device for every peer's "gradient ready" flag, reads the
// peers' gradients over P2P (CUDA IPC mappings, peer_reduce.hpp) and applies the update
// (kernels/cuda/peer_sgd.cu), with two gradient buffers alternating so nobody overwrites a
// gradient a peer still reads: on 2 H100s 185.8-189.5 vs 209.1 us per step at 1024 rows per
// GPU and 70.6-71.5 vs 76.2 us at 128, the same weights bit for bit
// (docs/results/2026-11-26-data-parallel-4.md). `reduce = "push_p2p"` moves the gradients the
// other way: each weight-gradient product also writes its values into the peers' memory as it
// runs, and the kernel sums local slots. It is the default (`auto`: wherever P2P works, sync
// without overlap or symmetric window): 163.4-164.6 vs 164.5-165.5 us per 1024-row step on 2
// H100s, 175.1-175.8 vs 192.2-193.0 us on 4 (docs/results/2026-11-27-data-parallel-7.md). The kernels' launch options are the cuda
// strategy's (plugins/common/cuda_kernel_options.hpp), chosen for the per-GPU shard's rows:
// PDL at <= 128 rows took local SGD p=64 at 128 rows from 62.0 to 57.5 us per step.
#include <algorithm>
#include <chrono>
#include <cstdint>
#include <cstdio>
#include <cstdlib>
#include <map>
#include <memory>
#include <set>
#include <stdexcept>
#include <string>
#include <utility>
#include <vector>

#include <cuda_runtime_api.h>

#include "../common/cuda_kernel_options.hpp"
#include "../common/data_parallel.hpp"
#include "../common/fused_sgd.hpp"
#include "../common/peer_reduce.hpp"
#include "../common/pinned_orders.hpp"
#include "nnpar/comm_mpi.hpp"
#include "nnpar/comm_nccl.hpp"
#include "nnpar/cuda_kernels.hpp"

namespace {

using namespace nnpar;
namespace gpu = nnpar::cuda;

void check(cudaError_t status, const char* what) {
  if (status != cudaSuccess) throw std::runtime_error(std::string("nccl-data: ") + what + ": " + cudaGetErrorString(status));
}

template <class T>
T* device_alloc(std::size_t count, const char* what) {
  void* p = nullptr;
  check(cudaMalloc(&p, std::max<std::size_t>(count, 1) * sizeof(T)), what);
  check(cudaMemset(p, 0, std::max<std::size_t>(count, 1) * sizeof(T)), what);
  return static_cast<T*>(p);
}

struct Stats {
  double loss_sum;
  unsigned long long correct;
  int step;  // the staged steps read so far this epoch (graphs); advanced by softmax_xent
};

class GpuReplica final : public ReplicaEngine {
 public:
  GpuReplica(const StrategyContext& context, cudaStream_t stream, int world, std::size_t graph_steps,
             int layer0_chunks, bool bucket_update, LogitsFusion fusion, bool stage_input)
      : context_(context), spec_(*context.model), sizes_(spec_.layer_sizes), stream_(stream),
        graph_steps_(graph_steps), fusion_(fusion) {
    chunks_ = std::clamp(layer0_chunks, 1, sizes_[1]);
    // Staged rows serve the recorded steps only, and layer 0's row blocks read the forward's
    // float copy of the batch, which a staged forward does not write.
    stage_input_ = stage_input && graph_steps_ > 0 && chunks_ == 1;
    bucket_update_ = bucket_update;
    const Dataset& data = *context.train_data;
    const int batch = context.train->batch_size;
    const int layers = spec_.linear_count();
    count_ = nnpar::parameter_count(spec_);
    pixels_ = device_alloc<std::uint8_t>(data.pixels.size(), "dataset");
    labels_ = device_alloc<std::int32_t>(data.labels.size(), "labels");
    check(cudaMemcpy(pixels_, data.pixels.data(), data.pixels.size(), cudaMemcpyHostToDevice), "upload dataset");
    check(cudaMemcpy(labels_, data.labels.data(), data.labels.size() * 4, cudaMemcpyHostToDevice), "upload labels");
    params_ = device_alloc<float>(count_, "parameters");
    grads_ = device_alloc<float>(count_, "gradients");
    if (context.train->sgd.momentum != 0.0f) velocity_ = device_alloc<float>(count_, "velocity");
    check(cudaMemcpy(params_, context.initial_parameters.data(), count_ * 4, cudaMemcpyHostToDevice), "upload parameters");
    const int max_rows = (batch + world - 1) / world;
    max_rows_ = std::max(max_rows, 1);
    for (auto& slot : slots_) {
      slot.device = device_alloc<std::uint32_t>(max_rows_, "indices");
      check(cudaMallocHost(reinterpret_cast<void**>(&slot.host), max_rows_ * sizeof(std::uint32_t)), "pinned indices");
      check(cudaEventCreateWithFlags(&slot.done, cudaEventDisableTiming), "event");
    }
    stats_ = device_alloc<Stats>(1, "stats");
    check(cudaMallocHost(reinterpret_cast<void**>(&stats_host_), sizeof(Stats)), "pinned stats");
    // The loss over many blocks, a warp per row, as the cuda strategy runs it: without scratch
    // softmax_xent falls back to one block, a thread per row, the largest part of the gap to
    // the cuda strategy at 1024 rows (docs/results/2026-11-26-data-parallel-3.md).
    // fuse_logits's kernel needs its own amount (docs/results/2026-11-26-data-parallel-4.md).
    if (const std::size_t n = std::max(gpu::softmax_xent_scratch(max_rows_, sizes_.back()),
                                       gpu::logits_softmax_xent_scratch(max_rows_, sizes_.back()));
        n > 0) {
      softmax_scratch_ = device_alloc<double>(n, "softmax scratch");
      allocations_.push_back(softmax_scratch_);
    }
    check(cudaStreamCreateWithFlags(&side_, cudaStreamNonBlocking), "stream");
    check(cudaEventCreateWithFlags(&fork_, cudaEventDisableTiming), "event");
    check(cudaEventCreateWithFlags(&updated_, cudaEventDisableTiming), "event");
    input_grad_done_.resize(layers, nullptr);
    for (auto& e : input_grad_done_) check(cudaEventCreateWithFlags(&e, cudaEventDisableTiming), "event");
    if (const char* t = std::getenv("NNPAR_EPOCH_TIMING"); t != nullptr && std::string(t) == "1" && graph_steps_ > 0) {
      timing_ = true;
      for (auto& e : timing_events_) check(cudaEventCreate(&e), "event");
    }
    if (graph_steps_ > 0) {
      staged_order_ = device_alloc<std::uint32_t>(data.count, "staged order");
      pinned_orders_.allocate(data.count);
    }
    for (int i = 0; i <= layers; ++i) acts_.push_back(device_alloc<float>(std::size_t(max_rows) * sizes_[i], "activations"));
    for (int i = 0; i < layers; ++i) grad_out_.push_back(device_alloc<float>(std::size_t(max_rows) * sizes_[i + 1], "gradients"));
    // Every shard size a step can have (full batches and the epoch's last one, split over
    // `world` ranks), for the split-K scratch of the forward and input-gradient products.
    std::set<int> rows;
    for (int total : {batch, int(data.count % std::size_t(batch))})
      for (int r = 0; r < world && total > 0; ++r) rows.insert(int(shard_range(total, r, world).size()));
    rows.erase(0);
    for (int i = 0; i < layers; ++i) {
      fwd_.push_back(scratch_for(gpu::GemmForm::forward, rows, sizes_[i + 1], sizes_[i]));
      dgrad_.push_back(i > 0 ? scratch_for(gpu::GemmForm::input_grad, rows, sizes_[i + 1], sizes_[i]) : gpu::GemmScratch{});
    }
    check(cudaDeviceSynchronize(), "setup");
  }
  ~GpuReplica() override {
    cudaStreamSynchronize(stream_);
    cudaStreamSynchronize(side_);
    for (cudaEvent_t e : input_grad_done_) cudaEventDestroy(e);
    cudaEventDestroy(fork_);
    cudaEventDestroy(updated_);
    cudaStreamDestroy(side_);
    for (auto& [key, exec] : graphs_) cudaGraphExecDestroy(exec);
    if (metrics_graph_ != nullptr) cudaGraphExecDestroy(metrics_graph_);
    for (cudaEvent_t e : timing_events_)
      if (e != nullptr) cudaEventDestroy(e);
    cudaFree(staged_order_);
    cudaFree(staged_input_);
    for (void* p : allocations_) cudaFree(p);
    for (float* p : acts_) cudaFree(p);
    for (float* p : grad_out_) cudaFree(p);
    cudaFree(pixels_);
    cudaFree(labels_);
    cudaFree(params_);
    if (!symmetric_ && !peer_) cudaFree(grads_);  // else the communicator's window or peer_'s
    cudaFree(velocity_);
    for (auto& slot : slots_) {
      cudaFree(slot.device);
      cudaFreeHost(slot.host);
      cudaEventDestroy(slot.done);
    }
    cudaFree(stats_);
    cudaFreeHost(stats_host_);
  }

  float* parameters() override { return params_; }
  float* gradients() override { return grads_; }
  std::size_t parameter_count() const override { return count_; }

  // The step's sample indices go through a ring of pinned/device buffers, so the host can
  // queue several steps ahead: a slot is reused only after the step that read it finished.
  void load_batch(std::span<const std::uint32_t> indices) override {
    check(cudaEventRecord(slots_[slot_].done, stream_), "event");  // the previous step's last reader
    slot_ = (slot_ + 1) % kSlots;
    staged_ = false;
    rows_ = int(indices.size());
    if (rows_ == 0) return;
    Slot& slot = slots_[slot_];
    // Polled after a moment, so a lost peer ends the run (the communicator's timeout).
    for (int spins = 0; cudaEventQuery(slot.done) == cudaErrorNotReady; ++spins)
      if (spins > 10000) {
        comm_->synchronize(stream_, "step");
        break;
      }
    check(cudaEventSynchronize(slot.done), "step");
    std::copy(indices.begin(), indices.end(), slot.host);
    check(cudaMemcpyAsync(slot.device, slot.host, rows_ * sizeof(std::uint32_t), cudaMemcpyHostToDevice, stream_),
          "upload indices");
    indices_ = slot.device;
  }

  void forward() override {
    if (rows_ == 0) return;
    const gpu::RowIndex index = row_index();
    const int layers = spec_.linear_count();
    for (int i = 0; i < layers; ++i) {
      const bool sigmoid = i + 1 < layers;
      if (fusion_.logits && i == layers - 1) break;  // in the softmax kernel (backward_on_streams)
      if (i == 0 && staged_ && stage_input_)
        gpu::linear_forward_staged(rows_, sizes_[1], sizes_[0], staged_rows(0), W(0), B(0), sigmoid, acts_[1], fwd_[0],
                                   stream_);
      else if (i == 0)
        gpu::linear_forward_gather(rows_, sizes_[1], sizes_[0], pixels_, context_.train_data->pixel_scale, index,
                                   acts_[0], W(0), B(0), sigmoid, acts_[1], fwd_[0], stream_);
      else
        gpu::linear_forward(rows_, sizes_[i + 1], sizes_[i], acts_[i], W(i), B(i), sigmoid, acts_[i + 1], fwd_[i],
                            stream_);
    }
  }

  void backward(float loss_scale, const std::function<void(int)>& after_layer) override {
    backward_on_streams(loss_scale, after_layer, false);
  }

  // Local SGD: each layer's update fused into its weight-gradient product, as in the cuda
  // strategy (sgd_one on the same values, so the same weights).
  bool backward_and_update(float loss_scale) override {
    backward_on_streams(loss_scale, {}, true);
    return true;
  }

  // The communicator's requests for layers > 0 order the side stream (their weight gradients
  // run there), so the update first joins the side stream back in.
  void sgd_step() override {
    join_side_stream();
    const SgdSettings& s = context_.train->sgd;
    gpu::sgd_update(count_, s.lr, s.momentum, s.weight_decay, params_, grads_, velocity_, stream_);
  }
  // Layer 0's weight gradient, the step's last product and largest bucket, in chunks_ row
  // blocks: each block's allreduce starts while the next block is computed, so only the last
  // block's allreduce stays exposed. Its bucket runs on to the end of the layer, taking the
  // bias gradient along (every block has written its part of it by then: same stream).
  std::vector<std::pair<std::size_t, std::size_t>> gradient_buckets() const override {
    if (chunks_ <= 1) return {};
    std::vector<std::pair<std::size_t, std::size_t>> buckets;
    const std::size_t in = std::size_t(sizes_[0]);
    for (int c = 0; c < chunks_; ++c) {
      const std::size_t begin = std::size_t(chunk_row(c)) * in;
      const std::size_t end = c + 1 < chunks_ ? std::size_t(chunk_row(c + 1)) * in : parameter_offset(spec_, 1);
      buckets.push_back({begin, end});
    }
    for (int i = 1; i < spec_.linear_count(); ++i) {
      const std::size_t end = i + 1 < spec_.linear_count() ? parameter_offset(spec_, i + 1) : count_;
      buckets.push_back({parameter_offset(spec_, i), end});
    }
    return buckets;
  }
  // Each bucket's update on the communicator's stream right behind its allreduce: the
  // layers > 0 are updated while layer 0 is still being differentiated and reduced, and
  // after the last allreduce only its own bucket's update remains. Their input gradients
  // (the only other readers of W) were queued before their weight gradients, which their
  // allreduces wait for.
  bool updates_after_reduce() const override { return bucket_update_; }
  void update_after_reduce(std::size_t begin, std::size_t end) override {
    const SgdSettings& s = context_.train->sgd;
    gpu::sgd_update(end - begin, s.lr, s.momentum, s.weight_decay, params_ + begin, grads_ + begin,
                    velocity_ != nullptr ? velocity_ + begin : nullptr, comm_->stream());
  }
  void join_updates() override {
    join_side_stream();
    check(cudaEventRecord(updated_, comm_->stream()), "event");
    check(cudaStreamWaitEvent(stream_, updated_, 0), "wait");
  }
  // Gradients in an NCCL symmetric window (see NcclCommunicator::allocate_symmetric); false
  // where NCCL or the machine cannot, and the plain buffer stays.
  bool use_symmetric_gradients() {
    void* window = comm_->allocate_symmetric(count_ * sizeof(float));
    if (window == nullptr) return false;
    cudaFree(grads_);
    grads_ = static_cast<float*>(window);
    symmetric_ = true;
    return true;
  }
  // reduce = "fused_p2p": the gradients alternate between peer's two buffers, one per step
  // parity, and the allreduce + update become one kernel (include/nnpar/cuda_peer_sgd.hpp).
  void use_peer_reduce(std::unique_ptr<PeerReduce> peer) {
    cudaFree(grads_);
    peer_ = std::move(peer);
    parity_ = 0;
    grads_ = peer_->gradients(parity_);
  }
  bool reduces_gradients() const override { return peer_ != nullptr; }
  void reduce_and_update() override {
    const SgdSettings& s = context_.train->sgd;
    peer_->update(parity_, s.lr, s.momentum, s.weight_decay, params_, velocity_, stream_);
    parity_ ^= 1;
    grads_ = peer_->gradients(parity_);
  }
  void scale_parameters(float factor) override { gpu::scale(count_, factor, params_, stream_); }
  // Never called: take_world_metrics always answers, with the sums over ranks made on the device.
  std::pair<double, double> take_metrics() override {
    throw std::logic_error("nccl-data: the epoch's metrics are read by take_world_metrics");
  }
  // A replayed graph that read the wrong samples would still train: make that loud.
  void check_steps(int ran) {
    const int expected = std::exchange(expected_steps_, -1);
    if (expected >= 0 && ran != expected)
      throw std::runtime_error("nccl-data: the graphs ran " + std::to_string(ran) + " steps with samples, expected " +
                               std::to_string(expected));
  }
  // The sums on the device, in place (the step counter stays this rank's), then one copy into
  // pinned memory, queued behind the epoch's work while the device still runs it: at the
  // epoch's end the host only waits once (docs/results/2026-11-26-data-parallel-5.md). With
  // graphs the three are one recording: two eager NCCL calls cost ~20 us each after the epoch's
  // last step, captured ones ~7 us (profiles/h100x2-calibrated.json); measured, the three take
  // 25-33 us of device time (docs/results/2026-11-27-data-parallel-6.md).
  void queue_world_metrics() override {
    if (timing_) check(cudaEventRecord(timing_events_[2], stream_), "event");
    auto queue = [this] {
      comm_->allreduce_async(&stats_->loss_sum, 1, DataType::f64, ReduceOp::sum)->wait();
      comm_->allreduce_async(&stats_->correct, 1, DataType::i64, ReduceOp::sum)->wait();
      check(cudaMemcpyAsync(stats_host_, stats_, sizeof(Stats), cudaMemcpyDeviceToHost, stream_), "read metrics");
    };
    if (graph_steps_ > 0) {
      if (metrics_graph_ == nullptr) metrics_graph_ = capture(queue);
      check(cudaGraphLaunch(metrics_graph_, stream_), "graph launch");
    } else {
      queue();
    }
    if (timing_) check(cudaEventRecord(timing_events_[3], stream_), "event");
    metrics_queued_ = true;
  }
  bool take_world_metrics(double* loss_sum, double* correct) override {
    if (!metrics_queued_) queue_world_metrics();
    metrics_queued_ = false;
    comm_->synchronize(stream_, "epoch metrics");
    if (timing_) report_timing();
    check(cudaMemsetAsync(stats_, 0, sizeof(Stats), stream_), "reset metrics");
    check_steps(stats_host_->step);
    *loss_sum = stats_host_->loss_sum;
    *correct = double(stats_host_->correct);
    return true;
  }
  void copy_parameters_to_host(std::span<float> out) override {
    comm_->synchronize(stream_, "read parameters");
    check(cudaMemcpy(out.data(), params_, std::min(out.size(), count_) * sizeof(float), cudaMemcpyDeviceToHost),
          "read parameters");
  }
  // Polled: the queued graphs hold the epoch's collectives, and a lost peer must end the run.
  void synchronize() override { comm_->synchronize(stream_, "end of epoch"); }

  std::size_t replay_steps() const override { return graph_steps_; }
  // The communicator whose compute stream backward() points at each layer's producer.
  void set_communicator(nccl::NcclCommunicator* comm) { comm_ = comm; }

  void stage_epoch(std::span<const std::uint32_t> indices, std::size_t stride, std::size_t reading_steps) override {
    if (timing_) {
      timing_host_start_ = std::chrono::steady_clock::now();
      check(cudaEventRecord(timing_events_[0], stream_), "event");
    }
    // The previous epoch ended with a synchronisation, so no graph still reads the order.
    // stage_ahead wrote these indices into pinned memory while the device ran that epoch (the
    // trainer passes the same vector to both).
    const std::uint32_t* pinned = pinned_orders_.begin_epoch(indices);
    if (!indices.empty())
      check(cudaMemcpyAsync(staged_order_, pinned, indices.size() * sizeof(std::uint32_t), cudaMemcpyHostToDevice,
                            stream_), "upload order");
    check(cudaMemsetAsync(&stats_->step, 0, sizeof(int), stream_), "reset step");
    // The graphs bake the stride and the staged input's address in; both are set by the first
    // epoch (every epoch stages as many samples, with the same batch size).
    const std::size_t features = std::size_t(sizes_[0]);
    const bool grow = stage_input_ && indices.size() * features > staged_input_floats_;
    if (stride != stride_ || grow) {
      for (auto& [key, exec] : graphs_) cudaGraphExecDestroy(exec);
      graphs_.clear();
      stride_ = stride;
    }
    if (grow) {
      cudaFree(staged_input_);
      staged_input_ = nullptr;
      staged_input_floats_ = 0;
      const std::size_t floats = indices.size() * features;
      if (cudaMalloc(reinterpret_cast<void**>(&staged_input_), floats * sizeof(float)) != cudaSuccess) {
        cudaGetLastError();
        throw std::runtime_error("nccl-data: stage_input needs " + std::to_string((floats * sizeof(float)) >> 20) +
                                 " MiB of device memory for this rank's epoch input as floats; set "
                                 "strategy.nccl-data.stage_input = false");
      }
      staged_input_floats_ = floats;
    }
    // Once per epoch, ahead of the steps on the same stream: this rank's samples as floats in
    // the order its steps read them (the same values the gathering forward computes).
    if (stage_input_ && !indices.empty())
      gpu::stage_epoch_input(indices.size(), sizes_[0], pixels_, context_.train_data->pixel_scale, staged_order_,
                             staged_input_, stream_);
    if (timing_) check(cudaEventRecord(timing_events_[1], stream_), "event");
    expected_steps_ = int(reading_steps);
  }

  // The buffer the next stage_epoch uploads from was last read by the previous epoch's
  // upload, which that epoch's synchronisation finished.
  void stage_ahead(std::span<const std::uint32_t> indices) override {
    if (graph_steps_ > 0) pinned_orders_.write_ahead(indices);
  }

  void load_staged(int rows) override {
    staged_ = true;
    rows_ = rows;
  }

  // With peer_, a recording bakes in the gradient buffer of each of its steps, so it is kept
  // per starting parity, and a replay moves the parity on as the recording did.
  void replay(const std::string& key, const std::function<void()>& record) override {
    const std::string full = peer_ ? key + " p" + std::to_string(parity_) : key;
    auto it = graphs_.find(full);
    if (it == graphs_.end()) {
      it = graphs_.emplace(full, capture(record)).first;
      parity_after_[full] = parity_;
    } else if (peer_) {
      parity_ = parity_after_.at(full);
      grads_ = peer_->gradients(parity_);
    }
    check(cudaGraphLaunch(it->second, stream_), "graph launch");
  }

 private:
  // The same schedule as the cuda strategy: the input-gradient chain and layer 0's weight
  // gradient on the compute stream, the other layers' weight gradients on the side stream as
  // soon as their input gradient is queued, so the weight-gradient products overlap the chain
  // and each other instead of queueing behind one another (measured: 233 us vs 191 us per
  // step at 1024 rows on one H100 with the earlier all-weight-gradients-on-one-stream order).
  // after_layer(i) sees the stream that produced layer i's gradients as the communicator's
  // compute stream, so each allreduce waits for exactly its layer.
  void backward_on_streams(float loss_scale, const std::function<void(int)>& after_layer, bool fused_update) {
    const int layers = spec_.linear_count();
    if (rows_ == 0) {
      // No samples: zero gradients still take part in every allreduce (and every peer's sum).
      // The side stream joins too, as in a step with samples: sgd_step joins it back, and in a
      // recording a join from a stream the capture never forked waits outside the graph.
      check(cudaEventRecord(fork_, stream_), "event");
      check(cudaStreamWaitEvent(side_, fork_, 0), "wait");
      check(cudaMemsetAsync(grads_, 0, count_ * sizeof(float), stream_), "zero gradients");
      if (peer_) gpu::zero_gradient_copies(count_, peer_->copies(parity_, 0), stream_);
      if (after_layer) {  // in backward()'s order: layers n-1..1, then layer 0's chunks
        for (int i = layers - 1; i > 0; --i) after_layer(bucket_of_layer(i));
        for (int c = 0; c < chunks_; ++c) after_layer(c);
      }
      return;
    }
    const gpu::RowIndex index = row_index();
    // The loss's forward and backward are one kernel; its metrics are read once per epoch. It
    // is the step's last reader of the sample indices, so it moves the staged step on.
    if (fusion_.logits) {
      const int last = layers - 1;
      if (!gpu::logits_softmax_xent(rows_, sizes_.back(), sizes_[last], acts_[last], W(last), B(last), acts_[layers],
                                    labels_, index, loss_scale, grad_out_[last], &stats_->loss_sum, &stats_->correct,
                                    staged_, stream_, softmax_scratch_,
                                    fusion_.input_grad ? grad_out_[last - 1] : nullptr, true))
        throw std::runtime_error("nccl-data: fuse_logits does not apply to this shape");
    } else {
      gpu::softmax_xent(rows_, sizes_.back(), acts_[layers], labels_, index, loss_scale, nullptr, grad_out_[layers - 1],
                        &stats_->loss_sum, &stats_->correct, staged_, stream_, softmax_scratch_);
    }
    for (int i = layers - 1; i >= 0; --i) {
      float* dW = grads_ + parameter_offset(spec_, i);
      float* db = dW + std::size_t(sizes_[i + 1]) * sizes_[i];
      const gpu::FusedSgd sgd =
          fused_update ? fused_sgd(context_.train->sgd, W(i), sizes_[i + 1], sizes_[i],
                                   velocity_ != nullptr ? velocity_ + parameter_offset(spec_, i) : nullptr)
                       : gpu::FusedSgd{};
      const gpu::GradientCopies copies = pushed_copies(i);
      if (i > 0) {
        // The input gradient reads W(i), so a fused update of W(i) must start after it.
        if (!(fusion_.input_grad && i == layers - 1))  // else the softmax kernel wrote it
          gpu::linear_input_grad(rows_, sizes_[i + 1], sizes_[i], grad_out_[i], W(i), acts_[i], grad_out_[i - 1],
                                 dgrad_[i], stream_);
        check(cudaEventRecord(input_grad_done_[i], stream_), "event");
        check(cudaStreamWaitEvent(side_, input_grad_done_[i], 0), "wait");
        gpu::linear_weight_grad(rows_, sizes_[i + 1], sizes_[i], grad_out_[i], acts_[i], false, dW, db, sgd, side_,
                                copies);
        if (after_layer) {
          comm_->set_compute_stream(side_);
          after_layer(bucket_of_layer(i));
          comm_->set_compute_stream(stream_);
        }
      } else if (after_layer && chunks_ > 1) {
        for (int c = 0; c < chunks_; ++c) {
          gpu::linear_weight_grad_rows(rows_, sizes_[1], sizes_[0], chunk_row(c), chunk_row(c + 1), grad_out_[0],
                                       acts_[0], false, dW, db, sgd, stream_);
          after_layer(c);
        }
      } else {
        if (staged_ && stage_input_)  // the softmax kernel has moved the step counter on
          gpu::linear_weight_grad_staged(rows_, sizes_[1], sizes_[0], grad_out_[0], staged_rows(-1), false, dW, db, sgd,
                                         stream_, copies);
        else
          gpu::linear_weight_grad(rows_, sizes_[1], sizes_[0], grad_out_[0], acts_[0], false, dW, db, sgd, stream_,
                                  copies);
        if (after_layer) after_layer(0);
      }
    }
    join_side_stream();
  }

  // push_p2p: layer i's gradient also goes into this rank's slot in every peer's memory (the
  // slots of this step's parity). None otherwise.
  gpu::GradientCopies pushed_copies(int i) const {
    if (!peer_) return {};
    return peer_->copies(parity_, parameter_offset(spec_, i), std::size_t(sizes_[i + 1]) * sizes_[i]);
  }

  // NNPAR_EPOCH_TIMING=1 (replayed epochs): where an epoch's time goes, on stderr, every rank.
  // Device: the upload and staging, the recorded steps, the metrics; host: from stage_epoch
  // to the metrics read, and the part of it the device spent idle.
  void report_timing() {
    const double host_us =
        1e6 * std::chrono::duration<double>(std::chrono::steady_clock::now() - timing_host_start_).count();
    float ms[3] = {};
    for (int k = 0; k < 3; ++k)
      check(cudaEventElapsedTime(&ms[k], timing_events_[k], timing_events_[k + 1]), "event time");
    const double device_us = 1e3 * (ms[0] + ms[1] + ms[2]);
    std::fprintf(stderr,
                 "[nccl-data timing] rank %d: stage %.1f us, steps %.1f us, metrics %.1f us on the device; "
                 "%.1f us on the host from stage_epoch to the metrics, %.1f us of it not on the device\n",
                 comm_->rank(), 1e3 * ms[0], 1e3 * ms[1], 1e3 * ms[2], host_us, host_us - device_us);
  }

  // Rows of W0 where layer 0's chunk c begins (c = chunks_: the end).
  int chunk_row(int c) const { return int(std::int64_t(sizes_[1]) * c / chunks_); }
  // The bucket index of layer i's gradients (gradient_buckets' order).
  int bucket_of_layer(int i) const { return chunks_ <= 1 ? i : i == 0 ? 0 : chunks_ - 1 + i; }

  void join_side_stream() {
    if (spec_.linear_count() < 2) return;
    check(cudaEventRecord(fork_, side_), "event");
    check(cudaStreamWaitEvent(stream_, fork_, 0), "wait");
  }

  // The current step's rows of the staged input; step_delta -1 after the softmax kernel.
  gpu::StagedRows staged_rows(int step_delta) const {
    return {staged_input_, &stats_->step, int(stride_), step_delta};
  }

  gpu::RowIndex row_index() const {
    if (staged_) return {staged_order_, &stats_->step, int(stride_)};
    return {indices_, nullptr, rows_};
  }

  // Relaxed: the communicator creates and records events while the streams are captured, and
  // NCCL may set up resources for captured collectives; only this thread captures.
  cudaGraphExec_t capture(const std::function<void()>& record) {
    check(cudaStreamBeginCapture(stream_, cudaStreamCaptureModeRelaxed), "begin capture");
    try {
      record();
    } catch (...) {
      cudaGraph_t broken = nullptr;
      cudaStreamEndCapture(stream_, &broken);
      if (broken != nullptr) cudaGraphDestroy(broken);
      staged_ = false;
      throw;
    }
    staged_ = false;
    cudaGraph_t graph = nullptr;
    check(cudaStreamEndCapture(stream_, &graph), "end capture");
    cudaGraphExec_t exec = nullptr;
    const cudaError_t status = cudaGraphInstantiate(&exec, graph, 0);
    cudaGraphDestroy(graph);
    check(status, "graph instantiate");
    return exec;
  }

  float* W(int i) { return params_ + parameter_offset(spec_, i); }
  float* B(int i) { return W(i) + std::size_t(sizes_[i + 1]) * sizes_[i]; }

  gpu::GemmScratch scratch_for(gpu::GemmForm form, const std::set<int>& rows, int out, int in) {
    std::size_t floats = 0, counters = 0;
    gpu::gemm_scratch_size(form, rows, out, in, &floats, &counters);
    if (floats == 0) return {};
    float* partials = device_alloc<float>(floats, "gemm scratch");
    unsigned* count = device_alloc<unsigned>(counters, "gemm counters");
    allocations_.push_back(partials);
    allocations_.push_back(count);
    return {partials, count};
  }

  StrategyContext context_;
  const ModelSpec& spec_;
  std::vector<int> sizes_;
  cudaStream_t stream_;
  std::size_t count_ = 0;
  std::uint8_t* pixels_ = nullptr;
  std::int32_t* labels_ = nullptr;
  float *params_ = nullptr, *grads_ = nullptr, *velocity_ = nullptr;
  struct Slot {
    std::uint32_t* device = nullptr;
    std::uint32_t* host = nullptr;
    cudaEvent_t done = nullptr;
  };
  static constexpr int kSlots = 8;
  Slot slots_[kSlots];
  int slot_ = 0, max_rows_ = 1;
  std::uint32_t* indices_ = nullptr;
  Stats* stats_ = nullptr;
  Stats* stats_host_ = nullptr;  // pinned: the epoch's summed metrics land here
  bool metrics_queued_ = false;
  double* softmax_scratch_ = nullptr;  // the multi-block softmax's ticket and partial sums
  std::vector<float*> acts_, grad_out_;
  std::vector<gpu::GemmScratch> fwd_, dgrad_;
  std::vector<void*> allocations_;
  int rows_ = 0;
  cudaStream_t side_ = nullptr;  // the weight gradients of layers > 0
  cudaEvent_t fork_ = nullptr;    // joins the side stream back into the compute stream
  cudaEvent_t updated_ = nullptr;  // the per-bucket updates on the communicator's stream are done
  int chunks_ = 1;                 // layer 0's weight gradient in this many row blocks (sync)
  bool bucket_update_ = false, symmetric_ = false;
  nccl::NcclCommunicator* comm_ = nullptr;
  std::vector<cudaEvent_t> input_grad_done_;
  // Graphs: 0 steps = plain launches.
  std::size_t graph_steps_ = 0, stride_ = 0;
  LogitsFusion fusion_;  // fuse_logits, resolved for this model
  std::uint32_t* staged_order_ = nullptr;
  PinnedOrders pinned_orders_;  // the staged order on its way to staged_order_ (with graphs)
  bool stage_input_ = false;       // recorded steps read staged_input_ instead of gathering
  float* staged_input_ = nullptr;  // this rank's epoch input as floats, in staged_order_'s order
  std::size_t staged_input_floats_ = 0;
  bool staged_ = false;  // the current step reads the staged order at the device step counter
  int expected_steps_ = -1;
  std::map<std::string, cudaGraphExec_t> graphs_;
  cudaGraphExec_t metrics_graph_ = nullptr;  // queue_world_metrics, with graphs
  bool timing_ = false;                      // NNPAR_EPOCH_TIMING
  cudaEvent_t timing_events_[4] = {};
  std::chrono::steady_clock::time_point timing_host_start_;
  std::map<std::string, int> parity_after_;  // peer_: the step parity after each recording
  std::unique_ptr<PeerReduce> peer_;         // reduce = "fused_p2p" or "push_p2p" (sync)
  int parity_ = 0;                           // peer_: which gradient buffer this step writes
};

class NcclDataStrategy final : public Strategy {
 public:
  ~NcclDataStrategy() override {
    trainer_.reset();
    cudaFree(metrics_);
    if (stream_ != nullptr) cudaStreamDestroy(stream_);
  }
  void setup(const StrategyContext& context) override {
    int devices = 0;
    if (cudaGetDeviceCount(&devices) != cudaSuccess || devices == 0)
      throw std::runtime_error("nccl-data: no CUDA device available");
    mpi::initialize();
    const int device = nccl::local_rank();
    auto comm = nccl::world(device);
    check(cudaStreamCreateWithFlags(&stream_, cudaStreamNonBlocking), "stream");
    comm->set_compute_stream(stream_);
    cudaDeviceProp props{};
    check(cudaGetDeviceProperties(&props, device), "properties");
    ranks_ = comm->size();
    device_ = std::string(props.name) + " x" + std::to_string(ranks_);
    mode_ = context.options->get_string("mode");
    // The replica's kernels launch as the cuda strategy's do for a step of this many rows
    // (pdl auto: on at <= 128 rows per GPU). Before the engine sizes its split-K scratch.
    const int shard_rows = (context.train->batch_size + ranks_ - 1) / ranks_;
    apply_cuda_kernel_options(*context.options, props.major, shard_rows);
    // auto: the fused reduce wherever it can run (sync, one bucket, plain gradient memory).
    const std::string& reduce = context.options->get_string("reduce");
    const bool explicit_fused = reduce == "fused_p2p" || reduce == "push_p2p";
    const bool push = reduce == "push_p2p" || reduce == "auto";
    const std::string fused_name = push ? "push_p2p" : "fused_p2p";
    const bool fused = mode_ == "sync" && (explicit_fused || (reduce == "auto" && !context.options->get_bool("overlap") &&
                                                              !context.options->get_bool("symmetric")));
    if (fused && context.options->get_bool("overlap"))
      throw std::runtime_error("nccl-data: reduce = \"" + fused_name +
                               "\" reduces once after the backward; overlap = true needs reduce = \"nccl\"");
    if (fused && context.options->get_bool("symmetric"))
      throw std::runtime_error("nccl-data: symmetric = true is a window for the NCCL allreduce; it needs reduce = "
                               "\"nccl\", not \"" + fused_name + "\"");
    const bool graph = context.options->get_bool("graph");
    const auto graph_steps = std::size_t(context.options->get_int("graph_steps"));
    // Row blocks only pay where their allreduces overlap the rest of the product.
    const bool overlapped_sync = mode_ == "sync" && context.options->get_bool("overlap");
    auto engine = std::make_unique<GpuReplica>(context, stream_, ranks_, graph ? graph_steps : 0,
                                               overlapped_sync ? int(context.options->get_int("layer0_chunks")) : 1,
                                               context.options->get_bool("bucket_update"),
                                               resolve_logits_fusion(context.options->get_string("fuse_logits"),
                                                                     context.model->layer_sizes, false, "nccl-data"),
                                               context.options->get_bool("stage_input"));
    engine->set_communicator(comm.get());
    // Before the trainer's warm-up collectives, which already run on the gradient buffer.
    if (context.options->get_bool("symmetric") && mode_ == "sync") symmetric_ = engine->use_symmetric_gradients();
    if (fused) {
      auto peer = std::make_unique<PeerReduce>(engine->parameter_count(), device, push);
      if (peer->available()) {
        engine->use_peer_reduce(std::move(peer));
        reduce_ = fused_name;
      } else {
        reduce_ = "NCCL allreduce; " + fused_name + " unavailable: " + peer->reason();
        if (explicit_fused && comm->rank() == 0)
          std::fprintf(stderr, "nccl-data: reduce = \"%s\" is not possible here (%s); using the NCCL allreduce\n",
                       fused_name.c_str(), peer->reason().c_str());
      }
    }
    nccl_ = comm.get();
    trainer_ = std::make_unique<DataParallelTrainer>(context, std::move(comm), std::move(engine));
    host_comm_ = mpi::world();
    // The epoch's metrics are summed over NCCL too, not MPI: the host then only ever waits in
    // the communicator's polled calls, so a stopped peer ends the run after NNPAR_COMM_TIMEOUT
    // even with the MPI heartbeat watchdog off (an MPI_Allreduce would wait for ever).
    check(cudaMalloc(reinterpret_cast<void**>(&metrics_), kMetrics * sizeof(double)), "metrics buffer");
    trainer_->host_reduce_ = [this](double* values, std::size_t n) {
      if (n > kMetrics) return host_comm_->allreduce(values, n);
      check(cudaMemcpyAsync(metrics_, values, n * sizeof(double), cudaMemcpyHostToDevice, stream_), "metrics");
      nccl_->allreduce(metrics_, n, DataType::f64, ReduceOp::sum);  // ordered after stream_, polled
      check(cudaMemcpy(values, metrics_, n * sizeof(double), cudaMemcpyDeviceToHost), "metrics");
    };
  }
  EpochReport train_epoch(int epoch) override { return trainer_->train_epoch(epoch); }
  void get_parameters(std::span<float> out) override { trainer_->get_parameters(out); }
  std::string device_description() const override {
    return device_ + " (NCCL, " + mode_ + (symmetric_ ? ", symmetric window" : "") +
           (reduce_.empty() ? "" : ", " + reduce_) + ")";
  }
  std::optional<ParityClass> parity_class() const override {
    return mode_ == "sync" ? ParityClass::exact : ParityClass::approximate;
  }

 private:
  cudaStream_t stream_ = nullptr;
  std::unique_ptr<DataParallelTrainer> trainer_;
  std::unique_ptr<Communicator> host_comm_;
  static constexpr std::size_t kMetrics = 8;
  nccl::NcclCommunicator* nccl_ = nullptr;  // owned by the trainer
  double* metrics_ = nullptr;
  int ranks_ = 1;
  bool symmetric_ = false;
  std::string device_, mode_, reduce_;
};

StrategyInfo nccl_data_info() {
  StrategyInfo info;
  info.name = "nccl-data";
  info.version = "1.9";
  info.description = "data parallel over GPUs (one rank per GPU) with NCCL: synchronous gradients or local SGD";
  info.parity = ParityClass::exact;  // for mode = sync; local_sgd reports approximate at run time
  info.uses_gpu = true;
  info.needs_mpi = true;
  info.min_world_size = 1;
  info.max_world_size = 0;
  info.options = data_parallel_options();
  // One allreduce after the backward beat per-layer overlap on 2 H100s and 2 H200s at 128 and
  // 1024 rows per GPU (docs/results/2026-11-26-data-parallel-3.md): each NCCL allreduce up to
  // ~1 MB costs the same ~12 us, so four of them cost more than they hide. mpi-data keeps
  // the shared default (on).
  for (OptionSpec& o : info.options)
    if (o.name == "overlap") o.default_value = false;
  info.options.push_back({"reduce", OptionType::string, std::string("auto"),
                          "sync: how the gradients are summed. nccl: an NCCL allreduce, then the SGD update; "
                          "fused_p2p: one kernel per step reads every peer's gradient over P2P (CUDA IPC, one "
                          "host) and applies the update; push_p2p: the weight-gradient products also write "
                          "their values into every peer's memory as they run, and that kernel reads local memory "
                          "only. Both need overlap = false, symmetric = false and fall back to nccl where P2P is "
                          "missing; auto: push_p2p where those hold, else nccl",
                          -1e300, 1e300, {"auto", "nccl", "fused_p2p", "push_p2p"}});
  info.options.push_back({"graph", OptionType::boolean, true,
                          "capture chunks of steps (kernels and NCCL collectives) as CUDA graphs and replay them "
                          "(false: plain launches every step)", -1e300, 1e300, {}});
  info.options.push_back({"graph_steps", OptionType::integer, std::int64_t{128},
                          "most steps captured in one graph (the epoch replays it)", 1, 100000, {}});
  info.options.push_back({"symmetric", OptionType::boolean, false,
                          "sync: gradients in an NCCL symmetric-memory window (ncclCommWindowRegister), so the "
                          "allreduces can use NCCL's low-latency symmetric kernels; plain memory where it fails",
                          -1e300, 1e300, {}});
  info.options.push_back({"layer0_chunks", OptionType::integer, std::int64_t{1},
                          "sync with overlap: layer 0's weight gradient in this many row blocks, each block's "
                          "allreduce overlapping the next block's product", 1, 64, {}});
  info.options.push_back({"bucket_update", OptionType::boolean, false,
                          "sync with overlap: each bucket's SGD update queued right behind its allreduce instead "
                          "of one update after all of them", -1e300, 1e300, {}});
  for (const OptionSpec& o : cuda_kernel_option_specs()) info.options.push_back(o);
  // The cuda strategy's fusion of the logits into the softmax kernel, by the same rule: without
  // it the replica's step is ~7 us longer than cuda's at 128 rows.
  info.options.push_back(fuse_logits_option_spec());
  info.options.push_back({"stage_input", OptionType::boolean, true,
                          "with graphs: once per epoch, write this rank's samples as floats in the order its steps "
                          "read them, so the first forward and layer 0's weight gradient read contiguous rows "
                          "(the cuda strategy's option; the same values; not with layer0_chunks > 1)",
                          -1e300, 1e300, {}});
  return info;
}

}  // namespace

NNPAR_REGISTER_STRATEGY(NcclDataStrategy, nccl_data_info)
