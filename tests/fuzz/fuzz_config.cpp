// Fuzzes config validation: TOML text, then `--set` overrides, then each [[strategy]]
// table against a plugin's option list with one option of every kind. Input: the TOML text,
// then optional NUL-separated overrides ("train.lr=0.5"). A bad config must end in a
// ConfigError (file:line:col, key); anything else is a bug.
#include <cstdint>
#include <string>
#include <vector>

#include "config.hpp"

namespace {

std::vector<nnpar::OptionSpec> option_specs() {
  using nnpar::OptionSpec;
  using nnpar::OptionType;
  std::vector<OptionSpec> specs(5);
  specs[0] = {"threads", OptionType::integer, std::int64_t{0}, "", 0, 1024, {}};
  specs[1] = {"mode", OptionType::string, std::string("sync"), "", -1e300, 1e300, {"sync", "local_sgd"}};
  specs[2] = {"period", OptionType::real, 1.0, "", 0.5, 100, {}};
  specs[3] = {"overlap", OptionType::boolean, true, "", -1e300, 1e300, {}};
  specs[4] = {"name_any", OptionType::string, std::string(""), "", -1e300, 1e300, {}};
  return specs;
}

}  // namespace

namespace nnpar::fuzz {

void one_config(const std::uint8_t* data, std::size_t size) {
  const std::string input(reinterpret_cast<const char*>(data), size);
  std::vector<std::string> parts;
  std::size_t begin = 0;
  for (;;) {
    const std::size_t nul = input.find('\0', begin);
    parts.push_back(input.substr(begin, nul == std::string::npos ? std::string::npos : nul - begin));
    if (nul == std::string::npos || parts.size() == 8) break;
    begin = nul + 1;
  }
  const std::vector<std::string> overrides(parts.begin() + 1, parts.end());
  static const std::vector<nnpar::OptionSpec> specs = option_specs();
  try {
    const nnpar::RunConfig config = nnpar::load_config_text(parts[0], "fuzz.toml", "/nonexistent/base", overrides);
    for (const auto& entry : config.strategies) nnpar::validate_strategy_options(entry, specs);
  } catch (const nnpar::ConfigError&) {
  }
}

}  // namespace nnpar::fuzz

#ifndef NNPAR_FUZZ_NO_MAIN
extern "C" int LLVMFuzzerTestOneInput(const std::uint8_t* data, std::size_t size) {
  nnpar::fuzz::one_config(data, size);
  return 0;
}
#endif
