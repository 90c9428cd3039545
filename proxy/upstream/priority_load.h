#pragma once

#include <cstdint>
#include <vector>

namespace culvert::upstream {

// One priority level's endpoint counts (Envoy counts hosts, not weights, here).
struct PriorityHealth {
  uint32_t total = 0;
  uint32_t healthy = 0;
};

// How a cluster's traffic splits across its priority levels (percent per level, summing
// to 100 when any level has endpoints) and which levels are in panic mode (they then use
// all of their endpoints, healthy or not).
struct PriorityLoad {
  std::vector<uint32_t> percent;
  std::vector<bool> panic;
};

// Envoy's rules: a level's availability is min(100, overprovisioning% × healthy / total);
// load fills levels from priority 0 by availability, normalised when the levels together
// are under 100; a level is in panic when its healthy share is below panic_threshold and
// the levels together are not fully available; when every level is in panic, load splits
// by endpoint count. Pure.
PriorityLoad computePriorityLoad(const std::vector<PriorityHealth>& levels, uint32_t panic_threshold_percent,
                                 uint32_t overprovisioning_percent = 140);

// The level a request goes to, from a value uniformly distributed over uint64.
uint32_t choosePriority(const std::vector<uint32_t>& percent, uint64_t draw);

}  // namespace culvert::upstream
