// nnpar serve: a page where a person draws a letter and the model reads it, a JSON API
// (docs/serve.md), and optionally a training run in the background whose current model
// answers while it learns.
#pragma once
#include <cstddef>
#include <filesystem>
#include <memory>
#include <string>
#include <vector>

namespace CLI {
class App;
}

namespace nnpar {

struct ServeOptions {
  std::filesystem::path checkpoint;    // a trained model (safetensors), or
  std::filesystem::path train_config;  // a config to train in the background
  std::string strategy;                // [[strategy]] label or plugin name; default: the first entry
  std::vector<std::string> overrides;  // --set for train_config
  std::vector<std::string> plugin_paths;
  std::string host = "127.0.0.1";
  int port = 8080;                     // 0: any free port (printed)
  std::size_t max_body_bytes = 4u << 20;
  bool quiet = false;
};

class LetterServer {
 public:
  // Loads the checkpoint, or the config with its data and plugin, so every error surfaces
  // here (CheckpointError, ConfigError, DataError, PluginError naming the file) and not
  // after the server has started.
  explicit LetterServer(const ServeOptions& options);
  ~LetterServer();  // stops serving and training
  LetterServer(const LetterServer&) = delete;
  LetterServer& operator=(const LetterServer&) = delete;

  // Binds options.host:options.port and returns the port (the chosen one for port 0);
  // std::runtime_error naming the address when it cannot.
  int bind();
  // Starts the background training, if any, and answers requests until stop(). Blocks.
  void serve();
  // Ends serve() and asks the training to stop after its current epoch; callable from
  // any thread.
  void stop();
  // Blocks until the background training has ended (returns at once without one).
  void wait_for_training();
  // The model served, for messages: "checkpoint F, layers 784-256-256-26".
  std::string description() const;

 private:
  struct Impl;
  std::unique_ptr<Impl> impl_;
};

// The `serve` subcommand's options, registered on the nnpar command line.
CLI::App* add_serve_command(CLI::App& app, ServeOptions& options);
// Runs the subcommand: prints the address and serves until the process is stopped.
int run_serve(const ServeOptions& options);

}  // namespace nnpar
