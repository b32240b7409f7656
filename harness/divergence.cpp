#include "divergence.hpp"

#include <cmath>
#include <cstdio>

#include "nnpar/safetensors.hpp"

namespace nnpar {

std::optional<NonFiniteParameter> find_non_finite(const ModelSpec& spec, std::span<const float> params) {
  std::optional<NonFiniteParameter> first;
  std::size_t count = 0;
  for (const ParameterSlice& slice : parameter_layout(spec)) {
    if (slice.offset + slice.size() > params.size()) break;
    const float* p = params.data() + slice.offset;
    for (std::size_t i = 0; i < slice.size(); ++i) {
      if (std::isfinite(p[i])) continue;
      ++count;
      if (first) continue;
      NonFiniteParameter f;
      // "layers.<i>.weight": the layer index sits between the two dots.
      f.layer = std::stoi(slice.name.substr(7, slice.name.find('.', 7) - 7));
      f.tensor = slice.name;
      const std::size_t cols = slice.shape.size() == 2 ? slice.shape[1] : 1;
      f.row = i / cols;
      f.col = i % cols;
      f.value = p[i];
      first = f;
    }
  }
  if (first) first->count = count;
  return first;
}

namespace {

std::string number(double v) {
  if (std::isnan(v)) return "NaN";  // printf would say "-nan" for a NaN with its sign bit set
  if (std::isinf(v)) return v > 0 ? "+Inf" : "-Inf";
  char buffer[64];
  std::snprintf(buffer, sizeof buffer, "%g", v);
  return buffer;
}

// "layers.1.weight[3,17] = NaN" (one index for a bias). Appended piece by piece: GCC 12 warns
// falsely (-Wrestrict) on "[" + std::string.
std::string describe(const NonFiniteParameter& bad) {
  std::string s = bad.tensor;
  s += '[';
  s += std::to_string(bad.row);
  if (bad.tensor.ends_with(".weight")) {
    s += ',';
    s += std::to_string(bad.col);
  }
  s += "] = ";
  s += number(bad.value);
  return s;
}

}  // namespace

void refuse_non_finite(const std::filesystem::path& file, const ModelSpec& spec, std::span<const float> params) {
  const auto bad = find_non_finite(spec, params);
  if (!bad) return;
  throw CheckpointError("checkpoint " + file.string() + ": " + describe(*bad) + " (" + std::to_string(bad->count) +
                        " non-finite values): these weights cannot be trained or evaluated");
}

void check_divergence(const DivergenceSite& site, const ModelSpec& spec, std::span<const float> params) {
  const bool loss_finite = std::isfinite(site.mean_loss);
  const auto bad = find_non_finite(spec, params);
  if (loss_finite && !bad) return;

  std::string where = "strategy '" + site.strategy + "' diverged in epoch " + std::to_string(site.epoch);
  if (site.last_step >= site.first_step && site.last_step > 0)
    where += " (optimizer steps " + std::to_string(site.first_step) + ".." + std::to_string(site.last_step) + ")";
  std::string what;
  if (bad) {
    what = "Linear layer " + std::to_string(bad->layer) + " has non-finite weights: " + describe(*bad) + " (" +
           std::to_string(bad->count) + " non-finite values in all), mean loss " + number(site.mean_loss);
  } else {
    what = "the mean training loss is " + number(site.mean_loss) + " (the weights are still finite)";
  }
  throw DivergenceError(where + ": " + what + "; learning rate train.lr = " + number(site.lr) +
                        ": lower it and train again");
}

}  // namespace nnpar
