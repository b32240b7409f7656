#include "rank_gather.hpp"

#include <cstdint>
#include <string>

#include <nlohmann/json.hpp>

namespace nnpar {

std::vector<std::vector<trace::Event>> gather_rank_events(Communicator& world, std::vector<trace::Event> mine) {
  constexpr int kSizeTag = 7101, kTextTag = 7102;
  if (world.rank() != 0) {
    nlohmann::json rows = nlohmann::json::array();
    for (auto& e : mine) rows.push_back({e.name, e.category, e.thread, e.start_ns, e.end_ns});
    std::string text = rows.dump();
    const std::int64_t size = std::int64_t(text.size());
    // Sent as whole doubles: the communicator moves typed elements.
    text.resize((text.size() + 7) / 8 * 8, ' ');
    world.send(&size, 1, DataType::i64, 0, kSizeTag);
    world.send(text.data(), text.size() / 8, DataType::f64, 0, kTextTag);
    return {};
  }
  std::vector<std::vector<trace::Event>> out(std::size_t(world.size()));
  out[0] = std::move(mine);
  for (int r = 1; r < world.size(); ++r) {
    std::int64_t size = 0;
    world.recv(&size, 1, DataType::i64, r, kSizeTag);
    std::string text(std::size_t(size + 7) / 8 * 8, ' ');
    world.recv(text.data(), text.size() / 8, DataType::f64, r, kTextTag);
    for (auto& row : nlohmann::json::parse(text))
      out[r].push_back({row[0].get<std::string>(), row[1].get<std::string>(), row[2].get<int>(),
                        row[3].get<std::int64_t>(), row[4].get<std::int64_t>()});
  }
  return out;
}

}  // namespace nnpar
