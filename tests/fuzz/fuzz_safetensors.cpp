// Fuzzes the safetensors reader: read_safetensors, checkpoint_layer_sizes, and
// load_checkpoint into the model the file implies. A malformed file must end in a
// CheckpointError; anything else (a crash, another exception, a sanitizer report) is a bug.
#include <cstdint>

#include "fuzz_support.hpp"
#include "nnpar/safetensors.hpp"

namespace nnpar::fuzz {

void one_safetensors(const std::uint8_t* data, std::size_t size) {
  static nnpar::fuzz::MemoryFile file("checkpoint.safetensors");
  const std::string& path = file.set(data, size);
  try {
    nnpar::read_safetensors(path);
  } catch (const nnpar::CheckpointError&) {
  }
  try {
    nnpar::ModelSpec spec;
    spec.layer_sizes = nnpar::checkpoint_layer_sizes(path);
    // Only shapes the file can actually hold are worth a buffer: the tensors are read in full.
    std::size_t floats = 0;
    for (std::size_t i = 0; i + 1 < spec.layer_sizes.size(); ++i)
      floats += std::size_t(spec.layer_sizes[i]) * std::size_t(spec.layer_sizes[i + 1]) + std::size_t(spec.layer_sizes[i + 1]);
    if (floats * sizeof(float) <= size) {
      std::vector<float> params(nnpar::parameter_count(spec));
      nnpar::load_checkpoint(path, spec, params);
    }
  } catch (const nnpar::CheckpointError&) {
  }
}

}  // namespace nnpar::fuzz

#ifndef NNPAR_FUZZ_NO_MAIN
extern "C" int LLVMFuzzerTestOneInput(const std::uint8_t* data, std::size_t size) {
  nnpar::fuzz::one_safetensors(data, size);
  return 0;
}
#endif
