// bench_cluster_broadcast: how fast every block of a thread-block cluster can bring the same
// bytes from global memory (L2) into its own shared memory, for each way a kernel can do it.
//
// The resident bf16 kernel (kernels/cuda/resident_mma.cu) needs the whole staged batch in every
// one of its 16 blocks twice a step: F0 reads it in A order and dW0 in B order, 100,352 bytes
// each at 128 rows. Its phase clock puts F0 and dW0 at ~6.2 and ~6.4 us of a ~40 us step, and
// two rewrites of the loads were slower (docs/results/2026-11-28-cuda-resident-5.md). This tool
// times the delivery alone, so that a design can be judged by the floor it would meet.
//
// A round: a cluster barrier, then every block brings --bytes bytes into its shared memory and
// waits until all have landed; the round's time is the block's, from the barrier to the last
// byte. With --fresh 1 the blocks first rewrite the source with plain stores (each block 1/C of
// it) and fence it for the async proxy, as the kernel stages the next batch the step before.
// After the last round each block checksums its shared memory against the source.
//
// Methods:
//   ldcg          every thread loads 8-byte words with ld.global.cg, 8 in flight, and stores
//                 them into shared memory (the kernel's F0 and dW0 loads);
//   ldcg_rotated  the same, each block starting at its own offset (rank x bytes / C);
//   ldcg_own      the same, each block reading its own copy (no two blocks share a line);
//   bulk          one thread issues cp.async.bulk copies of --piece bytes (the TMA) for the
//                 whole range at once, counted on one mbarrier;
//   bulk_rotated  the same, each block starting at its own piece;
//   bulk_own      the same, each block reading its own copy;
//   multicast     piece i is copied once, by block i mod C, with .multicast::cluster into every
//                 block's shared memory (L2 read once, not C times).
//
// Usage: bench_cluster_broadcast [--clusters 1,2,4,8,16] [--bytes 100352] [--piece 16384]
//                                [--rounds 2000] [--fresh 0,1] [--methods ldcg,...,multicast]
#include <cooperative_groups.h>
#include <cuda_runtime.h>

#include <algorithm>
#include <cstdint>
#include <cstdio>
#include <cstdlib>
#include <string>
#include <vector>

#include "../kernels/cuda/cluster_exchange.cuh"
#include "../kernels/cuda/cluster_launch.cuh"
#include "../kernels/cuda/phase_clock.cuh"
#include "bench_args.hpp"
#include "bench_cuda.hpp"

namespace {

namespace cg = cooperative_groups;
using nnpar::cuda::exchange_arm;
using nnpar::cuda::exchange_init;
using nnpar::cuda::exchange_init_fence;
using nnpar::cuda::exchange_wait;
using nnpar::cuda::global_ns;
using nnpar::cuda::shared_address;
using nnpar_bench::int_in_range;
using nnpar_bench::ints_in_range;
using nnpar_bench::split_commas;

enum class Method { ldcg, ldcg_rotated, ldcg_own, bulk, bulk_rotated, bulk_own, multicast };
constexpr const char* kMethodNames[] = {"ldcg",     "ldcg_rotated", "ldcg_own", "bulk",
                                        "bulk_rotated", "bulk_own", "multicast"};
constexpr int kMethods = 7;
constexpr int kMaxCluster = 16;
constexpr int kThreads = 512;
constexpr int kMaxBytes = 200 * 1024;

// Word i of the source after round r's rewrite (round -1: the host's fill).
__host__ __device__ inline unsigned source_word(long long i, int round) {
  return unsigned(i) * 2654435761u + unsigned(round + 1) * 40503u;
}

template <Method M>
__global__ void broadcast_kernel(unsigned* source, int bytes, int piece, int rounds, int fresh,
                                 unsigned long long* elapsed_ns, unsigned* checksum) {
  extern __shared__ uint4 smem4[];
  unsigned char* dst = reinterpret_cast<unsigned char*>(smem4);
  __shared__ alignas(8) unsigned long long bar;
  cg::cluster_group cluster = cg::this_cluster();
  const int C = int(cluster.num_blocks()), k = int(cluster.block_rank()), tid = threadIdx.x;
  constexpr bool kOwn = M == Method::ldcg_own || M == Method::bulk_own;
  const int words = bytes / 4, pieces = (bytes + piece - 1) / piece;
  unsigned* mine = source + (kOwn ? std::size_t(k) * words : 0);
  if (tid == 0) {
    exchange_init(&bar);
    exchange_init_fence();
  }
  unsigned long long total = 0;
  for (int r = 0; r < rounds; ++r) {
    if (fresh) {
      if (kOwn) {
        for (int i = tid; i < words; i += kThreads) mine[i] = source_word(i, r);
      } else {
        for (int i = k * kThreads + tid; i < words; i += C * kThreads) source[i] = source_word(i, r);
      }
      asm volatile("fence.proxy.async.global;" ::: "memory");
    }
    cluster.sync();  // the source is written; every block has finished the previous round
    const unsigned long long start = global_ns();
    if constexpr (M == Method::ldcg || M == Method::ldcg_rotated || M == Method::ldcg_own) {
      const int pairs = bytes / 8, first = M == Method::ldcg_rotated ? (pairs / C) * k : 0;
      const uint2* from = reinterpret_cast<const uint2*>(mine);
      uint2* to = reinterpret_cast<uint2*>(dst);
      for (int base = tid; base < pairs; base += 8 * kThreads) {
        uint2 v[8];
#pragma unroll
        for (int d = 0; d < 8; ++d) {
          const int i = base + d * kThreads;
          if (i < pairs) v[d] = __ldcg(from + (i + first) % pairs);
        }
#pragma unroll
        for (int d = 0; d < 8; ++d) {
          const int i = base + d * kThreads;
          if (i < pairs) to[(i + first) % pairs] = v[d];
        }
      }
      __syncthreads();
    } else {
      if (tid == 0) {
        exchange_arm(&bar, unsigned(bytes));  // multicast: the other blocks' pieces count here too
        const int first = M == Method::bulk_rotated ? k % pieces : 0;
        for (int j = 0; j < pieces; ++j) {
          const int q = (j + first) % pieces;
          if (M == Method::multicast && q % C != k) continue;
          const int n = min(piece, bytes - q * piece);
          const unsigned to = shared_address(dst + std::size_t(q) * piece), at = shared_address(&bar);
          const unsigned char* from = reinterpret_cast<const unsigned char*>(mine) + std::size_t(q) * piece;
          if constexpr (M == Method::multicast) {
            const unsigned short everyone = (unsigned short)((1u << C) - 1u);
            asm volatile(
                "cp.async.bulk.shared::cluster.global.mbarrier::complete_tx::bytes.multicast::cluster [%0], [%1], %2, [%3], "
                "%4;" ::"r"(to),
                "l"(from), "r"(n), "r"(at), "h"(everyone)
                : "memory");
          } else {
            asm volatile("cp.async.bulk.shared::cluster.global.mbarrier::complete_tx::bytes [%0], [%1], %2, [%3];" ::"r"(to),
                         "l"(from), "r"(n), "r"(at)
                         : "memory");
          }
        }
      }
      exchange_wait(&bar, unsigned(r) & 1u);
      __syncthreads();
    }
    total += global_ns() - start;
  }
  if (tid == 0) elapsed_ns[k] = total;
  // Every block's copy of the last round's bytes, summed as words.
  __shared__ unsigned sums[kThreads / 32];
  unsigned sum = 0;
  for (int i = tid; i < words; i += kThreads) sum += reinterpret_cast<const unsigned*>(dst)[i];
  for (int o = 16; o > 0; o /= 2) sum += __shfl_xor_sync(0xffffffffu, sum, o);
  if (tid % 32 == 0) sums[tid / 32] = sum;
  __syncthreads();
  if (tid == 0) {
    unsigned all = 0;
    for (int w = 0; w < kThreads / 32; ++w) all += sums[w];
    checksum[k] = all;
  }
  cluster.sync();  // no block leaves while a multicast may still write into it
}

using Kernel = void (*)(unsigned*, int, int, int, int, unsigned long long*, unsigned*);
constexpr Kernel kKernels[kMethods] = {
    broadcast_kernel<Method::ldcg>,     broadcast_kernel<Method::ldcg_rotated>, broadcast_kernel<Method::ldcg_own>,
    broadcast_kernel<Method::bulk>,     broadcast_kernel<Method::bulk_rotated>, broadcast_kernel<Method::bulk_own>,
    broadcast_kernel<Method::multicast>};

struct Options {
  std::vector<int> clusters{1, 2, 4, 8, 16};
  std::vector<int> fresh{0, 1};
  std::vector<std::string> methods{kMethodNames, kMethodNames + kMethods};
  int bytes = 128 * 784, piece = 16384, rounds = 2000;
};

int method_index(const std::string& m) {
  for (int i = 0; i < kMethods; ++i)
    if (m == kMethodNames[i]) return i;
  return -1;
}

constexpr const char* kTool = "bench_cluster_broadcast";
constexpr const char* kUsage =
    "usage: bench_cluster_broadcast [--clusters 1,2,4,8,16] [--bytes 100352] [--piece 16384] [--rounds 2000]\n"
    "                               [--fresh 0,1] [--methods ldcg,ldcg_rotated,ldcg_own,bulk,bulk_rotated,\n"
    "                               bulk_own,multicast]\n"
    "Times how long every block of a C-block cluster takes to bring the same --bytes from global memory\n"
    "into its shared memory (ns a round and GB/s a block), for each method; --fresh 1 rewrites the\n"
    "source before each round, as a kernel staging its next batch does. --bytes and --piece: multiples\n"
    "of 16.\n";

// `text` as a multiple of 16 in 16..kMaxBytes, else an error naming the flag.
int multiple_of_16(const std::string& flag, const std::string& text) {
  const int v = int_in_range(flag, text, 16, kMaxBytes);
  if (v % 16 != 0) throw std::invalid_argument(flag + " " + text + ": must be a multiple of 16");
  return v;
}

// Bad arguments throw std::invalid_argument (bench_args.hpp's parsers and the checks here);
// main refuses them.
Options parse(int argc, char** argv) {
  Options o;
  nnpar_bench::for_each_flag(argc, argv, kUsage, [&](const std::string& flag, const std::string& value) {
    if (flag == "--clusters") {
      o.clusters = ints_in_range(flag, value, 1, kMaxCluster);
    } else if (flag == "--bytes") {
      o.bytes = multiple_of_16(flag, value);
    } else if (flag == "--piece") {
      o.piece = multiple_of_16(flag, value);
    } else if (flag == "--rounds") {
      o.rounds = int_in_range(flag, value, 1, 1000000);
    } else if (flag == "--fresh") {
      o.fresh = ints_in_range(flag, value, 0, 1);
    } else if (flag == "--methods") {
      o.methods = split_commas(value);
      for (const std::string& m : o.methods)
        if (method_index(m) < 0)
          throw std::invalid_argument("--methods: unknown method '" + m +
                                      "' (ldcg, ldcg_rotated, ldcg_own, bulk, bulk_rotated, bulk_own, multicast)");
    } else {
      throw std::invalid_argument("unknown option " + flag + " (see --help)");
    }
  });
  return o;
}

void check(cudaError_t e, const char* what) { nnpar_bench::cuda_check(kTool, e, what); }

}  // namespace

int main(int argc, char** argv) {
  Options o;
  try {
    o = parse(argc, argv);
  } catch (const std::invalid_argument& e) {
    nnpar_bench::refuse(kTool, e.what());
  }
  const cudaDeviceProp props = nnpar_bench::cluster_device_or_exit(kTool);
  std::printf("# %s, %d SMs; %d bytes into every block, pieces of %d (bulk, multicast), %d threads, %d rounds\n",
              props.name, props.multiProcessorCount, o.bytes, o.piece, kThreads, o.rounds);
  std::printf("%-13s %8s %6s %12s %14s %12s %8s\n", "method", "cluster", "fresh", "ns/round", "slowest block",
              "GB/s/block", "check");
  const int words = o.bytes / 4;
  unsigned* source = nullptr;
  unsigned long long* elapsed = nullptr;
  unsigned* sums = nullptr;
  check(cudaMalloc(&source, std::size_t(kMaxCluster) * o.bytes), "cudaMalloc");
  check(cudaMalloc(&elapsed, kMaxCluster * sizeof(unsigned long long)), "cudaMalloc");
  check(cudaMalloc(&sums, kMaxCluster * sizeof(unsigned)), "cudaMalloc");
  std::vector<unsigned> fill(std::size_t(kMaxCluster) * words);
  for (std::size_t i = 0; i < fill.size(); ++i) fill[i] = source_word(i % words, -1);
  bool all_ok = true;
  for (const std::string& method : o.methods) {
    const Kernel kernel = kKernels[method_index(method)];
    check(cudaFuncSetAttribute(kernel, cudaFuncAttributeNonPortableClusterSizeAllowed, 1), "cudaFuncSetAttribute");
    check(cudaFuncSetAttribute(kernel, cudaFuncAttributeMaxDynamicSharedMemorySize, o.bytes), "cudaFuncSetAttribute");
    for (const int fresh : o.fresh) {
      for (const int C : o.clusters) {
        const nnpar::cuda::ClusterLaunch launch(C, kThreads, std::size_t(o.bytes), nullptr);
        int clusters = 0;
        if (cudaOccupancyMaxActiveClusters(&clusters, kernel, &launch.config) != cudaSuccess || clusters < 1) {
          cudaGetLastError();
          std::printf("%-13s %8d %6d %12s\n", method.c_str(), C, fresh, "cannot run");
          continue;
        }
        check(cudaMemcpy(source, fill.data(), fill.size() * 4, cudaMemcpyHostToDevice), "cudaMemcpy");
        for (const int rounds : {std::max(1, o.rounds / 10), o.rounds})  // a warm-up launch, then the timed one
          check(cudaLaunchKernelEx(&launch.config, kernel, source, o.bytes, o.piece, rounds, fresh, elapsed, sums),
                "launch");
        check(cudaDeviceSynchronize(), "kernel");
        std::vector<unsigned long long> ns(C);
        std::vector<unsigned> got(C);
        check(cudaMemcpy(ns.data(), elapsed, C * sizeof(unsigned long long), cudaMemcpyDeviceToHost), "cudaMemcpy");
        check(cudaMemcpy(got.data(), sums, C * sizeof(unsigned), cudaMemcpyDeviceToHost), "cudaMemcpy");
        unsigned want = 0;
        for (int i = 0; i < words; ++i) want += source_word(i, fresh ? o.rounds - 1 : -1);
        bool ok = true;
        for (const unsigned s : got) ok = ok && s == want;
        all_ok = all_ok && ok;
        unsigned long long mean = 0, slowest = 0;
        for (const unsigned long long t : ns) mean += t, slowest = std::max(slowest, t);
        const double per_round = double(mean) / C / o.rounds;
        std::printf("%-13s %8d %6d %12.1f %14.1f %12.2f %8s\n", method.c_str(), C, fresh, per_round,
                    double(slowest) / o.rounds, o.bytes / per_round, ok ? "ok" : "WRONG");
        std::fflush(stdout);
      }
    }
  }
  cudaFree(source);
  cudaFree(elapsed);
  cudaFree(sums);
  if (!all_ok) std::fprintf(stderr, "bench_cluster_broadcast: a method delivered wrong bytes (see 'check')\n");
  return all_ok ? 0 : 1;
}
