// See include/nnpar/cuda_peer_sgd.hpp.
#include "nnpar/cuda_peer_sgd.hpp"

#include <cuda_runtime.h>

#include <algorithm>
#include <cstdint>
#include <stdexcept>
#include <string>

#include "sgd_one.cuh"

namespace nnpar::cuda {
namespace {

__device__ __forceinline__ void store_release_sys(unsigned* p, unsigned v) {
  asm volatile("st.release.sys.global.u32 [%0], %1;" ::"l"(p), "r"(v) : "memory");
}
__device__ __forceinline__ unsigned load_acquire_sys(const unsigned* p) {
  unsigned v;
  asm volatile("ld.acquire.sys.global.u32 %0, [%1];" : "=r"(v) : "l"(p) : "memory");
  return v;
}

// The sum in rank order, the same expression on every rank. Peer memory is read through L2
// only (ld.cg): nothing in this SM's L1 may predate the peer's signal.
__device__ __forceinline__ float4 sum4(const PeerSgdArgs& a, std::size_t i) {
  float4 s = __ldcg(reinterpret_cast<const float4*>(a.grads[0]) + i);
  for (int r = 1; r < a.ranks; ++r) {
    const float4 g = __ldcg(reinterpret_cast<const float4*>(a.grads[r]) + i);
    s.x += g.x, s.y += g.y, s.z += g.z, s.w += g.w;
  }
  return s;
}

__global__ void peer_sgd_kernel(std::size_t n, FusedSgd s, float* params, float* velocity, PeerSgdArgs a) {
  __shared__ unsigned step;
  if (threadIdx.x == 0) {
    // state[0] changes only after every block has passed this point (below).
    const unsigned t = *reinterpret_cast<volatile unsigned*>(a.state) + 1;
    // One announcement per step, by whichever block arrives first (a ticket, not block 0: a
    // block that is not yet resident cannot hold up the peers). Every block fencing and
    // announcing cost 2.1-2.3 us more per step on 2 H100s (docs/results/2026-11-27-data-parallel-7.md).
    // The previous kernels wrote the gradient; the fence orders it before the announcement.
    if (atomicAdd(a.state + 2, 1u) == 0) {
      __threadfence_system();
      for (int q = 0; q < a.ranks; ++q)
        if (q != a.rank) store_release_sys(a.signal[q], t);
    }
    for (int q = 0; q < a.ranks; ++q)
      if (q != a.rank)
        while (int(load_acquire_sys(a.inbox + q) - t) < 0) __nanosleep(20);
    step = t;
  }
  __syncthreads();
  const std::size_t n4 = n / 4;
  const std::size_t stride = std::size_t(gridDim.x) * blockDim.x;
  for (std::size_t i = blockIdx.x * std::size_t(blockDim.x) + threadIdx.x; i < n4; i += stride) {
    const float4 g = sum4(a, i);
    float4 p = reinterpret_cast<float4*>(params)[i];
    float* v = velocity != nullptr ? velocity + 4 * i : nullptr;
    sgd_one(s, p.x, v, g.x);
    sgd_one(s, p.y, v != nullptr ? v + 1 : nullptr, g.y);
    sgd_one(s, p.z, v != nullptr ? v + 2 : nullptr, g.z);
    sgd_one(s, p.w, v != nullptr ? v + 3 : nullptr, g.w);
    reinterpret_cast<float4*>(params)[i] = p;
  }
  for (std::size_t i = 4 * n4 + blockIdx.x * std::size_t(blockDim.x) + threadIdx.x; i < n; i += stride) {
    float g = __ldcg(a.grads[0] + i);
    for (int r = 1; r < a.ranks; ++r) g += __ldcg(a.grads[r] + i);
    sgd_one(s, params[i], velocity != nullptr ? velocity + i : nullptr, g);
  }
  __syncthreads();
  if (threadIdx.x == 0) {
    // The last block to finish resets the counters and moves the step on (every block has
    // read state[0] and taken its ticket by then).
    if (atomicAdd(a.state + 1, 1u) == gridDim.x - 1) {
      a.state[1] = 0;
      a.state[2] = 0;
      __threadfence();
      *reinterpret_cast<volatile unsigned*>(a.state) = step;
    }
  }
}

}  // namespace

void peer_sgd_update(std::size_t n, float lr, float momentum, float weight_decay, float* params, float* velocity,
                     const PeerSgdArgs& args, cudaStream_t stream) {
  if (args.ranks < 1 || args.ranks > kPeerSgdMaxRanks || args.rank < 0 || args.rank >= args.ranks ||
      args.state == nullptr || (args.ranks > 1 && args.inbox == nullptr))
    throw std::invalid_argument("peer_sgd_update: bad rank layout");
  auto misaligned = [](const void* p) { return p != nullptr && reinterpret_cast<std::uintptr_t>(p) % 16 != 0; };
  bool bad = misaligned(params) || misaligned(velocity);
  for (int r = 0; r < args.ranks; ++r) bad = bad || args.grads[r] == nullptr || misaligned(args.grads[r]);
  if (bad) throw std::invalid_argument("peer_sgd_update: buffers must be non-null and 16-byte aligned");
  if (n == 0) return;
  // One float4 per thread where it fits: the peer reads are latency-bound, so many loads in flight.
  const int blocks = int(std::clamp<std::size_t>((n / 4 + 255) / 256, 1, 1024));
  FusedSgd s;
  s.lr = lr;
  s.momentum = momentum;
  s.weight_decay = weight_decay;
  peer_sgd_kernel<<<blocks, 256, 0, stream>>>(n, s, params, velocity, args);
  check(cudaGetLastError(), "peer_sgd_update");
}

}  // namespace nnpar::cuda
