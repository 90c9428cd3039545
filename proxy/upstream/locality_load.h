#pragma once

#include <cstdint>
#include <optional>
#include <vector>

namespace culvert::upstream {

// One locality of a priority level, as locality-weighted balancing sees it.
struct LocalityHealth {
  uint32_t weight = 0;   // load_balancing_weight; 0 when unset
  uint32_t hosts = 0;    // all of its hosts, EDS-unhealthy ones included
  uint32_t healthy = 0;  // those a pick may use (not EDS-unhealthy, failing checks or ejected)
};

// Envoy's effective locality weight: weight × min(1, overprovisioning% × healthy / hosts).
// A locality without a weight, or without hosts, gets 0. Pure.
double effectiveLocalityWeight(const LocalityHealth& locality, uint32_t overprovisioning_percent = 140);

// Picks among one priority level's localities in proportion to their effective weights:
// smooth weighted round robin (Envoy uses an EDF schedule; the shares and the interleaving
// are the same), O(localities with weight) a pick. Rebuilt whenever health changes.
class LocalityScheduler {
public:
  LocalityScheduler() = default;
  // `localities` are indexed by the caller's locality numbers; `members` says which of
  // them belong to this level.
  LocalityScheduler(const std::vector<LocalityHealth>& localities, const std::vector<uint32_t>& members,
                    uint32_t overprovisioning_percent = 140);

  // The locality for the next request; empty when no locality has an effective weight
  // (Envoy then balances over all the level's healthy hosts).
  std::optional<uint32_t> pick();

private:
  struct Entry {
    uint32_t locality;
    double weight;
    double current = 0;
  };
  std::vector<Entry> entries_;
  double total_ = 0;
};

}  // namespace culvert::upstream
