#pragma once

#include <cstddef>
#include <vector>

#include "proxy/config/snapshot.h"

namespace culvert::upstream {

// Smooth weighted round robin (nginx's algorithm): over any window of sum(weights) picks,
// each endpoint is chosen weight times, interleaved rather than in bursts. Pure state
// machine; one per (worker, cluster).
class RoundRobinBalancer {
public:
  // Index into `endpoints`, or -1 when there are none.
  int pick(const std::vector<config::Endpoint>& endpoints);

private:
  std::vector<int64_t> current_;
};

}  // namespace culvert::upstream
