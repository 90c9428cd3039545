#include "agent/bootstrap.h"

#include <gtest/gtest.h>
#include <unistd.h>

#include <fstream>
#include <thread>

#include "tests/unit/agent/test_util.h"

namespace culvert::agent {
namespace {

std::string hostName() {
  char buf[256] = {};
  gethostname(buf, sizeof buf - 1);
  return buf;
}

// Parses and expects an error whose where/message match.
void expectError(std::string_view yaml, const std::string& where, const std::string& message_part) {
  auto b = parseBootstrap(yaml);
  ASSERT_FALSE(b.has_value()) << "accepted: " << yaml;
  EXPECT_EQ(b.error().where, where) << b.error().describe();
  EXPECT_NE(b.error().message.find(message_part), std::string::npos) << b.error().describe();
}

TEST(BootstrapTest, EmptyDocumentGivesDefaults) {
  for (std::string_view yaml : {"", "# only a comment\n", "~\n"}) {
    auto b = parseBootstrap(yaml);
    ASSERT_TRUE(b.has_value()) << b.error().describe();
    EXPECT_EQ(b->node.id, hostName());
    EXPECT_EQ(b->node.cluster, "culvert");
    ASSERT_TRUE(b->admin.address.has_value());
    EXPECT_EQ(b->admin.address->toString(), "127.0.0.1:15000");
    EXPECT_EQ(b->admin.socket, "");
    EXPECT_EQ(b->workers, 0u);
    EXPECT_EQ(b->resources.path, "/etc/culvert/resources");
    EXPECT_EQ(b->capture.port, 15001);
    EXPECT_EQ(b->capture.cgroup, "");
    EXPECT_EQ(b->capture.fail_mode, FailMode::Open);
    EXPECT_EQ(b->bpf.pin_root, "/sys/fs/bpf/culvert");
    EXPECT_EQ(b->enrollment.socket, "/run/culvert/cni.sock");
    EXPECT_FALSE(b->enrollment.allow_uncaptured);
    EXPECT_EQ(b->state_dir, "/var/lib/culvert");
    EXPECT_EQ(b->log.level, "info");
    EXPECT_EQ(b->log.format, common::LogFormat::Text);
  }
}

TEST(BootstrapTest, StructDefaultsMatchTheDocumentedOnes) {
  Bootstrap b;
  b.node.id = hostName();  // the one default filled at parse time
  EXPECT_EQ(formatBootstrap(b), formatBootstrap(*parseBootstrap("")));
}

TEST(BootstrapTest, EmbeddedDefaultParsesAndMatchesStructDefaults) {
  auto parsed = parseBootstrap(kEmbeddedBootstrapYaml);
  ASSERT_TRUE(parsed.has_value()) << parsed.error().describe();
  auto defaults = parseBootstrap("");
  ASSERT_TRUE(defaults.has_value());
  EXPECT_EQ(formatBootstrap(*parsed), formatBootstrap(*defaults));
  EXPECT_EQ(formatBootstrap(embeddedDefaultBootstrap()), formatBootstrap(*defaults));
}

TEST(BootstrapTest, EveryKeyIsRead) {
  auto b = parseBootstrap(R"(
node:
  id: node-7
  cluster: prod-eu
admin:
  address: "[::1]:9901"
  socket: /run/culvert/admin.sock
workers: 3
resources:
  path: /srv/res
capture:
  port: 16001
  cgroup: /sys/fs/cgroup/unified
  fail_mode: closed
  exclude_ports: [22, 3306]
  exclude_cidrs: [169.254.0.0/16, "fd00:ec2::254", 10.1.2.3/8]
bpf:
  pin_root: /sys/fs/bpf/test-run
enrollment:
  socket: /tmp/x/cni.sock
  on_unreachable: allow
state_dir: /tmp/state
log:
  level: debug
  format: json
)");
  ASSERT_TRUE(b.has_value()) << b.error().describe();
  EXPECT_EQ(b->node.id, "node-7");
  EXPECT_EQ(b->node.cluster, "prod-eu");
  ASSERT_TRUE(b->admin.address.has_value());
  EXPECT_EQ(b->admin.address->toString(), "[::1]:9901");
  EXPECT_EQ(b->admin.socket, "/run/culvert/admin.sock");
  EXPECT_EQ(b->workers, 3u);
  EXPECT_EQ(effectiveWorkers(*b), 3u);
  EXPECT_EQ(b->resources.path, "/srv/res");
  EXPECT_EQ(b->capture.port, 16001);
  EXPECT_EQ(b->capture.cgroup, "/sys/fs/cgroup/unified");
  EXPECT_EQ(b->capture.fail_mode, FailMode::Closed);
  EXPECT_EQ(b->capture.exclude_ports, (std::vector<uint16_t>{22, 3306}));
  ASSERT_EQ(b->capture.exclude_cidrs.size(), 3u);
  EXPECT_EQ(b->capture.exclude_cidrs[0].prefix.ip(), "169.254.0.0");
  EXPECT_EQ(b->capture.exclude_cidrs[0].length, 16u);
  EXPECT_EQ(b->capture.exclude_cidrs[1].prefix.ip(), "fd00:ec2::254");
  EXPECT_EQ(b->capture.exclude_cidrs[1].length, 128u);  // a bare address is a full prefix
  EXPECT_EQ(b->capture.exclude_cidrs[2].length, 8u);
  EXPECT_EQ(b->bpf.pin_root, "/sys/fs/bpf/test-run");
  EXPECT_EQ(b->enrollment.socket, "/tmp/x/cni.sock");
  EXPECT_TRUE(b->enrollment.allow_uncaptured);
  EXPECT_EQ(b->state_dir, "/tmp/state");
  EXPECT_EQ(b->log.level, "debug");
  EXPECT_EQ(b->log.format, common::LogFormat::Json);

  // formatBootstrap round-trips every field.
  auto again = parseBootstrap(formatBootstrap(*b));
  ASSERT_TRUE(again.has_value()) << again.error().describe() << "\n" << formatBootstrap(*b);
  EXPECT_EQ(formatBootstrap(*again), formatBootstrap(*b));
}

TEST(BootstrapTest, PartialSectionsKeepOtherDefaults) {
  auto b = parseBootstrap("capture:\n  port: 1\nadmin:\n");
  ASSERT_TRUE(b.has_value()) << b.error().describe();
  EXPECT_EQ(b->capture.port, 1);
  EXPECT_EQ(b->capture.fail_mode, FailMode::Open);
  ASSERT_TRUE(b->admin.address.has_value());
}

TEST(BootstrapTest, EmptyAdminAddressDisablesTcpAdmin) {
  auto b = parseBootstrap("admin:\n  address: \"\"\n");
  ASSERT_TRUE(b.has_value()) << b.error().describe();
  EXPECT_FALSE(b->admin.address.has_value());
  auto round = parseBootstrap(formatBootstrap(*b));
  ASSERT_TRUE(round.has_value());
  EXPECT_FALSE(round->admin.address.has_value());
}

TEST(BootstrapTest, AdminAddressPortZeroIsAllowed) {
  auto b = parseBootstrap("admin: {address: 127.0.0.1:0}\n");
  ASSERT_TRUE(b.has_value()) << b.error().describe();
  EXPECT_EQ(b->admin.address->port(), 0);
}

TEST(BootstrapTest, WorkersZeroMeansCpus) {
  auto b = parseBootstrap("workers: 0\n");
  ASSERT_TRUE(b.has_value());
  unsigned cpus = std::thread::hardware_concurrency();
  EXPECT_EQ(effectiveWorkers(*b), cpus == 0 ? 1u : cpus);
}

TEST(BootstrapTest, ValueErrorsNameTheKey) {
  expectError("capture:\n  port: 70000\n", "capture.port", "must be 1..65535, got 70000");
  EXPECT_EQ(parseBootstrap("capture:\n  port: 70000\n").error().describe(), "capture.port: must be 1..65535, got 70000");
  expectError("capture:\n  port: 0\n", "capture.port", "must be 1..65535, got 0");
  expectError("capture:\n  port: -1\n", "capture.port", "expected an integer 1..65535");
  expectError("capture:\n  port: 99999999999999999999999\n", "capture.port", "must be 1..65535");
  expectError("capture:\n  port: 80.5\n", "capture.port", "expected an integer");
  expectError("capture:\n  port: http\n", "capture.port", "expected an integer");
  expectError("capture:\n  fail_mode: maybe\n", "capture.fail_mode", "must be open or closed");
  expectError("capture:\n  exclude_ports: 22\n", "capture.exclude_ports", "expected a list of ports");
  expectError("capture:\n  exclude_ports: [22, 0]\n", "capture.exclude_ports[1]", "must be 1..65535");
  expectError("capture:\n  exclude_cidrs: [10.0.0.0/33]\n", "capture.exclude_cidrs[0]", "exceeds 32");
  expectError("capture:\n  exclude_cidrs: [10.0.0.0/x]\n", "capture.exclude_cidrs[0]", "bad prefix length");
  expectError("capture:\n  exclude_cidrs: [example.com]\n", "capture.exclude_cidrs[0]", "not an address or CIDR");
  expectError("workers: 5000\n", "workers", "must be 0..1024");
  expectError("workers: many\n", "workers", "expected an integer");
  expectError("admin:\n  address: localhost:15000\n", "admin.address", "not an IPv4 or IPv6 address");
  expectError("admin:\n  address: 127.0.0.1\n", "admin.address", "expected IP:port");
  expectError("admin:\n  address: 127.0.0.1:99999\n", "admin.address", "bad port");
  expectError("admin:\n  socket: /" + std::string(200, 'a') + "\n", "admin.socket", "the limit is 107");
  expectError("enrollment:\n  socket: \"\"\n", "enrollment.socket", "must not be empty");
  expectError("enrollment:\n  socket: /" + std::string(120, 'b') + "\n", "enrollment.socket", "the limit is 107");
  expectError("node:\n  id: \"\"\n", "node.id", "must not be empty");
  expectError("node:\n  cluster:\n", "node.cluster", "must not be empty");
  expectError("resources:\n  path: \"\"\n", "resources.path", "must not be empty");
  expectError("bpf:\n  pin_root: \"\"\n", "bpf.pin_root", "must not be empty");
  expectError("state_dir: \"\"\n", "state_dir", "must not be empty");
  expectError("log:\n  level: verbose\n", "log.level", "must be one of");
  expectError("log:\n  format: xml\n", "log.format", "must be text or json");
}

TEST(BootstrapTest, UnknownKeysAreErrors) {
  expectError("capture:\n  prot: 15001\n", "capture.prot", "unknown key (expected one of: port, cgroup, fail_mode, exclude_ports, exclude_cidrs)");
  expectError("admn:\n  address: 1.2.3.4:5\n", "admn", "unknown key");
  expectError("workers: 1\nextra: true\n", "extra", "unknown key");
  expectError("log:\n  level: info\n  colour: red\n", "log.colour", "unknown key");
  expectError("node:\n  id:\n    deep: x\n", "node.id", "expected a string, got a mapping");
}

TEST(BootstrapTest, WrongTypesAreErrors) {
  expectError("capture: 15001\n", "capture", "expected a mapping, got a scalar");
  expectError("admin: [a, b]\n", "admin", "expected a mapping, got a list");
  expectError("capture:\n  port: [1]\n", "capture.port", "expected an integer 1..65535, got a list");
  expectError("workers: {a: 1}\n", "workers", "got a mapping");
  expectError("state_dir: [x]\n", "state_dir", "expected a string, got a list");
  expectError("log:\n  level: {x: 1}\n", "log.level", "expected a string");
  auto b = parseBootstrap("- just\n- a list\n");
  ASSERT_FALSE(b.has_value());
  EXPECT_NE(b.error().message.find("must be a YAML mapping"), std::string::npos);
}

TEST(BootstrapTest, DuplicateKeysAreErrors) {
  expectError("capture:\n  port: 1\n  port: 2\n", "capture.port", "duplicate key");
  expectError("workers: 1\nworkers: 2\n", "workers", "duplicate key");
}

TEST(BootstrapTest, SyntaxErrorsGiveTheLine) {
  auto b = parseBootstrap("node:\n  id: a\n  cluster: [unclosed\n");
  ASSERT_FALSE(b.has_value());
  EXPECT_NE(b.error().message.find("invalid YAML at line"), std::string::npos) << b.error().describe();
  auto two = parseBootstrap("workers: 1\n---\nworkers: 2\n");
  ASSERT_FALSE(two.has_value());
  EXPECT_NE(two.error().message.find("one YAML document"), std::string::npos);
}

TEST(BootstrapTest, LoadFileNamesTheFile) {
  test::TempDir dir;
  auto good = dir.path() / "good.yaml";
  std::ofstream(good) << "capture:\n  port: 15999\n";
  auto b = loadBootstrapFile(good);
  ASSERT_TRUE(b.has_value()) << b.error().describe();
  EXPECT_EQ(b->capture.port, 15999);

  auto bad = dir.path() / "bad.yaml";
  std::ofstream(bad) << "capture:\n  port: 70000\n";
  auto e = loadBootstrapFile(bad);
  ASSERT_FALSE(e.has_value());
  EXPECT_EQ(e.error().where, bad.string() + ": capture.port");
  EXPECT_EQ(e.error().describe(), bad.string() + ": capture.port: must be 1..65535, got 70000");

  auto missing = loadBootstrapFile(dir.path() / "missing.yaml");
  ASSERT_FALSE(missing.has_value());
  EXPECT_EQ(missing.error().where, (dir.path() / "missing.yaml").string());
  EXPECT_NE(missing.error().message.find("No such file"), std::string::npos);

  auto syntax = dir.path() / "syntax.yaml";
  std::ofstream(syntax) << "a: [\n";
  auto s = loadBootstrapFile(syntax);
  ASSERT_FALSE(s.has_value());
  EXPECT_EQ(s.error().where, syntax.string());
}

TEST(BootstrapTest, XdsKeys) {
  auto b = parseBootstrap("xds:\n  address: 127.0.0.1:18000\n  max_stale: 60\n");
  ASSERT_TRUE(b.has_value()) << b.error().describe();
  EXPECT_EQ(b->xds.address, "127.0.0.1:18000");
  EXPECT_EQ(b->xds.max_stale_seconds, 60u);
  auto u = parseBootstrap("xds:\n  address: unix:/run/cp.sock\n");
  ASSERT_TRUE(u.has_value()) << u.error().describe();
  EXPECT_EQ(u->xds.address, "unix:/run/cp.sock");
  auto d = parseBootstrap("");
  ASSERT_TRUE(d.has_value());
  EXPECT_EQ(d->xds.address, "");
  EXPECT_EQ(d->xds.max_stale_seconds, 86400u);
  auto round = parseBootstrap(formatBootstrap(*b));
  ASSERT_TRUE(round.has_value()) << round.error().describe();
  EXPECT_EQ(round->xds.address, "127.0.0.1:18000");
  EXPECT_EQ(round->xds.max_stale_seconds, 60u);

  auto named = parseBootstrap("xds:\n  address: xds-control-plane.culvert-system.svc:18000\n");
  ASSERT_TRUE(named.has_value()) << named.error().describe();
  EXPECT_EQ(named->xds.address, "xds-control-plane.culvert-system.svc:18000");
  expectError("xds:\n  address: control_plane:18000\n", "xds.address", "unix:PATH");
  expectError("xds:\n  address: controlplane\n", "xds.address", "unix:PATH");
  expectError("xds:\n  address: \"unix:\"\n", "xds.address", "needs a path");
  expectError("xds:\n  max_stale: -1\n", "xds.max_stale", "expected an integer");
  expectError("xds:\n  delta: yes\n", "xds.delta", "must be true or false");
  auto delta = parseBootstrap("xds:\n  delta: true\n");
  ASSERT_TRUE(delta.has_value()) << delta.error().describe();
  EXPECT_TRUE(delta->xds.delta);
  EXPECT_TRUE(parseBootstrap(formatBootstrap(*delta))->xds.delta);
}

TEST(BootstrapTest, DrainTimeout) {
  EXPECT_EQ(parseBootstrap("")->drain_timeout_seconds, 30u);
  auto b = parseBootstrap("drain_timeout: 0\n");
  ASSERT_TRUE(b.has_value()) << b.error().describe();
  EXPECT_EQ(b->drain_timeout_seconds, 0u);
  EXPECT_EQ(parseBootstrap(formatBootstrap(*parseBootstrap("drain_timeout: 7\n")))->drain_timeout_seconds, 7u);
  expectError("drain_timeout: 3601\n", "drain_timeout", "");
  expectError("drain_timeout: 1.5\n", "drain_timeout", "expected an integer");
}

TEST(BootstrapTest, MainThreadNice) {
  EXPECT_EQ(parseBootstrap("")->main_thread_nice, 0u);
  auto b = parseBootstrap("main_thread_nice: 10\n");
  ASSERT_TRUE(b.has_value()) << b.error().describe();
  EXPECT_EQ(b->main_thread_nice, 10u);
  EXPECT_EQ(parseBootstrap(formatBootstrap(*b))->main_thread_nice, 10u);
  expectError("main_thread_nice: 20\n", "main_thread_nice", "");
  expectError("main_thread_nice: -1\n", "main_thread_nice", "expected an integer");
}

TEST(BootstrapTest, XdsTlsKeys) {
  auto b = parseBootstrap(
      "xds:\n  address: 127.0.0.1:18000\n  tls:\n    ca_file: /etc/culvert/ca.pem\n"
      "    cert_file: /etc/culvert/node.pem\n    key_file: /etc/culvert/node.key\n"
      "    match_subject_alt_names: [\"URI:spiffe://cp/xds\", \"IP:10.0.0.1\"]\n");
  ASSERT_TRUE(b.has_value()) << b.error().describe();
  EXPECT_TRUE(b->xds.tls.enabled());
  EXPECT_EQ(b->xds.tls.ca_file, "/etc/culvert/ca.pem");
  EXPECT_EQ(b->xds.tls.key_file, "/etc/culvert/node.key");
  EXPECT_EQ(b->xds.tls.match_subject_alt_names, (std::vector<std::string>{"URI:spiffe://cp/xds", "IP:10.0.0.1"}));
  auto round = parseBootstrap(formatBootstrap(*b));
  ASSERT_TRUE(round.has_value()) << round.error().describe();
  EXPECT_EQ(round->xds.tls.cert_file, "/etc/culvert/node.pem");
  EXPECT_EQ(round->xds.tls.match_subject_alt_names, b->xds.tls.match_subject_alt_names);
  EXPECT_FALSE(parseBootstrap("")->xds.tls.enabled());

  expectError("xds:\n  tls:\n    server_name: cp\n", "xds.tls.ca_file", "required when");
  expectError("xds:\n  tls:\n    ca_file: /ca\n    cert_file: /c\n", "xds.tls.key_file", "together");
  expectError("xds:\n  tls:\n    ca_file: /ca\n    match_subject_alt_names: [\"EMAIL:x\"]\n",
              "xds.tls.match_subject_alt_names[0]", "DNS, IP or URI");
  expectError("xds:\n  tls:\n    ca_file: /ca\n    match_subject_alt_names: URI:x\n",
              "xds.tls.match_subject_alt_names", "expected a list");
  expectError("xds:\n  address: unix:/run/cp.sock\n  tls:\n    ca_file: /ca\n", "xds.tls", "names no server");
  expectError("xds:\n  tls:\n    ca_file: /ca\n    verify: false\n", "xds.tls.verify", "unknown key");
}

TEST(BootstrapTest, XdsTlsClientConfigDefaults) {
  auto config = [](std::string yaml) {
    auto b = parseBootstrap(yaml);
    EXPECT_TRUE(b.has_value()) << b.error().describe();
    return xdsTlsClientConfig(b->xds);
  };
  // A DNS name: it is the server name (SNI and mbedTLS's check), no SAN matchers.
  auto named = config("xds:\n  address: cp.culvert.svc:18000\n  tls: {ca_file: /ca}\n");
  ASSERT_TRUE(named.has_value());
  EXPECT_EQ(named->server_name, "cp.culvert.svc");
  EXPECT_TRUE(named->san_matchers.empty());
  EXPECT_EQ(named->alpn, std::vector<std::string>{"h2"});
  // An IP literal: no SNI; culvert checks the IP SAN itself.
  auto ip = config("xds:\n  address: \"[fd00::1]:18000\"\n  tls: {ca_file: /ca}\n");
  ASSERT_TRUE(ip.has_value());
  EXPECT_EQ(ip->server_name, "");
  EXPECT_EQ(ip->san_matchers, (std::vector<tls::SanMatcher>{{tls::SanType::Ip, "fd00::1"}}));
  // Explicit settings win.
  auto pinned = config(
      "xds:\n  address: 10.0.0.1:18000\n  tls: {ca_file: /ca, server_name: cp.test, "
      "match_subject_alt_names: [\"URI:spiffe://cp\"]}\n");
  ASSERT_TRUE(pinned.has_value());
  EXPECT_EQ(pinned->server_name, "cp.test");
  EXPECT_EQ(pinned->san_matchers, (std::vector<tls::SanMatcher>{{tls::SanType::Uri, "spiffe://cp"}}));
}

TEST(BootstrapTest, NodeLocalityAndMetadata) {
  auto b = parseBootstrap(
      "node:\n  locality: {region: eu, zone: eu-1a}\n  metadata: {team: net, \"k8s.io/node\": n1}\n");
  ASSERT_TRUE(b.has_value()) << b.error().describe();
  EXPECT_EQ(b->node.locality.region, "eu");
  EXPECT_EQ(b->node.locality.zone, "eu-1a");
  EXPECT_EQ(b->node.locality.sub_zone, "");
  EXPECT_EQ(b->node.metadata.at("team"), "net");
  EXPECT_EQ(b->node.metadata.at("k8s.io/node"), "n1");
  auto round = parseBootstrap(formatBootstrap(*b));
  ASSERT_TRUE(round.has_value()) << round.error().describe();
  EXPECT_EQ(round->node.metadata, b->node.metadata);
  EXPECT_EQ(round->node.locality.zone, "eu-1a");
  expectError("node:\n  metadata: [a]\n", "node.metadata", "expected a mapping");
  expectError("node:\n  metadata: {a: [1]}\n", "node.metadata.a", "expected a string");
  expectError("node:\n  locality: {planet: earth}\n", "node.locality.planet", "unknown key");
}

}  // namespace
}  // namespace culvert::agent
