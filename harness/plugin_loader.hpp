// Finds and loads strategy plugins (shared libraries) with Boost.DLL, checking the ABI
// version before anything else is called.
#pragma once
#include <filesystem>
#include <memory>
#include <stdexcept>
#include <string>
#include <vector>

#include <boost/dll/shared_library.hpp>

#include "nnpar/strategy.hpp"

namespace nnpar {

class PluginError : public std::runtime_error {
 public:
  using std::runtime_error::runtime_error;
};

// The file name a plugin called NAME is built as (see plugins/CMakeLists.txt).
std::string plugin_file_name(const std::string& strategy_name);

// One loaded plugin file. Strategies it creates keep it alive (shared_ptr), so the code
// is never unloaded under a live object.
class Plugin : public std::enable_shared_from_this<Plugin> {
 public:
  // Throws PluginError naming the file: missing file, not loadable (dlopen's message),
  // missing factory symbols, ABI version mismatch.
  static std::shared_ptr<Plugin> load(const std::filesystem::path& file);

  const StrategyInfo& info() const { return *info_; }
  const std::filesystem::path& file() const { return file_; }
  std::shared_ptr<Strategy> create();

 private:
  Plugin() = default;
  boost::dll::shared_library library_;
  std::filesystem::path file_;
  const StrategyInfo* info_ = nullptr;
  Strategy* (*create_)() = nullptr;
  void (*destroy_)(Strategy*) = nullptr;
};

// The search path, in order: the folders given first (the build's or installation's plugin
// folder next to the executable), then each entry of NNPAR_PLUGIN_PATH (':'-separated),
// then the config's [plugins] paths.
class PluginRegistry {
 public:
  explicit PluginRegistry(std::vector<std::filesystem::path> search_path);
  // The folders that hold plugins next to the running executable (build and install layouts).
  static std::vector<std::filesystem::path> default_folders();
  // Default folders + NNPAR_PLUGIN_PATH + extra, in that order, duplicates removed.
  static PluginRegistry standard(const std::vector<std::filesystem::path>& extra = {});

  const std::vector<std::filesystem::path>& search_path() const { return search_path_; }
  // The first plugin file for `name` on the search path; PluginError listing the folders
  // searched when none has it.
  std::shared_ptr<Plugin> find(const std::string& name);

  struct Listing {
    std::filesystem::path file;
    std::shared_ptr<Plugin> plugin;  // null when the file failed to load
    std::string error;               // why it failed
  };
  // Every nnpar_strategy_*.so on the search path, loaded or with its error.
  std::vector<Listing> list();

 private:
  std::vector<std::filesystem::path> search_path_;
  std::vector<std::shared_ptr<Plugin>> loaded_;
};

}  // namespace nnpar
