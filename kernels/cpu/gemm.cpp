// Blocked single-threaded SGEMM (BLIS-style): op(A) and op(B) are packed into contiguous
// MR-row / NR-column panels, a register-tiled micro-kernel written with GCC vector
// extensions computes MR x NR tiles of C, and one templated driver is compiled per ISA
// (AVX-512, AVX2+FMA, baseline) and picked at runtime from CPUID.
//
// Determinism: for a given ISA, every C element is produced by the same sequence of
// operations (K split into equal blocks chosen from K alone, FMA accumulation in order,
// edge tiles computed with the full-tile code through a scratch tile). So results depend
// only on K and the inputs of that element's row/column: not on M, N, position in C, or
// thread. That also makes a row of X*W^T independent of the batch it is computed in.
#include "nnpar/kernels.hpp"
#include "nnpar/gemm_packed.hpp"

#include <algorithm>
#include <atomic>
#include <cstddef>
#include <cstdio>
#include <cstdlib>
#include <cstring>
#include <memory>
#include <new>

#define NNPAR_INLINE inline __attribute__((always_inline))

namespace nnpar::kernels {

namespace {

// ------------------------------------------------------------------ scratch
// Per-thread packing buffers: reentrant without locking, and reused across calls so the
// hot path never allocates (a fresh ~1 MB malloc per call would mean mmap + page faults).
struct Scratch {
  float* ptr = nullptr;
  std::size_t cap = 0;
  ~Scratch() { ::operator delete[](ptr, std::align_val_t(64)); }
  float* get(std::size_t n) {
    if (n > cap) {
      ::operator delete[](ptr, std::align_val_t(64));
      ptr = static_cast<float*>(::operator new[](n * sizeof(float), std::align_val_t(64)));
      cap = n;
    }
    return ptr;
  }
};

float* scratch(std::size_t n) {
  thread_local Scratch s;
  return s.get(n);
}

// Strided view: op(X)(r, c) = p[r * rs + c * cs]. Transposes are just swapped strides.
struct View {
  const float* p;
  long rs, cs;
};

// ------------------------------------------------------------------ packing
// Ap: for each MR-row panel, kc steps of MR floats (rows past m are zero).
template <int MR>
NNPAR_INLINE void pack_a(int mc, int kc, View a, float* __restrict Ap) {
  for (int ir = 0; ir < mc; ir += MR, Ap += MR * kc) {
    const int m = std::min(MR, mc - ir);
    const float* src = a.p + ir * a.rs;
    if (a.rs == 1 && m == MR) {  // op(A) columns contiguous (gemm_tn): straight copies
      for (int p = 0; p < kc; ++p)
        for (int i = 0; i < MR; ++i) Ap[p * MR + i] = src[p * a.cs + i];
    } else if (a.cs == 1 && m == MR) {  // rows contiguous (gemm_nn/nt)
      for (int p = 0; p < kc; ++p)
#pragma GCC unroll 16
        for (int i = 0; i < MR; ++i) Ap[p * MR + i] = src[i * a.rs + p];
    } else {  // partial panel (small batch): zero padding, then copy along the contiguous axis
      for (int p = 0; p < kc; ++p)
        for (int i = m; i < MR; ++i) Ap[p * MR + i] = 0.0f;
      if (a.cs == 1) {
        for (int i = 0; i < m; ++i)
          for (int p = 0; p < kc; ++p) Ap[p * MR + i] = src[i * a.rs + p];
      } else {
        for (int p = 0; p < kc; ++p)
          for (int i = 0; i < m; ++i) Ap[p * MR + i] = src[i * a.rs + p * a.cs];
      }
    }
  }
}

typedef float v4f __attribute__((vector_size(16)));
typedef float v8f __attribute__((vector_size(32)));
typedef float v16f __attribute__((vector_size(64)));

// dst[q*ldd + r] = src[r*lds + q] for an 8x8 block (unpack / shuffle / 128-bit lane
// permute, the patterns GCC maps to single AVX instructions). __builtin_shufflevector, not
// GCC's __builtin_shuffle, so that clang (fuzz and sanitizer builds) compiles it too.
NNPAR_INLINE void transpose8x8(const float* src, long lds, float* dst, long ldd) {
  v8f r[8], t[8], u[8];
  for (int i = 0; i < 8; ++i) std::memcpy(&r[i], src + i * lds, sizeof(v8f));
  for (int i = 0; i < 8; i += 2) {
    t[i] = __builtin_shufflevector(r[i], r[i + 1], 0, 8, 1, 9, 4, 12, 5, 13);
    t[i + 1] = __builtin_shufflevector(r[i], r[i + 1], 2, 10, 3, 11, 6, 14, 7, 15);
  }
  for (int i = 0; i < 8; i += 4)
    for (int h = 0; h < 2; ++h) {
      u[i + 2 * h] = __builtin_shufflevector(t[i + h], t[i + h + 2], 0, 1, 8, 9, 4, 5, 12, 13);
      u[i + 2 * h + 1] = __builtin_shufflevector(t[i + h], t[i + h + 2], 2, 3, 10, 11, 6, 7, 14, 15);
    }
  for (int q = 0; q < 4; ++q) {
    const v8f lo = __builtin_shufflevector(u[q], u[q + 4], 0, 1, 2, 3, 8, 9, 10, 11);
    const v8f hi = __builtin_shufflevector(u[q], u[q + 4], 4, 5, 6, 7, 12, 13, 14, 15);
    std::memcpy(dst + q * ldd, &lo, sizeof(v8f));
    std::memcpy(dst + (q + 4) * ldd, &hi, sizeof(v8f));
  }
}

// Bp: for each NR-column panel, kc steps of NR floats (columns past n are zero).
template <int NR>
NNPAR_INLINE void pack_b(int kc, int nc, View b, float* __restrict Bp) {
  for (int jr = 0; jr < nc; jr += NR, Bp += NR * kc) {
    const int n = std::min(NR, nc - jr);
    const float* src = b.p + jr * b.cs;
    if (b.cs == 1 && n == NR) {  // rows of op(B) contiguous (gemm_nn/tn)
      for (int p = 0; p < kc; ++p)
        for (int j = 0; j < NR; ++j) Bp[p * NR + j] = src[p * b.rs + j];
    } else if (b.rs == 1 && n == NR) {  // gemm_nt: op(B) = W^T, a transpose
      // 8x8 blocks transposed in registers: element-wise, the stores would be scattered
      // 4-byte writes, which made packing W cost more than the whole M=1 product.
      int p = 0;
      for (; p + 8 <= kc; p += 8)
        for (int j = 0; j < NR; j += 8) transpose8x8(src + j * b.cs + p, b.cs, Bp + p * NR + j, NR);
      for (; p < kc; ++p)
        for (int j = 0; j < NR; ++j) Bp[p * NR + j] = src[j * b.cs + p];
    } else {  // partial panel (e.g. N=26): zero padding, then copy along the contiguous axis
      for (int p = 0; p < kc; ++p)
        for (int j = n; j < NR; ++j) Bp[p * NR + j] = 0.0f;
      if (b.rs == 1) {
        for (int j = 0; j < n; ++j)
          for (int p = 0; p < kc; ++p) Bp[p * NR + j] = src[j * b.cs + p];
      } else {
        for (int p = 0; p < kc; ++p)
          for (int j = 0; j < n; ++j) Bp[p * NR + j] = src[p * b.rs + j * b.cs];
      }
    }
  }
}

// ------------------------------------------------------------------ micro-kernel
// C[MR, NR] = alpha * Ap*Bp + beta * C  (beta == 0: C not read). acc lives in registers:
// MR*NV vectors must fit the register file with room for NV loads + 1 broadcast.
// AS is the row stride of the packed A panel (the driver's MR); MR <= AS rows are computed,
// so a short last row panel does not pay for AS rows. DirectA: A is not packed but read
// where it lies, row i of the tile at Ap + i * lda (the same products in the same order).
template <int MR, int NV, class V, int AS, bool DirectA = false>
NNPAR_INLINE void micro_kernel(int kc, const float* __restrict Ap, const float* __restrict Bp,
                               float* C, long ldc, float alpha, float beta, long lda = 0) {
  constexpr int L = sizeof(V) / sizeof(float);
  constexpr int NR = NV * L;
  V acc[MR][NV];
#pragma GCC unroll 32
  for (int i = 0; i < MR; ++i)
#pragma GCC unroll 8
    for (int v = 0; v < NV; ++v) acc[i][v] = V{};
  for (int p = 0; p < kc; ++p) {
    V b[NV];
#pragma GCC unroll 8
    for (int v = 0; v < NV; ++v) b[v] = *reinterpret_cast<const V*>(Bp + p * NR + v * L);
#pragma GCC unroll 32
    for (int i = 0; i < MR; ++i) {
      const float a = DirectA ? Ap[i * lda + p] : Ap[p * AS + i];
#pragma GCC unroll 8
      for (int v = 0; v < NV; ++v) acc[i][v] += a * b[v];
    }
  }
#pragma GCC unroll 32
  for (int i = 0; i < MR; ++i)
#pragma GCC unroll 8
    for (int v = 0; v < NV; ++v) {
      float* c = C + i * ldc + v * L;
      V r = alpha * acc[i][v];
      if (beta != 0.0f) {
        V old;
        std::memcpy(&old, c, sizeof(V));  // C is not vector-aligned in general
        r += beta * old;
      }
      std::memcpy(c, &r, sizeof(V));
    }
}

// One MR x NR tile of C (m x n of it real) from packed A and B panels: the micro-kernel for
// the tile's row count (MR, or 4/2/1 for a short last panel: small batches), edge tiles going
// through `tmp`. Each element gets the same operation sequence whichever kernel (and whether
// or not the scratch tile) is used: results never depend on tile position. DirectA: a full
// MR-row tile (m == MR) read straight from row-major op(A), row stride lda, instead of `ap`.
template <int MR, int NV, class V, bool DirectA = false>
NNPAR_INLINE void compute_tile(int m, int n, int kc, const float* ap, const float* bp, float* c, long ldc,
                               float alpha, float bet, float* tmp, long lda = 0) {
  constexpr int NR = NV * static_cast<int>(sizeof(V) / sizeof(float));
  const int mk = m == MR ? MR : m == 1 ? 1 : m == 2 ? 2 : m <= 4 ? 4 : MR;
  const bool full = m == mk && n == NR;
  float* cd = full ? c : tmp;
  const long ldd = full ? ldc : NR;
  if (!full && bet != 0.0f)
    for (int i = 0; i < m; ++i) std::memcpy(tmp + i * NR, c + i * ldc, n * sizeof(float));
  if constexpr (DirectA) micro_kernel<MR, NV, V, MR, true>(kc, ap, bp, cd, ldd, alpha, bet, lda);
  else if (mk == MR) micro_kernel<MR, NV, V, MR>(kc, ap, bp, cd, ldd, alpha, bet);
  else if (mk == 1) micro_kernel<1, NV, V, MR>(kc, ap, bp, cd, ldd, alpha, bet);
  else if (mk == 2) micro_kernel<2, NV, V, MR>(kc, ap, bp, cd, ldd, alpha, bet);
  else if constexpr (MR > 4) micro_kernel<4, NV, V, MR>(kc, ap, bp, cd, ldd, alpha, bet);
  if (!full)
    for (int i = 0; i < m; ++i) std::memcpy(c + i * ldc, tmp + i * NR, n * sizeof(float));
}

// ------------------------------------------------------------------ driver
template <int MR, int NV, class V, int KC, int MC, int NC>
NNPAR_INLINE void gemm_blocked(int M, int N, int K, float alpha, View a, View b, float beta,
                               float* C, long ldc) {
  constexpr int NR = NV * static_cast<int>(sizeof(V) / sizeof(float));
  // Equal K blocks, chosen from K only (keeps the summation order a function of K).
  const int nkb = (K + KC - 1) / KC;
  const int kcmax = (K + nkb - 1) / nkb;
  const int ncmax = std::min(NC, (N + NR - 1) / NR * NR);
  const int mcmax = std::min(MC, (M + MR - 1) / MR * MR);
  float* Bp = scratch(static_cast<std::size_t>(kcmax) * ncmax + static_cast<std::size_t>(kcmax) * mcmax +
                      MR * NR);
  float* Ap = Bp + static_cast<std::size_t>(kcmax) * ncmax;
  float* tmp = Ap + static_cast<std::size_t>(kcmax) * mcmax;  // edge tiles go through here
  std::fill(tmp, tmp + MR * NR, 0.0f);

  for (int jc = 0; jc < N; jc += NC) {
    const int nc = std::min(NC, N - jc);
    for (int kb = 0; kb < nkb; ++kb) {
      const int pc = kb * kcmax;
      const int kc = std::min(kcmax, K - pc);
      const float bet = kb == 0 ? beta : 1.0f;  // later K blocks accumulate onto C
      pack_b<NR>(kc, nc, View{b.p + pc * b.rs + jc * b.cs, b.rs, b.cs}, Bp);
      for (int ic = 0; ic < M; ic += MC) {
        const int mc = std::min(MC, M - ic);
        pack_a<MR>(mc, kc, View{a.p + ic * a.rs + pc * a.cs, a.rs, a.cs}, Ap);
        for (int jr = 0; jr < nc; jr += NR) {
          const int n = std::min(NR, nc - jr);
          const float* bp = Bp + static_cast<std::size_t>(jr) * kc;
          for (int ir = 0; ir < mc; ir += MR)
            compute_tile<MR, NV, V>(std::min(MR, mc - ir), n, kc, Ap + static_cast<std::size_t>(ir) * kc, bp,
                                    C + (ic + ir) * ldc + jc + jr, ldc, alpha, bet, tmp);
        }
      }
    }
  }
}

// ------------------------------------------------------------------ packed-B driver
// The pieces of gemm_blocked for a caller that shares one packed op(B) between threads
// (gemm_packed.hpp). Same K blocks, same micro-kernel calls per tile, so every element of C
// gets the operation sequence gemm_blocked would give it.
// DirectA: where a call computes one or two panels, full MR-row tiles of a row-major op(A) are
// read in place instead of packed: for a thread that owns 16 columns, packing op(A) cost about
// as much as the products it serves.
template <int MR, int NV, class V, int KC, int MC, bool DirectA = false>
struct PackedPath {
  static constexpr int NR = NV * static_cast<int>(sizeof(V) / sizeof(float));
  static constexpr int kMR = MR, kMC = MC;

  static NNPAR_INLINE void pack(int K, int N, View b, int p0, int p1, float* Bp) {
    const int nkb = (K + KC - 1) / KC;
    const int kcmax = (K + nkb - 1) / nkb;
    for (int j = p0; j < p1; ++j) {
      const int n0 = j * NR;
      const int n = std::min(NR, N - n0);
      float* dst = Bp + static_cast<std::size_t>(j) * K * NR;
      for (int kb = 0; kb < nkb; ++kb) {
        const int pc = kb * kcmax;
        const int kc = std::min(kcmax, K - pc);
        pack_b<NR>(kc, n, View{b.p + pc * b.rs + n0 * b.cs, b.rs, b.cs},
                   dst + static_cast<std::size_t>(pc) * NR);
      }
    }
  }

  static NNPAR_INLINE void compute(int K, int N, int m0, int m1, int p0, int p1, float alpha,
                                   View a, const float* Bp, float beta, float* C, long ldc) {
    const int nkb = (K + KC - 1) / KC;
    const int kcmax = (K + nkb - 1) / nkb;
    float* Ap = scratch(static_cast<std::size_t>(kcmax) * MC + MR * NR);
    float* tmp = Ap + static_cast<std::size_t>(kcmax) * MC;  // edge tiles go through here
    std::fill(tmp, tmp + MR * NR, 0.0f);
    // In place only for one or two panels: 16 rows read with a runtime stride need 16 address
    // registers, so a wide call is faster with A packed once for all its panels (measured on
    // the workstation's AVX-512: 1 panel, K = 784, 97 -> 146 GFLOP/s in place; 49 panels,
    // 178 -> 144).
    const bool direct = DirectA && a.cs == 1 && p1 - p0 <= 2;
    // Row blocks outermost: a block of C is finished (all K blocks) before the next starts,
    // so a caller handing in one MC block at a time can apply its epilogue while C is hot.
    for (int ic = m0; ic < m1; ic += MC) {
      const int mc = std::min(MC, m1 - ic);
      for (int kb = 0; kb < nkb; ++kb) {
        const int pc = kb * kcmax;
        const int kc = std::min(kcmax, K - pc);
        const float bet = kb == 0 ? beta : 1.0f;
        const int direct_rows = direct ? mc / MR * MR : 0;  // read in place
        if (mc > direct_rows)
          pack_a<MR>(mc - direct_rows, kc, View{a.p + (ic + direct_rows) * a.rs + pc * a.cs, a.rs, a.cs}, Ap);
        for (int j = p0; j < p1; ++j) {
          const int n0 = j * NR;
          const int n = std::min(NR, N - n0);
          const float* bp = Bp + static_cast<std::size_t>(j) * K * NR + static_cast<std::size_t>(pc) * NR;
          for (int ir = 0; ir < mc; ir += MR) {
            if (ir < direct_rows)
              compute_tile<MR, NV, V, true>(MR, n, kc, a.p + (ic + ir) * a.rs + pc, bp, C + (ic + ir) * ldc + n0, ldc,
                                            alpha, bet, tmp, a.rs);
            else
              compute_tile<MR, NV, V>(std::min(MR, mc - ir), n, kc,
                                      Ap + static_cast<std::size_t>(ir - direct_rows) * kc, bp,
                                      C + (ic + ir) * ldc + n0, ldc, alpha, bet, tmp);
          }
        }
      }
    }
  }
};

// The tile shapes below must stay those of gemm_avx512 / gemm_avx2 / gemm_generic.
using PackedAvx512 = PackedPath<8, 2, v16f, 256, 128>;
using PackedAvx2 = PackedPath<6, 2, v8f, 256, 144>;
using PackedGeneric = PackedPath<4, 2, v4f, 256, 128>;
// Narrow panels for callers that give each thread its own 16 columns (a 64-byte line) of an
// output: 16 x 16 tiles, one zmm per row. Same K blocks and per-element FMA chain as 8 x 32,
// so the same bits.
using PackedAvx512Narrow = PackedPath<16, 1, v16f, 256, 128, true>;

#if defined(__x86_64__) || defined(__i386__)
// Path: PackedAvx512 or PackedAvx512Narrow.
template <class Path>
__attribute__((target("avx512f,avx512vl,avx2,fma"), noinline)) void pack_avx512(int K, int N, View b, int p0,
                                                                               int p1, float* Bp) {
  Path::pack(K, N, b, p0, p1, Bp);
}
template <class Path>
__attribute__((target("avx512f,avx512vl,avx2,fma"), noinline)) void packed_avx512(
    int K, int N, int m0, int m1, int p0, int p1, float alpha, View a, const float* Bp, float beta,
    float* C, long ldc) {
  Path::compute(K, N, m0, m1, p0, p1, alpha, a, Bp, beta, C, ldc);
}
__attribute__((target("avx2,fma"), noinline)) void pack_avx2(int K, int N, View b, int p0, int p1,
                                                              float* Bp) {
  PackedAvx2::pack(K, N, b, p0, p1, Bp);
}
__attribute__((target("avx2,fma"), noinline)) void packed_avx2(int K, int N, int m0, int m1, int p0,
                                                                int p1, float alpha, View a,
                                                                const float* Bp, float beta,
                                                                float* C, long ldc) {
  PackedAvx2::compute(K, N, m0, m1, p0, p1, alpha, a, Bp, beta, C, ldc);
}
#endif
__attribute__((noinline)) void pack_generic(int K, int N, View b, int p0, int p1, float* Bp) {
  PackedGeneric::pack(K, N, b, p0, p1, Bp);
}
__attribute__((noinline)) void packed_generic(int K, int N, int m0, int m1, int p0, int p1,
                                              float alpha, View a, const float* Bp, float beta,
                                              float* C, long ldc) {
  PackedGeneric::compute(K, N, m0, m1, p0, p1, alpha, a, Bp, beta, C, ldc);
}

// Per-ISA instantiations. Tile shapes: AVX-512 8x32 (16 zmm accumulators of 32),
// AVX2 6x16 (12 of 16 ymm), baseline 4x8 in 128-bit vectors (8 of 16 xmm).
#if defined(__x86_64__) || defined(__i386__)
__attribute__((target("avx512f,avx512vl,avx2,fma"), noinline)) void gemm_avx512(
    int M, int N, int K, float alpha, View a, View b, float beta, float* C, long ldc) {
  // 12x32 and 14x32 measured no better on Zen 4 or Sapphire-Rapids-class Xeons.
  gemm_blocked<8, 2, v16f, 256, 128, 4096>(M, N, K, alpha, a, b, beta, C, ldc);
}
__attribute__((target("avx2,fma"), noinline)) void gemm_avx2(int M, int N, int K, float alpha,
                                                              View a, View b, float beta, float* C,
                                                              long ldc) {
  gemm_blocked<6, 2, v8f, 256, 144, 4096>(M, N, K, alpha, a, b, beta, C, ldc);
}
#endif
__attribute__((noinline)) void gemm_generic(int M, int N, int K, float alpha, View a, View b,
                                            float beta, float* C, long ldc) {
  gemm_blocked<4, 2, v4f, 256, 128, 4096>(M, N, K, alpha, a, b, beta, C, ldc);
}

enum Isa : int { kAuto = 0, kGeneric = 1, kAvx2 = 2, kAvx512 = 3 };
// PackedB::isa of packed_b_layout_narrow on AVX-512 (a code path, not an ISA to force).
constexpr int kAvx512Narrow = 4;
std::atomic<int> g_forced_isa{kAuto};

int detect_isa() {
#if defined(__x86_64__) || defined(__i386__)
  __builtin_cpu_init();
  // libgcc's checks include OS support (XCR0) for the wider register state.
  if (__builtin_cpu_supports("avx512f") && __builtin_cpu_supports("avx512vl")) return kAvx512;
  if (__builtin_cpu_supports("avx2") && __builtin_cpu_supports("fma")) return kAvx2;
#endif
  return kGeneric;
}

int active_isa() {
  static const int detected = [] {
    // NNPAR_GEMM_ISA=generic|avx2|avx512 caps the path (debugging / comparing paths).
    int isa = detect_isa();
    if (const char* e = std::getenv("NNPAR_GEMM_ISA")) {
      const int want = !std::strcmp(e, "generic") ? kGeneric
                       : !std::strcmp(e, "avx2")  ? kAvx2
                       : !std::strcmp(e, "avx512") ? kAvx512
                                                   : isa;
      if (want == isa && std::strcmp(e, "generic") && std::strcmp(e, "avx2") && std::strcmp(e, "avx512"))
        std::fprintf(stderr, "nnpar: NNPAR_GEMM_ISA='%s' ignored (generic, avx2 or avx512)\n", e);
      isa = std::min(isa, want);
    }
    return isa;
  }();
  const int forced = g_forced_isa.load(std::memory_order_relaxed);
  return forced != kAuto ? std::min(forced, detected) : detected;
}

void gemm(int M, int N, int K, float alpha, View a, View b, float beta, float* C, long ldc) {
  if (M <= 0 || N <= 0) return;
  if (alpha == 0.0f || K <= 0) {  // BLAS: A and B are not referenced
    for (int i = 0; i < M; ++i)
      for (int j = 0; j < N; ++j) {
        float& c = C[i * ldc + j];
        c = beta == 0.0f ? 0.0f : beta * c;
      }
    return;
  }
  switch (active_isa()) {
#if defined(__x86_64__) || defined(__i386__)
    case kAvx512: gemm_avx512(M, N, K, alpha, a, b, beta, C, ldc); return;
    case kAvx2: gemm_avx2(M, N, K, alpha, a, b, beta, C, ldc); return;
#endif
    default: gemm_generic(M, N, K, alpha, a, b, beta, C, ldc); return;
  }
}

}  // namespace

namespace detail {
// Testing/benchmark hooks (not in the public header): force a code path (0 = auto; a
// path the CPU lacks falls back to the best supported one) and name the active one.
void gemm_force_isa(int isa) { g_forced_isa.store(isa, std::memory_order_relaxed); }
const char* gemm_isa_name() {
  switch (active_isa()) {
    case kAvx512: return "avx512";
    case kAvx2: return "avx2";
    default: return "generic";
  }
}
}  // namespace detail

void gemm_nn(int M, int N, int K, float alpha, const float* A, int lda, const float* B, int ldb,
             float beta, float* C, int ldc) {
  gemm(M, N, K, alpha, View{A, lda, 1}, View{B, ldb, 1}, beta, C, ldc);
}
void gemm_nt(int M, int N, int K, float alpha, const float* A, int lda, const float* B, int ldb,
             float beta, float* C, int ldc) {
  gemm(M, N, K, alpha, View{A, lda, 1}, View{B, 1, ldb}, beta, C, ldc);
}
void gemm_tn(int M, int N, int K, float alpha, const float* A, int lda, const float* B, int ldb,
             float beta, float* C, int ldc) {
  gemm(M, N, K, alpha, View{A, 1, lda}, View{B, ldb, 1}, beta, C, ldc);
}

PackedB packed_b_layout(int K, int N) {
  PackedB l;
  l.K = std::max(K, 0);
  l.N = std::max(N, 0);
  l.isa = active_isa();
  switch (l.isa) {
#if defined(__x86_64__) || defined(__i386__)
    case kAvx512: l.nr = PackedAvx512::NR; l.mr = PackedAvx512::kMR; l.mc = PackedAvx512::kMC; break;
    case kAvx2: l.nr = PackedAvx2::NR; l.mr = PackedAvx2::kMR; l.mc = PackedAvx2::kMC; break;
#endif
    default: l.nr = PackedGeneric::NR; l.mr = PackedGeneric::kMR; l.mc = PackedGeneric::kMC; break;
  }
  l.panels = (l.N + l.nr - 1) / l.nr;
  return l;
}

PackedB packed_b_layout_narrow(int K, int N) {
  PackedB l = packed_b_layout(K, N);
#if defined(__x86_64__) || defined(__i386__)
  if (l.isa == kAvx512) {
    l.isa = kAvx512Narrow;
    l.nr = PackedAvx512Narrow::NR;
    l.mr = PackedAvx512Narrow::kMR;
    l.mc = PackedAvx512Narrow::kMC;
    l.panels = (l.N + l.nr - 1) / l.nr;
  }
#endif
  return l;
}

void pack_b_panels(const PackedB& l, const float* B, int ldb, bool trans, int p0, int p1,
                   float* Bp) {
  p0 = std::max(p0, 0);
  p1 = std::min(p1, l.panels);
  if (p0 >= p1 || l.K <= 0) return;
  const View b = trans ? View{B, 1, ldb} : View{B, ldb, 1};
  switch (l.isa) {
#if defined(__x86_64__) || defined(__i386__)
    case kAvx512: pack_avx512<PackedAvx512>(l.K, l.N, b, p0, p1, Bp); return;
    case kAvx512Narrow: pack_avx512<PackedAvx512Narrow>(l.K, l.N, b, p0, p1, Bp); return;
    case kAvx2: pack_avx2(l.K, l.N, b, p0, p1, Bp); return;
#endif
    default: pack_generic(l.K, l.N, b, p0, p1, Bp); return;
  }
}

void gemm_packed_rows(const PackedB& l, int m0, int m1, int p0, int p1, float alpha,
                      const float* A, int lda, bool transA, const float* Bp, float beta, float* C,
                      int ldc) {
  p0 = std::max(p0, 0);
  p1 = std::min(p1, l.panels);
  if (m0 >= m1 || p0 >= p1) return;
  if (alpha == 0.0f || l.K <= 0) {  // as gemm(): A and B are not referenced
    const int c0 = l.panel_begin_col(p0), c1 = l.panel_begin_col(p1);
    for (int i = m0; i < m1; ++i)
      for (int j = c0; j < c1; ++j) {
        float& c = C[static_cast<long>(i) * ldc + j];
        c = beta == 0.0f ? 0.0f : beta * c;
      }
    return;
  }
  const View a = transA ? View{A, 1, lda} : View{A, lda, 1};
  switch (l.isa) {
#if defined(__x86_64__) || defined(__i386__)
    case kAvx512: packed_avx512<PackedAvx512>(l.K, l.N, m0, m1, p0, p1, alpha, a, Bp, beta, C, ldc); return;
    case kAvx512Narrow:
      packed_avx512<PackedAvx512Narrow>(l.K, l.N, m0, m1, p0, p1, alpha, a, Bp, beta, C, ldc);
      return;
    case kAvx2: packed_avx2(l.K, l.N, m0, m1, p0, p1, alpha, a, Bp, beta, C, ldc); return;
#endif
    default: packed_generic(l.K, l.N, m0, m1, p0, p1, alpha, a, Bp, beta, C, ldc); return;
  }
}

}  // namespace nnpar::kernels
