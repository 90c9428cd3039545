#include "xds/translate/access_log.h"

#include <google/protobuf/text_format.h>
#include <gtest/gtest.h>

#include <string>

#include "proxy/accesslog/formatter.h"
#include "xds/proto/envoy/config/listener/v3/listener.pb.h"
#include "xds/proto/envoy/extensions/access_loggers/file/v3/file.pb.h"
#include "xds/proto/envoy/extensions/access_loggers/stream/v3/stream.pb.h"
#include "xds/proto/envoy/extensions/filters/network/tcp_proxy/v3/tcp_proxy.pb.h"
#include "xds/translate/translate.h"

namespace culvert::xds::translate {
namespace {

using envoy::config::accesslog::v3::AccessLog;
using Logs = google::protobuf::RepeatedPtrField<AccessLog>;

Logs parseLogs(const std::string& text) {
  Logs out;
  AccessLog log;
  EXPECT_TRUE(google::protobuf::TextFormat::ParseFromString(text, &log)) << text;
  *out.Add() = log;
  return out;
}

std::string fileLog(const std::string& file_body, const std::string& extra = "") {
  return R"(name: "envoy.access_loggers.file" )" + extra + R"(
    typed_config {
      [type.googleapis.com/envoy.extensions.access_loggers.file.v3.FileAccessLog] {
        path: "/var/log/culvert/access.log" )" +
         file_body + R"(
      }
    })";
}

void expectRejected(const common::Result<accesslog::AccessLogConfigs>& r, const std::string& where,
                    const std::string& message_part) {
  ASSERT_FALSE(r) << "expected a rejection at " << where;
  EXPECT_EQ(r.error().where, where) << r.error().describe();
  EXPECT_NE(r.error().message.find(message_part), std::string::npos) << r.error().describe();
}

accesslog::StreamInfo sample() {
  static const http::RequestHead request = [] {
    http::RequestHead r;
    r.method = "GET";
    r.path = "/hello";
    r.headers.add("host", "api.example");
    return r;
  }();
  accesslog::StreamInfo info;
  info.request = &request;
  info.response_code = 200;
  return info;
}

TEST(TranslateAccessLog, FileWithJsonFormat) {
  auto r = translateAccessLogs(parseLogs(fileLog(R"(
        log_format {
          json_format {
            fields { key: "code" value { string_value: "%RESPONSE_CODE%" } }
            fields { key: "what" value { string_value: "%REQ(:METHOD)% %REQ(:PATH)%" } }
            fields { key: "fixed" value { number_value: 7 } }
          }
        })")));
  ASSERT_TRUE(r) << r.error().describe();
  ASSERT_EQ(r->size(), 1u);
  const auto& log = *(*r)[0];
  EXPECT_EQ(log.path, "/var/log/culvert/access.log");
  EXPECT_FALSE(log.filter);
  EXPECT_EQ(log.formatter->format(sample()), R"({"code":200,"fixed":7,"what":"GET /hello"})" "\n");
}

TEST(TranslateAccessLog, NoFormatIsCulvertsDefaultJsonLine) {
  auto r = translateAccessLogs(parseLogs(fileLog("")));
  ASSERT_TRUE(r) << r.error().describe();
  EXPECT_EQ((*r)[0]->formatter, accesslog::Formatter::defaultJson());
}

TEST(TranslateAccessLog, TextFormatsAndStdout) {
  auto r = translateAccessLogs(parseLogs(R"(
    typed_config {
      [type.googleapis.com/envoy.extensions.access_loggers.stream.v3.StdoutAccessLog] {
        log_format { text_format_source { inline_string: "%RESPONSE_CODE% %REQ(:AUTHORITY)%\n" } }
      }
    })"));
  ASSERT_TRUE(r) << r.error().describe();
  EXPECT_EQ((*r)[0]->path, "/dev/stdout");
  EXPECT_EQ((*r)[0]->formatter->format(sample()), "200 api.example\n");
}

TEST(TranslateAccessLog, Filters) {
  auto r = translateAccessLogs(parseLogs(fileLog("", R"(filter { status_code_filter { comparison { op: GE value { default_value: 500 } } } })")));
  ASSERT_TRUE(r) << r.error().describe();
  ASSERT_TRUE((*r)[0]->filter);
  auto info = sample();
  EXPECT_FALSE((*r)[0]->filter->matches(info));
  info.response_code = 503;
  EXPECT_TRUE((*r)[0]->filter->matches(info));

  auto flags = translateAccessLogs(parseLogs(fileLog("", R"(filter { response_flag_filter { flags: "UF" flags: "NR" } })")));
  ASSERT_TRUE(flags) << flags.error().describe();
  info.flags = {};
  EXPECT_FALSE((*flags)[0]->filter->matches(info));
  info.flags.set(accesslog::ResponseFlag::NoRouteFound);
  EXPECT_TRUE((*flags)[0]->filter->matches(info));
}

TEST(TranslateAccessLog, Rejections) {
  expectRejected(translateAccessLogs(parseLogs(fileLog(R"(log_format { json_format { fields { key: "x" value { string_value: "%NOPE%" } } } })"))),
                 "access_log[0].typed_config.log_format.json_format.x", "unknown command operator %NOPE%");
  expectRejected(translateAccessLogs(parseLogs(fileLog(R"(log_format { text_format: "100%" })"))),
                 "access_log[0].typed_config.log_format.text_format", "no valid command operator");
  expectRejected(translateAccessLogs(parseLogs(fileLog(R"(log_format { json_format { fields { key: "l" value { list_value {} } } } })"))),
                 "access_log[0].typed_config.log_format.json_format.l", "lists are not supported");
  expectRejected(translateAccessLogs(parseLogs(fileLog(R"(log_format { text_format_source { filename: "/etc/f" } })"))),
                 "access_log[0].typed_config.log_format.text_format_source", "only inline_string");
  expectRejected(translateAccessLogs(parseLogs(R"(name: "x")")), "access_log[0].typed_config", "required");
  expectRejected(translateAccessLogs(parseLogs(R"(typed_config { type_url: "type.googleapis.com/envoy.extensions.access_loggers.grpc.v3.HttpGrpcAccessLogConfig" })")),
                 "access_log[0].typed_config", "not supported");
  expectRejected(translateAccessLogs(parseLogs(fileLog("", R"(filter { response_flag_filter { flags: "XX" } })"))),
                 "access_log[0].filter.response_flag_filter.flags[0]", "unknown response flag 'XX'");
  expectRejected(translateAccessLogs(parseLogs(fileLog("", R"(filter { status_code_filter { comparison { value { default_value: 500 runtime_key: "k" } } } })"))),
                 "access_log[0].filter.status_code_filter.comparison.value.runtime_key", "runtime");
  expectRejected(translateAccessLogs(parseLogs(fileLog("", "filter {}"))), "access_log[0].filter", "a filter is required");
  expectRejected(translateAccessLogs(parseLogs(R"(typed_config {
      [type.googleapis.com/envoy.extensions.access_loggers.file.v3.FileAccessLog] {} })")),
                 "access_log[0].typed_config.path", "required");
}

// A field of FileAccessLog culvert's subset lacks (the deprecated json_format, field 3)
// arrives as unknown and rejects the resource instead of being ignored.
TEST(TranslateAccessLog, RejectsUnknownFieldsInsideTheLogger) {
  envoy::extensions::access_loggers::file::v3::FileAccessLog file;
  file.set_path("/tmp/a.log");
  file.GetReflection()->MutableUnknownFields(&file)->AddLengthDelimited(3, "");
  AccessLog log;
  log.mutable_typed_config()->PackFrom(file);
  Logs logs;
  *logs.Add() = log;
  auto r = translateAccessLogs(logs);
  ASSERT_FALSE(r);
  EXPECT_NE(r.error().where.find("access_log[0].typed_config"), std::string::npos) << r.error().describe();
}

TEST(TranslateAccessLog, HcmAndTcpProxyCarryTheirLogs) {
  envoy::config::listener::v3::Listener listener;
  ASSERT_TRUE(google::protobuf::TextFormat::ParseFromString(R"(name: "db" address { socket_address { address: "10.96.0.20" port_value: 5432 } }
    bind_to_port { value: false }
    filter_chains {
      filters {
        name: "envoy.filters.network.tcp_proxy"
        typed_config {
          [type.googleapis.com/envoy.extensions.filters.network.tcp_proxy.v3.TcpProxy] {
            stat_prefix: "db" cluster: "pg"
            access_log { typed_config { [type.googleapis.com/envoy.extensions.access_loggers.file.v3.FileAccessLog] { path: "/tmp/tcp.log" } } }
          }
        }
      }
    })", &listener));
  auto out = translateListener(listener);
  ASSERT_TRUE(out) << out.error().describe();
  ASSERT_EQ(out->filter_chains[0].tcp_proxy->access_logs.size(), 1u);
  EXPECT_EQ(out->filter_chains[0].tcp_proxy->access_logs[0]->path, "/tmp/tcp.log");

  auto* tcp = listener.mutable_filter_chains(0)->mutable_filters(0)->mutable_typed_config();
  envoy::extensions::filters::network::tcp_proxy::v3::TcpProxy config;
  ASSERT_TRUE(tcp->UnpackTo(&config));
  config.mutable_access_log(0)->mutable_filter();  // an empty filter
  tcp->PackFrom(config);
  auto bad = translateListener(listener);
  ASSERT_FALSE(bad);
  EXPECT_EQ(bad.error().where, "filter_chains[0].filters[0].typed_config.access_log[0].filter") << bad.error().describe();
}

}  // namespace
}  // namespace culvert::xds::translate
