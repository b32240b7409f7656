// End-to-end training through the harness runner and the serial plugin: determinism,
// learning, and the parity checker itself.
#include <gmock/gmock.h>
#include <gtest/gtest.h>

#include <cmath>
#include <cstring>
#include <filesystem>

#include "parity.hpp"
#include "letters_fixture.hpp"
#include "runner.hpp"

namespace fs = std::filesystem;
using namespace nnpar;

namespace {

RunConfig small_config() {
  RunConfig config = test_support::letters_config(6000, 2000, {784, 64, 26}, 32);
  config.train.epochs = 3;
  config.strategies.push_back(test_support::strategy_entry("serial"));
  return config;
}

class Training : public ::testing::Test {
 protected:
  void SetUp() override {
    if (!test_support::have_letters()) GTEST_SKIP() << "dataset not found in " << test_support::letters_dir();
    if (!data_) data_ = std::make_unique<Datasets>(load_datasets(small_config().data));
  }
  static std::unique_ptr<Datasets> data_;
  PluginRegistry plugins_{{NNPAR_PLUGIN_DIR}};
};
std::unique_ptr<Datasets> Training::data_;

}  // namespace

TEST_F(Training, SerialLearnsWellAboveChance) {
  const RunConfig config = small_config();
  const auto initial = initial_parameters(config);
  const RunResult run = run_strategy(config, config.strategies[0], plugins_, *data_, initial);
  ASSERT_EQ(run.epochs.size(), 3u);
  EXPECT_EQ(run.epochs[0].samples, 6000u);
  EXPECT_EQ(run.epochs[0].steps, 188u);  // ceil(6000 / 32): the last batch is partial
  EXPECT_LT(run.epochs[2].loss, run.epochs[0].loss);
  // Chance is 1/26 = 3.8%; three short epochs of a small MLP reach well past 40% on unseen fonts.
  EXPECT_GT(run.final_test.accuracy, 0.40) << "final test accuracy " << run.final_test.accuracy;
  EXPECT_GT(run.epochs[2].train_accuracy, 0.45);
  EXPECT_GT(run.samples_per_second, 0);
  EXPECT_GT(run.phases.forward, 0);
  EXPECT_GT(run.phases.backward, 0);
}

TEST_F(Training, TwoSerialRunsGiveBitIdenticalWeights) {
  RunConfig config = small_config();
  config.train.epochs = 1;
  const auto initial = initial_parameters(config);
  const RunResult a = run_strategy(config, config.strategies[0], plugins_, *data_, initial);
  const RunResult b = run_strategy(config, config.strategies[0], plugins_, *data_, initial);
  ASSERT_EQ(a.final_parameters.size(), b.final_parameters.size());
  EXPECT_EQ(0, std::memcmp(a.final_parameters.data(), b.final_parameters.data(),
                           a.final_parameters.size() * sizeof(float)));
  EXPECT_NE(a.final_parameters, initial) << "training must change the weights";
  const ParityReport p = check_parity(b, a, ParityConfig{});
  EXPECT_TRUE(p.pass);
  EXPECT_EQ(p.max_abs_diff, 0.0);
}

TEST_F(Training, SerialPluginMatchesAHandWrittenLoopOverTheCore) {
  RunConfig config = small_config();
  config.train.epochs = 1;
  const auto initial = initial_parameters(config);
  const RunResult run = run_strategy(config, config.strategies[0], plugins_, *data_, initial);

  // The same maths written out: the plugin must add nothing and skip nothing.
  Model model(config.model, config.train.batch_size);
  std::copy(initial.begin(), initial.end(), model.parameters().begin());
  Sgd sgd(config.train.sgd, model.parameters().size());
  const auto order = epoch_order(data_->train.count, config.train.seed, 0, true);
  std::vector<float> x(32 * 784);
  std::vector<std::int32_t> y(32);
  for (std::size_t b = 0; b < order.size(); b += 32) {
    const int rows = int(std::min<std::size_t>(32, order.size() - b));
    gather_batch(data_->train, std::span(order).subspan(b, rows), x.data(), y.data());
    model.forward({x.data(), rows, 784}, y.data());
    model.zero_grad();
    model.backward(1.0f / rows);
    sgd.step(model.parameters(), model.gradients());
  }
  ASSERT_EQ(run.final_parameters.size(), model.parameters().size());
  EXPECT_TRUE(std::equal(run.final_parameters.begin(), run.final_parameters.end(),
                         model.parameters().begin()));
}

TEST_F(Training, DifferentSeedsGiveDifferentOrders) {
  RunConfig a = small_config(), b = small_config();
  a.train.epochs = b.train.epochs = 1;
  b.train.seed = 2;
  const auto initial = initial_parameters(a);
  const RunResult ra = run_strategy(a, a.strategies[0], plugins_, *data_, initial);
  const RunResult rb = run_strategy(b, b.strategies[0], plugins_, *data_, initial);
  const ParityReport p = check_parity(rb, ra, ParityConfig{});
  EXPECT_GT(p.max_abs_diff, 1e-3) << "a different data order must change the weights";
  EXPECT_FALSE(p.pass);
  EXPECT_THAT(p.reason, ::testing::HasSubstr("weights differ"));
}

TEST(Parity, CompareWeightsReportsAbsoluteAndRelative) {
  const std::vector<float> ref{1.0f, -2.0f, 4.0f, 0.0f};
  const std::vector<float> got{1.0f, -2.001f, 4.0f, 1e-6f};
  const WeightDiff d = compare_weights(got, ref, 1e-3, 1e-5);
  EXPECT_NEAR(d.max_abs, 1e-3, 1e-6);
  EXPECT_NEAR(d.max_rel, 1e-3 / 4.0, 1e-6);
  EXPECT_EQ(d.outside, 0u);  // 1e-3 <= 1e-5 + 1e-3 * 2
  const WeightDiff strict = compare_weights(got, ref, 1e-5, 1e-7);
  EXPECT_EQ(strict.outside, 2u);
}

TEST(Parity, NanNeverPasses) {
  const std::vector<float> ref{1.0f, 2.0f};
  const std::vector<float> got{1.0f, std::nanf("")};
  const WeightDiff d = compare_weights(got, ref, 1.0, 1.0);
  EXPECT_EQ(d.outside, 1u);
  EXPECT_TRUE(std::isinf(d.max_abs));
}

TEST(Parity, ClassesUseTheirOwnRules) {
  RunResult ref, exact, approx;
  ref.label = "serial";
  ref.final_parameters = {1, 2, 3};
  ref.final_test.accuracy = 0.80;
  exact = ref;
  exact.label = "exact";
  exact.final_test.accuracy = 0.8005;  // 0.05 pp: inside 0.1 pp
  approx = ref;
  approx.label = "approx";
  approx.parity = ParityClass::approximate;
  approx.final_parameters = {5, 5, 5};  // weights are not checked for approximate strategies
  approx.final_test.accuracy = 0.795;   // 0.5 pp below: inside 1 pp

  ParityConfig config;
  EXPECT_EQ(check_parity(ref, ref, config).verdict, "reference");
  EXPECT_TRUE(check_parity(exact, ref, config).pass);
  EXPECT_TRUE(check_parity(approx, ref, config).pass);
  EXPECT_FALSE(check_parity(approx, ref, config).weights_checked);

  exact.final_test.accuracy = 0.802;  // 0.2 pp
  EXPECT_FALSE(check_parity(exact, ref, config).pass);
  approx.final_test.accuracy = 0.78;  // 2 pp below
  const ParityReport p = check_parity(approx, ref, config);
  EXPECT_FALSE(p.pass);
  EXPECT_THAT(p.reason, ::testing::HasSubstr("below the reference"));
  approx.final_test.accuracy = 0.85;  // better is not a failure
  EXPECT_TRUE(check_parity(approx, ref, config).pass);
}
