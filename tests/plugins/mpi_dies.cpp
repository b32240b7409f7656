// A multi-rank strategy whose rank 1 dies in the first epoch while rank 0 waits for it in a
// collective: the job must end with an error, not hang.
#include <cstdlib>

#include "nnpar/comm_mpi.hpp"
#include "nnpar/strategy.hpp"

namespace {
class DiesOnRankOne final : public nnpar::Strategy {
 public:
  void setup(const nnpar::StrategyContext&) override { comm_ = nnpar::mpi::world(); }
  nnpar::EpochReport train_epoch(int) override {
    if (comm_->rank() == 1) std::_Exit(3);
    double x = 1;
    comm_->allreduce(&x, 1);  // rank 1 never arrives
    return {};
  }
  void get_parameters(std::span<float>) override {}

 private:
  std::unique_ptr<nnpar::Communicator> comm_;
};
nnpar::StrategyInfo info() {
  nnpar::StrategyInfo i;
  i.name = "mpi_dies";
  i.description = "test only: rank 1 exits in the first epoch";
  i.needs_mpi = true;
  i.max_world_size = 0;
  return i;
}
}  // namespace
NNPAR_REGISTER_STRATEGY(DiesOnRankOne, info)
