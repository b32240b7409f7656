// The CPU StageEngine: the maths of one pipeline stage with the CPU kernels. Shared by
// mpi-pipeline (one pipeline over all ranks) and mpi-hybrid (a pipeline per data-parallel
// replica), so both run exactly the same stage code.
#pragma once
#include <algorithm>
#include <functional>
#include <memory>
#include <vector>

#include "nnpar/kernels.hpp"
#include "pipeline.hpp"

namespace nnpar {

// The stage keeps every micro-batch's activations itself (per slot) and calls the kernels
// directly, in the same sequence as Linear/Sigmoid/SoftmaxCrossEntropy do for serial: the
// layer objects hold one batch's activations each, and a pipeline stage has several in flight.
class CpuStage final : public StageEngine {
 public:
  CpuStage(const StrategyContext& context, const StagePlan& plan)
      : data_(*context.train_data),
        plan_(plan),
        classes_(context.model->layer_sizes.back()),
        params_(context.initial_parameters.begin() + plan.param_offset,
                context.initial_parameters.begin() + plan.param_offset + plan.param_count),
        grads_(plan.param_count, 0.0f),
        sgd_(context.train->sgd, plan.param_count) {
    const ModelSpec& spec = *context.model;
    const std::size_t rows = std::size_t(plan.max_micro_rows);
    int widest = plan.input_features;
    for (int i = plan.first_layer; i < plan.first_layer + plan.layer_count; ++i) {
      const int in = spec.layer_sizes[i], out = spec.layer_sizes[i + 1];
      // Sigmoid follows every Linear except the model's last, whose logits go to the loss.
      layers_.push_back({in, out, parameter_offset(spec, i) - plan.param_offset, i + 1 < spec.linear_count(), i > 0});
      widest = std::max(widest, out);
    }
    slots_.resize(plan.slots);
    for (Slot& s : slots_) {
      s.input.resize(rows * plan.input_features);
      for (const Layer& l : layers_) s.activations.emplace_back(rows * l.out);
      if (!plan.last()) s.output_grad.resize(rows * plan.output_features);
      if (!plan.first()) s.input_grad.resize(rows * plan.input_features);
      if (plan.last()) s.probs.resize(rows * classes_);
      s.labels.resize(rows);
    }
    scratch_a_.resize(rows * widest);
    scratch_b_.resize(rows * widest);
  }

  float* parameters() override { return params_.data(); }
  float* gradients() override { return grads_.data(); }
  float* input(int slot) override { return slots_[slot].input.data(); }
  float* output(int slot) override { return slots_[slot].activations.back().data(); }
  float* output_grad(int slot) override { return slots_[slot].output_grad.data(); }
  float* input_grad(int slot) override { return slots_[slot].input_grad.data(); }

  void load(int slot, std::span<const std::uint32_t> indices) override {
    Slot& s = slots_[slot];
    if (plan_.first()) {
      gather_batch(data_, indices, s.input.data(), s.labels.data());
    } else if (plan_.last()) {
      for (std::size_t k = 0; k < indices.size(); ++k) s.labels[k] = data_.labels[indices[k]];
    }
  }

  void forward(int slot, int rows) override {
    Slot& s = slots_[slot];
    const float* x = s.input.data();
    for (std::size_t l = 0; l < layers_.size(); ++l) {
      const Layer& L = layers_[l];
      float* y = s.activations[l].data();
      kernels::gemm_nt(rows, L.out, L.in, 1.0f, x, L.in, weight(L), L.in, 0.0f, y, L.out);
      kernels::add_bias_rows(rows, L.out, bias(L), y);
      if (L.sigmoid) kernels::sigmoid_forward(std::size_t(rows) * L.out, y, y);
      x = y;
    }
    if (plan_.last()) {
      loss_sum_ += kernels::softmax_xent_forward(rows, classes_, x, s.labels.data(), s.probs.data());
      correct_ += kernels::count_correct(rows, classes_, s.probs.data(), s.labels.data());
    }
  }

  void backward(int slot, int rows, float loss_scale) override { backward_reporting(slot, rows, loss_scale, {}); }

  void backward_reporting(int slot, int rows, float loss_scale, const std::function<void(int)>& after_layer) override {
    Slot& s = slots_[slot];
    float* g;  // gradient with respect to the current layer's (activated) output
    if (plan_.last()) {
      g = scratch_a_.data();
      kernels::softmax_xent_backward(rows, classes_, s.probs.data(), s.labels.data(), loss_scale, g);
    } else {
      g = s.output_grad.data();
    }
    for (int l = int(layers_.size()) - 1; l >= 0; --l) {
      const Layer& L = layers_[l];
      if (L.sigmoid) {
        float* gz = other(g);
        kernels::sigmoid_backward(std::size_t(rows) * L.out, s.activations[l].data(), g, gz);
        g = gz;
      }
      const float* x = l == 0 ? s.input.data() : s.activations[l - 1].data();
      // beta = 1: the micro-batches of a step accumulate into one gradient.
      kernels::gemm_tn(L.out, L.in, rows, 1.0f, g, L.out, x, L.in, 1.0f, weight_grad(L), L.in);
      kernels::column_sums(rows, L.out, 1.0f, g, 1.0f, bias_grad(L));
      if (after_layer) after_layer(plan_.first_layer + l);
      if (!L.needs_input_grad) break;  // the model's first layer: its input is the data
      float* ga = l == 0 ? s.input_grad.data() : other(g);
      kernels::gemm_nn(rows, L.in, L.out, 1.0f, g, L.out, weight(L), L.in, 0.0f, ga, L.in);
      g = ga;
    }
  }

  void zero_grad() override { std::fill(grads_.begin(), grads_.end(), 0.0f); }
  void sgd_step() override { sgd_.step(params_, grads_); }
  std::pair<double, double> take_metrics() override {
    std::pair<double, double> m{loss_sum_, double(correct_)};
    loss_sum_ = 0;
    correct_ = 0;
    return m;
  }
  float* scratch(std::size_t count) override {
    gather_.resize(count);
    return gather_.data();
  }
  void copy_to_host(const float* source, std::size_t count, float* host) override {
    std::copy(source, source + count, host);
  }

 private:
  struct Layer {
    int in, out;
    std::size_t offset;      // of its weight in this stage's slice
    bool sigmoid;            // followed by a sigmoid
    bool needs_input_grad;   // not the model's first layer
  };
  struct Slot {
    std::vector<float> input;                     // pixels on the first stage
    std::vector<std::vector<float>> activations;  // each layer's output, after its sigmoid
    std::vector<float> output_grad, input_grad, probs;
    std::vector<std::int32_t> labels;
  };
  const float* weight(const Layer& l) const { return params_.data() + l.offset; }
  const float* bias(const Layer& l) const { return weight(l) + std::size_t(l.out) * l.in; }
  float* weight_grad(const Layer& l) { return grads_.data() + l.offset; }
  float* bias_grad(const Layer& l) { return weight_grad(l) + std::size_t(l.out) * l.in; }
  // Ping-pong between two scratch buffers; never the one g is in.
  float* other(const float* g) { return g == scratch_a_.data() ? scratch_b_.data() : scratch_a_.data(); }

  const Dataset& data_;
  StagePlan plan_;
  int classes_;
  std::vector<float> params_, grads_;
  Sgd sgd_;
  std::vector<Layer> layers_;
  std::vector<Slot> slots_;
  std::vector<float> scratch_a_, scratch_b_, gather_;
  double loss_sum_ = 0;
  std::size_t correct_ = 0;
};

}  // namespace nnpar
