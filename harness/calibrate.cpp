// `nnpar calibrate`: times what the strategies are made of, on this machine, with our own
// kernels and communicators, and writes a profile (docs/plan.md, "Profiles").
//
//  cpu   the three Linear products (kernels.hpp) at a grid of layer shapes and row counts,
//        the streaming operations between them, OpenMP barrier cost and the slowdown of
//        several cores computing at once;
//  mpi   allreduce vs message size at 2, 4, 8... ranks and one-way send/recv between two
//        ranks, measured by nnpar itself started under the MPI launcher (--mpi-child);
//  gpu   (--gpu) the CUDA kernels and NCCL, by the separate nnpar-calibrate-gpu executable
//        (built only with CUDA, so the harness stays CUDA-free), NCCL parts under mpirun.
#include "calibrate.hpp"

#include <omp.h>
#include <unistd.h>

#include <algorithm>
#include <chrono>
#include <cstdio>
#include <filesystem>
#include <fstream>
#include <functional>
#include <numeric>
#include <random>
#include <thread>

#include <boost/dll/runtime_symbol_info.hpp>

#include "launcher.hpp"
#include "nnpar/comm_mpi.hpp"
#include "nnpar/data.hpp"
#include "nnpar/kernels.hpp"
#include "perf_model.hpp"
#include "results.hpp"

namespace nnpar {

namespace fs = std::filesystem;
namespace k = nnpar::kernels;
using Clock = std::chrono::steady_clock;

namespace {

// Median over `samples` of the time per call, each sample long enough (min_seconds) for the
// clock; the first call warms caches and pages.
double time_call(const std::function<void()>& call, double min_seconds, int samples = 5) {
  call();
  std::vector<double> per_call;
  for (int s = 0; s < samples; ++s) {
    int reps = 0;
    const auto start = Clock::now();
    double elapsed = 0;
    do {
      call();
      ++reps;
      elapsed = std::chrono::duration<double>(Clock::now() - start).count();
    } while (elapsed < min_seconds);
    per_call.push_back(elapsed / reps);
  }
  std::sort(per_call.begin(), per_call.end());
  return per_call[per_call.size() / 2];
}

std::vector<float> random_floats(std::size_t n, unsigned seed) {
  std::vector<float> v(n);
  std::mt19937 g(seed);
  std::uniform_real_distribution<float> d(-1.0f, 1.0f);
  for (float& x : v) x = d(g);
  return v;
}

double total_memory_bytes() {
  const long pages = sysconf(_SC_PHYS_PAGES), size = sysconf(_SC_PAGE_SIZE);
  return pages > 0 && size > 0 ? double(pages) * double(size) : 0;
}

nlohmann::json kernel_points(bool quick, bool verbose) {
  const std::vector<int> ins = quick ? std::vector<int>{784, 256} : std::vector<int>{784, 256, 512, 1024};
  const std::vector<int> outs = quick ? std::vector<int>{26, 256} : std::vector<int>{26, 64, 128, 256, 512, 1024};
  const std::vector<int> rows_list =
      quick ? std::vector<int>{1, 32, 128} : std::vector<int>{1, 4, 16, 32, 64, 128, 256, 512, 1024};
  const double min_seconds = quick ? 2e-4 : 2e-3;
  const int max_rows = rows_list.back(), max_in = *std::max_element(ins.begin(), ins.end()),
            max_out = *std::max_element(outs.begin(), outs.end());
  const auto X = random_floats(std::size_t(max_rows) * max_in, 1);
  const auto W = random_floats(std::size_t(max_out) * max_in, 2);
  const auto G = random_floats(std::size_t(max_rows) * max_out, 3);
  std::vector<float> Y(std::size_t(max_rows) * std::max(max_in, max_out)), dW(std::size_t(max_out) * max_in);
  nlohmann::json forms = {{"forward", {{"points", nlohmann::json::array()}}},
                          {"weight_grad", {{"points", nlohmann::json::array()}}},
                          {"input_grad", {{"points", nlohmann::json::array()}}}};
  for (int in : ins)
    for (int out : outs) {
      for (int rows : rows_list) {
        // The calls Linear makes (core/layers.cpp): forward X W^T, weight gradient dY^T X
        // accumulated, input gradient dY W.
        const double f = time_call([&] { k::gemm_nt(rows, out, in, 1.0f, X.data(), in, W.data(), in, 0.0f, Y.data(), out); },
                                   min_seconds);
        const double wg = time_call(
            [&] { k::gemm_tn(out, in, rows, 1.0f, G.data(), out, X.data(), in, 1.0f, dW.data(), in); }, min_seconds);
        const double ig = time_call(
            [&] { k::gemm_nn(rows, in, out, 1.0f, G.data(), out, W.data(), in, 0.0f, Y.data(), in); }, min_seconds);
        for (auto [name, t] : {std::pair{"forward", f}, {"weight_grad", wg}, {"input_grad", ig}})
          forms[name]["points"].push_back({{"rows", rows}, {"in", in}, {"out", out}, {"seconds", t}});
      }
      if (verbose) {
        std::printf(".");
        std::fflush(stdout);
      }
    }
  if (verbose) std::printf("\n");
  return forms;
}

nlohmann::json stream_points(bool quick) {
  const std::vector<std::size_t> sizes =
      quick ? std::vector<std::size_t>{1024, 262144} : std::vector<std::size_t>{1024, 16384, 262144, 4194304};
  const double min_seconds = quick ? 2e-4 : 2e-3;
  const std::size_t largest = sizes.back();
  auto a = random_floats(largest, 4), b = random_floats(largest, 5), c = random_floats(largest, 6);
  std::vector<float> v(largest, 0.0f);
  const int cols = 256, classes = 26;
  std::vector<std::int32_t> labels(largest / classes + 1);
  for (std::size_t i = 0; i < labels.size(); ++i) labels[i] = int(i % classes);
  Dataset data;
  data.count = largest / 784 + 1;
  data.pixels.assign(data.count * 784, 7);
  data.labels.assign(data.count, 1);
  std::vector<std::uint32_t> order(data.count);
  std::iota(order.begin(), order.end(), 0u);
  std::vector<std::int32_t> y(data.count);

  nlohmann::json streams = nlohmann::json::object();
  auto measure = [&](const std::string& name, const std::function<void(std::size_t)>& op, std::size_t granule) {
    for (std::size_t n : sizes) {
      const std::size_t m = std::max(granule, n / granule * granule);
      streams[name].push_back({{"elements", m}, {"seconds", time_call([&] { op(m); }, min_seconds)}});
    }
  };
  measure("bias_sigmoid", [&](std::size_t n) {
    k::add_bias_rows(int(n / cols), cols, b.data(), a.data());
    k::sigmoid_forward(n, a.data(), a.data());
  }, cols);
  measure("bias", [&](std::size_t n) { k::add_bias_rows(int(n / cols), cols, b.data(), a.data()); }, cols);
  measure("sigmoid_backward", [&](std::size_t n) { k::sigmoid_backward(n, b.data(), c.data(), a.data()); }, 1);
  measure("column_sums", [&](std::size_t n) { k::column_sums(int(n / cols), cols, 1.0f, a.data(), 1.0f, v.data()); },
          cols);
  measure("softmax_xent", [&](std::size_t n) {
    const int rows = int(n / classes);
    k::softmax_xent_forward(rows, classes, a.data(), labels.data(), b.data());
    k::count_correct(rows, classes, b.data(), labels.data());
    k::softmax_xent_backward(rows, classes, b.data(), labels.data(), 1.0f, c.data());
  }, classes);
  measure("sgd", [&](std::size_t n) { k::sgd_update(n, 1e-9f, 0.0f, 0.0f, a.data(), b.data(), nullptr); }, 1);
  measure("sgd_momentum", [&](std::size_t n) { k::sgd_update(n, 1e-9f, 0.9f, 0.0f, a.data(), b.data(), v.data()); }, 1);
  measure("zero", [&](std::size_t n) { std::fill_n(c.data(), n, 0.0f); }, 1);
  measure("copy", [&](std::size_t n) { std::copy_n(b.data(), n, c.data()); }, 1);
  measure("add", [&](std::size_t n) {
    float* dst = c.data();
    const float* src = b.data();
    for (std::size_t e = 0; e < n; ++e) dst[e] += src[e];
  }, 1);
  measure("gather", [&](std::size_t n) {
    gather_batch(data, std::span<const std::uint32_t>(order).first(n / 784), a.data(), y.data());
  }, 784);
  return streams;
}

nlohmann::json openmp_points(bool quick, int cores) {
  nlohmann::json j = {{"barrier", nlohmann::json::array()}, {"concurrency", nlohmann::json::array()}};
  std::vector<int> teams;
  for (int t = 2; t <= cores; t *= 2) teams.push_back(t);
  if (cores > 1 && (teams.empty() || teams.back() != cores)) teams.push_back(cores);
  // The work of one data-parallel shard, alone and on T cores at once.
  const int rows = 128, in = 784, out = 256;
  const int reps = quick ? 5 : 40;
  std::vector<std::vector<float>> xs, ws, ys;
  const int most = teams.empty() ? 1 : teams.back();
  for (int t = 0; t < most; ++t) {
    xs.push_back(random_floats(std::size_t(rows) * in, 10 + t));
    ws.push_back(random_floats(std::size_t(out) * in, 40 + t));
    ys.emplace_back(std::size_t(rows) * out);
  }
  auto busy = [&](int threads) {
    std::vector<double> samples;
    for (int s = 0; s < 3; ++s) {
      const auto start = Clock::now();
#pragma omp parallel num_threads(threads)
      {
        const int t = omp_get_thread_num();
        for (int r = 0; r < reps; ++r)
          k::gemm_nt(rows, out, in, 1.0f, xs[t].data(), in, ws[t].data(), in, 0.0f, ys[t].data(), out);
      }
      samples.push_back(std::chrono::duration<double>(Clock::now() - start).count());
    }
    std::sort(samples.begin(), samples.end());
    return samples[1];
  };
  const double alone = busy(1);
  for (int T : teams) {
    const int iterations = quick ? 200 : 2000;
    double seconds = 0;
    for (int s = 0; s < 3; ++s) {
      const auto start = Clock::now();
#pragma omp parallel num_threads(T)
      {
        for (int i = 0; i < iterations; ++i) {
#pragma omp barrier
        }
      }
      const double t = std::chrono::duration<double>(Clock::now() - start).count() / iterations;
      seconds = s == 0 ? t : std::min(seconds, t);
    }
    j["barrier"].push_back({{"threads", T}, {"seconds", seconds}});
    j["concurrency"].push_back({{"threads", T}, {"slowdown", std::max(1.0, busy(T) / alone)}});
  }
  return j;
}

// ---------------------------------------------------------------------------------------------
// MPI, as a rank under the launcher

int mpi_child(const std::string& out_file, bool quick) {
  mpi::initialize();
  auto comm = mpi::world();
  const int rank = comm->rank(), ranks = comm->size();
  const std::vector<std::size_t> floats =
      quick ? std::vector<std::size_t>{1, 4096, 262144}
            : std::vector<std::size_t>{1, 256, 4096, 65536, 262144, 1048576, 4194304, 16777216};
  std::vector<float> buffer(floats.back(), 1.0f);
  nlohmann::json j = {{"ranks", ranks}, {"allreduce", nlohmann::json::array()}, {"p2p", nlohmann::json::array()}};
  // Rank 0's time per call (the median of three samples), which every rank takes part in.
  auto timed = [&](const std::function<void()>& op, std::size_t n) {
    const int iterations = quick ? 5 : (n >= 4194304 ? 10 : n >= 262144 ? 40 : 200);
    for (int i = 0; i < 3; ++i) op();
    std::vector<double> samples;
    for (int s = 0; s < 3; ++s) {
      comm->barrier();
      const auto start = Clock::now();
      for (int i = 0; i < iterations; ++i) op();
      double t = std::chrono::duration<double>(Clock::now() - start).count() / iterations;
      comm->broadcast(&t, 1, DataType::f64, 0);
      samples.push_back(t);
    }
    std::sort(samples.begin(), samples.end());
    return samples[1];
  };
  // Beside the blocking allreduce, the non-blocking one, posted and waited for (what mpi-data's
  // overlapped buckets and the hybrids' per-layer reductions call): MPI runs it by another
  // algorithm (Open MPI: libnbc's schedules, progressed only inside MPI calls).
  j["iallreduce"] = nlohmann::json::array();
  for (std::size_t n : floats) {
    const double blocking = timed([&] { comm->allreduce(buffer.data(), n, ReduceOp::sum); }, n);
    const double posted =
        timed([&] { comm->allreduce_async(buffer.data(), n, DataType::f32, ReduceOp::sum)->wait(); }, n);
    j["allreduce"].push_back({{"ranks", ranks}, {"bytes", 4 * n}, {"seconds", blocking}});
    j["iallreduce"].push_back({{"ranks", ranks}, {"bytes", 4 * n}, {"seconds", posted}});
  }
  // One way = half a round trip between ranks 0 and 1 (the others wait at the barrier).
  for (std::size_t n : floats) {
    const double t = timed(
        [&] {
          if (rank == 0) {
            comm->send(buffer.data(), n, DataType::f32, 1, 7);
            comm->recv(buffer.data(), n, DataType::f32, 1, 8);
          } else if (rank == 1) {
            comm->recv(buffer.data(), n, DataType::f32, 0, 7);
            comm->send(buffer.data(), n, DataType::f32, 0, 8);
          }
        },
        n);
    j["p2p"].push_back({{"bytes", 4 * n}, {"seconds", t / 2}});
  }
  if (rank == 0) write_file_atomic(out_file, j.dump(2) + "\n");
  comm.reset();
  mpi::finalize();
  return 0;
}

fs::path temp_file(const std::string& what) {
  return fs::temp_directory_path() / ("nnpar-calibrate-" + std::to_string(::getpid()) + "-" + what + ".json");
}

nlohmann::json read_json(const fs::path& file, const std::string& what) {
  std::ifstream in(file);
  if (!in) throw std::runtime_error(what + " wrote no results (" + file.string() + "); its messages are above");
  try {
    return nlohmann::json::parse(in);
  } catch (const nlohmann::json::parse_error& e) {
    throw std::runtime_error(what + " wrote unreadable results: " + e.what());
  }
}

std::vector<int> rank_counts(const std::vector<int>& given, int available) {
  if (!given.empty()) return given;
  std::vector<int> r;
  for (int p = 2; p <= available; p *= 2) r.push_back(p);
  if (available > 2 && r.back() != available) r.push_back(available);
  return r;
}

// Runs `argv` and reads the JSON it wrote to `file`.
nlohmann::json run_tool(const std::vector<std::string>& argv, const fs::path& file, const std::string& what) {
  std::printf("  %s\n", join_command(argv).c_str());
  std::fflush(stdout);
  fs::remove(file);
  const int status = run_and_wait(argv);
  if (status != 0) throw std::runtime_error(what + " failed (exit status " + std::to_string(status) + "); its messages are above");
  nlohmann::json j = read_json(file, what);
  fs::remove(file);
  return j;
}

}  // namespace

// The mean over passes of every "seconds" (or "slowdown") at the same place in the trees.
void accumulate(nlohmann::json& sum, const nlohmann::json& pass, double weight) {
  if (sum.is_object()) {
    for (auto it = sum.begin(); it != sum.end(); ++it) {
      if (it.key() == "seconds" || it.key() == "slowdown") it.value() = it.value().get<double>() + weight * pass.at(it.key()).get<double>();
      else accumulate(it.value(), pass.at(it.key()), weight);
    }
  } else if (sum.is_array()) {
    for (std::size_t i = 0; i < sum.size(); ++i) accumulate(sum[i], pass.at(i), weight);
  }
}

nlohmann::json calibrate_cpu(bool quick, bool verbose) {
  const MachineInfo m = machine_info();
  nlohmann::json cpu;
  cpu["name"] = m.cpu_model.empty() ? "CPU" : m.cpu_model;
  cpu["count"] = std::max(1u, m.cores);
  cpu["memory_bytes"] = total_memory_bytes();
  // On a shared machine the neighbours' load comes and goes over seconds: every point is the
  // mean of passes spread over the whole calibration, not a few milliseconds of one moment.
  const int passes = quick ? 1 : 3;
  cpu["passes"] = passes;
  nlohmann::json kernels, streams, openmp;
  std::vector<nlohmann::json> openmp_passes;
  for (int pass = 0; pass < passes; ++pass) {
    if (verbose) std::printf("cpu pass %d/%d: products of our kernels at every layer shape ", pass + 1, passes);
    nlohmann::json k = kernel_points(quick, verbose);
    if (verbose) std::printf("cpu pass %d/%d: streaming operations, OpenMP barrier and concurrent cores\n", pass + 1, passes);
    nlohmann::json s = stream_points(quick);
    nlohmann::json o = openmp_points(quick, int(std::max(1u, m.cores)));
    openmp_passes.push_back(o);
    if (pass == 0) {
      kernels = k, streams = s, openmp = o;
      if (passes > 1) accumulate(kernels, k, 1.0 / passes - 1), accumulate(streams, s, 1.0 / passes - 1),
                      accumulate(openmp, o, 1.0 / passes - 1);
    } else {
      accumulate(kernels, k, 1.0 / passes), accumulate(streams, s, 1.0 / passes), accumulate(openmp, o, 1.0 / passes);
    }
  }
  take_median_slowdowns(openmp, openmp_passes);
  cpu["kernels"] = kernels;
  cpu["streams"] = streams;
  cpu["openmp"] = openmp;
  return cpu;
}

void take_median_slowdowns(nlohmann::json& openmp, const std::vector<nlohmann::json>& passes) {
  if (!openmp.contains("concurrency")) return;
  auto& points = openmp["concurrency"];
  for (std::size_t i = 0; i < points.size(); ++i) {
    std::vector<double> values;
    for (const auto& pass : passes) values.push_back(pass.at("concurrency").at(i).at("slowdown").get<double>());
    if (values.empty()) continue;
    std::sort(values.begin(), values.end());
    const std::size_t n = values.size();
    points[i]["slowdown"] = n % 2 ? values[n / 2] : 0.5 * (values[n / 2 - 1] + values[n / 2]);
    points[i]["passes"] = values;
  }
}

int run_calibrate(const CalibrateOptions& o) {
  if (!o.mpi_child.empty()) return mpi_child(o.mpi_child, o.quick);
  if (o.output.empty()) throw std::invalid_argument("calibrate: give the profile file with -o FILE");
  if (fs::exists(o.output) && !o.overwrite)
    throw std::invalid_argument("calibrate: '" + o.output + "' already exists; choose another name or pass --overwrite");
  const MachineInfo m = machine_info();
  const auto start = Clock::now();
  nlohmann::json profile = {{"schema", perf::kProfileSchema},
                            {"created", iso_time_now()},
                            {"nnpar_version", NNPAR_VERSION},
                            {"git_commit", NNPAR_GIT_COMMIT},
                            {"command", o.command_line},
                            {"quick", o.quick},
                            {"machine", {{"host", m.host}, {"cpu", m.cpu_model}, {"cores", m.cores}, {"os", m.os}}}};
  profile["cpu"] = calibrate_cpu(o.quick, true);
  profile["comm"] = nlohmann::json::object();

  if (o.mpi) {
    nlohmann::json mpi = {{"allreduce", nlohmann::json::array()}, {"iallreduce", nlohmann::json::array()},
                          {"p2p", nlohmann::json::array()}};
    for (int p : rank_counts(o.mpi_ranks, int(std::max(2u, m.cores)))) {
      std::printf("mpi: allreduce and send/recv on %d ranks\n", p);
      const fs::path file = temp_file("mpi-" + std::to_string(p));
      std::vector<std::string> args{"calibrate", "--mpi-child", file.string()};
      if (o.quick) args.push_back("--quick");
      const nlohmann::json j = run_tool(mpi_command(o.launcher, p, args), file, "the MPI calibration on " + std::to_string(p) + " ranks");
      for (auto& e : j.at("allreduce")) mpi["allreduce"].push_back(e);
      for (auto& e : j.at("iallreduce")) mpi["iallreduce"].push_back(e);
      if (mpi["p2p"].empty()) mpi["p2p"] = j.at("p2p");  // between two ranks of one host
    }
    profile["comm"]["mpi"] = mpi;
  }

  if (o.gpu) {
    const fs::path tool = o.gpu_tool.empty()
                              ? fs::path(boost::dll::program_location().parent_path().string()) / "nnpar-calibrate-gpu"
                              : fs::path(o.gpu_tool);
    if (!fs::exists(tool))
      throw std::invalid_argument("calibrate --gpu: '" + tool.string() +
                                  "' not found (it is built with CUDA and NCCL: configure with -DNNPAR_ENABLE_CUDA=ON on a "
                                  "machine with the CUDA toolkit)");
    std::printf("gpu: our CUDA kernels (one GPU)\n");
    const fs::path kernels_file = temp_file("gpu");
    std::vector<std::string> args{tool.string(), "kernels", "--out", kernels_file.string()};
    if (o.quick) args.push_back("--quick");
    profile["gpu"] = run_tool(args, kernels_file, "nnpar-calibrate-gpu kernels");
    const int gpus = profile["gpu"].value("count", 1);
    if (gpus >= 2) {
      nlohmann::json nccl = {{"allreduce", nlohmann::json::array()}, {"p2p", nlohmann::json::array()}};
      for (int p : rank_counts(o.gpu_ranks, gpus)) {
        std::printf("nccl: allreduce and send/recv on %d GPUs\n", p);
        const fs::path file = temp_file("nccl-" + std::to_string(p));
        std::vector<std::string> nargs{"--out", file.string()};
        if (o.quick) nargs.push_back("--quick");
        std::vector<std::string> command = mpi_command(o.launcher, p, {});
        command.pop_back();  // mpi_command ends with nnpar itself: run the GPU tool instead
        command.push_back(tool.string());
        command.push_back("nccl");
        command.insert(command.end(), nargs.begin(), nargs.end());
        const nlohmann::json j = run_tool(command, file, "the NCCL calibration on " + std::to_string(p) + " GPUs");
        for (auto& e : j.at("allreduce")) nccl["allreduce"].push_back(e);
        if (j.contains("graph_allreduce"))
          for (auto& e : j.at("graph_allreduce")) nccl["graph_allreduce"].push_back(e);
        if (nccl["p2p"].empty()) nccl["p2p"] = j.at("p2p");
        // Measured between ranks 0 and 1, as p2p: the first rank count's.
        if (j.contains("stream_p2p") && !nccl.contains("stream_p2p")) nccl["stream_p2p"] = j.at("stream_p2p");
        // nccl-data's fused P2P reduce, per rank count (absent where the ranks cannot map
        // each other's memory; then peer_sgd_unavailable says why).
        for (const char* table : {"peer_sgd", "peer_sgd_push", "push_overhead"})
          if (j.contains(table))
            for (auto& e : j.at(table)) nccl[table].push_back(e);
        for (const char* k : {"pending_slowdown", "pending_slowdown_by_bytes", "overlap_share", "overlap_probe",
                              "peer_sgd_unavailable"})
          if (j.contains(k) && !nccl.contains(k)) nccl[k] = j.at(k);
        nccl["host_call_s"] = j.at("host_call_s");
      }
      profile["comm"]["nccl"] = nccl;
    } else {
      std::printf("nccl: skipped (one GPU)\n");
    }
  }
  profile["calibration_seconds"] = std::chrono::duration<double>(Clock::now() - start).count();

  // What plan will read: validate before writing, so a profile on disk always loads.
  const perf::Profile parsed = perf::profile_from_json(profile, o.output);
  fs::path written = o.output;
  if (o.overwrite) {
    write_file_atomic(written, profile.dump(1) + "\n");
  } else {
    // Never replaces a file, even one that appeared while we measured (it gets a -2 suffix).
    const fs::path target(o.output);
    written = write_new_file(target.parent_path().empty() ? fs::path(".") : target.parent_path(), target.stem().string(),
                             target.extension().string(), profile.dump(1) + "\n");
  }
  std::printf("\n%s\n", parsed.describe().c_str());
  for (const auto* dev : {parsed.cpu ? &*parsed.cpu : nullptr, parsed.gpu ? &*parsed.gpu : nullptr}) {
    if (!dev) continue;
    for (auto& [form, table] : dev->kernels) {
      const auto [mean, worst] = table.fit_error();
      std::printf("%s %-11s fit: %.2f us per call + %.1f GFLOP/s + %.2f GB/s (mean error of the fit %.0f%%, worst %.0f%%; "
                  "plan uses the measured points)\n",
                  dev->gpu ? "gpu" : "cpu", perf::form_name(form), table.fit.call_s * 1e6,
                  table.fit.per_flop_s > 0 ? 1e-9 / table.fit.per_flop_s : 0.0,
                  table.fit.per_element_s > 0 ? 4e-9 / table.fit.per_element_s : 0.0, 100 * mean, 100 * worst);
    }
  }
  std::printf("profile: %s (%.0f s)\n", written.string().c_str(), profile["calibration_seconds"].get<double>());
  return 0;
}

}  // namespace nnpar
