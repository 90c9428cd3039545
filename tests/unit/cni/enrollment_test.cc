#include "cni/protocol/enrollment.h"

#include <gtest/gtest.h>

namespace culvert::cni {
namespace {

using nlohmann::json;

EnrollmentRecord fullRecord() {
  EnrollmentRecord r;
  r.container_id = "abc123";
  r.ifname = "eth1";
  r.pod_uid = "7d3c-uid";
  r.namespace_ = "shop";
  r.name = "cart-0";
  r.netns_path = "/var/run/netns/cni-1234";
  r.ips = {"10.244.0.5", "fd00::5"};
  r.tenant = "team-a";
  r.exclude_ports = {22, 9090};
  r.exclude_cidrs = {"10.0.0.0/8", "fd00::/64"};
  r.fail_mode = "closed";
  r.network = "k8s-pod-network";
  return r;
}

json minimalJson() {
  return {{"container_id", "c1"}, {"namespace", "ns"}, {"name", "pod"}, {"netns_path", "/proc/1/ns/net"}};
}

void expectRecordError(const json& j, const std::string& where, const std::string& part) {
  auto r = recordFromJson(j);
  ASSERT_FALSE(r.has_value()) << "accepted " << j.dump();
  EXPECT_EQ(r.error().where, where) << r.error().describe();
  EXPECT_NE(r.error().message.find(part), std::string::npos) << r.error().describe();
}

TEST(EnrollmentRecordTest, JsonRoundTrip) {
  EnrollmentRecord r = fullRecord();
  json j = toJson(r);
  EXPECT_EQ(j["namespace"], "shop");
  EXPECT_FALSE(j.contains("namespace_"));
  EXPECT_EQ(j["exclude_ports"], json({22, 9090}));
  auto back = recordFromJson(j);
  ASSERT_TRUE(back.has_value()) << back.error().describe();
  EXPECT_EQ(*back, r);
}

TEST(EnrollmentRecordTest, DefaultsForOptionalFields) {
  auto r = recordFromJson(minimalJson());
  ASSERT_TRUE(r.has_value()) << r.error().describe();
  EXPECT_EQ(r->ifname, "eth0");
  EXPECT_EQ(r->pod_uid, "");
  EXPECT_TRUE(r->ips.empty());
  EXPECT_FALSE(r->tenant.has_value());
  EXPECT_FALSE(r->fail_mode.has_value());
  EXPECT_FALSE(toJson(*r).contains("tenant"));
  EXPECT_FALSE(toJson(*r).contains("fail_mode"));
  EXPECT_FALSE(r->network.has_value());
  EXPECT_FALSE(toJson(*r).contains("network"));
}

TEST(EnrollmentRecordTest, UnknownFieldsAreIgnored) {
  json j = minimalJson();
  j["added_in_a_later_version"] = {1, 2};
  EXPECT_TRUE(recordFromJson(j).has_value());
}

TEST(EnrollmentRecordTest, MissingRequiredFields) {
  for (const char* key : {"container_id", "namespace", "name", "netns_path"}) {
    json j = minimalJson();
    j.erase(key);
    expectRecordError(j, key, "missing required field");
  }
}

TEST(EnrollmentRecordTest, WrongTypes) {
  json j = minimalJson();
  j["name"] = 5;
  expectRecordError(j, "name", "expected a string, got number");
  j = minimalJson();
  j["ips"] = "10.0.0.1";
  expectRecordError(j, "ips", "expected a list of strings, got string");
  j = minimalJson();
  j["ips"] = {"10.0.0.1", 7};
  expectRecordError(j, "ips[1]", "expected a string, got number");
  j = minimalJson();
  j["exclude_ports"] = {"80"};
  expectRecordError(j, "exclude_ports[0]", "expected a port number, got string");
  j = minimalJson();
  j["tenant"] = json::array();
  expectRecordError(j, "tenant", "expected a string");
  expectRecordError(json::array(), "", "expected an object, got array");
}

TEST(EnrollmentRecordTest, InvalidValues) {
  json j = minimalJson();
  j["exclude_ports"] = {80, 70000};
  expectRecordError(j, "exclude_ports[1]", "port must be 1..65535, got 70000");
  j["exclude_ports"] = {0};
  expectRecordError(j, "exclude_ports[0]", "port must be 1..65535, got 0");
  j["exclude_ports"] = {-5};
  expectRecordError(j, "exclude_ports[0]", "got -5");
  j["exclude_ports"] = {1.5};
  expectRecordError(j, "exclude_ports[0]", "expected a port number");

  j = minimalJson();
  j["ips"] = {"10.0.0.1", "10.0.0.300"};
  expectRecordError(j, "ips[1]", "not an IPv4 or IPv6 address: '10.0.0.300'");
  j["ips"] = {"10.0.0.1/24"};
  expectRecordError(j, "ips[0]", "not an IPv4 or IPv6 address");

  j = minimalJson();
  j["exclude_cidrs"] = {"10.0.0.0/33"};
  expectRecordError(j, "exclude_cidrs[0]", "prefix length must be 0..32");
  j["exclude_cidrs"] = {"10.0.0.0"};
  expectRecordError(j, "exclude_cidrs[0]", "expected ADDRESS/PREFIX");
  j["exclude_cidrs"] = {"nope/8"};
  expectRecordError(j, "exclude_cidrs[0]", "not an IPv4 or IPv6 prefix");
  j["exclude_cidrs"] = {"::/129"};
  expectRecordError(j, "exclude_cidrs[0]", "0..128");

  j = minimalJson();
  j["fail_mode"] = "sometimes";
  expectRecordError(j, "fail_mode", "must be open or closed");
  j = minimalJson();
  j["tenant"] = "";
  expectRecordError(j, "tenant", "must not be empty");
  j = minimalJson();
  j["netns_path"] = "relative/ns";
  expectRecordError(j, "netns_path", "absolute path");
  j = minimalJson();
  j["container_id"] = "-bad";
  expectRecordError(j, "container_id", "must start with a letter or digit");
  j["container_id"] = "has space";
  expectRecordError(j, "container_id", "must start with");
  j = minimalJson();
  j["ifname"] = "a-very-long-ifname0";
  expectRecordError(j, "ifname", "longer than 15");
  j["ifname"] = "eth/0";
  expectRecordError(j, "ifname", "not a valid interface name");
  j = minimalJson();
  j["namespace"] = "";
  expectRecordError(j, "namespace", "must not be empty");
}

TEST(EnrollmentRequestTest, RoundTripsEveryOp) {
  for (const auto& request :
       {EnrollmentRequest::enroll(fullRecord()), EnrollmentRequest::unenrollByKey("abc", "eth2"),
        EnrollmentRequest::unenrollByNetns("/var/run/netns/x"), EnrollmentRequest::list()}) {
    std::string line = encodeRequest(request);
    ASSERT_EQ(line.back(), '\n');
    EXPECT_EQ(line.find('\n'), line.size() - 1);
    auto back = parseRequest(line);
    ASSERT_TRUE(back.has_value()) << back.error().describe() << " for " << line;
    EXPECT_EQ(*back, request) << line;
  }
}

TEST(EnrollmentRequestTest, WireShape) {
  EXPECT_EQ(toJson(EnrollmentRequest::list()), json({{"op", "list"}}));
  EXPECT_EQ(toJson(EnrollmentRequest::unenrollByNetns("/n")), json({{"op", "unenroll"}, {"netns_path", "/n"}}));
  EXPECT_EQ(toJson(EnrollmentRequest::unenrollByKey("c")),
            json({{"op", "unenroll"}, {"container_id", "c"}, {"ifname", "eth0"}}));
  EXPECT_EQ(toJson(EnrollmentRequest::enroll(fullRecord()))["record"]["namespace"], "shop");
}

TEST(EnrollmentRequestTest, Errors) {
  auto error = [](std::string_view line) {
    auto r = parseRequest(line);
    EXPECT_FALSE(r.has_value()) << line;
    return r ? std::string() : r.error().describe();
  };
  EXPECT_EQ(error("{not json"), "invalid JSON");
  EXPECT_EQ(error(""), "invalid JSON");
  EXPECT_EQ(error("[1,2]"), "a request must be a JSON object, got array");
  EXPECT_EQ(error(R"({"record":{}})"), "op: missing required field");
  EXPECT_EQ(error(R"({"op":"fly"})"), "op: unknown op 'fly' (expected enroll, unenroll or list)");
  EXPECT_EQ(error(R"({"op":"enroll"})"), "record: missing required field");
  EXPECT_EQ(error(R"({"op":"enroll","record":{"container_id":"c"}})"), "record.namespace: missing required field");
  EXPECT_EQ(error(R"({"op":"enroll","record":{"container_id":"c","namespace":"n","name":"p","netns_path":"/x","ips":["bad"]}})"),
            "record.ips[0]: not an IPv4 or IPv6 address: 'bad'");
  EXPECT_EQ(error(R"({"op":"unenroll"})"), "container_id: unenroll needs container_id (and ifname) or netns_path");
  EXPECT_EQ(error(R"({"op":"unenroll","container_id":"c","netns_path":"/x"})"),
            "netns_path: give either container_id (and ifname) or netns_path, not both");
  EXPECT_EQ(error(R"({"op":"unenroll","netns_path":"x"})"), "netns_path: must be an absolute path, got 'x'");
  EXPECT_EQ(error(R"({"op":"unenroll","container_id":5})"), "container_id: expected a string, got number");
  EXPECT_EQ(error(R"({"op":"list"} {"op":"list"})"), "invalid JSON");
  EXPECT_NE(error(std::string(kMaxRequestLineBytes + 10, ' ')).find("exceeds"), std::string::npos);
  // CRLF framing is tolerated.
  EXPECT_TRUE(parseRequest("{\"op\":\"list\"}\r\n").has_value());
  // unenroll by key defaults ifname.
  auto r = parseRequest(R"({"op":"unenroll","container_id":"c"})");
  ASSERT_TRUE(r.has_value());
  EXPECT_EQ(r->ifname, "eth0");
}

TEST(EnrollmentResponseTest, RoundTrip) {
  EnrollmentResponse ok = EnrollmentResponse::success();
  EXPECT_EQ(encodeResponse(ok), "{\"ok\":true}\n");
  auto back = parseResponse(encodeResponse(ok));
  ASSERT_TRUE(back.has_value());
  EXPECT_EQ(*back, ok);

  EnrollmentResponse list = EnrollmentResponse::success();
  list.pods = std::vector<EnrollmentRecord>{fullRecord(), fullRecord()};
  list.extra["generation"] = 7;
  auto list_back = parseResponse(encodeResponse(list));
  ASSERT_TRUE(list_back.has_value()) << list_back.error().describe();
  EXPECT_EQ(*list_back, list);

  EnrollmentResponse bad = EnrollmentResponse::failure("netns gone");
  EXPECT_EQ(toJson(bad), json({{"ok", false}, {"error", "netns gone"}}));
  auto bad_back = parseResponse(encodeResponse(bad));
  ASSERT_TRUE(bad_back.has_value());
  EXPECT_EQ(*bad_back, bad);
}

TEST(EnrollmentResponseTest, Errors) {
  auto error = [](std::string_view line) {
    auto r = parseResponse(line);
    EXPECT_FALSE(r.has_value()) << line;
    return r ? std::string() : r.error().describe();
  };
  EXPECT_EQ(error("{}"), "ok: missing required field");
  EXPECT_EQ(error(R"({"ok":"yes"})"), "ok: expected a boolean, got string");
  EXPECT_EQ(error(R"({"ok":false})"), "error: a failed response must say why");
  EXPECT_EQ(error(R"({"ok":true,"pods":{}})"), "pods: expected a list, got object");
  EXPECT_EQ(error(R"({"ok":true,"pods":[{"container_id":"c"}]})"), "pods[0].namespace: missing required field");
}

TEST(EnrollmentWireTest, InvalidUtf8DoesNotThrow) {
  EnrollmentRecord r = fullRecord();
  r.name = std::string("bad\xff\xfe");
  std::string line = encodeRequest(EnrollmentRequest::enroll(r));
  EXPECT_EQ(line.back(), '\n');
  EXPECT_TRUE(parseRequest(line).has_value());
  // Newlines inside strings are escaped, so framing holds.
  r.name = "two\nlines";
  line = encodeRequest(EnrollmentRequest::enroll(r));
  EXPECT_EQ(line.find('\n'), line.size() - 1);
  auto back = parseRequest(line);
  ASSERT_TRUE(back.has_value());
  EXPECT_EQ(back->record.name, "two\nlines");
}

}  // namespace
}  // namespace culvert::cni
