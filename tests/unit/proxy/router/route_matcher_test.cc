#include "proxy/router/route_matcher.h"

#include <gtest/gtest.h>

namespace culvert::router {
namespace {

config::Route prefixRoute(std::string prefix, std::string cluster) {
  config::Route r;
  r.match.prefix = std::move(prefix);
  r.route = config::RouteAction{};
  r.route->cluster = std::move(cluster);
  return r;
}

config::VirtualHost vhost(std::string name, std::vector<std::string> domains) {
  config::VirtualHost v;
  v.name = std::move(name);
  v.domains = std::move(domains);
  v.routes.push_back(prefixRoute("/", v.name));
  return v;
}

class VirtualHostSelectionTest : public ::testing::Test {
protected:
  void SetUp() override {
    routes.virtual_hosts = {vhost("any", {"*"}), vhost("suffix", {"*.example.com"}),
                            vhost("longer_suffix", {"*.api.example.com"}), vhost("prefix", {"api.*"}),
                            vhost("exact", {"www.example.com", "www.example.com:8080"})};
  }
  std::string pick(std::string_view authority) {
    const auto* v = selectVirtualHost(routes, authority);
    return v ? v->name : "none";
  }
  config::RouteConfiguration routes;
};

TEST_F(VirtualHostSelectionTest, ExactBeatsWildcards) { EXPECT_EQ(pick("www.example.com"), "exact"); }
TEST_F(VirtualHostSelectionTest, PortIsIgnoredUnlessNamed) {
  EXPECT_EQ(pick("www.example.com:9999"), "exact");
  EXPECT_EQ(pick("WWW.Example.com"), "exact");
}
TEST_F(VirtualHostSelectionTest, LongestSuffixWins) {
  EXPECT_EQ(pick("a.example.com"), "suffix");
  EXPECT_EQ(pick("v1.api.example.com"), "longer_suffix");
}
TEST_F(VirtualHostSelectionTest, SuffixBeatsPrefix) { EXPECT_EQ(pick("api.example.com"), "suffix"); }
TEST_F(VirtualHostSelectionTest, PrefixThenCatchAll) {
  EXPECT_EQ(pick("api.internal"), "prefix");
  EXPECT_EQ(pick("other"), "any");
  EXPECT_EQ(pick(""), "any");
}
TEST_F(VirtualHostSelectionTest, WildcardNeedsANonEmptyPart) {
  // "*.example.com" does not match "example.com" itself (Envoy's rule).
  EXPECT_EQ(pick("example.com"), "any");
}

TEST(RouteSelectionTest, FirstMatchingRouteWinsAndQueryIsIgnored) {
  config::VirtualHost v;
  v.domains = {"*"};
  v.routes = {prefixRoute("/api/", "api"), prefixRoute("/", "default")};
  config::Route exact;
  exact.match.path = "/healthz";
  exact.direct_response = config::DirectResponse{200, "ok"};
  v.routes.insert(v.routes.begin(), exact);
  http::HeaderMap h;
  EXPECT_EQ(selectRoute(v, "/api/users?x=/", h)->route->cluster, "api");
  EXPECT_EQ(selectRoute(v, "/apix", h)->route->cluster, "default");
  EXPECT_TRUE(selectRoute(v, "/healthz?full=1", h)->direct_response);
  EXPECT_EQ(selectRoute(v, "/healthz/more", h)->route->cluster, "default");
}

TEST(RouteSelectionTest, CaseInsensitivePrefix) {
  config::VirtualHost v;
  auto r = prefixRoute("/API", "api");
  r.match.case_sensitive = false;
  v.routes = {r};
  http::HeaderMap h;
  EXPECT_NE(selectRoute(v, "/api/x", h), nullptr);
  v.routes[0].match.case_sensitive = true;
  EXPECT_EQ(selectRoute(v, "/api/x", h), nullptr);
}

TEST(RouteSelectionTest, HeaderMatchers) {
  config::VirtualHost v;
  auto canary = prefixRoute("/", "canary");
  canary.match.headers.push_back(
      {"x-canary", config::StringMatcher{config::StringMatcher::Kind::Exact, "1", false, nullptr}, {}, false, false});
  auto no_debug = prefixRoute("/", "no_debug");
  no_debug.match.headers.push_back({"x-debug", {}, {}, true, true});
  v.routes = {canary, no_debug, prefixRoute("/", "rest")};
  http::HeaderMap h;
  EXPECT_EQ(selectRoute(v, "/", h)->route->cluster, "no_debug");
  h.add("x-canary", "1");
  EXPECT_EQ(selectRoute(v, "/", h)->route->cluster, "canary");
  http::HeaderMap debug;
  debug.add("x-debug", "yes");
  EXPECT_EQ(selectRoute(v, "/", debug)->route->cluster, "rest");
}

TEST(RouteSelectionTest, NoMatchIsNull) {
  config::RouteConfiguration rc;
  http::HeaderMap h;
  EXPECT_EQ(matchRoute(rc, "host", "/", h), nullptr);
}

}  // namespace
}  // namespace culvert::router
