// Data parallelism over MPI, run under `mpirun --oversubscribe -np N` by ctest (N = 2, 3, 4).
// Every rank runs every test; rank 0 checks the results against serial runs it makes itself.
#include <gmock/gmock.h>
#include <gtest/gtest.h>
#include <mpi.h>

#include <chrono>
#include <cstdio>
#include <memory>
#include <filesystem>

#include "../plugins/common/data_parallel.hpp"
#include "nnpar/comm_mpi.hpp"
#include "letters_fixture.hpp"
#include "parity.hpp"
#include "runner.hpp"

namespace fs = std::filesystem;
using namespace nnpar;

namespace {

WorldInfo world() { return {mpi::world_rank(), mpi::world_size()}; }

RunConfig config_for(int batch, std::size_t limit, const std::string& mode, int period = 1) {
  RunConfig config = test_support::letters_config(limit, 2000, {784, 48, 32, 26}, batch);
  config.train.epochs = 2;
  StrategyEntry parallel = test_support::strategy_entry("mpi-data");
  test_support::options_of(parallel).insert("mode", mode);
  test_support::options_of(parallel).insert("period", period);
  config.strategies = {test_support::strategy_entry("serial"), parallel};
  return config;
}

class MpiData : public ::testing::Test {
 protected:
  void SetUp() override {
    if (!test_support::have_letters()) GTEST_SKIP() << "dataset not found in " << test_support::letters_dir();
  }
  // Runs mpi-data on every rank and serial on rank 0; returns {serial, mpi-data} on rank 0.
  std::pair<RunResult, RunResult> run_both(const RunConfig& config) {
    const Datasets data = load_datasets(config.data);
    const auto initial = initial_parameters(config);
    RunResult parallel = run_strategy(config, config.strategies[1], plugins_, data, initial, {}, world());
    RunResult serial;
    if (world().rank == 0) serial = run_strategy(config, config.strategies[0], plugins_, data, initial);
    return {std::move(serial), std::move(parallel)};
  }
  PluginRegistry plugins_{{NNPAR_PLUGIN_DIR}};
};

}  // namespace

TEST_F(MpiData, SyncMatchesSerialWithUnevenShards) {
  // 1,000 samples in batches of 30: 33 full batches and one of 10; with 3 or 4 ranks the
  // shards of 30 and of 10 are uneven.
  const RunConfig config = config_for(30, 1000, "sync");
  auto [serial, parallel] = run_both(config);
  if (world().rank != 0) return;
  EXPECT_EQ(parallel.epochs[0].samples, 1000u) << "every sample exactly once per epoch";
  EXPECT_EQ(parallel.epochs[0].steps, 34u);
  EXPECT_NEAR(parallel.epochs[0].loss, serial.epochs[0].loss, 1e-5);
  EXPECT_EQ(parallel.epochs[0].train_accuracy, serial.epochs[0].train_accuracy);
  const ParityReport p = check_parity(parallel, serial, ParityConfig{});
  EXPECT_TRUE(p.pass) << p.reason;
  EXPECT_LT(p.max_abs_diff, 1e-5);
  std::printf("[rank 0 of %d] sync vs serial: max abs diff %.3e, rel %.3e\n", world().size,
              p.max_abs_diff, p.max_rel_diff);
}

TEST_F(MpiData, SyncWithoutOverlapGivesTheSameWeights) {
  RunConfig config = config_for(30, 600, "sync");
  const RunConfig overlapped = config;
  test_support::options_of(config.strategies[1]).insert_or_assign("overlap", false);
  const Datasets data = load_datasets(config.data);
  const auto initial = initial_parameters(config);
  const RunResult a = run_strategy(overlapped, overlapped.strategies[1], plugins_, data, initial, {}, world());
  const RunResult b = run_strategy(config, config.strategies[1], plugins_, data, initial, {}, world());
  if (world().rank != 0) return;
  // Per-layer and whole-buffer allreduce add the same numbers in the same rank order.
  EXPECT_EQ(a.final_parameters, b.final_parameters);
}

TEST_F(MpiData, BatchSmallerThanWorldStillMatches) {
  // Batch 3 on 4 ranks: one rank has no samples in every step and must still take part.
  const RunConfig config = config_for(3, 90, "sync");
  auto [serial, parallel] = run_both(config);
  if (world().rank != 0) return;
  const ParityReport p = check_parity(parallel, serial, ParityConfig{});
  EXPECT_TRUE(p.pass) << p.reason;
}

TEST_F(MpiData, LocalSgdReachesTheAccuracyMargin) {
  // Far enough into training that accuracy is no longer climbing steeply: early on, any
  // change of algorithm moves it by points. Measured: serial 57.50%, local SGD on 2/3/4
  // ranks 57.20/57.80/58.25%.
  RunConfig config = config_for(32, 12000, "local_sgd", 4);
  config.model.layer_sizes = {784, 64, 26};
  config.train.epochs = 5;
  auto [serial, parallel] = run_both(config);
  if (world().rank != 0) return;
  EXPECT_EQ(parallel.parity, ParityClass::approximate);
  const ParityReport p = check_parity(parallel, serial, ParityConfig{});
  std::printf("[rank 0 of %d] local SGD: %.2f%% vs serial %.2f%%\n", world().size,
              100 * parallel.final_test.accuracy, 100 * serial.final_test.accuracy);
  EXPECT_TRUE(p.pass) << p.reason;
}

TEST_F(MpiData, TensorParallelMatchesSerialWithUnevenSplits) {
  // 50, 37 and 26 output neurons do not divide by 3 or 4 ranks; batch 30 over 1,000 samples
  // ends with a partial batch.
  RunConfig config = test_support::letters_config(1000, 1000, {784, 50, 37, 26}, 30);
  config.strategies = {test_support::strategy_entry("serial"), test_support::strategy_entry("mpi-tensor")};
  auto [serial, parallel] = run_both(config);
  if (world().rank != 0) return;
  EXPECT_EQ(parallel.epochs[0].samples, 1000u);
  EXPECT_NEAR(parallel.epochs[0].loss, serial.epochs[0].loss, 1e-5);
  const ParityReport p = check_parity(parallel, serial, ParityConfig{});
  EXPECT_TRUE(p.pass) << p.reason;
  EXPECT_LT(p.max_abs_diff, 1e-5);
  std::printf("[rank 0 of %d] tensor parallel vs serial: max abs diff %.3e\n", world().size, p.max_abs_diff);
}

// A replica whose "weights" are set by hand, to check the weighted average alone.
class FixedReplica : public ReplicaEngine {
 public:
  explicit FixedReplica(std::vector<float> p) : params_(std::move(p)), grads_(params_.size()) {}
  float* parameters() override { return params_.data(); }
  float* gradients() override { return grads_.data(); }
  std::size_t parameter_count() const override { return params_.size(); }
  void load_batch(std::span<const std::uint32_t>) override {}
  void forward() override {}
  void backward(float, const std::function<void(int)>&) override {}
  void sgd_step() override {}
  void scale_parameters(float f) override {
    for (float& x : params_) x *= f;
  }
  std::pair<double, double> take_metrics() override { return {0, 0}; }
  void copy_parameters_to_host(std::span<float> out) override { std::copy(params_.begin(), params_.end(), out.begin()); }

 private:
  std::vector<float> params_, grads_;
};

TEST(WeightedAverage, RanksCountBySamplesProcessed) {
  // Rank r holds weights (r+1, -10(r+1)) and processed r+1 samples; rank 3 (if any) none.
  const int rank = world().rank, size = world().size;
  ModelSpec spec;
  spec.layer_sizes = {1, 1};  // 2 parameters: one weight, one bias
  TrainSettings train;
  StrategyOptions options({{"mode", std::string("local_sgd")}, {"period", std::int64_t{1}}, {"overlap", true}});
  StrategyContext context;
  context.model = &spec;
  context.train = &train;
  context.options = &options;
  const float v = float(rank + 1);
  DataParallelTrainer trainer(context, mpi::world(), std::make_unique<FixedReplica>(std::vector<float>{v, -10 * v}));
  const double samples = rank == 3 ? 0.0 : double(rank + 1);
  trainer.average_weights(samples);
  double num = 0, den = 0;
  for (int r = 0; r < size; ++r) {
    const double n = r == 3 ? 0.0 : double(r + 1);
    num += n * (r + 1);
    den += n;
  }
  std::vector<float> out(2);
  trainer.get_parameters(out);
  // 2 ranks: (1*1 + 2*2)/3 = 5/3; 3 ranks: 14/6; 4 ranks (rank 3 saw nothing): 14/6.
  EXPECT_NEAR(out[0], num / den, 1e-6);
  EXPECT_NEAR(out[1], -10 * num / den, 1e-5);
}

// A replaying engine that only records what the trainer hands it: each epoch's staged
// indices, and the next epoch's given ahead (stage_ahead) while this one runs.
class StagingRecorder final : public FixedReplica {
 public:
  StagingRecorder() : FixedReplica({0.0f, 0.0f}) {}
  std::size_t replay_steps() const override { return 4; }
  void stage_epoch(std::span<const std::uint32_t> indices, std::size_t stride, std::size_t reading) override {
    staged.push_back({indices.begin(), indices.end()});
    staged_at.push_back(indices.data());
    strides.push_back(stride);
    reading_steps.push_back(reading);
  }
  void stage_ahead(std::span<const std::uint32_t> indices) override {
    ahead.push_back({indices.begin(), indices.end()});
    ahead_at.push_back(indices.data());
  }
  void load_staged(int rows) override { rows_read += rows; }

  std::vector<std::vector<std::uint32_t>> staged, ahead;
  std::vector<const std::uint32_t*> staged_at, ahead_at;
  std::vector<std::size_t> strides, reading_steps;
  long rows_read = 0;
};

TEST(ReplayStaging, TheNextEpochIsStagedAheadWithTheSameIndices) {
  // 103 samples, global batch 10: 11 steps, the last of 3 rows (an empty shard on a 4th rank).
  const int rank = world().rank, size = world().size;
  ModelSpec spec;
  spec.layer_sizes = {1, 1};
  TrainSettings train;
  train.batch_size = 10;
  train.epochs = 3;
  train.seed = 7;
  Dataset data;
  data.count = 103;
  StrategyOptions options({{"mode", std::string("sync")}, {"period", std::int64_t{1}}, {"overlap", true}});
  StrategyContext context;
  context.model = &spec;
  context.train = &train;
  context.train_data = &data;
  context.options = &options;
  auto engine = std::make_unique<StagingRecorder>();
  StagingRecorder& seen = *engine;
  DataParallelTrainer trainer(context, mpi::world(), std::move(engine));
  for (int epoch = 0; epoch < train.epochs; ++epoch) {
    const EpochReport report = trainer.train_epoch(epoch);
    EXPECT_EQ(report.samples, 103u);
    EXPECT_EQ(report.steps, 11u);
  }
  ASSERT_EQ(seen.staged.size(), 3u);
  // Epochs 1 and 2 were given ahead during epochs 0 and 1; nothing after the last epoch.
  ASSERT_EQ(seen.ahead.size(), 2u);
  long expected_rows = 0;
  for (int epoch = 0; epoch < train.epochs; ++epoch) {
    const std::vector<std::uint32_t> order = epoch_order(data.count, train.seed, epoch, train.shuffle);
    std::vector<std::uint32_t> mine;
    std::size_t reading = 0;
    for (std::size_t begin = 0; begin < order.size(); begin += 10) {
      const std::size_t rows = std::min<std::size_t>(10, order.size() - begin);
      const Range r = shard_range(rows, rank, size);
      if (r.size() == 0) continue;
      mine.insert(mine.end(), order.begin() + std::ptrdiff_t(begin + r.begin), order.begin() + std::ptrdiff_t(begin + r.end));
      ++reading;
    }
    expected_rows += long(mine.size());
    EXPECT_EQ(seen.staged[epoch], mine) << "epoch " << epoch << ", rank " << rank;
    EXPECT_EQ(seen.strides[epoch], shard_range(10, rank, size).size());
    EXPECT_EQ(seen.reading_steps[epoch], reading);
    if (epoch > 0) {
      EXPECT_EQ(seen.ahead[epoch - 1], mine) << "epoch " << epoch << " given ahead";
      EXPECT_EQ(seen.ahead_at[epoch - 1], seen.staged_at[epoch]) << "epoch " << epoch << ": not the same vector";
    }
  }
  EXPECT_EQ(seen.rows_read, expected_rows);
}

// CommRequest::progress (the pipelines drive their sends with it): it completes what wait()
// completes, finishes an averaging allreduce exactly once, and is a no-op after completion.
TEST(MpiRequests, ProgressCompletesSendsAndAveragesOnce) {
  auto comm = mpi::world();
  const int rank = comm->rank(), size = comm->size();
  const auto give_up = std::chrono::steady_clock::now() + std::chrono::seconds(20);
  // A request that never completes fails the test and ends the job: the wait() and the
  // collective after it would otherwise wait for ever.
  auto until_done = [&](CommRequest& r) {
    while (!r.progress()) {
      if (std::chrono::steady_clock::now() < give_up) continue;
      ADD_FAILURE() << "progress() never completed the request";
      std::fflush(stdout);
      mpi::abort(1);
    }
  };
  // A 1 MB message (beyond any eager limit) from rank 0 to the last rank (itself on 1 rank:
  // the receive is posted before either is driven).
  std::vector<float> message(1 << 18), received(1 << 18);
  std::unique_ptr<CommRequest> send, recv;
  if (rank == 0) {
    for (std::size_t i = 0; i < message.size(); ++i) message[i] = float(i % 1000);
    send = comm->isend(message.data(), message.size(), DataType::f32, size - 1, 7);
  }
  if (rank == size - 1) recv = comm->irecv(received.data(), received.size(), DataType::f32, 0, 7);
  if (recv) {
    until_done(*recv);
    EXPECT_EQ(received[999], 999.0f);
    EXPECT_EQ(received.back(), float((received.size() - 1) % 1000));
  }
  if (send) {
    until_done(*send);
    EXPECT_TRUE(send->progress());  // done stays done
    send->wait();
  }
  // Average of rank + 1 over the ranks: (size + 1) / 2, divided once whether progress() or
  // wait() completes it.
  std::vector<double> value{double(rank + 1)};
  auto average = comm->allreduce_async(value.data(), 1, DataType::f64, ReduceOp::average);
  until_done(*average);
  average->wait();
  EXPECT_DOUBLE_EQ(value[0], (size + 1) / 2.0);
  comm->barrier();
}
