// Running a search: preparing and checking everything before any process starts, the
// search folder (search.json, then a folder per mode), the trial_parallel coordinator and
// workers over MPI, the data_parallel loop, results, progress and the comparison of modes.
#include "search_run.hpp"

#include <fcntl.h>
#include <mpi.h>
#include <sys/file.h>
#include <unistd.h>

#include <algorithm>
#include <chrono>
#include <cmath>
#include <cstdio>
#include <cstring>
#include <fstream>
#include <map>
#include <set>
#include <sstream>
#include <thread>

#include "config.hpp"
#include "launcher.hpp"
#include "nnpar/comm_mpi.hpp"
#include "nnpar/safetensors.hpp"
#include "plugin_loader.hpp"
#include "results.hpp"
#include "runner.hpp"
#include "search.hpp"

namespace nnpar {
namespace {

namespace fs = std::filesystem;
using json = nlohmann::json;
using Clock = std::chrono::steady_clock;

// The held-out samples are drawn with this seed, not the search's: searches with other
// seeds are then measured on the same samples.
constexpr std::uint64_t kValidationSeed = 0x5A17;
constexpr int kTagControl = 7101;
constexpr int kTagParameters = 7102;

double seconds_since(Clock::time_point t) { return std::chrono::duration<double>(Clock::now() - t).count(); }

std::string percent(double fraction) {
  char buf[32];
  std::snprintf(buf, sizeof buf, "%.2f%%", 100 * fraction);
  return buf;
}

std::string seconds_text(double s) {
  char buf[32];
  if (s < 120) std::snprintf(buf, sizeof buf, "%.1f s", s);
  else if (s < 7200) std::snprintf(buf, sizeof buf, "%.1f min", s / 60);
  else std::snprintf(buf, sizeof buf, "%.1f h", s / 3600);
  return buf;
}

// Everything a search needs, checked before any training or launch.
struct Prepared {
  RunConfig config;
  SearchSettings settings;
  std::vector<TrialParams> pool;
  std::vector<int> rungs;  // halving
  std::unique_ptr<PluginRegistry> plugins;
  StrategyEntry trial_entry, data_entry;
  bool trial_device_option = false;  // a GPU plugin with a `device` option: one GPU per worker
  bool data_needs_mpi = false;
  int data_workers = 1;              // threads or ranks of the data strategy
  std::string data_worker_kind;      // "threads", "ranks" or ""
};

const OptionSpec* find_option(const StrategyInfo& info, const std::string& name) {
  for (auto& o : info.options)
    if (o.name == name) return &o;
  return nullptr;
}

std::string node_where(const StrategyEntry& entry, const toml::node& n, const std::string& key) {
  const auto& s = n.source();
  if (!s.begin) return "--set strategy." + entry.label + "." + key;
  return (s.path ? *s.path : entry.where) + ":" + std::to_string(s.begin.line) + ":" +
         std::to_string(s.begin.column) + ": strategy[" + entry.label + "]." + key;
}

// The entry with `key` set to `value` by the search; a different value written by the user
// is an error rather than silently replaced.
StrategyEntry with_option(const StrategyEntry& entry, const std::string& key, std::int64_t value,
                          const std::string& why) {
  if (const toml::node* n = entry.table->get(key)) {
    auto v = n->as_integer();
    if (!v || v->get() != value)
      throw ConfigError(node_where(entry, *n, key) + ": set by the search (" + why + "); leave it out");
  }
  auto table = std::make_shared<toml::table>(*entry.table);
  table->insert_or_assign(key, value);
  StrategyEntry out = entry;
  out.table = table;
  return out;
}

StrategyEntry entry_for(const RunConfig& config, const std::string& label) {
  for (auto& e : config.strategies)
    if (e.label == label) return e;
  StrategyEntry adhoc;  // a plugin name with default options
  adhoc.name = adhoc.label = label;
  adhoc.table = std::make_shared<toml::table>();
  adhoc.where = "search.trial_strategy";
  return adhoc;
}

Prepared prepare(const SearchCommand& cmd, int mpi_world) {
  Prepared p;
  p.config = load_config(cmd.config, cmd.overrides);
  p.settings = load_search_settings(p.config);
  const SearchSettings& s = p.settings;
  p.pool = search_pool(s);
  if (s.method == SearchMethod::halving) p.rungs = halving_rungs(s.min_epochs, s.max_epochs, s.eta);

  std::vector<fs::path> extra(cmd.plugin_paths.begin(), cmd.plugin_paths.end());
  extra.insert(extra.end(), p.config.plugin_paths.begin(), p.config.plugin_paths.end());
  p.plugins = std::make_unique<PluginRegistry>(PluginRegistry::standard(extra));

  const bool trial_mode = s.mode != SearchMode::data_parallel;
  const bool data_mode = s.mode != SearchMode::trial_parallel;
  if (trial_mode) {
    StrategyEntry entry = entry_for(p.config, s.trial_strategy);
    const StrategyInfo& info = p.plugins->find(entry.name)->info();
    if (info.needs_mpi || entry.ranks > 1)
      throw ConfigError(p.config.file.string() + ": search.trial_strategy: '" + entry.label + "' (plugin " +
                        info.name + ") runs on several ranks; trial_parallel trains each trial on one worker "
                        "(serial, cuda, or openmp with few threads)");
    // A threaded plugin would take every core for each of the workers' trials.
    if (find_option(info, "threads") && !entry.table->get("threads"))
      entry = with_option(entry, "threads", 1, "one thread per trial");
    if (info.uses_gpu && find_option(info, "device")) {
      if (const toml::node* n = entry.table->get("device"))
        throw ConfigError(node_where(entry, *n, "device") +
                          ": set by the search (worker i trains on GPU i modulo the GPUs present); leave it out");
      p.trial_device_option = true;
    }
    validate_strategy_options(entry, info.options);
    check_capabilities(info, entry.label, 1);
    p.trial_entry = entry;
  }
  if (data_mode) {
    StrategyEntry entry = entry_for(p.config, s.data_strategy);
    const StrategyInfo& info = p.plugins->find(entry.name)->info();
    p.data_needs_mpi = info.needs_mpi || entry.ranks > 1;
    const int workers = mpi_world > 1 ? mpi_world : s.workers;
    if (p.data_needs_mpi) {
      if (const toml::node* n = entry.table->get("ranks"); n && n->value_or(std::int64_t{0}) != workers)
        throw ConfigError(node_where(entry, *n, "ranks") + ": set by the search (search.workers = " +
                          std::to_string(s.workers) + "); leave it out");
      entry.ranks = workers;
      p.data_workers = workers;
      p.data_worker_kind = "ranks";
    } else if (find_option(info, "threads")) {
      entry = with_option(entry, "threads", workers, "search.workers = " + std::to_string(s.workers));
      p.data_workers = workers;
      p.data_worker_kind = "threads";
    }
    validate_strategy_options(entry, info.options);
    check_capabilities(info, entry.label, p.data_needs_mpi ? workers : 1);
    p.data_entry = entry;
  }
  return p;
}

Dataset load_training_set(const RunConfig& config) {
  const DataConfig& d = config.data;
  Dataset all = d.format == "csv" ? load_csv(d.train_csv, d.options)
                                  : load_idx(d.train_images, d.train_labels, d.options);
  check_model_matches_data(config, all);
  return all;
}

Dataset load_test_set(const RunConfig& config) {
  const DataConfig& d = config.data;
  DataOptions options = d.options;
  options.limit = d.test_limit;
  return d.format == "csv" ? load_csv(d.test_csv, options) : load_idx(d.test_images, d.test_labels, options);
}

// A missing data file stops the search before its folder is made or any process starts.
void check_data_files(const RunConfig& config) {
  const DataConfig& d = config.data;
  const std::vector<fs::path> files = d.format == "csv" ? std::vector<fs::path>{d.train_csv, d.test_csv}
                                                        : std::vector<fs::path>{d.train_images, d.train_labels,
                                                                                d.test_images, d.test_labels};
  for (const fs::path& f : files)
    if (!fs::is_regular_file(f)) throw DataError(f.string() + ": no such file");
}

// ---------------------------------------------------------------------------------------
// Training one job

struct TrialOutcome {
  TrialRecord record;
  std::vector<float> parameters;  // on rank 0; empty when the trial diverged
};

// Trains pool[job.trial - 1] from `start` (empty: its initial weights) over epochs
// [from_epochs, to_epochs): the epoch numbers continue, so the data order is the one a run
// from scratch would see, and with momentum 0 the weights are bit-identical to it.
TrialOutcome train_trial(const Prepared& p, const StrategyEntry& entry, const ValidationSplit& data,
                         const TrialJob& job, std::span<const float> start, WorldInfo world) {
  const auto started = Clock::now();
  const TrialParams& params = p.pool[job.trial - 1];
  const ModelSpec model = trial_model(p.config.model, params);
  TrainSettings train = p.config.train;
  train.epochs = job.to_epochs;
  train.batch_size = params.batch_size;
  train.sgd.lr = float(params.lr);

  std::vector<float> initial(start.begin(), start.end());
  if (initial.empty()) {
    initial.resize(parameter_count(model));
    initialize_parameters(model, initial);
  }
  auto plugin = p.plugins->find(entry.name);
  const StrategyOptions options = validate_strategy_options(entry, plugin->info().options);
  StrategyContext context;
  context.model = &model;
  context.train = &train;
  context.train_data = &data.train;
  context.options = &options;
  context.world = world;
  context.initial_parameters = initial;
  auto strategy = plugin->create();
  strategy->setup(context);

  TrialOutcome out;
  TrialRecord& r = out.record;
  r.trial = job.trial;
  r.params = params;
  r.from_epochs = job.from_epochs;
  r.epochs = job.to_epochs;
  r.device = strategy->device_description();
  for (int epoch = job.from_epochs; epoch < job.to_epochs; ++epoch) {
    const auto t = Clock::now();
    const EpochReport report = strategy->train_epoch(epoch);
    r.train_seconds += seconds_since(t);
    r.train_loss = report.samples ? report.loss_sum / double(report.samples) : 0;
    // Every rank must stop at the same epoch: the ranks agree on divergence.
    int diverged = std::isfinite(r.train_loss) ? 0 : 1;
    if (world.size > 1) MPI_Allreduce(MPI_IN_PLACE, &diverged, 1, MPI_INT, MPI_MAX, MPI_COMM_WORLD);
    if (diverged) {
      // The record keeps the job's epochs (a rung for halving); the status says it stopped.
      r.status = "diverged";
      r.val_accuracy = 0;
      r.val_loss = std::numeric_limits<double>::quiet_NaN();
      r.seconds = seconds_since(started);
      return out;
    }
  }
  out.parameters.resize(parameter_count(model));
  strategy->get_parameters(out.parameters);  // collective in multi-rank strategies
  if (world.rank == 0) {
    const Evaluation eval = evaluate(model, out.parameters, data.validation);
    r.val_accuracy = eval.accuracy;
    r.val_loss = eval.loss;
  }
  r.seconds = seconds_since(started);
  return out;
}

// ---------------------------------------------------------------------------------------
// The results of one mode, kept by rank 0: trials.jsonl (appended and fsync'd as each job
// finishes), checkpoints while they may still be needed, and at the end the table, the best
// configuration and summary.json.

void append_line(const fs::path& file, const std::string& line) {
  const int fd = ::open(file.c_str(), O_WRONLY | O_CREAT | O_APPEND | O_CLOEXEC, 0644);
  if (fd < 0) throw std::runtime_error("cannot open '" + file.string() + "' for appending: " + std::strerror(errno));
  std::size_t done = 0;
  while (done < line.size()) {
    const ssize_t n = ::write(fd, line.data() + done, line.size() - done);
    if (n < 0 && errno == EINTR) continue;
    if (n < 0) {
      const std::string why = std::strerror(errno);
      ::close(fd);
      throw std::runtime_error("cannot append to '" + file.string() + "': " + why);
    }
    done += std::size_t(n);
  }
  if (::fsync(fd) != 0 || ::close(fd) != 0)
    throw std::runtime_error("cannot write '" + file.string() + "': " + std::strerror(errno));
}

// The records of an earlier session. A last line without its newline is a write the
// process did not finish (it was killed): it is cut off, and that job runs again.
std::vector<TrialRecord> read_records(const fs::path& file, const std::vector<TrialParams>& pool, bool quiet) {
  std::vector<TrialRecord> out;
  if (!fs::exists(file)) return out;
  std::ifstream in(file, std::ios::binary);
  std::string text((std::istreambuf_iterator<char>(in)), std::istreambuf_iterator<char>());
  const std::size_t end = text.rfind('\n') == std::string::npos ? 0 : text.rfind('\n') + 1;
  if (end < text.size()) {
    if (!quiet) std::printf("note: %s ends with an unfinished record; it is dropped and that trial runs again\n",
                            file.string().c_str());
    if (::truncate(file.c_str(), off_t(end)) != 0)
      throw std::runtime_error("cannot cut the unfinished record off '" + file.string() + "': " + std::strerror(errno));
  }
  std::istringstream lines(text.substr(0, end));
  int number = 0;
  for (std::string line; std::getline(lines, line);) {
    ++number;
    if (line.empty()) continue;
    TrialRecord r;
    try {
      r = trial_record_from_json(json::parse(line));
    } catch (const std::exception& e) {
      throw std::runtime_error(file.string() + ":" + std::to_string(number) + ": not a trial record (" + e.what() + ")");
    }
    if (r.trial < 1 || r.trial > int(pool.size()) || !(r.params == pool[r.trial - 1]))
      throw std::runtime_error(file.string() + ":" + std::to_string(number) + ": trial " + std::to_string(r.trial) +
                               " does not match this search's configurations");
    out.push_back(r);
  }
  return out;
}

std::string checkpoint_name(int trial, int epochs) {
  char buf[64];
  std::snprintf(buf, sizeof buf, "checkpoints/trial-%04d-e%d.safetensors", trial, epochs);
  return buf;
}

class ModeRecorder {
 public:
  ModeRecorder(const Prepared& p, SearchMode mode, fs::path dir, int workers, bool quiet, int stop_after)
      : p_(p), mode_(mode), dir_(std::move(dir)), workers_(workers), quiet_(quiet), stop_after_(stop_after),
        scheduler_(p.pool, p.settings.method == SearchMethod::halving, p.rungs, p.settings.eta,
                   mode == SearchMode::trial_parallel) {
    fs::create_directories(dir_ / "checkpoints");
    // Two processes appending to one trials.jsonl (a --resume while the search still runs)
    // would interleave and redo each other's trials: the second one stops here.
    lock_fd_ = ::open((dir_ / ".lock").c_str(), O_RDWR | O_CREAT | O_CLOEXEC, 0644);
    if (lock_fd_ < 0 || ::flock(lock_fd_, LOCK_EX | LOCK_NB) != 0)
      throw std::runtime_error("another nnpar search is running in '" + dir_.string() +
                               "' (wait for it to end before resuming)");
    for (const TrialRecord& r : read_records(dir_ / "trials.jsonl", p.pool, quiet)) {
      scheduler_.finished(r);
      keep(r);
      offset_ = std::max(offset_, r.finished_at);
    }
    if (!records_.empty() && !quiet_)
      std::printf("[%s] resuming: %d run(s) finished earlier (%s of search time), best so far %s\n", tag().c_str(),
                  scheduler_.jobs_done(), seconds_text(offset_).c_str(),
                  best_ ? percent(records_[*best_].val_accuracy).c_str() : "-");
    std::fflush(stdout);
  }

  ~ModeRecorder() {
    if (lock_fd_ >= 0) ::close(lock_fd_);
  }
  ModeRecorder(const ModeRecorder&) = delete;
  ModeRecorder& operator=(const ModeRecorder&) = delete;

  TrialScheduler& scheduler() { return scheduler_; }
  std::string tag() const { return to_string(mode_); }
  // Search time: earlier sessions up to their last result, then this session.
  double now() const { return offset_ + seconds_since(start_); }

  // The weights to continue a job from, or an empty vector to train from scratch.
  std::vector<float> start_for(TrialJob& job) {
    if (job.from_epochs == 0) return {};
    for (const TrialRecord& r : records_)
      if (r.trial == job.trial && r.epochs == job.from_epochs && !r.checkpoint.empty() &&
          fs::exists(dir_ / r.checkpoint)) {
        const ModelSpec model = trial_model(p_.config.model, r.params);
        std::vector<float> params(parameter_count(model));
        load_checkpoint(dir_ / r.checkpoint, model, params);
        return params;
      }
    if (!quiet_)
      std::printf("[%s] note: no checkpoint of trial %d after %d epochs; it trains from scratch\n", tag().c_str(),
                  job.trial, job.from_epochs);
    job.from_epochs = 0;
    return {};
  }

  void record(TrialRecord r, std::span<const float> params) {
    r.finished_at = now();
    const bool new_best = r.status == "ok" && (!best_ || better(r, records_[*best_]));
    if (r.status == "ok" && (halving() || new_best)) {
      r.checkpoint = checkpoint_name(r.trial, r.epochs);
      save_checkpoint(dir_ / r.checkpoint, trial_model(p_.config.model, r.params), params,
                      {{"trial", std::to_string(r.trial)}, {"epochs", std::to_string(r.epochs)}});
    }
    append_line(dir_ / "trials.jsonl", to_json(r).dump() + "\n");
    scheduler_.finished(r);
    keep(r);
    drop_unneeded_checkpoints();
    if (!quiet_) progress(r);
    if (stop_after_ > 0 && ++session_results_ >= stop_after_) {
      std::printf("[%s] stopping abruptly after %d result(s) (--stop-after)\n", tag().c_str(), session_results_);
      std::fflush(stdout);
      std::_Exit(kStoppedForTest);
    }
  }

  // Table, best configuration, test accuracy of the winner, summary.json (written last: its
  // presence marks the mode finished).
  void finish() {
    const double wall = now();
    const auto table = trial_table();
    write_file_atomic(dir_ / "table.txt", table.first);
    write_file_atomic(dir_ / "trials.csv", table.second);
    json summary = {{"mode", tag()},
                    {"method", to_string(p_.settings.method)},
                    {"strategy", strategy_label()},
                    {"workers", workers_},
                    {"wall_seconds", wall},
                    {"runs", scheduler_.jobs_done()},
                    {"trials", trials_seen()},
                    {"epochs_trained", scheduler_.epochs_done()}};
    summary["target_accuracy"] = p_.settings.target_accuracy ? json(*p_.settings.target_accuracy) : json();
    summary["time_to_target_seconds"] = time_to_target() ? json(*time_to_target()) : json();
    std::string best_line = "no trial trained successfully (every one diverged: lower the learning rates)";
    if (best_) {
      const TrialRecord& b = records_[*best_];
      const ModelSpec model = trial_model(p_.config.model, b.params);
      std::vector<float> params(parameter_count(model));
      load_checkpoint(dir_ / b.checkpoint, model, params);
      save_checkpoint(dir_ / "best.safetensors", model, params,
                      {{"trial", std::to_string(b.trial)}, {"epochs", std::to_string(b.epochs)}});
      const Dataset test = load_test_set(p_.config);
      const Evaluation eval = evaluate(model, params, test);
      write_file_atomic(dir_ / "best.toml", best_toml(b, eval));
      json best = to_json(b);
      best["checkpoint"] = "best.safetensors";
      best["test_accuracy"] = eval.accuracy;
      best["test_loss"] = eval.loss;
      best["test_samples"] = eval.samples;
      summary["best"] = best;
      best_line = "best: trial " + std::to_string(b.trial) + " (" + describe(b.params) + "), " +
                  std::to_string(b.epochs) + " epochs: validation " + percent(b.val_accuracy) + ", test " +
                  percent(eval.accuracy) + " (" + std::to_string(eval.samples) + " samples)";
    } else {
      summary["best"] = json();
    }
    write_file_atomic(dir_ / "summary.json", summary.dump(2) + "\n");
    std::error_code ec;
    fs::remove_all(dir_ / "checkpoints", ec);

    std::printf("\n[%s] %s search, %d run(s) of %d trial(s) on %s, %s\n%s%s\n", tag().c_str(),
                to_string(p_.settings.method).c_str(), scheduler_.jobs_done(), trials_seen(),
                workers_text().c_str(), seconds_text(wall).c_str(), table.first.c_str(), best_line.c_str());
    if (p_.settings.target_accuracy) {
      const auto t = time_to_target();
      std::printf("time until the best reached %s: %s\n", percent(*p_.settings.target_accuracy).c_str(),
                  t ? seconds_text(*t).c_str() : "never reached");
    }
    std::printf("results: %s (trials.jsonl, table.txt, trials.csv, best.toml, best.safetensors, summary.json)\n",
                dir_.string().c_str());
    std::fflush(stdout);
  }

 private:
  bool halving() const { return p_.settings.method == SearchMethod::halving; }

  std::string strategy_label() const {
    return mode_ == SearchMode::trial_parallel ? p_.trial_entry.label : p_.data_entry.label;
  }
  std::string workers_text() const {
    if (mode_ == SearchMode::trial_parallel)
      return std::to_string(workers_) + " worker(s), each trial on '" + p_.trial_entry.label + "'";
    return "'" + p_.data_entry.label + "'" +
           (p_.data_worker_kind.empty() ? std::string(" (one worker)")
                                        : " with " + std::to_string(workers_) + " " + p_.data_worker_kind);
  }

  void keep(const TrialRecord& r) {
    records_.push_back(r);
    if (r.status == "ok" && (!best_ || better(r, records_[*best_]))) best_ = records_.size() - 1;
  }

  // A checkpoint is kept while it is the best's, or (halving) while the trial may still be
  // promoted from that rung.
  void drop_unneeded_checkpoints() {
    for (std::size_t i = 0; i < records_.size(); ++i) {
      TrialRecord& r = records_[i];
      if (r.checkpoint.empty() || (best_ && i == *best_)) continue;
      bool needed = false;
      if (halving() && r.epochs < p_.rungs.back()) {
        needed = true;
        for (auto& later : records_)
          if (later.trial == r.trial && later.from_epochs == r.epochs) needed = false;
      }
      if (needed) continue;
      std::error_code ec;
      fs::remove(dir_ / r.checkpoint, ec);
      r.checkpoint.clear();  // only in memory: the line on disk says where it was
    }
  }

  std::optional<double> time_to_target() const {
    if (!p_.settings.target_accuracy) return std::nullopt;
    std::optional<double> first;
    for (auto& r : records_)
      if (r.status == "ok" && r.val_accuracy >= *p_.settings.target_accuracy && (!first || r.finished_at < *first))
        first = r.finished_at;
    return first;
  }

  int trials_seen() const {
    std::set<int> t;
    for (auto& r : records_) t.insert(r.trial);
    return int(t.size());
  }

  void progress(const TrialRecord& r) {
    const TrialScheduler& s = scheduler_;
    const double elapsed = now();
    double seconds = 0;
    for (auto& x : records_) seconds += x.seconds;
    // Worker-seconds per epoch so far, times the epochs still planned, over the workers.
    const double per_epoch = s.epochs_done() > 0 ? seconds / double(s.epochs_done()) : 0;
    const double left = double(s.epochs_planned() - s.epochs_done()) - 0.5 * double(s.epochs_in_flight());
    const int lanes = mode_ == SearchMode::trial_parallel ? workers_ : 1;
    const double eta = std::max(0.0, left) * per_epoch / lanes;
    const TrialRecord& b = records_[best_.value_or(0)];
    const std::string unit = halving() ? "runs" : "trials";
    std::string result = r.status == "ok" ? "val " + percent(r.val_accuracy) : std::string("DIVERGED");
    std::printf("[%s] trial %d (%s), epochs %s%d: %s in %s%s | %s: %d done, %d running, %d left | best %s "
                "(trial %d, epochs %d) | %s, ETA %s\n",
                tag().c_str(), r.trial, describe(r.params).c_str(),
                r.from_epochs ? (std::to_string(r.from_epochs) + "->").c_str() : "", r.epochs, result.c_str(),
                seconds_text(r.seconds).c_str(),
                mode_ == SearchMode::trial_parallel ? (" on worker " + std::to_string(r.worker)).c_str() : "",
                unit.c_str(), s.jobs_done(), s.running(), s.jobs_left(),
                best_ ? percent(b.val_accuracy).c_str() : "-", best_ ? b.trial : 0, best_ ? b.epochs : 0,
                seconds_text(elapsed).c_str(), seconds_text(eta).c_str());
    std::fflush(stdout);
  }

  // The text table and the CSV: a row per trial, at the furthest rung it reached.
  std::pair<std::string, std::string> trial_table() const {
    std::map<int, std::vector<const TrialRecord*>> by_trial;
    for (auto& r : records_) by_trial[r.trial].push_back(&r);
    std::ostringstream text, csv;
    char line[512];
    std::snprintf(line, sizeof line, "  %5s %6s %6s %9s %6s %6s %9s %9s %9s %7s  %s\n", "trial", "layers", "width",
                  "lr", "batch", "epochs", "val acc", "val loss", "time s", "worker", halving() ? "rungs (epochs:val acc)" : "");
    text << line;
    csv << "trial,layers,width,lr,batch_size,epochs,status,val_accuracy,val_loss,seconds,workers,rungs,best\n";
    for (auto& [trial, list] : by_trial) {
      std::sort(list.begin(), list.end(), [](auto* a, auto* b) { return a->epochs < b->epochs; });
      const TrialRecord& last = *list.back();
      double seconds = 0;
      std::vector<std::string> worker_list;
      std::string rungs;
      for (auto* r : list) {
        seconds += r->seconds;
        const std::string w = r->worker == 0 ? "all" : std::to_string(r->worker);
        if (std::find(worker_list.begin(), worker_list.end(), w) == worker_list.end()) worker_list.push_back(w);
        if (halving()) {
          if (!rungs.empty()) rungs += ' ';
          rungs += std::to_string(r->epochs);
          rungs += ':';
          rungs += r->status == "ok" ? percent(r->val_accuracy) : std::string("diverged");
        }
      }
      std::string workers;
      for (auto& w : worker_list) workers += (workers.empty() ? "" : ",") + w;
      const bool is_best = best_ && records_[*best_].trial == trial;
      const std::string acc = last.status == "ok" ? percent(last.val_accuracy) : std::string("diverged");
      char loss[32] = "-";
      if (std::isfinite(last.val_loss)) std::snprintf(loss, sizeof loss, "%.5g", last.val_loss);
      std::snprintf(line, sizeof line, "%s %5d %6d %6d %9.4g %6d %6d %9s %9s %9.3f %7s  %s\n", is_best ? "*" : " ",
                    trial, last.params.layers, last.params.width, last.params.lr, last.params.batch_size, last.epochs,
                    acc.c_str(), loss, seconds, workers.c_str(), rungs.c_str());
      text << line;
      csv << trial << ',' << last.params.layers << ',' << last.params.width << ',' << last.params.lr << ','
          << last.params.batch_size << ',' << last.epochs << ',' << last.status << ',' << last.val_accuracy << ','
          << (std::isfinite(last.val_loss) ? std::to_string(last.val_loss) : std::string()) << ',' << seconds
          << ",\"" << workers << "\",\"" << rungs << "\"," << (is_best ? 1 : 0) << '\n';
    }
    return {text.str(), csv.str()};
  }

  // The run configuration with the winner's hyper-parameters: `nnpar train best.toml`.
  std::string best_toml(const TrialRecord& b, const Evaluation& test) const {
    toml::table doc = p_.config.resolved;
    toml::array layers;
    for (int n : trial_model(p_.config.model, b.params).layer_sizes) layers.push_back(n);
    doc["model"].as_table()->insert_or_assign("layers", std::move(layers));
    toml::table& train = *doc["train"].as_table();
    train.insert_or_assign("lr", b.params.lr);
    train.insert_or_assign("batch_size", b.params.batch_size);
    train.insert_or_assign("epochs", b.epochs);
    std::ostringstream out;
    out << "# The best configuration of the search in " << dir_.parent_path().string() << " (" << tag()
        << "):\n# trial " << b.trial << " (" << describe(b.params) << "), " << b.epochs << " epochs: validation "
        << percent(b.val_accuracy) << " on " << p_.settings.validation * 100
        << "% of the training set held out, test " << percent(test.accuracy)
        << ".\n# `nnpar train` on it trains on the whole training set.\n\n"
        << doc << "\n";
    return out.str();
  }

  const Prepared& p_;
  SearchMode mode_;
  fs::path dir_;
  int workers_;
  bool quiet_;
  int stop_after_;
  int session_results_ = 0;
  TrialScheduler scheduler_;
  std::vector<TrialRecord> records_;
  std::optional<std::size_t> best_;
  double offset_ = 0;
  int lock_fd_ = -1;
  Clock::time_point start_ = Clock::now();
};

// ---------------------------------------------------------------------------------------
// MPI messages: JSON text on kTagControl, parameters as floats on kTagParameters.

void sleep_briefly() { std::this_thread::sleep_for(std::chrono::milliseconds(1)); }

// Polls instead of blocking in MPI_Recv, which spins a core at 100% in OpenMPI: an idle
// coordinator or worker must not take CPU time from the workers that train.
MPI_Status wait_message(int source) {
  MPI_Status status;
  for (;;) {
    int flag = 0;
    MPI_Iprobe(source, kTagControl, MPI_COMM_WORLD, &flag, &status);
    if (flag) return status;
    sleep_briefly();
  }
}

json receive_json(const MPI_Status& status) {
  int count = 0;
  MPI_Get_count(&status, MPI_CHAR, &count);
  std::string text(std::size_t(count), '\0');
  MPI_Recv(text.data(), count, MPI_CHAR, status.MPI_SOURCE, kTagControl, MPI_COMM_WORLD, MPI_STATUS_IGNORE);
  return json::parse(text);
}

void send_json(const json& j, int dest) {
  const std::string text = j.dump();
  MPI_Send(text.data(), int(text.size()), MPI_CHAR, dest, kTagControl, MPI_COMM_WORLD);
}

void send_floats(std::span<const float> v, int dest) {
  MPI_Send(v.data(), int(v.size()), MPI_FLOAT, dest, kTagParameters, MPI_COMM_WORLD);
}

std::vector<float> receive_floats(std::size_t count, int source) {
  std::vector<float> v(count);
  MPI_Recv(v.data(), int(count), MPI_FLOAT, source, kTagParameters, MPI_COMM_WORLD, MPI_STATUS_IGNORE);
  return v;
}

json job_json(const TrialJob& job, std::size_t start_count) {
  return {{"type", "job"}, {"trial", job.trial}, {"from", job.from_epochs}, {"to", job.to_epochs},
          {"start_parameters", start_count}};
}

// ---------------------------------------------------------------------------------------
// trial_parallel

void run_coordinator(const Prepared& p, const fs::path& dir, int workers, const SearchCommand& cmd) {
  ModeRecorder recorder(p, SearchMode::trial_parallel, dir, workers, cmd.quiet, cmd.stop_after);
  TrialScheduler& scheduler = recorder.scheduler();
  std::vector<int> idle;
  std::set<int> checked_in;
  while (true) {
    while (!idle.empty()) {
      auto job = scheduler.next();
      if (!job) break;
      const int worker = idle.back();
      idle.pop_back();
      const std::vector<float> start = recorder.start_for(*job);
      send_json(job_json(*job, start.size()), worker);
      if (!start.empty()) send_floats(start, worker);
    }
    if (scheduler.done() && int(checked_in.size()) == workers) break;
    const MPI_Status status = wait_message(MPI_ANY_SOURCE);
    const json msg = receive_json(status);
    const int worker = status.MPI_SOURCE;
    checked_in.insert(worker);
    if (msg.at("type") == "result") {
      TrialRecord r = trial_record_from_json(msg.at("record"));
      r.worker = worker;
      std::vector<float> params;
      if (msg.at("parameters").get<std::size_t>() > 0)
        params = receive_floats(msg.at("parameters").get<std::size_t>(), worker);
      recorder.record(r, params);
    }
    idle.push_back(worker);
  }
  for (int w = 1; w <= workers; ++w) send_json({{"type", "stop"}}, w);
  recorder.finish();
}

// The index of this worker among the workers on its node (the coordinator excluded), for
// one GPU per worker on every node. Collective: every rank calls it, rank 0 too.
int node_local_worker_index(bool coordinator) {
  MPI_Comm workers = MPI_COMM_NULL;
  MPI_Comm_split(MPI_COMM_WORLD, coordinator ? MPI_UNDEFINED : 0, 0, &workers);
  if (workers == MPI_COMM_NULL) return -1;
  MPI_Comm node = MPI_COMM_NULL;
  MPI_Comm_split_type(workers, MPI_COMM_TYPE_SHARED, 0, MPI_INFO_NULL, &node);
  int index = 0;
  MPI_Comm_rank(node, &index);
  MPI_Comm_free(&node);
  MPI_Comm_free(&workers);
  return index;
}

void run_worker(const Prepared& p, int rank, int local_index) {
  const ValidationSplit data = split_validation(load_training_set(p.config), p.settings.validation);
  StrategyEntry entry = p.trial_entry;
  if (p.trial_device_option) {
    const int gpus = std::max(1, probe_gpus().count);
    auto table = std::make_shared<toml::table>(*entry.table);
    table->insert_or_assign("device", std::int64_t(local_index % gpus));
    entry.table = table;
  }
  send_json({{"type", "ready"}}, 0);
  while (true) {
    const json msg = receive_json(wait_message(0));
    if (msg.at("type") == "stop") break;
    const TrialJob job{msg.at("trial").get<int>(), msg.at("from").get<int>(), msg.at("to").get<int>()};
    std::vector<float> start;
    if (msg.at("start_parameters").get<std::size_t>() > 0)
      start = receive_floats(msg.at("start_parameters").get<std::size_t>(), 0);
    TrialOutcome out = train_trial(p, entry, data, job, start, WorldInfo{0, 1});
    out.record.worker = rank;
    send_json({{"type", "result"}, {"record", to_json(out.record)}, {"parameters", out.parameters.size()}}, 0);
    if (!out.parameters.empty()) send_floats(out.parameters, 0);
  }
}

// ---------------------------------------------------------------------------------------
// data_parallel: every rank of the strategy takes part in every trial; rank 0 schedules and
// broadcasts each job.

void broadcast_json(json& j, WorldInfo world) {
  if (world.size == 1) return;
  std::string text = world.rank == 0 ? j.dump() : std::string();
  long size = long(text.size());
  MPI_Bcast(&size, 1, MPI_LONG, 0, MPI_COMM_WORLD);
  text.resize(std::size_t(size));
  MPI_Bcast(text.data(), int(size), MPI_CHAR, 0, MPI_COMM_WORLD);
  if (world.rank != 0) j = json::parse(text);
}

void run_data_parallel(const Prepared& p, const fs::path& dir, WorldInfo world, const SearchCommand& cmd) {
  std::unique_ptr<ModeRecorder> recorder;
  if (world.rank == 0)
    recorder = std::make_unique<ModeRecorder>(p, SearchMode::data_parallel, dir, p.data_workers, cmd.quiet,
                                              cmd.stop_after);
  const ValidationSplit data = split_validation(load_training_set(p.config), p.settings.validation);
  while (true) {
    json msg = {{"type", "stop"}};
    std::vector<float> start;
    if (world.rank == 0) {
      if (auto job = recorder->scheduler().next()) {
        start = recorder->start_for(*job);
        msg = job_json(*job, start.size());
      }
    }
    broadcast_json(msg, world);
    if (msg.at("type") == "stop") break;
    const TrialJob job{msg.at("trial").get<int>(), msg.at("from").get<int>(), msg.at("to").get<int>()};
    const std::size_t count = msg.at("start_parameters").get<std::size_t>();
    if (world.size > 1 && count > 0) {
      start.resize(count);
      MPI_Bcast(start.data(), int(count), MPI_FLOAT, 0, MPI_COMM_WORLD);
    }
    TrialOutcome out = train_trial(p, p.data_entry, data, job, start, world);
    if (world.rank == 0) recorder->record(out.record, out.parameters);
  }
  if (world.rank == 0) recorder->finish();
}

// ---------------------------------------------------------------------------------------
// The search folder

std::optional<std::string> first_difference(const json& was, const json& now, const std::string& path) {
  if (was.is_object() && now.is_object()) {
    for (auto& [k, v] : was.items()) {
      const std::string sub = path.empty() ? k : path + "." + k;
      if (!now.contains(k)) return sub + ": was " + v.dump() + ", now not set";
      if (auto d = first_difference(v, now.at(k), sub)) return d;
    }
    for (auto& [k, v] : now.items())
      if (!was.contains(k)) return (path.empty() ? k : path + "." + k) + ": was not set, now " + v.dump();
    return std::nullopt;
  }
  if (was != now) return path + ": was " + was.dump() + ", now " + now.dump();
  return std::nullopt;
}

fs::path create_search_dir(const Prepared& p, const SearchCommand& cmd, const std::string& command_line) {
  const fs::path base = p.config.output.dir;
  std::error_code ec;
  fs::create_directories(base, ec);
  if (ec) throw std::runtime_error("cannot create results folder '" + base.string() + "': " + ec.message());
  const std::string stem = timestamp_for_files() + "-search";
  fs::path dir;
  for (int attempt = 1;; ++attempt) {
    dir = base / (attempt == 1 ? stem : stem + "-" + std::to_string(attempt));
    if (fs::create_directory(dir, ec)) break;  // false when it exists: never reuse a folder
    if (ec) throw std::runtime_error("cannot create '" + dir.string() + "': " + ec.message());
  }
  json meta = {{"nnpar_version", NNPAR_VERSION}, {"git_commit", NNPAR_GIT_COMMIT}, {"created", iso_time_now()},
               {"command", command_line}, {"config_file", fs::absolute(cmd.config).string()},
               {"overrides", cmd.overrides}, {"fingerprint", p.settings.fingerprint}};
  write_file_atomic(dir / "search.json", meta.dump(2) + "\n");
  return dir;
}

void check_resume_dir(const Prepared& p, const fs::path& dir) {
  const fs::path meta_file = dir / "search.json";
  if (!fs::is_directory(dir)) throw ConfigError("--resume " + dir.string() + ": no such folder");
  if (!fs::exists(meta_file))
    throw ConfigError("--resume " + dir.string() + ": not a search folder (no search.json in it)");
  json meta;
  try {
    std::ifstream in(meta_file);
    meta = json::parse(in);
  } catch (const std::exception& e) {
    throw ConfigError("--resume " + dir.string() + ": search.json is unreadable (" + e.what() + ")");
  }
  if (auto d = first_difference(meta.value("fingerprint", json::object()), p.settings.fingerprint, ""))
    throw ConfigError("--resume " + dir.string() + ": the config differs from the one this search was started with (" +
                      *d + "); resume with the same config and --set options, or start a new search");
}

std::string mode_summary_line(const json& s, const std::optional<double>& target) {
  char line[512];
  const json& best = s.at("best");
  std::string to_target = "-";
  if (target) to_target = s.at("time_to_target_seconds").is_number()
                              ? seconds_text(s.at("time_to_target_seconds").get<double>()) : "never";
  std::snprintf(line, sizeof line, "%-15s %-16s %7d %10s %10s %6d %7d %9s %9s %6s\n",
                s.at("mode").get<std::string>().c_str(), s.at("strategy").get<std::string>().c_str(),
                s.at("workers").get<int>(), seconds_text(s.at("wall_seconds").get<double>()).c_str(),
                to_target.c_str(), s.at("runs").get<int>(), s.at("epochs_trained").get<int>(),
                best.is_null() ? "-" : percent(best.at("val_accuracy").get<double>()).c_str(),
                best.is_null() ? "-" : percent(best.at("test_accuracy").get<double>()).c_str(),
                best.is_null() ? "-" : std::to_string(best.at("trial").get<int>()).c_str());
  return line;
}

void compare_modes(const Prepared& p, const fs::path& dir) {
  json summaries = json::array();
  for (const char* mode : {"trial_parallel", "data_parallel"}) {
    std::ifstream in(dir / mode / "summary.json");
    summaries.push_back(json::parse(in));
  }
  const auto target = p.settings.target_accuracy;
  std::ostringstream text;
  char head[512];
  std::snprintf(head, sizeof head, "%-15s %-16s %7s %10s %10s %6s %7s %9s %9s %6s\n", "mode", "strategy", "workers",
                "wall", target ? ("to " + percent(*target)).c_str() : "to target", "runs", "epochs", "best val",
                "best test", "trial");
  text << head;
  for (auto& s : summaries) text << mode_summary_line(s, target);
  auto faster = [&](const std::string& what, double a, double b) {
    const bool first = a <= b;
    char line[256];
    std::snprintf(line, sizeof line, "%s: %s (%.2fx)\n", what.c_str(), first ? "trial_parallel" : "data_parallel",
                  first ? b / a : a / b);
    return std::string(line);
  };
  const double wall_t = summaries[0].at("wall_seconds"), wall_d = summaries[1].at("wall_seconds");
  text << faster("faster to finish", wall_t, wall_d);
  if (target) {
    const json& a = summaries[0].at("time_to_target_seconds");
    const json& b = summaries[1].at("time_to_target_seconds");
    if (a.is_number() && b.is_number()) text << faster("faster to " + percent(*target), a.get<double>(), b.get<double>());
    else
      text << "to " << percent(*target) << ": "
           << (a.is_number()   ? "only trial_parallel got there"
               : b.is_number() ? "only data_parallel got there"
                               : "neither got there")
           << "\n";
  }
  json comparison = {{"target_accuracy", target ? json(*target) : json()}, {"modes", summaries}};
  write_file_atomic(dir / "comparison.txt", text.str());
  write_file_atomic(dir / "comparison.json", comparison.dump(2) + "\n");
  std::printf("\ncomparison of the two modes (%s):\n%s", dir.string().c_str(), text.str().c_str());
  std::fflush(stdout);
}

std::vector<std::string> child_args(const SearchCommand& cmd, const fs::path& dir, const std::string& mode) {
  std::vector<std::string> args{"search", cmd.config};
  for (auto& s : cmd.overrides) args.insert(args.end(), {"--set", s});
  for (auto& s : cmd.plugin_paths) args.insert(args.end(), {"--plugin-path", s});
  args.insert(args.end(), {"--search-dir", dir.string(), "--run-mode", mode});
  if (cmd.quiet) args.push_back("--quiet");
  if (cmd.stop_after > 0) args.insert(args.end(), {"--stop-after", std::to_string(cmd.stop_after)});
  return args;
}

void print_plan(const Prepared& p, const fs::path& dir, bool resumed) {
  const SearchSettings& s = p.settings;
  std::printf("search: %s, %zu configuration(s)", to_string(s.method).c_str(), p.pool.size());
  if (s.method == SearchMethod::halving) {
    std::printf(", rungs of");
    for (int r : p.rungs) std::printf(" %d", r);
    std::printf(" epochs, eta %d", s.eta);
  }
  std::printf("; metric: validation accuracy on %g%% of the training set; %s %s\n", 100 * s.validation,
              resumed ? "resuming" : "results in", dir.string().c_str());
  if (s.method == SearchMethod::halving) {
    const auto plan = halving_plan(int(p.pool.size()), int(p.rungs.size()), s.eta);
    if (plan.back() == 0) {
      std::printf("note: synchronous halving keeps");
      for (int n : plan) std::printf(" %d", n);
      std::printf(" configuration(s) per rung: the last rung (%d epochs) needs at least %d configurations\n",
                  p.rungs.back(), int(std::pow(s.eta, double(p.rungs.size() - 1))));
    }
  }
  std::fflush(stdout);
}

}  // namespace

ValidationSplit split_validation(const Dataset& all, double fraction) {
  if (all.count < 2)
    throw DataError("the training set has " + std::to_string(all.count) +
                    " sample(s); a search needs at least 2 to hold some out for validation");
  const std::size_t held = std::clamp<std::size_t>(std::size_t(std::llround(double(all.count) * fraction)), 1,
                                                   all.count - 1);
  std::vector<std::uint32_t> order = epoch_order(all.count, kValidationSeed, 0, true);
  std::vector<std::uint32_t> validation(order.begin(), order.begin() + std::ptrdiff_t(held));
  std::vector<std::uint32_t> train(order.begin() + std::ptrdiff_t(held), order.end());
  std::sort(validation.begin(), validation.end());
  std::sort(train.begin(), train.end());
  auto take = [&](const std::vector<std::uint32_t>& idx, const std::string& what) {
    Dataset d;
    d.count = idx.size();
    d.rows = all.rows;
    d.cols = all.cols;
    d.num_classes = all.num_classes;
    d.pixel_scale = all.pixel_scale;
    d.source = all.source + " (" + what + ")";
    const std::size_t f = std::size_t(all.features());
    d.pixels.resize(idx.size() * f);
    d.labels.resize(idx.size());
    for (std::size_t i = 0; i < idx.size(); ++i) {
      std::copy_n(all.pixels.begin() + std::ptrdiff_t(idx[i] * f), f, d.pixels.begin() + std::ptrdiff_t(i * f));
      d.labels[i] = all.labels[idx[i]];
    }
    return d;
  };
  return {take(train, "search training part"), take(validation, "held out for validation")};
}

int run_search_command(const SearchCommand& cmd, const std::string& command_line) {
  const bool under_mpi = mpi::launched_by_mpi();
  if (under_mpi) mpi::initialize();  // first: an error on any rank then ends every rank
  const WorldInfo world = under_mpi ? WorldInfo{mpi::world_rank(), mpi::world_size()} : WorldInfo{};
  const bool lead = world.rank == 0;
  const Prepared p = prepare(cmd, world.size);
  const SearchSettings& s = p.settings;

  // The mode(s) this process runs, and whether it starts them under the MPI launcher.
  std::vector<SearchMode> modes;
  if (!cmd.run_mode.empty()) {
    modes = {cmd.run_mode == "trial_parallel" ? SearchMode::trial_parallel : SearchMode::data_parallel};
  } else if (s.mode == SearchMode::both) {
    if (world.size > 1)
      throw ConfigError(p.config.file.string() + ": search.mode: \"both\" starts each mode itself; run nnpar search "
                        "without mpirun, or choose one mode (--set search.mode=trial_parallel)");
    modes = {SearchMode::trial_parallel, SearchMode::data_parallel};
  } else {
    modes = {s.mode};
  }
  if (world.size > 1 && modes.front() == SearchMode::data_parallel && !p.data_needs_mpi)
    throw ConfigError(p.config.file.string() + ": search.data_strategy: '" + p.data_entry.label +
                      "' runs in one process; start nnpar search without mpirun");
  if (under_mpi && modes.front() == SearchMode::trial_parallel && world.size < 2)
    throw ConfigError("trial_parallel under mpirun needs at least 2 ranks (a coordinator and a worker), not " +
                      std::to_string(world.size));

  // The folder: given to a child, resumed, or new (rank 0 alone touches files).
  fs::path dir;
  if (lead) {
    check_data_files(p.config);
    if (!cmd.search_dir.empty()) {
      dir = cmd.search_dir;
    } else if (!cmd.resume.empty()) {
      dir = cmd.resume;
      check_resume_dir(p, dir);
    } else {
      dir = create_search_dir(p, cmd, command_line);
    }
    if (cmd.search_dir.empty() && !cmd.quiet) print_plan(p, dir, !cmd.resume.empty());
    if (world.size > 1 && s.workers != world.size - 1 && modes.front() == SearchMode::trial_parallel && !cmd.quiet &&
        cmd.search_dir.empty())
      std::printf("note: %d ranks under mpirun: a coordinator and %d worker(s) (search.workers = %d is not used)\n",
                  world.size, world.size - 1, s.workers);
  }

  for (SearchMode mode : modes) {
    const std::string name = to_string(mode);
    int finished = 0;
    if (lead) finished = fs::exists(dir / name / "summary.json") ? 1 : 0;
    if (world.size > 1) MPI_Bcast(&finished, 1, MPI_INT, 0, MPI_COMM_WORLD);
    if (finished) {
      if (lead && !cmd.quiet) {
        std::printf("\n[%s] finished earlier:\n", name.c_str());
        std::ifstream table(dir / name / "table.txt");
        std::printf("%s", std::string(std::istreambuf_iterator<char>(table), {}).c_str());
        std::printf("results: %s\n", (dir / name).string().c_str());
      }
      continue;
    }
    const bool self_launch = !under_mpi && (mode == SearchMode::trial_parallel || p.data_needs_mpi);
    if (self_launch) {
      const int ranks = mode == SearchMode::trial_parallel ? s.workers + 1 : p.data_workers;
      const auto command = mpi_command(p.config.mpi, ranks, child_args(cmd, dir, name));
      if (!cmd.quiet) std::printf("[%s] starting %d ranks: %s\n", name.c_str(), ranks, join_command(command).c_str());
      std::fflush(stdout);
      const int status = run_and_wait(command);
      if (status != 0 || !fs::exists(dir / name / "summary.json"))
        throw std::runtime_error("the " + name + " search on " + std::to_string(ranks) + " ranks failed (exit status " +
                                 std::to_string(status) + "; its messages are above); the trials it finished are "
                                 "kept: carry on with --resume " + dir.string());
      continue;
    }
    if (mode == SearchMode::trial_parallel) {
      const int local_index = node_local_worker_index(lead);
      if (lead) run_coordinator(p, dir / name, world.size - 1, cmd);
      else run_worker(p, world.rank, local_index);
    } else {
      run_data_parallel(p, dir / name, world, cmd);
    }
  }
  if (lead && cmd.run_mode.empty() && s.mode == SearchMode::both) compare_modes(p, dir);
  return 0;
}

}  // namespace nnpar
