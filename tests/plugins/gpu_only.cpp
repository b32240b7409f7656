// A strategy that declares it needs a GPU: on a machine without one the harness must refuse
// it from its metadata, before setup is ever called.
#include <stdexcept>

#include "nnpar/strategy.hpp"

namespace {
class NeedsGpu final : public nnpar::Strategy {
 public:
  void setup(const nnpar::StrategyContext&) override {
    throw std::logic_error("gpu_only: setup must not be reached without a GPU");
  }
  nnpar::EpochReport train_epoch(int) override { return {}; }
  void get_parameters(std::span<float>) override {}
};
nnpar::StrategyInfo info() {
  nnpar::StrategyInfo i;
  i.name = "gpu_only";
  i.description = "test only: declares uses_gpu";
  i.uses_gpu = true;
  return i;
}
}  // namespace
NNPAR_REGISTER_STRATEGY(NeedsGpu, info)
