// A real strategy whose declared name does not match its file name.
#include "nnpar/strategy.hpp"

namespace {
class Nothing final : public nnpar::Strategy {
 public:
  void setup(const nnpar::StrategyContext&) override {}
  nnpar::EpochReport train_epoch(int) override { return {}; }
  void get_parameters(std::span<float>) override {}
};
nnpar::StrategyInfo info() {
  nnpar::StrategyInfo i;
  i.name = "something-else";
  i.description = "declares a name its file does not carry";
  return i;
}
}  // namespace
NNPAR_REGISTER_STRATEGY(Nothing, info)
