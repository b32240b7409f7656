// The CUDA kernels against the CPU kernels, one training step against the CPU Model, and the
// `cuda` strategy against `serial` through the runner. Every test skips (visibly) on a
// machine without a CUDA device.
#include <gtest/gtest.h>

#include <cuda_runtime_api.h>
#include <unistd.h>

#include <cmath>
#include <cstdio>
#include <cstdlib>
#include <memory>
#include <filesystem>
#include <random>
#include <vector>

#include "nnpar/cuda_kernels.hpp"
#include "nnpar/kernels.hpp"
#include "nnpar/model.hpp"
#include "parity.hpp"
#include "runner.hpp"

namespace fs = std::filesystem;
using namespace nnpar;
namespace gpu = nnpar::cuda;

namespace {

bool have_device() {
  int n = 0;
  return cudaGetDeviceCount(&n) == cudaSuccess && n > 0;
}

#define REQUIRE_GPU() \
  if (!have_device()) GTEST_SKIP() << "no CUDA device (cudaGetDeviceCount found none)"

// The device machine may hold the repository elsewhere than where this binary was built.
fs::path data_dir() {
  if (const char* env = std::getenv("NNPAR_TEST_DATA")) return env;
  return NNPAR_TEST_DATA_DIR;
}
fs::path plugin_dir() {
  std::error_code ec;
  const fs::path self = fs::read_symlink("/proc/self/exe", ec);
  if (!ec && fs::exists(self.parent_path().parent_path() / "plugins" / "nnpar_strategy_cuda.so")) {
    return self.parent_path().parent_path() / "plugins";
  }
  return NNPAR_PLUGIN_DIR;
}

// A device copy of a host vector, freed at scope exit.
template <class T>
struct Dev {
  T* p = nullptr;
  std::size_t n = 0;
  explicit Dev(std::size_t count) : n(count) {
    gpu::check(cudaMalloc(reinterpret_cast<void**>(&p), std::max<std::size_t>(1, n) * sizeof(T)), "malloc");
    gpu::check(cudaMemset(p, 0, std::max<std::size_t>(1, n) * sizeof(T)), "memset");
  }
  explicit Dev(const std::vector<T>& h) : Dev(h.size()) { put(h); }
  Dev(const Dev&) = delete;
  ~Dev() { cudaFree(p); }
  void put(const std::vector<T>& h) {
    gpu::check(cudaMemcpy(p, h.data(), h.size() * sizeof(T), cudaMemcpyHostToDevice), "upload");
  }
  std::vector<T> get() const {
    std::vector<T> h(n);
    gpu::check(cudaDeviceSynchronize(), "sync");
    gpu::check(cudaMemcpy(h.data(), p, n * sizeof(T), cudaMemcpyDeviceToHost), "download");
    return h;
  }
};

// Split-K scratch for one product.
struct Scratch {
  Dev<float> partials;
  Dev<unsigned> counters;
  Scratch(gpu::GemmForm form, int M, int N, int K) : partials(size(form, M, N, K, true)), counters(size(form, M, N, K, false)) {}
  static std::size_t size(gpu::GemmForm form, int M, int N, int K, bool floats) {
    std::size_t f = 0, c = 0;
    gpu::gemm_scratch_size(form, M, N, K, &f, &c);
    return floats ? f : c;
  }
  gpu::GemmScratch get() const { return {partials.n ? partials.p : nullptr, counters.p}; }
};

std::vector<float> random_vector(std::size_t n, std::uint32_t seed, float lo = -1.0f, float hi = 1.0f) {
  std::mt19937 rng(seed);
  std::uniform_real_distribution<float> d(lo, hi);
  std::vector<float> v(n);
  for (auto& x : v) x = d(rng);
  return v;
}

double rel_error(const std::vector<float>& got, const std::vector<float>& ref) {
  double num = 0, den = 0;
  for (std::size_t i = 0; i < ref.size(); ++i) {
    if (!std::isfinite(got[i])) return INFINITY;
    num += (double(got[i]) - ref[i]) * (double(got[i]) - ref[i]);
    den += double(ref[i]) * ref[i];
  }
  return den == 0 ? std::sqrt(num) : std::sqrt(num / den);
}

// fp32 products: rounding grows ~sqrt(K).
double bound(int K) { return 1e-5 * std::sqrt(double(std::max(K, 1))) + 1e-7; }

struct Shape {
  int M, N, K;
};
const Shape kShapes[] = {{1, 1, 1}, {7, 13, 5}, {129, 257, 785}, {128, 26, 256}, {1, 256, 784}, {1024, 256, 256}};

std::string name(const Shape& s) {
  return std::to_string(s.M) + "x" + std::to_string(s.N) + "x" + std::to_string(s.K);
}

}  // namespace

TEST(CudaKernels, ForwardMatchesCpu) {
  REQUIRE_GPU();
  for (const Shape& s : kShapes) {
    for (bool sigmoid : {false, true}) {
      const auto X = random_vector(std::size_t(s.M) * s.K, 1), W = random_vector(std::size_t(s.N) * s.K, 2),
                 b = random_vector(s.N, 3);
      std::vector<float> ref(std::size_t(s.M) * s.N);
      kernels::gemm_nt(s.M, s.N, s.K, 1.0f, X.data(), s.K, W.data(), s.K, 0.0f, ref.data(), s.N);
      if (sigmoid) kernels::bias_sigmoid_rows(s.M, s.N, b.data(), ref.data());
      else kernels::add_bias_rows(s.M, s.N, b.data(), ref.data());
      Dev<float> dX(X), dW(W), db(b), dY(std::vector<float>(ref.size(), NAN));
      Scratch scratch(gpu::GemmForm::forward, s.M, s.N, s.K);
      for (int rep = 0; rep < 2; ++rep) {  // twice: the split-K counters must reset themselves
        gpu::linear_forward(s.M, s.N, s.K, dX.p, dW.p, db.p, sigmoid, dY.p, scratch.get(), nullptr);
        EXPECT_LE(rel_error(dY.get(), ref), bound(s.K)) << name(s) << " sigmoid " << sigmoid << " rep " << rep;
      }
    }
  }
}

TEST(CudaKernels, ForwardGatherMatchesCpu) {
  REQUIRE_GPU();
  for (const int batch : {129, 5, 1}) {
  Dataset data;
  data.count = 300;
  data.pixels.resize(data.count * 784);
  data.labels.resize(data.count);
  std::mt19937 rng(5);
  for (auto& p : data.pixels) p = std::uint8_t(rng() & 0xFF);
  for (auto& l : data.labels) l = std::int32_t(rng() % 26);
  const int step = 1, N = 257;
  const auto order = epoch_order(data.count, 7, 0, true);
  std::vector<float> x(std::size_t(batch) * 784);
  std::vector<std::int32_t> y(batch);
  gather_batch(data, std::span(order).subspan(std::size_t(step) * batch, batch), x.data(), y.data());
  const auto W = random_vector(std::size_t(N) * 784, 8, -0.1f, 0.1f), b = random_vector(N, 9);
  std::vector<float> ref(std::size_t(batch) * N);
  kernels::gemm_nt(batch, N, 784, 1.0f, x.data(), 784, W.data(), 784, 0.0f, ref.data(), N);
  kernels::bias_sigmoid_rows(batch, N, b.data(), ref.data());

  Dev<std::uint8_t> pixels(data.pixels);
  Dev<std::int32_t> labels(data.labels), dy{std::size_t(batch)};
  Dev<std::uint32_t> dorder(order);
  Dev<int> dstep(std::vector<int>{step});
  Dev<float> dW(W), db(b), dY(ref.size()), dx(x.size()), dx2(x.size());
  Scratch scratch(gpu::GemmForm::forward, batch, N, 784);
  const gpu::RowIndex index{dorder.p, dstep.p, batch};
  gpu::linear_forward_gather(batch, N, 784, pixels.p, data.pixel_scale, index, dx.p, dW.p, db.p, true, dY.p,
                             scratch.get(), nullptr);
  EXPECT_LE(rel_error(dY.get(), ref), bound(784)) << "batch " << batch;
  EXPECT_EQ(dx.get(), x) << "the gathered copy of the input, batch " << batch;
  gpu::gather_batch(batch, 784, pixels.p, labels.p, index, data.pixel_scale, dx2.p, dy.p, nullptr);
  EXPECT_EQ(dx2.get(), x);
  EXPECT_EQ(dy.get(), y);
  }
}

TEST(CudaKernels, WeightGradMatchesCpu) {
  REQUIRE_GPU();
  for (const Shape& s : kShapes) {
    for (bool accumulate : {false, true}) {
      // Forward names: dY [M,N], X [M,K]; dW [N,K], db [N].
      const auto dYh = random_vector(std::size_t(s.M) * s.N, 11), X = random_vector(std::size_t(s.M) * s.K, 12);
      auto dW = random_vector(std::size_t(s.N) * s.K, 13), db = random_vector(s.N, 14);
      Dev<float> g_dY(dYh), g_X(X), g_dW(accumulate ? dW : std::vector<float>(dW.size(), NAN)),
          g_db(accumulate ? db : std::vector<float>(db.size(), NAN));
      const float beta = accumulate ? 1.0f : 0.0f;
      kernels::gemm_tn(s.N, s.K, s.M, 1.0f, dYh.data(), s.N, X.data(), s.K, beta, dW.data(), s.K);
      kernels::column_sums(s.M, s.N, 1.0f, dYh.data(), beta, db.data());
      gpu::linear_weight_grad(s.M, s.N, s.K, g_dY.p, g_X.p, accumulate, g_dW.p, g_db.p, gpu::FusedSgd{}, nullptr);
      EXPECT_LE(rel_error(g_dW.get(), dW), bound(s.M)) << name(s) << " accumulate " << accumulate;
      EXPECT_LE(rel_error(g_db.get(), db), bound(s.M)) << name(s) << " accumulate " << accumulate;
    }
  }
}

TEST(CudaKernels, WeightGradCopiesGetTheSameValuesBitForBit) {
  // push_p2p's epilogue (GradientCopies, its own 128-register kernel): dW and db as without
  // copies, bit for bit, and every copy equal to them; zero_gradient_copies zeroes the copies.
  // Here the copies are local buffers; nccl-data points them at the peers' memory.
  REQUIRE_GPU();
  for (const Shape& s : {Shape{1024, 256, 784}, Shape{1024, 26, 256}, Shape{7, 13, 5}}) {
    const auto dYh = random_vector(std::size_t(s.M) * s.N, 31), X = random_vector(std::size_t(s.M) * s.K, 32);
    const std::size_t w = std::size_t(s.N) * s.K;
    Dev<float> g_dY(dYh), g_X(X), plain(w + s.N), pushed(w + s.N), copy1(std::vector<float>(w + s.N, NAN)),
        copy2(std::vector<float>(w + s.N, NAN));
    gpu::linear_weight_grad(s.M, s.N, s.K, g_dY.p, g_X.p, false, plain.p, plain.p + w, gpu::FusedSgd{}, nullptr);
    gpu::GradientCopies copies;
    copies.count = 2;
    copies.dW[0] = copy1.p, copies.db[0] = copy1.p + w;
    copies.dW[1] = copy2.p, copies.db[1] = copy2.p + w;
    gpu::linear_weight_grad(s.M, s.N, s.K, g_dY.p, g_X.p, false, pushed.p, pushed.p + w, gpu::FusedSgd{}, nullptr,
                            copies);
    const auto expected = plain.get();
    EXPECT_EQ(pushed.get(), expected) << name(s);
    EXPECT_EQ(copy1.get(), expected) << name(s);
    EXPECT_EQ(copy2.get(), expected) << name(s);
    gpu::zero_gradient_copies(w, copies, nullptr);
    const auto zeroed = copy2.get();
    EXPECT_EQ(std::vector<float>(zeroed.begin(), zeroed.begin() + std::ptrdiff_t(w)), std::vector<float>(w, 0.0f))
        << name(s);
  }
  gpu::GradientCopies bad;
  bad.count = 1;  // a null copy
  Dev<float> one(std::vector<float>(4, 0.0f));
  EXPECT_THROW(gpu::linear_weight_grad(1, 1, 1, one.p, one.p, false, one.p, one.p + 1, gpu::FusedSgd{}, nullptr, bad),
               std::invalid_argument);
}

TEST(CudaKernels, WeightGradWithFusedSgdMatchesCpu) {
  REQUIRE_GPU();
  for (float momentum : {0.0f, 0.9f}) {
    const Shape s{128, 26, 256};
    const auto dYh = random_vector(std::size_t(s.M) * s.N, 21), X = random_vector(std::size_t(s.M) * s.K, 22);
    auto W = random_vector(std::size_t(s.N) * s.K, 23), b = random_vector(s.N, 24);
    auto vW = random_vector(W.size(), 25), vb = random_vector(b.size(), 26);
    Dev<float> g_dY(dYh), g_X(X), g_dW(W.size()), g_db(b.size()), g_W(W), g_b(b), g_vW(vW), g_vb(vb);
    std::vector<float> dW(W.size()), db(b.size());
    kernels::gemm_tn(s.N, s.K, s.M, 1.0f, dYh.data(), s.N, X.data(), s.K, 0.0f, dW.data(), s.K);
    kernels::column_sums(s.M, s.N, 1.0f, dYh.data(), 0.0f, db.data());
    kernels::sgd_update(W.size(), 0.3f, momentum, 1e-3f, W.data(), dW.data(), momentum != 0 ? vW.data() : nullptr);
    kernels::sgd_update(b.size(), 0.3f, momentum, 1e-3f, b.data(), db.data(), momentum != 0 ? vb.data() : nullptr);
    gpu::FusedSgd sgd{0.3f, momentum, 1e-3f, g_W.p, g_b.p, g_vW.p, g_vb.p};
    gpu::linear_weight_grad(s.M, s.N, s.K, g_dY.p, g_X.p, false, g_dW.p, g_db.p, sgd, nullptr);
    EXPECT_LE(rel_error(g_W.get(), W), 1e-5) << "momentum " << momentum;
    EXPECT_LE(rel_error(g_b.get(), b), 1e-5) << "momentum " << momentum;
    if (momentum != 0) {
      EXPECT_LE(rel_error(g_vW.get(), vW), 1e-4);
    }
  }
}

TEST(CudaKernels, InputGradMatchesCpu) {
  REQUIRE_GPU();
  for (const Shape& s : kShapes) {
    for (bool with_sigmoid : {false, true}) {
      // dY [M,N], W [N,K], H [M,K] -> dX [M,K].
      const auto dYh = random_vector(std::size_t(s.M) * s.N, 31), W = random_vector(std::size_t(s.N) * s.K, 32),
                 H = random_vector(std::size_t(s.M) * s.K, 33, 0.0f, 1.0f);
      std::vector<float> ref(std::size_t(s.M) * s.K);
      kernels::gemm_nn(s.M, s.K, s.N, 1.0f, dYh.data(), s.N, W.data(), s.K, 0.0f, ref.data(), s.K);
      if (with_sigmoid) kernels::sigmoid_backward(ref.size(), H.data(), ref.data(), ref.data());
      Dev<float> g_dY(dYh), g_W(W), g_H(H), g_dX(std::vector<float>(ref.size(), NAN));
      Scratch scratch(gpu::GemmForm::input_grad, s.M, s.N, s.K);
      for (int rep = 0; rep < 2; ++rep) {
        gpu::linear_input_grad(s.M, s.N, s.K, g_dY.p, g_W.p, with_sigmoid ? g_H.p : nullptr, g_dX.p, scratch.get(),
                               nullptr);
        EXPECT_LE(rel_error(g_dX.get(), ref), bound(s.N)) << name(s) << " sigmoid " << with_sigmoid;
      }
    }
  }
}

TEST(CudaKernels, SoftmaxCrossEntropyMatchesCpu) {
  REQUIRE_GPU();
  const std::pair<int, int> shapes[] = {{1, 1}, {7, 5}, {128, 26}, {129, 26}, {1500, 26}, {3, 300}, {33, 32}};
  const gpu::KernelOptions defaults = gpu::kernel_options();
  for (bool warp : {true, false})
  for (auto [rows, classes] : shapes) {
    gpu::KernelOptions o = defaults;
    o.warp_softmax = warp;
    gpu::set_kernel_options(o);
    const auto logits = random_vector(std::size_t(rows) * classes, 41, -8.0f, 8.0f);
    std::vector<std::int32_t> labels(rows);
    std::mt19937 rng(42);
    for (auto& l : labels) l = std::int32_t(rng() % classes);
    std::vector<float> probs(logits.size()), grad(logits.size());
    const double loss = kernels::softmax_xent_forward(rows, classes, logits.data(), labels.data(), probs.data());
    const int correct = kernels::count_correct(rows, classes, probs.data(), labels.data());
    const float scale = 1.0f / rows;
    kernels::softmax_xent_backward(rows, classes, probs.data(), labels.data(), scale, grad.data());

    Dev<float> g_logits(logits), g_probs(probs.size()), g_grad(grad.size());
    Dev<std::int32_t> g_labels(labels);
    Dev<double> g_loss(std::vector<double>{0.5});  // accumulates onto what is there
    Dev<unsigned long long> g_correct(std::vector<unsigned long long>{3});
    gpu::softmax_xent(rows, classes, g_logits.p, g_labels.p, gpu::RowIndex{}, scale, g_probs.p, g_grad.p, g_loss.p,
                      g_correct.p, false, nullptr);
    EXPECT_NEAR(g_loss.get()[0] - 0.5, loss, 1e-5 * std::max(1.0, loss)) << rows << "x" << classes;
    EXPECT_EQ(g_correct.get()[0] - 3, unsigned(correct)) << rows << "x" << classes;
    // The multi-block form, twice (its ticket must reset itself), advancing a step counter.
    Dev<double> scratch(std::max<std::size_t>(1, gpu::softmax_xent_scratch(rows, classes)));
    Dev<int> step(std::vector<int>{0});
    Dev<double> loss2(std::vector<double>{0.0});
    Dev<unsigned long long> correct2(std::vector<unsigned long long>{0});
    for (int rep = 0; rep < 2; ++rep) {
      gpu::softmax_xent(rows, classes, g_logits.p, g_labels.p, gpu::RowIndex{nullptr, step.p, rows}, scale, g_probs.p,
                        g_grad.p, loss2.p, correct2.p, true, nullptr, scratch.p);
    }
    EXPECT_NEAR(loss2.get()[0], 2 * loss, 2e-5 * std::max(1.0, loss)) << rows << "x" << classes << " multi-block";
    EXPECT_EQ(correct2.get()[0], 2 * unsigned(correct)) << rows << "x" << classes << " multi-block";
    EXPECT_EQ(step.get()[0], 2) << rows << "x" << classes << " multi-block";
    EXPECT_LE(rel_error(g_probs.get(), probs), 1e-6) << rows << "x" << classes;
    EXPECT_LE(rel_error(g_grad.get(), grad), 1e-6) << rows << "x" << classes;
  }
  gpu::set_kernel_options(defaults);
}

// The GEMV-style kernels for batches of <= 8 rows against the CPU, with and without PDL
// launches (on a stream, so consecutive kernels really overlap), on odd shapes; and the same
// shapes through the tiled path (gemv_max_rows 0) for comparison.
TEST(CudaKernels, SkinnyProductsMatchCpuWithAndWithoutGemvAndPdl) {
  REQUIRE_GPU();
  const gpu::KernelOptions defaults = gpu::kernel_options();
  const Shape shapes[] = {{1, 1, 1}, {1, 256, 784}, {2, 257, 785}, {3, 1000, 1023}, {5, 26, 256}, {8, 33, 31},
                          {8, 1024, 1024}, {9, 31, 33}};
  cudaStream_t stream = nullptr;
  gpu::check(cudaStreamCreateWithFlags(&stream, cudaStreamNonBlocking), "stream");
  for (int gemv : {8, 0})
    for (bool pdl : {true, false})
      for (const Shape& s : shapes) {
        gpu::KernelOptions o = defaults;
        o.gemv_max_rows = gemv;
        o.pdl = pdl;
        gpu::set_kernel_options(o);
        const std::string what = name(s) + " gemv " + std::to_string(gemv) + " pdl " + std::to_string(pdl);
        const auto X = random_vector(std::size_t(s.M) * s.K, 51), W = random_vector(std::size_t(s.N) * s.K, 52),
                   b = random_vector(s.N, 53), dYh = random_vector(std::size_t(s.M) * s.N, 54),
                   H = random_vector(std::size_t(s.M) * s.K, 55, 0.0f, 1.0f);
        std::vector<float> fwd(std::size_t(s.M) * s.N), dX(std::size_t(s.M) * s.K);
        kernels::gemm_nt(s.M, s.N, s.K, 1.0f, X.data(), s.K, W.data(), s.K, 0.0f, fwd.data(), s.N);
        kernels::bias_sigmoid_rows(s.M, s.N, b.data(), fwd.data());
        kernels::gemm_nn(s.M, s.K, s.N, 1.0f, dYh.data(), s.N, W.data(), s.K, 0.0f, dX.data(), s.K);
        kernels::sigmoid_backward(dX.size(), H.data(), dX.data(), dX.data());
        Dev<float> gX(X), gW(W), gb(b), gdY(dYh), gH(H), gY(std::vector<float>(fwd.size(), NAN)),
            gdX(std::vector<float>(dX.size(), NAN));
        Scratch fs(gpu::GemmForm::forward, s.M, s.N, s.K), is(gpu::GemmForm::input_grad, s.M, s.N, s.K);
        for (int rep = 0; rep < 3; ++rep) {  // back to back on one stream: PDL overlaps them
          gpu::linear_forward(s.M, s.N, s.K, gX.p, gW.p, gb.p, true, gY.p, fs.get(), stream);
          gpu::linear_input_grad(s.M, s.N, s.K, gdY.p, gW.p, gH.p, gdX.p, is.get(), stream);
        }
        gpu::check(cudaStreamSynchronize(stream), "sync");
        EXPECT_LE(rel_error(gY.get(), fwd), bound(s.K)) << what;
        EXPECT_LE(rel_error(gdX.get(), dX), bound(s.N)) << what;
      }
  gpu::set_kernel_options(defaults);
  cudaStreamDestroy(stream);
}

// Other split-K targets (more or fewer, deeper slices) and one K tile per stage give the same
// products; the scratch is sized after the option is set, as the strategy does.
TEST(CudaKernels, SplitBlocksOptionMatchesCpu) {
  REQUIRE_GPU();
  const gpu::KernelOptions defaults = gpu::kernel_options();
  const Shape shapes[] = {{129, 257, 785}, {128, 26, 256}, {32, 1024, 1024}, {128, 256, 784}};
  for (int stage : {1, 4})
  for (int target : {0, 264, 33, 1000})
    for (const Shape& s : shapes) {
      gpu::KernelOptions o = defaults;
      o.split_blocks = target;
      o.k_stage = stage;
      gpu::set_kernel_options(o);
      const std::string what = name(s) + " split_blocks " + std::to_string(target) + " k_stage " + std::to_string(stage);
      const auto X = random_vector(std::size_t(s.M) * s.K, 61), W = random_vector(std::size_t(s.N) * s.K, 62),
                 b = random_vector(s.N, 63), dYh = random_vector(std::size_t(s.M) * s.N, 64);
      std::vector<float> fwd(std::size_t(s.M) * s.N), dX(std::size_t(s.M) * s.K);
      kernels::gemm_nt(s.M, s.N, s.K, 1.0f, X.data(), s.K, W.data(), s.K, 0.0f, fwd.data(), s.N);
      kernels::add_bias_rows(s.M, s.N, b.data(), fwd.data());
      kernels::gemm_nn(s.M, s.K, s.N, 1.0f, dYh.data(), s.N, W.data(), s.K, 0.0f, dX.data(), s.K);
      Dev<float> gX(X), gW(W), gb(b), gdY(dYh), gY(std::vector<float>(fwd.size(), NAN)),
          gdX(std::vector<float>(dX.size(), NAN));
      Scratch fs(gpu::GemmForm::forward, s.M, s.N, s.K), is(gpu::GemmForm::input_grad, s.M, s.N, s.K);
      for (int rep = 0; rep < 2; ++rep) {
        gpu::linear_forward(s.M, s.N, s.K, gX.p, gW.p, gb.p, false, gY.p, fs.get(), nullptr);
        gpu::linear_input_grad(s.M, s.N, s.K, gdY.p, gW.p, nullptr, gdX.p, is.get(), nullptr);
        EXPECT_LE(rel_error(gY.get(), fwd), bound(s.K)) << what;
        EXPECT_LE(rel_error(gdX.get(), dX), bound(s.N)) << what;
      }
    }
  gpu::set_kernel_options(defaults);
}

TEST(CudaKernels, SoftmaxWithInputGradMatchesCpu) {
  REQUIRE_GPU();
  const int shapes[][3] = {{1, 26, 256}, {7, 5, 33}, {128, 26, 256}, {129, 26, 1000}, {1500, 32, 300}, {9, 1, 257}};
  for (const auto& sh : shapes) {
    const int rows = sh[0], classes = sh[1], K = sh[2];
    const std::string what = std::to_string(rows) + "x" + std::to_string(classes) + "x" + std::to_string(K);
    const auto logits = random_vector(std::size_t(rows) * classes, 71, -8.0f, 8.0f);
    const auto W = random_vector(std::size_t(classes) * K, 72), H = random_vector(std::size_t(rows) * K, 73, 0.0f, 1.0f);
    std::vector<std::int32_t> labels(rows);
    std::mt19937 rng(74);
    for (auto& l : labels) l = std::int32_t(rng() % classes);
    std::vector<float> probs(logits.size()), grad(logits.size()), dX(std::size_t(rows) * K);
    const double loss = kernels::softmax_xent_forward(rows, classes, logits.data(), labels.data(), probs.data());
    const int correct = kernels::count_correct(rows, classes, probs.data(), labels.data());
    const float scale = 1.0f / rows;
    kernels::softmax_xent_backward(rows, classes, probs.data(), labels.data(), scale, grad.data());
    kernels::gemm_nn(rows, K, classes, 1.0f, grad.data(), classes, W.data(), K, 0.0f, dX.data(), K);
    kernels::sigmoid_backward(dX.size(), H.data(), dX.data(), dX.data());
    Dev<float> g_logits(logits), g_W(W), g_H(H), g_grad(std::vector<float>(grad.size(), NAN)),
        g_dX(std::vector<float>(dX.size(), NAN));
    Dev<std::int32_t> g_labels(labels);
    Dev<double> scratch(std::max<std::size_t>(1, gpu::softmax_xent_scratch(rows, classes)));
    Dev<double> g_loss(std::vector<double>{0.0});
    Dev<unsigned long long> g_correct(std::vector<unsigned long long>{0});
    for (int rep = 0; rep < 2; ++rep) {
      ASSERT_TRUE(gpu::softmax_xent_input_grad(rows, classes, g_logits.p, g_labels.p, gpu::RowIndex{}, scale, g_grad.p,
                                               g_loss.p, g_correct.p, false, K, g_W.p, g_H.p, g_dX.p, nullptr,
                                               scratch.p)) << what;
    }
    EXPECT_NEAR(g_loss.get()[0], 2 * loss, 2e-5 * std::max(1.0, loss)) << what;
    EXPECT_EQ(g_correct.get()[0], 2 * unsigned(correct)) << what;
    EXPECT_LE(rel_error(g_grad.get(), grad), 1e-6) << what;
    EXPECT_LE(rel_error(g_dX.get(), dX), bound(classes)) << what;
  }
  EXPECT_FALSE(gpu::softmax_xent_input_grad(3, 33, nullptr, nullptr, gpu::RowIndex{}, 1.0f, nullptr, nullptr, nullptr,
                                            false, 8, nullptr, nullptr, nullptr, nullptr, nullptr));
}

TEST(CudaKernels, SgdUpdateMatchesCpu) {
  REQUIRE_GPU();
  for (float momentum : {0.0f, 0.9f}) {
    const std::size_t n = 100007;
    auto p = random_vector(n, 51), v = random_vector(n, 52);
    const auto g = random_vector(n, 53);
    Dev<float> gp(p), gv(v), gg(g);
    kernels::sgd_update(n, 0.1f, momentum, 5e-4f, p.data(), g.data(), momentum != 0 ? v.data() : nullptr);
    gpu::sgd_update(n, 0.1f, momentum, 5e-4f, gp.p, gg.p, momentum != 0 ? gv.p : nullptr, nullptr);
    EXPECT_LE(rel_error(gp.get(), p), 1e-6);
  }
}

// The kernels composed into one training step give the CPU Model's gradients.
TEST(CudaKernels, OneStepGradientsMatchCpuModel) {
  REQUIRE_GPU();
  ModelSpec spec;
  spec.layer_sizes = {37, 19, 23, 5};
  const int rows = 13, L = spec.linear_count();
  std::vector<float> params(parameter_count(spec));
  initialize_parameters(spec, params);
  for (std::size_t i = 0; i < params.size(); ++i) params[i] += 0.01f * float(i % 7);  // non-zero biases
  const auto x = random_vector(std::size_t(rows) * 37, 61, 0.0f, 1.0f);
  std::vector<std::int32_t> y(rows);
  for (int r = 0; r < rows; ++r) y[r] = r % 5;

  Model model(spec, rows);
  std::copy(params.begin(), params.end(), model.parameters().begin());
  model.forward({x.data(), rows, 37}, y.data());
  model.zero_grad();
  model.backward(1.0f / rows);
  const std::vector<float> ref(model.gradients().begin(), model.gradients().end());

  Dev<float> g_params(params), g_grads(params.size());
  Dev<std::int32_t> g_y(y);
  std::vector<std::unique_ptr<Dev<float>>> acts, gout;
  acts.push_back(std::make_unique<Dev<float>>(x));
  for (int i = 0; i < L; ++i) {
    acts.push_back(std::make_unique<Dev<float>>(std::size_t(rows) * spec.layer_sizes[i + 1]));
    gout.push_back(std::make_unique<Dev<float>>(std::size_t(rows) * spec.layer_sizes[i + 1]));
  }
  Dev<double> loss(1);
  Dev<unsigned long long> correct(1);
  auto W = [&](int i) { return g_params.p + parameter_offset(spec, i); };
  auto G = [&](int i) { return g_grads.p + parameter_offset(spec, i); };
  const auto& n = spec.layer_sizes;
  for (int i = 0; i < L; ++i) {
    gpu::linear_forward(rows, n[i + 1], n[i], acts[i]->p, W(i), W(i) + n[i + 1] * n[i], i + 1 < L, acts[i + 1]->p, {},
                        nullptr);
  }
  gpu::softmax_xent(rows, n[L], acts[L]->p, g_y.p, {}, 1.0f / rows, nullptr, gout[L - 1]->p, loss.p, correct.p, false,
                    nullptr);
  for (int i = L - 1; i >= 0; --i) {
    if (i > 0) gpu::linear_input_grad(rows, n[i + 1], n[i], gout[i]->p, W(i), acts[i]->p, gout[i - 1]->p, {}, nullptr);
    gpu::linear_weight_grad(rows, n[i + 1], n[i], gout[i]->p, acts[i]->p, false, G(i), G(i) + n[i + 1] * n[i], {},
                            nullptr);
  }
  EXPECT_LE(rel_error(g_grads.get(), ref), 1e-5);
  EXPECT_NEAR(loss.get()[0], model.last_loss_sum(), 1e-5 * model.last_loss_sum());
  EXPECT_EQ(correct.get()[0], unsigned(model.last_correct()));
}

// ---------------------------------------------------------------------------------------------
// The strategy through the runner, against serial.

namespace {

bool have_data() { return fs::exists(data_dir() / "letters-train-images-idx3-ubyte.gz"); }

StrategyEntry entry(const std::string& name) {
  StrategyEntry e;
  e.name = e.label = name;
  e.table = std::make_shared<toml::table>();
  return e;
}

// A `cuda` entry with these strategy options.
StrategyEntry cuda_with(std::string label, toml::table options) {
  StrategyEntry e = entry("cuda");
  e.label = std::move(label);
  options.insert_or_assign("name", "cuda");
  e.table = std::make_shared<toml::table>(std::move(options));
  return e;
}

RunConfig small_config() {
  const fs::path d = data_dir();
  RunConfig config;
  config.file = "test_cuda";
  config.data.dir = d;
  config.data.train_images = d / "letters-train-images-idx3-ubyte.gz";
  config.data.train_labels = d / "letters-train-labels-idx1-ubyte.gz";
  config.data.test_images = d / "letters-test-images-idx3-ubyte.gz";
  config.data.test_labels = d / "letters-test-labels-idx1-ubyte.gz";
  config.data.options.limit = 6000;
  config.data.test_limit = 2000;
  config.model.layer_sizes = {784, 64, 26};
  config.train.epochs = 3;
  config.train.batch_size = 32;
  config.train.sgd.lr = 0.5f;
  config.eval_every = 0;
  config.strategies = {entry("serial"), entry("cuda")};
  return config;
}

class CudaTraining : public ::testing::Test {
 protected:
  void SetUp() override {
    if (!have_device()) GTEST_SKIP() << "no CUDA device (cudaGetDeviceCount found none)";
    if (!have_data()) GTEST_SKIP() << "dataset not found in " << data_dir() << " (set NNPAR_TEST_DATA)";
    if (!data_) data_ = std::make_unique<Datasets>(load_datasets(small_config().data));
  }
  // Trains serial and the cuda entry from the same start and checks parity.
  void expect_parity(const RunConfig& config, const StrategyEntry& cuda) {
    const auto initial = initial_parameters(config);
    const RunResult ref = run_strategy(config, config.strategies[0], plugins_, *data_, initial);
    const RunResult got = run_strategy(config, cuda, plugins_, *data_, initial);
    ASSERT_EQ(got.epochs.size(), ref.epochs.size());
    for (std::size_t e = 0; e < ref.epochs.size(); ++e) {
      EXPECT_EQ(got.epochs[e].samples, ref.epochs[e].samples);
      EXPECT_EQ(got.epochs[e].steps, ref.epochs[e].steps);
      EXPECT_NEAR(got.epochs[e].loss, ref.epochs[e].loss, 1e-3 * ref.epochs[e].loss) << "epoch " << e;
      EXPECT_NEAR(got.epochs[e].train_accuracy, ref.epochs[e].train_accuracy, 0.002) << "epoch " << e;
    }
    const WeightDiff d = compare_weights(got.final_parameters, ref.final_parameters, 1e-3, 1e-5);
    EXPECT_EQ(d.outside, 0u) << "max |dw| " << d.max_abs << ", max rel " << d.max_rel;
    EXPECT_LE(std::abs(got.final_test.accuracy - ref.final_test.accuracy), 0.001)
        << got.final_test.accuracy << " vs " << ref.final_test.accuracy;
    EXPECT_NE(got.final_parameters, initial);
    EXPECT_NE(got.device.find("NVIDIA"), std::string::npos) << got.device;
    std::printf("  %s: max|dw| %.2e, test acc %.2f%% vs %.2f%%, %.0f samples/s\n", cuda.label.c_str(), d.max_abs,
                100 * got.final_test.accuracy, 100 * ref.final_test.accuracy, got.samples_per_second);
  }
  // Runs `entry` on `config` (the fixture's data) and expects an error naming `words`.
  void expect_refused(const RunConfig& config, const StrategyEntry& entry, const std::string& words) {
    const auto initial = initial_parameters(config);
    try {
      run_strategy(config, entry, plugins_, *data_, initial);
      ADD_FAILURE() << "ran: " << words;
    } catch (const std::exception& ex) {
      EXPECT_NE(std::string(ex.what()).find(words), std::string::npos) << ex.what();
    }
  }
  struct AutoCase {
    std::vector<int> layers;
    int batch;
    bool resident;  // whether variant = "auto" must pick a resident kernel
  };
  // Trains serial and `automatic` (a variant = "auto" entry) on each case, 500 samples for one
  // epoch; checks auto's choice and hands both runs to `same_training`.
  template <class Check>
  void expect_auto_choices(const StrategyEntry& automatic, std::initializer_list<AutoCase> cases, Check same_training) {
    RunConfig config = small_config();
    config.data.options.limit = 500;
    config.train.epochs = 1;
    const Datasets data = load_datasets(config.data);
    for (const AutoCase& c : cases) {
      config.model.layer_sizes = c.layers;
      config.train.batch_size = c.batch;
      const auto initial = initial_parameters(config);
      const RunResult ref = run_strategy(config, config.strategies[0], plugins_, data, initial);
      const RunResult got = run_strategy(config, automatic, plugins_, data, initial);
      EXPECT_EQ(got.device.find("resident") != std::string::npos, c.resident) << got.device << ", batch " << c.batch;
      same_training(ref, got);
    }
  }
  static std::unique_ptr<Datasets> data_;
  PluginRegistry plugins_{{plugin_dir()}};
};
std::unique_ptr<Datasets> CudaTraining::data_;

StrategyEntry cuda_entry(bool graph, int graph_steps = 128) {
  return cuda_with("cuda", toml::table{{"graph", graph}, {"graph_steps", graph_steps}});
}

// The graph variant as it was before PDL, the GEMV kernels, the warp softmax and K stages.
StrategyEntry cuda_old_kernels_entry() {
  return cuda_with("cuda (no pdl/gemv/warp softmax/k stages)",
                   toml::table{{"pdl", "off"}, {"gemv_rows", 0}, {"warp_softmax", false}, {"k_stage", 1},
                               {"stage_input", false}, {"fuse_logits", "off"}});
}

// The persistent variant; blocks 0 = one per SM; plan "deep" (the default) or "classic".
StrategyEntry persistent_entry(int blocks = 0, const char* plan = "deep", bool prefetch = true) {
  return cuda_with(std::string("cuda persistent ") + plan + (prefetch ? "" : " (no prefetch)"),
                   toml::table{{"variant", "persistent"}, {"persistent_blocks", blocks}, {"persistent_plan", plan},
                               {"persistent_prefetch", prefetch}});
}

}  // namespace

// 6000 / 32: 187 full steps (one graph of 128, one of 59) and a partial batch of 16.
TEST_F(CudaTraining, GraphMatchesSerial) { expect_parity(small_config(), cuda_entry(true)); }

TEST_F(CudaTraining, PlainLaunchesMatchSerial) {
  RunConfig config = small_config();
  config.train.epochs = 2;
  expect_parity(config, cuda_entry(false));
}

TEST_F(CudaTraining, DeepModelWithMomentumAndDropLastMatchesSerial) {
  RunConfig config = small_config();
  config.model.layer_sizes = {784, 256, 256, 26};
  config.train.batch_size = 128;
  config.train.drop_last = true;
  config.train.sgd = {0.2f, 0.9f, 1e-4f};
  expect_parity(config, cuda_entry(true, 7));
}

TEST_F(CudaTraining, BatchOneMatchesSerial) {
  RunConfig config = small_config();
  config.data.options.limit = 500;
  config.train.epochs = 1;
  config.train.batch_size = 1;
  config.train.sgd.lr = 0.05f;
  expect_parity(config, cuda_entry(true));
}

TEST_F(CudaTraining, BatchOneWithoutPdlGemvOrWarpSoftmaxMatchesSerial) {
  RunConfig config = small_config();
  config.data.options.limit = 500;
  config.train.epochs = 1;
  config.train.batch_size = 1;
  config.train.sgd.lr = 0.05f;
  expect_parity(config, cuda_old_kernels_entry());
}

// PDL forced on at batch 128 (auto leaves it off there) with another split-K target, momentum.
TEST_F(CudaTraining, PdlOnBatch128WithOtherSplitMatchesSerial) {
  RunConfig config = small_config();
  config.model.layer_sizes = {784, 256, 256, 26};
  config.train.batch_size = 128;
  config.train.sgd = {0.2f, 0.9f, 1e-4f};
  expect_parity(config, cuda_with("cuda (pdl on, split_blocks 264)",
                                  toml::table{{"pdl", "on"}, {"split_blocks", 264}, {"graph_steps", 16}}));
}

// fuse_head at batch 128 (multi-block, momentum), batch 32 with a partial batch of 16 (6000 =
// 187 x 32 + 16) and batch 1 (one block).
StrategyEntry fused_head_entry() { return cuda_with("cuda (fuse_head)", toml::table{{"fuse_head", true}}); }
TEST_F(CudaTraining, FusedHeadMatchesSerial) {
  RunConfig config = small_config();
  config.model.layer_sizes = {784, 256, 256, 26};
  config.train.epochs = 2;
  expect_parity(config, fused_head_entry());
  config.train.batch_size = 128;
  config.train.sgd = {0.2f, 0.9f, 1e-4f};
  expect_parity(config, fused_head_entry());
  config.model.layer_sizes = {784, 300, 26};
  config.train.epochs = 1;
  config.train.batch_size = 1;
  config.train.sgd = {0.05f, 0.0f, 0.0f};
  expect_parity(config, fused_head_entry());
}

// Batch 7 (GEMV kernels) with a partial last batch of 1 (6000 = 857 x 7 + 1), odd widths,
// momentum, plain launches with PDL.
TEST_F(CudaTraining, SmallBatchPlainLaunchesMatchSerial) {
  RunConfig config = small_config();
  config.model.layer_sizes = {784, 100, 37, 26};
  config.train.epochs = 1;
  config.train.batch_size = 7;
  config.train.sgd = {0.05f, 0.9f, 1e-4f};
  expect_parity(config, cuda_entry(false));
}

// ---------------------------------------------------------------------------------------------
// The persistent variant (one cooperative kernel per epoch), against serial.

// 6000 / 32: 187 full steps in one launch, then the partial batch of 16 in a second.
TEST_F(CudaTraining, PersistentMatchesSerial) { expect_parity(small_config(), persistent_entry()); }

TEST_F(CudaTraining, PersistentDeepModelWithMomentumAndDropLastMatchesSerial) {
  RunConfig config = small_config();
  config.model.layer_sizes = {784, 256, 256, 26};
  config.train.batch_size = 128;
  config.train.drop_last = true;
  config.train.sgd = {0.2f, 0.9f, 1e-4f};
  expect_parity(config, persistent_entry());
}

TEST_F(CudaTraining, PersistentBatchOneMatchesSerial) {
  RunConfig config = small_config();
  config.data.options.limit = 500;
  config.train.epochs = 1;
  config.train.batch_size = 1;
  config.train.sgd.lr = 0.05f;
  expect_parity(config, persistent_entry());
}

// Odd widths (partial tiles everywhere), four Linear layers, a grid smaller than the SM count
// (tiles wrap round the blocks), and a batch of 1000 with a partial last batch of 900.
TEST_F(CudaTraining, PersistentOddShapesMatchSerial) {
  RunConfig config = small_config();
  config.data.options.limit = 5900;
  config.model.layer_sizes = {784, 100, 37, 70, 26};
  config.train.epochs = 2;
  config.train.batch_size = 1000;
  config.train.sgd = {0.5f, 0.5f, 1e-3f};
  expect_parity(config, persistent_entry(37));
}

TEST_F(CudaTraining, PersistentWideBatch1024MatchesSerial) {
  RunConfig config = small_config();
  config.model.layer_sizes = {784, 1024, 1024, 26};
  config.train.epochs = 1;
  config.train.batch_size = 1024;
  expect_parity(config, persistent_entry());
}

// The deep plan's shapes (kernels/cuda/persistent_mlp.cu) at the batches they are picked for:
// 1 (one-row tiles, K <= 1024 in one slab), 7 (4-row tiles) and 128 (32x8, 32x16 and 64x32
// tiles, one row of logits per head tile), each with odd widths somewhere, and the classic
// plan kept working.
TEST_F(CudaTraining, PersistentClassicPlanWithoutPrefetchMatchesSerial) {
  expect_parity(small_config(), persistent_entry(0, "classic", false));
}

TEST_F(CudaTraining, PersistentDeepBatch7OddWidthsMatchesSerial) {
  RunConfig config = small_config();
  config.model.layer_sizes = {784, 100, 37, 26};
  config.train.epochs = 1;
  config.train.batch_size = 7;  // 6000 = 857 x 7 + 1: a last launch of one row
  config.train.sgd = {0.05f, 0.9f, 1e-4f};
  expect_parity(config, persistent_entry());
}

TEST_F(CudaTraining, PersistentDeepBatch128MatchesSerial) {
  RunConfig config = small_config();
  config.model.layer_sizes = {784, 256, 256, 26};
  config.train.epochs = 2;
  config.train.batch_size = 128;  // 6000 = 46 x 128 + 112
  config.train.sgd = {0.2f, 0.9f, 1e-4f};
  expect_parity(config, persistent_entry());
  config.train.epochs = 1;
  expect_parity(config, persistent_entry(0, "deep", false));
  config.model.layer_sizes = {784, 300, 129, 26};
  expect_parity(config, persistent_entry(100));
}

TEST_F(CudaTraining, PersistentDeepOneAndTwoLayersMatchSerial) {
  RunConfig config = small_config();
  config.train.epochs = 1;
  config.train.batch_size = 128;
  config.model.layer_sizes = {784, 26};
  expect_parity(config, persistent_entry());
  config.model.layer_sizes = {784, 200, 26};
  config.train.batch_size = 1;
  config.data.options.limit = 300;
  config.train.sgd.lr = 0.05f;
  expect_parity(config, persistent_entry());
}

TEST_F(CudaTraining, PersistentDeepWideBatchOneMatchesSerial) {
  RunConfig config = small_config();
  config.model.layer_sizes = {784, 1024, 1024, 26};
  config.data.options.limit = 300;
  config.train.epochs = 1;
  config.train.batch_size = 1;
  config.train.sgd.lr = 0.05f;
  expect_parity(config, persistent_entry());
}

// ---------------------------------------------------------------------------------------------
// stage_input: the epoch's input staged once as floats in its order, read by forward 0 and the
// last weight gradient through the step counter. Same floats, same plans, so the same bits.

TEST(CudaKernels, StagedInputProductsEqualGatheredOnes) {
  REQUIRE_GPU();
  Dataset data;
  data.count = 300;
  data.pixels.resize(data.count * 784);
  data.labels.resize(data.count);
  std::mt19937 rng(15);
  for (auto& p : data.pixels) p = std::uint8_t(rng() & 0xFF);
  const auto order = epoch_order(data.count, 17, 0, true);
  std::vector<float> staged_ref(data.count * 784);
  std::vector<std::int32_t> labels_ref(data.count);
  gather_batch(data, std::span(order), staged_ref.data(), labels_ref.data());

  Dev<std::uint8_t> pixels(data.pixels);
  Dev<std::uint32_t> dorder(order);
  Dev<float> staged(staged_ref.size());
  gpu::stage_epoch_input(data.count, 784, pixels.p, data.pixel_scale, dorder.p, staged.p, nullptr);
  ASSERT_EQ(staged.get(), staged_ref) << "the staged rows are the gathered floats, in the epoch's order";

  // 129: split-K tiles; 7 and 1: GEMV kernels. Step 1 of the epoch; N odd.
  for (const int batch : {129, 7, 1}) {
    for (const int N : {257, 37}) {
      const int step = 1;
      const auto W = random_vector(std::size_t(N) * 784, 18, -0.1f, 0.1f), b = random_vector(N, 19);
      Dev<int> dstep(std::vector<int>{step});
      Dev<float> dW(W), db(b), y_gather(std::size_t(batch) * N), y_staged(std::size_t(batch) * N),
          x_copy(std::size_t(batch) * 784);
      Scratch scratch(gpu::GemmForm::forward, batch, N, 784);
      gpu::linear_forward_gather(batch, N, 784, pixels.p, data.pixel_scale, gpu::RowIndex{dorder.p, dstep.p, batch},
                                 x_copy.p, dW.p, db.p, true, y_gather.p, scratch.get(), nullptr);
      gpu::linear_forward_staged(batch, N, 784, gpu::StagedRows{staged.p, dstep.p, batch, 0}, dW.p, db.p, true,
                                 y_staged.p, scratch.get(), nullptr);
      const auto yg = y_gather.get();
      EXPECT_EQ(y_staged.get(), yg) << "forward, batch " << batch << " N " << N;
      EXPECT_NE(yg, std::vector<float>(yg.size(), 0.0f));

      // The weight gradient (+ momentum SGD) after the counter moved on: step_delta -1.
      const auto dYh = random_vector(std::size_t(batch) * N, 20);
      Dev<float> dY(dYh), dW1(W.size()), db1(b), dW2(W.size()), db2(b), p1(W), pb1(b), p2(W), pb2(b),
          v1(W.size()), vb1(b.size()), v2(W.size()), vb2(b.size());
      Dev<int> next(std::vector<int>{step + 1});
      const gpu::FusedSgd s1{0.1f, 0.9f, 1e-4f, p1.p, pb1.p, v1.p, vb1.p}, s2{0.1f, 0.9f, 1e-4f, p2.p, pb2.p, v2.p, vb2.p};
      gpu::linear_weight_grad(batch, N, 784, dY.p, x_copy.p, false, dW1.p, db1.p, s1, nullptr);
      gpu::linear_weight_grad_staged(batch, N, 784, dY.p, gpu::StagedRows{staged.p, next.p, batch, -1}, false, dW2.p,
                                     db2.p, s2, nullptr);
      EXPECT_EQ(dW2.get(), dW1.get()) << "weight grad, batch " << batch << " N " << N;
      EXPECT_EQ(db2.get(), db1.get());
      EXPECT_EQ(p2.get(), p1.get()) << "SGD-updated weights";
      EXPECT_NE(p2.get(), W);
    }
  }
}

namespace {
// stage_input on or off with fuse_logits off: the gathering and staging kernels alone.
StrategyEntry staged_entry(bool graph = true, int graph_steps = 128, bool stage = true) {
  return cuda_with(std::string("cuda stage_input=") + (stage ? "true" : "false") + " fuse_logits=off" +
                       (graph ? "" : " (plain launches)"),
                   toml::table{{"graph", graph}, {"graph_steps", graph_steps}, {"stage_input", stage},
                               {"fuse_logits", "off"}});
}
}  // namespace

// Batch 128 with a partial batch of 112 (6000 = 46 x 128 + 112), momentum, short graphs; the
// result must be bit-identical to the gathering kernels', not only within serial's tolerance.
TEST_F(CudaTraining, StageInputBatch128MatchesSerialAndGatherBitForBit) {
  RunConfig config = small_config();
  config.model.layer_sizes = {784, 256, 256, 26};
  config.train.epochs = 2;
  config.train.batch_size = 128;
  config.train.sgd = {0.2f, 0.9f, 1e-4f};
  expect_parity(config, staged_entry(true, 7));
  const auto initial = initial_parameters(config);
  expect_parity(config, staged_entry(true, 7, false));  // the round-3 default path, still reachable
  const RunResult gathered = run_strategy(config, staged_entry(true, 7, false), plugins_, *data_, initial);
  const RunResult staged = run_strategy(config, staged_entry(true, 7), plugins_, *data_, initial);
  EXPECT_EQ(staged.final_parameters, gathered.final_parameters);
  ASSERT_EQ(staged.epochs.size(), gathered.epochs.size());
  for (std::size_t e = 0; e < staged.epochs.size(); ++e) EXPECT_EQ(staged.epochs[e].loss, gathered.epochs[e].loss);
}

// Batch 7 (GEMV forward) with a last batch of 1, odd widths, plain launches; batch 1 in graphs;
// one Linear layer (forward 0 is the logits, its weight gradient the only one).
TEST_F(CudaTraining, StageInputSmallBatchesAndOneLayerMatchSerial) {
  RunConfig config = small_config();
  config.model.layer_sizes = {784, 100, 37, 26};
  config.train.epochs = 1;
  config.train.batch_size = 7;
  config.train.sgd = {0.05f, 0.9f, 1e-4f};
  expect_parity(config, staged_entry(false));
  config.data.options.limit = 500;
  config.train.batch_size = 1;
  config.train.sgd = {0.05f, 0.0f, 0.0f};
  expect_parity(config, staged_entry(true));
  config.data.options.limit = 6000;
  config.model.layer_sizes = {784, 26};
  config.train.batch_size = 128;
  expect_parity(config, staged_entry(true));
}

// ---------------------------------------------------------------------------------------------
// fuse_logits: the last Linear's forward inside the softmax kernel.

TEST(CudaKernels, LogitsWithSoftmaxMatchCpu) {
  REQUIRE_GPU();
  const int shapes[][3] = {{1, 26, 256}, {7, 5, 33}, {128, 26, 256}, {129, 26, 1000}, {1500, 32, 300}, {9, 1, 257},
                           {3, 26, 1}};
  for (const auto& sh : shapes) {
    const int rows = sh[0], classes = sh[1], K = sh[2];
    const std::string what = std::to_string(rows) + "x" + std::to_string(classes) + "x" + std::to_string(K);
    const auto H = random_vector(std::size_t(rows) * K, 81, 0.0f, 1.0f), W = random_vector(std::size_t(classes) * K, 82),
               b = random_vector(classes, 83);
    std::vector<std::int32_t> labels(rows);
    std::mt19937 rng(84);
    for (auto& l : labels) l = std::int32_t(rng() % classes);
    std::vector<float> logits(std::size_t(rows) * classes);
    kernels::gemm_nt(rows, classes, K, 1.0f, H.data(), K, W.data(), K, 0.0f, logits.data(), classes);
    kernels::add_bias_rows(rows, classes, b.data(), logits.data());

    Dev<float> g_H(H), g_W(W), g_b(b), g_logits(std::vector<float>(logits.size(), NAN)),
        g_grad(std::vector<float>(logits.size(), NAN));
    Dev<std::int32_t> g_labels(labels);
    Dev<double> scratch(std::max<std::size_t>(1, gpu::logits_softmax_xent_scratch(rows, classes)));
    Dev<double> g_loss(std::vector<double>{0.0});
    Dev<unsigned long long> g_correct(std::vector<unsigned long long>{0});
    Dev<int> step(std::vector<int>{0});
    const float scale = 1.0f / rows;
    Dev<float> g_dX(std::vector<float>(std::size_t(rows) * K, NAN));
    for (int rep = 0; rep < 2; ++rep) {  // twice: the ticket must reset itself; the counter advances
      ASSERT_TRUE(gpu::logits_softmax_xent(rows, classes, K, g_H.p, g_W.p, g_b.p, g_logits.p, g_labels.p,
                                           gpu::RowIndex{nullptr, step.p, rows}, scale, g_grad.p, g_loss.p,
                                           g_correct.p, true, nullptr, scratch.p, rep == 1 ? g_dX.p : nullptr,
                                           true)) << what;
    }
    const auto got_logits = g_logits.get();
    EXPECT_LE(rel_error(got_logits, logits), bound(K)) << what;
    // The softmax half exactly as the CPU computes it from the logits the kernel produced.
    std::vector<float> probs(logits.size()), grad(logits.size());
    const double loss = kernels::softmax_xent_forward(rows, classes, got_logits.data(), labels.data(), probs.data());
    const int correct = kernels::count_correct(rows, classes, probs.data(), labels.data());
    kernels::softmax_xent_backward(rows, classes, probs.data(), labels.data(), scale, grad.data());
    EXPECT_NEAR(g_loss.get()[0], 2 * loss, 2e-5 * std::max(1.0, loss)) << what;
    EXPECT_EQ(g_correct.get()[0], 2 * unsigned(correct)) << what;
    EXPECT_EQ(step.get()[0], 2) << what;
    EXPECT_LE(rel_error(g_grad.get(), grad), 1e-6) << what;
    // The input gradient from the kernel's own dlogits, as the CPU computes it.
    const auto got_grad = g_grad.get();
    std::vector<float> dX(std::size_t(rows) * K);
    kernels::gemm_nn(rows, K, classes, 1.0f, got_grad.data(), classes, W.data(), K, 0.0f, dX.data(), K);
    kernels::sigmoid_backward(dX.size(), H.data(), dX.data(), dX.data());
    EXPECT_LE(rel_error(g_dX.get(), dX), bound(classes)) << what << " input grad";
  }
  EXPECT_FALSE(gpu::logits_softmax_xent(3, 33, 8, nullptr, nullptr, nullptr, nullptr, nullptr, gpu::RowIndex{}, 1.0f,
                                        nullptr, nullptr, nullptr, false, nullptr, nullptr));
  EXPECT_FALSE(gpu::logits_softmax_xent(100, 26, 8, nullptr, nullptr, nullptr, nullptr, nullptr, gpu::RowIndex{}, 1.0f,
                                        nullptr, nullptr, nullptr, false, nullptr, nullptr))
      << "several blocks need scratch";
}

namespace {
StrategyEntry fused_logits_entry(const char* mode, bool stage_input, bool graph = true) {
  return cuda_with(
      std::string("cuda fuse_logits=") + mode + (stage_input ? " + stage_input" : "") + (graph ? "" : " (plain)"),
      toml::table{{"graph", graph}, {"graph_steps", 16}, {"fuse_logits", mode}, {"stage_input", stage_input}});
}
}  // namespace

// Batch 128 (128 blocks, a row each) with a partial batch of 112 and momentum, both modes, with
// and without stage_input; batch 7 with a last batch of 1 and odd widths in plain launches;
// batch 1 at width 1024 with one hidden layer (the input gradient of layer 1 feeds layer 0's
// weight gradient directly); batch 300 > 256 blocks (rows grid-strided) at the end.
TEST_F(CudaTraining, FuseLogitsMatchesSerial) {
  RunConfig config = small_config();
  config.model.layer_sizes = {784, 256, 256, 26};
  config.train.epochs = 2;
  config.train.batch_size = 128;
  config.train.sgd = {0.2f, 0.9f, 1e-4f};
  expect_parity(config, fused_logits_entry("head", true));
  config.train.epochs = 1;
  expect_parity(config, fused_logits_entry("softmax", false));
  config.model.layer_sizes = {784, 100, 37, 26};
  config.train.batch_size = 7;
  config.train.sgd = {0.05f, 0.9f, 1e-4f};
  expect_parity(config, fused_logits_entry("head", true, false));
  expect_parity(config, fused_logits_entry("softmax", false, false));
  config.model.layer_sizes = {784, 300, 26};
  config.train.batch_size = 300;
  expect_parity(config, fused_logits_entry("head", false));
  config.model.layer_sizes = {784, 1024, 26};
  config.data.options.limit = 300;
  config.train.batch_size = 1;
  config.train.sgd = {0.05f, 0.0f, 0.0f};
  expect_parity(config, fused_logits_entry("head", true));
}

// ---------------------------------------------------------------------------------------------
// precision = "tf32" / "bf16": the tiled products on tensor cores.

namespace {
// Sets KernelOptions::precision for the scope, restoring the previous options after.
struct MmaScope {
  gpu::KernelOptions saved = gpu::kernel_options();
  explicit MmaScope(gpu::MmaPrecision precision) {
    gpu::KernelOptions k = saved;
    k.precision = precision;
    gpu::set_kernel_options(k);
  }
  ~MmaScope() { gpu::set_kernel_options(saved); }
};

// TF32 keeps 10 mantissa bits: each operand is off by up to 2^-11 relative, so a product's
// norm-wise error is ~1e-3 whatever K (the fp32 sums add ~1e-5 sqrt(K), bound()).
constexpr double kTf32Bound = 3e-3;
// What TF32 rounding at least costs on these random operands: an fp32 product stays ~1e-6
// below it (bound(785) = 2.8e-4 is the fp32 worst case), so an error above this floor says
// the tensor cores ran.
constexpr double kTf32Floor = 5e-5;
// BF16 keeps 7: 2^-9 relative per operand, four times TF32's, so four times both numbers.
constexpr double kBf16Bound = 4 * kTf32Bound, kBf16Floor = 4 * kTf32Floor;

// Forward, weight gradient (with the bias sums, which stay fp32) and input gradient against the
// CPU within the precision's rounding, on shapes that take the tiled kernels (split-K, 32x32
// and 64x64 tiles, partial tiles), repeated bit for bit; and the fp32 path is restored after.
void expect_mma_products_match_cpu(gpu::MmaPrecision precision, double error_bound, double error_floor) {
  const Shape shapes[] = {{129, 257, 785}, {128, 26, 256}, {1024, 256, 256}, {9, 13, 5}, {1024, 1024, 784}};
  for (const Shape& s : shapes) {
    const auto X = random_vector(std::size_t(s.M) * s.K, 41), W = random_vector(std::size_t(s.N) * s.K, 42),
               b = random_vector(s.N, 43), dYh = random_vector(std::size_t(s.M) * s.N, 44),
               H = random_vector(std::size_t(s.M) * s.K, 45, 0.0f, 1.0f);
    std::vector<float> y(std::size_t(s.M) * s.N), dW(W.size()), db(s.N), dX(X.size());
    kernels::gemm_nt(s.M, s.N, s.K, 1.0f, X.data(), s.K, W.data(), s.K, 0.0f, y.data(), s.N);
    kernels::add_bias_rows(s.M, s.N, b.data(), y.data());
    kernels::gemm_tn(s.N, s.K, s.M, 1.0f, dYh.data(), s.N, X.data(), s.K, 0.0f, dW.data(), s.K);
    kernels::column_sums(s.M, s.N, 1.0f, dYh.data(), 0.0f, db.data());
    kernels::gemm_nn(s.M, s.K, s.N, 1.0f, dYh.data(), s.N, W.data(), s.K, 0.0f, dX.data(), s.K);
    kernels::sigmoid_backward(dX.size(), H.data(), dX.data(), dX.data());

    Dev<float> g_X(X), g_W(W), g_b(b), g_dY(dYh), g_H(H), g_y(y.size()), g_dW(dW.size()), g_db(db.size()),
        g_dX(dX.size());
    Scratch fwd(gpu::GemmForm::forward, s.M, s.N, s.K), back(gpu::GemmForm::input_grad, s.M, s.N, s.K);
    std::vector<float> first_y, first_dW, first_dX;
    for (int rep = 0; rep < 2; ++rep) {
      MmaScope mma(precision);
      gpu::linear_forward(s.M, s.N, s.K, g_X.p, g_W.p, g_b.p, false, g_y.p, fwd.get(), nullptr);
      gpu::linear_weight_grad(s.M, s.N, s.K, g_dY.p, g_X.p, false, g_dW.p, g_db.p, gpu::FusedSgd{}, nullptr);
      gpu::linear_input_grad(s.M, s.N, s.K, g_dY.p, g_W.p, g_H.p, g_dX.p, back.get(), nullptr);
      const auto got_y = g_y.get(), got_dW = g_dW.get(), got_dX = g_dX.get();
      EXPECT_LE(rel_error(got_y, y), error_bound) << name(s) << " forward";
      EXPECT_LE(rel_error(got_dW, dW), error_bound) << name(s) << " weight grad";
      EXPECT_LE(rel_error(g_db.get(), db), bound(s.M)) << name(s) << " bias grad (fp32 sums)";
      EXPECT_LE(rel_error(got_dX, dX), error_bound) << name(s) << " input grad";
      if (s.K >= 256) {
        EXPECT_GE(rel_error(got_y, y), error_floor) << name(s) << ": the forward ran in fp32";
      }
      if (s.M >= 128) {
        EXPECT_GE(rel_error(got_dW, dW), error_floor) << name(s) << ": the weight grad ran in fp32";
      }
      if (rep == 0) {
        first_y = got_y, first_dW = got_dW, first_dX = got_dX;
      } else {
        EXPECT_EQ(got_y, first_y) << name(s) << ": tensor-core products repeat bit for bit";
        EXPECT_EQ(got_dW, first_dW) << name(s);
        EXPECT_EQ(got_dX, first_dX) << name(s);
      }
    }
    EXPECT_TRUE(gpu::kernel_options().precision == gpu::MmaPrecision::fp32);
    gpu::linear_forward(s.M, s.N, s.K, g_X.p, g_W.p, g_b.p, false, g_y.p, fwd.get(), nullptr);
    EXPECT_LE(rel_error(g_y.get(), y), bound(s.K)) << name(s) << " fp32 again";
  }
}
}  // namespace

TEST(CudaKernels, Tf32ProductsMatchCpuWithinTf32Rounding) {
  REQUIRE_GPU();
  expect_mma_products_match_cpu(gpu::MmaPrecision::tf32, kTf32Bound, kTf32Floor);
}

TEST(CudaKernels, Bf16ProductsMatchCpuWithinBf16Rounding) {
  REQUIRE_GPU();
  expect_mma_products_match_cpu(gpu::MmaPrecision::bf16, kBf16Bound, kBf16Floor);
}

namespace {
StrategyEntry mma_entry(const char* precision, const char* variant = "graph", bool graph = true) {
  return cuda_with(std::string("cuda ") + precision + " " + variant + (graph ? "" : " (plain)"),
                   toml::table{{"precision", precision}, {"variant", variant}, {"graph", graph}});
}
}  // namespace

// The bar for TF32 and BF16: test accuracy within 0.5 pp of fp32 serial, from the same
// start and data order. The run is the approximate class, and its weights are close to
// serial's but not equal (equal would mean the tensor cores never ran).
class CudaMmaTraining : public CudaTraining, public testing::WithParamInterface<const char*> {};

TEST_P(CudaMmaTraining, ReachesSerialTestAccuracyWithinHalfAPoint) {
  const char* precision = GetParam();
  const bool tf32 = std::string(precision) == "tf32";
  const std::string device_tag = tf32 ? "TF32" : "BF16";
  // How far the weights may drift from serial's in these 3 epochs: measured 9.3e-3 (TF32) and
  // 7.2e-2 (BF16) on an H200; BF16 rounds operands 4x as coarsely as TF32, and the bounds keep
  // that ratio at about 5x TF32's measured drift.
  const double max_weight_drift = tf32 ? 0.05 : 0.2;
  RunConfig config = small_config();
  config.data.options.limit = 20000;
  config.data.test_limit = 5000;
  config.model.layer_sizes = {784, 256, 256, 26};
  config.train.epochs = 3;
  config.train.batch_size = 128;
  config.train.sgd = {0.5f, 0.9f, 0.0f};  // 56% on the workstation's serial: a model that has learnt
  const Datasets data = load_datasets(config.data);  // more than the fixture's 6,000 samples
  const auto initial = initial_parameters(config);
  const RunResult ref = run_strategy(config, config.strategies[0], plugins_, data, initial);
  std::vector<StrategyEntry> entries = {mma_entry(precision), mma_entry(precision, "graph", false)};
  if (!tf32) entries.push_back(mma_entry(precision, "resident"));  // the resident kernel on tensor cores
  for (const StrategyEntry& e : entries) {
    const RunResult got = run_strategy(config, e, plugins_, data, initial);
    EXPECT_EQ(got.parity, ParityClass::approximate) << e.label;
    EXPECT_NE(got.device.find(device_tag), std::string::npos) << got.device;
    const double diff_pp = 100.0 * (got.final_test.accuracy - ref.final_test.accuracy);
    EXPECT_LE(std::abs(diff_pp), 0.5) << e.label << ": " << 100 * got.final_test.accuracy << "% vs serial "
                                      << 100 * ref.final_test.accuracy << "%";
    EXPECT_GT(ref.final_test.accuracy, 0.4) << "the model must have learnt something for the comparison to mean much";
    EXPECT_NEAR(got.epochs.back().loss, ref.epochs.back().loss, 0.02 * ref.epochs.back().loss) << e.label;
    const WeightDiff d = compare_weights(got.final_parameters, ref.final_parameters, 0.0, 0.0);
    EXPECT_GT(d.outside, 0u) << e.label << ": bit-identical to fp32 serial, so the tensor cores never ran";
    EXPECT_LT(d.max_abs, max_weight_drift) << e.label;
    std::printf("  %s: test acc %.2f%% vs serial %.2f%% (%+.3f pp), max|dw| %.2e, %.0f samples/s\n", e.label.c_str(),
                100 * got.final_test.accuracy, 100 * ref.final_test.accuracy, diff_pp, d.max_abs,
                got.samples_per_second);
  }
}

TEST_P(CudaMmaTraining, WithThePersistentVariantIsRefusedByName) {
  const char* precision = GetParam();
  RunConfig config = small_config();
  const auto initial = initial_parameters(config);
  try {
    run_strategy(config, mma_entry(precision, "persistent"), plugins_, *data_, initial);
    FAIL() << precision << " with the persistent variant ran";
  } catch (const std::exception& e) {
    EXPECT_NE(std::string(e.what()).find("persistent"), std::string::npos) << e.what();
    EXPECT_NE(std::string(e.what()).find(precision), std::string::npos) << e.what();
  }
}

INSTANTIATE_TEST_SUITE_P(Precisions, CudaMmaTraining, testing::Values("tf32", "bf16"),
                         [](const testing::TestParamInfo<const char*>& info) { return std::string(info.param); });

// ---------------------------------------------------------------------------------------------
// variant = "resident": the model in one thread-block cluster's shared memory.

namespace {
StrategyEntry resident_entry(int cluster = 0, const char* precision = "fp32") {
  return cuda_with("cuda resident" + (cluster != 0 ? " cluster " + std::to_string(cluster) : std::string()),
                   toml::table{{"variant", "resident"}, {"resident_cluster", cluster}, {"precision", precision}});
}
}  // namespace

// The product's shape at batch 1 (the variant's purpose), on clusters of 16 and 8 blocks.
TEST_F(CudaTraining, ResidentBatchOneMatchesSerial) {
  RunConfig config = small_config();
  config.model.layer_sizes = {784, 256, 256, 26};
  config.train.epochs = 2;
  config.train.batch_size = 1;
  config.train.sgd.lr = 0.05f;
  expect_parity(config, resident_entry());
  config.train.epochs = 1;
  expect_parity(config, resident_entry(8));
}

// Odd widths (slices of unequal size, a hidden layer narrower than the cluster), momentum and
// weight decay (velocities in global memory), a batch of 13 with a last batch of 7.
TEST_F(CudaTraining, ResidentOddWidthsMomentumAndTailMatchSerial) {
  RunConfig config = small_config();
  config.model.layer_sizes = {784, 100, 13, 26};
  config.train.epochs = 2;
  config.train.batch_size = 13;
  config.train.sgd = {0.05f, 0.9f, 1e-4f};
  expect_parity(config, resident_entry());
  expect_parity(config, resident_entry(8));
}

// One Linear layer (no input gradient, the extra barrier per step) and four (three hidden).
TEST_F(CudaTraining, ResidentOneAndFourLayersMatchSerial) {
  RunConfig config = small_config();
  config.model.layer_sizes = {784, 26};
  config.train.batch_size = 16;
  expect_parity(config, resident_entry());
  config.model.layer_sizes = {784, 64, 48, 32, 26};
  config.train.batch_size = 2;
  config.train.epochs = 1;
  expect_parity(config, resident_entry());
}

TEST_F(CudaTraining, ResidentRefusesWhatDoesNotFitByName) {
  RunConfig config = small_config();
  config.train.batch_size = 17;
  expect_refused(config, resident_entry(), "batch_size 17");
  config.train.batch_size = 1;
  config.model.layer_sizes = {784, 1024, 1024, 26};
  expect_refused(config, resident_entry(), "shared memory");
  config.model.layer_sizes = {784, 64, 64, 64, 64, 26};
  expect_refused(config, resident_entry(), "5 Linear layers");
  config.model.layer_sizes = {784, 64, 26};
  expect_refused(config, resident_entry(0, "tf32"), "fp32 only");
}

// The resident kernel on BF16 tensor cores away from the accuracy test's shape: hidden width
// 128 (a cluster of 8), no momentum but weight decay, batch 72 with a last batch of 56 (row
// tiles that are partly padding, a step with fewer rows), and batch 16 (one row tile). Its
// weights must stay near serial's (BF16 operands: the approximate class) and repeat bit for bit.
TEST_F(CudaTraining, ResidentBf16OddBatchesAndClusterOf8StayNearSerialAndRepeat) {
  RunConfig config = small_config();
  config.data.options.limit = 2000;  // 27 steps of 72 and one of 56
  config.model.layer_sizes = {784, 128, 128, 26};
  config.train.epochs = 2;
  config.train.sgd = {0.2f, 0.0f, 1e-3f};
  const Datasets data = load_datasets(config.data);
  for (const int batch : {72, 16}) {
    config.train.batch_size = batch;
    const auto initial = initial_parameters(config);
    const RunResult ref = run_strategy(config, config.strategies[0], plugins_, data, initial);
    const StrategyEntry e = mma_entry("bf16", "resident");
    const RunResult got = run_strategy(config, e, plugins_, data, initial);
    const RunResult again = run_strategy(config, e, plugins_, data, initial);
    EXPECT_NE(got.device.find("resident, cluster of 8"), std::string::npos) << got.device;
    EXPECT_EQ(got.parity, ParityClass::approximate);
    ASSERT_EQ(got.epochs.size(), ref.epochs.size());
    for (std::size_t ep = 0; ep < ref.epochs.size(); ++ep) {
      EXPECT_EQ(got.epochs[ep].samples, ref.epochs[ep].samples);
      EXPECT_NEAR(got.epochs[ep].loss, ref.epochs[ep].loss, 0.02 * ref.epochs[ep].loss) << "batch " << batch << ", epoch " << ep;
      EXPECT_NEAR(got.epochs[ep].train_accuracy, ref.epochs[ep].train_accuracy, 0.03) << "batch " << batch;
    }
    const WeightDiff d = compare_weights(got.final_parameters, ref.final_parameters, 0.0, 0.0);
    EXPECT_GT(d.outside, 0u) << "bit-identical to fp32 serial: the tensor cores never ran";
    EXPECT_LT(d.max_abs, 0.05) << "batch " << batch;
    EXPECT_EQ(got.final_parameters, again.final_parameters) << "batch " << batch << ": two runs differ";
    EXPECT_EQ(got.epochs.back().loss, again.epochs.back().loss);
    std::printf("  resident bf16, batch %d: max|dw| %.2e, loss %.5f vs serial %.5f\n", batch, d.max_abs,
                got.epochs.back().loss, ref.epochs.back().loss);
  }
}

TEST_F(CudaTraining, ResidentBf16RefusesOtherShapesByName) {
  const StrategyEntry resident_bf16 = mma_entry("bf16", "resident");
  RunConfig config = small_config();  // 784-64-26
  expect_refused(config, resident_bf16, "exactly 3");
  config.model.layer_sizes = {784, 256, 128, 26};
  expect_refused(config, resident_bf16, "differ");
  config.model.layer_sizes = {784, 64, 64, 26};
  expect_refused(config, resident_bf16, "hidden width 64");
  config.model.layer_sizes = {784, 256, 256, 26};
  config.train.batch_size = 129;
  expect_refused(config, resident_bf16, "batch_size 129");
  config.train.batch_size = 32;
  expect_refused(config,
                 cuda_with("cuda resident bf16 cluster 8",
                           toml::table{{"variant", "resident"}, {"precision", "bf16"}, {"resident_cluster", 8}}),
                 "resident_cluster = 8");
}

// variant = "auto" under bf16: the tensor-core resident kernel up to batch 64 where the model
// fits, else the graph.
TEST_F(CudaTraining, AutoUnderBf16RunsTheResidentKernelUpToBatch64) {
  expect_auto_choices(cuda_with("cuda auto bf16", toml::table{{"variant", "auto"}, {"precision", "bf16"}}),
                      {{{784, 256, 256, 26}, 1, true},
                       {{784, 256, 256, 26}, 64, true},
                       {{784, 256, 256, 26}, 96, false},
                       {{784, 64, 26}, 16, false}},
                      [](const RunResult& ref, const RunResult& got) {
                        EXPECT_NEAR(got.epochs.back().loss, ref.epochs.back().loss, 0.01 * ref.epochs.back().loss)
                            << got.device;
                      });
}

// variant = "auto": resident at batches <= 4 where the model fits, else the graph; same training.
TEST_F(CudaTraining, AutoRunsResidentAtBatchOneWhereItFits) {
  expect_auto_choices(cuda_with("cuda auto", toml::table{{"variant", "auto"}}),
                      {{{784, 256, 256, 26}, 1, true}, {{784, 256, 256, 26}, 8, false}, {{784, 1024, 1024, 26}, 1, false}},
                      [](const RunResult& ref, const RunResult& got) {
                        const WeightDiff d = compare_weights(got.final_parameters, ref.final_parameters, 1e-3, 1e-5);
                        EXPECT_EQ(d.outside, 0u) << got.device << ": max |dw| " << d.max_abs;
                      });
}
