// Faults as a user meets them through the nnpar executable: a run killed and resumed, training
// that diverges, a full disk, a lost MPI rank. Each must end with a clear message and a
// non-zero exit (or, for a resume, the exact weights of an uninterrupted run).
#include <gmock/gmock.h>
#include <gtest/gtest.h>

#include <sys/wait.h>

#include <chrono>
#include <cstdio>
#include <cstring>
#include <filesystem>
#include <fstream>
#include <sstream>

#include "nnpar/safetensors.hpp"

namespace fs = std::filesystem;
using testing::HasSubstr;

namespace {

const fs::path kNnpar = fs::path(NNPAR_BIN_DIR) / "nnpar";
const fs::path kData = NNPAR_TEST_DATA_DIR;

struct Result {
  int status = -1;     // exit status; 128+N for a signal
  std::string output;  // stdout and stderr together
};

// `prefix` goes before the nnpar command (environment settings, a wrapper).
Result run(const std::string& args, const std::string& prefix = "") {
  // A hard bound on every command: a hang becomes exit status 124 instead of a stuck test.
  const std::string command = prefix + " timeout 120 " + kNnpar.string() + " " + args + " 2>&1";
  Result r;
  FILE* pipe = popen(command.c_str(), "r");
  if (pipe == nullptr) return r;
  char buffer[4096];
  while (std::size_t n = std::fread(buffer, 1, sizeof buffer, pipe)) r.output.append(buffer, n);
  const int raw = pclose(pipe);
  r.status = WIFEXITED(raw) ? WEXITSTATUS(raw) : -1;
  return r;
}

class Faults : public ::testing::Test {
 protected:
  void SetUp() override {
    dir_ = fs::path(NNPAR_TEST_BINARY_DIR) / "faults" /
           ::testing::UnitTest::GetInstance()->current_test_info()->name();
    fs::remove_all(dir_);
    fs::create_directories(dir_);
  }
  fs::path write(const std::string& name, const std::string& text) {
    std::ofstream(dir_ / name) << text;
    return dir_ / name;
  }
  // Seconds per run: 1,000 samples, a small model, four epochs.
  fs::path config(const std::string& extra = "") {
    std::ostringstream s;
    s << "[data]\ndir = \"" << kData.string() << "\"\nlimit = 1000\ntest_limit = 500\n"
      << "[model]\nlayers = [784, 16, 26]\n"
      << "[train]\nepochs = 4\nbatch_size = 32\nlr = 0.5\n" << extra
      << "[output]\ndir = \"" << (dir_ / "results").string() << "\"\n"
      << "[[strategy]]\nname = \"serial\"\n"
      << "[[strategy]]\nname = \"openmp\"\nlabel = \"omp-intra\"\nmode = \"intra_op\"\nthreads = 2\n"
      << "[[strategy]]\nname = \"mpi-data\"\nlabel = \"dp2\"\nranks = 2\n";
    return write("run.toml", s.str());
  }
  void need_data() {
    if (!fs::exists(kData / "letters-train-images-idx3-ubyte.gz"))
      GTEST_SKIP() << "dataset not found in " << kData;
  }
  std::size_t files_in(const fs::path& dir) {
    std::size_t n = 0;
    if (fs::exists(dir))
      for ([[maybe_unused]] auto& e : fs::directory_iterator(dir)) ++n;
    return n;
  }
  fs::path dir_;
};

// Every tensor's bytes, without the metadata (which names the epoch and strategy).
std::map<std::string, std::vector<float>> tensors(const fs::path& file) {
  std::map<std::string, std::vector<float>> out;
  for (auto& [name, t] : nnpar::read_safetensors(file)) out[name] = t.values;
  return out;
}

bool bit_identical(const fs::path& a, const fs::path& b) {
  const auto ta = tensors(a), tb = tensors(b);
  if (ta.size() != tb.size()) return false;
  for (auto& [name, values] : ta) {
    const auto it = tb.find(name);
    if (it == tb.end() || it->second.size() != values.size() ||
        std::memcmp(values.data(), it->second.data(), values.size() * sizeof(float)) != 0)
      return false;
  }
  return true;
}

}  // namespace

class KillAndResume : public Faults, public ::testing::WithParamInterface<const char*> {};

// The run is SIGKILLed right after its epoch-2 checkpoint is committed (the test hook raises
// SIGKILL itself, which is what `kill -9` at that moment does), then resumed.
TEST_P(KillAndResume, GivesTheWeightsOfAnUninterruptedRunBitForBit) {
  need_data();
  const std::string label = GetParam();
  const fs::path cfg = config();
  const Result whole = run("train " + cfg.string() + " --strategy " + label + " -q --save-checkpoint " +
                           (dir_ / "whole.safetensors").string());
  ASSERT_EQ(whole.status, 0) << whole.output;

  const fs::path run_dir = dir_ / "run";
  const Result killed = run("train " + cfg.string() + " --strategy " + label + " --checkpoint-every 1 --checkpoint-dir " +
                                run_dir.string() + " --save-checkpoint " + (dir_ / "resumed.safetensors").string(),
                            "NNPAR_FAULT_KILL_AFTER_CHECKPOINT=2");
  ASSERT_NE(killed.status, 0) << killed.output;
  EXPECT_THAT(killed.output, HasSubstr("epoch 2/4"));
  EXPECT_THAT(killed.output, testing::Not(HasSubstr("epoch 3/4")));
  EXPECT_FALSE(fs::exists(dir_ / "resumed.safetensors"));
  EXPECT_TRUE(fs::exists(run_dir / "weights-epoch-0002.safetensors"));

  // The final checkpoint the first command asked for is written by the resume.
  const Result resumed = run("train --resume " + run_dir.string());
  ASSERT_EQ(resumed.status, 0) << resumed.output;
  EXPECT_THAT(resumed.output, HasSubstr("after epoch 2 of 4"));
  EXPECT_THAT(resumed.output, testing::Not(HasSubstr("epoch 2/4")));
  EXPECT_THAT(resumed.output, HasSubstr("epoch 4/4"));
  ASSERT_TRUE(fs::exists(dir_ / "resumed.safetensors")) << resumed.output;
  EXPECT_TRUE(bit_identical(dir_ / "whole.safetensors", dir_ / "resumed.safetensors"));
  EXPECT_TRUE(bit_identical(dir_ / "whole.safetensors", run_dir / "weights-epoch-0004.safetensors"));
  // Both runs report the same final accuracy.
  const auto accuracy = [](const std::string& out) { return out.substr(out.find("final test accuracy"), 30); };
  EXPECT_EQ(accuracy(whole.output), accuracy(resumed.output));

  // A finished run has nothing left to resume.
  const Result again = run("train --resume " + run_dir.string());
  EXPECT_EQ(again.status, 2);
  EXPECT_THAT(again.output, HasSubstr("the run already finished: 4 of 4 epochs done"));
}

// A config without a "serial" entry (a GPU-only one, say): the run directory's resolved config
// must load again on --resume (found on the device: it named the default reference "serial").
TEST_F(Faults, ResumeWorksForAConfigWithoutTheDefaultReference) {
  need_data();
  std::ostringstream s;
  s << "[data]\ndir = \"" << kData.string() << "\"\nlimit = 500\ntest_limit = 200\n"
    << "[model]\nlayers = [784, 8, 26]\n[train]\nepochs = 2\nbatch_size = 50\nlr = 0.5\n"
    << "[output]\ndir = \"" << (dir_ / "results").string() << "\"\n"
    << "[[strategy]]\nname = \"openmp\"\nlabel = \"omp\"\nthreads = 1\n";
  const fs::path cfg = write("no-serial.toml", s.str());
  const fs::path run_dir = dir_ / "run-no-serial";
  const Result killed = run("train " + cfg.string() + " --checkpoint-every 1 --checkpoint-dir " + run_dir.string(),
                            "NNPAR_FAULT_KILL_AFTER_CHECKPOINT=1");
  ASSERT_NE(killed.status, 0) << killed.output;
  const Result resumed = run("train --resume " + run_dir.string());
  ASSERT_EQ(resumed.status, 0) << resumed.output;
  EXPECT_THAT(resumed.output, HasSubstr("epoch 2/2"));
}

INSTANTIATE_TEST_SUITE_P(Strategies, KillAndResume, ::testing::Values("serial", "omp-intra", "dp2"),
                         [](const auto& info) { return std::string(info.param) == "omp-intra" ? std::string("openmp_intra_op")
                                                       : std::string(info.param) == "dp2" ? std::string("mpi_data_np2")
                                                                                           : std::string(info.param); });

TEST_F(Faults, ResumeAndCheckpointArgumentsAreChecked) {
  need_data();
  const fs::path cfg = config();
  Result r = run("train --resume " + (dir_ / "nowhere").string());
  EXPECT_EQ(r.status, 2);
  EXPECT_THAT(r.output, HasSubstr("nowhere: no such directory"));
  r = run("train " + cfg.string() + " --resume " + dir_.string());
  EXPECT_EQ(r.status, 2);
  EXPECT_THAT(r.output, HasSubstr("do not pass CONFIG"));
  r = run("train " + cfg.string() + " --checkpoint-dir " + (dir_ / "x").string());
  EXPECT_EQ(r.status, 2);
  EXPECT_THAT(r.output, HasSubstr("--checkpoint-every"));
  r = run("train " + cfg.string() + " --checkpoint-every 0");
  EXPECT_EQ(r.status, 2);
  r = run("train " + cfg.string() + " --checkpoint-every 1 --set train.momentum=0.9");
  EXPECT_EQ(r.status, 2);
  EXPECT_THAT(r.output, HasSubstr("train.momentum is 0.9"));
  EXPECT_THAT(r.output, testing::Not(HasSubstr("epoch 1/")));
}

TEST_F(Faults, DivergedTrainingStopsWithExit2AndWritesNoResults) {
  need_data();
  const Result r = run("train " + config().string() + " --set train.lr=3e38");
  EXPECT_EQ(r.status, 2) << r.output;
  EXPECT_THAT(r.output, HasSubstr("nnpar: training stopped: strategy 'serial' diverged in epoch 1 (optimizer steps 1..32)"));
  EXPECT_THAT(r.output, HasSubstr("Linear layer 0 has non-finite weights: layers.0.weight["));
  EXPECT_THAT(r.output, HasSubstr("train.lr = 3e+38"));
  EXPECT_THAT(r.output, testing::Not(HasSubstr("epoch 1/4")));
  EXPECT_EQ(files_in(dir_ / "results"), 0u);

  // Under MPI the lead rank's message ends every rank.
  const Result mpi = run("train " + config().string() + " --strategy dp2 --set train.lr=3e38");
  EXPECT_NE(mpi.status, 0) << mpi.output;
  EXPECT_NE(mpi.status, 124) << "the job hung";
  EXPECT_THAT(mpi.output, HasSubstr("strategy 'dp2' diverged in epoch 1"));
}

TEST_F(Faults, NonFiniteWeightsInACheckpointAreRefused) {
  need_data();
  std::map<std::string, nnpar::NamedTensor> t;
  t["layers.0.weight"] = {{16, 784}, std::vector<float>(16 * 784, 0.01f)};
  t["layers.0.bias"] = {{16}, std::vector<float>(16, 0.0f)};
  t["layers.1.weight"] = {{26, 16}, std::vector<float>(26 * 16, 0.01f)};
  t["layers.1.bias"] = {{26}, std::vector<float>(26, 0.0f)};
  t["layers.1.bias"].values[5] = std::numeric_limits<float>::quiet_NaN();
  const fs::path bad = dir_ / "nan.safetensors";
  nnpar::write_safetensors(bad, t);
  Result r = run("eval --checkpoint " + bad.string());
  EXPECT_EQ(r.status, 2);
  EXPECT_THAT(r.output, HasSubstr("nan.safetensors: layers.1.bias[5] = NaN (1 non-finite values)"));
  r = run("train " + config().string() + " --set model.init_checkpoint=" + bad.string());
  EXPECT_EQ(r.status, 2);
  EXPECT_THAT(r.output, HasSubstr("layers.1.bias[5] = NaN"));
}

// A full 4 KiB tmpfs in a private mount namespace (no root needed where user namespaces are
// allowed): results, checkpoints and run directories that do not fit.
TEST_F(Faults, AFullDiskGivesAClearErrorAndNoHalfWrittenFile) {
  need_data();
  const fs::path full = dir_ / "full";
  fs::create_directories(full);
  if (std::system("unshare -rm true > /dev/null 2>&1") != 0)
    GTEST_SKIP() << "unshare -rm (user and mount namespaces) is not allowed here";
  // The tmpfs is filled to its last byte before nnpar starts.
  // The tmpfs is filled to its last byte before nnpar starts; afterwards every file left in it
  // is listed, to show that nothing half-written stays behind.
  const std::string in_full_fs = "unshare -rm sh -c 'mount -t tmpfs -o size=4k tmpfs " + full.string() +
                                 " && cat /dev/zero > " + full.string() + "/.filler 2>/dev/null; \"$0\" \"$@\"; rc=$?; " +
                                 "find " + full.string() + " -mindepth 1 ! -name .filler -printf \"left: %P\\n\"; exit $rc'";
  const fs::path cfg = config();
  Result r = run("train " + cfg.string() + " --set train.epochs=1 --set output.dir=" + full.string(), in_full_fs);
  EXPECT_EQ(r.status, 2) << r.output;
  EXPECT_THAT(r.output, HasSubstr("No space left on device"));
  EXPECT_THAT(r.output, HasSubstr("cannot write '" + full.string()));
  EXPECT_THAT(r.output, testing::Not(HasSubstr("left:"))) << "a partial results file was left behind";

  r = run("train " + cfg.string() + " --set train.epochs=1 --set output.write_results=false --save-checkpoint " +
              (full / "final.safetensors").string(), in_full_fs);
  EXPECT_EQ(r.status, 2) << r.output;
  EXPECT_THAT(r.output, HasSubstr("checkpoint " + (full / "final.safetensors").string() + ": write failed: No space left on device"));
  EXPECT_THAT(r.output, testing::Not(HasSubstr("left:"))) << "a partial checkpoint was left behind";

  r = run("train " + cfg.string() + " --set output.write_results=false --checkpoint-every 1 --checkpoint-dir " +
              (full / "run").string(), in_full_fs);
  EXPECT_EQ(r.status, 2) << r.output;
  EXPECT_THAT(r.output, HasSubstr("No space left on device"));
  EXPECT_THAT(r.output, testing::Not(HasSubstr("left:"))) << "a file or run directory was left behind";
}

// A rank that dies mid-epoch: mpirun ends the job at once and names it; nnpar adds its own
// line and exits 2. The rank kills itself through the test hook (SIGKILL, as kill -9 does);
// 100,000 epochs, so that training is still running at 1.5 s on a fast machine.
TEST_F(Faults, AKilledRankEndsTheJobNamingIt) {
  need_data();
  const auto start = std::chrono::steady_clock::now();
  const Result r = run("train " + config().string() + " --strategy dp2 --set train.epochs=100000",
                       "NNPAR_FAULT_RANK_SIGNAL=1:KILL:1.5");
  const double seconds = std::chrono::duration<double>(std::chrono::steady_clock::now() - start).count();
  EXPECT_EQ(r.status, 2) << r.output;
  EXPECT_LT(seconds, 30) << r.output;
  EXPECT_THAT(r.output, HasSubstr("process rank 1"));
  EXPECT_THAT(r.output, HasSubstr("signal 9"));
  EXPECT_THAT(r.output, HasSubstr("nnpar: error: strategy 'dp2' on 2 ranks failed: mpirun ended with status"));
  EXPECT_THAT(r.output, testing::Not(HasSubstr("final test accuracy")));
}

// A rank that stops (SIGSTOP) is not noticed by mpirun; the heartbeat watchdog of its peer
// names it after [mpi] rank_timeout seconds and ends the job.
TEST_F(Faults, AStoppedRankIsNamedAfterTheRankTimeout) {
  need_data();
  const auto start = std::chrono::steady_clock::now();
  const Result r = run("train " + config().string() + " --strategy dp2 --set train.epochs=100000 --set mpi.rank_timeout=2",
                       "NNPAR_FAULT_RANK_SIGNAL=1:STOP:1.5");
  const double seconds = std::chrono::duration<double>(std::chrono::steady_clock::now() - start).count();
  EXPECT_EQ(r.status, 2) << r.output;
  EXPECT_LT(seconds, 30) << r.output;
  EXPECT_THAT(r.output, testing::ContainsRegex("\\[rank 0 of 2\\] rank 1 is lost: no heartbeat from it for [0-9.]+ s \\(\\[mpi\\] rank_timeout = 2 s\\)"));
  EXPECT_THAT(r.output, HasSubstr("nnpar: error: strategy 'dp2' on 2 ranks failed"));
}

TEST_F(Faults, ARankStoppedAfterTrainingIsNamedInsteadOfHangingMpiFinalize) {
  // Rank 1 stops itself when training is over, right before MPI_Finalize, which waits for
  // every rank: the watchdog must still be running there.
  need_data();
  const auto start = std::chrono::steady_clock::now();
  const Result r = run("train " + config().string() + " --strategy dp2 --set mpi.rank_timeout=2",
                       "NNPAR_FAULT_RANK_SIGNAL=1:STOP:finalize");
  const double seconds = std::chrono::duration<double>(std::chrono::steady_clock::now() - start).count();
  EXPECT_EQ(r.status, 2) << r.output;
  EXPECT_LT(seconds, 30) << r.output;
  EXPECT_THAT(r.output, HasSubstr("final test accuracy"));  // training itself finished
  EXPECT_THAT(r.output, testing::ContainsRegex("\\[rank 0 of 2\\] rank 1 is lost: no heartbeat from it for [0-9.]+ s"));
}
