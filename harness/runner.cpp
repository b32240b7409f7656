#include "runner.hpp"

#include <dlfcn.h>

#include <algorithm>
#include <chrono>
#include <cmath>
#include <cstdio>
#include <fstream>
#include <sstream>

#include "divergence.hpp"
#include "nnpar/comm_mpi.hpp"
#include "nnpar/kernels.hpp"
#include "nnpar/safetensors.hpp"
#include "nnpar/trace.hpp"

namespace nnpar {

Datasets load_datasets(const DataConfig& data) {
  Datasets out;
  DataOptions test_options = data.options;
  test_options.limit = data.test_limit;
  if (data.format == "csv") {
    out.train = load_csv(data.train_csv, data.options);
    out.test = load_csv(data.test_csv, test_options);
  } else {
    out.train = load_idx(data.train_images, data.train_labels, data.options);
    out.test = load_idx(data.test_images, data.test_labels, test_options);
  }
  if (out.train.features() != out.test.features())
    throw DataError("train images are " + std::to_string(out.train.rows) + "x" +
                    std::to_string(out.train.cols) + " but test images are " +
                    std::to_string(out.test.rows) + "x" + std::to_string(out.test.cols));
  return out;
}

void check_model_matches_data(const RunConfig& config, const Dataset& data) {
  const auto& sizes = config.model.layer_sizes;
  const std::string where = config.file.string() + ": model.layers: ";
  if (sizes.front() != data.features())
    throw ConfigError(where + "the first size (" + std::to_string(sizes.front()) +
                      ") must equal the number of pixels per image (" +
                      std::to_string(data.features()) + " = " + std::to_string(data.rows) + "x" +
                      std::to_string(data.cols) + ")");
  if (sizes.back() != data.num_classes)
    throw ConfigError(where + "the last size (" + std::to_string(sizes.back()) +
                      ") must equal the number of classes (" + std::to_string(data.num_classes) +
                      ", data.classes)");
}

std::vector<float> initial_parameters(const RunConfig& config) {
  std::vector<float> params(parameter_count(config.model));
  if (!config.init_checkpoint.empty()) {
    load_checkpoint(config.init_checkpoint, config.model, params);
    refuse_non_finite(config.init_checkpoint, config.model, params);
  } else
    initialize_parameters(config.model, params);
  return params;
}

Evaluation evaluate(const ModelSpec& spec, std::span<const float> params, const Dataset& data) {
  constexpr int kChunk = 1024;
  Model model(spec, kChunk);
  std::copy(params.begin(), params.end(), model.parameters().begin());
  const int classes = spec.layer_sizes.back();
  Evaluation eval;
  eval.samples = data.count;
  eval.confusion.assign(classes, std::vector<std::size_t>(classes, 0));
  std::vector<float> x(std::size_t(kChunk) * data.features());
  std::vector<std::int32_t> y(kChunk);
  std::vector<std::uint32_t> order = epoch_order(data.count, 0, 0, /*shuffle=*/false);
  double loss_sum = 0;
  std::size_t correct = 0;
  for (std::size_t begin = 0; begin < data.count; begin += kChunk) {
    const int rows = int(std::min<std::size_t>(kChunk, data.count - begin));
    gather_batch(data, std::span(order).subspan(begin, rows), x.data(), y.data());
    const MatrixView probs = model.forward({x.data(), rows, data.features()}, y.data());
    loss_sum += model.last_loss_sum();
    correct += model.last_correct();
    for (int r = 0; r < rows; ++r) {
      const float* p = probs.data + std::size_t(r) * classes;
      const int predicted = int(std::max_element(p, p + classes) - p);
      if (y[r] >= 0 && y[r] < classes) eval.confusion[y[r]][predicted] += 1;
    }
  }
  if (data.count > 0) {
    eval.accuracy = double(correct) / double(data.count);
    eval.loss = loss_sum / double(data.count);
  }
  return eval;
}

void check_world_size(const StrategyInfo& info, const std::string& label, int world_size) {
  const bool too_small = world_size < info.min_world_size;
  const bool too_large = info.max_world_size != 0 && world_size > info.max_world_size;
  if (!too_small && !too_large) return;
  std::string allowed = std::to_string(info.min_world_size) + ".." +
                        (info.max_world_size == 0 ? std::string("any") : std::to_string(info.max_world_size));
  if (info.min_world_size == info.max_world_size) allowed = std::to_string(info.min_world_size);
  std::string hint = info.needs_mpi ? " (set ranks = N in its [[strategy]] entry, or start it with mpirun -np N)"
                                    : " (it runs in a single process: remove ranks, do not start it under mpirun)";
  throw ConfigError("strategy '" + label + "' (plugin " + info.name + ") runs on " + allowed +
                    " ranks, not " + std::to_string(world_size) + hint);
}

const GpuProbe& probe_gpus() {
  static const GpuProbe probe = [] {
    void* driver = dlopen("libcuda.so.1", RTLD_NOW | RTLD_LOCAL);
    if (driver == nullptr) return GpuProbe{0, "no NVIDIA driver (libcuda.so.1 not found)"};
    using Init = int (*)(unsigned);
    using Count = int (*)(int*);
    auto init = reinterpret_cast<Init>(dlsym(driver, "cuInit"));
    auto count = reinterpret_cast<Count>(dlsym(driver, "cuDeviceGetCount"));
    if (init == nullptr || count == nullptr) return GpuProbe{0, "libcuda.so.1 has no cuInit/cuDeviceGetCount"};
    if (const int rc = init(0); rc != 0)
      return GpuProbe{0, "the NVIDIA driver found no usable GPU (cuInit error " + std::to_string(rc) + ")"};
    int n = 0;
    if (count(&n) != 0 || n == 0) return GpuProbe{0, "the NVIDIA driver reports 0 GPUs"};
    return GpuProbe{n, ""};  // the driver stays loaded: the plugin will use it
  }();
  return probe;
}

void check_capabilities(const StrategyInfo& info, const std::string& label, int world_size) {
  check_world_size(info, label, world_size);
  if (info.uses_gpu && probe_gpus().count == 0)
    throw ConfigError("strategy '" + label + "' (plugin " + info.name + ") needs a CUDA GPU, but " +
                      probe_gpus().reason + "; remove it from the config or run on a GPU machine");
}

namespace {

// Every rank's phase totals to rank 0: the per-rank time split (pipeline bubbles, stragglers)
// that rank 0's own phases cannot show. A sum of one non-zero row per rank over MPI.
void gather_rank_phases(RunResult& run, WorldInfo world) {
  constexpr int kFields = 6;
  std::vector<double> table(std::size_t(world.size) * kFields, 0.0);
  const PhaseTimes& p = run.phases;
  const double mine[kFields] = {p.data, p.forward, p.backward, p.update, p.communication, p.idle};
  std::copy(mine, mine + kFields, table.begin() + std::ptrdiff_t(world.rank) * kFields);
  mpi::world()->allreduce(table.data(), table.size());
  if (world.rank != 0) return;
  for (int r = 0; r < world.size; ++r) {
    const double* row = table.data() + std::size_t(r) * kFields;
    run.rank_phases.push_back({row[0], row[1], row[2], row[3], row[4], row[5]});
  }
}

}  // namespace

RunResult run_strategy(const RunConfig& config, const StrategyEntry& entry, PluginRegistry& plugins,
                       const Datasets& data, std::span<const float> initial,
                       const EpochCallback& on_epoch, WorldInfo world,
                       const ParametersCallback& on_parameters, const RunHooks& hooks) {
  using clock = std::chrono::steady_clock;
  auto plugin = plugins.find(entry.name);
  const StrategyInfo& info = plugin->info();
  RunResult run;
  run.label = entry.label;
  run.strategy = info.name;
  run.plugin_version = info.version;
  run.plugin_file = plugin->file().string();
  run.parity = info.parity;
  run.world_size = world.size;
  run.options = validate_strategy_options(entry, info.options);
  check_capabilities(info, entry.label, world.size);

  StrategyContext context;
  context.model = &config.model;
  context.train = &config.train;
  context.train_data = &data.train;
  context.options = &run.options;
  context.world = world;
  context.initial_parameters = initial;

  auto strategy = plugin->create();
  const auto setup_start = clock::now();
  strategy->setup(context);
  run.setup_seconds = std::chrono::duration<double>(clock::now() - setup_start).count();
  trace::add_span("setup", setup_start, clock::now());
  run.device = strategy->device_description();
  if (auto parity = strategy->parity_class()) run.parity = *parity;

  std::vector<float> params(initial.size());
  const int epochs = config.train.epochs;
  std::size_t steps_done = 0;
  for (const EpochRecord& done : hooks.history) {
    run.epochs.push_back(done);
    run.train_seconds += done.seconds;
    run.phases += done.phases;
    steps_done += done.steps;
  }
  for (int epoch = hooks.first_epoch; epoch < epochs; ++epoch) {
    const HostCpuTimes host_before = host_cpu_times();
    const auto start = clock::now();
    const EpochReport report = strategy->train_epoch(epoch);
    const auto end = clock::now();
    const double host_steal = steal_share(host_before, host_cpu_times());
    const double seconds = std::chrono::duration<double>(end - start).count();
    trace::attribute_laps(report.phases);
    trace::add_span("epoch " + std::to_string(epoch + 1), start, end);

    EpochRecord record;
    record.epoch = epoch + 1;
    record.seconds = seconds;
    record.samples = report.samples;
    record.steps = report.steps;
    record.phases = report.phases;
    record.host_steal = host_steal;
    if (report.samples > 0) {
      record.loss = report.loss_sum / double(report.samples);
      record.train_accuracy = double(report.correct) / double(report.samples);
    }
    record.samples_per_second = seconds > 0 ? double(report.samples) / seconds : 0;
    run.train_seconds += seconds;
    run.phases += report.phases;
    record.elapsed_seconds = run.train_seconds;
    const bool last = epoch + 1 == epochs;

    // Every epoch, not only when evaluating: divergence must stop the run at the epoch it
    // happened. Every rank takes part (gathering may be collective); only rank 0 has them all.
    const DivergenceSite site{entry.label, epoch + 1, steps_done + 1, steps_done + report.steps,
                              record.loss, config.train.sgd.lr};
    steps_done += report.steps;
    if (!std::isfinite(record.loss)) check_divergence(site, config.model, {});
    strategy->get_parameters(params);
    if (world.rank != 0) {
      run.epochs.push_back(record);
      continue;
    }
    check_divergence(site, config.model, params);
    if (last || (config.eval_every > 0 && (epoch + 1) % config.eval_every == 0)) {
      const auto eval_start = clock::now();
      const Evaluation eval = evaluate(config.model, params, data.test);
      trace::add_span("evaluate", eval_start, clock::now());
      record.test_accuracy = eval.accuracy;
      if (on_parameters) on_parameters(record.epoch, params);
      if (last) run.final_test = eval;
    }
    run.epochs.push_back(record);
    if (on_epoch) on_epoch(run, record);
    if (hooks.after_epoch) hooks.after_epoch(run, record, params);
  }
  std::size_t samples = 0;
  for (auto& e : run.epochs) samples += e.samples;
  run.samples_per_second = run.train_seconds > 0 ? double(samples) / run.train_seconds : 0;
  run.final_parameters = std::move(params);
  if (hooks.first_epoch >= epochs) strategy->get_parameters(run.final_parameters);
  if (world.size > 1) gather_rank_phases(run, world);
  return run;
}

std::string format_epoch_line(const RunResult& run, const EpochRecord& r, int epochs) {
  char test[32] = "     -";
  if (!std::isnan(r.test_accuracy)) std::snprintf(test, sizeof test, "%6.2f%%", 100 * r.test_accuracy);
  char line[256];
  std::snprintf(line, sizeof line,
                "[%s] epoch %*d/%d  loss %.4f  train %6.2f%%  test %s  %10.0f samples/s  %7.3f s",
                run.label.c_str(), int(std::to_string(epochs).size()), r.epoch, epochs, r.loss,
                100 * r.train_accuracy, test, r.samples_per_second, r.seconds);
  return line;
}

HostCpuTimes parse_proc_stat(const std::string& text) {
  std::istringstream in(text);
  std::string label;
  HostCpuTimes t;
  double user = 0, nice = 0, system = 0, idle = 0, iowait = 0, irq = 0, softirq = 0, steal = 0;
  if (!(in >> label) || label != "cpu") return t;
  if (!(in >> user >> nice >> system >> idle >> iowait >> irq >> softirq)) return t;
  in >> steal;  // since Linux 2.6.11; absent: 0
  t.known = true;
  t.ran = user + nice + system + irq + softirq;
  t.steal = in ? steal : 0;
  return t;
}

HostCpuTimes host_cpu_times() {
  std::ifstream in("/proc/stat");
  if (!in) return {};
  std::string first;
  std::getline(in, first);
  return parse_proc_stat(first);
}

double steal_share(const HostCpuTimes& before, const HostCpuTimes& after) {
  if (!before.known || !after.known) return -1;
  const double ran = after.ran - before.ran, steal = after.steal - before.steal;
  if (ran + steal <= 0 || ran < 0 || steal < 0) return -1;
  return steal / (ran + steal);
}

}  // namespace nnpar
