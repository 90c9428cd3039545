#include "agent/tenant_registry.h"

#include <gtest/gtest.h>

namespace culvert::agent {
namespace {

std::shared_ptr<const config::Snapshot> snapshotWith(std::vector<std::pair<std::string, std::string>> listeners) {
  auto snap = std::make_shared<config::Snapshot>();
  auto table = std::make_shared<config::ListenerTable>();
  for (const auto& [name, routes] : listeners) {
    auto l = std::make_shared<config::Listener>();
    l->name = name;
    config::FilterChain chain;
    auto rc = std::make_shared<config::RouteConfiguration>();
    rc->name = routes;
    chain.http.route_config = rc;
    l->filter_chains.push_back(chain);
    table->by_name[name] = l;
  }
  snap->listeners = table;
  return snap;
}

TEST(TenantRegistry, ResourcesOverDefaultsAppliedToExistingAndNewTenants) {
  common::StatsStore stats;
  TenantRegistry registry(stats, config::TenantLimits{100, 0, 0, 0, 0}, 0);
  auto a = registry.get("team-a");
  EXPECT_EQ(a, registry.get("team-a"));  // one context per name
  EXPECT_EQ(a->budget.limits()->max_downstream_connections, 100u);

  auto table = std::make_shared<config::TenantTable>();
  auto ta = std::make_shared<config::Tenant>();
  ta->name = "team-a";
  ta->limits.max_requests_in_flight = 5;
  ta->weight = 4;
  table->by_name["team-a"] = ta;
  auto tb = std::make_shared<config::Tenant>();
  tb->name = "team-b";
  tb->limits.max_downstream_connections = 7;
  table->by_name["team-b"] = tb;
  registry.apply(table);
  EXPECT_EQ(a->budget.limits()->max_requests_in_flight, 5u);
  EXPECT_EQ(a->budget.limits()->max_downstream_connections, 100u);
  EXPECT_EQ(a->weight.load(), 4u);
  EXPECT_EQ(registry.get("team-b")->budget.limits()->max_downstream_connections, 7u);  // made after apply

  // The resource goes away: back to the defaults.
  registry.apply(std::make_shared<config::TenantTable>());
  EXPECT_EQ(a->budget.limits()->max_requests_in_flight, 0u);
  EXPECT_EQ(a->weight.load(), 1u);
}

TEST(TenantRegistry, IdsAreGivenOnceAndReservedIdsFromARestartAreKept) {
  common::StatsStore stats;
  TenantRegistry registry(stats, {}, 0);
  // What a previous culvertd gave (read back from the pod registry at start).
  registry.reserveId("team-b", 2);
  registry.reserveId("team-c", 2);  // id taken: ignored
  registry.reserveId("team-b", 5);  // name taken: ignored
  EXPECT_EQ(registry.idOf("team-a"), 1u);
  EXPECT_EQ(registry.idOf("team-c"), 3u);  // 2 is team-b's
  EXPECT_EQ(registry.get("team-b")->id, 2u);
  EXPECT_EQ(registry.idOf("team-a"), 1u);
  EXPECT_EQ(registry.get("team-a")->id, 1u);  // a context takes the id given before it
}

TEST(TenantRegistry, DumpIsOneTenantsSliceOnly) {
  common::StatsStore stats;
  TenantRegistry registry(stats, config::TenantLimits{}, 0);
  auto table = std::make_shared<config::TenantTable>();
  auto ta = std::make_shared<config::Tenant>();
  ta->name = "team-a";
  ta->allowed_listeners = {"vip-a"};
  table->by_name["team-a"] = ta;
  registry.apply(table);
  registry.get("team-a")->budget.tryAcquireConnection();
  auto snap = snapshotWith({{"vip-a", "routes-a"}, {"vip-b", "routes-b"}});

  auto a = registry.dump("team-a", *snap);
  EXPECT_EQ(a["tenant"], "team-a");
  EXPECT_EQ(a["limits_source"], "culvert.v1.Tenant");
  EXPECT_EQ(a["listeners"], nlohmann::json::array({"vip-a"}));
  EXPECT_EQ(a["routes"], nlohmann::json::array({"routes-a"}));
  EXPECT_EQ(a["usage"]["downstream_connections"], 1);
  EXPECT_EQ(a.dump().find("vip-b"), std::string::npos);

  auto b = registry.dump("team-b", *snap);
  EXPECT_EQ(b["limits_source"], "bootstrap tenants.defaults");
  EXPECT_EQ(b["listeners"], nlohmann::json::array({"vip-a", "vip-b"}));  // no scope: all
}

}  // namespace
}  // namespace culvert::agent
