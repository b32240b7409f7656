// Drives one strategy through a training run: the only code that calls a Strategy.
#pragma once
#include <array>
#include <functional>
#include <limits>
#include <memory>
#include <string>
#include <vector>

#include "config.hpp"
#include "plugin_loader.hpp"
#include "nnpar/data.hpp"
#include "nnpar/strategy.hpp"

namespace nnpar {

struct Datasets {
  Dataset train;
  Dataset test;
};

// Loads the train and test sets the config names; DataError names the file on failure.
Datasets load_datasets(const DataConfig& data);
// The model must read as many features as the data has and predict its classes.
void check_model_matches_data(const RunConfig& config, const Dataset& data);
// The initial parameters: [model] init_checkpoint if set, else initialize_parameters.
std::vector<float> initial_parameters(const RunConfig& config);

struct Evaluation {
  double accuracy = 0;  // fraction in [0, 1]
  double loss = 0;      // mean cross-entropy
  std::size_t samples = 0;
  std::vector<std::vector<std::size_t>> confusion;  // [true][predicted]
};
Evaluation evaluate(const ModelSpec& spec, std::span<const float> params, const Dataset& data);

struct EpochRecord {
  int epoch = 0;
  double loss = 0;            // mean training loss over the epoch
  double train_accuracy = 0;  // during training (running)
  double test_accuracy = std::numeric_limits<double>::quiet_NaN();  // NaN when not evaluated
  double seconds = 0;         // wall time of train_epoch
  double samples_per_second = 0;
  std::size_t samples = 0, steps = 0;
  PhaseTimes phases;
  double elapsed_seconds = 0; // training time since the start of the run, end of this epoch
  // The share of the host's CPU time that its hypervisor gave to others while this epoch ran
  // ("steal" in /proc/stat, over every core of rank 0's machine); -1 where not known.
  double host_steal = -1;
};

// The machine's CPU time so far, summed over its cores (the "cpu" line of /proc/stat, in clock
// ticks): what ran (user, nice, system, irq, softirq) and what the hypervisor took (steal).
struct HostCpuTimes {
  bool known = false;
  double ran = 0, steal = 0;
};
HostCpuTimes parse_proc_stat(const std::string& text);
HostCpuTimes host_cpu_times();  // /proc/stat now; not known elsewhere than Linux
// steal / (ran + steal) between two samples: of the CPU time the machine's work wanted, the
// share the hypervisor gave to other guests. -1 where either sample is unknown or nothing ran.
double steal_share(const HostCpuTimes& before, const HostCpuTimes& after);
// From this share on, compare says so under its table; plan --compare-results counts the runs below it.
inline constexpr double kNotableHostSteal = 0.02;

struct RunResult {
  std::string label, strategy, plugin_version, plugin_file, device;
  ParityClass parity = ParityClass::exact;
  int world_size = 1;         // ranks it ran on
  StrategyOptions options;
  std::vector<EpochRecord> epochs;
  std::vector<float> final_parameters;
  double train_seconds = 0;   // sum of epoch times (evaluation excluded)
  double setup_seconds = 0;
  double samples_per_second = 0;
  Evaluation final_test;
  PhaseTimes phases;          // summed over epochs
  // Multi-rank runs: every rank's phases summed over epochs, by world rank (rank 0's result
  // only); empty for single-process runs.
  std::vector<PhaseTimes> rank_phases;
};

using EpochCallback = std::function<void(const RunResult&, const EpochRecord&)>;
// Sees the parameters of every evaluated epoch on rank 0, before on_epoch (nnpar serve
// predicts with the model as it trains).
using ParametersCallback = std::function<void(int epoch, std::span<const float> parameters)>;

// What a run continued from a checkpoint brings, and what to do with the weights after each
// epoch (checkpointing).
struct RunHooks {
  int first_epoch = 0;               // epochs already trained: the strategy starts at this one
  std::vector<EpochRecord> history;  // their records, carried into the result
  // On rank 0, after every epoch has passed the divergence check, with that epoch's weights.
  std::function<void(const RunResult&, const EpochRecord&, std::span<const float>)> after_epoch;
};

// Loads the entry's plugin, validates its options, trains config.train.epochs epochs from
// `initial`, evaluates on `data.test` every eval_every epochs and at the end. In a
// multi-rank run every rank calls this; only rank 0 evaluates and its result is complete
// (the other ranks' results carry their own timings only). After every epoch the weights are
// read back and a NaN/Inf in them or in the loss throws DivergenceError (divergence.hpp).
RunResult run_strategy(const RunConfig& config, const StrategyEntry& entry, PluginRegistry& plugins,
                       const Datasets& data, std::span<const float> initial,
                       const EpochCallback& on_epoch = {}, WorldInfo world = {},
                       const ParametersCallback& on_parameters = {}, const RunHooks& hooks = {});

// Refuses a world size outside what the plugin declares.
void check_world_size(const StrategyInfo& info, const std::string& label, int world_size);

// CUDA devices the NVIDIA driver reports (asked through the driver library, so nnpar needs no
// CUDA toolkit to build): count 0 with the reason when there is none.
struct GpuProbe {
  int count = 0;
  std::string reason;
};
const GpuProbe& probe_gpus();

// Everything the harness can check about a plugin before running it: the world size, and a
// GPU plugin on a machine without a GPU. Throws ConfigError naming the strategy.
void check_capabilities(const StrategyInfo& info, const std::string& label, int world_size);

std::string format_epoch_line(const RunResult& run, const EpochRecord& record, int epochs);

}  // namespace nnpar
