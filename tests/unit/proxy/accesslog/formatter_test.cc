#include "proxy/accesslog/formatter.h"

#include <gtest/gtest.h>

namespace culvert::accesslog {
namespace {

using namespace std::chrono_literals;

struct Fixture {
  http::RequestHead request;
  StreamInfo info;
  Fixture() {
    request.method = "POST";
    request.path = "/orders?id=1";
    request.headers.add("host", "orders.shop");
    request.headers.add("x-request-id", "abc-123");
    request.headers.add("user-agent", "curl/7.88 \"quoted\"");
    info.request = &request;
    info.start_time = std::chrono::system_clock::time_point(std::chrono::milliseconds(1'700'000'000'123));
    info.start = std::chrono::steady_clock::time_point(10s);
    info.last_downstream_rx = info.start + 2ms;
    info.first_upstream_rx = info.start + 15ms;
    info.end = info.start + 21ms;
    info.protocol = "HTTP/1.1";
    info.response_code = 503;
    info.flags.set(ResponseFlag::UpstreamConnectionFailure);
    info.flags.set(ResponseFlag::UpstreamRetryLimitExceeded);
    info.response_code_details = "upstream_reset_before_response_started{connection_failure}";
    info.bytes_received = 12;
    info.bytes_sent = 91;
    info.upstream_cluster = "orders";
    info.upstream_host = *common::SocketAddress::parse("10.244.1.7", 8080);
    info.upstream_transport_failure_reason = "connect: Connection refused";
    info.attempt_count = 3;
    info.route_name = "orders-route";
    info.downstream_remote_address = "10.244.0.5:40312";
    info.downstream_local_address = "10.96.0.10:80";
    info.tenant = "shop";
    info.pod_name = "web-1";
    info.pod_namespace = "shop-ns";
    info.pod_ip = "10.244.0.5";
    info.response_headers.add("content-type", "text/plain");
  }
};

std::string text(std::string_view format, const StreamInfo& info) {
  auto f = Formatter::text(format, false);
  EXPECT_TRUE(f) << f.error().describe();
  return f ? (*f)->format(info) : std::string();
}

TEST(Formatter, EveryOperatorAsText) {
  Fixture fx;
  EXPECT_EQ(text("%START_TIME%", fx.info), "2023-11-14T22:13:20.123Z");
  EXPECT_EQ(text("%START_TIME(%s)%", fx.info), "1700000000");
  EXPECT_EQ(text("%START_TIME(%Y %E6S)%", fx.info), "2023 20.123000");
  EXPECT_EQ(text("%REQ(:METHOD)% %REQ(:PATH)% %REQ(:AUTHORITY)% %PROTOCOL%", fx.info),
            "POST /orders?id=1 orders.shop HTTP/1.1");
  EXPECT_EQ(text("%REQ(X-REQUEST-ID)%|%REQUEST_HEADER(x-missing)%|%REQ(X-MISSING?HOST)%", fx.info),
            "abc-123|-|orders.shop");
  EXPECT_EQ(text("%REQ(X-REQUEST-ID):3%", fx.info), "abc");
  EXPECT_EQ(text("%RESP(CONTENT-TYPE)% %RESP(X-NONE)% %TRAILER(GRPC-STATUS)%", fx.info), "text/plain - -");
  EXPECT_EQ(text("%RESPONSE_CODE% %RESPONSE_FLAGS% %RESPONSE_CODE_DETAILS%", fx.info),
            "503 UF,URX upstream_reset_before_response_started{connection_failure}");
  EXPECT_EQ(text("%DURATION% %REQUEST_DURATION% %RESPONSE_DURATION% %BYTES_RECEIVED% %BYTES_SENT%", fx.info),
            "21 2 15 12 91");
  EXPECT_EQ(text("%UPSTREAM_HOST% %UPSTREAM_CLUSTER% %ROUTE_NAME% %UPSTREAM_REQUEST_ATTEMPT_COUNT%", fx.info),
            "10.244.1.7:8080 orders orders-route 3");
  EXPECT_EQ(text("%UPSTREAM_TRANSPORT_FAILURE_REASON%", fx.info), "connect: Connection refused");
  EXPECT_EQ(text("%DOWNSTREAM_REMOTE_ADDRESS% %DOWNSTREAM_REMOTE_ADDRESS_WITHOUT_PORT% %DOWNSTREAM_LOCAL_ADDRESS% "
                 "%DOWNSTREAM_LOCAL_ADDRESS_WITHOUT_PORT%",
                 fx.info),
            "10.244.0.5:40312 10.244.0.5 10.96.0.10:80 10.96.0.10");
  EXPECT_EQ(text("%CULVERT_TENANT% %CULVERT_POD_NAMESPACE%/%CULVERT_POD_NAME% %CULVERT_POD_IP%", fx.info),
            "shop shop-ns/web-1 10.244.0.5");
}

TEST(Formatter, AbsentValuesAreDashInTextAndNullInJson) {
  StreamInfo empty;
  EXPECT_EQ(text("%PROTOCOL% %RESPONSE_FLAGS% %UPSTREAM_HOST% %REQ(X-REQUEST-ID)% %RESPONSE_CODE% %DURATION%", empty),
            "- - - - 0 -");
  JsonFormatValue root{.type = JsonFormatValue::Type::Object};
  auto add = [&](const char* k, const char* v) {
    JsonFormatValue s{.type = JsonFormatValue::Type::String};
    s.string = v;
    root.object.emplace_back(k, s);
  };
  add("code", "%RESPONSE_CODE%");
  add("host", "%UPSTREAM_HOST%");
  add("mixed", "host=%UPSTREAM_HOST%");
  auto f = Formatter::json(root, false);
  ASSERT_TRUE(f);
  EXPECT_EQ((*f)->format(empty), R"({"code":0,"host":null,"mixed":"host=-"})" "\n");
  auto omit = Formatter::json(root, true);
  ASSERT_TRUE(omit);
  EXPECT_EQ((*omit)->format(empty), R"({"code":0,"mixed":"host=-"})" "\n");
}

TEST(Formatter, JsonKeepsTypesNestsAndEscapes) {
  Fixture fx;
  JsonFormatValue root{.type = JsonFormatValue::Type::Object};
  JsonFormatValue nested{.type = JsonFormatValue::Type::Object};
  JsonFormatValue ua{.type = JsonFormatValue::Type::String};
  ua.string = "%REQ(USER-AGENT)%";
  nested.object.emplace_back("ua", ua);
  JsonFormatValue flag{.type = JsonFormatValue::Type::Bool};
  flag.boolean = true;
  JsonFormatValue bytes{.type = JsonFormatValue::Type::String};
  bytes.string = "%BYTES_SENT%";
  root.object.emplace_back("bytes", bytes);
  root.object.emplace_back("client", nested);
  root.object.emplace_back("culvert", flag);
  auto f = Formatter::json(root, false);
  ASSERT_TRUE(f);
  EXPECT_EQ((*f)->format(fx.info), R"({"bytes":91,"client":{"ua":"curl/7.88 \"quoted\""},"culvert":true})" "\n");
}

TEST(Formatter, JsonStringEscapes) {
  std::string out;
  appendJsonString(out, "plain");
  appendJsonString(out, std::string_view("a\"b\\c\nd\x01" "e\x7f", 10));
  EXPECT_EQ(out, R"("plain""a\"b\\c\nd\u0001e\u007f")");
}

TEST(Formatter, DefaultLineIsOneJsonObject) {
  Fixture fx;
  auto line = Formatter::defaultJson()->format(fx.info);
  ASSERT_FALSE(line.empty());
  EXPECT_EQ(line.back(), '\n');
  EXPECT_EQ(std::count(line.begin(), line.end(), '\n'), 1);
  EXPECT_NE(line.find(R"("request_id":"abc-123")"), std::string::npos) << line;
  EXPECT_NE(line.find(R"("response_flags":"UF,URX")"), std::string::npos) << line;
  EXPECT_NE(line.find(R"("downstream_remote_address":"10.244.0.5:40312")"), std::string::npos) << line;
}

TEST(Formatter, RejectsBadOperators) {
  auto reason = [](std::string_view format) {
    auto f = Formatter::text(format, false);
    return f ? std::string("accepted") : f.error().message;
  };
  EXPECT_EQ(reason("%FOO%"), "unknown command operator %FOO%");
  EXPECT_NE(reason("50%").find("no valid command operator at position 2"), std::string::npos);
  EXPECT_NE(reason("%REQ%").find("needs a header name"), std::string::npos);
  EXPECT_NE(reason("%REQ(A?B?C)%").find("one '?'"), std::string::npos);
  EXPECT_NE(reason("%DURATION(x)%").find("takes no argument"), std::string::npos);
  EXPECT_NE(reason("%REQ(X):%").find("length"), std::string::npos);
  EXPECT_NE(reason("%REQ(X%").find("unterminated"), std::string::npos);
  EXPECT_EQ(reason("%RESPONSE_CODE%\n"), "accepted");
  EXPECT_FALSE(Formatter::text("%RESPONSE_CODE%", true));  // omit_empty_values: JSON only
}

}  // namespace
}  // namespace culvert::accesslog
