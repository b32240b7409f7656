// The launch options of our CUDA kernels (nnpar::cuda::KernelOptions) as strategy options,
// shared by every strategy that runs them, so a step of the same shape launches the same way
// in each: the single-GPU `cuda` strategy measured them (docs/results/2026-11-26-cuda-2.md,
// cuda-3.md), and nccl-data's replica runs the same kernels on its shard (issue 5: without
// PDL its 128-row step was ~4 us longer than cuda's).
#pragma once
#include <cstdint>
#include <string>
#include <vector>

#include <cuda_runtime_api.h>

#include "logits_fusion.hpp"
#include "nnpar/cuda_kernels.hpp"
#include "nnpar/strategy.hpp"

namespace nnpar {

// pdl = "auto" turns PDL on for steps of at most this many rows: faster there on an H100
// (batch 128: +4% at width 256, +2% at 1024); larger steps are left off, where the
// early-launched blocks of the next kernel can slow the current one.
constexpr int kAutoPdlMaxRows = 128;

inline std::vector<OptionSpec> cuda_kernel_option_specs() {
  return {
      {"pdl", OptionType::string, std::string("auto"),
       "programmatic dependent launch (sm_90+): each kernel is launched while its predecessor finishes; auto: on "
       "for steps of <= 128 rows (per GPU)", -1e300, 1e300, {"auto", "on", "off"}},
      {"gemv_rows", OptionType::integer, std::int64_t{8},
       "batches of at most this many rows (max 8) use warp-per-output kernels for the forward and input-gradient "
       "products instead of split-K tiles (0: never)", 0, 8, {}},
      {"warp_softmax", OptionType::boolean, true, "softmax+cross-entropy with a warp per row (<= 32 classes)", -1e300,
       1e300, {}},
      {"split_blocks", OptionType::integer, std::int64_t{0},
       "split-K products are cut into about this many blocks (0: 132, an H100's SM count)", 0, 100000, {}},
      {"k_stage", OptionType::integer, std::int64_t{4},
       "K tiles a GEMM block loads at once (1 or 4): one global round trip per stage instead of per tile", 1, 4, {}},
  };
}

// fuse_logits (rule: logits_fusion.hpp).
inline OptionSpec fuse_logits_option_spec() {
  return {"fuse_logits", OptionType::string, std::string("auto"),
          "softmax: the last Linear's forward (the logits) and softmax+cross-entropy in one kernel, a block per row; "
          "head: also the last Linear's input gradient (<= 32 classes and >= 2 Linear layers, else off; not with "
          "fuse_head); auto: head where the last hidden layer has <= 256 units",
          -1e300, 1e300, {"auto", "off", "softmax", "head"}};
}

// Sets the process's kernel options from `options` for steps of `rows` rows on a device of
// compute capability `major`. Before any scratch is sized: split_blocks changes the plans.
inline cuda::KernelOptions apply_cuda_kernel_options(const StrategyOptions& options, int major, int rows) {
  cuda::KernelOptions k;
  // PDL needs sm_90; on older devices the launch attribute is ignored, but be explicit.
  const std::string& pdl = options.get_string("pdl");
  k.pdl = major >= 9 && (pdl == "on" || (pdl == "auto" && rows <= kAutoPdlMaxRows));
  k.gemv_max_rows = int(options.get_int("gemv_rows"));
  k.warp_softmax = options.get_bool("warp_softmax");
  k.split_blocks = int(options.get_int("split_blocks"));
  k.k_stage = int(options.get_int("k_stage"));
  cuda::set_kernel_options(k);
  return k;
}

}  // namespace nnpar
