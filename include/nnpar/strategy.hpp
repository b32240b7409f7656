// The strategy plugin interface: the only thing the harness knows about parallelism.
//
// A strategy is a shared library exporting four extern "C" functions (use
// NNPAR_REGISTER_STRATEGY below rather than writing them):
//   int                 nnpar_strategy_abi_version();  // must equal kStrategyAbiVersion
//   const StrategyInfo* nnpar_strategy_info();         // name, options, capabilities
//   Strategy*           nnpar_create_strategy();
//   void                nnpar_destroy_strategy(Strategy*);
// The harness reads the ABI version first and refuses the file if it differs, before it
// touches any other symbol. See docs/plugins.md for the full contract.
#pragma once
#include <cstdint>
#include <map>
#include <optional>
#include <span>
#include <string>
#include <variant>
#include <vector>

#include "nnpar/data.hpp"
#include "nnpar/model.hpp"
#include "nnpar/timing.hpp"

namespace nnpar {

// Bump on any change to the types in this header or to the exported functions.
inline constexpr int kStrategyAbiVersion = 2;

// exact: computes the same gradient maths as serial (only float summation order may
// differ): final weights must match serial within tolerance. approximate: a different
// algorithm (e.g. local SGD): only the test accuracy must be close.
enum class ParityClass { exact, approximate };

enum class OptionType { boolean, integer, real, string };
using OptionValue = std::variant<bool, std::int64_t, double, std::string>;

// One key a strategy accepts in its [[strategy]] table. The harness validates the table
// against these specs (unknown keys, types, ranges, choices) before the plugin sees it.
struct OptionSpec {
  std::string name;
  OptionType type = OptionType::integer;
  OptionValue default_value = std::int64_t{0};
  std::string description;
  double min = -1e300, max = 1e300;   // for integer and real
  std::vector<std::string> choices;   // for string; empty = any
};

struct StrategyInfo {
  std::string name;         // what [[strategy]] name = "..." selects
  std::string version;      // the plugin's own version, free-form
  std::string description;  // one line for `nnpar list-plugins`
  ParityClass parity = ParityClass::exact;
  bool uses_gpu = false;
  bool needs_mpi = false;
  int min_world_size = 1;
  int max_world_size = 1;   // 0 = any
  std::vector<OptionSpec> options;
};

// Validated option values: every declared option is present (defaults filled in).
class StrategyOptions {
 public:
  StrategyOptions() = default;
  explicit StrategyOptions(std::map<std::string, OptionValue> values) : values_(std::move(values)) {}
  bool get_bool(const std::string& key) const { return std::get<bool>(values_.at(key)); }
  std::int64_t get_int(const std::string& key) const { return std::get<std::int64_t>(values_.at(key)); }
  double get_real(const std::string& key) const { return std::get<double>(values_.at(key)); }
  const std::string& get_string(const std::string& key) const { return std::get<std::string>(values_.at(key)); }
  const std::map<std::string, OptionValue>& values() const { return values_; }

 private:
  std::map<std::string, OptionValue> values_;
};

struct TrainSettings {
  int epochs = 1;
  int batch_size = 128;       // global batch: all workers together
  SgdSettings sgd;
  std::uint64_t seed = 1;     // sample order
  bool shuffle = true;
  bool drop_last = false;     // drop the final partial batch of an epoch
};

struct WorldInfo {
  int rank = 0;
  int size = 1;
};

// Everything a strategy gets. The pointers stay valid until the strategy is destroyed.
struct StrategyContext {
  const ModelSpec* model = nullptr;
  const TrainSettings* train = nullptr;
  const Dataset* train_data = nullptr;
  const StrategyOptions* options = nullptr;
  WorldInfo world;
  // The initial parameters in the flat layout of parameter_layout(*model); identical for
  // every strategy in a comparison.
  std::span<const float> initial_parameters;
};

struct EpochReport {
  double loss_sum = 0;     // sum of per-sample losses over the epoch (on the trained weights of each step)
  std::size_t samples = 0; // samples trained on
  std::size_t correct = 0; // correct predictions made during the forward passes
  std::size_t steps = 0;   // optimizer updates
  PhaseTimes phases;
};

class Strategy {
 public:
  virtual ~Strategy() = default;
  // Allocate, copy the data and initial parameters where they are needed. Not timed as
  // training.
  virtual void setup(const StrategyContext& context) = 0;
  // One pass over the training data in epoch_order(n, train.seed, epoch, train.shuffle),
  // cut into global batches of train.batch_size. Timed by the harness.
  virtual EpochReport train_epoch(int epoch) = 0;
  // Writes the current full parameter vector into `out` on rank 0 (other ranks: unspecified).
  virtual void get_parameters(std::span<float> out) = 0;
  // The device(s) it runs on, for results ("CPU, 1 thread", "NVIDIA H100 x2").
  virtual std::string device_description() const { return "CPU"; }
  // When the parity class depends on the options (data parallel: sync is exact, local SGD
  // approximate), the class for this configuration; nullopt = StrategyInfo::parity.
  virtual std::optional<ParityClass> parity_class() const { return std::nullopt; }
};

}  // namespace nnpar

#if defined(_WIN32)
#define NNPAR_EXPORT __declspec(dllexport)
#else
#define NNPAR_EXPORT __attribute__((visibility("default")))
#endif

// Registers CLASS (default-constructible, derived from nnpar::Strategy) with the metadata
// returned by INFO_FUNCTION (a function returning nnpar::StrategyInfo).
#define NNPAR_REGISTER_STRATEGY(CLASS, INFO_FUNCTION)                                    \
  extern "C" {                                                                            \
  NNPAR_EXPORT int nnpar_strategy_abi_version() { return ::nnpar::kStrategyAbiVersion; }  \
  NNPAR_EXPORT const ::nnpar::StrategyInfo* nnpar_strategy_info() {                       \
    static const ::nnpar::StrategyInfo registered_info = INFO_FUNCTION();                 \
    return &registered_info;                                                               \
  }                                                                                        \
  NNPAR_EXPORT ::nnpar::Strategy* nnpar_create_strategy() { return new CLASS(); }        \
  NNPAR_EXPORT void nnpar_destroy_strategy(::nnpar::Strategy* s) { delete s; }            \
  }
