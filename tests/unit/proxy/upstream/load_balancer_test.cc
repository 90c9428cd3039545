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
std::vector<uint32_t> envoyMaglevTable(const std::vector<config::Endpoint>& eps, const std::vector<uint32_t>& hosts,
                                       uint64_t table_size) {
  struct Entry {
    uint32_t index;
    uint64_t offset, skip;
    double weight, target;
    uint64_t next = 0;
  };
  double total = 0;
  for (uint32_t i : hosts) total += eps[i].weight == 0 ? 1 : eps[i].weight;
  double max_weight = 0;
  std::vector<Entry> entries;
  for (uint32_t i : hosts) {
    std::string address = eps[i].address.toString();
    double w = (eps[i].weight == 0 ? 1 : eps[i].weight) / total;
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
