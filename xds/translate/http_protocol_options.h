#pragma once

#include "proxy/common/error.h"
#include "proxy/config/snapshot.h"

namespace google::protobuf {
class Any;
}

namespace culvert::xds::translate {

// A cluster's typed_extension_protocol_options["envoy.extensions.upstreams.http.v3.HttpProtocolOptions"]:
// explicit_http_config (HTTP/1.1 or HTTP/2) or use_downstream_protocol_config. Everything
// else in the message is rejected with its path (relative to the Any).
common::Result<config::UpstreamHttpProtocol> translateHttpProtocolOptions(const google::protobuf::Any& any);

}  // namespace culvert::xds::translate
