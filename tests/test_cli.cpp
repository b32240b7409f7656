// The nnpar executable as a user meets it: exit codes, messages, files written.
#include <gmock/gmock.h>
#include <gtest/gtest.h>

#include <sys/wait.h>

#include <algorithm>
#include <chrono>
#include <cstdio>
#include <filesystem>
#include <fstream>
#include <map>
#include <sstream>

#include <nlohmann/json.hpp>

#include "runner.hpp"

namespace fs = std::filesystem;
using testing::HasSubstr;

namespace {

const fs::path kNnpar = fs::path(NNPAR_BIN_DIR) / "nnpar";
const fs::path kData = NNPAR_TEST_DATA_DIR;

struct Result {
  int status = -1;
  std::string output;  // stdout and stderr together
};

// `program args`, stdout and stderr together.
Result run_program(const fs::path& program, const std::string& args) {
  // A hard bound on every command: a hang becomes exit status 124 instead of a stuck test.
  const std::string command = "timeout 120 " + program.string() + " " + args + " 2>&1";
  Result r;
  FILE* pipe = popen(command.c_str(), "r");
  if (pipe == nullptr) return r;
  char buffer[4096];
  while (std::size_t n = std::fread(buffer, 1, sizeof buffer, pipe)) r.output.append(buffer, n);
  const int raw = pclose(pipe);
  r.status = WIFEXITED(raw) ? WEXITSTATUS(raw) : -1;
  return r;
}

Result run(const std::string& args) { return run_program(kNnpar, args); }

// Each (arguments, words) case: `tool arguments` exits 2 and its message contains the words.
void expect_refused_by_name(const fs::path& tool, const std::vector<std::pair<std::string, std::string>>& cases) {
  for (const auto& [args, named] : cases) {
    const Result bad = run_program(tool, args);
    EXPECT_EQ(bad.status, 2) << args << ": " << bad.output;
    EXPECT_THAT(bad.output, HasSubstr(named)) << args;
  }
}

// The data rows of a bench tool's table: every line but comments ('#') and the header ("method").
std::vector<std::string> table_rows(const std::string& output) {
  std::vector<std::string> rows;
  std::istringstream lines(output);
  for (std::string line; std::getline(lines, line);) {
    std::istringstream fields(line);
    std::string first;
    fields >> first;
    if (!first.empty() && first[0] != '#' && first != "method") rows.push_back(line);
  }
  return rows;
}

class Cli : public ::testing::Test {
 protected:
  void SetUp() override {
    dir_ = fs::path(NNPAR_TEST_BINARY_DIR) / "cli" /
           ::testing::UnitTest::GetInstance()->current_test_info()->name();
    fs::remove_all(dir_);
    fs::create_directories(dir_);
  }
  fs::path write(const std::string& name, const std::string& text) {
    std::ofstream(dir_ / name) << text;
    return dir_ / name;
  }
  // A run that takes a second or two: 2,000 samples, a small model.
  fs::path tiny_config(const std::string& strategies = "[[strategy]]\nname = \"serial\"\n") {
    std::ostringstream s;
    s << "[data]\ndir = \"" << kData.string() << "\"\nlimit = 2000\ntest_limit = 1000\n"
      << "[model]\nlayers = [784, 32, 26]\n"
      << "[train]\nepochs = 2\nbatch_size = 32\nlr = 0.5\n"
      << "[output]\ndir = \"" << (dir_ / "results").string() << "\"\n"
      << strategies;
    return write("tiny.toml", s.str());
  }
  void need_data() {
    if (!fs::exists(kData / "letters-train-images-idx3-ubyte.gz"))
      GTEST_SKIP() << "dataset not found in " << kData;
  }
  fs::path dir_;
};

std::vector<fs::path> files_in(const fs::path& dir, const std::string& ext) {
  std::vector<fs::path> out;
  if (fs::exists(dir))
    for (auto& e : fs::directory_iterator(dir))
      if (e.path().extension() == ext) out.push_back(e.path());
  std::sort(out.begin(), out.end());
  return out;
}

}  // namespace

TEST_F(Cli, HelpForEverySubcommand) {
  for (std::string sub : {"train", "compare", "list-plugins", "eval"}) {
    const Result r = run(sub + " --help");
    EXPECT_EQ(r.status, 0) << sub << ": " << r.output;
    EXPECT_THAT(r.output, HasSubstr("--set")) << sub;
  }
  const Result top = run("--help");
  EXPECT_EQ(top.status, 0);
  EXPECT_THAT(top.output, HasSubstr("compare"));
  EXPECT_THAT(top.output, HasSubstr("Exit status"));
}

TEST_F(Cli, UnknownSubcommandOrMissingConfigIsAnError) {
  EXPECT_EQ(run("frobnicate").status, 2);
  const Result r = run("train");
  EXPECT_EQ(r.status, 2);
  EXPECT_THAT(r.output, HasSubstr("CONFIG"));
}

TEST_F(Cli, ConfigTypoIsReportedWithPositionAndSuggestion) {
  const fs::path config = write("typo.toml", "[train]\nepochs = 1\nlrr = 0.5\n[[strategy]]\nname = \"serial\"\n");
  const Result r = run("train " + config.string());
  EXPECT_EQ(r.status, 2);
  EXPECT_THAT(r.output, HasSubstr(config.string() + ":3:1"));
  EXPECT_THAT(r.output, HasSubstr("lr"));
}

TEST_F(Cli, MissingConfigFileIsNamed) {
  const Result r = run("train " + (dir_ / "nope.toml").string());
  EXPECT_EQ(r.status, 2);
  EXPECT_THAT(r.output, HasSubstr("nope.toml"));
}

TEST_F(Cli, UnknownStrategyPluginIsAnError) {
  const fs::path config = tiny_config("[[strategy]]\nname = \"warp-drive\"\n");
  const Result r = run("train " + config.string());
  EXPECT_EQ(r.status, 2);
  EXPECT_THAT(r.output, HasSubstr("no plugin for strategy 'warp-drive'"));
}

TEST_F(Cli, MissingDataFileIsNamed) {
  const fs::path config = write("nodata.toml", "[data]\ndir = \"" + (dir_ / "empty").string() +
                                                   "\"\n[[strategy]]\nname = \"serial\"\n");
  const Result r = run("train " + config.string());
  EXPECT_EQ(r.status, 2);
  EXPECT_THAT(r.output, HasSubstr("letters-train-images-idx3-ubyte.gz"));
}

TEST_F(Cli, ListPluginsShowsSerial) {
  const Result r = run("list-plugins");
  EXPECT_EQ(r.status, 0) << r.output;
  EXPECT_THAT(r.output, HasSubstr("serial"));
  EXPECT_THAT(r.output, HasSubstr("nnpar_strategy_serial.so"));
}

TEST_F(Cli, TrainWritesResultsAndNeverOverwritesThem) {
  need_data();
  const fs::path config = tiny_config();
  const Result first = run("train " + config.string());
  ASSERT_EQ(first.status, 0) << first.output;
  EXPECT_THAT(first.output, HasSubstr("epoch 1/2"));
  EXPECT_THAT(first.output, HasSubstr("samples/s"));
  const Result second = run("train " + config.string());
  ASSERT_EQ(second.status, 0) << second.output;
  const auto json_files = files_in(dir_ / "results", ".json");
  ASSERT_EQ(json_files.size(), 2u) << "two runs in the same second must give two files";
  std::ifstream in(json_files[0]);
  const auto j = nlohmann::json::parse(in);
  EXPECT_EQ(j["strategy"]["name"], "serial");
  EXPECT_EQ(j["epochs"].size(), 2u);
  EXPECT_GT(j["final"]["test_accuracy"].get<double>(), 0.2);
  EXPECT_EQ(j["config"]["train"]["batch_size"], 32);
  EXPECT_TRUE(j["totals"]["phases"].contains("forward"));
  EXPECT_FALSE(j["git_commit"].get<std::string>().empty());
  // No temporary files are left behind.
  for (auto& e : fs::directory_iterator(dir_ / "results"))
    EXPECT_THAT(e.path().filename().string(), testing::Not(HasSubstr(".tmp")));
}

TEST_F(Cli, CompareReportsParityAndWritesCsv) {
  need_data();
  const fs::path config = tiny_config(
      "[[strategy]]\nname = \"serial\"\n[[strategy]]\nname = \"serial\"\nlabel = \"again\"\n");
  const Result r = run("compare " + config.string());
  ASSERT_EQ(r.status, 0) << r.output;
  EXPECT_THAT(r.output, HasSubstr("reference"));
  EXPECT_THAT(r.output, HasSubstr("again"));
  EXPECT_THAT(r.output, HasSubstr("PASS"));
  EXPECT_EQ(files_in(dir_ / "results", ".csv").size(), 1u);
  EXPECT_EQ(files_in(dir_ / "results", ".json").size(), 2u);
}

TEST_F(Cli, CompareRepeatRotatesTheOrderAndKeepsEachStrategysMedianRun) {
  need_data();
  const fs::path config = tiny_config(
      "[[strategy]]\nname = \"serial\"\n[[strategy]]\nname = \"serial\"\nlabel = \"again\"\n"
      "[[strategy]]\nname = \"openmp\"\nlabel = \"omp\"\nthreads = 2\n");
  const Result r = run("compare " + config.string() + " --repeat 3 --json");
  ASSERT_EQ(r.status, 0) << r.output;
  // The order of the runs, from their first epoch's line: rotated by one each round.
  std::vector<std::string> order;
  std::map<std::string, nlohmann::json> results;
  std::istringstream lines(r.output);
  for (std::string line; std::getline(lines, line);) {
    if (line.empty() || line[0] != '{') continue;
    const auto j = nlohmann::json::parse(line);
    if (j["event"] == "epoch" && j["epoch"] == 1) order.push_back(j["label"]);
    if (j["event"] == "result") results[j["label"]] = j;
  }
  EXPECT_EQ(order, (std::vector<std::string>{"serial", "again", "omp", "again", "omp", "serial", "omp", "serial",
                                             "again"}));
  ASSERT_EQ(results.size(), 3u);
  EXPECT_EQ(results["serial"]["repeats"]["paired_speedup"], (std::vector<double>{1.0, 1.0, 1.0}));

  // One JSON per strategy, not per round: the run of median training time, with every round's.
  const auto json_files = files_in(dir_ / "results", ".json");
  ASSERT_EQ(json_files.size(), 3u);
  for (const auto& file : json_files) {
    std::ifstream in(file);
    const auto j = nlohmann::json::parse(in);
    const auto& rep = j.at("repeats");
    EXPECT_EQ(rep["rounds"], 3);
    auto seconds = rep["train_seconds"].get<std::vector<double>>();
    ASSERT_EQ(seconds.size(), 3u);
    const int kept = rep["kept_round"].get<int>();
    ASSERT_GE(kept, 1);
    ASSERT_LE(kept, 3);
    EXPECT_EQ(j["totals"]["train_seconds"].get<double>(), seconds[std::size_t(kept - 1)]);
    std::sort(seconds.begin(), seconds.end());
    EXPECT_EQ(j["totals"]["train_seconds"].get<double>(), seconds[1]) << file;
    auto paired = rep["paired_speedup"].get<std::vector<double>>();
    std::sort(paired.begin(), paired.end());
    EXPECT_DOUBLE_EQ(rep["speedup"].get<double>(), paired[1]);
    EXPECT_EQ(j["parity"]["pass"], true);
  }
  // The CSV gives each strategy's rounds and the spread of its samples/s.
  const auto csv = files_in(dir_ / "results", ".csv");
  ASSERT_EQ(csv.size(), 1u);
  std::ifstream in(csv[0]);
  std::string header, row;
  std::getline(in, header);
  std::getline(in, row);
  EXPECT_THAT(header, testing::EndsWith(",rounds,samples_per_second_min,samples_per_second_max"));
  EXPECT_THAT(row, testing::StartsWith("serial,"));
  EXPECT_THAT(row, testing::ContainsRegex(",3,[0-9.e+]+,[0-9.e+]+$"));

  const Result bad = run("compare " + config.string() + " --repeat 0");
  EXPECT_EQ(bad.status, 2);
  EXPECT_THAT(bad.output, HasSubstr("--repeat"));
  EXPECT_TRUE(files_in(dir_ / "results", ".csv").size() == 1u);
}

// bench_cpu_clock's table is read by bench/openmp_scaling.py (its "host ceiling" column):
// a row per kind and thread count, the ratio to one thread last.
TEST(BenchCpuClock, PrintsARowPerThreadCountAndRefusesBadArgumentsByName) {
  const fs::path tool = fs::path(NNPAR_BIN_DIR) / "bench_cpu_clock";
  if (!fs::exists(tool)) GTEST_SKIP() << tool << " not built";
  const Result ok = run_program(tool, "--threads 2 --ms 20 --reps 1 --kinds add");
  ASSERT_EQ(ok.status, 0) << ok.output;
  std::map<int, double> gain;  // threads -> T x (rate at T / rate alone)
  std::istringstream lines(ok.output);
  for (std::string line; std::getline(lines, line);) {
    if (line.rfind("add ", 0) != 0) continue;
    std::istringstream fields(line);
    std::string kind, unit1, unit2;
    int threads = 0;
    double mean = 0, slowest = 0, ratio = 0, total = 0;
    fields >> kind >> threads >> mean >> unit1 >> slowest >> unit2 >> ratio >> total;
    ASSERT_FALSE(fields.fail()) << line;
    EXPECT_EQ(unit1, "GHz");
    EXPECT_GT(mean, 0.1) << line;  // a clock, in GHz
    EXPECT_LT(mean, 10.0) << line;
    EXPECT_LE(slowest, mean * 1.0001) << line;
    gain[threads] = total;
  }
  ASSERT_EQ(gain.size(), 2u) << ok.output;  // 1 is added: the ratios are to one thread
  EXPECT_DOUBLE_EQ(gain[1], 1.0);
  EXPECT_GT(gain[2], 0.2);
  EXPECT_LT(gain[2], 2.5);

  expect_refused_by_name(tool, {{"--kinds foo", "--kinds"},
                                {"--threads 0", "--threads"},
                                {"--threads 2,x", "--threads"},
                                {"--load 1", "--load and --seconds"},
                                {"--ms", "--ms needs a value"},
                                {"--frobnicate", "unknown argument"}});
}

TEST(BenchClusterExchange, RefusesBadArgumentsByNameAndDeliversEveryValueOnAGpu) {
  const fs::path tool = fs::path(NNPAR_BIN_DIR) / "bench_cluster_exchange";
  if (!fs::exists(tool)) GTEST_SKIP() << tool << " not built (no CUDA compiler)";
  expect_refused_by_name(tool, {{"--clusters 2,x", "--clusters x"},
                                {"--clusters 17", "--clusters 17"},
                                {"--floats 0", "--floats 0"},
                                {"--methods sync,foo", "unknown method 'foo'"},
                                {"--rounds", "--rounds: missing its value"},
                                {"--frobnicate 1", "unknown option --frobnicate"}});

  const Result ok = run_program(tool, "--clusters 2,16 --rounds 2000");
  if (ok.status == 1 && ok.output.find("no CUDA device") != std::string::npos)
    GTEST_SKIP() << "no CUDA device: the argument checks ran, the exchanges did not";
  ASSERT_EQ(ok.status, 0) << ok.output;
  // One row per method and cluster size; every value that went around must have arrived intact.
  std::map<std::string, int> rows;
  for (const std::string& line : table_rows(ok.output)) {
    std::istringstream fields(line);
    std::string method, check;
    int cluster = 0;
    double ns = 0, slowest = 0;
    fields >> method >> cluster >> ns >> slowest >> check;
    if (fields.fail() && cluster == 16 && line.find("cannot run") != std::string::npos) continue;
    ASSERT_FALSE(fields.fail()) << line;
    EXPECT_EQ(check, "ok") << line;
    EXPECT_GT(ns, 10.0) << line;  // nothing crosses SMs in under 10 ns
    EXPECT_GE(slowest, ns * 0.9999) << line;
    ++rows[method];
  }
  for (const char* method : {"barrier", "sync", "split", "arrive", "st_async", "global", "global_ll"})
    EXPECT_GE(rows[method], 1) << method << " missing:\n" << ok.output;
}

TEST(BenchClusterBroadcast, RefusesBadArgumentsByNameAndDeliversEveryByteOnAGpu) {
  const fs::path tool = fs::path(NNPAR_BIN_DIR) / "bench_cluster_broadcast";
  if (!fs::exists(tool)) GTEST_SKIP() << tool << " not built (no CUDA compiler)";
  expect_refused_by_name(tool, {{"--bytes 100", "--bytes 100: must be a multiple of 16"},
                                {"--piece 0", "--piece 0"},
                                {"--clusters 0", "--clusters 0"},
                                {"--fresh 2", "--fresh 2"},
                                {"--methods ldcg,foo", "unknown method 'foo'"},
                                {"--rounds", "--rounds: missing its value"},
                                {"--frobnicate 1", "unknown option --frobnicate"}});

  // Pieces that do not divide the bytes, so the last piece is short and multicast's pieces go
  // unevenly to the blocks.
  const Result ok = run_program(tool, "--clusters 1,16 --bytes 100352 --piece 6016 --rounds 50");
  if (ok.status == 1 && ok.output.find("no CUDA device") != std::string::npos)
    GTEST_SKIP() << "no CUDA device: the argument checks ran, the copies did not";
  ASSERT_EQ(ok.status, 0) << ok.output;
  // One row per method, freshness and cluster size; every block's checksum must match the source.
  std::map<std::string, int> rows;
  for (const std::string& line : table_rows(ok.output)) {
    std::istringstream fields(line);
    std::string method, check;
    int cluster = 0, fresh = 0;
    double ns = 0, slowest = 0, rate = 0;
    fields >> method >> cluster >> fresh >> ns >> slowest >> rate >> check;
    if (fields.fail() && cluster == 16 && line.find("cannot run") != std::string::npos) continue;
    ASSERT_FALSE(fields.fail()) << line;
    EXPECT_EQ(check, "ok") << line;
    EXPECT_GT(ns, 100.0) << line;  // 100 KB does not reach an SM in under 100 ns
    EXPECT_GE(slowest, ns * 0.9999) << line;
    ++rows[method];
  }
  for (const char* method : {"ldcg", "ldcg_rotated", "ldcg_own", "bulk", "bulk_rotated", "bulk_own", "multicast"})
    EXPECT_GE(rows[method], 2) << method << " missing:\n" << ok.output;
}

TEST_F(Cli, OverrideChangesTheRunAndBadOverrideIsNamed) {
  need_data();
  const fs::path config = tiny_config();
  const Result bad = run("train " + config.string() + " --set train.lr=fast");
  EXPECT_EQ(bad.status, 2);
  EXPECT_THAT(bad.output, HasSubstr("--set train.lr"));
  const Result ok = run("train " + config.string() + " --set train.epochs=1");
  EXPECT_EQ(ok.status, 0) << ok.output;
  EXPECT_THAT(ok.output, HasSubstr("epoch 1/1"));
}

TEST_F(Cli, CheckpointRoundTripThroughEval) {
  need_data();
  const fs::path config = tiny_config();
  const fs::path ckpt = dir_ / "model.safetensors";
  const Result train = run("train " + config.string() + " --save-checkpoint " + ckpt.string());
  ASSERT_EQ(train.status, 0) << train.output;
  ASSERT_TRUE(fs::exists(ckpt));
  // An existing checkpoint is never replaced without --overwrite, and the refusal comes
  // before any training.
  const Result again = run("train " + config.string() + " --save-checkpoint " + ckpt.string());
  EXPECT_EQ(again.status, 2);
  EXPECT_THAT(again.output, HasSubstr("already exists"));
  EXPECT_THAT(again.output, testing::Not(HasSubstr("epoch 1")));

  const Result eval = run("eval --checkpoint " + ckpt.string() + " " + config.string());
  ASSERT_EQ(eval.status, 0) << eval.output;
  EXPECT_THAT(eval.output, HasSubstr("accuracy:"));
  EXPECT_THAT(eval.output, HasSubstr("per letter"));
  // The accuracy eval prints is the one training reported.
  const auto pos = train.output.find("final test accuracy ");
  ASSERT_NE(pos, std::string::npos);
  const std::string acc = train.output.substr(pos + 20, train.output.find('%', pos) - pos - 20);
  EXPECT_THAT(eval.output, HasSubstr("accuracy: " + acc + "%"));
}

TEST_F(Cli, EvalOfACorruptCheckpointIsAnError) {
  const fs::path bad = write("bad.safetensors", "not a checkpoint");
  const Result r = run("eval --checkpoint " + bad.string());
  EXPECT_EQ(r.status, 2);
  EXPECT_THAT(r.output, HasSubstr("bad.safetensors"));
}

TEST_F(Cli, CompareLaunchesMultiRankStrategiesThroughMpirun) {
  need_data();
  const fs::path config = tiny_config(
      "[[strategy]]\nname = \"serial\"\n"
      "[[strategy]]\nname = \"mpi-data\"\nlabel = \"dp2\"\nranks = 2\n"
      "[[strategy]]\nname = \"mpi-data\"\nlabel = \"lsgd3\"\nranks = 3\nmode = \"local_sgd\"\nperiod = 2\n");
  const Result r = run("compare " + config.string());
  ASSERT_EQ(r.status, 0) << r.output;
  EXPECT_THAT(r.output, HasSubstr("starting 2 ranks"));
  EXPECT_THAT(r.output, testing::ContainsRegex("dp2 +mpi-data +exact .* PASS"));
  EXPECT_THAT(r.output, testing::ContainsRegex("lsgd3 +mpi-data +approx .* PASS"));
  const auto json_files = files_in(dir_ / "results", ".json");
  ASSERT_EQ(json_files.size(), 3u);
}

TEST_F(Cli, GridSweepRunsEveryGridAndTensorAndNamesTheWinner) {
  need_data();
  // 2 Linear layers and 2 workers: grids 2x1 and 1x2, plus mpi-tensor on 2.
  const fs::path config = tiny_config(
      "[[strategy]]\nname = \"serial\"\n"
      "[[strategy]]\nname = \"mpi-hybrid\"\nlabel = \"grid\"\nmicro_batches = 2\n");
  const Result r = run("compare " + config.string() + " --grids 2 --quiet");
  ASSERT_EQ(r.status, 0) << r.output;
  EXPECT_THAT(r.output, testing::ContainsRegex("grid-2x1 +mpi-hybrid +exact .* PASS"));
  EXPECT_THAT(r.output, testing::ContainsRegex("grid-1x2 +mpi-hybrid +exact .* PASS"));
  EXPECT_THAT(r.output, testing::ContainsRegex("mpi-tensor-2 +mpi-tensor +exact .* PASS"));
  EXPECT_THAT(r.output, HasSubstr("grids on 2 workers, fastest first:"));
  EXPECT_THAT(r.output, testing::ContainsRegex("winner: (grid-2x1|grid-1x2|mpi-tensor-2) "));
  EXPECT_EQ(files_in(dir_ / "results", ".json").size(), 4u);
  // Without a hybrid entry there is nothing to arrange.
  const Result none = run("compare " + tiny_config().string() + " --grids 2");
  EXPECT_EQ(none.status, 2) << none.output;
  EXPECT_THAT(none.output, HasSubstr("no [[strategy]] of plugin mpi-hybrid or nccl-hybrid"));
}

TEST_F(Cli, ARankThatDiesEndsTheJobInsteadOfHanging) {
  need_data();
  const fs::path config = tiny_config("[plugins]\npaths = [\"" + std::string(NNPAR_TEST_PLUGIN_DIR) +
                                      "\"]\n[[strategy]]\nname = \"mpi_dies\"\nranks = 2\n");
  const auto start = std::chrono::steady_clock::now();
  // `timeout` turns a hang into status 124, which fails the assertion below.
  const Result r = run("train " + config.string());
  const double seconds = std::chrono::duration<double>(std::chrono::steady_clock::now() - start).count();
  EXPECT_NE(r.status, 0) << r.output;
  EXPECT_NE(r.status, 124) << "the job hung";
  EXPECT_LT(seconds, 60);
  EXPECT_THAT(r.output, testing::ContainsRegex("(exited|exit code|non-zero)"));
}

TEST_F(Cli, LabelsWithPathCharactersMakeSafeFileNames) {
  need_data();
  const fs::path config = tiny_config("[[strategy]]\nname = \"serial\"\nlabel = \"../a b/c\"\n");
  const Result r = run("train " + config.string() + " --set train.epochs=1");
  ASSERT_EQ(r.status, 0) << r.output;
  const auto files = files_in(dir_ / "results", ".json");
  ASSERT_EQ(files.size(), 1u);
  // Separators and spaces become '_', and no name starts with '.': "../a b/c" -> "_.._a_b_c".
  EXPECT_THAT(files[0].filename().string(), HasSubstr("-_.._a_b_c.json"));
  EXPECT_EQ(files[0].parent_path(), dir_ / "results");
}

TEST_F(Cli, GpuStrategyWithoutAGpuIsRefusedFromItsMetadata) {
  if (nnpar::probe_gpus().count > 0) GTEST_SKIP() << "this machine has a GPU";
  need_data();
  const fs::path config = tiny_config("[plugins]\npaths = [\"" + std::string(NNPAR_TEST_PLUGIN_DIR) +
                                      "\"]\n[[strategy]]\nname = \"gpu_only\"\n");
  const Result r = run("train " + config.string());
  EXPECT_EQ(r.status, 2) << r.output;
  EXPECT_THAT(r.output, HasSubstr("strategy 'gpu_only' (plugin gpu_only) needs a CUDA GPU"));
  EXPECT_THAT(r.output, testing::Not(HasSubstr("setup must not be reached")));
  // compare refuses it before training anything else.
  const Result c = run("compare " + config.string());
  EXPECT_EQ(c.status, 2);
  EXPECT_THAT(c.output, HasSubstr("needs a CUDA GPU"));
  EXPECT_THAT(c.output, testing::Not(HasSubstr("epoch 1")));
}
