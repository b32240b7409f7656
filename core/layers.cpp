// The three layers of the MLP. All arithmetic is delegated to nnpar::kernels; this file only
// does the bookkeeping: which buffer feeds which kernel, and the shape checks. Buffers are
// allocated once in the constructors (sized for max_batch) so that forward/backward, the hot
// path of every strategy, never allocate.
#include "nnpar/layers.hpp"

#include <stdexcept>
#include <string>

#include "nnpar/kernels.hpp"

namespace nnpar {

namespace {

void check_positive(int value, const char* what, const char* layer) {
  if (value < 1) {
    throw std::invalid_argument(std::string(layer) + ": " + what + " must be >= 1, got " +
                                std::to_string(value));
  }
}

// Every forward/backward checks its input against the layer's shape. The check is O(1) and
// turns a silent buffer overrun into an exception that names the layer and the mismatch.
void check_input(const MatrixView& m, int expected_cols, int max_batch, const char* layer,
                 const char* what) {
  if (m.data == nullptr && m.rows > 0) {
    throw std::invalid_argument(std::string(layer) + ": " + what + " has no data");
  }
  if (m.rows < 0 || m.rows > max_batch) {
    throw std::invalid_argument(std::string(layer) + ": " + what + " has " +
                                std::to_string(m.rows) + " rows, but the layer was built for at most " +
                                std::to_string(max_batch) + " (max_batch)");
  }
  if (m.cols != expected_cols) {
    throw std::invalid_argument(std::string(layer) + ": " + what + " has " +
                                std::to_string(m.cols) + " columns, expected " +
                                std::to_string(expected_cols));
  }
}

}  // namespace

// ---------------------------------------------------------------------------------------------
// Linear

Linear::Linear(int in_features, int out_features, int max_batch)
    : in_(in_features), out_(out_features), max_batch_(max_batch) {
  check_positive(in_features, "in_features", "Linear");
  check_positive(out_features, "out_features", "Linear");
  check_positive(max_batch, "max_batch", "Linear");
  output_.assign(std::size_t(max_batch) * out_, 0.0f);
  input_grad_.assign(std::size_t(max_batch) * in_, 0.0f);
}

void Linear::bind(float* params, float* grads) {
  params_ = params;
  grads_ = grads;
}

MatrixView Linear::forward(MatrixView a) {
  if (params_ == nullptr) throw std::logic_error("Linear::forward: parameters not bound");
  check_input(a, in_, max_batch_, "Linear::forward", "input");
  input_ = a;
  float* y = output_.data();
  // y = a * W^T (beta = 0 overwrites whatever the previous batch left), then + bias per row.
  kernels::gemm_nt(a.rows, out_, in_, 1.0f, a.data, in_, weight(), in_, 0.0f, y, out_);
  kernels::add_bias_rows(a.rows, out_, bias(), y);
  return {y, a.rows, out_};
}

MatrixView Linear::backward(MatrixView gb, bool compute_input_grad) {
  if (grads_ == nullptr) throw std::logic_error("Linear::backward: gradients not bound");
  check_input(gb, out_, max_batch_, "Linear::backward", "output gradient");
  if (gb.rows != input_.rows) {
    throw std::invalid_argument("Linear::backward: output gradient has " +
                                std::to_string(gb.rows) + " rows, but the last forward had " +
                                std::to_string(input_.rows));
  }
  const int rows = gb.rows;
  // beta = 1: accumulate, so micro-batches (gradient accumulation, pipeline stages) sum up.
  kernels::gemm_tn(out_, in_, rows, 1.0f, gb.data, out_, input_.data, in_, 1.0f, weight_grad(),
                   in_);
  kernels::column_sums(rows, out_, 1.0f, gb.data, 1.0f, bias_grad());
  if (!compute_input_grad) return {};
  float* ga = input_grad_.data();
  kernels::gemm_nn(rows, in_, out_, 1.0f, gb.data, out_, weight(), in_, 0.0f, ga, in_);
  return {ga, rows, in_};
}

// ---------------------------------------------------------------------------------------------
// Sigmoid

Sigmoid::Sigmoid(int features, int max_batch) : features_(features), max_batch_(max_batch) {
  check_positive(features, "features", "Sigmoid");
  check_positive(max_batch, "max_batch", "Sigmoid");
  output_.assign(std::size_t(max_batch) * features_, 0.0f);
  input_grad_.assign(std::size_t(max_batch) * features_, 0.0f);
}

MatrixView Sigmoid::forward(MatrixView a) {
  check_input(a, features_, max_batch_, "Sigmoid::forward", "input");
  kernels::sigmoid_forward(std::size_t(a.rows) * features_, a.data, output_.data());
  return {output_.data(), a.rows, features_};
}

MatrixView Sigmoid::backward(MatrixView gb) {
  check_input(gb, features_, max_batch_, "Sigmoid::backward", "output gradient");
  // The derivative is y * (1 - y) of the stored output, so the input is not needed.
  kernels::sigmoid_backward(std::size_t(gb.rows) * features_, output_.data(), gb.data,
                            input_grad_.data());
  return {input_grad_.data(), gb.rows, features_};
}

// ---------------------------------------------------------------------------------------------
// SoftmaxCrossEntropy

SoftmaxCrossEntropy::SoftmaxCrossEntropy(int classes, int max_batch)
    : classes_(classes), max_batch_(max_batch) {
  check_positive(classes, "classes", "SoftmaxCrossEntropy");
  check_positive(max_batch, "max_batch", "SoftmaxCrossEntropy");
  probs_.assign(std::size_t(max_batch) * classes_, 0.0f);
  input_grad_.assign(std::size_t(max_batch) * classes_, 0.0f);
}

MatrixView SoftmaxCrossEntropy::forward(MatrixView logits, const std::int32_t* labels) {
  check_input(logits, classes_, max_batch_, "SoftmaxCrossEntropy::forward", "logits");
  if (labels == nullptr && logits.rows > 0) {
    throw std::invalid_argument("SoftmaxCrossEntropy::forward: no labels");
  }
  // A label out of range would index outside the row in the kernels: reject it here, once.
  for (int r = 0; r < logits.rows; ++r) {
    if (labels[r] < 0 || labels[r] >= classes_) {
      throw std::invalid_argument("SoftmaxCrossEntropy::forward: label " +
                                  std::to_string(labels[r]) + " of row " + std::to_string(r) +
                                  " is outside [0, " + std::to_string(classes_) + ")");
    }
  }
  labels_ = labels;
  rows_ = logits.rows;
  loss_sum_ =
      kernels::softmax_xent_forward(rows_, classes_, logits.data, labels, probs_.data());
  return {probs_.data(), rows_, classes_};
}

int SoftmaxCrossEntropy::correct() const {
  if (rows_ == 0) return 0;
  return kernels::count_correct(rows_, classes_, probs_.data(), labels_);
}

MatrixView SoftmaxCrossEntropy::backward(float scale) {
  kernels::softmax_xent_backward(rows_, classes_, probs_.data(), labels_, scale,
                                 input_grad_.data());
  return {input_grad_.data(), rows_, classes_};
}

}  // namespace nnpar
