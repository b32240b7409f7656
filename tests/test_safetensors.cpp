// safetensors: bit-exact round trips, the header format, atomic writes, and a clear error for
// every kind of corrupt file.
#include <gtest/gtest.h>

#include <algorithm>
#include <cmath>
#include <cstdint>
#include <cstring>
#include <filesystem>
#include <fstream>
#include <limits>
#include <map>
#include <nlohmann/json.hpp>
#include <string>
#include <vector>

#include "nnpar/safetensors.hpp"

namespace {

namespace fs = std::filesystem;
using nnpar::CheckpointError;
using nnpar::NamedTensor;

// A fresh empty folder per test under the build tree.
fs::path test_dir() {
  const auto* info = ::testing::UnitTest::GetInstance()->current_test_info();
  const fs::path dir = fs::path(NNPAR_TEST_BINARY_DIR) / "safetensors_tmp" / info->name();
  fs::remove_all(dir);
  fs::create_directories(dir);
  return dir;
}

std::vector<std::string> list_dir(const fs::path& dir) {
  std::vector<std::string> names;
  for (const auto& e : fs::directory_iterator(dir)) names.push_back(e.path().filename().string());
  std::sort(names.begin(), names.end());
  return names;
}

// A file of the given header text and `data_bytes` zero bytes of data.
void write_raw(const fs::path& file, const std::string& header, std::size_t data_bytes,
               std::uint64_t header_len_field) {
  std::ofstream out(file, std::ios::binary);
  char len[8];
  std::memcpy(len, &header_len_field, 8);
  out.write(len, 8);
  out.write(header.data(), std::streamsize(header.size()));
  const std::string data(data_bytes, '\0');
  out.write(data.data(), std::streamsize(data.size()));
}
void write_raw(const fs::path& file, const std::string& header, std::size_t data_bytes) {
  write_raw(file, header, data_bytes, header.size());
}

// The CheckpointError message of f; fails the test if f does not throw one.
template <class F>
std::string error_of(F f) {
  try {
    f();
  } catch (const CheckpointError& e) {
    return e.what();
  }
  ADD_FAILURE() << "no CheckpointError thrown";
  return {};
}

#define EXPECT_CONTAINS(haystack, needle) \
  EXPECT_NE(std::string(haystack).find(needle), std::string::npos) << "message: " << (haystack)

std::vector<float> pattern(std::size_t n, float scale) {
  std::vector<float> v(n);
  for (std::size_t i = 0; i < n; ++i) v[i] = scale * std::sin(float(i) * 0.37f + 0.1f);
  return v;
}

TEST(Safetensors, RoundTripIsBitExact) {
  const fs::path file = test_dir() / "t.safetensors";
  std::map<std::string, NamedTensor> tensors;
  tensors["b"] = {{3, 4}, pattern(12, 1e-3f)};
  tensors["a.weight"] = {{2, 2, 2}, pattern(8, 3.0f)};
  // Values a text format would mangle: -0, denormals, extremes, inf, NaN.
  tensors["special"] = {{7},
                        {-0.0f, std::numeric_limits<float>::denorm_min(),
                         std::numeric_limits<float>::max(), std::numeric_limits<float>::lowest(),
                         std::numeric_limits<float>::infinity(), std::nanf(""), 1.0f / 3.0f}};
  tensors["scalar"] = {{}, {42.5f}};
  tensors["empty"] = {{0, 5}, {}};
  nnpar::write_safetensors(file, tensors);

  const auto back = nnpar::read_safetensors(file);
  ASSERT_EQ(back.size(), tensors.size());
  for (const auto& [name, t] : tensors) {
    ASSERT_TRUE(back.count(name)) << name;
    EXPECT_EQ(back.at(name).shape, t.shape) << name;
    ASSERT_EQ(back.at(name).values.size(), t.values.size()) << name;
    // (memcmp of an empty vector's data() would pass it a null pointer: UB, caught by UBSan.)
    if (!t.values.empty())
      EXPECT_EQ(std::memcmp(back.at(name).values.data(), t.values.data(), t.values.size() * 4), 0) << name;
  }
}

TEST(Safetensors, HeaderFormatAndMetadata) {
  const fs::path file = test_dir() / "t.safetensors";
  std::map<std::string, NamedTensor> tensors;
  tensors["zeta"] = {{2}, {1.0f, 2.0f}};
  tensors["alpha"] = {{1, 3}, {3.0f, 4.0f, 5.0f}};
  nnpar::write_safetensors(file, tensors, {{"format", "pt"}, {"step", "1200"}});

  std::ifstream in(file, std::ios::binary);
  std::uint64_t n = 0;
  in.read(reinterpret_cast<char*>(&n), 8);
  std::string header(n, '\0');
  in.read(header.data(), std::streamsize(n));
  EXPECT_EQ((8 + n) % 8, 0u) << "data section should start 8-byte aligned";
  const auto j = nlohmann::json::parse(header);
  EXPECT_EQ(j["__metadata__"]["format"], "pt");
  EXPECT_EQ(j["__metadata__"]["step"], "1200");
  EXPECT_EQ(j["alpha"]["dtype"], "F32");
  EXPECT_EQ(j["alpha"]["shape"], nlohmann::json({1, 3}));
  // Sorted keys, tensors stored back to back in that order.
  EXPECT_LT(header.find("\"alpha\""), header.find("\"zeta\""));
  EXPECT_EQ(j["alpha"]["data_offsets"], nlohmann::json({0, 12}));
  EXPECT_EQ(j["zeta"]["data_offsets"], nlohmann::json({12, 20}));
  EXPECT_EQ(fs::file_size(file), 8 + n + 20);

  // Metadata is not a tensor.
  const auto back = nnpar::read_safetensors(file);
  EXPECT_EQ(back.size(), 2u);
  EXPECT_FALSE(back.count("__metadata__"));

  // Bad metadata in a file is reported.
  write_raw(file, R"({"__metadata__":{"step":3}})", 0);
  EXPECT_CONTAINS(error_of([&] { nnpar::read_safetensors(file); }), "__metadata__");
}

TEST(Safetensors, AtomicWriteLeavesNoTemporaryFile) {
  const fs::path dir = test_dir();
  const fs::path file = dir / "model.safetensors";
  std::map<std::string, NamedTensor> tensors;
  tensors["x"] = {{4}, {1, 2, 3, 4}};
  nnpar::write_safetensors(file, tensors);
  EXPECT_EQ(list_dir(dir), std::vector<std::string>{"model.safetensors"});
  // Overwriting replaces the file in one step.
  tensors["x"] = {{2}, {5, 6}};
  nnpar::write_safetensors(file, tensors);
  EXPECT_EQ(list_dir(dir), std::vector<std::string>{"model.safetensors"});
  EXPECT_EQ(nnpar::read_safetensors(file).at("x").values, (std::vector<float>{5, 6}));

  // A failing rename (the target is a non-empty folder) removes the temporary file and
  // names the target.
  fs::create_directories(dir / "occupied" / "inside");
  const std::string msg = error_of([&] { nnpar::write_safetensors(dir / "occupied", tensors); });
  EXPECT_CONTAINS(msg, (dir / "occupied").string());
  EXPECT_EQ(list_dir(dir), (std::vector<std::string>{"model.safetensors", "occupied"}));

  // A missing folder is reported with the file name.
  const fs::path nowhere = dir / "no" / "such" / "folder" / "m.safetensors";
  EXPECT_CONTAINS(error_of([&] { nnpar::write_safetensors(nowhere, tensors); }), nowhere.string());

  // Shape and value count must agree.
  tensors["x"] = {{3}, {1, 2}};
  EXPECT_CONTAINS(error_of([&] { nnpar::write_safetensors(file, tensors); }), "does not match");
}

TEST(Safetensors, CorruptFilesAreReportedWithTheProblem) {
  const fs::path dir = test_dir();
  const fs::path f = dir / "bad.safetensors";
  auto read_error = [&] { return error_of([&] { nnpar::read_safetensors(f); }); };

  EXPECT_CONTAINS(error_of([&] { nnpar::read_safetensors(dir / "absent.safetensors"); }),
                  "cannot open");

  { std::ofstream(f, std::ios::binary) << "abc"; }
  std::string msg = read_error();
  EXPECT_CONTAINS(msg, f.string());
  EXPECT_CONTAINS(msg, "shorter than 8 bytes");

  write_raw(f, "{}", 0, 1000);
  msg = read_error();
  EXPECT_CONTAINS(msg, f.string());
  EXPECT_CONTAINS(msg, "header length 1000 is larger than the file");

  write_raw(f, "{\"x\": [1, 2", 0);
  EXPECT_CONTAINS(read_error(), "header is not valid JSON");

  write_raw(f, "[1, 2]", 0);
  EXPECT_CONTAINS(read_error(), "not a JSON object");

  write_raw(f, R"({"w":{"dtype":"F16","shape":[2],"data_offsets":[0,4]}})", 4);
  EXPECT_CONTAINS(read_error(), "tensor w: dtype F16 is not supported (only F32)");

  write_raw(f, R"({"w":{"dtype":"F32","shape":[2],"data_offsets":[0,8]}})", 4);
  EXPECT_CONTAINS(read_error(), "tensor w: data_offsets [0,8] out of range (the data section has 4 bytes)");

  write_raw(f, R"({"w":{"dtype":"F32","shape":[2],"data_offsets":[8,4]}})", 8);
  EXPECT_CONTAINS(read_error(), "out of range");

  write_raw(f, R"({"w":{"dtype":"F32","shape":[3],"data_offsets":[0,8]}})", 8);
  EXPECT_CONTAINS(read_error(), "tensor w: data_offsets [0,8] hold 8 bytes, but shape [3] of F32 needs 12");

  write_raw(f, R"({"w":{"dtype":"F32","shape":[-2],"data_offsets":[0,8]}})", 8);
  EXPECT_CONTAINS(read_error(), "non-negative integers");

  write_raw(f, R"({"w":{"dtype":"F32","shape":[2],"data_offsets":[0]}})", 8);
  EXPECT_CONTAINS(read_error(), "data_offsets must be two non-negative integers");

  write_raw(f, R"({"w":{"shape":[2],"data_offsets":[0,8]}})", 8);
  EXPECT_CONTAINS(read_error(), "tensor w: missing dtype");
}

TEST(Safetensors, CheckpointRoundTripAndShapeErrors) {
  const fs::path dir = test_dir();
  nnpar::ModelSpec spec;  // 784-256-256-26
  std::vector<float> params(nnpar::parameter_count(spec));
  nnpar::initialize_parameters(spec, params);
  const fs::path file = dir / "model.safetensors";
  nnpar::save_checkpoint(file, spec, params, {{"strategy", "serial"}});

  std::vector<float> loaded(params.size(), -1.0f);
  nnpar::load_checkpoint(file, spec, loaded);
  EXPECT_EQ(std::memcmp(loaded.data(), params.data(), params.size() * 4), 0);
  const auto tensors = nnpar::read_safetensors(file);
  EXPECT_EQ(tensors.size(), 6u);
  EXPECT_EQ(tensors.at("layers.1.weight").shape, (std::vector<std::size_t>{256, 256}));

  // A wrong shape names the tensor and both shapes; params stay untouched.
  auto wrong = tensors;
  wrong["layers.1.weight"] = {{256, 784}, std::vector<float>(256 * 784)};
  const fs::path bad = dir / "wrong_shape.safetensors";
  nnpar::write_safetensors(bad, wrong);
  std::vector<float> untouched(params.size(), 7.0f);
  std::string msg = error_of([&] { nnpar::load_checkpoint(bad, spec, untouched); });
  EXPECT_CONTAINS(msg, bad.string());
  EXPECT_CONTAINS(msg, "layers.1.weight: shape [256,784] in checkpoint, model expects [256,256]");
  EXPECT_EQ(untouched[0], 7.0f);

  auto missing = tensors;
  missing.erase("layers.2.bias");
  nnpar::write_safetensors(bad, missing);
  EXPECT_CONTAINS(error_of([&] { nnpar::load_checkpoint(bad, spec, untouched); }),
                  "missing tensor layers.2.bias");

  auto extra = tensors;
  extra["layers.3.weight"] = {{1, 1}, {0.0f}};
  nnpar::write_safetensors(bad, extra);
  EXPECT_CONTAINS(error_of([&] { nnpar::load_checkpoint(bad, spec, untouched); }),
                  "unexpected tensor layers.3.weight");

  // A model of a different size is caught by the shapes.
  nnpar::ModelSpec small;
  small.layer_sizes = {784, 64, 26};
  std::vector<float> small_params(nnpar::parameter_count(small));
  EXPECT_CONTAINS(error_of([&] { nnpar::load_checkpoint(file, small, small_params); }),
                  "layers.0.weight: shape [256,784] in checkpoint, model expects [64,784]");
}

TEST(Safetensors, CheckpointLayerSizes) {
  const fs::path dir = test_dir();
  for (const std::vector<int>& sizes :
       {std::vector<int>{784, 256, 256, 26}, std::vector<int>{784, 26}, std::vector<int>{10, 7, 5, 4}}) {
    nnpar::ModelSpec spec;
    spec.layer_sizes = sizes;
    std::vector<float> params(nnpar::parameter_count(spec));
    const fs::path file = dir / "m.safetensors";
    nnpar::save_checkpoint(file, spec, params);
    EXPECT_EQ(nnpar::checkpoint_layer_sizes(file), sizes);
  }

  const fs::path bad = dir / "bad.safetensors";
  std::map<std::string, NamedTensor> chain;
  chain["layers.0.weight"] = {{8, 4}, std::vector<float>(32)};
  chain["layers.1.weight"] = {{2, 9}, std::vector<float>(18)};
  nnpar::write_safetensors(bad, chain);
  EXPECT_CONTAINS(error_of([&] { nnpar::checkpoint_layer_sizes(bad); }),
                  "layers.1.weight: shape [2,9] takes 9 inputs, but layers.0 has 8 outputs");

  nnpar::write_safetensors(bad, {{"other", {{1}, {1.0f}}}});
  EXPECT_CONTAINS(error_of([&] { nnpar::checkpoint_layer_sizes(bad); }), "no layers.0.weight");
}

}  // namespace
