// Pipeline and data x pipeline parallelism over NCCL (nccl-pipeline, nccl-hybrid), and tensor
// parallelism (nccl-tensor), one rank per GPU, under `mpirun -np N` (N = 2 and 4; each skips visibly where the host has fewer GPUs
// than ranks, as CI does). Rank 0 checks every run against serial from the same weights.
#include <cuda_runtime_api.h>
#include <gmock/gmock.h>
#include <gtest/gtest.h>

#include <cstdio>
#include <cstring>
#include <tuple>

#include "mpi_fixture.hpp"

using namespace nnpar;
using ::testing::HasSubstr;

namespace {

int gpus() {
  int n = 0;
  if (cudaGetDeviceCount(&n) != cudaSuccess) return 0;
  return n;
}

RunConfig config_for(int batch, std::size_t limit) {
  // 4 Linear layers: up to 4 stages.
  RunConfig config = test_support::letters_config(limit, 1000, {784, 64, 48, 32, 26}, batch);
  config.train.epochs = 2;
  config.train.sgd.lr = 1.0f;
  config.strategies.push_back(test_support::strategy_entry("serial"));
  return config;
}

StrategyEntry entry(const std::string& plugin, const std::string& schedule, int micro, int data = 1) {
  StrategyEntry e = test_support::strategy_entry(plugin, plugin + "-" + schedule + "-" + std::to_string(micro));
  auto& o = test_support::options_of(e);
  o.insert("schedule", schedule);
  o.insert("micro_batches", micro);
  if (plugin == "nccl-hybrid") o.insert("data", data);
  return e;
}

class NcclPipeline : public test_support::MpiStrategyTest {
 protected:
  void SetUp() override {
    if (gpus() < mpi::world_size())
      GTEST_SKIP() << "needs one GPU per rank: " << gpus() << " GPU(s) for " << mpi::world_size() << " ranks";
    MpiStrategyTest::SetUp();
  }
};

TEST_F(NcclPipeline, BothSchedulesMatchSerialAndEachOther) {
  // 1,000 samples in batches of 30 (33 full batches, one of 10), 5 micro-batches of 6: with 4
  // stages, 1F1B with 5+ micro-batches is the case that deadlocked with fewer NCCL channels.
  const RunConfig config = config_for(30, 1000);
  const RunResult reference = serial(config);
  const RunResult gpipe = run(config, entry("nccl-pipeline", "gpipe", 5));
  const RunResult one_f_one_b = run(config, entry("nccl-pipeline", "1f1b", 5));
  if (mpi::world_rank() != 0) return;
  expect_parity(gpipe, reference, 1000, 34);
  expect_parity(one_f_one_b, reference, 1000, 34);
  EXPECT_THAT(one_f_one_b.device, HasSubstr("NCCL pipeline"));
  // Backwards run in ascending micro-batch order under both schedules: the same sums.
  ASSERT_EQ(gpipe.final_parameters.size(), one_f_one_b.final_parameters.size());
  EXPECT_EQ(0, std::memcmp(gpipe.final_parameters.data(), one_f_one_b.final_parameters.data(),
                           gpipe.final_parameters.size() * sizeof(float)))
      << "GPipe and 1F1B should give bit-identical weights";
}

TEST_F(NcclPipeline, MoreMicroBatchesThanRowsInTheLastBatch) {
  // 301 = 37 x 8 + 5: the last batch has 5 rows for 8 micro-batches.
  RunConfig config = config_for(8, 301);
  const RunResult reference = serial(config);
  const RunResult parallel = run(config, entry("nccl-pipeline", "1f1b", 8));
  if (mpi::world_rank() != 0) return;
  expect_parity(parallel, reference, 301, 38);
}

TEST_F(NcclPipeline, EveryHybridGridMatchesSerial) {
  const RunConfig config = config_for(30, 1000);
  const RunResult reference = serial(config);
  const int world = mpi::world_size();
  for (int data = 1; data <= world; ++data) {
    if (world % data != 0 || world / data > 4) continue;
    const RunResult parallel = run(config, entry("nccl-hybrid", "1f1b", 4, data));
    if (mpi::world_rank() != 0) continue;
    SCOPED_TRACE(parallel.device);
    std::printf("[%s] %s\n", parallel.label.c_str(), parallel.device.c_str());
    expect_parity(parallel, reference, 1000, 34);
    EXPECT_THAT(parallel.device, HasSubstr("hybrid " + std::to_string(data) + " data x " +
                                           std::to_string(world / data) + " stages"));
  }
}

TEST_F(NcclPipeline, LargeBatchesSplitOverReplicasMatchSerial) {
  // Big micro-batches are where the GPU GEMMs split over K with planned scratch; a replica's
  // micro-batches are cut from its shard of the batch, not from the batch (seen on 4 H200s:
  // scratch planned for the whole batch's shapes gave a 2 x 2 grid garbage at batch 4096).
  RunConfig config = config_for(2048, 5000);  // 2 full batches and one of 904
  config.train.epochs = 1;
  const RunResult reference = serial(config);
  const int world = mpi::world_size();
  for (int data = 2; data <= world; ++data) {
    if (world % data != 0 || world / data > 4) continue;
    const RunResult parallel = run(config, entry("nccl-hybrid", "gpipe", 2, data));
    if (mpi::world_rank() != 0) continue;
    SCOPED_TRACE(parallel.device);
    expect_parity(parallel, reference, 5000, 3);
  }
}

TEST_F(NcclPipeline, TensorParallelMatchesSerialInOneAndManySoftmaxBlocks) {
  // nccl-tensor on every rank's GPU, column split. Batch 30: the softmax runs in one block;
  // batch 1024: a warp per row over many blocks, with the scratch the plugin allocates.
  for (const auto& [batch, samples, steps] : {std::tuple{30, 1000, 34}, std::tuple{1024, 5000, 5}}) {
    RunConfig config = config_for(batch, std::size_t(samples));
    config.train.epochs = 2;
    const RunResult reference = serial(config);
    const RunResult parallel = run(config, test_support::strategy_entry("nccl-tensor"));
    if (mpi::world_rank() != 0) continue;
    SCOPED_TRACE(batch);
    expect_parity(parallel, reference, std::size_t(samples), std::size_t(steps));
    EXPECT_THAT(parallel.device, HasSubstr("tensor parallel"));
  }
}

}  // namespace
