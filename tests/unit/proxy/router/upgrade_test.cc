#include "proxy/router/upgrade.h"

#include <gtest/gtest.h>

#include <vector>

#include "proxy/router/route_matcher.h"

namespace culvert::router {
namespace {

http::RequestHead request(std::string method, std::vector<std::pair<std::string, std::string>> headers) {
  http::RequestHead head;
  head.method = std::move(method);
  head.path = "/";
  for (auto& [name, value] : headers) head.headers.add(name, value);
  return head;
}

TEST(RequestedUpgrade, WebSocketNeedsTheConnectionToken) {
  EXPECT_EQ(requestedUpgrade(request("GET", {{"connection", "Upgrade"}, {"upgrade", "WebSocket"}})), "websocket");
  EXPECT_EQ(requestedUpgrade(request("GET", {{"connection", "keep-alive, upgrade"}, {"upgrade", " websocket "}})),
            "websocket");
  EXPECT_EQ(requestedUpgrade(request("GET", {{"connection", "keep-alive"}, {"connection", "UPGRADE"},
                                             {"upgrade", "websocket"}})),
            "websocket");
  // Without "upgrade" in Connection the header is not a request to upgrade (RFC 9110 §7.8).
  EXPECT_EQ(requestedUpgrade(request("GET", {{"upgrade", "websocket"}})), std::nullopt);
  EXPECT_EQ(requestedUpgrade(request("GET", {{"connection", "upgrades"}, {"upgrade", "websocket"}})), std::nullopt);
  EXPECT_EQ(requestedUpgrade(request("GET", {{"connection", "upgrade"}})), std::nullopt);
  EXPECT_EQ(requestedUpgrade(request("GET", {})), std::nullopt);
  EXPECT_EQ(requestedUpgrade(request("CONNECT", {})), "connect");
}

TEST(DecideUpgrade, EnvoysTable) {
  using config::UpgradeConfig;
  std::vector<UpgradeConfig> hcm_on = {{"websocket", true, false}};
  std::vector<UpgradeConfig> hcm_off = {{"websocket", false, false}};
  config::RouteAction plain;
  config::RouteAction route_on;
  route_on.upgrade_configs = {{"websocket", true, false}};
  config::RouteAction route_off;
  route_off.upgrade_configs = {{"websocket", false, false}};
  // HCM T, route default → T; HCM T, route F → F; HCM F, route T → T; HCM F, route default → F.
  EXPECT_EQ(decideUpgrade(hcm_on, &plain, "websocket"), UpgradeAction::Forward);
  EXPECT_EQ(decideUpgrade(hcm_on, &route_off, "websocket"), UpgradeAction::Reject);
  EXPECT_EQ(decideUpgrade(hcm_off, &route_on, "websocket"), UpgradeAction::Forward);
  EXPECT_EQ(decideUpgrade(hcm_off, &plain, "websocket"), UpgradeAction::Reject);
  // A type the connection manager does not list is refused, whatever the route says.
  EXPECT_EQ(decideUpgrade({}, &route_on, "websocket"), UpgradeAction::Reject);
  EXPECT_EQ(decideUpgrade(hcm_on, &plain, "connect"), UpgradeAction::Reject);
  // No route: the connection manager alone decides (the caller then answers 404).
  EXPECT_EQ(decideUpgrade(hcm_on, nullptr, "websocket"), UpgradeAction::Forward);
  EXPECT_EQ(decideUpgrade(hcm_off, nullptr, "websocket"), UpgradeAction::Reject);
}

TEST(DecideUpgrade, ConnectTerminatesOnlyWithConnectConfig) {
  std::vector<config::UpgradeConfig> hcm = {{"connect", true, false}};
  config::RouteAction forward;
  config::RouteAction terminate;
  terminate.upgrade_configs = {{"connect", true, true}};
  config::RouteAction disabled;
  disabled.upgrade_configs = {{"connect", false, true}};
  EXPECT_EQ(decideUpgrade(hcm, &forward, "connect"), UpgradeAction::Forward);
  EXPECT_EQ(decideUpgrade(hcm, &terminate, "connect"), UpgradeAction::TerminateConnect);
  EXPECT_EQ(decideUpgrade(hcm, &disabled, "connect"), UpgradeAction::Reject);
}

TEST(SelectRoute, ConnectMatcherMatchesConnectOnly) {
  config::VirtualHost vhost;
  config::Route path_route;
  path_route.name = "path";
  path_route.match.prefix = "";
  config::Route connect_route;
  connect_route.name = "connect";
  connect_route.match.connect_matcher = true;
  vhost.routes = {connect_route, path_route};
  http::HeaderMap headers;
  const auto* plain = selectRoute(vhost, "/x", headers, false);
  ASSERT_NE(plain, nullptr);
  EXPECT_EQ(plain->name, "path");
  const auto* connect = selectRoute(vhost, "example.com:443", headers, true);
  ASSERT_NE(connect, nullptr);
  EXPECT_EQ(connect->name, "connect");
  // A CONNECT never falls through to a path route, even a catch-all one.
  vhost.routes = {path_route};
  EXPECT_EQ(selectRoute(vhost, "example.com:443", headers, true), nullptr);
}

}  // namespace
}  // namespace culvert::router
