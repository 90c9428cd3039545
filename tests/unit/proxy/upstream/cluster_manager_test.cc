#include "proxy/upstream/cluster_manager.h"

#include <gtest/gtest.h>

#include <map>
#include <set>
#include <random>

#include "proxy/common/xxhash64.h"

namespace culvert::upstream {
namespace {

using namespace std::chrono_literals;

common::SocketAddress addr(const std::string& ip, uint16_t port) { return *common::SocketAddress::parse(ip, port); }

struct Fixture {
  common::StatsStore stats;
  ClusterManager::Clock::time_point now{};
  std::shared_ptr<std::mt19937_64> engine = std::make_shared<std::mt19937_64>(11);
  ClusterManager cm{ClusterManager::Options{&stats, nullptr, [e = engine] { return (*e)(); }, [this] { return now; }}};

  std::shared_ptr<config::Cluster> addCluster(const std::string& name, std::vector<std::pair<std::string, uint32_t>> eps) {
    auto c = std::make_shared<config::Cluster>();
    c->name = name;
    for (auto& [ip, priority] : eps) c->endpoints.push_back({*common::SocketAddress::parse(ip, 80), 1, priority});
    table_->by_name[name] = c;
    return c;
  }
  void publish() {
    auto copy = std::make_shared<config::ClusterTable>(*table_);
    cm.update(copy);
  }
  std::map<std::string, int> spread(const std::string& cluster, int n) {
    std::map<std::string, int> out;
    for (int i = 0; i < n; ++i) {
      auto s = cm.pickEndpoint(cluster);
      if (s) out[s->endpoint.address.ip()]++;
    }
    return out;
  }
  AttemptOutcome fail503() { return {AttemptOutcome::Kind::Response, 503, 1ms}; }
  std::shared_ptr<config::ClusterTable> table_ = std::make_shared<config::ClusterTable>();
};

config::OutlierDetection ejectAfter(uint32_t n) {
  config::OutlierDetection od;
  od.consecutive_5xx = n;
  od.base_ejection_time = 500ms;
  od.interval = 10s;
  od.max_ejection_percent = 100;
  return od;
}

TEST(ClusterManagerTest, PicksFromNamedClusterAndReportsMissing) {
  Fixture f;
  f.addCluster("backend", {{"10.0.0.1", 0}, {"10.0.0.2", 0}});
  f.addCluster("empty", {});
  f.publish();
  auto a = f.cm.pickEndpoint("backend");
  auto b = f.cm.pickEndpoint("backend");
  ASSERT_TRUE(a && b);
  EXPECT_NE(a->endpoint.address.toString(), b->endpoint.address.toString());
  EXPECT_EQ(f.cm.pickEndpoint("nope").error(), ClusterManager::PickError::NoCluster);
  EXPECT_EQ(f.cm.pickEndpoint("empty").error(), ClusterManager::PickError::NoHealthyEndpoint);
}

// The last cluster looked up is remembered; an update must never answer from it.
TEST(ClusterManagerTest, AnUpdateForgetsTheLastClusterLookedUp) {
  Fixture f;
  f.addCluster("a", {{"10.0.0.1", 0}});
  f.addCluster("b", {{"10.0.0.9", 0}});
  f.publish();
  ASSERT_EQ(f.cm.pickEndpoint("a")->endpoint.address.ip(), "10.0.0.1");  // makes a's state
  ASSERT_TRUE(f.cm.hasEndpoint("a", addr("10.0.0.1", 80)));               // finds it: remembered
  f.table_->by_name.erase("a");
  f.publish();
  EXPECT_EQ(f.cm.pickEndpoint("a").error(), ClusterManager::PickError::NoCluster);
  EXPECT_FALSE(f.cm.hasEndpoint("a", addr("10.0.0.1", 80)));
  f.addCluster("a", {{"10.0.0.2", 0}});
  f.publish();
  EXPECT_EQ(f.cm.pickEndpoint("a")->endpoint.address.ip(), "10.0.0.2");
  EXPECT_EQ(f.cm.pickEndpoint("b")->endpoint.address.ip(), "10.0.0.9");
  EXPECT_EQ(f.cm.pickEndpoint("a")->endpoint.address.ip(), "10.0.0.2");
  EXPECT_FALSE(f.cm.hasEndpoint("a", addr("10.0.0.1", 80)));
  EXPECT_TRUE(f.cm.hasEndpoint("a", addr("10.0.0.2", 80)));
}

TEST(ClusterManagerTest, EjectedEndpointGetsNoTrafficUntilItsTimeIsUp) {
  Fixture f;
  auto c = f.addCluster("c", {{"10.0.0.1", 0}, {"10.0.0.2", 0}, {"10.0.0.3", 0}});
  c->outlier_detection = ejectAfter(2);
  f.publish();
  auto bad = *common::SocketAddress::parse("10.0.0.2", 80);
  f.cm.reportOutcome("c", bad, f.fail503());
  f.cm.reportOutcome("c", bad, f.fail503());
  EXPECT_TRUE(f.cm.isEjected("c", bad));
  EXPECT_EQ(f.stats.gauge("culvert_outlier_detection_ejections_active", {{"cluster", "c"}}).value(), 1);
  EXPECT_EQ(f.stats.counter("culvert_outlier_detection_ejections_total", {{"cluster", "c"}, {"reason", "consecutive_5xx"}}).value(), 1u);
  auto spread = f.spread("c", 100);
  EXPECT_EQ(spread.count("10.0.0.2"), 0u);
  EXPECT_EQ(spread["10.0.0.1"] + spread["10.0.0.3"], 100);
  f.now += 500ms;
  spread = f.spread("c", 90);
  EXPECT_EQ(spread["10.0.0.2"], 30);
  EXPECT_EQ(f.stats.gauge("culvert_outlier_detection_ejections_active", {{"cluster", "c"}}).value(), 0);
}

TEST(ClusterManagerTest, PanicUsesEveryEndpoint) {
  Fixture f;
  auto c = f.addCluster("c", {{"10.0.0.1", 0}, {"10.0.0.2", 0}, {"10.0.0.3", 0}});
  c->outlier_detection = ejectAfter(1);
  f.publish();
  f.cm.reportOutcome("c", *common::SocketAddress::parse("10.0.0.1", 80), f.fail503());
  f.cm.reportOutcome("c", *common::SocketAddress::parse("10.0.0.2", 80), f.fail503());
  // 1 of 3 healthy (33%) is under the 50% panic threshold: all three get traffic.
  auto spread = f.spread("c", 30);
  EXPECT_EQ(spread.size(), 3u);
  EXPECT_EQ(f.stats.counter("culvert_upstream_lb_healthy_panic_total", {{"cluster", "c"}}).value(), 30u);
}

TEST(ClusterManagerTest, PanicThresholdZeroMeansNoHealthyUpstream) {
  Fixture f;
  auto c = f.addCluster("c", {{"10.0.0.1", 0}});
  c->outlier_detection = ejectAfter(1);
  c->healthy_panic_threshold = 0;
  f.publish();
  f.cm.reportOutcome("c", *common::SocketAddress::parse("10.0.0.1", 80), f.fail503());
  EXPECT_EQ(f.cm.pickEndpoint("c").error(), ClusterManager::PickError::NoHealthyEndpoint);
}

TEST(ClusterManagerTest, PriorityFailover) {
  Fixture f;
  auto c = f.addCluster("c", {{"10.0.0.1", 0}, {"10.0.0.2", 0}, {"10.0.1.1", 1}, {"10.0.1.2", 1}});
  c->outlier_detection = ejectAfter(1);
  f.publish();
  auto spread = f.spread("c", 100);
  EXPECT_EQ(spread["10.0.0.1"] + spread["10.0.0.2"], 100);
  // One of two P0 endpoints out: availability 70 → 70% stays on P0, 30% fails over.
  f.cm.reportOutcome("c", *common::SocketAddress::parse("10.0.0.1", 80), f.fail503());
  spread = f.spread("c", 10000);
  EXPECT_EQ(spread.count("10.0.0.1"), 0u);
  EXPECT_NEAR(spread["10.0.0.2"], 7000, 300);
  EXPECT_NEAR(spread["10.0.1.1"] + spread["10.0.1.2"], 3000, 300);
}

TEST(ClusterManagerTest, MaxRequestsOverflows) {
  Fixture f;
  auto c = f.addCluster("c", {{"10.0.0.1", 0}});
  c->circuit_breakers.max_requests = 2;
  f.publish();
  auto a = f.cm.pickEndpoint("c");
  auto b = f.cm.pickEndpoint("c");
  ASSERT_TRUE(a && b);
  auto third = f.cm.pickEndpoint("c");
  ASSERT_FALSE(third);
  EXPECT_EQ(third.error(), ClusterManager::PickError::Overflow);
  EXPECT_EQ(f.stats.counter("culvert_upstream_rq_pending_overflow_total", {{"cluster", "c"}}).value(), 1u);
  // TCP proxying does not count as a request.
  EXPECT_TRUE(f.cm.pickEndpoint("c", {std::nullopt, false}));
  a->request.reset();
  EXPECT_TRUE(f.cm.pickEndpoint("c"));
}

TEST(ClusterManagerTest, EachRoutingPriorityHasItsOwnBudgets) {
  Fixture f;
  auto c = f.addCluster("c", {{"10.0.0.1", 0}});
  c->circuit_breakers = {1, 1, 1};
  c->high_circuit_breakers = {1, 1, 2};
  f.publish();
  ClusterManager::PickContext high;
  high.priority = config::RoutingPriority::High;
  auto d1 = f.cm.pickEndpoint("c");
  ASSERT_TRUE(d1);
  EXPECT_FALSE(f.cm.pickEndpoint("c"));  // DEFAULT's max_requests 1 is in use
  auto h1 = f.cm.pickEndpoint("c", high);
  auto h2 = f.cm.pickEndpoint("c", high);
  ASSERT_TRUE(h1 && h2);  // HIGH counts its own, up to 2
  EXPECT_FALSE(f.cm.pickEndpoint("c", high));
  auto cx = f.cm.reserveConnection("c");
  ASSERT_TRUE(cx);
  EXPECT_FALSE(f.cm.reserveConnection("c"));
  EXPECT_TRUE(f.cm.reserveConnection("c", config::RoutingPriority::High));
  auto pending = f.cm.reservePending("c");
  ASSERT_TRUE(pending);
  EXPECT_FALSE(f.cm.reservePending("c"));
  EXPECT_TRUE(f.cm.reservePending("c", config::RoutingPriority::High));
}

TEST(ClusterManagerTest, ConnectionAndPendingLimitsAreSharedByWorkers) {
  auto registry = std::make_shared<ResourceRegistry>();
  auto table = std::make_shared<config::ClusterTable>();
  auto c = std::make_shared<config::Cluster>();
  c->name = "c";
  c->circuit_breakers.max_connections = 2;
  c->circuit_breakers.max_pending_requests = 1;
  table->by_name["c"] = c;
  common::StatsStore stats;
  ClusterManager worker1({&stats, registry, {}, {}});
  ClusterManager worker2({&stats, registry, {}, {}});
  worker1.update(table);
  worker2.update(table);
  auto c1 = worker1.reserveConnection("c");
  auto c2 = worker2.reserveConnection("c");
  ASSERT_TRUE(c1 && c2);
  EXPECT_FALSE(worker1.reserveConnection("c"));
  EXPECT_EQ(stats.counter("culvert_upstream_cx_overflow_total", {{"cluster", "c"}}).value(), 1u);
  c1->reset();
  EXPECT_TRUE(worker2.reserveConnection("c"));
  auto p1 = worker1.reservePending("c");
  ASSERT_TRUE(p1);
  EXPECT_FALSE(worker2.reservePending("c"));
  EXPECT_EQ(stats.counter("culvert_upstream_rq_pending_overflow_total", {{"cluster", "c"}}).value(), 1u);
}

TEST(ClusterManagerTest, LeastRequestSeesRequestsInFlight) {
  Fixture f;
  auto c = f.addCluster("c", {{"10.0.0.1", 0}, {"10.0.0.2", 0}, {"10.0.0.3", 0}, {"10.0.0.4", 0}});
  c->lb_policy = config::LbPolicy::LeastRequest;
  f.publish();
  // Every request held: two choices keep the in-flight counts close (uniform random picks
  // would spread 400 requests about ±17 around 100 each).
  std::vector<ClusterManager::Selection> held;
  std::map<std::string, int> counts;
  for (int i = 0; i < 400; ++i) {
    auto s = f.cm.pickEndpoint("c");
    ASSERT_TRUE(s);
    counts[s->endpoint.address.ip()]++;
    held.push_back(std::move(*s));
  }
  for (const auto& [ip, n] : counts) EXPECT_NEAR(n, 100, 5) << ip;
  // Released requests count no more: the emptied endpoint wins whenever one of the two
  // choices lands on it (7/16 of picks, against 1/4 for a random pick).
  std::erase_if(held, [](const ClusterManager::Selection& s) { return s.endpoint.address.ip() == "10.0.0.3"; });
  int to_three = 0;
  for (int i = 0; i < 100; ++i) {
    auto s = f.cm.pickEndpoint("c");
    to_three += s->endpoint.address.ip() == "10.0.0.3";
    held.push_back(std::move(*s));
  }
  EXPECT_GE(to_three, 35);
}

TEST(ClusterManagerTest, HashPicksAreStableAndSurviveAnUnrelatedUpdate) {
  Fixture f;
  auto c = f.addCluster("c", {{"10.0.0.1", 0}, {"10.0.0.2", 0}, {"10.0.0.3", 0}});
  c->lb_policy = config::LbPolicy::RingHash;
  f.publish();
  ClusterManager::PickContext ctx{12345, true};
  auto first = f.cm.pickEndpoint("c", ctx)->endpoint.address.toString();
  f.addCluster("other", {{"10.9.9.9", 0}});
  f.publish();
  for (int i = 0; i < 5; ++i) EXPECT_EQ(f.cm.pickEndpoint("c", ctx)->endpoint.address.toString(), first);
}

TEST(ClusterManagerTest, EjectionSurvivesAnUpdateThatKeepsTheEndpoint) {
  Fixture f;
  auto c = f.addCluster("c", {{"10.0.0.1", 0}, {"10.0.0.2", 0}, {"10.0.0.3", 0}});
  c->outlier_detection = ejectAfter(1);
  f.publish();
  auto bad = *common::SocketAddress::parse("10.0.0.3", 80);
  f.cm.reportOutcome("c", bad, f.fail503());
  auto next = f.addCluster("c", {{"10.0.0.3", 0}, {"10.0.0.4", 0}, {"10.0.0.1", 0}});
  next->outlier_detection = ejectAfter(1);
  f.publish();
  EXPECT_TRUE(f.cm.isEjected("c", bad));
  EXPECT_EQ(f.stats.gauge("culvert_outlier_detection_ejections_active", {{"cluster", "c"}}).value(), 1);
  EXPECT_EQ(f.spread("c", 20).count("10.0.0.3"), 0u);
}

TEST(ClusterManagerTest, HasEndpointFollowsUpdates) {
  Fixture f;
  // More than a handful, out of order: the lookup is a binary search over a sorted index.
  std::vector<std::pair<std::string, uint32_t>> eps;
  for (int i = 40; i > 0; --i) eps.push_back({"10.0." + std::to_string(i % 3) + "." + std::to_string(i), 0});
  f.addCluster("c", eps);
  f.publish();
  EXPECT_TRUE(f.cm.hasEndpoint("c", addr("10.0.1.7", 80)));
  EXPECT_TRUE(f.cm.hasEndpoint("c", addr("10.0.2.38", 80)));
  EXPECT_FALSE(f.cm.hasEndpoint("c", addr("10.0.1.7", 81)));
  EXPECT_FALSE(f.cm.hasEndpoint("c", addr("10.0.0.7", 80)));
  EXPECT_FALSE(f.cm.hasEndpoint("other", addr("10.0.1.7", 80)));
  f.addCluster("c", {{"10.0.0.7", 0}});
  f.publish();
  EXPECT_FALSE(f.cm.hasEndpoint("c", addr("10.0.1.7", 80)));
  EXPECT_TRUE(f.cm.hasEndpoint("c", addr("10.0.0.7", 80)));
}

// A worker makes a cluster's state at its first use, not at publish (most clusters are
// idle on most workers); nothing a caller sees may depend on which came first.
TEST(ClusterManagerTest, StateMadeAtFirstUseAnswersAsAtPublish) {
  Fixture f;
  auto c = f.addCluster("c", {{"10.0.0.3", 0}, {"10.0.0.1", 0}, {"10.0.0.2", 0}});
  c->connection_lifetime.max_duration = 7s;
  f.publish();
  // Series exist from publish on, before any pick.
  EXPECT_NE(f.stats.renderPrometheus().find("culvert_upstream_cx_overflow_total{cluster=\"c\"} 0"), std::string::npos);
  EXPECT_NE(f.stats.renderPrometheus().find("culvert_outlier_detection_ejections_active{cluster=\"c\"} 0"),
            std::string::npos);
  EXPECT_EQ(f.cm.connectionLifetime("c").max_duration, 7s);
  for (bool picked : {false, true}) {
    EXPECT_TRUE(f.cm.hasEndpoint("c", addr("10.0.0.2", 80))) << picked;
    EXPECT_FALSE(f.cm.hasEndpoint("c", addr("10.0.0.4", 80))) << picked;
    EXPECT_FALSE(f.cm.isEjected("c", *common::SocketAddress::parse("10.0.0.2", 80))) << picked;
    if (!picked) {
      ASSERT_TRUE(f.cm.pickEndpoint("c"));  // 10.0.0.3
    }
  }
  // Round robin carries on across an update that keeps the endpoints: the state made at
  // the first pick is the one the update carries over.
  std::vector<std::string> order;
  for (int i = 0; i < 2; ++i) order.push_back(f.cm.pickEndpoint("c")->endpoint.address.ip());
  f.table_->by_name["c"] = std::make_shared<config::Cluster>(*c);
  f.publish();
  order.push_back(f.cm.pickEndpoint("c")->endpoint.address.ip());
  EXPECT_EQ(order, (std::vector<std::string>{"10.0.0.1", "10.0.0.2", "10.0.0.3"}));
  EXPECT_EQ(f.cm.pickEndpoint("nope").error(), ClusterManager::PickError::NoCluster);
  EXPECT_TRUE(f.cm.reserveConnection("nope"));  // unknown clusters are not limited
}

TEST(ClusterManagerTest, ABalancerSettingChangeTakesEffectWithTheSameEndpoints) {
  Fixture f;
  std::vector<std::pair<std::string, uint32_t>> eps;
  for (int i = 1; i <= 20; ++i) eps.push_back({"10.0.0." + std::to_string(i), 0});
  auto c = f.addCluster("c", eps);
  c->lb_policy = config::LbPolicy::Maglev;
  c->maglev_table_size = 65537;
  f.publish();
  std::set<std::string> reached_before;
  for (uint64_t h = 0; h < 200; ++h) reached_before.insert(f.cm.pickEndpoint("c", {.hash = h})->endpoint.address.ip());
  EXPECT_EQ(reached_before.size(), 20u);
  auto resized = std::make_shared<config::Cluster>(*c);
  resized->maglev_table_size = 13;  // 20 endpoints cannot all fit: the table really changed
  f.table_->by_name["c"] = resized;
  f.publish();
  std::set<std::string> reached;
  for (uint64_t h = 0; h < 200; ++h) reached.insert(f.cm.pickEndpoint("c", {.hash = h})->endpoint.address.ip());
  EXPECT_LE(reached.size(), 13u) << "a 13-slot table reaches at most 13 endpoints";
}

// Envoy's slow start: weight × max(min_weight_percent, time_factor^(1/aggression)).
TEST(ClusterManagerTest, SlowStartRampsUpAnEndpointThatJoins) {
  Fixture f;
  f.now = ClusterManager::Clock::time_point{} + 1000s;
  auto c = f.addCluster("c", {{"10.0.0.1", 0}, {"10.0.0.2", 0}});
  c->slow_start = config::SlowStartConfig{10s, 1.0, 10.0};
  f.publish();
  // The first two joined together: equal shares, whatever their age.
  auto first = f.spread("c", 100);
  EXPECT_EQ(first["10.0.0.1"], 50);
  EXPECT_EQ(first["10.0.0.2"], 50);
  f.now += 20s;
  auto grown = std::make_shared<config::Cluster>(*c);
  grown->endpoints.push_back({*common::SocketAddress::parse("10.0.0.3", 80), 1, 0});
  f.table_->by_name["c"] = grown;
  f.publish();
  // 1 s in: time_factor 0.1 → weight 0.1 beside 1 and 1: 1 pick in 21.
  f.now += 1s;
  EXPECT_EQ(f.spread("c", 210)["10.0.0.3"], 10);
  // 5 s in: 0.5 → 1 in 5.
  f.now += 4s;
  EXPECT_EQ(f.spread("c", 250)["10.0.0.3"], 50);
  // Window over: a third.
  f.now += 5s;
  EXPECT_EQ(f.spread("c", 300)["10.0.0.3"], 100);
}

TEST(ClusterManagerTest, SlowStartFloorAndAggression) {
  Fixture f;
  f.now = ClusterManager::Clock::time_point{} + 1000s;
  auto c = f.addCluster("c", {{"10.0.0.1", 0}});
  c->slow_start = config::SlowStartConfig{100s, 2.0, 25.0};
  f.publish();
  f.now += 200s;
  auto grown = std::make_shared<config::Cluster>(*c);
  grown->endpoints.push_back({*common::SocketAddress::parse("10.0.0.2", 80), 1, 0});
  f.table_->by_name["c"] = grown;
  f.publish();
  // 1 s in: (0.01)^(1/2) = 0.1, below the 25 % floor → 0.25 beside 1: 1 pick in 5.
  f.now += 1s;
  EXPECT_EQ(f.spread("c", 500)["10.0.0.2"], 100);
  // 64 s in: (0.64)^(1/2) = 0.8 → 0.8 beside 1: 4 picks in 9.
  f.now += 63s;
  EXPECT_EQ(f.spread("c", 900)["10.0.0.2"], 400);
}

TEST(ClusterManagerTest, LogicalDnsKeepsConnectionsToEarlierAnswers) {
  Fixture f;
  f.addCluster("strict", {{"10.0.0.2", 0}})->type = config::ClusterType::StrictDns;
  f.addCluster("logical", {{"10.0.0.2", 0}})->type = config::ClusterType::LogicalDns;
  f.publish();
  // Both resolved 10.0.0.1 before: the pool asks whether connections there may stay.
  EXPECT_FALSE(f.cm.hasEndpoint("strict", addr("10.0.0.1", 80)));
  EXPECT_TRUE(f.cm.hasEndpoint("logical", addr("10.0.0.1", 80)));
  EXPECT_FALSE(f.cm.hasEndpoint("gone", addr("10.0.0.1", 80)));
}

}  // namespace
}  // namespace culvert::upstream

namespace culvert::upstream {
namespace {

TEST(ClusterManagerHealthTest, FailedHealthCheckTakesTheEndpointOut) {
  Fixture f;
  f.addCluster("c", {{"10.0.0.1", 0}, {"10.0.0.2", 0}, {"10.0.0.3", 0}});
  f.table_->by_name["c"] = [&] {
    auto c = std::make_shared<config::Cluster>(*f.table_->by_name["c"]);
    c->health_check = config::HealthCheck{};
    return c;
  }();
  f.publish();
  auto two = *common::SocketAddress::parse("10.0.0.2", 80);
  f.cm.setHealthCheckResult("c", two, false);
  EXPECT_EQ(f.spread("c", 30).count("10.0.0.2"), 0u);
  f.cm.setHealthCheckResult("c", two, true);
  EXPECT_EQ(f.spread("c", 30)["10.0.0.2"], 10);
}

}  // namespace
}  // namespace culvert::upstream

namespace culvert::upstream {
namespace {

struct LocalitySpec {
  uint32_t weight;
  uint32_t priority;
  std::vector<std::string> ips;
  uint32_t eds_unhealthy = 0;  // lb_endpoints EDS marked unhealthy (not endpoints)
};

std::shared_ptr<config::Cluster> addLocalityCluster(Fixture& f, const std::vector<LocalitySpec>& localities,
                                                    config::LbPolicy policy = config::LbPolicy::RoundRobin) {
  auto c = f.addCluster("c", {});
  c->lb_policy = policy;
  c->locality_weighted = true;
  for (uint32_t l = 0; l < localities.size(); ++l) {
    const auto& spec = localities[l];
    c->localities.push_back({spec.weight, spec.priority, static_cast<uint32_t>(spec.ips.size()) + spec.eds_unhealthy});
    for (const auto& ip : spec.ips) c->endpoints.push_back({*common::SocketAddress::parse(ip, 80), 1, spec.priority, l});
  }
  return c;
}

int total(const std::map<std::string, int>& spread, std::initializer_list<const char*> ips) {
  int sum = 0;
  for (const char* ip : ips) sum += spread.count(ip) ? spread.at(ip) : 0;
  return sum;
}

TEST(ClusterManagerLocalityTest, SplitsByLocalityWeightThenBalancesInside) {
  Fixture f;
  addLocalityCluster(f, {{3, 0, {"10.0.0.1", "10.0.0.2"}}, {1, 0, {"10.0.1.1", "10.0.1.2"}}});
  f.publish();
  auto spread = f.spread("c", 400);
  EXPECT_EQ(spread["10.0.0.1"], 150);
  EXPECT_EQ(spread["10.0.0.2"], 150);
  EXPECT_EQ(spread["10.0.1.1"], 50);
  EXPECT_EQ(spread["10.0.1.2"], 50);
}

TEST(ClusterManagerLocalityTest, WithoutTheConfigLocalityWeightsAreIgnored) {
  Fixture f;
  addLocalityCluster(f, {{3, 0, {"10.0.0.1", "10.0.0.2"}}, {1, 0, {"10.0.1.1", "10.0.1.2"}}})->locality_weighted = false;
  f.publish();
  auto spread = f.spread("c", 400);
  for (const char* ip : {"10.0.0.1", "10.0.0.2", "10.0.1.1", "10.0.1.2"}) EXPECT_EQ(spread[ip], 100) << ip;
}

TEST(ClusterManagerLocalityTest, FailingHostsLowerTheirLocalitysShare) {
  Fixture f;
  addLocalityCluster(f, {{3, 0, {"10.0.0.1", "10.0.0.2"}}, {1, 0, {"10.0.1.1", "10.0.1.2"}}});
  f.publish();
  // Half of locality 0 fails its checks: 3 × min(1, 1.4 × 1/2) = 2.1 against 1.
  f.cm.setHealthCheckResult("c", *common::SocketAddress::parse("10.0.0.1", 80), false);
  auto spread = f.spread("c", 3100);
  EXPECT_EQ(spread.count("10.0.0.1"), 0u);
  EXPECT_EQ(spread["10.0.0.2"], 2100);
  EXPECT_EQ(total(spread, {"10.0.1.1", "10.0.1.2"}), 1000);
  // All of it: everything goes to locality 1.
  f.cm.setHealthCheckResult("c", *common::SocketAddress::parse("10.0.0.2", 80), false);
  spread = f.spread("c", 100);
  EXPECT_EQ(total(spread, {"10.0.1.1", "10.0.1.2"}), 100);
}

TEST(ClusterManagerLocalityTest, HostsEdsMarksUnhealthyCountInTheLocalitysSize) {
  Fixture f;
  // Locality 0 has two lb_endpoints, one of them UNHEALTHY in EDS: availability 70%.
  addLocalityCluster(f, {{3, 0, {"10.0.0.1"}, 1}, {1, 0, {"10.0.1.1"}}});
  f.publish();
  auto spread = f.spread("c", 3100);
  EXPECT_EQ(spread["10.0.0.1"], 2100);
  EXPECT_EQ(spread["10.0.1.1"], 1000);
}

TEST(ClusterManagerLocalityTest, ALocalityWithoutWeightGetsNoLoadUnlessNoneHasOne) {
  Fixture f;
  auto c = addLocalityCluster(f, {{0, 0, {"10.0.0.1"}}, {2, 0, {"10.0.1.1"}}});
  f.publish();
  EXPECT_EQ(f.spread("c", 50)["10.0.1.1"], 50);
  // No locality with an effective weight: Envoy balances over the level's healthy hosts.
  auto unweighted = std::make_shared<config::Cluster>(*c);
  unweighted->localities[1].weight = 0;
  f.table_->by_name["c"] = unweighted;
  f.publish();
  auto spread = f.spread("c", 50);
  EXPECT_EQ(spread["10.0.0.1"], 25);
  EXPECT_EQ(spread["10.0.1.1"], 25);
}

TEST(ClusterManagerLocalityTest, PanicUsesEveryHostOfThePriority) {
  Fixture f;
  addLocalityCluster(f, {{9, 0, {"10.0.0.1", "10.0.0.2", "10.0.0.3"}}, {1, 0, {"10.0.1.1"}}});
  f.publish();
  for (const char* ip : {"10.0.0.1", "10.0.0.2", "10.0.0.3"}) {
    f.cm.setHealthCheckResult("c", *common::SocketAddress::parse(ip, 80), false);
  }
  // 1 of 4 healthy is under the 50% threshold: localities no longer matter.
  auto spread = f.spread("c", 40);
  for (const char* ip : {"10.0.0.1", "10.0.0.2", "10.0.0.3", "10.0.1.1"}) EXPECT_EQ(spread[ip], 10) << ip;
}

TEST(ClusterManagerLocalityTest, LocalitiesAreWeighedWithinTheChosenPriority) {
  Fixture f;
  addLocalityCluster(f, {{1, 0, {"10.0.0.1"}}, {1, 1, {"10.0.1.1"}}, {3, 1, {"10.0.2.1"}}});
  f.publish();
  EXPECT_EQ(f.spread("c", 40)["10.0.0.1"], 40);
  f.cm.setHealthCheckResult("c", *common::SocketAddress::parse("10.0.0.1", 80), false);
  auto spread = f.spread("c", 400);
  EXPECT_EQ(spread["10.0.1.1"], 100);
  EXPECT_EQ(spread["10.0.2.1"], 300);
}

TEST(ClusterManagerLocalityTest, LeastRequestAndRandomPickInsideTheLocality) {
  for (auto policy : {config::LbPolicy::LeastRequest, config::LbPolicy::Random}) {
    Fixture f;
    addLocalityCluster(f, {{3, 0, {"10.0.0.1", "10.0.0.2"}}, {1, 0, {"10.0.1.1", "10.0.1.2"}}}, policy);
    f.publish();
    auto spread = f.spread("c", 4000);
    EXPECT_EQ(total(spread, {"10.0.0.1", "10.0.0.2"}), 3000);
    EXPECT_EQ(total(spread, {"10.0.1.1", "10.0.1.2"}), 1000);
    EXPECT_NEAR(spread["10.0.1.1"], 500, 100);
  }
}

// Picks with hash 0..size-1: each slot of a MAGLEV table once.
std::map<std::string, int> slotSpread(Fixture& f, uint64_t size = 65537) {
  std::map<std::string, int> out;
  for (uint64_t h = 0; h < size; ++h) {
    ClusterManager::PickContext context;
    context.hash = h;
    context.count_request = false;
    auto s = f.cm.pickEndpoint("c", context);
    out[s ? s->endpoint.address.ip() : "none"]++;
  }
  return out;
}

TEST(ClusterManagerLocalityTest, MaglevTableSplitsByLocalityWeight) {
  Fixture f;
  addLocalityCluster(f, {{3, 0, {"10.0.0.1", "10.0.0.2"}}, {1, 0, {"10.0.1.1", "10.0.1.2"}}}, config::LbPolicy::Maglev);
  f.publish();
  auto spread = slotSpread(f);
  EXPECT_NEAR(total(spread, {"10.0.0.1", "10.0.0.2"}), 65537 * 0.75, 2);
  EXPECT_NEAR(spread["10.0.0.1"], 65537 * 0.375, 1);
  EXPECT_NEAR(spread["10.0.1.2"], 65537 * 0.125, 1);
}

TEST(ClusterManagerLocalityTest, RingHashSplitsByLocalityWeight) {
  Fixture f;
  auto c = addLocalityCluster(f, {{3, 0, {"10.0.0.1", "10.0.0.2"}}, {1, 0, {"10.0.1.1", "10.0.1.2"}}},
                              config::LbPolicy::RingHash);
  c->ring_hash.minimum_ring_size = 16384;
  f.publish();
  std::map<std::string, int> spread;
  for (int k = 0; k < 40000; ++k) {
    ClusterManager::PickContext context;
    context.hash = common::xxHash64("key-" + std::to_string(k));
    auto s = f.cm.pickEndpoint("c", context);
    spread[s ? s->endpoint.address.ip() : "none"]++;
  }
  EXPECT_NEAR(total(spread, {"10.0.0.1", "10.0.0.2"}), 30000, 600);
  EXPECT_NEAR(total(spread, {"10.0.1.1", "10.0.1.2"}), 10000, 600);
}

TEST(ClusterManagerLocalityTest, HashingKeepsRawLocalityWeightsWhenHostsFail) {
  // Envoy's thread-aware balancers weigh localities by their configured weights over the
  // healthy hosts, without the availability adjustment: a2 keeps all of zone a's 75 %
  // (round robin would give it 2.1 / 3.1).
  Fixture f;
  addLocalityCluster(f, {{3, 0, {"10.0.0.1", "10.0.0.2"}}, {1, 0, {"10.0.1.1", "10.0.1.2"}}}, config::LbPolicy::Maglev);
  f.publish();
  f.cm.setHealthCheckResult("c", *common::SocketAddress::parse("10.0.0.1", 80), false);
  auto spread = slotSpread(f);
  EXPECT_EQ(spread.count("10.0.0.1"), 0u);
  EXPECT_NEAR(spread["10.0.0.2"], 65537 * 0.75, 2);
  EXPECT_NEAR(spread["10.0.1.1"], 65537 * 0.125, 2);
}

TEST(ClusterManagerLocalityTest, HashingWeighsLocalitiesInPanicToo) {
  // Localities 1:1, four hosts against one; all four fail: 1 of 5 healthy is panic, and
  // Envoy's table is then built from every host, still weighed by locality: zone a's
  // four share half, b1 has the other half (20 % each without localities).
  Fixture f;
  const std::vector<std::string> a = {"10.0.0.1", "10.0.0.2", "10.0.0.3", "10.0.0.4"};
  addLocalityCluster(f, {{1, 0, a}, {1, 0, {"10.0.1.1"}}}, config::LbPolicy::Maglev);
  f.publish();
  for (const auto& ip : a) f.cm.setHealthCheckResult("c", *common::SocketAddress::parse(ip, 80), false);
  auto spread = slotSpread(f);
  EXPECT_NEAR(spread["10.0.1.1"], 65537 * 0.5, 2);
  for (const auto& ip : a) EXPECT_NEAR(spread[ip], 65537 / 8.0, 2) << ip;
  EXPECT_EQ(f.stats.counter("culvert_upstream_lb_healthy_panic_total", {{"cluster", "c"}}, "").value(), 65537u);
}

TEST(ClusterManagerLocalityTest, HashingGivesAnUnweightedLocalityNothingAndNoHostWhenOnlyItIsLeft) {
  Fixture f;
  addLocalityCluster(f, {{0, 0, {"10.0.0.1"}}, {2, 0, {"10.0.1.1"}}}, config::LbPolicy::RingHash);
  f.publish();
  ClusterManager::PickContext context;
  for (uint64_t h : {1ull, 1ull << 40, ~0ull}) {
    context.hash = h;
    auto s = f.cm.pickEndpoint("c", context);
    ASSERT_TRUE(s);
    EXPECT_EQ(s->endpoint.address.ip(), "10.0.1.1");
  }
  // The weighted locality's host fails (1 of 2 healthy is not panic): only the unweighted
  // locality has healthy hosts, and Envoy's ring is empty: no endpoint.
  f.cm.setHealthCheckResult("c", *common::SocketAddress::parse("10.0.1.1", 80), false);
  auto s = f.cm.pickEndpoint("c", context);
  ASSERT_FALSE(s);
  EXPECT_EQ(s.error(), ClusterManager::PickError::NoHealthyEndpoint);
}

TEST(ClusterManagerLocalityTest, HashingWithoutTheConfigIgnoresLocalities) {
  Fixture f;
  addLocalityCluster(f, {{3, 0, {"10.0.0.1", "10.0.0.2"}}, {1, 0, {"10.0.1.1", "10.0.1.2"}}}, config::LbPolicy::Maglev)
      ->locality_weighted = false;
  f.publish();
  auto spread = slotSpread(f);
  for (const char* ip : {"10.0.0.1", "10.0.0.2", "10.0.1.1", "10.0.1.2"}) EXPECT_NEAR(spread[ip], 65537 / 4.0, 1) << ip;
}

TEST(ClusterManagerLocalityTest, RetriesAvoidingAHostStayWithinLocalityWeighting) {
  Fixture f;
  addLocalityCluster(f, {{1, 0, {"10.0.0.1"}}, {0, 0, {"10.0.1.1"}}});
  f.publish();
  std::vector<common::SocketAddress> tried = {*common::SocketAddress::parse("10.0.0.1", 80)};
  // The only weighted locality holds the tried host: re-picks cannot leave it.
  ClusterManager::PickContext retry;
  retry.avoid = {&tried, 3};
  auto s = f.cm.pickEndpoint("c", retry);
  ASSERT_TRUE(s);
  EXPECT_EQ(s->endpoint.address.ip(), "10.0.0.1");
}

}  // namespace
}  // namespace culvert::upstream
