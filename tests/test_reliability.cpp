// Divergence detection and resumable training, in process: the checks themselves, and that a
// run continued from saved weights ends exactly where an uninterrupted one does.
#include <gmock/gmock.h>
#include <gtest/gtest.h>

#include <algorithm>
#include <cmath>
#include <cstring>
#include <filesystem>
#include <fstream>
#include <limits>

#include "divergence.hpp"
#include "letters_fixture.hpp"
#include "nnpar/safetensors.hpp"
#include "run_checkpoint.hpp"
#include "runner.hpp"

namespace fs = std::filesystem;
using namespace nnpar;
using testing::HasSubstr;

namespace {

constexpr float kNaN = std::numeric_limits<float>::quiet_NaN();
constexpr float kInf = std::numeric_limits<float>::infinity();

ModelSpec small_model() {
  ModelSpec spec;
  spec.layer_sizes = {4, 3, 2};  // layers.0.weight [3,4], layers.0.bias [3], layers.1.weight [2,3], layers.1.bias [2]
  return spec;
}

std::string divergence_message(const DivergenceSite& site, const ModelSpec& spec, std::span<const float> params) {
  try {
    check_divergence(site, spec, params);
  } catch (const DivergenceError& e) {
    return e.what();
  }
  return "";
}

fs::path fresh_dir(const std::string& name) {
  const fs::path dir = fs::path(NNPAR_TEST_BINARY_DIR) / "reliability" / name;
  fs::remove_all(dir);
  fs::create_directories(dir);
  return dir;
}

}  // namespace

TEST(Divergence, FiniteWeightsAndLossPass) {
  const ModelSpec spec = small_model();
  std::vector<float> params(parameter_count(spec), 0.5f);
  EXPECT_FALSE(find_non_finite(spec, params));
  EXPECT_EQ(divergence_message({"serial", 1, 1, 10, 2.3, 0.1}, spec, params), "");
}

TEST(Divergence, NamesTheFirstLayerWithANonFiniteValueAndItsPosition) {
  const ModelSpec spec = small_model();
  std::vector<float> params(parameter_count(spec), 0.5f);
  const auto layout = parameter_layout(spec);
  params[layout[2].offset + 1 * 3 + 2] = kInf;  // layers.1.weight[1,2]
  params[layout[3].offset + 1] = kNaN;          // layers.1.bias[1], later in the buffer
  const auto bad = find_non_finite(spec, params);
  ASSERT_TRUE(bad);
  EXPECT_EQ(bad->layer, 1);
  EXPECT_EQ(bad->tensor, "layers.1.weight");
  EXPECT_EQ(bad->row, 1u);
  EXPECT_EQ(bad->col, 2u);
  EXPECT_EQ(bad->count, 2u);

  const std::string message = divergence_message({"omp", 3, 21, 30, 2.0, 50}, spec, params);
  EXPECT_THAT(message, HasSubstr("strategy 'omp' diverged in epoch 3 (optimizer steps 21..30)"));
  EXPECT_THAT(message, HasSubstr("Linear layer 1 has non-finite weights: layers.1.weight[1,2] = +Inf"));
  EXPECT_THAT(message, HasSubstr("2 non-finite values"));
  EXPECT_THAT(message, HasSubstr("train.lr = 50"));
}

TEST(Divergence, ABiasIsNamedWithOneIndex) {
  const ModelSpec spec = small_model();
  std::vector<float> params(parameter_count(spec), 0.5f);
  params[parameter_layout(spec)[1].offset + 2] = -kInf;
  EXPECT_THAT(divergence_message({"s", 1, 1, 1, 1.0, 0.1}, spec, params),
              HasSubstr("Linear layer 0 has non-finite weights: layers.0.bias[2] = -Inf"));
}

TEST(Divergence, ANonFiniteLossWithFiniteWeightsIsStillDivergence) {
  const ModelSpec spec = small_model();
  std::vector<float> params(parameter_count(spec), 0.5f);
  const std::string message = divergence_message({"s", 2, 5, 8, std::nan(""), 0.3}, spec, params);
  EXPECT_THAT(message, HasSubstr("diverged in epoch 2"));
  EXPECT_THAT(message, HasSubstr("mean training loss is NaN (the weights are still finite)"));
  // Ranks other than 0 check the loss alone.
  EXPECT_THAT(divergence_message({"s", 2, 5, 8, kInf, 0.3}, spec, {}), HasSubstr("loss is +Inf"));
}

class Runs : public ::testing::Test {
 protected:
  void SetUp() override {
    if (!test_support::have_letters()) GTEST_SKIP() << "dataset not found in " << test_support::letters_dir();
    if (!data_) data_ = std::make_unique<Datasets>(load_datasets(config().data));
  }
  static RunConfig config() {
    RunConfig c = test_support::letters_config(1000, 500, {784, 16, 26}, 32);
    c.train.epochs = 4;
    c.strategies.push_back(test_support::strategy_entry("serial"));
    return c;
  }
  static std::unique_ptr<Datasets> data_;
  PluginRegistry plugins_{{NNPAR_PLUGIN_DIR}};
};
std::unique_ptr<Datasets> Runs::data_;

TEST_F(Runs, AHugeLearningRateStopsTrainingAtTheFirstEpochNamingLayerAndRate) {
  RunConfig c = config();
  c.train.sgd.lr = 3e38f;  // 1e38 leaves this small sigmoid net finite (saturated, not overflowing)
  int epochs_reported = 0;
  try {
    run_strategy(c, c.strategies[0], plugins_, *data_, initial_parameters(c),
                 [&](const RunResult&, const EpochRecord&) { ++epochs_reported; });
    FAIL() << "training with lr 3e38 did not stop";
  } catch (const DivergenceError& e) {
    EXPECT_THAT(e.what(), HasSubstr("strategy 'serial' diverged in epoch 1 (optimizer steps 1..32)"));
    EXPECT_THAT(e.what(), HasSubstr("Linear layer 0 has non-finite weights: layers.0.weight["));
    EXPECT_THAT(e.what(), HasSubstr("train.lr = 3e+38"));
  }
  EXPECT_EQ(epochs_reported, 0) << "a diverged epoch must not be reported as a result";
}

TEST_F(Runs, ContinuingFromSavedWeightsAtEpochTwoEqualsAnUninterruptedRunBitForBit) {
  const RunConfig c = config();
  const std::vector<float> initial = initial_parameters(c);
  const RunResult whole = run_strategy(c, c.strategies[0], plugins_, *data_, initial);

  // Stop after 2 epochs, keeping the weights the hook sees, as a checkpoint would.
  RunConfig first_half = c;
  first_half.train.epochs = 2;
  std::vector<float> saved;
  RunHooks save;
  save.after_epoch = [&](const RunResult&, const EpochRecord&, std::span<const float> p) { saved.assign(p.begin(), p.end()); };
  const RunResult head = run_strategy(first_half, c.strategies[0], plugins_, *data_, initial, {}, {}, {}, save);
  ASSERT_EQ(saved.size(), initial.size());

  RunHooks resume;
  resume.first_epoch = 2;
  resume.history = head.epochs;
  const RunResult tail = run_strategy(c, c.strategies[0], plugins_, *data_, saved, {}, {}, {}, resume);
  ASSERT_EQ(tail.epochs.size(), 4u);
  EXPECT_EQ(tail.epochs[1].loss, whole.epochs[1].loss);  // the history is carried over
  EXPECT_EQ(tail.epochs[3].loss, whole.epochs[3].loss);
  ASSERT_EQ(tail.final_parameters.size(), whole.final_parameters.size());
  EXPECT_EQ(std::memcmp(tail.final_parameters.data(), whole.final_parameters.data(),
                        whole.final_parameters.size() * sizeof(float)), 0);
  EXPECT_EQ(tail.final_test.accuracy, whole.final_test.accuracy);
}

// --- run directories -------------------------------------------------------------------

namespace {

RunConfig toml_config(const fs::path& dir, const std::string& extra = "") {
  const std::string text = "[model]\nlayers = [4, 3, 2]\n[train]\nepochs = 5\nlr = 0.25\n" + extra +
                           "[output]\ndir = \"" + (dir / "results").string() + "\"\n[[strategy]]\nname = \"serial\"\n";
  return load_config_text(text, "test.toml", dir);
}

RunResult history_of(int epochs) {
  RunResult run;
  run.label = run.strategy = "serial";
  for (int e = 1; e <= epochs; ++e) {
    EpochRecord r;
    r.epoch = e;
    r.loss = 3.0 / e;
    r.samples = 100;
    r.steps = 4;
    r.seconds = 0.5;
    run.epochs.push_back(r);
  }
  return run;
}

std::string read_error(const fs::path& dir, const std::vector<std::string>& overrides = {}) {
  try {
    read_saved_run(dir, overrides);
  } catch (const std::exception& e) {
    return e.what();
  }
  return "";
}

}  // namespace

TEST(RunDirectory, ACommittedCheckpointReadsBackWithConfigHistoryAndWeights) {
  const fs::path dir = fresh_dir("roundtrip");
  const RunConfig config = toml_config(dir);
  RunCheckpointer writer = RunCheckpointer::create(config, "serial", dir / "run", 2, {"plugins"}, dir / "final.st", "nnpar train");
  std::vector<float> params(parameter_count(config.model));
  for (std::size_t i = 0; i < params.size(); ++i) params[i] = 0.1f * float(i) - 1.0f;
  RunResult run = history_of(1);
  writer.after_epoch(config, run, run.epochs.back(), params);  // epoch 1 of every 2: nothing yet
  EXPECT_FALSE(fs::exists(dir / "run" / "state.json"));
  run = history_of(2);
  writer.after_epoch(config, run, run.epochs.back(), params);
  run = history_of(3);
  params[0] = 42;
  writer.commit(config, run, params);

  // Only the newest weights stay; no temporary file is left behind.
  std::vector<std::string> files;
  for (auto& e : fs::directory_iterator(dir / "run")) files.push_back(e.path().filename().string());
  std::sort(files.begin(), files.end());
  EXPECT_THAT(files, testing::ElementsAre("config.toml", "state.json", "weights-epoch-0003.safetensors"));

  const SavedRun saved = read_saved_run(dir / "run", {});
  EXPECT_EQ(saved.strategy_label, "serial");
  EXPECT_EQ(saved.epochs_done, 3);
  EXPECT_EQ(saved.checkpoint_every, 2);
  EXPECT_EQ(saved.save_checkpoint, fs::absolute(dir / "final.st"));
  ASSERT_EQ(saved.plugin_paths.size(), 1u);
  EXPECT_EQ(saved.plugin_paths[0], fs::absolute("plugins").string());
  ASSERT_EQ(saved.history.size(), 3u);
  EXPECT_EQ(saved.history[2].loss, 1.0);
  EXPECT_EQ(saved.history[1].steps, 4u);
  // The saved config is the resolved one: the same settings, bit for bit.
  EXPECT_EQ(saved.config.train.sgd.lr, config.train.sgd.lr);
  EXPECT_EQ(saved.config.train.epochs, 5);
  EXPECT_EQ(saved.config.model.layer_sizes, config.model.layer_sizes);
  EXPECT_EQ(saved.config.output.dir, config.output.dir);
  EXPECT_EQ(saved_weights(saved), params);
}

TEST(RunDirectory, AnExistingRunIsNotOverwrittenAndDefaultNamesDoNotClash) {
  const fs::path dir = fresh_dir("no_clash");
  const RunConfig config = toml_config(dir);
  RunCheckpointer writer = RunCheckpointer::create(config, "serial", dir / "run", 1, {}, {}, "");
  std::vector<float> params(parameter_count(config.model), 1.0f);
  RunResult run = history_of(1);
  writer.commit(config, run, params);
  EXPECT_THROW(RunCheckpointer::create(config, "serial", dir / "run", 1, {}, {}, ""), ConfigError);

  const RunCheckpointer a = RunCheckpointer::create(config, "a/b", {}, 1, {}, {}, "");
  const RunCheckpointer b = RunCheckpointer::create(config, "a/b", {}, 1, {}, {}, "");
  EXPECT_NE(a.dir(), b.dir());
  EXPECT_EQ(a.dir().parent_path(), config.output.dir);
  EXPECT_THAT(a.dir().filename().string(), HasSubstr("-a_b-run"));
}

TEST(RunDirectory, BrokenOrFinishedRunDirectoriesAreRefusedWithTheReason) {
  const fs::path dir = fresh_dir("broken");
  EXPECT_THAT(read_error(dir / "nope"), HasSubstr("nope: no such directory"));
  fs::create_directories(dir / "empty");
  EXPECT_THAT(read_error(dir / "empty"), HasSubstr("no state.json: no checkpoint was committed yet"));

  const RunConfig config = toml_config(dir);
  RunCheckpointer writer = RunCheckpointer::create(config, "serial", dir / "run", 1, {}, {}, "");
  std::vector<float> params(parameter_count(config.model), 1.0f);
  RunResult run = history_of(2);
  writer.commit(config, run, params);
  ASSERT_EQ(read_error(dir / "run"), "");

  // Finished: nothing to resume unless the epoch count grows.
  EXPECT_THAT(read_error(dir / "run", {"train.epochs=2"}), HasSubstr("the run already finished: 2 of 2 epochs done"));
  EXPECT_EQ(read_error(dir / "run", {"train.epochs=3"}), "");

  fs::rename(dir / "run" / "weights-epoch-0002.safetensors", dir / "moved");
  EXPECT_THAT(read_error(dir / "run"), HasSubstr("the weights file weights-epoch-0002.safetensors named in state.json is missing"));
  fs::rename(dir / "moved", dir / "run" / "weights-epoch-0002.safetensors");

  std::ofstream(dir / "run" / "state.json") << "{\"format\": \"nnpar-run-checkpoint\", \"version\": 1";
  EXPECT_THAT(read_error(dir / "run"), HasSubstr("state.json: not valid JSON"));
  std::ofstream(dir / "run" / "state.json") << "{\"format\": \"something else\"}";
  EXPECT_THAT(read_error(dir / "run"), HasSubstr("not an nnpar run checkpoint"));
  std::ofstream(dir / "run" / "state.json") << "{\"format\": \"nnpar-run-checkpoint\", \"version\": 1}";
  EXPECT_THAT(read_error(dir / "run"), HasSubstr("missing or malformed field"));
}

TEST(RunDirectory, MomentumIsRefusedBecauseItsVelocityIsNotSaved) {
  const fs::path dir = fresh_dir("momentum");
  EXPECT_NO_THROW(check_checkpointing_allowed(toml_config(dir), "--checkpoint-every"));
  try {
    check_checkpointing_allowed(toml_config(dir, "momentum = 0.9\n"), "--checkpoint-every");
    FAIL() << "momentum was accepted";
  } catch (const ConfigError& e) {
    EXPECT_THAT(e.what(), HasSubstr("--checkpoint-every: train.momentum is 0.9, but"));
    EXPECT_THAT(e.what(), HasSubstr("not the momentum velocity"));
  }
}

TEST(RunDirectory, NumbersAFloatCannotHoldAndANegativeRankTimeoutAreConfigErrors) {
  const fs::path dir = fresh_dir("bad_numbers");
  const auto error = [&](const std::string& extra) {
    try {
      load_config_text(extra + "[[strategy]]\nname = \"serial\"\n", "bad.toml", dir);
    } catch (const ConfigError& e) {
      return std::string(e.what());
    }
    return std::string();
  };
  EXPECT_EQ(error("[train]\nlr = 1e39\n"), "bad.toml:2:6: train.lr: must be at most 3.4e38 (it is a 32-bit float), found 1e+39");
  EXPECT_THAT(error("[train]\nweight_decay = 5e38\n"), HasSubstr("train.weight_decay: must be at most 3.4e38"));
  EXPECT_EQ(error("[train]\nlr = 3e38\n"), "");
  EXPECT_EQ(error("[mpi]\nrank_timeout = -1\n"), "bad.toml:2:16: mpi.rank_timeout: must be >= 0 (seconds; 0 = off), found -1");
  EXPECT_EQ(load_config_text("[[strategy]]\nname = \"serial\"\n", "ok.toml", dir).mpi.rank_timeout, 30.0);
}
