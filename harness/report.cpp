#include "report.hpp"

#include <unistd.h>

#include <cstdio>
#include <cstdlib>
#include <stdexcept>
#include <string>
#include <vector>

#include <boost/dll/runtime_symbol_info.hpp>

#include "launcher.hpp"

namespace nnpar {
namespace fs = std::filesystem;

namespace {

// The Debian interpreter first: its apt packages (python3-matplotlib) are what
// scripts/common.sh installs, whatever python3 comes first on PATH.
std::string python() {
  if (const char* p = std::getenv("NNPAR_PYTHON"); p && *p) return p;
  if (::access("/usr/bin/python3", X_OK) == 0) return "/usr/bin/python3";
  return "python3";
}

bool holds_results(const fs::path& dir) {
  std::error_code ec;
  for (auto it = fs::recursive_directory_iterator(dir, ec); !ec && it != fs::recursive_directory_iterator();
       it.increment(ec))
    if (it->is_regular_file(ec) && it->path().extension() == ".json") return true;
  return false;
}

}  // namespace

fs::path report_script() {
  if (const char* p = std::getenv("NNPAR_REPORT_SCRIPT"); p && *p) return p;
  const fs::path exe_dir = boost::dll::program_location().parent_path().string();
  const fs::path installed = exe_dir.parent_path() / "share" / "nnpar" / "nnpar_report.py";
  if (fs::exists(installed)) return installed;
  return fs::path(NNPAR_SOURCE_DIR) / "tools" / "nnpar_report.py";
}

int run_report(const ReportOptions& o) {
  std::error_code ec;
  if (!fs::exists(o.results, ec)) {
    std::fprintf(stderr, "nnpar: report: results folder '%s' does not exist\n", o.results.string().c_str());
    return 2;
  }
  if (!fs::is_directory(o.results, ec)) {
    std::fprintf(stderr, "nnpar: report: '%s' is not a folder (give the folder that holds the results JSON)\n",
                 o.results.string().c_str());
    return 2;
  }
  if (!holds_results(o.results)) {
    std::fprintf(stderr, "nnpar: report: no results (*.json) in '%s'; run nnpar compare or nnpar sweep first\n",
                 o.results.string().c_str());
    return 2;
  }
  const fs::path out = o.out.empty() ? o.results / "report" : o.out;
  if (fs::exists(out, ec) && !fs::is_directory(out, ec)) {
    std::fprintf(stderr, "nnpar: report: '%s' is a file, not a folder\n", out.string().c_str());
    return 2;
  }
  if (fs::exists(out, ec) && !fs::is_empty(out, ec) && !o.overwrite) {
    std::fprintf(stderr, "nnpar: report: '%s' already holds files; choose another -o or pass --overwrite\n",
                 out.string().c_str());
    return 2;
  }
  const fs::path script = report_script();
  if (!fs::exists(script, ec)) {
    std::fprintf(stderr, "nnpar: report: the report script '%s' is missing (set NNPAR_REPORT_SCRIPT)\n",
                 script.string().c_str());
    return 2;
  }
  // The script writes a fresh folder beside the target and moves it into place at the end, so
  // a failed report never leaves a half-written one.
  std::vector<std::string> command{python(), script.string(), o.results.string(), "-o", out.string()};
  if (o.overwrite) command.push_back("--overwrite");
  if (!o.predictions.empty()) command.insert(command.end(), {"--predictions", o.predictions.string()});
  int status = 0;
  try {
    status = run_and_wait(command);
  } catch (const std::exception& e) {
    std::fprintf(stderr, "nnpar: report: cannot run %s (install python3, python3-matplotlib and python3-numpy): %s\n",
                 command[0].c_str(), e.what());
    return 2;
  }
  return status == 0 ? 0 : 2;
}

}  // namespace nnpar
