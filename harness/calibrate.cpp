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
#include <map>
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

// The three products Linear makes (core/layers.cpp): forward X W^T, weight gradient dY^T X
// accumulated, input gradient dY W, on buffers large enough for every calibrated shape.
class ProductTimer {
 public:
  ProductTimer(int max_rows, int max_in, int max_out)
      : X(random_floats(std::size_t(max_rows) * max_in, 1)),
        W(random_floats(std::size_t(max_out) * max_in, 2)),
        G(random_floats(std::size_t(max_rows) * max_out, 3)),
        Y(std::size_t(max_rows) * std::max(max_in, max_out)),
        dW(std::size_t(max_out) * max_in) {}

  double seconds(const std::string& form, int rows, int in, int out, double min_seconds) {
    if (form == "forward")
      return time_call([&] { k::gemm_nt(rows, out, in, 1.0f, X.data(), in, W.data(), in, 0.0f, Y.data(), out); },
                       min_seconds);
    if (form == "weight_grad")
      return time_call([&] { k::gemm_tn(out, in, rows, 1.0f, G.data(), out, X.data(), in, 1.0f, dW.data(), in); },
                       min_seconds);
    return time_call([&] { k::gemm_nn(rows, in, out, 1.0f, G.data(), out, W.data(), in, 0.0f, Y.data(), in); },
                     min_seconds);
  }

 private:
  std::vector<float> X, W, G, Y, dW;
};

struct KernelGrid {
  std::vector<int> ins, outs, rows;
  double min_seconds;
};

// Each timing sample lasts at least this long (time_call).
double sample_seconds(bool quick) { return quick ? 2e-4 : 2e-3; }

KernelGrid kernel_grid(bool quick) {
  if (quick) return {{784, 256}, {26, 256}, {1, 32, 128}, sample_seconds(quick)};
  return {{784, 256, 512, 1024}, {26, 64, 128, 256, 512, 1024}, {1, 4, 16, 32, 64, 128, 256, 512, 1024},
          sample_seconds(quick)};
}

ProductTimer product_timer(const KernelGrid& g) {
  return ProductTimer(g.rows.back(), *std::max_element(g.ins.begin(), g.ins.end()),
                      *std::max_element(g.outs.begin(), g.outs.end()));
}

nlohmann::json kernel_points(bool quick, bool verbose) {
  const KernelGrid g = kernel_grid(quick);
  ProductTimer timer = product_timer(g);
  nlohmann::json forms = {{"forward", {{"points", nlohmann::json::array()}}},
                          {"weight_grad", {{"points", nlohmann::json::array()}}},
                          {"input_grad", {{"points", nlohmann::json::array()}}}};
  for (int in : g.ins)
    for (int out : g.outs) {
      for (int rows : g.rows)
        for (const char* form : {"forward", "weight_grad", "input_grad"})
          forms[form]["points"].push_back(
              {{"rows", rows}, {"in", in}, {"out", out}, {"seconds", timer.seconds(form, rows, in, out, g.min_seconds)}});
      if (verbose) {
        std::printf(".");
        std::fflush(stdout);
      }
    }
  if (verbose) std::printf("\n");
  return forms;
}

// The streaming operations between the products, on buffers of up to `largest` elements.
class StreamTimer {
 public:
  explicit StreamTimer(std::size_t largest)
      : a(random_floats(largest, 4)), b(random_floats(largest, 5)), c(random_floats(largest, 6)), v(largest, 0.0f),
        labels(largest / kClasses + 1) {
    for (std::size_t i = 0; i < labels.size(); ++i) labels[i] = int(i % kClasses);
    data.count = largest / 784 + 1;
    data.pixels.assign(data.count * 784, 7);
    data.labels.assign(data.count, 1);
    order.resize(data.count);
    std::iota(order.begin(), order.end(), 0u);
    y.resize(data.count);
    add("bias_sigmoid", kCols, [this](std::size_t n) {
      k::add_bias_rows(int(n / kCols), kCols, b.data(), a.data());
      k::sigmoid_forward(n, a.data(), a.data());
    });
    add("bias", kCols, [this](std::size_t n) { k::add_bias_rows(int(n / kCols), kCols, b.data(), a.data()); });
    add("sigmoid_backward", 1, [this](std::size_t n) { k::sigmoid_backward(n, b.data(), c.data(), a.data()); });
    add("column_sums", kCols,
        [this](std::size_t n) { k::column_sums(int(n / kCols), kCols, 1.0f, a.data(), 1.0f, v.data()); });
    add("softmax_xent", kClasses, [this](std::size_t n) {
      const int rows = int(n / kClasses);
      k::softmax_xent_forward(rows, kClasses, a.data(), labels.data(), b.data());
      k::count_correct(rows, kClasses, b.data(), labels.data());
      k::softmax_xent_backward(rows, kClasses, b.data(), labels.data(), 1.0f, c.data());
    });
    add("sgd", 1, [this](std::size_t n) { k::sgd_update(n, 1e-9f, 0.0f, 0.0f, a.data(), b.data(), nullptr); });
    add("sgd_momentum", 1, [this](std::size_t n) { k::sgd_update(n, 1e-9f, 0.9f, 0.0f, a.data(), b.data(), v.data()); });
    add("zero", 1, [this](std::size_t n) { std::fill_n(c.data(), n, 0.0f); });
    add("copy", 1, [this](std::size_t n) { std::copy_n(b.data(), n, c.data()); });
    add("add", 1, [this](std::size_t n) {
      float* dst = c.data();
      const float* src = b.data();
      for (std::size_t e = 0; e < n; ++e) dst[e] += src[e];
    });
    add("gather", 784, [this](std::size_t n) {
      gather_batch(data, std::span<const std::uint32_t>(order).first(n / 784), a.data(), y.data());
    });
  }

  const std::vector<std::string>& names() const { return names_; }
  // The element count measured for a requested size: whole rows of the operation.
  std::size_t elements(const std::string& name, std::size_t n) const {
    const std::size_t granule = ops.at(name).granule;
    return std::max(granule, n / granule * granule);
  }
  double seconds(const std::string& name, std::size_t elements, double min_seconds) const {
    const Op& op = ops.at(name);
    return time_call([&] { op.run(elements); }, min_seconds);
  }

 private:
  static constexpr int kCols = 256, kClasses = 26;
  struct Op {
    std::size_t granule;
    std::function<void(std::size_t)> run;
  };
  void add(const std::string& name, std::size_t granule, std::function<void(std::size_t)> run) {
    names_.push_back(name);
    ops[name] = {granule, std::move(run)};
  }
  std::vector<float> a, b, c, v;
  std::vector<std::int32_t> labels;
  Dataset data;
  std::vector<std::uint32_t> order;
  std::vector<std::int32_t> y;
  std::vector<std::string> names_;
  std::map<std::string, Op> ops;
};

std::vector<std::size_t> stream_sizes(bool quick) {
  return quick ? std::vector<std::size_t>{1024, 262144} : std::vector<std::size_t>{1024, 16384, 262144, 4194304};
}

nlohmann::json stream_points(bool quick) {
  const std::vector<std::size_t> sizes = stream_sizes(quick);
  const StreamTimer timer(sizes.back());
  nlohmann::json streams = nlohmann::json::object();
  for (const std::string& name : timer.names())
    for (std::size_t n : sizes) {
      const std::size_t m = timer.elements(name, n);
      streams[name].push_back({{"elements", m}, {"seconds", timer.seconds(name, m, sample_seconds(quick))}});
    }
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

// The median over passes of every "seconds" at the same place in the trees (each pass has the
// first one's layout). A median, not a mean: one pass disturbed by the host (a 6x slower
// product at 512x512, 16 rows, in call V1 of plan-validation-8.md) moves a mean by a third of
// the disturbance and a median of three not at all.
nlohmann::json median_over_passes(const std::vector<nlohmann::json>& passes) {
  nlohmann::json out = passes.at(0);
  std::function<void(nlohmann::json&, const std::vector<const nlohmann::json*>&)> walk =
      [&](nlohmann::json& node, const std::vector<const nlohmann::json*>& same) {
        if (node.is_object()) {
          for (auto it = node.begin(); it != node.end(); ++it) {
            std::vector<const nlohmann::json*> children;
            for (const auto* p : same) children.push_back(&p->at(it.key()));
            if (it.key() == "seconds") {
              std::vector<double> v;
              for (const auto* c : children) v.push_back(c->get<double>());
              it.value() = median_of(v);
            } else {
              walk(it.value(), children);
            }
          }
        } else if (node.is_array()) {
          for (std::size_t i = 0; i < node.size(); ++i) {
            std::vector<const nlohmann::json*> children;
            for (const auto* p : same) children.push_back(&p->at(i));
            walk(node[i], children);
          }
        }
      };
  std::vector<const nlohmann::json*> all;
  for (const auto& p : passes) all.push_back(&p);
  walk(out, all);
  return out;
}

namespace {

// Points their neighbours contradict (perf::contradicted_points) are measured again, up to
// three rounds, each new value the median of three measurements. Returns what was measured
// again (the profile's cpu.remeasured); what still contradicts a larger size is left to
// perf::disturbed_points.
nlohmann::json remeasure_contradicted(nlohmann::json& kernels, nlohmann::json& streams, bool quick, bool verbose) {
  const KernelGrid g = kernel_grid(quick);
  ProductTimer products = product_timer(g);
  const StreamTimer stream_timer(stream_sizes(quick).back());
  // Each curve: its JSON points in size order, and how to measure one of them again.
  struct Curve {
    std::string table;
    std::vector<nlohmann::json*> points;
    std::string size_key;
    std::function<double(const nlohmann::json&)> measure;
  };
  std::vector<Curve> curves;
  for (auto& [form, table] : kernels.items()) {
    std::map<std::pair<int, int>, std::vector<nlohmann::json*>> shapes;
    for (auto& p : table.at("points")) shapes[{p.at("in").get<int>(), p.at("out").get<int>()}].push_back(&p);
    for (auto& [shape, points] : shapes) {
      std::sort(points.begin(), points.end(), [](auto* x, auto* y) { return x->at("rows") < y->at("rows"); });
      const std::string f = form;
      curves.push_back({f + " " + std::to_string(shape.first) + "x" + std::to_string(shape.second), points, "rows",
                        [&products, f, g](const nlohmann::json& p) {
                          return products.seconds(f, p.at("rows"), p.at("in"), p.at("out"), g.min_seconds);
                        }});
    }
  }
  for (auto& [op, table] : streams.items()) {
    std::vector<nlohmann::json*> points;
    for (auto& p : table) points.push_back(&p);
    const std::string name = op;
    curves.push_back({"stream " + name, points, "elements",
                      [&stream_timer, name, quick](const nlohmann::json& p) {
                        return stream_timer.seconds(name, p.at("elements").get<std::size_t>(), sample_seconds(quick));
                      }});
  }
  auto values = [](const Curve& c) {
    std::vector<std::pair<double, double>> v;
    for (const auto* p : c.points) v.push_back({p->at(c.size_key).get<double>(), p->at("seconds").get<double>()});
    return v;
  };
  nlohmann::json remeasured = nlohmann::json::array();
  for (int round = 0; round < 3; ++round) {
    int measured = 0;
    for (const Curve& c : curves)
      for (std::size_t i : perf::contradicted_points(values(c))) {
        nlohmann::json& p = *c.points[i];
        const double before = p.at("seconds").get<double>();
        const double after = median_of({c.measure(p), c.measure(p), c.measure(p)});
        p["seconds"] = after;
        remeasured.push_back({{"table", c.table}, {c.size_key, p.at(c.size_key)}, {"before", before}, {"after", after}});
        ++measured;
      }
    if (verbose && measured) std::printf("cpu: %d point(s) slower than a larger size, measured again\n", measured);
    if (!measured) break;
  }
  return remeasured;
}

}  // namespace

nlohmann::json calibrate_cpu(bool quick, bool verbose) {
  const MachineInfo m = machine_info();
  nlohmann::json cpu;
  cpu["name"] = m.cpu_model.empty() ? "CPU" : m.cpu_model;
  cpu["count"] = std::max(1u, m.cores);
  cpu["memory_bytes"] = total_memory_bytes();
  // On a shared machine the neighbours' load comes and goes over seconds: every point is the
  // median of passes spread over the whole calibration, not a few milliseconds of one moment.
  const int passes = quick ? 1 : 3;
  cpu["passes"] = passes;
  std::vector<nlohmann::json> kernel_passes, stream_passes, openmp_passes;
  for (int pass = 0; pass < passes; ++pass) {
    if (verbose) std::printf("cpu pass %d/%d: products of our kernels at every layer shape ", pass + 1, passes);
    kernel_passes.push_back(kernel_points(quick, verbose));
    if (verbose) std::printf("cpu pass %d/%d: streaming operations, OpenMP barrier and concurrent cores\n", pass + 1, passes);
    stream_passes.push_back(stream_points(quick));
    openmp_passes.push_back(openmp_points(quick, int(std::max(1u, m.cores))));
  }
  nlohmann::json kernels = median_over_passes(kernel_passes), streams = median_over_passes(stream_passes),
                 openmp = median_over_passes(openmp_passes);
  cpu["remeasured"] = remeasure_contradicted(kernels, streams, quick, verbose);
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
    std::sort(values.begin(), values.end());  // the profile lists the passes in order
    points[i]["slowdown"] = median_of(values);
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
  const std::vector<perf::DisturbedPoint> disturbed = parsed.cpu ? perf::disturbed_points(*parsed.cpu)
                                                                 : std::vector<perf::DisturbedPoint>{};
  if (parsed.cpu) profile["cpu"]["disturbed"] = perf::disturbed_points_json(disturbed);
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
  if (parsed.cpu) {
    const std::size_t again = profile["cpu"]["remeasured"].size();
    if (again > 0 || !disturbed.empty())
      std::printf("cpu: %zu measurement%s repeated for points slower than a larger size; %s\n", again, again == 1 ? "" : "s",
                  disturbed.empty() ? "none left" : perf::describe_disturbed(disturbed).c_str());
  }
  std::printf("profile: %s (%.0f s)\n", written.string().c_str(), profile["calibration_seconds"].get<double>());
  return 0;
}

}  // namespace nnpar
