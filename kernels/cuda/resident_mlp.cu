// The resident variant (include/nnpar/cuda_resident.hpp): one thread-block cluster, the model
// in its blocks' shared memory, many steps per launch.
//
// Block k of a C-block cluster owns, in every layer of n outputs, the neurons
// [floor(n k / C), floor(n (k+1) / C)): their weight rows, biases and outputs. Per step:
//   forward, per layer: each block computes its neurons for every row from the full input in
//     its own shared memory and stores them into every block's copy of the next layer's input
//     (DSMEM), then waits until its own copy is complete;
//   loss: every block runs the softmax of every row (26 classes: cheap) and keeps the
//     gradient of its own classes;
//   backward, per layer l > 0: each block computes, with its rows of W[l], its part of every
//     input's gradient and stores each input's part into the owner's slot for this block
//     (DSMEM); then updates its rows of W[l] (after the part, which read the old rows); then
//     waits for the C parts of its own inputs, adds them in rank order and applies the sigmoid
//     derivative;
//   layer 0 only updates.
// Every exchange is a set of st.async stores that count their bytes on an mbarrier in the
// receiver (cluster_exchange.cuh), not a cluster barrier: a third of the latency. A block stores
// into a buffer again only after it has received data that every block sent after it had
// finished reading that buffer:
//   act[l] for l >= 2, the logits and both recv buffers: the next step's stores come after the
//     sender's wait on that step's layer-0 exchange, whose bytes every block sends only after
//     finishing the previous step (with 4 layers recv[p] is reused within a step: the parts of
//     layer l - 2 go out after the wait on layer l - 1's, which every block sends after summing
//     layer l's);
//   act[1] (below).
// act[1] alternates between two buffers by step (act_of): the next step's first pushes come
// before any wait of that step, and must not land on the act[1] that a slower block's layer-1
// update still reads.
// Every sum has a fixed order, so runs repeat bit for bit. The summation orders differ from
// the CPU's (exact parity class: within the float tolerance, as the graph kernels).
#include "nnpar/cuda_resident.hpp"

#include <cooperative_groups.h>
#include <cuda_runtime.h>

#include <algorithm>
#include <cstdio>
#include <cstdlib>
#include <stdexcept>
#include <string>

#include "nnpar/cuda_kernels.hpp"
#include "cluster_exchange.cuh"
#include "cluster_launch.cuh"
#include "phase_clock.cuh"
#include "sgd_one.cuh"

namespace nnpar::cuda {
namespace {

namespace cg = cooperative_groups;

constexpr int kThreads = 512;
constexpr int kWarps = kThreads / 32;
constexpr int kMaxClasses = 32;
// The exchanges' mbarriers: act[l] for l = 1..L (index l - 1), act[1] of odd steps (index L),
// the two recv buffers (index kResidentMaxLayers + 1 + parity).
constexpr int kExchanges = kResidentMaxLayers + 3;

// (n <= 1024 and parts <= 16 in every caller: the products fit in an int.)
__host__ __device__ inline int slice_begin(int n, int parts, int k) { return n * k / parts; }
// The block that owns neuron j of a layer of n: the last k with slice_begin(n, C, k) <= j.
__device__ inline int slice_owner(int n, int parts, int j) { return ((j + 1) * parts + n - 1) / n - 1; }

struct Layout {  // offsets in floats into the dynamic shared memory; sizes for `batch` rows
  int w[kResidentMaxLayers], b[kResidentMaxLayers];
  int act[kResidentMaxLayers + 1];   // [rows][sizes[l]]: input of layer l (act[L]: logits)
  int act1_odd = 0;                  // act[1] of odd steps (2+ layers): see act_of
  int own_out[kResidentMaxLayers];   // [rows][max_own(l)]: this block's outputs of hidden layer l
  int recv[2];                       // [C][rows][max hidden own]: input-gradient parts, by layer parity
  int dy[2];                         // [rows][max own]: this block's output gradients, ping-pong
  int route[kResidentMaxLayers];     // layers >= 1, [sizes[l]] ints: input j's owner << 16 | j's place in its slice
  int xbytes[2];                     // [rows][sizes[0]] bytes: a batch's pixels, by step parity
  int floats = 0;
};

struct Params {
  int layers;
  int sizes[kResidentMaxLayers + 1];
  long long param_offset[kResidentMaxLayers];  // W[l] in the flat buffer; b[l] follows it
  int cluster, rows, batch, steps;
  long long first_step;
  Layout at;
  int own_stride[kResidentMaxLayers];  // max_own(l): row stride of own_out and dy
  int recv_stride;                     // max own over hidden layers
  FusedSgd sgd;                        // lr, momentum, weight_decay (pointers unused)
  float* params;
  float* velocity;
  const std::uint8_t* pixels;
  float pixel_scale;
  const std::int32_t* labels;
  const std::uint32_t* order;
  double* loss_sum;
  unsigned long long* correct;
  int* step;
  // Diagnosis (NNPAR_RESIDENT_PHASES): block 0's time in each phase, summed over steps 1..; the
  // last entry counts the steps. Null otherwise.
  unsigned long long* clocks;
};
// Phases of a step: input, forward of each layer, softmax, backward of each layer, step end.
constexpr int kClockPhases = 2 * kResidentMaxLayers + 3;

int ceil_div(int a, int b) { return (a + b - 1) / b; }

Layout make_layout(const std::vector<int>& sizes, int C, int rows, int* own_stride, int* recv_stride) {
  Layout at{};
  const int L = int(sizes.size()) - 1;
  int n = 0;
  auto take = [&](int floats) {
    const int start = n;
    n += (floats + 3) / 4 * 4;  // 16-byte aligned regions
    return start;
  };
  int max_own = 0, max_hidden_own = 0;
  for (int l = 0; l < L; ++l) {
    own_stride[l] = ceil_div(sizes[l + 1], C);
    max_own = std::max(max_own, own_stride[l]);
    if (l + 1 < L) max_hidden_own = std::max(max_hidden_own, own_stride[l]);
    at.w[l] = take(own_stride[l] * sizes[l]);
    at.b[l] = take(own_stride[l]);
  }
  for (int l = 0; l <= L; ++l) at.act[l] = take(rows * sizes[l]);
  if (L >= 2) at.act1_odd = take(rows * sizes[1]);
  for (int l = 0; l + 1 < L; ++l) at.own_out[l] = take(rows * own_stride[l]);
  *recv_stride = std::max(1, max_hidden_own);
  for (int p = 0; p < 2; ++p) at.recv[p] = take(C * rows * *recv_stride);
  for (int p = 0; p < 2; ++p) at.dy[p] = take(rows * max_own);
  for (int l = 1; l < L; ++l) at.route[l] = take(sizes[l]);
  for (int p = 0; p < 2; ++p) at.xbytes[p] = take((rows * sizes[0] + 3) / 4);
  at.floats = n;
  return at;
}

__device__ __forceinline__ float sigmoid(float v) { return 1.0f / (1.0f + expf(-v)); }

// Starts copying rows row_of[0..R) of the dataset (in bytes each, a multiple of 16) into dst,
// 16 bytes per cp.async, without waiting: the copy of the next batch flies during a step.
__device__ __forceinline__ void copy_rows_async(std::uint8_t* dst, const std::uint8_t* pixels,
                                                const std::uint32_t* row_of, int R, int in) {
  const int chunks = in / 16;
  for (int b = 0; b < R; ++b) {
    const std::uint8_t* row = pixels + std::size_t(row_of[b]) * in;
    for (int c = threadIdx.x; c < chunks; c += blockDim.x) {
      const unsigned to = unsigned(__cvta_generic_to_shared(dst + b * in + c * 16));
      asm volatile("cp.async.cg.shared.global [%0], [%1], 16;" ::"r"(to), "l"(row + c * 16) : "memory");
    }
  }
  asm volatile("cp.async.commit_group;" ::: "memory");
}

// Rows: the launch's rows rounded up to a power of two (1, 2, 4, 8 or 16), so the per-row
// loops are unrolled without a test per possible row. Momentum: velocities to update (in
// global memory); without it the update touches shared memory only.
template <int Rows, bool Momentum>
__global__ void __launch_bounds__(kThreads, 1) resident_kernel(const Params p) {
#if defined(__CUDA_ARCH__) && __CUDA_ARCH__ < 900
  __trap();  // clusters need sm_90; the host refuses older devices
#else
  extern __shared__ float4 smem4[];
  float* smem = reinterpret_cast<float*>(smem4);
  __shared__ std::uint32_t row_of[kResidentMaxRows], next_row_of[kResidentMaxRows];
  __shared__ int label_of[kResidentMaxRows];
  __shared__ double row_loss[kResidentMaxRows];
  __shared__ unsigned row_hit[kResidentMaxRows];
  __shared__ unsigned long long arrived[kExchanges];

  cg::cluster_group cluster = cg::this_cluster();
  const int C = p.cluster, k = int(cluster.block_rank());
  const int tid = threadIdx.x, lane = tid % 32, warp = tid / 32;
  const int L = p.layers, R = p.rows, classes = p.sizes[L];
  // act[1] alternates between two buffers by step: layer 0's outputs of step s + 1 are pushed
  // into every block before any wait of that step, while a slower block may still read act[1]
  // of step s in its layer-1 update. Step s + 2's pushes come after step s + 1's first exchange,
  // which completes only once every block has finished step s.
  auto act_of = [&](int l, long long step) { return l == 1 && L >= 2 && (step & 1) ? p.at.act1_odd : p.at.act[l]; };
  auto act_arrived = [&](int l, long long step) {
    return &arrived[l == 1 && L >= 2 && (step & 1) ? L : l - 1];
  };
  auto recv_arrived = [&](int l) { return &arrived[kResidentMaxLayers + 1 + l % 2]; };
  // Every thread waits on the exchanges itself; bit i: the parity of barrier i's next phase.
  unsigned parities = 0;
  auto wait_for = [&](unsigned long long* bar) {
    const int i = int(bar - arrived);
    exchange_wait(bar, (parities >> i) & 1u);
    parities ^= 1u << i;
  };
  if (tid == 0) {
    for (int i = 0; i < kExchanges; ++i) exchange_init(&arrived[i]);
    exchange_init_fence();
  }
  const int cluster_shift = C == 16 ? 4 : 3;  // the host launches 8 or 16 blocks

  // This block's rows of every layer, from global memory once per launch.
  for (int l = 0; l < L; ++l) {
    const int in = p.sizes[l], out = p.sizes[l + 1];
    const int lo = slice_begin(out, C, k), own = slice_begin(out, C, k + 1) - lo;
    const float* W = p.params + p.param_offset[l];
    for (int i = tid; i < own * in; i += kThreads) smem[p.at.w[l] + i] = W[std::size_t(lo) * in + i];
    for (int o = tid; o < own; o += kThreads) smem[p.at.b[l] + o] = W[std::size_t(out) * in + lo + o];
  }
  // Where each input of layers >= 1 sends its gradient parts: no divisions in the step.
  for (int l = 1; l < L; ++l) {
    int* route = reinterpret_cast<int*>(smem + p.at.route[l]);
    for (int j = tid; j < p.sizes[l]; j += kThreads) {
      const int r = slice_owner(p.sizes[l], C, j);
      route[j] = r << 16 | (j - slice_begin(p.sizes[l], C, r));
    }
  }
  double my_loss = 0.0;           // block 0, thread 0: rows in order
  unsigned long long my_correct = 0;
  int dy_side = 0;
  __shared__ PhaseClock<kClockPhases> clock;
  clock.start();
  int step_now = 0;
  auto mark = [&](int phase) { clock.mark(p.clocks, k == 0, step_now, phase); };
  if (tid < R) {
    row_of[tid] = p.order[p.first_step * p.batch + tid];
    label_of[tid] = p.labels[row_of[tid]];
  }
  // Every block has started (its shared memory exists) before any block stores into it.
  cluster.sync();
  // Pixels of rows whose width is a multiple of 16 bytes are copied a step ahead (cp.async);
  // other widths are loaded at the step's start.
  const bool ahead = p.sizes[0] % 16 == 0;
  auto xbytes = [&](int parity) {
    return reinterpret_cast<std::uint8_t*>(smem + (parity ? p.at.xbytes[1] : p.at.xbytes[0]));
  };
  if (ahead) {
    copy_rows_async(xbytes(0), p.pixels, row_of, R, p.sizes[0]);
    asm volatile("cp.async.wait_all;" ::: "memory");
    __syncthreads();
  }

  for (int s = 0; s < p.steps; ++s) {
    step_now = s;
    const long long step = p.first_step + s;
    const float scale = 1.0f / float(R);
    // The batch's rows as floats into act[0]. The next batch's row numbers are loaded now (used
    // after the forward; their labels after that, so no thread waits on the row number here),
    // so no step waits on the order -> row -> pixels chain.
    std::uint32_t next_row = 0;
    int next_label = 0;
    const bool more = s + 1 < p.steps;
    if (more && tid < R) next_row = p.order[(step + 1) * p.batch + tid];
    {
      const int in = p.sizes[0];
      float* x = smem + p.at.act[0];
      for (int b = 0; b < R; ++b) {
        const std::uint8_t* row = ahead ? xbytes(s % 2) + b * in : p.pixels + std::size_t(row_of[b]) * in;
        for (int j = tid; j < in; j += kThreads) x[b * in + j] = float(row[j]) * p.pixel_scale;
      }
    }
    if (!ahead && more && tid < R) {
      const std::uint8_t* next = p.pixels + std::size_t(next_row) * p.sizes[0];
      for (int at = 0; at < p.sizes[0]; at += 128) asm volatile("prefetch.global.L2 [%0];" ::"l"(next + at));
    }
    __syncthreads();
    mark(0);

    // Forward.
    for (int l = 0; l < L; ++l) {
      const int in = p.sizes[l], out = p.sizes[l + 1];
      const int lo = slice_begin(out, C, k), own = slice_begin(out, C, k + 1) - lo;
      const bool hidden = l + 1 < L;
      const float* X = smem + act_of(l, step);
      const float* Wl = smem + p.at.w[l];
      float* next = smem + act_of(l + 1, step);
      unsigned long long* next_arrived = act_arrived(l + 1, step);
      if (tid == 0) exchange_arm(next_arrived, unsigned(R * out) * 4u);  // every neuron of every row
      for (int o = warp; o < own; o += kWarps) {
        const float* w = Wl + std::size_t(o) * in;
        float acc[Rows] = {};
        for (int j = lane; j < in; j += 32) {
          const float wv = w[j];
#pragma unroll
          for (int b = 0; b < Rows; ++b)
            if (Rows == 1 || b < R) acc[b] = fmaf(X[b * in + j], wv, acc[b]);
        }
        float mine = 0.0f;  // lane b keeps row b's sum
#pragma unroll
        for (int b = 0; b < Rows; ++b) {
          if (b >= R) break;
          float v = acc[b];
          for (int off = 16; off > 0; off >>= 1) v += __shfl_xor_sync(0xffffffffu, v, off);
          if (lane == b) mine = v;
        }
        if (lane < R) {
          mine += smem[p.at.b[l] + o];
          if (hidden) {
            mine = sigmoid(mine);
            smem[p.at.own_out[l] + lane * p.own_stride[l] + o] = mine;
          }
        }
        // Lane t stores row t / C's value into block t % C: the R x C stores go out together.
        for (int base = 0; base < R * C; base += 32) {
          const int t = base + lane, b = min(t >> cluster_shift, R - 1);
          const float v = __shfl_sync(0xffffffffu, mine, b);
          if (t < R * C) exchange_send(next + b * out + lo + o, next_arrived, unsigned(t & (C - 1)), v);
        }
      }
      wait_for(next_arrived);
      mark(1 + l);
    }

    // The next batch's pixels start flying (the row numbers have long arrived); the copy lands
    // in the other buffer, which nothing reads before the next step.
    if (more && tid < R) next_label = p.labels[next_row];
    if (ahead && more) {
      if (tid < R) next_row_of[tid] = next_row;
      __syncthreads();
      copy_rows_async(xbytes((s + 1) % 2), p.pixels, next_row_of, R, p.sizes[0]);
    }

    // Softmax + cross-entropy of every row (warp per row, lane per class), in every block; the
    // gradient of this block's classes goes to dy.
    {
      const int lo = slice_begin(classes, C, k), own = slice_begin(classes, C, k + 1) - lo;
      float* dy = smem + p.at.dy[dy_side];
      const float* logits = smem + p.at.act[L];
      for (int b = warp; b < R; b += kWarps) {
        const bool live = lane < classes;
        const float z = live ? logits[b * classes + lane] : -INFINITY;
        float zmax = z;
        for (int off = 16; off > 0; off >>= 1) zmax = fmaxf(zmax, __shfl_xor_sync(0xffffffffu, zmax, off));
        const float e = live ? expf(z - zmax) : 0.0f;
        double sum = e;
        for (int off = 16; off > 0; off >>= 1) sum += __shfl_xor_sync(0xffffffffu, sum, off);
        const float prob = e * float(1.0 / sum);
        float best = live ? prob : -1.0f;
        int best_c = lane;
        for (int off = 16; off > 0; off >>= 1) {
          const float ob = __shfl_xor_sync(0xffffffffu, best, off);
          const int oc = __shfl_xor_sync(0xffffffffu, best_c, off);
          if (ob > best || (ob == best && oc < best_c)) best = ob, best_c = oc;
        }
        const int y = label_of[b];
        const float zy = __shfl_sync(0xffffffffu, z, y);
        if (live && lane >= lo && lane < lo + own) {
          dy[b * p.own_stride[L - 1] + lane - lo] = scale * (lane == y ? prob - 1.0f : prob);
        }
        if (lane == 0) {
          double loss = log(sum) - (double(zy) - zmax);
          if (!(loss < 1e30)) loss = 1e30;
          row_loss[b] = fmax(loss, 0.0);
          row_hit[b] = best_c == y;
        }
      }
      __syncthreads();
      if (k == 0 && tid == 0) {
        for (int b = 0; b < R; ++b) my_loss += row_loss[b], my_correct += row_hit[b];
      }
    }
    mark(L + 1);

    // Backward.
    for (int l = L - 1; l >= 0; --l) {
      const int in = p.sizes[l], out = p.sizes[l + 1];
      const int lo = slice_begin(out, C, k), own = slice_begin(out, C, k + 1) - lo;
      const int dstride = p.own_stride[l];
      const float* X = smem + act_of(l, step);
      const float* dy = smem + p.at.dy[dy_side];
      float* Wl = smem + p.at.w[l];
      if (l > 0) {
        // This block's part of every input's gradient, into the input's owner (layer l - 1's
        // slices). This block receives the C parts of each of its own inputs for every row.
        const int recv = p.at.recv[l % 2];
        const int* route = reinterpret_cast<const int*>(smem + p.at.route[l]);
        if (tid == 0) {
          const int pown = slice_begin(in, C, k + 1) - slice_begin(in, C, k);
          exchange_arm(recv_arrived(l), unsigned(C * R * pown) * 4u);
        }
        for (int j = tid; j < in; j += kThreads) {
          float v[Rows] = {};
          for (int o = 0; o < own; ++o) {
            const float w = Wl[o * in + j];
#pragma unroll
            for (int b = 0; b < Rows; ++b)
              if (Rows == 1 || b < R) v[b] = fmaf(w, dy[b * dstride + o], v[b]);
          }
          const int to = route[j];
          float* slot = smem + recv + k * R * p.recv_stride + (to & 0xffff);
#pragma unroll
          for (int b = 0; b < Rows; ++b)
            if (Rows == 1 || b < R) exchange_send(slot + b * p.recv_stride, recv_arrived(l), unsigned(to >> 16), v[b]);
        }
        __syncthreads();  // every part has read the old rows
      }
      // SGD on this block's rows: dW[o][j] = sum_b dy[b][o] x[b][j], db[o] = sum_b dy[b][o].
      // A thread per input j keeps x[b][j] in registers across the rows o; with momentum the
      // velocities (global memory) of a column are loaded together, not one round trip each.
      const std::size_t base = std::size_t(p.param_offset[l]);
      float* vrows = Momentum ? p.velocity + base + std::size_t(lo) * in : nullptr;
      for (int j = tid; j < in; j += kThreads) {
        float x[Rows];
#pragma unroll
        for (int b = 0; b < Rows; ++b) x[b] = b < R ? X[b * in + j] : 0.0f;
        if constexpr (!Momentum) {
          float* w = Wl + j;
#pragma unroll 4
          for (int o = 0; o < own; ++o) {
            float g = 0.0f;
#pragma unroll
            for (int b = 0; b < Rows; ++b)
              if (Rows == 1 || b < R) g = fmaf(dy[b * dstride + o], x[b], g);
            sgd_one(p.sgd, w[o * in], nullptr, g);
          }
          continue;
        }
        constexpr int kUnroll = 4;
        for (int o0 = 0; o0 < own; o0 += kUnroll) {
          float vel[kUnroll];
#pragma unroll
          for (int u = 0; u < kUnroll; ++u)
            vel[u] = o0 + u < own ? vrows[std::size_t(o0 + u) * in + j] : 0.0f;
#pragma unroll
          for (int u = 0; u < kUnroll; ++u) {
            const int o = o0 + u;
            if (o >= own) break;
            float g = 0.0f;
#pragma unroll
            for (int b = 0; b < Rows; ++b)
              if (Rows == 1 || b < R) g = fmaf(dy[b * dstride + o], x[b], g);
            sgd_one(p.sgd, Wl[std::size_t(o) * in + j], &vel[u], g);
            vrows[std::size_t(o) * in + j] = vel[u];
          }
        }
      }
      for (int o = tid; o < own; o += kThreads) {
        float g = 0.0f;
        for (int b = 0; b < R; ++b) g += dy[b * dstride + o];
        float* v = Momentum ? p.velocity + base + std::size_t(out) * in + lo + o : nullptr;
        sgd_one(p.sgd, smem[p.at.b[l] + o], v, g);
      }
      if (l > 0) {
        wait_for(recv_arrived(l));
        // Layer l - 1's output gradient for this block's neurons: the C parts in rank order,
        // times the sigmoid's derivative at this block's own outputs.
        const int plo = slice_begin(in, C, k), pown = slice_begin(in, C, k + 1) - plo;
        const int pstride = p.own_stride[l - 1];
        const float* recv = smem + p.at.recv[l % 2];
        const float* H = smem + p.at.own_out[l - 1];
        float* dprev = smem + p.at.dy[1 - dy_side];
        for (int i = tid; i < R * pown; i += kThreads) {
          const int b = i / pown, o = i - b * pown;
          float v = 0.0f;
          for (int r = 0; r < C; ++r) v += recv[(r * R + b) * p.recv_stride + o];
          const float h = H[b * pstride + o];
          dprev[b * pstride + o] = v * h * (1.0f - h);
        }
        __syncthreads();
        dy_side = 1 - dy_side;
      }
      mark(L + 2 + (L - 1 - l));
    }
    // With one layer no barrier follows the logits: the next step's would overwrite them
    // while a slower block still reads them.
    if (L == 1) cluster.sync();
    __syncthreads();
    if (more && tid < R) {
      row_of[tid] = next_row;
      label_of[tid] = next_label;
    }
    if (ahead) asm volatile("cp.async.wait_all;" ::: "memory");
    __syncthreads();
    mark(2 * L + 2);
  }

  for (int l = 0; l < L; ++l) {
    const int in = p.sizes[l], out = p.sizes[l + 1];
    const int lo = slice_begin(out, C, k), own = slice_begin(out, C, k + 1) - lo;
    float* W = p.params + p.param_offset[l];
    for (int i = tid; i < own * in; i += kThreads) W[std::size_t(lo) * in + i] = smem[p.at.w[l] + i];
    for (int o = tid; o < own; o += kThreads) W[std::size_t(out) * in + lo + o] = smem[p.at.b[l] + o];
  }
  if (k == 0 && tid == 0) {
    if (p.loss_sum != nullptr) *p.loss_sum += my_loss;
    if (p.correct != nullptr) *p.correct += my_correct;
    if (p.step != nullptr) *p.step += p.steps;
    clock.flush(p.clocks, p.steps);
  }
  // No block exits while another could still store into its shared memory.
  cluster.sync();
#endif
}

using Kernel = void (*)(Params);
constexpr Kernel kKernels[] = {resident_kernel<1, false>,  resident_kernel<2, false>, resident_kernel<4, false>,
                               resident_kernel<8, false>,  resident_kernel<16, false>, resident_kernel<1, true>,
                               resident_kernel<2, true>,   resident_kernel<4, true>,  resident_kernel<8, true>,
                               resident_kernel<16, true>};
Kernel kernel_for(int rows, bool momentum) {
  int at = 0;
  while ((1 << at) < rows) ++at;
  return kKernels[at + (momentum ? 5 : 0)];
}
static_assert(kResidentMaxRows == 16, "kKernels covers rows up to 16");

}  // namespace

struct ResidentTrainer::Impl {
  ResidentConfig config;
  int cluster = 8;
  int own_stride[kResidentMaxLayers] = {};
  int recv_stride = 1;
  Layout layout{};
  std::size_t bytes = 0;
  PhaseClockHost<kClockPhases> clock;
};

ResidentTrainer::ResidentTrainer(const ResidentConfig& config) : impl_(std::make_unique<Impl>()) {
  Impl& m = *impl_;
  m.config = config;
  const int L = int(config.sizes.size()) - 1;
  auto fail = [](const std::string& why) { throw std::runtime_error("cuda resident variant: " + why); };
  if (L < 1 || L > kResidentMaxLayers)
    fail(std::to_string(L) + " Linear layers; it supports 1.." + std::to_string(kResidentMaxLayers));
  if (config.sizes.back() > kMaxClasses)
    fail(std::to_string(config.sizes.back()) + " classes; it supports at most " + std::to_string(kMaxClasses));
  if (config.batch < 1 || config.batch > kResidentMaxRows)
    fail("batch_size " + std::to_string(config.batch) + "; it supports 1.." + std::to_string(kResidentMaxRows));
  if (config.momentum != 0.0f && config.velocity == nullptr) fail("momentum without a velocity buffer");
  if (config.cluster != 0 && config.cluster != 8 && config.cluster != 16)
    fail("resident_cluster = " + std::to_string(config.cluster) + "; it must be 8 or 16 (or 0: automatic)");

  cudaDeviceProp props{};
  check(cudaGetDeviceProperties(&props, config.device), "cudaGetDeviceProperties");
  if (const std::string problem = cluster_device_problem(props); !problem.empty()) fail(problem);
  const std::size_t limit = props.sharedMemPerBlockOptin - 1024;  // the kernel's static shared memory
  for (const Kernel kernel : kKernels) {
    check(cudaFuncSetAttribute(kernel, cudaFuncAttributeNonPortableClusterSizeAllowed, 1),
          "cudaFuncSetAttribute(non-portable cluster size)");
  }
  std::string tried;
  for (const int C : {16, 8}) {
    if (config.cluster != 0 && C != config.cluster) continue;
    int strides[kResidentMaxLayers] = {};
    int recv = 1;
    const Layout at = make_layout(config.sizes, C, config.batch, strides, &recv);
    const std::size_t bytes = std::size_t(at.floats) * sizeof(float);
    tried += (tried.empty() ? "" : ", ") + std::to_string(bytes >> 10) + " KiB with " + std::to_string(C) + " blocks";
    if (bytes > limit) continue;
    for (const Kernel kernel : kKernels) {
      check(cudaFuncSetAttribute(kernel, cudaFuncAttributeMaxDynamicSharedMemorySize, int(bytes)),
            "cudaFuncSetAttribute(shared memory)");
    }
    const ClusterLaunch launch(C, kThreads, bytes, nullptr);
    int clusters = 0;
    if (cudaOccupancyMaxActiveClusters(&clusters, kernel_for(config.batch, config.momentum != 0.0f), &launch.config) !=
            cudaSuccess ||
        clusters < 1) {
      cudaGetLastError();
      tried += " (the device cannot schedule it)";
      continue;
    }
    m.cluster = C;
    std::copy(strides, strides + kResidentMaxLayers, m.own_stride);
    m.recv_stride = recv;
    m.layout = at;
    m.bytes = bytes;
    m.clock.allocate_if_asked();
    return;
  }
  fail("the model and a batch of " + std::to_string(config.batch) + " rows need " + tried + " of shared memory per block; " +
       props.name + " allows " + std::to_string(limit >> 10) + " KiB (use a smaller batch or model, or the graph variant)");
}

ResidentTrainer::~ResidentTrainer() = default;

int ResidentTrainer::cluster() const { return impl_->cluster; }
std::size_t ResidentTrainer::shared_bytes() const { return impl_->bytes; }

void ResidentTrainer::run(std::size_t first_step, int steps, int rows, cudaStream_t stream) {
  const Impl& m = *impl_;
  const ResidentConfig& c = m.config;
  if (steps <= 0) return;
  if (rows < 1 || rows > c.batch) throw std::invalid_argument("ResidentTrainer::run: rows outside 1..batch");
  Params p{};
  p.layers = int(c.sizes.size()) - 1;
  long long offset = 0;
  for (int l = 0; l <= p.layers; ++l) p.sizes[l] = c.sizes[l];
  for (int l = 0; l < p.layers; ++l) {
    p.param_offset[l] = offset;
    offset += (long long)(c.sizes[l] + 1) * c.sizes[l + 1];
    p.own_stride[l] = m.own_stride[l];
  }
  p.cluster = m.cluster;
  p.rows = rows;
  p.batch = c.batch;
  p.steps = steps;
  p.first_step = (long long)first_step;
  p.at = m.layout;
  p.recv_stride = m.recv_stride;
  p.sgd.lr = c.lr;
  p.sgd.momentum = c.momentum;
  p.sgd.weight_decay = c.weight_decay;
  p.params = c.params;
  p.velocity = c.momentum != 0.0f ? c.velocity : nullptr;
  p.pixels = c.pixels;
  p.pixel_scale = c.pixel_scale;
  p.labels = c.labels;
  p.order = c.order;
  p.loss_sum = c.loss_sum;
  p.correct = c.correct;
  p.step = c.step;

  p.clocks = m.clock.device();

  const ClusterLaunch launch(m.cluster, kThreads, m.bytes, stream);
  check(cudaLaunchKernelEx(&launch.config, kernel_for(rows, c.momentum != 0.0f), p), "resident kernel launch");
  // The phases in index order: input, F0.., softmax, B(L-1)..B0, end.
  impl_->clock.report(stream, steps, "resident phases",
                      ", rows " + std::to_string(rows) + ", cluster " + std::to_string(m.cluster), [&] {
                        const int L = p.layers;
                        std::vector<std::string> names{"input"};
                        for (int l = 0; l < L; ++l) names.push_back("F" + std::to_string(l));
                        names.push_back("softmax");
                        for (int l = L - 1; l >= 0; --l) names.push_back("B" + std::to_string(l));
                        names.push_back("end");
                        return names;
                      });
}

}  // namespace nnpar::cuda
