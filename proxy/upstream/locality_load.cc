#include "proxy/upstream/locality_load.h"

#include <algorithm>

namespace culvert::upstream {

double effectiveLocalityWeight(const LocalityHealth& locality, uint32_t overprovisioning_percent) {
  if (locality.weight == 0 || locality.hosts == 0) return 0;
  double availability = overprovisioning_percent / 100.0 * locality.healthy / locality.hosts;
  return locality.weight * std::min(1.0, availability);
}

LocalityScheduler::LocalityScheduler(const std::vector<LocalityHealth>& localities,
                                     const std::vector<uint32_t>& members, uint32_t overprovisioning_percent) {
  for (uint32_t index : members) {
    double weight = effectiveLocalityWeight(localities[index], overprovisioning_percent);
    if (weight <= 0) continue;
    entries_.push_back({index, weight});
    total_ += weight;
  }
}

std::optional<uint32_t> LocalityScheduler::pick() {
  if (entries_.empty()) return std::nullopt;
  Entry* best = &entries_.front();
  for (auto& entry : entries_) {
    entry.current += entry.weight;
    if (entry.current > best->current) best = &entry;
  }
  best->current -= total_;
  return best->locality;
}

}  // namespace culvert::upstream
