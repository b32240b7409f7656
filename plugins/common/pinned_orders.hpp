// An epoch's sample order on its way to the device (cuda, nccl-data): two pinned host
// buffers, one per epoch parity. The next epoch's order is written into one while the device
// runs the current epoch, whose upload may still read the other, so the ~0.1 ms copy of
// 124,800 indices is not paid with the device idle, and an upload from pinned memory does not
// hold the host (a pageable one did, for ~0.1 ms at every epoch's start;
// docs/results/2026-11-27-data-parallel-6.md).
#pragma once

#include <algorithm>
#include <cstddef>
#include <cstdint>
#include <span>
#include <stdexcept>
#include <string>

#include <cuda_runtime_api.h>

namespace nnpar {

class PinnedOrders {
 public:
  PinnedOrders() = default;
  PinnedOrders(const PinnedOrders&) = delete;
  PinnedOrders& operator=(const PinnedOrders&) = delete;
  ~PinnedOrders() {
    for (std::uint32_t* b : buffers_)
      if (b != nullptr) cudaFreeHost(b);
  }

  // Room for `count` indices in each buffer.
  void allocate(std::size_t count) {
    for (std::uint32_t*& b : buffers_) {
      if (cudaMallocHost(reinterpret_cast<void**>(&b), std::max<std::size_t>(count, 1) * sizeof(std::uint32_t)) !=
          cudaSuccess) {
        b = nullptr;
        throw std::runtime_error(std::string("pinned order: ") + cudaGetErrorString(cudaGetLastError()));
      }
    }
    capacity_ = count;
  }

  // The next epoch's order, copied now into the buffer the next begin_epoch will use. The
  // caller keeps `order`'s storage alive (a moved vector keeps it) until that begin_epoch.
  void write_ahead(std::span<const std::uint32_t> order) {
    if (order.empty() || order.size() > capacity_) return;
    std::copy(order.begin(), order.end(), buffers_[slot_ ^ 1]);
    ahead_ = order;
  }

  // Starts an epoch: the pinned copy of `order` its upload reads. It was written ahead if
  // write_ahead was given these very indices (the same storage and size), else it is copied
  // now. Call once the previous epoch's upload has finished (after its synchronisation).
  const std::uint32_t* begin_epoch(std::span<const std::uint32_t> order) {
    if (order.size() > capacity_) throw std::logic_error("pinned order: more indices than allocated");
    const bool ready = !order.empty() && ahead_.data() == order.data() && ahead_.size() == order.size();
    ahead_ = {};
    slot_ ^= 1;
    if (!ready) std::copy(order.begin(), order.end(), buffers_[slot_]);
    return buffers_[slot_];
  }

 private:
  std::uint32_t* buffers_[2] = {};
  std::size_t capacity_ = 0;
  int slot_ = 0;                              // the buffer the current epoch's upload read
  std::span<const std::uint32_t> ahead_;      // write_ahead's indices, in buffers_[slot_ ^ 1]
};

}  // namespace nnpar
