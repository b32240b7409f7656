// TOML run configuration: parse, apply --set overrides, validate into RunConfig.
//
// Error positions come from toml++'s source regions. Overridden values have no source
// region (toml++ does not copy it), so every node an override creates is recorded in a
// side table and reported as "--set <key>" instead of file:line:col.
#include "config.hpp"

#include <algorithm>
#include <charconv>
#include <climits>
#include <cmath>
#include <cstdint>
#include <cstdlib>
#include <fstream>
#include <functional>
#include <limits>
#include <map>
#include <optional>
#include <sstream>
#include <utility>

#ifndef NNPAR_SOURCE_DIR
#define NNPAR_SOURCE_DIR "."
#endif

namespace nnpar {
namespace {

namespace fs = std::filesystem;

// The schema's key names, used for unknown-key detection and suggestions. The typed
// reading below must request exactly these keys.
const std::vector<std::pair<std::string, std::vector<std::string>>>& schema() {
  static const std::vector<std::pair<std::string, std::vector<std::string>>> s = {
      {"data",
       {"dir", "format", "train_images", "train_labels", "test_images", "test_labels", "train_csv",
        "test_csv", "transpose", "label_offset", "normalize", "limit", "test_limit", "classes"}},
      {"model", {"layers", "init", "init_std", "seed", "init_checkpoint"}},
      {"train",
       {"epochs", "batch_size", "lr", "momentum", "weight_decay", "seed", "shuffle", "drop_last",
        "eval_every"}},
      {"output", {"dir", "save_checkpoint", "write_results"}},
      {"parity", {"reference", "weight_rtol", "weight_atol", "accuracy_pp", "approx_accuracy_pp"}},
      {"plugins", {"paths"}},
      {"mpi", {"launcher", "launcher_args", "rank_timeout"}},
  };
  return s;
}

std::string type_name(toml::node_type t) {
  switch (t) {
    case toml::node_type::table: return "a table";
    case toml::node_type::array: return "an array";
    case toml::node_type::string: return "a string";
    case toml::node_type::integer: return "an integer";
    case toml::node_type::floating_point: return "a float";
    case toml::node_type::boolean: return "a boolean";
    case toml::node_type::date: return "a date";
    case toml::node_type::time: return "a time";
    case toml::node_type::date_time: return "a date-time";
    default: return "nothing";
  }
}

std::string format_real(double v) {
  char buf[64];
  auto r = std::to_chars(buf, buf + sizeof buf, v);
  return std::string(buf, r.ptr);
}

// A short rendering of a value for "found ..." in messages.
std::string describe_value(const toml::node& n) {
  if (auto s = n.as_string()) return "\"" + s->get() + "\"";
  if (auto i = n.as_integer()) return std::to_string(i->get());
  if (auto f = n.as_floating_point()) return format_real(f->get());
  if (auto b = n.as_boolean()) return b->get() ? "true" : "false";
  return type_name(n.type());
}

std::string quoted_list(const std::vector<std::string>& items) {
  std::string out;
  for (std::size_t i = 0; i < items.size(); ++i) out += (i ? ", \"" : "\"") + items[i] + "\"";
  return out;
}

std::string plain_list(const std::vector<std::string>& items) {
  std::string out;
  for (std::size_t i = 0; i < items.size(); ++i) out += (i ? ", " : "") + items[i];
  return out;
}

std::string suggestion(const std::string& key, const std::vector<std::string>& candidates) {
  std::string m = closest_match(key, candidates);
  return m.empty() ? std::string() : " (did you mean '" + m + "'?)";
}

std::string position(const toml::source_region& s, const std::string& file) {
  if (!s.begin) return {};
  return file + ":" + std::to_string(s.begin.line) + ":" + std::to_string(s.begin.column);
}

bool before(const toml::source_region& a, const toml::source_region& b) {
  return std::pair(a.begin.line, a.begin.column) < std::pair(b.begin.line, b.begin.column);
}

fs::path resolve(const fs::path& base, const fs::path& p) {
  if (p.empty() || p.is_absolute()) return p.lexically_normal();
  return (base / p).lexically_normal();
}

std::string trim(const std::string& s) {
  const auto b = s.find_first_not_of(" \t\r\n");
  if (b == std::string::npos) return {};
  const auto e = s.find_last_not_of(" \t\r\n");
  return s.substr(b, e - b + 1);
}

// Where an overridden node came from: the override's text, and whether the node is the
// value itself (its key path then adds nothing to "--set train.lr").
struct OverrideMark {
  std::string text;
  bool exact = false;
};

class Loader;

// One [section] of the schema, read key by key with types, ranges and defaults.
class Section {
 public:
  Section(Loader& loader, const toml::table& root, const std::string& name);
  const toml::node* get(const std::string& key) const { return table_ ? table_->get(key) : nullptr; }
  const toml::table* table() const { return table_; }
  std::string path(const std::string& key) const { return name_ + "." + key; }

  std::int64_t integer(const std::string& key, std::int64_t def, std::int64_t lo, std::int64_t hi);
  double real(const std::string& key, double def, const std::function<bool(double)>& ok,
              const std::string& rule);
  bool boolean(const std::string& key, bool def);
  std::optional<std::string> string(const std::string& key);
  std::string choice(const std::string& key, const std::string& def, const std::vector<std::string>& choices);
  // A path string with ${VAR} expanded, resolved against base; nullopt when absent.
  std::optional<fs::path> path_value(const std::string& key, const fs::path& base);

 private:
  Loader& loader_;
  const toml::table* table_ = nullptr;
  std::string name_;
};

class Loader {
 public:
  Loader(std::string file, fs::path config_dir) : file_(std::move(file)), dir_(std::move(config_dir)) {}

  const std::string& file() const { return file_; }
  const fs::path& dir() const { return dir_; }

  // "file:line:col: path", "--set key" or "--set key: path".
  std::string where(const toml::node& n, const std::string& path) const {
    std::string pos = position(n.source(), file_);
    if (!pos.empty()) return pos + ": " + path;
    if (auto it = marks_.find(&n); it != marks_.end())
      return it->second.exact ? it->second.text : it->second.text + ": " + path;
    return file_ + ": " + path;
  }
  std::string where_key(const toml::key& k, const toml::node& n, const std::string& path) const {
    std::string pos = position(k.source(), file_);
    return pos.empty() ? where(n, path) : pos + ": " + path;
  }
  [[noreturn]] void fail(const toml::node& n, const std::string& path, const std::string& msg) const {
    throw ConfigError(where(n, path) + ": " + msg);
  }
  [[noreturn]] void fail_type(const toml::node& n, const std::string& path, const std::string& expected) const {
    std::string found = type_name(n.type());
    if (n.is_value() && !n.is_string()) found += " (" + describe_value(n) + ")";
    fail(n, path, "expected " + expected + ", found " + found);
  }

  // Reports the earliest (by position) key of `t` that is not in `known`.
  void check_unknown(const toml::table& t, const std::string& prefix, const std::vector<std::string>& known,
                     const std::string& what) const {
    const toml::key* first = nullptr;
    const toml::node* first_node = nullptr;
    for (auto& [k, v] : t) {
      if (std::find(known.begin(), known.end(), std::string(k.str())) != known.end()) continue;
      if (!first || before(k.source(), first->source())) {
        first = &k;
        first_node = &v;
      }
    }
    if (!first) return;
    std::string key(first->str());
    throw ConfigError(where_key(*first, *first_node, prefix + key) + ": unknown " + what + suggestion(key, known));
  }

  void apply_override(toml::table& doc, const std::string& raw);
  RunConfig load(std::shared_ptr<toml::table> doc);

 private:
  void mark(const toml::node& n, const std::string& text, bool exact) {
    marks_[&n] = OverrideMark{text, exact};
    if (auto t = n.as_table())
      for (auto& [k, v] : *t) mark(v, text, false);
    if (auto a = n.as_array())
      for (auto& v : *a) mark(v, text, false);
  }
  std::vector<StrategyEntry> read_strategies(const std::shared_ptr<toml::table>& doc);

  std::string file_;
  fs::path dir_;
  std::map<const toml::node*, OverrideMark> marks_;
};

Section::Section(Loader& loader, const toml::table& root, const std::string& name)
    : loader_(loader), name_(name) {
  const toml::node* n = root.get(name);
  if (!n) return;
  table_ = n->as_table();
  if (!table_) loader.fail_type(*n, name, "a table ([" + name + "])");
  for (auto& [section, keys] : schema())
    if (section == name) loader.check_unknown(*table_, name + ".", keys, "key");
}

std::int64_t Section::integer(const std::string& key, std::int64_t def, std::int64_t lo, std::int64_t hi) {
  const toml::node* n = get(key);
  if (!n) return def;
  auto v = n->as_integer();
  if (!v) loader_.fail_type(*n, path(key), "an integer");
  const std::int64_t x = v->get();
  if (x < lo || x > hi) {
    std::string rule = hi == std::numeric_limits<std::int64_t>::max() ? "must be >= " + std::to_string(lo)
                       : "must be in " + std::to_string(lo) + ".." + std::to_string(hi);
    loader_.fail(*n, path(key), rule + ", found " + std::to_string(x));
  }
  return x;
}

double Section::real(const std::string& key, double def, const std::function<bool(double)>& ok,
                     const std::string& rule) {
  const toml::node* n = get(key);
  if (!n) return def;
  double x = 0;
  if (auto i = n->as_integer()) x = double(i->get());
  else if (auto f = n->as_floating_point()) x = f->get();
  else loader_.fail_type(*n, path(key), "a number");
  if (std::isinf(x)) loader_.fail(*n, path(key), "must be finite, found " + format_real(x));
  if (!ok(x)) loader_.fail(*n, path(key), rule + ", found " + format_real(x));
  return x;
}

bool Section::boolean(const std::string& key, bool def) {
  const toml::node* n = get(key);
  if (!n) return def;
  auto v = n->as_boolean();
  if (!v) loader_.fail_type(*n, path(key), "a boolean (true or false)");
  return v->get();
}

std::optional<std::string> Section::string(const std::string& key) {
  const toml::node* n = get(key);
  if (!n) return std::nullopt;
  auto v = n->as_string();
  if (!v) loader_.fail_type(*n, path(key), "a string");
  return v->get();
}

std::string Section::choice(const std::string& key, const std::string& def, const std::vector<std::string>& choices) {
  auto v = string(key);
  if (!v) return def;
  if (std::find(choices.begin(), choices.end(), *v) == choices.end())
    loader_.fail(*get(key), path(key),
                 "must be one of " + quoted_list(choices) + ", found \"" + *v + "\"" + suggestion(*v, choices));
  return *v;
}

std::optional<fs::path> Section::path_value(const std::string& key, const fs::path& base) {
  auto v = string(key);
  if (!v) return std::nullopt;
  const toml::node& n = *get(key);
  std::string text = expand_env(*v, loader_.where(n, path(key)));
  if (text.empty()) loader_.fail(n, path(key), "must not be an empty path");
  return resolve(base, text);
}

void Loader::apply_override(toml::table& doc, const std::string& raw) {
  const auto eq = raw.find('=');
  if (eq == std::string::npos)
    throw ConfigError("--set " + raw + ": expected key=value (e.g. --set train.lr=0.5)");
  const std::string key = trim(raw.substr(0, eq));
  const std::string value = trim(raw.substr(eq + 1));
  if (key.empty()) throw ConfigError("--set " + raw + ": empty key before '='");
  const std::string text = "--set " + key;

  std::vector<std::string> segs;
  for (std::size_t b = 0;;) {
    const auto dot = key.find('.', b);
    segs.push_back(key.substr(b, dot == std::string::npos ? std::string::npos : dot - b));
    if (dot == std::string::npos) break;
    b = dot + 1;
  }
  for (auto& s : segs)
    if (s.empty()) throw ConfigError(text + ": empty key segment in '" + key + "'");

  // A value that is not valid TOML (a bare path, a word) is taken as a string, so that
  // --set data.dir=/tmp/x works without shell-quoting TOML quotes.
  toml::table parsed;
  bool is_toml = false;
  try {
    parsed = toml::parse("v = " + value);
    is_toml = parsed.size() == 1 && parsed.contains("v");
  } catch (const toml::parse_error&) {
  }
  if (!is_toml) {
    parsed = toml::table{};
    parsed.insert_or_assign("v", value);
  }
  const toml::node& new_value = *parsed.get("v");

  toml::table* t = &doc;
  std::string walked;
  if (segs[0] == "strategy") {
    // strategy.<label>.<key>: a label may itself contain dots, so match whole labels.
    std::vector<std::string> labels;
    toml::table* entry = nullptr;
    std::size_t best_len = 0;
    const std::string rest = key.size() > 9 ? key.substr(9) : std::string();
    if (auto arr = doc.get_as<toml::array>("strategy")) {
      for (auto& e : *arr) {
        auto et = e.as_table();
        if (!et) continue;
        std::string label;
        if (auto l = et->get_as<std::string>("label")) label = l->get();
        else if (auto n = et->get_as<std::string>("name")) label = n->get();
        else continue;
        labels.push_back(label);
        if (rest.size() > label.size() + 1 && rest.compare(0, label.size(), label) == 0 &&
            rest[label.size()] == '.' && label.size() > best_len) {
          entry = et;
          best_len = label.size();
        }
      }
    }
    if (segs.size() < 3 && !entry)
      throw ConfigError(text + ": a strategy option is set as strategy.<label>.<key>" +
                        (labels.empty() ? std::string(" (no [[strategy]] entries)")
                                        : " (known labels: " + plain_list(labels) + ")"));
    if (!entry)
      throw ConfigError(text + ": unknown strategy label '" + segs[1] + "'" + suggestion(segs[1], labels) +
                        (labels.empty() ? std::string(" (no [[strategy]] entries)")
                                        : " (known labels: " + plain_list(labels) + ")"));
    t = entry;
    const std::string inner = rest.substr(best_len + 1);
    walked = "strategy." + rest.substr(0, best_len);
    segs.clear();
    for (std::size_t b = 0;;) {
      const auto dot = inner.find('.', b);
      segs.push_back(inner.substr(b, dot == std::string::npos ? std::string::npos : dot - b));
      if (dot == std::string::npos) break;
      b = dot + 1;
    }
  }

  for (std::size_t i = 0; i + 1 < segs.size(); ++i) {
    walked += (walked.empty() ? "" : ".") + segs[i];
    toml::node* child = t->get(segs[i]);
    if (!child) {
      t->insert_or_assign(segs[i], toml::table{});
      child = t->get(segs[i]);
      mark(*child, text, false);
    }
    if (!child->is_table())
      throw ConfigError(text + ": '" + walked + "' is " + type_name(child->type()) + ", not a table");
    t = child->as_table();
  }
  const std::string& last = segs.back();
  new_value.visit([&](const auto& v) { t->insert_or_assign(last, v); });
  mark(*t->get(last), text, true);
}

std::vector<StrategyEntry> Loader::read_strategies(const std::shared_ptr<toml::table>& doc) {
  const std::string need = "at least one [[strategy]] entry is required (e.g. [[strategy]] name = \"serial\")";
  const toml::node* s = doc->get("strategy");
  if (!s) throw ConfigError(file_ + ": strategy: " + need);
  const toml::array* arr = s->as_array();
  if (!arr) fail_type(*s, "strategy", "an array of tables ([[strategy]])");
  if (arr->empty()) fail(*s, "strategy", need);

  std::vector<StrategyEntry> out;
  std::map<std::string, std::string> first_seen;  // label -> where it was first defined
  for (std::size_t i = 0; i < arr->size(); ++i) {
    const toml::node& e = *arr->get(i);
    const std::string path = "strategy[" + std::to_string(i) + "]";
    const toml::table* t = e.as_table();
    if (!t) fail_type(e, path, "a table ([[strategy]])");

    const toml::node* name = t->get("name");
    if (!name) fail(e, path + ".name", "missing required key (the strategy plugin to run, e.g. name = \"serial\")");
    if (!name->is_string()) fail_type(*name, path + ".name", "a string");
    StrategyEntry entry;
    entry.name = name->as_string()->get();
    if (entry.name.empty()) fail(*name, path + ".name", "must not be empty");

    const toml::node* label_node = name;
    entry.label = entry.name;
    if (const toml::node* label = t->get("label")) {
      if (!label->is_string()) fail_type(*label, path + ".label", "a string");
      entry.label = label->as_string()->get();
      if (entry.label.empty()) fail(*label, path + ".label", "must not be empty");
      label_node = label;
    }
    if (const toml::node* ranks = t->get("ranks")) {
      const auto v = ranks->as_integer();
      if (!v) fail_type(*ranks, "strategy[" + entry.label + "].ranks", "an integer");
      if (v->get() < 1 || v->get() > 65536)
        fail(*ranks, "strategy[" + entry.label + "].ranks",
             "must be in 1..65536, found " + std::to_string(v->get()));
      entry.ranks = int(v->get());
    }
    std::string here = position(label_node->source(), file_);
    if (here.empty()) {
      auto it = marks_.find(label_node);
      here = it != marks_.end() ? it->second.text : file_;
    }
    if (auto it = first_seen.find(entry.label); it != first_seen.end())
      fail(*label_node, "strategy[" + entry.label + "].label",
           "duplicate label '" + entry.label + "', already used by the strategy at " + it->second +
               " (give one of them a distinct label = \"...\")");
    first_seen.emplace(entry.label, here);

    // Aliasing pointer: the entry shares ownership of the whole document, so the nodes
    // keep their source positions for validate_strategy_options.
    entry.table = std::shared_ptr<const toml::table>(doc, t);
    entry.where = position(t->source(), file_);
    if (entry.where.empty()) entry.where = file_;
    out.push_back(std::move(entry));
  }
  return out;
}

RunConfig Loader::load(std::shared_ptr<toml::table> doc_ptr) {
  const toml::table& doc = *doc_ptr;
  RunConfig cfg;
  cfg.document = doc_ptr;

  // Unknown top-level names first: a misspelt [trian] would otherwise silently use defaults.
  // [search] is read by nnpar search (search.cpp), which validates it.
  std::vector<std::string> sections{"strategy", "search"};
  for (auto& [name, keys] : schema()) sections.push_back(name);
  {
    const toml::key* first = nullptr;
    const toml::node* first_node = nullptr;
    for (auto& [k, v] : doc) {
      if (std::find(sections.begin(), sections.end(), std::string(k.str())) != sections.end()) continue;
      if (!first || before(k.source(), first->source())) {
        first = &k;
        first_node = &v;
      }
    }
    if (first) {
      const std::string key(first->str());
      std::string hint = suggestion(key, sections);
      // A section key written above every [table] header lands at the top level.
      if (hint.empty() && !first_node->is_table())
        for (auto& [section, keys] : schema())
          if (std::find(keys.begin(), keys.end(), key) != keys.end()) {
            hint = " (did you mean '" + section + "." + key + "', i.e. inside [" + section + "]?)";
            break;
          }
      throw ConfigError(where_key(*first, *first_node, key) + ": unknown " +
                        (first_node->is_table() ? "table" : "key") + hint);
    }
  }

  auto positive = [](double x) { return x > 0; };
  auto non_negative = [](double x) { return x >= 0; };
  constexpr auto kMax = std::numeric_limits<std::int64_t>::max();

  // [data]
  {
    Section s(*this, doc, "data");
    DataConfig& d = cfg.data;
    if (auto dir = s.path_value("dir", dir_)) {
      d.dir = *dir;
    } else if (const char* env = std::getenv("NNPAR_DATA"); env && *env) {
      d.dir = fs::absolute(env).lexically_normal();
    } else {
      d.dir = (fs::path(NNPAR_SOURCE_DIR) / ".." / "shared" / "data").lexically_normal();
    }
    d.format = s.choice("format", "idx", {"idx", "csv"});
    auto file = [&](const std::string& key, const std::string& def) {
      auto p = s.path_value(key, d.dir);
      return p ? *p : resolve(d.dir, def);
    };
    d.train_images = file("train_images", "letters-train-images-idx3-ubyte.gz");
    d.train_labels = file("train_labels", "letters-train-labels-idx1-ubyte.gz");
    d.test_images = file("test_images", "letters-test-images-idx3-ubyte.gz");
    d.test_labels = file("test_labels", "letters-test-labels-idx1-ubyte.gz");
    if (auto p = s.path_value("train_csv", d.dir)) d.train_csv = *p;
    if (auto p = s.path_value("test_csv", d.dir)) d.test_csv = *p;
    if (d.format == "csv") {
      for (const char* key : {"train_csv", "test_csv"}) {
        if (s.get(key)) continue;
        std::string pos = s.table() ? position(s.table()->source(), file_) : std::string();
        throw ConfigError((pos.empty() ? file_ : pos) + ": data." + key + ": required when data.format = \"csv\"");
      }
    }
    d.options.transpose = s.boolean("transpose", false);
    d.options.label_offset = int(s.integer("label_offset", 1, INT_MIN, INT_MAX));
    d.options.normalize = s.boolean("normalize", true);
    d.options.limit = std::size_t(s.integer("limit", 0, 0, kMax));
    d.test_limit = std::size_t(s.integer("test_limit", 0, 0, kMax));
    d.options.num_classes = int(s.integer("classes", 26, 2, 1000));
  }

  // [model]
  {
    Section s(*this, doc, "model");
    ModelSpec& m = cfg.model;
    if (const toml::node* n = s.get("layers")) {
      const toml::array* a = n->as_array();
      if (!a) fail_type(*n, "model.layers", "an array of layer sizes (e.g. [784, 256, 26])");
      if (a->size() < 2)
        fail(*n, "model.layers",
             "must have at least 2 sizes (input and classes), found " + std::to_string(a->size()));
      m.layer_sizes.clear();
      for (std::size_t i = 0; i < a->size(); ++i) {
        const toml::node& e = *a->get(i);
        const std::string p = "model.layers[" + std::to_string(i) + "]";
        auto v = e.as_integer();
        if (!v) fail_type(e, p, "an integer");
        if (v->get() < 1 || v->get() > 65536) fail(e, p, "must be in 1..65536, found " + std::to_string(v->get()));
        m.layer_sizes.push_back(int(v->get()));
      }
    }
    const std::string init = s.choice("init", "xavier", {"xavier", "zero", "normal"});
    m.init = init == "zero" ? InitKind::zero : init == "normal" ? InitKind::normal : InitKind::xavier_uniform;
    m.init_std = s.real("init_std", 0.01, positive, "must be > 0");
    m.seed = std::uint64_t(s.integer("seed", 42, 0, kMax));
    if (auto p = s.path_value("init_checkpoint", dir_)) cfg.init_checkpoint = *p;
  }

  // [train]. The SGD settings are floats; the doubles are kept for the resolved document
  // so that 0.3 is not written back as 0.30000001192092896.
  double lr = 0, momentum = 0, weight_decay = 0;
  {
    Section s(*this, doc, "train");
    TrainSettings& t = cfg.train;
    t.epochs = int(s.integer("epochs", 10, 1, 100000));
    t.batch_size = int(s.integer("batch_size", 128, 1, 1048576));
    lr = s.real("lr", 0.1, positive, "must be > 0");
    momentum = s.real("momentum", 0.0, [](double x) { return x >= 0 && x < 1; }, "must be in [0, 1)");
    weight_decay = s.real("weight_decay", 0.0, non_negative, "must be >= 0");
    // Used as 32-bit floats: 1e39 would silently become an infinite learning rate.
    for (const auto& [key, value] : {std::pair<const char*, double>{"lr", lr}, {"weight_decay", weight_decay}})
      if (value > double(std::numeric_limits<float>::max()))
        fail(*s.get(key), std::string("train.") + key,
             "must be at most 3.4e38 (it is a 32-bit float), found " + format_real(value));
    t.sgd.lr = float(lr);
    t.sgd.momentum = float(momentum);
    t.sgd.weight_decay = float(weight_decay);
    t.seed = std::uint64_t(s.integer("seed", 1, 0, kMax));
    t.shuffle = s.boolean("shuffle", true);
    t.drop_last = s.boolean("drop_last", false);
    cfg.eval_every = int(s.integer("eval_every", 1, 0, INT_MAX));
  }

  // [output]: relative to where the run is started, not to the config, so that one
  // config can be run from several working directories without mixing results.
  {
    Section s(*this, doc, "output");
    const fs::path cwd = fs::current_path();
    cfg.output.dir = s.path_value("dir", cwd).value_or(resolve(cwd, "results"));
    if (auto p = s.path_value("save_checkpoint", cwd)) cfg.output.save_checkpoint = *p;
    cfg.output.write_results = s.boolean("write_results", true);
  }

  // [plugins]
  {
    Section s(*this, doc, "plugins");
    if (const toml::node* n = s.get("paths")) {
      const toml::array* a = n->as_array();
      if (!a) fail_type(*n, "plugins.paths", "an array of paths");
      for (std::size_t i = 0; i < a->size(); ++i) {
        const toml::node& e = *a->get(i);
        const std::string p = "plugins.paths[" + std::to_string(i) + "]";
        if (!e.is_string()) fail_type(e, p, "a string");
        std::string text = expand_env(e.as_string()->get(), where(e, p));
        if (text.empty()) fail(e, p, "must not be an empty path");
        cfg.plugin_paths.push_back(resolve(dir_, text));
      }
    }
  }

  // [mpi]: how nnpar starts multi-rank strategies itself (compare, or train without mpirun).
  {
    Section s(*this, doc, "mpi");
    if (auto l = s.string("launcher")) {
      if (l->empty()) fail(*s.get("launcher"), "mpi.launcher", "must not be empty");
      cfg.mpi.launcher = *l;
    }
    if (const toml::node* n = s.get("launcher_args")) {
      const toml::array* a = n->as_array();
      if (!a) fail_type(*n, "mpi.launcher_args", "an array of strings");
      cfg.mpi.launcher_args.clear();
      for (std::size_t i = 0; i < a->size(); ++i) {
        const toml::node& e = *a->get(i);
        if (!e.is_string()) fail_type(e, "mpi.launcher_args[" + std::to_string(i) + "]", "a string");
        cfg.mpi.launcher_args.push_back(e.as_string()->get());
      }
    }
    cfg.mpi.rank_timeout = s.real("rank_timeout", 30.0, non_negative, "must be >= 0 (seconds; 0 = off)");
  }

  cfg.strategies = read_strategies(doc_ptr);

  // [parity] after the strategies: an explicit reference must name one of them.
  {
    Section s(*this, doc, "parity");
    if (auto r = s.string("reference")) {
      std::vector<std::string> labels;
      for (auto& e : cfg.strategies) labels.push_back(e.label);
      if (std::find(labels.begin(), labels.end(), *r) == labels.end())
        fail(*s.get("reference"), "parity.reference",
             "no strategy is labelled \"" + *r + "\"" + suggestion(*r, labels) + " (labels: " + plain_list(labels) + ")");
      cfg.parity.reference = *r;
    }
    cfg.parity.weight_rtol = s.real("weight_rtol", 1e-3, non_negative, "must be >= 0");
    cfg.parity.weight_atol = s.real("weight_atol", 1e-5, non_negative, "must be >= 0");
    cfg.parity.accuracy_pp = s.real("accuracy_pp", 0.1, non_negative, "must be >= 0");
    cfg.parity.approx_accuracy_pp = s.real("approx_accuracy_pp", 1.0, non_negative, "must be >= 0");
  }

  // The resolved document: every setting with its effective value, paths absolute, so a
  // results file says exactly what ran.
  toml::table& r = cfg.resolved;
  {
    const DataConfig& d = cfg.data;
    toml::table t;
    t.insert("dir", d.dir.string());
    t.insert("format", d.format);
    if (d.format == "csv") {
      t.insert("train_csv", d.train_csv.string());
      t.insert("test_csv", d.test_csv.string());
    } else {
      t.insert("train_images", d.train_images.string());
      t.insert("train_labels", d.train_labels.string());
      t.insert("test_images", d.test_images.string());
      t.insert("test_labels", d.test_labels.string());
    }
    t.insert("transpose", d.options.transpose);
    t.insert("label_offset", d.options.label_offset);
    t.insert("normalize", d.options.normalize);
    t.insert("limit", std::int64_t(d.options.limit));
    t.insert("test_limit", std::int64_t(d.test_limit));
    t.insert("classes", d.options.num_classes);
    r.insert("data", std::move(t));
  }
  {
    const ModelSpec& m = cfg.model;
    toml::table t;
    toml::array layers;
    for (int n : m.layer_sizes) layers.push_back(n);
    t.insert("layers", std::move(layers));
    t.insert("init", m.init == InitKind::zero ? "zero" : m.init == InitKind::normal ? "normal" : "xavier");
    t.insert("init_std", m.init_std);
    t.insert("seed", std::int64_t(m.seed));
    if (!cfg.init_checkpoint.empty()) t.insert("init_checkpoint", cfg.init_checkpoint.string());
    r.insert("model", std::move(t));
  }
  {
    const TrainSettings& s = cfg.train;
    toml::table t;
    t.insert("epochs", s.epochs);
    t.insert("batch_size", s.batch_size);
    t.insert("lr", lr);
    t.insert("momentum", momentum);
    t.insert("weight_decay", weight_decay);
    t.insert("seed", std::int64_t(s.seed));
    t.insert("shuffle", s.shuffle);
    t.insert("drop_last", s.drop_last);
    t.insert("eval_every", cfg.eval_every);
    r.insert("train", std::move(t));
  }
  {
    toml::table t;
    t.insert("dir", cfg.output.dir.string());
    if (!cfg.output.save_checkpoint.empty()) t.insert("save_checkpoint", cfg.output.save_checkpoint.string());
    t.insert("write_results", cfg.output.write_results);
    r.insert("output", std::move(t));
  }
  {
    toml::table t;
    // The default reference ("serial") is written only if the config has it: a resolved
    // config must load again (nnpar train --resume reads it), and an explicit reference must
    // name a strategy.
    const bool reference_listed = std::any_of(cfg.strategies.begin(), cfg.strategies.end(),
                                              [&](const StrategyEntry& e) { return e.label == cfg.parity.reference; });
    if (reference_listed) t.insert("reference", cfg.parity.reference);
    t.insert("weight_rtol", cfg.parity.weight_rtol);
    t.insert("weight_atol", cfg.parity.weight_atol);
    t.insert("accuracy_pp", cfg.parity.accuracy_pp);
    t.insert("approx_accuracy_pp", cfg.parity.approx_accuracy_pp);
    r.insert("parity", std::move(t));
  }
  {
    toml::array paths;
    for (auto& p : cfg.plugin_paths) paths.push_back(p.string());
    toml::table t;
    t.insert("paths", std::move(paths));
    r.insert("plugins", std::move(t));
  }
  {
    toml::table t;
    t.insert("launcher", cfg.mpi.launcher);
    toml::array args;
    for (auto& a : cfg.mpi.launcher_args) args.push_back(a);
    t.insert("launcher_args", std::move(args));
    t.insert("rank_timeout", cfg.mpi.rank_timeout);
    r.insert("mpi", std::move(t));
  }
  {
    toml::array entries;
    for (auto& e : cfg.strategies) {
      toml::table t = *e.table;
      t.insert_or_assign("name", e.name);
      t.insert_or_assign("label", e.label);
      t.insert_or_assign("ranks", e.ranks);
      entries.push_back(std::move(t));
    }
    r.insert("strategy", std::move(entries));
  }
  return cfg;
}

std::string option_where(const StrategyEntry& entry, const toml::source_region& src, const std::string& key) {
  if (src.begin) {
    const std::string file = src.path ? *src.path : entry.where;
    return position(src, file) + ": strategy[" + entry.label + "]." + key;
  }
  // No position: the value came from an override, which is how the user wrote it.
  return "--set strategy." + entry.label + "." + key;
}

std::string option_type_name(OptionType t) {
  switch (t) {
    case OptionType::boolean: return "a boolean (true or false)";
    case OptionType::integer: return "an integer";
    case OptionType::real: return "a number";
    case OptionType::string: return "a string";
  }
  return "a value";
}

std::string format_bound(double v, OptionType t) {
  if (t == OptionType::integer && std::abs(v) < 9e15) return std::to_string(std::int64_t(v));
  return format_real(v);
}

}  // namespace

std::string closest_match(const std::string& key, const std::vector<std::string>& candidates) {
  std::string best;
  std::size_t best_d = std::numeric_limits<std::size_t>::max();
  for (const auto& c : candidates) {
    // Levenshtein distance, one row at a time.
    std::vector<std::size_t> row(c.size() + 1);
    for (std::size_t j = 0; j <= c.size(); ++j) row[j] = j;
    for (std::size_t i = 1; i <= key.size(); ++i) {
      std::size_t diag = row[0];
      row[0] = i;
      for (std::size_t j = 1; j <= c.size(); ++j) {
        const std::size_t up = row[j];
        row[j] = std::min({row[j] + 1, row[j - 1] + 1, diag + (key[i - 1] == c[j - 1] ? 0 : 1)});
        diag = up;
      }
    }
    if (row[c.size()] < best_d) {
      best_d = row[c.size()];
      best = c;
    }
  }
  // The second condition keeps very short keys from "matching" unrelated ones (xy -> lr).
  const std::size_t limit = std::max<std::size_t>(2, key.size() / 3);
  if (best.empty() || best_d > limit || best_d >= key.size()) return {};
  return best;
}

std::string expand_env(const std::string& text, const std::string& where) {
  const std::string prefix = where.empty() ? std::string() : where + ": ";
  std::string out;
  for (std::size_t i = 0; i < text.size();) {
    if (text[i] != '$' || i + 1 >= text.size() || text[i + 1] != '{') {
      out += text[i++];
      continue;
    }
    const auto close = text.find('}', i + 2);
    if (close == std::string::npos)
      throw ConfigError(prefix + "unterminated '${' in \"" + text + "\"");
    const std::string name = text.substr(i + 2, close - i - 2);
    if (name.empty()) throw ConfigError(prefix + "empty variable name '${}' in \"" + text + "\"");
    const char* value = std::getenv(name.c_str());
    if (!value)
      throw ConfigError(prefix + "environment variable '" + name + "' is not set (used as ${" + name +
                        "} in \"" + text + "\")");
    out += value;
    i = close + 1;
  }
  return out;
}

RunConfig load_config(const std::filesystem::path& file, const std::vector<std::string>& overrides) {
  const std::string shown = file.string();
  std::error_code ec;
  if (fs::is_directory(file, ec)) throw ConfigError("cannot open config file '" + shown + "': it is a directory");
  std::ifstream in(file, std::ios::binary);
  if (!in) throw ConfigError("cannot open config file '" + shown + "'");
  std::stringstream buffer;
  buffer << in.rdbuf();
  RunConfig cfg = load_config_text(buffer.str(), shown, fs::absolute(file).parent_path(), overrides);
  cfg.file = file;
  return cfg;
}

RunConfig load_config_text(const std::string& text, const std::string& shown,
                           const std::filesystem::path& base_dir, const std::vector<std::string>& overrides) {
  auto doc = std::make_shared<toml::table>();
  try {
    *doc = toml::parse(text, std::string_view(shown));
  } catch (const toml::parse_error& e) {
    std::string pos = position(e.source(), shown);
    throw ConfigError((pos.empty() ? shown : pos) + ": TOML syntax error: " + std::string(e.description()));
  }

  Loader loader(shown, base_dir);
  for (const auto& o : overrides) loader.apply_override(*doc, o);
  RunConfig cfg = loader.load(doc);
  cfg.file = shown;
  return cfg;
}

StrategyOptions validate_strategy_options(const StrategyEntry& entry, const std::vector<OptionSpec>& specs) {
  std::map<std::string, OptionValue> values;
  std::vector<std::string> names;
  for (const auto& s : specs) names.push_back(s.name);

  if (const toml::table* t = entry.table.get()) {
    const toml::key* unknown = nullptr;
    for (auto& [k, v] : *t) {
      const std::string key(k.str());
      if (key == "name" || key == "label" || key == "ranks" || std::find(names.begin(), names.end(), key) != names.end()) continue;
      if (!unknown || before(k.source(), unknown->source())) unknown = &k;
    }
    if (unknown) {
      const std::string key(unknown->str());
      const toml::node& n = *t->get(key);
      std::string hint = suggestion(key, names);
      if (hint.empty())
        hint = names.empty() ? " (strategy '" + entry.name + "' takes no options)"
                             : " (strategy '" + entry.name + "' accepts: " + plain_list(names) + ")";
      const toml::source_region& src = unknown->source().begin ? unknown->source() : n.source();
      throw ConfigError(option_where(entry, src, key) + ": unknown key" + hint);
    }

    for (const auto& spec : specs) {
      const toml::node* n = t->get(spec.name);
      if (!n) continue;
      const std::string where = option_where(entry, n->source(), spec.name);
      auto type_error = [&] {
        std::string found = type_name(n->type());
        if (n->is_value() && !n->is_string()) found += " (" + describe_value(*n) + ")";
        throw ConfigError(where + ": expected " + option_type_name(spec.type) + ", found " + found);
      };
      auto range_check = [&](double x, const std::string& shown) {
        if (x >= spec.min && x <= spec.max) return;
        const bool has_min = spec.min > -1e300, has_max = spec.max < 1e300;
        std::string rule = has_min && has_max ? "must be in [" + format_bound(spec.min, spec.type) + ", " +
                                                    format_bound(spec.max, spec.type) + "]"
                           : has_min         ? "must be >= " + format_bound(spec.min, spec.type)
                                             : "must be <= " + format_bound(spec.max, spec.type);
        throw ConfigError(where + ": " + rule + ", found " + shown);
      };
      switch (spec.type) {
        case OptionType::boolean:
          if (!n->is_boolean()) type_error();
          values[spec.name] = n->as_boolean()->get();
          break;
        case OptionType::integer: {
          if (!n->is_integer()) type_error();
          const std::int64_t x = n->as_integer()->get();
          range_check(double(x), std::to_string(x));
          values[spec.name] = x;
          break;
        }
        case OptionType::real: {
          double x = 0;
          if (n->is_integer()) x = double(n->as_integer()->get());
          else if (n->is_floating_point()) x = n->as_floating_point()->get();
          else type_error();
          if (!std::isfinite(x)) throw ConfigError(where + ": must be finite, found " + format_real(x));
          range_check(x, format_real(x));
          values[spec.name] = x;
          break;
        }
        case OptionType::string: {
          if (!n->is_string()) type_error();
          const std::string& x = n->as_string()->get();
          if (!spec.choices.empty() && std::find(spec.choices.begin(), spec.choices.end(), x) == spec.choices.end())
            throw ConfigError(where + ": must be one of " + quoted_list(spec.choices) + ", found \"" + x + "\"" +
                              suggestion(x, spec.choices));
          values[spec.name] = x;
          break;
        }
      }
    }
  }

  for (const auto& spec : specs) {
    if (values.count(spec.name)) continue;
    OptionValue def = spec.default_value;
    // A plugin writing default_value = std::int64_t{2} for a real option means 2.0.
    if (spec.type == OptionType::real && std::holds_alternative<std::int64_t>(def))
      def = double(std::get<std::int64_t>(def));
    values[spec.name] = def;
  }
  return StrategyOptions(std::move(values));
}

}  // namespace nnpar
