// What the MPI strategy tests share: the world, and a fixture that runs a strategy on every
// rank and the serial reference on rank 0 from the same data and initial weights.
#pragma once
#include <gtest/gtest.h>

#include "letters_fixture.hpp"
#include "nnpar/comm_mpi.hpp"
#include "parity.hpp"
#include "runner.hpp"

namespace nnpar::test_support {

inline WorldInfo mpi_world() { return {mpi::world_rank(), mpi::world_size()}; }

class MpiStrategyTest : public ::testing::Test {
 protected:
  void SetUp() override {
    if (!have_letters()) GTEST_SKIP() << "dataset not found in " << letters_dir();
  }
  // The entry on every rank (a collective run).
  RunResult run(const RunConfig& config, const StrategyEntry& entry) {
    load(config);
    return run_strategy(config, entry, plugins_, data_, initial_, {}, mpi_world());
  }
  // config.strategies[0] (serial) on rank 0 only; an empty result elsewhere.
  RunResult serial(const RunConfig& config) {
    load(config);
    if (mpi_world().rank != 0) return {};
    return run_strategy(config, config.strategies[0], plugins_, data_, initial_);
  }
  void expect_parity(const RunResult& parallel, const RunResult& reference, std::size_t samples, std::size_t steps) {
    ASSERT_EQ(parallel.epochs.size(), reference.epochs.size());
    for (std::size_t e = 0; e < parallel.epochs.size(); ++e) {
      EXPECT_EQ(parallel.epochs[e].samples, samples) << "every sample exactly once per epoch";
      EXPECT_EQ(parallel.epochs[e].steps, steps);
      EXPECT_NEAR(parallel.epochs[e].loss, reference.epochs[e].loss, 1e-5) << parallel.device;
      EXPECT_NEAR(parallel.epochs[e].train_accuracy, reference.epochs[e].train_accuracy, 2.0 / samples);
    }
    const ParityReport p = check_parity(parallel, reference, ParityConfig{});
    EXPECT_TRUE(p.pass) << parallel.device << ": " << p.reason;
    EXPECT_LT(p.max_abs_diff, 1e-5) << parallel.device;
  }
  PluginRegistry plugins_{{NNPAR_PLUGIN_DIR}};

 private:
  // The dataset is loaded once per limit: every test of a file uses one or two subsets.
  void load(const RunConfig& config) {
    if (loaded_limit_ != config.data.options.limit || data_.train.count == 0) {
      data_ = load_datasets(config.data);
      loaded_limit_ = config.data.options.limit;
    }
    initial_ = initial_parameters(config);
  }
  Datasets data_;
  std::size_t loaded_limit_ = 0;
  std::vector<float> initial_;
};

}  // namespace nnpar::test_support
