#include "serve.hpp"

#include <httplib.h>

#include <CLI/CLI.hpp>
#include <nlohmann/json.hpp>

#include <algorithm>
#include <atomic>
#include <chrono>
#include <cmath>
#include <condition_variable>
#include <cstdio>
#include <mutex>
#include <numeric>
#include <thread>

#include "config.hpp"
#include "drawing.hpp"
#include "plugin_loader.hpp"
#include "runner.hpp"
#include "nnpar/safetensors.hpp"

namespace nnpar {

// harness/web/serve.html, embedded at build time (harness/web/embed.cmake).
extern const unsigned char kServePage[];
extern const std::size_t kServePageSize;

namespace {

using nlohmann::json;
namespace fs = std::filesystem;

constexpr int kTopCount = 5;
constexpr int kPixels = kLetterSide * kLetterSide;

// A request the client got wrong: answered with `status` and {"error": message}.
class BadRequest : public std::runtime_error {
 public:
  BadRequest(int status, const std::string& message) : std::runtime_error(message), status_(status) {}
  int status() const { return status_; }

 private:
  int status_;
};

// Thrown from the runner's callbacks to end the background training early.
struct TrainingStopped {};

// The parameters predictions use. A new epoch replaces the whole snapshot and never writes
// into an old one, so a request keeps a consistent model for as long as it holds it.
struct ModelSnapshot {
  std::shared_ptr<std::vector<float>> parameters;
  int epoch = -1;  // -1: a checkpoint; 0: the initial weights of a training run
};

std::string class_name(int c, int classes) {
  return classes == 26 ? std::string(1, char('a' + c)) : std::to_string(c);
}

std::string layers_text(const std::vector<int>& sizes) {
  std::string s;
  for (std::size_t i = 0; i < sizes.size(); ++i) {
    if (i > 0) s += '-';
    s += std::to_string(sizes[i]);
  }
  return s;
}

void send_json(httplib::Response& res, const json& body, int status = 200) {
  res.status = status;
  res.set_content(body.dump(), "application/json");
}

void send_error(httplib::Response& res, int status, const std::string& message) {
  send_json(res, json{{"error", message}}, status);
}

bool starts_with(const std::string& s, std::string_view prefix) { return s.rfind(prefix, 0) == 0; }

// {"pixels": 28 rows of 28 numbers (or 784 numbers) in 0..255, "preprocess": bool}.
LetterImage letter_from_json(const std::string& body) {
  json doc;
  try {
    doc = json::parse(body);
  } catch (const json::parse_error& e) {
    throw BadRequest(400, std::string("the body is not valid JSON: ") + e.what());
  }
  if (!doc.is_object()) throw BadRequest(400, "expected a JSON object: {\"pixels\": [[...28 numbers], ...28 rows]}");
  for (auto& [key, value] : doc.items())
    if (key != "pixels" && key != "preprocess")
      throw BadRequest(400, "unknown key \"" + key + "\" (expected \"pixels\" and optionally \"preprocess\")");
  if (!doc.contains("pixels"))
    throw BadRequest(400, "missing \"pixels\": 28 rows of 28 numbers in 0..255 (255 = ink), or 784 numbers");
  bool preprocess = false;
  if (doc.contains("preprocess")) {
    if (!doc["preprocess"].is_boolean()) throw BadRequest(400, "\"preprocess\" must be true or false");
    preprocess = doc["preprocess"].get<bool>();
  }
  const json& pixels = doc["pixels"];
  const std::string shape_hint = "28 rows of 28 numbers, or 784 numbers";
  if (!pixels.is_array()) throw BadRequest(400, "\"pixels\" must be an array of " + shape_hint);
  std::vector<std::pair<const json*, std::string>> values;  // value, where (for messages)
  if (!pixels.empty() && pixels.front().is_array()) {
    if (pixels.size() != std::size_t(kLetterSide))
      throw BadRequest(400, "\"pixels\" has " + std::to_string(pixels.size()) + " rows; expected " + shape_hint);
    for (std::size_t r = 0; r < pixels.size(); ++r) {
      const json& row = pixels[r];
      const std::string where = "pixels[" + std::to_string(r) + "]";
      if (!row.is_array() || row.size() != std::size_t(kLetterSide))
        throw BadRequest(400, where + " must be an array of 28 numbers" +
                                  (row.is_array() ? ", not " + std::to_string(row.size()) : std::string()));
      for (std::size_t c = 0; c < row.size(); ++c) values.emplace_back(&row[c], where + "[" + std::to_string(c) + "]");
    }
  } else {
    if (pixels.size() != std::size_t(kPixels))
      throw BadRequest(400, "\"pixels\" has " + std::to_string(pixels.size()) + " values; expected " + shape_hint);
    for (std::size_t i = 0; i < pixels.size(); ++i) values.emplace_back(&pixels[i], "pixels[" + std::to_string(i) + "]");
  }
  InkImage image(kLetterSide, kLetterSide);
  for (std::size_t i = 0; i < values.size(); ++i) {
    const json& v = *values[i].first;
    const double x = v.is_number() ? v.get<double>() : std::nan("");
    if (!std::isfinite(x) || x < 0 || x > 255)
      throw BadRequest(400, values[i].second + " must be a number in 0..255, not " + v.dump());
    image.pixels[i] = std::uint8_t(std::lround(x));
  }
  if (preprocess) return letter_image(image);
  LetterImage out;
  std::copy(image.pixels.begin(), image.pixels.end(), out.begin());
  return out;
}

LetterImage letter_from_png(const std::string& body, bool preprocess) {
  const InkImage ink = ink_from_png(body);
  if (preprocess) return letter_image(ink);
  if (ink.width != kLetterSide || ink.height != kLetterSide)
    throw BadRequest(400, "preprocess=false needs a 28x28 PNG; this one is " + std::to_string(ink.width) + "x" +
                              std::to_string(ink.height));
  LetterImage out;
  std::copy(ink.pixels.begin(), ink.pixels.end(), out.begin());
  return out;
}

bool query_flag(const httplib::Request& req, const std::string& key, bool fallback) {
  if (!req.has_param(key.c_str())) return fallback;
  const std::string v = req.get_param_value(key.c_str());
  if (v == "1" || v == "true" || v == "yes") return true;
  if (v == "0" || v == "false" || v == "no") return false;
  throw BadRequest(400, "query parameter " + key + "=" + v + ": expected true or false");
}

const char* status_text(int status) {
  switch (status) {
    case 404: return "no such endpoint (see docs/serve.md: GET /, GET /api/status, GET /api/training, POST /api/predict)";
    case 405: return "method not allowed";
    case 413: return "the body is too large";
    case 414: return "the request line is too long";
    default: return "bad request";
  }
}

}  // namespace

struct LetterServer::Impl {
  ServeOptions options;
  ModelSpec spec;
  float input_scale = 1.0f / 255.0f;
  std::string source;  // what the page and /api/status say the model is

  mutable std::mutex model_mutex;
  ModelSnapshot model;

  // Background training (options.train_config).
  bool training = false;
  RunConfig config;
  StrategyEntry entry;
  std::unique_ptr<PluginRegistry> plugins;
  Datasets data;
  std::vector<float> initial;
  std::thread trainer;
  std::atomic<bool> stop_training{false};
  mutable std::mutex training_mutex;
  std::condition_variable training_ended;
  std::string state = "off";  // off | waiting | training | finished | stopped | failed
  std::string error;
  std::vector<EpochRecord> epochs;

  httplib::Server http;
  int port = -1;
  std::atomic<bool> serving{false}, stopping{false};

  void load_checkpoint_model() {
    const fs::path& file = options.checkpoint;
    spec.layer_sizes = checkpoint_layer_sizes(file);
    check_input_size(file.string());
    auto params = std::make_shared<std::vector<float>>(parameter_count(spec));
    load_checkpoint(file, spec, *params);
    model = {params, -1};
    source = "checkpoint " + file.string();
  }

  void check_input_size(const std::string& what) const {
    if (spec.layer_sizes.front() != kPixels)
      throw CheckpointError(what + ": the model reads " + std::to_string(spec.layer_sizes.front()) +
                            " inputs; serve draws 28x28 letters and needs " + std::to_string(kPixels));
  }

  void prepare_training() {
    config = load_config(options.train_config, options.overrides);
    // Every epoch's model is published (and its test accuracy drawn): evaluate each epoch.
    config.eval_every = 1;
    if (options.strategy.empty()) {
      entry = config.strategies.front();
    } else {
      auto found = std::find_if(config.strategies.begin(), config.strategies.end(),
                                [&](const StrategyEntry& e) { return e.label == options.strategy; });
      if (found != config.strategies.end()) {
        entry = *found;
      } else {  // a plugin name with default options, as `nnpar train --strategy` allows
        entry.name = entry.label = options.strategy;
        entry.table = std::make_shared<toml::table>();
        entry.where = "--strategy " + options.strategy;
      }
    }
    std::vector<fs::path> extra(options.plugin_paths.begin(), options.plugin_paths.end());
    extra.insert(extra.end(), config.plugin_paths.begin(), config.plugin_paths.end());
    plugins = std::make_unique<PluginRegistry>(PluginRegistry::standard(extra));
    const StrategyInfo& info = plugins->find(entry.name)->info();
    if (info.needs_mpi || entry.ranks > 1)
      throw ConfigError("strategy '" + entry.label + "' (plugin " + info.name +
                        ") runs on several MPI ranks; serve trains inside its own process: choose a "
                        "single-process strategy with --strategy (serial, openmp, cuda)");
    check_capabilities(info, entry.label, 1);
    validate_strategy_options(entry, info.options);
    spec = config.model;
    check_input_size(config.file.string() + ": model.layers");
    data = load_datasets(config.data);
    check_model_matches_data(config, data.train);
    if (data.train.rows != kLetterSide || data.train.cols != kLetterSide)
      throw ConfigError(config.file.string() + ": the images are " + std::to_string(data.train.rows) + "x" +
                        std::to_string(data.train.cols) + "; serve draws 28x28 letters");
    input_scale = data.train.pixel_scale;
    initial = initial_parameters(config);
    model = {std::make_shared<std::vector<float>>(initial), 0};
    training = true;
    state = "waiting";
    source = "training " + config.file.string() + " (" + entry.label + ")";
  }

  ModelSnapshot current_model() const {
    std::lock_guard lock(model_mutex);
    return model;
  }

  json model_json(const ModelSnapshot& m) const {
    json j{{"source", source}, {"layers", spec.layer_sizes}};
    j["epoch"] = m.epoch >= 0 ? json(m.epoch) : json(nullptr);
    return j;
  }

  json predict(const LetterImage& image) const {
    const ModelSnapshot snapshot = current_model();
    Model net(spec, 1, std::span<float>(*snapshot.parameters));
    std::vector<float> x(kPixels);
    for (int i = 0; i < kPixels; ++i) x[i] = float(image[i]) * input_scale;
    const MatrixView logits = net.predict({x.data(), 1, kPixels});
    const int classes = logits.cols;
    const float peak = *std::max_element(logits.data, logits.data + classes);
    std::vector<double> probabilities(classes);
    double sum = 0;
    for (int c = 0; c < classes; ++c) sum += probabilities[c] = std::exp(double(logits.data[c]) - peak);
    for (double& p : probabilities) p /= sum;
    std::vector<int> order(classes);
    std::iota(order.begin(), order.end(), 0);
    std::stable_sort(order.begin(), order.end(), [&](int a, int b) { return probabilities[a] > probabilities[b]; });
    json top = json::array();
    for (int i = 0; i < std::min(kTopCount, classes); ++i)
      top.push_back({{"letter", class_name(order[i], classes)}, {"class", order[i]}, {"probability", probabilities[order[i]]}});
    json rows = json::array();
    for (int r = 0; r < kLetterSide; ++r)
      rows.push_back(std::vector<int>(image.begin() + r * kLetterSide, image.begin() + (r + 1) * kLetterSide));
    return {{"top", top}, {"probabilities", probabilities}, {"input", rows}, {"model", model_json(snapshot)}};
  }

  json status_json() const {
    const int classes = spec.layer_sizes.back();
    std::vector<std::string> names;
    for (int c = 0; c < classes; ++c) names.push_back(class_name(c, classes));
    json model_info = model_json(current_model());
    model_info["classes"] = names;
    return {{"nnpar", NNPAR_VERSION},
            {"mode", training ? "training" : "checkpoint"},
            {"model", model_info},
            {"limits", {{"max_body_bytes", options.max_body_bytes}, {"max_png_side", kMaxPngSide}}}};
  }

  json training_json() const {
    std::lock_guard lock(training_mutex);
    json j{{"state", state}};
    if (!training) return j;
    j["strategy"] = entry.label;
    j["config"] = config.file.string();
    j["epochs_total"] = config.train.epochs;
    json list = json::array();
    for (const EpochRecord& e : epochs)
      list.push_back({{"epoch", e.epoch},
                      {"loss", e.loss},
                      {"train_accuracy", e.train_accuracy},
                      {"test_accuracy", std::isnan(e.test_accuracy) ? json(nullptr) : json(e.test_accuracy)},
                      {"seconds", e.seconds},
                      {"samples_per_second", e.samples_per_second},
                      {"elapsed_seconds", e.elapsed_seconds}});
    j["epochs"] = list;
    if (!error.empty()) j["error"] = error;
    return j;
  }

  void set_state(const std::string& s, const std::string& message = {}) {
    std::lock_guard lock(training_mutex);
    state = s;
    error = message;
    if (s != "training") training_ended.notify_all();
  }

  void train_in_background() {
    if (stop_training) return set_state("stopped");
    set_state("training");
    try {
      run_strategy(
          config, entry, *plugins, data, initial,
          [&](const RunResult& run, const EpochRecord& record) {
            {
              std::lock_guard lock(training_mutex);
              epochs.push_back(record);
            }
            if (!options.quiet) {
              std::printf("%s\n", format_epoch_line(run, record, config.train.epochs).c_str());
              std::fflush(stdout);
            }
            if (stop_training) throw TrainingStopped{};
          },
          {},
          [&](int epoch, std::span<const float> parameters) {
            auto copy = std::make_shared<std::vector<float>>(parameters.begin(), parameters.end());
            std::lock_guard lock(model_mutex);
            model = {std::move(copy), epoch};
          });
      set_state("finished");
    } catch (const TrainingStopped&) {
      set_state("stopped");
    } catch (const std::exception& e) {
      // The server keeps answering with the last published model.
      std::fprintf(stderr, "nnpar serve: training failed: %s\n", e.what());
      set_state("failed", e.what());
    }
  }

  template <class Handler>
  static httplib::Server::Handler guarded(Handler handler) {
    return [handler](const httplib::Request& req, httplib::Response& res) {
      try {
        handler(req, res);
      } catch (const BadRequest& e) {
        send_error(res, e.status(), e.what());
      } catch (const ImageError& e) {
        send_error(res, 400, e.what());
      } catch (const std::exception& e) {
        send_error(res, 500, std::string("internal error: ") + e.what());
      }
    };
  }

  void routes() {
    // Enough workers for a browser's parallel connections plus polling clients.
    http.new_task_queue = [] { return new httplib::ThreadPool(16); };
    http.set_payload_max_length(options.max_body_bytes);
    // httplib's default adds SO_REUSEPORT, which lets a second server share a taken port
    // silently; SO_REUSEADDR alone still allows a quick restart.
    http.set_socket_options([](socket_t sock) {
      int yes = 1;
      ::setsockopt(sock, SOL_SOCKET, SO_REUSEADDR, &yes, sizeof yes);
    });
    http.set_read_timeout(10);
    const std::string page(reinterpret_cast<const char*>(kServePage), kServePageSize);
    auto send_page = [page](const httplib::Request&, httplib::Response& res) {
      res.set_header("Cache-Control", "no-store");
      res.set_content(page, "text/html; charset=utf-8");
    };
    http.Get("/", send_page);
    http.Get("/index.html", send_page);
    http.Get("/api/status", guarded([this](const httplib::Request&, httplib::Response& res) {
      send_json(res, status_json());
    }));
    http.Get("/api/training", guarded([this](const httplib::Request&, httplib::Response& res) {
      send_json(res, training_json());
    }));
    http.Post("/api/predict", guarded([this](const httplib::Request& req, httplib::Response& res) {
      const std::string type = req.get_header_value("Content-Type");
      const bool png_magic = starts_with(req.body, std::string_view("\x89PNG\r\n\x1a\n", 8));
      LetterImage image;
      if (starts_with(type, "image/png") || png_magic)
        image = letter_from_png(req.body, query_flag(req, "preprocess", true));
      else if (starts_with(type, "application/json") || type.empty())
        image = letter_from_json(req.body);
      else
        throw BadRequest(415, "unsupported Content-Type '" + type + "': send application/json or image/png");
      send_json(res, predict(image));
    }));
    // httplib's own refusals (unknown path, body over the limit) get a JSON message too.
    http.set_error_handler([this](const httplib::Request& req, httplib::Response& res) {
      if (!res.body.empty()) return;
      std::string message = status_text(res.status);
      if (res.status == 413) message += ": at most " + std::to_string(options.max_body_bytes) + " bytes are accepted";
      if (res.status == 404) message = req.method + " " + req.path + ": " + message;
      send_error(res, res.status, message);
    });
    http.set_exception_handler([](const httplib::Request&, httplib::Response& res, std::exception_ptr) {
      send_error(res, 500, "internal error");
    });
  }
};

LetterServer::LetterServer(const ServeOptions& options) : impl_(std::make_unique<Impl>()) {
  impl_->options = options;
  if (options.checkpoint.empty() == options.train_config.empty())
    throw ConfigError("serve needs either --checkpoint FILE (a trained model) or --train CONFIG (train in the background)");
  if (!options.checkpoint.empty())
    impl_->load_checkpoint_model();
  else
    impl_->prepare_training();
  impl_->routes();
}

LetterServer::~LetterServer() {
  stop();
  if (impl_->trainer.joinable()) impl_->trainer.join();
}

int LetterServer::bind() {
  if (impl_->port >= 0) return impl_->port;
  const auto& o = impl_->options;
  if (o.port == 0) {
    impl_->port = impl_->http.bind_to_any_port(o.host);
    if (impl_->port < 0) throw std::runtime_error("cannot listen on " + o.host + " (any port)");
  } else if (impl_->http.bind_to_port(o.host, o.port)) {
    impl_->port = o.port;
  } else {
    throw std::runtime_error("cannot listen on " + o.host + ":" + std::to_string(o.port) +
                             " (in use, or not an address of this machine); choose another with --port/--host");
  }
  return impl_->port;
}

void LetterServer::serve() {
  bind();
  if (impl_->training && !impl_->trainer.joinable())
    impl_->trainer = std::thread([this] { impl_->train_in_background(); });
  impl_->serving = true;
  if (!impl_->stopping) impl_->http.listen_after_bind();
  impl_->serving = false;
}

void LetterServer::stop() {
  impl_->stopping = true;
  impl_->stop_training = true;
  // httplib ignores stop() before its loop runs: wait for the loop (or for serve() to end).
  for (;;) {
    if (impl_->http.is_running()) {
      impl_->http.stop();
      break;
    }
    if (!impl_->serving) break;
    std::this_thread::sleep_for(std::chrono::milliseconds(1));
  }
}

void LetterServer::wait_for_training() {
  if (!impl_->training) return;
  std::unique_lock lock(impl_->training_mutex);
  impl_->training_ended.wait(lock, [&] {
    return impl_->state != "training" && impl_->state != "waiting";
  });
}

std::string LetterServer::description() const {
  return impl_->source + ", layers " + layers_text(impl_->spec.layer_sizes);
}

CLI::App* add_serve_command(CLI::App& app, ServeOptions& o) {
  auto* cmd = app.add_subcommand(
      "serve", "a web page where you draw a letter and the model reads it (and, with --train, watch it "
               "learn), plus a JSON API; see docs/serve.md");
  auto* checkpoint = cmd->add_option("--checkpoint", o.checkpoint,
                                     "the model to serve: a safetensors file from nnpar train --save-checkpoint")
                         ->type_name("FILE");
  auto* train = cmd->add_option("--train", o.train_config,
                                "instead, train this config in the background (single-process strategies) and "
                                "serve each epoch's model as it learns")
                    ->type_name("CONFIG");
  checkpoint->excludes(train);
  cmd->add_option("--strategy", o.strategy, "with --train: the [[strategy]] label or plugin name; default the first")
      ->type_name("LABEL")
      ->needs(train);
  cmd->add_option("--set", o.overrides, "with --train: override a config key, e.g. --set train.epochs=20 (repeatable)")
      ->type_name("KEY=VALUE")
      ->needs(train);
  cmd->add_option("--plugin-path", o.plugin_paths, "extra folder to search for plugins (repeatable)")->type_name("DIR");
  cmd->add_option("--host", o.host, "address to listen on; 127.0.0.1 keeps it to this machine")->capture_default_str();
  cmd->add_option("--port", o.port, "TCP port; 0 picks a free one (printed)")
      ->check(CLI::Range(0, 65535))
      ->capture_default_str();
  cmd->add_flag("-q,--quiet", o.quiet, "no per-epoch lines");
  return cmd;
}

int run_serve(const ServeOptions& options) {
  LetterServer server(options);
  const int port = server.bind();
  const std::string host = options.host.find(':') != std::string::npos ? "[" + options.host + "]" : options.host;
  std::printf("nnpar serve: http://%s:%d/  (model: %s)\n", host.c_str(), port, server.description().c_str());
  std::printf("API: GET /api/status, POST /api/predict, GET /api/training (docs/serve.md); Ctrl-C stops\n");
  std::fflush(stdout);
  server.serve();
  return 0;
}

}  // namespace nnpar
