// Resumable training: `nnpar train --checkpoint-every N` keeps a run directory up to date,
// `nnpar train --resume DIR` continues from it.
//
// A run directory holds
//   config.toml                     the resolved config the run uses (every default filled in)
//   weights-epoch-<E>.safetensors   the weights after epoch E (PyTorch names, like --save-checkpoint)
//   state.json                      the epoch reached, the weights file, the strategy label and
//                                   the per-epoch history so far (results-JSON format)
// Every file is written to a temporary name, fsync'd and renamed; state.json is written last
// and is the commit point: a kill at any moment leaves the previous complete checkpoint.
//
// Resuming starts a new strategy instance at epoch E+1 from the saved weights. The data order
// is a function of (train.seed, epoch) and nothing else, so for strategies whose state is just
// the weights (SGD without momentum) the result is bit-identical to an uninterrupted run.
// Momentum's velocity is not saved, so momentum != 0 is refused.
#pragma once
#include <filesystem>
#include <optional>
#include <span>
#include <string>
#include <vector>

#include "config.hpp"
#include "runner.hpp"

namespace nnpar {

// Refuses checkpointing settings that could not resume faithfully (momentum), and a
// non-positive interval. `what` names the option in the message ("--checkpoint-every").
void check_checkpointing_allowed(const RunConfig& config, const std::string& what);

// Refuses a --checkpoint-dir that already holds a run (ConfigError naming it).
void check_run_directory_free(const std::filesystem::path& dir);

// A run directory read back for --resume.
struct SavedRun {
  std::filesystem::path dir;
  RunConfig config;                 // config.toml with the --set overrides of the resume applied
  std::string strategy_label;
  int epochs_done = 0;
  int checkpoint_every = 0;
  std::vector<std::string> plugin_paths;  // --plugin-path of the original command
  std::filesystem::path save_checkpoint;  // --save-checkpoint of the original command (absolute)
  std::vector<EpochRecord> history;
  std::filesystem::path weights_file;
};
// CheckpointError naming the directory and the file on anything missing or inconsistent.
SavedRun read_saved_run(const std::filesystem::path& dir, const std::vector<std::string>& overrides);
// The saved weights, checked against config.model.
std::vector<float> saved_weights(const SavedRun& saved);

// Writes checkpoints of one run into its directory.
class RunCheckpointer {
 public:
  // A fresh directory: `dir` when given (refused if it already holds a run), else
  // <output.dir>/<time>-<label>-run (or -2, -3... when taken).
  // `plugin_paths` and `save_checkpoint` are the command line's, kept for the resume.
  static RunCheckpointer create(const RunConfig& config, const std::string& strategy_label,
                                const std::filesystem::path& dir, int every,
                                std::vector<std::string> plugin_paths, std::filesystem::path save_checkpoint,
                                std::string command_line);
  // The directory of a resumed run; config.toml is rewritten with the config now in use.
  static RunCheckpointer resume(const SavedRun& saved, int every, std::string command_line);

  const std::filesystem::path& dir() const { return dir_; }
  int every() const { return every_; }

  // After epoch `record.epoch`: writes a checkpoint when the epoch is a multiple of `every`
  // or the last one.
  void after_epoch(const RunConfig& config, const RunResult& run, const EpochRecord& record,
                   std::span<const float> params);
  // Unconditionally commits the state after `run.epochs.back()`.
  void commit(const RunConfig& config, const RunResult& run, std::span<const float> params);

 private:
  RunCheckpointer(std::filesystem::path dir, std::string label, int every,
                  std::vector<std::string> plugin_paths, std::filesystem::path save_checkpoint,
                  std::string command_line);
  void write_config(const RunConfig& config) const;

  std::filesystem::path dir_;
  std::string label_;
  int every_ = 0;
  std::vector<std::string> plugin_paths_;
  std::filesystem::path save_checkpoint_;
  std::string command_line_;
};

}  // namespace nnpar
