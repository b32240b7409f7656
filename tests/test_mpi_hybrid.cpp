// Hybrid data x pipeline parallelism over MPI, run under `mpirun --oversubscribe -np N` by
// ctest (N = 4: grids 2x2, 4x1, 1x4; N = 6: 3x2, 2x3). Every rank runs every test; rank 0
// checks the results against serial runs it makes itself.
#include <gmock/gmock.h>
#include <gtest/gtest.h>
#include <mpi.h>

#include <cstdio>
#include <filesystem>

#include "nnpar/comm_mpi.hpp"
#include "mpi_fixture.hpp"
#include "parity.hpp"
#include "runner.hpp"

namespace fs = std::filesystem;
using namespace nnpar;
using ::testing::HasSubstr;

namespace {


WorldInfo world() { return {mpi::world_rank(), mpi::world_size()}; }

RunConfig config_for(int batch, std::size_t limit) {
  // 4 Linear layers: up to 4 stages.
  RunConfig config = test_support::letters_config(limit, 1000, {784, 64, 48, 32, 26}, batch);
  config.train.epochs = 2;
  config.train.sgd.lr = 1.0f;
  config.strategies.push_back(test_support::strategy_entry("serial"));
  return config;
}

StrategyEntry hybrid(int data, const std::string& schedule = "1f1b", int micro = 4, bool overlap = true,
                     const std::string& partition = "auto", int stages = 0) {
  StrategyEntry e;
  e.name = "mpi-hybrid";
  e.label = "hybrid-" + std::to_string(data) + "-" + schedule + "-" + std::to_string(micro);
  auto table = std::make_shared<toml::table>();
  table->insert("data", data);
  table->insert("stages", stages);
  table->insert("schedule", schedule);
  table->insert("micro_batches", micro);
  table->insert("overlap", overlap);
  table->insert("partition", partition);
  e.table = table;
  return e;
}

// The grids this world size can form with a 4-layer model (stages = world / data <= 4).
std::vector<int> grid_data_counts() {
  std::vector<int> counts;
  for (int d = 1; d <= world().size; ++d)
    if (world().size % d == 0 && world().size / d <= 4) counts.push_back(d);
  return counts;
}

class MpiHybrid : public test_support::MpiStrategyTest {};

TEST_F(MpiHybrid, EveryGridMatchesSerial) {
  // 1,000 samples in batches of 30: 33 full batches and one of 10. Neither divides by
  // data x micro_batches: on 2 replicas 30 = 15+15 and each 15 = 4+4+4+3; on 4 replicas the
  // last batch is 3+3+2+2, fewer rows than micro-batches.
  const RunConfig config = config_for(30, 1000);
  const RunResult reference = serial(config);
  for (int data : grid_data_counts()) {
    for (const char* schedule : {"gpipe", "1f1b"}) {
      const RunResult parallel = run(config, hybrid(data, schedule));
      if (world().rank != 0) continue;
      SCOPED_TRACE(parallel.device);
      expect_parity(parallel, reference, 1000, 34);
      EXPECT_THAT(parallel.device, HasSubstr("hybrid " + std::to_string(data) + " data x " +
                                             std::to_string(world().size / data) + " stages"));
    }
  }
}

TEST_F(MpiHybrid, TinyBatchesLeaveSomeReplicasEmpty) {
  // Batch 3 on up to 6 replicas, and a last batch of 1 (99 = 32 x 3 + 3, 100 = 33 x 3 + 1):
  // replicas with no rows run no micro-batch but still join every gradient allreduce.
  const RunConfig config = config_for(3, 100);
  const RunResult reference = serial(config);
  for (int data : grid_data_counts()) {
    for (bool overlap : {true, false}) {
      const RunResult parallel = run(config, hybrid(data, "1f1b", 2, overlap));
      if (world().rank == 0) expect_parity(parallel, reference, 100, 34);
    }
  }
}

TEST_F(MpiHybrid, MomentumAndExplicitPartitionMatchSerial) {
  // Momentum and weight decay keep per-parameter state: every replica's stage keeps the same
  // state for its slice, because it applies the same summed gradient.
  if (world().size % 2 != 0) GTEST_SKIP() << "2 replicas need an even number of ranks (ctest runs 4 and 6)";
  RunConfig config = config_for(32, 800);
  config.train.sgd.momentum = 0.9f;
  config.train.sgd.weight_decay = 1e-4f;
  config.train.sgd.lr = 0.2f;
  const int data = 2, stages = world().size / 2;
  const std::string partition = stages == 1 ? "4" : stages == 2 ? "3,1" : stages == 3 ? "2,1,1" : "1,1,1,1";
  const RunResult reference = serial(config);
  const RunResult parallel = run(config, hybrid(data, "gpipe", 3, true, partition, stages));
  if (world().rank != 0) return;
  expect_parity(parallel, reference, 800, 25);
  std::string plus = partition;
  std::replace(plus.begin(), plus.end(), ',', '+');
  EXPECT_EQ(parallel.device, "CPU, " + std::to_string(world().size) + " MPI ranks (hybrid 2 data x " +
                                 std::to_string(stages) + " stages, pipeline " + plus +
                                 " layers, gpipe, 3 micro-batches, per-layer gradient allreduce)");
}

TEST_F(MpiHybrid, DegenerateGridsAreThePipelineAndDataParallelism) {
  // One replica is mpi-pipeline over the whole world, the same operations in the same order:
  // the same bits. World-size replicas of one stage with one micro-batch are mpi-data (the
  // same shards, the same kernel sequence, per-layer allreduces over the same ranks).
  const RunConfig config = config_for(30, 600);
  if (world().size <= 4) {
    StrategyEntry pipeline;
    pipeline.name = pipeline.label = "mpi-pipeline";
    auto table = std::make_shared<toml::table>();
    table->insert("micro_batches", 3);
    pipeline.table = table;
    const RunResult a = run(config, pipeline);
    const RunResult b = run(config, hybrid(1, "1f1b", 3));
    if (world().rank == 0) {
      EXPECT_EQ(a.final_parameters, b.final_parameters);
    }
  }
  StrategyEntry data_parallel;
  data_parallel.name = data_parallel.label = "mpi-data";
  data_parallel.table = std::make_shared<toml::table>();
  const RunResult a = run(config, data_parallel);
  const RunResult b = run(config, hybrid(world().size, "1f1b", 1));
  if (world().rank == 0) {
    EXPECT_EQ(a.final_parameters, b.final_parameters);
  }
}

TEST_F(MpiHybrid, GridThatDoesNotFitFailsOnEveryRankWithoutHanging) {
  // Every rank checks the grid against the world size before any message, so every rank
  // throws and none waits for a peer (a hang here would hit the ctest timeout).
  const RunConfig config = config_for(30, 300);
  const std::string ranks = std::to_string(world().size) + " MPI ranks";
  auto message = [&](const StrategyEntry& entry) {
    try {
      run(config, entry);
    } catch (const std::invalid_argument& e) {
      return std::string(e.what());
    }
    return std::string("no exception");
  };
  // 4 and 6 ranks: 5 replicas divide neither.
  EXPECT_THAT(message(hybrid(5)), AllOf(HasSubstr("data = 5"), HasSubstr("stages = 0"), HasSubstr(ranks)));
  // An explicit grid of the wrong size.
  EXPECT_THAT(message(hybrid(2, "1f1b", 4, true, "auto", 5)),
              AllOf(HasSubstr("data = 2"), HasSubstr("stages = 5"), HasSubstr("2 x 5 = 10"), HasSubstr(ranks)));
  // A grid that fits the world but has more stages than the model has Linear layers.
  if (world().size > 4) {
    EXPECT_THAT(message(hybrid(1)),
                AllOf(HasSubstr("only 4 Linear layers"), HasSubstr("1 x " + std::to_string(world().size))));
  }
  // Everyone is still in step: a collective after the failures completes.
  MPI_Barrier(MPI_COMM_WORLD);
}

TEST_F(MpiHybrid, RankZeroReportsTheWholeWorld) {
  if (world().size < 2) GTEST_SKIP() << "a 2-stage grid needs 2 or more ranks (ctest runs 4 and 6)";
  RunConfig config = config_for(64, 1536);
  config.train.epochs = 1;
  const RunResult reference = serial(config);
  const int data = world().size / 2;  // 2 stages
  const RunResult parallel = run(config, hybrid(data, "gpipe", 2));
  if (world().rank != 0) return;
  // Samples and steps are global, loss and accuracy summed over every replica's last stage.
  EXPECT_EQ(parallel.world_size, world().size);
  EXPECT_EQ(parallel.epochs[0].samples, 1536u);
  EXPECT_EQ(parallel.epochs[0].steps, 24u);
  EXPECT_NEAR(parallel.epochs[0].loss, reference.epochs[0].loss, 1e-5);
  EXPECT_NEAR(parallel.epochs[0].train_accuracy, reference.epochs[0].train_accuracy, 2.0 / 1536);
  EXPECT_GT(parallel.epochs[0].train_accuracy, 0.0);
}

}  // namespace
