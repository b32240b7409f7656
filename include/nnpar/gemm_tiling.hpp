// How the CUDA products (kernels/cuda/mlp_kernels.cu) cut a product into thread blocks: a
// function of the shape and two launch options alone. Plain C++ (no CUDA headers), so that
// the cost model (harness/perf_model.cpp), which never links CUDA, counts the same blocks the
// kernels launch.
#pragma once
#include <algorithm>
#include <cstddef>

namespace nnpar {

// Products are planned for this many blocks. A constant (the H100's SM count) rather than
// the device's, so that the split-K factor, hence the summation order and the result,
// depend on the shape alone.
inline constexpr int kGemmTargetBlocks = 132;
// K tiles per stage of a GEMM block (KernelOptions::k_stage > 1, and always on tensor cores).
inline constexpr int kGemmStage = 4;
// Forward and input-gradient products of at most this many rows may use the warp-per-output
// (GEMV-style) kernels (KernelOptions::gemv_max_rows caps it further).
inline constexpr int kGemvMaxRows = 8;

// Output tiles of bi x bj, K in slices of k_slice: grid (tiles_j, tiles_i, slices).
struct GemmTiling {
  bool big = false;  // 64x64x16 tiles, else 32x32x32
  int bi = 32, bj = 32, bk = 32;
  int tiles_i = 0, tiles_j = 0, slices = 1, k_slice = 0;
  int blocks() const { return tiles_i * tiles_j * slices; }
  std::size_t scratch_floats() const {
    return slices > 1 ? std::size_t(tiles_i) * tiles_j * slices * bi * bj : 0;
  }
  std::size_t scratch_counters() const { return slices > 1 ? std::size_t(tiles_i) * tiles_j : 0; }
};

// C[I,J] = sum over K. split_blocks: KernelOptions::split_blocks (0: kGemmTargetBlocks);
// tensor_cores: the product runs on tensor cores (its slices are kept deeper).
inline GemmTiling gemm_tiling(int I, int J, int K, bool allow_split, int split_blocks = 0, bool tensor_cores = false) {
  auto ceil_div = [](int a, int b) { return (a + b - 1) / b; };
  GemmTiling p;
  // 64x64 tiles only when they alone cover the chip: otherwise more, smaller blocks finish sooner.
  if (ceil_div(I, 64) * ceil_div(J, 64) >= kGemmTargetBlocks) {
    p.big = true;
    p.bi = p.bj = 64;
    p.bk = 16;
  }
  p.tiles_i = ceil_div(I, p.bi);
  p.tiles_j = ceil_div(J, p.bj);
  const int tiles = p.tiles_i * p.tiles_j;
  const int k_tiles = std::max(1, ceil_div(K, p.bk));
  int slices = 1;
  const int split_target = split_blocks > 0 ? split_blocks : kGemmTargetBlocks;
  if (allow_split && tiles < split_target) {
    // Enough slices to fill the chip, but each at least two K tiles deep (shorter slices
    // spend more on the fix-up than they save). On tensor cores a K tile costs an eighth of
    // the instructions, so a slice must be two stages deep: at batch 128, width 256, the 8-tile
    // products then run unsplit on 32 blocks, +13% per step on an H200
    // (docs/results/2026-11-27-cuda-tf32.md).
    const int min_slice_tiles = tensor_cores ? 2 * kGemmStage : 2;
    slices = std::min(ceil_div(split_target, tiles), std::max(1, k_tiles / min_slice_tiles));
  }
  p.k_slice = ceil_div(k_tiles, slices) * p.bk;
  p.slices = std::max(1, ceil_div(K, p.k_slice));
  return p;
}

// The three products of a Linear layer with `rows` rows, `in` inputs and `out` outputs, as the
// kernels' entry points plan them (M, N, K in cuda_kernels.hpp's names: M = rows, N = out,
// K = in). Weight gradients are never split: the bias gradient and the fused SGD need the
// whole batch in one block. split_blocks and tensor_cores as gemm_tiling's.
inline GemmTiling forward_tiling(int rows, int out, int in, bool split, int split_blocks = 0, bool tensor_cores = false) {
  return gemm_tiling(rows, out, in, split, split_blocks, tensor_cores);
}
inline GemmTiling weight_grad_tiling(int rows, int out, int in) { return gemm_tiling(out, in, rows, false); }
inline GemmTiling input_grad_tiling(int rows, int out, int in, bool split, int split_blocks = 0,
                                    bool tensor_cores = false) {
  return gemm_tiling(rows, in, out, split, split_blocks, tensor_cores);
}

// Blocks of the input-gradient launch with the default options, GEMV path included (a
// 256-thread block per 32 outputs of a row).
inline int input_grad_blocks(int rows, int out, int in, bool split = true) {
  if (rows > 0 && rows <= kGemvMaxRows) return (in + 31) / 32;
  return input_grad_tiling(rows, out, in, split).blocks();
}
inline int weight_grad_blocks(int rows, int out, int in) { return weight_grad_tiling(rows, out, in).blocks(); }

}  // namespace nnpar
