// CUDA kernels for the MLP (see include/nnpar/cuda_kernels.hpp for the contract).
//
// At the sizes this project trains (batch 1..1024, widths 26..1024) a training step is a few
// hundred MFLOP spread over ~10 dependent products: the GPU is latency-bound, not
// FLOP-bound. So the design goals are, in order: few launches per step (element-wise work
// lives in GEMM epilogues), enough blocks per launch to cover the 132 SMs of an H100 (small
// 32x32 tiles and split-K for short-and-deep products), and a short dependent chain inside
// each block (the next K tile is fetched into registers while the current one is multiplied).
// Everything is plain FFMA fp32 unless KernelOptions::precision puts the tiled products on
// tensor cores (TF32 or BF16 operands, fp32 sums); summation orders depend only on shapes (and
// that option), so runs repeat bit for bit.
#include "nnpar/cuda_kernels.hpp"

#include <cuda_runtime.h>

#include "nnpar/gemm_tiling.hpp"

#include "mma_bf16.cuh"
#include "sgd_one.cuh"

#include <algorithm>
#include <utility>
#include <stdexcept>
#include <string>

namespace nnpar::cuda {

void check(cudaError_t status, const char* what) {
  if (status != cudaSuccess) {
    throw std::runtime_error(std::string(what) + ": " + cudaGetErrorString(status));
  }
}

namespace {

constexpr int kThreads = 256;  // every GEMM block: a 16x16 grid of threads
// The planning constants live with the tiling (nnpar/gemm_tiling.hpp), which the cost model
// shares.
constexpr int kTargetBlocks = kGemmTargetBlocks;
constexpr int kStage = kGemmStage;
// Under a tensor-core precision, tiled products reducing over more than this many terms use
// tensor cores.
constexpr int kMmaMinDepth = 8;
// The products' arithmetic, a template argument of the GEMM kernels (KernelOptions::precision).
constexpr int kFfma = 0, kMmaTf32 = 1, kMmaBf16 = 2;

// Set by set_kernel_options; read at launch time (capture bakes the choice into a graph).
KernelOptions g_options;

// Programmatic dependent launch (Hopper): a kernel launched with programmatic stream
// serialization may start while its predecessor still runs. Every kernel therefore calls
// pdl_wait() before its first global read or write (the predecessor's outputs, and buffers the
// predecessor may still read), unconditionally in every block: the wait returns once all
// prerequisite grids have completed and flushed, and a grid that waited completes only after
// its own prerequisites, which keeps the chain transitive. pdl_trigger() lets the next kernel
// be launched (its blocks then park in their own wait on free SM slots) once every block of
// this one has called it. The products call it after their main loop, so only their epilogue
// overlaps the next launch: triggering right after the wait made 256-block products at batch
// 1024 ~30% slower on an H100 (the parked blocks of the next kernel share the SMs for the whole
// body), while tiny kernels trigger at once. Both are no-ops without PDL.
__device__ __forceinline__ void pdl_wait() {
#if defined(__CUDA_ARCH__) && __CUDA_ARCH__ >= 900
  asm volatile("griddepcontrol.wait;" ::: "memory");
#endif
}
__device__ __forceinline__ void pdl_trigger() {
#if defined(__CUDA_ARCH__) && __CUDA_ARCH__ >= 900
  asm volatile("griddepcontrol.launch_dependents;" ::: "memory");
#endif
}
__device__ __forceinline__ void pdl_enter() {
  pdl_wait();
  pdl_trigger();
}

// Launches kernel<<<grid, block, 0, stream>>>(args...), with the programmatic-serialization
// attribute when PDL is on.
template <class... Params, class... Args>
void launch_kernel(void (*kernel)(Params...), dim3 grid, dim3 block, cudaStream_t stream, Args&&... args) {
  cudaLaunchConfig_t config{};
  config.gridDim = grid;
  config.blockDim = block;
  config.dynamicSmemBytes = 0;
  config.stream = stream;
  cudaLaunchAttribute attribute[1];
  attribute[0].id = cudaLaunchAttributeProgrammaticStreamSerialization;
  attribute[0].val.programmaticStreamSerializationAllowed = 1;
  config.attrs = attribute;
  config.numAttrs = g_options.pdl ? 1 : 0;
  check(cudaLaunchKernelEx(&config, kernel, std::forward<Args>(args)...), "cudaLaunchKernelEx");
}

__device__ __forceinline__ int batch_row(const RowIndex& index, int r) {
  if (index.order == nullptr) return r;
  const int step = index.step != nullptr ? *index.step : 0;
  return int(index.order[std::size_t(step) * index.batch + r]);
}

// ---------------------------------------------------------------------------------------------
// GEMM operands. A product C[I,J] = sum_k A(i,k) B(k,j) reads A by (i,k) and B by (j,k); each
// source says which index is contiguous in memory (k_contig) so the tile loader can map
// consecutive threads to consecutive addresses. A thread's (i, k-offset) pairs are the same
// for every K tile, so the row lookup (an indexed gather for the dataset) happens once.

template <bool KContig>
struct DenseSrc {
  static constexpr bool k_contig = KContig;
  using Row = const float*;
  const float* p;
  int ld;
  __device__ Row row(int i) const { return KContig ? p + std::size_t(i) * ld : p + i; }
  __device__ float at(Row r, int k) const { return KContig ? r[k] : r[std::size_t(k) * ld]; }
};

// Rows of the uint8 dataset picked by the epoch's order: the first layer's input is never
// materialised before the product that consumes it.
struct GatherSrc {
  static constexpr bool k_contig = true;
  using Row = const std::uint8_t*;
  const std::uint8_t* pixels;
  float scale;
  RowIndex index;
  int features;
  __device__ Row row(int i) const { return pixels + std::size_t(batch_row(index, i)) * features; }
  __device__ float at(Row r, int k) const { return float(r[k]) * scale; }
};

// Rows of the epoch staged as floats (stage_epoch_input), at the batch the step counter points
// at: one dependent load (the counter) before the operand, instead of the counter, then the
// order, then bytes to convert. K-contiguous for the forward (A = X), not for the weight
// gradient (B(m,k) = X[m*K+k] read by column k).
template <bool KContig>
struct StagedSrc {
  static constexpr bool k_contig = KContig;
  using Row = const float*;
  StagedRows rows;
  int ld;
  __device__ const float* batch_base() const {
    const int step = (rows.step != nullptr ? *rows.step : 0) + rows.step_delta;
    return rows.base + std::ptrdiff_t(step) * rows.batch * ld;
  }
  __device__ Row row(int i) const { return KContig ? batch_base() + std::size_t(i) * ld : batch_base() + i; }
  __device__ float at(Row r, int k) const { return KContig ? r[k] : r[std::size_t(k) * ld]; }
};

// ---------------------------------------------------------------------------------------------
// Epilogues: what happens to each finished element C[i,j], and (weight gradient only) to the
// row sums of A, which are the bias gradient.

struct ForwardEpi {
  static constexpr bool kRowSums = false;
  static constexpr int kMinBlocks = 1;
  const float* b;
  bool sigmoid;
  float* Y;
  int ld;
  __device__ void operator()(int i, int j, float v) const {
    if (b != nullptr) v += b[j];
    if (sigmoid) v = 1.0f / (1.0f + expf(-v));
    Y[std::size_t(i) * ld + j] = v;
  }
  __device__ void row_sum(int, float) const {}
  __device__ void finish() const {}
};

struct InputGradEpi {
  static constexpr bool kRowSums = false;
  static constexpr int kMinBlocks = 1;
  const float* H;
  float* dX;
  int ld;
  __device__ void operator()(int i, int j, float v) const {
    const std::size_t at = std::size_t(i) * ld + j;
    if (H != nullptr) {
      const float h = H[at];
      v = v * h * (1.0f - h);  // the CPU's sigmoid_backward, same order
    }
    dX[at] = v;
  }
  __device__ void row_sum(int, float) const {}
  __device__ void finish() const {}
};


// Where else a weight gradient goes. NoCopies: nowhere (every product but push_p2p's; the
// kernels are the same as without this parameter). PeerCopies: every value also into each
// peer's slot, then a system-scope fence per thread so the stores have landed when the
// product completes (whatever the stream runs next, the signal to the peers, follows them).
struct NoCopies {
  static constexpr int kMinBlocks = 1;
  __device__ void dW(std::size_t, float) const {}
  __device__ void db(int, float) const {}
  __device__ void finish() const {}
};
struct PeerCopies {
  static constexpr int kMinBlocks = 2;
  GradientCopies to;
  // Unrolled over the fixed bound: constant indices keep the pointers in the parameter bank.
  __device__ void dW(std::size_t at, float g) const {
#pragma unroll
    for (int c = 0; c < kMaxGradientCopies; ++c)
      if (c < to.count) to.dW[c][at] = g;
  }
  __device__ void db(int i, float g) const {
#pragma unroll
    for (int c = 0; c < kMaxGradientCopies; ++c)
      if (c < to.count) to.db[c][i] = g;
  }
  __device__ void finish() const { __threadfence_system(); }
};

template <class Copies>
struct WeightGradEpiWith {
  static constexpr bool kRowSums = true;
  static constexpr int kMinBlocks = Copies::kMinBlocks;
  bool accumulate;
  float* dW;
  float* db;
  int ld;
  FusedSgd sgd;
  Copies copies;
  __device__ void operator()(int i, int j, float v) const {
    const std::size_t at = std::size_t(i) * ld + j;
    const float g = accumulate ? dW[at] + v : v;
    dW[at] = g;
    copies.dW(at, g);
    if (sgd.W != nullptr) sgd_one(sgd, sgd.W[at], sgd.vW != nullptr ? sgd.vW + at : nullptr, g);
  }
  __device__ void row_sum(int i, float s) const {
    if (db == nullptr) return;
    const float g = accumulate ? db[i] + s : s;
    db[i] = g;
    copies.db(i, g);
    if (sgd.b != nullptr) sgd_one(sgd, sgd.b[i], sgd.vb != nullptr ? sgd.vb + i : nullptr, g);
  }
  __device__ void finish() const { copies.finish(); }
};
using WeightGradEpi = WeightGradEpiWith<NoCopies>;
using PushedWeightGradEpi = WeightGradEpiWith<PeerCopies>;

// ---------------------------------------------------------------------------------------------
// The tiled GEMM. Block tile BI x BJ, K in steps of BK, 256 threads. gridDim.z > 1 splits K:
// every slice writes its partial tile to scratch, and the last slice to arrive (ticket from
// an atomic counter) sums all of them in slice order and runs the epilogue.
//
// Two ways to multiply a tile, the same loads, stages, split-K and epilogues around them:
// - fp32 (Mma = kFfma): each thread owns a (BI/16) x (BJ/16) piece of the tile at stride 16 (a
//   warp's shared-memory reads of B are 16 consecutive words, its global writes of C coalesce),
//   one FFMA per product, in k order.
// - TF32 tensor cores (Mma = kMmaTf32): the 8 warps form a 2 x 4 grid, each multiplying a
//   (BI/2) x (BJ/4) piece with mma.m16n8k8 on operands rounded to TF32 (10-bit mantissa) and
//   fp32 accumulation: an eighth of the instructions per K step, so a latency-bound block's
//   dependent chain is shorter; results differ from fp32 by TF32 rounding (the approximate
//   parity class), and still repeat bit for bit.
// - BF16 tensor cores (Mma = kMmaBf16): the same warp grid and accumulators (mma.m16n8k16 puts
//   its fp32 results where m16n8k8 does), operands rounded to BF16 (7-bit mantissa) in pairs
//   along k, half the mma instructions of TF32. Values stay fp32 in memory: only the products'
//   operands are rounded.

// Where element (k, i) of an operand tile lives in shared memory. fp32: [k][i] with a +1
// column, so the loader's per-warp column writes (K-contiguous sources) hit all 32 banks. TF32:
// a fragment load reads 4 k x 8 i (k = lane % 4, i = lane / 4), so the layout follows the
// source: [i][k] with rows of BK + 4 when K-contiguous (the loader writes runs of k; a
// fragment's 32 words fall in 32 banks), else [k][i] with rows of BN + 8 (runs of i).
// BF16 fragments read k and k+1 of one i: [i][k] rows of BK + 8 let a half-warp's 64-bit
// loads of both fall in 32 distinct banks (BK = 32; at BK = 16 that row would push the two
// 64 x 64 tiles past 48 KiB, so they keep BK + 4 and 2-way conflicts), and [k][i] rows of
// BN + 4 put the four k pairs of a warp 8 banks apart.
template <int Mma, bool KContig, int BN, int BK>
struct TileLayout {
  static constexpr bool k_major = Mma == kFfma || !KContig;
  static constexpr int rows = k_major ? BK : BN;
  static constexpr int stride = Mma == kFfma ? BN + 1
                                : KContig     ? (Mma == kMmaBf16 && BK >= 32 ? BK + 8 : BK + 4)
                                              : (Mma == kMmaBf16 ? BN + 4 : BN + 8);
  __device__ static float& at(float (*tile)[stride], int k, int i) { return k_major ? tile[k][i] : tile[i][k]; }
};

// Tensor-core accumulators: warp (wi, wj) of a 2 x 4 grid owns rows wi*BI/2.., columns wj*BJ/4.., in
// 16 x 8 mma tiles; accumulator e = (mtile * ntiles + ntile) * 4 + c of a thread sits where
// mma.m16n8k8 puts c.
template <int BI, int BJ>
struct MmaLayout {
  static constexpr int count = BI * BJ / kThreads;  // accumulators per thread
  static constexpr int warp_rows = BI / 2, warp_cols = BJ / 4;
  static constexpr int mtiles = warp_rows / 16, ntiles = warp_cols / 8;
  static_assert(mtiles * 16 == warp_rows && ntiles * 8 == warp_cols && mtiles * ntiles * 4 == count,
                "TF32 tiles need BI % 32 == 0 and BJ % 32 == 0");
  __device__ static int row(int e, int tid) {
    return (tid / 32 / 4) * warp_rows + (e / 4 / ntiles) * 16 + tid % 32 / 4 + (e % 4 / 2) * 8;
  }
  __device__ static int col(int e, int tid) {
    return (tid / 32 % 4) * warp_cols + (e / 4 % ntiles) * 8 + 2 * (tid % 4) + e % 2;
  }
};

__device__ __forceinline__ unsigned to_tf32(float x) {
  unsigned r;
  asm("cvt.rna.tf32.f32 %0, %1;" : "=r"(r) : "f"(x));
  return r;
}

// d += a * b for one 16x8x8 TF32 tile (fragments as PTX's mma.m16n8k8 .row.col lays them out).
__device__ __forceinline__ void mma_tf32(float* d, const unsigned* a, const unsigned* b) {
#if defined(__CUDA_ARCH__) && __CUDA_ARCH__ >= 800
  asm volatile("mma.sync.aligned.m16n8k8.row.col.f32.tf32.tf32.f32 {%0,%1,%2,%3}, {%4,%5,%6,%7}, {%8,%9}, "
               "{%0,%1,%2,%3};"
               : "+f"(d[0]), "+f"(d[1]), "+f"(d[2]), "+f"(d[3])
               : "r"(a[0]), "r"(a[1]), "r"(a[2]), "r"(a[3]), "r"(b[0]), "r"(b[1]));
#else
  __trap();  // the host refuses tf32 below compute capability 8.0
#endif
}

// Elements (k, i) and (k + 1, i) as one BF16 pair; k is even, so an [i][k] layout holds them as
// one aligned 64-bit word.
template <class L>
__device__ __forceinline__ unsigned bf16_pair(float (*tile)[L::stride], int k, int i) {
  if constexpr (!L::k_major) {
    const float2 v = *reinterpret_cast<const float2*>(&L::at(tile, k, i));
    return to_bf16x2(v.x, v.y);
  } else {
    return to_bf16x2(L::at(tile, k, i), L::at(tile, k + 1, i));
  }
}

// One fragment register: element (k, i) as TF32, or elements (k, i) and (k + 1, i) as BF16.
template <int Mma, class L>
__device__ __forceinline__ unsigned fragment(float (*tile)[L::stride], int k, int i) {
  if constexpr (Mma == kMmaBf16) return bf16_pair<L>(tile, k, i);
  else return to_tf32(L::at(tile, k, i));
}

// One K tile (BK deep) of the block's product on tensor cores, into acc (MmaLayout order):
// m16n8k8 steps for TF32, m16n8k16 steps for BF16. Lane (g, q) holds rows g and g + 8 and, per
// step, k = q and q + 4 (TF32) or the pairs 2q and 2q + 8 (BF16).
template <int Mma, int BI, int BJ, int BK, class LA, class LB>
__device__ __forceinline__ void mma_k_tile(float (*As)[LA::stride], float (*Bs)[LB::stride], float* acc) {
  constexpr int kStep = Mma == kMmaBf16 ? 16 : 8, kHalf = kStep / 2;
  static_assert(BK % kStep == 0, "K tiles hold whole mma steps");
  using L = MmaLayout<BI, BJ>;
  const int lane = threadIdx.x % 32, warp = threadIdx.x / 32;
  const int g = lane / 4, kq = Mma == kMmaBf16 ? 2 * (lane % 4) : lane % 4;
  const int r0 = (warp / 4) * L::warp_rows + g, c0 = (warp % 4) * L::warp_cols + g;
#pragma unroll
  for (int kk = 0; kk < BK; kk += kStep) {
    unsigned a[L::mtiles][4], b[L::ntiles][2];
#pragma unroll
    for (int mt = 0; mt < L::mtiles; ++mt) {
      const int r = r0 + mt * 16;
      a[mt][0] = fragment<Mma, LA>(As, kk + kq, r);
      a[mt][1] = fragment<Mma, LA>(As, kk + kq, r + 8);
      a[mt][2] = fragment<Mma, LA>(As, kk + kq + kHalf, r);
      a[mt][3] = fragment<Mma, LA>(As, kk + kq + kHalf, r + 8);
    }
#pragma unroll
    for (int nt = 0; nt < L::ntiles; ++nt) {
      const int c = c0 + nt * 8;
      b[nt][0] = fragment<Mma, LB>(Bs, kk + kq, c);
      b[nt][1] = fragment<Mma, LB>(Bs, kk + kq + kHalf, c);
    }
#pragma unroll
    for (int mt = 0; mt < L::mtiles; ++mt)
#pragma unroll
      for (int nt = 0; nt < L::ntiles; ++nt) {
        if constexpr (Mma == kMmaBf16) mma_bf16(acc + (mt * L::ntiles + nt) * 4, a[mt], b[nt]);
        else mma_tf32(acc + (mt * L::ntiles + nt) * 4, a[mt], b[nt]);
      }
  }
}

// The end of a tensor-core tile: gemm_tile's epilogue and split-K fix-up with MmaLayout coordinates.
// (The fp32 path keeps its own copy inline: ptxas allocates its registers differently, over
// the 128 of two blocks per SM, when that code is reshaped.)
template <int BI, int BJ, class Epi>
__device__ __forceinline__ void mma_tile_finish(int I, int J, int i0, int j0, const float* acc, Epi& epi,
                                                float* partials, unsigned* counters) {
  using L = MmaLayout<BI, BJ>;
  const int tid = threadIdx.x, slices = gridDim.z;
  if (slices == 1) {
#pragma unroll
    for (int e = 0; e < L::count; ++e) {
      const int gi = i0 + L::row(e, tid), gj = j0 + L::col(e, tid);
      if (gi < I && gj < J) epi(gi, gj, acc[e]);
    }
    epi.finish();
    return;
  }
  const int tile = blockIdx.y * gridDim.x + blockIdx.x;
  float* tile_partials = partials + std::size_t(tile) * slices * BI * BJ;
  float* mine = tile_partials + std::size_t(blockIdx.z) * BI * BJ;
#pragma unroll
  for (int e = 0; e < L::count; ++e) mine[L::row(e, tid) * BJ + L::col(e, tid)] = acc[e];
  __threadfence();
  __syncthreads();
  __shared__ unsigned ticket;
  if (tid == 0) ticket = atomicAdd(&counters[tile], 1u);
  __syncthreads();
  if (ticket != unsigned(slices - 1)) return;
  __threadfence();
#pragma unroll
  for (int e = 0; e < L::count; ++e) {
    const int li = L::row(e, tid), lj = L::col(e, tid);
    float v = 0.0f;
    for (int z = 0; z < slices; ++z) v += __ldcg(tile_partials + std::size_t(z) * BI * BJ + li * BJ + lj);
    if (i0 + li < I && j0 + lj < J) epi(i0 + li, j0 + lj, v);
  }
  epi.finish();
  if (tid == 0) counters[tile] = 0;
}

template <int BI, int BJ, int BK, int T, int Mma, class ASrc, class BSrc, class Epi>
__device__ __forceinline__ void gemm_tile(int I, int J, int K, int k_slice, ASrc A, BSrc B, Epi epi, float* a_copy,
                                          int a_copy_ld, float* partials, unsigned* counters) {
  constexpr int TI = BI / 16, TJ = BJ / 16;
  constexpr int APer = BI * BK / kThreads, BPer = BJ * BK / kThreads;
  static_assert(APer * kThreads == BI * BK && BPer * kThreads == BJ * BK, "tile/threads mismatch");
  using LA = TileLayout<Mma, ASrc::k_contig, BI, BK>;
  using LB = TileLayout<Mma, BSrc::k_contig, BJ, BK>;
  // T K tiles per stage: their loads are all in flight together, so a slice of up to T tiles
  // costs one global round trip instead of T dependent ones (the order of the sums is unchanged).
  __shared__ alignas(16) float As[T][LA::rows][LA::stride];
  __shared__ alignas(16) float Bs[T][LB::rows][LB::stride];

  const int tid = threadIdx.x, tx = tid % 16, ty = tid / 16;
  const int i0 = blockIdx.y * BI, j0 = blockIdx.x * BJ;
  const int kbeg = blockIdx.z * k_slice, kend = min(K, kbeg + k_slice);
  pdl_wait();  // before the row lookups: they read the step counter

  // Fixed per-thread load coordinates (256 is a multiple of BK and of BI/BJ).
  int a_i[APer], a_k[APer], b_j[BPer], b_k[BPer];
  typename ASrc::Row a_row[APer];
  typename BSrc::Row b_row[BPer];
#pragma unroll
  for (int e = 0; e < APer; ++e) {
    const int idx = tid + e * kThreads;
    a_k[e] = ASrc::k_contig ? idx % BK : idx / BI;
    a_i[e] = ASrc::k_contig ? idx / BK : idx % BI;
    a_row[e] = i0 + a_i[e] < I ? A.row(i0 + a_i[e]) : nullptr;
  }
#pragma unroll
  for (int e = 0; e < BPer; ++e) {
    const int idx = tid + e * kThreads;
    b_k[e] = BSrc::k_contig ? idx % BK : idx / BJ;
    b_j[e] = BSrc::k_contig ? idx / BK : idx % BJ;
    b_row[e] = j0 + b_j[e] < J ? B.row(j0 + b_j[e]) : nullptr;
  }

  float ra[T][APer], rb[T][BPer];
  auto fetch = [&](int c0) {
#pragma unroll
    for (int t = 0; t < T; ++t) {
#pragma unroll
      for (int e = 0; e < APer; ++e) {
        const int k = c0 + t * BK + a_k[e];
        ra[t][e] = (a_row[e] != nullptr && k < kend) ? A.at(a_row[e], k) : 0.0f;
      }
#pragma unroll
      for (int e = 0; e < BPer; ++e) {
        const int k = c0 + t * BK + b_k[e];
        rb[t][e] = (b_row[e] != nullptr && k < kend) ? B.at(b_row[e], k) : 0.0f;
      }
    }
  };

  float acc[TI][TJ] = {};
  float row_sum = 0.0f;  // thread t < BI: sum over k of A(i0 + t, k), for the bias gradient
  const bool copy_a = a_copy != nullptr && blockIdx.x == 0;
  const bool sum_rows = Epi::kRowSums && blockIdx.x == 0 && tid < BI;

  if (kbeg < kend) fetch(kbeg);
  for (int c0 = kbeg; c0 < kend; c0 += T * BK) {
#pragma unroll
    for (int t = 0; t < T; ++t) {
#pragma unroll
      for (int e = 0; e < APer; ++e) LA::at(As[t], a_k[e], a_i[e]) = ra[t][e];
#pragma unroll
      for (int e = 0; e < BPer; ++e) LB::at(Bs[t], b_k[e], b_j[e]) = rb[t][e];
      if (copy_a) {
#pragma unroll
        for (int e = 0; e < APer; ++e) {
          const int k = c0 + t * BK + a_k[e];
          if (a_row[e] != nullptr && k < kend) a_copy[std::size_t(i0 + a_i[e]) * a_copy_ld + k] = ra[t][e];
        }
      }
    }
    __syncthreads();
    if (c0 + T * BK < kend) fetch(c0 + T * BK);  // the next stage's loads fly while this one is multiplied
#pragma unroll
    for (int t = 0; t < T; ++t) {
      if (c0 + t * BK >= kend) break;  // the same for the whole block
      if (sum_rows) {
#pragma unroll
        for (int kk = 0; kk < BK; ++kk) row_sum += LA::at(As[t], kk, tid);  // fp32 in both modes
      }
      if constexpr (Mma != kFfma) {
        mma_k_tile<Mma, BI, BJ, BK, LA, LB>(As[t], Bs[t], &acc[0][0]);
      } else {
#pragma unroll
        for (int kk = 0; kk < BK; ++kk) {
          float a[TI], b[TJ];
#pragma unroll
          for (int i = 0; i < TI; ++i) a[i] = As[t][kk][ty + i * 16];
#pragma unroll
          for (int j = 0; j < TJ; ++j) b[j] = Bs[t][kk][tx + j * 16];
#pragma unroll
          for (int i = 0; i < TI; ++i)
#pragma unroll
            for (int j = 0; j < TJ; ++j) acc[i][j] = fmaf(a[i], b[j], acc[i][j]);
        }
      }
    }
    __syncthreads();
  }

  pdl_trigger();
  if (sum_rows && i0 + tid < I) epi.row_sum(i0 + tid, row_sum);  // only with gridDim.z == 1

  const int slices = gridDim.z;
  if constexpr (Mma != kFfma) {
    mma_tile_finish<BI, BJ>(I, J, i0, j0, &acc[0][0], epi, partials, counters);
    return;
  }
  if (slices == 1) {
#pragma unroll
    for (int i = 0; i < TI; ++i)
#pragma unroll
      for (int j = 0; j < TJ; ++j) {
        const int gi = i0 + ty + i * 16, gj = j0 + tx + j * 16;
        if (gi < I && gj < J) epi(gi, gj, acc[i][j]);
      }
    epi.finish();
    return;
  }

  const int tile = blockIdx.y * gridDim.x + blockIdx.x;
  float* tile_partials = partials + std::size_t(tile) * slices * BI * BJ;
  float* mine = tile_partials + std::size_t(blockIdx.z) * BI * BJ;
#pragma unroll
  for (int i = 0; i < TI; ++i)
#pragma unroll
    for (int j = 0; j < TJ; ++j) mine[(ty + i * 16) * BJ + tx + j * 16] = acc[i][j];
  __threadfence();  // publish the partial tile before taking a ticket
  __syncthreads();
  __shared__ unsigned ticket;
  if (tid == 0) ticket = atomicAdd(&counters[tile], 1u);
  __syncthreads();
  if (ticket != unsigned(slices - 1)) return;
  __threadfence();  // see every other slice's partial tile
#pragma unroll
  for (int i = 0; i < TI; ++i)
#pragma unroll
    for (int j = 0; j < TJ; ++j) {
      const int li = ty + i * 16, lj = tx + j * 16;
      float v = 0.0f;
      for (int z = 0; z < slices; ++z) v += __ldcg(tile_partials + std::size_t(z) * BI * BJ + li * BJ + lj);
      if (i0 + li < I && j0 + lj < J) epi(i0 + li, j0 + lj, v);
    }
  epi.finish();
  if (tid == 0) counters[tile] = 0;  // ready for the next call (or graph replay)
}

template <int BI, int BJ, int BK, int T, int Mma, class ASrc, class BSrc, class Epi>
__global__ void __launch_bounds__(kThreads)
gemm_kernel(int I, int J, int K, int k_slice, ASrc A, BSrc B, Epi epi, float* a_copy, int a_copy_ld,
            float* partials, unsigned* counters) {
  gemm_tile<BI, BJ, BK, T, Mma>(I, J, K, k_slice, A, B, epi, a_copy, a_copy_ld, partials, counters);
}

// The same product bounded to 128 registers (two resident blocks per SM), for epilogues whose
// kMinBlocks asks for it: push_p2p's copies took ptxas to 139-142 registers, i.e. one
// 256-thread block per SM (tests/kernel_registers.py). The bound is not on every kernel:
// ptxas then allocates the other kernels differently (73-101 -> 115-124 registers).
template <int BI, int BJ, int BK, int T, int Mma, class ASrc, class BSrc, class Epi>
__global__ void __launch_bounds__(kThreads, 2)
gemm_kernel_two_blocks(int I, int J, int K, int k_slice, ASrc A, BSrc B, Epi epi, float* a_copy, int a_copy_ld,
                       float* partials, unsigned* counters) {
  gemm_tile<BI, BJ, BK, T, Mma>(I, J, K, k_slice, A, B, epi, a_copy, a_copy_ld, partials, counters);
}

template <int BI, int BJ, int BK, int T, int Mma, class ASrc, class BSrc, class Epi>
constexpr auto gemm_entry() {
  if constexpr (Epi::kMinBlocks >= 2 || (Mma != kFfma && Epi::kRowSums))
    return &gemm_kernel_two_blocks<BI, BJ, BK, T, Mma, ASrc, BSrc, Epi>;
  else
    return &gemm_kernel<BI, BJ, BK, T, Mma, ASrc, BSrc, Epi>;
}

// How one product is cut into blocks; a function of the shape alone (nnpar/gemm_tiling.hpp).
using Plan = GemmTiling;

int ceil_div(int a, int b) { return (a + b - 1) / b; }

void check_launch(const char* what) { check(cudaGetLastError(), what); }

void check_copies(const GradientCopies& copies, const float* db, const char* what) {
  bool bad = copies.count < 0 || copies.count > kMaxGradientCopies;
  for (int c = 0; !bad && c < copies.count; ++c)
    bad = copies.dW[c] == nullptr || (db != nullptr && copies.db[c] == nullptr);
  if (bad) throw std::invalid_argument(std::string(what) + ": bad gradient copies (count or a null pointer)");
}

template <class ASrc, class BSrc, class Epi>
void launch_gemm(const Plan& p, int I, int J, int K, ASrc A, BSrc B, Epi epi, float* a_copy, int a_copy_ld,
                 GemmScratch scratch, cudaStream_t stream, const char* what) {
  if (I <= 0 || J <= 0) return;
  const dim3 grid(p.tiles_j, p.tiles_i, p.slices);
  auto go = [&](auto kernel) {
    launch_kernel(kernel, grid, dim3(kThreads), stream, I, J, K, p.k_slice, A, B, epi, a_copy, a_copy_ld,
                  scratch.partials, scratch.counters);
  };
  const bool staged = g_options.k_stage > 1;
  // Tensor-core products always load kStage K tiles per stage (one instantiation fewer per
  // product). Reductions of at most kMmaMinDepth (the weight gradients of batches <= 8) stay
  // fp32: one mostly padded K tile, and on an H200 batch-1 steps were 2-10% slower on tensor
  // cores.
  const bool mma = g_options.precision != MmaPrecision::fp32 && K > kMmaMinDepth;
  if (mma && g_options.precision == MmaPrecision::tf32) {
    p.big ? go(gemm_entry<64, 64, 16, kStage, kMmaTf32, ASrc, BSrc, Epi>())
          : go(gemm_entry<32, 32, 32, kStage, kMmaTf32, ASrc, BSrc, Epi>());
  } else if (mma) {
    p.big ? go(gemm_entry<64, 64, 16, kStage, kMmaBf16, ASrc, BSrc, Epi>())
          : go(gemm_entry<32, 32, 32, kStage, kMmaBf16, ASrc, BSrc, Epi>());
  } else if (p.big) {
    staged ? go(gemm_entry<64, 64, 16, kStage, kFfma, ASrc, BSrc, Epi>())
           : go(gemm_entry<64, 64, 16, 1, kFfma, ASrc, BSrc, Epi>());
  } else {
    staged ? go(gemm_entry<32, 32, 32, kStage, kFfma, ASrc, BSrc, Epi>())
           : go(gemm_entry<32, 32, 32, 1, kFfma, ASrc, BSrc, Epi>());
  }
  check_launch(what);
}

// Splits only when the caller gave scratch.
Plan plan_for(GemmForm form, int M, int N, int K, bool have_scratch) {
  const int split = g_options.split_blocks;
  const bool tensor_cores = g_options.precision != MmaPrecision::fp32;
  switch (form) {
    case GemmForm::forward: return forward_tiling(M, N, K, have_scratch, split, tensor_cores);
    case GemmForm::weight_grad: return weight_grad_tiling(M, N, K);
    case GemmForm::input_grad: return input_grad_tiling(M, N, K, have_scratch, split, tensor_cores);
  }
  return {};
}

// ---------------------------------------------------------------------------------------------
// Element-wise kernels.

__device__ __forceinline__ double warp_sum(double v) {
  for (int o = 16; o > 0; o >>= 1) v += __shfl_down_sync(0xffffffffu, v, o);
  return v;
}
__device__ __forceinline__ unsigned warp_sum(unsigned v) {
  for (int o = 16; o > 0; o >>= 1) v += __shfl_down_sync(0xffffffffu, v, o);
  return v;
}

// One block, one thread per row (classes is small: 26 here), so the loss and correct-count
// reductions and the step counter's advance need no inter-block coordination.
__global__ void softmax_xent_kernel(int rows, int classes, const float* logits, const std::int32_t* labels,
                                    RowIndex index, float scale, float* probs, float* dlogits,
                                    double* loss_sum, unsigned long long* correct, bool advance_step) {
  pdl_enter();
  double my_loss = 0.0;
  unsigned my_correct = 0;
  for (int r = threadIdx.x; r < rows; r += blockDim.x) {
    const float* z = logits + std::size_t(r) * classes;
    const int y = labels[batch_row(index, r)];
    float zmax = z[0];
    for (int c = 1; c < classes; ++c) zmax = fmaxf(zmax, z[c]);
    double sum = 0.0;
    for (int c = 0; c < classes; ++c) sum += expf(z[c] - zmax);
    const float inv = float(1.0 / sum);
    float* g = dlogits + std::size_t(r) * classes;
    float best = -1.0f;
    int best_c = 0;
    for (int c = 0; c < classes; ++c) {
      const float p = expf(z[c] - zmax) * inv;
      if (p > best) {  // strict: the first maximum wins, as kernels::count_correct
        best = p;
        best_c = c;
      }
      if (probs != nullptr) probs[std::size_t(r) * classes + c] = p;
      g[c] = scale * (c == y ? p - 1.0f : p);
    }
    double l = log(sum) - (double(z[y]) - zmax);  // log-sum-exp, as the CPU kernel
    if (!(l < 1e30)) l = 1e30;
    my_loss += fmax(l, 0.0);
    my_correct += (best_c == y);
  }
  __shared__ double loss_part[32];
  __shared__ unsigned correct_part[32];
  my_loss = warp_sum(my_loss);
  my_correct = warp_sum(my_correct);
  const int warp = threadIdx.x / 32, lane = threadIdx.x % 32;
  if (lane == 0) {
    loss_part[warp] = my_loss;
    correct_part[warp] = my_correct;
  }
  __syncthreads();  // also: every thread has read *index.step
  if (threadIdx.x == 0) {
    double l = 0.0;
    unsigned c = 0;
    for (int w = 0; w < int(blockDim.x + 31) / 32; ++w) {
      l += loss_part[w];
      c += correct_part[w];
    }
    if (loss_sum != nullptr) *loss_sum += l;
    if (correct != nullptr) *correct += c;
    // The order is read through the counter by this batch's kernels up to here only.
    if (advance_step && index.step != nullptr) *const_cast<int*>(index.step) += 1;
  }
}

__global__ void gather_kernel(int rows, int features, const std::uint8_t* pixels, const std::int32_t* labels,
                              RowIndex index, float scale, float* x, std::int32_t* y) {
  pdl_enter();
  const int r = blockIdx.y;
  const int src = batch_row(index, r);
  for (int f = blockIdx.x * blockDim.x + threadIdx.x; f < features; f += gridDim.x * blockDim.x) {
    x[std::size_t(r) * features + f] = float(pixels[std::size_t(src) * features + f]) * scale;
  }
  if (y != nullptr && blockIdx.x == 0 && threadIdx.x == 0) y[r] = labels[src];
}

// A block per row (grid-strided): the order entry is read once per row, the bytes and floats
// of the row are consecutive across the block's threads.
__global__ void stage_kernel(std::size_t rows, int features, const std::uint8_t* pixels, float scale,
                             const std::uint32_t* order, float* out) {
  pdl_enter();
  for (std::size_t p = blockIdx.x; p < rows; p += gridDim.x) {
    const std::size_t src = order != nullptr ? std::size_t(order[p]) : p;
    const std::uint8_t* in = pixels + src * features;
    float* o = out + p * features;
    for (int f = threadIdx.x; f < features; f += blockDim.x) o[f] = float(in[f]) * scale;  // as GatherSrc::at
  }
}

__global__ void zero_copies_kernel(std::size_t n, GradientCopies copies) {
  pdl_enter();
  const std::size_t stride = std::size_t(gridDim.x) * blockDim.x;
  for (std::size_t i = blockIdx.x * std::size_t(blockDim.x) + threadIdx.x; i < n; i += stride)
    for (int c = 0; c < copies.count; ++c) copies.dW[c][i] = 0.0f;
  __threadfence_system();  // as PeerCopies::finish: landed in the peers' memory on completion
}

__global__ void scale_kernel(std::size_t n, float factor, float* x) {
  pdl_enter();
  for (std::size_t i = blockIdx.x * std::size_t(blockDim.x) + threadIdx.x; i < n;
       i += std::size_t(gridDim.x) * blockDim.x)
    x[i] *= factor;
}

__global__ void sgd_kernel(std::size_t n, float lr, float momentum, float weight_decay, float* params,
                           const float* grads, float* velocity) {
  pdl_enter();
  FusedSgd s;
  s.lr = lr;
  s.momentum = momentum;
  s.weight_decay = weight_decay;
  for (std::size_t i = blockIdx.x * std::size_t(blockDim.x) + threadIdx.x; i < n;
       i += std::size_t(gridDim.x) * blockDim.x) {
    sgd_one(s, params[i], velocity != nullptr ? velocity + i : nullptr, grads[i]);
  }
}

// ---------------------------------------------------------------------------------------------
// Skinny products (M <= kGemvRows rows, batch 1..8): a 32x32 tile would be almost all padding
// and the split-K fix-up (partial tiles, fence, ticket, second pass) is a chain of global
// round trips longer than the arithmetic. These kernels give each output its own warp or
// thread group and reduce in a fixed order (shape-only, so runs repeat bit for bit).
constexpr int kGemvRows = kGemvMaxRows;
constexpr int kGemvSplit = 4;

// Forward: kGemvSplit warps compute Y[:, n] for all M rows: lanes stride over K (coalesced
// reads of W's row), then butterfly sums and the warps' parts in order. Block 0 also writes
// the gathered input copy.
template <class ASrc>
__global__ void __launch_bounds__(kThreads)
gemv_forward_kernel(int M, int N, int K, ASrc A, const float* W, ForwardEpi epi, float* a_copy, int a_copy_ld) {
  // kGemvSplit warps per output, each over every kGemvSplit-th 32-column chunk of K: a quarter
  // of the dependent load rounds of one warp per output; the parts are added in warp order.
  const int lane = threadIdx.x % 32, part = (threadIdx.x / 32) % kGemvSplit;
  const int n = blockIdx.x * (kThreads / 32 / kGemvSplit) + threadIdx.x / 32 / kGemvSplit;
  pdl_wait();  // before the row lookups: they read the step counter
  typename ASrc::Row rows[kGemvRows];
#pragma unroll
  for (int m = 0; m < kGemvRows; ++m) rows[m] = m < M ? A.row(m) : typename ASrc::Row{};
  if (a_copy != nullptr && blockIdx.x == 0) {
    // All of a pass's loads before its stores: a uint8 source may alias the float copy, so
    // interleaved load/store pairs would each wait for the previous store.
    constexpr int Per = 4;
#pragma unroll
    for (int m = 0; m < kGemvRows; ++m)
      for (int k0 = threadIdx.x; m < M && k0 < K; k0 += Per * kThreads) {
        float v[Per];
#pragma unroll
        for (int e = 0; e < Per; ++e) v[e] = k0 + e * kThreads < K ? A.at(rows[m], k0 + e * kThreads) : 0.0f;
#pragma unroll
        for (int e = 0; e < Per; ++e)
          if (k0 + e * kThreads < K) a_copy[std::size_t(m) * a_copy_ld + k0 + e * kThreads] = v[e];
      }
  }
  const float* w = W + std::size_t(n < N ? n : 0) * K;
  float acc[kGemvRows] = {};
  if (n < N) {
#pragma unroll 8
    for (int k = part * 32 + lane; k < K; k += 32 * kGemvSplit) {
      const float wv = w[k];
#pragma unroll
      for (int m = 0; m < kGemvRows; ++m)
        if (m < M) acc[m] = fmaf(A.at(rows[m], k), wv, acc[m]);
    }
  }
  pdl_trigger();
  __shared__ float sums[kThreads / 32][kGemvRows];
#pragma unroll
  for (int m = 0; m < kGemvRows; ++m) {
    float v = acc[m];
    for (int o = 16; o > 0; o >>= 1) v += __shfl_xor_sync(0xffffffffu, v, o);
    if (lane == 0) sums[threadIdx.x / 32][m] = v;
  }
  __syncthreads();
  // Lane m of each output's first warp finishes row m.
  if (part == 0 && n < N && lane < M) {
    const int first = threadIdx.x / 32;
    float v = sums[first][lane];
#pragma unroll
    for (int q = 1; q < kGemvSplit; ++q) v += sums[first + q][lane];
    epi(lane, n, v);
  }
}

// Input gradient: dX[m,k] = sum_n dY[m,n] W[n,k]. A block owns 32 columns k (one per lane,
// coalesced reads of W's rows); its 8 warps take every 8th n and their partial sums are added
// in warp order through shared memory.
__global__ void __launch_bounds__(kThreads)
gemv_input_grad_kernel(int M, int N, int K, const float* dY, const float* W, InputGradEpi epi) {
  constexpr int Groups = kThreads / 32;
  const int lane = threadIdx.x % 32, group = threadIdx.x / 32;
  const int k = blockIdx.x * 32 + lane;
  pdl_wait();
  float acc[kGemvRows] = {};
  if (k < K) {
#pragma unroll 4
    for (int n = group; n < N; n += Groups) {
      const float wv = W[std::size_t(n) * K + k];
#pragma unroll
      for (int m = 0; m < kGemvRows; ++m)
        if (m < M) acc[m] = fmaf(dY[std::size_t(m) * N + n], wv, acc[m]);
    }
  }
  pdl_trigger();
  __shared__ float part[Groups][kGemvRows][32];
#pragma unroll
  for (int m = 0; m < kGemvRows; ++m) part[group][m][lane] = acc[m];
  __syncthreads();
  // Thread (m, lane) of the first kGemvRows warps finishes row m.
  const int m = group;
  if (m < M && k < K) {
    float v = part[0][m][lane];
#pragma unroll
    for (int g = 1; g < Groups; ++g) v += part[g][m][lane];
    epi(m, k, v);
  }
}
static_assert(kThreads / 32 >= kGemvRows, "one warp per row finishes gemv_input_grad");

// softmax_xent for classes <= 32: a warp per row, a lane per class; warp w of block b takes rows
// b*warps + w, then + gridDim.x*warps, ... Same formulas as softmax_xent_kernel (and the CPU
// kernel): p_c = expf(z_c - max) * float(1/sum) with the sum in double, the first arg-max of p
// wins. With several blocks each writes its loss and correct count to part[] and the last to
// take a ticket adds them up in block order (so the sum is shape-deterministic), adds them to
// the totals and advances the step counter: every block read the counter before its ticket.
__global__ void softmax_xent_warp_kernel(int rows, int classes, const float* logits, const std::int32_t* labels,
                                         RowIndex index, float scale, float* probs, float* dlogits,
                                         double* loss_sum, unsigned long long* correct, bool advance_step,
                                         double* part, int K, const float* W, const float* H, float* dX) {
  pdl_wait();
  const int lane = threadIdx.x % 32, warp = threadIdx.x / 32, warps = blockDim.x / 32;
  const bool live = lane < classes;
  double my_loss = 0.0;  // lane 0's, in row order
  unsigned my_correct = 0;
  for (int r = blockIdx.x * warps + warp; r < rows; r += gridDim.x * warps) {
    const int y = labels[batch_row(index, r)];
    const float z = live ? logits[std::size_t(r) * classes + lane] : -INFINITY;
    float zmax = z;
    for (int o = 16; o > 0; o >>= 1) zmax = fmaxf(zmax, __shfl_xor_sync(0xffffffffu, zmax, o));
    const float e = live ? expf(z - zmax) : 0.0f;
    double sum = e;
    for (int o = 16; o > 0; o >>= 1) sum += __shfl_xor_sync(0xffffffffu, sum, o);
    const float inv = float(1.0 / sum);
    const float p = e * inv;
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
    if (live) {
      if (probs != nullptr) probs[std::size_t(r) * classes + lane] = p;
      dlogits[std::size_t(r) * classes + lane] = scale * (lane == y ? p - 1.0f : p);
    }
    if (dX != nullptr) {
      // The previous layer's input gradient for this row: lane k of each 32-column chunk sums
      // the classes in order, as the CPU's gemm_nn, then the sigmoid derivative.
      const float g = live ? scale * (lane == y ? p - 1.0f : p) : 0.0f;
      constexpr int Chunks = 8;
      for (int k0 = 0; k0 < K; k0 += 32 * Chunks) {
        float v[Chunks] = {};
        for (int c = 0; c < classes; ++c) {
          const float gc = __shfl_sync(0xffffffffu, g, c);
          const float* w = W + std::size_t(c) * K + k0 + lane;
#pragma unroll
          for (int j = 0; j < Chunks; ++j)
            if (k0 + 32 * j + lane < K) v[j] = fmaf(gc, w[32 * j], v[j]);
        }
#pragma unroll
        for (int j = 0; j < Chunks; ++j) {
          const int k = k0 + 32 * j + lane;
          if (k >= K) continue;
          const std::size_t at = std::size_t(r) * K + k;
          float x = v[j];
          if (H != nullptr) {
            const float h = H[at];
            x = x * h * (1.0f - h);
          }
          dX[at] = x;
        }
      }
    }
    if (lane == 0) {
      double l = log(sum) - (double(zy) - zmax);
      if (!(l < 1e30)) l = 1e30;
      my_loss += fmax(l, 0.0);
      my_correct += (best_c == y);
    }
  }
  pdl_trigger();
  __shared__ double loss_part[32];
  __shared__ unsigned correct_part[32];
  if (lane == 0) {
    loss_part[warp] = my_loss;
    correct_part[warp] = my_correct;
  }
  __syncthreads();  // also: every thread has read *index.step
  if (threadIdx.x != 0) return;
  double l = 0.0;
  unsigned c = 0;
  for (int w = 0; w < warps; ++w) {
    l += loss_part[w];
    c += correct_part[w];
  }
  if (gridDim.x > 1) {  // part[0] holds the ticket (its place is the same for every row count)
    unsigned* ticket = reinterpret_cast<unsigned*>(part);
    part += 1;
    part[blockIdx.x] = l;
    part[gridDim.x + blockIdx.x] = double(c);
    __threadfence();
    if (atomicAdd(ticket, 1u) != gridDim.x - 1) return;
    __threadfence();
    l = 0.0;
    double cd = 0.0;
    for (int b = 0; b < int(gridDim.x); ++b) {
      l += __ldcg(part + b);
      cd += __ldcg(part + gridDim.x + b);
    }
    c = unsigned(cd);
    *ticket = 0;  // ready for the next call (or graph replay)
  }
  if (loss_sum != nullptr) *loss_sum += l;
  if (correct != nullptr) *correct += c;
  if (advance_step && index.step != nullptr) *const_cast<int*>(index.step) += 1;
}

// Rows per block of the multi-block softmax (one per warp) and its largest grid.
constexpr int kSoftmaxWarps = 8;
constexpr int kSoftmaxMaxBlocks = 256;
int softmax_blocks(int rows) { return std::max(1, std::min(kSoftmaxMaxBlocks, (rows + kSoftmaxWarps - 1) / kSoftmaxWarps)); }

// The last Linear (logits) fused into the softmax: one dependent kernel instead of a split-K
// product (with its fix-up round trips) followed by softmax_xent_warp_kernel. A block per row
// (grid-strided beyond kLogitsMaxBlocks rows): warp w owns classes w, w + 8, w + 16, w + 24 and
// its lanes take k = lane, lane + 32, ... for all four at once (every load of the row in flight
// together: one round trip at K = 256), a butterfly gives each class's sum in the same order for
// every shape, + bias as ForwardEpi. Warp 0 then runs softmax_xent_warp_kernel's row code on the
// block's logits; the per-block loss and count are added in block order by the last block (ticket).
// Measured on an H100 (docs/results/2026-11-26-cuda-4.md): a first version with a warp per row
// (a lane loop over all classes) took 24.7 us at batch 128, its ~2000 dependent instructions per
// warp bounding it; the second (block per row) 12.0 us, of which ~7 us were the last block
// reading the 128 blocks' partial sums one dependent load after another; hence the loads of
// everything that does not depend on the row's result (label, dX's weights) up front and the
// partial sums loaded by all threads of the last block at once.
constexpr int kMaxFusedClasses = 32;
constexpr int kLogitsWarps = 8;
constexpr int kLogitsClassesPerWarp = kMaxFusedClasses / kLogitsWarps;
constexpr int kLogitsMaxBlocks = 256;
int logits_blocks(int rows) { return std::max(1, std::min(kLogitsMaxBlocks, rows)); }

__global__ void __launch_bounds__(32 * kLogitsWarps)
logits_softmax_xent_kernel(int rows, int classes, int K, const float* H, const float* W, const float* b,
                           float* logits, const std::int32_t* labels, RowIndex index, float scale, float* dlogits,
                           double* loss_sum, unsigned long long* correct, bool advance_step, double* part,
                           float* dX, bool sigmoid_input) {
  pdl_wait();
  const int lane = threadIdx.x % 32, warp = threadIdx.x / 32;
  __shared__ float zs[kMaxFusedClasses];
  __shared__ float gs[kMaxFusedClasses];  // the row's dlogits, for dX
  // dX: this thread's first column's weights, loaded before the row's products (they do not
  // depend on them), so the input gradient after the softmax is arithmetic only at K <= 256.
  const int k0 = threadIdx.x;
  float w0[kMaxFusedClasses];
  if (dX != nullptr) {
#pragma unroll
    for (int c = 0; c < kMaxFusedClasses; ++c) w0[c] = (c < classes && k0 < K) ? W[std::size_t(c) * K + k0] : 0.0f;
  }
  double my_loss = 0.0;  // thread 0's, in row order
  unsigned my_correct = 0;
  for (int r = blockIdx.x; r < rows; r += gridDim.x) {
    // The label's lookup (step counter, order, label: three dependent loads) in flight with the products.
    const int y = warp == 0 ? labels[batch_row(index, r)] : 0;
    const float* h = H + std::size_t(r) * K;
    const float h0 = dX != nullptr && sigmoid_input && k0 < K ? h[k0] : 0.0f;
    float acc[kLogitsClassesPerWarp] = {};
#pragma unroll 8
    for (int k = lane; k < K; k += 32) {
      const float hv = h[k];
#pragma unroll
      for (int q = 0; q < kLogitsClassesPerWarp; ++q) {
        const int c = warp + q * kLogitsWarps;
        if (c < classes) acc[q] = fmaf(hv, W[std::size_t(c) * K + k], acc[q]);
      }
    }
#pragma unroll
    for (int q = 0; q < kLogitsClassesPerWarp; ++q) {
      const int c = warp + q * kLogitsWarps;
      float v = acc[q];
      for (int o = 16; o > 0; o >>= 1) v += __shfl_xor_sync(0xffffffffu, v, o);
      if (lane == 0 && c < classes) zs[c] = b != nullptr ? v + b[c] : v;
    }
    __syncthreads();
    if (warp == 0) {  // softmax_xent_warp_kernel's row code
      const bool live = lane < classes;
      const float z = live ? zs[lane] : -INFINITY;
      if (live && logits != nullptr) logits[std::size_t(r) * classes + lane] = z;
      float zmax = z;
      for (int o = 16; o > 0; o >>= 1) zmax = fmaxf(zmax, __shfl_xor_sync(0xffffffffu, zmax, o));
      const float e = live ? expf(z - zmax) : 0.0f;
      double sum = e;
      for (int o = 16; o > 0; o >>= 1) sum += __shfl_xor_sync(0xffffffffu, sum, o);
      const float inv = float(1.0 / sum);
      const float p = e * inv;
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
      if (live) {
        const float g = scale * (lane == y ? p - 1.0f : p);
        dlogits[std::size_t(r) * classes + lane] = g;
        gs[lane] = g;
      }
      if (lane == 0) {
        double l = log(sum) - (double(zy) - zmax);
        if (!(l < 1e30)) l = 1e30;
        my_loss += fmax(l, 0.0);
        my_correct += (best_c == y);
      }
    }
    __syncthreads();  // zs and gs are the next row's once every thread is past the next barrier
    if (dX != nullptr) {
      // The last Linear's input gradient for this row, a thread per column k: the classes in
      // order (as gemm_nn), then the sigmoid derivative as InputGradEpi.
      if (k0 < K) {
        float v = 0.0f;
#pragma unroll
        for (int c = 0; c < kMaxFusedClasses; ++c)
          if (c < classes) v = fmaf(gs[c], w0[c], v);
        if (sigmoid_input) v = v * h0 * (1.0f - h0);
        dX[std::size_t(r) * K + k0] = v;
      }
      for (int k = k0 + blockDim.x; k < K; k += blockDim.x) {
        float v = 0.0f;
#pragma unroll 8
        for (int c = 0; c < classes; ++c) v = fmaf(gs[c], W[std::size_t(c) * K + k], v);
        if (sigmoid_input) {
          const float hk = h[k];
          v = v * hk * (1.0f - hk);
        }
        dX[std::size_t(r) * K + k] = v;
      }
      __syncthreads();
    }
  }
  pdl_trigger();
  // Every thread of the block has read *index.step (the barriers above). The blocks' loss and
  // count go through part[] and the last block adds them in block order: its threads load them
  // all at once (one round trip, not one per block), thread 0 adds them from shared memory.
  __shared__ bool last;
  __shared__ double block_loss[kLogitsMaxBlocks], block_correct[kLogitsMaxBlocks];
  double l = my_loss;
  unsigned c = my_correct;
  if (gridDim.x > 1) {  // part[0] holds the ticket, as softmax_xent_warp_kernel
    unsigned* ticket = reinterpret_cast<unsigned*>(part);
    double* parts = part + 1;
    if (threadIdx.x == 0) {
      parts[blockIdx.x] = l;
      parts[gridDim.x + blockIdx.x] = double(c);
      __threadfence();
      last = atomicAdd(ticket, 1u) == gridDim.x - 1;
    }
    __syncthreads();
    if (!last) return;
    __threadfence();
    for (int bl = threadIdx.x; bl < int(gridDim.x); bl += blockDim.x) {
      block_loss[bl] = __ldcg(parts + bl);
      block_correct[bl] = __ldcg(parts + gridDim.x + bl);
    }
    __syncthreads();
    if (threadIdx.x != 0) return;
    l = 0.0;
    double cd = 0.0;
    for (int bl = 0; bl < int(gridDim.x); ++bl) {
      l += block_loss[bl];
      cd += block_correct[bl];
    }
    c = unsigned(cd);
    *ticket = 0;
  } else if (threadIdx.x != 0) {
    return;
  }
  if (loss_sum != nullptr) *loss_sum += l;
  if (correct != nullptr) *correct += c;
  if (advance_step && index.step != nullptr) *const_cast<int*>(index.step) += 1;
}

}  // namespace

// ---------------------------------------------------------------------------------------------
// Host API

void set_kernel_options(const KernelOptions& options) { g_options = options; }

namespace {
// The skinny kernels for M <= min(option, kGemvRows) rows and a non-empty output.
bool use_gemv(int M, int cols) {
  return M > 0 && cols > 0 && M <= std::min(g_options.gemv_max_rows, kGemvRows);
}
}  // namespace
KernelOptions kernel_options() { return g_options; }

// The plan for this shape with the scratch given: split over K only where it fits.
Plan plan_for(GemmForm form, int M, int N, int K, const GemmScratch& scratch) {
  if (scratch.partials == nullptr) return plan_for(form, M, N, K, false);
  const Plan p = plan_for(form, M, N, K, true);
  const bool sized = scratch.partial_floats != 0 || scratch.counter_count != 0;
  if (sized && (p.scratch_floats() > scratch.partial_floats || p.scratch_counters() > scratch.counter_count))
    return plan_for(form, M, N, K, false);
  return p;
}

void gemm_scratch_size(GemmForm form, int M, int N, int K, std::size_t* floats, std::size_t* counters) {
  const Plan p = plan_for(form, M, N, K, true);
  if (floats != nullptr) *floats = p.scratch_floats();
  if (counters != nullptr) *counters = p.scratch_counters();
}

void linear_forward(int M, int N, int K, const float* X, const float* W, const float* b, bool sigmoid,
                    float* Y, GemmScratch scratch, cudaStream_t stream) {
  if (use_gemv(M, N)) {
    launch_kernel(gemv_forward_kernel<DenseSrc<true>>, dim3(ceil_div(N, kThreads / 32 / kGemvSplit)), dim3(kThreads),
                  stream, M, N, K, DenseSrc<true>{X, K}, W, ForwardEpi{b, sigmoid, Y, N}, nullptr, 0);
    return;
  }
  const Plan p = plan_for(GemmForm::forward, M, N, K, scratch);
  launch_gemm(p, M, N, K, DenseSrc<true>{X, K}, DenseSrc<true>{W, K}, ForwardEpi{b, sigmoid, Y, N}, nullptr, 0,
              scratch, stream, "linear_forward");
}

void linear_forward_gather(int M, int N, int K, const std::uint8_t* pixels, float scale, RowIndex rows,
                           float* X_out, const float* W, const float* b, bool sigmoid, float* Y,
                           GemmScratch scratch, cudaStream_t stream) {
  if (use_gemv(M, N)) {
    launch_kernel(gemv_forward_kernel<GatherSrc>, dim3(ceil_div(N, kThreads / 32 / kGemvSplit)), dim3(kThreads),
                  stream, M, N, K,
                  GatherSrc{pixels, scale, rows, K}, W, ForwardEpi{b, sigmoid, Y, N}, X_out, K);
    return;
  }
  const Plan p = plan_for(GemmForm::forward, M, N, K, scratch);
  launch_gemm(p, M, N, K, GatherSrc{pixels, scale, rows, K}, DenseSrc<true>{W, K}, ForwardEpi{b, sigmoid, Y, N},
              X_out, K, scratch, stream, "linear_forward_gather");
}

void linear_forward_staged(int M, int N, int K, StagedRows X, const float* W, const float* b, bool sigmoid,
                           float* Y, GemmScratch scratch, cudaStream_t stream) {
  const StagedSrc<true> A{X, K};
  if (use_gemv(M, N)) {
    launch_kernel(gemv_forward_kernel<StagedSrc<true>>, dim3(ceil_div(N, kThreads / 32 / kGemvSplit)),
                  dim3(kThreads), stream, M, N, K, A, W, ForwardEpi{b, sigmoid, Y, N}, static_cast<float*>(nullptr),
                  0);
    return;
  }
  const Plan p = plan_for(GemmForm::forward, M, N, K, scratch);
  launch_gemm(p, M, N, K, A, DenseSrc<true>{W, K}, ForwardEpi{b, sigmoid, Y, N}, nullptr, 0, scratch, stream,
              "linear_forward_staged");
}

namespace {

// A weight gradient with X dense or staged, with push_p2p's copies or without (a kernel each).
template <class XSrc>
void weight_grad_product(int M, int N, int K, const float* dY, XSrc X, bool accumulate, float* dW, float* db,
                         const FusedSgd& sgd, cudaStream_t stream, const GradientCopies& copies, const char* what) {
  const Plan p = plan_for(GemmForm::weight_grad, M, N, K, false);
  if (M == 0) return;  // nothing to add (and an empty sum must not overwrite)
  check_copies(copies, db, what);
  // C[N,K] = sum_m A(n,m) B(m,k), A(n,m) = dY[m*N+n] (n contiguous), B(m,k) = X[m*K+k] (k contiguous).
  const DenseSrc<false> A{dY, N};
  if (copies.count > 0)
    launch_gemm(p, N, K, M, A, X, PushedWeightGradEpi{accumulate, dW, db, K, sgd, PeerCopies{copies}}, nullptr, 0,
                GemmScratch{}, stream, what);
  else
    launch_gemm(p, N, K, M, A, X, WeightGradEpi{accumulate, dW, db, K, sgd}, nullptr, 0, GemmScratch{}, stream, what);
}

}  // namespace

void linear_weight_grad_staged(int M, int N, int K, const float* dY, StagedRows X, bool accumulate, float* dW,
                               float* db, const FusedSgd& sgd, cudaStream_t stream, const GradientCopies& copies) {
  weight_grad_product(M, N, K, dY, StagedSrc<false>{X, K}, accumulate, dW, db, sgd, stream, copies,
                      "linear_weight_grad_staged");
}

void stage_epoch_input(std::size_t rows, int features, const std::uint8_t* pixels, float scale,
                       const std::uint32_t* order, float* out, cudaStream_t stream) {
  if (rows == 0 || features <= 0) return;
  // Enough blocks to keep every SM's memory pipes busy; each walks rows at a stride.
  const int blocks = int(std::min<std::size_t>(rows, 16 * std::size_t(kTargetBlocks)));
  launch_kernel(stage_kernel, dim3(blocks), dim3(256), stream, rows, features, pixels, scale, order, out);
  check_launch("stage_epoch_input");
}

int gemm_blocks_per_sm() {
  int blocks = 0;
  const auto kernel = gemm_entry<32, 32, 32, kStage, kFfma, DenseSrc<false>, DenseSrc<false>, WeightGradEpi>();
  check(cudaOccupancyMaxActiveBlocksPerMultiprocessor(&blocks, kernel, kThreads, 0), "gemm_blocks_per_sm");
  return blocks;
}

void linear_weight_grad(int M, int N, int K, const float* dY, const float* X, bool accumulate, float* dW,
                        float* db, const FusedSgd& sgd, cudaStream_t stream, const GradientCopies& copies) {
  weight_grad_product(M, N, K, dY, DenseSrc<false>{X, K}, accumulate, dW, db, sgd, stream, copies,
                      "linear_weight_grad");
}

void zero_gradient_copies(std::size_t n, const GradientCopies& copies, cudaStream_t stream) {
  check_copies(copies, nullptr, "zero_gradient_copies");
  if (n == 0 || copies.count == 0) return;
  const int blocks = int(std::clamp<std::size_t>((n + 255) / 256, 1, 4 * std::size_t(kTargetBlocks)));
  launch_kernel(zero_copies_kernel, dim3(blocks), dim3(256), stream, n, copies);
  check_launch("zero_gradient_copies");
}

void linear_weight_grad_rows(int M, int N, int K, int n0, int n1, const float* dY, const float* X,
                             bool accumulate, float* dW, float* db, const FusedSgd& sgd, cudaStream_t stream) {
  if (n0 < 0 || n1 > N || n0 >= n1) throw std::invalid_argument("linear_weight_grad_rows: bad row range");
  const int rows = n1 - n0;
  const Plan p = plan_for(GemmForm::weight_grad, M, rows, K, false);
  if (M == 0) return;
  // The block's A rows are dY's columns n0.. (stride N); the epilogue indexes from row n0.
  const std::size_t at = std::size_t(n0) * K;
  FusedSgd s = sgd;
  if (s.W != nullptr) s.W += at;
  if (s.b != nullptr) s.b += n0;
  if (s.vW != nullptr) s.vW += at;
  if (s.vb != nullptr) s.vb += n0;
  launch_gemm(p, rows, K, M, DenseSrc<false>{dY + n0, N}, DenseSrc<false>{X, K},
              WeightGradEpi{accumulate, dW + at, db != nullptr ? db + n0 : nullptr, K, s}, nullptr, 0, GemmScratch{},
              stream, "linear_weight_grad_rows");
}

void linear_input_grad(int M, int N, int K, const float* dY, const float* W, const float* H, float* dX,
                       GemmScratch scratch, cudaStream_t stream) {
  if (use_gemv(M, K)) {
    launch_kernel(gemv_input_grad_kernel, dim3(ceil_div(K, 32)), dim3(kThreads), stream, M, N, K, dY, W,
                  InputGradEpi{H, dX, K});
    return;
  }
  const Plan p = plan_for(GemmForm::input_grad, M, N, K, scratch);
  // C[M,K] = sum_n A(m,n) B(n,k), A = dY (n contiguous), B(n,k) = W[n*K+k] (k contiguous).
  launch_gemm(p, M, K, N, DenseSrc<true>{dY, N}, DenseSrc<false>{W, K}, InputGradEpi{H, dX, K}, nullptr, 0,
              scratch, stream, "linear_input_grad");
}

std::size_t softmax_xent_scratch(int rows, int classes) {
  if (classes > 32 || softmax_blocks(rows) == 1) return 0;
  return 1 + 2 * std::size_t(softmax_blocks(rows));  // the ticket, then losses and counts
}

void softmax_xent(int rows, int classes, const float* logits, const std::int32_t* labels, RowIndex index,
                  float scale, float* probs, float* dlogits, double* loss_sum, unsigned long long* correct,
                  bool advance_step, cudaStream_t stream, double* scratch) {
  if (classes <= 32 && g_options.warp_softmax) {
    const int blocks = softmax_blocks(rows);
    if (scratch != nullptr && blocks > 1) {
      launch_kernel(softmax_xent_warp_kernel, dim3(blocks), dim3(32 * kSoftmaxWarps), stream, rows, classes, logits,
                    labels, index, scale, probs, dlogits, loss_sum, correct, advance_step, scratch, 0,
                    static_cast<const float*>(nullptr), static_cast<const float*>(nullptr),
                    static_cast<float*>(nullptr));
      return;
    }
    if (rows <= 32) {  // one block, a row per warp; beyond that one block of warps is slower than a thread per row
      launch_kernel(softmax_xent_warp_kernel, dim3(1), dim3(32 * std::max(1, rows)), stream, rows, classes, logits,
                    labels, index, scale, probs, dlogits, loss_sum, correct, advance_step, scratch, 0,
                    static_cast<const float*>(nullptr), static_cast<const float*>(nullptr),
                    static_cast<float*>(nullptr));
      return;
    }
  }
  const int threads = std::min(1024, std::max(32, (rows + 31) / 32 * 32));
  launch_kernel(softmax_xent_kernel, dim3(1), dim3(threads), stream, rows, classes, logits, labels, index, scale,
                probs, dlogits, loss_sum, correct, advance_step);
}

bool softmax_xent_input_grad(int rows, int classes, const float* logits, const std::int32_t* labels,
                             RowIndex index, float scale, float* dlogits, double* loss_sum,
                             unsigned long long* correct, bool advance_step, int K, const float* W, const float* H,
                             float* dX, cudaStream_t stream, double* scratch) {
  if (classes > 32 || rows <= 0) return false;
  const int blocks = softmax_blocks(rows);
  if (blocks > 1 && scratch == nullptr) return false;
  const int threads = blocks > 1 ? 32 * kSoftmaxWarps : 32 * rows;
  launch_kernel(softmax_xent_warp_kernel, dim3(blocks), dim3(threads), stream, rows, classes, logits, labels, index,
                scale, static_cast<float*>(nullptr), dlogits, loss_sum, correct, advance_step, scratch, K, W, H, dX);
  return true;
}

std::size_t logits_softmax_xent_scratch(int rows, int classes) {
  if (classes > kMaxFusedClasses || logits_blocks(rows) == 1) return 0;
  return 1 + 2 * std::size_t(logits_blocks(rows));  // the ticket, then losses and counts
}

bool logits_softmax_xent(int rows, int classes, int K, const float* H, const float* W, const float* b, float* logits,
                         const std::int32_t* labels, RowIndex index, float scale, float* dlogits, double* loss_sum,
                         unsigned long long* correct, bool advance_step, cudaStream_t stream, double* scratch,
                         float* dX, bool sigmoid_input) {
  if (classes > kMaxFusedClasses || classes <= 0 || rows <= 0 || K <= 0) return false;
  const int blocks = logits_blocks(rows);
  if (blocks > 1 && scratch == nullptr) return false;
  launch_kernel(logits_softmax_xent_kernel, dim3(blocks), dim3(32 * kLogitsWarps), stream, rows, classes, K, H, W, b, logits,
                labels, index, scale, dlogits, loss_sum, correct, advance_step, scratch, dX, sigmoid_input);
  check_launch("logits_softmax_xent");
  return true;
}

void softmax_xent(int rows, int classes, const float* logits, const std::int32_t* labels, RowIndex index,
                  float scale, float* probs, float* dlogits, double* loss_sum, unsigned long long* correct,
                  bool advance_step, cudaStream_t stream) {
  softmax_xent(rows, classes, logits, labels, index, scale, probs, dlogits, loss_sum, correct, advance_step, stream,
               nullptr);
}

void gather_batch(int rows, int features, const std::uint8_t* pixels, const std::int32_t* labels,
                  RowIndex index, float scale, float* x, std::int32_t* y, cudaStream_t stream) {
  if (rows <= 0) return;
  const dim3 grid(std::max(1, std::min(8, (features + 255) / 256)), rows);
  launch_kernel(gather_kernel, grid, dim3(256), stream, rows, features, pixels, labels, index, scale, x, y);
  check_launch("gather_batch");
}

void sgd_update(std::size_t n, float lr, float momentum, float weight_decay, float* params, const float* grads,
                float* velocity, cudaStream_t stream) {
  if (n == 0) return;
  const int blocks = int(std::min<std::size_t>(1024, (n + 255) / 256));
  launch_kernel(sgd_kernel, dim3(blocks), dim3(256), stream, n, lr, momentum, weight_decay, params, grads, velocity);
  check_launch("sgd_update");
}

void scale(std::size_t n, float factor, float* x, cudaStream_t stream) {
  if (n == 0) return;
  const int blocks = int(std::min<std::size_t>(1024, (n + 255) / 256));
  launch_kernel(scale_kernel, dim3(blocks), dim3(256), stream, n, factor, x);
  check_launch("scale");
}

}  // namespace nnpar::cuda
