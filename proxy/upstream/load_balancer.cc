#include "proxy/upstream/load_balancer.h"

#include <algorithm>
#include <cmath>
#include <random>
#include <string>
#include <utility>

#include "proxy/common/xxhash64.h"

namespace culvert::upstream {

namespace {

uint32_t weightOf(const config::Endpoint& endpoint) { return endpoint.weight == 0 ? 1 : endpoint.weight; }

// The weight round robin and least request balance by: slow start's, else the endpoint's.
double weightOf(const PickInput& input, uint32_t i) {
  return input.weights ? (*input.weights)[i] : weightOf(input.endpoints[i]);
}

bool equalWeights(const PickInput& input) {
  double first = weightOf(input, input.hosts.front());
  return std::all_of(input.hosts.begin(), input.hosts.end(), [&](uint32_t i) { return weightOf(input, i) == first; });
}

}  // namespace

Random defaultRandom() {
  auto engine = std::make_shared<std::mt19937_64>(std::random_device{}());
  return [engine] { return (*engine)(); };
}

uint32_t RoundRobinBalancer::pick(const PickInput& input) {
  if (hostsMayHaveChanged(input, hosts_version_)) {
    equal_weights_ = equalWeights(input);
    due_.clear();
  }
  if (equal_weights_) return input.hosts[next_++ % input.hosts.size()];
  if (input.weights == nullptr && input.hosts_version != 0) return pickEarliestDeadline(input);
  return pickSmooth(input);
}

uint32_t RoundRobinBalancer::pickEarliestDeadline(const PickInput& input) {
  auto later = [](const Due& a, const Due& b) { return a.at != b.at ? a.at > b.at : a.order > b.order; };
  if (due_.empty()) {
    due_.reserve(input.hosts.size());
    queued_ = 0;
    for (uint32_t i : input.hosts) due_.push_back({0.5 / weightOf(input, i), queued_++, i});
    std::make_heap(due_.begin(), due_.end(), later);
  }
  std::pop_heap(due_.begin(), due_.end(), later);
  Due& next = due_.back();
  const uint32_t host = next.host;
  next.at += 1.0 / weightOf(input, host);
  next.order = queued_++;
  std::push_heap(due_.begin(), due_.end(), later);
  return host;
}

uint32_t RoundRobinBalancer::pickSmooth(const PickInput& input) {
  if (current_.size() != input.endpoints.size()) current_.assign(input.endpoints.size(), 0);
  double total = 0;
  uint32_t best = input.hosts.front();
  for (uint32_t i : input.hosts) {
    double w = weightOf(input, i);
    current_[i] += w;
    total += w;
    if (current_[i] > current_[best]) best = i;
  }
  current_[best] -= total;
  return best;
}

int RoundRobinBalancer::pick(const std::vector<config::Endpoint>& endpoints) {
  if (endpoints.empty()) return -1;
  std::vector<uint32_t> all(endpoints.size());
  for (uint32_t i = 0; i < all.size(); ++i) all[i] = i;
  return static_cast<int>(pick(PickInput{endpoints, all}));
}

LeastRequestBalancer::LeastRequestBalancer(config::LeastRequestConfig config, Random random)
    : config_(config), random_(std::move(random)) {}

uint32_t LeastRequestBalancer::pick(const PickInput& input) {
  auto active = [&](uint32_t i) -> uint32_t {
    return input.active_requests && i < input.active_requests->size() ? (*input.active_requests)[i] : 0;
  };
  if (hostsMayHaveChanged(input, hosts_version_)) equal_weights_ = equalWeights(input);
  if (equal_weights_) {
    // Envoy: choice_count draws with replacement; the first of equally loaded ones wins.
    uint32_t best = input.hosts[random_() % input.hosts.size()];
    for (uint32_t c = 1; c < std::max<uint32_t>(config_.choice_count, 1); ++c) {
      uint32_t candidate = input.hosts[random_() % input.hosts.size()];
      if (active(candidate) < active(best)) best = candidate;
    }
    return best;
  }
  if (current_.size() != input.endpoints.size()) current_.assign(input.endpoints.size(), 0);
  double total = 0;
  uint32_t best = input.hosts.front();
  for (uint32_t i : input.hosts) {
    double w = weightOf(input, i);
    if (config_.active_request_bias != 0) {
      w /= std::pow(static_cast<double>(active(i)) + 1, config_.active_request_bias);
    }
    current_[i] += w;
    total += w;
    if (current_[i] > current_[best]) best = i;
  }
  current_[best] -= total;
  return best;
}

uint32_t RandomBalancer::pick(const PickInput& input) { return input.hosts[random_() % input.hosts.size()]; }

RingHashBalancer::RingHashBalancer(config::RingHashConfig config, Random random)
    : config_(config), random_(std::move(random)) {}

std::vector<std::pair<uint32_t, double>> localityNormalizedWeights(const PickInput& input) {
  std::vector<std::pair<uint32_t, double>> out;
  const auto& localities = *input.localities;
  if (input.hosts.empty()) return out;
  const uint32_t priority = input.endpoints[input.hosts.front()].priority;
  uint64_t locality_sum = 0;
  for (const auto& locality : localities) {
    if (locality.priority == priority && locality.hosts > 0) locality_sum += locality.weight;
  }
  if (locality_sum == 0) return out;
  // Per locality: its hosts' weight sum, and where its hosts start in `out` (a counting
  // sort keeps host order inside each locality).
  const size_t count = localities.size();
  std::vector<uint64_t> host_sum(count, 0);
  std::vector<uint32_t> start(count + 1, 0);
  auto weighted = [&](uint32_t l) { return l < count && localities[l].weight > 0; };
  for (uint32_t i : input.hosts) {
    const uint32_t l = input.endpoints[i].locality;
    if (!weighted(l)) continue;
    host_sum[l] += weightOf(input.endpoints[i]);
    ++start[l + 1];
  }
  for (size_t l = 0; l < count; ++l) start[l + 1] += start[l];
  out.resize(start[count]);
  for (uint32_t i : input.hosts) {
    const uint32_t l = input.endpoints[i].locality;
    if (!weighted(l)) continue;
    const double locality_share = static_cast<double>(localities[l].weight) / static_cast<double>(locality_sum);
    out[start[l]++] = {i, weightOf(input.endpoints[i]) * locality_share / static_cast<double>(host_sum[l])};
  }
  return out;
}

void RingHashBalancer::build(const PickInput& input) {
  built_for_ = input.hosts;
  ring_.clear();
  // Each host's normalized weight (the shares sum to 1, or less with locality weighting).
  std::vector<std::pair<uint32_t, double>> normalized;
  if (input.localities) {
    normalized = localityNormalizedWeights(input);
    if (normalized.empty()) return;  // no host has a share: an empty ring
  } else {
    double total = 0;
    for (uint32_t i : input.hosts) total += weightOf(input.endpoints[i]);
    normalized.reserve(input.hosts.size());
    for (uint32_t i : input.hosts) normalized.emplace_back(i, weightOf(input.endpoints[i]) / total);
  }
  double min_normalized = 1.0;
  for (const auto& [i, w] : normalized) min_normalized = std::min(min_normalized, w);
  // Envoy's scale: the lightest endpoint gets a whole number of entries, within max size.
  const double scale = std::min(std::ceil(min_normalized * static_cast<double>(config_.minimum_ring_size)) / min_normalized,
                                static_cast<double>(config_.maximum_ring_size));
  ring_.reserve(static_cast<size_t>(std::ceil(scale)));
  double current = 0;
  double target = 0;
  std::string key;
  for (const auto& [i, w] : normalized) {
    const std::string address = input.endpoints[i].address.toString();
    target += scale * w;
    for (uint64_t k = 0; current < target; ++k, ++current) {
      key.assign(address).append("_").append(std::to_string(k));
      ring_.emplace_back(common::xxHash64(key), i);
    }
  }
  std::sort(ring_.begin(), ring_.end());
}

uint32_t RingHashBalancer::pick(const PickInput& input) {
  if (hostsMayHaveChanged(input, hosts_version_) && input.hosts != built_for_) build(input);
  if (ring_.empty()) return kNoHost;
  uint64_t h = input.hash ? *input.hash : random_();
  auto it = std::lower_bound(ring_.begin(), ring_.end(), h,
                             [](const std::pair<uint64_t, uint32_t>& entry, uint64_t v) { return entry.first < v; });
  if (it == ring_.end()) it = ring_.begin();
  return it->second;
}

MaglevBalancer::MaglevBalancer(uint64_t table_size, Random random) : table_size_(table_size), random_(std::move(random)) {}

namespace {

// x⁻¹ mod the prime p (extended Euclid), 0 < x < p.
uint32_t inverseMod(uint32_t x, uint32_t p) {
  int64_t t = 0, next_t = 1, r = p, next_r = x;
  while (next_r != 0) {
    int64_t q = r / next_r;
    t = std::exchange(next_t, t - q * next_t);
    r = std::exchange(next_r, r - q * next_r);
  }
  return static_cast<uint32_t>(t < 0 ? t + p : t);
}

}  // namespace

void MaglevBalancer::build(const PickInput& input) {
  built_for_ = input.hosts;
  // table_size is a prime ≤ 5000011 < 2^23 (translate checks it): slots, their sums and
  // products of two slots fit in 32, 32 and 46 bits.
  const auto size = static_cast<uint32_t>(table_size_);
  auto wrap = [size](uint32_t slot) { return slot >= size ? slot - size : slot; };
  // a × b mod size for a, b < size: the product is exact in a double and the quotient
  // through the reciprocal is off by at most one, which the two corrections fix.
  const double reciprocal = 1.0 / size;
  auto mulMod = [size, reciprocal](uint64_t a, uint64_t b) {
    uint64_t product = a * b;
    auto q = static_cast<uint64_t>(static_cast<double>(product) * reciprocal);
    auto r = static_cast<int64_t>(product - q * size);
    if (r < 0) r += size;
    if (r >= size) r -= size;
    return static_cast<uint32_t>(r);
  };
  struct Entry {
    uint32_t index;
    uint32_t slot;         // the next slot of its permutation: (offset + skip × next) mod size
    uint32_t skip;
    uint32_t inverse = 0;  // skip⁻¹ mod size, once needed (0: not yet)
    double weight;
    double target;
  };
  double max_weight = 0;
  std::vector<Entry> entries;
  entries.reserve(input.hosts.size());
  auto add = [&](uint32_t i, double w) {  // w: the host's normalized weight
    const std::string address = input.endpoints[i].address.toString();
    max_weight = std::max(max_weight, w);
    entries.push_back({i, static_cast<uint32_t>(common::xxHash64(address, 0) % size),
                       static_cast<uint32_t>(common::xxHash64(address, 1) % (size - 1) + 1), 0, w, w});
  };
  if (input.localities) {
    for (const auto& [i, w] : localityNormalizedWeights(input)) add(i, w);
  } else {
    double total = 0;
    for (uint32_t i : input.hosts) total += weightOf(input.endpoints[i]);
    for (uint32_t i : input.hosts) add(i, weightOf(input.endpoints[i]) / total);
  }
  // Locality weighting left no host with a share: Envoy builds no table and picks none.
  empty_ = entries.empty();
  if (empty_) return;
  // Which slots are taken, one bit each: 8 KiB for 65537 slots, which stays in L1 where
  // the table (256 KiB) does not. Probing finds an endpoint's next free slot in about
  // size / free probes, ~size × ln(size) in all; each power-of-two band of the free count
  // costs size × ln 2, so the last sqrt(size) free slots would take half of them.
  std::vector<uint64_t> taken((size + 63) / 64, 0);
  auto isFree = [&](uint32_t slot) { return ((taken[slot >> 6] >> (slot & 63)) & 1) == 0; };
  auto probe = [&](const Entry& e) {
    uint32_t slot = e.slot;
    while (!isFree(slot)) slot = wrap(slot + e.skip);
    taken[slot >> 6] |= uint64_t{1} << (slot & 63);
    return slot;
  };
  // Among the last free slots, an endpoint's next one is the free slot f nearest along its
  // permutation, the least (f − slot) × skip⁻¹ mod size: one multiplication per free slot
  // in place of size / free probes (the same slot, so the same table).
  const uint32_t endgame = static_cast<uint32_t>(std::sqrt(size));
  std::vector<uint32_t> free_slots;
  auto nearestFree = [&](Entry& e) {
    if (free_slots.empty()) {
      for (uint32_t f = 0; f < size; ++f) {
        if (isFree(f)) free_slots.push_back(f);
      }
    }
    if (e.inverse == 0) e.inverse = inverseMod(e.skip, size);
    size_t best = 0;
    uint32_t best_distance = UINT32_MAX;
    for (size_t k = 0; k < free_slots.size(); ++k) {
      uint32_t distance = mulMod(wrap(free_slots[k] + size - e.slot), e.inverse);
      if (distance < best_distance) best_distance = distance, best = k;
    }
    uint32_t slot = free_slots[best];
    free_slots[best] = free_slots.back();
    free_slots.pop_back();
    return slot;
  };
  table_ = std::make_unique_for_overwrite<uint32_t[]>(size);  // every slot is written below
  uint32_t filled = 0;
  // Envoy's weighted fill: an endpoint of the largest weight takes a slot every round, one
  // of a third of it every third round.
  for (uint64_t round = 1; filled < size; ++round) {
    for (auto& e : entries) {
      if (filled == size) break;
      if (static_cast<double>(round) * e.weight < e.target) continue;
      e.target += max_weight;
      const uint32_t slot = size - filled > endgame ? probe(e) : nearestFree(e);
      table_[slot] = e.index;
      e.slot = wrap(slot + e.skip);
      ++filled;
    }
  }
}

uint32_t MaglevBalancer::pick(const PickInput& input) {
  if (hostsMayHaveChanged(input, hosts_version_) && input.hosts != built_for_) build(input);
  if (empty_) return kNoHost;
  uint64_t h = input.hash ? *input.hash : random_();
  return table_[h % table_size_];
}

std::unique_ptr<LoadBalancer> makeLoadBalancer(const config::Cluster& cluster, Random random) {
  switch (cluster.lb_policy) {
    case config::LbPolicy::RoundRobin:
      return std::make_unique<RoundRobinBalancer>();
    case config::LbPolicy::LeastRequest:
      return std::make_unique<LeastRequestBalancer>(cluster.least_request, std::move(random));
    case config::LbPolicy::Random:
      return std::make_unique<RandomBalancer>(std::move(random));
    case config::LbPolicy::RingHash:
      return std::make_unique<RingHashBalancer>(cluster.ring_hash, std::move(random));
    case config::LbPolicy::Maglev:
      return std::make_unique<MaglevBalancer>(cluster.maglev_table_size, std::move(random));
  }
  return std::make_unique<RoundRobinBalancer>();
}

}  // namespace culvert::upstream
