// nnpar against PyTorch, in the spirit of llm.c's test_gpt2.c: the same MLP, the same initial
// weights and the same batches, run in both; logits, loss, gradients and the parameters after
// several SGD steps must agree to float32 accuracy.
//
// The test writes the initial weights and the batches to a safetensors file, runs
// tools/torch_reference.py on it (python3 + torch from apt), reads back its results and
// compares them with its own run. Without python3 or torch the test is skipped, visibly.
#include <gtest/gtest.h>

#include <algorithm>
#include <cmath>
#include <cstdint>
#include <cstdio>
#include <cstdlib>
#include <filesystem>
#include <fstream>
#include <map>
#include <random>
#include <sstream>
#include <string>
#include <vector>

#include "nnpar/model.hpp"
#include "nnpar/safetensors.hpp"

namespace {

namespace fs = std::filesystem;
using nnpar::NamedTensor;

constexpr const char* kPython = "/usr/bin/python3";
constexpr int kBatch = 16;
constexpr int kSteps = 5;
constexpr float kLr = 0.5f;

// Largest |a - b| and that divided by the largest |b| (the reference's scale): elementwise
// relative error would blow up on entries that are ~0 in both.
struct Diff {
  double max_abs = 0.0;
  double rel = 0.0;
};
Diff diff(const float* a, const std::vector<float>& ref) {
  Diff d;
  double scale = 0.0;
  for (std::size_t i = 0; i < ref.size(); ++i) {
    d.max_abs = std::max(d.max_abs, double(std::abs(a[i] - ref[i])));
    scale = std::max(scale, double(std::abs(ref[i])));
  }
  d.rel = scale > 0 ? d.max_abs / scale : d.max_abs;
  return d;
}

void expect_close(const std::string& what, const float* ours, const std::vector<float>& ref,
                  double bound) {
  const Diff d = diff(ours, ref);
  std::printf("  %-26s max abs diff %.3e   max rel diff %.3e   (bound %.0e)\n", what.c_str(),
              d.max_abs, d.rel, bound);
  EXPECT_LE(d.rel, bound) << what << " differs from PyTorch (max abs diff " << d.max_abs << ")";
}

std::string read_text(const fs::path& file) {
  std::ifstream in(file);
  std::stringstream s;
  s << in.rdbuf();
  return s.str();
}

TEST(TorchReference, MatchesPyTorch) {
  if (!fs::exists(kPython) ||
      std::system("/usr/bin/python3 -c 'import torch, numpy' > /dev/null 2>&1") != 0) {
    GTEST_SKIP() << "PyTorch reference skipped: /usr/bin/python3 with torch and numpy is not "
                    "available. Install it with: apt-get install python3-torch python3-numpy";
  }
  const fs::path dir = fs::path(NNPAR_TEST_BINARY_DIR) / "torch_reference";
  fs::create_directories(dir);
  const fs::path input = dir / "input.safetensors";
  const fs::path output = dir / "reference.safetensors";
  const fs::path log = dir / "torch_reference.log";
  fs::remove(output);

  nnpar::ModelSpec spec;
  spec.layer_sizes = {784, 64, 32, 26};
  spec.seed = 1234;
  const int features = spec.layer_sizes.front();
  const int classes = spec.layer_sizes.back();
  nnpar::Model model(spec, kBatch);
  nnpar::initialize_parameters(spec, model.parameters());
  const auto layout = nnpar::parameter_layout(spec);
  const std::vector<float> initial(model.parameters().begin(), model.parameters().end());

  // One batch per step, pixels in [0,1] like the letters data, labels covering all classes.
  std::mt19937 gen(2024);
  std::uniform_real_distribution<float> pixel(0.0f, 1.0f);
  std::vector<float> x(std::size_t(kSteps) * kBatch * features);
  for (float& v : x) v = pixel(gen);
  std::vector<std::int32_t> labels(std::size_t(kSteps) * kBatch);
  for (std::size_t i = 0; i < labels.size(); ++i) labels[i] = std::int32_t((i * 7 + 3) % classes);

  {
    std::map<std::string, NamedTensor> in;
    for (const auto& s : layout) {
      const float* p = model.parameters().data() + s.offset;
      in[s.name] = {s.shape, std::vector<float>(p, p + s.size())};
    }
    in["x"] = {{kSteps, kBatch, std::size_t(features)}, x};
    in["labels"] = {{kSteps, kBatch}, std::vector<float>(labels.begin(), labels.end())};
    std::ostringstream lr;
    lr.precision(9);
    lr << kLr;
    nnpar::write_safetensors(input, in, {{"lr", lr.str()}, {"steps", std::to_string(kSteps)}});
  }

  const std::string command = std::string(kPython) + " '" + NNPAR_SOURCE_DIR +
                              "/tools/torch_reference.py' '" + input.string() + "' '" +
                              output.string() + "' > '" + log.string() + "' 2>&1";
  const int rc = std::system(command.c_str());
  std::printf("%s", read_text(log).c_str());
  ASSERT_EQ(rc, 0) << "torch_reference.py failed:\n" << command << "\n" << read_text(log);
  const auto ref = nnpar::read_safetensors(output);

  // Our run of the same steps.
  nnpar::Sgd sgd({.lr = kLr}, model.parameters().size());
  std::vector<float> logits, grads;
  std::vector<double> losses;
  for (int step = 0; step < kSteps; ++step) {
    const nnpar::MatrixView xb{x.data() + std::size_t(step) * kBatch * features, kBatch, features};
    const std::int32_t* lb = labels.data() + std::size_t(step) * kBatch;
    if (step == 0) {
      const nnpar::MatrixView l = model.predict(xb);
      logits.assign(l.data, l.data + std::size_t(kBatch) * classes);
    }
    model.zero_grad();
    model.forward(xb, lb);
    losses.push_back(model.last_loss_sum() / kBatch);
    model.backward(1.0f / kBatch);
    if (step == 0) grads.assign(model.gradients().begin(), model.gradients().end());
    sgd.step(model.parameters(), model.gradients());
  }

  std::printf("nnpar vs PyTorch, %d-%d-%d-%d, batch %d, %d SGD steps at lr %g:\n",
              spec.layer_sizes[0], spec.layer_sizes[1], spec.layer_sizes[2], spec.layer_sizes[3],
              kBatch, kSteps, kLr);
  expect_close("logits (step 1)", logits.data(), ref.at("logits").values, 1e-5);
  const float loss = float(losses[0]);
  expect_close("loss (step 1)", &loss, ref.at("loss").values, 1e-6);
  std::vector<float> our_losses(losses.begin(), losses.end());
  expect_close("losses (all steps)", our_losses.data(), ref.at("losses").values, 1e-5);
  for (const auto& s : layout) {
    const NamedTensor& g = ref.at("grad." + s.name);
    ASSERT_EQ(g.shape, s.shape) << s.name;
    expect_close("grad " + s.name, grads.data() + s.offset, g.values, 1e-4);
  }
  for (const auto& s : layout) {
    const NamedTensor& p = ref.at("final." + s.name);
    ASSERT_EQ(p.shape, s.shape) << s.name;
    expect_close("final " + s.name, model.parameters().data() + s.offset, p.values, 1e-4);
    // The parameters are dominated by their initial values; compare what training changed
    // too, on its own scale, so a wrong update cannot hide behind the large weights.
    std::vector<float> ours(s.size()), theirs(s.size());
    for (std::size_t i = 0; i < s.size(); ++i) {
      ours[i] = model.parameters()[s.offset + i] - initial[s.offset + i];
      theirs[i] = p.values[i] - initial[s.offset + i];
    }
    expect_close("update " + s.name, ours.data(), theirs, 1e-3);
  }
  // The training actually moved: the check above is not comparing two copies of the start.
  EXPECT_LT(losses.back(), losses.front());
}

}  // namespace
