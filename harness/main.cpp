// nnpar: train one MLP under interchangeable parallelism strategies and compare them.
#include <cmath>
#include <cstdlib>
#include <cstdio>
#include <iostream>
#include <map>
#include <optional>
#include <sstream>

#include <CLI/CLI.hpp>

#include <unistd.h>

#include <filesystem>
#include <fstream>

#include "child_run.hpp"
#include "config.hpp"
#include "divergence.hpp"
#include "grid_sweep.hpp"
#include "launcher.hpp"
#include "nnpar/comm_mpi.hpp"
#include "parity.hpp"
#include "plan_commands.hpp"
#include "rank_watchdog.hpp"
#include "plugin_loader.hpp"
#include "progress.hpp"
#include "report.hpp"
#include "results.hpp"
#include "run_checkpoint.hpp"
#include "runner.hpp"
#include "serve.hpp"
#include "search_cli.hpp"
#include "sweep.hpp"
#include "trace_file.hpp"
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
  int grids = 0;  // compare --grids N (and the children it starts)
  int repeat = 1;  // compare --repeat N
  bool json = false;
  std::string trace;  // --trace FILE
  std::string progress_style;  // set by a parent nnpar for the ranks it starts
};

RunConfig load_run_config(const CommonOptions& o) {
  RunConfig config = load_config(o.config, o.overrides);
  if (o.grids > 0) expand_grids(config, o.grids);
  return config;
}

OutputMode output_mode(const CommonOptions& o) {
  return o.json ? OutputMode::json : o.quiet ? OutputMode::quiet : OutputMode::automatic;
}

ChildRunOptions child_options(const CommonOptions& o, Progress& progress, TraceRecorder& trace) {
  return {o.config, o.overrides, o.plugin_paths, o.quiet, &progress, &trace, o.grids};
}

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

// --json and --trace beside a command's --quiet (docs/reports.md).
void add_progress_flags(CLI::App* cmd, CommonOptions& o, CLI::Option* quiet) {
  cmd->add_flag("--json", o.json, "one JSON object per line on stdout per epoch and per result; other messages on stderr")
      ->excludes(quiet);
  cmd->add_option("--trace", o.trace, "write a Chrome trace (Perfetto) of every rank's phases to FILE")
      ->type_name("FILE");
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

struct TrainFlags {
  std::string strategy, save_checkpoint, run_output;
  bool overwrite = false;
  int checkpoint_every = 0;          // epochs; 0 = no run directory
  std::string checkpoint_dir, resume;
};

// The heartbeat watchdog of a multi-rank `train` outlives cmd_train: MPI_Finalize waits for
// every rank, so a rank stopped after training (while the others finalize) would otherwise
// hang the job with nothing watching (seen on the device: a SIGSTOP during teardown).
std::unique_ptr<RankWatchdog> g_rank_watchdog;

int cmd_train(const CommonOptions& o, const TrainFlags& flags, Progress& progress, int argc, char** argv,
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
  const RunConfig config = saved ? saved->config : load_run_config(o);
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
  if (mpi::launched_by_mpi()) {
    mpi::initialize();
    world = {mpi::world_rank(), mpi::world_size()};
    if (world.size > 1) {
      g_rank_watchdog = std::make_unique<RankWatchdog>(world.rank, world.size, config.mpi.rank_timeout, mpi_job_key());
      start_injected_rank_fault(world.rank);
    }
  } else if (entry.ranks > 1 || info.needs_mpi) {
    // Start ourselves under the MPI launcher with the entry's rank count.
    check_capabilities(info, entry.label, entry.ranks);
    validate_strategy_options(entry, info.options);
    checkpoint_target(config, save_to, flags.overwrite);
    if (flags.checkpoint_every != 0) check_run_directory_free(flags.checkpoint_dir);
    std::vector<std::string> args(argv + 1, argv + argc);
    if (o.progress_style.empty()) args.insert(args.end(), {"--progress-style", progress.child_style()});
    const auto command = mpi_command(config.mpi, entry.ranks, args);
    TraceRecorder refuse_existing_trace(o.trace);
    if (!o.quiet) std::printf("starting %d ranks: %s\n", entry.ranks, join_command(command).c_str());
    std::fflush(stdout);
    Progress::RealStdout ranks_write_stdout(progress);
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

  TraceRecorder trace(o.trace);
  trace.start();
  RunResult run = run_strategy(config, entry, plugins, data, initial,
                               progress.for_run(entry.label, config.train.epochs, !quiet), world, {}, hooks);
  progress.end_run();
  trace.finish(entry.label, world);
  if (!lead) return kExitOk;
  if (trace.on() && !flags.run_output.empty()) trace.write();
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
  fs::path results_file;
  if (config.output.write_results) {
    results_file = write_new_file(config.output.dir, timestamp_for_files() + "-" + file_name_part(run.label),
                                  ".json", json.dump(2) + "\n");
    std::printf("results: %s\n", results_file.string().c_str());
  }
  progress.json_line({{"event", "result"}, {"label", run.label}, {"strategy", run.strategy},
                      {"ranks", run.world_size}, {"train_seconds", run.train_seconds},
                      {"samples_per_second", run.samples_per_second}, {"test_accuracy", run.final_test.accuracy},
                      {"results_file", results_file.empty() ? nlohmann::json() : nlohmann::json(results_file.string())}});
  if (trace.on()) std::printf("trace: %s\n", trace.write().string().c_str());
  if (!checkpoint.empty()) {
    save_checkpoint(checkpoint, config.model, run.final_parameters,
                    {{"strategy", run.label}, {"epochs", std::to_string(config.train.epochs)}});
    std::printf("checkpoint: %s\n", checkpoint.string().c_str());
  }
  return kExitOk;
}

int cmd_compare(const CommonOptions& o, const std::vector<std::string>& only, Progress& progress,
                const std::string& argv_line) {
  const RunConfig config = load_run_config(o);
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
  TraceRecorder trace(o.trace);
  const Datasets data = load_data_for(config, o.quiet);
  const std::vector<float> initial = initial_parameters(config);

  auto run_entry = [&](const StrategyEntry& entry, const std::string& trace_label) {
    if (entry.ranks > 1 || plugins.find(entry.name)->info().needs_mpi)
      return run_in_child(child_options(o, progress, trace), config, entry);
    trace.start();
    RunResult run = run_strategy(config, entry, plugins, data, initial,
                                 progress.for_run(entry.label, config.train.epochs, !o.quiet));
    progress.end_run();
    trace.finish(trace_label);
    return run;
  };
  // --repeat: every strategy runs once per round, in an order rotated by the round, so that a
  // host whose speed drifts (docs/results/2026-11-27-openmp-scaling-8.md) slows every strategy
  // alike; each round's runs are checked against that round's reference.
  const std::size_t count = entries.size();
  const int rounds = std::max(o.repeat, 1);
  std::vector<std::vector<RunResult>> round_runs(static_cast<std::size_t>(rounds), std::vector<RunResult>(count));
  std::vector<std::vector<ParityReport>> round_parity(static_cast<std::size_t>(rounds), std::vector<ParityReport>(count));
  for (int r = 0; r < rounds; ++r) {
    if (rounds > 1 && !o.json) std::printf("round %d/%d\n", r + 1, rounds);
    for (std::size_t k = 0; k < count; ++k) {
      const std::size_t i = (k + std::size_t(r)) % count;
      round_runs[r][i] = run_entry(entries[i], rounds > 1 ? entries[i].label + " (round " + std::to_string(r + 1) + ")"
                                                          : entries[i].label);
    }
    for (std::size_t i = 0; i < count; ++i)
      round_parity[r][i] = check_parity(round_runs[r][i], round_runs[r][0], config.parity);
    if (rounds > 1)
      for (RunResult& run : round_runs[r]) std::vector<float>().swap(run.final_parameters);
  }
  // Per strategy: the run of median training time stands for it (its epochs, its JSON); the
  // speedup is the median of the rounds' paired ratios; a parity failure in any round is its verdict.
  std::vector<RunResult> runs;
  std::vector<ParityReport> parity;
  std::vector<RepeatSummary> repeats(count);
  for (std::size_t i = 0; i < count; ++i) {
    RepeatSummary& rep = repeats[i];
    for (int r = 0; r < rounds; ++r) {
      const double own = round_runs[r][i].train_seconds, ref = round_runs[r][0].train_seconds;
      rep.train_seconds.push_back(own);
      rep.samples_per_second.push_back(round_runs[r][i].samples_per_second);
      rep.paired_speedup.push_back(own > 0 ? ref / own : 0);
    }
    rep.kept_round = median_index(rep.train_seconds);
    rep.speedup = median_of(rep.paired_speedup);
    runs.push_back(round_runs[rep.kept_round][i]);
    int shown = rep.kept_round;
    for (int r = 0; r < rounds; ++r)
      if (!round_parity[r][i].pass) {
        shown = r;
        break;
      }
    parity.push_back(round_parity[shown][i]);
    if (rounds > 1 && shown != rep.kept_round)
      parity.back().reason = "round " + std::to_string(shown + 1) + ": " + parity.back().reason;
  }

  const std::string stamp = timestamp_for_files();
  std::vector<SummaryRow> rows;
  for (std::size_t i = 0; i < runs.size(); ++i) {
    SummaryRow row{&runs[i], &parity[i], repeats[i].speedup, {}, rounds > 1 ? &repeats[i] : nullptr};
    if (config.output.write_results) {
      nlohmann::json j = run_to_json(config, runs[i], &parity[i], argv_line);
      if (rounds > 1) j["repeats"] = repeat_json(repeats[i]);
      row.results_file = write_new_file(config.output.dir, stamp + "-" + file_name_part(runs[i].label), ".json",
                                        j.dump(2) + "\n");
    }
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
    nlohmann::json line = {{"event", "result"}, {"label", r.label}, {"strategy", r.strategy}, {"ranks", r.world_size},
                           {"train_seconds", r.train_seconds}, {"samples_per_second", r.samples_per_second},
                           {"speedup", rows[i].speedup}, {"test_accuracy", r.final_test.accuracy},
                           {"parity", p.verdict}, {"results_file", rows[i].results_file.string()}};
    if (rounds > 1) line["repeats"] = repeat_json(repeats[i]);
    progress.json_line(line);
  }
  if (rounds > 1) {
    std::printf("%d rounds, order rotated each round; time and samples/s: each strategy's median run; "
                "speedup: the median over rounds of the reference's time / the strategy's, both from one round\n",
                rounds);
    for (std::size_t i = 0; i < runs.size(); ++i) {
      const RepeatSummary& rep = repeats[i];
      const auto [lo, hi] = rep.samples_per_second_range();
      std::string ratios;
      for (double x : rep.paired_speedup) {
        char one[32];
        std::snprintf(one, sizeof one, "%s%.2f", ratios.empty() ? "" : " ", x);
        ratios += one;
      }
      std::printf("  %-16s samples/s %.0f-%.0f (%.0f%% spread), speedup by round: %s\n", runs[i].label.c_str(), lo,
                  hi, lo > 0 ? 100 * (hi / lo - 1) : 0.0, ratios.c_str());
    }
  }
  // A virtual machine's host may run other guests on our cores: their time is not ours, and
  // a run that lost some is slower than the strategy.
  for (const RunResult& r : runs) {
    double steal = -1;
    for (const EpochRecord& e : r.epochs) steal = std::max(steal, e.host_steal);
    if (steal >= kNotableHostSteal)
      std::printf("host: during %s the hypervisor took up to %.0f%% of an epoch's CPU time (steal, /proc/stat): "
                  "that run's speed is partly the host's\n", r.label.c_str(), 100 * steal);
  }
  std::printf("reference: %s on %s; exact class: weights within atol %.0e + rtol %.0e*|ref| and "
              "accuracy within %.2f pp; approximate: accuracy at most %.2f pp below\n",
              runs.front().label.c_str(), runs.front().device.c_str(), config.parity.weight_atol,
              config.parity.weight_rtol, config.parity.accuracy_pp, config.parity.approx_accuracy_pp);
  if (o.grids > 0) std::printf("%s", grid_ranking(runs, o.grids).c_str());
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
  if (trace.on()) std::printf("trace: %s\n", trace.write().string().c_str());
  return all_pass ? kExitOk : kExitParityFailed;
}

// `nnpar report`; with --profile the script also gets `plan --compare-results --json` of the
// same folder, from a temporary file removed afterwards.
int cmd_report(ReportOptions o) {
  std::error_code ec;
  if (o.profile.empty() || !std::filesystem::is_directory(o.results, ec)) return run_report(o);
  nlohmann::json predicted;
  try {
    predicted = predicted_beside_measured(o.profile.string(), o.results.string());
  } catch (const std::exception& e) {
    std::fprintf(stderr, "nnpar: report: --profile: %s\n", e.what());
    return kExitError;
  }
  o.predictions = std::filesystem::temp_directory_path() /
                  ("nnpar-report-predictions-" + std::to_string(::getpid()) + ".json");
  {
    std::ofstream out(o.predictions);
    out << predicted.dump() << "\n";
    if (!out) {
      std::fprintf(stderr, "nnpar: report: cannot write %s\n", o.predictions.string().c_str());
      return kExitError;
    }
  }
  const int status = run_report(o);
  std::filesystem::remove(o.predictions, ec);
  return status;
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
  // GPU strategies run NCCL kernels that spin until a peer's matching kernel runs. With CUDA's
  // default lazy module loading, the first launch of one of our kernels may wait for the
  // context to go idle, i.e. for a spinning NCCL kernel, whose peer waits for us: a deadlock
  // (CUDA programming guide, "Lazy Loading: Potential Hazards"). Loading every kernel at
  // context creation removes it. Set before anything touches CUDA (the GPU probe calls cuInit);
  // a user's own setting wins, and ranks started through mpirun inherit it.
  setenv("CUDA_MODULE_LOADING", "EAGER", 0);
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
  train->add_option("--progress-style", common.progress_style, "(used by a parent nnpar) bar or plain")
      ->check(CLI::IsMember({"bar", "plain"}))
      ->group("");
  train->add_flag("--overwrite", train_flags.overwrite, "allow --save-checkpoint to replace an existing file");
  add_progress_flags(train, common, train->add_flag("-q,--quiet", common.quiet, "no per-epoch lines"));
  train->add_option("--grids", common.grids, "(used by compare --grids) expand hybrid entries into grids of N")
      ->group("");
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

  auto* compare = app.add_subcommand(
      "compare", "run every [[strategy]] from the same initial weights and data order, print a table "
                 "of time, samples/s, speedup, accuracy and parity, and write results");
  add_common(compare, common);
  compare->add_option("--only", only, "run only these labels (the parity reference is always run)")
      ->delimiter(',');
  add_progress_flags(compare, common, compare->add_flag("-q,--quiet", common.quiet, "no per-epoch lines"));
  compare->add_option("--repeat", common.repeat,
                      "run every strategy N times, in an order rotated each round, and report medians "
                      "(for hosts whose speed drifts)")
      ->type_name("N")
      ->check(CLI::Range(1, 1000));
  compare->add_option("--grids", common.grids,
                      "replace each mpi-hybrid/nccl-hybrid entry by every data x stages grid of N workers, add "
                      "tensor parallelism on N, and rank them")
      ->type_name("N")
      ->check(CLI::Range(1, 1 << 20));

  SweepOptions sweep_options;
  auto* sweep = app.add_subcommand(
      "sweep", "run every [[strategy]] over a grid of worker counts, batch sizes and hidden widths; "
               "collect the results in one folder with a sweep.json index (docs/reports.md)");
  add_common(sweep, common);
  sweep->add_option("--workers", sweep_options.workers,
                    "worker counts: MPI ranks (mpi-*, nccl-*), threads (openmp); ignored by single-worker "
                    "strategies; default: as configured")->delimiter(',')->check(CLI::PositiveNumber);
  sweep->add_option("--batch", sweep_options.batch, "global batch sizes; default: [train] batch_size")
      ->delimiter(',')->check(CLI::PositiveNumber);
  sweep->add_option("--width", sweep_options.width, "hidden widths (every hidden layer); default: [model] layers")
      ->delimiter(',')->check(CLI::PositiveNumber);
  sweep->add_option("-o,--output", sweep_options.out, "new folder for the results (default: [output] dir/sweep-TIME)")
      ->type_name("DIR");
  sweep->add_flag("--trace", sweep_options.trace, "also write a Chrome trace beside each run's results");
  sweep->add_flag("--json", common.json, "JSON lines on stdout (see compare --json)")
      ->excludes(sweep->add_flag("-q,--quiet", common.quiet, "no per-epoch lines"));

  ReportOptions report_options;
  auto* report = app.add_subcommand(
      "report", "figures (PNG, SVG), Markdown and self-contained HTML from a results folder (python3 + matplotlib)");
  report->add_option("RESULTS_DIR", report_options.results, "folder of results JSON (compare, train, sweep)")
      ->required();
  report->add_option("-o,--output", report_options.out, "report folder (default: RESULTS_DIR/report)")
      ->type_name("REPORT_DIR");
  report->add_flag("--overwrite", report_options.overwrite, "replace an earlier report in REPORT_DIR");
  report->add_option("--profile", report_options.profile,
                     "machine profile (nnpar calibrate): add every run's predicted samples/s beside the measured "
                     "(as nnpar plan --compare-results)")
      ->type_name("FILE");

  auto* list = app.add_subcommand("list-plugins", "list the strategy plugins found and their options");
  add_common(list, common, /*config_required=*/false);

  auto* eval = app.add_subcommand("eval", "test accuracy and per-letter confusions of a checkpoint");
  add_common(eval, common, /*config_required=*/false);
  eval->add_option("--checkpoint", checkpoint, "safetensors file written by nnpar train")->required();

  ServeOptions serve_options;
  auto* serve = add_serve_command(app, serve_options);
  SearchCommand search_command;
  auto* search = add_search_subcommand(app, search_command);
  PlanCommands plan_commands(app);  // calibrate, plan

  try {
    app.parse(argc, argv);
  } catch (const CLI::ParseError& e) {
    const int code = app.exit(e);
    return code == 0 ? kExitOk : kExitError;
  }

  const std::string line = command_line(argc, argv);
  try {
    Progress progress(output_mode(common), common.progress_style, mpi::launched_by_mpi());
    if (*train) {
      const int code = cmd_train(common, train_flags, progress, argc, argv, line);
      raise_injected_fault_before_finalize();
      mpi::finalize();
      g_rank_watchdog.reset();
      return code;
    }
    if (*compare) return cmd_compare(common, only, progress, line);
    if (*sweep) {
      sweep_options.config = common.config;
      sweep_options.overrides = common.overrides;
      sweep_options.plugin_paths = common.plugin_paths;
      sweep_options.quiet = common.quiet;
      return run_sweep(sweep_options, progress, line);
    }
    if (*report) return cmd_report(report_options);
    if (*list) return cmd_list_plugins(common);
    if (*eval) return cmd_eval(common, checkpoint);
    if (*serve) return run_serve(serve_options);
    if (*search) {
      const int code = run_search_command(search_command, line);
      mpi::finalize();
      return code;
    }
    if (auto code = plan_commands.run(line)) return *code;
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
