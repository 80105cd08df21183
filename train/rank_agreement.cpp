#include "train/rank_agreement.h"

#include <fmt/format.h>
#include <fmt/ranges.h>

#include <functional>
#include <string>
#include <vector>

#include "runtime/error.h"

namespace moerun {

const char* program_version() { return "moerun " MOERUN_VERSION " (commit " MOERUN_COMMIT ") built " __DATE__ " " __TIME__; }

void check_ranks_agree(ProcessGroup& world, const Config& config) {
  if (world.size() == 1) return;
  const std::string mine = std::string(program_version()) + "\n" + config.to_json().dump();
  // One small all-reduce decides whether anything differs; only then is rank 0's text sent.
  const auto digest = static_cast<std::int64_t>(std::hash<std::string>{}(mine) >> 1);
  const std::int64_t low = world.all_reduce_value(digest, ReduceOp::Min), high = world.all_reduce_value(digest, ReduceOp::Max);
  if (low == high) return;
  const std::string reference = world.broadcast_text(mine);
  std::vector<std::string> differ;
  const auto split = reference.find('\n');
  if (reference.substr(0, split) != program_version())
    differ.push_back(fmt::format("the program ('{}' here, '{}' on rank 0)", program_version(), reference.substr(0, split)));
  const auto theirs = nlohmann::json::parse(reference.substr(split + 1));
  const auto ours = config.to_json();
  for (const auto& [section, keys] : ours.items())
    for (const auto& [key, value] : keys.items())
      if (!theirs.contains(section) || !theirs[section].contains(key) || theirs[section][key] != value)
        differ.push_back(fmt::format("{}.{} = {} here but {} on rank 0", section, key, value.dump(),
                                     theirs.contains(section) && theirs[section].contains(key) ? theirs[section][key].dump() : "unset"));
  // Every rank stops; the ones that differ say how.
  const std::int64_t any = world.all_reduce_value(std::int64_t{differ.empty() ? 0 : 1}, ReduceOp::Max);
  MOERUN_CHECK(differ.empty(), RuntimeError,
               "[start-up] rank {} does not run what rank 0 runs: {}; launch every rank with the same binary and "
               "arguments (an MPMD launch with different --set values trains inconsistent replicas)",
               world.rank(), fmt::join(differ, "; "));
  MOERUN_CHECK(any == 0, RuntimeError, "[start-up] another rank runs a different program or config (see its message); "
               "launch every rank with the same binary and arguments");
}

}  // namespace moerun
