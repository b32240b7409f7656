// The fused SGD update of one Linear's parameter slice, in the flat layout every GPU plugin
// uses: W [out x in] followed by b [out], and the velocity buffer laid out the same way.
#pragma once
#include <cstddef>

#include "nnpar/cuda_kernels.hpp"
#include "nnpar/model.hpp"

namespace nnpar {

// `weights` points at the slice's W; `velocity` at its velocity slice (null without momentum).
inline cuda::FusedSgd fused_sgd(const SgdSettings& sgd, float* weights, int out, int in, float* velocity) {
  const std::size_t w = std::size_t(out) * std::size_t(in);
  cuda::FusedSgd update{sgd.lr, sgd.momentum, sgd.weight_decay, weights, weights + w, nullptr, nullptr};
  if (velocity != nullptr) {
    update.vW = velocity;
    update.vb = velocity + w;
  }
  return update;
}

}  // namespace nnpar
