// CPU kernels against double-precision reference formulas.
#include <gtest/gtest.h>

#include <cmath>
#include <cstdint>
#include <cstring>
#include <limits>
#include <random>
#include <string>
#include <thread>
#include <vector>

#include "nnpar/kernels.hpp"

namespace nnpar::kernels::detail {
// Hooks defined in kernels/cpu/gemm.cpp (not in the public header).
void gemm_force_isa(int isa);  // 0 auto, 1 generic, 2 avx2, 3 avx512 (capped at the CPU's)
const char* gemm_isa_name();
}  // namespace nnpar::kernels::detail

namespace k = nnpar::kernels;

namespace {

enum class Op { NN, NT, TN };

std::vector<float> random_vec(std::size_t n, std::mt19937& rng, float lo = -1.0f, float hi = 1.0f) {
  std::uniform_real_distribution<float> d(lo, hi);
  std::vector<float> v(n);
  for (auto& x : v) x = d(rng);
  return v;
}

// op(A) is MxK, op(B) is KxN; stored shapes follow the op.
struct GemmCase {
  Op op;
  int M, N, K;
  float alpha, beta;
  int pad_a = 0, pad_b = 0, pad_c = 0;  // extra leading-dimension slack
};

void run_gemm(Op op, int M, int N, int K, float alpha, const float* A, int lda, const float* B,
              int ldb, float beta, float* C, int ldc) {
  switch (op) {
    case Op::NN: k::gemm_nn(M, N, K, alpha, A, lda, B, ldb, beta, C, ldc); break;
    case Op::NT: k::gemm_nt(M, N, K, alpha, A, lda, B, ldb, beta, C, ldc); break;
    case Op::TN: k::gemm_tn(M, N, K, alpha, A, lda, B, ldb, beta, C, ldc); break;
  }
}

const char* op_name(Op op) { return op == Op::NN ? "nn" : op == Op::NT ? "nt" : "tn"; }

void check_gemm(const GemmCase& t, std::uint32_t seed) {
  std::mt19937 rng(seed);
  const int a_rows = t.op == Op::TN ? t.K : t.M, a_cols = t.op == Op::TN ? t.M : t.K;
  const int b_rows = t.op == Op::NT ? t.N : t.K, b_cols = t.op == Op::NT ? t.K : t.N;
  const int lda = a_cols + t.pad_a, ldb = b_cols + t.pad_b, ldc = t.N + t.pad_c;
  auto A = random_vec(static_cast<std::size_t>(a_rows) * lda, rng);
  auto B = random_vec(static_cast<std::size_t>(b_rows) * ldb, rng);
  auto C = random_vec(static_cast<std::size_t>(t.M) * ldc, rng);
  const float nan = std::numeric_limits<float>::quiet_NaN();
  if (t.beta == 0.0f) std::fill(C.begin(), C.end(), nan);  // must never be read
  // Sentinel in the leading-dimension slack: it must survive untouched.
  for (int i = 0; i < t.M; ++i)
    for (int j = t.N; j < ldc; ++j) C[static_cast<std::size_t>(i) * ldc + j] = 12345.0f;
  const auto C0 = C;

  auto a = [&](int i, int p) {
    return static_cast<double>(t.op == Op::TN ? A[static_cast<std::size_t>(p) * lda + i]
                                              : A[static_cast<std::size_t>(i) * lda + p]);
  };
  auto b = [&](int p, int j) {
    return static_cast<double>(t.op == Op::NT ? B[static_cast<std::size_t>(j) * ldb + p]
                                              : B[static_cast<std::size_t>(p) * ldb + j]);
  };

  run_gemm(t.op, t.M, t.N, t.K, t.alpha, A.data(), lda, B.data(), ldb, t.beta, C.data(), ldc);

  const double tol = 1e-5 * std::sqrt(static_cast<double>(std::max(t.K, 1)));
  int bad = 0;
  for (int i = 0; i < t.M && bad < 5; ++i) {
    for (int j = 0; j < t.N; ++j) {
      double acc = 0.0, mag = 0.0;
      for (int p = 0; p < t.K; ++p) {
        acc += a(i, p) * b(p, j);
        mag += std::fabs(a(i, p) * b(p, j));
      }
      const double c0 = C0[static_cast<std::size_t>(i) * ldc + j];
      const double ref = t.alpha * acc + (t.beta == 0.0f ? 0.0 : t.beta * c0);
      // Error scales with the magnitude of the summed terms, not with the (possibly
      // cancelled) result.
      const double scale = std::fabs(t.alpha) * mag + std::fabs(t.beta * (t.beta == 0.0f ? 0 : c0)) + 1e-30;
      const float got = C[static_cast<std::size_t>(i) * ldc + j];
      if (!(std::fabs(got - ref) <= tol * scale + 1e-7)) {
        ADD_FAILURE() << op_name(t.op) << " M=" << t.M << " N=" << t.N << " K=" << t.K
                      << " alpha=" << t.alpha << " beta=" << t.beta << " at (" << i << "," << j
                      << "): got " << got << " want " << ref;
        ++bad;
      }
    }
    for (int j = t.N; j < ldc; ++j)
      ASSERT_EQ(C[static_cast<std::size_t>(i) * ldc + j], 12345.0f) << "wrote past N";
  }
}

}  // namespace

void sweep_shapes();

TEST(Gemm, AllVariantsManyShapes) { sweep_shapes(); }

TEST(Gemm, EveryCodePath) {
  // The baseline path must stay correct even on machines that never select it.
  const char* names[] = {"", "generic", "avx2", "avx512"};
  for (int isa = 1; isa <= 3; ++isa) {
    k::detail::gemm_force_isa(isa);
    if (std::string(k::detail::gemm_isa_name()) != names[isa]) continue;  // CPU lacks it
    SCOPED_TRACE(names[isa]);
    sweep_shapes();
  }
  k::detail::gemm_force_isa(0);
}

void sweep_shapes() {
  const int shapes[][3] = {{1, 1, 1},     {1, 1, 7},     {7, 13, 5},     {128, 26, 256},
                           {128, 256, 784}, {129, 257, 785}, {1, 256, 784}, {5, 1, 3},
                           {1, 26, 256},  {33, 47, 1},   {6, 16, 300},   {12, 32, 17},
                           {13, 33, 513}, {256, 784, 128}, {64, 50, 1000}, {2, 3, 2000}};
  const float ab[][2] = {{1.0f, 0.0f}, {-0.75f, 1.0f}, {1.0f, 1.0f}, {2.0f, 0.5f}};
  std::uint32_t seed = 1;
  for (Op op : {Op::NN, Op::NT, Op::TN})
    for (const auto& s : shapes)
      for (const auto& [alpha, beta] : ab) check_gemm({op, s[0], s[1], s[2], alpha, beta}, seed++);
}

TEST(Gemm, LeadingDimensionsLargerThanCols) {
  std::uint32_t seed = 100;
  for (Op op : {Op::NN, Op::NT, Op::TN})
    for (float beta : {0.0f, 1.0f, 0.5f}) {
      check_gemm({op, 7, 13, 5, 1.5f, beta, 3, 5, 2}, seed++);
      check_gemm({op, 129, 257, 785, 0.5f, beta, 1, 7, 11}, seed++);
      check_gemm({op, 128, 26, 256, 1.0f, beta, 16, 16, 6}, seed++);
      check_gemm({op, 1, 1, 1, 2.0f, beta, 4, 4, 4}, seed++);
    }
}

TEST(Gemm, BetaZeroIgnoresNaNInC) {
  for (Op op : {Op::NN, Op::NT, Op::TN}) {
    const int M = 37, N = 41, K = 29;
    std::mt19937 rng(7);
    auto A = random_vec(static_cast<std::size_t>(M) * K, rng);
    auto B = random_vec(static_cast<std::size_t>(K) * N, rng);
    std::vector<float> C(static_cast<std::size_t>(M) * N, std::numeric_limits<float>::quiet_NaN());
    const int lda = op == Op::TN ? M : K, ldb = op == Op::NT ? K : N;
    run_gemm(op, M, N, K, 1.0f, A.data(), lda, B.data(), ldb, 0.0f, C.data(), N);
    for (float c : C) ASSERT_TRUE(std::isfinite(c)) << op_name(op);
  }
}

TEST(Gemm, DegenerateSizes) {
  // K == 0: C = beta*C (BLAS); alpha == 0: A and B are not used.
  std::vector<float> C = {1.0f, 2.0f, 3.0f, 4.0f};
  k::gemm_nn(2, 2, 0, 1.0f, nullptr, 1, nullptr, 2, 0.5f, C.data(), 2);
  EXPECT_EQ(C, (std::vector<float>{0.5f, 1.0f, 1.5f, 2.0f}));
  std::fill(C.begin(), C.end(), std::numeric_limits<float>::quiet_NaN());
  k::gemm_nt(2, 2, 3, 0.0f, nullptr, 3, nullptr, 3, 0.0f, C.data(), 2);
  EXPECT_EQ(C, (std::vector<float>{0.0f, 0.0f, 0.0f, 0.0f}));
  k::gemm_tn(0, 2, 3, 1.0f, nullptr, 1, nullptr, 2, 0.0f, C.data(), 2);  // no-op
}

TEST(Gemm, Deterministic) {
  for (Op op : {Op::NN, Op::NT, Op::TN}) {
    const int M = 131, N = 259, K = 787;
    std::mt19937 rng(11);
    auto A = random_vec(static_cast<std::size_t>(M) * K, rng);
    auto B = random_vec(static_cast<std::size_t>(K) * N, rng);
    auto C1 = random_vec(static_cast<std::size_t>(M) * N, rng);
    auto C2 = C1;
    const int lda = op == Op::TN ? M : K, ldb = op == Op::NT ? K : N;
    run_gemm(op, M, N, K, 0.9f, A.data(), lda, B.data(), ldb, 1.0f, C1.data(), N);
    run_gemm(op, M, N, K, 0.9f, A.data(), lda, B.data(), ldb, 1.0f, C2.data(), N);
    ASSERT_EQ(0, std::memcmp(C1.data(), C2.data(), C1.size() * sizeof(float))) << op_name(op);
  }
}

void check_row_independence();

TEST(Gemm, RowResultIndependentOfBatchSize) {
  for (int isa = 1; isa <= 3; ++isa) {
    k::detail::gemm_force_isa(isa);
    SCOPED_TRACE(k::detail::gemm_isa_name());
    check_row_independence();
  }
  k::detail::gemm_force_isa(0);
}

void check_row_independence() {
  // A row of X*W^T must not depend on how many other rows are in the batch: a
  // data-parallel split of the forward pass then matches the serial one bit for bit.
  const int N = 256, K = 784;
  std::mt19937 rng(5);
  auto X = random_vec(static_cast<std::size_t>(128) * K, rng);
  auto W = random_vec(static_cast<std::size_t>(N) * K, rng);
  std::vector<float> full(static_cast<std::size_t>(128) * N), part(static_cast<std::size_t>(50) * N);
  k::gemm_nt(128, N, K, 1.0f, X.data(), K, W.data(), K, 0.0f, full.data(), N);
  k::gemm_nt(50, N, K, 1.0f, X.data() + 37 * K, K, W.data(), K, 0.0f, part.data(), N);
  ASSERT_EQ(0, std::memcmp(full.data() + 37 * N, part.data(), part.size() * sizeof(float)));
  // Small batches take narrower kernels; rows must still match bit for bit, for every op.
  for (int m : {1, 2, 3, 4, 5, 6, 7, 9, 13}) {
    std::vector<float> small(static_cast<std::size_t>(m) * N, -1.0f);
    const int r0 = 128 - m;
    k::gemm_nt(m, N, K, 1.0f, X.data() + r0 * K, K, W.data(), K, 0.0f, small.data(), N);
    ASSERT_EQ(0, std::memcmp(full.data() + r0 * N, small.data(), small.size() * sizeof(float)))
        << "nt m=" << m;
  }
  // gemm_nn (dY * W) and beta = 1 accumulation.
  auto Wn = random_vec(static_cast<std::size_t>(K) * N, rng);
  std::vector<float> cf(static_cast<std::size_t>(128) * N, 0.25f);
  k::gemm_nn(128, N, K, 0.5f, X.data(), K, Wn.data(), N, 1.0f, cf.data(), N);
  for (int m : {1, 2, 3, 5, 8, 11}) {
    std::vector<float> cs(static_cast<std::size_t>(m) * N, 0.25f);
    k::gemm_nn(m, N, K, 0.5f, X.data() + 3 * K, K, Wn.data(), N, 1.0f, cs.data(), N);
    ASSERT_EQ(0, std::memcmp(cf.data() + 3 * N, cs.data(), cs.size() * sizeof(float)))
        << "nn m=" << m;
  }
}

TEST(Gemm, ReentrantAcrossThreads) {
  // Packing buffers are per thread: concurrent calls must not disturb each other.
  const int M = 64, N = 200, K = 300;
  std::mt19937 rng(21);
  auto A = random_vec(static_cast<std::size_t>(M) * K, rng);
  auto B = random_vec(static_cast<std::size_t>(N) * K, rng);
  std::vector<float> want(static_cast<std::size_t>(M) * N);
  k::gemm_nt(M, N, K, 1.0f, A.data(), K, B.data(), K, 0.0f, want.data(), N);
  std::vector<std::vector<float>> got(4, std::vector<float>(want.size()));
  std::vector<std::thread> ts;
  for (int t = 0; t < 4; ++t)
    ts.emplace_back([&, t] {
      for (int rep = 0; rep < 20; ++rep)
        k::gemm_nt(M, N, K, 1.0f, A.data(), K, B.data(), K, 0.0f, got[t].data(), N);
    });
  for (auto& th : ts) th.join();
  for (int t = 0; t < 4; ++t) ASSERT_EQ(got[t], want) << "thread " << t;
}

// ---------------------------------------------------------------- element-wise

TEST(Elementwise, AddBiasAndBiasSigmoid) {
  const int R = 5, Cn = 7;
  std::mt19937 rng(3);
  auto Y = random_vec(R * Cn, rng, -5, 5);
  auto bias = random_vec(Cn, rng);
  auto Y1 = Y, Y2 = Y;
  k::add_bias_rows(R, Cn, bias.data(), Y1.data());
  k::bias_sigmoid_rows(R, Cn, bias.data(), Y2.data());
  for (int r = 0; r < R; ++r)
    for (int c = 0; c < Cn; ++c) {
      const double z = static_cast<double>(Y[r * Cn + c]) + bias[c];
      EXPECT_NEAR(Y1[r * Cn + c], z, 1e-6);
      EXPECT_NEAR(Y2[r * Cn + c], 1.0 / (1.0 + std::exp(-z)), 1e-6);
    }
}

TEST(Elementwise, SigmoidForwardBackward) {
  std::vector<float> x = {-100.0f, -20.0f, -1.0f, 0.0f, 0.5f, 3.0f, 20.0f, 100.0f};
  std::vector<float> y(x.size());
  k::sigmoid_forward(x.size(), x.data(), y.data());
  for (std::size_t i = 0; i < x.size(); ++i) {
    EXPECT_TRUE(std::isfinite(y[i]));
    EXPECT_NEAR(y[i], 1.0 / (1.0 + std::exp(-static_cast<double>(x[i]))), 1e-7);
  }
  EXPECT_EQ(y[3], 0.5f);
  auto z = x;  // in place
  k::sigmoid_forward(z.size(), z.data(), z.data());
  EXPECT_EQ(z, y);

  std::vector<float> gy = {1, -2, 3, -4, 5, -6, 7, -8}, gx(gy.size());
  k::sigmoid_backward(y.size(), y.data(), gy.data(), gx.data());
  for (std::size_t i = 0; i < y.size(); ++i)
    EXPECT_NEAR(gx[i], static_cast<double>(gy[i]) * y[i] * (1.0 - y[i]), 1e-6);
  k::sigmoid_backward(y.size(), y.data(), gy.data(), gy.data());  // gy and gx alias
  EXPECT_EQ(gy, gx);
}

TEST(Elementwise, ColumnSums) {
  const int R = 9, Cn = 300;  // more columns than one internal chunk
  std::mt19937 rng(4);
  auto G = random_vec(R * Cn, rng);
  std::vector<float> out(Cn, 2.0f);
  k::column_sums(R, Cn, 0.5f, G.data(), 1.0f, out.data());
  for (int c = 0; c < Cn; ++c) {
    double s = 0;
    for (int r = 0; r < R; ++r) s += G[r * Cn + c];
    EXPECT_NEAR(out[c], 2.0 + 0.5 * s, 1e-5);
  }
  std::fill(out.begin(), out.end(), std::numeric_limits<float>::quiet_NaN());
  k::column_sums(R, Cn, 1.0f, G.data(), 0.0f, out.data());
  for (int c = 0; c < Cn; ++c) {
    double s = 0;
    for (int r = 0; r < R; ++r) s += G[r * Cn + c];
    EXPECT_NEAR(out[c], s, 1e-5);
  }
}

TEST(Elementwise, SoftmaxXentForward) {
  const int R = 3, Cn = 4;
  const std::vector<float> z = {1, 2, 3, 4,  0, 0, 0, 0,  -1, 5, 2, 0.5f};
  const std::vector<std::int32_t> lab = {3, 1, 0};
  std::vector<float> p(R * Cn);
  const double loss = k::softmax_xent_forward(R, Cn, z.data(), lab.data(), p.data());
  double want = 0;
  for (int r = 0; r < R; ++r) {
    double m = -1e300, s = 0, ps = 0;
    for (int c = 0; c < Cn; ++c) m = std::max(m, static_cast<double>(z[r * Cn + c]));
    for (int c = 0; c < Cn; ++c) s += std::exp(z[r * Cn + c] - m);
    for (int c = 0; c < Cn; ++c) {
      const double ref = std::exp(z[r * Cn + c] - m) / s;
      EXPECT_NEAR(p[r * Cn + c], ref, 1e-6);
      ps += p[r * Cn + c];
    }
    EXPECT_NEAR(ps, 1.0, 1e-6);
    want += -std::log(std::exp(z[r * Cn + lab[r]] - m) / s);
  }
  EXPECT_NEAR(loss, want, 1e-5);
}

TEST(Elementwise, SoftmaxLargeLogitsStayFinite) {
  const std::vector<float> z = {1000, -1000, 0, -1000, 1000, 0};
  const std::vector<std::int32_t> right = {0, 1}, wrong = {1, 0};
  std::vector<float> p(6);
  const double l_ok = k::softmax_xent_forward(2, 3, z.data(), right.data(), p.data());
  for (float v : p) EXPECT_TRUE(std::isfinite(v));
  EXPECT_NEAR(p[0] + p[1] + p[2], 1.0, 1e-6);
  EXPECT_NEAR(p[3] + p[4] + p[5], 1.0, 1e-6);
  EXPECT_FLOAT_EQ(p[0], 1.0f);
  EXPECT_NEAR(l_ok, 0.0, 1e-6);  // confident and correct
  const double l_bad = k::softmax_xent_forward(2, 3, z.data(), wrong.data(), p.data());
  EXPECT_TRUE(std::isfinite(l_bad));
  EXPECT_GT(l_bad, 100.0);  // p[label] == 0 in float: large but finite
}

TEST(Elementwise, SoftmaxXentBackward) {
  const std::vector<float> p = {0.1f, 0.2f, 0.7f, 0.25f, 0.25f, 0.5f};
  const std::vector<std::int32_t> lab = {2, 0};
  std::vector<float> g(6);
  k::softmax_xent_backward(2, 3, p.data(), lab.data(), 0.5f, g.data());
  const std::vector<float> want = {0.05f, 0.1f, -0.15f, -0.375f, 0.125f, 0.25f};
  for (int i = 0; i < 6; ++i) EXPECT_NEAR(g[i], want[i], 1e-7);
  auto q = p;  // in place
  k::softmax_xent_backward(2, 3, q.data(), lab.data(), 0.5f, q.data());
  EXPECT_EQ(q, g);
}

TEST(Elementwise, CountCorrectFirstMaximumWins) {
  const std::vector<float> s = {1, 3, 3, 0,   // tie between 1 and 2 -> 1
                                5, 5, 5, 5,   // all tied -> 0
                                0, 1, 2, 9,   // -> 3
                                -2, -1, -3, -1};  // tie 1,3 -> 1
  EXPECT_EQ(k::count_correct(4, 4, s.data(), std::vector<std::int32_t>{1, 0, 3, 1}.data()), 4);
  EXPECT_EQ(k::count_correct(4, 4, s.data(), std::vector<std::int32_t>{2, 1, 3, 3}.data()), 1);
  EXPECT_EQ(k::count_correct(4, 4, s.data(), std::vector<std::int32_t>{0, 3, 0, 0}.data()), 0);
}

TEST(Elementwise, SgdPlain) {
  std::vector<float> p = {1.0f, -2.0f}, g = {0.5f, 0.25f};
  k::sgd_update(2, 0.1f, 0.0f, 0.0f, p.data(), g.data(), nullptr);
  EXPECT_FLOAT_EQ(p[0], 0.95f);
  EXPECT_FLOAT_EQ(p[1], -2.025f);
}

TEST(Elementwise, SgdMomentumWeightDecayTwoSteps) {
  // lr=0.1, momentum=0.9, wd=0.01, p0=1, grads 0.5 then 0.2 (hand-computed):
  // step1: g=0.5+0.01*1=0.51; v=0.51; p=1-0.051=0.949
  // step2: g=0.2+0.01*0.949=0.20949; v=0.9*0.51+0.20949=0.66849; p=0.949-0.066849=0.882151
  std::vector<float> p = {1.0f}, v = {0.0f};
  const float g1 = 0.5f, g2 = 0.2f;
  k::sgd_update(1, 0.1f, 0.9f, 0.01f, p.data(), &g1, v.data());
  EXPECT_NEAR(v[0], 0.51f, 1e-6);
  EXPECT_NEAR(p[0], 0.949f, 1e-6);
  k::sgd_update(1, 0.1f, 0.9f, 0.01f, p.data(), &g2, v.data());
  EXPECT_NEAR(v[0], 0.66849f, 1e-6);
  EXPECT_NEAR(p[0], 0.882151f, 1e-6);
}

TEST(Elementwise, Deterministic) {
  std::mt19937 rng(9);
  const int R = 128, Cn = 26;
  auto z = random_vec(R * Cn, rng, -10, 10);
  std::vector<std::int32_t> lab(R);
  for (int r = 0; r < R; ++r) lab[r] = r % Cn;
  std::vector<float> p1(R * Cn), p2(R * Cn), s1(Cn), s2(Cn);
  const double l1 = k::softmax_xent_forward(R, Cn, z.data(), lab.data(), p1.data());
  const double l2 = k::softmax_xent_forward(R, Cn, z.data(), lab.data(), p2.data());
  EXPECT_EQ(l1, l2);
  EXPECT_EQ(p1, p2);
  k::column_sums(R, Cn, 1.0f, z.data(), 0.0f, s1.data());
  k::column_sums(R, Cn, 1.0f, z.data(), 0.0f, s2.data());
  EXPECT_EQ(s1, s2);
}
