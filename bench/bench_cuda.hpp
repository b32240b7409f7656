// What the CUDA bench tools share: CUDA errors that name the tool, and the check that device 0
// can run thread-block clusters.
#pragma once

#include <cuda_runtime.h>

#include <cstdio>
#include <cstdlib>
#include <string>

#include "../kernels/cuda/cluster_launch.cuh"

namespace nnpar_bench {

// Exits 1 with "tool: what: CUDA's message" when e is an error.
inline void cuda_check(const char* tool, cudaError_t e, const char* what) {
  if (e != cudaSuccess) {
    std::fprintf(stderr, "%s: %s: %s\n", tool, what, cudaGetErrorString(e));
    std::exit(1);
  }
}

// Device 0's properties; exits 1 naming the reason when there is no CUDA device or it cannot
// run thread-block clusters (the tools' tests look for "no CUDA device" to skip).
inline cudaDeviceProp cluster_device_or_exit(const char* tool) {
  int device_count = 0;
  if (cudaGetDeviceCount(&device_count) != cudaSuccess || device_count == 0) {
    std::fprintf(stderr, "%s: no CUDA device\n", tool);
    std::exit(1);
  }
  cudaDeviceProp props{};
  cuda_check(tool, cudaGetDeviceProperties(&props, 0), "cudaGetDeviceProperties");
  if (const std::string problem = nnpar::cuda::cluster_device_problem(props); !problem.empty()) {
    std::fprintf(stderr, "%s: %s\n", tool, problem.c_str());
    std::exit(1);
  }
  return props;
}

}  // namespace nnpar_bench
