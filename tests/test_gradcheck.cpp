// Finite-difference gradient checks for every layer and for a whole small model.
//
// The layers compute in float32, so the numerical gradient is a central difference
// (f(x+h) - f(x-h)) / 2h of a float forward pass whose scalar loss is summed in double.
// h = 1e-2 balances the two error sources: truncation error ~h^2 f'''/6 (~1e-5 here) and
// float rounding of the forward ~1e-7 / 2h (~5e-6). The tolerance (1e-2 relative per
// element, with a 1e-3 floor on the denominator for near-zero entries) is far above both,
// and far below what any real bug (a wrong sign, a missing factor, a transposed index) gives;
// the CheckerCatchesWrongGradient test makes sure it really does fail.
#include <gtest/gtest.h>

#include <algorithm>
#include <cmath>
#include <cstdint>
#include <functional>
#include <random>
#include <string>
#include <vector>

#include "nnpar/layers.hpp"
#include "nnpar/model.hpp"

namespace {

using nnpar::Linear;
using nnpar::MatrixView;
using nnpar::Model;
using nnpar::ModelSpec;
using nnpar::Sigmoid;
using nnpar::SoftmaxCrossEntropy;

constexpr float kStep = 1e-2f;
constexpr double kRelTol = 1e-2;
constexpr double kFloor = 1e-3;

std::vector<float> random_vector(std::size_t n, unsigned seed, float lo = -1.0f, float hi = 1.0f) {
  std::mt19937 gen(seed);
  std::uniform_real_distribution<float> dist(lo, hi);
  std::vector<float> v(n);
  for (float& x : v) x = dist(gen);
  return v;
}

std::vector<std::int32_t> random_labels(int n, int classes, unsigned seed) {
  std::mt19937 gen(seed);
  std::uniform_int_distribution<int> dist(0, classes - 1);
  std::vector<std::int32_t> v(n);
  for (auto& x : v) x = dist(gen);
  return v;
}

// sum_i c[i] * y[i] in double: the scalar whose gradient with respect to y is exactly c.
double dot(const float* y, const std::vector<float>& c) {
  double s = 0.0;
  for (std::size_t i = 0; i < c.size(); ++i) s += double(y[i]) * c[i];
  return s;
}

// Central differences of loss() with respect to every entry of x (perturbed in place).
std::vector<double> numerical_gradient(float* x, std::size_t n, const std::function<double()>& loss) {
  std::vector<double> g(n);
  for (std::size_t i = 0; i < n; ++i) {
    const float saved = x[i];
    x[i] = saved + kStep;
    const double plus = loss();
    x[i] = saved - kStep;
    const double minus = loss();
    x[i] = saved;
    // Divide by the step actually taken: saved +- kStep are rounded to float.
    g[i] = (plus - minus) / (double(saved + kStep) - double(saved - kStep));
  }
  return g;
}

struct Comparison {
  double max_rel = 0.0;
  double max_abs = 0.0;
  std::size_t worst = 0;
};

Comparison compare(const float* analytic, const std::vector<double>& numeric) {
  Comparison c;
  for (std::size_t i = 0; i < numeric.size(); ++i) {
    const double a = analytic[i], n = numeric[i];
    const double abs_err = std::abs(a - n);
    const double rel = abs_err / std::max({std::abs(a), std::abs(n), kFloor});
    c.max_abs = std::max(c.max_abs, abs_err);
    if (rel > c.max_rel) {
      c.max_rel = rel;
      c.worst = i;
    }
  }
  return c;
}

void expect_gradient_matches(const std::string& what, const float* analytic,
                             const std::vector<double>& numeric) {
  const Comparison c = compare(analytic, numeric);
  EXPECT_LT(c.max_rel, kRelTol) << what << ": worst element " << c.worst << " analytic "
                                << analytic[c.worst] << " numerical " << numeric[c.worst];
  std::printf("  %-28s %5zu values, max abs err %.3e, max rel err %.3e\n", what.c_str(),
              numeric.size(), c.max_abs, c.max_rel);
}

// --------------------------------------------------------------------------------------------

TEST(GradCheck, CheckerCatchesWrongGradient) {
  // f(x) = sum x_i^3 has gradient 3 x_i^2. A gradient off by 2% in one element must fail.
  std::vector<float> x = random_vector(20, 1);
  auto loss = [&] {
    double s = 0;
    for (float v : x) s += double(v) * v * v;
    return s;
  };
  const std::vector<double> numeric = numerical_gradient(x.data(), x.size(), loss);
  std::vector<float> analytic(x.size());
  for (std::size_t i = 0; i < x.size(); ++i) analytic[i] = 3.0f * x[i] * x[i];
  EXPECT_LT(compare(analytic.data(), numeric).max_rel, kRelTol);
  std::size_t big = std::max_element(analytic.begin(), analytic.end()) - analytic.begin();
  analytic[big] *= 1.02f;
  EXPECT_GT(compare(analytic.data(), numeric).max_rel, kRelTol);
}

TEST(GradCheck, Linear) {
  const int in = 6, out = 4, rows = 3;
  std::vector<float> params = random_vector(std::size_t(out) * in + out, 2);
  std::vector<float> grads(params.size(), 0.0f);
  std::vector<float> x = random_vector(std::size_t(rows) * in, 3);
  const std::vector<float> c = random_vector(std::size_t(rows) * out, 4);  // upstream gradient
  Linear layer(in, out, /*max_batch=*/5);
  layer.bind(params.data(), grads.data());
  auto loss = [&] { return dot(layer.forward({x.data(), rows, in}).data, c); };

  loss();
  const MatrixView gx = layer.backward({c.data(), rows, out});
  ASSERT_EQ(gx.rows, rows);
  ASSERT_EQ(gx.cols, in);
  const std::vector<float> analytic_gx(gx.data, gx.data + std::size_t(rows) * in);

  expect_gradient_matches("linear weight", layer.weight_grad(),
                          numerical_gradient(params.data(), std::size_t(out) * in, loss));
  expect_gradient_matches("linear bias", layer.bias_grad(),
                          numerical_gradient(params.data() + std::size_t(out) * in, out, loss));
  expect_gradient_matches("linear input", analytic_gx.data(),
                          numerical_gradient(x.data(), x.size(), loss));
}

TEST(GradCheck, LinearKnownValues) {
  // W = [[1,2],[3,4],[5,6]], b = [0.5,-1,2], x = [[1,-1]] -> y = [-0.5, -2, 1].
  std::vector<float> params = {1, 2, 3, 4, 5, 6, 0.5f, -1, 2};
  std::vector<float> grads(params.size(), 0.0f);
  Linear layer(2, 3, 1);
  layer.bind(params.data(), grads.data());
  std::vector<float> x = {1, -1};
  const MatrixView y = layer.forward({x.data(), 1, 2});
  EXPECT_FLOAT_EQ(y.data[0], -0.5f);
  EXPECT_FLOAT_EQ(y.data[1], -2.0f);
  EXPECT_FLOAT_EQ(y.data[2], 1.0f);
  // gy = [1, 0, -1]: dW = gy^T x, db = gy, dx = gy W = [1-5, 2-6].
  std::vector<float> gy = {1, 0, -1};
  const MatrixView gx = layer.backward({gy.data(), 1, 3});
  const std::vector<float> expected_grads = {1, -1, 0, 0, -1, 1, 1, 0, -1};
  for (std::size_t i = 0; i < grads.size(); ++i) EXPECT_FLOAT_EQ(grads[i], expected_grads[i]) << i;
  EXPECT_FLOAT_EQ(gx.data[0], -4.0f);
  EXPECT_FLOAT_EQ(gx.data[1], -4.0f);
  // The first layer can skip its input gradient.
  EXPECT_EQ(layer.backward({gy.data(), 1, 3}, false).data, nullptr);
}

TEST(GradCheck, Sigmoid) {
  const int features = 5, rows = 3;
  std::vector<float> x = random_vector(std::size_t(rows) * features, 5, -3.0f, 3.0f);
  const std::vector<float> c = random_vector(x.size(), 6);
  Sigmoid layer(features, 4);
  auto loss = [&] { return dot(layer.forward({x.data(), rows, features}).data, c); };
  loss();
  const MatrixView gx = layer.backward({c.data(), rows, features});
  const std::vector<float> analytic(gx.data, gx.data + x.size());
  expect_gradient_matches("sigmoid input", analytic.data(),
                          numerical_gradient(x.data(), x.size(), loss));
}

TEST(GradCheck, SigmoidKnownValues) {
  // sigmoid(0) = 1/2 with slope 1/4; sigmoid(ln 3) = 3/4 with slope 3/16.
  std::vector<float> x = {0.0f, std::log(3.0f)};
  Sigmoid layer(2, 1);
  const MatrixView y = layer.forward({x.data(), 1, 2});
  EXPECT_FLOAT_EQ(y.data[0], 0.5f);
  EXPECT_NEAR(y.data[1], 0.75f, 1e-6);
  std::vector<float> ones = {1.0f, 2.0f};
  const MatrixView gx = layer.backward({ones.data(), 1, 2});
  EXPECT_FLOAT_EQ(gx.data[0], 0.25f);
  EXPECT_NEAR(gx.data[1], 2.0f * 3.0f / 16.0f, 1e-6);
}

TEST(GradCheck, SoftmaxCrossEntropy) {
  const int classes = 5, rows = 4;
  const float scale = 0.25f;
  std::vector<float> logits = random_vector(std::size_t(rows) * classes, 7, -2.0f, 2.0f);
  const std::vector<std::int32_t> labels = random_labels(rows, classes, 8);
  SoftmaxCrossEntropy layer(classes, rows);
  auto loss = [&] {
    layer.forward({logits.data(), rows, classes}, labels.data());
    return layer.loss_sum() * scale;
  };
  loss();
  const MatrixView g = layer.backward(scale);
  const std::vector<float> analytic(g.data, g.data + logits.size());
  expect_gradient_matches("softmax-xent logits", analytic.data(),
                          numerical_gradient(logits.data(), logits.size(), loss));
}

TEST(GradCheck, SoftmaxCrossEntropyKnownValues) {
  // Equal logits: p = 1/C everywhere, loss per row = log C, gradient = scale (1/C - onehot).
  const int classes = 4, rows = 2;
  std::vector<float> logits(std::size_t(rows) * classes, 0.3f);
  const std::vector<std::int32_t> labels = {2, 0};
  SoftmaxCrossEntropy layer(classes, rows);
  const MatrixView p = layer.forward({logits.data(), rows, classes}, labels.data());
  for (int i = 0; i < rows * classes; ++i) EXPECT_FLOAT_EQ(p.data[i], 0.25f);
  EXPECT_NEAR(layer.loss_sum(), 2.0 * std::log(4.0), 1e-6);
  const MatrixView g = layer.backward(0.5f);
  for (int r = 0; r < rows; ++r) {
    for (int k = 0; k < classes; ++k) {
      const float expected = 0.5f * (0.25f - (k == labels[r] ? 1.0f : 0.0f));
      EXPECT_FLOAT_EQ(g.data[r * classes + k], expected) << r << "," << k;
    }
  }
  // A label outside [0, classes) is rejected rather than read out of bounds.
  const std::vector<std::int32_t> bad = {4, 0};
  EXPECT_THROW(layer.forward({logits.data(), rows, classes}, bad.data()), std::invalid_argument);
}

TEST(GradCheck, WholeModel) {
  ModelSpec spec;
  spec.layer_sizes = {10, 7, 5, 4};
  spec.seed = 11;
  const int rows = 3;
  // A global batch of 8 split in pieces: this piece's gradient is scaled by 1/8, not 1/3.
  const float loss_scale = 1.0f / 8.0f;
  Model model(spec, rows);
  nnpar::initialize_parameters(spec, model.parameters());
  // Non-zero biases so their gradients are not checked around a special point.
  const auto layout = nnpar::parameter_layout(spec);
  std::mt19937 gen(12);
  std::uniform_real_distribution<float> dist(-0.5f, 0.5f);
  for (const auto& s : layout) {
    if (s.shape.size() == 1) {
      for (std::size_t i = 0; i < s.size(); ++i) model.parameters()[s.offset + i] = dist(gen);
    }
  }
  std::vector<float> x = random_vector(std::size_t(rows) * 10, 13, 0.0f, 1.0f);
  const std::vector<std::int32_t> labels = random_labels(rows, 4, 14);
  auto loss = [&] {
    model.forward({x.data(), rows, 10}, labels.data());
    return model.last_loss_sum() * loss_scale;
  };

  model.zero_grad();
  loss();
  model.backward(loss_scale);
  const std::vector<float> analytic(model.gradients().begin(), model.gradients().end());
  const std::vector<double> numeric =
      numerical_gradient(model.parameters().data(), model.parameters().size(), loss);
  for (const auto& s : layout) {
    expect_gradient_matches("model " + s.name, analytic.data() + s.offset,
                            std::vector<double>(numeric.begin() + std::ptrdiff_t(s.offset),
                                                numeric.begin() + std::ptrdiff_t(s.offset + s.size())));
  }
}

TEST(GradCheck, GradientsAccumulateAcrossBackwardCalls) {
  ModelSpec spec;
  spec.layer_sizes = {10, 7, 5, 4};
  spec.seed = 21;
  const int rows = 3;
  Model model(spec, rows);
  nnpar::initialize_parameters(spec, model.parameters());
  const std::vector<float> xa = random_vector(std::size_t(rows) * 10, 22, 0.0f, 1.0f);
  const std::vector<float> xb = random_vector(std::size_t(rows) * 10, 23, 0.0f, 1.0f);
  const std::vector<std::int32_t> la = random_labels(rows, 4, 24);
  const std::vector<std::int32_t> lb = random_labels(rows, 4, 25);
  const float scale = 1.0f / 6.0f;

  auto grad_of = [&](const std::vector<float>& x, const std::vector<std::int32_t>& l) {
    model.zero_grad();
    model.forward({x.data(), rows, 10}, l.data());
    model.backward(scale);
    return std::vector<float>(model.gradients().begin(), model.gradients().end());
  };
  const std::vector<float> ga = grad_of(xa, la);
  const std::vector<float> gb = grad_of(xb, lb);

  model.zero_grad();
  model.forward({xa.data(), rows, 10}, la.data());
  model.backward(scale);
  model.forward({xb.data(), rows, 10}, lb.data());
  model.backward(scale);
  double max_err = 0.0, max_val = 0.0;
  for (std::size_t i = 0; i < ga.size(); ++i) {
    const double sum = double(ga[i]) + gb[i];
    max_err = std::max(max_err, std::abs(model.gradients()[i] - sum));
    max_val = std::max(max_val, std::abs(sum));
  }
  EXPECT_GT(max_val, 1e-3);
  EXPECT_LE(max_err, 1e-6 * max_val) << "accumulated gradient differs from the sum";

  // zero_grad really clears them.
  model.zero_grad();
  for (float g : model.gradients()) ASSERT_EQ(g, 0.0f);
}

}  // namespace
