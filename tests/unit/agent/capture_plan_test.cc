// planCapture: which destinations and prefixes the BPF capture maps get from the
// virtual listeners (filter_chain_match prefix ranges narrow an any-IP listener).
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
  for (const auto& d : p.destinations) out.push_back(d.toString());
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

}  // namespace
}  // namespace culvert::agent
