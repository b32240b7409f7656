#include "parity.hpp"

#include <algorithm>
#include <cmath>
#include <cstdio>
#include <stdexcept>

namespace nnpar {

WeightDiff compare_weights(std::span<const float> values, std::span<const float> reference,
                           double rtol, double atol) {
  if (values.size() != reference.size())
    throw std::invalid_argument("compare_weights: " + std::to_string(values.size()) +
                                " values against " + std::to_string(reference.size()) +
                                " reference values");
  WeightDiff diff;
  double max_ref = 0;
  for (std::size_t i = 0; i < values.size(); ++i) {
    const double a = values[i], b = reference[i];
    const double d = std::fabs(a - b);
    // NaN must fail: (d > limit) is false for NaN, so test the negation.
    if (!(d <= atol + rtol * std::fabs(b))) ++diff.outside;
    if (std::isnan(d)) diff.max_abs = INFINITY;
    diff.max_abs = std::max(diff.max_abs, d);
    max_ref = std::max(max_ref, std::fabs(b));
  }
  diff.max_rel = max_ref > 0 ? diff.max_abs / max_ref : diff.max_abs;
  return diff;
}

ParityReport check_parity(const RunResult& run, const RunResult& reference, const ParityConfig& config) {
  ParityReport report;
  report.reference = reference.label;
  report.parity_class = run.parity;
  report.accuracy_diff_pp = 100.0 * (run.final_test.accuracy - reference.final_test.accuracy);
  if (&run == &reference) {
    report.pass = true;
    report.verdict = "reference";
    return report;
  }
  char buffer[256];
  bool pass = true;
  std::string reason;
  if (run.parity == ParityClass::exact) {
    const WeightDiff diff = compare_weights(run.final_parameters, reference.final_parameters,
                                            config.weight_rtol, config.weight_atol);
    report.weights_checked = true;
    report.max_abs_diff = diff.max_abs;
    report.max_rel_diff = diff.max_rel;
    report.elements_outside = diff.outside;
    if (diff.outside > 0) {
      pass = false;
      std::snprintf(buffer, sizeof buffer,
                    "%zu of %zu weights differ by more than atol %.1e + rtol %.1e*|ref| "
                    "(max abs %.3e)",
                    diff.outside, run.final_parameters.size(), config.weight_atol,
                    config.weight_rtol, diff.max_abs);
      reason = buffer;
    }
    if (!(std::fabs(report.accuracy_diff_pp) <= config.accuracy_pp)) {
      pass = false;
      std::snprintf(buffer, sizeof buffer, "%stest accuracy differs by %.3f pp (limit %.3f pp)",
                    reason.empty() ? "" : "; ", report.accuracy_diff_pp, config.accuracy_pp);
      reason += buffer;
    }
  } else if (!(report.accuracy_diff_pp >= -config.approx_accuracy_pp)) {
    // Approximate strategies run a different algorithm: only falling short is a failure.
    pass = false;
    std::snprintf(buffer, sizeof buffer, "test accuracy is %.3f pp below the reference (limit %.3f pp)",
                  report.accuracy_diff_pp, config.approx_accuracy_pp);
    reason = buffer;
  }
  report.pass = pass;
  report.verdict = pass ? "PASS" : "FAIL";
  report.reason = reason;
  return report;
}

}  // namespace nnpar
