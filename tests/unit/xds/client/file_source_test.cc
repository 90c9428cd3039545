#include "xds/client/file_source.h"

#include <gtest/gtest.h>
#include <nlohmann/json.hpp>
#include <unistd.h>

#include <filesystem>
#include <fstream>
#include <set>
#include <string>

namespace culvert::xds::client {
namespace {

namespace fs = std::filesystem;

class FileSourceTest : public ::testing::Test {
protected:
  void SetUp() override {
    char tmpl[] = "/tmp/culvert-xds-test-XXXXXX";
    ASSERT_NE(mkdtemp(tmpl), nullptr);
    dir_ = tmpl;
  }
  void TearDown() override {
    std::error_code ec;
    fs::remove_all(dir_, ec);
  }
  void write(const std::string& name, const std::string& text) {
    std::ofstream out(dir_ / name);
    out << text;
  }
  void copyTestdata(const std::string& name) { fs::copy_file(fs::path(CULVERT_XDS_TESTDATA) / name, dir_ / name); }

  LoadResult load() {
    auto r = loadResourceDirectory(dir_);
    EXPECT_TRUE(r) << r.error().describe();
    return r ? std::move(*r) : LoadResult{};
  }

  fs::path dir_;
};

void expectExample(const LoadResult& r) {
  EXPECT_TRUE(r.errors.empty()) << r.errors[0].file << " " << r.errors[0].reason;
  EXPECT_EQ(r.snapshot.version, "1");
  ASSERT_EQ(r.snapshot.listeners->by_name.count("backend-vip"), 1u);
  const auto& l = *r.snapshot.listeners->by_name.at("backend-vip");
  EXPECT_FALSE(l.bind_to_port);
  EXPECT_EQ(l.address.toString(), "10.96.0.10:80");
  ASSERT_EQ(l.filter_chains.size(), 1u);
  ASSERT_NE(l.filter_chains[0].http.route_config, nullptr);
  EXPECT_EQ(l.filter_chains[0].http.route_config->virtual_hosts.at(0).routes.at(0).route->cluster, "backend");
  ASSERT_EQ(r.snapshot.clusters->by_name.count("backend"), 1u);
  const auto& c = *r.snapshot.clusters->by_name.at("backend");
  EXPECT_EQ(c.connect_timeout, std::chrono::seconds(1));
  ASSERT_EQ(c.endpoints.size(), 1u);
  EXPECT_EQ(c.endpoints[0].address.toString(), "10.244.1.2:8080");
}

TEST_F(FileSourceTest, LoadsYamlExample) {
  copyTestdata("example.yaml");
  expectExample(load());
}

TEST_F(FileSourceTest, LoadsJsonExample) {
  copyTestdata("example.json");
  expectExample(load());
}

TEST_F(FileSourceTest, OneBadResourceDoesNotHideTheGoodOne) {
  write("mixed.yaml", R"(
version_info: v7
resources:
- "@type": type.googleapis.com/envoy.config.cluster.v3.Cluster
  name: good
  load_assignment:
    cluster_name: good
    endpoints: [{ lb_endpoints: [{ endpoint: { address: { socket_address: { address: 10.0.0.1, port_value: 80 } } } }] }]
- "@type": type.googleapis.com/envoy.config.cluster.v3.Cluster
  name: bad
  type: LOGICAL_DNS
)");
  auto r = load();
  EXPECT_EQ(r.snapshot.version, "v7");
  EXPECT_EQ(r.snapshot.clusters->by_name.count("good"), 1u);
  EXPECT_EQ(r.snapshot.clusters->by_name.count("bad"), 0u);
  ASSERT_EQ(r.errors.size(), 1u);
  EXPECT_EQ(r.errors[0].file, "mixed.yaml");
  EXPECT_EQ(r.errors[0].resource, "bad");
  EXPECT_EQ(r.errors[0].type_url, "type.googleapis.com/envoy.config.cluster.v3.Cluster");
  EXPECT_EQ(r.errors[0].reason.rfind("load_assignment: ", 0), 0u) << r.errors[0].reason;

  auto dump = nlohmann::json::parse(r.config_dump_json);
  EXPECT_EQ(dump["version"], "v7");
  ASSERT_EQ(dump["accepted"].size(), 1u);
  EXPECT_EQ(dump["accepted"][0]["name"], "good");
  EXPECT_EQ(dump["accepted"][0]["file"], "mixed.yaml");
  ASSERT_EQ(dump["rejected"].size(), 1u);
  EXPECT_EQ(dump["rejected"][0]["name"], "bad");
}

TEST_F(FileSourceTest, UnknownTypesAndFieldsAreRejectedAlone) {
  write("a.json", R"({"version_info": "1", "resources": [
    {"@type": "type.googleapis.com/envoy.config.listener.v3.Listener", "name": "l", "enable_mptcp": true},
    {"@type": "type.googleapis.com/culvert.v0.Nothing", "name": "n"},
    {"name": "untyped"},
    {"@type": "type.googleapis.com/envoy.config.cluster.v3.Cluster", "name": "ok"}
  ]})");
  auto r = load();
  EXPECT_EQ(r.snapshot.clusters->by_name.count("ok"), 1u);
  ASSERT_EQ(r.errors.size(), 3u);
  EXPECT_EQ(r.errors[0].resource, "l");
  EXPECT_NE(r.errors[0].reason.find("enable_mptcp"), std::string::npos) << r.errors[0].reason;
  EXPECT_EQ(r.errors[1].resource, "n");
  EXPECT_NE(r.errors[1].reason.find("unsupported resource type"), std::string::npos);
  EXPECT_EQ(r.errors[2].resource, "resources[2]");
}

TEST_F(FileSourceTest, OptionalUnknownHttpFilterIsSkippedRequiredOneRejected) {
  auto listener = [](const std::string& name, bool optional) {
    return R"(
- "@type": type.googleapis.com/envoy.config.listener.v3.Listener
  name: )" + name + R"(
  address: { socket_address: { address: 127.0.0.1, port_value: 0 } }
  filter_chains:
  - filters:
    - name: hcm
      typed_config:
        "@type": type.googleapis.com/envoy.extensions.filters.network.http_connection_manager.v3.HttpConnectionManager
        stat_prefix: s
        route_config: { virtual_hosts: [{ name: v, domains: ["*"], routes: [{ match: { prefix: / }, direct_response: { status: 204 } }] }] }
        http_filters:
        - name: envoy.filters.http.cors
          is_optional: )" + (optional ? "true" : "false") + R"(
          typed_config: { "@type": type.googleapis.com/envoy.extensions.filters.http.cors.v3.Cors, anything: 1 }
        - name: envoy.filters.http.router
)";
  };
  write("l.yaml", "resources:" + listener("optional", true) + listener("required", false));
  auto r = load();
  EXPECT_EQ(r.snapshot.listeners->by_name.count("optional"), 1u);
  ASSERT_EQ(r.errors.size(), 1u);
  EXPECT_EQ(r.errors[0].resource, "required");
  EXPECT_EQ(r.errors[0].reason.rfind("filter_chains[0].filters[0].typed_config.http_filters[0]: ", 0), 0u)
      << r.errors[0].reason;
  EXPECT_NE(r.errors[0].reason.find("envoy.extensions.filters.http.cors.v3.Cors"), std::string::npos);
}

TEST_F(FileSourceTest, RdsAndEdsResolveAcrossFiles) {
  write("listeners.yaml", R"(
version_info: "3"
resources:
- "@type": type.googleapis.com/envoy.config.listener.v3.Listener
  name: vip
  address: { socket_address: { address: 10.96.0.11, port_value: 8080 } }
  bind_to_port: false
  filter_chains:
  - filters:
    - name: envoy.filters.network.http_connection_manager
      typed_config:
        "@type": type.googleapis.com/envoy.extensions.filters.network.http_connection_manager.v3.HttpConnectionManager
        stat_prefix: vip
        rds: { route_config_name: shared, config_source: { ads: {} } }
        http_filters: [{ name: envoy.filters.http.router }]
- "@type": type.googleapis.com/envoy.config.listener.v3.Listener
  name: dangling
  address: { socket_address: { address: 10.96.0.12, port_value: 80 } }
  bind_to_port: false
  filter_chains:
  - filters:
    - name: envoy.filters.network.http_connection_manager
      typed_config:
        "@type": type.googleapis.com/envoy.extensions.filters.network.http_connection_manager.v3.HttpConnectionManager
        stat_prefix: d
        rds: { route_config_name: missing }
        http_filters: [{ name: envoy.filters.http.router }]
)");
  write("routes.json", R"({"version_info": "3", "resources": [{
    "@type": "type.googleapis.com/envoy.config.route.v3.RouteConfiguration",
    "name": "shared",
    "virtual_hosts": [{"name": "all", "domains": ["*"], "routes": [{"match": {"prefix": "/"}, "route": {"cluster": "svc"}}]}]
  }]})");
  write("clusters.yml", R"(
version_info: "3"
resources:
- "@type": type.googleapis.com/envoy.config.cluster.v3.Cluster
  name: svc
  type: EDS
  eds_cluster_config: { eds_config: { ads: {} }, service_name: svc-endpoints }
- "@type": type.googleapis.com/envoy.config.endpoint.v3.ClusterLoadAssignment
  cluster_name: svc-endpoints
  endpoints:
  - locality: { zone: a }
    load_balancing_weight: 4
    lb_endpoints:
    - endpoint: { address: { socket_address: { address: 10.244.2.1, port_value: 80 } } }
    - endpoint: { address: { socket_address: { address: 10.244.2.2, port_value: 80 } } }
      load_balancing_weight: 2
)");
  auto r = load();
  EXPECT_EQ(r.snapshot.version, "3");
  const auto& vip = *r.snapshot.listeners->by_name.at("vip");
  ASSERT_NE(vip.filter_chains[0].http.route_config, nullptr);
  EXPECT_EQ(vip.filter_chains[0].http.route_config->name, "shared");
  const auto& svc = *r.snapshot.clusters->by_name.at("svc");
  ASSERT_EQ(svc.endpoints.size(), 2u);
  EXPECT_EQ(svc.endpoints[1].weight, 2u);
  ASSERT_EQ(svc.localities.size(), 1u);  // the assignment's localities come with its endpoints
  EXPECT_EQ(svc.localities[0], (config::Locality{4, 0, 2}));
  EXPECT_EQ(r.snapshot.listeners->by_name.count("dangling"), 0u);
  ASSERT_EQ(r.errors.size(), 1u);
  EXPECT_EQ(r.errors[0].resource, "dangling");
  EXPECT_NE(r.errors[0].reason.find("rds.route_config_name"), std::string::npos);
}

TEST_F(FileSourceTest, BadFilesAndDuplicatesAreReportedOthersLoad) {
  copyTestdata("example.yaml");
  write("broken.yaml", "resources: [ {\n");
  write("broken.json", "{ nope");
  write("z-dup.yaml", R"(
version_info: "2"
resources:
- "@type": type.googleapis.com/envoy.config.cluster.v3.Cluster
  name: backend
)");
  write("notes.txt", "ignored");
  write(".hidden.yaml", "ignored: [");
  auto r = load();
  EXPECT_EQ(r.snapshot.listeners->by_name.size(), 1u);
  ASSERT_EQ(r.snapshot.clusters->by_name.count("backend"), 1u);
  EXPECT_EQ(r.snapshot.clusters->by_name.at("backend")->endpoints.size(), 1u);  // the first one wins
  ASSERT_EQ(r.errors.size(), 3u);
  EXPECT_EQ(r.errors[0].file, "broken.json");
  EXPECT_EQ(r.errors[1].file, "broken.yaml");
  EXPECT_EQ(r.errors[2].file, "z-dup.yaml");
  EXPECT_NE(r.errors[2].reason.find("example.yaml"), std::string::npos);
  EXPECT_EQ(r.snapshot.version, "example.yaml=1,z-dup.yaml=2");
}

TEST_F(FileSourceTest, MissingDirectoryIsAnError) {
  auto r = loadResourceDirectory(dir_ / "absent");
  ASSERT_FALSE(r);
  EXPECT_EQ(r.error().where, (dir_ / "absent").string());
}

TEST_F(FileSourceTest, EmptyDirectoryIsAnEmptySnapshot) {
  auto r = load();
  EXPECT_TRUE(r.errors.empty());
  EXPECT_TRUE(r.snapshot.listeners->by_name.empty());
  EXPECT_TRUE(r.snapshot.clusters->by_name.empty());
}

}  // namespace
}  // namespace culvert::xds::client

namespace culvert::xds::client {
namespace {

TEST_F(FileSourceTest, LoadsTenantsAndRejectsABadOneAlone) {
  write("tenants.yaml", R"(
version_info: t1
resources:
- "@type": type.googleapis.com/culvert.v1.Tenant
  name: team-a
  limits: { max_downstream_connections: 10, max_requests_per_second: 100, burst: 20 }
  weight: 2
  allowed_listeners: [vip-a]
- "@type": type.googleapis.com/culvert.v1.Tenant
  name: team-b
  fail_mode: CLOSED
- "@type": type.googleapis.com/culvert.v1.Tenant
  name: team-c
  limits: { max_requests_in_flight: 3, colour: blue }
- "@type": type.googleapis.com/culvert.v1.Tenant
  name: team-d
  weight: 0
)");
  auto r = load();
  ASSERT_EQ(r.snapshot.tenants->by_name.size(), 2u);
  const auto& a = *r.snapshot.tenants->by_name.at("team-a");
  EXPECT_EQ(a.limits.max_downstream_connections, 10u);
  EXPECT_EQ(a.limits.max_requests_per_second, 100u);
  EXPECT_EQ(a.limits.burst, 20u);
  EXPECT_FALSE(a.limits.max_requests_in_flight.has_value());  // unset: the bootstrap default
  EXPECT_EQ(a.weight, 2u);
  EXPECT_EQ(a.allowed_listeners, std::vector<std::string>{"vip-a"});
  EXPECT_EQ(r.snapshot.tenants->by_name.at("team-b")->fail_mode, config::TenantFailMode::Closed);
  ASSERT_EQ(r.errors.size(), 2u);
  EXPECT_EQ(r.errors[0].resource, "team-c");
  EXPECT_NE(r.errors[0].reason.find("colour"), std::string::npos);
  EXPECT_EQ(r.errors[1].resource, "team-d");
  EXPECT_NE(r.errors[1].reason.find("weight"), std::string::npos);
}

TEST_F(FileSourceTest, OnReloadABrokenTenantKeepsItsLastGoodVersionAndAnotherTenantsUpdateApplies) {
  write("tenants.yaml", R"(
version_info: t1
resources:
- "@type": type.googleapis.com/culvert.v1.Tenant
  name: team-a
  allowed_listeners: [vip-a]
- "@type": type.googleapis.com/culvert.v1.Tenant
  name: team-b
  allowed_listeners: [vip-b]
)");
  auto first = load();
  ASSERT_TRUE(first.errors.empty());
  write("tenants.yaml", R"(
version_info: t2
resources:
- "@type": type.googleapis.com/culvert.v1.Tenant
  name: team-a
  allowed_listeners: [vip-a, vip-c]
  weight: 0
- "@type": type.googleapis.com/culvert.v1.Tenant
  name: team-b
  allowed_listeners: [vip-b, vip-c]
- "@type": type.googleapis.com/culvert.v1.Tenant
  name: team-d
  colour: blue
)");
  auto second = load();
  ASSERT_EQ(second.errors.size(), 2u);
  EXPECT_EQ(second.errors[0].resource, "team-a");
  auto kept = keepLastGood(second, first.snapshot, first.sources);
  ASSERT_EQ(kept.size(), 1u);
  EXPECT_EQ(kept[0].name, "team-a");
  const auto& tenants = second.snapshot.tenants->by_name;
  ASSERT_EQ(tenants.size(), 2u);  // team-d never had a good version
  EXPECT_EQ(tenants.at("team-a")->allowed_listeners, std::vector<std::string>{"vip-a"});  // its scope holds
  EXPECT_EQ(tenants.at("team-b")->allowed_listeners, (std::vector<std::string>{"vip-b", "vip-c"}));
}

// A listener over RDS and an EDS cluster, with their RouteConfiguration and assignment.
std::string rdsAndEds(const std::string& version, const std::string& route_extra, const std::string& endpoint_ip,
                      const std::string& endpoint_extra) {
  return R"(
version_info: ")" + version + R"("
resources:
- "@type": type.googleapis.com/envoy.config.listener.v3.Listener
  name: vip
  address: { socket_address: { address: 10.96.0.11, port_value: 8080 } }
  bind_to_port: false
  filter_chains:
  - filters:
    - name: envoy.filters.network.http_connection_manager
      typed_config:
        "@type": type.googleapis.com/envoy.extensions.filters.network.http_connection_manager.v3.HttpConnectionManager
        stat_prefix: vip
        rds: { route_config_name: shared, config_source: { ads: {} } }
        http_filters: [{ name: envoy.filters.http.router }]
- "@type": type.googleapis.com/envoy.config.route.v3.RouteConfiguration
  name: shared
  virtual_hosts: [{ name: all, domains: ["*"], routes: [{ match: { prefix: "/)" + version + R"(" }, route: { cluster: svc } }] }]
)" + route_extra + R"(
- "@type": type.googleapis.com/envoy.config.cluster.v3.Cluster
  name: svc
  type: EDS
  eds_cluster_config: { eds_config: { ads: {} }, service_name: svc-endpoints }
- "@type": type.googleapis.com/envoy.config.endpoint.v3.ClusterLoadAssignment
  cluster_name: svc-endpoints
  endpoints: [{ lb_endpoints: [{ endpoint: { address: { socket_address: { address: )" + endpoint_ip +
         R"(, port_value: 80 } } } }] }]
)" + endpoint_extra + "\n";
}

TEST_F(FileSourceTest, OnReloadABrokenListenerOrClusterKeepsItsLastGoodVersionRoutesAndEndpointsIncluded) {
  write("app.yaml", rdsAndEds("1", "", "10.244.0.1", "") + R"(
- "@type": type.googleapis.com/envoy.config.cluster.v3.Cluster
  name: other
  connect_timeout: 1s
- "@type": type.googleapis.com/envoy.config.cluster.v3.Cluster
  name: going
)");
  auto first = load();
  ASSERT_TRUE(first.errors.empty()) << first.errors[0].reason;

  // The route configuration and the assignment each gain a field culvert rejects, so the
  // listener and the cluster naming them fail to resolve; "other" changes validly,
  // "going" is removed, "new" never had a good version.
  write("app.yaml", rdsAndEds("2", "  request_mirror_policies: [{ cluster: x }]", "10.244.0.2", "  colour: blue") + R"(
- "@type": type.googleapis.com/envoy.config.cluster.v3.Cluster
  name: other
  connect_timeout: 2s
- "@type": type.googleapis.com/envoy.config.cluster.v3.Cluster
  name: new
  type: LOGICAL_DNS
)");
  auto second = load();
  ASSERT_EQ(second.snapshot.listeners->by_name.count("vip"), 0u);  // as loaded: unresolved
  ASSERT_EQ(second.snapshot.clusters->by_name.count("svc"), 0u);
  auto kept = keepLastGood(second, first.snapshot, first.sources);
  ASSERT_EQ(kept.size(), 2u);
  EXPECT_EQ(kept[0].name, "vip");
  EXPECT_EQ(kept[0].type_url, "type.googleapis.com/envoy.config.listener.v3.Listener");
  EXPECT_EQ(kept[1].name, "svc");

  // The same objects as before: the old routes and the old endpoints.
  EXPECT_EQ(second.snapshot.listeners->by_name.at("vip"), first.snapshot.listeners->by_name.at("vip"));
  const auto& route = second.snapshot.listeners->by_name.at("vip")->filter_chains[0].http.route_config;
  ASSERT_NE(route, nullptr);
  EXPECT_EQ(route->virtual_hosts.at(0).routes.at(0).match.prefix, "/1");
  const auto& svc = *second.snapshot.clusters->by_name.at("svc");
  ASSERT_EQ(svc.endpoints.size(), 1u);
  EXPECT_EQ(svc.endpoints[0].address.toString(), "10.244.0.1:80");
  // The valid change applies, the removal too, and nothing appears that was never good.
  EXPECT_EQ(second.snapshot.clusters->by_name.at("other")->connect_timeout, std::chrono::seconds(2));
  EXPECT_EQ(second.snapshot.clusters->by_name.count("going"), 0u);
  EXPECT_EQ(second.snapshot.clusters->by_name.count("new"), 0u);

  auto dump = nlohmann::json::parse(second.config_dump_json);
  ASSERT_EQ(dump["kept_last_good"].size(), 2u);
  EXPECT_EQ(dump["kept_last_good"][0]["name"], "vip");
  EXPECT_EQ(dump["kept_last_good"][1]["name"], "svc");
}

TEST_F(FileSourceTest, AFileThatNoLongerParsesKeepsItsResourcesUntilItIsFixedOrRemoved) {
  copyTestdata("example.yaml");  // listener backend-vip and cluster backend
  write("other.yaml", R"(
version_info: "1"
resources:
- "@type": type.googleapis.com/envoy.config.cluster.v3.Cluster
  name: other
  connect_timeout: 1s
)");
  auto first = load();
  ASSERT_TRUE(first.errors.empty());
  ASSERT_EQ(first.sources.at("example.yaml").size(), 2u);

  // A YAML syntax error: nothing of example.yaml can be read. other.yaml changes validly.
  write("example.yaml", "version_info: \"2\"\nresources: [ {\n");
  write("other.yaml", R"(
version_info: "2"
resources:
- "@type": type.googleapis.com/envoy.config.cluster.v3.Cluster
  name: other
  connect_timeout: 2s
)");
  auto second = load();
  EXPECT_EQ(second.unread_files, std::set<std::string>{"example.yaml"});
  auto kept = keepLastGood(second, first.snapshot, first.sources);
  ASSERT_EQ(kept.size(), 2u);
  EXPECT_EQ(second.snapshot.listeners->by_name.at("backend-vip"), first.snapshot.listeners->by_name.at("backend-vip"));
  EXPECT_EQ(second.snapshot.clusters->by_name.at("backend"), first.snapshot.clusters->by_name.at("backend"));
  EXPECT_EQ(second.snapshot.clusters->by_name.at("other")->connect_timeout, std::chrono::seconds(2));
  EXPECT_EQ(second.sources.at("example.yaml").size(), 2u) << "kept resources stay the file's for the next reload";

  // Still broken on the next reload: still kept.
  auto third = load();
  EXPECT_EQ(keepLastGood(third, second.snapshot, second.sources).size(), 2u);
  EXPECT_EQ(third.snapshot.listeners->by_name.count("backend-vip"), 1u);

  // A remark about a file is not a lost file: an unknown key drops nothing.
  write("example.yaml", "version_info: \"3\"\ncolour: blue\nresources: []\n");
  auto fourth = load();
  EXPECT_TRUE(fourth.unread_files.empty());
  EXPECT_TRUE(keepLastGood(fourth, third.snapshot, third.sources).empty());
  EXPECT_EQ(fourth.snapshot.listeners->by_name.count("backend-vip"), 0u) << "emptied on purpose: removed";

  // Removing the broken file removes its resources.
  write("example.yaml", "version_info: \"2\"\nresources: [ {\n");
  auto fifth = load();
  ASSERT_EQ(keepLastGood(fifth, third.snapshot, third.sources).size(), 2u);
  fs::remove(dir_ / "example.yaml");
  auto sixth = load();
  EXPECT_TRUE(keepLastGood(sixth, fifth.snapshot, fifth.sources).empty());
  EXPECT_EQ(sixth.snapshot.listeners->by_name.count("backend-vip"), 0u);
}

}  // namespace
}  // namespace culvert::xds::client
