// planCapture: which destinations and prefixes the BPF capture maps get from the
// virtual listeners (filter_chain_match prefix ranges narrow an any-IP listener), and the
// tenant scope slots each entry carries.
#include "agent/capture_plan.h"

#include <gtest/gtest.h>

#include <algorithm>

namespace culvert::agent {
namespace {

common::SocketAddress addr(const char* ip, uint16_t port) { return *common::SocketAddress::parse(ip, port); }
common::CidrRange cidr(const char* ip, uint32_t len) { return *common::CidrRange::parse(ip, len); }

config::FilterChain chain(std::vector<common::CidrRange> ranges) {
  config::FilterChain c;
  c.match.prefix_ranges = std::move(ranges);
  return c;
}

void add(config::ListenerTable& t, const char* name, common::SocketAddress a, bool bind,
         std::vector<config::FilterChain> chains) {
  auto l = std::make_shared<config::Listener>();
  l->name = name;
  l->address = a;
  l->bind_to_port = bind;
  l->filter_chains = std::move(chains);
  t.by_name[name] = l;
}

std::vector<std::string> strings(const CapturePlan& p) {
  std::vector<std::string> out;
  for (const auto& d : p.destinations) out.push_back(d.address.toString());
  for (const auto& x : p.prefixes) {
    out.push_back(x.range.prefix.ip() + "/" + std::to_string(x.range.length) + ":" + std::to_string(x.port));
  }
  std::sort(out.begin(), out.end());
  return out;
}

TEST(CapturePlanTest, ExactVirtualListenersAreCapturedAsTheyAreAndBoundOnesNot) {
  config::ListenerTable t;
  add(t, "vip", addr("10.96.0.10", 80), false, {chain({cidr("10.0.0.0", 8)})});  // exact: ranges don't narrow
  add(t, "vip6", addr("fd00:96::10", 80), false, {chain({})});
  add(t, "bound", addr("127.0.0.1", 18080), true, {chain({})});
  EXPECT_EQ(strings(planCapture(t)), (std::vector<std::string>{"10.96.0.10:80", "[fd00:96::10]:80"}));
}

TEST(CapturePlanTest, AnyIpListenerIsNarrowedByItsChainsPrefixRanges) {
  config::ListenerTable t;
  add(t, "tls", addr("0.0.0.0", 443), false,
      {chain({cidr("10.100.0.0", 16)}), chain({cidr("10.101.0.0", 16), cidr("fd00::", 8)})});
  add(t, "tls6", addr("::", 443), false, {chain({cidr("fd00:100::", 32)})});
  EXPECT_EQ(strings(planCapture(t)),
            (std::vector<std::string>{"10.100.0.0/16:443", "10.101.0.0/16:443", "fd00:100::/32:443"}));
}

TEST(CapturePlanTest, OneChainWithoutRangesTakesTheWholePort) {
  config::ListenerTable t;
  add(t, "any", addr("0.0.0.0", 8080), false, {chain({cidr("10.100.0.0", 16)}), chain({})});
  add(t, "nochains", addr("0.0.0.0", 9090), false, {});
  EXPECT_EQ(strings(planCapture(t)), (std::vector<std::string>{"0.0.0.0:8080", "0.0.0.0:9090"}));
}

std::shared_ptr<const config::Tenant> tenant(const char* name, std::vector<std::string> listeners) {
  auto t = std::make_shared<config::Tenant>();
  t->name = name;
  t->allowed_listeners = std::move(listeners);
  return t;
}

TEST(CapturePlanTest, EveryEntryCarriesTheSlotsOfTheTenantsAllowedItsListener) {
  config::ListenerTable t;
  add(t, "a", addr("10.96.0.10", 80), false, {chain({})});
  add(t, "b", addr("fd00:96::10", 80), false, {chain({})});
  add(t, "tls", addr("0.0.0.0", 443), false, {chain({cidr("10.100.0.0", 16)})});
  ListenerScopes scopes;
  scopes["a"].set(3);
  scopes["tls"].set(3).set(200);
  auto plan = planCapture(t, scopes);
  ASSERT_EQ(plan.destinations.size(), 2u);
  for (const auto& d : plan.destinations) {
    EXPECT_EQ(d.tenants, d.address.isV4() ? ebpf::TenantScope().set(3) : ebpf::TenantScope()) << d.address.toString();
  }
  ASSERT_EQ(plan.prefixes.size(), 1u);
  EXPECT_EQ(plan.prefixes[0].tenants, ebpf::TenantScope().set(3).set(200));
}

TEST(CapturePlanTest, ListenerScopesFollowAllowedListenersOfTenantsWithSlots) {
  config::TenantTable tenants;
  tenants.by_name["red"] = tenant("red", {"a", "b"});
  tenants.by_name["blue"] = tenant("blue", {"b"});
  tenants.by_name["open"] = tenant("open", {});  // unrestricted: no slot, no bits
  std::map<std::string, uint32_t> ids{{"red", 1}, {"blue", 2}, {"open", 3}};
  auto id_of = [&](const std::string& n) { return ids.at(n); };
  EXPECT_EQ(restrictedTenants(tenants, id_of), (std::set<uint32_t>{1, 2}));
  auto scopes = listenerScopes(tenants, id_of, {{1, 0}, {2, 7}});
  EXPECT_EQ(scopes["a"], ebpf::TenantScope().set(0));
  EXPECT_EQ(scopes["b"], ebpf::TenantScope().set(0).set(7));
  // A restricted tenant without a slot (overflow) sets no bit anywhere.
  scopes = listenerScopes(tenants, id_of, {{1, 0}});
  EXPECT_EQ(scopes["b"], ebpf::TenantScope().set(0));
}

TEST(ScopeSlotsTest, TenantsKeepTheirSlotsAndNewOnesTakeTheLowestNeverJustFreedOnes) {
  // Tenant 5 had slot 0 and is no longer restricted; 6 keeps slot 1; 7 and 8 are new.
  auto s = assignScopeSlots({{5, 0}, {6, 1}}, {6, 7, 8}, 4);
  EXPECT_EQ(s.slots, (std::map<uint32_t, uint32_t>{{6, 1}, {7, 2}, {8, 3}}));
  EXPECT_TRUE(s.overflow.empty());
  // Next change: slot 0 is free now.
  s = assignScopeSlots(s.slots, {6, 7, 8, 9}, 4);
  EXPECT_EQ(s.slots.at(9), 0u);
}

TEST(ScopeSlotsTest, BeyondCapacityTenantsOverflow) {
  auto s = assignScopeSlots({}, {1, 2, 3}, 2);
  EXPECT_EQ(s.slots.size(), 2u);
  EXPECT_EQ(s.overflow, (std::vector<uint32_t>{3}));
  // A slot out of range (a damaged pin) is replaced.
  s = assignScopeSlots({{1, 9}}, {1}, 2);
  EXPECT_EQ(s.slots, (std::map<uint32_t, uint32_t>{{1, 0}}));
}

}  // namespace
}  // namespace culvert::agent
