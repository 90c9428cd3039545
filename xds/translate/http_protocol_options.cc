#include "xds/translate/http_protocol_options.h"

#include <google/protobuf/any.pb.h>

#include <limits>

#include "xds/proto/envoy/extensions/upstreams/http/v3/http_protocol_options.pb.h"
#include "xds/translate/proto_util.h"
#include "xds/translate/type_urls.h"

namespace culvert::xds::translate {

using common::fail;
using common::nest;
using common::Result;
namespace upstream_http = envoy::extensions::upstreams::http::v3;

namespace {

// A Duration where 0 means "off" (Envoy's reading for both lifetime fields); a positive
// value below 1 ms rounds up so that it does not turn into "off".
Result<std::chrono::milliseconds> lifetimeMillis(const google::protobuf::Duration& d, const std::string& where) {
  if (d.seconds() < 0 || d.nanos() < 0 || d.nanos() > 999'999'999) return fail("duration must be non-negative", where);
  constexpr int64_t kMaxSeconds = std::numeric_limits<int64_t>::max() / 1000 - 1;
  if (d.seconds() > kMaxSeconds) return fail("duration is too large", where);
  auto ms = d.seconds() * 1000 + (d.nanos() + 999'999) / 1'000'000;
  return std::chrono::milliseconds(ms);
}

Result<config::UpstreamHttpProtocol> translateProtocol(const upstream_http::HttpProtocolOptions& proto) {
  // The per-protocol option messages have no fields culvert honours: a set field arrives
  // as unknown and the caller's rejectUnknownFields rejected it with its path.
  switch (proto.upstream_protocol_options_case()) {
    case upstream_http::HttpProtocolOptions::kExplicitHttpConfig: {
      const auto& explicit_config = proto.explicit_http_config();
      if (explicit_config.has_http2_protocol_options()) return config::UpstreamHttpProtocol::Http2;
      if (explicit_config.has_http_protocol_options()) return config::UpstreamHttpProtocol::Http1;
      return fail("explicit_http_config needs http_protocol_options or http2_protocol_options",
                  "explicit_http_config");
    }
    case upstream_http::HttpProtocolOptions::kUseDownstreamProtocolConfig:
      return config::UpstreamHttpProtocol::Downstream;
    case upstream_http::HttpProtocolOptions::kAutoConfig:
      return fail("auto_config (ALPN) needs upstream TLS, which culvert does not support", "auto_config");
    default:
      return fail("one of explicit_http_config or use_downstream_protocol_config is required",
                  "upstream_protocol_options");
  }
}

}  // namespace

// Unlisted fields of core.v3.HttpProtocolOptions (max_headers_count, max_stream_duration,
// headers_with_underscores_action) arrive as unknown and were rejected with their path
// before this.
Result<config::ConnectionLifetime> translateConnectionLifetime(
    const envoy::config::core::v3::HttpProtocolOptions& proto) {
  config::ConnectionLifetime out;
  if (proto.has_idle_timeout()) {
    auto t = lifetimeMillis(proto.idle_timeout(), "idle_timeout");
    if (!t) return std::unexpected(t.error());
    out.idle_timeout = *t;
  }
  if (proto.has_max_connection_duration()) {
    auto t = lifetimeMillis(proto.max_connection_duration(), "max_connection_duration");
    if (!t) return std::unexpected(t.error());
    out.max_duration = *t;
  }
  // As Envoy: unset or 0 = no limit.
  if (proto.has_max_requests_per_connection()) out.max_requests = proto.max_requests_per_connection().value();
  return out;
}

Result<UpstreamHttpOptions> translateHttpProtocolOptions(const google::protobuf::Any& any) {
  if (messageNameOf(any.type_url()) != kHttpProtocolOptionsName) {
    return fail("expected a " + std::string(kHttpProtocolOptionsName) + ", got " + any.type_url(), "");
  }
  upstream_http::HttpProtocolOptions proto;
  if (!any.UnpackTo(&proto)) return fail("cannot decode the HttpProtocolOptions", "");
  if (auto u = rejectUnknownFields(proto); !u) return std::unexpected(u.error());
  if (proto.has_upstream_http_protocol_options()) {
    return fail("upstream_http_protocol_options are not supported", "upstream_http_protocol_options");
  }
  UpstreamHttpOptions out;
  if (proto.has_common_http_protocol_options()) {
    auto lifetime = translateConnectionLifetime(proto.common_http_protocol_options());
    if (!lifetime) return std::unexpected(nest("common_http_protocol_options", lifetime.error()));
    out.lifetime = *lifetime;
    out.max_requests_set = proto.common_http_protocol_options().has_max_requests_per_connection();
  }
  auto protocol = translateProtocol(proto);
  if (!protocol) return std::unexpected(protocol.error());
  out.protocol = *protocol;
  return out;
}

}  // namespace culvert::xds::translate
