// GEMM throughput for the MLP's shapes (784-256-256-26), single-threaded; and the packed-B
// layouts the OpenMP strategy's threads use, default against narrow.
#include <benchmark/benchmark.h>

#include <new>
#include <random>
#include <string>
#include <vector>

#include "nnpar/gemm_packed.hpp"
#include "nnpar/kernels.hpp"

namespace nnpar::kernels::detail {
// Hooks defined in kernels/cpu/gemm.cpp (not in the public header).
void gemm_force_isa(int isa);  // 0 auto, 1 generic, 2 avx2, 3 avx512
const char* gemm_isa_name();
}  // namespace nnpar::kernels::detail

namespace k = nnpar::kernels;

namespace {

enum Op { NN = 0, NT = 1, TN = 2 };

std::vector<float> rnd(std::size_t n, unsigned seed) {
  std::mt19937 rng(seed);
  std::uniform_real_distribution<float> d(-1.0f, 1.0f);
  std::vector<float> v(n);
  for (auto& x : v) x = d(rng);
  return v;
}

// Textbook loops: the baseline the blocked kernels are measured against.
void naive(int op, int M, int N, int K, const float* A, const float* B, float beta, float* C) {
  for (int i = 0; i < M; ++i)
    for (int j = 0; j < N; ++j) {
      float acc = 0.0f;
      for (int p = 0; p < K; ++p) {
        const float a = op == TN ? A[p * M + i] : A[i * K + p];
        const float b = op == NT ? B[j * K + p] : B[p * N + j];
        acc += a * b;
      }
      C[i * N + j] = acc + beta * C[i * N + j];
    }
}

// args: op, M, N, K, beta(0/1), isa (0 auto, 1 generic, 2 avx2, 3 avx512, -1 naive)
void BM_gemm(benchmark::State& state) {
  const int op = static_cast<int>(state.range(0));
  const int M = static_cast<int>(state.range(1)), N = static_cast<int>(state.range(2)),
            K = static_cast<int>(state.range(3));
  const float beta = static_cast<float>(state.range(4));
  const int isa = static_cast<int>(state.range(5));
  auto A = rnd(static_cast<std::size_t>(M) * K, 1);
  auto B = rnd(static_cast<std::size_t>(K) * N, 2);
  auto C = rnd(static_cast<std::size_t>(M) * N, 3);
  const int lda = op == TN ? M : K, ldb = op == NT ? K : N;
  if (isa >= 0) k::detail::gemm_force_isa(isa);
  for (auto _ : state) {
    switch (isa < 0 ? -1 : op) {
      case NN: k::gemm_nn(M, N, K, 1.0f, A.data(), lda, B.data(), ldb, beta, C.data(), N); break;
      case NT: k::gemm_nt(M, N, K, 1.0f, A.data(), lda, B.data(), ldb, beta, C.data(), N); break;
      case TN: k::gemm_tn(M, N, K, 1.0f, A.data(), lda, B.data(), ldb, beta, C.data(), N); break;
      default: naive(op, M, N, K, A.data(), B.data(), beta, C.data());
    }
    benchmark::DoNotOptimize(C.data());
    benchmark::ClobberMemory();
  }
  state.counters["GFLOP/s"] =
      benchmark::Counter(2e-9 * M * N * K * static_cast<double>(state.iterations()),
                         benchmark::Counter::kIsRate);
  state.SetLabel(isa < 0 ? "naive" : k::detail::gemm_isa_name());
  k::detail::gemm_force_isa(0);
}

void training_shapes(benchmark::internal::Benchmark* b) {
  b->ArgNames({"op", "M", "N", "K", "beta", "isa"});
  for (int B : {1, 32, 128, 1024}) {
    // forward X*W^T
    b->Args({NT, B, 256, 784, 0, 0})->Args({NT, B, 256, 256, 0, 0})->Args({NT, B, 26, 256, 0, 0});
    // weight gradients dY^T*X, accumulated
    b->Args({TN, 256, 784, B, 1, 0})->Args({TN, 256, 256, B, 1, 0})->Args({TN, 26, 256, B, 1, 0});
    // input gradients dY*W
    b->Args({NN, B, 784, 256, 0, 0})->Args({NN, B, 256, 256, 0, 0})->Args({NN, B, 256, 26, 0, 0});
  }
}

void per_path(benchmark::internal::Benchmark* b) {
  // The three big B=128 shapes: naive loops vs each code path (a path the CPU lacks
  // falls back, see the label).
  b->ArgNames({"op", "M", "N", "K", "beta", "isa"});
  for (int isa : {-1, 1, 2, 3}) {
    b->Args({NT, 128, 256, 784, 0, isa});
    b->Args({TN, 256, 784, 128, 1, isa});
    b->Args({NN, 128, 784, 256, 0, isa});
  }
}

// The packed-B pieces the OpenMP strategy calls per thread (gemm_packed.hpp): C[M x N] =
// A[M x K] * Bp, B packed once outside the loop (as the strategy reuses a packed operand).
// args: M, N, K, narrow (0: packed_b_layout, 8 x 32 tiles on AVX-512; 1: packed_b_layout_narrow,
// 16 x 16 tiles and, for calls of <= 2 panels, A read in place). Side by side in one run: the
// shapes of one stationary thread at 16 threads (N = 16 or 64 columns) and a wide call.
void BM_gemm_packed(benchmark::State& state) {
  const int M = static_cast<int>(state.range(0)), N = static_cast<int>(state.range(1)),
            K = static_cast<int>(state.range(2));
  const bool narrow = state.range(3) != 0;
  const k::PackedB l = narrow ? k::packed_b_layout_narrow(K, N) : k::packed_b_layout(K, N);
  const auto A = rnd(static_cast<std::size_t>(M) * K, 1), B = rnd(static_cast<std::size_t>(K) * N, 2);
  std::vector<float> C(static_cast<std::size_t>(M) * N);
  float* Bp = static_cast<float*>(::operator new[](l.floats() * sizeof(float), std::align_val_t(64)));
  k::pack_b_panels(l, B.data(), N, false, 0, l.panels, Bp);
  for (auto _ : state) {
    k::gemm_packed_rows(l, 0, M, 0, l.panels, 1.0f, A.data(), K, false, Bp, 0.0f, C.data(), N);
    benchmark::DoNotOptimize(C.data());
    benchmark::ClobberMemory();
  }
  ::operator delete[](Bp, std::align_val_t(64));
  state.counters["GFLOP/s"] =
      benchmark::Counter(2e-9 * M * N * K * static_cast<double>(state.iterations()), benchmark::Counter::kIsRate);
  state.SetLabel(std::string(narrow ? "narrow" : "default") + ", " + std::to_string(l.panels) + " panels of " +
                 std::to_string(l.nr));
}

void packed_shapes(benchmark::internal::Benchmark* b) {
  b->ArgNames({"M", "N", "K", "narrow"});
  for (int narrow : {0, 1}) b->Args({128, 16, 784, narrow})->Args({128, 64, 1024, narrow})->Args({128, 256, 784, narrow});
}

}  // namespace

BENCHMARK(BM_gemm_packed)->Name("gemm_packed")->Apply(packed_shapes);
BENCHMARK(BM_gemm)->Name("gemm")->Apply(training_shapes);
BENCHMARK(BM_gemm)->Name("gemm_path")->Apply(per_path);

namespace {
void BM_bias_sigmoid(benchmark::State& state) {
  const int rows = static_cast<int>(state.range(0)), cols = 256;
  auto Y = rnd(static_cast<std::size_t>(rows) * cols, 4);
  auto bias = rnd(cols, 5);
  for (auto _ : state) {
    k::bias_sigmoid_rows(rows, cols, bias.data(), Y.data());
    benchmark::ClobberMemory();
  }
  state.SetItemsProcessed(state.iterations() * rows * cols);
}
void BM_softmax_xent(benchmark::State& state) {
  const int rows = static_cast<int>(state.range(0)), classes = 26;
  auto z = rnd(static_cast<std::size_t>(rows) * classes, 6);
  std::vector<float> p(z.size());
  std::vector<std::int32_t> lab(rows);
  for (int r = 0; r < rows; ++r) lab[r] = r % classes;
  for (auto _ : state)
    benchmark::DoNotOptimize(k::softmax_xent_forward(rows, classes, z.data(), lab.data(), p.data()));
  state.SetItemsProcessed(state.iterations() * rows * classes);
}
}  // namespace
BENCHMARK(BM_bias_sigmoid)->Arg(128);
BENCHMARK(BM_softmax_xent)->Arg(128);

BENCHMARK_MAIN();
