#include "proxy/upstream/load_balancer.h"

namespace culvert::upstream {

int RoundRobinBalancer::pick(const std::vector<config::Endpoint>& endpoints) {
  if (endpoints.empty()) return -1;
  if (current_.size() != endpoints.size()) current_.assign(endpoints.size(), 0);
  int64_t total = 0;
  int best = 0;
  for (size_t i = 0; i < endpoints.size(); ++i) {
    int64_t w = endpoints[i].weight == 0 ? 1 : endpoints[i].weight;
    current_[i] += w;
    total += w;
    if (current_[i] > current_[static_cast<size_t>(best)]) best = static_cast<int>(i);
  }
  current_[static_cast<size_t>(best)] -= total;
  return best;
}

}  // namespace culvert::upstream
