// The fuzz targets' checks (tests/fuzz) replayed with the normal compiler on every seed and
// on every input that once made a target fail (tests/fuzz/regressions/<target>/), so a fixed
// bug stays fixed without clang or libFuzzer. Each found bug also gets a case of its own
// below with the exact message the input must now give.
#include <gmock/gmock.h>
#include <gtest/gtest.h>

#include <cstdint>
#include <filesystem>
#include <fstream>
#include <functional>
#include <iterator>
#include <vector>

#include "nnpar/safetensors.hpp"

namespace nnpar::fuzz {
void one_config(const std::uint8_t* data, std::size_t size);
void one_idx(const std::uint8_t* data, std::size_t size);
void one_csv(const std::uint8_t* data, std::size_t size);
void one_safetensors(const std::uint8_t* data, std::size_t size);
}  // namespace nnpar::fuzz

namespace fs = std::filesystem;
using testing::HasSubstr;

namespace {

const fs::path kFuzz = fs::path(NNPAR_SOURCE_DIR) / "tests" / "fuzz";

std::vector<std::uint8_t> read_bytes(const fs::path& file) {
  std::ifstream in(file, std::ios::binary);
  return {std::istreambuf_iterator<char>(in), std::istreambuf_iterator<char>()};
}

// Every file of corpus/<target> and regressions/<target> through the target's check: a
// DataError / ConfigError / CheckpointError is what malformed input must give, so anything
// escaping the check (another exception, a broken invariant) fails here.
std::size_t replay(const std::string& target, const std::function<void(const std::uint8_t*, std::size_t)>& one) {
  std::size_t files = 0;
  for (const char* kind : {"corpus", "regressions"}) {
    const fs::path dir = kFuzz / kind / target;
    if (!fs::exists(dir)) continue;
    for (const auto& entry : fs::directory_iterator(dir)) {
      const std::vector<std::uint8_t> bytes = read_bytes(entry.path());
      EXPECT_NO_THROW(one(bytes.data(), bytes.size())) << entry.path();
      ++files;
    }
  }
  return files;
}

}  // namespace

TEST(FuzzReplay, Config) { EXPECT_GT(replay("fuzz_config", nnpar::fuzz::one_config), 5u); }
TEST(FuzzReplay, Idx) { EXPECT_GT(replay("fuzz_idx", nnpar::fuzz::one_idx), 3u); }
TEST(FuzzReplay, Csv) { EXPECT_GT(replay("fuzz_csv", nnpar::fuzz::one_csv), 2u); }
TEST(FuzzReplay, Safetensors) { EXPECT_GT(replay("fuzz_safetensors", nnpar::fuzz::one_safetensors), 3u); }

// A header number too large for a double ({"x": 608e306}) threw nlohmann's out_of_range
// past the parse_error handler: nnpar printed a bare JSON library message instead of naming
// the checkpoint (and the fuzz target aborted).
TEST(FuzzRegressions, SafetensorsHeaderNumberOverflowIsACheckpointError) {
  const fs::path file = kFuzz / "regressions" / "fuzz_safetensors" / "number-overflow";
  try {
    nnpar::read_safetensors(file);
    FAIL() << "read_safetensors accepted " << file;
  } catch (const nnpar::CheckpointError& e) {
    EXPECT_THAT(e.what(), HasSubstr("checkpoint " + file.string() + ": header is not valid JSON"));
    EXPECT_THAT(e.what(), HasSubstr("number overflow"));
  }
}
