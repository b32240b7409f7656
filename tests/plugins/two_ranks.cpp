// A strategy that runs on exactly 2 MPI ranks: started on any other number, the harness must
// refuse it from its metadata, before setup is ever called.
#include <stdexcept>

#include "nnpar/strategy.hpp"

namespace {
class TwoRanks final : public nnpar::Strategy {
 public:
  void setup(const nnpar::StrategyContext&) override {
    throw std::logic_error("two_ranks: setup must not be reached on a wrong world size");
  }
  nnpar::EpochReport train_epoch(int) override { return {}; }
  void get_parameters(std::span<float>) override {}
};
nnpar::StrategyInfo info() {
  nnpar::StrategyInfo i;
  i.name = "two_ranks";
  i.description = "test only: declares min_world_size = max_world_size = 2";
  i.needs_mpi = true;
  i.min_world_size = 2;
  i.max_world_size = 2;
  return i;
}
}  // namespace
NNPAR_REGISTER_STRATEGY(TwoRanks, info)
