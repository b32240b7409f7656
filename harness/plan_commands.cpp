// `nnpar plan`: the cost model of perf_model.hpp applied to a config, for every strategy
// family and worker count, ranked; `--compare-results DIR`: predicted beside measured for
// every result JSON in a folder. `nnpar calibrate`: calibrate.cpp.
#include "plan_commands.hpp"

#include <algorithm>
#include <cmath>
#include <cstdio>
#include <filesystem>
#include <fstream>
#include <map>
#include <numeric>
#include <sstream>

#include "calibrate.hpp"
#include "config.hpp"
#include "perf_model.hpp"
#include "results.hpp"
#include "runner.hpp"

namespace nnpar {

namespace fs = std::filesystem;
using perf::Candidate;
using perf::Prediction;

namespace {

struct PlanOptions {
  std::string config;
  std::vector<std::string> overrides;
  std::string profile;
  std::string workers;
  std::string device;
  int batch_per_worker = 0;
  long long samples = 0;
  std::string intra = "measured", inter = "ib-ndr";
  int per_node = 0;
  bool json = false;
  int top = 0;
  std::string compare_dir;
};

// "1..64": 1, 2, 4, ... 64 (and 64 if the doubling skips it); "2,3,4": those; "8": only 8.
std::vector<int> parse_workers(const std::string& text) {
  const std::string where = "--workers " + text + ": ";
  auto number = [&](const std::string& s) {
    std::size_t used = 0;
    int v = 0;
    try {
      v = std::stoi(s, &used);
    } catch (const std::exception&) {
      used = 0;
    }
    if (used != s.size() || s.empty() || v < 1 || v > (1 << 20))
      throw std::invalid_argument(where + "'" + s + "' is not a worker count from 1 to 1048576 (write A..B or a,b,c)");
    return v;
  };
  std::vector<int> out;
  if (const auto dots = text.find(".."); dots != std::string::npos) {
    const int a = number(text.substr(0, dots)), b = number(text.substr(dots + 2));
    if (b < a) throw std::invalid_argument(where + "the range ends before it starts");
    for (long long n = a; n <= b; n *= 2) out.push_back(int(n));
    if (out.back() != b) out.push_back(b);
    return out;
  }
  std::stringstream s(text);
  for (std::string item; std::getline(s, item, ',');) out.push_back(number(item));
  std::sort(out.begin(), out.end());
  out.erase(std::unique(out.begin(), out.end()), out.end());
  return out;
}

perf::Network make_network(const PlanOptions& o) {
  perf::Network net;
  if (o.intra != "measured") net.intra = perf::find_preset(o.intra);
  net.inter = perf::find_preset(o.inter);
  net.per_node = o.per_node;
  return net;
}

nlohmann::json toml_to_json(const toml::node& node) {
  if (auto v = node.as_integer()) return v->get();
  if (auto v = node.as_floating_point()) return v->get();
  if (auto v = node.as_boolean()) return v->get();
  if (auto v = node.as_string()) return v->get();
  if (auto t = node.as_table()) {
    nlohmann::json j = nlohmann::json::object();
    for (auto& [k, v] : *t) j[std::string(k.str())] = toml_to_json(v);
    return j;
  }
  if (auto a = node.as_array()) {
    nlohmann::json j = nlohmann::json::array();
    for (auto& v : *a) j.push_back(toml_to_json(v));
    return j;
  }
  return nullptr;
}

// The options a user would write in a [[strategy]] entry for this candidate.
nlohmann::json candidate_options(const Candidate& c) {
  nlohmann::json o = {{"name", c.plugin}};
  if (c.plugin == "openmp") {
    o["mode"] = c.mode;
    o["threads"] = c.workers;
    if (c.mode == "intra_op" && c.omp_schedule == "static") o["schedule"] = "static";
    return o;
  }
  if (c.plugin != "serial" && c.plugin != "cuda") o["ranks"] = c.workers;
  if (c.plugin.ends_with("-data")) {
    o["mode"] = c.mode;
    if (c.mode == "sync") o["overlap"] = c.overlap;
    else o["period"] = c.period;
  } else if (c.plugin.ends_with("-pipeline") || c.plugin.ends_with("-hybrid")) {
    if (c.plugin.ends_with("-hybrid")) o["data"] = c.data;
    o["schedule"] = c.schedule;
    o["micro_batches"] = c.micro_batches;
    if (c.partition != "auto") o["partition"] = c.partition;
  }
  if (c.plugin == "cuda" && !c.graph) o["graph"] = false;
  return o;
}

std::string human_bytes(double b) {
  char s[32];
  if (b >= 1e9) std::snprintf(s, sizeof s, "%.2f GB", b / 1e9);
  else if (b >= 1e6) std::snprintf(s, sizeof s, "%.1f MB", b / 1e6);
  else std::snprintf(s, sizeof s, "%.0f kB", b / 1e3);
  return s;
}

std::string thousands(double v) {
  const long long n = std::llround(v);
  const std::string digits = std::to_string(n < 0 ? -n : n);
  std::string s = n < 0 ? "-" : "";
  for (std::size_t i = 0; i < digits.size(); ++i) {
    if (i > 0 && (digits.size() - i) % 3 == 0) s += ',';
    s += digits[i];
  }
  return s;
}

std::string split_text(double compute, double comm, double idle) {
  const double total = compute + comm + idle;
  if (total <= 0) return "-";
  char s[48];
  std::snprintf(s, sizeof s, "%.0f/%.0f/%.0f", 100 * compute / total, 100 * comm / total, 100 * idle / total);
  return s;
}

nlohmann::json prediction_json(const Prediction& p) {
  return {{"step_seconds", p.step_s},
          {"samples_per_second", p.samples_per_s},
          {"epoch_seconds", p.epoch_s},
          {"epoch_samples_per_second", p.epoch_samples_per_s},
          {"compute_seconds", p.compute_s},
          {"communication_seconds", p.comm_s},
          {"idle_seconds", p.idle_s},
          {"memory_bytes", p.memory_bytes},
          {"fits_memory", p.fits_memory},
          {"note", p.note}};
}

bool choose_gpu(const perf::Profile& profile, const std::string& device) {
  if (device == "gpu") {
    if (!profile.gpu) throw std::invalid_argument("--device gpu: the profile " + profile.file + " has no gpu section (calibrate with --gpu)");
    return true;
  }
  if (device == "cpu") {
    if (!profile.cpu) throw std::invalid_argument("--device cpu: the profile " + profile.file + " has no cpu section");
    return false;
  }
  return profile.gpu.has_value();
}

struct Row {
  Candidate candidate;
  Prediction prediction;
};

// The profile's calibrated points their neighbours contradict (perf::disturbed_points), as
// JSON, and (warn) one line on stderr: predictions that use them are off by their disturbance.
nlohmann::json disturbed_json(const perf::Profile& profile, bool warn) {
  // CPU only: our GPU products change tiling with the row count, so fewer rows can genuinely take
  // longer there (input_grad 256x1024: 16 us at 8 rows, 8 us at 32 on every H100 and H200).
  if (!profile.cpu) return nlohmann::json::array();
  const std::vector<perf::DisturbedPoint> points = perf::disturbed_points(*profile.cpu);
  if (warn && !points.empty())
    std::fprintf(stderr, "warning: %s: CPU profile: %s. Predictions that use them come out slow by as much; "
                 "calibrate again on a quieter machine (nnpar calibrate measures such points again itself).\n",
                 profile.file.c_str(), perf::describe_disturbed(points).c_str());
  return perf::disturbed_points_json(points);
}

int cmd_plan(const PlanOptions& o) {
  if (o.config.empty()) throw std::invalid_argument("plan: give a CONFIG (or --compare-results DIR)");
  const RunConfig config = load_config(o.config, o.overrides);
  const perf::Profile profile = perf::load_profile(o.profile);
  const perf::Network net = make_network(o);
  const bool gpu = choose_gpu(profile, o.device);
  const perf::DeviceProfile& dev = gpu ? *profile.gpu : *profile.cpu;
  const std::vector<int> counts = parse_workers(o.workers.empty() ? "1.." + std::to_string(dev.count) : o.workers);

  perf::Workload base;
  base.layers = config.model.layer_sizes;
  base.batch = config.train.batch_size;
  base.momentum = config.train.sgd.momentum != 0.0f;
  base.drop_last = config.train.drop_last;
  base.samples = o.samples > 0 ? std::size_t(o.samples)
                               : (config.data.options.limit > 0 ? config.data.options.limit : std::size_t(124800));
  std::vector<Candidate> hints;
  for (const StrategyEntry& e : config.strategies) {
    try {
      hints.push_back(perf::candidate_from_options(e.name, e.ranks, toml_to_json(*e.table), e.label));
    } catch (const std::invalid_argument&) {
      // A plugin the model does not know: it only gives hints, so it is left out.
    }
  }

  nlohmann::json out = {{"schema", "nnpar-plan/1"},
                        {"config", o.config},
                        {"profile",
                         {{"file", o.profile},
                          {"description", profile.describe()},
                          {"disturbed_cpu_points", disturbed_json(profile, !o.json)}}},
                        {"device", gpu ? "gpu" : "cpu"},
                        {"network",
                         {{"intra_node", o.intra},
                          {"inter_node", net.inter.name},
                          {"inter_node_description", net.inter.description},
                          {"workers_per_node", net.per_node > 0 ? net.per_node : dev.count}}},
                        {"workload",
                         {{"layers", base.layers},
                          {"scaling", o.batch_per_worker > 0 ? "weak" : "strong"},
                          {"batch", base.batch},
                          {"batch_per_worker", o.batch_per_worker},
                          {"samples_per_epoch", base.samples},
                          {"momentum", base.momentum}}},
                        {"worker_counts", nlohmann::json::array()}};
  std::size_t params = 0;
  for (std::size_t i = 0; i + 1 < base.layers.size(); ++i) params += std::size_t(base.layers[i]) * base.layers[i + 1] + base.layers[i + 1];
  if (!o.json) {
    std::printf("plan: %s, model", o.config.c_str());
    for (std::size_t i = 0; i < base.layers.size(); ++i) std::printf("%s%d", i ? "-" : " ", base.layers[i]);
    std::printf(" (%s parameters), %s, %zu samples per epoch\n", thousands(double(params)).c_str(),
                o.batch_per_worker > 0 ? ("batch " + std::to_string(o.batch_per_worker) + " per worker (weak scaling)").c_str()
                                       : ("global batch " + std::to_string(base.batch) + " (strong scaling)").c_str(),
                base.samples);
    std::printf("profile: %s: %s\n", o.profile.c_str(), profile.describe().c_str());
    std::printf("network: within a node (%d workers) %s; between nodes %s\n",
                net.per_node > 0 ? net.per_node : dev.count,
                o.intra == "measured" ? "as calibrated" : net.intra->description.c_str(), net.inter.description.c_str());
  }

  struct Best {
    int workers = 0;
    Row row;
  } overall;
  for (int n : counts) {
    perf::Workload w = base;
    if (o.batch_per_worker > 0) w.batch = o.batch_per_worker * n;
    Candidate one;
    one.plugin = gpu ? "cuda" : "serial";
    const Prediction reference = perf::predict(profile, net, w, one);
    std::vector<Row> rows;
    for (const Candidate& c : perf::enumerate_candidates(profile, net, gpu, n, w, hints)) {
      try {
        rows.push_back({c, perf::predict(profile, net, w, c)});
      } catch (const std::invalid_argument&) {
        // Cannot run here (e.g. a pipeline deeper than the model): not a candidate.
      }
    }
    std::stable_sort(rows.begin(), rows.end(), [](const Row& a, const Row& b) {
      if (a.prediction.fits_memory != b.prediction.fits_memory) return a.prediction.fits_memory;
      return a.prediction.samples_per_s > b.prediction.samples_per_s;
    });
    const Row* recommended = nullptr;
    for (const Row& r : rows)
      if (r.candidate.exact && r.prediction.fits_memory) {
        recommended = &r;
        break;
      }
    nlohmann::json entry = {{"workers", n}, {"global_batch", w.batch}, {"candidates", nlohmann::json::array()}};
    for (std::size_t i = 0; i < rows.size(); ++i) {
      const Row& r = rows[i];
      nlohmann::json c = prediction_json(r.prediction);
      c["rank"] = i + 1;
      c["plugin"] = r.candidate.plugin;
      c["label"] = r.candidate.label;
      c["configuration"] = r.candidate.describe();
      c["options"] = candidate_options(r.candidate);
      c["exact"] = r.candidate.exact;
      c["speedup"] = reference.samples_per_s > 0 ? r.prediction.samples_per_s / reference.samples_per_s : 0;
      entry["candidates"].push_back(c);
    }
    if (recommended) entry["recommended"] = recommended->candidate.label;
    out["worker_counts"].push_back(entry);
    if (recommended && (overall.workers == 0 || recommended->prediction.samples_per_s > overall.row.prediction.samples_per_s))
      overall = {n, *recommended};

    if (o.json) continue;
    std::printf("\n%d worker%s, global batch %d%s:\n", n, n == 1 ? "" : "s", w.batch,
                std::size_t(w.batch) > w.samples ? " (more than an epoch's samples: samples/s is the steady state)" : "");
    std::printf("  %3s  %-14s %-28s %9s %12s %8s %11s  %s\n", "#", "strategy", "configuration", "step ms", "samples/s",
                "speedup", "mem/worker", "compute/comm/idle %");
    const std::size_t shown = o.top > 0 ? std::min<std::size_t>(rows.size(), std::size_t(o.top)) : rows.size();
    for (std::size_t i = 0; i < shown; ++i) {
      const Row& r = rows[i];
      const Prediction& p = r.prediction;
      std::string flags;
      if (!r.candidate.exact) flags += " (approximate maths)";
      if (!p.fits_memory) flags += " DOES NOT FIT";
      if (!p.note.empty()) flags += " [" + p.note + "]";
      std::printf("  %3zu  %-14s %-28s %9.3f %12s %7.2fx %11s  %s%s\n", i + 1, r.candidate.plugin.c_str(),
                  r.candidate.describe().c_str(), 1e3 * p.step_s, thousands(p.samples_per_s).c_str(),
                  reference.samples_per_s > 0 ? p.samples_per_s / reference.samples_per_s : 0.0,
                  human_bytes(p.memory_bytes).c_str(), split_text(p.compute_s, p.comm_s, p.idle_s).c_str(), flags.c_str());
    }
    if (recommended) {
      std::printf("  recommended on %d: %s %s, %s samples/s (%.2fx one %s)", n, recommended->candidate.plugin.c_str(),
                  recommended->candidate.describe().c_str(), thousands(recommended->prediction.samples_per_s).c_str(),
                  recommended->prediction.samples_per_s / reference.samples_per_s, gpu ? "GPU" : "core");
      if (!rows.empty() && !rows.front().candidate.exact && rows.front().prediction.fits_memory)
        std::printf("; %s %s would be %.0f%% faster but changes the maths (approximate parity class)",
                    rows.front().candidate.plugin.c_str(), rows.front().candidate.describe().c_str(),
                    100 * (rows.front().prediction.samples_per_s / recommended->prediction.samples_per_s - 1));
      std::printf("\n");
    }
  }
  if (overall.workers > 0) {
    out["recommended"] = {{"workers", overall.workers},
                          {"label", overall.row.candidate.label},
                          {"options", candidate_options(overall.row.candidate)},
                          {"samples_per_second", overall.row.prediction.samples_per_s}};
    if (!o.json)
      std::printf("\nrecommendation: %s %s on %d worker%s, %s samples/s predicted (the fastest exact option that fits)\n",
                  overall.row.candidate.plugin.c_str(), overall.row.candidate.describe().c_str(), overall.workers,
                  overall.workers == 1 ? "" : "s", thousands(overall.row.prediction.samples_per_s).c_str());
  }
  if (o.json) std::printf("%s\n", out.dump(2).c_str());
  return 0;
}

// ---------------------------------------------------------------------------------------------
// Predicted beside measured

// Whether a plugin version "MAJOR.MINOR" is older than major.minor; an unreadable one is not.
bool version_before(const std::string& version, int major, int minor) {
  int a = 0, b = 0;
  if (std::sscanf(version.c_str(), "%d.%d", &a, &b) != 2) return false;
  return a < major || (a == major && b < minor);
}

// Every result JSON under o.compare_dir predicted with o.profile: the rows and summary of
// `plan --compare-results --json` (schema nnpar-plan-compare/1).
nlohmann::json compare_results_json(const PlanOptions& o) {
  if (!fs::is_directory(o.compare_dir))
    throw std::invalid_argument("--compare-results: '" + o.compare_dir + "' is not a folder");
  const perf::Profile profile = perf::load_profile(o.profile);
  const perf::Network net = make_network(o);
  std::vector<fs::path> files;
  for (auto& entry : fs::recursive_directory_iterator(o.compare_dir))
    if (entry.is_regular_file() && entry.path().extension() == ".json") files.push_back(entry.path());
  std::sort(files.begin(), files.end());

  nlohmann::json rows = nlohmann::json::array();
  std::vector<double> errors;
  for (const fs::path& file : files) {
    nlohmann::json j;
    try {
      std::ifstream in(file);
      j = nlohmann::json::parse(in);
    } catch (const nlohmann::json::parse_error& e) {
      throw std::invalid_argument(file.string() + ": not valid JSON: " + e.what());
    }
    if (!j.is_object() || !j.contains("strategy") || !j.contains("epochs") || !j.contains("config")) continue;  // not a run
    nlohmann::json row = {{"file", fs::relative(file, o.compare_dir).string()}};
    try {
      const auto& s = j.at("strategy");
      const auto& cfg = j.at("config");
      const RunResult run = run_from_json(j);
      const std::vector<EpochRecord>& epochs = run.epochs;
      if (epochs.empty()) throw std::invalid_argument("no epochs");
      const std::string plugin = s.at("name").get<std::string>();
      nlohmann::json options = s.value("options", nlohmann::json::object());
      // openmp before 1.2 had one schedule, one tile per thread: what "static" is now.
      if (plugin == "openmp" && options.is_object() && !options.contains("schedule")) options["schedule"] = "static";
      // cuda and nccl-data before session 5 had no fused logits; nccl-data before 1.5 reduced
      // with NCCL only (their runs list every option, so a missing one is an older plugin).
      if ((plugin == "cuda" || plugin == "nccl-data") && options.is_object() && !options.contains("fuse_logits"))
        options["fuse_logits"] = "off";
      if (plugin == "nccl-data" && options.is_object() && !options.contains("reduce")) options["reduce"] = "nccl";
      // nccl-data before 1.9: reduce = "auto" pulled (fused_p2p); from 1.9 it pushes.
      if (plugin == "nccl-data" && options.is_object() && options.value("reduce", "") == "auto" &&
          version_before(s.value("version", ""), 1, 9))
        options["reduce"] = "fused_p2p";
      Candidate c = perf::candidate_from_options(plugin, s.value("ranks", 1), options, s.value("label", plugin));
      // openmp before 1.4 cut each product by work alone (tile_grid.hpp).
      if (plugin == "openmp" && version_before(s.value("version", ""), 1, 4)) c.omp_traffic_priced = false;
      if (plugin == "openmp" && c.workers == 0) c.workers = j.at("machine").value("cores", 1);
      // nccl-tensor before 1.1 and the GPU pipeline stage before 1.2 ran the one-block softmax.
      if ((plugin == "nccl-tensor" && version_before(s.value("version", ""), 1, 1)) ||
          ((plugin == "nccl-pipeline" || plugin == "nccl-hybrid") && version_before(s.value("version", ""), 1, 2)))
        c.one_block_softmax = true;
      perf::Workload w;
      w.layers = cfg.at("model").at("layers").get<std::vector<int>>();
      w.batch = cfg.at("train").at("batch_size").get<int>();
      w.momentum = cfg.at("train").value("momentum", 0.0) != 0.0;
      w.drop_last = cfg.at("train").value("drop_last", false);
      w.samples = epochs[0].samples;
      // As bench/gpu_grid.py reports: the median over the epochs after the first (which
      // carries one-time set-up such as NCCL connections and graph capture).
      std::vector<double> rates, steps, steal;
      for (std::size_t e = epochs.size() > 1 ? 1 : 0; e < epochs.size(); ++e) {
        rates.push_back(epochs[e].samples_per_second);
        steps.push_back(epochs[e].seconds / std::max(1.0, double(epochs[e].steps)));
        if (epochs[e].host_steal >= 0) steal.push_back(epochs[e].host_steal);
      }
      row.update({{"label", c.label},
                  {"plugin", plugin},
                  {"workers", c.workers},
                  {"configuration", c.describe()},
                  {"layers", w.layers},
                  {"batch", w.batch},
                  {"device", run.device},
                  {"measured_samples_per_second", median_of(rates)},
                  {"measured_step_seconds", median_of(steps)}});
      // Results before nnpar recorded it, or from machines without /proc/stat, have none.
      if (steal.size() == rates.size()) row["measured_host_steal"] = median_of(steal);
      const PhaseTimes& rank0 = run.rank_phases.empty() ? run.phases : run.rank_phases[0];
      if (rank0.total() > 0)
        row["measured_split"] = {{"compute", rank0.data + rank0.forward + rank0.backward + rank0.update},
                                 {"communication", rank0.communication},
                                 {"idle", rank0.idle}};
      // A run's ranks ran on one host (nnpar launches them there), whatever the number of
      // GPUs or cores the profile was calibrated with: its collectives are within one node.
      perf::Network run_net = net;
      if (o.per_node <= 0) run_net.per_node = std::max(1, c.workers);
      const Prediction p = perf::predict(profile, run_net, w, c);
      // Both sides per epoch: the short last batch counts in the measurement too.
      const double err = p.epoch_samples_per_s / row["measured_samples_per_second"].get<double>() - 1;
      row["predicted"] = prediction_json(p);
      row["predicted_samples_per_second"] = p.epoch_samples_per_s;
      row["predicted_step_seconds"] = p.step_s;
      row["error"] = err;
      errors.push_back(std::abs(err));
    } catch (const std::invalid_argument& e) {
      row["skipped"] = e.what();
    } catch (const nlohmann::json::exception& e) {
      row["skipped"] = std::string("not a result JSON nnpar wrote: ") + e.what();
    }
    rows.push_back(row);
  }
  const std::size_t within = std::count_if(errors.begin(), errors.end(), [](double e) { return e <= 0.15; });
  std::size_t quiet = 0, quiet_within = 0;
  for (const auto& r : rows)
    if (r.contains("error") && r.value("measured_host_steal", 0.0) < kNotableHostSteal) {
      ++quiet;
      quiet_within += std::abs(r.at("error").get<double>()) <= 0.15;
    }
  nlohmann::json summary = {{"predicted", errors.size()},
                            {"within_15_percent", within},
                            {"mean_abs_error", errors.empty() ? 0.0 : std::accumulate(errors.begin(), errors.end(), 0.0) / errors.size()},
                            {"median_abs_error", median_of(errors)},
                            {"worst_abs_error", errors.empty() ? 0.0 : *std::max_element(errors.begin(), errors.end())},
                            {"below_notable_steal", quiet},
                            {"below_notable_steal_within_15_percent", quiet_within}};
  return {{"schema", "nnpar-plan-compare/1"},
          {"profile",
           {{"file", o.profile},
            {"description", profile.describe()},
            {"disturbed_cpu_points", disturbed_json(profile, !o.json)}}},
          {"results", o.compare_dir},
          {"rows", rows},
          {"summary", summary}};
}

int cmd_compare_results(const PlanOptions& o) {
  const nlohmann::json compared = compare_results_json(o);
  if (o.json) {
    std::printf("%s\n", compared.dump(2).c_str());
    return 0;
  }
  const nlohmann::json& rows = compared.at("rows");
  const nlohmann::json& summary = compared.at("summary");
  std::printf("profile: %s: %s\nresults: %s\n\n", o.profile.c_str(),
              compared.at("profile").at("description").get<std::string>().c_str(), o.compare_dir.c_str());
  std::printf("| run | strategy | workers | model | batch | measured samples/s | predicted | error | rank-0 split measured | predicted | host steal |\n");
  std::printf("|---|---|---|---|---|---|---|---|---|---|---|\n");
  for (const auto& r : rows) {
    if (r.contains("skipped")) continue;
    std::string model;
    for (int v : r["layers"]) model += (model.empty() ? "" : "-") + std::to_string(v);
    const auto& p = r["predicted"];
    std::string measured_split = "-";
    if (r.contains("measured_split"))
      measured_split = split_text(r["measured_split"]["compute"], r["measured_split"]["communication"], r["measured_split"]["idle"]);
    char steal[32] = "-";
    if (r.contains("measured_host_steal")) std::snprintf(steal, sizeof steal, "%.1f%%", 100 * r["measured_host_steal"].get<double>());
    std::printf("| %s | %s %s | %d | %s | %d | %s | %s | %+.0f%% | %s | %s | %s |\n", r["file"].get<std::string>().c_str(),
                r["plugin"].get<std::string>().c_str(), r["configuration"].get<std::string>().c_str(), r["workers"].get<int>(),
                model.c_str(), r["batch"].get<int>(), thousands(r["measured_samples_per_second"]).c_str(),
                thousands(r["predicted_samples_per_second"]).c_str(), 100 * r["error"].get<double>(), measured_split.c_str(),
                split_text(p["compute_seconds"], p["communication_seconds"], p["idle_seconds"]).c_str(), steal);
  }
  for (const auto& r : rows)
    if (r.contains("skipped")) std::printf("skipped %s: %s\n", r["file"].get<std::string>().c_str(), r["skipped"].get<std::string>().c_str());
  std::printf("\n%zu runs predicted: %zu within 15%%; |error| mean %.0f%%, median %.0f%%, worst %.0f%%\n",
              summary["predicted"].get<std::size_t>(), summary["within_15_percent"].get<std::size_t>(),
              100 * summary["mean_abs_error"].get<double>(), 100 * summary["median_abs_error"].get<double>(),
              100 * summary["worst_abs_error"].get<double>());
  const std::size_t quiet = summary["below_notable_steal"], all = summary["predicted"];
  if (quiet < all)
    std::printf("runs whose host steal (median over the compared epochs) was below %.0f%% (or not recorded): %zu, "
                "%zu within 15%%\n", 100 * kNotableHostSteal, quiet, summary["below_notable_steal_within_15_percent"].get<std::size_t>());
  return 0;
}

}  // namespace

nlohmann::json predicted_beside_measured(const std::string& profile_file, const std::string& results_dir) {
  PlanOptions o;
  o.profile = profile_file;
  o.compare_dir = results_dir;
  return compare_results_json(o);
}

struct PlanCommands::State {
  CLI::App* calibrate = nullptr;
  CLI::App* plan = nullptr;
  CalibrateOptions calibrate_options;
  std::vector<std::string> mpi_ranks, gpu_ranks;
  bool no_mpi = false;
  PlanOptions plan_options;
};

PlanCommands::PlanCommands(CLI::App& app) : state_(std::make_unique<State>()) {
  State& s = *state_;
  CalibrateOptions& c = s.calibrate_options;
  s.calibrate = app.add_subcommand(
      "calibrate", "time this machine's kernels and communication (micro-benchmarks) and write a profile for `nnpar plan`");
  s.calibrate->add_option("-o,--output", c.output, "the profile to write (JSON; an existing file is never replaced "
                                                   "unless --overwrite)")
      ->type_name("FILE");
  s.calibrate->add_flag("--overwrite", c.overwrite, "replace an existing profile");
  s.calibrate->add_flag("--quick", c.quick, "a few shapes and sizes only (seconds; for tests, not for planning)");
  s.calibrate->add_flag("--gpu", c.gpu,
                        "also time the CUDA kernels on one GPU and NCCL on 2, 4, ... GPUs (runs nnpar-calibrate-gpu, "
                        "built with CUDA)");
  s.calibrate->add_flag("--no-mpi", s.no_mpi, "skip the MPI allreduce and send/recv timings");
  s.calibrate->add_option("--mpi-ranks", s.mpi_ranks, "rank counts for the MPI timings (default 2, 4, 8, ... up to the cores)")
      ->delimiter(',')
      ->type_name("N,...");
  s.calibrate->add_option("--gpu-ranks", s.gpu_ranks, "GPU counts for the NCCL timings (default 2, 4, ... up to the GPUs)")
      ->delimiter(',')
      ->type_name("N,...");
  s.calibrate->add_option("--gpu-tool", c.gpu_tool, "path of nnpar-calibrate-gpu (default: beside nnpar)")->type_name("FILE");
  s.calibrate->add_option("--launcher", c.launcher.launcher, "the MPI launcher (default mpirun)");
  s.calibrate->add_option("--launcher-args", c.launcher.launcher_args,
                          "arguments for the launcher (default --oversubscribe)")
      ->delimiter(' ')
      ->type_name("\"ARGS\"");
  s.calibrate->add_option("--mpi-child", c.mpi_child, "(internal) run as one MPI rank and write FILE")->group("");

  PlanOptions& p = s.plan_options;
  s.plan = app.add_subcommand(
      "plan", "predict step time, samples/s, memory and the compute/communication/idle split of every strategy "
              "for 1..N workers from a profile, rank them and recommend one");
  s.plan->add_option("CONFIG", p.config, "TOML configuration (model, batch; options such as micro_batches are taken as hints)");
  s.plan->add_option("--set", p.overrides, "override a config key, e.g. --set train.batch_size=1024 (repeatable)")
      ->type_name("KEY=VALUE");
  s.plan->add_option("--profile", p.profile, "machine profile written by nnpar calibrate")->required()->type_name("FILE");
  s.plan->add_option("--workers", p.workers,
                     "worker counts: A..B (A, 2A, 4A, ... and B) or a,b,c (default 1..the profile's cores or GPUs)")
      ->type_name("LIST");
  s.plan->add_option("--device", p.device, "plan for the profile's cpu or gpu (default gpu when the profile has one)")
      ->check(CLI::IsMember({"cpu", "gpu"}));
  s.plan->add_option("--batch-per-worker", p.batch_per_worker,
                     "weak scaling: the global batch grows with the workers (default: the config's global batch for all)")
      ->check(CLI::Range(1, 1 << 20));
  s.plan->add_option("--samples", p.samples, "samples per epoch (default: data.limit, else 124,800)")->check(CLI::Range(1LL, 1LL << 40));
  std::vector<std::string> presets{"measured"};
  for (auto& pr : perf::interconnect_presets()) presets.push_back(pr.name);
  s.plan->add_option("--intra-node", p.intra, "links within a node: measured (the profile) or a preset")
      ->check(CLI::IsMember(presets));
  s.plan->add_option("--inter-node", p.inter, "links between nodes: nvlink, ib-ndr (default), ib-hdr, 100gbe")
      ->check(CLI::IsMember(std::vector<std::string>(presets.begin() + 1, presets.end())));
  s.plan->add_option("--per-node", p.per_node, "workers per node (default: the profile's cores or GPUs)")
      ->check(CLI::Range(1, 1 << 20));
  s.plan->add_flag("--json", p.json, "print the plan as JSON (schema in docs/plan.md)");
  s.plan->add_option("--top", p.top, "show only the best K rows per worker count")->check(CLI::Range(1, 1000));
  s.plan->add_option("--compare-results", p.compare_dir,
                     "instead of planning: predict every result JSON in DIR (recursively) and print predicted beside "
                     "measured with the % error")
      ->type_name("DIR");
}

PlanCommands::~PlanCommands() = default;

std::optional<int> PlanCommands::run(const std::string& command_line) {
  State& s = *state_;
  auto counts = [](const std::vector<std::string>& v, const char* flag) {
    std::vector<int> out;
    for (const std::string& x : v) {
      const auto parsed = parse_workers(x);
      if (parsed.size() != 1 || parsed[0] < 2)
        throw std::invalid_argument(std::string(flag) + " " + x + ": expected rank counts of at least 2, e.g. 2,4");
      out.push_back(parsed[0]);
    }
    return out;
  };
  if (*s.calibrate) {
    s.calibrate_options.command_line = command_line;
    s.calibrate_options.mpi = !s.no_mpi;
    s.calibrate_options.mpi_ranks = counts(s.mpi_ranks, "--mpi-ranks");
    s.calibrate_options.gpu_ranks = counts(s.gpu_ranks, "--gpu-ranks");
    return run_calibrate(s.calibrate_options);
  }
  if (*s.plan) return s.plan_options.compare_dir.empty() ? cmd_plan(s.plan_options) : cmd_compare_results(s.plan_options);
  return std::nullopt;
}

}  // namespace nnpar
