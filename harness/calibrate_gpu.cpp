// nnpar-calibrate-gpu: the GPU half of `nnpar calibrate --gpu` (nnpar starts it; see
// docs/plan.md). A separate executable so that the nnpar harness never links CUDA.
//
//   nnpar-calibrate-gpu kernels --out FILE [--quick]
//       one GPU: our CUDA kernels (kernels/cuda) at a grid of layer shapes and row counts,
//       each timed as a chain of dependent launches inside a CUDA graph (what the cuda and
//       nccl-data strategies replay), the latency of a kernel in a graph and with plain
//       launches, and the host's cost per plain launch; per product also its "share" of the
//       GPU (4 copies of its chain on 4 streams at once), and how an SM shares the products'
//       blocks ("coresidence"). Writes the profile's "gpu" section.
//   mpirun -np G nnpar-calibrate-gpu nccl --out FILE [--quick]
//       NCCL through nnpar's communicator: allreduce vs size on G GPUs (called from the host,
//       and inside a CUDA graph as nccl-data runs it), one-way send/recv between ranks 0 and 1,
//       the host's cost of queueing one collective, send/recv on the device with the host
//       ahead (stream_p2p) and how much slower products run while a receive is posted beside
//       them (pending_slowdown), and how much of an allreduce beside products still costs
//       them (overlap_share). Rank 0 writes FILE.
#include <cuda_runtime_api.h>

#include <algorithm>
#include <chrono>
#include <cstdio>
#include <cstring>
#include <fstream>
#include <functional>
#include <random>
#include <stdexcept>
#include <string>
#include <vector>

#include <nlohmann/json.hpp>

#include "nnpar/comm_mpi.hpp"
#include "nnpar/comm_nccl.hpp"
#include "nnpar/cuda_kernels.hpp"
#include "nnpar/gemm_tiling.hpp"
#include "peer_reduce.hpp"

namespace {

using namespace nnpar;
namespace gpu = nnpar::cuda;
using Clock = std::chrono::steady_clock;

void check(cudaError_t status, const char* what) { gpu::check(status, what); }

template <class T>
T* device_alloc(std::size_t count) {
  void* p = nullptr;
  check(cudaMalloc(&p, std::max<std::size_t>(count, 1) * sizeof(T)), "cudaMalloc");
  check(cudaMemset(p, 0, std::max<std::size_t>(count, 1) * sizeof(T)), "cudaMemset");
  return static_cast<T*>(p);
}

void fill_random(float* device, std::size_t n, unsigned seed) {
  std::vector<float> host(n);
  std::mt19937 g(seed);
  std::uniform_real_distribution<float> d(-0.5f, 0.5f);
  for (float& x : host) x = d(g);
  check(cudaMemcpy(device, host.data(), n * sizeof(float), cudaMemcpyHostToDevice), "upload");
}

// `copies` chains at once, chain k on streams[k] (forked from and joined to streams[0] inside
// the graph), captured once and replayed: seconds per enqueue of one chain (the median of 3
// timings after a warm-up). With 4 streams against 1 it shows how much of the GPU one kernel
// takes (see kernels_mode: "share").
double concurrent_graph_seconds(const std::vector<cudaStream_t>& streams,
                                const std::function<void(int, cudaStream_t)>& enqueue, int chain, int replays) {
  const int copies = int(streams.size());
  cudaStream_t main = streams[0];
  std::vector<cudaEvent_t> events(copies + 1);
  for (auto& e : events) check(cudaEventCreateWithFlags(&e, cudaEventDisableTiming), "event");
  cudaGraph_t graph = nullptr;
  cudaGraphExec_t exec = nullptr;
  check(cudaStreamBeginCapture(main, cudaStreamCaptureModeThreadLocal), "begin capture");
  check(cudaEventRecord(events[0], main), "fork");
  for (int k = 1; k < copies; ++k) check(cudaStreamWaitEvent(streams[k], events[0], 0), "fork");
  for (int i = 0; i < chain; ++i)
    for (int k = 0; k < copies; ++k) enqueue(k, streams[k]);
  for (int k = 1; k < copies; ++k) {
    check(cudaEventRecord(events[k], streams[k]), "join");
    check(cudaStreamWaitEvent(main, events[k], 0), "join");
  }
  check(cudaStreamEndCapture(main, &graph), "end capture");
  check(cudaGraphInstantiate(&exec, graph, 0), "instantiate");
  check(cudaGraphLaunch(exec, main), "graph launch");  // warm-up
  check(cudaStreamSynchronize(main), "warm-up");
  cudaEvent_t start, stop;
  check(cudaEventCreate(&start), "event");
  check(cudaEventCreate(&stop), "event");
  std::vector<double> samples;
  for (int s = 0; s < 3; ++s) {
    check(cudaEventRecord(start, main), "record");
    for (int r = 0; r < replays; ++r) check(cudaGraphLaunch(exec, main), "graph launch");
    check(cudaEventRecord(stop, main), "record");
    check(cudaEventSynchronize(stop), "sync");
    float ms = 0;
    check(cudaEventElapsedTime(&ms, start, stop), "elapsed");
    samples.push_back(ms * 1e-3 / (double(chain) * replays));
  }
  for (auto& e : events) cudaEventDestroy(e);
  cudaEventDestroy(start);
  cudaEventDestroy(stop);
  cudaGraphExecDestroy(exec);
  cudaGraphDestroy(graph);
  std::sort(samples.begin(), samples.end());
  return samples[1];
}

// Seconds per enqueue() call when `chain` calls in a row are captured into one graph and the
// graph is replayed: the time of a kernel in a replayed step, node-to-node latency included.
double graph_seconds(cudaStream_t stream, const std::function<void()>& enqueue, int chain, int replays) {
  return concurrent_graph_seconds({stream}, [&](int, cudaStream_t) { enqueue(); }, chain, replays);
}

std::string arg_value(int argc, char** argv, const char* name) {
  for (int i = 1; i + 1 < argc; ++i)
    if (std::strcmp(argv[i], name) == 0) return argv[i + 1];
  return "";
}
bool has_flag(int argc, char** argv, const char* name) {
  for (int i = 1; i < argc; ++i)
    if (std::strcmp(argv[i], name) == 0) return true;
  return false;
}

void write_json(const std::string& file, const nlohmann::json& j) {
  const std::string tmp = file + ".tmp";
  {
    std::ofstream out(tmp);
    out << j.dump(1) << "\n";
    if (!out) throw std::runtime_error("cannot write " + tmp);
  }
  if (std::rename(tmp.c_str(), file.c_str()) != 0) throw std::runtime_error("cannot rename " + tmp + " to " + file);
}

// How an SM shares the tiled products' blocks, for the cost model's block simulation
// (simulate_blocks in harness/perf_model.cpp): how many fit at once, and what a second
// resident block adds to an SM's throughput. A weight-gradient product with one 32 x 32 tile
// per SM is timed beside the same product with two tiles per SM (twice the work):
// gain = 2 T(one per SM) / T(two per SM) - 1, 1 when two blocks run as fast as one, 0 when an
// SM's two blocks take twice as long. The mean over two batch depths is kept.
nlohmann::json coresidence(cudaStream_t stream, int sms, int chain, int replays) {
  nlohmann::json c;
  c["blocks_per_sm"] = gpu::gemm_blocks_per_sm();
  c["points"] = nlohmann::json::array();
  const int in = 32 * sms;
  const std::vector<int> depths{1024, 2048};
  const int deepest = depths.back();
  if (c["blocks_per_sm"].get<int>() < 2 || nnpar::weight_grad_blocks(deepest, 32, in) != sms ||
      nnpar::weight_grad_blocks(deepest, 64, in) != 2 * sms) {
    // One block per SM (nothing to share), or a tiling this probe does not cover.
    c["second_block_gain"] = 0.0;
    c["note"] = "not measured: the probe needs two 32 x 32 blocks per SM";
    return c;
  }
  float* X = device_alloc<float>(std::size_t(deepest) * in);
  float* G = device_alloc<float>(std::size_t(deepest) * 64);
  float* dW = device_alloc<float>(std::size_t(64) * in + 64);
  fill_random(X, std::size_t(deepest) * in, 4);
  fill_random(G, std::size_t(deepest) * 64, 5);
  double sum = 0;
  for (int rows : depths) {
    double t[2];
    for (int per_sm = 1; per_sm <= 2; ++per_sm) {
      const int out = 32 * per_sm;
      t[per_sm - 1] = graph_seconds(stream, [&] {
        gpu::linear_weight_grad(rows, out, in, G, X, false, dW, dW + std::size_t(out) * in, gpu::FusedSgd{}, stream);
      }, chain, replays);
    }
    const double gain = std::clamp(2 * t[0] / t[1] - 1, 0.0, 1.0);
    sum += gain;
    c["points"].push_back({{"rows", rows}, {"blocks", sms}, {"one_per_sm_s", t[0]}, {"two_per_sm_s", t[1]}, {"gain", gain}});
  }
  c["second_block_gain"] = sum / double(depths.size());
  cudaFree(X);
  cudaFree(G);
  cudaFree(dW);
  return c;
}

int kernels_mode(const std::string& out, bool quick) {
  int devices = 0;
  check(cudaGetDeviceCount(&devices), "cudaGetDeviceCount");
  if (devices == 0) throw std::runtime_error("no CUDA device");
  check(cudaSetDevice(0), "cudaSetDevice");
  cudaDeviceProp prop{};
  check(cudaGetDeviceProperties(&prop, 0), "cudaGetDeviceProperties");
  cudaStream_t stream;
  check(cudaStreamCreateWithFlags(&stream, cudaStreamNonBlocking), "stream");

  const std::vector<int> ins = quick ? std::vector<int>{784, 256} : std::vector<int>{784, 256, 512, 1024};
  const std::vector<int> outs = quick ? std::vector<int>{26, 256} : std::vector<int>{26, 64, 128, 256, 512, 1024};
  const std::vector<int> rows_list =
      quick ? std::vector<int>{1, 128, 1024} : std::vector<int>{1, 8, 32, 64, 128, 256, 512, 1024, 2048, 4096};
  const int chain = quick ? 8 : 20, replays = quick ? 2 : 5;
  const int max_rows = rows_list.back(), max_in = 1024, max_out = 1024;
  float* X = device_alloc<float>(std::size_t(max_rows) * max_in);
  float* W = device_alloc<float>(std::size_t(max_out) * max_in);
  float* b = device_alloc<float>(max_out);
  // Outputs and split-K scratch per concurrent copy (kCopies chains at once for "share").
  constexpr int kCopies = 4;
  std::vector<float*> Ys, dWs;
  for (int k = 0; k < kCopies; ++k) {
    Ys.push_back(device_alloc<float>(std::size_t(max_rows) * std::max(max_in, max_out)));
    dWs.push_back(device_alloc<float>(std::size_t(max_out) * max_in + max_out));
  }
  float* Y = Ys[0];
  float* G = device_alloc<float>(std::size_t(max_rows) * max_out);
  fill_random(X, std::size_t(max_rows) * max_in, 1);
  fill_random(W, std::size_t(max_out) * max_in, 2);
  fill_random(G, std::size_t(max_rows) * max_out, 3);
  // Split-K scratch, the largest any measured shape needs (counters are left zero by each call).
  std::size_t scratch_floats = 0, scratch_counters = 0;
  for (int in : ins)
    for (int out_f : outs)
      for (int rows : rows_list)
        for (auto form : {gpu::GemmForm::forward, gpu::GemmForm::input_grad}) {
          std::size_t f = 0, c = 0;
          gpu::gemm_scratch_size(form, rows, out_f, in, &f, &c);
          scratch_floats = std::max(scratch_floats, f);
          scratch_counters = std::max(scratch_counters, c);
        }
  std::vector<gpu::GemmScratch> scratches;
  for (int k = 0; k < kCopies; ++k)
    scratches.push_back({device_alloc<float>(scratch_floats), device_alloc<unsigned>(scratch_counters), scratch_floats,
                         scratch_counters});
  std::vector<cudaStream_t> copies{stream};
  for (int k = 1; k < kCopies; ++k) {
    cudaStream_t extra;
    check(cudaStreamCreateWithFlags(&extra, cudaStreamNonBlocking), "stream");
    copies.push_back(extra);
  }

  nlohmann::json j;
  j["name"] = prop.name;
  j["count"] = devices;
  j["memory_bytes"] = double(prop.totalGlobalMem);
  j["multiprocessors"] = prop.multiProcessorCount;
  nlohmann::json kernels = {{"forward", {{"points", nlohmann::json::array()}}},
                            {"weight_grad", {{"points", nlohmann::json::array()}}},
                            {"input_grad", {{"points", nlohmann::json::array()}}}};
  for (int in : ins)
    for (int out_f : outs) {
      for (int rows : rows_list) {
        const std::function<void(int, cudaStream_t)> forms[3] = {
            [&](int k, cudaStream_t s) { gpu::linear_forward(rows, out_f, in, X, W, b, true, Ys[k], scratches[k], s); },
            [&](int k, cudaStream_t s) {
              gpu::linear_weight_grad(rows, out_f, in, G, X, false, dWs[k], dWs[k] + std::size_t(out_f) * in,
                                      gpu::FusedSgd{}, s);
            },
            [&](int k, cudaStream_t s) { gpu::linear_input_grad(rows, out_f, in, G, W, X, Ys[k], scratches[k], s); }};
        const char* names[3] = {"forward", "weight_grad", "input_grad"};
        for (int form = 0; form < 3; ++form) {
          const double t = graph_seconds(stream, [&] { forms[form](0, stream); }, chain, replays);
          // kCopies chains at once take T4: a kernel that fills the GPU takes kCopies x T1, one
          // that uses a quarter or less of it about T1. share = max(1, T4 / T1) / kCopies is
          // what the plan uses to let the backward's two streams overlap (docs/plan.md).
          const double t4 = concurrent_graph_seconds(copies, forms[form], chain, replays);
          const double share = std::clamp(std::max(1.0, t4 / t) / kCopies, 1.0 / kCopies, 1.0);
          kernels[names[form]]["points"].push_back(
              {{"rows", rows}, {"in", in}, {"out", out_f}, {"seconds", t}, {"share", share}});
        }
      }
      std::printf(".");
      std::fflush(stdout);
    }
  std::printf("\n");
  j["kernels"] = kernels;
  j["coresidence"] = coresidence(stream, prop.multiProcessorCount, chain, replays);

  // Streaming kernels between the products.
  const std::vector<std::size_t> sizes = quick ? std::vector<std::size_t>{1024, 1048576}
                                               : std::vector<std::size_t>{1024, 16384, 262144, 4194304, 16777216};
  const std::size_t largest = sizes.back();
  float* p = device_alloc<float>(largest);
  float* g = device_alloc<float>(largest);
  float* v = device_alloc<float>(largest);
  float* logits = device_alloc<float>(std::size_t(max_rows) * 26);
  float* dlogits = device_alloc<float>(std::size_t(max_rows) * 26);
  std::int32_t* labels = device_alloc<std::int32_t>(max_rows);
  double* loss = device_alloc<double>(1);
  unsigned long long* correct = device_alloc<unsigned long long>(1);
  nlohmann::json streams = nlohmann::json::object();
  for (std::size_t n : sizes) {
    streams["sgd"].push_back({{"elements", n}, {"seconds", graph_seconds(stream, [&] {
      gpu::sgd_update(n, 1e-9f, 0.0f, 0.0f, p, g, nullptr, stream); }, chain, replays)}});
    streams["sgd_momentum"].push_back({{"elements", n}, {"seconds", graph_seconds(stream, [&] {
      gpu::sgd_update(n, 1e-9f, 0.9f, 0.0f, p, g, v, stream); }, chain, replays)}});
    streams["scale"].push_back({{"elements", n}, {"seconds", graph_seconds(stream, [&] {
      gpu::scale(n, 1.0f, p, stream); }, chain, replays)}});
    streams["copy"].push_back({{"elements", n}, {"seconds", graph_seconds(stream, [&] {
      check(cudaMemcpyAsync(g, p, n * sizeof(float), cudaMemcpyDeviceToDevice, stream), "copy"); }, chain, replays)}});
  }
  // With scratch, as the engines call it (without, softmax_xent falls back to one block); the
  // kernels leave their scratch zeroed after each call.
  const int last_hidden = 256;  // fuse_logits=auto fuses where the last hidden layer is <= 256 wide
  double* softmax_scratch = device_alloc<double>(std::max<std::size_t>(
      1, std::max(gpu::softmax_xent_scratch(max_rows, 26), gpu::logits_softmax_xent_scratch(max_rows, 26))));
  for (int rows : rows_list)
    streams["softmax_xent"].push_back({{"elements", std::size_t(rows) * 26}, {"seconds", graph_seconds(stream, [&] {
      gpu::softmax_xent(rows, 26, logits, labels, gpu::RowIndex{}, 1.0f, nullptr, dlogits, loss, correct, false, stream,
                        softmax_scratch);
    }, chain, replays)}});
  // fuse_logits = head (cuda, nccl-data): the last Linear's forward, the loss and the last input
  // gradient in one kernel, a block per row, priced per rows x K (K = the last hidden width).
  for (int rows : rows_list)
    streams["logits_head"].push_back({{"elements", std::size_t(rows) * last_hidden}, {"seconds", graph_seconds(stream, [&] {
      gpu::logits_softmax_xent(rows, 26, last_hidden, X, W, b, logits, labels, gpu::RowIndex{}, 1.0f, dlogits, loss,
                               correct, false, stream, softmax_scratch, Y, true);
    }, chain, replays)}});
  j["streams"] = streams;

  // Latency of a kernel with no work: in a graph, and with plain launches while the GPU is
  // busy (so the host is ahead and the device's own gap shows); the host's cost per launch.
  auto tiny = [&] { gpu::scale(1, 1.0f, p, stream); };
  j["graph_latency_s"] = graph_seconds(stream, tiny, 100, replays);
  const int launches = 500;
  cudaEvent_t start, stop;
  check(cudaEventCreate(&start), "event");
  check(cudaEventCreate(&stop), "event");
  std::vector<double> device, host;
  for (int s = 0; s < 3; ++s) {
    // A long product first: the tiny launches queue up behind it.
    gpu::linear_forward(max_rows, max_out, max_in, X, W, b, false, Y, gpu::GemmScratch{}, stream);
    gpu::linear_forward(max_rows, max_out, max_in, X, W, b, false, Y, gpu::GemmScratch{}, stream);
    check(cudaEventRecord(start, stream), "record");
    const auto t0 = Clock::now();
    for (int i = 0; i < launches; ++i) tiny();
    host.push_back(std::chrono::duration<double>(Clock::now() - t0).count() / launches);
    check(cudaEventRecord(stop, stream), "record");
    check(cudaEventSynchronize(stop), "sync");
    float ms = 0;
    check(cudaEventElapsedTime(&ms, start, stop), "elapsed");
    device.push_back(ms * 1e-3 / launches);
  }
  std::sort(device.begin(), device.end());
  std::sort(host.begin(), host.end());
  j["plain_latency_s"] = device[1];
  j["launch_s"] = host[1];
  write_json(out, j);
  std::printf("%s: graph latency %.2f us, plain %.2f us, host launch %.2f us; %d GEMM blocks per SM, a second adds %.2f\n",
              prop.name, 1e6 * j["graph_latency_s"].get<double>(), 1e6 * device[1], 1e6 * host[1],
              j["coresidence"]["blocks_per_sm"].get<int>(), j["coresidence"]["second_block_gain"].get<double>());
  return 0;
}

int nccl_mode(const std::string& out, bool quick) {
  mpi::initialize();
  const int local = nccl::local_rank();
  check(cudaSetDevice(local), "cudaSetDevice");
  auto comm = nccl::world(local);
  cudaStream_t stream;
  check(cudaStreamCreateWithFlags(&stream, cudaStreamNonBlocking), "stream");
  comm->set_compute_stream(stream);
  const int rank = comm->rank(), ranks = comm->size();
  const std::vector<std::size_t> floats =
      quick ? std::vector<std::size_t>{1, 4096, 262144}
            : std::vector<std::size_t>{1, 256, 4096, 65536, 262144, 1048576, 4194304, 16777216, 67108864};
  float* buffer = device_alloc<float>(floats.back());
  nlohmann::json j = {{"ranks", ranks}, {"allreduce", nlohmann::json::array()}, {"p2p", nlohmann::json::array()}};
  auto host_allreduce = mpi::world();
  // Every rank runs `sample` three times; rank 0's three values decide: their median, shared
  // with every rank.
  auto rank0_median = [&](const std::function<double()>& sample) {
    std::vector<double> samples;
    for (int s = 0; s < 3; ++s) {
      double v = sample();
      host_allreduce->broadcast(&v, 1, DataType::f64, 0);
      samples.push_back(v);
    }
    std::sort(samples.begin(), samples.end());
    return samples[1];
  };
  // What `record` queues on `stream`, captured once into a graph (relaxed, as nccl-data
  // captures: the communicator records events while capturing), replayed once by every rank
  // alike as a warm-up, then `replays` times: rank 0's seconds per unit (`units` per replay).
  auto replayed = [&](const std::function<void()>& record, int replays, double units) {
    cudaGraph_t graph = nullptr;
    cudaGraphExec_t exec = nullptr;
    check(cudaStreamBeginCapture(stream, cudaStreamCaptureModeRelaxed), "begin capture");
    record();
    check(cudaStreamEndCapture(stream, &graph), "end capture");
    check(cudaGraphInstantiate(&exec, graph, 0), "instantiate");
    check(cudaGraphLaunch(exec, stream), "graph launch");
    check(cudaStreamSynchronize(stream), "warm-up");
    cudaEvent_t start, stop;
    check(cudaEventCreate(&start), "event");
    check(cudaEventCreate(&stop), "event");
    const double t = rank0_median([&] {
      host_allreduce->barrier();
      check(cudaEventRecord(start, stream), "record");
      for (int r = 0; r < replays; ++r) check(cudaGraphLaunch(exec, stream), "graph launch");
      check(cudaEventRecord(stop, stream), "record");
      check(cudaEventSynchronize(stop), "sync");
      float ms = 0;
      check(cudaEventElapsedTime(&ms, start, stop), "elapsed");
      return ms * 1e-3 / units;
    });
    cudaEventDestroy(start);
    cudaEventDestroy(stop);
    cudaGraphExecDestroy(exec);
    cudaGraphDestroy(graph);
    return t;
  };
  // Rank 0's time per call, the median of three samples, shared with every rank.
  auto timed = [&](const std::function<void()>& op, std::size_t n) {
    const int iterations = quick ? 5 : (n >= 16777216 ? 10 : n >= 1048576 ? 40 : 200);
    for (int i = 0; i < 5; ++i) op();
    return rank0_median([&] {
      host_allreduce->barrier();
      const auto start = Clock::now();
      for (int i = 0; i < iterations; ++i) op();
      return std::chrono::duration<double>(Clock::now() - start).count() / iterations;
    });
  };
  for (std::size_t n : floats) {
    const double t = timed([&] { comm->allreduce(buffer, n, DataType::f32, ReduceOp::sum); }, n);
    j["allreduce"].push_back({{"ranks", ranks}, {"bytes", 4 * n}, {"seconds", t}});
  }
  for (std::size_t n : floats) {
    const double t = timed([&] {
      if (rank == 0) {
        comm->send(buffer, n, DataType::f32, 1, 0);
        comm->recv(buffer, n, DataType::f32, 1, 0);
      } else if (rank == 1) {
        comm->recv(buffer, n, DataType::f32, 0, 0);
        comm->send(buffer, n, DataType::f32, 0, 0);
      }
    }, n);
    j["p2p"].push_back({{"bytes", 4 * n}, {"seconds", t / 2}});
  }
  // The host's cost of queueing one collective (and the device-side wait) without blocking.
  {
    const int calls = 200;
    host_allreduce->barrier();
    const auto start = Clock::now();
    for (int i = 0; i < calls; ++i) comm->allreduce_async(buffer, 1, DataType::f32, ReduceOp::sum)->wait();
    double t = std::chrono::duration<double>(Clock::now() - start).count() / calls;
    check(cudaStreamSynchronize(stream), "sync");
    host_allreduce->broadcast(&t, 1, DataType::f64, 0);
    j["host_call_s"] = t;
  }
  // Inside a CUDA graph, as nccl-data replays its steps: a chain of allreduces captured once,
  // replayed.
  // Without the host in the loop, small allreduces cost less than the calls above.
  j["graph_allreduce"] = nlohmann::json::array();
  for (std::size_t n : floats) {
    if (n > 16777216) break;
    const int chain = quick ? 4 : 10, replays = quick ? 2 : (n >= 4194304 ? 3 : 10);
    const double t = replayed([&] {
      for (int i = 0; i < chain; ++i) comm->allreduce_async(buffer, n, DataType::f32, ReduceOp::sum)->wait();
    }, replays, double(chain) * replays);
    j["graph_allreduce"].push_back({{"ranks", ranks}, {"bytes", 4 * n}, {"seconds", t}});
  }
  // Device-side send/recv, as the GPU pipelines queue them (the host never waits inside an
  // epoch): ranks 0 and 1 queue a ping-pong of `rounds` round trips behind a long product, so
  // the host is ahead and only the device's time per message shows. One way = time / 2 rounds.
  j["stream_p2p"] = nlohmann::json::array();
  {
    const int max_rows = 4096, width = 1024;
    float* X = device_alloc<float>(std::size_t(max_rows) * width);
    float* W = device_alloc<float>(std::size_t(width) * width);
    float* b = device_alloc<float>(width);
    float* Y = device_alloc<float>(std::size_t(max_rows) * width);
    auto product = [&](int rows) {
      gpu::linear_forward(rows, width, width, X, W, b, false, Y, gpu::GemmScratch{}, stream);
    };
    cudaEvent_t start, stop;
    check(cudaEventCreate(&start), "event");
    check(cudaEventCreate(&stop), "event");
    for (std::size_t n : floats) {
      if (n > 16777216) break;
      const int rounds = quick ? 4 : (n >= 4194304 ? 5 : 25);
      const double t = rank0_median([&] {
        host_allreduce->barrier();
        for (int k = 0; k < 4; ++k) product(max_rows);  // the host gets ahead behind these
        check(cudaEventRecord(start, stream), "record");
        std::vector<std::unique_ptr<CommRequest>> pending;
        for (int r = 0; r < rounds && rank < 2; ++r) {
          if (rank == 0) {
            pending.push_back(comm->isend(buffer, n, DataType::f32, 1, 0));
            pending.push_back(comm->irecv(buffer, n, DataType::f32, 1, 0));
          } else {
            pending.push_back(comm->irecv(buffer, n, DataType::f32, 0, 0));
            pending.push_back(comm->isend(buffer, n, DataType::f32, 0, 0));
          }
        }
        check(cudaEventRecord(stop, comm->stream()), "record");
        check(cudaEventSynchronize(stop), "sync");
        pending.clear();
        check(cudaStreamSynchronize(stream), "sync");
        float ms = 0;
        check(cudaEventElapsedTime(&ms, start, stop), "elapsed");
        return ms * 1e-3 / (2.0 * rounds);
      });
      j["stream_p2p"].push_back({{"bytes", 4 * n}, {"seconds", t}});
    }
    // Products while a receive is posted and its NCCL kernel waits on the GPU (the pipelines
    // post receives ahead of their compute): time with the pending receive over time alone.
    // Rank 1 sends only after rank 0 has timed its products. Per message size: NCCL spreads a
    // large receive over more channels, i.e. more blocks spinning on SMs while they wait (a
    // 4-byte receive measured 1.00x on 4 x H100, where the pipeline runs needed ~1.3x).
    const int rows = 512, chain = quick ? 5 : 40;
    auto products = [&]() {
      check(cudaEventRecord(start, stream), "record");
      for (int k = 0; k < chain; ++k) product(rows);
      check(cudaEventRecord(stop, stream), "record");
      check(cudaEventSynchronize(stop), "sync");
      float ms = 0;
      check(cudaEventElapsedTime(&ms, start, stop), "elapsed");
      return ms * 1e-3;
    };
    j["pending_slowdown_by_bytes"] = nlohmann::json::array();
    double largest = 1;
    for (std::size_t n : {std::size_t(1), std::size_t(4096), std::size_t(16384), std::size_t(65536), std::size_t(1048576),
                          std::size_t(4194304)}) {
      if (n > floats.back() || (quick && n > 65536)) break;
      const double slowdown = std::max(1.0, rank0_median([&] {
        host_allreduce->barrier();
        product(rows);
        check(cudaStreamSynchronize(stream), "sync");
        const double alone = products();
        std::unique_ptr<CommRequest> posted;
        if (rank == 0) posted = comm->irecv(buffer, n, DataType::f32, 1, 1);
        const double beside = rank == 0 ? products() : 0;
        host_allreduce->barrier();
        if (rank == 1) comm->send(buffer, n, DataType::f32, 0, 1);
        posted.reset();
        check(cudaStreamSynchronize(comm->stream()), "sync");
        check(cudaStreamSynchronize(stream), "sync");
        return rank == 0 ? beside / alone : 0.0;
      }));
      j["pending_slowdown_by_bytes"].push_back({{"bytes", 4 * n}, {"slowdown", slowdown}});
      largest = slowdown;
    }
    // Older readers know only the single number: the largest message's.
    j["pending_slowdown"] = largest;

    // Overlap, as nccl-data's replayed backward: in one graph, `steps` products on the compute
    // stream, each followed by an allreduce of 4 MB (a 1024 x 1024 layer's gradient) on the
    // communicator's stream that waits for it. Perfectly hidden, the step costs
    // steps x max(product, allreduce); not at all, steps x (product + allreduce).
    // overlap_share = (T - steps x max) / (steps x min), clipped to [0, 1].
    const std::size_t layer = std::min<std::size_t>(1048576, floats.back());
    const int steps = quick ? 4 : 16, reps = quick ? 2 : 5;
    auto timed_graph = [&](bool with_allreduce, bool with_product) {
      return replayed([&] {
        std::vector<std::unique_ptr<CommRequest>> pending;
        for (int k = 0; k < steps; ++k) {
          if (with_product) product(rows);
          if (with_allreduce) pending.push_back(comm->allreduce_async(buffer, layer, DataType::f32, ReduceOp::sum));
        }
        for (auto& r : pending) r->wait();
      }, reps, double(steps) * reps);
    };
    const double compute_only = timed_graph(false, true), comm_only = timed_graph(true, false),
                 both = timed_graph(true, true);
    const double lo = std::min(compute_only, comm_only), hi = std::max(compute_only, comm_only);
    j["overlap_share"] = std::clamp((both - hi) / std::max(lo, 1e-9), 0.0, 1.0);
    j["overlap_probe"] = {{"product_s", compute_only}, {"allreduce_s", comm_only}, {"both_s", both},
                          {"allreduce_bytes", 4 * layer}, {"product", "linear_forward 512 x 1024 x 1024"}};
    cudaEventDestroy(start);
    cudaEventDestroy(stop);
    for (float* q : {X, W, b, Y}) cudaFree(q);
  }
  // nccl-data's reduce = "fused_p2p" (peer_reduce.hpp): the one kernel per step that waits for
  // every peer, reads their gradients over P2P and applies the update, in a graph of `chain`
  // steps alternating the two gradient buffers as the plugin's replays do, replayed by every
  // rank at once (so the device-side wait for the slowest rank is in the time). Only where the
  // fused reduce can run (one host, P2P between every pair); else the profile says why.
  // "peer_sgd_push" times reduce = "push_p2p"'s kernel the same way: it sums local slots (the
  // products' pushed copies, whose remote writes run inside the products, are not in it).
  for (const bool push : {false, true}) {
    const char* table = push ? "peer_sgd_push" : "peer_sgd";
    j[table] = nlohmann::json::array();
    for (std::size_t n :
         quick ? std::vector<std::size_t>{262144} : std::vector<std::size_t>{65536, 262144, 1048576, 4194304}) {
      PeerReduce peer(n, local, push);
      if (!peer.available()) {
        j["peer_sgd_unavailable"] = peer.reason();
        break;
      }
      float* params = device_alloc<float>(n);
      const int chain = quick ? 4 : 20, replays = quick ? 2 : 10;  // chain even: each replay starts on buffer 0
      const double t = replayed([&] {
        for (int k = 0; k < chain; ++k) peer.update(k % 2, 1e-9f, 0.0f, 0.0f, params, nullptr, stream);
      }, replays, double(chain) * replays);
      cudaFree(params);
      // Every rank's kernels have read the peers' buffers before any rank unmaps and frees its own.
      check(cudaStreamSynchronize(stream), "sync");
      host_allreduce->barrier();
      j[table].push_back({{"ranks", ranks}, {"elements", n}, {"seconds", t}});
    }
  }
  // What push_p2p costs inside the products: a weight gradient at a model's layer shapes
  // (rows x in -> out, plus the bias) with every value also written into each peer's slot,
  // against the same product without, each in a graph of `chain` products replayed by every
  // rank at once. Per product, by the gradient's elements; the extra time of the pushed one.
  j["push_overhead"] = nlohmann::json::array();
  {
    const int rows = 1024, chain = quick ? 4 : 20, replays = quick ? 2 : 5;
    for (const auto& [out_features, in_features] :
         quick ? std::vector<std::pair<int, int>>{{256, 784}}
               : std::vector<std::pair<int, int>>{{256, 256}, {256, 784}, {1024, 1024}}) {
      const std::size_t weights = std::size_t(out_features) * in_features, n = weights + out_features;
      PeerReduce peer(n, local, true);
      if (!peer.available()) break;
      float* dY = device_alloc<float>(std::size_t(rows) * out_features);
      float* X = device_alloc<float>(std::size_t(rows) * in_features);
      float* dW = device_alloc<float>(n);
      const gpu::GradientCopies copies = peer.copies(0, 0, weights);
      auto chain_of = [&](const gpu::GradientCopies& to) {
        return replayed([&] {
          for (int k = 0; k < chain; ++k)
            gpu::linear_weight_grad(rows, out_features, in_features, dY, X, false, dW, dW + weights, gpu::FusedSgd{},
                                    stream, to);
        }, replays, double(chain) * replays);
      };
      const double plain = chain_of(gpu::GradientCopies{}), pushed = chain_of(copies);
      check(cudaStreamSynchronize(stream), "sync");
      host_allreduce->barrier();  // every rank's copies have landed before any slot is unmapped
      for (float* q : {dY, X, dW}) cudaFree(q);
      j["push_overhead"].push_back({{"ranks", ranks},
                                    {"elements", n},
                                    {"seconds", std::max(0.0, pushed - plain)},
                                    {"rows", rows},
                                    {"product_s", plain}});
    }
  }
  if (rank == 0) {
    write_json(out, j);
    std::printf("nccl on %d GPUs: allreduce of 4 bytes %.1f us (in a graph %.1f us), of 64 MB %.0f us; send/recv "
                "on the device %.1f us; products beside a posted receive of 4 B .. %s %.2fx .. %.2fx; overlap share %.2f\n",
                ranks, 1e6 * j["allreduce"].front()["seconds"].get<double>(),
                1e6 * j["graph_allreduce"].front()["seconds"].get<double>(),
                1e6 * j["allreduce"].back()["seconds"].get<double>(),
                1e6 * j["stream_p2p"].front()["seconds"].get<double>(),
                (std::to_string(j["pending_slowdown_by_bytes"].back()["bytes"].get<std::size_t>() >> 10) + " KB").c_str(),
                j["pending_slowdown_by_bytes"].front()["slowdown"].get<double>(), j["pending_slowdown"].get<double>(),
                j["overlap_share"].get<double>());
  }
  host_allreduce.reset();
  comm.reset();
  mpi::finalize();
  return 0;
}

}  // namespace

int main(int argc, char** argv) {
  const std::string usage = "usage: nnpar-calibrate-gpu kernels|nccl --out FILE [--quick]";
  if (argc < 2 || (std::strcmp(argv[1], "kernels") != 0 && std::strcmp(argv[1], "nccl") != 0)) {
    std::fprintf(stderr, "%s\n", usage.c_str());
    return 2;
  }
  const std::string out = arg_value(argc, argv, "--out");
  if (out.empty()) {
    std::fprintf(stderr, "%s\n", usage.c_str());
    return 2;
  }
  try {
    const bool quick = has_flag(argc, argv, "--quick");
    return std::strcmp(argv[1], "kernels") == 0 ? kernels_mode(out, quick) : nccl_mode(out, quick);
  } catch (const std::exception& e) {
    std::fprintf(stderr, "nnpar-calibrate-gpu: %s\n", e.what());
    if (mpi::initialized() && mpi::world_size() > 1) mpi::abort(2);
    return 2;
  }
}
