// The allreduce alone, through nnpar's communicators, for the sizes of our gradient buffers:
// time per call, algorithm bandwidth (bytes / time) and bus bandwidth (algbw * 2(n-1)/n, the
// ring's traffic per link, as nccl-tests reports it), so a data-parallel step can be set
// against what the interconnect allows.
//   mpirun -np 2 build/bin/bench_allreduce [nccl|nccl-sym|mpi]
// nccl-sym: the buffer is an NCCL symmetric window (as nccl-data's sync gradients).
#include <mpi.h>

#include <algorithm>
#include <chrono>
#include <cstdio>
#include <cstring>
#include <string>
#include <vector>

#include "nnpar/comm_mpi.hpp"
#ifdef NNPAR_HAVE_NCCL
#include <cuda_runtime_api.h>

#include "nnpar/comm_nccl.hpp"
#endif

using namespace nnpar;

int main(int argc, char** argv) {
  const std::string backend = argc > 1 ? argv[1] : "mpi";
  mpi::initialize();
  std::unique_ptr<Communicator> comm;
  float* buffer = nullptr;
  // 784-256-256-26 = 269,338 floats; 784-1024-1024-26 = 1,880,090; and a sweep around them.
  // 50,176 / 100,352 / 200,960: a quarter, a half and all of layer 0's weight gradient.
  std::vector<std::size_t> sizes{1, 256, 4096, 50176, 65536, 100352, 200960, 269338, 1048576, 1880090, 4194304, 16777216};
  const std::size_t largest = *std::max_element(sizes.begin(), sizes.end());
  std::vector<float> host(largest, 1.0f);
  if (backend == "nccl" || backend == "nccl-sym") {
#ifdef NNPAR_HAVE_NCCL
    auto n = nccl::world(nccl::local_rank());
    if (backend == "nccl-sym") {
      buffer = static_cast<float*>(n->allocate_symmetric(largest * sizeof(float)));
      if (buffer == nullptr) {
        if (n->rank() == 0) std::fprintf(stderr, "NCCL could not register a symmetric window here\n");
        return 2;
      }
    } else {
      cudaMalloc(reinterpret_cast<void**>(&buffer), largest * sizeof(float));
    }
    cudaMemcpy(buffer, host.data(), largest * sizeof(float), cudaMemcpyHostToDevice);
    comm = std::move(n);
#else
    std::fprintf(stderr, "built without NCCL\n");
    return 2;
#endif
  } else {
    comm = mpi::world();
    buffer = host.data();
  }
  const int ranks = comm->size();
  if (comm->rank() == 0)
    std::printf("%s allreduce (sum, fp32) on %d ranks\n%12s %12s %12s %12s %12s %12s\n", backend.c_str(), ranks,
                "floats", "bytes", "time us", "algbw GB/s", "busbw GB/s", "queued us");
  for (std::size_t n : sizes) {
    const int warmup = 5, iterations = n > 4000000 ? 20 : 100;
    for (int i = 0; i < warmup; ++i) comm->allreduce(buffer, n, ReduceOp::sum);
    comm->barrier();
    const auto start = std::chrono::steady_clock::now();
    for (int i = 0; i < iterations; ++i) comm->allreduce(buffer, n, ReduceOp::sum);
    const double seconds = std::chrono::duration<double>(std::chrono::steady_clock::now() - start).count() / iterations;
    // "time": one blocking call after another, so it includes the host's launch and wait
    // (~15 us for 1 float on the GPUs). "queued": the calls queued back to back without
    // waiting (device collectives only), closer to what one costs inside a CUDA graph.
    double queued = seconds;
    if (comm->memory() == MemorySpace::device) {
      comm->barrier();
      const auto begin = std::chrono::steady_clock::now();
      for (int i = 0; i < iterations; ++i) comm->allreduce_async(buffer, n, DataType::f32, ReduceOp::sum);
      comm->barrier();
      queued = std::chrono::duration<double>(std::chrono::steady_clock::now() - begin).count() / iterations;
    }
    const double bytes = double(n) * sizeof(float);
    if (comm->rank() == 0)
      std::printf("%12zu %12.0f %12.2f %12.2f %12.2f %12.2f\n", n, bytes, seconds * 1e6, bytes / seconds / 1e9,
                  bytes / seconds / 1e9 * 2.0 * (ranks - 1) / ranks, queued * 1e6);
  }
  comm.reset();
  mpi::finalize();
  return 0;
}
