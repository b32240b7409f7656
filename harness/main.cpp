// nnpar: train one MLP under interchangeable parallelism strategies and compare them.
#include <cmath>
#include <cstdio>
#include <iostream>
#include <map>
#include <optional>
#include <sstream>

#include <CLI/CLI.hpp>

#include <unistd.h>

#include <fstream>

#include "config.hpp"
#include "divergence.hpp"
#include "launcher.hpp"
#include "nnpar/comm_mpi.hpp"
#include "parity.hpp"
#include "rank_watchdog.hpp"
#include "plugin_loader.hpp"
#include "results.hpp"
#include "run_checkpoint.hpp"
#include "runner.hpp"
#include "nnpar/safetensors.hpp"

namespace {

using namespace nnpar;
namespace fs = std::filesystem;

// Exit codes, documented in README and --help.
constexpr int kExitOk = 0;
constexpr int kExitParityFailed = 1;
constexpr int kExitError = 2;

struct CommonOptions {
  std::string config;
  std::vector<std::string> overrides;
  std::vector<std::string> plugin_paths;
  bool quiet = false;
};

void add_common(CLI::App* cmd, CommonOptions& o, bool config_required = true) {
  auto* opt = cmd->add_option("CONFIG", o.config, "TOML configuration file (see docs/config.md)");
  if (config_required) opt->required();
  cmd->add_option("--set", o.overrides,
                  "override a config key, e.g. --set train.lr=0.5 or --set strategy.serial.key=v "
                  "(repeatable)")
      ->type_name("KEY=VALUE");
  cmd->add_option("--plugin-path", o.plugin_paths, "extra folder to search for plugins (repeatable)")
      ->type_name("DIR");
}

std::string command_line(int argc, char** argv) {
  std::string s;
  for (int i = 0; i < argc; ++i) s += (i ? " " : "") + std::string(argv[i]);
  return s;
}

PluginRegistry make_registry(const RunConfig* config, const std::vector<std::string>& cli_paths) {
  std::vector<fs::path> extra(cli_paths.begin(), cli_paths.end());
  if (config != nullptr) extra.insert(extra.end(), config->plugin_paths.begin(), config->plugin_paths.end());
  return PluginRegistry::standard(extra);
}

Datasets load_data_for(const RunConfig& config, bool quiet) {
  Datasets data = load_datasets(config.data);
  check_model_matches_data(config, data.train);
  if (!quiet)
    std::printf("data: %zu train / %zu test samples of %dx%d from %s\n", data.train.count,
                data.test.count, data.train.rows, data.train.cols, config.data.dir.string().c_str());
  return data;
}

fs::path checkpoint_target(const RunConfig& config, const std::string& cli_value, bool overwrite) {
  fs::path target = cli_value.empty() ? config.output.save_checkpoint : fs::path(cli_value);
  if (!target.empty() && fs::exists(target) && !overwrite)
    throw std::runtime_error("checkpoint '" + target.string() +
                             "' already exists; choose another name or pass --overwrite");
  return target;
}

const char* class_name(ParityClass c) { return c == ParityClass::exact ? "exact" : "approx"; }

const StrategyEntry& select_entry(const RunConfig& config, const std::string& label, StrategyEntry& adhoc) {
  if (label.empty()) return config.strategies.front();
  for (auto& s : config.strategies)
    if (s.label == label) return s;
  // Not a configured label: a plugin name used with default options.
  adhoc.name = adhoc.label = label;
  adhoc.table = std::make_shared<toml::table>();
  adhoc.where = "--strategy " + label;
  return adhoc;
}

// The arguments that make a child `nnpar train` run exactly this config and entry.
std::vector<std::string> child_train_args(const CommonOptions& o, const std::string& label) {
  std::vector<std::string> args{"train", o.config, "--strategy", label};
  for (auto& s : o.overrides) args.insert(args.end(), {"--set", s});
  for (auto& p : o.plugin_paths) args.insert(args.end(), {"--plugin-path", p});
  if (o.quiet) args.push_back("--quiet");
  return args;
}

struct TrainFlags {
  std::string strategy, save_checkpoint, run_output;
  bool overwrite = false;
  int checkpoint_every = 0;          // epochs; 0 = no run directory
  std::string checkpoint_dir, resume;
};

int cmd_train(const CommonOptions& o, const TrainFlags& flags, int argc, char** argv,
              const std::string& argv_line) {
  std::optional<SavedRun> saved;
  if (!flags.resume.empty()) {
    if (!o.config.empty())
      throw ConfigError("--resume " + flags.resume + " takes the config saved in that directory; do not pass CONFIG (" +
                        o.config + ")");
    if (!flags.strategy.empty()) throw ConfigError("--resume continues the saved strategy; do not pass --strategy");
    saved = read_saved_run(flags.resume, o.overrides);
  } else if (o.config.empty()) {
    throw ConfigError("train: CONFIG is required (or --resume DIR)");
  }
  const RunConfig config = saved ? saved->config : load_config(o.config, o.overrides);
  std::vector<std::string> plugin_paths = o.plugin_paths;
  if (saved) plugin_paths.insert(plugin_paths.end(), saved->plugin_paths.begin(), saved->plugin_paths.end());
  if (flags.checkpoint_every != 0 || saved) check_checkpointing_allowed(config, saved ? "--resume" : "--checkpoint-every");
  StrategyEntry adhoc;
  const StrategyEntry& entry = select_entry(config, saved ? saved->strategy_label : flags.strategy, adhoc);
  PluginRegistry plugins = make_registry(&config, plugin_paths);
  const StrategyInfo& info = plugins.find(entry.name)->info();  // a bad plugin fails before data loads

  // A resumed run writes the final checkpoint its first command asked for.
  const std::string save_to = saved && flags.save_checkpoint.empty() ? saved->save_checkpoint.string() : flags.save_checkpoint;

  WorldInfo world;
  std::unique_ptr<RankWatchdog> watchdog;
  if (mpi::launched_by_mpi()) {
    mpi::initialize();
    world = {mpi::world_rank(), mpi::world_size()};
    if (world.size > 1) {
      watchdog = std::make_unique<RankWatchdog>(world.rank, world.size, config.mpi.rank_timeout, mpi_job_key());
      start_injected_rank_fault(world.rank);
    }
  } else if (entry.ranks > 1 || info.needs_mpi) {
    // Start ourselves under the MPI launcher with the entry's rank count.
    check_capabilities(info, entry.label, entry.ranks);
    validate_strategy_options(entry, info.options);
    checkpoint_target(config, save_to, flags.overwrite);
    if (flags.checkpoint_every != 0) check_run_directory_free(flags.checkpoint_dir);
    std::vector<std::string> args(argv + 1, argv + argc);
    const auto command = mpi_command(config.mpi, entry.ranks, args);
    if (!o.quiet) std::printf("starting %d ranks: %s\n", entry.ranks, join_command(command).c_str());
    std::fflush(stdout);
    const int status = run_and_wait(command);
    if (status == 0) return kExitOk;
    // The ranks' and the launcher's own messages (which rank failed, how) are above.
    throw std::runtime_error("strategy '" + entry.label + "' on " + std::to_string(entry.ranks) +
                             " ranks failed: " + config.mpi.launcher + " ended with " +
                             describe_exit_status(status) + "; the messages above say which rank and why");
  }
  const bool lead = world.rank == 0;
  const bool quiet = o.quiet || !lead;
  const fs::path checkpoint =
      flags.run_output.empty() ? checkpoint_target(config, save_to, flags.overwrite) : fs::path();
  const Datasets data = load_data_for(config, quiet);
  const std::vector<float> initial = saved ? saved_weights(*saved) : initial_parameters(config);

  // Only rank 0 writes checkpoints: it alone holds the full weights.
  RunHooks hooks;
  std::optional<RunCheckpointer> checkpointer;
  if (saved) {
    hooks.first_epoch = saved->epochs_done;
    hooks.history = saved->history;
    if (lead) checkpointer = RunCheckpointer::resume(*saved, flags.checkpoint_every, argv_line);
    if (!quiet)
      std::printf("resuming %s after epoch %d of %d\n", saved->dir.string().c_str(), saved->epochs_done,
                  config.train.epochs);
  } else if (flags.checkpoint_every != 0 && lead && flags.run_output.empty()) {
    checkpointer = RunCheckpointer::create(config, entry.label, flags.checkpoint_dir, flags.checkpoint_every,
                                           o.plugin_paths, checkpoint, argv_line);
  }
  if (checkpointer) {
    if (!quiet)
      std::printf("checkpoints: %s (every %d epochs; continue with nnpar train --resume %s)\n",
                  checkpointer->dir().string().c_str(), checkpointer->every(), checkpointer->dir().string().c_str());
    hooks.after_epoch = [&](const RunResult& r, const EpochRecord& e, std::span<const float> params) {
      checkpointer->after_epoch(config, r, e, params);
    };
  }

  const RunResult run = run_strategy(config, entry, plugins, data, initial,
                                     [&](const RunResult& r, const EpochRecord& e) {
                                       if (!quiet)
                                         std::printf("%s\n", format_epoch_line(r, e, config.train.epochs).c_str());
                                       std::fflush(stdout);
                                     },
                                     world, hooks);
  if (!lead) return kExitOk;
  std::printf("[%s] final test accuracy %.2f%%  (%zu samples), training %.3f s, %.0f samples/s on %s%s\n",
              run.label.c_str(), 100 * run.final_test.accuracy, run.final_test.samples,
              run.train_seconds, run.samples_per_second, run.device.c_str(),
              world.size > 1 ? (", " + std::to_string(world.size) + " ranks").c_str() : "");
  const auto json = run_to_json(config, run, nullptr, argv_line);
  if (!flags.run_output.empty()) {
    // Called by `nnpar compare` in a child process: hand the run back, write nothing else.
    write_file_atomic(fs::path(flags.run_output) / "run.json", json.dump(2) + "\n");
    save_checkpoint(fs::path(flags.run_output) / "final.safetensors", config.model, run.final_parameters);
    return kExitOk;
  }
  if (config.output.write_results) {
    const fs::path file = write_new_file(config.output.dir, timestamp_for_files() + "-" + file_name_part(run.label),
                                         ".json", json.dump(2) + "\n");
    std::printf("results: %s\n", file.string().c_str());
  }
  if (!checkpoint.empty()) {
    save_checkpoint(checkpoint, config.model, run.final_parameters,
                    {{"strategy", run.label}, {"epochs", std::to_string(config.train.epochs)}});
    std::printf("checkpoint: %s\n", checkpoint.string().c_str());
  }
  return kExitOk;
}

// Runs one entry in child processes under the MPI launcher and reads its result back.
RunResult run_in_child(const CommonOptions& o, const RunConfig& config, const StrategyEntry& entry) {
  const fs::path dir = fs::temp_directory_path() /
                       ("nnpar-run-" + std::to_string(::getpid()) + "-" + file_name_part(entry.label));
  fs::remove_all(dir);
  fs::create_directories(dir);
  std::vector<std::string> args = child_train_args(o, entry.label);
  args.insert(args.end(), {"--run-output", dir.string()});
  const auto command = mpi_command(config.mpi, entry.ranks, args);
  if (!o.quiet) std::printf("[%s] starting %d ranks: %s\n", entry.label.c_str(), entry.ranks, join_command(command).c_str());
  std::fflush(stdout);
  const int status = run_and_wait(command);
  if (status != 0 || !fs::exists(dir / "run.json")) {
    fs::remove_all(dir);
    throw std::runtime_error("strategy '" + entry.label + "' on " + std::to_string(entry.ranks) +
                             " ranks failed (" + config.mpi.launcher + " ended with " + describe_exit_status(status) +
                             "); its messages are above");
  }
  std::ifstream in(dir / "run.json");
  RunResult run = run_from_json(nlohmann::json::parse(in));
  run.final_parameters.resize(parameter_count(config.model));
  load_checkpoint(dir / "final.safetensors", config.model, run.final_parameters);
  fs::remove_all(dir);
  return run;
}

int cmd_compare(const CommonOptions& o, const std::vector<std::string>& only, const std::string& argv_line) {
  const RunConfig config = load_config(o.config, o.overrides);
  std::vector<StrategyEntry> entries;
  for (auto& s : config.strategies)
    if (only.empty() || std::find(only.begin(), only.end(), s.label) != only.end()) entries.push_back(s);
  for (auto& label : only)
    if (std::none_of(entries.begin(), entries.end(), [&](auto& e) { return e.label == label; }))
      throw ConfigError("--only " + label + ": no [[strategy]] with that label in " + config.file.string());
  // The reference runs first, added with default options if the config does not list it.
  auto ref = std::find_if(entries.begin(), entries.end(),
                          [&](auto& e) { return e.label == config.parity.reference; });
  if (ref == entries.end()) {
    StrategyEntry added;
    added.name = added.label = config.parity.reference;
    added.table = std::make_shared<toml::table>();
    added.where = "parity.reference";
    entries.insert(entries.begin(), added);
    std::printf("note: adding the parity reference '%s' (not listed in the config)\n", added.label.c_str());
  } else {
    std::rotate(entries.begin(), ref, ref + 1);
  }

  PluginRegistry plugins = make_registry(&config, o.plugin_paths);
  for (auto& e : entries) {  // every plugin must load, and accept its rank count, before any training
    const StrategyInfo& info = plugins.find(e.name)->info();
    check_capabilities(info, e.label, e.ranks);
    validate_strategy_options(e, info.options);
  }
  const Datasets data = load_data_for(config, o.quiet);
  const std::vector<float> initial = initial_parameters(config);

  std::vector<RunResult> runs;
  for (auto& entry : entries) {
    if (entry.ranks > 1 || plugins.find(entry.name)->info().needs_mpi) {
      runs.push_back(run_in_child(o, config, entry));
      continue;
    }
    runs.push_back(run_strategy(config, entry, plugins, data, initial,
                                [&](const RunResult& r, const EpochRecord& e) {
                                  if (!o.quiet)
                                    std::printf("%s\n", format_epoch_line(r, e, config.train.epochs).c_str());
                                  std::fflush(stdout);
                                }));
  }
  std::vector<ParityReport> parity;
  for (auto& run : runs) parity.push_back(check_parity(run, runs.front(), config.parity));

  const std::string stamp = timestamp_for_files();
  std::vector<SummaryRow> rows;
  for (std::size_t i = 0; i < runs.size(); ++i) {
    SummaryRow row{&runs[i], &parity[i], 0, {}};
    row.speedup = runs[i].train_seconds > 0 ? runs.front().train_seconds / runs[i].train_seconds : 0;
    if (config.output.write_results)
      row.results_file = write_new_file(config.output.dir, stamp + "-" + file_name_part(runs[i].label), ".json",
                                        run_to_json(config, runs[i], &parity[i], argv_line).dump(2) + "\n");
    rows.push_back(row);
  }

  std::printf("\n%-16s %-10s %-6s %9s %11s %8s %8s %10s %9s  %s\n", "strategy", "plugin", "class",
              "time s", "samples/s", "speedup", "test acc", "max|dw|", "rel", "parity");
  for (std::size_t i = 0; i < runs.size(); ++i) {
    const RunResult& r = runs[i];
    const ParityReport& p = parity[i];
    char dw[32] = "-", rel[32] = "-";
    if (p.weights_checked) {
      std::snprintf(dw, sizeof dw, "%.2e", p.max_abs_diff);
      std::snprintf(rel, sizeof rel, "%.2e", p.max_rel_diff);
    }
    std::printf("%-16s %-10s %-6s %9.3f %11.0f %7.2fx %7.2f%% %10s %9s  %s\n", r.label.c_str(),
                r.strategy.c_str(), class_name(r.parity), r.train_seconds, r.samples_per_second,
                rows[i].speedup, 100 * r.final_test.accuracy, dw, rel, p.verdict.c_str());
  }
  std::printf("reference: %s on %s; exact class: weights within atol %.0e + rtol %.0e*|ref| and "
              "accuracy within %.2f pp; approximate: accuracy at most %.2f pp below\n",
              runs.front().label.c_str(), runs.front().device.c_str(), config.parity.weight_atol,
              config.parity.weight_rtol, config.parity.accuracy_pp, config.parity.approx_accuracy_pp);
  bool all_pass = true;
  for (std::size_t i = 0; i < runs.size(); ++i)
    if (!parity[i].pass) {
      all_pass = false;
      std::printf("PARITY FAIL %s: %s\n", runs[i].label.c_str(), parity[i].reason.c_str());
    }
  if (config.output.write_results) {
    const fs::path csv = write_new_file(config.output.dir, stamp + "-compare", ".csv", summary_csv(rows));
    std::printf("results: %s (and one JSON per strategy beside it)\n", csv.string().c_str());
  }
  return all_pass ? kExitOk : kExitParityFailed;
}

int cmd_list_plugins(const CommonOptions& o) {
  std::unique_ptr<RunConfig> config;
  if (!o.config.empty()) config = std::make_unique<RunConfig>(load_config(o.config, o.overrides));
  PluginRegistry plugins = make_registry(config.get(), o.plugin_paths);
  std::printf("search path:\n");
  for (auto& d : plugins.search_path()) std::printf("  %s\n", d.string().c_str());
  const auto listings = plugins.list();
  if (listings.empty()) std::printf("no plugins found\n");
  for (auto& l : listings) {
    if (!l.plugin) {
      std::printf("\n  (broken) %s\n    %s\n", l.file.string().c_str(), l.error.c_str());
      continue;
    }
    const StrategyInfo& info = l.plugin->info();
    std::string world = info.min_world_size == info.max_world_size
                            ? std::to_string(info.min_world_size)
                            : std::to_string(info.min_world_size) + ".." +
                                  (info.max_world_size == 0 ? std::string("any") : std::to_string(info.max_world_size));
    std::printf("\n%s %s  [%s, %s%s, ranks %s]%s\n  %s\n  file: %s\n", info.name.c_str(),
                info.version.c_str(), class_name(info.parity), info.uses_gpu ? "GPU" : "CPU",
                info.needs_mpi ? ", MPI" : "", world.c_str(),
                l.error.empty() ? "" : ("  (" + l.error + ")").c_str(), info.description.c_str(),
                l.file.string().c_str());
    for (auto& opt : info.options) {
      std::string def = std::visit(
          [](const auto& v) {
            std::ostringstream s;
            if constexpr (std::is_same_v<std::decay_t<decltype(v)>, bool>) s << (v ? "true" : "false");
            else if constexpr (std::is_same_v<std::decay_t<decltype(v)>, std::string>) s << '"' << v << '"';
            else s << v;
            return s.str();
          },
          opt.default_value);
      std::printf("    %-18s = %-10s %s\n", opt.name.c_str(), def.c_str(), opt.description.c_str());
    }
  }
  return kExitOk;
}

int cmd_eval(const CommonOptions& o, const std::string& checkpoint) {
  RunConfig config;
  if (!o.config.empty()) {
    config = load_config(o.config, o.overrides);
  } else {
    // No config: the default data settings, and the model shape the checkpoint implies.
    config = load_config_text("[[strategy]]\nname = \"serial\"\n", "(default settings)",
                              fs::current_path(), o.overrides);
  }
  if (o.config.empty()) config.model.layer_sizes = checkpoint_layer_sizes(checkpoint);
  std::vector<float> params(parameter_count(config.model));
  load_checkpoint(checkpoint, config.model, params);
  refuse_non_finite(checkpoint, config.model, params);
  DataOptions test_options = config.data.options;
  test_options.limit = config.data.test_limit;
  const Dataset test = config.data.format == "csv"
                           ? load_csv(config.data.test_csv, test_options)
                           : load_idx(config.data.test_images, config.data.test_labels, test_options);
  check_model_matches_data(config, test);
  const Evaluation eval = evaluate(config.model, params, test);
  std::printf("checkpoint: %s\ntest set: %zu samples\naccuracy: %.2f%%\nmean loss: %.4f\n\n",
              checkpoint.c_str(), eval.samples, 100 * eval.accuracy, eval.loss);
  std::printf("per letter (accuracy, most frequent confusion):\n");
  const int classes = int(eval.confusion.size());
  for (int t = 0; t < classes; ++t) {
    std::size_t total = 0, best_wrong = 0;
    int wrong_as = -1;
    for (int p = 0; p < classes; ++p) {
      total += eval.confusion[t][p];
      if (p != t && eval.confusion[t][p] > best_wrong) best_wrong = eval.confusion[t][p], wrong_as = p;
    }
    auto name = [&](int c) { return classes == 26 ? std::string(1, char('a' + c)) : std::to_string(c); };
    const double acc = total ? 100.0 * eval.confusion[t][t] / total : 0;
    if (wrong_as >= 0)
      std::printf("  %-3s %6.2f%%  (%zu of %zu; often read as %s: %.1f%%)\n", name(t).c_str(), acc,
                  eval.confusion[t][t], total, name(wrong_as).c_str(), 100.0 * best_wrong / total);
    else
      std::printf("  %-3s %6.2f%%  (%zu of %zu)\n", name(t).c_str(), acc, eval.confusion[t][t], total);
  }
  return kExitOk;
}

void report_error(const char* kind, const char* what) {
  if (mpi::initialized() && mpi::world_size() > 1) {
    // One rank's error must end every rank: the others would wait for it forever.
    std::fprintf(stderr, "nnpar: [rank %d of %d] %s: %s\n", mpi::world_rank(), mpi::world_size(), kind, what);
    std::fflush(stderr);
    mpi::abort(kExitError);
  }
  std::fprintf(stderr, "nnpar: %s: %s\n", kind, what);
}

}  // namespace

int main(int argc, char** argv) {
  CLI::App app{"nnpar: train one MLP for letter OCR under interchangeable parallelism strategies,\n"
               "check that they learn the same model, and time them.\n"
               "Exit status: 0 success, 1 a parity check failed (compare), 2 an error (config, data,\n"
               "plugin, command line, diverged training, a lost MPI rank, a full disk)."};
  app.set_version_flag("--version", std::string("nnpar ") + NNPAR_VERSION + " (" + NNPAR_GIT_COMMIT + ")");
  app.require_subcommand(1);

  CommonOptions common;
  TrainFlags train_flags;
  std::string checkpoint;
  std::vector<std::string> only;

  auto* train = app.add_subcommand("train", "train with one strategy and print progress per epoch");
  add_common(train, common);
  train->add_option("--strategy", train_flags.strategy,
                    "the [[strategy]] label (or a plugin name) to run; default: the first entry");
  train->add_option("--save-checkpoint", train_flags.save_checkpoint,
                    "write the final weights as safetensors (default: [output] save_checkpoint)");
  train->add_option("--run-output", train_flags.run_output,
                    "(used by compare) write run.json and final.safetensors into DIR instead of results")
      ->group("");
  train->add_flag("--overwrite", train_flags.overwrite, "allow --save-checkpoint to replace an existing file");
  train->get_option("CONFIG")->required(false)->description(
      "TOML configuration file (see docs/config.md); not with --resume");  // cmd_train checks
  auto* checkpoint_every = train->add_option("--checkpoint-every", train_flags.checkpoint_every,
                    "every N epochs (and after the last) save the weights, epoch and history into a run "
                    "directory (needs train.momentum = 0; see docs/reliability.md)")
      ->type_name("N")
      ->check(CLI::PositiveNumber);
  train->add_option("--checkpoint-dir", train_flags.checkpoint_dir,
                    "the run directory for --checkpoint-every (default: [output] dir/<time>-<label>-run)")
      ->type_name("DIR")
      ->needs(checkpoint_every);
  train->add_option("--resume", train_flags.resume,
                    "continue the run saved in DIR by --checkpoint-every (its config; --set still applies)")
      ->type_name("DIR");
  train->add_flag("-q,--quiet", common.quiet, "no per-epoch lines");

  auto* compare = app.add_subcommand(
      "compare", "run every [[strategy]] from the same initial weights and data order, print a table "
                 "of time, samples/s, speedup, accuracy and parity, and write results");
  add_common(compare, common);
  compare->add_option("--only", only, "run only these labels (the parity reference is always run)")
      ->delimiter(',');
  compare->add_flag("-q,--quiet", common.quiet, "no per-epoch lines");

  auto* list = app.add_subcommand("list-plugins", "list the strategy plugins found and their options");
  add_common(list, common, /*config_required=*/false);

  auto* eval = app.add_subcommand("eval", "test accuracy and per-letter confusions of a checkpoint");
  add_common(eval, common, /*config_required=*/false);
  eval->add_option("--checkpoint", checkpoint, "safetensors file written by nnpar train")->required();

  try {
    app.parse(argc, argv);
  } catch (const CLI::ParseError& e) {
    const int code = app.exit(e);
    return code == 0 ? kExitOk : kExitError;
  }

  const std::string line = command_line(argc, argv);
  try {
    if (*train) {
      const int code = cmd_train(common, train_flags, argc, argv, line);
      mpi::finalize();
      return code;
    }
    if (*compare) return cmd_compare(common, only, line);
    if (*list) return cmd_list_plugins(common);
    if (*eval) return cmd_eval(common, checkpoint);
  } catch (const ConfigError& e) {
    report_error("config error", e.what());
  } catch (const DataError& e) {
    report_error("data error", e.what());
  } catch (const PluginError& e) {
    report_error("plugin error", e.what());
  } catch (const CheckpointError& e) {
    report_error("checkpoint error", e.what());
  } catch (const DivergenceError& e) {
    report_error("training stopped", e.what());
  } catch (const std::exception& e) {
    report_error("error", e.what());
  }
  return kExitError;
}
