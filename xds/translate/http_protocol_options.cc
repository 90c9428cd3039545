#include "xds/translate/http_protocol_options.h"

#include <google/protobuf/any.pb.h>

#include "xds/proto/envoy/extensions/upstreams/http/v3/http_protocol_options.pb.h"
#include "xds/translate/proto_util.h"
#include "xds/translate/type_urls.h"

namespace culvert::xds::translate {

using common::fail;
using common::Result;
namespace upstream_http = envoy::extensions::upstreams::http::v3;

Result<config::UpstreamHttpProtocol> translateHttpProtocolOptions(const google::protobuf::Any& any) {
  if (messageNameOf(any.type_url()) != kHttpProtocolOptionsName) {
    return fail("expected a " + std::string(kHttpProtocolOptionsName) + ", got " + any.type_url(), "");
  }
  upstream_http::HttpProtocolOptions proto;
  if (!any.UnpackTo(&proto)) return fail("cannot decode the HttpProtocolOptions", "");
  if (auto u = rejectUnknownFields(proto); !u) return std::unexpected(u.error());
  if (proto.has_common_http_protocol_options()) {
    return fail("common_http_protocol_options are not supported", "common_http_protocol_options");
  }
  if (proto.has_upstream_http_protocol_options()) {
    return fail("upstream_http_protocol_options are not supported", "upstream_http_protocol_options");
  }
  // The per-protocol option messages have no fields culvert honours: a set field arrived
  // as unknown above and was rejected with its path.
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

}  // namespace culvert::xds::translate
