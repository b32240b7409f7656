// Fuzzes the CSV loader:
//   byte 0  image rows - 1 (mod 28), byte 1  image columns - 1 (mod 28)
//   byte 2  flags: bit 0 transpose, bits 1..7 limit (0 = all)
//   rest    the CSV file (or a gzip'd one)
// A malformed file must end in a DataError; anything else is a bug.
#include <cstdint>
#include <stdexcept>

#include "fuzz_support.hpp"
#include "nnpar/data.hpp"

namespace nnpar::fuzz {

void one_csv(const std::uint8_t* data, std::size_t size) {
  static nnpar::fuzz::MemoryFile file("data.csv");
  if (size < 3) return;
  const int rows = 1 + data[0] % 28, cols = 1 + data[1] % 28;
  nnpar::DataOptions options;
  options.transpose = data[2] & 1;
  options.limit = data[2] >> 1;
  file.set(data + 3, size - 3);
  try {
    const nnpar::Dataset d = nnpar::load_csv(file.path(), options, rows, cols);
    if (d.pixels.size() != d.count * std::size_t(d.features()) || d.labels.size() != d.count)
      throw std::logic_error("dataset sizes disagree with its count");
    for (std::int32_t label : d.labels)
      if (label < 0 || label >= d.num_classes) throw std::logic_error("a label outside [0, classes)");
  } catch (const nnpar::DataError&) {
  }
}

}  // namespace nnpar::fuzz

#ifndef NNPAR_FUZZ_NO_MAIN
extern "C" int LLVMFuzzerTestOneInput(const std::uint8_t* data, std::size_t size) {
  nnpar::fuzz::one_csv(data, size);
  return 0;
}
#endif
