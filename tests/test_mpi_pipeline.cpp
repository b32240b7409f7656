// Pipeline model parallelism over MPI, run under `mpirun --oversubscribe -np N` by ctest
// (N = 2, 3, 4). Every rank runs every test; rank 0 checks the results against serial runs it
// makes itself. The partition and schedule tests are pure and simply run on every rank.
#include <gmock/gmock.h>
#include <gtest/gtest.h>
#include <mpi.h>

#include <cstdio>
#include <filesystem>
#include <map>

#include "../plugins/common/pipeline.hpp"
#include "nnpar/comm_mpi.hpp"
#include "mpi_fixture.hpp"
#include "parity.hpp"
#include "runner.hpp"

namespace fs = std::filesystem;
using namespace nnpar;
using ::testing::HasSubstr;

namespace {


WorldInfo world() { return {mpi::world_rank(), mpi::world_size()}; }

ModelSpec model(std::vector<int> sizes) {
  ModelSpec spec;
  spec.layer_sizes = std::move(sizes);
  return spec;
}

// ---------------------------------------------------------------------------------------------
// Partitioning

TEST(PipelinePartition, AutoBalancesTheEstimatedCompute) {
  // Costs (GEMMs x in*out): 2x200704, 3x65536, 3x65536, 3x6656. The first layer alone is
  // the slowest stage in every split of 3 or 4; among the splits that keep it alone, the
  // most even one wins (1,1,2 rather than 1,2,1).
  const ModelSpec wide = model({784, 256, 256, 256, 26});
  EXPECT_EQ(auto_partition(wide, 1), (std::vector<int>{4}));
  EXPECT_EQ(auto_partition(wide, 2), (std::vector<int>{1, 3}));
  EXPECT_EQ(auto_partition(wide, 3), (std::vector<int>{1, 1, 2}));
  EXPECT_EQ(auto_partition(wide, 4), (std::vector<int>{1, 1, 1, 1}));
  const ModelSpec even = model({100, 100, 100, 100, 100});
  EXPECT_EQ(auto_partition(even, 2), (std::vector<int>{2, 2}));
  // The first layer skips the input-gradient GEMM: 2x(784x256) balances 3x(256x480 + 480x26).
  EXPECT_EQ(linear_cost(wide, 0), 2.0 * 784 * 256);
  EXPECT_EQ(linear_cost(wide, 1), 3.0 * 256 * 256);
  EXPECT_EQ(auto_partition(model({784, 256, 480, 26}), 2), (std::vector<int>{1, 2}));
  EXPECT_EQ(auto_partition(model({784, 128, 784, 128, 26}), 3), (std::vector<int>{1, 1, 2}));
}

TEST(PipelinePartition, ErrorsNameTheOptionAndTheNumbers) {
  const ModelSpec four = model({784, 64, 48, 32, 26});
  EXPECT_EQ(parse_partition(" 2, 1 ,1", four, 3), (std::vector<int>{2, 1, 1}));
  auto message = [&](const std::string& text, int stages) {
    try {
      resolve_partition(text, four, stages);
    } catch (const std::invalid_argument& e) {
      return std::string(e.what());
    }
    return std::string("no exception");
  };
  EXPECT_THAT(message("3,3", 2), AllOf(HasSubstr("partition"), HasSubstr("sum to 6"), HasSubstr("has 4")));
  EXPECT_THAT(message("3,3", 3), AllOf(HasSubstr("partition"), HasSubstr("lists 2 stages"), HasSubstr("has 3")));
  EXPECT_THAT(message("2,0,2", 3), AllOf(HasSubstr("partition"), HasSubstr("'0'")));
  EXPECT_THAT(message("2,,2", 3), HasSubstr("'' is not a positive number"));
  EXPECT_THAT(message("auto", 5), AllOf(HasSubstr("partition"), HasSubstr("5 pipeline stages"), HasSubstr("only 4")));
  EXPECT_THAT(message("1,1,1,1,1", 5), HasSubstr("only 4"));
}

// ---------------------------------------------------------------------------------------------
// Schedules

std::string ops_text(const std::vector<PipelineOp>& ops) {
  std::string s;
  for (const auto& op : ops) {
    s += op.forward ? 'F' : 'B';
    s += std::to_string(op.micro) + ' ';
  }
  return s;
}

TEST(PipelineSchedules, OrderOfOperations) {
  using enum PipelineSchedule;
  EXPECT_EQ(ops_text(schedule_ops(gpipe, 1, 3, 4)), "F0 F1 F2 F3 B0 B1 B2 B3 ");
  EXPECT_EQ(ops_text(schedule_ops(one_f_one_b, 0, 3, 4)), "F0 F1 F2 B0 F3 B1 B2 B3 ");
  EXPECT_EQ(ops_text(schedule_ops(one_f_one_b, 1, 3, 4)), "F0 F1 B0 F2 B1 F3 B2 B3 ");
  EXPECT_EQ(ops_text(schedule_ops(one_f_one_b, 2, 3, 4)), "F0 B0 F1 B1 F2 B2 F3 B3 ");
  // Fewer micro-batches than the warm-up: all forwards, then all backwards.
  EXPECT_EQ(ops_text(schedule_ops(one_f_one_b, 0, 4, 2)), "F0 F1 B0 B1 ");
}

// Runs every stage's operation list against the data dependencies (F on stage s needs F on
// s-1; B on s needs B on s+1), each forward taking `tf` and each backward `tb` time units and
// messages taking none. Throws on a deadlock.
struct Simulation {
  int makespan = 0;
  std::vector<int> max_in_flight;
  std::vector<std::string> rows;  // an ASCII timeline per stage, one character per time unit
};
Simulation simulate(PipelineSchedule schedule, int stages, int micro, int tf, int tb) {
  std::vector<std::vector<PipelineOp>> ops(stages);
  for (int s = 0; s < stages; ++s) ops[s] = schedule_ops(schedule, s, stages, micro);
  std::vector<std::vector<int>> f_done(stages, std::vector<int>(micro, -1)), b_done = f_done;
  std::vector<std::size_t> next(stages, 0);
  std::vector<int> free_at(stages, 0), in_flight(stages, 0);
  Simulation sim{0, std::vector<int>(stages, 0), std::vector<std::string>(stages)};
  for (bool progress = true; progress;) {
    progress = false;
    for (int s = 0; s < stages; ++s) {
      if (next[s] == ops[s].size()) continue;
      const PipelineOp op = ops[s][next[s]];
      const int ready = op.forward ? (s == 0 ? 0 : f_done[s - 1][op.micro])
                                   : (s == stages - 1 ? f_done[s][op.micro] : b_done[s + 1][op.micro]);
      if (ready < 0) continue;
      const int start = std::max(free_at[s], ready), length = op.forward ? tf : tb;
      // Two characters per time unit: "F0" / "B0" busy with micro-batch 0, ".." idle.
      sim.rows[s].resize(2 * std::size_t(start), '.');
      for (int u = 0; u < length; ++u) {
        sim.rows[s] += op.forward ? 'F' : 'B';
        sim.rows[s] += std::to_string(op.micro);
      }
      free_at[s] = start + length;
      (op.forward ? f_done : b_done)[s][op.micro] = free_at[s];
      in_flight[s] += op.forward ? 1 : -1;
      sim.max_in_flight[s] = std::max(sim.max_in_flight[s], in_flight[s]);
      ++next[s];
      progress = true;
    }
  }
  for (int s = 0; s < stages; ++s) {
    if (next[s] != ops[s].size()) throw std::runtime_error("deadlock at stage " + std::to_string(s));
    sim.makespan = std::max(sim.makespan, free_at[s]);
  }
  return sim;
}

TEST(PipelineSchedules, IdealBubbleIsTheFormulaForBothSchedules) {
  for (PipelineSchedule schedule : {PipelineSchedule::gpipe, PipelineSchedule::one_f_one_b}) {
    for (int stages = 1; stages <= 5; ++stages) {
      for (int micro = 1; micro <= 9; ++micro) {
        for (auto [tf, tb] : {std::pair{1, 1}, std::pair{1, 2}}) {
          const Simulation sim = simulate(schedule, stages, micro, tf, tb);
          // Every stage is busy M*(tf+tb) of a makespan (M+S-1)*(tf+tb).
          EXPECT_EQ(sim.makespan, (micro + stages - 1) * (tf + tb)) << stages << "x" << micro;
          const double idle = 1.0 - double(micro * (tf + tb)) / sim.makespan;
          EXPECT_NEAR(idle, ideal_bubble_fraction(stages, micro), 1e-12);
          for (int s = 0; s < stages; ++s) {
            EXPECT_LE(sim.max_in_flight[s], schedule_slots(schedule, s, stages, micro));
            if (schedule == PipelineSchedule::one_f_one_b) {
              EXPECT_LE(sim.max_in_flight[s], stages - s) << "1F1B holds at most S - s micro-batches";
            }
          }
        }
      }
    }
  }
  if (world().rank == 0) {
    // The timelines in docs/pipeline.md: 3 stages x 4 micro-batches, backward twice a forward.
    for (auto [name, schedule] : {std::pair{"gpipe", PipelineSchedule::gpipe}, {"1f1b", PipelineSchedule::one_f_one_b}}) {
      const Simulation sim = simulate(schedule, 3, 4, 1, 2);
      std::printf("%s, 3 stages x 4 micro-batches (F = 1, B = 2 time units):\n", name);
      for (int s = 0; s < 3; ++s) std::printf("  stage %d |%s\n", s, sim.rows[s].c_str());
    }
  }
}

// ---------------------------------------------------------------------------------------------
// Training against serial

RunConfig config_for(int batch, std::size_t limit, std::vector<int> layers) {
  RunConfig config = test_support::letters_config(limit, 1000, std::move(layers), batch);
  config.train.epochs = 2;
  config.train.sgd.lr = 1.0f;
  config.eval_every = 0;
  config.strategies.push_back(test_support::strategy_entry("serial"));
  return config;
}

StrategyEntry pipeline(const std::string& schedule, int micro, const std::string& partition = "auto") {
  StrategyEntry e;
  e.name = "mpi-pipeline";
  e.label = "pipeline-" + schedule + "-" + std::to_string(micro);
  auto table = std::make_shared<toml::table>();
  table->insert("schedule", schedule);
  table->insert("micro_batches", micro);
  table->insert("partition", partition);
  e.table = table;
  return e;
}

const std::vector<int> kFourLayers{784, 64, 48, 32, 26};

class MpiPipeline : public test_support::MpiStrategyTest {};

TEST_F(MpiPipeline, BothSchedulesMatchSerialAndEachOther) {
  // 1,000 samples in batches of 30: 33 full batches and one of 10, so micro-batches of a
  // batch are uneven for 3 and 4 (30 = 8+8+7+7, 10 = 3+3+2+2).
  const RunConfig config = config_for(30, 1000, kFourLayers);
  const RunResult reference = serial(config);
  for (int micro : {1, 3, 4}) {
    const RunResult gpipe = run(config, pipeline("gpipe", micro));
    const RunResult one_f_one_b = run(config, pipeline("1f1b", micro));
    if (world().rank != 0) continue;
    expect_parity(gpipe, reference, 1000, 34);
    expect_parity(one_f_one_b, reference, 1000, 34);
    // Same micro-batches, same kernels, backwards in the same (ascending) order on every
    // stage: only the timing differs, so the weights are the same bits.
    EXPECT_EQ(gpipe.final_parameters, one_f_one_b.final_parameters) << micro << " micro-batches";
    EXPECT_EQ(gpipe.epochs.back().loss, one_f_one_b.epochs.back().loss);
  }
}

TEST_F(MpiPipeline, ExplicitPartitionWithMomentumMatchesSerial) {
  // Momentum and weight decay keep per-parameter state: each stage keeps it for its slice.
  RunConfig config = config_for(32, 800, kFourLayers);
  config.train.sgd.momentum = 0.9f;
  config.train.sgd.weight_decay = 1e-4f;
  config.train.sgd.lr = 0.2f;
  const std::map<int, std::string> partitions{{1, "4"}, {2, "3,1"}, {3, "2,1,1"}, {4, "1,1,1,1"}};
  const std::string partition = partitions.at(world().size);
  const RunResult reference = serial(config);
  const RunResult parallel = run(config, pipeline("1f1b", 3, partition));
  if (world().rank != 0) return;
  expect_parity(parallel, reference, 800, 25);
  std::string plus = partition;
  std::replace(plus.begin(), plus.end(), ',', '+');
  EXPECT_EQ(parallel.device, "CPU, " + std::to_string(world().size) + (world().size == 1 ? " MPI rank" : " MPI ranks") +
                                 " (pipeline " + plus + " layers, 1f1b, 3 micro-batches)");
}

TEST_F(MpiPipeline, BatchSmallerThanMicroBatchesStillMatches) {
  // Batch 3 with 4 micro-batches: three micro-batches of one row each.
  const RunConfig config = config_for(3, 90, kFourLayers);
  const RunResult reference = serial(config);
  for (const char* schedule : {"gpipe", "1f1b"}) {
    const RunResult parallel = run(config, pipeline(schedule, 4));
    if (world().rank == 0) expect_parity(parallel, reference, 90, 30);
  }
}

TEST_F(MpiPipeline, BadPartitionFailsOnEveryRankWithoutHanging) {
  // Every rank validates the same plan before exchanging anything, so every rank throws and
  // none waits for a peer (a hang here would hit the ctest timeout).
  const RunConfig config = config_for(30, 300, kFourLayers);
  try {
    run(config, pipeline("1f1b", 4, "3,3"));
    ADD_FAILURE() << "no exception for partition 3,3";
  } catch (const std::invalid_argument& e) {
    EXPECT_THAT(e.what(), HasSubstr("partition"));
    EXPECT_THAT(e.what(), world().size == 2 ? HasSubstr("sum to 6") : HasSubstr("lists 2 stages"));
  }
  // One Linear layer fewer than ranks (np 4: a 3-layer model on 4 stages). One rank has no
  // such model (a model needs a Linear layer).
  if (world().size == 1) return;
  std::vector<int> short_model{784};
  for (int i = 1; i < world().size - 1; ++i) short_model.push_back(64 >> i);
  short_model.push_back(26);
  const RunConfig too_short = config_for(30, 300, short_model);
  try {
    run(too_short, pipeline("gpipe", 2));
    ADD_FAILURE() << "no exception for " << world().size << " stages";
  } catch (const std::invalid_argument& e) {
    EXPECT_THAT(e.what(), HasSubstr(std::to_string(world().size) + " pipeline stages"));
    EXPECT_THAT(e.what(), HasSubstr("only " + std::to_string(world().size - 1) + " Linear layers"));
  }
  // Everyone is still in step: a collective after the failures completes.
  MPI_Barrier(MPI_COMM_WORLD);
}

TEST_F(MpiPipeline, ReportsTheWholeWorldAndMeasuresTheBubble) {
  RunConfig config = config_for(64, 1536, kFourLayers);
  config.train.epochs = 1;
  const RunResult reference = serial(config);
  const int micro = 4;
  const RunResult parallel = run(config, pipeline("gpipe", micro));
  // Each rank's own phases: idle / total is its measured bubble.
  const PhaseTimes& t = parallel.phases;
  double mine[3] = {t.idle / t.total(), t.total(), parallel.train_seconds};
  std::vector<double> all(3 * world().size);
  MPI_Gather(mine, 3, MPI_DOUBLE, all.data(), 3, MPI_DOUBLE, 0, MPI_COMM_WORLD);
  EXPECT_GE(mine[0], 0.0);
  EXPECT_LE(mine[0], 1.0);
  // The phases account for the epoch: nothing large happens outside them.
  EXPECT_LE(t.total(), parallel.train_seconds * 1.0001 + 1e-6);
  EXPECT_GE(t.total(), parallel.train_seconds * 0.9);
  if (world().rank != 0) return;
  // Loss and accuracy come from the last stage, samples and steps are global.
  EXPECT_EQ(parallel.epochs[0].samples, 1536u);
  EXPECT_EQ(parallel.epochs[0].steps, 24u);
  EXPECT_NEAR(parallel.epochs[0].loss, reference.epochs[0].loss, 1e-5);
  EXPECT_GT(parallel.epochs[0].train_accuracy, 0.0);
  std::printf("[rank 0 of %d] gpipe, %d micro-batches: ideal bubble (S-1)/(M+S-1) = %.3f; measured idle/total:",
              world().size, micro, ideal_bubble_fraction(world().size, micro));
  for (int r = 0; r < world().size; ++r) std::printf(" stage %d %.3f", r, all[3 * r]);
  std::printf("\n");
  // The harness gathered the same per-rank split into rank 0's result (for the JSON); on one
  // rank there is nothing to gather, and its own phases are the run's.
  if (world().size == 1) {
    EXPECT_TRUE(parallel.rank_phases.empty());
    return;
  }
  ASSERT_EQ(parallel.rank_phases.size(), std::size_t(world().size));
  for (int r = 0; r < world().size; ++r) {
    EXPECT_DOUBLE_EQ(parallel.rank_phases[r].total(), all[3 * r + 1]) << "rank " << r;
    EXPECT_NEAR(parallel.rank_phases[r].idle / parallel.rank_phases[r].total(), all[3 * r], 1e-12) << "rank " << r;
  }
}

}  // namespace
