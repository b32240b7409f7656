// What the training tests share: where the letters dataset is, and a small run
// configuration over it built in code (no TOML), so each test states only what it varies.
#pragma once
#include <cstdlib>
#include <filesystem>
#include <memory>
#include <string>

#include "config.hpp"

namespace nnpar::test_support {

// NNPAR_TEST_DATA (set on GPU machines, where the build's paths do not exist) or the folder
// the build was configured with.
inline std::filesystem::path letters_dir() {
  if (const char* env = std::getenv("NNPAR_TEST_DATA")) return env;
  return NNPAR_TEST_DATA_DIR;
}

inline bool have_letters() { return std::filesystem::exists(letters_dir() / "letters-train-images-idx3-ubyte.gz"); }

// The first `limit` training and `test_limit` test samples; 1 epoch, lr 0.5, no evaluation
// before the end.
inline RunConfig letters_config(std::size_t limit, std::size_t test_limit, std::vector<int> layers, int batch) {
  const std::filesystem::path d = letters_dir();
  RunConfig config;
  config.file = "test";
  config.data.dir = d;
  config.data.train_images = d / "letters-train-images-idx3-ubyte.gz";
  config.data.train_labels = d / "letters-train-labels-idx1-ubyte.gz";
  config.data.test_images = d / "letters-test-images-idx3-ubyte.gz";
  config.data.test_labels = d / "letters-test-labels-idx1-ubyte.gz";
  config.data.options.limit = limit;
  config.data.test_limit = test_limit;
  config.model.layer_sizes = std::move(layers);
  config.train.epochs = 1;
  config.train.batch_size = batch;
  config.train.sgd.lr = 0.5f;
  config.eval_every = 0;
  return config;
}

// A [[strategy]] entry made in code; options go into the returned table.
inline StrategyEntry strategy_entry(const std::string& name, const std::string& label = "") {
  StrategyEntry e;
  e.name = name;
  e.label = label.empty() ? name : label;
  e.table = std::make_shared<toml::table>();
  return e;
}

inline toml::table& options_of(StrategyEntry& e) { return *std::const_pointer_cast<toml::table>(e.table); }

}  // namespace nnpar::test_support
