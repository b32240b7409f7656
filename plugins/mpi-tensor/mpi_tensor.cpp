// Tensor (intra-layer) parallelism over MPI, Megatron-style: every Linear layer's weight is
// split by output neurons across the ranks ("column parallel"), so each rank stores and
// updates 1/P of every layer. All ranks see the whole batch.
//
//   forward   Y_r = X W_r^T + b_r (the rank's columns), sigmoid, then an all-gather of the
//             columns gives every rank the full activation for the next layer;
//   loss      softmax cross-entropy on the gathered logits, redundantly on every rank;
//   backward  dW_r = G_r^T X and db_r from the rank's columns G_r of the output gradient;
//             dX = sum_r G_r W_r is a sum over ranks: an allreduce.
//
// The all-gather is an allreduce of a zero-filled buffer in which each rank wrote its own
// columns: adding zeros is exact, so the forward pass is bit-identical to serial (our GEMM
// kernels compute each element independently of how the matrix is split). Only the input
// gradients' sum over ranks changes the rounding order: exact parity class.
#include <algorithm>
#include <memory>
#include <vector>

#include "nnpar/comm_mpi.hpp"
#include "nnpar/kernels.hpp"
#include "nnpar/strategy.hpp"

namespace {

using namespace nnpar;
namespace k = nnpar::kernels;

struct LayerShard {
  int in = 0, out = 0;       // the full layer
  Range cols;                // this rank's output neurons
  int width() const { return int(cols.size()); }
  std::size_t offset = 0;    // of this rank's weight rows in the local flat buffer
  float* weight(std::vector<float>& buffer) const { return buffer.data() + offset; }
  float* bias(std::vector<float>& buffer) const { return buffer.data() + offset + std::size_t(width()) * in; }
};

class MpiTensorStrategy final : public Strategy {
 public:
  void setup(const StrategyContext& context) override {
    context_ = context;
    comm_ = mpi::world();
    const ModelSpec& spec = *context.model;
    const int ranks = comm_->size(), rank = comm_->rank();
    const int batch = context.train->batch_size;
    std::size_t local = 0;
    for (int i = 0; i < spec.linear_count(); ++i) {
      LayerShard s;
      s.in = spec.layer_sizes[i];
      s.out = spec.layer_sizes[i + 1];
      s.cols = shard_range(std::size_t(s.out), rank, ranks);
      s.offset = local;
      local += std::size_t(s.width()) * (s.in + 1);
      layers_.push_back(s);
    }
    params_.assign(local, 0.0f);
    grads_.assign(local, 0.0f);
    // This rank's slices of the initial weights: rows cols of each W, entries cols of each b.
    for (int i = 0; i < spec.linear_count(); ++i) {
      const LayerShard& s = layers_[i];
      const float* W = context.initial_parameters.data() + parameter_offset(spec, i);
      const float* b = W + std::size_t(s.out) * s.in;
      std::copy(W + s.cols.begin * s.in, W + s.cols.end * s.in, s.weight(params_));
      std::copy(b + s.cols.begin, b + s.cols.end, s.bias(params_));
    }
    sgd_ = std::make_unique<Sgd>(context.train->sgd, local);
    // acts_[i]: the full input of Linear i ([batch, in_i]); acts_[L]: the full logits.
    for (int i = 0; i <= spec.linear_count(); ++i) acts_.emplace_back(std::size_t(batch) * spec.layer_sizes[i]);
    probs_.resize(std::size_t(batch) * spec.layer_sizes.back());
    grad_full_.resize(std::size_t(batch) * *std::max_element(spec.layer_sizes.begin(), spec.layer_sizes.end()));
    grad_local_.resize(grad_full_.size());
    local_out_.resize(grad_full_.size());
    labels_.resize(batch);
  }

  EpochReport train_epoch(int epoch) override {
    const TrainSettings& train = *context_.train;
    const Dataset& data = *context_.train_data;
    const auto order = epoch_order(data.count, train.seed, epoch, train.shuffle);
    const int L = int(layers_.size());
    EpochReport report;
    PhaseClock clock;
    for (std::size_t begin = 0; begin < order.size(); begin += train.batch_size) {
      const int rows = int(std::min<std::size_t>(train.batch_size, order.size() - begin));
      if (train.drop_last && rows < train.batch_size) break;
      gather_batch(data, std::span(order).subspan(begin, rows), acts_[0].data(), labels_.data());
      clock.lap(report.phases.data);

      for (int i = 0; i < L; ++i) {
        const LayerShard& s = layers_[i];
        k::gemm_nt(rows, s.width(), s.in, 1.0f, acts_[i].data(), s.in, s.weight(params_), s.in, 0.0f,
                   local_out_.data(), s.width());
        if (i + 1 < L)
          k::bias_sigmoid_rows(rows, s.width(), s.bias(params_), local_out_.data());
        else
          k::add_bias_rows(rows, s.width(), s.bias(params_), local_out_.data());
        clock.lap(report.phases.forward);
        all_gather_columns(rows, s, local_out_.data(), acts_[i + 1].data());
        clock.lap(report.phases.communication);
      }
      const int classes = layers_.back().out;
      report.loss_sum += k::softmax_xent_forward(rows, classes, acts_[L].data(), labels_.data(), probs_.data());
      report.correct += k::count_correct(rows, classes, acts_[L].data(), labels_.data());
      k::softmax_xent_backward(rows, classes, probs_.data(), labels_.data(), 1.0f / float(rows), grad_full_.data());
      clock.lap(report.phases.forward);

      for (int i = L - 1; i >= 0; --i) {
        const LayerShard& s = layers_[i];
        // This rank's columns of the output gradient, contiguous for the GEMMs.
        for (int r = 0; r < rows; ++r)
          std::copy_n(grad_full_.data() + std::size_t(r) * s.out + s.cols.begin, s.width(),
                      grad_local_.data() + std::size_t(r) * s.width());
        float* dW = s.weight(grads_);
        k::gemm_tn(s.width(), s.in, rows, 1.0f, grad_local_.data(), s.width(), acts_[i].data(), s.in, 0.0f, dW, s.in);
        k::column_sums(rows, s.width(), 1.0f, grad_local_.data(), 0.0f, s.bias(grads_));
        if (i == 0) {
          clock.lap(report.phases.backward);
          break;
        }
        // dX partial = G_r W_r over this rank's output neurons; the sum over ranks is dX.
        k::gemm_nn(rows, s.in, s.width(), 1.0f, grad_local_.data(), s.width(), s.weight(params_), s.in, 0.0f,
                   grad_full_.data(), s.in);
        clock.lap(report.phases.backward);
        comm_->allreduce(grad_full_.data(), std::size_t(rows) * s.in, ReduceOp::sum);
        clock.lap(report.phases.communication);
        k::sigmoid_backward(std::size_t(rows) * s.in, acts_[i].data(), grad_full_.data(), grad_full_.data());
        clock.lap(report.phases.backward);
      }
      sgd_->step(params_, grads_);
      clock.lap(report.phases.update);
      report.samples += rows;
      report.steps += 1;
    }
    return report;
  }

  // Every rank writes its rows into a zeroed full vector; the sum over ranks is the model.
  void get_parameters(std::span<float> out) override {
    const ModelSpec& spec = *context_.model;
    std::vector<float> full(parameter_count(spec), 0.0f);
    for (int i = 0; i < spec.linear_count(); ++i) {
      const LayerShard& s = layers_[i];
      float* W = full.data() + parameter_offset(spec, i);
      float* b = W + std::size_t(s.out) * s.in;
      std::copy_n(s.weight(params_), std::size_t(s.width()) * s.in, W + s.cols.begin * s.in);
      std::copy_n(s.bias(params_), s.width(), b + s.cols.begin);
    }
    comm_->allreduce(full.data(), full.size(), ReduceOp::sum);
    std::copy(full.begin(), full.end(), out.begin());
  }

  std::string device_description() const override {
    return "CPU, " + std::to_string(comm_->size()) + " MPI ranks (tensor parallel, column split)";
  }

 private:
  // full[rows, s.out] = this rank's local[rows, s.width()] in its columns, the others' in theirs.
  void all_gather_columns(int rows, const LayerShard& s, const float* local, float* full) {
    std::fill_n(full, std::size_t(rows) * s.out, 0.0f);
    for (int r = 0; r < rows; ++r)
      std::copy_n(local + std::size_t(r) * s.width(), s.width(), full + std::size_t(r) * s.out + s.cols.begin);
    if (comm_->size() > 1) comm_->allreduce(full, std::size_t(rows) * s.out, ReduceOp::sum);
  }

  StrategyContext context_;
  std::unique_ptr<Communicator> comm_;
  std::vector<LayerShard> layers_;
  std::vector<float> params_, grads_;
  std::unique_ptr<Sgd> sgd_;
  std::vector<std::vector<float>> acts_;
  std::vector<float> probs_, grad_full_, grad_local_, local_out_;
  std::vector<std::int32_t> labels_;
};

StrategyInfo mpi_tensor_info() {
  StrategyInfo info;
  info.name = "mpi-tensor";
  info.version = "1.0";
  info.description = "tensor parallel over MPI ranks on CPUs: every layer split by output neurons";
  info.parity = ParityClass::exact;
  info.needs_mpi = true;
  info.min_world_size = 1;
  info.max_world_size = 0;
  return info;
}

}  // namespace

NNPAR_REGISTER_STRATEGY(MpiTensorStrategy, mpi_tensor_info)
