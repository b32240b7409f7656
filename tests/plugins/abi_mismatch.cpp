// A plugin that claims a different strategy ABI version: the harness must refuse it before
// calling anything else in it.
#include "nnpar/strategy.hpp"

extern "C" NNPAR_EXPORT int nnpar_strategy_abi_version() { return nnpar::kStrategyAbiVersion + 1000; }
extern "C" NNPAR_EXPORT void nnpar_strategy_info() {
  // Never reached: its signature does not even match the real one.
  __builtin_trap();
}
