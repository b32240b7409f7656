// Fuzzes the IDX loader (raw and gzip'd) with an images file, a labels file and options
// taken from one input:
//   byte 0      flags: bit 0 transpose, bit 1 normalize, bits 2..7 limit (0 = all)
//   bytes 1..4  little-endian length L of the labels file
//   L bytes     the labels file; the rest is the images file
// A malformed pair must end in a DataError; anything else is a bug.
#include <algorithm>
#include <cstdint>
#include <stdexcept>
#include <cstring>

#include "fuzz_support.hpp"
#include "nnpar/data.hpp"

namespace nnpar::fuzz {

void one_idx(const std::uint8_t* data, std::size_t size) {
  static nnpar::fuzz::MemoryFile images("images.idx"), labels("labels.idx");
  if (size < 5) return;
  nnpar::DataOptions options;
  options.transpose = data[0] & 1;
  options.normalize = data[0] & 2;
  options.limit = data[0] >> 2;
  std::uint32_t labels_size = 0;
  std::memcpy(&labels_size, data + 1, 4);
  const std::size_t rest = size - 5;
  labels_size = std::uint32_t(std::min<std::size_t>(labels_size, rest));
  labels.set(data + 5, labels_size);
  images.set(data + 5 + labels_size, rest - labels_size);
  try {
    const nnpar::Dataset d = nnpar::load_idx(images.path(), labels.path(), options);
    // What a loaded dataset promises the strategies: sizes agree, labels are classes.
    if (d.pixels.size() != d.count * std::size_t(d.features()) || d.labels.size() != d.count)
      throw std::logic_error("dataset sizes disagree with its count");
    for (std::int32_t label : d.labels)
      if (label < 0 || label >= d.num_classes) throw std::logic_error("a label outside [0, classes)");
    if (d.count > 0) {
      std::vector<float> x(std::size_t(d.features()));
      std::int32_t y = 0;
      const std::uint32_t last = std::uint32_t(d.count - 1);
      nnpar::gather_batch(d, std::span(&last, 1), x.data(), &y);
    }
  } catch (const nnpar::DataError&) {
  }
}

}  // namespace nnpar::fuzz

#ifndef NNPAR_FUZZ_NO_MAIN
extern "C" int LLVMFuzzerTestOneInput(const std::uint8_t* data, std::size_t size) {
  nnpar::fuzz::one_idx(data, size);
  return 0;
}
#endif
