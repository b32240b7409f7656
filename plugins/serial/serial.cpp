// The serial CPU strategy: one thread, one model, the reference every other strategy's
// parity is checked against. It is also the smallest complete example of a strategy.
#include <algorithm>
#include <memory>
#include <vector>

#include "nnpar/strategy.hpp"

namespace {

using namespace nnpar;

class SerialStrategy final : public Strategy {
 public:
  void setup(const StrategyContext& context) override {
    context_ = context;
    const int batch = context.train->batch_size;
    model_ = std::make_unique<Model>(*context.model, batch);
    std::copy(context.initial_parameters.begin(), context.initial_parameters.end(),
              model_->parameters().begin());
    sgd_ = std::make_unique<Sgd>(context.train->sgd, model_->parameters().size());
    x_.resize(std::size_t(batch) * context.train_data->features());
    y_.resize(batch);
  }

  EpochReport train_epoch(int epoch) override {
    const TrainSettings& train = *context_.train;
    const Dataset& data = *context_.train_data;
    const std::vector<std::uint32_t> order =
        epoch_order(data.count, train.seed, epoch, train.shuffle);
    EpochReport report;
    PhaseClock clock;
    for (std::size_t begin = 0; begin < order.size(); begin += train.batch_size) {
      const std::size_t rows = std::min<std::size_t>(train.batch_size, order.size() - begin);
      if (train.drop_last && rows < std::size_t(train.batch_size)) break;
      gather_batch(data, std::span(order).subspan(begin, rows), x_.data(), y_.data());
      clock.lap(report.phases.data);

      model_->forward({x_.data(), int(rows), data.features()}, y_.data());
      report.loss_sum += model_->last_loss_sum();
      report.correct += model_->last_correct();
      clock.lap(report.phases.forward);

      model_->zero_grad();
      model_->backward(1.0f / float(rows));
      clock.lap(report.phases.backward);

      sgd_->step(model_->parameters(), model_->gradients());
      clock.lap(report.phases.update);
      report.samples += rows;
      report.steps += 1;
    }
    return report;
  }

  void get_parameters(std::span<float> out) override {
    std::copy(model_->parameters().begin(), model_->parameters().end(), out.begin());
  }

  std::string device_description() const override { return "CPU, 1 thread"; }

 private:
  StrategyContext context_;
  std::unique_ptr<Model> model_;
  std::unique_ptr<Sgd> sgd_;
  std::vector<float> x_;
  std::vector<std::int32_t> y_;
};

StrategyInfo serial_info() {
  StrategyInfo info;
  info.name = "serial";
  info.version = "1.0";
  info.description = "one CPU thread; the reference for parity checks";
  info.parity = ParityClass::exact;
  return info;
}

}  // namespace

NNPAR_REGISTER_STRATEGY(SerialStrategy, serial_info)
