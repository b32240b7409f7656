// Parameter layout, deterministic initialisation, spec validation, a hand-computed forward
// pass and the SGD step.
#include <gtest/gtest.h>

#include <cmath>
#include <cstdint>
#include <cstring>
#include <stdexcept>
#include <string>
#include <vector>

#include "nnpar/model.hpp"

namespace {

using nnpar::InitKind;
using nnpar::MatrixView;
using nnpar::Model;
using nnpar::ModelSpec;

ModelSpec spec_of(std::vector<int> sizes, InitKind init = InitKind::xavier_uniform,
                  std::uint64_t seed = 42) {
  ModelSpec spec;
  spec.layer_sizes = std::move(sizes);
  spec.init = init;
  spec.seed = seed;
  return spec;
}

std::vector<float> init(const ModelSpec& spec) {
  std::vector<float> p(nnpar::parameter_count(spec));
  nnpar::initialize_parameters(spec, p);
  return p;
}

// The message of the std::invalid_argument thrown by f (fails the test if none is thrown).
template <class F>
std::string invalid_argument_message(F f) {
  try {
    f();
  } catch (const std::invalid_argument& e) {
    return e.what();
  }
  ADD_FAILURE() << "no std::invalid_argument thrown";
  return {};
}

TEST(Model, LayoutOf784_256_256_26) {
  const ModelSpec spec = spec_of({784, 256, 256, 26});
  const auto layout = nnpar::parameter_layout(spec);
  ASSERT_EQ(layout.size(), 6u);
  struct Expected {
    const char* name;
    std::size_t offset;
    std::vector<std::size_t> shape;
  };
  const std::vector<Expected> expected = {
      {"layers.0.weight", 0, {256, 784}},      {"layers.0.bias", 200704, {256}},
      {"layers.1.weight", 200960, {256, 256}}, {"layers.1.bias", 266496, {256}},
      {"layers.2.weight", 266752, {26, 256}},  {"layers.2.bias", 273408, {26}},
  };
  for (std::size_t i = 0; i < expected.size(); ++i) {
    EXPECT_EQ(layout[i].name, expected[i].name);
    EXPECT_EQ(layout[i].offset, expected[i].offset) << expected[i].name;
    EXPECT_EQ(layout[i].shape, expected[i].shape) << expected[i].name;
  }
  EXPECT_EQ(layout[0].size(), 200704u);
  EXPECT_EQ(nnpar::parameter_count(spec), 273434u);
  EXPECT_EQ(nnpar::parameter_offset(spec, 0), 0u);
  EXPECT_EQ(nnpar::parameter_offset(spec, 1), 200960u);
  EXPECT_EQ(nnpar::parameter_offset(spec, 2), 266752u);
  EXPECT_THROW(nnpar::parameter_offset(spec, 3), std::out_of_range);
  EXPECT_THROW(nnpar::parameter_offset(spec, -1), std::out_of_range);

  // The model binds each Linear to exactly that slice.
  Model model(spec, 4);
  ASSERT_EQ(model.linear_count(), 3);
  EXPECT_EQ(model.parameters().size(), 273434u);
  EXPECT_EQ(model.gradients().size(), 273434u);
  for (int i = 0; i < 3; ++i) {
    EXPECT_EQ(model.linear(i).weight(), model.parameters().data() + nnpar::parameter_offset(spec, i));
    EXPECT_EQ(model.linear(i).weight_grad(),
              model.gradients().data() + nnpar::parameter_offset(spec, i));
  }
  EXPECT_EQ(model.linear(1).in_features(), 256);
  EXPECT_EQ(model.linear(2).out_features(), 26);
}

TEST(Model, InitialisationIsDeterministic) {
  const ModelSpec spec = spec_of({784, 256, 256, 26}, InitKind::xavier_uniform, 7);
  const std::vector<float> a = init(spec), b = init(spec);
  ASSERT_EQ(a.size(), b.size());
  EXPECT_EQ(std::memcmp(a.data(), b.data(), a.size() * sizeof(float)), 0);

  const std::vector<float> c = init(spec_of({784, 256, 256, 26}, InitKind::xavier_uniform, 8));
  std::size_t same = 0;
  for (std::size_t i = 0; i < a.size(); ++i) same += (a[i] == c[i] && a[i] != 0.0f);
  EXPECT_LT(same, a.size() / 1000) << "a different seed should give different weights";

  // Each layer has its own stream: layer 0 does not depend on what comes after it, and two
  // layers of equal shape do not get equal weights.
  const std::vector<float> shallow = init(spec_of({784, 256, 26}, InitKind::xavier_uniform, 7));
  EXPECT_EQ(std::memcmp(a.data(), shallow.data(), 256 * 784 * sizeof(float)), 0);
  const ModelSpec square = spec_of({16, 16, 16}, InitKind::xavier_uniform, 7);
  const std::vector<float> sq = init(square);
  EXPECT_NE(std::memcmp(sq.data(), sq.data() + nnpar::parameter_offset(square, 1),
                        256 * sizeof(float)),
            0);

  const std::vector<float> n1 = init(spec_of({50, 40, 10}, InitKind::normal, 3));
  const std::vector<float> n2 = init(spec_of({50, 40, 10}, InitKind::normal, 3));
  EXPECT_EQ(std::memcmp(n1.data(), n2.data(), n1.size() * sizeof(float)), 0);
}

TEST(Model, InitialisationGoldenValues) {
  // The first weights for seed 42, as bits. They only use integer ops and IEEE +-*/ sqrt, so
  // they must be the same on every platform and compiler: if this fails, runs on different
  // machines no longer start from the same model.
  const std::vector<float> x = init(spec_of({784, 256, 256, 26}));
  const std::vector<float> n = init(spec_of({784, 256, 256, 26}, InitKind::normal));
  const std::uint32_t xavier_bits[4] = {0xBD9241C9u, 0xB9CC437Du, 0xBD8D447Fu, 0xBD21DC84u};
  const std::uint32_t normal_bits[4] = {0xBBA2B1B0u, 0xB7E33845u, 0x3CB5B872u, 0xB8F2A64Au};
  for (int i = 0; i < 4; ++i) {
    std::uint32_t bx, bn;
    std::memcpy(&bx, &x[i], 4);
    std::memcpy(&bn, &n[i], 4);
    EXPECT_EQ(bx, xavier_bits[i]) << "xavier weight " << i << " = " << x[i];
    EXPECT_EQ(bn, normal_bits[i]) << "normal weight " << i << " = " << n[i];
  }
}

struct Moments {
  double mean = 0, var = 0, max_abs = 0;
};
Moments moments(const float* p, std::size_t n) {
  Moments m;
  for (std::size_t i = 0; i < n; ++i) m.mean += p[i];
  m.mean /= double(n);
  for (std::size_t i = 0; i < n; ++i) {
    m.var += (p[i] - m.mean) * (p[i] - m.mean);
    m.max_abs = std::max(m.max_abs, double(std::abs(p[i])));
  }
  m.var /= double(n);
  return m;
}

TEST(Model, XavierUniformBoundsAndMoments) {
  const ModelSpec spec = spec_of({784, 256, 256, 26});
  const std::vector<float> p = init(spec);
  for (const auto& s : nnpar::parameter_layout(spec)) {
    const float* v = p.data() + s.offset;
    if (s.shape.size() == 1) {
      for (std::size_t i = 0; i < s.size(); ++i) ASSERT_EQ(v[i], 0.0f) << s.name;
      continue;
    }
    const double a = std::sqrt(6.0 / double(s.shape[0] + s.shape[1]));
    const Moments m = moments(v, s.size());
    EXPECT_LE(m.max_abs, a) << s.name;
    EXPECT_GT(m.max_abs, 0.99 * a) << s.name;  // the whole range is used
    // U(-a, a): mean 0, variance a^2/3. Bounds are several standard errors wide.
    const double se_mean = a / std::sqrt(3.0 * double(s.size()));
    EXPECT_LT(std::abs(m.mean), 5.0 * se_mean) << s.name;
    EXPECT_NEAR(m.var / (a * a / 3.0), 1.0, 0.05) << s.name;
  }
}

TEST(Model, ZeroInit) {
  const std::vector<float> p = init(spec_of({20, 10, 5}, InitKind::zero));
  for (float v : p) ASSERT_EQ(v, 0.0f);
}

TEST(Model, NormalInit) {
  ModelSpec spec = spec_of({784, 256, 26}, InitKind::normal);
  spec.init_std = 0.05;
  const std::vector<float> p = init(spec);
  const std::size_t n = 256 * 784;
  const Moments m = moments(p.data(), n);
  EXPECT_LT(std::abs(m.mean), 5.0 * 0.05 / std::sqrt(double(n)));
  EXPECT_NEAR(std::sqrt(m.var), 0.05, 0.05 * 0.01);
  // Shape, not just scale: a normal has 68.27% within one std (a uniform would have 57.7%)
  // and 95.45% within two.
  std::size_t within1 = 0, within2 = 0;
  for (std::size_t i = 0; i < n; ++i) {
    within1 += std::abs(p[i]) < 0.05f;
    within2 += std::abs(p[i]) < 0.10f;
  }
  EXPECT_NEAR(double(within1) / n, 0.6827, 0.005);
  EXPECT_NEAR(double(within2) / n, 0.9545, 0.003);
  for (std::size_t i = n; i < n + 256; ++i) ASSERT_EQ(p[i], 0.0f);  // bias
}

TEST(Model, SpecValidation) {
  EXPECT_NO_THROW(nnpar::validate(spec_of({784, 26})));
  EXPECT_NE(invalid_argument_message([] { nnpar::validate(spec_of({784})); }).find("at least 2"),
            std::string::npos);
  EXPECT_NE(invalid_argument_message([] { nnpar::validate(spec_of({})); }).find("at least 2"),
            std::string::npos);
  EXPECT_NE(invalid_argument_message([] { nnpar::validate(spec_of({784, 0, 26})); })
                .find("layer_sizes[1] is 0"),
            std::string::npos);
  EXPECT_THROW(nnpar::validate(spec_of({784, 256, -3})), std::invalid_argument);
  ModelSpec bad_std = spec_of({4, 2}, InitKind::normal);
  bad_std.init_std = -1.0;
  EXPECT_NE(invalid_argument_message([&] { nnpar::validate(bad_std); }).find("init_std"),
            std::string::npos);
  EXPECT_THROW(Model(spec_of({4, 0}), 2), std::invalid_argument);
  EXPECT_THROW(Model(spec_of({4, 2}), 0), std::invalid_argument);
  EXPECT_THROW(nnpar::parameter_count(spec_of({4})), std::invalid_argument);
  std::vector<float> wrong_size(7);
  EXPECT_THROW(nnpar::initialize_parameters(spec_of({4, 2}), wrong_size), std::invalid_argument);
}

// A 2-2-2 model small enough to compute by hand.
//   W0 = [[1, -1], [0.5, 2]], b0 = [0, -1]; W1 = [[1, 2], [-1, 0.5]], b1 = [0.1, 0]
//   x = [1, 0.5]:  z0 = [0.5, 0.5], h = sigmoid(0.5) = s for both units
//   logits = [3s + 0.1, -0.5s]
TEST(Model, ForwardMatchesHandComputation) {
  const ModelSpec spec = spec_of({2, 2, 2});
  Model model(spec, 2);
  const std::vector<float> p = {1, -1, 0.5f, 2, 0, -1, 1, 2, -1, 0.5f, 0.1f, 0};
  ASSERT_EQ(p.size(), model.parameters().size());
  std::copy(p.begin(), p.end(), model.parameters().begin());

  const std::vector<float> x = {1, 0.5f, 1, 0.5f};  // the same row twice
  const std::vector<std::int32_t> labels = {0, 1};
  const double s = 1.0 / (1.0 + std::exp(-0.5));
  const double l0 = 3 * s + 0.1, l1 = -0.5 * s;
  const double p0 = std::exp(l0) / (std::exp(l0) + std::exp(l1));
  const double loss = -std::log(p0) - std::log(1 - p0);

  const MatrixView probs = model.forward({x.data(), 2, 2}, labels.data());
  ASSERT_EQ(probs.rows, 2);
  ASSERT_EQ(probs.cols, 2);
  for (int r = 0; r < 2; ++r) {
    EXPECT_NEAR(probs.data[r * 2 + 0], p0, 1e-6);
    EXPECT_NEAR(probs.data[r * 2 + 1], 1 - p0, 1e-6);
  }
  EXPECT_NEAR(model.last_loss_sum(), loss, 1e-5);
  EXPECT_EQ(model.last_correct(), 1);  // class 0 wins: row 0 right, row 1 wrong

  const MatrixView logits = model.predict({x.data(), 1, 2});
  ASSERT_EQ(logits.rows, 1);
  EXPECT_NEAR(logits.data[0], l0, 1e-6);
  EXPECT_NEAR(logits.data[1], l1, 1e-6);
}

TEST(Model, PredictMatchesForwardLogits) {
  const ModelSpec spec = spec_of({30, 20, 15, 6});
  Model model(spec, 8);
  nnpar::initialize_parameters(spec, model.parameters());
  std::vector<float> x(5 * 30);
  for (std::size_t i = 0; i < x.size(); ++i) x[i] = float((i * 37) % 101) / 100.0f;
  const std::vector<std::int32_t> labels = {0, 1, 2, 3, 4};
  const MatrixView lv = model.predict({x.data(), 5, 30});
  const std::vector<float> logits(lv.data, lv.data + 5 * 6);
  const MatrixView probs = model.forward({x.data(), 5, 30}, labels.data());
  double loss = 0;
  for (int r = 0; r < 5; ++r) {
    double z = 0;
    for (int k = 0; k < 6; ++k) z += std::exp(double(logits[r * 6 + k]));
    for (int k = 0; k < 6; ++k) {
      EXPECT_NEAR(probs.data[r * 6 + k], std::exp(double(logits[r * 6 + k])) / z, 1e-6);
    }
    loss -= std::log(std::exp(double(logits[r * 6 + labels[r]])) / z);
  }
  EXPECT_NEAR(model.last_loss_sum(), loss, 1e-5);
}

TEST(Model, BatchLargerThanMaxBatchThrows) {
  const ModelSpec spec = spec_of({4, 3, 2});
  Model model(spec, 2);
  std::vector<float> x(3 * 4, 0.5f);
  std::vector<std::int32_t> labels = {0, 1, 0};
  const std::string msg =
      invalid_argument_message([&] { model.forward({x.data(), 3, 4}, labels.data()); });
  EXPECT_NE(msg.find("max_batch"), std::string::npos) << msg;
  EXPECT_THROW(model.predict({x.data(), 3, 4}), std::invalid_argument);
  // Wrong feature count too.
  EXPECT_THROW(model.predict({x.data(), 2, 5}), std::invalid_argument);
  EXPECT_NO_THROW(model.forward({x.data(), 2, 4}, labels.data()));
}

TEST(Model, SgdStep) {
  const ModelSpec spec = spec_of({6, 4, 3});
  Model model(spec, 4);
  nnpar::initialize_parameters(spec, model.parameters());
  std::vector<float> x(4 * 6);
  for (std::size_t i = 0; i < x.size(); ++i) x[i] = float(i % 7) / 7.0f;
  const std::vector<std::int32_t> labels = {0, 1, 2, 1};
  model.zero_grad();
  model.forward({x.data(), 4, 6}, labels.data());
  model.backward(0.25f);
  const std::vector<float> before(model.parameters().begin(), model.parameters().end());
  const std::vector<float> grad(model.gradients().begin(), model.gradients().end());

  nnpar::Sgd sgd({.lr = 0.5f}, before.size());
  sgd.step(model.parameters(), model.gradients());
  double moved = 0;
  for (std::size_t i = 0; i < before.size(); ++i) {
    EXPECT_FLOAT_EQ(model.parameters()[i], before[i] - 0.5f * grad[i]) << i;
    moved += std::abs(model.parameters()[i] - before[i]);
  }
  EXPECT_GT(moved, 0.0);
  // The loss goes down after a small step along the negative gradient.
  const double loss_before = model.last_loss_sum();
  model.forward({x.data(), 4, 6}, labels.data());
  EXPECT_LT(model.last_loss_sum(), loss_before);

  // Momentum (PyTorch semantics): v1 = g, p1 = p0 - lr g; v2 = m g + g, p2 = p1 - lr v2.
  std::vector<float> p = {1.0f, -2.0f};
  const std::vector<float> g = {0.5f, 0.25f};
  nnpar::Sgd momentum({.lr = 0.1f, .momentum = 0.9f}, 2);
  momentum.step(p, g);
  momentum.step(p, g);
  EXPECT_NEAR(p[0], 1.0 - 0.1 * 0.5 - 0.1 * 1.9 * 0.5, 1e-6);
  EXPECT_NEAR(p[1], -2.0 - 0.1 * 0.25 - 0.1 * 1.9 * 0.25, 1e-6);

  // Weight decay adds wd * p to the gradient.
  std::vector<float> q = {2.0f};
  const std::vector<float> gq = {0.0f};
  nnpar::Sgd decay({.lr = 0.1f, .weight_decay = 0.5f}, 1);
  decay.step(q, gq);
  EXPECT_NEAR(q[0], 2.0 - 0.1 * 0.5 * 2.0, 1e-6);

  std::vector<float> wrong(3);
  EXPECT_THROW(sgd.step(wrong, g), std::invalid_argument);
}

}  // namespace
