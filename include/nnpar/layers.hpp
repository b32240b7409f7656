// The from-scratch layers. Each has forward(a) -> b and backward(gb) -> ga. A layer owns
// its output buffers (sized for the largest batch it will see) and keeps what it needs
// from the forward pass for the backward pass. Parameters and gradients are NOT owned:
// Linear views into the model's flat buffers, so communication can move one buffer.
#pragma once
#include <cstdint>
#include <vector>

namespace nnpar {

// A non-owning row-major view of `rows x cols` floats.
struct MatrixView {
  const float* data = nullptr;
  int rows = 0;
  int cols = 0;
};

class Linear {
 public:
  Linear(int in_features, int out_features, int max_batch);
  int in_features() const { return in_; }
  int out_features() const { return out_; }
  // Number of floats this layer occupies in the flat buffers: weight [out,in] then bias [out].
  std::size_t parameter_count() const { return std::size_t(out_) * in_ + out_; }
  // Points the layer at its slice of the flat parameter and gradient buffers.
  void bind(float* params, float* grads);

  const float* weight() const { return params_; }
  const float* bias() const { return params_ + std::size_t(out_) * in_; }
  float* weight_grad() { return grads_; }
  float* bias_grad() { return grads_ + std::size_t(out_) * in_; }

  // b = a * W^T + bias. Remembers `a` (not copied: it must stay alive until backward).
  MatrixView forward(MatrixView a);
  // Gradients are ACCUMULATED (+=) into the bound gradient slice, so several backward
  // calls (micro-batches) sum up; the model zeroes them once per step.
  // Returns ga = gb * W, or an empty view when compute_input_grad is false (first layer).
  MatrixView backward(MatrixView gb, bool compute_input_grad = true);

 private:
  int in_, out_, max_batch_;
  float* params_ = nullptr;
  float* grads_ = nullptr;
  MatrixView input_{};
  std::vector<float> output_, input_grad_;
};

class Sigmoid {
 public:
  Sigmoid(int features, int max_batch);
  MatrixView forward(MatrixView a);
  MatrixView backward(MatrixView gb);

 private:
  int features_, max_batch_;
  std::vector<float> output_, input_grad_;
};

// Softmax followed by cross-entropy against integer labels, fused (the numerically stable
// form). forward returns the probabilities and stores the summed loss; backward needs no
// incoming gradient: the loss is the end of the graph.
class SoftmaxCrossEntropy {
 public:
  SoftmaxCrossEntropy(int classes, int max_batch);
  MatrixView forward(MatrixView logits, const std::int32_t* labels);
  double loss_sum() const { return loss_sum_; }
  int correct() const;  // rows whose arg-max equals the label in the last forward
  // g_logits = scale * (p - onehot); scale = 1/global batch size gives the mean loss's gradient.
  MatrixView backward(float scale);

 private:
  int classes_, max_batch_;
  const std::int32_t* labels_ = nullptr;
  double loss_sum_ = 0.0;
  std::vector<float> probs_, input_grad_;
  int rows_ = 0;
};

}  // namespace nnpar
