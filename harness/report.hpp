// `nnpar report RESULTS_DIR -o REPORT_DIR`: runs tools/nnpar_report.py (python3 + matplotlib)
// over a folder of results; see docs/reports.md.
#pragma once
#include <filesystem>

namespace nnpar {

struct ReportOptions {
  std::filesystem::path results;
  std::filesystem::path out;  // empty: RESULTS_DIR/report
  bool overwrite = false;
  std::filesystem::path profile;      // --profile: a section of predictions beside the measurements
  std::filesystem::path predictions;  // set by main(): `plan --compare-results --json` of profile
};

// The report script: $NNPAR_REPORT_SCRIPT, else share/nnpar/nnpar_report.py beside an installed
// nnpar, else tools/nnpar_report.py in the source tree this nnpar was built from.
std::filesystem::path report_script();

// Returns the exit status (0, or 2 with a message on stderr).
int run_report(const ReportOptions& options);

}  // namespace nnpar
