// Data parallelism over NCCL, under `mpirun -np 2` (one rank per GPU). Skips visibly where
// there are fewer GPUs than ranks (CI has none).
#include <cuda_runtime_api.h>
#include <gmock/gmock.h>
#include <gtest/gtest.h>
#include <mpi.h>

#include <algorithm>
#include <cmath>
#include <cstdint>
#include <cstdlib>
#include <filesystem>
#include <string>
#include <tuple>
#include <variant>

#include "nnpar/comm_mpi.hpp"
#include "nnpar/comm_nccl.hpp"
#include "letters_fixture.hpp"
#include "parity.hpp"
#include "runner.hpp"

namespace fs = std::filesystem;
using namespace nnpar;

namespace {

int gpus() {
  int n = 0;
  if (cudaGetDeviceCount(&n) != cudaSuccess) return 0;
  return n;
}

class NcclData : public ::testing::Test {
 protected:
  void SetUp() override {
    if (gpus() < mpi::world_size())
      GTEST_SKIP() << "needs one GPU per rank: " << gpus() << " GPU(s) for " << mpi::world_size() << " ranks";
    if (!test_support::have_letters()) GTEST_SKIP() << "dataset not found in " << test_support::letters_dir();
  }
};

RunConfig config_for(const std::string& mode, int batch) {
  RunConfig config = test_support::letters_config(10000, 3000, {784, 256, 256, 26}, batch);
  config.train.epochs = 2;
  StrategyEntry parallel = test_support::strategy_entry("nccl-data");
  test_support::options_of(parallel).insert("mode", mode);
  test_support::options_of(parallel).insert("period", 4);
  config.strategies = {test_support::strategy_entry("serial"), parallel};
  return config;
}

std::pair<RunResult, RunResult> run_both(const RunConfig& config) {
  PluginRegistry plugins({NNPAR_PLUGIN_DIR});
  const Datasets data = load_datasets(config.data);
  const auto initial = initial_parameters(config);
  const WorldInfo world{mpi::world_rank(), mpi::world_size()};
  RunResult parallel = run_strategy(config, config.strategies[1], plugins, data, initial, {}, world);
  RunResult serial;
  if (world.rank == 0) serial = run_strategy(config, config.strategies[0], plugins, data, initial);
  return {std::move(serial), std::move(parallel)};
}

}  // namespace

TEST_F(NcclData, SyncMatchesSerialWithAnUnevenLastBatch) {
  // 10,000 = 78 x 128 + 16: the last global batch is split 8 + 8, the others 64 + 64.
  auto [serial, parallel] = run_both(config_for("sync", 128));
  if (mpi::world_rank() != 0) return;
  EXPECT_EQ(parallel.epochs[0].samples, 10000u);
  const ParityReport p = check_parity(parallel, serial, ParityConfig{});
  std::printf("[nccl-data sync, %d GPUs] max abs diff %.3e, rel %.3e, acc %.2f%% vs %.2f%%\n", mpi::world_size(),
              p.max_abs_diff, p.max_rel_diff, 100 * parallel.final_test.accuracy, 100 * serial.final_test.accuracy);
  EXPECT_TRUE(p.pass) << p.reason;
}

TEST_F(NcclData, OddBatchSmallerThanWorldStillMatches) {
  // Batch 3 over 2 GPUs (shards 2 + 1; the last batch of 1 leaves one GPU without samples).
  // Few steps: thousands of SGD steps at batch 3 and lr 0.5 amplify float rounding
  // differences into visibly different weights (seen: 10,000 samples gave max |dw| 1.45).
  RunConfig config = config_for("sync", 3);
  config.data.options.limit = 301;
  auto [serial, parallel] = run_both(config);
  if (mpi::world_rank() != 0) return;
  const ParityReport p = check_parity(parallel, serial, ParityConfig{});
  EXPECT_TRUE(p.pass) << p.reason;
}

TEST_F(NcclData, LocalSgdReachesTheAccuracyMargin) {
  // The margin (1 pp after 4 epochs of 10,000 samples, period 4) is the 2-GPU claim. On 4
  // ranks the same run ends 3.5 pp below serial (29.5% vs 33.0%, 4 x H100,
  // docs/results/raw/device-2026-11-27c/callQ): local SGD's drift grows with the ranks.
  if (mpi::world_size() > 2) GTEST_SKIP() << "the accuracy margin is asked of 2 ranks, not " << mpi::world_size();
  RunConfig config = config_for("local_sgd", 64);
  config.train.epochs = 4;
  auto [serial, parallel] = run_both(config);
  if (mpi::world_rank() != 0) return;
  EXPECT_EQ(parallel.parity, ParityClass::approximate);
  const ParityReport p = check_parity(parallel, serial, ParityConfig{});
  std::printf("[nccl-data local_sgd] acc %.2f%% vs serial %.2f%%\n", 100 * parallel.final_test.accuracy,
              100 * serial.final_test.accuracy);
  EXPECT_TRUE(p.pass) << p.reason;
}

namespace {

// nccl-data in sync mode with the given end-of-step options (symmetric window, layer 0 in
// row blocks, per-bucket updates), on the config's data.
RunResult run_sync(RunConfig config, bool symmetric, int chunks, bool bucket_update) {
  StrategyEntry entry = test_support::strategy_entry("nccl-data");
  auto& options = test_support::options_of(entry);
  options.insert("mode", "sync");
  options.insert("symmetric", symmetric);
  options.insert("layer0_chunks", chunks);
  options.insert("bucket_update", bucket_update);
  config.strategies = {entry};
  PluginRegistry plugins({NNPAR_PLUGIN_DIR});
  const Datasets data = load_datasets(config.data);
  const auto initial = initial_parameters(config);
  return run_strategy(config, entry, plugins, data, initial, {}, WorldInfo{mpi::world_rank(), mpi::world_size()});
}

}  // namespace

TEST_F(NcclData, LayerZeroInRowBlocksGivesTheSameWeights) {
  // The row blocks are the same sums in the same order, and the per-bucket update the same
  // element-wise step: bit-identical to the one-product, one-update step. 3 blocks: uneven
  // (256 rows = 85 + 85 + 86), and the last bucket carries the bias.
  RunConfig config = config_for("sync", 128);
  config.train.epochs = 1;
  const RunResult plain = run_sync(config, false, 1, false);
  const RunResult blocks = run_sync(config, false, 3, true);
  if (mpi::world_rank() != 0) return;
  const ParityReport p = check_parity(blocks, plain, ParityConfig{});
  std::printf("[nccl-data sync, layer 0 in 3 blocks + per-bucket update] max abs diff %.3e\n", p.max_abs_diff);
  EXPECT_TRUE(p.weights_checked);
  EXPECT_EQ(p.max_abs_diff, 0.0);
  EXPECT_EQ(blocks.final_test.accuracy, plain.final_test.accuracy);
}

TEST_F(NcclData, SymmetricWindowWithRowBlocksMatchesSerial) {
  // Every end-of-step option at once (the window falls back to plain memory where NCCL
  // cannot register it; the run says which in its device description).
  RunConfig config = config_for("sync", 128);
  const RunResult parallel = run_sync(config, true, 4, true);
  if (mpi::world_rank() != 0) return;
  PluginRegistry plugins({NNPAR_PLUGIN_DIR});
  const Datasets data = load_datasets(config.data);
  const RunResult serial = run_strategy(config, test_support::strategy_entry("serial"), plugins, data,
                                        initial_parameters(config));
  const ParityReport p = check_parity(parallel, serial, ParityConfig{});
  std::printf("[%s, layer 0 in 4 blocks] vs serial: max abs diff %.3e, acc %.2f%% vs %.2f%%\n",
              parallel.device.c_str(), p.max_abs_diff, 100 * parallel.final_test.accuracy,
              100 * serial.final_test.accuracy);
  EXPECT_TRUE(p.pass) << p.reason;
}

namespace {

// nccl-data in sync mode with the given extra options (TOML values).
using OptionValueList = std::initializer_list<std::pair<const char*, std::variant<bool, std::int64_t, std::string>>>;
RunResult run_sync_with(RunConfig config, OptionValueList options) {
  StrategyEntry entry = test_support::strategy_entry("nccl-data");
  auto& table = test_support::options_of(entry);
  table.insert("mode", "sync");
  for (const auto& [key, value] : options) std::visit([&, k = key](const auto& v) { table.insert_or_assign(k, v); }, value);
  config.strategies = {entry};
  PluginRegistry plugins({NNPAR_PLUGIN_DIR});
  const Datasets data = load_datasets(config.data);
  const auto initial = initial_parameters(config);
  return run_strategy(config, entry, plugins, data, initial, {}, WorldInfo{mpi::world_rank(), mpi::world_size()});
}

// Weights of two nccl-data runs: bit-identical on 2 ranks (the fused kernel adds rank 0's
// gradient to rank 1's, as NCCL's two-rank allreduce does, then the same sgd_one); on more
// ranks NCCL's ring sums in another order, so only the exact class is asked for.
void expect_same_weights(const RunResult& fused, const RunResult& nccl, const char* what) {
  const ParityReport p = check_parity(fused, nccl, ParityConfig{});
  std::printf("[%s, %s] vs reduce = nccl: max abs diff %.3e\n", fused.device.c_str(), what, p.max_abs_diff);
  EXPECT_TRUE(p.weights_checked);
  if (mpi::world_size() <= 2) {
    EXPECT_EQ(p.max_abs_diff, 0.0);
    EXPECT_EQ(fused.final_test.accuracy, nccl.final_test.accuracy);
  } else {
    EXPECT_TRUE(p.pass) << p.reason;
  }
}

// Two runs' final weights and accuracy, equal bit for bit (compared directly: the parity
// check skips the weights of local SGD, approximate class).
void expect_bit_identical(const RunResult& a, const RunResult& b, const char* label, const char* what) {
  EXPECT_EQ(a.final_parameters.size(), b.final_parameters.size()) << what;
  EXPECT_FALSE(a.final_parameters.empty()) << what;
  if (a.final_parameters.size() != b.final_parameters.size() || a.final_parameters.empty()) return;
  double max_abs_diff = 0;
  for (std::size_t i = 0; i < a.final_parameters.size(); ++i)
    max_abs_diff = std::max(max_abs_diff, double(std::abs(a.final_parameters[i] - b.final_parameters[i])));
  std::printf("[nccl-data %s, %s, %d GPUs]: max abs diff %.3e\n", label, what, mpi::world_size(), max_abs_diff);
  EXPECT_EQ(max_abs_diff, 0.0) << what;
  EXPECT_EQ(a.final_test.accuracy, b.final_test.accuracy) << what;
}

}  // namespace

TEST_F(NcclData, FusedP2pReduceGivesTheNcclWeightsAndMatchesSerial) {
  // 10,000 = 78 x 128 + 16: 79 steps an epoch, an odd count, so the second epoch's graph
  // starts on the other gradient buffer (its own recording).
  RunConfig config = config_for("sync", 128);
  const RunResult fused = run_sync_with(config, {{"reduce", std::string("fused_p2p")}});
  const RunResult nccl = run_sync_with(config, {{"reduce", std::string("nccl")}});
  if (mpi::world_rank() != 0) return;
  if (mpi::world_size() > 1 && fused.device.find("fused_p2p unavailable") != std::string::npos)
    std::printf("[nccl-data] note: no P2P here, the fused reduce fell back to NCCL: %s\n", fused.device.c_str());
  expect_same_weights(fused, nccl, "2 epochs of 79 steps, graphs");
  PluginRegistry plugins({NNPAR_PLUGIN_DIR});
  const Datasets data = load_datasets(config.data);
  const RunResult serial = run_strategy(config, test_support::strategy_entry("serial"), plugins, data,
                                        initial_parameters(config));
  const ParityReport p = check_parity(fused, serial, ParityConfig{});
  std::printf("[%s] vs serial: max abs diff %.3e\n", fused.device.c_str(), p.max_abs_diff);
  EXPECT_TRUE(p.pass) << p.reason;
}

TEST_F(NcclData, FusedP2pReduceWithShortGraphsPlainLaunchesAndEmptyShards) {
  // Batch 3 (shards 2 + 1, the last batch of 1 leaves a rank without samples: its zero
  // gradient still takes part), graphs of 5 steps (the buffer parity changes between
  // replays of one recording), and plain launches. On 4 ranks, rank 3 has no samples in any
  // step: its recordings hold only zero gradients and the exchange (before nccl-data 1.9,
  // reduce = "nccl" hung there: such a step joined a side stream its capture never forked).
  RunConfig config = config_for("sync", 3);
  config.data.options.limit = 301;
  const RunResult nccl = run_sync_with(config, {{"reduce", std::string("nccl")}});
  const RunResult short_graphs =
      run_sync_with(config, {{"reduce", std::string("fused_p2p")}, {"graph_steps", std::int64_t{5}}});
  const RunResult plain = run_sync_with(config, {{"reduce", std::string("fused_p2p")}, {"graph", false}});
  if (mpi::world_rank() != 0) return;
  expect_same_weights(short_graphs, nccl, "batch 3, graphs of 5 steps");
  expect_same_weights(plain, nccl, "batch 3, plain launches");
}

TEST_F(NcclData, PushP2pReduceGivesThePulledWeights) {
  // push_p2p moves the gradients while the products run (each rank writes its slot in every
  // peer's memory) and sums local slots; fused_p2p reads the peers' buffers at the step's
  // end. The same values added in rank order: the same weights bit for bit, on any number
  // of ranks. Batch 128 (79 steps an epoch: the odd count switches buffer parity between
  // epochs), batch 3 with graphs of 5 (a rank's last shard is empty: its zero gradient must
  // reach the peers too) and plain launches.
  RunConfig config = config_for("sync", 128);
  RunConfig odd = config_for("sync", 3);
  odd.data.options.limit = 301;
  const RunResult push = run_sync_with(config, {});  // reduce = "auto", which pushes where P2P works
  const RunResult pull = run_sync_with(config, {{"reduce", std::string("fused_p2p")}});
  const RunResult nccl = run_sync_with(config, {{"reduce", std::string("nccl")}});
  const RunResult odd_push = run_sync_with(odd, {{"reduce", std::string("push_p2p")}, {"graph_steps", std::int64_t{5}}});
  const RunResult odd_pull = run_sync_with(odd, {{"reduce", std::string("fused_p2p")}, {"graph_steps", std::int64_t{5}}});
  const RunResult plain_push = run_sync_with(odd, {{"reduce", std::string("push_p2p")}, {"graph", false}});
  if (mpi::world_rank() != 0) return;
  if (mpi::world_size() > 1) {
    if (push.device.find("push_p2p unavailable") != std::string::npos)
      std::printf("[nccl-data] note: no P2P here, push_p2p fell back to NCCL: %s\n", push.device.c_str());
    else
      EXPECT_THAT(push.device, ::testing::HasSubstr("push_p2p)"));
  }
  for (const auto& [a, b, what] : {std::tuple{&push, &pull, "batch 128, graphs"},
                                   std::tuple{&odd_push, &odd_pull, "batch 3, graphs of 5"},
                                   std::tuple{&plain_push, &odd_pull, "batch 3, plain launches"}})
    expect_bit_identical(*a, *b, "push_p2p vs fused_p2p", what);
  expect_same_weights(push, nccl, "push_p2p, 2 epochs of 79 steps, graphs");
}

TEST_F(NcclData, FusedP2pReduceRefusesOverlap) {
  RunConfig config = config_for("sync", 128);
  config.train.epochs = 1;
  try {
    run_sync_with(config, {{"reduce", std::string("fused_p2p")}, {"overlap", true}});
    ADD_FAILURE() << "overlap = true with reduce = fused_p2p was accepted";
  } catch (const std::exception& e) {
    EXPECT_THAT(e.what(), ::testing::HasSubstr("overlap = true needs reduce = \"nccl\""));
  }
}

TEST_F(NcclData, FusedLogitsMatchSerialInEveryMode) {
  // fuse_logits moves the last Linear's forward (and, head, its input gradient) into the
  // softmax kernel, as in the cuda strategy; every mode must stay in serial's exact class,
  // including the uneven last batch (10,000 = 78 x 128 + 16).
  RunConfig config = config_for("sync", 128);
  PluginRegistry plugins({NNPAR_PLUGIN_DIR});
  const Datasets data = load_datasets(config.data);
  RunResult serial;
  if (mpi::world_rank() == 0)
    serial = run_strategy(config, test_support::strategy_entry("serial"), plugins, data, initial_parameters(config));
  for (const char* mode : {"off", "softmax", "head"}) {
    const RunResult run = run_sync_with(config, {{"fuse_logits", std::string(mode)}});
    if (mpi::world_rank() != 0) continue;
    const ParityReport p = check_parity(run, serial, ParityConfig{});
    std::printf("[nccl-data fuse_logits = %s, %d GPUs] vs serial: max abs diff %.3e, acc %.2f%% vs %.2f%%\n", mode,
                mpi::world_size(), p.max_abs_diff, 100 * run.final_test.accuracy, 100 * serial.final_test.accuracy);
    EXPECT_TRUE(p.pass) << mode << ": " << p.reason;
  }
}

TEST_F(NcclData, StagedInputGivesTheGatheredWeights) {
  // stage_input writes this rank's samples as floats once per epoch and the recorded steps read
  // them through the step counter; the values are the gathering forward's, so the weights must
  // be the same bit for bit: sync (uneven last batch: 10,000 = 78 x 128 + 16), an odd batch
  // that leaves a rank's last shard empty, and local SGD (its update fused into layer 0's
  // staged weight gradient).
  RunConfig config = config_for("sync", 128);
  const RunResult staged = run_sync_with(config, {{"stage_input", true}});
  const RunResult gathered = run_sync_with(config, {{"stage_input", false}});
  RunConfig odd = config_for("sync", 3);
  odd.data.options.limit = 301;
  const RunResult odd_staged = run_sync_with(odd, {{"stage_input", true}, {"graph_steps", std::int64_t{5}}});
  const RunResult odd_gathered = run_sync_with(odd, {{"stage_input", false}, {"graph_steps", std::int64_t{5}}});
  RunConfig local = config_for("local_sgd", 128);
  const RunResult local_staged = run_sync_with(local, {{"mode", std::string("local_sgd")}, {"period", std::int64_t{4}}, {"stage_input", true}});
  const RunResult local_gathered = run_sync_with(local, {{"mode", std::string("local_sgd")}, {"period", std::int64_t{4}}, {"stage_input", false}});
  if (mpi::world_rank() != 0) return;
  for (const auto& [a, b, what] : {std::tuple{&staged, &gathered, "sync, batch 128"},
                                   std::tuple{&odd_staged, &odd_gathered, "sync, batch 3, graphs of 5"},
                                   std::tuple{&local_staged, &local_gathered, "local SGD, batch 128"}})
    expect_bit_identical(*a, *b, "stage_input vs gathering", what);
}
