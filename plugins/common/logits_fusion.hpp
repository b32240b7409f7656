// fuse_logits: the last Linear's forward, softmax+cross-entropy and (head) the last Linear's
// input gradient in one kernel, a block per row (nnpar::cuda::logits_softmax_xent), in the
// cuda and nccl-data strategies. CUDA-free, so `nnpar plan` models the same choice the plugins
// make (harness/perf_model.cpp) from the same rule.
#pragma once
#include <stdexcept>
#include <string>
#include <vector>

namespace nnpar {

// `auto` picks head where it measured faster on an H100 (docs/results/2026-11-26-cuda-4.md): a
// last hidden layer of <= 256 units (batch 1 to 1024: +2% to +19%); at 1024 units the tiled
// products won.
constexpr int kAutoFuseLogitsMaxWidth = 256;

struct LogitsFusion {
  bool logits = false;      // the logits' forward runs inside the softmax kernel
  bool input_grad = false;  // and so does the last Linear's input gradient
};

// What fuse_logits = `mode` means for a model of these layer sizes. Shapes the kernel does not
// take (one Linear layer, more than 32 classes) run unfused; fuse_logits together with
// fuse_head (the other fusion into the softmax kernel, cuda only) is an error.
inline LogitsFusion resolve_logits_fusion(const std::string& mode, const std::vector<int>& sizes, bool fuse_head,
                                          const char* strategy) {
  const int last_hidden = sizes.size() >= 3 ? sizes[sizes.size() - 2] : 0;
  const bool auto_head = mode == "auto" && last_hidden <= kAutoFuseLogitsMaxWidth && !fuse_head;
  LogitsFusion f;
  f.logits = mode == "softmax" || mode == "head" || auto_head;
  f.input_grad = mode == "head" || auto_head;
  if (f.logits && fuse_head)
    throw std::runtime_error(std::string(strategy) +
                             ": fuse_logits and fuse_head both fuse into the softmax kernel; set one of them");
  f.logits = f.logits && sizes.size() >= 3 && sizes.back() <= 32;
  f.input_grad = f.input_grad && f.logits;
  return f;
}

}  // namespace nnpar
