// The resident variant of the `cuda` strategy: one thread-block cluster (8 or 16 blocks on
// 8 or 16 SMs, Hopper) keeps the whole model in its shared memory for a run of steps and
// trains batch after batch without leaving the kernel. Each block owns a slice of every
// layer's output neurons (their weight rows, biases and activations); after a layer the owners
// push their outputs into every block's shared memory (distributed shared memory) with
// st.async stores that count their bytes on an mbarrier in the receiver, and each block waits
// until its own copy is complete; the backward pushes each block's partial input gradient to
// the owners of those inputs the same way, who add the C partials in rank order. The weights are read
// from and written back to global memory once per run, not once per step.
//
// Made for small batches, where the graph variant's step is a chain of ~7 dependent kernels of
// >= 1.7 us each while the arithmetic is tiny (batch 1: ~0.8 MFLOP a step). It needs the
// model's parameters, the batch's activations and the exchange buffers to fit in C blocks'
// shared memory (784-256-256-26: batch <= 15 with C = 16), at most kResidentMaxLayers Linear
// layers, at most 32 classes and at most kResidentMaxRows rows.
#pragma once
#include <cstddef>
#include <cstdint>
#include <memory>
#include <string>
#include <vector>

#include <cuda_runtime_api.h>

#include "nnpar/cuda_epoch_kernel.hpp"

namespace nnpar::cuda {

inline constexpr int kResidentMaxLayers = 4;
inline constexpr int kResidentMaxRows = 16;
inline constexpr int kResidentMaxCluster = 16;

// sizes: 2..kResidentMaxLayers+1 entries; batch <= kResidentMaxRows.
struct ResidentConfig : EpochKernelInputs {
  int cluster = 0;                   // blocks in the cluster: 8 or 16; 0 = 16 where the device allows it, else 8
};

class ResidentTrainer {
 public:
  // Throws std::runtime_error, naming the limit, when the model or batch does not fit (layers,
  // classes, rows, shared memory per block) or the device cannot run a cluster of that size.
  explicit ResidentTrainer(const ResidentConfig& config);
  ~ResidentTrainer();
  ResidentTrainer(const ResidentTrainer&) = delete;
  ResidentTrainer& operator=(const ResidentTrainer&) = delete;

  // Enqueues `steps` SGD steps of `rows` (<= batch) rows each, for batches first_step,
  // first_step+1, ... of the order, as one cluster launch on `stream`.
  void run(std::size_t first_step, int steps, int rows, cudaStream_t stream);

  int cluster() const;
  std::size_t shared_bytes() const;  // per block

 private:
  struct Impl;
  std::unique_ptr<Impl> impl_;
};

// The resident variant on BF16 tensor cores (kernels/cuda/resident_mma.cu), for batches of up
// to 128 rows: one cluster of hidden / 16 blocks (16 neurons of each hidden layer a block) holds
// a 3-layer MLP with equal hidden widths of 128 or 256 and <= 32 classes; every product is an
// mma.m16n8k16 with BF16 operands and fp32 sums (the approximate parity class, as the graph
// variant's precision = "bf16"). Four cluster barriers a step; the next batch's pixels are
// staged (uint8, in the order the products read them) in global memory a step ahead.
class ResidentMmaTrainer {
 public:
  // Throws std::runtime_error, naming the limit, when the model or batch is outside the kernel's
  // shapes, does not fit in shared memory or the device cannot run the cluster.
  explicit ResidentMmaTrainer(const EpochKernelInputs& config);
  ~ResidentMmaTrainer();
  ResidentMmaTrainer(const ResidentMmaTrainer&) = delete;
  ResidentMmaTrainer& operator=(const ResidentMmaTrainer&) = delete;

  // As ResidentTrainer::run.
  void run(std::size_t first_step, int steps, int rows, cudaStream_t stream);

  int cluster() const;
  std::size_t shared_bytes() const;  // per block

 private:
  struct Impl;
  std::unique_ptr<Impl> impl_;
};

}  // namespace nnpar::cuda
