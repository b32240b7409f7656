// What train and compare print per epoch: plain lines off a terminal (stable, parsed by tools and
// CI logs), a live bar on one, nothing with --quiet, JSON lines with --json.
#include <gmock/gmock.h>
#include <gtest/gtest.h>

#include <regex>

#include <nlohmann/json.hpp>

#include "nnpar_cli.hpp"

using namespace nnpar_test;
using testing::HasSubstr;

namespace {

class Progress : public CliTest {};

// The per-epoch line, exactly: label, epoch n/N, loss, train and test accuracy, samples/s, time.
const std::regex kEpochLine(
    R"(\[([^\]]+)\] epoch (\d+)/(\d+)  loss \d+\.\d{4}  train +\d+\.\d{2}%  test +(\d+\.\d{2}%|-)  +\d+ samples/s +\d+\.\d{3} s)");

std::vector<std::smatch> epoch_lines(const std::string& text, std::vector<std::string>& storage) {
  storage = lines_of(text);
  std::vector<std::smatch> found;
  for (auto& line : storage) {
    std::smatch m;
    if (std::regex_match(line, m, kEpochLine)) found.push_back(m);
  }
  return found;
}

TEST_F(Progress, OffATerminalEveryEpochIsOnePlainLine) {
  NNPAR_NEED_DATA();
  const Output r = run("train " + tiny_config().string());
  ASSERT_EQ(r.status, 0) << r.all();
  std::vector<std::string> lines;
  const auto epochs = epoch_lines(r.out, lines);
  ASSERT_EQ(epochs.size(), 2u) << r.out;
  EXPECT_EQ(epochs[0][1], "serial");
  EXPECT_EQ(epochs[0][2], "1");
  EXPECT_EQ(epochs[1][2], "2");
  EXPECT_EQ(epochs[1][3], "2");
  EXPECT_EQ(r.out.find('\r'), std::string::npos);
  EXPECT_EQ(r.out.find('\033'), std::string::npos);
}

TEST_F(Progress, RanksStartedByCompareAlsoPrintPlainLinesOffATerminal) {
  NNPAR_NEED_DATA();
  // OpenMPI gives rank 0 a pseudo-terminal even here: the parent must tell it what to print.
  const Output r = run("compare " + tiny_config("[[strategy]]\nname = \"mpi-data\"\nranks = 2\n").string());
  ASSERT_EQ(r.status, 0) << r.all();
  std::vector<std::string> lines;
  const auto epochs = epoch_lines(r.out, lines);
  ASSERT_EQ(epochs.size(), 4u) << r.out;  // serial (the reference) and mpi-data
  EXPECT_EQ(epochs[2][1], "mpi-data");
  EXPECT_EQ(r.out.find('\033'), std::string::npos);
}

TEST_F(Progress, QuietPrintsNoEpochLines) {
  NNPAR_NEED_DATA();
  const Output r = run("train " + tiny_config().string() + " --quiet");
  ASSERT_EQ(r.status, 0) << r.all();
  std::vector<std::string> lines;
  EXPECT_TRUE(epoch_lines(r.out, lines).empty()) << r.out;
  EXPECT_THAT(r.out, HasSubstr("final test accuracy"));
}

TEST_F(Progress, JsonPutsOnlyJsonLinesOnStdout) {
  NNPAR_NEED_DATA();
  const Output r = run("compare " + tiny_config("[[strategy]]\nname = \"serial\"\n[[strategy]]\nname = \"mpi-data\"\nranks = 2\n").string() + " --json");
  ASSERT_EQ(r.status, 0) << r.all();
  std::map<std::string, int> epochs, results;
  for (auto& line : lines_of(r.out)) {
    nlohmann::json j;
    ASSERT_NO_THROW(j = nlohmann::json::parse(line)) << "not JSON: " << line;
    if (j["event"] == "epoch") {
      epochs[j["label"]] += 1;
      EXPECT_EQ(j["epochs"], 2);
      for (const char* key : {"loss", "train_accuracy", "test_accuracy", "samples_per_second", "seconds",
                              "elapsed_seconds", "eta_seconds", "samples", "steps"})
        EXPECT_TRUE(j.contains(key)) << key << " missing in " << line;
      EXPECT_EQ(j["samples"], 1024);
    } else if (j["event"] == "result") {
      results[j["label"]] += 1;
      EXPECT_EQ(j["parity"], j["label"] == "serial" ? "reference" : "PASS");
    }
  }
  // The multi-rank entry's lines come from its rank 0 in the child processes.
  EXPECT_EQ(epochs, (std::map<std::string, int>{{"serial", 2}, {"mpi-data", 2}}));
  EXPECT_EQ(results, (std::map<std::string, int>{{"serial", 1}, {"mpi-data", 1}}));
  EXPECT_THAT(r.err, HasSubstr("data: 1024 train"));  // the human lines go to stderr
}

TEST_F(Progress, JsonAndQuietTogetherAreRefused) {
  const Output r = run("train " + tiny_config().string() + " --json --quiet");
  EXPECT_EQ(r.status, 2);
  EXPECT_THAT(r.all(), HasSubstr("excludes"));
}

TEST_F(Progress, OnATerminalABarWithAnEtaSitsBelowThePlainLines) {
  NNPAR_NEED_DATA();
  if (std::system("command -v script >/dev/null 2>&1") != 0) GTEST_SKIP() << "script(1) not installed";
  const Output r = run("train " + tiny_config().string(), /*in_terminal=*/true);
  ASSERT_EQ(r.status, 0) << r.all();
  EXPECT_THAT(r.out, HasSubstr("\r\033[K[serial] epoch 2/2 ["));  // the bar for epoch 2
  EXPECT_THAT(r.out, HasSubstr("ETA"));
  EXPECT_THAT(r.out, HasSubstr("[serial] epoch 2/2  loss"));  // the permanent line
}

}  // namespace
