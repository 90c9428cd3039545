#include "proxy/upstream/dns_cluster.h"

#include <gtest/gtest.h>

#include <list>
#include <map>

namespace culvert::upstream {
namespace {

using std::chrono::milliseconds;
using std::chrono::seconds;
using Family = config::DnsResolution::LookupFamily;

// Time that moves only when the test says so; timers fire in deadline order.
class ManualTime {
public:
  class Timer : public DnsTimer {
  public:
    Timer(ManualTime& time, std::function<void()> cb) : time_(time), cb_(std::move(cb)) { time_.timers_.push_back(this); }
    ~Timer() override { time_.timers_.remove(this); }
    void enable(milliseconds after) override { deadline_ = time_.now_ + after; }
    void disable() override { deadline_.reset(); }
    std::optional<milliseconds> deadline_;
    ManualTime& time_;
    std::function<void()> cb_;
  };

  DnsTimerFactory factory() {
    return [this](std::function<void()> cb) { return std::make_unique<Timer>(*this, std::move(cb)); };
  }
  void advance(milliseconds by) {
    const auto end = now_ + by;
    while (true) {
      Timer* next = nullptr;
      for (auto* t : timers_) {
        if (t->deadline_ && *t->deadline_ <= end && (!next || *t->deadline_ < *next->deadline_)) next = t;
      }
      if (!next) break;
      now_ = *next->deadline_;
      next->deadline_.reset();
      next->cb_();
    }
    now_ = end;
  }
  milliseconds now() const { return now_; }

private:
  milliseconds now_{0};
  std::list<Timer*> timers_;
};

// Queries wait until the test answers them.
class ScriptedResolver : public DnsResolver {
public:
  struct Pending {
    std::string name;
    Family family;
    Callback callback;
    milliseconds asked_at;
  };
  explicit ScriptedResolver(ManualTime& time) : time_(time) {}

  class Query : public DnsQuery {
  public:
    Query(ScriptedResolver& r, uint64_t id) : r_(r), id_(id) {}
    ~Query() override { r_.pending_.erase(id_); }
    ScriptedResolver& r_;
    uint64_t id_;
  };

  std::unique_ptr<DnsQuery> resolve(const std::string& name, Family family, Callback callback) override {
    ++asked_;
    pending_[next_id_] = Pending{name, family, std::move(callback), time_.now()};
    return std::make_unique<Query>(*this, next_id_++);
  }

  // Answers the oldest pending query for `name`.
  void answer(const std::string& name, DnsResponse response) {
    for (auto& [id, p] : pending_) {
      if (p.name != name) continue;
      auto cb = p.callback;
      cb(std::move(response));
      return;
    }
    ADD_FAILURE() << "no pending query for " << name;
  }
  bool isPending(const std::string& name) const {
    for (const auto& [id, p] : pending_) {
      if (p.name == name) return true;
    }
    return false;
  }
  std::optional<milliseconds> askedAt(const std::string& name) const {
    for (const auto& [id, p] : pending_) {
      if (p.name == name) return p.asked_at;
    }
    return std::nullopt;
  }
  size_t asked_ = 0;

private:
  ManualTime& time_;
  uint64_t next_id_ = 1;
  std::map<uint64_t, Pending> pending_;
};

DnsResponse ok(std::vector<std::string> ips, seconds ttl = seconds(60)) {
  DnsResponse r;
  r.ok = true;
  for (const auto& ip : ips) r.records.push_back({*common::SocketAddress::parse(ip, 0), ttl});
  return r;
}

DnsResponse failed() {
  DnsResponse r;
  r.ok = false;
  r.error = "server failure";
  return r;
}

std::vector<std::string> addresses(const std::vector<config::Endpoint>& endpoints) {
  std::vector<std::string> out;
  for (const auto& e : endpoints) out.push_back(e.address.toString());
  return out;
}

config::DnsResolution twoTargets() {
  config::DnsResolution dns;
  dns.targets.push_back({"a.test", 8080, 3, 0});
  dns.targets.push_back({"b.test", 9090, 1, 1});
  return dns;
}

struct DnsClusterTest : ::testing::Test {
  ManualTime time;
  ScriptedResolver resolver{time};
  common::Counter resolutions, failures;
  common::Gauge hosts;
  int changes = 0;
  uint64_t random_value = 0;

  std::unique_ptr<DnsCluster> make(config::DnsResolution dns, bool logical = false) {
    return std::make_unique<DnsCluster>("c", logical, std::move(dns), resolver, time.factory(),
                                        [this] { return random_value; },
                                        DnsCluster::Stats{&resolutions, &failures, &hosts}, [this] { ++changes; });
  }
};

TEST_F(DnsClusterTest, StrictDnsEveryAddressOfEveryTargetIsAHostWithItsEndpointsSettings) {
  auto cluster = make(twoTargets());
  cluster->start();
  ASSERT_TRUE(resolver.isPending("a.test"));
  ASSERT_TRUE(resolver.isPending("b.test"));
  resolver.answer("a.test", ok({"10.0.0.1", "10.0.0.2"}));
  EXPECT_EQ(addresses(cluster->endpoints()), (std::vector<std::string>{"10.0.0.1:8080", "10.0.0.2:8080"}));
  resolver.answer("b.test", ok({"fd00::1"}));
  ASSERT_EQ(cluster->endpoints().size(), 3u);
  EXPECT_EQ(cluster->endpoints()[0].weight, 3u);
  EXPECT_EQ(cluster->endpoints()[0].priority, 0u);
  EXPECT_EQ(cluster->endpoints()[2].address.toString(), "[fd00::1]:9090");
  EXPECT_EQ(cluster->endpoints()[2].weight, 1u);
  EXPECT_EQ(cluster->endpoints()[2].priority, 1u);
  EXPECT_EQ(changes, 2);
  EXPECT_EQ(resolutions.value(), 2u);
  EXPECT_EQ(hosts.value(), 3);
}

TEST_F(DnsClusterTest, EachAddressInheritsItsTargetsLocality) {
  auto dns = twoTargets();
  dns.targets[0].locality = 2;
  dns.targets[1].locality = 1;
  auto cluster = make(dns);
  cluster->start();
  resolver.answer("a.test", ok({"10.0.0.1", "10.0.0.2"}));
  resolver.answer("b.test", ok({"10.0.1.1"}));
  ASSERT_EQ(cluster->endpoints().size(), 3u);
  EXPECT_EQ(cluster->endpoints()[0].locality, 2u);
  EXPECT_EQ(cluster->endpoints()[1].locality, 2u);
  EXPECT_EQ(cluster->endpoints()[2].locality, 1u);
}

TEST_F(DnsClusterTest, ReResolvesExactlyAtTheRefreshRateAndOnlyReportsChanges) {
  auto dns = twoTargets();
  dns.targets.resize(1);
  dns.refresh_rate = milliseconds(2000);
  auto cluster = make(dns);
  cluster->start();
  resolver.answer("a.test", ok({"10.0.0.1"}));
  time.advance(milliseconds(1999));
  EXPECT_FALSE(resolver.isPending("a.test"));
  time.advance(milliseconds(1));
  ASSERT_TRUE(resolver.isPending("a.test"));
  EXPECT_EQ(*resolver.askedAt("a.test"), milliseconds(2000));
  resolver.answer("a.test", ok({"10.0.0.1"}));  // the same answer
  EXPECT_EQ(changes, 1);
  time.advance(milliseconds(2000));
  resolver.answer("a.test", ok({"10.0.0.9"}));
  EXPECT_EQ(changes, 2);
  EXPECT_EQ(addresses(cluster->endpoints()), (std::vector<std::string>{"10.0.0.9:8080"}));
}

TEST_F(DnsClusterTest, RespectDnsTtlReResolvesAtTheSmallestTtlAndFallsBackToTheRefreshRateForTtlZero) {
  auto dns = twoTargets();
  dns.targets.resize(1);
  dns.respect_dns_ttl = true;
  auto cluster = make(dns);
  cluster->start();
  DnsResponse r = ok({"10.0.0.1", "10.0.0.2"}, seconds(30));
  r.records[1].ttl = seconds(7);
  resolver.answer("a.test", r);
  time.advance(milliseconds(6999));
  EXPECT_FALSE(resolver.isPending("a.test"));
  time.advance(milliseconds(1));
  ASSERT_TRUE(resolver.isPending("a.test"));
  resolver.answer("a.test", ok({"10.0.0.1"}, seconds(0)));
  time.advance(milliseconds(4999));  // default dns_refresh_rate 5 s
  EXPECT_FALSE(resolver.isPending("a.test"));
  time.advance(milliseconds(1));
  EXPECT_TRUE(resolver.isPending("a.test"));
}

TEST_F(DnsClusterTest, WithoutRespectDnsTtlTheTtlIsIgnored) {
  auto dns = twoTargets();
  dns.targets.resize(1);
  auto cluster = make(dns);
  cluster->start();
  resolver.answer("a.test", ok({"10.0.0.1"}, seconds(1)));
  time.advance(milliseconds(4999));
  EXPECT_FALSE(resolver.isPending("a.test"));
  time.advance(milliseconds(1));
  EXPECT_TRUE(resolver.isPending("a.test"));
}

TEST_F(DnsClusterTest, FailureKeepsTheLastHostsAndRetriesAtTheRefreshRateWhenNoFailureRateIsSet) {
  auto dns = twoTargets();
  dns.targets.resize(1);
  auto cluster = make(dns);
  cluster->start();
  resolver.answer("a.test", ok({"10.0.0.1", "10.0.0.2"}));
  time.advance(milliseconds(5000));
  resolver.answer("a.test", failed());
  EXPECT_EQ(addresses(cluster->endpoints()), (std::vector<std::string>{"10.0.0.1:8080", "10.0.0.2:8080"}));
  EXPECT_EQ(failures.value(), 1u);
  EXPECT_EQ(resolutions.value(), 2u);
  EXPECT_EQ(changes, 1);
  time.advance(milliseconds(4999));
  EXPECT_FALSE(resolver.isPending("a.test"));
  time.advance(milliseconds(1));
  EXPECT_TRUE(resolver.isPending("a.test"));
}

TEST_F(DnsClusterTest, FailureRefreshRateBacksOffWithJitterUpToItsMaxAndResetsOnSuccess) {
  auto dns = twoTargets();
  dns.targets.resize(1);
  dns.failure_base_interval = milliseconds(100);
  dns.failure_max_interval = milliseconds(500);
  auto cluster = make(dns);
  cluster->start();
  random_value = ~uint64_t{0} - 1;  // near the top of every window (the modulus wraps 2^64-2)
  // Ceiling per retry: 100, 300, 700 -> capped at 500.
  std::vector<milliseconds> waits;
  for (int i = 0; i < 4; ++i) {
    resolver.answer("a.test", failed());
    auto asked = time.now();
    while (!resolver.isPending("a.test")) time.advance(milliseconds(1));
    waits.push_back(time.now() - asked);
  }
  for (size_t i = 0; i < waits.size(); ++i) {
    const std::vector<long> ceilings{100, 300, 500, 500};
    EXPECT_LE(waits[i].count(), ceilings[i]) << i;
  }
  // A fixed random value pins the waits exactly: (2^64 - 2) mod ceiling.
  random_value = 250;
  resolver.answer("a.test", failed());  // ceiling 700, capped at 500: 250 % 700 = 250 ms
  auto asked = time.now();
  time.advance(milliseconds(249));
  EXPECT_FALSE(resolver.isPending("a.test"));
  time.advance(milliseconds(1));
  ASSERT_TRUE(resolver.isPending("a.test"));
  EXPECT_EQ(time.now() - asked, milliseconds(250));
  resolver.answer("a.test", ok({"10.0.0.3"}));
  time.advance(milliseconds(5000));
  resolver.answer("a.test", failed());  // back to retry 1: ceiling 100 -> 250 % 100 = 50 ms
  asked = time.now();
  time.advance(milliseconds(49));
  EXPECT_FALSE(resolver.isPending("a.test"));
  time.advance(milliseconds(1));
  EXPECT_TRUE(resolver.isPending("a.test"));
}

TEST_F(DnsClusterTest, StrictDnsNoAddressRemovesTheTargetsHostsButLogicalDnsKeepsItsHost) {
  auto dns = twoTargets();
  dns.targets.resize(1);
  auto strict = make(dns);
  strict->start();
  resolver.answer("a.test", ok({"10.0.0.1"}));
  time.advance(milliseconds(5000));
  resolver.answer("a.test", ok({}));
  EXPECT_TRUE(strict->endpoints().empty());
  EXPECT_EQ(failures.value(), 0u);
  strict.reset();

  auto logical = make(dns, /*logical=*/true);
  logical->start();
  resolver.answer("a.test", ok({"10.0.0.1"}));
  time.advance(milliseconds(5000));
  resolver.answer("a.test", ok({}));
  EXPECT_EQ(addresses(logical->endpoints()), (std::vector<std::string>{"10.0.0.1:8080"}));
  EXPECT_EQ(failures.value(), 1u);
}

TEST_F(DnsClusterTest, LogicalDnsIsOneHostAtTheFirstAddressOfTheLatestAnswer) {
  auto dns = twoTargets();
  dns.targets.resize(1);
  auto cluster = make(dns, /*logical=*/true);
  cluster->start();
  resolver.answer("a.test", ok({"10.0.0.1", "10.0.0.2"}));
  EXPECT_EQ(addresses(cluster->endpoints()), (std::vector<std::string>{"10.0.0.1:8080"}));
  time.advance(milliseconds(5000));
  resolver.answer("a.test", ok({"10.0.0.2", "10.0.0.1"}));
  EXPECT_EQ(addresses(cluster->endpoints()), (std::vector<std::string>{"10.0.0.2:8080"}));
  EXPECT_EQ(changes, 2);
}

TEST_F(DnsClusterTest, TheLookupFamilyReachesTheResolver) {
  auto dns = twoTargets();
  dns.targets.resize(1);
  dns.lookup_family = Family::V4Preferred;
  Family seen = Family::Auto;
  struct Spy : DnsResolver {
    Family* seen;
    std::unique_ptr<DnsQuery> resolve(const std::string&, Family family, Callback) override {
      *seen = family;
      return nullptr;
    }
  } spy;
  spy.seen = &seen;
  DnsCluster cluster("c", false, dns, spy, time.factory(), nullptr, {}, nullptr);
  cluster.start();
  EXPECT_EQ(seen, Family::V4Preferred);
}

TEST_F(DnsClusterTest, DestroyingTheClusterCancelsItsQueries) {
  auto cluster = make(twoTargets());
  cluster->start();
  cluster.reset();
  EXPECT_FALSE(resolver.isPending("a.test"));
  EXPECT_FALSE(resolver.isPending("b.test"));
}

// --- DnsClusterSet ---

std::shared_ptr<config::Cluster> dnsCluster(const std::string& name, config::DnsResolution dns,
                                            config::ClusterType type = config::ClusterType::StrictDns) {
  auto c = std::make_shared<config::Cluster>();
  c->name = name;
  c->type = type;
  c->dns = std::move(dns);
  return c;
}

struct DnsClusterSetTest : DnsClusterTest {
  int resolvers_made = 0;
  int set_changes = 0;
  std::unique_ptr<DnsClusterSet> set;
  DnsClusterSetTest() {
    DnsClusterSet::Options o;
    o.resolvers = [this](const config::DnsResolution&) -> common::Result<std::unique_ptr<DnsResolver>> {
      ++resolvers_made;
      // Every cluster shares the scripted resolver through a forwarding one.
      struct Forward : DnsResolver {
        ScriptedResolver* r;
        std::unique_ptr<DnsQuery> resolve(const std::string& n, Family f, Callback cb) override {
          return r->resolve(n, f, std::move(cb));
        }
      };
      auto f = std::make_unique<Forward>();
      f->r = &resolver;
      return std::unique_ptr<DnsResolver>(std::move(f));
    };
    o.timers = time.factory();
    o.on_change = [this] { ++set_changes; };
    set = std::make_unique<DnsClusterSet>(std::move(o));
  }
};

TEST_F(DnsClusterSetTest, ResolvedEndpointsReplaceTheDnsClustersEndpointsAndOthersAreUntouched) {
  auto table = std::make_shared<config::ClusterTable>();
  auto dns = twoTargets();
  dns.targets.resize(1);
  table->by_name["dns"] = dnsCluster("dns", dns);
  auto stat = std::make_shared<config::Cluster>();
  stat->name = "static";
  table->by_name["static"] = stat;
  set->update(*table);
  resolver.answer("a.test", ok({"10.0.0.1"}));
  EXPECT_EQ(set_changes, 1);
  auto resolved = set->resolve(table);
  EXPECT_EQ(resolved->by_name.at("static"), stat);
  EXPECT_EQ(addresses(resolved->by_name.at("dns")->endpoints), (std::vector<std::string>{"10.0.0.1:8080"}));
  // Nothing changed: the same cluster object, so the workers keep their state.
  EXPECT_EQ(set->resolve(table)->by_name.at("dns"), resolved->by_name.at("dns"));
}

TEST_F(DnsClusterSetTest, ALocalitysSizeIsWhatItsNamesResolvedTo) {
  auto table = std::make_shared<config::ClusterTable>();
  auto dns = twoTargets();
  dns.targets[0].priority = dns.targets[1].priority = 0;
  dns.targets[1].locality = 1;
  auto cluster = dnsCluster("dns", dns);
  cluster->locality_weighted = true;
  cluster->localities = {{3, 0, 0}, {1, 0, 0}};
  table->by_name["dns"] = cluster;
  set->update(*table);
  resolver.answer("a.test", ok({"10.0.0.1", "10.0.0.2"}));
  resolver.answer("b.test", ok({"10.0.1.1"}));
  auto resolved = set->resolve(table)->by_name.at("dns");
  ASSERT_EQ(resolved->localities.size(), 2u);
  EXPECT_EQ(resolved->localities[0], (config::Locality{3, 0, 2}));
  EXPECT_EQ(resolved->localities[1], (config::Locality{1, 0, 1}));
  EXPECT_EQ(resolved->endpoints[2].locality, 1u);
  // The configured cluster is not changed.
  EXPECT_EQ(cluster->localities[0].hosts, 0u);
}

TEST_F(DnsClusterSetTest, ATableWithoutDnsClustersIsPassedThrough) {
  auto table = std::make_shared<config::ClusterTable>();
  table->by_name["static"] = std::make_shared<config::Cluster>();
  set->update(*table);
  EXPECT_EQ(set->resolve(table), table);
}

TEST_F(DnsClusterSetTest, AnUpdateKeepsAnUnchangedDnsClusterAndRestartsAChangedOne) {
  auto dns = twoTargets();
  dns.targets.resize(1);
  auto table = std::make_shared<config::ClusterTable>();
  table->by_name["dns"] = dnsCluster("dns", dns);
  set->update(*table);
  resolver.answer("a.test", ok({"10.0.0.1"}));
  // Same resolution settings (another connect_timeout): resolution goes on, hosts stay.
  auto other = std::make_shared<config::ClusterTable>();
  auto changed = dnsCluster("dns", dns);
  changed->connect_timeout = milliseconds(1234);
  other->by_name["dns"] = changed;
  set->update(*other);
  EXPECT_EQ(resolvers_made, 1);
  EXPECT_FALSE(resolver.isPending("a.test"));
  auto resolved = set->resolve(other);
  EXPECT_EQ(resolved->by_name.at("dns")->connect_timeout, milliseconds(1234));
  EXPECT_EQ(resolved->by_name.at("dns")->endpoints.size(), 1u);
  // New refresh rate: a new resolution starts at once, and the hosts resolved so far
  // keep serving until it answers.
  dns.refresh_rate = milliseconds(100);
  other->by_name["dns"] = dnsCluster("dns", dns);
  set->update(*other);
  EXPECT_EQ(resolvers_made, 2);
  EXPECT_TRUE(resolver.isPending("a.test"));
  EXPECT_EQ(addresses(set->resolve(other)->by_name.at("dns")->endpoints), (std::vector<std::string>{"10.0.0.1:8080"}));
  // Other hostnames: nothing to take over.
  dns.targets[0].hostname = "c.test";
  other->by_name["dns"] = dnsCluster("dns", dns);
  set->update(*other);
  EXPECT_TRUE(set->resolve(other)->by_name.at("dns")->endpoints.empty());
  // Removed: its query is cancelled.
  set->update(config::ClusterTable{});
  EXPECT_FALSE(resolver.isPending("a.test"));
  EXPECT_EQ(set->size(), 0u);
}

}  // namespace
}  // namespace culvert::upstream
