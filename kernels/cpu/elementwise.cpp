// Element-wise kernels. Plain loops: these are memory-bound and tiny next to the GEMMs.
// Summation orders depend only on shapes, so results are bit-reproducible.
#include "nnpar/kernels.hpp"

#include <algorithm>
#include <cmath>
#include <cstddef>
#include <limits>

namespace nnpar::kernels {

namespace {
inline float sigmoid(float x) {
  // exp(-x) overflowing to inf for very negative x still yields the right limit 0.
  return 1.0f / (1.0f + std::exp(-x));
}
}  // namespace

void add_bias_rows(int rows, int cols, const float* bias, float* Y) {
  for (int r = 0; r < rows; ++r) {
    float* y = Y + static_cast<std::size_t>(r) * cols;
    for (int c = 0; c < cols; ++c) y[c] += bias[c];
  }
}

void bias_sigmoid_rows(int rows, int cols, const float* bias, float* Y) {
  for (int r = 0; r < rows; ++r) {
    float* y = Y + static_cast<std::size_t>(r) * cols;
    for (int c = 0; c < cols; ++c) y[c] = sigmoid(y[c] + bias[c]);
  }
}

void sigmoid_forward(std::size_t n, const float* x, float* y) {
  for (std::size_t i = 0; i < n; ++i) y[i] = sigmoid(x[i]);
}

void sigmoid_backward(std::size_t n, const float* y, const float* gy, float* gx) {
  for (std::size_t i = 0; i < n; ++i) {
    const float yi = y[i];
    gx[i] = gy[i] * yi * (1.0f - yi);
  }
}

void column_sums(int rows, int cols, float alpha, const float* G, float beta, float* out) {
  // Columns in chunks so the per-column accumulators stay on the stack; rows are summed
  // in order (double) so the result does not depend on how the work is chunked.
  constexpr int kChunk = 256;
  double acc[kChunk];
  for (int c0 = 0; c0 < cols; c0 += kChunk) {
    const int w = std::min(kChunk, cols - c0);
    for (int c = 0; c < w; ++c) acc[c] = 0.0;
    for (int r = 0; r < rows; ++r) {
      const float* g = G + static_cast<std::size_t>(r) * cols + c0;
      for (int c = 0; c < w; ++c) acc[c] += g[c];
    }
    for (int c = 0; c < w; ++c) {
      const float s = alpha * static_cast<float>(acc[c]);
      // beta == 0 overwrites without reading (BLAS semantics: out may hold garbage).
      out[c0 + c] = (beta == 0.0f) ? s : beta * out[c0 + c] + s;
    }
  }
}

double softmax_xent_forward(int rows, int classes, const float* logits, const std::int32_t* labels,
                            float* probs) {
  double loss = 0.0;
  for (int r = 0; r < rows; ++r) {
    const float* z = logits + static_cast<std::size_t>(r) * classes;
    float* p = probs + static_cast<std::size_t>(r) * classes;
    float zmax = z[0];
    for (int c = 1; c < classes; ++c) zmax = std::max(zmax, z[c]);
    double sum = 0.0;
    for (int c = 0; c < classes; ++c) {
      const float e = std::exp(z[c] - zmax);
      p[c] = e;
      sum += e;
    }
    const float inv = static_cast<float>(1.0 / sum);
    for (int c = 0; c < classes; ++c) p[c] *= inv;
    // -log p[label] via log-sum-exp (as PyTorch's log_softmax does): stays finite and
    // accurate even when p[label] underflows to 0, e.g. 2000 for logits (1000, -1000).
    double l = std::log(sum) - (static_cast<double>(z[labels[r]]) - zmax);
    if (!(l < 1e30)) l = 1e30;  // clamp: never inf/NaN even for non-finite logits
    loss += std::max(l, 0.0);
  }
  return loss;
}

void softmax_xent_backward(int rows, int classes, const float* probs, const std::int32_t* labels,
                           float scale, float* glogits) {
  for (int r = 0; r < rows; ++r) {
    const float* p = probs + static_cast<std::size_t>(r) * classes;
    float* g = glogits + static_cast<std::size_t>(r) * classes;
    const int y = labels[r];
    const float py = p[y];  // read before the loop so probs and glogits may alias
    for (int c = 0; c < classes; ++c) g[c] = scale * p[c];
    g[y] = scale * (py - 1.0f);
  }
}

int count_correct(int rows, int classes, const float* scores, const std::int32_t* labels) {
  int correct = 0;
  for (int r = 0; r < rows; ++r) {
    const float* s = scores + static_cast<std::size_t>(r) * classes;
    int best = 0;
    for (int c = 1; c < classes; ++c)
      if (s[c] > s[best]) best = c;  // strict '>': the first maximum wins ties
    correct += (best == labels[r]);
  }
  return correct;
}

void sgd_update(std::size_t n, float lr, float momentum, float weight_decay, float* params,
                const float* grads, float* velocity) {
  if (momentum != 0.0f) {
    for (std::size_t i = 0; i < n; ++i) {
      const float g = grads[i] + weight_decay * params[i];
      velocity[i] = momentum * velocity[i] + g;
      params[i] -= lr * velocity[i];
    }
  } else {
    for (std::size_t i = 0; i < n; ++i) {
      const float g = grads[i] + weight_decay * params[i];
      params[i] -= lr * g;
    }
  }
}

}  // namespace nnpar::kernels
