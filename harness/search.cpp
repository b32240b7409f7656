// The [search] table, the space of configurations and the trial schedulers.
#include "search.hpp"

#include <algorithm>
#include <charconv>
#include <cmath>
#include <cstdio>
#include <cstdlib>
#include <limits>
#include <numeric>
#include <sstream>

namespace nnpar {
namespace {

const std::vector<std::string>& search_keys() {
  static const std::vector<std::string> keys = {
      "method", "mode", "layers", "width", "lr", "batch_size", "epochs", "trials", "seed", "sample",
      "validation", "target_accuracy", "workers", "min_epochs", "max_epochs", "eta",
      "trial_strategy", "data_strategy"};
  return keys;
}

std::string type_name(const toml::node& n) {
  switch (n.type()) {
    case toml::node_type::table: return "a table";
    case toml::node_type::array: return "an array";
    case toml::node_type::string: return "a string";
    case toml::node_type::integer: return "an integer (" + std::to_string(n.as_integer()->get()) + ")";
    case toml::node_type::floating_point: {
      char buf[64];
      auto r = std::to_chars(buf, buf + sizeof buf, n.as_floating_point()->get());
      return "a float (" + std::string(buf, r.ptr) + ")";
    }
    case toml::node_type::boolean: return "a boolean";
    default: return "a date or time";
  }
}

std::string format_number(double v) {
  char buf[64];
  auto r = std::to_chars(buf, buf + sizeof buf, v);
  return std::string(buf, r.ptr);
}

// The value rounded to 4 significant digits, so that sampled learning rates read well in
// tables and in the best configuration's TOML.
double round_significant(double v) {
  char buf[64];
  std::snprintf(buf, sizeof buf, "%.4g", v);
  return std::strtod(buf, nullptr);
}

std::string quoted(const std::vector<std::string>& items) {
  std::string out;
  for (std::size_t i = 0; i < items.size(); ++i) out += (i ? ", \"" : "\"") + items[i] + "\"";
  return out;
}

// Reads the [search] table with messages in the style of config.cpp: a node from the file
// is named by file:line:col, one made by --set by the override.
class SearchReader {
 public:
  SearchReader(const toml::table& table, std::string file) : table_(table), file_(std::move(file)) {}

  std::string where(const toml::node& n, const std::string& key) const {
    const auto& src = n.source();
    if (!src.begin) return "--set search." + key;
    const std::string file = src.path ? *src.path : file_;
    return file + ":" + std::to_string(src.begin.line) + ":" + std::to_string(src.begin.column) +
           ": search." + key;
  }
  std::string where_table(const std::string& key) const { return where(table_, key); }
  [[noreturn]] void fail(const toml::node& n, const std::string& key, const std::string& msg) const {
    throw ConfigError(where(n, key) + ": " + msg);
  }
  [[noreturn]] void fail_type(const toml::node& n, const std::string& key, const std::string& expected) const {
    fail(n, key, "expected " + expected + ", found " + type_name(n));
  }
  const toml::node* get(const std::string& key) const { return table_.get(key); }

  void check_unknown() const {
    const toml::key* first = nullptr;
    for (auto& [k, v] : table_) {
      const std::string key(k.str());
      if (std::find(search_keys().begin(), search_keys().end(), key) != search_keys().end()) continue;
      const auto before = [](const toml::source_region& a, const toml::source_region& b) {
        return std::pair(a.begin.line, a.begin.column) < std::pair(b.begin.line, b.begin.column);
      };
      if (!first || before(k.source(), first->source())) first = &k;
    }
    if (!first) return;
    const std::string key(first->str());
    const std::string m = closest_match(key, search_keys());
    const toml::node& n = *table_.get(key);
    std::string pos = where(n, key);
    if (first->source().begin) {
      const auto& s = first->source();
      pos = (s.path ? *s.path : file_) + ":" + std::to_string(s.begin.line) + ":" +
            std::to_string(s.begin.column) + ": search." + key;
    }
    throw ConfigError(pos + ": unknown key" + (m.empty() ? "" : " (did you mean '" + m + "'?)"));
  }

  std::optional<std::int64_t> integer(const std::string& key, std::int64_t lo, std::int64_t hi) const {
    const toml::node* n = get(key);
    if (!n) return std::nullopt;
    auto v = n->as_integer();
    if (!v) fail_type(*n, key, "an integer");
    check_range(*n, key, v->get(), lo, hi);
    return v->get();
  }
  void check_range(const toml::node& n, const std::string& key, std::int64_t x, std::int64_t lo,
                   std::int64_t hi) const {
    if (x < lo || x > hi)
      fail(n, key, (hi == std::numeric_limits<std::int64_t>::max() ? "must be >= " + std::to_string(lo)
                                                                    : "must be in " + std::to_string(lo) + ".." +
                                                                          std::to_string(hi)) +
                       ", found " + std::to_string(x));
  }
  std::optional<double> real(const std::string& key, const toml::node* n) const {
    if (!n) return std::nullopt;
    double x = 0;
    if (auto i = n->as_integer()) x = double(i->get());
    else if (auto f = n->as_floating_point()) x = f->get();
    else fail_type(*n, key, "a number");
    if (!std::isfinite(x)) fail(*n, key, "must be finite, found " + format_number(x));
    return x;
  }
  std::optional<std::string> string(const std::string& key) const {
    const toml::node* n = get(key);
    if (!n) return std::nullopt;
    auto v = n->as_string();
    if (!v) fail_type(*n, key, "a string");
    return v->get();
  }
  std::optional<std::string> choice(const std::string& key, const std::vector<std::string>& choices) const {
    auto v = string(key);
    if (v && std::find(choices.begin(), choices.end(), *v) == choices.end()) {
      const std::string m = closest_match(*v, choices);
      fail(*get(key), key, "must be one of " + quoted(choices) + ", found \"" + *v + "\"" +
                               (m.empty() ? "" : " (did you mean '" + m + "'?)"));
    }
    return v;
  }

  // An integer dimension: a number, a list of numbers, or {min, max, step}.
  std::optional<std::vector<int>> int_dimension(const std::string& key, std::int64_t lo, std::int64_t hi) const {
    const toml::node* n = get(key);
    if (!n) return std::nullopt;
    std::vector<int> out;
    const std::string example = key + " = [1, 2] or " + key + " = {min = 1, max = 4, step = 1}";
    if (auto i = n->as_integer()) {
      check_range(*n, key, i->get(), lo, hi);
      out.push_back(int(i->get()));
    } else if (auto a = n->as_array()) {
      if (a->empty()) fail(*n, key, "must list at least one value");
      for (std::size_t i = 0; i < a->size(); ++i) {
        const toml::node& e = *a->get(i);
        const std::string p = key + "[" + std::to_string(i) + "]";
        auto v = e.as_integer();
        if (!v) fail_type(e, p, "an integer");
        check_range(e, p, v->get(), lo, hi);
        if (std::find(out.begin(), out.end(), int(v->get())) != out.end())
          fail(e, p, "duplicate value " + std::to_string(v->get()));
        out.push_back(int(v->get()));
      }
    } else if (auto t = n->as_table()) {
      check_table_keys(*t, key, {"min", "max", "step"});
      auto part = [&](const std::string& k) -> std::optional<std::int64_t> {
        const toml::node* e = t->get(k);
        if (!e) return std::nullopt;
        auto v = e->as_integer();
        if (!v) fail_type(*e, key + "." + k, "an integer");
        return v->get();
      };
      auto mn = part("min"), mx = part("max"), step = part("step");
      if (!mn || !mx) fail(*n, key, "a range needs min and max (e.g. " + example + ")");
      check_range(*t->get("min"), key + ".min", *mn, lo, hi);
      check_range(*t->get("max"), key + ".max", *mx, *mn, hi);
      if (step) check_range(*t->get("step"), key + ".step", *step, 1, std::numeric_limits<std::int64_t>::max());
      const std::int64_t s = step.value_or(1);
      if ((*mx - *mn) / s >= 100000) fail(*n, key, "the range has more than 100000 values");
      for (std::int64_t v = *mn; v <= *mx; v += s) out.push_back(int(v));
    } else {
      fail_type(*n, key, "an integer, a list of integers or a range (e.g. " + example + ")");
    }
    return out;
  }

  std::optional<LrDimension> lr_dimension() const {
    const std::string key = "lr";
    const toml::node* n = get(key);
    if (!n) return std::nullopt;
    LrDimension out;
    auto positive = [&](const toml::node& e, const std::string& p) {
      const double x = *real(p, &e);
      if (x <= 0) fail(e, p, "must be > 0, found " + format_number(x));
      return x;
    };
    if (n->is_integer() || n->is_floating_point()) {
      out.values.push_back(positive(*n, key));
    } else if (auto a = n->as_array()) {
      if (a->empty()) fail(*n, key, "must list at least one value");
      for (std::size_t i = 0; i < a->size(); ++i) {
        const std::string p = key + "[" + std::to_string(i) + "]";
        const double x = positive(*a->get(i), p);
        if (std::find(out.values.begin(), out.values.end(), x) != out.values.end())
          fail(*a->get(i), p, "duplicate value " + format_number(x));
        out.values.push_back(x);
      }
    } else if (auto t = n->as_table()) {
      check_table_keys(*t, key, {"min", "max", "count"});
      if (!t->get("min") || !t->get("max"))
        fail(*n, key, "a range needs min and max (e.g. lr = {min = 0.01, max = 1.0})");
      out.min = positive(*t->get("min"), key + ".min");
      out.max = positive(*t->get("max"), key + ".max");
      if (out.max < out.min)
        fail(*t->get("max"), key + ".max",
             "must be >= min (" + format_number(out.min) + "), found " + format_number(out.max));
      if (const toml::node* c = t->get("count")) {
        auto v = c->as_integer();
        if (!v) fail_type(*c, key + ".count", "an integer");
        check_range(*c, key + ".count", v->get(), out.min == out.max ? 1 : 2, 10000);
        const double a = std::log(out.min), b = std::log(out.max);
        for (std::int64_t i = 0; i < v->get(); ++i) {
          const double x = v->get() == 1 ? out.min
                                         : round_significant(std::exp(a + (b - a) * double(i) / double(v->get() - 1)));
          if (std::find(out.values.begin(), out.values.end(), x) == out.values.end()) out.values.push_back(x);
        }
      }
    } else {
      fail_type(*n, key, "a number, a list of numbers or a range (e.g. lr = {min = 0.01, max = 1.0})");
    }
    return out;
  }

 private:
  void check_table_keys(const toml::table& t, const std::string& key, const std::vector<std::string>& known) const {
    for (auto& [k, v] : t) {
      const std::string name(k.str());
      if (std::find(known.begin(), known.end(), name) != known.end()) continue;
      const std::string m = closest_match(name, known);
      fail(v, key + "." + name,
           "unknown key" + (m.empty() ? " (a range takes " + quoted(known) + ")" : " (did you mean '" + m + "'?)"));
    }
  }

  const toml::table& table_;
  std::string file_;
};

nlohmann::json toml_to_json(const toml::table& t) {
  std::ostringstream s;
  s << toml::json_formatter{t, toml::json_formatter::default_flags | toml::format_flags::relaxed_float_precision};
  return nlohmann::json::parse(s.str());
}

// A small, fixed PRNG (splitmix64) and fixed conversions, so a seed draws the same trials
// on every platform and standard library.
class Draws {
 public:
  explicit Draws(std::uint64_t seed) : state_(seed ^ 0x5EA2C4B1D0F3A697ull) {}
  std::uint64_t next() {
    std::uint64_t z = (state_ += 0x9E3779B97F4A7C15ull);
    z = (z ^ (z >> 30)) * 0xBF58476D1CE4E5B9ull;
    z = (z ^ (z >> 27)) * 0x94D049BB133111EBull;
    return z ^ (z >> 31);
  }
  std::size_t index(std::size_t n) { return std::size_t(next() % n); }
  double unit() { return double(next() >> 11) * 0x1.0p-53; }

 private:
  std::uint64_t state_;
};

}  // namespace

std::string to_string(SearchMethod method) {
  switch (method) {
    case SearchMethod::grid: return "grid";
    case SearchMethod::random: return "random";
    case SearchMethod::halving: return "halving";
  }
  return "?";
}

std::string to_string(SearchMode mode) {
  switch (mode) {
    case SearchMode::trial_parallel: return "trial_parallel";
    case SearchMode::data_parallel: return "data_parallel";
    case SearchMode::both: return "both";
  }
  return "?";
}

nlohmann::json to_json(const TrialParams& p) {
  return {{"layers", p.layers}, {"width", p.width}, {"lr", p.lr}, {"batch_size", p.batch_size}, {"epochs", p.epochs}};
}

TrialParams trial_params_from_json(const nlohmann::json& j) {
  TrialParams p;
  p.layers = j.at("layers").get<int>();
  p.width = j.at("width").get<int>();
  p.lr = j.at("lr").get<double>();
  p.batch_size = j.at("batch_size").get<int>();
  p.epochs = j.at("epochs").get<int>();
  return p;
}

std::string describe(const TrialParams& p) {
  char buf[160];
  std::snprintf(buf, sizeof buf, "layers %d, width %d, lr %g, batch %d", p.layers, p.width, p.lr, p.batch_size);
  return buf;
}

SearchSettings load_search_settings(const RunConfig& config) {
  const std::string file = config.file.string();
  const toml::node* node = config.document ? config.document->get("search") : nullptr;
  if (!node)
    throw ConfigError(file + ": search: no [search] table; nnpar search needs one (see docs/search.md), e.g.\n"
                      "  [search]\n  method = \"grid\"\n  layers = [1, 2]\n  width = [64, 128]\n  lr = [0.1, 0.3]");
  const toml::table* table = node->as_table();
  if (!table) {
    const auto& s = node->source();
    const std::string pos = s.begin ? (s.path ? *s.path : file) + ":" + std::to_string(s.begin.line) + ":" +
                                          std::to_string(s.begin.column)
                                    : "--set search";
    throw ConfigError(pos + ": search: expected a table ([search]), found " + type_name(*node));
  }
  SearchReader r(*table, file);
  r.check_unknown();

  SearchSettings s;
  const auto method = r.choice("method", {"grid", "random", "halving"});
  if (!method)
    throw ConfigError(r.where_table("method") +
                      ": missing required key (\"grid\", \"random\" or \"halving\")");
  s.method = *method == "grid" ? SearchMethod::grid : *method == "random" ? SearchMethod::random : SearchMethod::halving;
  const std::string mode = r.choice("mode", {"trial_parallel", "data_parallel", "both"}).value_or("trial_parallel");
  s.mode = mode == "trial_parallel" ? SearchMode::trial_parallel
           : mode == "data_parallel" ? SearchMode::data_parallel
                                     : SearchMode::both;
  const bool halving = s.method == SearchMethod::halving;

  // Only-with rules: a key that would be silently ignored is an error.
  auto only_with = [&](const std::string& key, bool allowed, const std::string& when) {
    if (const toml::node* n = r.get(key); n && !allowed) r.fail(*n, key, "only used " + when);
  };
  only_with("sample", halving, "with method = \"halving\"");
  only_with("min_epochs", halving, "with method = \"halving\"");
  only_with("max_epochs", halving, "with method = \"halving\"");
  only_with("eta", halving, "with method = \"halving\"");
  if (const toml::node* n = r.get("epochs"); n && halving)
    r.fail(*n, "epochs",
           "not used with method = \"halving\": its rungs set the epochs (min_epochs, eta, max_epochs)");
  if (halving) s.sample = r.choice("sample", {"random", "grid"}).value_or("random");
  const bool sampled = s.method == SearchMethod::random || (halving && s.sample == "random");
  only_with("trials", sampled,
            "when configurations are drawn at random (method = \"random\", or \"halving\" with sample = \"random\")");
  only_with("seed", sampled,
            "when configurations are drawn at random (method = \"random\", or \"halving\" with sample = \"random\")");

  // The space; a dimension left out takes its one value from [model] / [train].
  const auto& hidden = config.model.layer_sizes;
  const auto given_layers = r.int_dimension("layers", 1, 64);
  const auto given_width = r.int_dimension("width", 1, 65536);
  if (hidden.size() < 3 && (!given_layers || !given_width))
    throw ConfigError(r.where_table(given_layers ? "width" : "layers") +
                      ": model.layers has no hidden layer to take it from; set search.layers and search.width");
  if ((!given_layers || !given_width) &&
      std::any_of(hidden.begin() + 1, hidden.end() - 1, [&](int w) { return w != hidden[1]; }))
    throw ConfigError(r.where_table(given_width ? "layers" : "width") +
                      ": model.layers has hidden layers of different widths; a search trains hidden layers of "
                      "one width: set both search.layers and search.width");
  s.space.layers = given_layers.value_or(std::vector<int>{int(hidden.size()) - 2});
  s.space.width = given_width.value_or(std::vector<int>{hidden.size() > 2 ? hidden[1] : 1});
  // [train] lr as written (the float in config.train would read 0.30000001).
  const double train_lr = config.resolved["train"]["lr"].value_or(double(config.train.sgd.lr));
  s.space.lr = r.lr_dimension().value_or(LrDimension{{train_lr}, 0, 0});
  s.space.batch_size = r.int_dimension("batch_size", 1, 1048576).value_or(std::vector<int>{config.train.batch_size});
  if (!halving) s.space.epochs = r.int_dimension("epochs", 1, 100000).value_or(std::vector<int>{config.train.epochs});
  if (s.method == SearchMethod::grid || (halving && s.sample == "grid"))
    if (s.space.lr.values.empty())
      r.fail(*r.get("lr"), "lr",
             "a grid needs a list of values, or a range with count (log-spaced points), e.g. "
             "lr = {min = 0.01, max = 1.0, count = 5}");

  if (sampled) {
    const auto trials = r.integer("trials", 1, 1000000);
    if (!trials)
      throw ConfigError(r.where_table("trials") + ": missing required key (how many configurations to draw)");
    s.trials = int(*trials);
    s.seed = std::uint64_t(r.integer("seed", 0, std::numeric_limits<std::int64_t>::max()).value_or(1));
  }

  if (halving) {
    s.min_epochs = int(r.integer("min_epochs", 1, 100000).value_or(1));
    s.max_epochs = int(r.integer("max_epochs", 1, 100000).value_or(config.train.epochs));
    if (s.max_epochs < s.min_epochs) {
      const toml::node* n = r.get("max_epochs") ? r.get("max_epochs") : r.get("min_epochs");
      r.fail(*n, r.get("max_epochs") ? "max_epochs" : "min_epochs",
             "max_epochs (" + std::to_string(s.max_epochs) + (r.get("max_epochs") ? "" : ", from train.epochs") +
                 ") must be >= min_epochs (" + std::to_string(s.min_epochs) + ")");
    }
    s.eta = int(r.integer("eta", 2, 1000).value_or(3));
  }

  if (const auto v = r.real("validation", r.get("validation"))) {
    if (*v <= 0 || *v >= 1) r.fail(*r.get("validation"), "validation", "must be in (0, 1), found " + format_number(*v));
    s.validation = *v;
  }
  if (const auto v = r.real("target_accuracy", r.get("target_accuracy"))) {
    if (*v <= 0 || *v > 1)
      r.fail(*r.get("target_accuracy"), "target_accuracy",
             "must be a fraction in (0, 1] (0.7 means 70%), found " + format_number(*v));
    s.target_accuracy = *v;
  }
  s.workers = int(r.integer("workers", 1, 4096).value_or(2));

  // The strategies: labels of [[strategy]] entries, or plugin names with default options.
  auto listed = [&](const std::string& label) {
    return std::any_of(config.strategies.begin(), config.strategies.end(),
                       [&](const StrategyEntry& e) { return e.label == label; });
  };
  for (const char* key : {"trial_strategy", "data_strategy"})
    if (auto v = r.string(key); v && v->empty()) r.fail(*r.get(key), key, "must not be empty");
  s.trial_strategy = r.string("trial_strategy").value_or("serial");
  s.trial_strategy_listed = listed(s.trial_strategy);
  const bool needs_data = s.mode != SearchMode::trial_parallel;
  if (auto d = r.string("data_strategy")) {
    if (!listed(*d)) {
      std::vector<std::string> labels;
      for (auto& e : config.strategies) labels.push_back(e.label);
      const std::string m = closest_match(*d, labels);
      r.fail(*r.get("data_strategy"), "data_strategy",
             "no [[strategy]] is labelled \"" + *d + "\"" + (m.empty() ? "" : " (did you mean '" + m + "'?)") +
                 " (labels: " + [&] {
                   std::string out;
                   for (std::size_t i = 0; i < labels.size(); ++i) out += (i ? ", " : "") + labels[i];
                   return out;
                 }() + ")");
    }
    s.data_strategy = *d;
  } else if (needs_data) {
    throw ConfigError(r.where_table("data_strategy") + ": missing required key with mode = \"" + mode +
                      "\": the label of the [[strategy]] that trains each trial on all workers "
                      "(e.g. an openmp entry with mode = \"data_parallel\", or mpi-data)");
  }

  if (!config.init_checkpoint.empty())
    throw ConfigError(file + ": model.init_checkpoint: cannot be used by a search (every trial starts from "
                      "[model] init and seed, in its own shape)");

  // The pool must be valid before anything runs: a grid that is too large is refused here.
  if (s.method == SearchMethod::grid || (halving && s.sample == "grid")) {
    double size = double(s.space.layers.size()) * double(s.space.width.size()) * double(s.space.lr.values.size()) *
                  double(s.space.batch_size.size()) * double(std::max<std::size_t>(1, s.space.epochs.size()));
    if (size > 1000000)
      throw ConfigError(r.where_table("method") + ": the grid has " + format_number(size) +
                        " configurations (at most 1000000)");
  }

  // The fingerprint: everything that decides which trials run and what they learn.
  nlohmann::json space = {{"layers", s.space.layers}, {"width", s.space.width}, {"batch_size", s.space.batch_size},
                          {"epochs", s.space.epochs}};
  space["lr"] = s.space.lr.values.empty() ? nlohmann::json{{"min", s.space.lr.min}, {"max", s.space.lr.max}}
                                          : nlohmann::json(s.space.lr.values);
  nlohmann::json search = {{"method", to_string(s.method)}, {"space", space}, {"validation", s.validation}};
  if (sampled) search.update({{"trials", s.trials}, {"seed", s.seed}});
  if (halving)
    search.update({{"sample", s.sample}, {"min_epochs", s.min_epochs}, {"max_epochs", s.max_epochs}, {"eta", s.eta}});
  const nlohmann::json resolved = toml_to_json(config.resolved);
  nlohmann::json train = resolved.at("train");
  train.erase("eval_every");
  s.fingerprint = {{"search", search}, {"data", resolved.at("data")}, {"model", resolved.at("model")},
                   {"train", train}};
  return s;
}

std::vector<TrialParams> grid_trials(const SearchSpace& space) {
  std::vector<TrialParams> out;
  const std::vector<int> epochs = space.epochs.empty() ? std::vector<int>{1} : space.epochs;
  for (int layers : space.layers)
    for (int width : space.width)
      for (double lr : space.lr.values)
        for (int batch : space.batch_size)
          for (int e : epochs) out.push_back({layers, width, lr, batch, e});
  return out;
}

std::vector<TrialParams> random_trials(const SearchSpace& space, int count, std::uint64_t seed) {
  Draws draws(seed);
  const std::vector<int> epochs = space.epochs.empty() ? std::vector<int>{1} : space.epochs;
  std::vector<TrialParams> out;
  for (int i = 0; i < count; ++i) {
    TrialParams p;
    p.layers = space.layers[draws.index(space.layers.size())];
    p.width = space.width[draws.index(space.width.size())];
    if (space.lr.values.empty()) {
      const double a = std::log(space.lr.min), b = std::log(space.lr.max);
      p.lr = round_significant(std::exp(a + (b - a) * draws.unit()));
    } else {
      p.lr = space.lr.values[draws.index(space.lr.values.size())];
    }
    p.batch_size = space.batch_size[draws.index(space.batch_size.size())];
    p.epochs = epochs[draws.index(epochs.size())];
    out.push_back(p);
  }
  return out;
}

std::vector<TrialParams> search_pool(const SearchSettings& s) {
  const bool grid = s.method == SearchMethod::grid || (s.method == SearchMethod::halving && s.sample == "grid");
  std::vector<TrialParams> pool = grid ? grid_trials(s.space) : random_trials(s.space, s.trials, s.seed);
  if (s.method == SearchMethod::halving)
    for (auto& p : pool) p.epochs = s.max_epochs;
  return pool;
}

std::vector<int> halving_rungs(int min_epochs, int max_epochs, int eta) {
  std::vector<int> rungs;
  for (long r = min_epochs; r < max_epochs; r *= eta) rungs.push_back(int(r));
  rungs.push_back(max_epochs);
  return rungs;
}

std::vector<int> halving_plan(int pool_size, int rungs, int eta) {
  std::vector<int> plan{pool_size};
  for (int k = 1; k < rungs; ++k) plan.push_back(plan.back() / eta);
  return plan;
}

ModelSpec trial_model(const ModelSpec& base, const TrialParams& params) {
  ModelSpec m = base;
  m.layer_sizes.assign(1, base.layer_sizes.front());
  for (int i = 0; i < params.layers; ++i) m.layer_sizes.push_back(params.width);
  m.layer_sizes.push_back(base.layer_sizes.back());
  return m;
}

nlohmann::json to_json(const TrialRecord& r) {
  nlohmann::json j = {{"trial", r.trial},
                      {"params", to_json(r.params)},
                      {"from_epochs", r.from_epochs},
                      {"epochs", r.epochs},
                      {"status", r.status},
                      {"val_accuracy", r.val_accuracy},
                      {"val_loss", std::isfinite(r.val_loss) ? nlohmann::json(r.val_loss) : nlohmann::json()},
                      {"train_loss", std::isfinite(r.train_loss) ? nlohmann::json(r.train_loss) : nlohmann::json()},
                      {"seconds", r.seconds},
                      {"train_seconds", r.train_seconds},
                      {"finished_at", r.finished_at},
                      {"worker", r.worker},
                      {"device", r.device}};
  j["checkpoint"] = r.checkpoint.empty() ? nlohmann::json() : nlohmann::json(r.checkpoint);
  return j;
}

TrialRecord trial_record_from_json(const nlohmann::json& j) {
  auto number = [](const nlohmann::json& v) {
    return v.is_number() ? v.get<double>() : std::numeric_limits<double>::quiet_NaN();
  };
  TrialRecord r;
  r.trial = j.at("trial").get<int>();
  r.params = trial_params_from_json(j.at("params"));
  r.from_epochs = j.at("from_epochs").get<int>();
  r.epochs = j.at("epochs").get<int>();
  r.status = j.at("status").get<std::string>();
  r.val_accuracy = j.at("val_accuracy").get<double>();
  r.val_loss = number(j.at("val_loss"));
  r.train_loss = number(j.at("train_loss"));
  r.seconds = j.at("seconds").get<double>();
  r.train_seconds = j.at("train_seconds").get<double>();
  r.finished_at = j.at("finished_at").get<double>();
  r.worker = j.at("worker").get<int>();
  r.device = j.at("device").get<std::string>();
  if (j.at("checkpoint").is_string()) r.checkpoint = j.at("checkpoint").get<std::string>();
  return r;
}

bool better(const TrialRecord& a, const TrialRecord& b) {
  const bool a_ok = a.status == "ok", b_ok = b.status == "ok";
  if (a_ok != b_ok) return a_ok;
  if (a.val_accuracy != b.val_accuracy) return a.val_accuracy > b.val_accuracy;
  if (a.epochs != b.epochs) return a.epochs > b.epochs;
  return a.trial < b.trial;
}

TrialScheduler::TrialScheduler(std::vector<TrialParams> pool, bool halving, std::vector<int> rungs, int eta,
                               bool asynchronous)
    : pool_(std::move(pool)), halving_(halving), rungs_(halving ? std::move(rungs) : std::vector<int>{0}),
      eta_(eta), asynchronous_(asynchronous) {
  completed_.resize(rungs_.size());
}

int TrialScheduler::rung_of(int epochs) const {
  if (!halving_) return 0;
  for (std::size_t k = 0; k < rungs_.size(); ++k)
    if (rungs_[k] == epochs) return int(k);
  throw std::runtime_error("a result for " + std::to_string(epochs) + " epochs matches no rung of this search");
}

std::vector<int> TrialScheduler::top_of_rung(int k) const {
  std::vector<const TrialRecord*> ok;
  for (auto& [t, r] : completed_[k])
    if (r.status == "ok") ok.push_back(&r);
  std::sort(ok.begin(), ok.end(), [](const TrialRecord* a, const TrialRecord* b) { return better(*a, *b); });
  const std::size_t keep = std::min(ok.size(), completed_[k].size() / std::size_t(eta_));
  std::vector<int> out;
  for (std::size_t i = 0; i < keep; ++i) out.push_back(ok[i]->trial);
  return out;
}

std::optional<TrialJob> TrialScheduler::peek() const {
  const int n = int(pool_.size());
  auto open = [&](int k, int t) { return !completed_[k].count(t) && !in_flight_.count({k, t}); };
  auto first_new = [&]() -> std::optional<TrialJob> {
    for (int t = 1; t <= n; ++t)
      if (open(0, t)) return TrialJob{t, 0, halving_ ? rungs_[0] : pool_[t - 1].epochs};
    return std::nullopt;
  };
  if (!halving_) return first_new();
  const int last = int(rungs_.size()) - 1;
  if (asynchronous_) {
    for (int k = last - 1; k >= 0; --k)
      for (int t : top_of_rung(k))
        if (open(k + 1, t)) return TrialJob{t, rungs_[k], rungs_[k + 1]};
    return first_new();
  }
  for (int k = 0; k <= last; ++k) {
    std::vector<int> members;
    if (k == 0) {
      members.resize(n);
      std::iota(members.begin(), members.end(), 1);
    } else {
      members = top_of_rung(k - 1);  // rung k-1 is complete here
    }
    bool waiting = false;
    for (int t : members) {
      if (open(k, t)) return TrialJob{t, k == 0 ? 0 : rungs_[k - 1], rungs_[k]};
      if (in_flight_.count({k, t})) waiting = true;
    }
    if (waiting) return std::nullopt;
  }
  return std::nullopt;
}

std::optional<TrialJob> TrialScheduler::next() {
  auto job = peek();
  if (job) in_flight_.insert({rung_of(job->to_epochs), job->trial});
  return job;
}

void TrialScheduler::finished(const TrialRecord& record) {
  if (record.trial < 1 || record.trial > int(pool_.size()))
    throw std::runtime_error("a result for trial " + std::to_string(record.trial) + ", which this search does not have");
  const int k = rung_of(record.epochs);
  in_flight_.erase({k, record.trial});
  if (!completed_[k].emplace(record.trial, record).second) return;  // the same job twice: count it once
  jobs_done_ += 1;
  epochs_done_ += record.epochs - record.from_epochs;
}

bool TrialScheduler::done() const { return in_flight_.empty() && !peek(); }

int TrialScheduler::jobs_left() const {
  if (!halving_) return int(pool_.size()) - jobs_done_ - running();
  const auto plan = halving_plan(int(pool_.size()), int(rungs_.size()), eta_);
  return std::max(0, std::accumulate(plan.begin(), plan.end(), 0) - jobs_done_ - running());
}

long TrialScheduler::epochs_planned() const {
  long total = 0;
  if (!halving_) {
    for (auto& p : pool_) total += p.epochs;
    return total;
  }
  const auto plan = halving_plan(int(pool_.size()), int(rungs_.size()), eta_);
  for (std::size_t k = 0; k < rungs_.size(); ++k) total += long(plan[k]) * (rungs_[k] - (k ? rungs_[k - 1] : 0));
  return std::max(total, epochs_done_);
}

long TrialScheduler::epochs_in_flight() const {
  long total = 0;
  for (auto& [k, t] : in_flight_)
    total += halving_ ? rungs_[k] - (k ? rungs_[k - 1] : 0) : pool_[t - 1].epochs;
  return total;
}

std::vector<int> TrialScheduler::rung_members(int k) const {
  std::vector<int> out;
  for (auto& [t, r] : completed_.at(k)) out.push_back(t);
  return out;
}

}  // namespace nnpar
