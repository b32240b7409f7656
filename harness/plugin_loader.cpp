#include "plugin_loader.hpp"

#include <algorithm>
#include <cstdlib>
#include <set>
#include <sstream>

#include <boost/dll/runtime_symbol_info.hpp>

namespace nnpar {
namespace fs = std::filesystem;

namespace {
constexpr const char* kPrefix = "nnpar_strategy_";
constexpr const char* kSuffix = ".so";

bool is_plugin_file_name(const std::string& name) {
  const std::string prefix = kPrefix, suffix = kSuffix;
  return name.size() > prefix.size() + suffix.size() && name.starts_with(prefix) &&
         name.ends_with(suffix);
}
}  // namespace

std::string plugin_file_name(const std::string& strategy_name) {
  return std::string(kPrefix) + strategy_name + kSuffix;
}

std::shared_ptr<Plugin> Plugin::load(const fs::path& file) {
  std::error_code ec;
  if (!fs::exists(file, ec))
    throw PluginError("plugin '" + file.string() + "': file not found");
  if (!fs::is_regular_file(file, ec))
    throw PluginError("plugin '" + file.string() + "': not a regular file");

  std::shared_ptr<Plugin> plugin(new Plugin());
  plugin->file_ = file;
  try {
    // rtld_local keeps each plugin's symbols to itself, so two plugins with clashing
    // internal names cannot interfere.
    plugin->library_.load(boost::dll::fs::path(file.string()),
                          boost::dll::load_mode::rtld_lazy | boost::dll::load_mode::rtld_local);
  } catch (const std::exception& e) {
    throw PluginError("plugin '" + file.string() + "': cannot be loaded: " + e.what());
  }

  auto require = [&](const char* symbol) {
    if (!plugin->library_.has(symbol))
      throw PluginError("plugin '" + file.string() + "': not an nnpar strategy plugin (symbol '" +
                        symbol + "' not found; did you forget NNPAR_REGISTER_STRATEGY?)");
  };
  // Version first: nothing else in the file may be called if its types differ from ours.
  require("nnpar_strategy_abi_version");
  const int abi = plugin->library_.get<int()>("nnpar_strategy_abi_version")();
  if (abi != kStrategyAbiVersion) {
    std::ostringstream msg;
    msg << "plugin '" << file.string() << "': built for strategy ABI version " << abi
        << ", but this nnpar uses ABI version " << kStrategyAbiVersion
        << "; rebuild the plugin against this nnpar's headers";
    throw PluginError(msg.str());
  }
  require("nnpar_strategy_info");
  require("nnpar_create_strategy");
  require("nnpar_destroy_strategy");
  plugin->info_ = plugin->library_.get<const StrategyInfo*()>("nnpar_strategy_info")();
  // Loaded plugins stay loaded for the life of the process: unloading one that started
  // threads (OpenMP's pool, CUDA's or MPI's helpers) while they are alive crashes later.
  static std::vector<std::shared_ptr<Plugin>> keep_loaded;
  keep_loaded.push_back(plugin);
  plugin->create_ = &plugin->library_.get<Strategy*()>("nnpar_create_strategy");
  plugin->destroy_ = &plugin->library_.get<void(Strategy*)>("nnpar_destroy_strategy");
  if (plugin->info_ == nullptr || plugin->info_->name.empty())
    throw PluginError("plugin '" + file.string() + "': nnpar_strategy_info() returned no name");
  return plugin;
}

std::shared_ptr<Strategy> Plugin::create() {
  Strategy* raw = create_();
  if (raw == nullptr)
    throw PluginError("plugin '" + file_.string() + "': nnpar_create_strategy() returned null");
  // The deleter holds the plugin, so the library outlives the object it made.
  auto self = shared_from_this();
  return std::shared_ptr<Strategy>(raw, [self](Strategy* s) { self->destroy_(s); });
}

PluginRegistry::PluginRegistry(std::vector<fs::path> search_path) {
  std::set<std::string> seen;
  for (auto& dir : search_path) {
    std::error_code ec;
    const fs::path canonical = fs::weakly_canonical(dir, ec);
    const std::string key = ec ? dir.string() : canonical.string();
    if (seen.insert(key).second) search_path_.push_back(ec ? dir : canonical);
  }
}

std::vector<fs::path> PluginRegistry::default_folders() {
  const fs::path exe_dir = boost::dll::program_location().parent_path().string();
  // build tree: build/bin/nnpar + build/plugins; install tree: bin/nnpar + lib/nnpar/plugins
  return {exe_dir / ".." / "plugins", exe_dir / ".." / "lib" / "nnpar" / "plugins"};
}

PluginRegistry PluginRegistry::standard(const std::vector<fs::path>& extra) {
  std::vector<fs::path> path;
  for (auto& d : default_folders())
    if (fs::is_directory(d)) path.push_back(d);
  if (const char* env = std::getenv("NNPAR_PLUGIN_PATH")) {
    std::stringstream ss(env);
    std::string item;
    while (std::getline(ss, item, ':'))
      if (!item.empty()) path.emplace_back(item);
  }
  path.insert(path.end(), extra.begin(), extra.end());
  return PluginRegistry(path);
}

std::shared_ptr<Plugin> PluginRegistry::find(const std::string& name) {
  for (auto& p : loaded_)
    if (p->info().name == name) return p;
  const std::string file_name = plugin_file_name(name);
  for (auto& dir : search_path_) {
    const fs::path candidate = dir / file_name;
    std::error_code ec;
    if (!fs::exists(candidate, ec)) continue;
    auto plugin = Plugin::load(candidate);
    if (plugin->info().name != name)
      throw PluginError("plugin '" + candidate.string() + "': file is named for strategy '" + name +
                        "' but declares name '" + plugin->info().name + "'");
    loaded_.push_back(plugin);
    return plugin;
  }
  std::ostringstream msg;
  msg << "no plugin for strategy '" << name << "' (looked for " << file_name << " in: ";
  if (search_path_.empty()) msg << "no folders";
  for (std::size_t i = 0; i < search_path_.size(); ++i)
    msg << (i ? ", " : "") << search_path_[i].string();
  msg << "); `nnpar list-plugins` shows what is available, NNPAR_PLUGIN_PATH or [plugins] paths "
         "add folders";
  throw PluginError(msg.str());
}

std::vector<PluginRegistry::Listing> PluginRegistry::list() {
  std::vector<Listing> out;
  std::set<std::string> names_seen;
  for (auto& dir : search_path_) {
    std::error_code ec;
    if (!fs::is_directory(dir, ec)) continue;
    std::vector<fs::path> files;
    for (auto& entry : fs::directory_iterator(dir, ec))
      if (is_plugin_file_name(entry.path().filename().string())) files.push_back(entry.path());
    std::sort(files.begin(), files.end());
    for (auto& file : files) {
      Listing listing{file, nullptr, {}};
      try {
        listing.plugin = Plugin::load(file);
        // An earlier folder's plugin of the same name shadows this one, as find() does.
        if (!names_seen.insert(listing.plugin->info().name).second)
          listing.error = "shadowed by an earlier plugin named '" + listing.plugin->info().name + "'";
      } catch (const PluginError& e) {
        listing.error = e.what();
      }
      out.push_back(std::move(listing));
    }
  }
  return out;
}

}  // namespace nnpar
