// The next epoch's sample order, computed by the host while the device still trains the
// current epoch (the cuda strategy; the data-parallel trainer plans its whole next epoch
// instead, DataParallelTrainer::plan_epoch). Shuffling 124,800 indices takes the host
// ~0.3-0.5 ms, which a GPU strategy otherwise pays between two epochs with the device idle
// (docs/results/2026-11-26-data-parallel-5.md). The order is epoch_order's, whichever path
// made it: parity does not depend on this.
#pragma once

#include <cstdint>
#include <vector>

#include "nnpar/strategy.hpp"

namespace nnpar {

class EpochOrderAhead {
 public:
  // The order of `epoch`: the one computed ahead if it was for this epoch and data, else now.
  std::vector<std::uint32_t> take(const TrainSettings& train, std::size_t count, int epoch) {
    if (ready_for(train, count, epoch)) {
      ready_ = false;
      return std::move(order_);
    }
    ready_ = false;
    return epoch_order(count, train.seed, epoch, train.shuffle);
  }
  // The order prepare_next made, until take returns it; null when there is none.
  const std::vector<std::uint32_t>* prepared() const { return ready_ ? &order_ : nullptr; }
  // Called once the current epoch's device work is queued, before waiting for it.
  void prepare_next(const TrainSettings& train, std::size_t count, int epoch) {
    const int next = epoch + 1;
    if (next >= train.epochs) return;  // nothing will ask for it
    order_ = epoch_order(count, train.seed, next, train.shuffle);
    epoch_ = next;
    count_ = count;
    seed_ = train.seed;
    shuffle_ = train.shuffle;
    ready_ = true;
  }

 private:
  // Whether take(train, count, epoch) will return the order prepare_next made.
  bool ready_for(const TrainSettings& train, std::size_t count, int epoch) const {
    return ready_ && epoch_ == epoch && count_ == count && seed_ == train.seed && shuffle_ == train.shuffle;
  }

  std::vector<std::uint32_t> order_;
  bool ready_ = false, shuffle_ = true;
  int epoch_ = -1;
  std::size_t count_ = 0;
  std::uint64_t seed_ = 0;
};

}  // namespace nnpar
