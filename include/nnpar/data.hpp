// Datasets of 28x28 (or any HxW) uint8 images with integer labels, their loaders, and the
// deterministic sample order and sharding every strategy shares.
#pragma once
#include <cstddef>
#include <cstdint>
#include <filesystem>
#include <span>
#include <stdexcept>
#include <string>
#include <vector>

namespace nnpar {

// Every loader error is a DataError whose what() names the file and the problem.
class DataError : public std::runtime_error {
 public:
  using std::runtime_error::runtime_error;
};

struct DataOptions {
  bool transpose = false;    // real EMNIST stores each image transposed
  int label_offset = 1;      // subtracted from every stored label (EMNIST letters are 1..26)
  bool normalize = true;     // pixels scaled to [0,1]; otherwise kept as 0..255
  std::size_t limit = 0;     // keep only the first N samples; 0 = all
  int num_classes = 26;      // labels after the offset must be in [0, num_classes)
};

struct Dataset {
  std::size_t count = 0;
  int rows = 28, cols = 28;
  int num_classes = 26;
  float pixel_scale = 1.0f / 255.0f;  // multiply a stored byte by this to get the feature
  std::vector<std::uint8_t> pixels;   // count * rows * cols, row-major per image, upright
  std::vector<std::int32_t> labels;   // count, in [0, num_classes)
  std::string source;                 // description for results (paths)
  int features() const { return rows * cols; }
};

// Reads gzip'd or raw IDX (detected by the gzip magic, not the file name).
Dataset load_idx(const std::filesystem::path& images, const std::filesystem::path& labels,
                 const DataOptions& options);
// CSV: one sample per line, label first, then rows*cols pixel values 0..255; an optional
// header line (non-numeric first field) is skipped.
Dataset load_csv(const std::filesystem::path& file, const DataOptions& options, int rows = 28,
                 int cols = 28);

// The order in which an epoch visits the samples: a permutation of [0, n) that depends only
// on (seed, epoch), or the identity when shuffle is false. Uses its own PRNG and Fisher-Yates
// so the order is the same on every platform and standard library.
std::vector<std::uint32_t> epoch_order(std::size_t n, std::uint64_t seed, int epoch, bool shuffle);

// A contiguous piece [begin, end) of n items for worker `rank` of `world`: the first
// n % world workers get one extra item. Used to split a global batch among workers.
struct Range {
  std::size_t begin = 0, end = 0;
  std::size_t size() const { return end - begin; }
};
Range shard_range(std::size_t n, int rank, int world);

// Copies the samples order[0..n) into x (n x features floats, scaled by pixel_scale) and
// y (n labels).
void gather_batch(const Dataset& data, std::span<const std::uint32_t> order, float* x,
                  std::int32_t* y);

}  // namespace nnpar
