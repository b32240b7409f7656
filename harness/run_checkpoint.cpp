#include "run_checkpoint.hpp"

#include <csignal>
#include <cstdio>
#include <cstdlib>
#include <fstream>
#include <sstream>

#include <nlohmann/json.hpp>

#include "divergence.hpp"
#include "nnpar/safetensors.hpp"
#include "results.hpp"

namespace nnpar {
namespace fs = std::filesystem;

namespace {

constexpr const char* kStateFile = "state.json";
constexpr const char* kConfigFile = "config.toml";
constexpr const char* kFormat = "nnpar-run-checkpoint";
constexpr int kFormatVersion = 1;

[[noreturn]] void fail(const fs::path& where, const std::string& problem) {
  throw CheckpointError("run directory " + where.string() + ": " + problem);
}

std::string weights_name(int epoch) {
  char name[64];
  std::snprintf(name, sizeof name, "weights-epoch-%04d.safetensors", epoch);
  return name;
}

// Test hook for the kill-and-resume tests: SIGKILL ourselves right after committing the
// checkpoint of this epoch, exactly as `kill -9` at that moment would.
void maybe_inject_kill(int epoch) {
  const char* value = std::getenv("NNPAR_FAULT_KILL_AFTER_CHECKPOINT");
  if (value != nullptr && std::atoi(value) == epoch) std::raise(SIGKILL);
}

// 0.9, not std::to_string's 0.900000.
std::string toml_number(double v) {
  char text[32];
  std::snprintf(text, sizeof text, "%g", v);
  return text;
}

}  // namespace

void check_checkpointing_allowed(const RunConfig& config, const std::string& what) {
  if (config.train.sgd.momentum != 0.0f)
    throw ConfigError(what + ": train.momentum is " + toml_number(config.train.sgd.momentum) +
                      ", but a checkpoint holds only the weights, not the momentum velocity, so a "
                      "resumed run would not continue the same training; use train.momentum = 0 "
                      "or train without checkpoints");
}

void check_run_directory_free(const fs::path& dir) {
  std::error_code ec;
  if (!dir.empty() && fs::exists(dir / kStateFile, ec))
    throw ConfigError("--checkpoint-dir " + dir.string() + " already holds a run; continue it with --resume " +
                      dir.string() + " or choose another directory");
}

SavedRun read_saved_run(const fs::path& dir, const std::vector<std::string>& overrides) {
  std::error_code ec;
  if (!fs::is_directory(dir, ec)) fail(dir, "no such directory");
  const fs::path state_file = dir / kStateFile;
  if (!fs::exists(state_file, ec))
    fail(dir, "no " + std::string(kStateFile) +
                  ": no checkpoint was committed yet (the run stopped before its first checkpoint) "
                  "or this is not a run directory of nnpar train --checkpoint-every");
  nlohmann::json state;
  try {
    std::ifstream in(state_file);
    state = nlohmann::json::parse(in);
  } catch (const nlohmann::json::exception& e) {
    fail(state_file, std::string("not valid JSON: ") + e.what());
  }
  SavedRun saved;
  saved.dir = dir;
  try {
    if (state.value("format", "") != kFormat) fail(state_file, "not an nnpar run checkpoint (no \"format\": \"" + std::string(kFormat) + "\")");
    if (state.value("version", 0) != kFormatVersion)
      fail(state_file, "format version " + state.value("version", nlohmann::json()).dump() +
                           " is not the supported " + std::to_string(kFormatVersion));
    saved.strategy_label = state.at("strategy_label").get<std::string>();
    saved.epochs_done = state.at("epochs_done").get<int>();
    saved.checkpoint_every = state.at("checkpoint_every").get<int>();
    saved.plugin_paths = state.value("plugin_paths", std::vector<std::string>{});
    saved.save_checkpoint = state.value("save_checkpoint", std::string());
    saved.weights_file = dir / state.at("weights").get<std::string>();
    saved.history = run_from_json(state.at("run")).epochs;
  } catch (const nlohmann::json::exception& e) {
    fail(state_file, std::string("missing or malformed field: ") + e.what());
  }
  if (saved.epochs_done < 1 || std::size_t(saved.epochs_done) != saved.history.size())
    fail(state_file, "epochs_done is " + std::to_string(saved.epochs_done) + " but the history has " +
                         std::to_string(saved.history.size()) + " epochs");
  for (std::size_t i = 0; i < saved.history.size(); ++i)
    if (saved.history[i].epoch != int(i) + 1)
      fail(state_file, "the history's epoch " + std::to_string(i + 1) + " is numbered " +
                           std::to_string(saved.history[i].epoch));
  if (!fs::exists(saved.weights_file, ec)) fail(dir, "the weights file " + saved.weights_file.filename().string() + " named in state.json is missing");
  saved.config = load_config(dir / kConfigFile, overrides);
  if (saved.epochs_done >= saved.config.train.epochs)
    fail(dir, "the run already finished: " + std::to_string(saved.epochs_done) + " of " +
                  std::to_string(saved.config.train.epochs) +
                  " epochs done (add --set train.epochs=N to train further)");
  return saved;
}

std::vector<float> saved_weights(const SavedRun& saved) {
  std::vector<float> params(parameter_count(saved.config.model));
  load_checkpoint(saved.weights_file, saved.config.model, params);
  refuse_non_finite(saved.weights_file, saved.config.model, params);
  return params;
}

RunCheckpointer::RunCheckpointer(fs::path dir, std::string label, int every,
                                 std::vector<std::string> plugin_paths, fs::path save_checkpoint,
                                 std::string command_line)
    : dir_(std::move(dir)), label_(std::move(label)), every_(every), plugin_paths_(std::move(plugin_paths)),
      save_checkpoint_(std::move(save_checkpoint)), command_line_(std::move(command_line)) {}

RunCheckpointer RunCheckpointer::create(const RunConfig& config, const std::string& strategy_label,
                                        const fs::path& dir, int every, std::vector<std::string> plugin_paths,
                                        fs::path save_checkpoint, std::string command_line) {
  if (every < 1) throw ConfigError("--checkpoint-every must be >= 1 epoch, found " + std::to_string(every));
  std::error_code ec;
  fs::path chosen = dir;
  if (chosen.empty()) {
    fs::create_directories(config.output.dir, ec);
    if (ec) throw std::runtime_error("cannot create '" + config.output.dir.string() + "': " + ec.message());
    const std::string stem = timestamp_for_files() + "-" + file_name_part(strategy_label) + "-run";
    // create_directory reports whether it made the folder: a taken name moves on to -2, -3...
    for (int attempt = 1;; ++attempt) {
      chosen = config.output.dir / (attempt == 1 ? stem : stem + "-" + std::to_string(attempt));
      if (fs::create_directory(chosen, ec)) break;
      if (ec) throw std::runtime_error("cannot create run directory '" + chosen.string() + "': " + ec.message());
      if (attempt > 10000) throw std::runtime_error("no free run directory name for '" + stem + "'");
    }
  } else {
    check_run_directory_free(chosen);
    fs::create_directories(chosen, ec);
    if (ec) throw std::runtime_error("cannot create run directory '" + chosen.string() + "': " + ec.message());
  }
  if (!save_checkpoint.empty()) save_checkpoint = fs::absolute(save_checkpoint);
  for (auto& p : plugin_paths) p = fs::absolute(p).string();  // the resume may start elsewhere
  RunCheckpointer out(chosen, strategy_label, every, std::move(plugin_paths), std::move(save_checkpoint),
                      std::move(command_line));
  try {
    out.write_config(config);
  } catch (...) {
    fs::remove(chosen, ec);  // only if still empty: never anything a user put there
    throw;
  }
  return out;
}

RunCheckpointer RunCheckpointer::resume(const SavedRun& saved, int every, std::string command_line) {
  RunCheckpointer out(saved.dir, saved.strategy_label, every > 0 ? every : saved.checkpoint_every,
                      saved.plugin_paths, saved.save_checkpoint, std::move(command_line));
  out.write_config(saved.config);
  return out;
}

void RunCheckpointer::write_config(const RunConfig& config) const {
  std::ostringstream text;
  text << "# The resolved config of an nnpar run (written by nnpar train --checkpoint-every).\n"
       << config.resolved << "\n";
  write_file_atomic(dir_ / kConfigFile, text.str());
}

void RunCheckpointer::after_epoch(const RunConfig& config, const RunResult& run, const EpochRecord& record,
                                  std::span<const float> params) {
  if (record.epoch % every_ == 0 || record.epoch == config.train.epochs) commit(config, run, params);
}

void RunCheckpointer::commit(const RunConfig& config, const RunResult& run, std::span<const float> params) {
  const int epoch = run.epochs.back().epoch;
  const std::string weights = weights_name(epoch);
  save_checkpoint(dir_ / weights, config.model, params,
                  {{"strategy", label_}, {"epoch", std::to_string(epoch)}});
  nlohmann::json state;
  state["format"] = kFormat;
  state["version"] = kFormatVersion;
  state["strategy_label"] = label_;
  state["epochs_done"] = epoch;
  state["epochs_total"] = config.train.epochs;
  state["checkpoint_every"] = every_;
  state["weights"] = weights;
  state["plugin_paths"] = plugin_paths_;
  if (!save_checkpoint_.empty()) state["save_checkpoint"] = save_checkpoint_.string();
  state["run"] = run_to_json(config, run, nullptr, command_line_);
  write_file_atomic(dir_ / kStateFile, state.dump(2) + "\n");
  // Only now is the older weights file unreferenced; a kill before this line leaves it behind,
  // and the next commit removes it.
  std::error_code ec;
  for (const auto& entry : fs::directory_iterator(dir_, ec)) {
    const std::string name = entry.path().filename().string();
    if (name != weights && name.starts_with("weights-epoch-") && name.ends_with(".safetensors"))
      fs::remove(entry.path(), ec);
  }
  maybe_inject_kill(epoch);
}

}  // namespace nnpar
