// What every rank of a multi-rank run recorded for --trace, brought to rank 0 after training
// (their phase totals come with the run: runner.cpp).
#pragma once
#include <vector>

#include "nnpar/communicator.hpp"
#include "nnpar/trace.hpp"

namespace nnpar {

// Collective. Rank 0 gets every rank's trace events, in rank order; the others get nothing.
std::vector<std::vector<trace::Event>> gather_rank_events(Communicator& world, std::vector<trace::Event> mine);

}  // namespace nnpar
