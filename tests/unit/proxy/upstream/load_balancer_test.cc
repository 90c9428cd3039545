#include "proxy/upstream/load_balancer.h"

#include <gtest/gtest.h>

#include <algorithm>
#include <map>
#include <random>
#include <string>
#include <vector>

#include "proxy/common/xxhash64.h"


namespace culvert::upstream {
namespace {

std::vector<config::Endpoint> endpoints(std::vector<uint32_t> weights) {
  std::vector<config::Endpoint> out;
  for (size_t i = 0; i < weights.size(); ++i) {
    out.push_back({*common::SocketAddress::parse("10.0.0." + std::to_string(i + 1), 80), weights[i]});
  }
  return out;
}

TEST(RoundRobinTest, EqualWeightsRotate) {
  RoundRobinBalancer lb;
  auto eps = endpoints({1, 1, 1});
  std::vector<int> picks;
  for (int i = 0; i < 6; ++i) picks.push_back(lb.pick(eps));
  EXPECT_EQ(picks, (std::vector<int>{0, 1, 2, 0, 1, 2}));
}

TEST(RoundRobinTest, WeightsAreHonouredAndInterleaved) {
  RoundRobinBalancer lb;
  auto eps = endpoints({5, 1, 1});
  std::map<int, int> counts;
  std::vector<int> window;
  for (int i = 0; i < 7; ++i) {
    int p = lb.pick(eps);
    counts[p]++;
    window.push_back(p);
  }
  EXPECT_EQ(counts[0], 5);
  EXPECT_EQ(counts[1], 1);
  EXPECT_EQ(counts[2], 1);
  // Smooth: the light endpoints are spread through the window, not bunched at its end.
  EXPECT_EQ(window, (std::vector<int>{0, 0, 1, 0, 2, 0, 0}));
}

TEST(RoundRobinTest, EmptyHasNoPick) {
  RoundRobinBalancer lb;
  EXPECT_EQ(lb.pick({}), -1);
}

}  // namespace
}  // namespace culvert::upstream

namespace culvert::upstream {
namespace {

std::vector<config::Endpoint> many(size_t n, uint32_t weight = 1) {
  std::vector<config::Endpoint> out;
  for (size_t i = 0; i < n; ++i) {
    out.push_back({*common::SocketAddress::parse("10.1." + std::to_string(i / 250) + "." + std::to_string(i % 250 + 1), 8080),
                   weight});
  }
  return out;
}

std::vector<uint32_t> allOf(const std::vector<config::Endpoint>& eps) {
  std::vector<uint32_t> hosts(eps.size());
  for (uint32_t i = 0; i < hosts.size(); ++i) hosts[i] = i;
  return hosts;
}

// A seeded generator: deterministic, still uniform.
Random seeded(uint64_t seed) {
  auto engine = std::make_shared<std::mt19937_64>(seed);
  return [engine] { return (*engine)(); };
}

TEST(RoundRobinTest, PicksOnlyFromTheGivenHosts) {
  RoundRobinBalancer lb;
  auto eps = endpoints({1, 1, 1, 1});
  std::vector<uint32_t> hosts{1, 3};
  std::map<uint32_t, int> counts;
  for (int i = 0; i < 10; ++i) counts[lb.pick(PickInput{eps, hosts})]++;
  EXPECT_EQ(counts.size(), 2u);
  EXPECT_EQ(counts[1], 5);
  EXPECT_EQ(counts[3], 5);
}

TEST(RoundRobinTest, ANewHostsVersionRedoesTheWeightCheck) {
  RoundRobinBalancer lb;
  auto equal = endpoints({1, 1});
  auto weighted = endpoints({3, 1});
  std::vector<uint32_t> hosts{0, 1};
  std::map<uint32_t, int> counts;
  for (int i = 0; i < 4; ++i) counts[lb.pick(PickInput{equal, hosts, nullptr, {}, 7})]++;
  EXPECT_EQ(counts[0], 2);
  EXPECT_EQ(counts[1], 2);
  counts.clear();
  for (int i = 0; i < 8; ++i) counts[lb.pick(PickInput{weighted, hosts, nullptr, {}, 9})]++;
  EXPECT_EQ(counts[0], 6);
  EXPECT_EQ(counts[1], 2);
}

// A known host set with unequal weights: earliest deadline first (Envoy's EDF), each
// host due every 1/weight, first at half of it.
TEST(RoundRobinTest, UnequalWeightsOfAKnownHostSetGoEarliestDeadlineFirst) {
  RoundRobinBalancer lb;
  auto eps = endpoints({5, 1, 1});
  std::vector<uint32_t> hosts{0, 1, 2};
  std::vector<uint32_t> window;
  for (int i = 0; i < 7; ++i) window.push_back(lb.pick(PickInput{eps, hosts, nullptr, {}, 3}));
  // Host 0 due at 0.1, 0.3, 0.5, ...; hosts 1 and 2 at 0.5: ties go to the one queued
  // first, so the light hosts fall inside the run of heavy picks, not at its end.
  EXPECT_EQ(window, (std::vector<uint32_t>{0, 0, 1, 2, 0, 0, 0}));
}

TEST(RoundRobinTest, EarliestDeadlineFirstGivesEachHostItsWeightInEveryWindow) {
  RoundRobinBalancer lb;
  std::vector<uint32_t> weights;
  auto eps = many(10000);
  for (uint32_t i = 0; i < eps.size(); ++i) eps[i].weight = weights.emplace_back(i % 4 + 1);
  auto hosts = allOf(eps);
  uint64_t total = 0;
  for (auto w : weights) total += w;
  for (int window = 0; window < 3; ++window) {
    std::vector<uint32_t> counts(eps.size(), 0);
    for (uint64_t i = 0; i < total; ++i) ++counts[lb.pick(PickInput{eps, hosts, nullptr, {}, 11})];
    size_t wrong = 0;
    for (size_t i = 0; i < eps.size(); ++i) wrong += counts[i] != weights[i];
    EXPECT_EQ(wrong, 0u) << "window " << window;
  }
}

// Slow start hands weights per pick: the smooth path, which reads them every pick.
TEST(RoundRobinTest, PerPickWeightsUseTheSmoothPath) {
  RoundRobinBalancer lb;
  auto eps = endpoints({1, 1});
  std::vector<uint32_t> hosts{0, 1};
  std::vector<double> weights{3, 1};
  std::map<uint32_t, int> counts;
  for (int i = 0; i < 8; ++i) counts[lb.pick(PickInput{eps, hosts, nullptr, {}, 5, &weights})]++;
  EXPECT_EQ(counts[0], 6);
  weights = {1, 3};  // the window moved on: same hosts version, new weights
  counts.clear();
  for (int i = 0; i < 8; ++i) counts[lb.pick(PickInput{eps, hosts, nullptr, {}, 5, &weights})]++;
  EXPECT_EQ(counts[1], 6);
}

TEST(LeastRequestTest, ANewHostsVersionRedoesTheWeightCheck) {
  LeastRequestBalancer lb(config::LeastRequestConfig{}, seeded(3));
  auto weighted = endpoints({3, 1});
  auto equal = endpoints({1, 1});
  std::vector<uint32_t> hosts{0, 1};
  std::vector<uint32_t> active{0, 0};
  std::map<uint32_t, int> counts;
  // Unequal weights: weighted round robin over weight / (active + 1)^bias, exact shares.
  for (int i = 0; i < 8; ++i) counts[lb.pick(PickInput{weighted, hosts, &active, {}, 1})]++;
  EXPECT_EQ(counts[0], 6);
  EXPECT_EQ(counts[1], 2);
  // Equal weights now: power of two choices, the less loaded of two draws wins.
  active = {5, 0};
  counts.clear();
  for (int i = 0; i < 200; ++i) counts[lb.pick(PickInput{equal, hosts, &active, {}, 3})]++;
  EXPECT_GT(counts[1], counts[0]);
}

TEST(RandomTest, UniformWithinTolerance) {
  RandomBalancer lb(seeded(1));
  auto eps = many(4, 1);
  eps[0].weight = 10;  // RANDOM ignores weights, as Envoy's does
  auto hosts = allOf(eps);
  std::map<uint32_t, int> counts;
  constexpr int kPicks = 40000;
  for (int i = 0; i < kPicks; ++i) counts[lb.pick(PickInput{eps, hosts})]++;
  for (uint32_t h = 0; h < 4; ++h) EXPECT_NEAR(counts[h], kPicks / 4, kPicks / 4 * 0.05) << h;
}

TEST(LeastRequestTest, PowerOfTwoChoicesAvoidsTheBusyEndpoint) {
  LeastRequestBalancer lb({2, 1.0}, seeded(2));
  auto eps = many(4);
  auto hosts = allOf(eps);
  std::vector<uint32_t> active{50, 0, 0, 0};
  std::map<uint32_t, int> counts;
  constexpr int kPicks = 40000;
  for (int i = 0; i < kPicks; ++i) counts[lb.pick(PickInput{eps, hosts, &active})]++;
  // The busy endpoint wins only when both choices fall on it: 1/16 of picks.
  EXPECT_NEAR(counts[0], kPicks / 16.0, kPicks / 16.0 * 0.1);
  for (uint32_t h = 1; h < 4; ++h) EXPECT_NEAR(counts[h], kPicks * 5 / 16.0, kPicks * 5 / 16.0 * 0.05);
}

TEST(LeastRequestTest, UnequalWeightsDividedByActiveRequests) {
  LeastRequestBalancer lb({2, 1.0}, seeded(3));
  auto eps = endpoints({2, 1});
  auto hosts = allOf(eps);
  // Idle: 2:1 by weight.
  std::vector<uint32_t> idle{0, 0};
  std::map<uint32_t, int> counts;
  for (int i = 0; i < 3000; ++i) counts[lb.pick(PickInput{eps, hosts, &idle})]++;
  EXPECT_EQ(counts[0], 2000);
  EXPECT_EQ(counts[1], 1000);
  // Endpoint 0 has 3 in flight: 2/(3+1) = 0.5 against 1/(0+1) = 1, so 1:2.
  LeastRequestBalancer busy_lb({2, 1.0}, seeded(3));
  std::vector<uint32_t> busy{3, 0};
  counts.clear();
  for (int i = 0; i < 3000; ++i) counts[busy_lb.pick(PickInput{eps, hosts, &busy})]++;
  EXPECT_EQ(counts[0], 1000);
  EXPECT_EQ(counts[1], 2000);
  // active_request_bias 0: plain weighted round robin.
  LeastRequestBalancer unbiased({2, 0.0}, seeded(3));
  counts.clear();
  for (int i = 0; i < 3000; ++i) counts[unbiased.pick(PickInput{eps, hosts, &busy})]++;
  EXPECT_EQ(counts[0], 2000);
}

// Share of `keys` that map to a different endpoint once `removed` leaves; only keys that
// were on `removed` should move.
template <typename Balancer>
void expectMinimalDisruption(Balancer& before_lb, Balancer& after_lb, size_t n, uint32_t removed, double tolerance,
                             double max_moved_share) {
  auto eps = many(n);
  auto hosts = allOf(eps);
  std::vector<uint32_t> fewer;
  for (uint32_t h : hosts) {
    if (h != removed) fewer.push_back(h);
  }
  constexpr int kKeys = 20000;
  int moved_elsewhere = 0;
  int on_removed = 0;
  std::map<uint32_t, int> counts;
  for (int k = 0; k < kKeys; ++k) {
    uint64_t hash = common::xxHash64("user-" + std::to_string(k));
    uint32_t a = before_lb.pick(PickInput{eps, hosts, nullptr, hash});
    uint32_t b = after_lb.pick(PickInput{eps, fewer, nullptr, hash});
    counts[a]++;
    EXPECT_NE(b, removed);
    if (a == removed) {
      ++on_removed;
    } else if (a != b) {
      ++moved_elsewhere;
    }
  }
  // Distribution: each endpoint near 1/n of the keys.
  for (uint32_t h = 0; h < n; ++h) EXPECT_NEAR(counts[h], kKeys / static_cast<double>(n), kKeys / static_cast<double>(n) * tolerance) << h;
  // Minimal disruption: keys that were not on the removed endpoint mostly stay (a modulo
  // hash would move (n-1)/n of them).
  EXPECT_LE(moved_elsewhere, kKeys * max_moved_share) << "keys moved between surviving endpoints";
  EXPECT_GT(on_removed, 0);
}

TEST(RingHashTest, DistributionAndMinimalDisruption) {
  RingHashBalancer before({1024, 8 * 1024 * 1024}, seeded(4));
  RingHashBalancer after({1024, 8 * 1024 * 1024}, seeded(4));
  // Envoy's ring keeps about minimum_ring_size entries in all, so the 7 survivors gain
  // entries (128 → 147 each) and take some keys from each other: about 9 % here.
  expectMinimalDisruption(before, after, 8, 3, 0.25, 0.12);
}

TEST(RingHashTest, SizeFollowsEnvoysScaling) {
  RingHashBalancer lb({1024, 8 * 1024 * 1024}, seeded(5));
  auto eps = many(3);
  eps[0].weight = 2;
  auto hosts = allOf(eps);
  lb.pick(PickInput{eps, hosts, nullptr, 1});
  // min normalized weight 1/4: scale = ceil(0.25 × 1024) / 0.25 = 1024 entries.
  EXPECT_EQ(lb.ringSize(), 1024u);
  RingHashBalancer capped({1024, 100}, seeded(5));
  capped.pick(PickInput{eps, hosts, nullptr, 1});
  EXPECT_EQ(capped.ringSize(), 100u);
}

TEST(RingHashTest, WeightsShiftTheShare) {
  RingHashBalancer lb({4096, 8 * 1024 * 1024}, seeded(6));
  auto eps = many(2);
  eps[0].weight = 3;
  auto hosts = allOf(eps);
  std::map<uint32_t, int> counts;
  for (int k = 0; k < 20000; ++k) counts[lb.pick(PickInput{eps, hosts, nullptr, common::xxHash64(std::to_string(k))})]++;
  EXPECT_NEAR(counts[0], 15000, 1500);
}

TEST(RingHashTest, SameHashSameEndpoint) {
  RingHashBalancer lb({1024, 8 * 1024 * 1024}, seeded(7));
  auto eps = many(5);
  auto hosts = allOf(eps);
  uint32_t first = lb.pick(PickInput{eps, hosts, nullptr, 42});
  for (int i = 0; i < 10; ++i) EXPECT_EQ(lb.pick(PickInput{eps, hosts, nullptr, 42}), first);
}

TEST(MaglevTest, DistributionAndMinimalDisruption) {
  MaglevBalancer before(65537, seeded(8));
  MaglevBalancer after(65537, seeded(8));
  expectMinimalDisruption(before, after, 8, 5, 0.1, 0.02);
}

TEST(MaglevTest, WeightedTableShares) {
  MaglevBalancer lb(65537, seeded(9));
  auto eps = many(3);
  eps[2].weight = 2;
  auto hosts = allOf(eps);
  std::map<uint32_t, int> counts;
  for (uint64_t slot = 0; slot < 65537; ++slot) counts[lb.pick(PickInput{eps, hosts, nullptr, slot})]++;
  // Table slots by weight 1:1:2, within one slot per round of Envoy's fill.
  EXPECT_NEAR(counts[0], 65537 / 4.0, 2);
  EXPECT_NEAR(counts[1], 65537 / 4.0, 2);
  EXPECT_NEAR(counts[2], 65537 / 2.0, 2);
}

// Envoy's MaglevTable fill (maglev_lb.cc) transcribed literally: a modulo per probe and
// the table itself as the occupancy test. The balancer's faster fill must match it slot
// for slot, so a culvert table is the one an Envoy with the same hosts builds.
std::vector<uint32_t> envoyMaglevFill(const std::vector<config::Endpoint>& eps,
                                      const std::vector<std::pair<uint32_t, double>>& normalized, uint64_t table_size) {
  struct Entry {
    uint32_t index;
    uint64_t offset, skip;
    double weight, target;
    uint64_t next = 0;
  };
  double max_weight = 0;
  std::vector<Entry> entries;
  for (const auto& [i, w] : normalized) {
    std::string address = eps[i].address.toString();
    max_weight = std::max(max_weight, w);
    entries.push_back({i, common::xxHash64(address, 0) % table_size, common::xxHash64(address, 1) % (table_size - 1) + 1,
                       w, w});
  }
  std::vector<int64_t> table(table_size, -1);
  uint64_t filled = 0;
  for (uint64_t iteration = 1; filled < table_size; ++iteration) {
    for (size_t i = 0; i < entries.size() && filled < table_size; ++i) {
      Entry& e = entries[i];
      if (iteration * e.weight < e.target) continue;
      e.target += max_weight;
      uint64_t c = (e.offset + e.skip * e.next) % table_size;
      while (table[c] >= 0) c = (e.offset + e.skip * ++e.next) % table_size;
      table[c] = e.index;
      ++e.next;
      ++filled;
    }
  }
  return {table.begin(), table.end()};
}

// Envoy's normalizeHostWeights without localities: weight / sum of the hosts' weights.
std::vector<uint32_t> envoyMaglevTable(const std::vector<config::Endpoint>& eps, const std::vector<uint32_t>& hosts,
                                       uint64_t table_size) {
  double total = 0;
  for (uint32_t i : hosts) total += eps[i].weight == 0 ? 1 : eps[i].weight;
  std::vector<std::pair<uint32_t, double>> normalized;
  for (uint32_t i : hosts) normalized.emplace_back(i, (eps[i].weight == 0 ? 1 : eps[i].weight) / total);
  return envoyMaglevFill(eps, normalized, table_size);
}

std::vector<uint32_t> tableOf(MaglevBalancer& lb, const std::vector<config::Endpoint>& eps,
                              const std::vector<uint32_t>& hosts, uint64_t table_size) {
  std::vector<uint32_t> out;
  for (uint64_t slot = 0; slot < table_size; ++slot) out.push_back(lb.pick(PickInput{eps, hosts, nullptr, slot}));
  return out;
}

TEST(MaglevTest, TableIsEnvoysSlotForSlot) {
  // Mixed weights, and a host subset (every third endpoint missing) as a health change gives.
  auto eps = many(1000);
  for (size_t i = 0; i < eps.size(); ++i) eps[i].weight = static_cast<uint32_t>(i % 7);  // 0 counts as 1
  std::vector<uint32_t> hosts;
  for (uint32_t i = 0; i < eps.size(); ++i) {
    if (i % 3 != 0) hosts.push_back(i);
  }
  for (uint64_t size : {uint64_t{65537}, uint64_t{5003}, uint64_t{1009}}) {
    MaglevBalancer lb(size, seeded(10));
    EXPECT_EQ(tableOf(lb, eps, hosts, size), envoyMaglevTable(eps, hosts, size)) << size;
  }
  // More hosts than slots: the fill stops when the table is full.
  MaglevBalancer small(251, seeded(10));
  EXPECT_EQ(tableOf(small, eps, hosts, 251), envoyMaglevTable(eps, hosts, 251));
}

TEST(MaglevTest, TenThousandHostsShareAndDisruption) {
  constexpr uint64_t kSize = 65537;
  // 3,192 hosts of weight 3 and 6,808 of weight 1: total weight 16,384, so normalized
  // weights are exact binary fractions. (With other totals, Envoy's fill sums each host's
  // target in floating point and a host can sit out a round when the sum overshoots
  // round × weight by an ulp; a 1,000 × 3 + 9,000 × 1 mix gives the heavy hosts 10%
  // less than their share. TableIsEnvoysSlotForSlot pins that behaviour to Envoy's.)
  auto eps = many(10000);
  auto heavy = [](size_t i) { return i % 25 < 8 && i < 9975; };  // 8 of every 25: 3,192
  for (size_t i = 0; i < eps.size(); ++i) eps[i].weight = heavy(i) ? 3 : 1;
  auto hosts = allOf(eps);
  MaglevBalancer lb(kSize, seeded(11));
  auto before = tableOf(lb, eps, hosts, kSize);
  std::vector<int> slots(eps.size(), 0);
  for (uint32_t i : before) slots[i]++;
  // 4 slots per unit of weight; each host within one slot of its share (the last
  // round stops where the table fills).
  const double per_weight = kSize / 16384.0;
  for (size_t i = 0; i < eps.size(); ++i) EXPECT_NEAR(slots[i], per_weight * eps[i].weight, 1.0) << i;
  // Removing one host moves its slots and some others: with ~6.5 slots per host (Envoy's
  // default table for 10,000 hosts) a few percent of the table; a modulo hash would move
  // nearly all of it.
  const uint32_t removed = 4242;
  std::vector<uint32_t> fewer;
  for (uint32_t h : hosts) {
    if (h != removed) fewer.push_back(h);
  }
  auto after = tableOf(lb, eps, fewer, kSize);
  int moved = 0;
  for (uint64_t slot = 0; slot < kSize; ++slot) {
    EXPECT_NE(after[slot], removed);
    if (before[slot] != removed && before[slot] != after[slot]) ++moved;
  }
  EXPECT_LE(moved, kSize * 0.1) << "slots moved between surviving hosts";
}

TEST(LoadBalancerFactoryTest, PolicyPicksTheBalancer) {
  config::Cluster c;
  c.lb_policy = config::LbPolicy::RingHash;
  EXPECT_NE(dynamic_cast<RingHashBalancer*>(makeLoadBalancer(c, seeded(1)).get()), nullptr);
  c.lb_policy = config::LbPolicy::Maglev;
  EXPECT_NE(dynamic_cast<MaglevBalancer*>(makeLoadBalancer(c, seeded(1)).get()), nullptr);
  c.lb_policy = config::LbPolicy::LeastRequest;
  EXPECT_NE(dynamic_cast<LeastRequestBalancer*>(makeLoadBalancer(c, seeded(1)).get()), nullptr);
  c.lb_policy = config::LbPolicy::Random;
  EXPECT_NE(dynamic_cast<RandomBalancer*>(makeLoadBalancer(c, seeded(1)).get()), nullptr);
}

}  // namespace
}  // namespace culvert::upstream

// Locality weighting in the hashing balancers (Envoy's thread-aware normalizeWeights).
namespace culvert::upstream {
namespace {

// Endpoints per locality, in the order given; localities[l] = {weight, priority, hosts}.
struct LocalityCase {
  std::vector<config::Endpoint> eps;
  std::vector<config::Locality> localities;
};

LocalityCase localityCase(const std::vector<std::pair<uint32_t, std::vector<uint32_t>>>& spec) {
  LocalityCase out;
  for (uint32_t l = 0; l < spec.size(); ++l) {
    const auto& [weight, host_weights] = spec[l];
    out.localities.push_back({weight, 0, static_cast<uint32_t>(host_weights.size())});
    for (uint32_t w : host_weights) {
      uint32_t n = static_cast<uint32_t>(out.eps.size());
      out.eps.push_back({*common::SocketAddress::parse("10.2." + std::to_string(n / 250) + "." + std::to_string(n % 250 + 1),
                                                       8080),
                         w, 0, l});
    }
  }
  return out;
}

std::map<uint32_t, int> maglevSlots(MaglevBalancer& lb, const LocalityCase& c, const std::vector<uint32_t>& hosts,
                                    uint64_t size = 65537) {
  std::map<uint32_t, int> out;
  for (uint64_t slot = 0; slot < size; ++slot) {
    PickInput in{c.eps, hosts, nullptr, slot};
    in.localities = &c.localities;
    out[lb.pick(in)]++;
  }
  return out;
}

TEST(LocalityNormalizedWeightsTest, LocalityShareTimesHostShareInLocalityOrder) {
  // Locality 0 (weight 1): hosts of weight 1 and 3; locality 1 (weight 3): one host. Hosts
  // given interleaved by endpoint index: the result groups them by locality.
  auto c = localityCase({{1, {1, 3}}, {3, {2}}});
  std::vector<uint32_t> hosts = {2, 0, 1};
  PickInput in{c.eps, hosts};
  in.localities = &c.localities;
  auto w = localityNormalizedWeights(in);
  ASSERT_EQ(w.size(), 3u);
  EXPECT_EQ(w[0].first, 0u);
  EXPECT_DOUBLE_EQ(w[0].second, 0.25 * 0.25);
  EXPECT_EQ(w[1].first, 1u);
  EXPECT_DOUBLE_EQ(w[1].second, 0.25 * 0.75);
  EXPECT_EQ(w[2].first, 2u);
  EXPECT_DOUBLE_EQ(w[2].second, 0.75);
}

TEST(LocalityNormalizedWeightsTest, RawWeightsOfLocalitiesWithHostsInThePriority) {
  auto c = localityCase({{2, {1, 1}}, {1, {1}}, {1, {1}}});
  c.localities.push_back({4, 0, 0});  // an entry without lb_endpoints: not in the sum
  c.localities.push_back({8, 1, 1});  // another priority: not in the sum
  c.eps.push_back({*common::SocketAddress::parse("10.3.0.1", 8080), 1, 1, 4});
  // Locality 0's hosts are all unhealthy (not in hosts): its weight still counts, so the
  // others keep 1/4 each; no availability adjustment (Envoy's thread-aware balancers).
  std::vector<uint32_t> hosts = {2, 3};
  PickInput in{c.eps, hosts};
  in.localities = &c.localities;
  auto w = localityNormalizedWeights(in);
  ASSERT_EQ(w.size(), 2u);
  EXPECT_DOUBLE_EQ(w[0].second, 0.25);
  EXPECT_DOUBLE_EQ(w[1].second, 0.25);
}

TEST(LocalityNormalizedWeightsTest, HostsOfAnUnweightedLocalityAreLeftOut) {
  auto c = localityCase({{0, {1, 1}}, {5, {1}}});
  auto hosts = allOf(c.eps);
  PickInput in{c.eps, hosts};
  in.localities = &c.localities;
  auto w = localityNormalizedWeights(in);
  ASSERT_EQ(w.size(), 1u);
  EXPECT_EQ(w[0].first, 2u);
  EXPECT_DOUBLE_EQ(w[0].second, 1.0);
  c.localities[1].weight = 0;
  EXPECT_TRUE(localityNormalizedWeights(in).empty());
}

TEST(MaglevLocalityTest, TableSplitsByLocalityWeight) {
  // Localities 3:1, two hosts each: 37.5 / 37.5 / 12.5 / 12.5 % of the slots, within a
  // slot of rounding (normalized weights are exact binary fractions).
  auto c = localityCase({{3, {1, 1}}, {1, {1, 1}}});
  MaglevBalancer lb(65537, seeded(20));
  auto slots = maglevSlots(lb, c, allOf(c.eps));
  EXPECT_NEAR(slots[0], 65537 * 0.375, 1.0);
  EXPECT_NEAR(slots[1], 65537 * 0.375, 1.0);
  EXPECT_NEAR(slots[2], 65537 * 0.125, 1.0);
  EXPECT_NEAR(slots[3], 65537 * 0.125, 1.0);
  // Without localities the same endpoints share the table evenly.
  MaglevBalancer flat(65537, seeded(20));
  auto hosts = allOf(c.eps);
  std::map<uint32_t, int> even;
  for (uint64_t slot = 0; slot < 65537; ++slot) even[flat.pick(PickInput{c.eps, hosts, nullptr, slot})]++;
  EXPECT_NEAR(even[2], 65537 * 0.25, 1.0);
}

TEST(MaglevLocalityTest, HostWeightsDivideTheirLocalitysShare) {
  // Locality weights 1:1; inside locality 0 hosts of weight 1 and 3: 12.5 / 37.5 / 50 %.
  auto c = localityCase({{1, {1, 3}}, {1, {1}}});
  MaglevBalancer lb(65537, seeded(21));
  auto slots = maglevSlots(lb, c, allOf(c.eps));
  EXPECT_NEAR(slots[0], 65537 * 0.125, 1.0);
  EXPECT_NEAR(slots[1], 65537 * 0.375, 1.0);
  EXPECT_NEAR(slots[2], 65537 * 0.5, 1.0);
}

TEST(MaglevLocalityTest, ALocalityWithoutWeightGetsNoSlotAndNoWeightAtAllNoHost) {
  auto c = localityCase({{0, {1, 1}}, {2, {1, 1}}});
  MaglevBalancer lb(65537, seeded(22));
  auto slots = maglevSlots(lb, c, allOf(c.eps));
  EXPECT_EQ(slots.count(0), 0u);
  EXPECT_EQ(slots.count(1), 0u);
  EXPECT_NEAR(slots[2], 65537 * 0.5, 1.0);
  EXPECT_NEAR(slots[3], 65537 * 0.5, 1.0);
  // Only the unweighted locality's hosts left: Envoy builds no table, no host.
  MaglevBalancer none(65537, seeded(22));
  std::vector<uint32_t> unweighted = {0, 1};
  PickInput in{c.eps, unweighted, nullptr, 7};
  in.localities = &c.localities;
  EXPECT_EQ(none.pick(in), LoadBalancer::kNoHost);
}

TEST(MaglevLocalityTest, TableIsEnvoysSlotForSlot) {
  // Mixed host weights in five localities of mixed weights (one without), hosts of one
  // locality spread over the endpoint list, a host subset: Envoy's normalized weights,
  // transcribed here per locality list, then Envoy's fill.
  std::vector<config::Endpoint> eps;
  std::vector<config::Locality> localities = {{3, 0, 0}, {1, 0, 0}, {0, 0, 0}, {7, 0, 0}, {2, 0, 0}};
  for (uint32_t i = 0; i < 600; ++i) {
    uint32_t l = (i * 7) % 5;
    eps.push_back({*common::SocketAddress::parse("10.4." + std::to_string(i / 250) + "." + std::to_string(i % 250 + 1), 80),
                   i % 4 + 1, 0, l});
    ++localities[l].hosts;
  }
  std::vector<uint32_t> hosts;
  for (uint32_t i = 0; i < eps.size(); ++i) {
    if (i % 5 != 1) hosts.push_back(i);
  }
  // Envoy: per locality (in order), its hosts in order; weight × (lw / Σlw) / Σ host weights.
  std::vector<std::vector<uint32_t>> per_locality(localities.size());
  for (uint32_t i : hosts) per_locality[eps[i].locality].push_back(i);
  uint64_t locality_sum = 0;
  for (const auto& l : localities) locality_sum += l.weight;
  std::vector<std::pair<uint32_t, double>> normalized;
  for (size_t l = 0; l < localities.size(); ++l) {
    if (localities[l].weight == 0) continue;
    uint64_t sum = 0;
    for (uint32_t i : per_locality[l]) sum += eps[i].weight;
    const double share = static_cast<double>(localities[l].weight) / locality_sum;
    for (uint32_t i : per_locality[l]) normalized.emplace_back(i, eps[i].weight * share / sum);
  }
  for (uint64_t size : {uint64_t{65537}, uint64_t{5003}}) {
    MaglevBalancer lb(size, seeded(23));
    std::vector<uint32_t> table;
    for (uint64_t slot = 0; slot < size; ++slot) {
      PickInput in{eps, hosts, nullptr, slot};
      in.localities = &localities;
      table.push_back(lb.pick(in));
    }
    EXPECT_EQ(table, envoyMaglevFill(eps, normalized, size)) << size;
  }
}

std::map<uint32_t, int> ringKeys(RingHashBalancer& lb, const LocalityCase& c, const std::vector<uint32_t>& hosts,
                                 int keys) {
  std::map<uint32_t, int> out;
  for (int k = 0; k < keys; ++k) {
    PickInput in{c.eps, hosts, nullptr, common::xxHash64("key-" + std::to_string(k))};
    in.localities = &c.localities;
    out[lb.pick(in)]++;
  }
  return out;
}

TEST(RingHashLocalityTest, EntriesAndKeysSplitByLocalityWeight) {
  auto c = localityCase({{3, {1, 1}}, {1, {1, 1}}});
  // Normalized 0.375 / 0.375 / 0.125 / 0.125: the lightest gets ceil(0.125 × 16384) entries,
  // so 6144 / 6144 / 2048 / 2048, a ring of 16384.
  RingHashBalancer lb({16384, 8 * 1024 * 1024}, seeded(24));
  auto keys = ringKeys(lb, c, allOf(c.eps), 40000);
  EXPECT_EQ(lb.ringSize(), 16384u);
  // Arc lengths vary: a share of 6144 of 16384 random points has a standard deviation of
  // 0.4 %; the split is checked within 1.5 %.
  EXPECT_NEAR(keys[0] + keys[1], 30000, 600);
  EXPECT_NEAR(keys[2] + keys[3], 10000, 600);
  EXPECT_NEAR(keys[0], 15000, 600);
  EXPECT_NEAR(keys[3], 5000, 600);
}

TEST(RingHashLocalityTest, ALocalityWithoutHostsHereShrinksTheRingAsEnvoys) {
  // Localities 2:1:1; locality 0 has no host in the set (all unhealthy): the others keep
  // their 1/4 each, so the ring has half of minimum_ring_size entries (Envoy sums every
  // locality's weight) and the two hosts split the keys evenly.
  auto c = localityCase({{2, {1}}, {1, {1}}, {1, {1}}});
  RingHashBalancer lb({1024, 8 * 1024 * 1024}, seeded(25));
  auto keys = ringKeys(lb, c, {1, 2}, 20000);
  EXPECT_EQ(lb.ringSize(), 512u);
  EXPECT_EQ(keys.count(0), 0u);
  EXPECT_NEAR(keys[1], 10000, 1200);
  // No weighted locality has a host: an empty ring, no host.
  c.localities[1].weight = c.localities[2].weight = 0;
  RingHashBalancer none({1024, 8 * 1024 * 1024}, seeded(25));
  EXPECT_EQ(ringKeys(none, c, {1, 2}, 1).count(LoadBalancer::kNoHost), 1u);
  EXPECT_EQ(none.ringSize(), 0u);
}

}  // namespace
}  // namespace culvert::upstream
