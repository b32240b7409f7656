// The built-in mpi-ring strategy (examples/strategy-template/ring_data.cpp built in the tree),
// run under `mpirun --oversubscribe -np N` by ctest (N = 2, 3). Every rank runs every test;
// rank 0 checks the results against serial and mpi-data runs it makes itself.
#include <gmock/gmock.h>
#include <gtest/gtest.h>

#include <algorithm>
#include <cmath>

#include "letters_fixture.hpp"
#include "nnpar/comm_mpi.hpp"
#include "parity.hpp"
#include "runner.hpp"

using namespace nnpar;
using ::testing::HasSubstr;

namespace {

WorldInfo world() { return {mpi::world_rank(), mpi::world_size()}; }

double max_abs_diff(const std::vector<float>& a, const std::vector<float>& b) {
  double m = 0;
  for (std::size_t i = 0; i < a.size(); ++i) m = std::max(m, double(std::fabs(a[i] - b[i])));
  return m;
}

class MpiRing : public ::testing::Test {
 protected:
  void SetUp() override {
    if (!test_support::have_letters()) GTEST_SKIP() << "dataset not found in " << test_support::letters_dir();
  }
  // 784-48-32-26 has 40,106 parameters: 3 ranks cut the whole buffer, and the middle layer's
  // 1,568, into uneven ring chunks.
  static RunConfig config_for(std::size_t limit, int batch, StrategyEntry parallel, StrategyEntry reference) {
    RunConfig config = test_support::letters_config(limit, 1000, {784, 48, 32, 26}, batch);
    config.train.epochs = 2;
    config.strategies = {std::move(reference), std::move(parallel)};
    return config;
  }
  static StrategyEntry ring(bool overlap = true, const std::string& mode = "sync") {
    StrategyEntry e = test_support::strategy_entry("mpi-ring");
    test_support::options_of(e).insert("overlap", overlap);
    test_support::options_of(e).insert("mode", mode);
    return e;
  }
  // strategies[1] on every rank, strategies[0] as the reference: on every rank when it is a
  // multi-rank strategy, on rank 0 alone when it is serial. Results are rank 0's.
  std::pair<RunResult, RunResult> run_both(const RunConfig& config) {
    const Datasets data = load_datasets(config.data);
    const auto initial = initial_parameters(config);
    RunResult parallel = run_strategy(config, config.strategies[1], plugins_, data, initial, {}, world());
    RunResult reference;
    if (config.strategies[0].name != "serial")
      reference = run_strategy(config, config.strategies[0], plugins_, data, initial, {}, world());
    else if (world().rank == 0)
      reference = run_strategy(config, config.strategies[0], plugins_, data, initial);
    return {std::move(reference), std::move(parallel)};
  }
  PluginRegistry plugins_{{NNPAR_PLUGIN_DIR}};
};

}  // namespace

TEST_F(MpiRing, IsListedAsABuiltInPluginFromTheTemplateSource) {
  const StrategyInfo& info = plugins_.find("mpi-ring")->info();
  EXPECT_EQ(info.name, "mpi-ring");
  EXPECT_TRUE(info.needs_mpi);
  EXPECT_FALSE(info.uses_gpu);
  EXPECT_EQ(info.parity, ParityClass::exact);
  EXPECT_THAT(info.description, HasSubstr("ring allreduce"));
}

TEST_F(MpiRing, SyncMatchesSerialWithUnevenShardsAndChunks) {
  // 1,000 samples in batches of 30: 33 full batches and one of 10, uneven over 3 ranks.
  for (bool overlap : {true, false}) {
    const RunConfig config = config_for(1000, 30, ring(overlap), test_support::strategy_entry("serial"));
    auto [serial, parallel] = run_both(config);
    if (world().rank != 0) continue;
    SCOPED_TRACE(overlap ? "per-layer rings" : "one ring over the whole buffer");
    EXPECT_EQ(parallel.world_size, world().size);
    EXPECT_EQ(parallel.parity, ParityClass::exact);
    EXPECT_THAT(parallel.device, HasSubstr("ring allreduce"));
    ASSERT_EQ(parallel.epochs.size(), 2u);
    EXPECT_EQ(parallel.epochs[1].samples, 1000u) << "every sample exactly once per epoch";
    EXPECT_EQ(parallel.epochs[1].steps, 34u);
    EXPECT_NEAR(parallel.epochs[1].loss, serial.epochs[1].loss, 1e-5);
    EXPECT_NEAR(parallel.epochs[1].train_accuracy, serial.epochs[1].train_accuracy, 0.002);
    const ParityReport p = check_parity(parallel, serial, ParityConfig{});
    EXPECT_TRUE(p.pass) << p.reason;
    EXPECT_TRUE(p.weights_checked);
    EXPECT_EQ(p.elements_outside, 0u);
    EXPECT_LT(p.max_abs_diff, 1e-5);
    EXPECT_NEAR(parallel.final_test.accuracy, serial.final_test.accuracy, 0.001);
    // Parity of weights that training moved, not of the initial ones: 68 steps on 1,000
    // samples lower the loss but are too few to lift test accuracy off chance (about 3.5%).
    EXPECT_LT(serial.epochs[1].loss, serial.epochs[0].loss);
    EXPECT_GT(max_abs_diff(serial.final_parameters, initial_parameters(config)), 1e-2);
    std::printf("[rank 0 of %d] ring (overlap=%d) vs serial: max abs diff %.3e, test %.2f%% vs %.2f%%\n",
                world().size, int(overlap), p.max_abs_diff, 100 * parallel.final_test.accuracy,
                100 * serial.final_test.accuracy);
  }
}

TEST_F(MpiRing, AgreesWithMpiAllreduce) {
  StrategyEntry allreduce = test_support::strategy_entry("mpi-data");
  test_support::options_of(allreduce).insert("overlap", false);
  const RunConfig config = config_for(600, 32, ring(false), allreduce);
  auto [mpi_data, parallel] = run_both(config);
  if (world().rank != 0) return;
  const double diff = max_abs_diff(parallel.final_parameters, mpi_data.final_parameters);
  std::printf("[rank 0 of %d] ring vs MPI_Allreduce: max abs diff %.3e\n", world().size, diff);
  if (world().size == 2) {
    // Two ranks: every element of the sum is one addition a + b in both algorithms, and float
    // addition is commutative, so the weights are bitwise the same.
    EXPECT_EQ(parallel.final_parameters, mpi_data.final_parameters);
  } else {
    EXPECT_LT(diff, 1e-5);
  }
}

TEST_F(MpiRing, BatchSmallerThanWorldStillMatches) {
  // Batch 2 on 3 ranks: one rank has no samples in every step and still passes its chunks on.
  const RunConfig config = config_for(90, 2, ring(), test_support::strategy_entry("serial"));
  auto [serial, parallel] = run_both(config);
  if (world().rank != 0) return;
  EXPECT_EQ(parallel.epochs[0].steps, 45u);
  const ParityReport p = check_parity(parallel, serial, ParityConfig{});
  EXPECT_TRUE(p.pass) << p.reason;
  EXPECT_LT(p.max_abs_diff, 1e-5);
}

TEST_F(MpiRing, LocalSgdAveragesThroughTheRingLikeMpi) {
  // local_sgd is the approximate class, but its weight averages through the ring must still
  // agree with the same averages through MPI_Allreduce up to float rounding.
  StrategyEntry mpi_local = test_support::strategy_entry("mpi-data");
  test_support::options_of(mpi_local).insert("mode", "local_sgd");
  test_support::options_of(mpi_local).insert("period", 4);
  StrategyEntry ring_local = ring(true, "local_sgd");
  test_support::options_of(ring_local).insert("period", 4);
  const RunConfig config = config_for(600, 32, ring_local, mpi_local);
  auto [mpi_data, parallel] = run_both(config);
  if (world().rank != 0) return;
  EXPECT_EQ(parallel.parity, ParityClass::approximate);
  const double diff = max_abs_diff(parallel.final_parameters, mpi_data.final_parameters);
  std::printf("[rank 0 of %d] local SGD, ring vs MPI_Allreduce: max abs diff %.3e\n", world().size, diff);
  EXPECT_LT(diff, 1e-5);
  EXPECT_TRUE(std::all_of(parallel.final_parameters.begin(), parallel.final_parameters.end(),
                          [](float w) { return std::isfinite(w); }));
}
