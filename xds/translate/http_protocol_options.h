#pragma once

#include "proxy/common/error.h"
#include "proxy/config/snapshot.h"

namespace google::protobuf {
class Any;
}

namespace envoy::config::core::v3 {
class HttpProtocolOptions;
}

namespace culvert::xds::translate {

// core.v3.HttpProtocolOptions' idle_timeout and max_connection_duration (paths relative to
// the message); its other fields are rejected as unknown by the caller's rejectUnknownFields.
common::Result<config::ConnectionLifetime> translateConnectionLifetime(
    const envoy::config::core::v3::HttpProtocolOptions& proto);

struct UpstreamHttpOptions {
  config::UpstreamHttpProtocol protocol = config::UpstreamHttpProtocol::Http1;
  config::ConnectionLifetime lifetime;
  bool max_requests_set = false;  // lifetime.max_requests came from the message, not its default
};

// A cluster's typed_extension_protocol_options["envoy.extensions.upstreams.http.v3.HttpProtocolOptions"]:
// explicit_http_config (HTTP/1.1 or HTTP/2) or use_downstream_protocol_config, and
// common_http_protocol_options' idle_timeout and max_connection_duration. Everything
// else in the message is rejected with its path (relative to the Any).
common::Result<UpstreamHttpOptions> translateHttpProtocolOptions(const google::protobuf::Any& any);

}  // namespace culvert::xds::translate
