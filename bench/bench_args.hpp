// The command-line pieces the bench tools share: comma lists and bounded integers, refused by
// name (std::invalid_argument; each tool prints it and exits 2).
#pragma once

#include <cstdio>
#include <cstdlib>
#include <stdexcept>
#include <string>
#include <vector>

namespace nnpar_bench {

// "a,b,c" -> {"a", "b", "c"}; an empty item stays (and is refused by whoever reads it).
inline std::vector<std::string> split_commas(const std::string& text) {
  std::vector<std::string> out;
  for (std::size_t at = 0; at <= text.size();) {
    const std::size_t comma = text.find(',', at);
    const std::size_t end = comma == std::string::npos ? text.size() : comma;
    out.push_back(text.substr(at, end - at));
    at = end + 1;
  }
  return out;
}

// `text` as an integer in lo..hi, else an error naming the flag and the text.
inline int int_in_range(const std::string& flag, const std::string& text, int lo, int hi) {
  char* end = nullptr;
  const long v = std::strtol(text.c_str(), &end, 10);
  if (text.empty() || *end != '\0' || v < lo || v > hi)
    throw std::invalid_argument(flag + " " + text + ": expected an integer in " + std::to_string(lo) + ".." +
                                std::to_string(hi));
  return int(v);
}

// A comma list of integers in lo..hi.
inline std::vector<int> ints_in_range(const std::string& flag, const std::string& text, int lo, int hi) {
  std::vector<int> out;
  for (const std::string& item : split_commas(text)) out.push_back(int_in_range(flag, item, lo, hi));
  return out;
}

// Prints "tool: why" and exits 2, the status of a refused argument.
[[noreturn]] inline void refuse(const char* tool, const std::string& why) {
  std::fprintf(stderr, "%s: %s\n", tool, why.c_str());
  std::exit(2);
}

// Hands each "--flag value" pair of argv, in order, to on_flag(flag, value), which throws
// std::invalid_argument for a flag it does not know. --help or -h prints `usage` and exits 0; a
// flag without a value throws.
template <class OnFlag>
inline void for_each_flag(int argc, char** argv, const char* usage, OnFlag&& on_flag) {
  for (int i = 1; i < argc; ++i) {
    const std::string flag = argv[i];
    if (flag == "--help" || flag == "-h") {
      std::fputs(usage, stdout);
      std::exit(0);
    }
    if (i + 1 >= argc) throw std::invalid_argument(flag + ": missing its value (see --help)");
    on_flag(flag, std::string(argv[++i]));
  }
}

}  // namespace nnpar_bench
