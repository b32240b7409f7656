// What a kernel that runs whole epochs by itself (the `cuda` strategy's persistent and
// resident variants) reads and writes: the parameters, the dataset on the device, the epoch's
// sample order and the metrics it accumulates on the device.
#pragma once
#include <cstdint>
#include <vector>

namespace nnpar::cuda {

struct EpochKernelInputs {
  std::vector<int> sizes;            // layer widths, input first
  float* params = nullptr;           // nnpar::parameter_offset layout: W0 [out,in], b0, W1, b1, ...
  float* velocity = nullptr;         // same layout; required when momentum != 0
  float lr = 0, momentum = 0, weight_decay = 0;
  const std::uint8_t* pixels = nullptr;  // the dataset, [count, sizes[0]]
  float pixel_scale = 1.0f;
  const std::int32_t* labels = nullptr;
  const std::uint32_t* order = nullptr;  // the epoch's sample order; step s reads order[s*batch ...]
  int batch = 0;                     // rows of a full step (also the stride of the order)
  double* loss_sum = nullptr;        // accumulated: summed cross-entropy of every row trained
  unsigned long long* correct = nullptr;
  int* step = nullptr;               // advanced by the number of steps each run() executes
  int device = 0;
};

}  // namespace nnpar::cuda
