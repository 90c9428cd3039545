// culvert-cni's decisions with a fake culvertd: what it sends, what it prints, which
// spec error codes it answers with.
#include <gtest/gtest.h>
#include <unistd.h>

#include <filesystem>
#include <fstream>
#include <nlohmann/json.hpp>
#include <sstream>
#include <string>
#include <vector>

#include "cni/plugin/plugin.h"

namespace culvert::cni {
namespace {

using nlohmann::json;

const char* kPrevResult =
    R"({"cniVersion":"1.0.0","interfaces":[{"name":"eth0","sandbox":"/var/run/netns/p"}],)"
    R"("ips":[{"address":"10.244.0.7/24","gateway":"10.244.0.1","interface":0},{"address":"fd00::7/64"}],)"
    R"("dns":{"nameservers":["10.96.0.10"]}})";

std::string conf(const std::string& version = "1.0.0", const std::string& extra = "") {
  return R"({"cniVersion":")" + version + R"(","name":"k8s-pod-network","type":"culvert-cni","prevResult":)" +
         kPrevResult + extra + "}";
}

Invocation inv(const std::string& command) {
  Invocation i;
  i.command = command;
  i.has_command = true;
  i.container_id = "abc123";
  i.netns = "/var/run/netns/p";
  i.ifname = "eth0";
  i.args = "IgnoreUnknown=1;K8S_POD_NAMESPACE=shop;K8S_POD_NAME=cart-1;K8S_POD_INFRA_CONTAINER_ID=abc123;K8S_POD_UID=u-1";
  return i;
}

struct FakeCulvertd {
  std::vector<EnrollmentRequest> requests;
  bool reachable = true;
  EnrollmentResponse answer = EnrollmentResponse::success();
  std::vector<EnrollmentRecord> pods;
  std::chrono::milliseconds last_timeout{0};
  std::string last_socket;

  EnrollmentCall call() {
    return [this](const std::filesystem::path& socket, const EnrollmentRequest& r, std::chrono::milliseconds t)
               -> common::Result<EnrollmentResponse> {
      requests.push_back(r);
      last_timeout = t;
      last_socket = socket.string();
      if (!reachable) return common::fail("cannot connect: No such file or directory", socket.string());
      if (r.op == EnrollmentOp::List) {
        auto resp = EnrollmentResponse::success();
        resp.pods = pods;
        return resp;
      }
      return answer;
    };
  }
};

struct Run {
  int code;
  std::string out;
  std::string log;
  json j;
};

Run run(const Invocation& i, const std::string& in, FakeCulvertd& d) {
  std::ostringstream out, log;
  int code = runPlugin(i, in, out, log, d.call());
  Run r{code, out.str(), log.str(), json()};
  if (!r.out.empty()) r.j = json::parse(r.out, nullptr, false);
  return r;
}

TEST(CniPluginLogicTest, AddEnrollsThePodAndPassesPrevResultThrough) {
  for (std::string version : {"0.4.0", "1.0.0", "1.1.0"}) {
    FakeCulvertd d;
    auto r = run(inv("ADD"), conf(version), d);
    ASSERT_EQ(r.code, 0) << r.out;
    EXPECT_EQ(r.j, json::parse(kPrevResult)) << version;  // unchanged, byte for byte as JSON
    ASSERT_EQ(d.requests.size(), 1u);
    EXPECT_EQ(d.last_socket, "/run/culvert/cni.sock");  // culvertd's default enrollment.socket
    EXPECT_EQ(d.last_timeout, kDefaultTimeout);
    const auto& rec = d.requests[0].record;
    EXPECT_EQ(d.requests[0].op, EnrollmentOp::Enroll);
    EXPECT_EQ(rec.container_id, "abc123");
    EXPECT_EQ(rec.ifname, "eth0");
    EXPECT_EQ(rec.netns_path, "/var/run/netns/p");
    EXPECT_EQ(rec.namespace_, "shop");
    EXPECT_EQ(rec.name, "cart-1");
    EXPECT_EQ(rec.pod_uid, "u-1");
    EXPECT_EQ(rec.ips, (std::vector<std::string>{"10.244.0.7", "fd00::7"}));
    EXPECT_EQ(rec.network, "k8s-pod-network");
  }
}

TEST(CniPluginLogicTest, PluginKeysChooseSocketAndTimeout) {
  FakeCulvertd d;
  auto r = run(inv("ADD"), conf("1.0.0", R"(,"enrollment_socket":"/tmp/x.sock","timeout_ms":250)"), d);
  ASSERT_EQ(r.code, 0) << r.out;
  EXPECT_EQ(d.last_socket, "/tmp/x.sock");
  EXPECT_EQ(d.last_timeout, std::chrono::milliseconds(250));
}

TEST(CniPluginLogicTest, ExemptNamespacesAreNeverEnrolled) {
  FakeCulvertd d;
  auto i = inv("ADD");
  i.args = "K8S_POD_NAMESPACE=kube-system;K8S_POD_NAME=coredns";
  auto r = run(i, conf(), d);
  EXPECT_EQ(r.code, 0);
  EXPECT_EQ(r.j, json::parse(kPrevResult));
  EXPECT_TRUE(d.requests.empty());
  i.args = "K8S_POD_NAMESPACE=culvert-system;K8S_POD_NAME=culvertd-x";
  EXPECT_EQ(run(i, conf(), d).code, 0);
  EXPECT_TRUE(d.requests.empty());
  // Configurable: the list replaces the default.
  i.args = "K8S_POD_NAMESPACE=batch;K8S_POD_NAME=j";
  EXPECT_EQ(run(i, conf("1.0.0", R"(,"exempt_namespaces":["batch"])"), d).code, 0);
  EXPECT_TRUE(d.requests.empty());
  i.args = "K8S_POD_NAMESPACE=kube-system;K8S_POD_NAME=j";
  EXPECT_EQ(run(i, conf("1.0.0", R"(,"exempt_namespaces":["batch"])"), d).code, 0);
  EXPECT_EQ(d.requests.size(), 1u);
}

TEST(CniPluginLogicTest, UnreachableCulvertdFailsAddRetryablyByDefault) {
  FakeCulvertd d;
  d.reachable = false;
  auto r = run(inv("ADD"), conf("0.4.0"), d);
  EXPECT_EQ(r.code, 1);
  EXPECT_EQ(r.j["code"], kCniErrTryAgainLater);
  EXPECT_EQ(r.j["cniVersion"], "0.4.0");
  EXPECT_NE(r.j["details"].get<std::string>().find("cannot connect"), std::string::npos);
}

TEST(CniPluginLogicTest, UnreachableCulvertdWithAllowStartsThePodUncapturedAndSaysSo) {
  auto dir = std::filesystem::temp_directory_path() / ("culvert-cni-test-" + std::to_string(::getpid()));
  std::filesystem::remove_all(dir);
  FakeCulvertd d;
  d.reachable = false;
  auto r = run(inv("ADD"), conf("1.0.0", R"(,"on_unreachable":"allow","uncaptured_dir":")" + dir.string() + "\""), d);
  EXPECT_EQ(r.code, 0) << r.out;
  EXPECT_EQ(r.j, json::parse(kPrevResult));
  EXPECT_NE(r.log.find("UNCAPTURED"), std::string::npos) << r.log;
  std::ifstream marker(dir / "abc123_eth0.json");
  ASSERT_TRUE(marker.good());
  std::string line;
  std::getline(marker, line);
  auto rec = recordFromJson(json::parse(line));
  ASSERT_TRUE(rec.has_value());
  EXPECT_EQ(rec->name, "cart-1");
  std::filesystem::remove_all(dir);
}

TEST(CniPluginLogicTest, RefusedEnrollmentIsAPluginError) {
  FakeCulvertd d;
  d.answer = EnrollmentResponse::failure("capture.port: capture port 15001 is taken");
  auto r = run(inv("ADD"), conf(), d);
  EXPECT_EQ(r.code, 1);
  EXPECT_EQ(r.j["code"], kCniErrEnrollmentRefused);
  EXPECT_EQ(r.j["details"], "capture.port: capture port 15001 is taken");
}

TEST(CniPluginLogicTest, AddNeedsPrevResultAndEnvironment) {
  FakeCulvertd d;
  auto r = run(inv("ADD"), R"({"cniVersion":"1.0.0","name":"n","type":"culvert-cni"})", d);
  EXPECT_EQ(r.j["code"], kCniErrInvalidConfig);
  auto i = inv("ADD");
  i.netns.clear();
  EXPECT_EQ(run(i, conf(), d).j["code"], kCniErrInvalidEnvironment);
  i = inv("ADD");
  i.container_id.clear();
  EXPECT_EQ(run(i, conf(), d).j["code"], kCniErrInvalidEnvironment);
  i = inv("ADD");
  i.args = "K8S_POD_NAMESPACE";  // not KEY=VALUE
  EXPECT_EQ(run(i, conf(), d).j["code"], kCniErrInvalidEnvironment);
  EXPECT_TRUE(d.requests.empty());
}

TEST(CniPluginLogicTest, BadConfigurationGetsTheSpecCodes) {
  FakeCulvertd d;
  EXPECT_EQ(run(inv("ADD"), "{not json", d).j["code"], kCniErrDecode);
  EXPECT_EQ(run(inv("ADD"), "[1,2]", d).j["code"], kCniErrDecode);
  EXPECT_EQ(run(inv("ADD"), R"({"name":"n"})", d).j["code"], kCniErrInvalidConfig);       // no cniVersion
  EXPECT_EQ(run(inv("ADD"), R"({"cniVersion":"1.0.0"})", d).j["code"], kCniErrInvalidConfig);  // no name
  auto r = run(inv("ADD"), R"({"cniVersion":"0.3.1","name":"n"})", d);
  EXPECT_EQ(r.j["code"], kCniErrIncompatibleVersion);
  EXPECT_EQ(run(inv("ADD"), conf("1.0.0", R"(,"timeout_ms":"soon")"), d).j["code"], kCniErrInvalidConfig);
  EXPECT_EQ(run(inv("ADD"), conf("1.0.0", R"(,"on_unreachable":"maybe")"), d).j["code"], kCniErrInvalidConfig);
  EXPECT_EQ(run(inv("ADD"), conf("1.0.0", R"(,"enrollment_socket":"rel.sock")"), d).j["code"], kCniErrInvalidConfig);
  auto bad_ips = R"({"cniVersion":"1.0.0","name":"n","prevResult":{"ips":[{"address":7}]}})";
  EXPECT_EQ(run(inv("ADD"), bad_ips, d).j["code"], kCniErrInvalidConfig);
  EXPECT_TRUE(d.requests.empty());
}

TEST(CniPluginLogicTest, DelIsIdempotentAndSucceedsWithoutCulvertd) {
  FakeCulvertd d;
  auto r = run(inv("DEL"), conf(), d);
  EXPECT_EQ(r.code, 0) << r.out;
  EXPECT_TRUE(r.out.empty());
  ASSERT_EQ(d.requests.size(), 1u);
  EXPECT_EQ(d.requests[0].op, EnrollmentOp::Unenroll);
  EXPECT_EQ(d.requests[0].container_id, "abc123");
  EXPECT_EQ(d.requests[0].ifname, "eth0");
  // The namespace may be gone already, and prevResult absent.
  auto i = inv("DEL");
  i.netns.clear();
  EXPECT_EQ(run(i, R"({"cniVersion":"1.0.0","name":"n"})", d).code, 0);
  d.reachable = false;
  r = run(inv("DEL"), conf(), d);
  EXPECT_EQ(r.code, 0);
  EXPECT_NE(r.log.find("unreachable"), std::string::npos);
}

EnrollmentRecord enrolled() {
  EnrollmentRecord rec;
  rec.container_id = "abc123";
  rec.ifname = "eth0";
  rec.namespace_ = "shop";
  rec.name = "cart-1";
  rec.netns_path = "/var/run/netns/p";
  rec.network = "n";
  return rec;
}

TEST(CniPluginLogicTest, CheckVerifiesTheEnrollment) {
  FakeCulvertd d;
  auto r = run(inv("CHECK"), conf(), d);
  EXPECT_EQ(r.code, 1);
  EXPECT_EQ(r.j["code"], kCniErrNotCaptured);
  d.pods.push_back(enrolled());
  r = run(inv("CHECK"), conf(), d);
  EXPECT_EQ(r.code, 0) << r.out;
  EXPECT_TRUE(r.out.empty());
  d.pods[0].netns_path = "/var/run/netns/other";
  EXPECT_EQ(run(inv("CHECK"), conf(), d).j["code"], kCniErrNotCaptured);
  d.reachable = false;
  EXPECT_EQ(run(inv("CHECK"), conf(), d).j["code"], kCniErrTryAgainLater);
}

TEST(CniPluginLogicTest, StatusReportsWhetherCulvertdAnswers) {
  FakeCulvertd d;
  std::string status_conf = R"({"cniVersion":"1.1.0","name":"n","type":"culvert-cni"})";
  EXPECT_EQ(run(inv("STATUS"), status_conf, d).code, 0);
  d.reachable = false;
  auto r = run(inv("STATUS"), status_conf, d);
  EXPECT_EQ(r.code, 1);
  EXPECT_EQ(r.j["code"], kCniErrPluginNotAvailable);
  // STATUS and GC exist from 1.1.0 on.
  EXPECT_EQ(run(inv("STATUS"), R"({"cniVersion":"1.0.0","name":"n"})", d).j["code"], kCniErrIncompatibleVersion);
}

TEST(CniPluginLogicTest, GcRemovesEnrollmentsMissingFromValidAttachments) {
  FakeCulvertd d;
  d.pods.push_back(enrolled());
  auto gone = enrolled();
  gone.container_id = "dead1";
  d.pods.push_back(gone);
  auto manual = enrolled();  // culvertctl enroll: no network
  manual.container_id = "manual";
  manual.network.reset();
  d.pods.push_back(manual);
  auto other = enrolled();  // another conflist's pod
  other.container_id = "other";
  other.network = "other-net";
  d.pods.push_back(other);
  auto r = run(inv("GC"),
               R"({"cniVersion":"1.1.0","name":"n","cni.dev/valid-attachments":[{"containerID":"abc123","ifname":"eth0"}]})",
               d);
  EXPECT_EQ(r.code, 0) << r.out;
  ASSERT_EQ(d.requests.size(), 2u);  // list, then one unenroll
  EXPECT_EQ(d.requests[1].op, EnrollmentOp::Unenroll);
  EXPECT_EQ(d.requests[1].container_id, "dead1");
  EXPECT_EQ(run(inv("GC"), R"({"cniVersion":"1.1.0","name":"n"})", d).j["code"], kCniErrInvalidConfig);
}

TEST(CniPluginLogicTest, CniArgsAndIps) {
  auto args = parseCniArgs("A=1;;B=x=y;");
  ASSERT_TRUE(args.has_value());
  EXPECT_EQ(args->at("A"), "1");
  EXPECT_EQ(args->at("B"), "x=y");
  EXPECT_FALSE(parseCniArgs("=1").has_value());
  auto ips = podIpsFromResult(json::parse(R"({"ips":[{"version":"4","address":"10.1.2.3/16"}]})"));  // 0.4.0 shape
  ASSERT_TRUE(ips.has_value());
  EXPECT_EQ(*ips, std::vector<std::string>{"10.1.2.3"});
  // Without K8S_POD_*: the container in "default".
  auto i = inv("ADD");
  i.args.clear();
  NetConf c;
  auto rec = buildRecord(i, c);
  ASSERT_TRUE(rec.has_value());
  EXPECT_EQ(rec->namespace_, "default");
  EXPECT_EQ(rec->name, "abc123");
}

}  // namespace
}  // namespace culvert::cni
