#include "xds/translate/http_protocol_options.h"

#include <google/protobuf/text_format.h>
#include <google/protobuf/unknown_field_set.h>
#include <gtest/gtest.h>

#include <string>

#include "xds/proto/envoy/config/cluster/v3/cluster.pb.h"
#include "xds/proto/envoy/extensions/upstreams/http/v3/http_protocol_options.pb.h"
#include "xds/translate/translate.h"

namespace culvert::xds::translate {
namespace {

using envoy::config::cluster::v3::Cluster;

// A STATIC cluster whose HttpProtocolOptions has `options` as its body (text format).
Cluster cluster(const std::string& options, const std::string& key = "envoy.extensions.upstreams.http.v3.HttpProtocolOptions") {
  Cluster out;
  std::string text = R"(name: "c" typed_extension_protocol_options { key: ")" + key + R"(" value {
      [type.googleapis.com/envoy.extensions.upstreams.http.v3.HttpProtocolOptions] { )" +
                     options + " } } }";
  EXPECT_TRUE(google::protobuf::TextFormat::ParseFromString(text, &out)) << text;
  return out;
}

const std::string kWhere = "typed_extension_protocol_options[\"envoy.extensions.upstreams.http.v3.HttpProtocolOptions\"]";

TEST(HttpProtocolOptions, DefaultIsHttp1) {
  Cluster plain;
  plain.set_name("c");
  auto out = translateCluster(plain);
  ASSERT_TRUE(out) << out.error().describe();
  EXPECT_EQ(out->http_protocol, config::UpstreamHttpProtocol::Http1);
}

TEST(HttpProtocolOptions, ExplicitAndDownstream) {
  auto h2 = translateCluster(cluster("explicit_http_config { http2_protocol_options {} }"));
  ASSERT_TRUE(h2) << h2.error().describe();
  EXPECT_EQ(h2->http_protocol, config::UpstreamHttpProtocol::Http2);
  auto h1 = translateCluster(cluster("explicit_http_config { http_protocol_options {} }"));
  ASSERT_TRUE(h1) << h1.error().describe();
  EXPECT_EQ(h1->http_protocol, config::UpstreamHttpProtocol::Http1);
  auto downstream = translateCluster(cluster("use_downstream_protocol_config { http2_protocol_options {} }"));
  ASSERT_TRUE(downstream) << downstream.error().describe();
  EXPECT_EQ(downstream->http_protocol, config::UpstreamHttpProtocol::Downstream);
}

TEST(HttpProtocolOptions, RejectsWhatItDoesNotImplementWithThePath) {
  struct Case {
    std::string options;
    std::string where;
  };
  for (const auto& c : std::vector<Case>{
           {"", kWhere + ".upstream_protocol_options"},
           {"explicit_http_config {}", kWhere + ".explicit_http_config"},
           {"auto_config {}", kWhere + ".auto_config"},
           {"common_http_protocol_options { idle_timeout { seconds: -1 } } explicit_http_config { http_protocol_options {} }",
            kWhere + ".common_http_protocol_options.idle_timeout"},
           {"common_http_protocol_options { max_connection_duration { nanos: -1 } } "
            "explicit_http_config { http_protocol_options {} }",
            kWhere + ".common_http_protocol_options.max_connection_duration"},
           {"upstream_http_protocol_options {} explicit_http_config { http2_protocol_options {} }",
            kWhere + ".upstream_http_protocol_options"},
       }) {
    auto out = translateCluster(cluster(c.options));
    ASSERT_FALSE(out) << c.options;
    EXPECT_EQ(out.error().where, c.where) << out.error().describe();
  }
}

TEST(HttpProtocolOptions, ConnectionLifetimeDefaultsToEnvoys) {
  auto out = translateCluster(cluster("explicit_http_config { http_protocol_options {} }"));
  ASSERT_TRUE(out) << out.error().describe();
  EXPECT_EQ(out->connection_lifetime.idle_timeout, std::chrono::hours(1));
  EXPECT_EQ(out->connection_lifetime.max_duration, std::chrono::milliseconds(0));
  EXPECT_EQ(out->connection_lifetime.max_requests, 0u);
}

TEST(HttpProtocolOptions, MaxRequestsPerConnection) {
  auto out = translateCluster(cluster(
      "common_http_protocol_options { max_requests_per_connection { value: 3 } } "
      "explicit_http_config { http_protocol_options {} }"));
  ASSERT_TRUE(out) << out.error().describe();
  EXPECT_EQ(out->connection_lifetime.max_requests, 3u);
  // As Envoy: 0 is no limit, like unset.
  auto zero = translateCluster(cluster(
      "common_http_protocol_options { max_requests_per_connection { value: 0 } } "
      "explicit_http_config { http_protocol_options {} }"));
  ASSERT_TRUE(zero) << zero.error().describe();
  EXPECT_EQ(zero->connection_lifetime.max_requests, 0u);
}

TEST(HttpProtocolOptions, DeprecatedClusterMaxRequestsPerConnectionYieldsToTheProtocolOptions) {
  // Alone (no protocol options at all), it applies.
  Cluster bare;
  bare.set_name("c");
  bare.mutable_max_requests_per_connection()->set_value(5);
  auto out = translateCluster(bare);
  ASSERT_TRUE(out) << out.error().describe();
  EXPECT_EQ(out->connection_lifetime.max_requests, 5u);
  // Protocol options without the field: it still applies.
  auto proto = cluster("explicit_http_config { http_protocol_options {} }");
  proto.mutable_max_requests_per_connection()->set_value(5);
  out = translateCluster(proto);
  ASSERT_TRUE(out) << out.error().describe();
  EXPECT_EQ(out->connection_lifetime.max_requests, 5u);
  // The protocol options' own value wins, 0 (no limit) included, as in Envoy.
  for (uint32_t own : {2u, 0u}) {
    proto = cluster("common_http_protocol_options { max_requests_per_connection { value: " + std::to_string(own) +
                    " } } explicit_http_config { http_protocol_options {} }");
    proto.mutable_max_requests_per_connection()->set_value(5);
    out = translateCluster(proto);
    ASSERT_TRUE(out) << out.error().describe();
    EXPECT_EQ(out->connection_lifetime.max_requests, own);
  }
}

TEST(HttpProtocolOptions, ConnectionLifetimeFromCommonOptions) {
  auto out = translateCluster(cluster(
      "common_http_protocol_options { idle_timeout { nanos: 250000000 } max_connection_duration { seconds: 2 } } "
      "explicit_http_config { http2_protocol_options {} }"));
  ASSERT_TRUE(out) << out.error().describe();
  EXPECT_EQ(out->http_protocol, config::UpstreamHttpProtocol::Http2);
  EXPECT_EQ(out->connection_lifetime.idle_timeout, std::chrono::milliseconds(250));
  EXPECT_EQ(out->connection_lifetime.max_duration, std::chrono::seconds(2));
  // 0 switches the idle timeout off; below a millisecond does not.
  auto off = translateCluster(cluster(
      "common_http_protocol_options { idle_timeout {} max_connection_duration { nanos: 1 } } "
      "explicit_http_config { http_protocol_options {} }"));
  ASSERT_TRUE(off) << off.error().describe();
  EXPECT_EQ(off->connection_lifetime.idle_timeout, std::chrono::milliseconds(0));
  EXPECT_EQ(off->connection_lifetime.max_duration, std::chrono::milliseconds(1));
}

TEST(HttpProtocolOptions, RejectsOtherCommonOptionsWithThePath) {
  // max_headers_count (2), max_stream_duration (4), headers_with_underscores_action (5):
  // fields culvert does not honour.
  for (int field : {2, 4, 5}) {
    auto proto = cluster("explicit_http_config { http_protocol_options {} }");
    envoy::extensions::upstreams::http::v3::HttpProtocolOptions options;
    ASSERT_TRUE(proto.typed_extension_protocol_options().begin()->second.UnpackTo(&options));
    auto* common = options.mutable_common_http_protocol_options();
    common->GetReflection()->MutableUnknownFields(common)->AddVarint(field, 1);
    (*proto.mutable_typed_extension_protocol_options()).begin()->second.PackFrom(options);
    auto out = translateCluster(proto);
    ASSERT_FALSE(out) << field;
    EXPECT_EQ(out.error().where, kWhere + ".common_http_protocol_options") << out.error().describe();
    EXPECT_NE(out.error().describe().find("field number " + std::to_string(field)), std::string::npos)
        << out.error().describe();
  }
}

TEST(HttpProtocolOptions, RejectsUnimplementedHttp2Settings) {
  auto proto = cluster("explicit_http_config { http2_protocol_options {} }");
  // max_concurrent_streams (field 2 of Http2ProtocolOptions), as a control plane that knows
  // the full message sends it.
  envoy::extensions::upstreams::http::v3::HttpProtocolOptions options;
  ASSERT_TRUE(proto.typed_extension_protocol_options().begin()->second.UnpackTo(&options));
  options.mutable_explicit_http_config()->mutable_http2_protocol_options()->GetReflection()
      ->MutableUnknownFields(options.mutable_explicit_http_config()->mutable_http2_protocol_options())
      ->AddVarint(2, 10);
  (*proto.mutable_typed_extension_protocol_options()).begin()->second.PackFrom(options);
  auto out = translateCluster(proto);
  ASSERT_FALSE(out);
  EXPECT_EQ(out.error().where, kWhere + ".explicit_http_config.http2_protocol_options") << out.error().describe();
}

TEST(HttpProtocolOptions, OtherExtensionKeysStayRejected) {
  auto out = translateCluster(cluster("explicit_http_config { http2_protocol_options {} }", "some.other.Options"));
  ASSERT_FALSE(out);
  EXPECT_EQ(out.error().where, "typed_extension_protocol_options[\"some.other.Options\"]");
}

}  // namespace
}  // namespace culvert::xds::translate
