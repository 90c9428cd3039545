#include "proxy/accesslog/formatter.h"

#include <time.h>

#include <cctype>
#include <charconv>
#include <cstdio>

#include "proxy/common/ascii.h"

namespace culvert::accesslog {

namespace {

using common::fail;
using common::Result;
using Kind = Command::Kind;

constexpr std::string_view kDefaultTimeFormat = "%Y-%m-%dT%H:%M:%E3SZ";

// A command's value: absent, a number, or text.
struct Value {
  enum class Type { Absent, Number, Text } type = Type::Absent;
  uint64_t number = 0;
  std::string text;

  static Value absent() { return {}; }
  static Value of(uint64_t n) { return {Type::Number, n, {}}; }
  static Value of(std::string s) { return {Type::Text, 0, std::move(s)}; }
  static Value orAbsent(const std::string& s) { return s.empty() ? absent() : of(s); }
};

struct Operator {
  std::string_view name;
  Kind kind;
  enum class Args { None, Header, OptionalFormat } args = Args::None;
};

constexpr Operator kOperators[] = {
    {"START_TIME", Kind::StartTime, Operator::Args::OptionalFormat},
    {"REQ", Kind::RequestHeader, Operator::Args::Header},
    {"REQUEST_HEADER", Kind::RequestHeader, Operator::Args::Header},
    {"RESP", Kind::ResponseHeader, Operator::Args::Header},
    {"RESPONSE_HEADER", Kind::ResponseHeader, Operator::Args::Header},
    {"TRAILER", Kind::ResponseTrailer, Operator::Args::Header},
    {"RESPONSE_TRAILER", Kind::ResponseTrailer, Operator::Args::Header},
    {"RESPONSE_CODE", Kind::ResponseCode},
    {"RESPONSE_FLAGS", Kind::ResponseFlags},
    {"RESPONSE_CODE_DETAILS", Kind::ResponseCodeDetails},
    {"DURATION", Kind::Duration},
    {"REQUEST_DURATION", Kind::RequestDuration},
    {"RESPONSE_DURATION", Kind::ResponseDuration},
    {"BYTES_RECEIVED", Kind::BytesReceived},
    {"BYTES_SENT", Kind::BytesSent},
    {"PROTOCOL", Kind::Protocol},
    {"UPSTREAM_HOST", Kind::UpstreamHost},
    {"UPSTREAM_CLUSTER", Kind::UpstreamCluster},
    {"ROUTE_NAME", Kind::RouteName},
    {"DOWNSTREAM_REMOTE_ADDRESS", Kind::DownstreamRemoteAddress},
    {"DOWNSTREAM_REMOTE_ADDRESS_WITHOUT_PORT", Kind::DownstreamRemoteAddressWithoutPort},
    {"DOWNSTREAM_LOCAL_ADDRESS", Kind::DownstreamLocalAddress},
    {"DOWNSTREAM_LOCAL_ADDRESS_WITHOUT_PORT", Kind::DownstreamLocalAddressWithoutPort},
    {"UPSTREAM_TRANSPORT_FAILURE_REASON", Kind::UpstreamTransportFailureReason},
    {"UPSTREAM_REQUEST_ATTEMPT_COUNT", Kind::UpstreamRequestAttemptCount},
    {"CULVERT_TENANT", Kind::Tenant},
    {"CULVERT_POD_NAME", Kind::PodName},
    {"CULVERT_POD_NAMESPACE", Kind::PodNamespace},
    {"CULVERT_POD_IP", Kind::PodIp},
};

Result<Command> makeCommand(std::string_view name, std::optional<std::string_view> args,
                            std::optional<size_t> max_len) {
  const Operator* op = nullptr;
  for (const auto& o : kOperators) {
    if (o.name == name) op = &o;
  }
  if (op == nullptr) return fail("unknown command operator %" + std::string(name) + "%");
  Command c{op->kind, {}, {}, {}, max_len};
  switch (op->args) {
    case Operator::Args::None:
      if (args) return fail("%" + std::string(name) + "% takes no argument");
      break;
    case Operator::Args::OptionalFormat:
      c.time_format = args && !args->empty() ? std::string(*args) : std::string(kDefaultTimeFormat);
      break;
    case Operator::Args::Header: {
      if (!args || args->empty()) return fail("%" + std::string(name) + "(...)% needs a header name");
      auto q = args->find('?');
      c.header = common::lowerAscii(args->substr(0, q));
      if (q != std::string_view::npos) {
        c.alt_header = common::lowerAscii(args->substr(q + 1));
        if (c.alt_header.empty() || c.alt_header.find('?') != std::string::npos) {
          return fail("%" + std::string(name) + "(" + std::string(*args) + ")%: expected X?Y with one '?'");
        }
      }
      if (c.header.empty()) return fail("%" + std::string(name) + "(...)% needs a header name");
      break;
    }
  }
  return c;
}

std::optional<std::string_view> requestHeader(const http::RequestHead& request, const std::string& name) {
  if (name == ":method") return std::string_view(request.method);
  if (name == ":path") return std::string_view(request.path);
  if (name == ":authority") return request.headers.get("host");
  return request.headers.get(name);
}

std::string formatTime(std::chrono::system_clock::time_point t, const std::string& format) {
  auto since = t.time_since_epoch();
  auto secs = std::chrono::duration_cast<std::chrono::seconds>(since);
  auto nanos = std::chrono::duration_cast<std::chrono::nanoseconds>(since - secs).count();
  time_t tt = static_cast<time_t>(secs.count());
  struct tm tm {};
  gmtime_r(&tt, &tm);
  std::string out;
  size_t start = 0;
  // %E3S / %E6S / %E9S: seconds with that many fractional digits; the rest is strftime's.
  auto flush = [&](std::string_view piece) {
    if (piece.empty()) return;
    char buf[256];
    std::string f(piece);
    size_t n = strftime(buf, sizeof buf, f.c_str(), &tm);
    out.append(buf, n);
  };
  for (size_t i = 0; i + 3 < format.size(); ++i) {
    if (format[i] == '%' && format[i + 1] == 'E' && (format[i + 2] == '3' || format[i + 2] == '6' || format[i + 2] == '9') &&
        format[i + 3] == 'S') {
      flush(std::string_view(format).substr(start, i - start));
      int digits = format[i + 2] - '0';
      char buf[256];
      int64_t frac = nanos;
      for (int d = 9; d > digits; --d) frac /= 10;
      std::snprintf(buf, sizeof buf, "%02d.%0*lld", tm.tm_sec, digits, static_cast<long long>(frac));
      out += buf;
      i += 3;
      start = i + 1;
    }
  }
  flush(std::string_view(format).substr(start));
  return out;
}

std::optional<uint64_t> millisSince(const StreamInfo& info, const std::optional<StreamInfo::SteadyTime>& t) {
  if (!t) return std::nullopt;
  return static_cast<uint64_t>(std::chrono::duration_cast<std::chrono::milliseconds>(*t - info.start).count());
}

Value numberOrAbsent(std::optional<uint64_t> v) { return v ? Value::of(*v) : Value::absent(); }

std::string withoutPort(const std::string& address) {
  if (address.empty()) return address;
  if (address.front() == '[') {
    auto close = address.find(']');
    return close == std::string::npos ? address : address.substr(1, close - 1);
  }
  auto colon = address.rfind(':');
  return colon == std::string::npos ? address : address.substr(0, colon);
}

Value evaluate(const Command& c, const StreamInfo& info) {
  auto header = [&](const http::HeaderMap* headers, bool request) -> Value {
    auto get = [&](const std::string& name) -> std::optional<std::string_view> {
      if (request) return info.request ? requestHeader(*info.request, name) : std::nullopt;
      return headers->get(name);
    };
    auto v = get(c.header);
    if (!v && !c.alt_header.empty()) v = get(c.alt_header);
    return v ? Value::of(std::string(*v)) : Value::absent();
  };
  switch (c.kind) {
    case Kind::StartTime:
      return Value::of(formatTime(info.start_time, c.time_format));
    case Kind::RequestHeader:
      return header(nullptr, true);
    case Kind::ResponseHeader:
      return header(&info.response_headers, false);
    case Kind::ResponseTrailer:
      return header(&info.response_trailers, false);
    case Kind::ResponseCode:
      return Value::of(info.response_code);
    case Kind::ResponseFlags:
      return Value::of(info.flags.toString());
    case Kind::ResponseCodeDetails:
      return Value::orAbsent(info.response_code_details);
    case Kind::Duration:
      return numberOrAbsent(millisSince(info, info.end));
    case Kind::RequestDuration:
      return numberOrAbsent(millisSince(info, info.last_downstream_rx));
    case Kind::ResponseDuration:
      return numberOrAbsent(millisSince(info, info.first_upstream_rx));
    case Kind::BytesReceived:
      return Value::of(info.bytes_received);
    case Kind::BytesSent:
      return Value::of(info.bytes_sent);
    case Kind::Protocol:
      return Value::orAbsent(info.protocol);
    case Kind::UpstreamHost:
      return info.upstream_host ? Value::of(info.upstream_host->toString()) : Value::absent();
    case Kind::UpstreamCluster:
      return Value::orAbsent(info.upstream_cluster);
    case Kind::RouteName:
      return Value::orAbsent(info.route_name);
    case Kind::DownstreamRemoteAddress:
      return Value::orAbsent(info.downstream_remote_address);
    case Kind::DownstreamRemoteAddressWithoutPort:
      return Value::orAbsent(withoutPort(info.downstream_remote_address));
    case Kind::DownstreamLocalAddress:
      return Value::orAbsent(info.downstream_local_address);
    case Kind::DownstreamLocalAddressWithoutPort:
      return Value::orAbsent(withoutPort(info.downstream_local_address));
    case Kind::UpstreamTransportFailureReason:
      return Value::orAbsent(info.upstream_transport_failure_reason);
    case Kind::UpstreamRequestAttemptCount:
      return Value::of(info.attempt_count);
    case Kind::Tenant:
      return Value::orAbsent(info.tenant);
    case Kind::PodName:
      return Value::orAbsent(info.pod_name);
    case Kind::PodNamespace:
      return Value::orAbsent(info.pod_namespace);
    case Kind::PodIp:
      return Value::orAbsent(info.pod_ip);
  }
  return Value::absent();
}

void truncate(Value& v, const Command& c) {
  if (c.max_len && v.type == Value::Type::Text && v.text.size() > *c.max_len) v.text.resize(*c.max_len);
}

}  // namespace

void appendJsonString(std::string& out, std::string_view s) {
  out += '"';
  // Runs of characters that need no escape are copied at once: most values have none.
  size_t run = 0;
  for (size_t i = 0; i < s.size(); ++i) {
    unsigned char ch = static_cast<unsigned char>(s[i]);
    if (ch >= 0x20 && ch != '"' && ch != '\\' && ch != 0x7f) continue;
    out.append(s.data() + run, i - run);
    run = i + 1;
    switch (ch) {
      case '"':
        out += "\\\"";
        break;
      case '\\':
        out += "\\\\";
        break;
      case '\n':
        out += "\\n";
        break;
      case '\r':
        out += "\\r";
        break;
      case '\t':
        out += "\\t";
        break;
      default: {
        char buf[8];
        std::snprintf(buf, sizeof buf, "\\u%04x", ch);
        out += buf;
      }
    }
  }
  out.append(s.data() + run, s.size() - run);
  out += '"';
}

// Envoy's grammar: %NAME%, %NAME(args)%, either followed by :max_len before the closing '%'.
Result<Template> Template::parse(std::string_view text) {
  Template t;
  std::string literal;
  size_t i = 0;
  while (i < text.size()) {
    char ch = text[i];
    if (ch != '%') {
      literal += ch;
      ++i;
      continue;
    }
    size_t j = i + 1;
    while (j < text.size() && (std::isupper(static_cast<unsigned char>(text[j])) ||
                               std::isdigit(static_cast<unsigned char>(text[j])) || text[j] == '_')) {
      ++j;
    }
    std::string_view name = text.substr(i + 1, j - i - 1);
    std::optional<std::string_view> args;
    if (j < text.size() && text[j] == '(') {
      auto close = text.find(')', j);
      if (close == std::string_view::npos) {
        return fail("unterminated '(' in command operator at position " + std::to_string(i));
      }
      args = text.substr(j + 1, close - j - 1);
      j = close + 1;
    }
    std::optional<size_t> max_len;
    if (j < text.size() && text[j] == ':') {
      size_t k = j + 1;
      size_t n = 0;
      auto [end, ec] = std::from_chars(text.data() + k, text.data() + text.size(), n);
      if (ec != std::errc() || end == text.data() + k) {
        return fail("expected a length after ':' in command operator at position " + std::to_string(i));
      }
      max_len = n;
      j = static_cast<size_t>(end - text.data());
    }
    if (name.empty() || j >= text.size() || text[j] != '%') {
      return fail("no valid command operator at position " + std::to_string(i) +
                  " (a literal '%' is not allowed; operators look like %NAME%, %NAME(arg)% or %NAME(arg):N%)");
    }
    auto command = makeCommand(name, args, max_len);
    if (!command) return std::unexpected(command.error());
    if (!literal.empty()) t.parts_.emplace_back(std::move(literal));
    literal.clear();
    t.parts_.emplace_back(std::move(*command));
    i = j + 1;
  }
  if (!literal.empty()) t.parts_.emplace_back(std::move(literal));
  return t;
}

void Template::appendText(std::string& out, const StreamInfo& info) const {
  for (const auto& part : parts_) {
    if (const auto* s = std::get_if<std::string>(&part)) {
      out += *s;
      continue;
    }
    const auto& c = std::get<Command>(part);
    Value v = evaluate(c, info);
    truncate(v, c);
    switch (v.type) {
      case Value::Type::Absent:
        out += '-';
        break;
      case Value::Type::Number:
        out += std::to_string(v.number);
        break;
      case Value::Type::Text:
        out += v.text;
        break;
    }
  }
}

void Template::appendJson(std::string& out, const StreamInfo& info) const {
  if (parts_.size() == 1 && std::holds_alternative<Command>(parts_[0])) {
    const auto& c = std::get<Command>(parts_[0]);
    Value v = evaluate(c, info);
    truncate(v, c);
    switch (v.type) {
      case Value::Type::Absent:
        out += "null";
        break;
      case Value::Type::Number:
        out += std::to_string(v.number);
        break;
      case Value::Type::Text:
        appendJsonString(out, v.text);
        break;
    }
    return;
  }
  std::string text;
  appendText(text, info);
  appendJsonString(out, text);
}

Result<Formatter::Node> Formatter::build(const std::string& key, const JsonFormatValue& value) {
  Node node;
  appendJsonString(node.key, key);
  switch (value.type) {
    case JsonFormatValue::Type::Null:
      node.literal = "null";
      break;
    case JsonFormatValue::Type::Bool:
      node.literal = value.boolean ? "true" : "false";
      break;
    case JsonFormatValue::Type::Number: {
      char buf[64];
      std::snprintf(buf, sizeof buf, "%.17g", value.number);
      node.literal = buf;
      break;
    }
    case JsonFormatValue::Type::String: {
      auto t = Template::parse(value.string);
      if (!t) return std::unexpected(common::nest(key, t.error()));
      node.value = std::move(*t);
      break;
    }
    case JsonFormatValue::Type::Object:
      node.is_object = true;
      for (const auto& [k, v] : value.object) {
        auto child = build(k, v);
        if (!child) return std::unexpected(common::nest(key, child.error()));
        node.children.push_back(std::move(*child));
      }
      break;
  }
  return node;
}

Result<std::shared_ptr<const Formatter>> Formatter::json(const JsonFormatValue& object, bool omit_empty_values) {
  if (object.type != JsonFormatValue::Type::Object) return fail("json_format must be an object");
  auto f = std::make_shared<Formatter>();
  f->omit_empty_ = omit_empty_values;
  for (const auto& [k, v] : object.object) {
    auto node = build(k, v);
    if (!node) return std::unexpected(node.error());
    f->nodes_.push_back(std::move(*node));
  }
  return f;
}

Result<std::shared_ptr<const Formatter>> Formatter::text(std::string_view format, bool omit_empty_values) {
  if (omit_empty_values) return fail("omit_empty_values is only supported with json_format");
  auto t = Template::parse(format);
  if (!t) return std::unexpected(t.error());
  auto f = std::make_shared<Formatter>();
  f->json_ = false;
  f->omit_empty_ = omit_empty_values;
  f->text_ = std::move(*t);
  return f;
}

std::shared_ptr<const Formatter> Formatter::defaultJson() {
  static const std::shared_ptr<const Formatter> kDefault = [] {
    JsonFormatValue root;
    root.type = JsonFormatValue::Type::Object;
    auto add = [&](const char* key, const char* format) {
      JsonFormatValue v;
      v.type = JsonFormatValue::Type::String;
      v.string = format;
      root.object.emplace_back(key, std::move(v));
    };
    // Keys sorted, as a Struct would give them.
    add("authority", "%REQ(:AUTHORITY)%");
    add("bytes_received", "%BYTES_RECEIVED%");
    add("bytes_sent", "%BYTES_SENT%");
    add("downstream_local_address", "%DOWNSTREAM_LOCAL_ADDRESS%");
    add("downstream_remote_address", "%DOWNSTREAM_REMOTE_ADDRESS%");
    add("duration", "%DURATION%");
    add("method", "%REQ(:METHOD)%");
    add("path", "%REQ(:PATH)%");
    add("pod", "%CULVERT_POD_NAME%");
    add("pod_namespace", "%CULVERT_POD_NAMESPACE%");
    add("protocol", "%PROTOCOL%");
    add("request_id", "%REQ(X-REQUEST-ID)%");
    add("response_code", "%RESPONSE_CODE%");
    add("response_code_details", "%RESPONSE_CODE_DETAILS%");
    add("response_flags", "%RESPONSE_FLAGS%");
    add("route_name", "%ROUTE_NAME%");
    add("start_time", "%START_TIME%");
    add("tenant", "%CULVERT_TENANT%");
    add("upstream_cluster", "%UPSTREAM_CLUSTER%");
    add("upstream_host", "%UPSTREAM_HOST%");
    add("upstream_transport_failure_reason", "%UPSTREAM_TRANSPORT_FAILURE_REASON%");
    add("user_agent", "%REQ(USER-AGENT)%");
    return *json(root, false);
  }();
  return kDefault;
}

void Formatter::appendObject(std::string& out, const std::vector<Node>& nodes, const StreamInfo& info) const {
  out += '{';
  bool first = true;
  std::string value;
  for (const auto& node : nodes) {
    value.clear();
    if (node.is_object) {
      appendObject(value, node.children, info);
    } else if (node.value) {
      node.value->appendJson(value, info);
      if (omit_empty_ && (value == "null" || value == "\"\"")) continue;
    } else {
      value = node.literal;
    }
    if (!first) out += ',';
    first = false;
    out += node.key;
    out += ':';
    out += value;
  }
  out += '}';
}

std::string Formatter::format(const StreamInfo& info) const {
  std::string out;
  if (json_) {
    out.reserve(512);
    appendObject(out, nodes_, info);
    out += '\n';
    return out;
  }
  text_->appendText(out, info);
  return out;
}

}  // namespace culvert::accesslog
