#include "proxy/upstream/load_balancer.h"

#include <algorithm>
#include <cmath>
#include <random>
#include <string>

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
  if (hostsMayHaveChanged(input, hosts_version_)) equal_weights_ = equalWeights(input);
  if (equal_weights_) return input.hosts[next_++ % input.hosts.size()];
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

void RingHashBalancer::build(const PickInput& input) {
  built_for_ = input.hosts;
  ring_.clear();
  double total = 0;
  for (uint32_t i : input.hosts) total += weightOf(input.endpoints[i]);
  double min_normalized = 1.0;
  for (uint32_t i : input.hosts) min_normalized = std::min(min_normalized, weightOf(input.endpoints[i]) / total);
  // Envoy's scale: the lightest endpoint gets a whole number of entries, within max size.
  const double scale = std::min(std::ceil(min_normalized * static_cast<double>(config_.minimum_ring_size)) / min_normalized,
                                static_cast<double>(config_.maximum_ring_size));
  ring_.reserve(static_cast<size_t>(std::ceil(scale)));
  double current = 0;
  double target = 0;
  std::string key;
  for (uint32_t i : input.hosts) {
    const std::string address = input.endpoints[i].address.toString();
    target += scale * (weightOf(input.endpoints[i]) / total);
    for (uint64_t k = 0; current < target; ++k, ++current) {
      key.assign(address).append("_").append(std::to_string(k));
      ring_.emplace_back(common::xxHash64(key), i);
    }
  }
  std::sort(ring_.begin(), ring_.end());
}

uint32_t RingHashBalancer::pick(const PickInput& input) {
  if (hostsMayHaveChanged(input, hosts_version_) && input.hosts != built_for_) build(input);
  uint64_t h = input.hash ? *input.hash : random_();
  auto it = std::lower_bound(ring_.begin(), ring_.end(), h,
                             [](const std::pair<uint64_t, uint32_t>& entry, uint64_t v) { return entry.first < v; });
  if (it == ring_.end()) it = ring_.begin();
  return it->second;
}

MaglevBalancer::MaglevBalancer(uint64_t table_size, Random random) : table_size_(table_size), random_(std::move(random)) {}

void MaglevBalancer::build(const PickInput& input) {
  built_for_ = input.hosts;
  struct Entry {
    uint32_t index;
    uint64_t offset;
    uint64_t skip;
    double weight;
    double target;
    uint64_t slot = 0;  // (offset + skip × next) mod table_size, advanced by addition
  };
  double total = 0;
  for (uint32_t i : input.hosts) total += weightOf(input.endpoints[i]);
  double max_weight = 0;
  std::vector<Entry> entries;
  entries.reserve(input.hosts.size());
  for (uint32_t i : input.hosts) {
    const std::string address = input.endpoints[i].address.toString();
    double w = weightOf(input.endpoints[i]) / total;
    max_weight = std::max(max_weight, w);
    uint64_t offset = common::xxHash64(address, 0) % table_size_;
    entries.push_back({i, offset, common::xxHash64(address, 1) % (table_size_ - 1) + 1, w, w, offset});
  }
  // The next slot of an endpoint's permutation: skip < table_size, so one subtraction
  // replaces the 64-bit division that dominated the fill (a 10k-endpoint table: ~7 ms
  // on the worker's loop at the first pick after each update).
  auto advance = [this](Entry& e) {
    e.slot += e.skip;
    if (e.slot >= table_size_) e.slot -= table_size_;
  };
  constexpr uint32_t kEmpty = UINT32_MAX;
  table_.assign(table_size_, kEmpty);
  uint64_t filled = 0;
  // Envoy's weighted fill: an endpoint of the largest weight takes a slot every round, one
  // of a third of it every third round.
  for (uint64_t round = 1; filled < table_size_; ++round) {
    for (auto& e : entries) {
      if (filled == table_size_) break;
      if (static_cast<double>(round) * e.weight < e.target) continue;
      e.target += max_weight;
      while (table_[e.slot] != kEmpty) advance(e);
      table_[e.slot] = e.index;
      advance(e);
      ++filled;
    }
  }
}

uint32_t MaglevBalancer::pick(const PickInput& input) {
  if (hostsMayHaveChanged(input, hosts_version_) && input.hosts != built_for_) build(input);
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
