// The persistent training kernel (see include/nnpar/cuda_persistent.hpp for the contract).
//
// Each phase is a list of output tiles of one or two products; block b takes tiles b,
// b + grid, ... Each tile is computed by a whole 256-thread block over the full reduction
// length (never split across blocks, so no partial sums cross blocks and no fix-up pass is
// needed): the reduction is split between the block's thread groups instead, each thread
// holding a register micro-tile of up to 4x4, and the groups' partial tiles are added in a
// fixed tree order in shared memory. Which tile shape a product uses is picked on the host
// from the shape and the plan (classic or deep, see cuda_persistent.hpp), so the summation
// order depends on the shape, the plan and the grid size only.
//
// Data written inside the launch by other blocks is read with ld.global.cg (L2, not the
// possibly stale L1); the barrier's release/acquire orders it. The deep shapes' cp.async
// copies exist only in the L1-caching form for 4 bytes: they rely on the PTX memory model's
// guarantee that weak loads after the barrier's acquire (ordered for the whole block by
// __syncthreads) see the writes released before it, which the parity tests exercise.
#include "nnpar/cuda_persistent.hpp"

#include <cuda_runtime.h>

#include <algorithm>
#include <cmath>
#include <cstdio>
#include <cstdlib>
#include <sstream>
#include <stdexcept>
#include <string>
#include <vector>

#include "nnpar/cuda_kernels.hpp"
#include "phase_clock.cuh"

namespace nnpar::cuda {
namespace {

constexpr int kThreads = 256;
// The largest tile shape's operand tiles (two stages for the deep ones) + group partials
// (deep 1x8: 2 x 512 x (5 + 12) + 128 x 8),
// dynamic shared memory (over the 48 KB static limit).
constexpr int kSmemFloats = 18432;
constexpr int kSmemBytes = kSmemFloats * int(sizeof(float));

// Tile shapes: BI x BJ outputs, reduction consumed BK at a time, 4x4 outputs per thread, the
// 256 threads split into KG groups that take BK/KG consecutive reduction indices each.
// Deep shapes (plan "deep") take a long reduction slab per global round trip, so a product is
// a few dependent round trips instead of tens, and load their epilogue operands (bias, weights,
// velocity, activations) before the reduction, so those round trips overlap it.
template <int BI_, int BJ_, int BK_, bool Deep = false>
struct Shape {
  static constexpr int BI = BI_, BJ = BJ_, BK = BK_, TI = BI_ < 4 ? BI_ : 4, TJ = 4;
  static constexpr int G = (BI / TI) * (BJ / TJ), KG = kThreads / G, KPG = BK / KG;
  static constexpr int PA = BI * BK / kThreads, PB = BJ * BK / kThreads;
  static constexpr int LDA = BI + 4, LDB = BJ + 4;  // +4: conflict-free loader stores, 16-byte rows
  static constexpr bool kPreload = Deep;
  static_assert(G * KG == kThreads && KPG * KG == BK && KPG >= 1, "threads/tile mismatch");
  static_assert(PA * kThreads == BI * BK && PB * kThreads == BJ * BK, "loader mismatch");
  static_assert((Deep ? 2 : 1) * BK * (LDA + LDB) + (KG > 1 ? KG * BI * BJ : 0) <= kSmemFloats, "shared memory");
  static_assert(!Deep || KG > 1, "deep shapes reduce over groups");
  static_assert((BK * LDA) % 4 == 0, "B tile must stay 16-byte aligned");
};
using S64 = Shape<64, 64, 16>;  // config 0
using S32 = Shape<32, 32, 32>;  // config 1
using S16 = Shape<16, 32, 32>;  // config 2
using S4 = Shape<4, 8, 128>;    // config 3: tiny outputs (batch ~1), many blocks
using D32x8 = Shape<32, 8, 128, true>;    // config 4: 128 x 256 outputs = 128 tiles
using D64x32 = Shape<64, 32, 64, true>;   // config 5: weight gradients
using D2x32 = Shape<2, 32, 128, true>;    // config 6: two rows of logits per tile (the head)
using D4x8 = Shape<4, 8, 256, true>;      // config 7: small batches
using D1x8 = Shape<1, 8, 512, true>;      // config 8: batch 1
using D32x16 = Shape<32, 16, 64, true>;   // config 9: shares a phase with another product in one round
constexpr int kClassicConfigs = 4;
constexpr int kConfigs = 10;
constexpr int kBI[kConfigs] = {64, 32, 16, 4, 32, 64, 2, 4, 1, 32},
              kBJ[kConfigs] = {64, 32, 32, 8, 8, 32, 32, 8, 8, 16},
              kBK[kConfigs] = {16, 32, 32, 128, 128, 64, 128, 256, 512, 64},
              kKG[kConfigs] = {1, 4, 8, 128, 16, 2, 32, 128, 128, 8};

struct Args {
  int layers;
  int sizes[kPersistentMaxLayers + 1];
  float* W[kPersistentMaxLayers];
  float* b[kPersistentMaxLayers];
  float* vW[kPersistentMaxLayers];
  float* vb[kPersistentMaxLayers];
  float* act[kPersistentMaxLayers + 1];  // act[i]: input of layer i (i >= 1); act[layers]: logits
  float* grad[kPersistentMaxLayers];     // gradient w.r.t. layer i's pre-activation output
  unsigned char cfg_fwd[kPersistentMaxLayers], cfg_dx[kPersistentMaxLayers], cfg_dw[kPersistentMaxLayers];
  bool fuse_softmax;
  bool prefetch;  // L2-prefetch the next step's input rows at the start of each step
  int spin_ns;    // grid barrier: back-off between polls (0: spin)
  const std::uint8_t* pixels;
  float scale;
  const std::int32_t* labels;
  const std::uint32_t* order;  // already offset to the launch's first step
  int batch, rows, steps;
  float lr, momentum, weight_decay, grad_scale;
  double* row_loss;
  unsigned* row_correct;
  double* loss_sum;
  unsigned long long* correct;
  int* step;
  unsigned* barrier;
  // Diagnosis (NNPAR_PERSISTENT_PHASES): block 0's %globaltimer when it finishes its own work
  // and when it leaves the barrier, per phase, for the first kClockSteps steps; else null.
  unsigned long long* clocks;
};
constexpr int kClockSteps = 64, kClockPhases = 2 * kPersistentMaxLayers + 2;

// ---------------------------------------------------------------------------------------------
// Operand sources. get(i, r): i indexes the tile dimension, r the reduction. kRContig: r is
// the contiguous index in memory (decides the loader's thread mapping, for coalescing).

template <bool RContig>
struct Dense {
  static constexpr bool kRContig = RContig, kDense = true;
  const float* p;
  int ld;
  __device__ const float* ptr(int i, int r) const {
    return RContig ? p + std::size_t(i) * ld + r : p + std::size_t(r) * ld + i;
  }
  __device__ float get(int i, int r) const { return __ldcg(ptr(i, r)); }
};

// The first layer's input, X[m, k] = pixels[order[m], k] * scale, never materialised.
template <bool RContig>  // true: (i=m, r=k) for the forward; false: (i=k, r=m) for the weight grad
struct Gather {
  static constexpr bool kRContig = RContig, kDense = false;
  const std::uint8_t* pixels;
  const std::uint32_t* order;
  int features;
  float scale;
  __device__ float get(int i, int r) const {
    const int m = RContig ? i : r, k = RContig ? r : i;
    return float(__ldg(pixels + std::size_t(__ldg(order + m)) * features + k)) * scale;
  }
};

// ---------------------------------------------------------------------------------------------
// Epilogues (the same element-wise maths, in the same order, as mlp_kernels.cu).

// Each epilogue is split in load (what it reads besides the product) and store. The classic
// shapes load one output at a time (hoisting all of a thread's loads ahead of its stores
// measured slower on an H200: more registers, spills); the deep shapes, whose threads own at
// most 8 outputs after the group reduction, load theirs before the reduction starts.
struct ForwardEpi {
  static constexpr bool kRowSums = false;
  struct Pre {
    float b;
  };
  const float* b;
  bool sigmoid;
  float* Y;
  int ld;
  __device__ Pre load(int, int j) const { return {__ldcg(b + j)}; }
  __device__ void store(int i, int j, float v, Pre pre) const {
    v += pre.b;
    if (sigmoid) v = 1.0f / (1.0f + expf(-v));
    Y[std::size_t(i) * ld + j] = v;
  }
  __device__ void row_sum(int, float) const {}
};

struct InputGradEpi {
  static constexpr bool kRowSums = false;
  struct Pre {
    float h;
  };
  const float* H;
  float* dX;
  int ld;
  __device__ Pre load(int i, int j) const { return {__ldcg(H + std::size_t(i) * ld + j)}; }
  __device__ void store(int i, int j, float v, Pre pre) const {
    dX[std::size_t(i) * ld + j] = v * pre.h * (1.0f - pre.h);
  }
  __device__ void row_sum(int, float) const {}
};

__device__ __forceinline__ void sgd_one(float lr, float momentum, float wd, float* p, float* v, float g) {
  float w = __ldcg(p);
  g += wd * w;
  if (momentum != 0.0f) {
    const float nv = momentum * __ldcg(v) + g;
    *v = nv;
    w -= lr * nv;
  } else {
    w -= lr * g;
  }
  *p = w;
}

// The gradient is never stored: the SGD step consumes it in the epilogue.
struct WeightGradEpi {
  static constexpr bool kRowSums = true;
  float *W, *b, *vW, *vb;
  int ld;
  float lr, momentum, wd;
  struct Pre {
    float w, v;
  };
  __device__ Pre load(int i, int j) const {
    const std::size_t at = std::size_t(i) * ld + j;
    return {__ldcg(W + at), vW != nullptr ? __ldcg(vW + at) : 0.0f};
  }
  __device__ void store(int i, int j, float g, Pre pre) const {
    const std::size_t at = std::size_t(i) * ld + j;
    float w = pre.w;
    g += wd * w;  // sgd_one's maths
    if (momentum != 0.0f) {
      const float nv = momentum * pre.v + g;
      vW[at] = nv;
      w -= lr * nv;
    } else {
      w -= lr * g;
    }
    W[at] = w;
  }
  __device__ void row_sum(int i, float g) const { sgd_one(lr, momentum, wd, b + i, vb != nullptr ? vb + i : nullptr, g); }
};

// ---------------------------------------------------------------------------------------------
// One output tile C[i0.., j0..] = sum_r A(i, r) B(j, r), then the epilogue. Ends with a block
// barrier, so shared memory is free again and the tile's global writes are visible to the
// whole block.

template <class S, int BX, int P, class Src>
__device__ __forceinline__ void load_map(int tid, int e, int& i, int& r) {
  const int idx = tid + e * kThreads;
  if constexpr (Src::kRContig) {
    // 8 consecutive r per row: 32-byte segments in memory, and with the +4 row padding a
    // warp's shared-memory stores hit 32 different banks.
    const int rest = idx / 8;
    i = rest % BX;
    r = (rest / BX) * 8 + idx % 8;
  } else {
    i = idx % BX;
    r = idx / BX;
  }
}

__device__ __forceinline__ void cp_async4(float* dst, const float* src) {
  // .ca (4-byte copies have no .cg form): see the top of the file for why lines other blocks
  // wrote in an earlier phase are not read stale.
  const unsigned d = static_cast<unsigned>(__cvta_generic_to_shared(dst));
  asm volatile("cp.async.ca.shared.global [%0], [%1], 4;" ::"r"(d), "l"(src) : "memory");
}
__device__ __forceinline__ void cp_async_commit() { asm volatile("cp.async.commit_group;" ::: "memory"); }
template <int N>
__device__ __forceinline__ void cp_async_wait() {
  asm volatile("cp.async.wait_group %0;" ::"n"(N) : "memory");
}

// One operand's reduction slab [BK][LD] of a deep shape: dense operands by cp.async; the
// gathered uint8 input (converted on the way) through registers, all loads before the stores.
template <class S, int BX, int PX, int LD, class Src>
__device__ __forceinline__ void stage_slab(float* buf, const Src& src, int x0, int X, int r0, int R) {
  const int tid = threadIdx.x;
  if constexpr (Src::kDense) {
#pragma unroll
    for (int e = 0; e < PX; ++e) {
      int xi, xr;
      load_map<S, BX, PX, Src>(tid, e, xi, xr);
      const int x = x0 + xi, r = r0 + xr;
      float* d = buf + xr * LD + xi;
      if (x < X && r < R) {
        cp_async4(d, src.ptr(x, r));
      } else {
        *d = 0.0f;
      }
    }
  } else {
    float v[PX];
#pragma unroll
    for (int e = 0; e < PX; ++e) {
      int xi, xr;
      load_map<S, BX, PX, Src>(tid, e, xi, xr);
      const int x = x0 + xi, r = r0 + xr;
      v[e] = (x < X && r < R) ? src.get(x, r) : 0.0f;
    }
#pragma unroll
    for (int e = 0; e < PX; ++e) {
      int xi, xr;
      load_map<S, BX, PX, Src>(tid, e, xi, xr);
      buf[xr * LD + xi] = v[e];
    }
  }
}

// Not inlined: inlined, the ten shapes' tiles share the kernel's register allocation with
// everything else live in it and spilled ~3 KB a thread (each alone does not spill).
template <class S, class SA, class SB, class Epi>
__device__ __noinline__ void gemm_tile(float* smem, int tile, int I, int J, int R, const SA& A, const SB& B, const Epi& epi) {
  static_assert(!SA::kRContig || S::BK % 8 == 0, "");
  float* As = smem;                    // [BK][LDA]
  float* Bs = As + S::BK * S::LDA;     // [BK][LDB]
  float* red = Bs + S::BK * S::LDB;    // [KG][BI*BJ] (deep shapes: after a second stage)
  const int tiles_j = (J + S::BJ - 1) / S::BJ;
  const int i0 = (tile / tiles_j) * S::BI, j0 = (tile % tiles_j) * S::BJ;
  const int tid = threadIdx.x, group = tid / S::G, gt = tid % S::G;
  const int tx = gt % (S::BJ / S::TJ), ty = gt / (S::BJ / S::TJ);

  // Deep shapes: each thread's epilogue operands are in flight during the reduction (the
  // group partials leave output o = tid + q * kThreads to thread tid).
  constexpr int O = S::BI * S::BJ, kOwn = S::kPreload ? (O + kThreads - 1) / kThreads : 1;
  typename Epi::Pre pre[kOwn] = {};
  if constexpr (S::kPreload) {
#pragma unroll
    for (int q = 0; q < kOwn; ++q) {
      const int o = tid + q * kThreads, i = i0 + o / S::BJ, j = j0 + o % S::BJ;
      if (o < O && i < I && j < J) pre[q] = epi.load(i, j);
    }
  }

  float acc[S::TI][S::TJ] = {};
  float row_sum = 0.0f;
  const bool sum_rows = Epi::kRowSums && j0 == 0 && tid < S::BI;
  auto compute = [&](const float* As, const float* Bs) {
    if (sum_rows) {
#pragma unroll 8
      for (int rr = 0; rr < S::BK; ++rr) row_sum += As[rr * S::LDA + tid];
    }
    // Bounded unroll: the deep shapes' group slices are up to 64 long.
#pragma unroll 8
    for (int q = 0; q < S::KPG; ++q) {
      const int rr = group * S::KPG + q;
      float a[S::TI], bv[S::TJ];
      if constexpr (S::TI == 4) {
        const float4 t = *reinterpret_cast<const float4*>(As + rr * S::LDA + ty * 4);
        a[0] = t.x, a[1] = t.y, a[2] = t.z, a[3] = t.w;
      } else {
#pragma unroll
        for (int x = 0; x < S::TI; ++x) a[x] = As[rr * S::LDA + ty * S::TI + x];
      }
      const float4 u = *reinterpret_cast<const float4*>(Bs + rr * S::LDB + tx * 4);
      bv[0] = u.x, bv[1] = u.y, bv[2] = u.z, bv[3] = u.w;
#pragma unroll
      for (int x = 0; x < S::TI; ++x)
#pragma unroll
        for (int y = 0; y < S::TJ; ++y) acc[x][y] = fmaf(a[x], bv[y], acc[x][y]);
    }
  };

  if constexpr (S::kPreload) {
    // Deep shapes: two shared-memory stages filled by cp.async (dense operands: no registers
    // held per element, so a slab's loads are all in flight at once; staging them in
    // registers spilled), the next slab's copies flying during this one's FMAs.
    float* stage_a[2] = {As, Bs + S::BK * S::LDB};
    float* stage_b[2] = {Bs, stage_a[1] + S::BK * S::LDA};
    red = stage_b[1] + S::BK * S::LDB;
    auto issue = [&](int r0, int buf) {
      stage_slab<S, S::BI, S::PA, S::LDA>(stage_a[buf], A, i0, I, r0, R);
      stage_slab<S, S::BJ, S::PB, S::LDB>(stage_b[buf], B, j0, J, r0, R);
      cp_async_commit();
    };
    const int slabs = (R + S::BK - 1) / S::BK;
    issue(0, 0);
    for (int t = 0; t < slabs; ++t) {
      if (t + 1 < slabs) {
        issue((t + 1) * S::BK, (t + 1) & 1);
        cp_async_wait<1>();
      } else {
        cp_async_wait<0>();
      }
      __syncthreads();
      compute(stage_a[t & 1], stage_b[t & 1]);
      __syncthreads();  // stage t & 1 is refilled by the next iteration's issue
    }
  } else {
    float ra[S::PA], rb[S::PB];
    auto fetch = [&](int r0) {
#pragma unroll
      for (int e = 0; e < S::PA; ++e) {
        int ai, ar;
        load_map<S, S::BI, S::PA, SA>(tid, e, ai, ar);
        const int i = i0 + ai, r = r0 + ar;
        ra[e] = (i < I && r < R) ? A.get(i, r) : 0.0f;
      }
#pragma unroll
      for (int e = 0; e < S::PB; ++e) {
        int bj, br;
        load_map<S, S::BJ, S::PB, SB>(tid, e, bj, br);
        const int j = j0 + bj, r = r0 + br;
        rb[e] = (j < J && r < R) ? B.get(j, r) : 0.0f;
      }
    };
    fetch(0);
    for (int r0 = 0; r0 < R; r0 += S::BK) {
#pragma unroll
      for (int e = 0; e < S::PA; ++e) {
        int ai, ar;
        load_map<S, S::BI, S::PA, SA>(tid, e, ai, ar);
        As[ar * S::LDA + ai] = ra[e];
      }
#pragma unroll
      for (int e = 0; e < S::PB; ++e) {
        int bj, br;
        load_map<S, S::BJ, S::PB, SB>(tid, e, bj, br);
        Bs[br * S::LDB + bj] = rb[e];
      }
      __syncthreads();
      if (r0 + S::BK < R) fetch(r0 + S::BK);  // the next slab's loads fly during this one's FMAs
      compute(As, Bs);
      __syncthreads();
    }
  }
  if (sum_rows && i0 + tid < I) epi.row_sum(i0 + tid, row_sum);

  if constexpr (S::KG == 1) {
#pragma unroll
    for (int x = 0; x < S::TI; ++x)
#pragma unroll
      for (int y = 0; y < S::TJ; ++y) {
        const int i = i0 + ty * S::TI + x, j = j0 + tx * S::TJ + y;
        if (i < I && j < J) epi.store(i, j, acc[x][y], epi.load(i, j));
      }
  } else {
#pragma unroll
    for (int x = 0; x < S::TI; ++x)
#pragma unroll
      for (int y = 0; y < S::TJ; ++y) red[group * O + (ty * S::TI + x) * S::BJ + tx * S::TJ + y] = acc[x][y];
    __syncthreads();
    // Fixed tree order over the groups: deterministic.
#pragma unroll
    for (int s = S::KG / 2; s > 0; s /= 2) {
      for (int w = tid; w < s * O; w += kThreads) red[w] += red[w + s * O];
      __syncthreads();
    }
    if constexpr (S::kPreload) {
#pragma unroll
      for (int q = 0; q < kOwn; ++q) {
        const int o = tid + q * kThreads, i = i0 + o / S::BJ, j = j0 + o % S::BJ;
        if (o < O && i < I && j < J) epi.store(i, j, red[o], pre[q]);
      }
    } else {
      for (int o = tid; o < O; o += kThreads) {
        const int i = i0 + o / S::BJ, j = j0 + o % S::BJ;
        if (i < I && j < J) epi.store(i, j, red[o], epi.load(i, j));
      }
    }
  }
  __syncthreads();
}

template <class SA, class SB, class Epi>
__device__ void gemm_tile_cfg(int cfg, float* smem, int tile, int I, int J, int R, const SA& A, const SB& B,
                              const Epi& epi) {
  switch (cfg) {
    case 0: gemm_tile<S64>(smem, tile, I, J, R, A, B, epi); break;
    case 1: gemm_tile<S32>(smem, tile, I, J, R, A, B, epi); break;
    case 2: gemm_tile<S16>(smem, tile, I, J, R, A, B, epi); break;
    case 3: gemm_tile<S4>(smem, tile, I, J, R, A, B, epi); break;
    case 4: gemm_tile<D32x8>(smem, tile, I, J, R, A, B, epi); break;
    case 5: gemm_tile<D64x32>(smem, tile, I, J, R, A, B, epi); break;
    case 6: gemm_tile<D2x32>(smem, tile, I, J, R, A, B, epi); break;
    case 7: gemm_tile<D4x8>(smem, tile, I, J, R, A, B, epi); break;
    case 8: gemm_tile<D1x8>(smem, tile, I, J, R, A, B, epi); break;
    default: gemm_tile<D32x16>(smem, tile, I, J, R, A, B, epi); break;
  }
}

__host__ __device__ inline int tile_rows(int cfg) {
  switch (cfg) {
    case 0: case 5: return 64;
    case 1: case 4: case 9: return 32;
    case 2: return 16;
    case 3: case 7: return 4;
    case 6: return 2;
    default: return 1;
  }
}
__host__ __device__ inline int tile_cols(int cfg) {
  switch (cfg) {
    case 0: return 64;
    case 1: case 2: case 5: case 6: return 32;
    case 9: return 16;
    default: return 8;
  }
}
__host__ __device__ inline int tile_count(int cfg, int I, int J) {
  const int bi = tile_rows(cfg), bj = tile_cols(cfg);
  return ((I + bi - 1) / bi) * ((J + bj - 1) / bj);
}

// ---------------------------------------------------------------------------------------------
// Softmax + cross-entropy of one row (the maths of softmax_xent_kernel in mlp_kernels.cu).
__device__ void softmax_row(const Args& a, const std::uint32_t* order, int r) {
  const int classes = a.sizes[a.layers];
  const float* z = a.act[a.layers] + std::size_t(r) * classes;
  const int y = __ldg(a.labels + __ldg(order + r));
  float zmax = __ldcg(z);
  for (int c = 1; c < classes; ++c) zmax = fmaxf(zmax, __ldcg(z + c));
  double sum = 0.0;
  for (int c = 0; c < classes; ++c) sum += expf(__ldcg(z + c) - zmax);
  const float inv = float(1.0 / sum);
  float* g = a.grad[a.layers - 1] + std::size_t(r) * classes;
  float best = -1.0f;
  int best_c = 0;
  for (int c = 0; c < classes; ++c) {
    const float p = expf(__ldcg(z + c) - zmax) * inv;
    if (p > best) {
      best = p;
      best_c = c;
    }
    g[c] = a.grad_scale * (c == y ? p - 1.0f : p);
  }
  double l = log(sum) - (double(__ldcg(z + y)) - zmax);
  if (!(l < 1e30)) l = 1e30;
  a.row_loss[r] = fmax(l, 0.0);
  a.row_correct[r] = best_c == y ? 1u : 0u;
}

// The same row with a warp, a lane per class (classes <= 32; the maths of
// softmax_xent_warp_kernel in mlp_kernels.cu): one round trip for the logits instead of three
// passes of one dependent load per class (measured 13-16 us of a batch-128 step).
__device__ void softmax_row_warp(const Args& a, const std::uint32_t* order, int r) {
  const int classes = a.sizes[a.layers], lane = int(threadIdx.x % 32);
  const bool live = lane < classes;
  const int y = __ldg(a.labels + __ldg(order + r));
  const float z = live ? __ldcg(a.act[a.layers] + std::size_t(r) * classes + lane) : -INFINITY;
  float zmax = z;
  for (int o = 16; o > 0; o >>= 1) zmax = fmaxf(zmax, __shfl_xor_sync(0xffffffffu, zmax, o));
  const float e = live ? expf(z - zmax) : 0.0f;
  double sum = e;
  for (int o = 16; o > 0; o >>= 1) sum += __shfl_xor_sync(0xffffffffu, sum, o);
  const float p = e * float(1.0 / sum);
  float best = live ? p : -1.0f;
  int best_c = lane;
  for (int o = 16; o > 0; o >>= 1) {
    const float ob = __shfl_xor_sync(0xffffffffu, best, o);
    const int oc = __shfl_xor_sync(0xffffffffu, best_c, o);
    if (ob > best || (ob == best && oc < best_c)) {
      best = ob;
      best_c = oc;
    }
  }
  const float zy = __shfl_sync(0xffffffffu, z, y);
  if (live) a.grad[a.layers - 1][std::size_t(r) * classes + lane] = a.grad_scale * (lane == y ? p - 1.0f : p);
  if (lane == 0) {
    double l = log(sum) - (double(zy) - zmax);
    if (!(l < 1e30)) l = 1e30;
    a.row_loss[r] = fmax(l, 0.0);
    a.row_correct[r] = best_c == y ? 1u : 0u;
  }
}

// ---------------------------------------------------------------------------------------------
// The three product kinds of a layer, one tile each.

__device__ void forward_tile(const Args& a, const std::uint32_t* order, float* smem, int l, int tile) {
  const int I = a.rows, J = a.sizes[l + 1], R = a.sizes[l];
  const ForwardEpi epi{a.b[l], l + 1 < a.layers, a.act[l + 1], J};
  const Dense<true> W{a.W[l], R};
  if (l == 0) {
    gemm_tile_cfg(a.cfg_fwd[l], smem, tile, I, J, R, Gather<true>{a.pixels, order, R, a.scale}, W, epi);
  } else {
    gemm_tile_cfg(a.cfg_fwd[l], smem, tile, I, J, R, Dense<true>{a.act[l], R}, W, epi);
  }
  if (l + 1 == a.layers && a.fuse_softmax) {
    // The tile holds whole rows of logits (one tile column): finish those rows here.
    const int rows_per_tile = tile_rows(a.cfg_fwd[l]);
    if (a.sizes[a.layers] <= 32) {
      for (int w = int(threadIdx.x / 32); w < rows_per_tile; w += kThreads / 32) {
        if (tile * rows_per_tile + w < I) softmax_row_warp(a, order, tile * rows_per_tile + w);
      }
    } else {
      const int r = tile * rows_per_tile + int(threadIdx.x);
      if (int(threadIdx.x) < rows_per_tile && r < I) softmax_row(a, order, r);
    }
  }
}

__device__ void input_grad_tile(const Args& a, float* smem, int l, int tile) {
  // dX[m, k] = sum_n dY[m, n] W[n, k], times h(1-h) of layer l's input.
  const int I = a.rows, J = a.sizes[l], R = a.sizes[l + 1];
  gemm_tile_cfg(a.cfg_dx[l], smem, tile, I, J, R, Dense<true>{a.grad[l], R}, Dense<false>{a.W[l], J},
                InputGradEpi{a.act[l], a.grad[l - 1], J});
}

__device__ void weight_grad_tile(const Args& a, const std::uint32_t* order, float* smem, int l, int tile) {
  // dW[n, k] = sum_m dY[m, n] X[m, k]; db[n] = sum_m dY[m, n]; then the SGD step.
  const int I = a.sizes[l + 1], J = a.sizes[l], R = a.rows;
  const WeightGradEpi epi{a.W[l], a.b[l], a.vW[l], a.vb[l], J, a.lr, a.momentum, a.weight_decay};
  const Dense<false> dY{a.grad[l], I};
  if (l == 0) {
    gemm_tile_cfg(a.cfg_dw[l], smem, tile, I, J, R, dY, Gather<false>{a.pixels, order, J, a.scale}, epi);
  } else {
    gemm_tile_cfg(a.cfg_dw[l], smem, tile, I, J, R, dY, Dense<false>{a.act[l], J}, epi);
  }
}

// ---------------------------------------------------------------------------------------------
// Grid barrier: a monotonic arrival counter (zeroed before each launch); block b waits until
// every block has arrived `target` times in total. Release before arriving, acquire after.
// spin_ns > 0: back off between polls, so the 132 pollers of one L2 line leave room for the
// late blocks' arrivals.
__device__ __forceinline__ void grid_sync(unsigned* counter, unsigned& target, int spin_ns) {
  __syncthreads();
  target += gridDim.x;
  if (threadIdx.x == 0) {
    __threadfence();
    atomicAdd(counter, 1u);
    for (;;) {
      unsigned seen;
      asm volatile("ld.acquire.gpu.global.u32 %0, [%1];" : "=r"(seen) : "l"(counter) : "memory");
      if (int(seen - target) >= 0) break;
      if (spin_ns > 0) __nanosleep(unsigned(spin_ns));
    }
  }
  __syncthreads();
}

// The rows of step `s` of the launch, read by its first forward phase straight from the
// dataset (HBM: ~1 us a round trip): prefetched into L2 a whole step ahead, so those reads hit.
__device__ void prefetch_rows(const Args& a, int s, int rows) {
  const std::uint32_t* order = a.order + std::size_t(s) * a.batch;
  const int features = a.sizes[0], lines = features / 128 + 2;  // a row spans <= this many 128-byte lines
  for (int w = int(blockIdx.x * blockDim.x + threadIdx.x); w < rows * lines; w += int(gridDim.x * blockDim.x)) {
    const int r = w / lines, q = w % lines;
    const std::uint8_t* p = a.pixels + std::size_t(__ldg(order + r)) * features + min(q * 128, features - 1);
    asm volatile("prefetch.global.L2 [%0];" ::"l"(p));
  }
}

__device__ __forceinline__ void phase_end(const Args& a, int s, int phase, unsigned& target) {
  const bool clock = a.clocks != nullptr && blockIdx.x == 0 && s < kClockSteps;  // uniform in the block
  if (clock) {
    __syncthreads();  // the block's own work is done
    if (threadIdx.x == 0) a.clocks[(s * kClockPhases + phase) * 2] = global_ns();
  }
  grid_sync(a.barrier, target, a.spin_ns);
  if (clock && threadIdx.x == 0) a.clocks[(s * kClockPhases + phase) * 2 + 1] = global_ns();
}

__global__ void __launch_bounds__(kThreads, 1) persistent_kernel(const __grid_constant__ Args args) {
  extern __shared__ __align__(16) float smem[];  // kSmemFloats
  __shared__ double loss_part[kThreads];
  __shared__ unsigned correct_part[kThreads];
  const Args& a = args;
  const int L = a.layers, rows = a.rows;
  const int grid = int(gridDim.x), block = int(blockIdx.x);
  unsigned target = 0;

  for (int s = 0; s < args.steps; ++s) {
    const std::uint32_t* order = args.order + std::size_t(s) * args.batch;
    int phase = 0;
    if (a.clocks != nullptr && block == 0 && threadIdx.x == 0 && s == 0) a.clocks[kClockSteps * kClockPhases * 2] = global_ns();
    if (a.prefetch && s + 1 < args.steps) prefetch_rows(a, s + 1, rows);

    for (int l = 0; l < L; ++l) {
      const int tiles = tile_count(a.cfg_fwd[l], rows, a.sizes[l + 1]);
      for (int t = block; t < tiles; t += grid) forward_tile(a, order, smem, l, t);
      phase_end(a, s, phase++, target);
    }
    if (!a.fuse_softmax) {
      if (a.sizes[L] <= 32) {
        constexpr int kWarps = kThreads / 32;
        for (int r = block * kWarps + int(threadIdx.x / 32); r < rows; r += grid * kWarps) softmax_row_warp(a, order, r);
      } else {
        for (int r = block * kThreads + int(threadIdx.x); r < rows; r += grid * kThreads) softmax_row(a, order, r);
      }
      phase_end(a, s, phase++, target);
    }

    // Backward: phase l computes layer l's input gradient and updates layer l+1 (whose
    // weights the input gradient of layer l+1, in the previous phase, was the last to read).
    for (int l = L - 1; l >= 1; --l) {
      const int t_dx = tile_count(a.cfg_dx[l], rows, a.sizes[l]);
      const int t_dw = l + 1 < L ? tile_count(a.cfg_dw[l + 1], a.sizes[l + 2], a.sizes[l + 1]) : 0;
      for (int t = block; t < t_dx + t_dw; t += grid) {
        if (t < t_dx) input_grad_tile(a, smem, l, t);
        else weight_grad_tile(a, order, smem, l + 1, t - t_dx);
      }
      phase_end(a, s, phase++, target);
    }
    // Last phase: layers 1 (if any) and 0 update; block 0 also folds the rows' losses into
    // the epoch totals, in row order.
    if (block == 0) {
      double l = 0.0;
      unsigned c = 0;
      for (int r = int(threadIdx.x); r < rows; r += kThreads) {
        l += __ldcg(a.row_loss + r);
        c += __ldcg(a.row_correct + r);
      }
      loss_part[threadIdx.x] = l;
      correct_part[threadIdx.x] = c;
      __syncthreads();
      for (int w = kThreads / 2; w > 0; w /= 2) {
        if (int(threadIdx.x) < w) {
          loss_part[threadIdx.x] += loss_part[threadIdx.x + w];
          correct_part[threadIdx.x] += correct_part[threadIdx.x + w];
        }
        __syncthreads();
      }
      if (threadIdx.x == 0) {
        *a.loss_sum += loss_part[0];
        *a.correct += correct_part[0];
      }
    }
    {
      const int t0 = tile_count(a.cfg_dw[0], a.sizes[1], a.sizes[0]);
      const int t1 = L > 1 ? tile_count(a.cfg_dw[1], a.sizes[2], a.sizes[1]) : 0;
      for (int t = block; t < t0 + t1; t += grid) {
        if (t < t0) weight_grad_tile(a, order, smem, 0, t);
        else weight_grad_tile(a, order, smem, 1, t - t0);
      }
    }
    phase_end(a, s, phase++, target);
  }
  if (block == 0 && threadIdx.x == 0) *a.step += args.steps;
}

// ---------------------------------------------------------------------------------------------
// Planning: the tile shape for a product of I x J outputs over a reduction of R, for `grid`
// blocks. A crude cost per block round: FMA time, L2 operand traffic at ~64 B/clk per SM, and
// a dependent L2 round trip per reduction slab; the cheapest total wins.
int plan_shape(int I, int J, int R, int grid, int min_bj = 0) {
  int best = -1;
  double best_cost = 0;
  for (int c = 0; c < kClassicConfigs; ++c) {
    if (kBJ[c] < min_bj) continue;
    const int tiles = tile_count(c, I, J);
    const int rounds = (tiles + grid - 1) / grid;
    const double fma = double(kBI[c]) * kBJ[c] * R / 128.0;
    const double bytes = double(kBI[c] + kBJ[c]) * R * 4.0 / 64.0;
    const double slabs = double((R + kBK[c] - 1) / kBK[c]) * 400.0;
    const double cost = rounds * (std::max(fma, bytes) + slabs);
    if (best < 0 || cost < best_cost) {
      best = c;
      best_cost = cost;
    }
  }
  return best;
}

// The deep plan: every shape, and the products that share a phase planned together (their
// tiles share the grid: one round of 132 tiles beats two of 100). Cost of a tile in SM clocks:
// a dependent round trip (~800 clocks, L2 under load) per reduction slab, the larger of FMA
// and operand traffic, the group reduction, and the epilogue's load-then-store round trips
// (overlapped with the reduction in the deep shapes, one per output in the others).
struct Product {
  int I, J, R, min_bj;
};

double tile_cost(int c, int R) {
  constexpr double kTrip = 800.0;
  const double slabs = double((R + kBK[c] - 1) / kBK[c]);
  const double fma = double(kBI[c]) * kBJ[c] * R / 128.0;
  const double bytes = double(kBI[c] + kBJ[c]) * R * 4.0 / 64.0;
  const int outputs = kBI[c] * kBJ[c];
  double levels = 0;
  for (int g = kKG[c]; g > 1; g /= 2) levels += 1;
  const double reduce = levels * (40.0 + 4.0 * outputs / kThreads);
  const double epilogue = c >= kClassicConfigs ? 1.0 : double((outputs + kThreads - 1) / kThreads);
  return slabs * kTrip + std::max(fma, bytes) + reduce + epilogue * kTrip;
}

// Configs for each product of a phase (-1 where none fits min_bj), cheapest phase first.
std::vector<int> plan_phase(const std::vector<Product>& ps, int grid) {
  std::vector<int> cur(ps.size(), 0), best;
  double best_cost = 0;
  for (;;) {
    bool ok = true;
    int tiles = 0;
    double worst = 0;
    for (std::size_t p = 0; p < ps.size(); ++p) {
      const int c = cur[p];
      if (kBJ[c] < ps[p].min_bj) ok = false;
      tiles += tile_count(c, ps[p].I, ps[p].J);
      worst = std::max(worst, tile_cost(c, ps[p].R));
    }
    const double cost = double((tiles + grid - 1) / grid) * worst;
    if (ok && (best.empty() || cost < best_cost)) {
      best = cur;
      best_cost = cost;
    }
    std::size_t p = 0;  // next combination
    while (p < ps.size() && ++cur[p] == kConfigs) cur[p++] = 0;
    if (p == ps.size()) break;
  }
  if (best.empty()) best.assign(ps.size(), -1);
  return best;
}

}  // namespace

struct PersistentTrainer::Impl {
  PersistentConfig config;
  int layers = 0;
  int grid = 0;
  std::vector<float*> buffers;  // everything cudaMalloc'd here
  bool clocks_printed = false;
  Args base{};

  ~Impl() {
    for (float* p : buffers) cudaFree(p);
  }
  template <class T>
  T* alloc(std::size_t count) {
    void* p = nullptr;
    check(cudaMalloc(&p, std::max<std::size_t>(1, count) * sizeof(T)), "persistent: cudaMalloc");
    buffers.push_back(static_cast<float*>(p));
    check(cudaMemset(p, 0, std::max<std::size_t>(1, count) * sizeof(T)), "persistent: cudaMemset");
    return static_cast<T*>(p);
  }

  Args plan(int rows) const {
    Args a = base;
    a.rows = rows;
    a.grad_scale = 1.0f / float(rows);
    const int* n = a.sizes;
    if (config.deep) {
      auto cfg = [](int c) { return static_cast<unsigned char>(c); };
      for (int l = 0; l < layers; ++l) {
        const bool last = l + 1 == layers;
        int c = last ? plan_phase({{rows, n[l + 1], n[l], n[l + 1]}}, grid)[0] : -1;
        if (last) a.fuse_softmax = c >= 0;
        if (c < 0) c = plan_phase({{rows, n[l + 1], n[l], 0}}, grid)[0];
        a.cfg_fwd[l] = cfg(c);
      }
      a.cfg_dx[0] = 0;
      for (int l = layers - 1; l >= 1; --l) {  // the kernel's backward phases
        if (l + 1 < layers) {
          const std::vector<int> c = plan_phase({{rows, n[l], n[l + 1], 0}, {n[l + 2], n[l + 1], rows, 0}}, grid);
          a.cfg_dx[l] = cfg(c[0]);
          a.cfg_dw[l + 1] = cfg(c[1]);
        } else {
          a.cfg_dx[l] = cfg(plan_phase({{rows, n[l], n[l + 1], 0}}, grid)[0]);
        }
      }
      if (layers > 1) {
        const std::vector<int> c = plan_phase({{n[1], n[0], rows, 0}, {n[2], n[1], rows, 0}}, grid);
        a.cfg_dw[0] = cfg(c[0]);
        a.cfg_dw[1] = cfg(c[1]);
      } else {
        a.cfg_dw[0] = cfg(plan_phase({{n[1], n[0], rows, 0}}, grid)[0]);
      }
      return a;
    }
    for (int l = 0; l < layers; ++l) {
      const bool last = l + 1 == layers;
      // The last layer fuses softmax when one tile column holds a whole row of logits.
      int cfg = -1;
      if (last) {
        cfg = plan_shape(rows, n[l + 1], n[l], grid, n[l + 1]);
      }
      a.fuse_softmax = last ? cfg >= 0 : a.fuse_softmax;
      if (cfg < 0) cfg = plan_shape(rows, n[l + 1], n[l], grid);
      a.cfg_fwd[l] = static_cast<unsigned char>(cfg);
      a.cfg_dx[l] = static_cast<unsigned char>(l > 0 ? plan_shape(rows, n[l], n[l + 1], grid) : 0);
      a.cfg_dw[l] = static_cast<unsigned char>(plan_shape(n[l + 1], n[l], rows, grid));
    }
    return a;
  }
};

PersistentTrainer::PersistentTrainer(const PersistentConfig& config) : impl_(std::make_unique<Impl>()) {
  Impl& m = *impl_;
  m.config = config;
  m.layers = int(config.sizes.size()) - 1;
  if (m.layers < 1 || m.layers > kPersistentMaxLayers) {
    throw std::runtime_error("cuda persistent: " + std::to_string(m.layers) + " Linear layers; supports 1.." +
                             std::to_string(kPersistentMaxLayers));
  }
  if (config.batch < 1) throw std::runtime_error("cuda persistent: batch must be >= 1");
  if (config.momentum != 0.0f && config.velocity == nullptr) {
    throw std::runtime_error("cuda persistent: momentum needs a velocity buffer");
  }
  cudaDeviceProp props{};
  check(cudaGetDeviceProperties(&props, config.device), "cuda persistent: cudaGetDeviceProperties");
  if (!props.cooperativeLaunch) throw std::runtime_error("cuda persistent: the device has no cooperative launch");
  check(cudaFuncSetAttribute(persistent_kernel, cudaFuncAttributeMaxDynamicSharedMemorySize, kSmemBytes),
        "cuda persistent: shared memory size");
  int per_sm = 0;
  check(cudaOccupancyMaxActiveBlocksPerMultiprocessor(&per_sm, persistent_kernel, kThreads, kSmemBytes),
        "cuda persistent: occupancy");
  const int resident = per_sm * props.multiProcessorCount;
  m.grid = config.blocks > 0 ? config.blocks : props.multiProcessorCount;
  if (resident < 1 || m.grid > resident) {
    throw std::runtime_error("cuda persistent: " + std::to_string(m.grid) + " blocks requested, only " +
                             std::to_string(resident) + " can be co-resident for a cooperative launch");
  }

  Args& a = m.base;
  a.layers = m.layers;
  std::size_t offset = 0;
  for (int l = 0; l <= m.layers; ++l) a.sizes[l] = config.sizes[l];
  for (int l = 0; l < m.layers; ++l) {
    const std::size_t w = std::size_t(a.sizes[l + 1]) * a.sizes[l];
    a.W[l] = config.params + offset;
    a.b[l] = a.W[l] + w;
    a.vW[l] = config.velocity != nullptr && config.momentum != 0.0f ? config.velocity + offset : nullptr;
    a.vb[l] = a.vW[l] != nullptr ? a.vW[l] + w : nullptr;
    offset += w + a.sizes[l + 1];
    a.act[l + 1] = m.alloc<float>(std::size_t(config.batch) * a.sizes[l + 1]);
    a.grad[l] = m.alloc<float>(std::size_t(config.batch) * a.sizes[l + 1]);
  }
  a.act[0] = nullptr;  // layer 0 gathers from the dataset
  a.pixels = config.pixels;
  a.scale = config.pixel_scale;
  a.labels = config.labels;
  a.batch = config.batch;
  a.lr = config.lr;
  a.momentum = config.momentum;
  a.weight_decay = config.weight_decay;
  a.row_loss = m.alloc<double>(config.batch);
  a.row_correct = m.alloc<unsigned>(config.batch);
  a.loss_sum = config.loss_sum;
  a.correct = config.correct;
  a.step = config.step;
  a.prefetch = config.prefetch;
  a.spin_ns = config.spin_ns;
  a.barrier = m.alloc<unsigned>(1);
  a.clocks = std::getenv("NNPAR_PERSISTENT_PHASES") != nullptr
                 ? m.alloc<unsigned long long>(std::size_t(kClockSteps) * kClockPhases * 2 + 1)
                 : nullptr;
}

PersistentTrainer::~PersistentTrainer() = default;

int PersistentTrainer::blocks() const { return impl_->grid; }

void PersistentTrainer::run(std::size_t first_step, int steps, int rows, cudaStream_t stream) {
  Impl& m = *impl_;
  if (steps <= 0) return;
  if (rows < 1 || rows > m.config.batch) throw std::runtime_error("cuda persistent: rows out of range");
  Args a = m.plan(rows);
  a.order = m.config.order + first_step * std::size_t(m.config.batch);
  a.steps = steps;
  check(cudaMemsetAsync(a.barrier, 0, sizeof(unsigned), stream), "cuda persistent: reset barrier");
  void* params[] = {&a};
  check(cudaLaunchCooperativeKernel(reinterpret_cast<const void*>(&persistent_kernel), dim3(m.grid), dim3(kThreads),
                                    params, kSmemBytes, stream),
        "cuda persistent: cooperative launch");
  if (a.clocks != nullptr && steps >= 8 && !m.clocks_printed) print_phase_clocks(&a, std::min(steps, kClockSteps), stream);
}

// Diagnosis only (synchronises): mean over steps 1.. of each phase's work (block 0's own work,
// from the previous barrier's exit) and barrier (its arrival to its exit), microseconds.
void PersistentTrainer::print_phase_clocks(const void* args, int steps, cudaStream_t stream) {
  const Args& a = *static_cast<const Args*>(args);
  Impl& m = *impl_;
  m.clocks_printed = true;
  std::vector<unsigned long long> t(std::size_t(kClockSteps) * kClockPhases * 2 + 1);
  check(cudaStreamSynchronize(stream), "cuda persistent: clocks");
  check(cudaMemcpy(t.data(), a.clocks, t.size() * sizeof(t[0]), cudaMemcpyDeviceToHost), "cuda persistent: clocks");
  int phases = 0;
  while (phases < kClockPhases && t[phases * 2 + 1] != 0) ++phases;
  std::fprintf(stderr, "cuda persistent phases (%s), us per step, mean of steps 1..%d: ", describe(a.rows).c_str(),
               steps - 1);
  double total = 0;
  for (int p = 0; p < phases; ++p) {
    double work = 0, wait = 0;
    for (int s = 1; s < steps; ++s) {
      const std::size_t at = std::size_t(s * kClockPhases + p) * 2;
      const unsigned long long start = p > 0 ? t[at - 1] : t[std::size_t((s - 1) * kClockPhases + phases - 1) * 2 + 1];
      work += double(t[at] - start);
      wait += double(t[at + 1] - t[at]);
    }
    work /= 1e3 * (steps - 1);
    wait /= 1e3 * (steps - 1);
    total += work + wait;
    std::fprintf(stderr, "%sphase %d work %.2f barrier %.2f", p > 0 ? "; " : "", p, work, wait);
  }
  std::fprintf(stderr, "; step %.2f\n", total);
}

std::string PersistentTrainer::describe(int rows) const {
  const Args a = impl_->plan(rows);
  static const char* names[kConfigs] = {"64x64", "32x32", "16x32", "4x8", "deep 32x8", "deep 64x32",
                                        "deep 2x32", "deep 4x8", "deep 1x8", "deep 32x16"};
  std::ostringstream s;
  s << "grid " << impl_->grid << ", rows " << rows << (impl_->config.deep ? ", deep plan" : ", classic plan")
    << (a.prefetch ? ", prefetch" : "") << (a.fuse_softmax ? ", softmax fused" : ", softmax phase");
  for (int l = 0; l < a.layers; ++l) {
    s << "; L" << l << " fwd " << names[a.cfg_fwd[l]] << " dW " << names[a.cfg_dw[l]];
    if (l > 0) s << " dX " << names[a.cfg_dx[l]];
  }
  return s.str();
}

}  // namespace nnpar::cuda
