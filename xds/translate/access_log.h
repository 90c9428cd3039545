#pragma once

#include <google/protobuf/repeated_ptr_field.h>

#include "proxy/accesslog/access_log.h"
#include "proxy/common/error.h"
#include "xds/proto/envoy/config/accesslog/v3/accesslog.pb.h"

namespace culvert::xds::translate {

// HttpConnectionManager.access_log / TcpProxy.access_log: FileAccessLog, StdoutAccessLog
// and StderrAccessLog with a json_format, text_format or text_format_source
// (inline_string), or none (culvert's default JSON line); status_code_filter and
// response_flag_filter. Anything else is rejected, naming the field.
common::Result<accesslog::AccessLogConfigs> translateAccessLogs(
    const google::protobuf::RepeatedPtrField<envoy::config::accesslog::v3::AccessLog>& logs);

}  // namespace culvert::xds::translate
