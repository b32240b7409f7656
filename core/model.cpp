// The MLP, its parameter layout, its deterministic initialisation and plain SGD.
#include "nnpar/model.hpp"

#include <algorithm>
#include <cmath>
#include <stdexcept>
#include <string>

#include "nnpar/kernels.hpp"

namespace nnpar {

// ---------------------------------------------------------------------------------------------
// Spec and layout

void validate(const ModelSpec& spec) {
  if (spec.layer_sizes.size() < 2) {
    throw std::invalid_argument("model: layer_sizes needs at least 2 entries (input and classes), got " +
                                std::to_string(spec.layer_sizes.size()));
  }
  for (std::size_t i = 0; i < spec.layer_sizes.size(); ++i) {
    if (spec.layer_sizes[i] < 1) {
      throw std::invalid_argument("model: layer_sizes[" + std::to_string(i) + "] is " +
                                  std::to_string(spec.layer_sizes[i]) + ", sizes must be >= 1");
    }
  }
  if (spec.init == InitKind::normal && !(std::isfinite(spec.init_std) && spec.init_std >= 0.0)) {
    throw std::invalid_argument("model: init_std must be finite and >= 0, got " +
                                std::to_string(spec.init_std));
  }
}

std::size_t ParameterSlice::size() const {
  std::size_t n = 1;
  for (std::size_t d : shape) n *= d;
  return n;
}

std::vector<ParameterSlice> parameter_layout(const ModelSpec& spec) {
  validate(spec);
  std::vector<ParameterSlice> layout;
  std::size_t offset = 0;
  for (int i = 0; i < spec.linear_count(); ++i) {
    const std::size_t in = std::size_t(spec.layer_sizes[i]);
    const std::size_t out = std::size_t(spec.layer_sizes[i + 1]);
    const std::string prefix = "layers." + std::to_string(i);
    layout.push_back({prefix + ".weight", offset, {out, in}});
    offset += out * in;
    layout.push_back({prefix + ".bias", offset, {out}});
    offset += out;
  }
  return layout;
}

std::size_t parameter_count(const ModelSpec& spec) {
  validate(spec);
  std::size_t n = 0;
  for (int i = 0; i < spec.linear_count(); ++i) {
    const std::size_t out = std::size_t(spec.layer_sizes[i + 1]);
    n += out * std::size_t(spec.layer_sizes[i]) + out;
  }
  return n;
}

std::size_t parameter_offset(const ModelSpec& spec, int layer) {
  validate(spec);
  if (layer < 0 || layer >= spec.linear_count()) {
    throw std::out_of_range("parameter_offset: layer " + std::to_string(layer) +
                            " out of range, the model has " +
                            std::to_string(spec.linear_count()) + " Linear layers");
  }
  std::size_t n = 0;
  for (int i = 0; i < layer; ++i) {
    const std::size_t out = std::size_t(spec.layer_sizes[i + 1]);
    n += out * std::size_t(spec.layer_sizes[i]) + out;
  }
  return n;
}

// ---------------------------------------------------------------------------------------------
// Initialisation
//
// Every strategy (and every rank of every strategy) must start from the same bits, on any
// machine and standard library. So no <random> distributions (their algorithms are not
// specified) and no libm transcendental functions (log/cos are not correctly rounded, and
// differ between libms): only a 64-bit integer generator and IEEE +, -, *, /, sqrt, which
// are exactly specified.

namespace {

// SplitMix64 (Steele, Lea, Flood 2014): tiny, fast, and every output passes BigCrush.
struct SplitMix64 {
  std::uint64_t state;
  std::uint64_t next() {
    std::uint64_t z = (state += 0x9E3779B97F4A7C15ull);
    z = (z ^ (z >> 30)) * 0xBF58476D1CE4E5B9ull;
    z = (z ^ (z >> 27)) * 0x94D049BB133111EBull;
    return z ^ (z >> 31);
  }
  // Uniform in [0, 1) with 53 random bits: exact in double.
  double uniform() { return double(next() >> 11) * 0x1.0p-53; }
};

// One independent stream per Linear layer, derived from (seed, layer) by hashing, so adding
// a layer does not shift the values of the layers before it.
SplitMix64 layer_stream(std::uint64_t seed, int layer) {
  SplitMix64 mix{seed};
  const std::uint64_t a = mix.next();
  SplitMix64 mix2{a ^ (0xD1B54A32D192ED03ull * (std::uint64_t(layer) + 1))};
  return SplitMix64{mix2.next()};
}

// Natural log of x > 0 from +,*,/ only: x = m * 2^e with m in [sqrt(1/2), sqrt(2)), then
// log(m) = 2 atanh(z), z = (m-1)/(m+1), |z| < 0.172, whose series converges to double
// precision in ~12 terms. frexp/ldexp are exact.
double portable_log(double x) {
  int e = 0;
  double m = std::frexp(x, &e);  // m in [0.5, 1)
  if (m < 0.70710678118654752440) {
    m *= 2.0;
    e -= 1;
  }
  const double z = (m - 1.0) / (m + 1.0);
  const double z2 = z * z;
  double term = z;
  double sum = 0.0;
  for (int k = 1; k <= 41; k += 2) {
    sum += term / double(k);
    term *= z2;
  }
  return 2.0 * sum + double(e) * 0.69314718055994530942;
}

// Standard normal pairs by Marsaglia's polar method (needs log and sqrt, no trig).
struct NormalSource {
  SplitMix64 rng;
  bool has_spare = false;
  double spare = 0.0;
  double next() {
    if (has_spare) {
      has_spare = false;
      return spare;
    }
    double u, v, s;
    do {
      u = 2.0 * rng.uniform() - 1.0;
      v = 2.0 * rng.uniform() - 1.0;
      s = u * u + v * v;
    } while (s >= 1.0 || s == 0.0);
    const double f = std::sqrt(-2.0 * portable_log(s) / s);
    spare = v * f;
    has_spare = true;
    return u * f;
  }
};

}  // namespace

void initialize_parameters(const ModelSpec& spec, std::span<float> params) {
  const std::size_t count = parameter_count(spec);  // validates spec
  if (params.size() != count) {
    throw std::invalid_argument("initialize_parameters: buffer has " +
                                std::to_string(params.size()) + " floats, the model needs " +
                                std::to_string(count));
  }
  std::size_t offset = 0;
  for (int i = 0; i < spec.linear_count(); ++i) {
    const int in = spec.layer_sizes[i];
    const int out = spec.layer_sizes[i + 1];
    const std::size_t weights = std::size_t(out) * in;
    float* w = params.data() + offset;
    float* b = w + weights;
    SplitMix64 rng = layer_stream(spec.seed, i);
    switch (spec.init) {
      case InitKind::xavier_uniform: {
        const double a = std::sqrt(6.0 / double(in + out));
        for (std::size_t k = 0; k < weights; ++k) w[k] = float(a * (2.0 * rng.uniform() - 1.0));
        break;
      }
      case InitKind::normal: {
        NormalSource normal{rng};
        for (std::size_t k = 0; k < weights; ++k) w[k] = float(spec.init_std * normal.next());
        break;
      }
      case InitKind::zero:
        for (std::size_t k = 0; k < weights; ++k) w[k] = 0.0f;
        break;
    }
    for (int k = 0; k < out; ++k) b[k] = 0.0f;
    offset += weights + std::size_t(out);
  }
}

// ---------------------------------------------------------------------------------------------
// Model

namespace {
// Runs before the member initialisers that would otherwise fail with a less clear message.
const ModelSpec& validated(const ModelSpec& spec, int max_batch) {
  validate(spec);
  if (max_batch < 1) {
    throw std::invalid_argument("model: max_batch must be >= 1, got " + std::to_string(max_batch));
  }
  return spec;
}
}  // namespace

Model::Model(const ModelSpec& spec, int max_batch)
    : Model(spec, max_batch, std::span<float>{}) {}

Model::Model(const ModelSpec& spec, int max_batch, std::span<float> shared_parameters)
    : spec_(validated(spec, max_batch)),
      max_batch_(max_batch),
      grads_(parameter_count(spec), 0.0f),
      loss_(spec.layer_sizes.back(), max_batch) {
  if (shared_parameters.data() == nullptr) {
    own_params_.assign(grads_.size(), 0.0f);
    params_ = own_params_;
  } else if (shared_parameters.size() != grads_.size()) {
    throw std::invalid_argument("model: shared parameter buffer holds " +
                                std::to_string(shared_parameters.size()) + " floats, the model needs " +
                                std::to_string(grads_.size()));
  } else {
    params_ = shared_parameters;
  }
  const int n = spec_.linear_count();
  linears_.reserve(n);
  sigmoids_.reserve(n - 1);
  std::size_t offset = 0;
  for (int i = 0; i < n; ++i) {
    linears_.emplace_back(spec_.layer_sizes[i], spec_.layer_sizes[i + 1], max_batch);
    linears_.back().bind(params_.data() + offset, grads_.data() + offset);
    offset += linears_.back().parameter_count();
    if (i + 1 < n) sigmoids_.emplace_back(spec_.layer_sizes[i + 1], max_batch);
  }
}

void Model::zero_grad() { std::fill(grads_.begin(), grads_.end(), 0.0f); }

MatrixView Model::predict(MatrixView x) {
  if (x.rows > max_batch_) {
    throw std::invalid_argument("model: batch of " + std::to_string(x.rows) +
                                " rows is larger than max_batch " + std::to_string(max_batch_));
  }
  MatrixView h = x;
  const int n = linear_count();
  for (int i = 0; i < n; ++i) {
    h = linears_[i].forward(h);
    if (i + 1 < n) h = sigmoids_[i].forward(h);
  }
  return h;
}

MatrixView Model::forward(MatrixView x, const std::int32_t* labels) {
  return loss_.forward(predict(x), labels);
}

double Model::last_loss_sum() const { return loss_.loss_sum(); }
int Model::last_correct() const { return loss_.correct(); }

void Model::backward(float loss_scale) { backward(loss_scale, {}); }

void Model::backward(float loss_scale, const std::function<void(int)>& after_layer) {
  MatrixView g = loss_.backward(loss_scale);
  for (int i = linear_count() - 1; i >= 0; --i) {
    // The first layer's input is the data: its gradient is never needed.
    g = linears_[i].backward(g, i > 0);
    if (after_layer) after_layer(i);
    if (i > 0) g = sigmoids_[i - 1].backward(g);
  }
}

// ---------------------------------------------------------------------------------------------
// SGD

Sgd::Sgd(SgdSettings settings, std::size_t parameter_count) : settings_(settings) {
  if (settings_.momentum != 0.0f) velocity_.assign(parameter_count, 0.0f);
}

void Sgd::step(std::span<float> params, std::span<const float> grads) {
  if (params.size() != grads.size()) {
    throw std::invalid_argument("Sgd::step: " + std::to_string(params.size()) +
                                " parameters but " + std::to_string(grads.size()) + " gradients");
  }
  float* velocity = nullptr;
  if (settings_.momentum != 0.0f) {
    if (velocity_.size() != params.size()) {
      throw std::invalid_argument("Sgd::step: optimizer was built for " +
                                  std::to_string(velocity_.size()) + " parameters, got " +
                                  std::to_string(params.size()));
    }
    velocity = velocity_.data();
  }
  kernels::sgd_update(params.size(), settings_.lr, settings_.momentum, settings_.weight_decay,
                      params.data(), grads.data(), velocity);
}

}  // namespace nnpar
