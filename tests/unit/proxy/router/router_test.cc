#include "proxy/router/router.h"

#include <gtest/gtest.h>

#include <map>
#include <regex>

#include "proxy/router/route_matcher.h"

namespace culvert::router {
namespace {

using Action = config::HeaderValueOption::Action;
using Kind = config::StringMatcher::Kind;

std::shared_ptr<const common::Regex> re(std::string_view pattern) {
  auto r = common::Regex::compile(pattern);
  EXPECT_TRUE(r) << r.error().describe();
  return *r;
}

config::Route clusterRoute(std::string cluster) {
  config::Route r;
  r.match.prefix = "/";
  r.route = config::RouteAction{};
  r.route->cluster = std::move(cluster);
  return r;
}

http::RequestHead request(std::string path, std::vector<std::pair<std::string, std::string>> headers = {}) {
  http::RequestHead head;
  head.method = "GET";
  head.path = std::move(path);
  head.headers.add("host", "svc");
  for (auto& [k, v] : headers) head.headers.add(k, v);
  return head;
}

std::vector<std::string> all(const http::HeaderMap& headers, std::string_view name) {
  std::vector<std::string> out;
  for (const auto& [k, v] : headers.entries()) {
    if (k == name) out.push_back(v);
  }
  return out;
}

// --- matching ---

TEST(StringMatcherTest, KindsAndIgnoreCase) {
  EXPECT_TRUE(matchesString({Kind::Exact, "abc", false, nullptr}, "abc"));
  EXPECT_FALSE(matchesString({Kind::Exact, "abc", false, nullptr}, "ABC"));
  EXPECT_TRUE(matchesString({Kind::Exact, "abc", true, nullptr}, "ABC"));
  EXPECT_TRUE(matchesString({Kind::Prefix, "ab", false, nullptr}, "abc"));
  EXPECT_FALSE(matchesString({Kind::Prefix, "bc", false, nullptr}, "abc"));
  EXPECT_TRUE(matchesString({Kind::Suffix, "bc", true, nullptr}, "ABC"));
  EXPECT_TRUE(matchesString({Kind::Contains, "b", false, nullptr}, "abc"));
  EXPECT_FALSE(matchesString({Kind::Contains, "x", false, nullptr}, "abc"));
  // safe_regex is a full match, not a search.
  EXPECT_TRUE(matchesString({Kind::Regex, {}, false, re("a.c")}, "abc"));
  EXPECT_FALSE(matchesString({Kind::Regex, {}, false, re("b")}, "abc"));
}

TEST(RouteMatchTest, SafeRegexMatchesThePathWithoutQuery) {
  config::VirtualHost v;
  auto r = clusterRoute("users");
  r.match.prefix.reset();
  r.match.safe_regex = re("/users/[0-9]+");
  v.routes = {r, clusterRoute("default")};
  http::HeaderMap h;
  EXPECT_EQ(selectRoute(v, "/users/42", h)->route->cluster, "users");
  EXPECT_EQ(selectRoute(v, "/users/42?x=1", h)->route->cluster, "users");
  EXPECT_EQ(selectRoute(v, "/users/42/posts", h)->route->cluster, "default");
  EXPECT_EQ(selectRoute(v, "/users/abc", h)->route->cluster, "default");
}

TEST(RouteMatchTest, HeaderMatchers) {
  config::VirtualHost v;
  auto r = clusterRoute("matched");
  config::HeaderMatcher version{"x-version", config::StringMatcher{Kind::Regex, {}, false, re("v[12]")}, {}, false, false};
  config::HeaderMatcher range{"x-shard", {}, config::Int64Range{10, 20}, false, false};
  config::HeaderMatcher absent{"x-debug", {}, {}, true, true};
  r.match.headers = {version, range, absent};
  v.routes = {r, clusterRoute("default")};
  auto pick = [&](std::vector<std::pair<std::string, std::string>> headers) {
    return selectRoute(v, "/", request("/", std::move(headers)).headers)->route->cluster;
  };
  EXPECT_EQ(pick({{"x-version", "v1"}, {"x-shard", "10"}}), "matched");
  EXPECT_EQ(pick({{"x-version", "v2"}, {"x-shard", "19"}}), "matched");
  EXPECT_EQ(pick({{"x-version", "v3"}, {"x-shard", "10"}}), "default");
  EXPECT_EQ(pick({{"x-version", "v1"}, {"x-shard", "20"}}), "default");   // end is exclusive
  EXPECT_EQ(pick({{"x-version", "v1"}, {"x-shard", "1x"}}), "default");   // not an integer
  EXPECT_EQ(pick({{"x-version", "v1"}, {"x-shard", "-5"}}), "default");
  EXPECT_EQ(pick({{"x-version", "v1"}, {"x-shard", "15"}, {"x-debug", "1"}}), "default");
  EXPECT_EQ(pick({{"x-shard", "15"}}), "default");
  // A header sent twice is matched as its values joined by ',' (Envoy).
  EXPECT_EQ(pick({{"x-version", "v1"}, {"x-version", "v2"}, {"x-shard", "15"}}), "default");
}

TEST(RouteMatchTest, QueryParameters) {
  config::VirtualHost v;
  auto r = clusterRoute("debug");
  r.match.query_parameters = {{"debug", config::StringMatcher{Kind::Exact, "1", false, nullptr}}, {"trace", {}}};
  v.routes = {r, clusterRoute("default")};
  http::HeaderMap h;
  EXPECT_EQ(selectRoute(v, "/a?debug=1&trace", h)->route->cluster, "debug");
  EXPECT_EQ(selectRoute(v, "/a?trace=x&debug=1", h)->route->cluster, "debug");
  EXPECT_EQ(selectRoute(v, "/a?debug=2&trace", h)->route->cluster, "default");
  EXPECT_EQ(selectRoute(v, "/a?debug=1", h)->route->cluster, "default");
  EXPECT_EQ(selectRoute(v, "/a?xdebug=1&trace", h)->route->cluster, "default");
  EXPECT_EQ(selectRoute(v, "/a", h)->route->cluster, "default");
}

// --- weighted clusters ---

TEST(WeightedClusterTest, PickFollowsWeightsInOrder) {
  config::WeightedClusters w;
  w.clusters = {{"a", 1, {}}, {"zero", 0, {}}, {"b", 3, {}}};
  w.total_weight = 4;
  EXPECT_EQ(pickWeightedCluster(w, 0).name, "a");
  EXPECT_EQ(pickWeightedCluster(w, 1).name, "b");
  EXPECT_EQ(pickWeightedCluster(w, 3).name, "b");
  EXPECT_EQ(pickWeightedCluster(w, 4).name, "a");  // modulo the total
  std::map<std::string, int> counts;
  for (uint64_t i = 0; i < 4000; ++i) counts[pickWeightedCluster(w, i * 7919).name]++;
  EXPECT_EQ(counts["a"], 1000);
  EXPECT_EQ(counts["b"], 3000);
  EXPECT_EQ(counts.count("zero"), 0u);
}

TEST(WeightedClusterTest, DecisionNamesThePickedCluster) {
  config::RouteConfiguration routes;
  config::VirtualHost v;
  v.domains = {"*"};
  auto r = clusterRoute("");
  r.route->weighted_clusters = config::WeightedClusters{{{"a", 50, {}}, {"b", 50, {}}}, 100};
  v.routes = {r};
  routes.virtual_hosts = {v};
  EXPECT_EQ(decideRoute(routes, request("/"), 10).cluster(), "a");
  EXPECT_EQ(decideRoute(routes, request("/"), 60).cluster(), "b");
  EXPECT_EQ(decideRoute(routes, request("/"), 160).cluster(), "b");
}

// --- the upstream request ---

class PrepareRequestTest : public ::testing::Test {
protected:
  void SetUp() override {
    config::VirtualHost v;
    v.domains = {"*"};
    v.routes = {clusterRoute("c")};
    routes.virtual_hosts = {v};
  }
  http::RequestHead prepare(http::RequestHead head) {
    auto decision = decideRoute(routes, head, 0);
    EXPECT_NE(decision.route, nullptr);
    prepareUpstreamRequest(routes, decision, {.remote_ip = "10.244.1.7"}, head);
    return head;
  }
  config::Route& route() { return routes.virtual_hosts[0].routes[0]; }
  config::RouteConfiguration routes;
};

TEST_F(PrepareRequestTest, ForwardedForIsThePodIp) {
  auto out = prepare(request("/"));
  EXPECT_EQ(all(out.headers, "x-forwarded-for"), std::vector<std::string>{"10.244.1.7"});
  out = prepare(request("/", {{"x-forwarded-for", "1.2.3.4"}}));
  EXPECT_EQ(all(out.headers, "x-forwarded-for"), std::vector<std::string>{"1.2.3.4, 10.244.1.7"});
  EXPECT_EQ(out.headers.get("x-forwarded-proto"), "http");
}

TEST_F(PrepareRequestTest, RequestIdGeneratedWhenAbsentKeptWhenPresent) {
  auto a = prepare(request("/"));
  auto b = prepare(request("/"));
  ASSERT_TRUE(a.headers.get("x-request-id"));
  std::regex uuid4("[0-9a-f]{8}-[0-9a-f]{4}-4[0-9a-f]{3}-[89ab][0-9a-f]{3}-[0-9a-f]{12}");
  EXPECT_TRUE(std::regex_match(std::string(*a.headers.get("x-request-id")), uuid4));
  EXPECT_NE(*a.headers.get("x-request-id"), *b.headers.get("x-request-id"));
  auto kept = prepare(request("/", {{"x-request-id", "abc"}}));
  EXPECT_EQ(all(kept.headers, "x-request-id"), std::vector<std::string>{"abc"});
}

TEST_F(PrepareRequestTest, AppendActions) {
  route().headers.request_headers_to_add = {
      {"x-append", "2", Action::AppendIfExistsOrAdd, false},
      {"x-absent", "new", Action::AddIfAbsent, false},
      {"x-present", "new", Action::AddIfAbsent, false},
      {"x-over", "new", Action::OverwriteIfExistsOrAdd, false},
      {"x-only-if", "new", Action::OverwriteIfExists, false},
      {"x-empty", "", Action::AppendIfExistsOrAdd, false},
      {"x-kept-empty", "", Action::AppendIfExistsOrAdd, true},
  };
  auto out = prepare(request("/", {{"x-append", "1"}, {"x-present", "old"}, {"x-over", "old"}}));
  EXPECT_EQ(all(out.headers, "x-append"), (std::vector<std::string>{"1", "2"}));
  EXPECT_EQ(all(out.headers, "x-absent"), std::vector<std::string>{"new"});
  EXPECT_EQ(all(out.headers, "x-present"), std::vector<std::string>{"old"});
  EXPECT_EQ(all(out.headers, "x-over"), std::vector<std::string>{"new"});
  EXPECT_TRUE(all(out.headers, "x-only-if").empty());
  EXPECT_TRUE(all(out.headers, "x-empty").empty());
  EXPECT_EQ(all(out.headers, "x-kept-empty"), std::vector<std::string>{""});
}

TEST_F(PrepareRequestTest, LevelsApplyMostSpecificFirstSoTheGlobalLevelWins) {
  route().headers.request_headers_to_add = {{"x-level", "route", Action::OverwriteIfExistsOrAdd, false}};
  routes.virtual_hosts[0].headers.request_headers_to_add = {{"x-level", "vhost", Action::OverwriteIfExistsOrAdd, false}};
  routes.headers.request_headers_to_add = {{"x-level", "global", Action::OverwriteIfExistsOrAdd, false},
                                           {"x-added-by-global", "1", Action::AppendIfExistsOrAdd, false}};
  // Each level removes before it adds; a later level's removal sees earlier additions.
  routes.virtual_hosts[0].headers.request_headers_to_remove = {"x-secret", "x-added-by-route"};
  route().headers.request_headers_to_add.push_back({"x-added-by-route", "1", Action::AppendIfExistsOrAdd, false});
  route().headers.request_headers_to_remove = {"x-added-by-global"};
  auto out = prepare(request("/", {{"x-secret", "s"}}));
  EXPECT_EQ(all(out.headers, "x-level"), std::vector<std::string>{"global"});
  EXPECT_TRUE(all(out.headers, "x-secret").empty());
  EXPECT_TRUE(all(out.headers, "x-added-by-route").empty());
  EXPECT_EQ(all(out.headers, "x-added-by-global"), std::vector<std::string>{"1"});
}

TEST_F(PrepareRequestTest, WeightedClusterHeadersComeFirst) {
  route().route->weighted_clusters = config::WeightedClusters{{{"a", 1, {}}}, 1};
  route().route->weighted_clusters->clusters[0].headers.request_headers_to_add = {
      {"x-cluster", "a", Action::AppendIfExistsOrAdd, false}};
  route().headers.request_headers_to_add = {{"x-cluster", "route", Action::OverwriteIfExistsOrAdd, false}};
  auto out = prepare(request("/"));
  EXPECT_EQ(all(out.headers, "x-cluster"), std::vector<std::string>{"route"});
}

TEST_F(PrepareRequestTest, RegexRewriteKeepsTheQuery) {
  route().route->regex_rewrite = config::RegexRewrite{re("^/api/v([0-9]+)/(.*)"), "/\\2?v=\\1"};
  auto out = prepare(request("/api/v2/users?x=1"));
  // The substitution may not contain '?' (translate rejects it); here it shows that only
  // the path part was given to the regex.
  EXPECT_EQ(out.path, "/users?v=2?x=1");
  route().route->regex_rewrite = config::RegexRewrite{re("o"), "0"};
  EXPECT_EQ(prepare(request("/foo/boo?o=o")).path, "/f00/b00?o=o");
}

TEST_F(PrepareRequestTest, PrefixAndHostRewrite) {
  route().match.prefix = "/old";
  route().route->prefix_rewrite = "/new";
  route().route->host_rewrite_literal = "backend.internal";
  auto out = prepare(request("/old/x?q=1"));
  EXPECT_EQ(out.path, "/new/x?q=1");
  EXPECT_EQ(out.headers.get("host"), "backend.internal");
}

TEST(PrepareResponseTest, LevelsAndRemovals) {
  config::RouteConfiguration routes;
  config::VirtualHost v;
  v.domains = {"*"};
  v.routes = {clusterRoute("c")};
  v.routes[0].headers.response_headers_to_add = {{"x-route", "1", Action::AppendIfExistsOrAdd, false}};
  v.headers.response_headers_to_remove = {"server"};
  routes.virtual_hosts = {v};
  routes.headers.response_headers_to_add = {{"x-route", "global", Action::OverwriteIfExists, false}};
  auto decision = decideRoute(routes, request("/"), 0);
  http::HeaderMap h;
  h.add("server", "backend");
  h.add("content-type", "text/plain");
  prepareDownstreamResponse(routes, decision, h);
  EXPECT_FALSE(h.get("server"));
  EXPECT_EQ(all(h, "x-route"), std::vector<std::string>{"global"});
  EXPECT_EQ(h.get("content-type"), "text/plain");
  // No route: nothing changes.
  http::HeaderMap untouched;
  untouched.add("server", "x");
  prepareDownstreamResponse(routes, RouteDecision{}, untouched);
  EXPECT_TRUE(untouched.get("server"));
}

}  // namespace
}  // namespace culvert::router

namespace culvert::router {
namespace {

TEST(ExpectContinueTest, AnsweredLocallyAndStripped) {
  http::HeaderMap h;
  h.add("expect", "100-Continue");
  h.add("content-length", "5");
  EXPECT_TRUE(takeExpectContinue(h));
  EXPECT_FALSE(h.get("expect"));
  EXPECT_FALSE(takeExpectContinue(h));
  http::HeaderMap other;
  other.add("expect", "something-else");
  EXPECT_FALSE(takeExpectContinue(other));
  EXPECT_TRUE(other.get("expect"));  // left for the upstream to answer (417 or not)
}

}  // namespace
}  // namespace culvert::router
