// bench_cluster_exchange: what one all-to-all exchange among the blocks of a thread-block
// cluster costs on this GPU, for each way the resident kernels could do it, and what the same
// exchange costs through global memory among blocks that are not a cluster.
//
// The resident kernels (kernels/cuda/resident_*.cu) end every phase of a training step with an
// exchange: each of the C blocks stores its share of a layer's outputs (a few floats per
// destination) into every block's shared memory, and no block reads them before all C shares
// have landed. At batch 1 the step is five such exchanges and little arithmetic, so the
// exchange's latency bounds the step. This tool measures it alone, as a chain of dependent
// rounds: each round's stores carry a value computed from the previous round's receipts, so
// rounds cannot overlap, and the last round's values are checked (a wrong value means the
// method's ordering is broken, and the tool fails).
//
// Methods:
//   sync       plain remote stores (st.shared::cluster), then the cluster barrier
//              (barrier.cluster.arrive.release + wait.acquire): the fp32 resident kernel until
//              cuda plugin 1.7, the bf16 one still (its blocks read remote data, not receive it);
//   split      the same barrier, relaxed arrive and a separate release fence per storing warp;
//   arrive     plain remote stores, then each storing warp's lane 0 arrives on the receiver's
//              mbarrier (mbarrier.arrive.release.cluster); receivers wait on their own mbarrier;
//   st_async   st.async stores that complete bytes on the receiver's mbarrier (no arrive, no
//              fence); receivers wait until all C x F x 4 bytes have landed;
//   barrier    the cluster barrier with no stores: the barrier's own latency;
//   global     C blocks that are not a cluster (as blocks of different clusters are): each
//              stores its share into the receiver's mailbox in global memory and publishes the
//              round in a flag (st.release.gpu); the receiver polls the C flags (ld.acquire.gpu).
//              What a model spread over more SMs than one cluster would pay per exchange;
//   global_ll  the same blocks, every float sent with its round number in one 8-byte store
//              (as NCCL's LL protocol), so no fence or flag: the receiver polls the words.
//
// Usage: bench_cluster_exchange [--clusters 2,4,8,16] [--floats 16] [--threads 512]
//                               [--rounds 20000] [--methods barrier,sync,...,global,global_ll]
#include <cooperative_groups.h>
#include <cuda_runtime.h>

#include <algorithm>
#include <cstdio>
#include <cstdlib>
#include <cstring>
#include <string>
#include <vector>

#include "../kernels/cuda/cluster_exchange.cuh"
#include "../kernels/cuda/cluster_launch.cuh"
#include "../kernels/cuda/phase_clock.cuh"
#include "bench_args.hpp"
#include "bench_cuda.hpp"

namespace {

namespace cg = cooperative_groups;
using nnpar::cuda::cluster_address;
using nnpar::cuda::exchange_arm;
using nnpar::cuda::exchange_init;
using nnpar::cuda::exchange_init_fence;
using nnpar::cuda::exchange_send;
using nnpar::cuda::exchange_wait;
using nnpar::cuda::exchange_wait_cluster;
using nnpar::cuda::global_ns;
using nnpar::cuda::shared_address;
using nnpar_bench::int_in_range;
using nnpar_bench::ints_in_range;
using nnpar_bench::split_commas;

enum class Method { sync, split, arrive, st_async, barrier };
constexpr const char* kMethodNames[] = {"sync", "split", "arrive", "st_async", "barrier", "global", "global_ll"};
constexpr int kMaxCluster = 16;
constexpr int kMaxFloats = 32;  // a warp stores one destination's share, a lane per float

// Receive buffers alternate by round parity: a block stores round r + 2 only after it has
// received round r + 1 from every block, which each block sent after reading its round r.
struct Shared {
  alignas(16) float recv[2][kMaxCluster * kMaxFloats];
  alignas(8) unsigned long long bar[2];
};

template <Method M>
__global__ void exchange_kernel(int rounds, int floats, unsigned long long* elapsed_ns, float* last) {
  __shared__ Shared sh;
  cg::cluster_group cluster = cg::this_cluster();
  const unsigned C = cluster.num_blocks(), k = cluster.block_rank();
  const int tid = threadIdx.x, lane = tid % 32, warp = tid / 32;
  for (int i = tid; i < 2 * kMaxCluster * kMaxFloats; i += blockDim.x) (&sh.recv[0][0])[i] = 0.0f;
  if (tid == 0) {
    // arrive: one arrival per sending block; st_async: one (the receiver's expect_tx) plus bytes.
    const unsigned count = M == Method::arrive ? C : 1;
    for (int b = 0; b < 2; ++b) exchange_init(&sh.bar[b], count);
    exchange_init_fence();
  }
  cluster.sync();
  const unsigned bytes = C * unsigned(floats) * 4u;
  const unsigned long long start = global_ns();
  for (int r = 0; r < rounds; ++r) {
    const int side = r & 1;
    if constexpr (M == Method::st_async) {
      // Arm this round's barrier (bytes that land first are counted against it).
      if (tid == 0) exchange_arm(&sh.bar[side], bytes);
    }
    if (M != Method::barrier && warp < int(C) && lane < floats) {
      // Warp d sends this block's share to block d: the value block d sent here last round, plus one.
      const float* prev = sh.recv[1 - side];
      const float value = (r == 0 ? 0.0f : prev[warp * floats + lane]) + 1.0f;
      float* slot = &sh.recv[side][k * floats + lane];
      if constexpr (M == Method::st_async) {
        exchange_send(slot, &sh.bar[side], warp, value);
      } else {
        const unsigned to = cluster_address(shared_address(slot), warp);
        asm volatile("st.shared::cluster.f32 [%0], %1;" ::"r"(to), "f"(value) : "memory");
      }
      if constexpr (M == Method::arrive) {
        __syncwarp((1u << floats) - 1u);
        if (lane == 0) {
          const unsigned bar = cluster_address(shared_address(&sh.bar[side]), warp);
          asm volatile("mbarrier.arrive.release.cluster.shared::cluster.b64 _, [%0];" ::"r"(bar) : "memory");
        }
      }
      if constexpr (M == Method::split) asm volatile("fence.acq_rel.cluster;" ::: "memory");
    }
    if constexpr (M == Method::sync || M == Method::barrier) {
      asm volatile("barrier.cluster.arrive.release.aligned;\n\tbarrier.cluster.wait.acquire.aligned;" ::: "memory");
    } else if constexpr (M == Method::split) {
      asm volatile("barrier.cluster.arrive.relaxed.aligned;\n\tbarrier.cluster.wait.acquire.aligned;" ::: "memory");
    } else {
      // Each barrier completes once per two rounds: phase r / 2 of barrier `side`. arrive's
      // phases release plain stores, so they need the cluster-scope acquire.
      if constexpr (M == Method::arrive) {
        exchange_wait_cluster(&sh.bar[side], unsigned(r >> 1) & 1u);
      } else {
        exchange_wait(&sh.bar[side], unsigned(r >> 1) & 1u);
      }
    }
  }
  const unsigned long long stop = global_ns();
  if (tid == 0) elapsed_ns[k] = stop - start;
  const int side = (rounds - 1) & 1;
  for (int i = tid; i < int(C) * floats; i += blockDim.x) last[k * C * floats + i] = sh.recv[side][i];
  cluster.sync();  // no block leaves while another may still store into it
}

// Mailboxes in global memory: mail[side][to][from][kMaxFloats]. Word = float: each sender
// then publishes the round in flags[to][from] (round + 1; zeroed before each launch). Word =
// unsigned long long: each float travels with its round + 1 in the high half, and the
// receiver polls the words themselves (zeroed before each launch).
template <typename Word>
__global__ void global_exchange_kernel(int rounds, int floats, Word* mail, unsigned* flags,
                                       unsigned long long* elapsed_ns, float* last) {
  constexpr bool kWords = sizeof(Word) == 8;
  __shared__ float received[kMaxCluster * kMaxFloats];
  const unsigned C = gridDim.x, k = blockIdx.x;
  const int tid = threadIdx.x, lane = tid % 32, warp = tid / 32;
  auto box = [&](int side, unsigned to, unsigned from) {
    return mail + ((std::size_t(side) * kMaxCluster + to) * kMaxCluster + from) * kMaxFloats;
  };
  for (int i = tid; i < kMaxCluster * kMaxFloats; i += blockDim.x) received[i] = 0.0f;
  __syncthreads();
  const unsigned long long start = global_ns();
  for (int r = 0; r < rounds; ++r) {
    const int side = r & 1;
    if (warp < int(C) && lane < floats) {
      const float value = received[warp * floats + lane] + 1.0f;
      Word* slot = box(side, warp, k) + lane;
      if constexpr (kWords) {
        const unsigned long long word = (unsigned long long)(r + 1) << 32 | __float_as_uint(value);
        asm volatile("st.relaxed.gpu.global.u64 [%0], %1;" ::"l"(slot), "l"(word) : "memory");
      } else {
        *slot = value;
        __syncwarp((1u << floats) - 1u);  // the warp's stores, before lane 0's release
        if (lane == 0)
          asm volatile("st.release.gpu.global.u32 [%0], %1;" ::"l"(flags + warp * kMaxCluster + k), "r"(unsigned(r + 1))
                       : "memory");
      }
    }
    if constexpr (!kWords) {
      if (warp == 0 && lane < int(C)) {
        unsigned seen = 0;
        do {
          asm volatile("ld.acquire.gpu.global.u32 %0, [%1];" : "=r"(seen) : "l"(flags + k * kMaxCluster + lane) : "memory");
        } while (seen < unsigned(r + 1));
      }
    }
    __syncthreads();  // flags: every sender's round r is here; words: `received` is read
    for (int i = tid; i < int(C) * floats; i += blockDim.x) {
      const Word* at = box(side, k, unsigned(i / floats)) + i % floats;
      if constexpr (kWords) {
        unsigned long long word = 0;
        do {
          asm volatile("ld.relaxed.gpu.global.u64 %0, [%1];" : "=l"(word) : "l"(at) : "memory");
        } while ((word >> 32) != unsigned(r + 1));
        received[i] = __uint_as_float(unsigned(word));
      } else {
        received[i] = __ldcg(at);
      }
    }
    __syncthreads();
  }
  const unsigned long long stop = global_ns();
  if (tid == 0) elapsed_ns[k] = stop - start;
  for (int i = tid; i < int(C) * floats; i += blockDim.x) last[k * C * floats + i] = received[i];
}

struct Options {
  std::vector<int> clusters{2, 4, 8, 16};
  std::vector<std::string> methods{"barrier", "sync", "split", "arrive", "st_async", "global", "global_ll"};
  int floats = 16, threads = 512, rounds = 20000;
};

constexpr const char* kTool = "bench_cluster_exchange";
constexpr const char* kUsage =
    "usage: bench_cluster_exchange [--clusters 2,4,8,16] [--floats 16] [--threads 512] [--rounds 20000]\n"
    "                              [--methods barrier,sync,split,arrive,st_async,global,global_ll]\n"
    "Times a chain of all-to-all exchanges among C blocks (each block sends --floats floats to every\n"
    "block) and prints ns per exchange for each method and C: inside one thread-block cluster, or\n"
    "through global memory (global, global_ll).\n";

// Bad arguments throw std::invalid_argument (bench_args.hpp's parsers and the checks here);
// main refuses them.
Options parse(int argc, char** argv) {
  Options o;
  nnpar_bench::for_each_flag(argc, argv, kUsage, [&](const std::string& flag, const std::string& value) {
    if (flag == "--clusters") {
      o.clusters = ints_in_range(flag, value, 1, kMaxCluster);
    } else if (flag == "--floats") {
      o.floats = int_in_range(flag, value, 1, kMaxFloats);
    } else if (flag == "--threads") {
      o.threads = int_in_range(flag, value, 32 * kMaxCluster, 1024);
    } else if (flag == "--rounds") {
      o.rounds = int_in_range(flag, value, 2, 10000000);
    } else if (flag == "--methods") {
      o.methods = split_commas(value);
      for (const std::string& m : o.methods) {
        bool known = false;
        for (const char* name : kMethodNames) known = known || m == name;
        if (!known)
          throw std::invalid_argument("--methods: unknown method '" + m +
                                      "' (barrier, sync, split, arrive, st_async, global, global_ll)");
      }
    } else {
      throw std::invalid_argument("unknown option " + flag + " (see --help)");
    }
  });
  return o;
}

void check(cudaError_t e, const char* what) { nnpar_bench::cuda_check(kTool, e, what); }

using Kernel = void (*)(int, int, unsigned long long*, float*);
Kernel kernel_for(const std::string& m) {
  if (m == "sync") return exchange_kernel<Method::sync>;
  if (m == "split") return exchange_kernel<Method::split>;
  if (m == "arrive") return exchange_kernel<Method::arrive>;
  if (m == "st_async") return exchange_kernel<Method::st_async>;
  return exchange_kernel<Method::barrier>;
}

}  // namespace

int main(int argc, char** argv) {
  Options o;
  try {
    o = parse(argc, argv);
  } catch (const std::invalid_argument& e) {
    nnpar_bench::refuse(kTool, e.what());
  }
  const cudaDeviceProp props = nnpar_bench::cluster_device_or_exit(kTool);
  std::printf("# %s, %d SMs; %d threads a block, %d floats from each block to each block, %d rounds\n", props.name,
              props.multiProcessorCount, o.threads, o.floats, o.rounds);
  std::printf("%-9s %8s %14s %14s %8s\n", "method", "cluster", "ns/exchange", "slowest block", "check");
  unsigned long long* elapsed = nullptr;
  float* last = nullptr;
  check(cudaMalloc(&elapsed, kMaxCluster * sizeof(unsigned long long)), "cudaMalloc");
  check(cudaMalloc(&last, kMaxCluster * kMaxCluster * kMaxFloats * sizeof(float)), "cudaMalloc");
  float* mail = nullptr;
  unsigned* flags = nullptr;
  unsigned long long* words = nullptr;
  const std::size_t words_bytes = 2 * kMaxCluster * kMaxCluster * kMaxFloats * sizeof(unsigned long long);
  check(cudaMalloc(&mail, 2 * kMaxCluster * kMaxCluster * kMaxFloats * sizeof(float)), "cudaMalloc");
  check(cudaMalloc(&words, words_bytes), "cudaMalloc");
  check(cudaMalloc(&flags, kMaxCluster * kMaxCluster * sizeof(unsigned)), "cudaMalloc");
  bool all_ok = true;
  for (const std::string& method : o.methods) {
    const bool global = method == "global" || method == "global_ll";
    const Kernel kernel = global ? nullptr : kernel_for(method);
    if (!global)
      check(cudaFuncSetAttribute(kernel, cudaFuncAttributeNonPortableClusterSizeAllowed, 1), "cudaFuncSetAttribute");
    for (const int C : o.clusters) {
      const nnpar::cuda::ClusterLaunch launch(C, o.threads, 0, nullptr);
      int clusters = 0;
      if (global) {
        // All C blocks must be resident at once, or the first would wait forever for the last.
        int per_sm = 0;
        const void* fn = method == "global" ? reinterpret_cast<const void*>(global_exchange_kernel<float>)
                                            : reinterpret_cast<const void*>(global_exchange_kernel<unsigned long long>);
        check(cudaOccupancyMaxActiveBlocksPerMultiprocessor(&per_sm, fn, o.threads, 0), "occupancy");
        clusters = per_sm * props.multiProcessorCount >= C ? 1 : 0;
      } else if (cudaOccupancyMaxActiveClusters(&clusters, kernel, &launch.config) != cudaSuccess) {
        cudaGetLastError();
        clusters = 0;
      }
      if (clusters < 1) {
        std::printf("%-9s %8d %14s\n", method.c_str(), C, "cannot run");
        continue;
      }
      const int warm = std::max(2, o.rounds / 10);
      for (const int rounds : {warm, o.rounds}) {
        if (method == "global") {
          check(cudaMemset(flags, 0, kMaxCluster * kMaxCluster * sizeof(unsigned)), "cudaMemset");
          global_exchange_kernel<float><<<C, o.threads>>>(rounds, o.floats, mail, flags, elapsed, last);
          check(cudaGetLastError(), "launch");
        } else if (global) {
          check(cudaMemset(words, 0, words_bytes), "cudaMemset");
          global_exchange_kernel<unsigned long long><<<C, o.threads>>>(rounds, o.floats, words, nullptr, elapsed, last);
          check(cudaGetLastError(), "launch");
        } else {
          check(cudaLaunchKernelEx(&launch.config, kernel, rounds, o.floats, elapsed, last), "launch");
        }
      }
      check(cudaDeviceSynchronize(), "kernel");
      std::vector<unsigned long long> ns(C);
      std::vector<float> values(std::size_t(C) * C * o.floats);
      check(cudaMemcpy(ns.data(), elapsed, C * sizeof(unsigned long long), cudaMemcpyDeviceToHost), "cudaMemcpy");
      check(cudaMemcpy(values.data(), last, values.size() * sizeof(float), cudaMemcpyDeviceToHost), "cudaMemcpy");
      // Every value went around `rounds` times and gained one each time (barrier: nothing sent).
      const float want = method == "barrier" ? 0.0f : float(o.rounds);
      bool ok = true;
      for (const float v : values) ok = ok && v == want;
      all_ok = all_ok && ok;
      unsigned long long mean = 0, slowest = 0;
      for (const unsigned long long t : ns) mean += t, slowest = std::max(slowest, t);
      std::printf("%-9s %8d %14.1f %14.1f %8s\n", method.c_str(), C, double(mean) / C / o.rounds,
                  double(slowest) / o.rounds, ok ? "ok" : "WRONG");
      std::fflush(stdout);
    }
  }
  cudaFree(elapsed);
  cudaFree(last);
  cudaFree(mail);
  cudaFree(flags);
  cudaFree(words);
  if (!all_ok) std::fprintf(stderr, "bench_cluster_exchange: a method delivered wrong values (see 'check')\n");
  return all_ok ? 0 : 1;
}
