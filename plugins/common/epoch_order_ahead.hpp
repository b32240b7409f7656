// The next epoch's sample order, computed by the host while the device still trains the
// current epoch. Shuffling 124,800 indices takes the host ~0.3-0.5 ms, which a GPU strategy
// otherwise pays between two epochs with the device idle; nccl-data pays it on every rank at
// once, so it does not shrink with the rank count and was a visible part of the gap to
// perfect scaling at 1024 rows per GPU (docs/results/2026-11-26-data-parallel-5.md). The
// order is epoch_order's, whichever path made it: parity does not depend on this.
#pragma once

#include <cstdint>
#include <vector>

#include "nnpar/strategy.hpp"

namespace nnpar {

class EpochOrderAhead {
 public:
  // The order of `epoch`: the one computed ahead if it was for this epoch and data, else now.
  std::vector<std::uint32_t> take(const TrainSettings& train, std::size_t count, int epoch) {
    if (ready_ && epoch_ == epoch && count_ == count && seed_ == train.seed && shuffle_ == train.shuffle) {
      ready_ = false;
      return std::move(order_);
    }
    ready_ = false;
    return epoch_order(count, train.seed, epoch, train.shuffle);
  }
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
  std::vector<std::uint32_t> order_;
  bool ready_ = false, shuffle_ = true;
  int epoch_ = -1;
  std::size_t count_ = 0;
  std::uint64_t seed_ = 0;
};

}  // namespace nnpar
