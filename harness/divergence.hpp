// Divergence detection: a NaN or Inf in the loss or the weights ends training with a message
// that says where it happened, instead of finishing with garbage results.
#pragma once
#include <cstddef>
#include <filesystem>
#include <optional>
#include <span>
#include <stdexcept>
#include <string>

#include "nnpar/model.hpp"

namespace nnpar {

// Training stopped because the loss or the weights stopped being finite numbers.
class DivergenceError : public std::runtime_error {
 public:
  using std::runtime_error::runtime_error;
};

// The first non-finite value of a parameter vector, by Linear layer in model order.
struct NonFiniteParameter {
  int layer = 0;            // Linear layer index
  std::string tensor;       // "layers.1.weight"
  std::size_t row = 0, col = 0;  // position in that tensor (col 0 for a bias)
  float value = 0;          // the NaN or Inf itself
  std::size_t count = 0;    // non-finite values in the whole vector
};
std::optional<NonFiniteParameter> find_non_finite(const ModelSpec& spec, std::span<const float> params);

// Weights read from a file (init_checkpoint, a resumed run, eval) must be finite:
// CheckpointError naming the file and the first bad value otherwise.
void refuse_non_finite(const std::filesystem::path& file, const ModelSpec& spec, std::span<const float> params);

// Where in the run the check fired, for the message.
struct DivergenceSite {
  std::string strategy;     // label
  int epoch = 0;            // 1-based
  std::size_t first_step = 0, last_step = 0;  // 1-based optimizer steps of that epoch
  double mean_loss = 0;
  double lr = 0;
};

// Throws DivergenceError when the epoch's loss or (when given) the weights are not finite.
// `params` empty: the loss alone is checked (ranks other than 0 hold no full weights).
void check_divergence(const DivergenceSite& site, const ModelSpec& spec, std::span<const float> params);

}  // namespace nnpar
