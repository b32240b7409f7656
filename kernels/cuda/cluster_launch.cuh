// What the two resident kernels (resident_mlp.cu, resident_mma.cu) share on the host: a launch of
// one thread-block cluster, and the device check for clusters.
#pragma once
#include <cuda_runtime.h>

#include <cstddef>
#include <string>

namespace nnpar::cuda {

// A cudaLaunchKernelEx configuration for one cluster of `blocks` blocks of `threads` threads.
struct ClusterLaunch {
  cudaLaunchConfig_t config{};
  cudaLaunchAttribute attribute{};
  ClusterLaunch(int blocks, int threads, std::size_t bytes, cudaStream_t stream) {
    config.gridDim = dim3(blocks);
    config.blockDim = dim3(threads);
    config.dynamicSmemBytes = bytes;
    config.stream = stream;
    attribute.id = cudaLaunchAttributeClusterDimension;
    attribute.val.clusterDim.x = blocks;
    attribute.val.clusterDim.y = 1;
    attribute.val.clusterDim.z = 1;
    config.attrs = &attribute;
    config.numAttrs = 1;
  }
  ClusterLaunch(const ClusterLaunch&) = delete;
  ClusterLaunch& operator=(const ClusterLaunch&) = delete;
};

// Empty where the device runs thread-block clusters (sm_90+), else why not.
inline std::string cluster_device_problem(const cudaDeviceProp& props) {
  if (props.major >= 9) return {};
  return std::string("thread-block clusters need compute capability 9.0+; ") + props.name + " is " +
         std::to_string(props.major) + "." + std::to_string(props.minor);
}

}  // namespace nnpar::cuda
