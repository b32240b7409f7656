// The TOML configuration: defaults, validation messages (text and file:line:col),
// path and ${VAR} resolution, --set overrides, and strategy option validation.
#include <cstdlib>
#include <filesystem>
#include <fstream>
#include <functional>
#include <optional>
#include <string>
#include <vector>

#include <gmock/gmock.h>
#include <gtest/gtest.h>

#include "config.hpp"
#include "plugin_loader.hpp"

namespace fs = std::filesystem;
using nnpar::ConfigError;
using nnpar::load_config;
using nnpar::RunConfig;
using testing::HasSubstr;
using testing::Not;
using testing::StartsWith;

namespace {

// Sets (or unsets, with nullopt) an environment variable for one test and restores it.
class ScopedEnv {
 public:
  ScopedEnv(std::string name, std::optional<std::string> value) : name_(std::move(name)) {
    if (const char* old = std::getenv(name_.c_str())) old_ = old;
    if (value) ::setenv(name_.c_str(), value->c_str(), 1);
    else ::unsetenv(name_.c_str());
  }
  ~ScopedEnv() {
    if (old_) ::setenv(name_.c_str(), old_->c_str(), 1);
    else ::unsetenv(name_.c_str());
  }

 private:
  std::string name_;
  std::optional<std::string> old_;
};

class config_load : public testing::Test {
 protected:
  void SetUp() override {
    const auto* info = testing::UnitTest::GetInstance()->current_test_info();
    dir_ = fs::path(NNPAR_TEST_BINARY_DIR) / "config_tmp" / info->name();
    fs::remove_all(dir_);
    fs::create_directories(dir_);
  }

  // Writes `text` to dir_/name and returns the path as the tests pass it to load_config.
  std::string write(const std::string& name, const std::string& text) {
    const fs::path p = dir_ / name;
    fs::create_directories(p.parent_path());
    std::ofstream(p) << text;
    return p.string();
  }

  // The ConfigError message of f(), or a marker that never matches an expected message.
  static std::string error_of(const std::function<void()>& f) {
    try {
      f();
    } catch (const ConfigError& e) {
      return e.what();
    }
    return "<no ConfigError thrown>";
  }
  static std::string load_error(const std::string& file, const std::vector<std::string>& overrides = {}) {
    return error_of([&] { (void)load_config(file, overrides); });
  }

  fs::path dir_;
};

const std::string kSerial = "[[strategy]]\nname = \"serial\"\n";

}  // namespace

TEST_F(config_load, DefaultsFromAMinimalFile) {
  ScopedEnv no_data("NNPAR_DATA", std::nullopt);
  const std::string file = write("min.toml", kSerial);
  const RunConfig c = load_config(file);

  const fs::path data = (fs::path(NNPAR_SOURCE_DIR) / ".." / "shared" / "data").lexically_normal();
  EXPECT_EQ(c.data.dir, data);
  EXPECT_EQ(c.data.format, "idx");
  EXPECT_EQ(c.data.train_images, data / "letters-train-images-idx3-ubyte.gz");
  EXPECT_EQ(c.data.train_labels, data / "letters-train-labels-idx1-ubyte.gz");
  EXPECT_EQ(c.data.test_images, data / "letters-test-images-idx3-ubyte.gz");
  EXPECT_EQ(c.data.test_labels, data / "letters-test-labels-idx1-ubyte.gz");
  EXPECT_FALSE(c.data.options.transpose);
  EXPECT_EQ(c.data.options.label_offset, 1);
  EXPECT_TRUE(c.data.options.normalize);
  EXPECT_EQ(c.data.options.limit, 0u);
  EXPECT_EQ(c.data.test_limit, 0u);
  EXPECT_EQ(c.data.options.num_classes, 26);

  EXPECT_EQ(c.model.layer_sizes, (std::vector<int>{784, 256, 256, 26}));
  EXPECT_EQ(c.model.init, nnpar::InitKind::xavier_uniform);
  EXPECT_DOUBLE_EQ(c.model.init_std, 0.01);
  EXPECT_EQ(c.model.seed, 42u);
  EXPECT_TRUE(c.init_checkpoint.empty());

  EXPECT_EQ(c.train.epochs, 10);
  EXPECT_EQ(c.train.batch_size, 128);
  EXPECT_FLOAT_EQ(c.train.sgd.lr, 0.1f);
  EXPECT_FLOAT_EQ(c.train.sgd.momentum, 0.0f);
  EXPECT_FLOAT_EQ(c.train.sgd.weight_decay, 0.0f);
  EXPECT_EQ(c.train.seed, 1u);
  EXPECT_TRUE(c.train.shuffle);
  EXPECT_FALSE(c.train.drop_last);
  EXPECT_EQ(c.eval_every, 1);

  EXPECT_EQ(c.output.dir, (fs::current_path() / "results").lexically_normal());
  EXPECT_TRUE(c.output.save_checkpoint.empty());
  EXPECT_TRUE(c.output.write_results);

  EXPECT_EQ(c.parity.reference, "serial");
  EXPECT_DOUBLE_EQ(c.parity.weight_rtol, 1e-3);
  EXPECT_DOUBLE_EQ(c.parity.weight_atol, 1e-5);
  EXPECT_DOUBLE_EQ(c.parity.accuracy_pp, 0.1);
  EXPECT_DOUBLE_EQ(c.parity.approx_accuracy_pp, 1.0);
  EXPECT_TRUE(c.plugin_paths.empty());

  ASSERT_EQ(c.strategies.size(), 1u);
  EXPECT_EQ(c.strategies[0].name, "serial");
  EXPECT_EQ(c.strategies[0].label, "serial");
  EXPECT_EQ(c.strategies[0].where, file + ":1:1");
  EXPECT_EQ(c.file, fs::path(file));

  // resolved carries the defaults too, so results show what actually ran.
  EXPECT_EQ(c.resolved.at_path("train.epochs").value<std::int64_t>(), 10);
  EXPECT_EQ(c.resolved.at_path("model.init").value<std::string>(), "xavier");
  EXPECT_EQ(c.resolved.at_path("data.dir").value<std::string>(), data.string());
  EXPECT_EQ(c.resolved.at_path("strategy[0].label").value<std::string>(), "serial");
}

TEST_F(config_load, NnparDataEnvironmentVariableIsTheDefaultDataDir) {
  ScopedEnv data("NNPAR_DATA", "/srv/letters");
  const RunConfig c = load_config(write("env.toml", kSerial));
  EXPECT_EQ(c.data.dir, fs::path("/srv/letters"));
  EXPECT_EQ(c.data.test_labels, fs::path("/srv/letters/letters-test-labels-idx1-ubyte.gz"));
}

TEST_F(config_load, FullValidConfig) {
  const std::string file = write("full.toml", R"(
[data]
dir = "/data/emnist"
format = "idx"
train_images = "emnist-letters-train-images-idx3-ubyte.gz"
train_labels = "emnist-letters-train-labels-idx1-ubyte.gz"
test_images = "emnist-letters-test-images-idx3-ubyte.gz"
test_labels = "emnist-letters-test-labels-idx1-ubyte.gz"
transpose = true
label_offset = 0
normalize = false
limit = 1000
test_limit = 200
classes = 10

[model]
layers = [784, 64, 10]
init = "normal"
init_std = 0.05
seed = 7

[train]
epochs = 3
batch_size = 32
lr = 1            # an integer where a real is expected is fine
momentum = 0.9
weight_decay = 0.0001
seed = 9
shuffle = false
drop_last = true
eval_every = 0

[output]
dir = "/tmp/nnpar-out"
write_results = false

[parity]
reference = "base"
weight_rtol = 0.01
weight_atol = 0.001
accuracy_pp = 0.5
approx_accuracy_pp = 2

[[strategy]]
name = "serial"
label = "base"

[[strategy]]
name = "threads"
threads = 2
)");
  const RunConfig c = load_config(file);
  EXPECT_EQ(c.data.dir, fs::path("/data/emnist"));
  EXPECT_EQ(c.data.train_images, fs::path("/data/emnist/emnist-letters-train-images-idx3-ubyte.gz"));
  EXPECT_EQ(c.data.test_labels, fs::path("/data/emnist/emnist-letters-test-labels-idx1-ubyte.gz"));
  EXPECT_TRUE(c.data.options.transpose);
  EXPECT_EQ(c.data.options.label_offset, 0);
  EXPECT_FALSE(c.data.options.normalize);
  EXPECT_EQ(c.data.options.limit, 1000u);
  EXPECT_EQ(c.data.test_limit, 200u);
  EXPECT_EQ(c.data.options.num_classes, 10);
  EXPECT_EQ(c.model.layer_sizes, (std::vector<int>{784, 64, 10}));
  EXPECT_EQ(c.model.init, nnpar::InitKind::normal);
  EXPECT_DOUBLE_EQ(c.model.init_std, 0.05);
  EXPECT_EQ(c.model.seed, 7u);
  EXPECT_EQ(c.train.epochs, 3);
  EXPECT_EQ(c.train.batch_size, 32);
  EXPECT_FLOAT_EQ(c.train.sgd.lr, 1.0f);
  EXPECT_FLOAT_EQ(c.train.sgd.momentum, 0.9f);
  EXPECT_FLOAT_EQ(c.train.sgd.weight_decay, 0.0001f);
  EXPECT_EQ(c.train.seed, 9u);
  EXPECT_FALSE(c.train.shuffle);
  EXPECT_TRUE(c.train.drop_last);
  EXPECT_EQ(c.eval_every, 0);
  EXPECT_EQ(c.output.dir, fs::path("/tmp/nnpar-out"));
  EXPECT_FALSE(c.output.write_results);
  EXPECT_EQ(c.parity.reference, "base");
  EXPECT_DOUBLE_EQ(c.parity.weight_rtol, 0.01);
  EXPECT_DOUBLE_EQ(c.parity.weight_atol, 0.001);
  EXPECT_DOUBLE_EQ(c.parity.accuracy_pp, 0.5);
  EXPECT_DOUBLE_EQ(c.parity.approx_accuracy_pp, 2.0);

  ASSERT_EQ(c.strategies.size(), 2u);
  EXPECT_EQ(c.strategies[0].name, "serial");
  EXPECT_EQ(c.strategies[0].label, "base");
  EXPECT_EQ(c.strategies[1].name, "threads");
  EXPECT_EQ(c.strategies[1].label, "threads");
  EXPECT_EQ(c.strategies[1].table->at_path("threads").value<std::int64_t>(), 2);
  EXPECT_EQ(c.strategies[1].where, file + ":48:1");
  // The lr written as 1 comes back as the real 1.0 in the resolved document.
  EXPECT_EQ(c.resolved.at_path("train.lr").value<double>(), 1.0);
  // ...and momentum is the double that was written, not the float the optimizer holds.
  EXPECT_EQ(c.resolved.at_path("train.momentum").value<double>(), 0.9);
  EXPECT_EQ(c.resolved.at_path("strategy[1].threads").value<std::int64_t>(), 2);
}

TEST_F(config_load, CsvFormatNeedsBothFiles) {
  const std::string file =
      write("csv.toml", "[data]\ndir = \"/d\"\nformat = \"csv\"\ntrain_csv = \"train.csv\"\n" + kSerial);
  EXPECT_THAT(load_error(file), HasSubstr(file + ":1:1: data.test_csv: required when data.format = \"csv\""));
  const std::string ok = write("csv2.toml", "[data]\ndir = \"/d\"\nformat = \"csv\"\ntrain_csv = \"train.csv\"\n"
                                            "test_csv = \"/e/test.csv\"\n" + kSerial);
  const RunConfig c = load_config(ok);
  EXPECT_EQ(c.data.train_csv, fs::path("/d/train.csv"));
  EXPECT_EQ(c.data.test_csv, fs::path("/e/test.csv"));
}

TEST_F(config_load, UnknownKeyNamesPositionAndSuggestion) {
  const std::string file = write("typo.toml", "[train]\nepochs = 3\nlrr = 0.5\n" + kSerial);
  EXPECT_EQ(load_error(file), file + ":3:1: train.lrr: unknown key (did you mean 'lr'?)");
}

TEST_F(config_load, UnknownKeyWithoutCloseMatchHasNoSuggestion) {
  const std::string file = write("far.toml", "[model]\nwibble = 1\n" + kSerial);
  const std::string e = load_error(file);
  EXPECT_THAT(e, HasSubstr(file + ":2:1: model.wibble: unknown key"));
  EXPECT_THAT(e, Not(HasSubstr("did you mean")));
}

TEST_F(config_load, TheFirstUnknownKeyInTheFileIsReported) {
  // Tables iterate alphabetically; the report must follow the file instead.
  const std::string file = write("order.toml", "[train]\nzzepochs = 1\naalr = 2\n" + kSerial);
  EXPECT_THAT(load_error(file), HasSubstr(file + ":2:1: train.zzepochs: unknown key"));
}

TEST_F(config_load, TypoInATableName) {
  const std::string file = write("table.toml", "[trian]\nlr = 0.5\n" + kSerial);
  EXPECT_EQ(load_error(file), file + ":1:2: trian: unknown table (did you mean 'train'?)");
}

TEST_F(config_load, SectionKeyAtTopLevelSuggestsItsSection) {
  const std::string file = write("top.toml", "epochs = 3\n" + kSerial);
  EXPECT_THAT(load_error(file), HasSubstr(file + ":1:1: epochs: unknown key (did you mean 'train.epochs'"));
}

TEST_F(config_load, WrongTypes) {
  const std::string a = write("a.toml", "[train]\nepochs = \"ten\"\n" + kSerial);
  EXPECT_EQ(load_error(a), a + ":2:10: train.epochs: expected an integer, found a string");
  const std::string b = write("b.toml", "[train]\nepochs = 2.5\n" + kSerial);
  EXPECT_THAT(load_error(b), HasSubstr(b + ":2:10: train.epochs: expected an integer, found a float (2.5)"));
  const std::string c = write("c.toml", "[data]\ntranspose = 1\n" + kSerial);
  EXPECT_THAT(load_error(c), HasSubstr("data.transpose: expected a boolean"));
  const std::string d = write("d.toml", "train = 3\n" + kSerial);
  EXPECT_THAT(load_error(d), HasSubstr(d + ":1:9: train: expected a table"));
  const std::string e = write("e.toml", "[model]\nlayers = [784, \"x\", 26]\n" + kSerial);
  EXPECT_THAT(load_error(e), HasSubstr(e + ":2:16: model.layers[1]: expected an integer, found a string"));
  const std::string f = write("f.toml", "[train]\nlr = \"fast\"\n" + kSerial);
  EXPECT_THAT(load_error(f), HasSubstr("train.lr: expected a number, found a string"));
}

TEST_F(config_load, OutOfRangeValues) {
  const std::string a = write("a.toml", "[train]\nlr = -0.5\n" + kSerial);
  EXPECT_EQ(load_error(a), a + ":2:6: train.lr: must be > 0, found -0.5");
  const std::string b = write("b.toml", "[train]\nepochs = 0\n" + kSerial);
  EXPECT_THAT(load_error(b), HasSubstr("train.epochs: must be in 1..100000, found 0"));
  const std::string c = write("c.toml", "[train]\nmomentum = 1.0\n" + kSerial);
  EXPECT_THAT(load_error(c), HasSubstr("train.momentum: must be in [0, 1), found 1"));
  const std::string d = write("d.toml", "[data]\nformat = \"png\"\n" + kSerial);
  EXPECT_THAT(load_error(d), HasSubstr(d + ":2:10: data.format: must be one of \"idx\", \"csv\", found \"png\""));
  const std::string e = write("e.toml", "[model]\nlayers = [784]\n" + kSerial);
  EXPECT_THAT(load_error(e), HasSubstr("model.layers: must have at least 2 sizes"));
  const std::string f = write("f.toml", "[model]\nlayers = [784, 0, 26]\n" + kSerial);
  EXPECT_THAT(load_error(f), HasSubstr("model.layers[1]: must be in 1..65536, found 0"));
  const std::string g = write("g.toml", "[data]\nclasses = 1\n" + kSerial);
  EXPECT_THAT(load_error(g), HasSubstr("data.classes: must be in 2..1000, found 1"));
  const std::string h = write("h.toml", "[data]\nlimit = -1\n" + kSerial);
  EXPECT_THAT(load_error(h), HasSubstr("data.limit: must be >= 0, found -1"));
  const std::string i = write("i.toml", "[train]\nlr = inf\n" + kSerial);
  EXPECT_THAT(load_error(i), HasSubstr("train.lr: must be finite"));
  const std::string j = write("j.toml", "[parity]\nweight_rtol = -1\n" + kSerial);
  EXPECT_THAT(load_error(j), HasSubstr("parity.weight_rtol: must be >= 0, found -1"));
}

TEST_F(config_load, StrategyEntriesAreRequiredAndNamed) {
  const std::string none = write("none.toml", "[train]\nepochs = 1\n");
  EXPECT_THAT(load_error(none), HasSubstr(none + ": strategy: at least one [[strategy]] entry is required"));
  const std::string unnamed = write("unnamed.toml", kSerial + "\n[[strategy]]\nlabel = \"x\"\n");
  EXPECT_THAT(load_error(unnamed), HasSubstr(unnamed + ":4:1: strategy[1].name: missing required key"));
  const std::string not_string = write("num.toml", "[[strategy]]\nname = 3\n");
  EXPECT_THAT(load_error(not_string), HasSubstr(not_string + ":2:8: strategy[0].name: expected a string"));
}

TEST_F(config_load, DuplicateLabelPointsAtTheSecondAndNamesTheFirst) {
  const std::string file = write("dup.toml", "[[strategy]]\nname = \"serial\"\n\n[[strategy]]\nname = \"serial\"\n");
  EXPECT_THAT(load_error(file), HasSubstr(file + ":5:8: strategy[serial].label: duplicate label 'serial', "
                                                 "already used by the strategy at " + file + ":2:8"));
  const std::string ok = write("ok.toml", "[[strategy]]\nname = \"serial\"\n\n[[strategy]]\nname = \"serial\"\n"
                                          "label = \"serial-repeat\"\n");
  EXPECT_EQ(load_config(ok).strategies.at(1).label, "serial-repeat");
}

TEST_F(config_load, ParityReferenceMustNameAStrategy) {
  const std::string file = write("ref.toml", "[parity]\nreference = \"serail\"\n" + kSerial);
  EXPECT_THAT(load_error(file),
              HasSubstr(file + ":2:13: parity.reference: no strategy is labelled \"serail\" (did you mean 'serial'?)"));
}

TEST_F(config_load, SyntaxErrorUsesTomlPosition) {
  const std::string file = write("bad.toml", "[train]\nlr = = 2\n");
  const std::string e = load_error(file);
  EXPECT_THAT(e, StartsWith(file + ":2:6: TOML syntax error: "));
  EXPECT_THAT(e, HasSubstr("could not determine value type"));
}

TEST_F(config_load, MissingFile) {
  const std::string file = (dir_ / "nope.toml").string();
  EXPECT_EQ(load_error(file), "cannot open config file '" + file + "'");
  EXPECT_EQ(load_error("relative/nope.toml"), "cannot open config file 'relative/nope.toml'");
}

TEST_F(config_load, EnvironmentVariablesInPaths) {
  ScopedEnv root("NNPAR_TEST_CFG_ROOT", "/srv/emnist");
  ScopedEnv unset("NNPAR_TEST_CFG_UNSET", std::nullopt);
  const std::string ok = write("ok.toml", "[data]\ndir = \"${NNPAR_TEST_CFG_ROOT}/letters\"\n"
                                          "train_images = \"x-${NNPAR_TEST_CFG_ROOT}\"\n" + kSerial);
  const RunConfig c = load_config(ok);
  EXPECT_EQ(c.data.dir, fs::path("/srv/emnist/letters"));
  EXPECT_EQ(c.data.test_images, fs::path("/srv/emnist/letters/letters-test-images-idx3-ubyte.gz"));
  EXPECT_EQ(c.data.train_images, fs::path("/srv/emnist/letters/x-/srv/emnist").lexically_normal());

  const std::string bad = write("bad.toml", "[data]\ndir = \"${NNPAR_TEST_CFG_UNSET}/letters\"\n" + kSerial);
  EXPECT_THAT(load_error(bad),
              HasSubstr(bad + ":2:7: data.dir: environment variable 'NNPAR_TEST_CFG_UNSET' is not set"));

  EXPECT_EQ(nnpar::expand_env("a/${NNPAR_TEST_CFG_ROOT}/b", "here"), "a//srv/emnist/b");
  EXPECT_EQ(nnpar::expand_env("$HOME-is-not-expanded", "here"), "$HOME-is-not-expanded");
  EXPECT_THAT(error_of([] { nnpar::expand_env("${NNPAR_TEST_CFG_UNSET}", "somewhere"); }),
              HasSubstr("somewhere: environment variable 'NNPAR_TEST_CFG_UNSET' is not set"));
  EXPECT_THAT(error_of([] { nnpar::expand_env("${OPEN", "w"); }), HasSubstr("w: unterminated '${'"));
}

TEST_F(config_load, RelativePathsResolveAgainstTheConfigFolder) {
  const std::string file = write("sub/cfg.toml", R"(
[data]
dir = "../data"
train_images = "imgs/train.gz"
test_images = "/abs/test.gz"
[model]
init_checkpoint = "init.safetensors"
[output]
dir = "out"
save_checkpoint = "ck/final.safetensors"
[plugins]
paths = ["plugins/libx.so", "/opt/liby.so"]
)" + kSerial);
  const RunConfig c = load_config(file);
  const fs::path sub = fs::absolute(dir_ / "sub");
  EXPECT_EQ(c.data.dir, (sub / ".." / "data").lexically_normal());
  EXPECT_EQ(c.data.train_images, (sub / ".." / "data" / "imgs" / "train.gz").lexically_normal());
  EXPECT_EQ(c.data.test_images, fs::path("/abs/test.gz"));
  EXPECT_EQ(c.init_checkpoint, (sub / "init.safetensors").lexically_normal());
  ASSERT_EQ(c.plugin_paths.size(), 2u);
  EXPECT_EQ(c.plugin_paths[0], (sub / "plugins" / "libx.so").lexically_normal());
  EXPECT_EQ(c.plugin_paths[1], fs::path("/opt/liby.so"));
  // Output goes where the run is started, not next to the config.
  EXPECT_EQ(c.output.dir, (fs::current_path() / "out").lexically_normal());
  EXPECT_EQ(c.output.save_checkpoint, (fs::current_path() / "ck" / "final.safetensors").lexically_normal());
}

TEST_F(config_load, OverridesReplaceAndAddValues) {
  const std::string file = write("o.toml", "[train]\nlr = 0.3\nepochs = 3\n" + kSerial);
  const RunConfig c = load_config(file, {"train.lr=0.5", "train.epochs = 7", "data.dir=/tmp/over data",
                                         "model.layers=[784, 10, 26]", "output.write_results=false",
                                         "train.lr=1"});
  EXPECT_FLOAT_EQ(c.train.sgd.lr, 1.0f);  // the last override of a key wins
  EXPECT_EQ(c.train.epochs, 7);
  EXPECT_EQ(c.data.dir, fs::path("/tmp/over data"));  // not TOML: taken as a plain string
  EXPECT_EQ(c.model.layer_sizes, (std::vector<int>{784, 10, 26}));
  EXPECT_FALSE(c.output.write_results);
  EXPECT_EQ(c.resolved.at_path("train.epochs").value<std::int64_t>(), 7);
  EXPECT_EQ(c.resolved.at_path("model.layers[1]").value<std::int64_t>(), 10);
}

TEST_F(config_load, OverrideErrorsNameTheOverride) {
  const std::string file = write("o.toml", "[train]\nlr = 0.3\n" + kSerial);
  EXPECT_EQ(load_error(file, {"train.lr=abc"}), "--set train.lr: expected a number, found a string");
  EXPECT_EQ(load_error(file, {"train.lr=-1"}), "--set train.lr: must be > 0, found -1");
  EXPECT_EQ(load_error(file, {"train.lrr=0.5"}), "--set train.lrr: unknown key (did you mean 'lr'?)");
  EXPECT_THAT(load_error(file, {"trian.lr=0.5"}),
              HasSubstr("--set trian.lr: trian: unknown table (did you mean 'train'?)"));
  EXPECT_THAT(load_error(file, {"model.layers=[784, 0, 26]"}),
              HasSubstr("--set model.layers: model.layers[1]: must be in 1..65536, found 0"));
  EXPECT_THAT(load_error(file, {"train.lr"}), HasSubstr("--set train.lr: expected key=value"));
  EXPECT_THAT(load_error(file, {"=3"}), HasSubstr("--set =3: empty key"));
  EXPECT_THAT(load_error(file, {"train.lr.x=1"}), HasSubstr("--set train.lr.x: 'train.lr' is a float, not a table"));
}

TEST_F(config_load, OverrideOfAStrategyOptionByLabel) {
  const std::string file = write("s.toml", "[[strategy]]\nname = \"threads\"\nlabel = \"fast\"\nthreads = 2\n" + kSerial);
  const RunConfig c = load_config(file, {"strategy.fast.threads=4", "strategy.serial.label=solo"});
  EXPECT_EQ(c.strategies.at(0).table->at_path("threads").value<std::int64_t>(), 4);
  EXPECT_EQ(c.strategies.at(1).label, "solo");

  EXPECT_EQ(load_error(file, {"strategy.fsat.threads=4"}),
            "--set strategy.fsat.threads: unknown strategy label 'fsat' (did you mean 'fast'?) "
            "(known labels: fast, serial)");
  EXPECT_THAT(load_error(file, {"strategy.fast=4"}), HasSubstr("strategy.<label>.<key>"));

  // The overridden option is validated later against the plugin and named by its override.
  const std::vector<nnpar::OptionSpec> specs{
      {"threads", nnpar::OptionType::integer, std::int64_t{1}, "worker threads", 1, 64, {}}};
  const RunConfig bad = load_config(file, {"strategy.fast.threads=0"});
  EXPECT_EQ(error_of([&] { nnpar::validate_strategy_options(bad.strategies.at(0), specs); }),
            "--set strategy.fast.threads: must be in [1, 64], found 0");
  EXPECT_EQ(nnpar::validate_strategy_options(c.strategies.at(0), specs).get_int("threads"), 4);
}

class config_options : public config_load {
 protected:
  const std::vector<nnpar::OptionSpec> specs_{
      {"threads", nnpar::OptionType::integer, std::int64_t{1}, "worker threads", 1, 64, {}},
      {"alpha", nnpar::OptionType::real, 0.5, "mixing", 0.0, 1.0, {}},
      {"pinned", nnpar::OptionType::boolean, false, "pin threads", -1e300, 1e300, {}},
      {"mode", nnpar::OptionType::string, std::string("exact"), "algorithm", -1e300, 1e300, {"fast", "exact"}},
  };
  // Loads a config whose only strategy has `body` as its options; returns the error text.
  std::string option_error(const std::string& body) {
    const std::string file = write("opt.toml", "[[strategy]]\nname = \"x\"\n" + body);
    const RunConfig c = load_config(file);
    return error_of([&] { nnpar::validate_strategy_options(c.strategies.at(0), specs_); });
  }
  // The path option_error writes to, known up front so that it can sit on either side
  // of an EXPECT_EQ (operand evaluation order is unspecified).
  std::string opt_file() const { return (dir_ / "opt.toml").string(); }
};

TEST_F(config_options, UnknownKeyWithSuggestionAndPosition) {
  EXPECT_EQ(option_error("thread = 2\n"), opt_file() + ":3:1: strategy[x].thread: unknown key (did you mean 'threads'?)");
  EXPECT_EQ(option_error("zzz = 2\n"),
            opt_file() + ":3:1: strategy[x].zzz: unknown key (strategy 'x' accepts: threads, alpha, pinned, mode)");
}

TEST_F(config_options, TypesAreChecked) {
  EXPECT_EQ(option_error("threads = \"four\"\n"), opt_file() + ":3:11: strategy[x].threads: expected an integer, found a string");
  EXPECT_THAT(option_error("threads = 2.0\n"), HasSubstr("strategy[x].threads: expected an integer, found a float"));
  EXPECT_THAT(option_error("pinned = 1\n"), HasSubstr("strategy[x].pinned: expected a boolean"));
  EXPECT_THAT(option_error("mode = 1\n"), HasSubstr("strategy[x].mode: expected a string"));
  EXPECT_THAT(option_error("alpha = \"half\"\n"), HasSubstr("strategy[x].alpha: expected a number"));
}

TEST_F(config_options, RangesAndChoices) {
  EXPECT_EQ(option_error("threads = 100\n"), opt_file() + ":3:11: strategy[x].threads: must be in [1, 64], found 100");
  EXPECT_THAT(option_error("alpha = 1.5\n"), HasSubstr("strategy[x].alpha: must be in [0, 1], found 1.5"));
  EXPECT_EQ(option_error("mode = \"fsat\"\n"),
            opt_file() + ":3:8: strategy[x].mode: must be one of \"fast\", \"exact\", found \"fsat\" (did you mean 'fast'?)");
}

TEST_F(config_options, DefaultsFilledAndIntegerAcceptedForReal) {
  const std::string file = write("d.toml", "[[strategy]]\nname = \"x\"\nalpha = 1\nmode = \"fast\"\n");
  const RunConfig c = load_config(file);
  const nnpar::StrategyOptions o = nnpar::validate_strategy_options(c.strategies.at(0), specs_);
  EXPECT_EQ(o.get_int("threads"), 1);
  EXPECT_DOUBLE_EQ(o.get_real("alpha"), 1.0);
  EXPECT_FALSE(o.get_bool("pinned"));
  EXPECT_EQ(o.get_string("mode"), "fast");
  EXPECT_EQ(o.values().size(), 4u);
}

TEST(config_closest_match, SuggestsOnlyCloseCandidates) {
  const std::vector<std::string> keys{"epochs", "batch_size", "lr", "momentum"};
  EXPECT_EQ(nnpar::closest_match("lrr", keys), "lr");
  EXPECT_EQ(nnpar::closest_match("epoch", keys), "epochs");
  EXPECT_EQ(nnpar::closest_match("batchsize", keys), "batch_size");
  EXPECT_EQ(nnpar::closest_match("momentun", keys), "momentum");
  EXPECT_EQ(nnpar::closest_match("completely_else", keys), "");
  EXPECT_EQ(nnpar::closest_match("xy", keys), "");  // distance 2 but nothing in common
  EXPECT_EQ(nnpar::closest_match("lr", {}), "");
}

TEST(config_shipped, DemoAndFullConfigsAreValid) {
  const fs::path configs = fs::path(NNPAR_SOURCE_DIR) / "configs";
  const RunConfig demo = load_config(configs / "demo.toml");
  ASSERT_GE(demo.strategies.size(), 2u);
  EXPECT_EQ(demo.strategies[0].label, "serial");
  EXPECT_EQ(demo.data.options.limit, 20000u);
  EXPECT_EQ(demo.model.layer_sizes, (std::vector<int>{784, 256, 256, 26}));

  const RunConfig full = load_config(configs / "full.toml");
  EXPECT_EQ(full.train.epochs, 20);
  EXPECT_EQ(full.train.batch_size, 32);
  EXPECT_EQ(full.data.options.limit, 0u);
}

// Every shipped config loads, and every strategy option in it is one its plugin accepts (a
// renamed option would otherwise only fail when a user runs that config).
TEST(config_shipped, EveryStrategyOptionIsAcceptedByItsPlugin) {
  nnpar::PluginRegistry plugins({NNPAR_PLUGIN_DIR});
  int checked = 0;
  for (const auto& file : fs::directory_iterator(fs::path(NNPAR_SOURCE_DIR) / "configs")) {
    if (file.path().extension() != ".toml") continue;
    SCOPED_TRACE(file.path().string());
    const RunConfig config = load_config(file.path());
    for (const auto& entry : config.strategies) {
      std::shared_ptr<nnpar::Plugin> plugin;
      try {
        plugin = plugins.find(entry.name);
      } catch (const nnpar::PluginError&) {
        continue;  // a GPU plugin not built on this machine
      }
      EXPECT_NO_THROW(nnpar::validate_strategy_options(entry, plugin->info().options)) << entry.label;
      ++checked;
    }
  }
  EXPECT_GE(checked, 4);
}
