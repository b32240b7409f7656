// Does a strategy learn the same model as the reference (serial)?
#pragma once
#include <span>
#include <string>

#include "config.hpp"
#include "runner.hpp"

namespace nnpar {

struct ParityReport {
  std::string reference;       // label of the reference run
  ParityClass parity_class = ParityClass::exact;
  double max_abs_diff = 0;     // max_i |w_i - ref_i|
  double max_rel_diff = 0;     // max_abs_diff / max_i |ref_i|  (normwise, robust to ref_i ~ 0)
  std::size_t elements_outside = 0;  // elements failing |w-ref| <= atol + rtol*|ref|
  double accuracy_diff_pp = 0; // (acc - ref acc) in percentage points
  bool weights_checked = false;
  bool pass = false;
  std::string verdict;         // "PASS", "FAIL", "reference"
  std::string reason;          // why it failed, human-readable
};

struct WeightDiff {
  double max_abs = 0, max_rel = 0;
  std::size_t outside = 0;
};
WeightDiff compare_weights(std::span<const float> values, std::span<const float> reference,
                           double rtol, double atol);

ParityReport check_parity(const RunResult& run, const RunResult& reference, const ParityConfig& config);

}  // namespace nnpar
