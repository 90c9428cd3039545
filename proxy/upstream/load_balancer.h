#pragma once

#include <cstddef>
#include <cstdint>
#include <functional>
#include <memory>
#include <optional>
#include <utility>
#include <vector>

#include "proxy/config/snapshot.h"

namespace culvert::upstream {

// A source of uniformly distributed 64-bit values; injected so tests are deterministic.
using Random = std::function<uint64_t()>;
Random defaultRandom();

// What one pick chooses among. `hosts` are indices into `endpoints`: one priority's
// healthy endpoints, or all of that priority's endpoints in panic mode. Never empty.
struct PickInput {
  const std::vector<config::Endpoint>& endpoints;
  const std::vector<uint32_t>& hosts;
  // Requests in flight per endpoint index (LEAST_REQUEST); may be null.
  const std::vector<uint32_t>* active_requests = nullptr;
  // The request's hash from the route's hash_policy (RING_HASH, MAGLEV); without one a
  // random value is used, as Envoy does.
  std::optional<uint64_t> hash{};
  // Changes whenever `hosts` may have changed (the cluster manager bumps it when it
  // rebuilds its host sets), so balancers redo per-host-set work only then, never per
  // pick on a 10,000-endpoint cluster. 0: unknown, the balancer checks every pick.
  uint64_t hosts_version = 0;
  // Weights by endpoint index in place of the endpoints' own (slow start); null: theirs.
  // ROUND_ROBIN and LEAST_REQUEST use them; the hashing and random policies do not.
  const std::vector<double>* weights = nullptr;
  // RING_HASH and MAGLEV with locality weighting: the cluster's localities (indexed by
  // Endpoint::locality). A host's share of the ring or table becomes its locality's share
  // of the priority's locality weights × its share of its locality's host weights among
  // `hosts` (Envoy's thread-aware balancers); hosts of a locality without weight get none.
  // Null: the endpoints' weights alone. Must stay the same for a given hosts_version.
  const std::vector<config::Locality>* localities = nullptr;
};

// Whether `input` may hold another host set than the last pick's: false only when both
// carry the same known version.
inline bool hostsMayHaveChanged(const PickInput& input, uint64_t& last_version) {
  bool same = input.hosts_version != 0 && input.hosts_version == last_version;
  last_version = input.hosts_version;
  return !same;
}

// One (worker, cluster, priority)'s balancing state. pick() returns an element of
// input.hosts. Pure apart from the injected Random.
class LoadBalancer {
public:
  // What RING_HASH and MAGLEV return when locality weighting leaves no host with a share
  // (no weighted locality has a host in input.hosts): Envoy's empty ring, no host.
  static constexpr uint32_t kNoHost = UINT32_MAX;
  virtual ~LoadBalancer() = default;
  virtual uint32_t pick(const PickInput& input) = 0;
};

// Envoy's normalizeLocalityWeights: input.hosts with their share of the ring or table,
// grouped by locality in index order (Envoy orders localities by name, the node's own
// first), in host order inside each. A locality's share is its weight over the
// sum of the weights of the priority's localities that have hosts (all of them, EDS-unhealthy
// ones included: raw weights, not availability-adjusted); inside it, a host's share is its
// weight over its locality's hosts among input.hosts. Hosts of a locality without weight are
// left out, so the shares sum to less than 1 when a weighted locality has no host here.
// Empty when no locality has a weight. Requires input.localities.
std::vector<std::pair<uint32_t, double>> localityNormalizedWeights(const PickInput& input);

// Equal weights (the usual case): plain rotation, O(1) a pick. Unequal weights of a
// known host set (hosts_version): earliest deadline first, as Envoy's EdfScheduler, O(log
// hosts) a pick — each host is due every 1/weight, first at half that, so light hosts
// fall between heavy ones. Weights that change per pick (slow start) or an unknown host
// set: smooth weighted round robin (nginx's algorithm, O(hosts) a pick). Both give each
// host its weight's share of any long run of picks.
class RoundRobinBalancer : public LoadBalancer {
public:
  uint32_t pick(const PickInput& input) override;
  // All of `endpoints`; -1 when there are none.
  int pick(const std::vector<config::Endpoint>& endpoints);

private:
  struct Due {
    double at;       // the pick "time" it is due
    uint64_t order;  // ties go to the one queued first
    uint32_t host;
  };
  uint32_t pickEarliestDeadline(const PickInput& input);
  uint32_t pickSmooth(const PickInput& input);

  uint64_t hosts_version_ = 0;
  bool equal_weights_ = true;
  size_t next_ = 0;              // equal weights: the next position in hosts
  std::vector<Due> due_;         // unequal, fixed weights: a min-heap on (at, order)
  uint64_t queued_ = 0;
  std::vector<double> current_;  // smooth: by endpoint index
};

// Envoy's LEAST_REQUEST. Equal weights: the best of choice_count random endpoints (power
// of two choices). Unequal weights: each endpoint's weight becomes
// weight / (active + 1)^active_request_bias at pick time, and a smooth weighted round
// robin over those weights picks (Envoy uses an EDF scheduler; the long-run shares are
// the same).
class LeastRequestBalancer : public LoadBalancer {
public:
  LeastRequestBalancer(config::LeastRequestConfig config, Random random);
  uint32_t pick(const PickInput& input) override;

private:
  config::LeastRequestConfig config_;
  Random random_;
  uint64_t hosts_version_ = 0;
  bool equal_weights_ = true;
  std::vector<double> current_;  // by endpoint index
};

// Envoy's RANDOM: uniform over the hosts; weights are not used (as in Envoy).
class RandomBalancer : public LoadBalancer {
public:
  explicit RandomBalancer(Random random) : random_(std::move(random)) {}
  uint32_t pick(const PickInput& input) override;

private:
  Random random_;
};

// Envoy's RING_HASH (Ketama): each endpoint gets ring entries in proportion to its weight,
// entry k of endpoint "ip:port" at xxHash64("ip:port_k"); a request goes to the first
// entry at or after its hash. The ring is rebuilt only when the host set changes.
class RingHashBalancer : public LoadBalancer {
public:
  RingHashBalancer(config::RingHashConfig config, Random random);
  uint32_t pick(const PickInput& input) override;
  size_t ringSize() const { return ring_.size(); }

private:
  void build(const PickInput& input);

  config::RingHashConfig config_;
  Random random_;
  std::vector<uint32_t> built_for_;  // the hosts the ring was built from
  uint64_t hosts_version_ = 0;
  std::vector<std::pair<uint64_t, uint32_t>> ring_;  // (hash, endpoint index), sorted
};

// Envoy's MAGLEV: a lookup table of table_size (prime) slots filled by each endpoint's
// permutation (offset xxHash64(addr, 0), skip xxHash64(addr, 1)), weighted as Envoy does;
// a request goes to table[hash % table_size]. The table is Envoy's slot for slot; only the
// way its free slots are found differs (a bitmap, and modular inverses at the end).
class MaglevBalancer : public LoadBalancer {
public:
  MaglevBalancer(uint64_t table_size, Random random);
  uint32_t pick(const PickInput& input) override;

private:
  void build(const PickInput& input);

  uint64_t table_size_;
  Random random_;
  std::vector<uint32_t> built_for_;
  uint64_t hosts_version_ = 0;
  std::unique_ptr<uint32_t[]> table_;  // endpoint index per slot, table_size_ of them
  bool empty_ = false;                 // locality weighting left no host: no table
};

std::unique_ptr<LoadBalancer> makeLoadBalancer(const config::Cluster& cluster, Random random);

}  // namespace culvert::upstream
