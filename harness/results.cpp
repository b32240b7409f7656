#include "results.hpp"

#include <fcntl.h>
#include <sys/utsname.h>
#include <unistd.h>

#include <algorithm>
#include <cctype>
#include <cerrno>
#include <cmath>
#include <cstring>
#include <ctime>
#include <fstream>
#include <limits>
#include <sstream>
#include <stdexcept>
#include <thread>

#include <toml++/toml.h>

namespace nnpar {
namespace fs = std::filesystem;

MachineInfo machine_info() {
  MachineInfo info;
  char host[256] = {};
  if (gethostname(host, sizeof host - 1) == 0) info.host = host;
  std::ifstream cpuinfo("/proc/cpuinfo");
  for (std::string line; std::getline(cpuinfo, line);) {
    if (line.rfind("model name", 0) == 0) {
      const auto colon = line.find(':');
      if (colon != std::string::npos) info.cpu_model = line.substr(line.find_first_not_of(' ', colon + 1));
      break;
    }
  }
  struct utsname uts {};
  if (uname(&uts) == 0) info.os = std::string(uts.sysname) + " " + uts.release;
  info.cores = std::thread::hardware_concurrency();
  return info;
}

namespace {

std::string errno_text() { return std::strerror(errno); }

// Writes content to a fresh temporary file next to `near` and fsyncs it; returns its path.
fs::path write_temp(const fs::path& near, const std::string& content) {
  std::string pattern = (near.parent_path() / ("." + near.filename().string() + ".tmp-XXXXXX")).string();
  const int fd = mkstemp(pattern.data());
  if (fd < 0) throw std::runtime_error("cannot create a temporary file in '" + near.parent_path().string() + "': " + errno_text());
  const char* p = content.data();
  std::size_t left = content.size();
  while (left > 0) {
    const ssize_t n = ::write(fd, p, left);
    if (n < 0) {
      if (errno == EINTR) continue;
      const std::string why = errno_text();
      ::close(fd);
      ::unlink(pattern.c_str());
      throw std::runtime_error("cannot write '" + near.string() + "': " + why);
    }
    p += n;
    left -= std::size_t(n);
  }
  if (::fsync(fd) != 0 || ::close(fd) != 0) {
    const std::string why = errno_text();
    ::unlink(pattern.c_str());
    throw std::runtime_error("cannot write '" + near.string() + "': " + why);
  }
  return pattern;
}

void sync_directory(const fs::path& dir) {
  const int fd = ::open(dir.c_str(), O_RDONLY | O_DIRECTORY);
  if (fd >= 0) {
    ::fsync(fd);
    ::close(fd);
  }
}

}  // namespace

fs::path write_new_file(const fs::path& dir, const std::string& stem, const std::string& ext,
                        const std::string& content) {
  std::error_code ec;
  fs::create_directories(dir, ec);
  if (ec) throw std::runtime_error("cannot create results folder '" + dir.string() + "': " + ec.message());
  const fs::path temp = write_temp(dir / (stem + ext), content);
  for (int attempt = 1; attempt < 10000; ++attempt) {
    const fs::path target = dir / (attempt == 1 ? stem + ext : stem + "-" + std::to_string(attempt) + ext);
    // link() is atomic and fails with EEXIST instead of replacing: no result is ever lost.
    if (::link(temp.c_str(), target.c_str()) == 0) {
      ::unlink(temp.c_str());
      sync_directory(dir);
      return target;
    }
    if (errno != EEXIST) {
      const std::string why = errno_text();
      ::unlink(temp.c_str());
      throw std::runtime_error("cannot write '" + target.string() + "': " + why);
    }
  }
  ::unlink(temp.c_str());
  throw std::runtime_error("cannot find a free file name for '" + stem + ext + "' in '" + dir.string() + "'");
}

void write_file_atomic(const fs::path& file, const std::string& content) {
  const fs::path dir = file.parent_path().empty() ? fs::path(".") : file.parent_path();
  std::error_code ec;
  fs::create_directories(dir, ec);
  const fs::path temp = write_temp(dir / file.filename(), content);
  if (std::rename(temp.c_str(), file.c_str()) != 0) {
    const std::string why = errno_text();
    ::unlink(temp.c_str());
    throw std::runtime_error("cannot write '" + file.string() + "': " + why);
  }
  sync_directory(dir);
}

std::string file_name_part(const std::string& label) {
  std::string out = label;
  for (char& c : out)
    if (!std::isalnum(static_cast<unsigned char>(c)) && c != '-' && c != '_' && c != '.') c = '_';
  if (out.empty() || out[0] == '.') out.insert(out.begin(), '_');
  return out;
}

std::string timestamp_for_files() {
  const std::time_t now = std::time(nullptr);
  std::tm tm{};
  gmtime_r(&now, &tm);
  char buffer[32];
  std::strftime(buffer, sizeof buffer, "%Y%m%d-%H%M%S", &tm);
  return buffer;
}

std::string iso_time_now() {
  const std::time_t now = std::time(nullptr);
  std::tm tm{};
  gmtime_r(&now, &tm);
  char buffer[32];
  std::strftime(buffer, sizeof buffer, "%Y-%m-%dT%H:%M:%SZ", &tm);
  return buffer;
}

namespace {

nlohmann::json number_or_null(double v) { return std::isfinite(v) ? nlohmann::json(v) : nlohmann::json(); }

nlohmann::json phases_json(const PhaseTimes& p) {
  return {{"data", p.data}, {"forward", p.forward}, {"backward", p.backward}, {"update", p.update},
          {"communication", p.communication}, {"idle", p.idle}};
}

nlohmann::json option_json(const OptionValue& v) {
  return std::visit([](const auto& x) { return nlohmann::json(x); }, v);
}

}  // namespace

nlohmann::json run_to_json(const RunConfig& config, const RunResult& run, const ParityReport* parity,
                           const std::string& command_line) {
  const MachineInfo machine = machine_info();
  std::ostringstream config_json;
  config_json << toml::json_formatter{config.resolved, toml::json_formatter::default_flags | toml::format_flags::relaxed_float_precision};

  nlohmann::json j;
  j["nnpar_version"] = NNPAR_VERSION;
  j["git_commit"] = NNPAR_GIT_COMMIT;
  j["date"] = iso_time_now();
  j["command"] = command_line;
  j["machine"] = {{"host", machine.host}, {"cpu", machine.cpu_model}, {"cores", machine.cores},
                  {"os", machine.os}, {"device", run.device}};
  j["config_file"] = config.file.string();
  j["config"] = nlohmann::json::parse(config_json.str());
  nlohmann::json options = nlohmann::json::object();
  for (auto& [k, v] : run.options.values()) options[k] = option_json(v);
  j["strategy"] = {{"label", run.label}, {"name", run.strategy}, {"version", run.plugin_version},
                   {"file", run.plugin_file}, {"ranks", run.world_size},
                   {"parity_class", run.parity == ParityClass::exact ? "exact" : "approximate"},
                   {"options", options}};
  nlohmann::json epochs = nlohmann::json::array();
  for (auto& e : run.epochs)
    epochs.push_back({{"epoch", e.epoch}, {"loss", number_or_null(e.loss)},
                      {"train_accuracy", e.train_accuracy},
                      {"test_accuracy", number_or_null(e.test_accuracy)}, {"seconds", e.seconds},
                      {"elapsed_seconds", e.elapsed_seconds},
                      {"samples_per_second", e.samples_per_second}, {"samples", e.samples},
                      {"steps", e.steps}, {"phases", phases_json(e.phases)},
                      {"host_steal", e.host_steal >= 0 ? nlohmann::json(e.host_steal) : nlohmann::json(nullptr)}});
  j["epochs"] = epochs;
  j["totals"] = {{"train_seconds", run.train_seconds}, {"setup_seconds", run.setup_seconds},
                 {"samples_per_second", run.samples_per_second}, {"phases", phases_json(run.phases)}};
  if (!run.rank_phases.empty()) {
    nlohmann::json ranks = nlohmann::json::array();
    for (const PhaseTimes& p : run.rank_phases) ranks.push_back(phases_json(p));
    j["totals"]["rank_phases"] = ranks;
  }
  j["final"] = {{"test_accuracy", run.final_test.accuracy}, {"test_loss", number_or_null(run.final_test.loss)},
                {"test_samples", run.final_test.samples}};
  if (parity != nullptr)
    j["parity"] = {{"reference", parity->reference}, {"verdict", parity->verdict},
                   {"pass", parity->pass}, {"reason", parity->reason},
                   {"weights_checked", parity->weights_checked},
                   {"max_abs_diff", number_or_null(parity->max_abs_diff)},
                   {"max_rel_diff", number_or_null(parity->max_rel_diff)},
                   {"elements_outside_tolerance", parity->elements_outside},
                   {"accuracy_diff_pp", parity->accuracy_diff_pp}};
  return j;
}

RunResult run_from_json(const nlohmann::json& j) {
  auto number = [](const nlohmann::json& v) {
    return v.is_number() ? v.get<double>() : std::numeric_limits<double>::quiet_NaN();
  };
  auto phases = [](const nlohmann::json& p) {
    PhaseTimes t;
    t.data = p.value("data", 0.0);
    t.forward = p.value("forward", 0.0);
    t.backward = p.value("backward", 0.0);
    t.update = p.value("update", 0.0);
    t.communication = p.value("communication", 0.0);
    t.idle = p.value("idle", 0.0);
    return t;
  };
  RunResult r;
  const auto& s = j.at("strategy");
  r.label = s.at("label").get<std::string>();
  r.strategy = s.at("name").get<std::string>();
  r.plugin_version = s.value("version", "");
  r.plugin_file = s.value("file", "");
  r.world_size = s.value("ranks", 1);
  r.parity = s.value("parity_class", "exact") == "exact" ? ParityClass::exact : ParityClass::approximate;
  std::map<std::string, OptionValue> options;
  for (auto& [k, v] : s.at("options").items()) {
    if (v.is_boolean()) options[k] = v.get<bool>();
    else if (v.is_number_integer()) options[k] = v.get<std::int64_t>();
    else if (v.is_number()) options[k] = v.get<double>();
    else options[k] = v.get<std::string>();
  }
  r.options = StrategyOptions(options);
  r.device = j.at("machine").value("device", "");
  for (auto& e : j.at("epochs")) {
    EpochRecord rec;
    rec.epoch = e.at("epoch").get<int>();
    rec.loss = number(e.at("loss"));
    rec.train_accuracy = e.at("train_accuracy").get<double>();
    rec.test_accuracy = number(e.at("test_accuracy"));
    rec.seconds = e.at("seconds").get<double>();
    rec.elapsed_seconds = e.value("elapsed_seconds", 0.0);
    if (e.contains("host_steal") && e.at("host_steal").is_number()) rec.host_steal = e.at("host_steal").get<double>();
    rec.samples_per_second = e.at("samples_per_second").get<double>();
    rec.samples = e.at("samples").get<std::size_t>();
    rec.steps = e.at("steps").get<std::size_t>();
    rec.phases = phases(e.at("phases"));
    r.epochs.push_back(rec);
  }
  const auto& totals = j.at("totals");
  r.train_seconds = totals.at("train_seconds").get<double>();
  r.setup_seconds = totals.value("setup_seconds", 0.0);
  r.samples_per_second = totals.at("samples_per_second").get<double>();
  r.phases = phases(totals.at("phases"));
  if (totals.contains("rank_phases"))
    for (auto& p : totals.at("rank_phases")) r.rank_phases.push_back(phases(p));
  r.final_test.accuracy = j.at("final").at("test_accuracy").get<double>();
  r.final_test.loss = number(j.at("final").at("test_loss"));
  r.final_test.samples = j.at("final").value("test_samples", std::size_t(0));
  return r;
}

int median_index(const std::vector<double>& xs) {
  if (xs.empty()) return 0;
  std::vector<int> order(xs.size());
  for (std::size_t i = 0; i < xs.size(); ++i) order[i] = int(i);
  std::stable_sort(order.begin(), order.end(), [&](int a, int b) { return xs[std::size_t(a)] < xs[std::size_t(b)]; });
  return order[(xs.size() - 1) / 2];
}

double median_of(std::vector<double> xs) {
  if (xs.empty()) return 0;
  std::sort(xs.begin(), xs.end());
  const std::size_t n = xs.size();
  return n % 2 ? xs[n / 2] : 0.5 * (xs[n / 2 - 1] + xs[n / 2]);
}

std::pair<double, double> RepeatSummary::samples_per_second_range() const {
  if (samples_per_second.empty()) return {0, 0};
  const auto [lo, hi] = std::minmax_element(samples_per_second.begin(), samples_per_second.end());
  return {*lo, *hi};
}

nlohmann::json repeat_json(const RepeatSummary& r) {
  return {{"rounds", r.rounds()},
          {"kept_round", r.kept_round + 1},
          {"train_seconds", r.train_seconds},
          {"samples_per_second", r.samples_per_second},
          {"paired_speedup", r.paired_speedup},
          {"speedup", r.speedup},
          {"note", "rounds run every strategy once, in an order rotated by the round; this file's epochs and totals "
                   "are those of round kept_round (median training time); speedup is the median of paired_speedup "
                   "(the reference's time / this strategy's, within a round)"}};
}

std::string summary_csv(const std::vector<SummaryRow>& rows) {
  std::ostringstream out;
  out << "label,strategy,parity_class,device,epochs,train_seconds,samples_per_second,speedup,"
         "test_accuracy,max_abs_diff,max_rel_diff,verdict,results_file,rounds,samples_per_second_min,"
         "samples_per_second_max\n";
  for (auto& row : rows) {
    const RunResult& r = *row.run;
    out << r.label << ',' << r.strategy << ',' << (r.parity == ParityClass::exact ? "exact" : "approximate")
        << ",\"" << r.device << "\"," << r.epochs.size() << ',' << r.train_seconds << ','
        << r.samples_per_second << ',' << row.speedup << ',' << r.final_test.accuracy << ',';
    if (row.parity != nullptr)
      out << row.parity->max_abs_diff << ',' << row.parity->max_rel_diff << ',' << row.parity->verdict;
    else
      out << ",,";
    out << ',' << row.results_file.filename().string();
    if (row.repeats != nullptr && row.repeats->rounds() > 0) {
      const auto [lo, hi] = row.repeats->samples_per_second_range();
      out << ',' << row.repeats->rounds() << ',' << lo << ',' << hi << '\n';
    } else {
      out << ",1," << r.samples_per_second << ',' << r.samples_per_second << '\n';
    }
  }
  return out.str();
}

}  // namespace nnpar
