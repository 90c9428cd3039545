#pragma once

#include <map>
#include <memory>
#include <optional>
#include <string>
#include <string_view>
#include <variant>
#include <vector>

#include "proxy/accesslog/stream_info.h"
#include "proxy/common/error.h"

namespace culvert::accesslog {

// One Envoy command operator, e.g. %REQ(X-REQUEST-ID?:AUTHORITY):64%.
struct Command {
  enum class Kind {
    StartTime,
    RequestHeader,
    ResponseHeader,
    ResponseTrailer,
    ResponseCode,
    ResponseFlags,
    ResponseCodeDetails,
    Duration,
    RequestDuration,
    ResponseDuration,
    BytesReceived,
    BytesSent,
    Protocol,
    UpstreamHost,
    UpstreamCluster,
    RouteName,
    DownstreamRemoteAddress,
    DownstreamRemoteAddressWithoutPort,
    DownstreamLocalAddress,
    DownstreamLocalAddressWithoutPort,
    UpstreamTransportFailureReason,
    UpstreamRequestAttemptCount,
    // culvert's own
    Tenant,
    PodName,
    PodNamespace,
    PodIp,
  };
  Kind kind;
  std::string header;          // REQ/RESP/TRAILER: lower-case name
  std::string alt_header;      // the name after '?'
  std::string time_format;     // START_TIME(...): strftime with %E3S/%E6S/%E9S
  std::optional<size_t> max_len;
};

// A format string: literal text and command operators. Envoy's rendering: an absent value
// prints "-"; as a JSON value, a string that is exactly one operator keeps that operator's
// type (numbers stay numbers, an absent value is null), anything else is a string.
class Template {
public:
  static common::Result<Template> parse(std::string_view text);
  void appendText(std::string& out, const StreamInfo& info) const;
  void appendJson(std::string& out, const StreamInfo& info) const;

private:
  std::vector<std::variant<std::string, Command>> parts_;
};

// A json_format dictionary as translate hands it over (google.protobuf.Struct, without
// protobuf): strings are templates, other scalars are copied as they are.
struct JsonFormatValue {
  enum class Type { Null, Bool, Number, String, Object };
  Type type = Type::Null;
  bool boolean = false;
  double number = 0;
  std::string string{};
  std::vector<std::pair<std::string, JsonFormatValue>> object{};  // keys sorted (as Struct)
};

// Renders one access-log line: a JSON object (one line, '\n'-terminated) or a text format.
class Formatter {
public:
  static common::Result<std::shared_ptr<const Formatter>> json(const JsonFormatValue& object, bool omit_empty_values);
  // No newline is added: the format carries it (Envoy's rule).
  static common::Result<std::shared_ptr<const Formatter>> text(std::string_view format, bool omit_empty_values);
  // culvert's line when a logger has no log_format (docs/operator-guide.md lists the keys).
  static std::shared_ptr<const Formatter> defaultJson();

  std::string format(const StreamInfo& info) const;
  bool isJson() const { return json_; }

private:
  struct Node {
    std::string key;  // already a JSON string literal, quoted
    std::optional<Template> value;
    std::string literal;  // JSON text of a non-string scalar
    std::vector<Node> children;
    bool is_object = false;
  };
  static common::Result<Node> build(const std::string& key, const JsonFormatValue& value);
  void appendObject(std::string& out, const std::vector<Node>& nodes, const StreamInfo& info) const;

  bool json_ = true;
  bool omit_empty_ = false;
  std::vector<Node> nodes_;  // JSON
  std::optional<Template> text_;
};

void appendJsonString(std::string& out, std::string_view s);

}  // namespace culvert::accesslog
