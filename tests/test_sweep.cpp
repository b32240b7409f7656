// nnpar sweep: what --workers means for each kind of strategy, the grid, the index, and runs that
// cannot happen on this machine.
#include <gmock/gmock.h>
#include <gtest/gtest.h>

#include <map>

#include <nlohmann/json.hpp>

#include "nnpar_cli.hpp"
#include "sweep.hpp"

using namespace nnpar_test;
using testing::HasSubstr;

namespace {

TEST(WorkerKind, RanksForMultiRankPluginsThreadsForAThreadsOptionElseNothing) {
  nnpar::StrategyInfo mpi;
  mpi.needs_mpi = true;
  EXPECT_EQ(nnpar::worker_kind(mpi), nnpar::WorkerKind::ranks);
  nnpar::StrategyInfo gpus;  // an NCCL plugin declares a world size, not needs_mpi
  gpus.min_world_size = 1;
  gpus.max_world_size = 0;
  EXPECT_EQ(nnpar::worker_kind(gpus), nnpar::WorkerKind::ranks);
  nnpar::StrategyInfo threads;
  threads.options.push_back({"threads", nnpar::OptionType::integer, std::int64_t{0}, "", 0, 64, {}});
  EXPECT_EQ(nnpar::worker_kind(threads), nnpar::WorkerKind::threads);
  nnpar::StrategyInfo serial;
  EXPECT_EQ(nnpar::worker_kind(serial), nnpar::WorkerKind::single);
}

class Sweep : public CliTest {};

TEST_F(Sweep, EveryStrategyAtEveryGridPointWithItsWorkerCount) {
  NNPAR_NEED_DATA();
  const fs::path config = tiny_config(
      "[[strategy]]\nname = \"serial\"\n"
      "[[strategy]]\nname = \"openmp\"\nlabel = \"omp\"\nmode = \"intra_op\"\n"
      "[[strategy]]\nname = \"mpi-data\"\n",
      "[784, 16, 16, 26]");
  const fs::path out = dir_ / "sweep";
  const Output r = run("sweep " + config.string() + " --workers 1,2 --batch 64 --width 8,12 -o " + out.string() +
                       " --set data.limit=256 --set train.epochs=1 -q");
  ASSERT_EQ(r.status, 0) << r.all();
  const auto index = nlohmann::json::parse(slurp(out / "sweep.json"));
  EXPECT_EQ(index["workers_are"]["omp"], "threads");
  EXPECT_EQ(index["workers_are"]["mpi-data"], "ranks");
  // 2 widths x (serial once + omp at 1, 2 threads + mpi-data on 1, 2 ranks)
  ASSERT_EQ(index["runs"].size(), 10u);
  std::map<std::string, int> seen;
  for (auto& row : index["runs"]) {
    ASSERT_EQ(row["status"], "ok") << row.dump();
    const auto run = nlohmann::json::parse(slurp(out / row["results_file"].get<std::string>()));
    const int width = row["width"];
    EXPECT_EQ(run["config"]["model"]["layers"], nlohmann::json({784, width, width, 26}));
    EXPECT_EQ(run["config"]["train"]["batch_size"], 64);
    const std::string label = row["label"];
    const int workers = row["workers"];
    if (label == "omp") {
      EXPECT_EQ(run["strategy"]["options"]["threads"], workers);
    }
    if (label == "mpi-data") {
      EXPECT_EQ(run["strategy"]["ranks"], workers);
    }
    EXPECT_EQ(run["parity"]["verdict"], label == "serial" ? "reference" : "PASS");
    seen[row["point"].get<std::string>() + " " + label + " " + std::to_string(workers)] += 1;
  }
  EXPECT_EQ(seen.size(), 10u);
  EXPECT_EQ(seen.count("b64-h12x12 mpi-data 2"), 1u);
  EXPECT_EQ(seen.count("b64-h8x8 serial 1"), 1u);
  EXPECT_TRUE(fs::exists(out / "b64-h8x8" / "omp-w2.json"));
  EXPECT_TRUE(fs::exists(out / "b64-h12x12" / "summary.csv"));
}

TEST_F(Sweep, ARunThisMachineCannotMakeIsSkippedWithTheReason) {
  NNPAR_NEED_DATA();
  const fs::path config = tiny_config("[plugins]\npaths = [\"" + std::string(NNPAR_TEST_PLUGIN_DIR) +
                                      "\"]\n[[strategy]]\nname = \"serial\"\n[[strategy]]\nname = \"gpu_only\"\n");
  const fs::path out = dir_ / "sweep";
  const Output r = run("sweep " + config.string() + " -o " + out.string() + " --set data.limit=256 -q");
  ASSERT_EQ(r.status, 0) << r.all();
  const auto index = nlohmann::json::parse(slurp(out / "sweep.json"));
  ASSERT_EQ(index["runs"].size(), 2u);
  EXPECT_EQ(index["runs"][1]["status"], "skipped");
  EXPECT_THAT(index["runs"][1]["reason"].get<std::string>(), HasSubstr("needs a CUDA GPU"));
}

TEST_F(Sweep, AFailingRunIsRecordedAndTheOthersStillRun) {
  NNPAR_NEED_DATA();
  // Three ranks for a pipeline of two layers: the plugin refuses it at setup.
  const fs::path config = tiny_config("[[strategy]]\nname = \"serial\"\n[[strategy]]\nname = \"mpi-pipeline\"\n");
  const fs::path out = dir_ / "sweep";
  const Output r = run("sweep " + config.string() + " --workers 2,3 -o " + out.string() + " --set data.limit=256 -q");
  EXPECT_EQ(r.status, 2) << r.all();
  const auto index = nlohmann::json::parse(slurp(out / "sweep.json"));
  ASSERT_EQ(index["runs"].size(), 3u);
  EXPECT_EQ(index["runs"][1]["status"], "ok");
  EXPECT_EQ(index["runs"][2]["status"], "failed");
  EXPECT_EQ(index["runs"][2]["workers"], 3);
  EXPECT_TRUE(index.contains("finished"));
}

TEST_F(Sweep, ABadStrategyOptionStopsTheSweepBeforeAnyRun) {
  const fs::path config = tiny_config("[[strategy]]\nname = \"serial\"\n[[strategy]]\nname = \"openmp\"\nmood = \"x\"\n");
  const Output r = run("sweep " + config.string() + " --workers 1,2 -o " + (dir_ / "out").string());
  EXPECT_EQ(r.status, 2);
  EXPECT_THAT(r.err, HasSubstr("mood"));
  EXPECT_FALSE(fs::exists(dir_ / "out"));
}

TEST_F(Sweep, NeverWritesIntoAFolderThatHoldsFiles) {
  const fs::path out = dir_ / "taken";
  fs::create_directories(out);
  std::ofstream(out / "earlier.json") << "{}";
  const Output r = run("sweep " + tiny_config().string() + " -o " + out.string());
  EXPECT_EQ(r.status, 2);
  EXPECT_THAT(r.err, HasSubstr(out.string()));
  EXPECT_EQ(std::distance(fs::directory_iterator(out), fs::directory_iterator()), 1);
}

TEST_F(Sweep, WidthNeedsAHiddenLayer) {
  const Output r = run("sweep " + tiny_config("[[strategy]]\nname = \"serial\"\n", "[784, 26]").string() +
                       " --width 64 -o " + (dir_ / "out").string());
  EXPECT_EQ(r.status, 2);
  EXPECT_THAT(r.err, HasSubstr("no hidden layer"));
  EXPECT_FALSE(fs::exists(dir_ / "out"));
}

}  // namespace
