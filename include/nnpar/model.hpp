// The MLP: Linear -> Sigmoid -> ... -> Linear -> SoftmaxCrossEntropy, built from a list of
// layer sizes, with all parameters in one flat buffer (and gradients in another).
#pragma once
#include <cstdint>
#include <functional>
#include <memory>
#include <span>
#include <string>
#include <vector>

#include "nnpar/layers.hpp"

namespace nnpar {

enum class InitKind { xavier_uniform, zero, normal };

struct ModelSpec {
  std::vector<int> layer_sizes{784, 256, 256, 26};  // input, hidden..., classes
  InitKind init = InitKind::xavier_uniform;
  double init_std = 0.01;  // for InitKind::normal
  std::uint64_t seed = 42;
  int linear_count() const { return int(layer_sizes.size()) - 1; }
};

// Where one named tensor lives in the flat buffer. Names follow PyTorch's nn.Linear:
// "layers.<i>.weight" with shape [out, in] and "layers.<i>.bias" with shape [out],
// i counting Linear layers from 0.
struct ParameterSlice {
  std::string name;
  std::size_t offset = 0;  // in floats
  std::vector<std::size_t> shape;
  std::size_t size() const;
};

std::size_t parameter_count(const ModelSpec& spec);
std::vector<ParameterSlice> parameter_layout(const ModelSpec& spec);
// Offset (in floats) of Linear layer `layer`'s weight in the flat buffer.
std::size_t parameter_offset(const ModelSpec& spec, int layer);
// Deterministic initialisation from spec.seed alone: every strategy starts from these
// exact bits. Each layer's weights come from their own stream, biases are zero.
void initialize_parameters(const ModelSpec& spec, std::span<float> params);
// Throws std::invalid_argument naming the problem (fewer than 2 sizes, a size < 1).
void validate(const ModelSpec& spec);

class Model {
 public:
  // The model owns its flat parameter and gradient buffers (zero-filled; call
  // initialize_parameters or copy into parameters()).
  Model(const ModelSpec& spec, int max_batch);
  // A model whose parameters live in a buffer it does not own (parameter_count(spec) floats,
  // which must outlive it): data-parallel workers share one set of weights this way while
  // each keeps its own activations and gradients.
  Model(const ModelSpec& spec, int max_batch, std::span<float> shared_parameters);
  // The layers point into this object's buffers: a copy would share them.
  Model(const Model&) = delete;
  Model& operator=(const Model&) = delete;
  const ModelSpec& spec() const { return spec_; }
  int max_batch() const { return max_batch_; }

  std::span<float> parameters() { return params_; }
  std::span<const float> parameters() const { return params_; }
  bool owns_parameters() const { return !own_params_.empty(); }
  std::span<float> gradients() { return grads_; }
  void zero_grad();

  // Forward of a batch x [rows, input] with labels; returns the probabilities. The summed
  // loss and the number of correct predictions of this batch are available afterwards.
  MatrixView forward(MatrixView x, const std::int32_t* labels);
  double last_loss_sum() const;
  int last_correct() const;
  // Backward from the loss; gradients accumulate into gradients(). loss_scale is
  // 1/global_batch for the mean loss of a global batch split in several pieces.
  void backward(float loss_scale);
  // The same, calling after_layer(i) as soon as Linear i's gradients are complete (from the
  // last layer to the first), so a data-parallel strategy can start communicating them
  // while earlier layers are still being computed.
  void backward(float loss_scale, const std::function<void(int)>& after_layer);
  // Scores (logits) for inference, no labels: returns [rows, classes].
  MatrixView predict(MatrixView x);

  Linear& linear(int i) { return linears_[i]; }
  int linear_count() const { return int(linears_.size()); }

 private:
  ModelSpec spec_;
  int max_batch_;
  std::vector<float> own_params_;
  std::span<float> params_;
  std::vector<float> grads_;
  std::vector<Linear> linears_;
  std::vector<Sigmoid> sigmoids_;
  SoftmaxCrossEntropy loss_;
};

struct SgdSettings {
  float lr = 0.1f;
  float momentum = 0.0f;
  float weight_decay = 0.0f;
};

class Sgd {
 public:
  Sgd(SgdSettings settings, std::size_t parameter_count);
  void step(std::span<float> params, std::span<const float> grads);
  const SgdSettings& settings() const { return settings_; }

 private:
  SgdSettings settings_;
  std::vector<float> velocity_;
};

}  // namespace nnpar
