#include "xds/translate/access_log.h"

#include <algorithm>

#include "xds/proto/envoy/config/core/v3/substitution_format_string.pb.h"
#include "xds/proto/envoy/extensions/access_loggers/file/v3/file.pb.h"
#include "xds/proto/envoy/extensions/access_loggers/stream/v3/stream.pb.h"
#include "xds/translate/proto_util.h"
#include "xds/translate/type_urls.h"

namespace culvert::xds::translate {

namespace {

using common::fail;
using common::nest;
using common::Result;

namespace al = envoy::config::accesslog::v3;
namespace core = envoy::config::core::v3;

constexpr std::string_view kFileAccessLog = "envoy.extensions.access_loggers.file.v3.FileAccessLog";
constexpr std::string_view kStdoutAccessLog = "envoy.extensions.access_loggers.stream.v3.StdoutAccessLog";
constexpr std::string_view kStderrAccessLog = "envoy.extensions.access_loggers.stream.v3.StderrAccessLog";

Result<accesslog::JsonFormatValue> toFormatValue(const google::protobuf::Value& v, const std::string& where) {
  accesslog::JsonFormatValue out;
  switch (v.kind_case()) {
    case google::protobuf::Value::kNullValue:
    case google::protobuf::Value::KIND_NOT_SET:
      out.type = accesslog::JsonFormatValue::Type::Null;
      break;
    case google::protobuf::Value::kBoolValue:
      out.type = accesslog::JsonFormatValue::Type::Bool;
      out.boolean = v.bool_value();
      break;
    case google::protobuf::Value::kNumberValue:
      out.type = accesslog::JsonFormatValue::Type::Number;
      out.number = v.number_value();
      break;
    case google::protobuf::Value::kStringValue:
      out.type = accesslog::JsonFormatValue::Type::String;
      out.string = v.string_value();
      break;
    case google::protobuf::Value::kStructValue: {
      out.type = accesslog::JsonFormatValue::Type::Object;
      std::vector<std::string> keys;
      for (const auto& [k, _] : v.struct_value().fields()) keys.push_back(k);
      std::sort(keys.begin(), keys.end());
      for (const auto& k : keys) {
        auto child = toFormatValue(v.struct_value().fields().at(k), where + "." + k);
        if (!child) return std::unexpected(child.error());
        out.object.emplace_back(k, std::move(*child));
      }
      break;
    }
    case google::protobuf::Value::kListValue:
      return fail("lists are not supported in json_format", where);
  }
  return out;
}

Result<std::shared_ptr<const accesslog::Formatter>> translateFormat(const core::SubstitutionFormatString& proto) {
  switch (proto.format_case()) {
    case core::SubstitutionFormatString::kJsonFormat: {
      google::protobuf::Value root;
      *root.mutable_struct_value() = proto.json_format();
      auto value = toFormatValue(root, "json_format");
      if (!value) return std::unexpected(value.error());
      auto f = accesslog::Formatter::json(*value, proto.omit_empty_values());
      if (!f) return std::unexpected(nest("json_format", f.error()));
      return f;
    }
    case core::SubstitutionFormatString::kTextFormat: {
      auto f = accesslog::Formatter::text(proto.text_format(), proto.omit_empty_values());
      if (!f) return std::unexpected(nest("text_format", f.error()));
      return f;
    }
    case core::SubstitutionFormatString::kTextFormatSource: {
      if (proto.text_format_source().specifier_case() != core::DataSource::kInlineString) {
        return fail("only inline_string is supported (a file would be read on the data path's behalf)",
                    "text_format_source");
      }
      auto f = accesslog::Formatter::text(proto.text_format_source().inline_string(), proto.omit_empty_values());
      if (!f) return std::unexpected(nest("text_format_source.inline_string", f.error()));
      return f;
    }
    case core::SubstitutionFormatString::FORMAT_NOT_SET:
      break;
  }
  return fail("one of json_format, text_format or text_format_source is required");
}

Result<accesslog::Filter> translateFilter(const al::AccessLogFilter& proto) {
  accesslog::Filter out;
  switch (proto.filter_specifier_case()) {
    case al::AccessLogFilter::kStatusCodeFilter: {
      const auto& c = proto.status_code_filter().comparison();
      if (!c.value().runtime_key().empty()) {
        return fail("runtime keys are not supported (culvert has no runtime)",
                    "status_code_filter.comparison.value.runtime_key");
      }
      accesslog::Filter::StatusCode sc;
      switch (c.op()) {
        case al::ComparisonFilter::EQ:
          sc.op = accesslog::Filter::Op::Eq;
          break;
        case al::ComparisonFilter::GE:
          sc.op = accesslog::Filter::Op::Ge;
          break;
        case al::ComparisonFilter::LE:
          sc.op = accesslog::Filter::Op::Le;
          break;
        default:
          return fail("unknown comparison op", "status_code_filter.comparison.op");
      }
      sc.value = c.value().default_value();
      out.status_code = sc;
      break;
    }
    case al::AccessLogFilter::kResponseFlagFilter: {
      accesslog::ResponseFlags flags;
      for (int i = 0; i < proto.response_flag_filter().flags_size(); ++i) {
        const auto& code = proto.response_flag_filter().flags(i);
        auto flag = accesslog::parseShortCode(code);
        if (!flag) {
          return fail("unknown response flag '" + code + "'", "response_flag_filter.flags[" + std::to_string(i) + "]");
        }
        flags.set(*flag);
      }
      out.response_flags = flags;
      break;
    }
    case al::AccessLogFilter::FILTER_SPECIFIER_NOT_SET:
      return fail("a filter is required (culvert supports status_code_filter and response_flag_filter)");
  }
  return out;
}

Result<accesslog::AccessLogConfig> translateAccessLog(const al::AccessLog& proto) {
  accesslog::AccessLogConfig out;
  out.name = proto.name();
  if (proto.has_filter()) {
    auto filter = translateFilter(proto.filter());
    if (!filter) return std::unexpected(nest("filter", filter.error()));
    out.filter = std::move(*filter);
  }
  if (!proto.has_typed_config()) return fail("typed_config is required", "typed_config");
  const auto& any = proto.typed_config();
  auto type = messageNameOf(any.type_url());
  const core::SubstitutionFormatString* format = nullptr;
  envoy::extensions::access_loggers::file::v3::FileAccessLog file;
  envoy::extensions::access_loggers::stream::v3::StdoutAccessLog out_stream;
  envoy::extensions::access_loggers::stream::v3::StderrAccessLog err_stream;
  if (type == kFileAccessLog) {
    if (!any.UnpackTo(&file)) return fail("cannot decode the FileAccessLog config", "typed_config");
    if (auto u = rejectUnknownFields(file); !u) return std::unexpected(nest("typed_config", u.error()));
    if (file.path().empty()) return fail("path is required", "typed_config.path");
    out.path = file.path();
    if (file.has_log_format()) format = &file.log_format();
  } else if (type == kStdoutAccessLog) {
    if (!any.UnpackTo(&out_stream)) return fail("cannot decode the StdoutAccessLog config", "typed_config");
    if (auto u = rejectUnknownFields(out_stream); !u) return std::unexpected(nest("typed_config", u.error()));
    out.path = "/dev/stdout";
    if (out_stream.has_log_format()) format = &out_stream.log_format();
  } else if (type == kStderrAccessLog) {
    if (!any.UnpackTo(&err_stream)) return fail("cannot decode the StderrAccessLog config", "typed_config");
    if (auto u = rejectUnknownFields(err_stream); !u) return std::unexpected(nest("typed_config", u.error()));
    out.path = "/dev/stderr";
    if (err_stream.has_log_format()) format = &err_stream.log_format();
  } else {
    return fail("access logger " + std::string(any.type_url()) + " is not supported; " + std::string(kFileAccessLog) +
                    ", " + std::string(kStdoutAccessLog) + " and " + std::string(kStderrAccessLog) + " are",
                "typed_config");
  }
  if (format != nullptr) {
    auto f = translateFormat(*format);
    if (!f) return std::unexpected(nest("typed_config.log_format", f.error()));
    out.formatter = std::move(*f);
  } else {
    out.formatter = accesslog::Formatter::defaultJson();
  }
  return out;
}

}  // namespace

Result<accesslog::AccessLogConfigs> translateAccessLogs(const google::protobuf::RepeatedPtrField<al::AccessLog>& logs) {
  accesslog::AccessLogConfigs out;
  for (int i = 0; i < logs.size(); ++i) {
    auto log = translateAccessLog(logs.Get(i));
    if (!log) return std::unexpected(nest("access_log[" + std::to_string(i) + "]", log.error()));
    out.push_back(std::make_shared<const accesslog::AccessLogConfig>(std::move(*log)));
  }
  return out;
}

}  // namespace culvert::xds::translate
