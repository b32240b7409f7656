// The resident variant on BF16 tensor cores (include/nnpar/cuda_resident.hpp,
// ResidentMmaTrainer): one thread-block cluster holds a 3-layer MLP in shared memory and trains
// batches of up to 128 rows, every product an mma.m16n8k16 with fp32 sums.
//
// Block k of the C-block cluster owns neurons [16k, 16k + 16) of both hidden layers (so the
// hidden width is 16 C): their weight rows and biases, and the logits layer's 16 columns that
// read them, fp32, in its shared memory for the whole launch. A step:
//
//   F0  Z0[:, own] = X W0own^T: X is read from a staged uint8 copy of the batch in global memory
//       (L2); the block's outputs go to its own shared memory.                             B1
//       The previous step's deferred W1 update is applied (see below).
//   F1  Z1[:, own] = A0 W1own^T, A0 read from the C blocks' shared memory (DSMEM).
//   H   The block's part of every row's logits, A1own W2[:, own]^T (local).               B2
//       Block k owns rows [k R/C, (k+1) R/C): it adds the C parts (and b2) in rank order and
//       runs the softmax and cross-entropy of those rows.                                  B2b
//       Every block reads every row's dZ2 from its owner; dA1[:, own] = dZ2 W2[:, own] (old
//       W2); dW2[:, own] = dZ2^T A1own and W2's update (b2, in every block, the same update);
//       dZ1[:, own]; dW1own = dZ1own^T A0 (A0 from DSMEM), kept, not applied. The next step's
//       batch is staged into global memory here.                                           B3
//   G0  dA0[:, own] = dZ1 W1[:, own] with dZ1 and W1's columns read from every block (DSMEM;
//       W1 still the old one: each block applies its dW1 only after the next step's B1, when
//       every block has finished this step); dZ0; dW0own = dZ0own^T X and W0own's update.
//
// Four cluster barriers a step. Why no buffer needs two copies: every remote read of a buffer
// happens before the barrier after which its owner next writes it (A0: read in F1 and H, before
// B3, written in the next F0; the logits parts and dZ2: read between B2 and B3, written after
// the next B1; dZ1 and W1: read in G0, written after the next B2b and B1). The staged X is the
// exception: written in H of step s, read in F0 and G0 of step s + 1; it alternates between two
// buffers, and the writes of step s come after B1 of step s, which every block passes only after
// finishing step s - 1.
//
// Operands live in "fragment order": the layout in which one mma.m16n8k16 fragment is 16
// contiguous bytes per lane, so a warp loads a fragment as one 512-byte uint4 load, from its own
// shared memory, another block's (DSMEM) or L2 alike (afrag_word, bfrag_word). Owners write
// their outputs in the order their readers consume them; the staged X (uint8 pixels, 8 bytes a
// lane) is written in both orders it is read in. Only the fp32 masters (W0own, W1own, W2own) are row-major, read as float2 pairs
// and rounded at the fragment load.
//
// Every sum has a fixed order (mma over k in an order fixed per block, logits parts in rank
// order, biases by a fixed warp tree; b2's copies get the same update from the same dZ2 in every
// block), so runs repeat bit for bit. Products round their operands to BF16, as the graph
// variant's precision = "bf16": the approximate parity class.
#include "nnpar/cuda_resident.hpp"

#include <cooperative_groups.h>
#include <cuda_bf16.h>
#include <cuda_runtime.h>

#include <algorithm>
#include <cstdio>
#include <cstdlib>
#include <stdexcept>
#include <string>

#include "nnpar/cuda_kernels.hpp"
#include "cluster_launch.cuh"
#include "mma_bf16.cuh"
#include "phase_clock.cuh"
#include "sgd_one.cuh"

namespace nnpar::cuda {
namespace {

namespace cg = cooperative_groups;

constexpr int kThreads = 512;
constexpr int kWarps = kThreads / 32;
constexpr int kOwn = 16;        // neurons per block in each hidden layer
constexpr int kClasses = 32;    // the logits layer, padded
constexpr int kMaxRows = 128;   // rows of a step: 8 row tiles of 16, one per warp pair
constexpr int kLogitStride = 33;  // [row][33] fp32 dZ2
constexpr int kW2Stride = 24;     // [class][16 own columns] fp32: float2 fragment loads in distinct banks

int pad_to_8_mod_32(int n) { return n + ((8 - n % 32) + 32) % 32; }

// Fragment order. A operand (m x k, row tiles of 16, k steps of 16): element (m, k) is half k % 2
// of this word; the fragment (m tile, k step) is the 128 words from ((mt * ksteps + ks) * 32) * 4.
__host__ __device__ __forceinline__ int afrag_word(int m, int k, int ksteps) {
  const int mm = m % 16, kk = k % 16;
  const int lane = (mm % 8) * 4 + (kk % 8) / 2, reg = mm / 8 + 2 * (kk / 8);
  return (((m / 16) * ksteps + k / 16) * 32 + lane) * 4 + reg;
}
// B operand (k x n, k steps of 16, column groups of 16 = two n8 tiles): element (k, n) is half
// k % 2 of this word; the fragments of group ng at step ks (both n8 tiles) are the 128 words
// from ((ng * ksteps + ks) * 32) * 4.
__host__ __device__ __forceinline__ int bfrag_word(int k, int n, int ksteps) {
  const int kk = k % 16, nn = n % 16;
  const int lane = (nn % 8) * 4 + (kk % 8) / 2, reg = (nn / 8) * 2 + kk / 8;
  return (((n / 16) * ksteps + k / 16) * 32 + lane) * 4 + reg;
}

// The same orders with one byte an element (the staged uint8 pixels): a fragment is 8 bytes a lane.
__host__ __device__ __forceinline__ int afrag_byte(int m, int k, int ksteps) {
  const int word = afrag_word(m, k, ksteps);
  return (word / 4) * 8 + (word % 4) * 2 + k % 2;
}
__host__ __device__ __forceinline__ int bfrag_byte(int k, int n, int ksteps) {
  const int word = bfrag_word(k, n, ksteps);
  return (word / 4) * 8 + (word % 4) * 2 + k % 2;
}

struct Layout {  // offsets in 32-bit words into the dynamic shared memory
  int w0, w1, w2, b0, b1, b2, b2v;
  int part, dz2_own;    // [rows][32] fp32 this block's part of the logits; [rows / C][32] its rows' dZ2
  int a0f, a1f;         // [rows][16] fp32 own activations (the sigmoid derivative)
  int a0a, a1a, dz1a;   // A order, rows x 16 (one k step): read by other blocks
  int a0b, a1b;         // B order, k = rows, n = 16: read by other blocks
  int w1b;              // B order of W1own^T, k = its 16 rows, n = all inputs: read by other blocks
  int dz1t, dz0t;       // A order, m = 16 own neurons, k = rows
  int dz2a, dz2t;       // A order, rows x 32 classes; m = 32 classes, k = rows
  int dz2f;             // [rows][kLogitStride] fp32 every row's dZ2 (the bias gradient); TileSplit's partials share it
  int dzf;              // [rows][16] fp32 own dZ1, then own dZ0 (the bias gradients)
  int dw1, db1;         // the deferred W1 update: [16][hidden], [16]
  int row_loss, row_hit;  // double, int [rows / C]: the loss and hit of each row this block owns
  int labels, next_rows;  // int [rows]
  int raw;              // uint8 [2 * staged pairs][in]: the rows this block stages
  int words;
};

struct Params {
  int in, hidden, classes, cluster;
  int rows, padded_rows, batch, steps;
  long long first_step;
  int sw0, sw1;  // row strides (words) of W0own, and of W1own and W2
  Layout at;
  long long off_w0, off_w1, off_w2;  // W[l] in the flat buffer; b[l] follows it
  FusedSgd sgd;
  float* params;
  float* velocity;
  const std::uint8_t* pixels;
  float pixel_scale;
  const std::int32_t* labels;
  const std::uint32_t* order;
  // uint8 pixels: [2][padded_rows * in] bytes in A order (m = rows), then [2][...] in B order (k = rows)
  unsigned* staged;
  double* loss_sum;
  unsigned long long* correct;
  int* step;
  // Diagnosis (NNPAR_RESIDENT_PHASES): block 0's time in each phase, summed over steps 1..; the
  // last entry counts the steps. Null otherwise.
  unsigned long long* clocks;
};
constexpr int kClockPhases = 12;

__device__ __forceinline__ float sigmoid(float v) { return 1.0f / (1.0f + expf(-v)); }

__device__ __forceinline__ unsigned short bf16_bits(float x) { return __bfloat16_as_ushort(__float2bfloat16_rn(x)); }

__device__ __forceinline__ void put_half(unsigned* words, int word, int half, float x) {
  reinterpret_cast<unsigned short*>(words)[2 * word + half] = bf16_bits(x);
}

// One fragment (this lane's 4 words) of the fragment-ordered buffer at base, fragment index f.
__device__ __forceinline__ uint4 frag(const unsigned* base, int f) {
  return reinterpret_cast<const uint4*>(base)[f * 32 + threadIdx.x % 32];
}

__device__ __forceinline__ void mma_a(float* acc, const uint4& a, const unsigned* b) {
  const unsigned av[4] = {a.x, a.y, a.z, a.w};
  mma_bf16(acc, av, b);
}
// Both n8 tiles of a B fragment group.
__device__ __forceinline__ void mma_a_b16(float (&acc)[2][4], const uint4& a, const uint4& b) {
  const unsigned b0[2] = {b.x, b.y}, b1[2] = {b.z, b.w};
  mma_a(acc[0], a, b0);
  mma_a(acc[1], a, b1);
}

// A B fragment B[k][n] = W[n][k] from fp32 rows W[n * stride + k] (k contiguous), n8 tile at n0.
__device__ __forceinline__ void frag_b_rows(unsigned (&b)[2], const float* W, int stride, int n0, int k0) {
  const int lane = threadIdx.x % 32, g = lane / 4, q = lane % 4;
  const float* at = W + (n0 + g) * stride + k0 + 2 * q;
  const float2 lo = *reinterpret_cast<const float2*>(at), hi = *reinterpret_cast<const float2*>(at + 8);
  b[0] = to_bf16x2(lo.x, lo.y);
  b[1] = to_bf16x2(hi.x, hi.y);
}

// A B fragment B[k][n] = W[k][n] from fp32 rows W[k * stride + n] (n contiguous), n8 tile at n0.
__device__ __forceinline__ void frag_b_cols(unsigned (&b)[2], const float* W, int stride, int n0, int k0) {
  const int lane = threadIdx.x % 32, g = lane / 4, q = lane % 4;
  const float* at = W + (k0 + 2 * q) * stride + n0 + g;
  b[0] = to_bf16x2(at[0], at[stride]);
  b[1] = to_bf16x2(at[8 * stride], at[9 * stride]);
}

// Accumulator element e of an n8 tile: row g (+8 for e >= 2) of the m tile, column 2q + e % 2.
__device__ __forceinline__ int acc_row(int e) { return (threadIdx.x % 32) / 4 + (e / 2) * 8; }
__device__ __forceinline__ int acc_col(int nt, int e) { return nt * 8 + 2 * (threadIdx.x % 4) + e % 2; }

// How the row-tile phases spread a 16-row x 16-column tile per row tile over the 16 warps: warp
// w takes row tile w % tiles and part w / tiles of the K steps (parts = 16 / tiles: 2 parts at
// 128 rows, 16 at 16 rows), so small batches still keep every warp busy.
struct TileSplit {
  int tiles, parts, mt, part;
  __device__ explicit TileSplit(int padded_rows) {
    const int warp = threadIdx.x / 32;
    tiles = padded_rows / 16;
    parts = kWarps / tiles;
    mt = warp % tiles;
    part = warp / tiles;
  }
  __device__ bool live() const { return part < parts; }
  __device__ int begin(int steps) const { return live() ? steps * part / parts : 0; }
  __device__ int end(int steps) const { return live() ? steps * (part + 1) / parts : 0; }
  // Parts 1.. add their sums into part 0's through shared memory, in part order. Returns true in
  // the warps that hold the tile's sums (part 0).
  __device__ bool add_parts(float (&acc)[2][4], float* scratch) const {
    const int lane = threadIdx.x % 32;
    if (live() && part > 0) {
      float* mine = scratch + (((part - 1) * tiles + mt) * 32 + lane) * 8;
#pragma unroll
      for (int e = 0; e < 8; ++e) mine[e] = acc[e / 4][e % 4];
    }
    __syncthreads();
    if (part != 0) return false;
    for (int from = 1; from < parts; ++from) {
      const float* theirs = scratch + (((from - 1) * tiles + mt) * 32 + lane) * 8;
#pragma unroll
      for (int e = 0; e < 8; ++e) acc[e / 4][e % 4] += theirs[e];
    }
    return true;
  }
};

// Sum of column c over rows [0, R) of a row-major array, by one warp in a fixed order (lane l
// adds rows l, l + 32, ...; then a butterfly, which gives every lane the same bits).
template <class T>
__device__ __forceinline__ T warp_column_sum(const T* base, int stride, int c, int R) {
  T v = 0;
  for (int r = threadIdx.x % 32; r < R; r += 32) v += base[r * stride + c];
#pragma unroll
  for (int o = 16; o > 0; o /= 2) v += __shfl_xor_sync(0xffffffffu, v, o);
  return v;
}

// The rows this block stages: row pairs k, k + C, ... of the padded batch, local row 2 i + e
// being row 2 (k + i C) + e. Their uint8 pixels are copied into shared memory (cp.async, 16
// bytes a copy) while the step computes, then stored in both fragment orders.
__device__ __forceinline__ int staged_pairs(const Params& p, int k) {
  return (p.padded_rows / 2 - k + p.cluster - 1) / p.cluster;
}

__device__ __forceinline__ void stage_copy_async(std::uint8_t* raw, const Params& p, const unsigned* rows_of, int k) {
  const int chunks = p.in / 16, local_rows = 2 * staged_pairs(p, k);
  for (int lr = 0; lr < local_rows; ++lr) {
    const int r = 2 * (k + (lr / 2) * p.cluster) + lr % 2;
    if (r >= p.rows) break;  // padding rows and every later local row
    const std::uint8_t* row = p.pixels + std::size_t(rows_of[r]) * p.in;
    for (int chunk = threadIdx.x; chunk < chunks; chunk += kThreads) {
      const unsigned to = unsigned(__cvta_generic_to_shared(raw + lr * p.in + chunk * 16));
      asm volatile("cp.async.cg.shared.global [%0], [%1], 16;" ::"r"(to), "l"(row + chunk * 16) : "memory");
    }
  }
  asm volatile("cp.async.commit_group;" ::: "memory");
}

// After cp.async.wait_all and a barrier: the copied rows (uint8) into staging buffer `buffer`
// in both fragment orders, padding rows as zeros; pixel pairs along k (A order) and row pairs
// (B order) go as 16-bit stores. A unit is 4 pixels of a row pair.
__device__ __forceinline__ void stage_store(const std::uint8_t* raw, const Params& p, int buffer, int k) {
  const int quads = p.in / 4, pairs = staged_pairs(p, k);
  const int x_words = p.padded_rows * p.in / 4, in_steps = p.in / 16, row_steps = p.padded_rows / 16;
  unsigned short* x_a = reinterpret_cast<unsigned short*>(p.staged + buffer * x_words);
  unsigned short* x_b = reinterpret_cast<unsigned short*>(p.staged + 2 * x_words + buffer * x_words);
  const unsigned* raw_words = reinterpret_cast<const unsigned*>(raw);
  for (int u = threadIdx.x; u < pairs * quads; u += kThreads) {
    const int lp = u / quads, quad = u % quads, pair = k + lp * p.cluster;
    const int r = 2 * pair, x = 4 * quad;
    const unsigned lo = r < p.rows ? raw_words[(2 * lp) * quads + quad] : 0u;
    const unsigned hi = r + 1 < p.rows ? raw_words[(2 * lp + 1) * quads + quad] : 0u;
    x_a[afrag_byte(r, x, in_steps) / 2] = (unsigned short)(lo & 0xffffu);
    x_a[afrag_byte(r, x + 2, in_steps) / 2] = (unsigned short)(lo >> 16);
    x_a[afrag_byte(r + 1, x, in_steps) / 2] = (unsigned short)(hi & 0xffffu);
    x_a[afrag_byte(r + 1, x + 2, in_steps) / 2] = (unsigned short)(hi >> 16);
#pragma unroll
    for (int j = 0; j < 4; ++j)
      x_b[bfrag_byte(r, x + j, row_steps) / 2] = (unsigned short)(((lo >> (8 * j)) & 0xffu) | (((hi >> (8 * j)) & 0xffu) << 8));
  }
}

// The pixel values of a fragment staged as uint8 (8 bytes a lane): each byte b becomes
// b * pixel_scale rounded once, as float(b) * pixel_scale, via 2^23 + b (exact in fp32) and one
// fma; then the BF16 pairs of the fragment's 4 registers.
__device__ __forceinline__ uint4 pixels_to_bf16(uint2 bytes, float scale, float offset) {
  auto pair = [&](unsigned w, int first) {
    const float v0 = fmaf(__uint_as_float(__byte_perm(w, 0x4B000000u, 0x7440u | first)), scale, offset);
    const float v1 = fmaf(__uint_as_float(__byte_perm(w, 0x4B000000u, 0x7440u | (first + 1))), scale, offset);
    return to_bf16x2(v0, v1);
  };
  return make_uint4(pair(bytes.x, 0), pair(bytes.x, 2), pair(bytes.y, 0), pair(bytes.y, 2));
}

__device__ __forceinline__ uint2 frag8_l2(const unsigned* base, int f) {
  return __ldcg(reinterpret_cast<const uint2*>(base) + f * 32 + threadIdx.x % 32);
}

template <bool Momentum>
__global__ void __launch_bounds__(kThreads, 1) resident_mma_kernel(const Params p) {
#if defined(__CUDA_ARCH__) && __CUDA_ARCH__ < 900
  __trap();  // clusters need sm_90; the host refuses older devices
#else
  extern __shared__ float4 smem4[];
  float* smem = reinterpret_cast<float*>(smem4);
  unsigned* words = reinterpret_cast<unsigned*>(smem4);
  cg::cluster_group cluster = cg::this_cluster();
  const int C = p.cluster, k = int(cluster.block_rank());
  const int tid = threadIdx.x, warp = tid / 32, lane = tid % 32;
  const int R = p.rows, RP = p.padded_rows, I = p.in, H = p.hidden, NC = p.classes;
  const int row_steps = RP / 16;
  const Layout& at = p.at;
  const int lo = kOwn * k;  // this block's first neuron in both hidden layers
  const TileSplit split(RP);  // F0, F1, G0
  const int mt = warp % 8, m0 = 16 * mt;  // the row tile of the logits and dA1 phases
  const bool rows_live = m0 < RP;
  const int sm0 = 16 * split.mt;

  float* W0 = smem + at.w0;
  float* W1 = smem + at.w1;
  float* W2 = smem + at.w2;
  float* b0 = smem + at.b0;
  float* b1 = smem + at.b1;
  float* b2 = smem + at.b2;
  float* a0f = smem + at.a0f;
  float* a1f = smem + at.a1f;
  float* dzf = smem + at.dzf;
  float* dw1 = smem + at.dw1;
  float* db1 = smem + at.db1;
  double* row_loss = reinterpret_cast<double*>(smem + at.row_loss);
  int* labels = reinterpret_cast<int*>(smem + at.labels);
  unsigned* next_rows = words + at.next_rows;
  std::uint8_t* raw = reinterpret_cast<std::uint8_t*>(words + at.raw);
  float* b2v = smem + at.b2v;       // b2's velocities (each block's copy; block 0 writes them back)
  float* part = smem + at.part;     // [RP][32]: this block's part of every row's logits
  float* dz2_own = smem + at.dz2_own;  // [RP / C][32]: dZ2 of the rows this block owns
  float* dz2f = smem + at.dz2f;
  int* row_hit = reinterpret_cast<int*>(smem + at.row_hit);
  const int own_rows = RP / C;
  __shared__ PhaseClock<kClockPhases> clock;
  clock.start();
  int step_now = 0;
  auto mark = [&](int phase) { clock.mark(p.clocks, k == 0, step_now, phase); };
  // W1own^T in B order for the blocks that read its columns in G0 (column group c: block c's inputs).
  // Word by word (both rows of a pair at once), so a warp's stores fall in distinct banks.
  auto publish_w1 = [&]() {
    for (int w = tid; w < kOwn * H / 2; w += kThreads) {
      const int slot = w % 128, l = slot / 4, reg = slot % 4;  // bfrag_word's inverse, ksteps = 1
      const int c = (w / 128) * 16 + (reg / 2) * 8 + l / 4, j = (reg % 2) * 8 + (l % 4) * 2;
      words[at.w1b + w] = to_bf16x2(W1[j * p.sw1 + c], W1[(j + 1) * p.sw1 + c]);
    }
  };
  auto apply_w1_update = [&]() {
    for (int c = tid; c < H; c += kThreads)
#pragma unroll 4
      for (int j = 0; j < kOwn; ++j)
        sgd_one(p.sgd, W1[j * p.sw1 + c], Momentum ? p.velocity + p.off_w1 + std::size_t(lo + j) * H + c : nullptr,
                dw1[j * H + c]);
    if (tid < kOwn) sgd_one(p.sgd, b1[tid], Momentum ? p.velocity + p.off_w1 + std::size_t(H) * H + lo + tid : nullptr, db1[tid]);
  };

  // A hidden layer's tile (rows sm0.., the block's 16 neurons) from its sums: sigmoid(z + b) as
  // fp32 (the derivative later) and in both fragment orders (read by the other blocks).
  auto finish_hidden = [&](const float (&acc)[2][4], const float* bias, float* act, int a_order, int b_order) {
#pragma unroll
    for (int nt = 0; nt < 2; ++nt) {
#pragma unroll
      for (int e = 0; e < 4; e += 2) {
        const int r = sm0 + acc_row(e), c = acc_col(nt, e);
        const float v0 = sigmoid(acc[nt][e] + bias[c]), v1 = sigmoid(acc[nt][e + 1] + bias[c + 1]);
        act[r * kOwn + c] = v0;
        act[r * kOwn + c + 1] = v1;
        words[a_order + afrag_word(r, c, 1)] = to_bf16x2(v0, v1);
        put_half(words + b_order, bfrag_word(r, c, row_steps), r % 2, v0);
        put_half(words + b_order, bfrag_word(r, c + 1, row_steps), r % 2, v1);
      }
    }
  };

  // The block's parameters, once per launch. W2's padding rows stay zero: their logits are 0
  // and never read, their gradients never applied.
  {
    const float* gW0 = p.params + p.off_w0;
    const float* gW1 = p.params + p.off_w1;
    const float* gW2 = p.params + p.off_w2;
    for (int i = tid; i < kOwn * I; i += kThreads) W0[(i / I) * p.sw0 + i % I] = gW0[std::size_t(lo) * I + i];
    for (int i = tid; i < kOwn * H; i += kThreads) W1[(i / H) * p.sw1 + i % H] = gW1[std::size_t(lo) * H + i];
    for (int i = tid; i < kClasses * kOwn; i += kThreads) {
      const int c = i / kOwn, j = i % kOwn;
      W2[c * kW2Stride + j] = c < NC ? gW2[c * H + lo + j] : 0.0f;
    }
    if (tid < kOwn) {
      b0[tid] = gW0[std::size_t(H) * I + lo + tid];
      b1[tid] = gW1[std::size_t(H) * H + lo + tid];
    }
    if (tid < kClasses) b2[tid] = tid < NC ? gW2[std::size_t(NC) * H + tid] : 0.0f;
    if (tid < kClasses) b2v[tid] = Momentum && tid < NC ? p.velocity[p.off_w2 + std::size_t(NC) * H + tid] : 0.0f;
  }
  // The first step's batch: row numbers, labels and its staged pixels.
  if (tid < R) {
    const unsigned row = p.order[p.first_step * p.batch + tid];
    next_rows[tid] = row;
    labels[tid] = p.labels[row];
  }
  __syncthreads();
  publish_w1();
  stage_copy_async(raw, p, next_rows, k);
  asm volatile("cp.async.wait_all;" ::: "memory");
  __syncthreads();
  stage_store(raw, p, 0, k);
  double my_loss = 0.0;  // thread 0: the rows this block owns, in order
  unsigned long long my_correct = 0;
  const int x_words = RP * I / 4;
  const float x_offset = -8388608.0f * p.pixel_scale;  // see pixels_to_bf16
  cluster.sync();  // every block's shared memory exists and the first batch is staged

  for (int s = 0; s < p.steps; ++s) {
    step_now = s;
    const unsigned* x_a = p.staged + (s & 1) * x_words;
    const unsigned* x_b = p.staged + 2 * x_words + (s & 1) * x_words;
    const bool more = s + 1 < p.steps;
    // The next batch's row numbers and labels, loaded now and used after the forward.
    unsigned next_row = 0;
    int next_label = 0;
    if (more && tid < R) {
      next_row = p.order[(p.first_step + s + 1) * p.batch + tid];
      next_label = p.labels[next_row];
    }

    // ---- F0: Z0[:, own] = X W0own^T over I / 16 k steps, split over the warps (TileSplit). X
    // comes from L2: each warp keeps kAhead fragments in flight. (Bulk copies through a ring in
    // shared memory, and the batch multicast into every block's shared memory before F0, were
    // measured and were not faster: the work after the loads is most of F0 and dW0;
    // docs/results/2026-11-28-cuda-resident-5.md.)
    {
      float acc[2][4] = {};
      const int steps = I / 16, s0 = split.begin(steps), s1 = split.end(steps), first = split.mt * steps;
      constexpr int kAhead = 8;
      uint2 ring[kAhead];
#pragma unroll
      for (int d = 0; d < kAhead; ++d)
        if (s0 + d < s1) ring[d] = frag8_l2(x_a, first + s0 + d);
      for (int st = s0; st < s1; st += kAhead) {
#pragma unroll
        for (int d = 0; d < kAhead; ++d) {
          if (st + d < s1) {
            const uint4 a = pixels_to_bf16(ring[d], p.pixel_scale, x_offset);
            if (st + d + kAhead < s1) ring[d] = frag8_l2(x_a, first + st + d + kAhead);
            unsigned b[2][2];
            frag_b_rows(b[0], W0, p.sw0, 0, (st + d) * 16);
            frag_b_rows(b[1], W0, p.sw0, 8, (st + d) * 16);
            mma_a(acc[0], a, b[0]);
            mma_a(acc[1], a, b[1]);
          }
        }
      }
      if (split.add_parts(acc, dz2f)) finish_hidden(acc, b0, a0f, at.a0a, at.a0b);
    }
    if (more && tid < R) next_rows[tid] = next_row;  // read by the staging after B1
    mark(0);
    cluster.sync();  // B1
    mark(1);

    // The previous step's W1 update: every block has finished reading the old rows (G0).
    if (s > 0) {
      apply_w1_update();
      __syncthreads();
      publish_w1();
    }
    // The next batch's pixels: copies issued now, stored after the head's products.
    if (more) stage_copy_async(raw, p, next_rows, k);
    __syncthreads();
    mark(2);

    // ---- F1: Z1[:, own] = A0 W1own^T; k step st reads block st's A0 slice. Each block starts
    // at its own rank, so the C blocks do not all read the same block at once.
    {
      float acc[2][4] = {};
      const int s0 = split.begin(C), s1 = split.end(C);
#pragma unroll 4
      for (int i = s0; i < s1; ++i) {
        const int st = (i + k) % C;
        const uint4 a = frag(cluster.map_shared_rank(words + at.a0a, st), split.mt);
        unsigned b[2][2];
        frag_b_rows(b[0], W1, p.sw1, 0, st * 16);
        frag_b_rows(b[1], W1, p.sw1, 8, st * 16);
        mma_a(acc[0], a, b[0]);
        mma_a(acc[1], a, b[1]);
      }
      if (split.add_parts(acc, dz2f)) finish_hidden(acc, b1, a1f, at.a1a, at.a1b);
    }
    __syncthreads();  // A1own is read only here, by this block's logits part and dW2
    mark(3);

    // ---- H: this block's part of the logits, P = A1own W2[:, own]^T (local: its own A1 and W2
    // columns); warps w and w + 8 take classes 0-15 and 16-31.
    if (rows_live) {
      float acc[2][4] = {};
      const int n0 = warp < 8 ? 0 : 16;
      const uint4 a = frag(words + at.a1a, mt);
      unsigned b[2][2];
      frag_b_rows(b[0], W2, kW2Stride, n0, 0);
      frag_b_rows(b[1], W2, kW2Stride, n0 + 8, 0);
      mma_a(acc[0], a, b[0]);
      mma_a(acc[1], a, b[1]);
#pragma unroll
      for (int nt = 0; nt < 2; ++nt)
#pragma unroll
        for (int e = 0; e < 4; ++e) part[(m0 + acc_row(e)) * kClasses + n0 + acc_col(nt, e)] = acc[nt][e];
    }
    mark(4);
    cluster.sync();  // B2: every block's part of the logits is there
    mark(5);
    // The block's own rows (RP / C of them): logits = b2 + the C parts in rank order, then the
    // softmax and cross-entropy, a warp per row and a lane per class; dZ2 = (p - onehot) / R,
    // zero on padding. Maximum (first index on ties, as serial) and sum by fixed butterflies.
    for (int w = warp; w < own_rows; w += kWarps) {
      const int r = k * own_rows + w;
      float v = b2[lane];
      for (int src = 0; src < C; ++src) v += cluster.map_shared_rank(part, src)[r * kClasses + lane];
      const bool live = r < R && lane < NC;
      if (!live) v = -INFINITY;
      float top = v;
      int best = lane;
#pragma unroll
      for (int o = 16; o > 0; o /= 2) {
        const float other = __shfl_xor_sync(0xffffffffu, top, o);
        const int other_best = __shfl_xor_sync(0xffffffffu, best, o);
        if (other > top || (other == top && other_best < best)) {
          top = other;
          best = other_best;
        }
      }
      const float e = live ? expf(v - top) : 0.0f;
      float sum = e;
#pragma unroll
      for (int o = 16; o > 0; o /= 2) sum += __shfl_xor_sync(0xffffffffu, sum, o);
      const int y = r < R ? labels[r] : 0;
      const float zy = __shfl_sync(0xffffffffu, v, y);
      dz2_own[w * kClasses + lane] = live ? (e * (1.0f / sum) - (lane == y ? 1.0f : 0.0f)) * (1.0f / float(R)) : 0.0f;
      if (lane == 0) {
        row_loss[w] = r < R ? double(logf(sum) - (zy - top)) : 0.0;
        row_hit[w] = r < R && best == y;
      }
    }
    __syncthreads();
    if (tid == 0) {
      for (int w = 0; w < own_rows; ++w) {
        my_loss += row_loss[w];
        my_correct += row_hit[w];
      }
    }
    mark(6);
    cluster.sync();  // B2b: every row's dZ2 is with its owner
    // dZ2 of every row, from its owner, into dz2f (fp32, the bias gradient) and both fragment
    // orders (dA1, dW2); a thread per (row, class pair).
    for (int i = tid; i < RP * kClasses / 2; i += kThreads) {
      const int r = i / (kClasses / 2), c = 2 * (i % (kClasses / 2));
      const float2 d = *reinterpret_cast<const float2*>(
          cluster.map_shared_rank(dz2_own, r / own_rows) + (r % own_rows) * kClasses + c);
      dz2f[r * kLogitStride + c] = d.x;
      dz2f[r * kLogitStride + c + 1] = d.y;
      words[at.dz2a + afrag_word(r, c, kClasses / 16)] = to_bf16x2(d.x, d.y);
      put_half(words + at.dz2t, afrag_word(c, r, row_steps), r % 2, d.x);
      put_half(words + at.dz2t, afrag_word(c + 1, r, row_steps), r % 2, d.y);
    }
    asm volatile("cp.async.wait_all;" ::: "memory");  // the next batch's pixels, read after the barrier
    __syncthreads();

    // dA1[:, own] = dZ2 W2[:, own] (the old W2), then dZ1 = dA1 * a1 (1 - a1): warps 0-7, 2 k steps.
    if (warp < 8 && rows_live) {
      float acc[2][4] = {};
#pragma unroll
      for (int st = 0; st < kClasses / 16; ++st) {
        const uint4 a = frag(words + at.dz2a, mt * (kClasses / 16) + st);
        unsigned b[2][2];
        frag_b_cols(b[0], W2, kW2Stride, 0, st * 16);
        frag_b_cols(b[1], W2, kW2Stride, 8, st * 16);
        mma_a(acc[0], a, b[0]);
        mma_a(acc[1], a, b[1]);
      }
#pragma unroll
      for (int nt = 0; nt < 2; ++nt) {
#pragma unroll
        for (int e = 0; e < 4; e += 2) {
          const int r = m0 + acc_row(e), c = acc_col(nt, e);
          const float h0 = a1f[r * kOwn + c], h1 = a1f[r * kOwn + c + 1];
          const float d0 = acc[nt][e] * h0 * (1.0f - h0), d1 = acc[nt][e + 1] * h1 * (1.0f - h1);
          dzf[r * kOwn + c] = d0;
          dzf[r * kOwn + c + 1] = d1;
          words[at.dz1a + afrag_word(r, c, 1)] = to_bf16x2(d0, d1);
          put_half(words + at.dz1t, afrag_word(c, r, row_steps), r % 2, d0);
          put_half(words + at.dz1t, afrag_word(c + 1, r, row_steps), r % 2, d1);
        }
      }
    }
    __syncthreads();
    mark(7);

    // dW2[:, own] = dZ2^T A1own (local) and the update of this block's W2 columns: warps 0 and 1
    // take classes 0-15 and 16-31. The bias b2 is in every block; each applies the same update.
    if (warp < 2) {
      float acc[2][4] = {};
#pragma unroll 4
      for (int st = 0; st < row_steps; ++st) mma_a_b16(acc, frag(words + at.dz2t, warp * row_steps + st), frag(words + at.a1b, st));
#pragma unroll
      for (int nt = 0; nt < 2; ++nt)
#pragma unroll
        for (int e = 0; e < 4; ++e) {
          const int c = 16 * warp + acc_row(e), j = acc_col(nt, e);
          if (c < NC)
            sgd_one(p.sgd, W2[c * kW2Stride + j], Momentum ? p.velocity + p.off_w2 + std::size_t(c) * H + lo + j : nullptr,
                    acc[nt][e]);
        }
    }
    for (int c = warp; c < NC; c += kWarps) {
      const float sum = warp_column_sum(dz2f, kLogitStride, c, R);
      if (lane == 0) sgd_one(p.sgd, b2[c], Momentum ? b2v + c : nullptr, sum);
    }
    // dW1own = dZ1own^T A0 (A0 from every block), kept for after the next B1. Warp w: block
    // (w + k) % C's 16 inputs.
    if (warp < C) {
      float acc[2][4] = {};
      const int src = (warp + k) % C;
      const unsigned* a0b = cluster.map_shared_rank(words + at.a0b, src);
#pragma unroll 4
      for (int st = 0; st < row_steps; ++st) {
        const uint4 b = frag(a0b, st);
        mma_a_b16(acc, frag(words + at.dz1t, st), b);
      }
#pragma unroll
      for (int nt = 0; nt < 2; ++nt)
#pragma unroll
        for (int e = 0; e < 4; ++e) dw1[acc_row(e) * H + kOwn * src + acc_col(nt, e)] = acc[nt][e];
    }
    if (warp < kOwn) {
      const float sum = warp_column_sum(dzf, kOwn, warp, R);
      if (lane == 0) db1[warp] = sum;
    }
    if (more) stage_store(raw, p, (s + 1) & 1, k);
    mark(8);
    cluster.sync();  // B3
    mark(9);

    // ---- G0: dA0[:, own] = dZ1 W1[:, own]; k step st reads block st's dZ1 slice and its W1
    // rows' columns for this block, from rank k on.
    {
      float acc[2][4] = {};
      const int s0 = split.begin(C), s1 = split.end(C);
#pragma unroll 4
      for (int i = s0; i < s1; ++i) {
        const int st = (i + k) % C;
        const uint4 a = frag(cluster.map_shared_rank(words + at.dz1a, st), split.mt);
        const uint4 b = frag(cluster.map_shared_rank(words + at.w1b, st), k);
        mma_a_b16(acc, a, b);
      }
      if (split.add_parts(acc, dz2f)) {
#pragma unroll
        for (int nt = 0; nt < 2; ++nt) {
#pragma unroll
          for (int e = 0; e < 4; ++e) {
            const int r = sm0 + acc_row(e), c = acc_col(nt, e);
            const float h = a0f[r * kOwn + c];
            const float d = acc[nt][e] * h * (1.0f - h);
            dzf[r * kOwn + c] = d;
            put_half(words + at.dz0t, afrag_word(c, r, row_steps), r % 2, d);
          }
        }
      }
    }
    __syncthreads();
    mark(10);
    // dW0own = dZ0own^T X and W0own's update: warp w takes 16-column groups w, w + 16, ...; each
    // X fragment's register is refilled with the next group's as soon as it is multiplied.
    {
      const int groups = I / 16;
      uint2 xb[kMaxRows / 16];
#pragma unroll
      for (int st = 0; st < kMaxRows / 16; ++st)
        if (st < row_steps && warp < groups) xb[st] = frag8_l2(x_b, warp * row_steps + st);
      for (int group = warp; group < groups; group += kWarps) {
        const int next = group + kWarps;
        float acc[2][4] = {};
#pragma unroll
        for (int st = 0; st < kMaxRows / 16; ++st) {
          if (st < row_steps) {
            mma_a_b16(acc, frag(words + at.dz0t, st), pixels_to_bf16(xb[st], p.pixel_scale, x_offset));
            if (next < groups) xb[st] = frag8_l2(x_b, next * row_steps + st);
          }
        }
#pragma unroll
        for (int nt = 0; nt < 2; ++nt)
#pragma unroll
          for (int e = 0; e < 4; ++e) {
            const int i = acc_row(e), c = 16 * group + acc_col(nt, e);
            sgd_one(p.sgd, W0[i * p.sw0 + c], Momentum ? p.velocity + p.off_w0 + std::size_t(lo + i) * I + c : nullptr,
                    acc[nt][e]);
          }
      }
      if (warp < kOwn) {
        const float sum = warp_column_sum(dzf, kOwn, warp, R);
        if (lane == 0) sgd_one(p.sgd, b0[warp], Momentum ? p.velocity + p.off_w0 + std::size_t(H) * I + lo + warp : nullptr, sum);
      }
    }
    if (more && tid < R) labels[tid] = next_label;
    __syncthreads();
    mark(11);
  }

  // Every block has finished its last reads of other blocks' W1 rows: apply the last W1 update
  // and write the parameters back.
  cluster.sync();
  if (p.steps > 0) apply_w1_update();
  __syncthreads();
  {
    float* gW0 = p.params + p.off_w0;
    float* gW1 = p.params + p.off_w1;
    float* gW2 = p.params + p.off_w2;
    for (int i = tid; i < kOwn * I; i += kThreads) gW0[std::size_t(lo) * I + i] = W0[(i / I) * p.sw0 + i % I];
    for (int i = tid; i < kOwn * H; i += kThreads) gW1[std::size_t(lo) * H + i] = W1[(i / H) * p.sw1 + i % H];
    if (tid < kOwn) {
      gW0[std::size_t(H) * I + lo + tid] = b0[tid];
      gW1[std::size_t(H) * H + lo + tid] = b1[tid];
    }
    for (int i = tid; i < NC * kOwn; i += kThreads) gW2[(i / kOwn) * H + lo + i % kOwn] = W2[(i / kOwn) * kW2Stride + i % kOwn];
    if (k == 0 && tid < NC) {
      gW2[std::size_t(NC) * H + tid] = b2[tid];
      if (Momentum) p.velocity[p.off_w2 + std::size_t(NC) * H + tid] = b2v[tid];
    }
  }
  // Each block counted the rows it owns: block 0 adds the blocks' counts and losses in rank order.
  __shared__ double block_loss;
  __shared__ unsigned long long block_hits;
  if (tid == 0) {
    block_hits = my_correct;
    block_loss = my_loss;
  }
  cluster.sync();
  if (k == 0 && tid == 0) {
    double loss = 0.0;
    unsigned long long total = 0;
    for (int src = 0; src < C; ++src) {
      loss += *cluster.map_shared_rank(&block_loss, src);
      total += *cluster.map_shared_rank(&block_hits, src);
    }
    if (p.loss_sum != nullptr) *p.loss_sum += loss;
    if (p.correct != nullptr) *p.correct += total;
    if (p.step != nullptr) *p.step += p.steps;
    clock.flush(p.clocks, p.steps);
  }
  cluster.sync();  // block 0 has read every block's counts
#endif
}

Layout make_layout(int in, int hidden, int cluster, int padded_rows, int sw0, int sw1) {
  Layout at{};
  int n = 0;
  auto take = [&](int count) {
    const int start = n;
    n += (count + 3) / 4 * 4;  // 16-byte aligned regions
    return start;
  };
  const int RP = padded_rows;
  at.w0 = take(kOwn * sw0);
  at.w1 = take(kOwn * sw1);
  at.w2 = take(kClasses * kW2Stride);
  at.b0 = take(kOwn);
  at.b1 = take(kOwn);
  at.b2 = take(kClasses);
  at.b2v = take(kClasses);
  at.part = take(RP * kClasses);
  at.dz2_own = take(RP / cluster * kClasses);
  at.a0f = take(RP * kOwn);
  at.a1f = take(RP * kOwn);
  const int frag16 = RP * kOwn / 2;  // words of a rows x 16 bf16 buffer
  at.a0a = take(frag16);
  at.a1a = take(frag16);
  at.dz1a = take(frag16);
  at.a0b = take(frag16);
  at.a1b = take(frag16);
  at.w1b = take(kOwn * hidden / 2);
  at.dz1t = take(frag16);
  at.dz0t = take(frag16);
  at.dz2a = take(RP * kClasses / 2);
  at.dz2t = take(RP * kClasses / 2);
  at.dz2f = take(std::max(RP * kLogitStride, (kWarps - 1) * 32 * 8));  // also TileSplit's partials
  at.dzf = take(RP * kOwn);
  at.dw1 = take(kOwn * hidden);
  at.db1 = take(kOwn);
  at.row_loss = take(2 * (RP / cluster));
  at.row_hit = take(RP / cluster);
  at.labels = take(RP);
  at.next_rows = take(RP);
  at.raw = take((2 * ((RP / 2 + cluster - 1) / cluster) * in + 3) / 4);
  at.words = n;
  return at;
}

using Kernel = void (*)(Params);
constexpr Kernel kKernels[] = {resident_mma_kernel<false>, resident_mma_kernel<true>};

int padded(int rows) { return (rows + 15) / 16 * 16; }

}  // namespace

// Device memory owned by the trainer (zeroed).
class DeviceWords {
 public:
  DeviceWords() = default;
  DeviceWords(const DeviceWords&) = delete;
  DeviceWords& operator=(const DeviceWords&) = delete;
  ~DeviceWords() {
    if (ptr_ != nullptr) cudaFree(ptr_);
  }
  void allocate(std::size_t words, const char* what) {
    check(cudaMalloc(&ptr_, std::max<std::size_t>(1, words) * 4), what);
    check(cudaMemset(ptr_, 0, std::max<std::size_t>(1, words) * 4), what);
  }
  void* get() const { return ptr_; }

 private:
  void* ptr_ = nullptr;
};

struct ResidentMmaTrainer::Impl {
  EpochKernelInputs config;
  int cluster = 16;
  int sw0 = 0, sw1 = 0;
  Layout layout{};
  std::size_t bytes = 0;
  DeviceWords staged;
  PhaseClockHost<kClockPhases> clock;
};

ResidentMmaTrainer::ResidentMmaTrainer(const EpochKernelInputs& config) : impl_(std::make_unique<Impl>()) {
  Impl& m = *impl_;
  m.config = config;
  auto fail = [](const std::string& why) {
    throw std::runtime_error("cuda resident variant with precision = \"bf16\": " + why);
  };
  const std::vector<int>& n = config.sizes;
  if (n.size() != 4) fail(std::to_string(int(n.size()) - 1) + " Linear layers; it supports exactly 3 (two hidden)");
  if (n[1] != n[2]) fail("hidden widths " + std::to_string(n[1]) + " and " + std::to_string(n[2]) + " differ; they must be equal");
  if (n[1] != 128 && n[1] != 256)
    fail("hidden width " + std::to_string(n[1]) + "; it supports 128 or 256 (16 neurons a block, clusters of 8 or 16)");
  if (n[0] % 16 != 0 || n[0] > 1024) fail("input width " + std::to_string(n[0]) + "; it must be a multiple of 16, at most 1024");
  if (n[3] > kClasses) fail(std::to_string(n[3]) + " classes; it supports at most " + std::to_string(kClasses));
  if (config.batch < 1 || config.batch > kMaxRows)
    fail("batch_size " + std::to_string(config.batch) + "; it supports 1.." + std::to_string(kMaxRows));
  if (config.momentum != 0.0f && config.velocity == nullptr) fail("momentum without a velocity buffer");

  cudaDeviceProp props{};
  check(cudaGetDeviceProperties(&props, config.device), "cudaGetDeviceProperties");
  if (const std::string problem = cluster_device_problem(props); !problem.empty()) fail(problem);
  m.cluster = n[1] / kOwn;
  m.sw0 = pad_to_8_mod_32(n[0]);
  m.sw1 = pad_to_8_mod_32(n[1]);
  const int RP = padded(config.batch);
  m.layout = make_layout(n[0], n[1], m.cluster, RP, m.sw0, m.sw1);
  m.bytes = std::size_t(m.layout.words) * 4;
  const std::size_t limit = props.sharedMemPerBlockOptin - 1024;  // the kernel's static shared memory
  if (m.bytes > limit) {
    fail("the model and a batch of " + std::to_string(config.batch) + " rows need " + std::to_string(m.bytes >> 10) +
         " KiB of shared memory per block; " + props.name + " allows " + std::to_string(limit >> 10) + " KiB");
  }
  for (const Kernel kernel : kKernels) {
    check(cudaFuncSetAttribute(kernel, cudaFuncAttributeNonPortableClusterSizeAllowed, 1),
          "cudaFuncSetAttribute(non-portable cluster size)");
    check(cudaFuncSetAttribute(kernel, cudaFuncAttributeMaxDynamicSharedMemorySize, int(m.bytes)),
          "cudaFuncSetAttribute(shared memory)");
  }
  const ClusterLaunch launch(m.cluster, kThreads, m.bytes, nullptr);
  int clusters = 0;
  if (cudaOccupancyMaxActiveClusters(&clusters, kKernels[config.momentum != 0.0f], &launch.config) != cudaSuccess ||
      clusters < 1) {
    cudaGetLastError();
    fail("the device cannot schedule a cluster of " + std::to_string(m.cluster) + " blocks with " +
         std::to_string(m.bytes >> 10) + " KiB of shared memory each");
  }
  m.staged.allocate(std::size_t(RP) * n[0], "resident staging buffer");  // 4 copies of RP x in bytes
  m.clock.allocate_if_asked();
}

ResidentMmaTrainer::~ResidentMmaTrainer() = default;

int ResidentMmaTrainer::cluster() const { return impl_->cluster; }
std::size_t ResidentMmaTrainer::shared_bytes() const { return impl_->bytes; }

void ResidentMmaTrainer::run(std::size_t first_step, int steps, int rows, cudaStream_t stream) {
  const Impl& m = *impl_;
  const EpochKernelInputs& c = m.config;
  if (steps <= 0) return;
  if (rows < 1 || rows > c.batch) throw std::invalid_argument("ResidentMmaTrainer::run: rows outside 1..batch");
  Params p{};
  p.in = c.sizes[0];
  p.hidden = c.sizes[1];
  p.classes = c.sizes[3];
  p.cluster = m.cluster;
  p.rows = rows;
  p.padded_rows = padded(rows);
  p.batch = c.batch;
  p.steps = steps;
  p.first_step = (long long)first_step;
  p.sw0 = m.sw0;
  p.sw1 = m.sw1;
  p.at = m.layout;
  p.off_w0 = 0;
  p.off_w1 = (long long)(c.sizes[0] + 1) * c.sizes[1];
  p.off_w2 = p.off_w1 + (long long)(c.sizes[1] + 1) * c.sizes[2];
  p.sgd.lr = c.lr;
  p.sgd.momentum = c.momentum;
  p.sgd.weight_decay = c.weight_decay;
  p.params = c.params;
  p.velocity = c.momentum != 0.0f ? c.velocity : nullptr;
  p.pixels = c.pixels;
  p.pixel_scale = c.pixel_scale;
  p.labels = c.labels;
  p.order = c.order;
  p.staged = static_cast<unsigned*>(m.staged.get());
  p.loss_sum = c.loss_sum;
  p.correct = c.correct;
  p.step = c.step;
  const ClusterLaunch launch(m.cluster, kThreads, m.bytes, stream);
  p.clocks = m.clock.device();
  check(cudaLaunchKernelEx(&launch.config, kKernels[c.momentum != 0.0f], p), "resident bf16 kernel launch");
  impl_->clock.report(stream, steps, "resident bf16 phases", ", rows " + std::to_string(rows), [] {
    return std::vector<std::string>{"F0", "B1", "W1 update", "F1", "logit parts", "B2", "softmax",
                                    "B2b+dZ2+dA1", "dW2+dW1", "B3", "G0", "dW0"};
  });
}

}  // namespace nnpar::cuda
