// Running the nnpar executable from a test: exit status, stdout and stderr apart (--json keeps
// them apart), a per-test scratch folder, and a tiny config on the letters data.
#pragma once
#include <gtest/gtest.h>

#include <sys/wait.h>

#include <cstdio>
#include <cstdlib>
#include <filesystem>
#include <fstream>
#include <sstream>
#include <string>
#include <vector>

namespace nnpar_test {

namespace fs = std::filesystem;

inline const fs::path kNnpar = fs::path(NNPAR_BIN_DIR) / "nnpar";
inline const fs::path kData = NNPAR_TEST_DATA_DIR;

struct Output {
  int status = -1;
  std::string out, err;
  std::string all() const { return out + err; }
};

inline std::string slurp(const fs::path& file) {
  std::ifstream in(file, std::ios::binary);
  std::stringstream s;
  s << in.rdbuf();
  return s.str();
}

// `timeout` turns a hang into status 124 instead of a stuck test.
// With in_terminal, under script(1): stdout is a pseudo-terminal, as in an interactive shell.
inline Output run_nnpar(const std::string& args, const fs::path& scratch, bool in_terminal = false) {
  const fs::path out = scratch / "stdout.txt", err = scratch / "stderr.txt";
  const std::string nnpar = "timeout 300 " + kNnpar.string() + " " + args;
  const std::string command = (in_terminal ? "TERM=xterm script -qfec '" + nnpar + "' /dev/null" : nnpar) + " >" +
                              out.string() + " 2>" + err.string();
  const int raw = std::system(command.c_str());
  Output o;
  o.status = WIFEXITED(raw) ? WEXITSTATUS(raw) : -1;
  o.out = slurp(out);
  o.err = slurp(err);
  return o;
}

inline std::vector<std::string> lines_of(const std::string& text) {
  std::vector<std::string> lines;
  std::istringstream in(text);
  for (std::string line; std::getline(in, line);) lines.push_back(line);
  return lines;
}

// The interpreter `nnpar report` runs, and whether it has matplotlib.
inline bool report_python_ready() {
  const char* python = std::getenv("NNPAR_PYTHON");
  const std::string p = python ? python : (fs::exists("/usr/bin/python3") ? "/usr/bin/python3" : "python3");
  return std::system((p + " -c 'import matplotlib, numpy' >/dev/null 2>&1").c_str()) == 0;
}

class CliTest : public ::testing::Test {
 protected:
  void SetUp() override {
    const auto* info = ::testing::UnitTest::GetInstance()->current_test_info();
    dir_ = fs::path(NNPAR_TEST_BINARY_DIR) / "reports" / (std::string(info->test_suite_name()) + "." + info->name());
    fs::remove_all(dir_);
    fs::create_directories(dir_);
  }
  Output run(const std::string& args, bool in_terminal = false) { return run_nnpar(args, dir_, in_terminal); }
  fs::path write(const std::string& name, const std::string& text) {
    std::ofstream(dir_ / name) << text;
    return dir_ / name;
  }
  // A run of a second or two: 1,024 samples, a small model, 2 epochs.
  fs::path tiny_config(const std::string& strategies = "[[strategy]]\nname = \"serial\"\n",
                       const std::string& layers = "[784, 32, 26]") {
    std::ostringstream s;
    s << "[data]\ndir = \"" << kData.string() << "\"\nlimit = 1024\ntest_limit = 512\n"
      << "[model]\nlayers = " << layers << "\n"
      << "[train]\nepochs = 2\nbatch_size = 32\nlr = 0.5\n"
      << "[output]\ndir = \"" << (dir_ / "results").string() << "\"\n"
      << strategies;
    return write("tiny.toml", s.str());
  }
  bool have_data() const { return fs::exists(kData / "letters-train-images-idx3-ubyte.gz"); }
  fs::path dir_;
};

#define NNPAR_NEED_DATA() \
  if (!have_data()) GTEST_SKIP() << "dataset not found in " << kData

}  // namespace nnpar_test
