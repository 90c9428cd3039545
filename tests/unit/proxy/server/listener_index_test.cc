#include "proxy/server/listener_index.h"

#include <gtest/gtest.h>

namespace culvert::server {
namespace {

common::SocketAddress addr(const std::string& ip, uint16_t port) { return *common::SocketAddress::parse(ip, port); }

std::shared_ptr<config::Listener> virtualListener(std::string name, const std::string& ip, uint16_t port) {
  auto l = std::make_shared<config::Listener>();
  l->name = std::move(name);
  l->address = addr(ip, port);
  l->bind_to_port = false;
  return l;
}

TEST(VirtualListenerIndexTest, ExactBeatsAnyIpAndBoundListenersAreIgnored) {
  config::ListenerTable table;
  table.by_name["vip"] = virtualListener("vip", "10.96.0.10", 80);
  table.by_name["any80"] = virtualListener("any80", "0.0.0.0", 80);
  auto bound = virtualListener("bound", "10.96.0.11", 80);
  bound->bind_to_port = true;
  table.by_name["bound"] = bound;
  VirtualListenerIndex index(table);
  EXPECT_EQ(index.find(addr("10.96.0.10", 80))->name, "vip");
  EXPECT_EQ(index.find(addr("10.96.0.11", 80))->name, "any80");
  EXPECT_EQ(index.find(addr("10.96.0.10", 81)), nullptr);
  EXPECT_EQ(index.capturedDestinations().size(), 2u);
}

TEST(FilterChainSelectionTest, PortThenLongestPrefix) {
  config::Listener l;
  config::FilterChain wide;
  wide.name = "wide";
  wide.match.prefix_ranges.push_back(*common::CidrRange::parse("10.0.0.0", 8));
  config::FilterChain narrow;
  narrow.name = "narrow";
  narrow.match.prefix_ranges.push_back(*common::CidrRange::parse("10.96.0.0", 16));
  config::FilterChain port;
  port.name = "port";
  port.match.destination_port = 8080;
  config::FilterChain tls;
  tls.name = "tls";
  tls.match.transport_protocol = "tls";
  l.filter_chains = {wide, narrow, port, tls};
  EXPECT_EQ(selectFilterChain(l, addr("10.96.1.1", 80))->name, "narrow");
  EXPECT_EQ(selectFilterChain(l, addr("10.1.1.1", 80))->name, "wide");
  EXPECT_EQ(selectFilterChain(l, addr("10.96.1.1", 8080))->name, "port");
  EXPECT_EQ(selectFilterChain(l, addr("192.168.1.1", 80)), nullptr);
}

config::FilterChain tcpChain(std::string name) {
  config::FilterChain c;
  c.name = std::move(name);
  c.tcp_proxy = config::TcpProxy{"tcp", "backend", {}};
  return c;
}

config::FilterChain httpChain(std::string name) {
  config::FilterChain c;
  c.name = std::move(name);
  c.http.route_config = std::make_shared<config::RouteConfiguration>();
  return c;
}

TEST(FilterChainSelectionTest, SniffedBytesPickServerNameTransportAndKind) {
  config::Listener l;
  auto exact = tcpChain("exact_sni");
  exact.match.server_names = {"db.example.com"};
  auto wildcard = tcpChain("wildcard_sni");
  wildcard.match.server_names = {"*.example.com"};
  auto tls = tcpChain("any_tls");
  tls.match.transport_protocol = "tls";
  l.filter_chains = {exact, wildcard, tls, httpChain("http"), tcpChain("tcp")};
  EXPECT_TRUE(needsSniffing(l));
  auto dst = addr("10.96.0.10", 443);

  network::SniffResult r;
  r.state = network::SniffResult::State::Done;
  r.transport_protocol = "tls";
  r.server_name = "db.example.com";
  EXPECT_EQ(selectFilterChain(l, dst, &r)->name, "exact_sni");
  r.server_name = "web.example.com";
  EXPECT_EQ(selectFilterChain(l, dst, &r)->name, "wildcard_sni");
  r.server_name = "other.org";
  EXPECT_EQ(selectFilterChain(l, dst, &r)->name, "any_tls");

  network::SniffResult plain;
  plain.state = network::SniffResult::State::Done;
  plain.http = true;
  EXPECT_EQ(selectFilterChain(l, dst, &plain)->name, "http");
  plain.http = false;  // e.g. a server-first protocol: no bytes before the timeout
  EXPECT_EQ(selectFilterChain(l, dst, &plain)->name, "tcp");
}

TEST(FilterChainSelectionTest, SniffingOnlyWhenChainsNeedIt) {
  config::Listener http_only;
  http_only.filter_chains = {httpChain("a")};
  EXPECT_FALSE(needsSniffing(http_only));
  config::Listener mixed;
  mixed.filter_chains = {httpChain("a"), tcpChain("b")};
  EXPECT_TRUE(needsSniffing(mixed));
}

}  // namespace
}  // namespace culvert::server
