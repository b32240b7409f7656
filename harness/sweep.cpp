#include "sweep.hpp"

#include <algorithm>
#include <cmath>
#include <cstdio>
#include <optional>
#include <stdexcept>

#include "child_run.hpp"
#include "config.hpp"
#include "parity.hpp"
#include "plugin_loader.hpp"
#include "results.hpp"
#include "runner.hpp"
#include "trace_file.hpp"

namespace nnpar {
namespace fs = std::filesystem;

WorkerKind worker_kind(const StrategyInfo& info) {
  if (info.needs_mpi || info.max_world_size != 1) return WorkerKind::ranks;
  for (const OptionSpec& o : info.options)
    if (o.name == "threads" && o.type == OptionType::integer) return WorkerKind::threads;
  return WorkerKind::single;
}

const char* worker_kind_name(WorkerKind kind) {
  switch (kind) {
    case WorkerKind::ranks: return "ranks";
    case WorkerKind::threads: return "threads";
    case WorkerKind::single: return "single";
  }
  return "single";
}

namespace {

// One batch size and hidden width.
struct Point {
  int batch = 0;
  std::vector<int> layers;
  int width = 0;  // 0: the configured layers
  std::string name;
  std::vector<std::string> overrides;
};

// One strategy at one worker count at one point.
struct PlannedRun {
  const Point* point = nullptr;
  std::string label, plugin;
  WorkerKind kind = WorkerKind::single;
  int workers = 1;
  bool reference = false;
  std::vector<std::string> overrides;  // the user's, the point's, the worker count
  std::string stem;                    // results file name without extension
  std::string skip_reason;             // not run: what the plugin cannot do here
};

std::string layers_text(const std::vector<int>& layers, const char* separator) {
  std::string s;
  for (std::size_t i = 0; i < layers.size(); ++i) {
    if (i) s += separator;
    s += std::to_string(layers[i]);
  }
  return s;
}

std::vector<Point> make_points(const SweepOptions& o, const RunConfig& base) {
  const std::vector<int> batches = o.batch.empty() ? std::vector<int>{base.train.batch_size} : o.batch;
  const std::vector<int>& configured = base.model.layer_sizes;
  if (!o.width.empty() && configured.size() < 3)
    throw ConfigError(base.file.string() + ": model.layers = [" + layers_text(configured, ", ") +
                      "] has no hidden layer for --width to set");
  const std::vector<int> widths = o.width.empty() ? std::vector<int>{0} : o.width;
  std::vector<Point> points;
  for (int b : batches)
    for (int w : widths) {
      Point p;
      p.batch = b;
      p.width = w;
      p.layers = configured;
      if (w > 0)
        for (std::size_t i = 1; i + 1 < p.layers.size(); ++i) p.layers[i] = w;
      std::vector<int> hidden(p.layers.begin() + 1, p.layers.end() - 1);
      p.name = "b";
      p.name += std::to_string(b) + "-h";
      p.name += layers_text(hidden, "x");
      p.overrides = {"train.batch_size=" + std::to_string(b), "model.layers=[" + layers_text(p.layers, ",") + "]"};
      points.push_back(std::move(p));
    }
  return points;
}

fs::path output_folder(const SweepOptions& o, const RunConfig& base) {
  const fs::path out = o.out.empty() ? base.output.dir / ("sweep-" + timestamp_for_files()) : o.out;
  std::error_code ec;
  if (fs::exists(out, ec)) {
    if (!fs::is_directory(out, ec)) throw std::runtime_error("sweep output '" + out.string() + "' is a file, not a folder");
    if (!fs::is_empty(out, ec))
      throw std::runtime_error("sweep output folder '" + out.string() +
                               "' already holds files; a sweep never writes over results: choose a new folder with -o");
  }
  fs::create_directories(out, ec);
  if (ec) throw std::runtime_error("cannot create sweep output folder '" + out.string() + "': " + ec.message());
  return out;
}

nlohmann::json number_or_null(double v) { return std::isfinite(v) ? nlohmann::json(v) : nlohmann::json(); }

}  // namespace

int run_sweep(const SweepOptions& o, Progress& progress, const std::string& command_line) {
  const RunConfig base = load_config(o.config, o.overrides);
  std::vector<fs::path> extra(o.plugin_paths.begin(), o.plugin_paths.end());
  extra.insert(extra.end(), base.plugin_paths.begin(), base.plugin_paths.end());
  PluginRegistry plugins = PluginRegistry::standard(extra);

  // The reference runs once per point as configured, first; the others at every worker count.
  std::vector<StrategyEntry> entries = base.strategies;
  auto ref = std::find_if(entries.begin(), entries.end(), [&](auto& e) { return e.label == base.parity.reference; });
  const bool reference_listed = ref != entries.end();
  if (reference_listed) {
    std::rotate(entries.begin(), ref, ref + 1);
  } else {
    StrategyEntry added;
    added.name = added.label = base.parity.reference;
    added.table = std::make_shared<toml::table>();
    entries.insert(entries.begin(), added);
    std::printf("note: adding the parity reference '%s' (not listed in the config)\n", added.label.c_str());
  }

  // Plan every run first: a config error surfaces before hours of training.
  const std::vector<Point> points = make_points(o, base);
  std::vector<PlannedRun> plan;
  nlohmann::json mapping = nlohmann::json::object();
  for (const Point& point : points) {
    for (std::size_t i = 0; i < entries.size(); ++i) {
      const StrategyEntry& entry = entries[i];
      const StrategyInfo& info = plugins.find(entry.name)->info();
      const WorkerKind kind = worker_kind(info);
      const bool reference = i == 0;
      mapping[entry.label] = reference ? "reference (as configured)" : worker_kind_name(kind);
      std::vector<int> counts{0};  // 0: as configured
      if (!reference && kind != WorkerKind::single && !o.workers.empty()) counts = o.workers;
      for (int n : counts) {
        PlannedRun run;
        run.point = &point;
        run.label = entry.label;
        run.plugin = entry.name;
        run.kind = kind;
        run.reference = reference;
        run.overrides = o.overrides;
        run.overrides.insert(run.overrides.end(), point.overrides.begin(), point.overrides.end());
        if (n > 0)
          run.overrides.push_back("strategy." + entry.label + (kind == WorkerKind::ranks ? ".ranks=" : ".threads=") +
                                  std::to_string(n));
        const RunConfig config = load_config(o.config, run.overrides);
        const StrategyEntry& planned = reference && !reference_listed ? entry
            : *std::find_if(config.strategies.begin(), config.strategies.end(), [&](auto& e) { return e.label == entry.label; });
        run.workers = kind == WorkerKind::ranks ? planned.ranks : 1;
        // A bad option is the config's error and stops the sweep here; a world size or device
        // this machine or plugin cannot give only skips the run.
        const StrategyOptions options = validate_strategy_options(planned, info.options);
        if (kind == WorkerKind::threads) run.workers = int(options.get_int("threads"));
        try {
          check_capabilities(info, planned.label, planned.ranks);
        } catch (const ConfigError& e) {
          run.skip_reason = e.what();
        }
        run.stem = file_name_part(entry.label) + (n > 0 ? "-w" + std::to_string(n) : "");
        plan.push_back(std::move(run));
      }
    }
  }

  const fs::path out = output_folder(o, base);
  const MachineInfo machine = machine_info();
  nlohmann::json index = {
      {"nnpar_version", NNPAR_VERSION}, {"git_commit", NNPAR_GIT_COMMIT}, {"date", iso_time_now()},
      {"command", command_line}, {"config_file", fs::absolute(o.config).string()},
      {"machine", {{"host", machine.host}, {"cpu", machine.cpu_model}, {"cores", machine.cores}, {"os", machine.os}}},
      {"grid", {{"workers", o.workers}, {"batch", o.batch}, {"width", o.width}}},
      {"reference", base.parity.reference}, {"workers_are", mapping}, {"runs", nlohmann::json::array()}};
  auto save_index = [&] { write_file_atomic(out / "sweep.json", index.dump(2) + "\n"); };
  save_index();
  if (!o.quiet)
    std::printf("sweep: %zu runs at %zu grid points into %s\n", plan.size(), points.size(), out.string().c_str());

  const Datasets data = load_datasets(base.data);
  if (!o.quiet)
    std::printf("data: %zu train / %zu test samples of %dx%d from %s\n", data.train.count, data.test.count,
                data.train.rows, data.train.cols, base.data.dir.string().c_str());

  int failed = 0, parity_failed = 0, skipped = 0;
  const Point* current = nullptr;
  std::optional<RunResult> reference;  // of the current point, with its final parameters
  std::vector<float> initial;
  std::vector<RunResult> point_runs;
  std::vector<ParityReport> point_parity;
  std::vector<SummaryRow> point_rows;
  auto finish_point = [&] {
    if (current == nullptr || point_rows.empty()) return;
    for (std::size_t i = 0; i < point_rows.size(); ++i) {
      point_rows[i].run = &point_runs[i];
      point_rows[i].parity = &point_parity[i];
    }
    write_new_file(out / current->name, "summary", ".csv", summary_csv(point_rows));
  };

  for (const PlannedRun& planned : plan) {
    if (planned.point != current) {
      finish_point();
      current = planned.point;
      reference.reset();
      point_runs.clear();
      point_parity.clear();
      point_rows.clear();
      point_runs.reserve(plan.size());
      point_parity.reserve(plan.size());
      initial.clear();
    }
    const Point& point = *planned.point;
    const std::string what = planned.label + (planned.kind == WorkerKind::single || planned.reference
                                                  ? std::string()
                                                  : " on " + std::to_string(planned.workers) + " " +
                                                        worker_kind_name(planned.kind)) +
                             " at batch " + std::to_string(point.batch) + ", layers [" + layers_text(point.layers, ",") + "]";
    nlohmann::json row = {{"point", point.name}, {"batch", point.batch}, {"layers", point.layers},
                          {"width", point.width > 0 ? nlohmann::json(point.width) : nlohmann::json()},
                          {"label", planned.label}, {"strategy", planned.plugin}, {"workers", planned.workers},
                          {"workers_are", worker_kind_name(planned.kind)}, {"reference", planned.reference}};
    if (!planned.skip_reason.empty()) {
      ++skipped;
      row["status"] = "skipped";
      row["reason"] = planned.skip_reason;
      if (!o.quiet) std::printf("[sweep] skipped %s: %s\n", what.c_str(), planned.skip_reason.c_str());
      index["runs"].push_back(row);
      save_index();
      continue;
    }
    if (!o.quiet) std::printf("[sweep] %s\n", what.c_str());
    std::fflush(stdout);
    const fs::path point_dir = out / point.name;
    try {
      const RunConfig config = load_config(o.config, planned.overrides);
      check_model_matches_data(config, data.train);
      if (initial.empty()) initial = initial_parameters(config);
      StrategyEntry adhoc;
      adhoc.name = adhoc.label = planned.label;
      adhoc.table = std::make_shared<toml::table>();
      auto it = std::find_if(config.strategies.begin(), config.strategies.end(),
                             [&](auto& e) { return e.label == planned.label; });
      const StrategyEntry& entry = it != config.strategies.end() ? *it : adhoc;
      fs::create_directories(point_dir);
      TraceRecorder trace(o.trace ? point_dir / (planned.stem + ".trace.json") : fs::path());
      RunResult run;
      if (entry.ranks > 1 || plugins.find(entry.name)->info().needs_mpi) {
        ChildRunOptions child{o.config, planned.overrides, o.plugin_paths, o.quiet, &progress, &trace};
        run = run_in_child(child, config, entry);
      } else {
        trace.start();
        run = run_strategy(config, entry, plugins, data, initial,
                           progress.for_run(entry.label, config.train.epochs, !o.quiet));
        progress.end_run();
        trace.finish(entry.label);
      }
      ParityReport parity;
      if (planned.reference) {
        parity = check_parity(run, run, config.parity);
        reference = run;
      } else if (reference) {
        parity = check_parity(run, *reference, config.parity);
      } else {
        parity.verdict = "no reference";
        parity.reason = "the reference '" + base.parity.reference + "' did not run at this point";
      }
      run.final_parameters.clear();
      run.final_parameters.shrink_to_fit();
      const fs::path file = write_new_file(point_dir, planned.stem, ".json",
                                           run_to_json(config, run, &parity, command_line).dump(2) + "\n");
      const double speedup = reference && run.train_seconds > 0 ? reference->train_seconds / run.train_seconds : 0;
      row["status"] = "ok";
      row["results_file"] = fs::relative(file, out).string();
      if (trace.on()) row["trace_file"] = fs::relative(trace.write(), out).string();
      row["train_seconds"] = run.train_seconds;
      row["samples_per_second"] = run.samples_per_second;
      row["speedup_vs_reference"] = number_or_null(speedup > 0 ? speedup : NAN);
      row["test_accuracy"] = run.final_test.accuracy;
      row["parity"] = parity.verdict;
      if (!parity.pass && !parity.reason.empty()) row["parity_reason"] = parity.reason;
      if (!parity.pass && parity.verdict != "no reference") ++parity_failed;
      if (!o.quiet)
        std::printf("[sweep] %s: %.3f s, %.0f samples/s, %.2fx vs %s, test %.2f%%, %s\n", what.c_str(),
                    run.train_seconds, run.samples_per_second, speedup, base.parity.reference.c_str(),
                    100 * run.final_test.accuracy, parity.verdict.c_str());
      progress.json_line({{"event", "result"}, {"point", point.name}, {"label", run.label},
                          {"workers", planned.workers}, {"train_seconds", run.train_seconds},
                          {"samples_per_second", run.samples_per_second}, {"test_accuracy", run.final_test.accuracy},
                          {"parity", parity.verdict}, {"results_file", file.string()}});
      point_runs.push_back(std::move(run));
      point_parity.push_back(parity);
      point_rows.push_back({nullptr, nullptr, speedup, file});
    } catch (const std::exception& e) {
      progress.end_run();
      ++failed;
      row["status"] = "failed";
      row["reason"] = e.what();
      std::fprintf(stderr, "nnpar: sweep: %s failed: %s\n", what.c_str(), e.what());
    }
    index["runs"].push_back(row);
    save_index();
  }
  finish_point();
  index["finished"] = iso_time_now();
  save_index();

  std::printf("sweep: %zu runs: %zu ran, %d failed, %d skipped, %d parity failures; index %s\n", plan.size(),
              plan.size() - std::size_t(failed + skipped), failed, skipped, parity_failed,
              (out / "sweep.json").string().c_str());
  std::printf("report: nnpar report %s -o %s\n", out.string().c_str(), (out / "report").string().c_str());
  progress.json_line({{"event", "sweep"}, {"dir", out.string()}, {"runs", plan.size()}, {"failed", failed},
                      {"skipped", skipped}, {"parity_failures", parity_failed}});
  return failed > 0 ? 2 : parity_failed > 0 ? 1 : 0;
}

}  // namespace nnpar
