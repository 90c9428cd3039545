#include "proxy/upstream/priority_load.h"

#include <algorithm>
#include <numeric>

namespace culvert::upstream {

PriorityLoad computePriorityLoad(const std::vector<PriorityHealth>& levels, uint32_t panic_threshold,
                                 uint32_t overprovisioning) {
  PriorityLoad out;
  const size_t n = levels.size();
  out.percent.assign(n, 0);
  out.panic.assign(n, false);
  if (n == 0) return out;
  std::vector<uint32_t> availability(n, 0);
  for (size_t p = 0; p < n; ++p) {
    if (levels[p].total == 0) continue;
    uint64_t a = uint64_t{overprovisioning} * levels[p].healthy / levels[p].total;
    availability[p] = static_cast<uint32_t>(std::min<uint64_t>(100, a));
  }
  const uint32_t total_availability =
      std::min<uint32_t>(100, std::accumulate(availability.begin(), availability.end(), 0u));

  auto inPanic = [&](const PriorityHealth& level) {
    double healthy_percent = level.total == 0 ? 0.0 : 100.0 * level.healthy / level.total;
    return healthy_percent < panic_threshold;
  };
  if (!(total_availability == 0 && panic_threshold == 0)) {
    for (size_t p = 0; p < n; ++p) out.panic[p] = total_availability == 100 ? false : inPanic(levels[p]);
  }

  if (total_availability > 0) {
    uint32_t remaining = 100;
    int first_available = -1;
    for (size_t p = 0; p < n; ++p) {
      if (first_available < 0 && availability[p] > 0) first_available = static_cast<int>(p);
      out.percent[p] = std::min(remaining, availability[p] * 100 / total_availability);
      remaining -= out.percent[p];
    }
    // What is left is rounding: it goes to the first available level.
    if (remaining > 0 && first_available >= 0) out.percent[static_cast<size_t>(first_available)] += remaining;
  } else {
    out.percent[0] = 100;
  }

  if (std::all_of(out.panic.begin(), out.panic.end(), [](bool b) { return b; })) {
    // Total panic: split by endpoint count, so every endpoint gets an equal share.
    uint64_t hosts = 0;
    for (const auto& level : levels) hosts += level.total;
    if (hosts > 0) {
      uint32_t assigned = 0;
      int first_nonempty = -1;
      for (size_t p = 0; p < n; ++p) {
        if (first_nonempty < 0 && levels[p].total > 0) first_nonempty = static_cast<int>(p);
        out.percent[p] = static_cast<uint32_t>(100 * uint64_t{levels[p].total} / hosts);
        assigned += out.percent[p];
      }
      out.percent[static_cast<size_t>(first_nonempty)] += 100 - assigned;
    }
  }
  return out;
}

uint32_t choosePriority(const std::vector<uint32_t>& percent, uint64_t draw) {
  uint64_t point = draw % 100;
  uint64_t cumulative = 0;
  for (size_t p = 0; p < percent.size(); ++p) {
    cumulative += percent[p];
    if (point < cumulative) return static_cast<uint32_t>(p);
  }
  return 0;
}

}  // namespace culvert::upstream
