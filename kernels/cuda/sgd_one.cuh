// The SGD update of one parameter, shared by every CUDA kernel that applies it (the fused
// weight-gradient epilogue, sgd_update, the peer-reduce update of nccl-data): one expression
// compiled once, so every path rounds the same way and the strategies stay bit-identical.
#pragma once
#include "nnpar/cuda_kernels.hpp"

namespace nnpar::cuda {

__device__ __forceinline__ void sgd_one(const FusedSgd& s, float& p, float* v, float g) {
  g += s.weight_decay * p;
  if (s.momentum != 0.0f) {
    *v = s.momentum * *v + g;
    p -= s.lr * *v;
  } else {
    p -= s.lr * g;
  }
}

}  // namespace nnpar::cuda
