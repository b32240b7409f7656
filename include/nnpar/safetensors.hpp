// Checkpoints in the safetensors format: an 8-byte little-endian header length, a JSON
// header {"name": {"dtype": "F32", "shape": [...], "data_offsets": [b, e]}, ...}, then the
// raw little-endian tensor bytes. PyTorch, JAX and others read and write it.
#pragma once
#include <filesystem>
#include <map>
#include <span>
#include <stdexcept>
#include <string>
#include <vector>

#include "nnpar/model.hpp"

namespace nnpar {

class CheckpointError : public std::runtime_error {
 public:
  using std::runtime_error::runtime_error;
};

struct NamedTensor {
  std::vector<std::size_t> shape;
  std::vector<float> values;
};

// Writes atomically: a temporary file in the same folder, fsync, then rename.
void write_safetensors(const std::filesystem::path& file,
                       const std::map<std::string, NamedTensor>& tensors,
                       const std::map<std::string, std::string>& metadata = {});
std::map<std::string, NamedTensor> read_safetensors(const std::filesystem::path& file);

// The model's flat buffer as layers.<i>.weight / layers.<i>.bias tensors and back. Loading
// checks that every tensor is present with the right shape and names the mismatch.
void save_checkpoint(const std::filesystem::path& file, const ModelSpec& spec,
                     std::span<const float> params,
                     const std::map<std::string, std::string>& metadata = {});
void load_checkpoint(const std::filesystem::path& file, const ModelSpec& spec,
                     std::span<float> params);
// Layer sizes implied by a checkpoint's tensors (for `nnpar eval` without a [model] table).
std::vector<int> checkpoint_layer_sizes(const std::filesystem::path& file);

}  // namespace nnpar
