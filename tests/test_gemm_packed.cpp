// The packed-B GEMM pieces (gemm_packed.hpp) against the plain GEMMs: every tiling of C into
// row ranges x panel ranges, on odd shapes, must give bit-identical results, since the OpenMP
// intra_op strategy relies on it for its exact parity with serial.
#include <gtest/gtest.h>

#include <cstdint>
#include <cstring>
#include <new>
#include <random>
#include <string>
#include <vector>

#include "nnpar/gemm_packed.hpp"
#include "nnpar/kernels.hpp"

namespace nnpar::kernels::detail {
void gemm_force_isa(int isa);  // 0 auto, 1 generic, 2 avx2, 3 avx512 (capped at the CPU's)
const char* gemm_isa_name();
}  // namespace nnpar::kernels::detail

namespace k = nnpar::kernels;

namespace {

enum class Op { NN, NT, TN };

std::vector<float> random_vec(std::size_t n, std::mt19937& rng) {
  std::uniform_real_distribution<float> d(-1.0f, 1.0f);
  std::vector<float> v(n);
  for (auto& x : v) x = d(rng);
  return v;
}

struct AlignedFloats {  // the packed buffer is read with aligned vector loads
  explicit AlignedFloats(std::size_t n)
      : p(static_cast<float*>(::operator new[](std::max<std::size_t>(n, 16) * sizeof(float),
                                               std::align_val_t(64)))) {}
  ~AlignedFloats() { ::operator delete[](p, std::align_val_t(64)); }
  float* p;
};

// Cuts C [M x N] into row pieces of `rstep` rows and panel pieces of `pstep` panels, computes
// each piece separately (packing B in panel pieces too) and compares with the one-call GEMM.
// narrow: packed_b_layout_narrow's panels (16 x 16 tiles on AVX-512) instead of the default.
void check(Op op, int M, int N, int K, float alpha, float beta, int rstep, int pstep, std::uint32_t seed,
           bool narrow) {
  SCOPED_TRACE(std::string(narrow ? "narrow " : "") + (op == Op::NN ? "nn" : op == Op::NT ? "nt" : "tn") +
               " M=" + std::to_string(M) +
               " N=" + std::to_string(N) + " K=" + std::to_string(K) + " rstep=" + std::to_string(rstep) +
               " pstep=" + std::to_string(pstep) + " beta=" + std::to_string(beta));
  std::mt19937 rng(seed);
  const int lda = (op == Op::TN ? M : K) + 3, ldb = (op == Op::NT ? K : N) + 1, ldc = N + 2;
  const auto A = random_vec(std::size_t(op == Op::TN ? K : M) * lda, rng);
  const auto B = random_vec(std::size_t(op == Op::NT ? N : K) * ldb, rng);
  const auto C0 = random_vec(std::size_t(M) * ldc, rng);
  std::vector<float> want = C0, got = C0;
  switch (op) {
    case Op::NN: k::gemm_nn(M, N, K, alpha, A.data(), lda, B.data(), ldb, beta, want.data(), ldc); break;
    case Op::NT: k::gemm_nt(M, N, K, alpha, A.data(), lda, B.data(), ldb, beta, want.data(), ldc); break;
    case Op::TN: k::gemm_tn(M, N, K, alpha, A.data(), lda, B.data(), ldb, beta, want.data(), ldc); break;
  }
  const k::PackedB l = narrow ? k::packed_b_layout_narrow(K, N) : k::packed_b_layout(K, N);
  if (narrow) ASSERT_LE(l.nr, 16);
  ASSERT_EQ(l.panels, (N + l.nr - 1) / l.nr);
  AlignedFloats Bp(l.floats());
  for (int p = 0; p < l.panels; p += pstep)
    k::pack_b_panels(l, B.data(), ldb, op == Op::NT, p, std::min(p + pstep, l.panels), Bp.p);
  for (int r = 0; r < M; r += rstep)
    for (int p = 0; p < l.panels; p += pstep)
      k::gemm_packed_rows(l, r, std::min(r + rstep, M), p, std::min(p + pstep, l.panels), alpha,
                          A.data(), lda, op == Op::TN, Bp.p, beta, got.data(), ldc);
  for (int i = 0; i < M; ++i)
    for (int j = 0; j < ldc; ++j) {
      const std::size_t at = std::size_t(i) * ldc + j;
      // Bit-identical, and the padding past N untouched.
      ASSERT_EQ(0, std::memcmp(&got[at], &want[at], sizeof(float)))
          << "C(" << i << "," << j << ") packed " << got[at] << " plain " << want[at];
    }
}

void sweep(bool narrow) {
  std::uint32_t seed = 1;
  const int shapes[][3] = {{1, 1, 1},    {1, 37, 5},   {37, 1, 5},    {7, 26, 300},  {26, 64, 1},
                           {13, 33, 257}, {100, 70, 513}, {64, 128, 784}, {129, 65, 31}, {5, 200, 17}};
  for (Op op : {Op::NN, Op::NT, Op::TN})
    for (const auto& s : shapes)
      for (int rstep : {1, 3, 8, 1000})
        for (int pstep : {1, 2, 1000}) {
          check(op, s[0], s[1], s[2], 1.0f, 0.0f, rstep, pstep, seed++, narrow);
          check(op, s[0], s[1], s[2], 0.5f, 1.0f, rstep, pstep, seed++, narrow);
          if (::testing::Test::HasFatalFailure()) return;
        }
}

TEST(GemmPacked, TilesAreBitIdenticalToPlainGemmOnEveryPath) {
  const char* names[] = {"", "generic", "avx2", "avx512"};
  int ran = 0;
  for (int isa = 1; isa <= 3; ++isa) {
    k::detail::gemm_force_isa(isa);
    if (std::string(k::detail::gemm_isa_name()) != names[isa]) continue;  // CPU lacks it
    SCOPED_TRACE(names[isa]);
    sweep(false);
    sweep(true);
    ++ran;
  }
  k::detail::gemm_force_isa(0);
  EXPECT_GE(ran, 1);
}

TEST(GemmPacked, LayoutAndDegenerateCalls) {
  const k::PackedB l = k::packed_b_layout(10, 70);
  EXPECT_EQ(l.floats(), std::size_t(l.panels) * l.nr * 10);
  EXPECT_EQ(l.panel_begin_col(l.panels), 70);
  EXPECT_EQ(l.panel_begin_col(1), l.nr);
  EXPECT_GT(l.mc, 0);
  EXPECT_GT(l.mr, 0);
  // alpha = 0: C = beta * C over the rectangle only, A and B never read.
  std::vector<float> C(3 * 70, 2.0f);
  k::gemm_packed_rows(l, 1, 2, 0, 1, 0.0f, nullptr, 10, false, nullptr, 0.5f, C.data(), 70);
  for (int j = 0; j < 70; ++j) {
    EXPECT_EQ(C[j], 2.0f);
    EXPECT_EQ(C[70 + j], j < l.nr ? 1.0f : 2.0f);
  }
  // Empty ranges do nothing.
  k::gemm_packed_rows(l, 2, 2, 0, 1, 1.0f, nullptr, 10, false, nullptr, 0.0f, C.data(), 70);
  k::pack_b_panels(l, nullptr, 70, false, 3, 3, nullptr);
}

}  // namespace
