// The persistent variant of the `cuda` strategy: one cooperative kernel runs many whole
// training steps, its blocks meeting at grid-wide barriers between the dependent phases of a
// step, instead of one launch (or graph node) per product. At the batch sizes this project
// trains, a step is latency-bound: a dependent graph node costs >= ~1.7 us, a grid barrier
// 0.7-2.2 us (measured, docs/results/2026-11-26-cuda-3.md). What keeps this kernel slower than
// the graph is the phases' own work (4-25 us each at batch 128), not the barriers.
//
// Tile plans (PersistentConfig::deep): "classic", the first round's four tile shapes with
// short reduction slabs, each product planned alone; "deep" (the default, 3-25% faster),
// longer slabs copied with cp.async into two shared-memory stages, epilogue operands loaded
// before the reduction, and the two products that share a phase planned together.
//
// Per step, for L Linear layers: L forward phases (the first gathers its uint8 input through
// the epoch order, the last also does softmax + cross-entropy when the classes fit in one
// tile), then L-1 input-gradient phases, the SGD update of layer i+1 sharing the phase that
// computes layer i's input gradient (the first point where nothing reads W[i+1] any more),
// and one last phase updating layers 1 and 0. No gradient is stored: the weight-gradient tile
// updates the weights in its epilogue. Every sum is over a fixed order inside one block (no
// float atomics), so runs repeat bit for bit on a given GPU.
#pragma once
#include <cstddef>
#include <cstdint>
#include <memory>
#include <string>
#include <vector>

#include <cuda_runtime_api.h>

#include "nnpar/cuda_epoch_kernel.hpp"

namespace nnpar::cuda {

inline constexpr int kPersistentMaxLayers = 8;

// sizes: 2..kPersistentMaxLayers+1 entries.
struct PersistentConfig : EpochKernelInputs {
  int blocks = 0;                    // grid size; 0: one block per SM
  // deep: plan with the deep tile shapes (a few long reduction slabs per product, epilogue
  // operands loaded ahead) and plan the products of a phase together; false: the first
  // round's four shapes, each product planned alone.
  bool deep = true;
  bool prefetch = true;              // L2-prefetch the next step's input rows a step ahead
  int spin_ns = 0;                   // grid barrier: nanoseconds of back-off between polls (0: spin)
};

// Owns the per-step workspace (activations, gradients, barrier counter) and the plan (tile
// shapes per product), both fixed at construction for the configured batch.
class PersistentTrainer {
 public:
  // Throws std::runtime_error when the model has too many layers or the kernel cannot be made
  // co-resident on the device (the cooperative launch would fail).
  explicit PersistentTrainer(const PersistentConfig& config);
  ~PersistentTrainer();
  PersistentTrainer(const PersistentTrainer&) = delete;
  PersistentTrainer& operator=(const PersistentTrainer&) = delete;

  // Enqueues `steps` SGD steps of `rows` (<= batch) rows each, for batches first_step,
  // first_step+1, ... of the order, as one cooperative launch on `stream`.
  void run(std::size_t first_step, int steps, int rows, cudaStream_t stream);

  int blocks() const;
  // Tile shape chosen for each product, for logs.
  std::string describe(int rows) const;

 private:
  void print_phase_clocks(const void* args, int steps, cudaStream_t stream);
  struct Impl;
  std::unique_ptr<Impl> impl_;
};

}  // namespace nnpar::cuda
