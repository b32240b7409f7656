// Plugin discovery and loading: the good path and every way a plugin file can be wrong.
#include <gmock/gmock.h>
#include <gtest/gtest.h>

#include <cstdlib>
#include <filesystem>
#include <fstream>

#include "plugin_loader.hpp"

namespace fs = std::filesystem;
using namespace nnpar;
using testing::HasSubstr;

namespace {

const fs::path kPlugins = NNPAR_PLUGIN_DIR;
const fs::path kBroken = NNPAR_TEST_PLUGIN_DIR;

std::string load_error(const fs::path& file) {
  try {
    Plugin::load(file);
  } catch (const PluginError& e) {
    return e.what();
  }
  return "no error";
}

}  // namespace

TEST(Plugins, SerialLoadsWithMetadata) {
  auto plugin = Plugin::load(kPlugins / plugin_file_name("serial"));
  EXPECT_EQ(plugin->info().name, "serial");
  EXPECT_EQ(plugin->info().parity, ParityClass::exact);
  EXPECT_FALSE(plugin->info().uses_gpu);
  EXPECT_FALSE(plugin->info().needs_mpi);
  auto strategy = plugin->create();
  ASSERT_NE(strategy, nullptr);
  EXPECT_THAT(strategy->device_description(), HasSubstr("CPU"));
}

TEST(Plugins, RegistryFindsByNameInSearchOrder) {
  PluginRegistry registry({kBroken, kPlugins});
  auto plugin = registry.find("serial");
  EXPECT_EQ(plugin->file().filename(), "nnpar_strategy_serial.so");
  EXPECT_EQ(registry.find("serial").get(), plugin.get()) << "a second find must reuse the loaded plugin";
}

TEST(Plugins, MissingFileNamesTheFile) {
  const std::string e = load_error("/nonexistent/nnpar_strategy_x.so");
  EXPECT_THAT(e, HasSubstr("/nonexistent/nnpar_strategy_x.so"));
  EXPECT_THAT(e, HasSubstr("file not found"));
}

TEST(Plugins, UnknownStrategyListsTheFoldersSearched) {
  PluginRegistry registry({kPlugins, "/also/nowhere"});
  try {
    registry.find("warp-drive");
    FAIL() << "expected PluginError";
  } catch (const PluginError& e) {
    EXPECT_THAT(e.what(), HasSubstr("no plugin for strategy 'warp-drive'"));
    EXPECT_THAT(e.what(), HasSubstr("nnpar_strategy_warp-drive.so"));
    EXPECT_THAT(e.what(), HasSubstr("/also/nowhere"));
  }
}

TEST(Plugins, AbiMismatchIsRefusedWithBothVersions) {
  const fs::path file = kBroken / "nnpar_strategy_abi_mismatch.so";
  const std::string e = load_error(file);
  EXPECT_THAT(e, HasSubstr(file.string()));
  EXPECT_THAT(e, HasSubstr("ABI version " + std::to_string(kStrategyAbiVersion + 1000)));
  EXPECT_THAT(e, HasSubstr("this nnpar uses ABI version " + std::to_string(kStrategyAbiVersion)));
}

TEST(Plugins, LibraryWithoutFactoryIsNotAPlugin) {
  const fs::path file = kBroken / "nnpar_strategy_no_factory.so";
  const std::string e = load_error(file);
  EXPECT_THAT(e, HasSubstr(file.string()));
  EXPECT_THAT(e, HasSubstr("symbol 'nnpar_strategy_abi_version' not found"));
}

TEST(Plugins, NotASharedLibrarySaysSo) {
  const fs::path dir = fs::path(NNPAR_TEST_BINARY_DIR) / "plugin-garbage";
  fs::create_directories(dir);
  const fs::path file = dir / "nnpar_strategy_garbage.so";
  std::ofstream(file) << "this is not an ELF file\n";
  const std::string e = load_error(file);
  EXPECT_THAT(e, HasSubstr(file.string()));
  EXPECT_THAT(e, HasSubstr("cannot be loaded"));
}

TEST(Plugins, DeclaredNameMustMatchFileName) {
  PluginRegistry registry({kBroken});
  try {
    registry.find("bad_name");
    FAIL() << "expected PluginError";
  } catch (const PluginError& e) {
    EXPECT_THAT(e.what(), HasSubstr("declares name 'something-else'"));
  }
}

TEST(Plugins, ListingReportsBrokenFilesWithoutFailing) {
  PluginRegistry registry({kPlugins, kBroken});
  int good = 0, broken = 0;
  bool saw_abi = false;
  for (auto& l : registry.list()) {
    if (l.plugin && l.error.empty()) ++good;
    if (!l.plugin) {
      ++broken;
      if (l.error.find("ABI version") != std::string::npos) saw_abi = true;
    }
  }
  EXPECT_GE(good, 1);
  EXPECT_EQ(broken, 2);  // abi_mismatch and no_factory; bad_name loads (its name is only checked by find)
  EXPECT_TRUE(saw_abi);
}

TEST(Plugins, EnvironmentPathIsSearchedAfterDefaults) {
  ::setenv("NNPAR_PLUGIN_PATH", (kBroken.string() + ":/tmp/nnpar-none").c_str(), 1);
  PluginRegistry registry = PluginRegistry::standard({"/from/config"});
  ::unsetenv("NNPAR_PLUGIN_PATH");
  const auto& path = registry.search_path();
  auto pos = [&](const std::string& needle) {
    for (std::size_t i = 0; i < path.size(); ++i)
      if (path[i].string().find(needle) != std::string::npos) return int(i);
    return -1;
  };
  ASSERT_GE(pos("test-plugins"), 0);
  ASSERT_GE(pos("/from/config"), 0);
  EXPECT_LT(pos("test-plugins"), pos("/tmp/nnpar-none"));
  EXPECT_LT(pos("/tmp/nnpar-none"), pos("/from/config"));
}
