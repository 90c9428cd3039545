#include "xds/translate/translate.h"

#include <algorithm>
#include <cctype>
#include <limits>
#include <map>
#include <set>
#include <string>
#include <string_view>
#include <tuple>
#include <utility>

#include <google/protobuf/descriptor.h>

#include "proxy/common/ascii.h"
#include "xds/proto/envoy/config/cluster/v3/cluster.pb.h"
#include "xds/proto/envoy/config/endpoint/v3/endpoint.pb.h"
#include "xds/proto/envoy/config/listener/v3/listener.pb.h"
#include "xds/proto/envoy/config/route/v3/route.pb.h"
#include "xds/proto/envoy/extensions/network/dns_resolver/cares/v3/cares_dns_resolver.pb.h"
#include "xds/proto/envoy/type/matcher/v3/string.pb.h"
#include "xds/proto/envoy/extensions/filters/http/router/v3/router.pb.h"
#include "xds/proto/envoy/extensions/filters/network/http_connection_manager/v3/http_connection_manager.pb.h"
#include "xds/proto/envoy/extensions/filters/network/tcp_proxy/v3/tcp_proxy.pb.h"
#include "xds/translate/access_log.h"
#include "xds/translate/proto_util.h"
#include "xds/translate/http_protocol_options.h"
#include "xds/translate/type_urls.h"
#include "xds/translate/upstream_policies.h"

namespace culvert::xds::translate {

namespace {

using common::Error;
using common::fail;
using common::nest;
using common::Result;

namespace core = envoy::config::core::v3;
namespace listener = envoy::config::listener::v3;
namespace route = envoy::config::route::v3;
namespace cluster = envoy::config::cluster::v3;
namespace endpoint = envoy::config::endpoint::v3;
namespace hcm = envoy::extensions::filters::network::http_connection_manager::v3;
namespace tcp = envoy::extensions::filters::network::tcp_proxy::v3;
namespace router = envoy::extensions::filters::http::router::v3;
namespace cares = envoy::extensions::network::dns_resolver::cares::v3;

std::string indexed(std::string_view field, int i) {
  return std::string(field) + "[" + std::to_string(i) + "]";
}

// Envoy's Duration fields: non-negative, whole milliseconds are all culvert keeps.
Result<std::chrono::milliseconds> toMillis(const google::protobuf::Duration& d, const std::string& where) {
  if (d.seconds() < 0 || d.nanos() < 0 || d.nanos() > 999'999'999) {
    return fail("duration must be non-negative", where);
  }
  constexpr int64_t kMaxSeconds = std::numeric_limits<int64_t>::max() / 1000 - 1;
  if (d.seconds() > kMaxSeconds) return fail("duration is too large", where);
  return std::chrono::milliseconds(d.seconds() * 1000 + d.nanos() / 1'000'000);
}

// An IP:port from an Address; culvert resolves no names on the config path.
Result<common::SocketAddress> translateSocketAddress(const core::Address& address, bool allow_port_zero) {
  if (!address.has_socket_address()) {
    if (address.has_pipe()) return fail("pipe addresses are not supported", "pipe");
    if (address.has_envoy_internal_address()) {
      return fail("internal addresses are not supported", "envoy_internal_address");
    }
    return fail("a socket_address is required", "socket_address");
  }
  const auto& sa = address.socket_address();
  if (sa.protocol() != core::SocketAddress::TCP) {
    return fail("only TCP is supported", "socket_address.protocol");
  }
  if (!sa.resolver_name().empty()) {
    return fail("custom resolvers are not supported", "socket_address.resolver_name");
  }
  if (sa.ipv4_compat()) return fail("ipv4_compat is not supported", "socket_address.ipv4_compat");
  if (sa.has_named_port()) return fail("named ports are not supported", "socket_address.named_port");
  if (sa.port_value() > 65535) return fail("port must be at most 65535", "socket_address.port_value");
  if (sa.port_value() == 0 && !allow_port_zero) return fail("a port is required", "socket_address.port_value");
  auto parsed = common::SocketAddress::parse(sa.address(), static_cast<uint16_t>(sa.port_value()));
  if (!parsed) {
    return fail(parsed.error().message + " (culvert takes IP literals only)", "socket_address.address");
  }
  return *parsed;
}

// --- Routes ---

Result<std::shared_ptr<const common::Regex>> translateRegex(const envoy::type::matcher::v3::RegexMatcher& proto) {
  int max_program_size = common::Regex::kDefaultMaxProgramSize;
  if (proto.has_google_re2() && proto.google_re2().has_max_program_size()) {
    max_program_size = static_cast<int>(std::min<uint32_t>(proto.google_re2().max_program_size().value(), 1u << 20));
  }
  if (proto.regex().empty()) return fail("a regex is required", "regex");
  auto regex = common::Regex::compile(proto.regex(), max_program_size);
  if (!regex) return fail(regex.error().message, "regex");
  return *regex;
}

Result<config::StringMatcher> translateStringMatcher(const envoy::type::matcher::v3::StringMatcher& proto) {
  namespace matcher = envoy::type::matcher::v3;
  using Kind = config::StringMatcher::Kind;
  config::StringMatcher out;
  out.ignore_case = proto.ignore_case();
  switch (proto.match_pattern_case()) {
    case matcher::StringMatcher::kExact:
      out.kind = Kind::Exact;
      out.value = proto.exact();
      break;
    case matcher::StringMatcher::kPrefix:
      if (proto.prefix().empty()) return fail("must not be empty", "prefix");
      out.kind = Kind::Prefix;
      out.value = proto.prefix();
      break;
    case matcher::StringMatcher::kSuffix:
      if (proto.suffix().empty()) return fail("must not be empty", "suffix");
      out.kind = Kind::Suffix;
      out.value = proto.suffix();
      break;
    case matcher::StringMatcher::kContains:
      if (proto.contains().empty()) return fail("must not be empty", "contains");
      out.kind = Kind::Contains;
      out.value = proto.contains();
      break;
    case matcher::StringMatcher::kSafeRegex: {
      // Envoy ignores ignore_case here; culvert says so instead of ignoring it.
      if (out.ignore_case) return fail("ignore_case has no effect on safe_regex; use (?i) in the regex", "ignore_case");
      auto regex = translateRegex(proto.safe_regex());
      if (!regex) return std::unexpected(nest("safe_regex", regex.error()));
      out.kind = Kind::Regex;
      out.regex = std::move(*regex);
      break;
    }
    case matcher::StringMatcher::MATCH_PATTERN_NOT_SET:
      return fail("one of exact, prefix, suffix, contains or safe_regex is required");
  }
  if (out.ignore_case) out.value = common::lowerAscii(out.value);
  return out;
}

Result<config::HeaderMatcher> translateHeaderMatcher(const route::HeaderMatcher& proto) {
  using Kind = config::StringMatcher::Kind;
  config::HeaderMatcher out;
  if (proto.name().empty()) return fail("a header name is required", "name");
  out.name = common::lowerAscii(proto.name());
  out.invert_match = proto.invert_match();
  auto literal = [](Kind kind, const std::string& value) { return config::StringMatcher{kind, value, false, nullptr}; };
  switch (proto.header_match_specifier_case()) {
    case route::HeaderMatcher::kExactMatch:
      out.string_match = literal(Kind::Exact, proto.exact_match());
      break;
    case route::HeaderMatcher::kPrefixMatch:
      if (proto.prefix_match().empty()) return fail("must not be empty", "prefix_match");
      out.string_match = literal(Kind::Prefix, proto.prefix_match());
      break;
    case route::HeaderMatcher::kSuffixMatch:
      if (proto.suffix_match().empty()) return fail("must not be empty", "suffix_match");
      out.string_match = literal(Kind::Suffix, proto.suffix_match());
      break;
    case route::HeaderMatcher::kContainsMatch:
      if (proto.contains_match().empty()) return fail("must not be empty", "contains_match");
      out.string_match = literal(Kind::Contains, proto.contains_match());
      break;
    case route::HeaderMatcher::kSafeRegexMatch: {
      auto regex = translateRegex(proto.safe_regex_match());
      if (!regex) return std::unexpected(nest("safe_regex_match", regex.error()));
      out.string_match = config::StringMatcher{Kind::Regex, {}, false, std::move(*regex)};
      break;
    }
    case route::HeaderMatcher::kStringMatch: {
      auto m = translateStringMatcher(proto.string_match());
      if (!m) return std::unexpected(nest("string_match", m.error()));
      out.string_match = std::move(*m);
      break;
    }
    case route::HeaderMatcher::kRangeMatch:
      if (proto.range_match().start() >= proto.range_match().end()) {
        return fail("start must be less than end", "range_match");
      }
      out.range_match = config::Int64Range{proto.range_match().start(), proto.range_match().end()};
      break;
    case route::HeaderMatcher::kPresentMatch:
      // Envoy: present_match: false matches when the header is absent.
      out.present_match = true;
      if (!proto.present_match()) out.invert_match = !out.invert_match;
      break;
    case route::HeaderMatcher::HEADER_MATCH_SPECIFIER_NOT_SET:
      // Envoy: no specifier means "the header is present".
      out.present_match = true;
      break;
  }
  return out;
}

Result<config::QueryParameterMatcher> translateQueryParameterMatcher(const route::QueryParameterMatcher& proto) {
  config::QueryParameterMatcher out;
  if (proto.name().empty()) return fail("a parameter name is required", "name");
  out.name = proto.name();
  if (proto.query_parameter_match_specifier_case() == route::QueryParameterMatcher::kStringMatch) {
    auto m = translateStringMatcher(proto.string_match());
    if (!m) return std::unexpected(nest("string_match", m.error()));
    out.string_match = std::move(*m);
  } else if (proto.query_parameter_match_specifier_case() == route::QueryParameterMatcher::kPresentMatch &&
             !proto.present_match()) {
    return fail("present_match: false is not supported (Envoy requires true)", "present_match");
  }
  return out;
}

// Header names and values reach the upstream verbatim: nothing that could split a header
// line or a request passes.
bool validHeaderText(std::string_view text) {
  return std::none_of(text.begin(), text.end(), [](char c) { return c == '\r' || c == '\n' || c == '\0'; });
}

Result<std::string> translateMutableHeaderName(const std::string& name) {
  if (name.empty()) return fail("a header name is required");
  if (!validHeaderText(name) || name.find(':', 1) != std::string::npos || name.find(' ') != std::string::npos) {
    return fail("invalid header name '" + name + "'");
  }
  auto lowered = common::lowerAscii(name);
  // Envoy's rule: pseudo-headers and host are not modified by header mutations.
  if (lowered.front() == ':' || lowered == "host") {
    return fail("'" + name + "' may not be modified (use host_rewrite_literal for host)");
  }
  return lowered;
}

// Envoy's header values are formatter strings: %OPERATOR% is substituted, %% is a '%'.
// culvert implements no operators here yet, so any other '%' is rejected rather than
// sent literally.
Result<std::string> translateHeaderValue(const std::string& value) {
  if (!validHeaderText(value)) return fail("header values must not contain CR, LF or NUL");
  std::string out;
  for (size_t i = 0; i < value.size(); ++i) {
    if (value[i] != '%') {
      out += value[i];
    } else if (i + 1 < value.size() && value[i + 1] == '%') {
      out += '%';
      ++i;
    } else {
      return fail("formatter operators (%...%) in header values are not supported; write %% for a literal '%'");
    }
  }
  return out;
}

Result<config::HeaderValueOption> translateHeaderValueOption(const core::HeaderValueOption& proto) {
  using Action = config::HeaderValueOption::Action;
  config::HeaderValueOption out;
  if (!proto.has_header()) return fail("a header is required", "header");
  auto name = translateMutableHeaderName(proto.header().key());
  if (!name) return std::unexpected(nest("header.key", name.error()));
  out.name = std::move(*name);
  auto value = translateHeaderValue(proto.header().value());
  if (!value) return std::unexpected(nest("header.value", value.error()));
  out.value = std::move(*value);
  out.keep_empty_value = proto.keep_empty_value();
  if (proto.has_append()) {
    if (proto.append_action() != core::HeaderValueOption::APPEND_IF_EXISTS_OR_ADD) {
      return fail("append and append_action cannot both be set", "append");
    }
    out.action = proto.append().value() ? Action::AppendIfExistsOrAdd : Action::OverwriteIfExistsOrAdd;
    return out;
  }
  switch (proto.append_action()) {
    case core::HeaderValueOption::ADD_IF_ABSENT:
      out.action = Action::AddIfAbsent;
      break;
    case core::HeaderValueOption::OVERWRITE_IF_EXISTS_OR_ADD:
      out.action = Action::OverwriteIfExistsOrAdd;
      break;
    case core::HeaderValueOption::OVERWRITE_IF_EXISTS:
      out.action = Action::OverwriteIfExists;
      break;
    default:
      out.action = Action::AppendIfExistsOrAdd;
      break;
  }
  return out;
}

Result<std::vector<config::HeaderValueOption>> translateHeadersToAdd(
    const google::protobuf::RepeatedPtrField<core::HeaderValueOption>& proto, const std::string& field) {
  std::vector<config::HeaderValueOption> out;
  for (int i = 0; i < proto.size(); ++i) {
    auto option = translateHeaderValueOption(proto.Get(i));
    if (!option) return std::unexpected(nest(indexed(field, i), option.error()));
    out.push_back(std::move(*option));
  }
  return out;
}

Result<std::vector<std::string>> translateHeadersToRemove(const google::protobuf::RepeatedPtrField<std::string>& proto,
                                                          const std::string& field) {
  std::vector<std::string> out;
  for (int i = 0; i < proto.size(); ++i) {
    auto name = translateMutableHeaderName(proto.Get(i));
    if (!name) return std::unexpected(nest(indexed(field, i), name.error()));
    out.push_back(std::move(*name));
  }
  return out;
}

// The four header mutation fields, which RouteConfiguration, VirtualHost, Route and
// ClusterWeight all carry under the same names.
template <typename Proto>
Result<config::HeaderMutations> translateHeaderMutations(const Proto& proto) {
  config::HeaderMutations out;
  auto req_add = translateHeadersToAdd(proto.request_headers_to_add(), "request_headers_to_add");
  if (!req_add) return std::unexpected(req_add.error());
  auto req_remove = translateHeadersToRemove(proto.request_headers_to_remove(), "request_headers_to_remove");
  if (!req_remove) return std::unexpected(req_remove.error());
  auto resp_add = translateHeadersToAdd(proto.response_headers_to_add(), "response_headers_to_add");
  if (!resp_add) return std::unexpected(resp_add.error());
  auto resp_remove = translateHeadersToRemove(proto.response_headers_to_remove(), "response_headers_to_remove");
  if (!resp_remove) return std::unexpected(resp_remove.error());
  out.request_headers_to_add = std::move(*req_add);
  out.request_headers_to_remove = std::move(*req_remove);
  out.response_headers_to_add = std::move(*resp_add);
  out.response_headers_to_remove = std::move(*resp_remove);
  return out;
}

Result<config::WeightedClusters> translateWeightedClusters(const route::WeightedCluster& proto) {
  config::WeightedClusters out;
  if (proto.clusters_size() == 0) return fail("at least one cluster is required", "clusters");
  for (int i = 0; i < proto.clusters_size(); ++i) {
    const auto& c = proto.clusters(i);
    auto where = indexed("clusters", i);
    config::ClusterWeight cw;
    if (c.name().empty()) return fail("a cluster name is required", where + ".name");
    cw.name = c.name();
    cw.weight = c.has_weight() ? c.weight().value() : 0;
    auto headers = translateHeaderMutations(c);
    if (!headers) return std::unexpected(nest(where, headers.error()));
    cw.headers = std::move(*headers);
    out.total_weight += cw.weight;
    out.clusters.push_back(std::move(cw));
  }
  if (out.total_weight == 0) return fail("the sum of the weights must be greater than 0", "clusters");
  if (proto.has_total_weight() && proto.total_weight().value() != out.total_weight) {
    return fail("total_weight " + std::to_string(proto.total_weight().value()) + " is not the sum of the weights (" +
                    std::to_string(out.total_weight) + ")",
                "total_weight");
  }
  return out;
}

Result<config::RouteMatch> translateRouteMatch(const route::RouteMatch& proto) {
  config::RouteMatch out;
  switch (proto.path_specifier_case()) {
    case route::RouteMatch::kPrefix:
      out.prefix = proto.prefix();
      break;
    case route::RouteMatch::kPath:
      out.path = proto.path();
      break;
    case route::RouteMatch::kSafeRegex: {
      auto regex = translateRegex(proto.safe_regex());
      if (!regex) return std::unexpected(nest("safe_regex", regex.error()));
      out.safe_regex = std::move(*regex);
      break;
    }
    case route::RouteMatch::kConnectMatcher:
      out.connect_matcher = true;
      break;
    case route::RouteMatch::PATH_SPECIFIER_NOT_SET:
      return fail("one of prefix, path, safe_regex or connect_matcher is required");
  }
  out.case_sensitive = proto.has_case_sensitive() ? proto.case_sensitive().value() : true;
  for (int i = 0; i < proto.headers_size(); ++i) {
    auto h = translateHeaderMatcher(proto.headers(i));
    if (!h) return std::unexpected(nest(indexed("headers", i), h.error()));
    out.headers.push_back(std::move(*h));
  }
  for (int i = 0; i < proto.query_parameters_size(); ++i) {
    auto q = translateQueryParameterMatcher(proto.query_parameters(i));
    if (!q) return std::unexpected(nest(indexed("query_parameters", i), q.error()));
    out.query_parameters.push_back(std::move(*q));
  }
  return out;
}

// retry_on's comma-separated conditions (Envoy's x-envoy-retry-on and
// x-envoy-retry-grpc-on names).
Result<uint32_t> translateRetryOn(const std::string& retry_on) {
  using P = config::RetryPolicy;
  static const std::pair<std::string_view, uint32_t> kConditions[] = {
      {"5xx", P::k5xx},
      {"gateway-error", P::kGatewayError},
      {"reset", P::kReset},
      {"connect-failure", P::kConnectFailure},
      {"refused-stream", P::kRefusedStream},
      {"retriable-4xx", P::kRetriable4xx},
      {"retriable-status-codes", P::kRetriableStatusCodes},
      {"retriable-headers", P::kRetriableHeaders},
      {"cancelled", P::kGrpcCancelled},
      {"deadline-exceeded", P::kGrpcDeadlineExceeded},
      {"internal", P::kGrpcInternal},
      {"resource-exhausted", P::kGrpcResourceExhausted},
      {"unavailable", P::kGrpcUnavailable},
  };
  uint32_t bits = 0;
  std::string_view rest = retry_on;
  while (!rest.empty()) {
    auto comma = rest.find(',');
    auto item = rest.substr(0, comma);
    rest = comma == std::string_view::npos ? std::string_view{} : rest.substr(comma + 1);
    while (!item.empty() && item.front() == ' ') item.remove_prefix(1);
    while (!item.empty() && item.back() == ' ') item.remove_suffix(1);
    if (item.empty()) continue;
    auto it = std::find_if(std::begin(kConditions), std::end(kConditions), [&](const auto& c) { return c.first == item; });
    if (it == std::end(kConditions)) {
      return fail("retry condition '" + std::string(item) + "' is not supported", "retry_on");
    }
    bits |= it->second;
  }
  return bits;
}

Result<config::RetryPolicy> translateRetryPolicy(const route::RetryPolicy& proto) {
  using Policy = route::RetryPolicy;
  config::RetryPolicy out;
  auto on = translateRetryOn(proto.retry_on());
  if (!on) return std::unexpected(on.error());
  out.retry_on = *on;
  if (proto.has_num_retries()) out.num_retries = proto.num_retries().value();
  auto duration = [](const google::protobuf::Duration& d, const char* where) { return toMillis(d, where); };
  if (proto.has_per_try_timeout()) {
    auto t = duration(proto.per_try_timeout(), "per_try_timeout");
    if (!t) return std::unexpected(t.error());
    out.per_try_timeout = *t;
  }
  if (proto.has_per_try_idle_timeout()) {
    auto t = duration(proto.per_try_idle_timeout(), "per_try_idle_timeout");
    if (!t) return std::unexpected(t.error());
    out.per_try_idle_timeout = *t;
  }
  if (proto.has_retry_priority()) return fail("retry priorities are not supported", "retry_priority");
  if (proto.retriable_request_headers_size() > 0) {
    return fail("retriable_request_headers is not supported", "retriable_request_headers");
  }
  for (int i = 0; i < proto.retry_host_predicate_size(); ++i) {
    const auto& predicate = proto.retry_host_predicate(i);
    if (predicate.name() != "envoy.retry_host_predicates.previous_hosts") {
      return fail("retry host predicate '" + predicate.name() +
                      "' is not supported; only envoy.retry_host_predicates.previous_hosts is",
                  indexed("retry_host_predicate", i) + ".name");
    }
    if (predicate.has_typed_config() &&
        messageNameOf(predicate.typed_config().type_url()) !=
            "envoy.extensions.retry.host.previous_hosts.v3.PreviousHostsPredicate") {
      return fail("unexpected typed_config for previous_hosts", indexed("retry_host_predicate", i) + ".typed_config");
    }
    out.previous_hosts = true;
  }
  if (proto.host_selection_retry_max_attempts() < 0) {
    return fail("must not be negative", "host_selection_retry_max_attempts");
  }
  if (proto.host_selection_retry_max_attempts() > 0) {
    out.host_selection_retry_max_attempts =
        static_cast<uint32_t>(std::min<int64_t>(proto.host_selection_retry_max_attempts(), 100));
  }
  for (uint32_t code : proto.retriable_status_codes()) {
    if (code < 100 || code > 599) return fail("status codes must be in [100, 599]", "retriable_status_codes");
    out.retriable_status_codes.push_back(code);
  }
  for (int i = 0; i < proto.retriable_headers_size(); ++i) {
    auto h = translateHeaderMatcher(proto.retriable_headers(i));
    if (!h) return std::unexpected(nest(indexed("retriable_headers", i), h.error()));
    out.retriable_headers.push_back(std::move(*h));
  }
  if (proto.has_retry_back_off()) {
    const auto& back_off = proto.retry_back_off();
    if (!back_off.has_base_interval()) return fail("base_interval is required", "retry_back_off.base_interval");
    auto base = duration(back_off.base_interval(), "retry_back_off.base_interval");
    if (!base) return std::unexpected(base.error());
    // Envoy rounds sub-millisecond intervals up to 1 ms.
    out.base_interval = std::max(*base, std::chrono::milliseconds(1));
    out.max_interval = out.base_interval * 10;
    if (back_off.has_max_interval()) {
      auto max = duration(back_off.max_interval(), "retry_back_off.max_interval");
      if (!max) return std::unexpected(max.error());
      if (*max < out.base_interval) {
        return fail("max_interval must not be less than base_interval", "retry_back_off.max_interval");
      }
      out.max_interval = *max;
    }
  }
  if (proto.has_rate_limited_retry_back_off()) {
    const auto& rl = proto.rate_limited_retry_back_off();
    if (rl.reset_headers_size() == 0) {
      return fail("at least one reset header is required", "rate_limited_retry_back_off.reset_headers");
    }
    for (int i = 0; i < rl.reset_headers_size(); ++i) {
      const auto& h = rl.reset_headers(i);
      auto where = "rate_limited_retry_back_off." + indexed("reset_headers", i);
      if (h.name().empty()) return fail("a header name is required", where + ".name");
      out.reset_headers.push_back({common::lowerAscii(h.name()), h.format() == Policy::UNIX_TIMESTAMP
                                                         ? config::RetryPolicy::ResetHeader::Format::UnixTimestamp
                                                         : config::RetryPolicy::ResetHeader::Format::Seconds});
    }
    if (rl.has_max_interval()) {
      auto max = duration(rl.max_interval(), "rate_limited_retry_back_off.max_interval");
      if (!max) return std::unexpected(max.error());
      if (max->count() <= 0) return fail("must be at least 1ms", "rate_limited_retry_back_off.max_interval");
      out.reset_max_interval = *max;
    }
  }
  return out;
}

// Upgrade types culvert tunnels: WebSocket (forwarded, tunnelled after the 101) and
// CONNECT (HTTP/1.1 only). Anything else would be forwarded without being understood.
Result<std::string> translateUpgradeType(const std::string& type) {
  std::string lower = common::lowerAscii(type);
  if (lower == "websocket" || lower == "connect") return lower;
  if (lower.empty()) return fail("upgrade_type is required", "upgrade_type");
  return fail("upgrade_type \"" + type + "\" is not supported; websocket and CONNECT are", "upgrade_type");
}

Result<std::vector<config::UpgradeConfig>> translateRouteUpgrades(const route::RouteAction& proto) {
  std::vector<config::UpgradeConfig> out;
  for (int i = 0; i < proto.upgrade_configs_size(); ++i) {
    const auto& u = proto.upgrade_configs(i);
    const std::string where = indexed("upgrade_configs", i);
    auto type = translateUpgradeType(u.upgrade_type());
    if (!type) return std::unexpected(nest(where, type.error()));
    config::UpgradeConfig config{*type, u.has_enabled() ? u.enabled().value() : true, false};
    if (u.has_connect_config()) {
      if (*type != "connect") return fail("connect_config is only valid for the CONNECT upgrade type", where + ".connect_config");
      if (u.connect_config().allow_post()) {
        return fail("allow_post (POST as a raw TCP tunnel) is not supported", where + ".connect_config.allow_post");
      }
      config.terminate_connect = true;
    }
    for (const auto& seen : out) {
      if (seen.upgrade_type == config.upgrade_type) return fail("upgrade_type " + *type + " is listed twice", where);
    }
    out.push_back(std::move(config));
  }
  return out;
}

// Whether the policy hedges on per-try timeouts; what Envoy leaves unimplemented is refused.
Result<bool> translateHedgePolicy(const route::HedgePolicy& proto) {
  if (proto.has_initial_requests() && proto.initial_requests().value() != 1) {
    return fail("only 1 initial request is supported (Envoy does not implement more either)", "initial_requests");
  }
  if (proto.has_additional_request_chance() && proto.additional_request_chance().numerator() != 0) {
    return fail("additional_request_chance is not supported (Envoy does not implement it either)",
                "additional_request_chance");
  }
  return proto.hedge_on_per_try_timeout();
}

Result<config::RouteAction> translateRouteAction(const route::RouteAction& proto) {
  config::RouteAction out;
  if (proto.cluster_specifier_case() == route::RouteAction::kWeightedClusters) {
    auto weighted = translateWeightedClusters(proto.weighted_clusters());
    if (!weighted) return std::unexpected(nest("weighted_clusters", weighted.error()));
    out.weighted_clusters = std::move(*weighted);
  } else if (proto.cluster_specifier_case() != route::RouteAction::kCluster || proto.cluster().empty()) {
    return fail("a cluster name or weighted_clusters is required (cluster_header is not supported)", "cluster");
  } else {
    out.cluster = proto.cluster();
  }
  if (!proto.prefix_rewrite().empty()) out.prefix_rewrite = proto.prefix_rewrite();
  if (proto.has_regex_rewrite()) {
    if (out.prefix_rewrite) return fail("prefix_rewrite and regex_rewrite cannot both be set", "regex_rewrite");
    if (!proto.regex_rewrite().has_pattern()) return fail("a pattern is required", "regex_rewrite.pattern");
    auto pattern = translateRegex(proto.regex_rewrite().pattern());
    if (!pattern) return std::unexpected(nest("regex_rewrite.pattern", pattern.error()));
    const auto& substitution = proto.regex_rewrite().substitution();
    if (auto c = (*pattern)->checkSubstitution(substitution); !c) {
      return std::unexpected(nest("regex_rewrite.substitution", c.error()));
    }
    if (!validHeaderText(substitution) || substitution.find_first_of(" \t?#") != std::string::npos) {
      return fail("the substitution must not contain whitespace, '?', '#', CR, LF or NUL", "regex_rewrite.substitution");
    }
    out.regex_rewrite = config::RegexRewrite{std::move(*pattern), substitution};
  }
  if (proto.host_rewrite_specifier_case() == route::RouteAction::kHostRewriteLiteral) {
    if (proto.host_rewrite_literal().empty()) {
      return fail("host_rewrite_literal must not be empty", "host_rewrite_literal");
    }
    out.host_rewrite_literal = proto.host_rewrite_literal();
  }
  if (proto.has_timeout()) {
    // 0 disables the timeout, as in Envoy.
    auto t = toMillis(proto.timeout(), "timeout");
    if (!t) return std::unexpected(t.error());
    out.timeout = *t;
  }
  if (proto.has_retry_policy()) {
    auto policy = translateRetryPolicy(proto.retry_policy());
    if (!policy) return std::unexpected(nest("retry_policy", policy.error()));
    out.retry_policy = std::move(*policy);
  }
  if (proto.has_hedge_policy()) {
    auto hedge = translateHedgePolicy(proto.hedge_policy());
    if (!hedge) return std::unexpected(nest("hedge_policy", hedge.error()));
    out.hedge_on_per_try_timeout = *hedge;
  }
  switch (proto.priority()) {
    case envoy::config::core::v3::DEFAULT:
      break;
    case envoy::config::core::v3::HIGH:
      out.priority = config::RoutingPriority::High;
      break;
    default:
      return fail("unknown routing priority", "priority");
  }
  if (proto.has_idle_timeout()) {
    auto t = toMillis(proto.idle_timeout(), "idle_timeout");
    if (!t) return std::unexpected(t.error());
    out.idle_timeout = *t;
  }
  if (proto.has_max_stream_duration()) {
    const auto& m = proto.max_stream_duration();
    config::MaxStreamDuration limit;
    if (m.has_max_stream_duration()) {
      auto t = toMillis(m.max_stream_duration(), "max_stream_duration.max_stream_duration");
      if (!t) return std::unexpected(t.error());
      limit.max = *t;
    }
    if (m.has_grpc_timeout_header_max()) {
      auto t = toMillis(m.grpc_timeout_header_max(), "max_stream_duration.grpc_timeout_header_max");
      if (!t) return std::unexpected(t.error());
      limit.grpc_timeout_header_max = *t;
    }
    if (m.has_grpc_timeout_header_offset()) {
      auto t = toMillis(m.grpc_timeout_header_offset(), "max_stream_duration.grpc_timeout_header_offset");
      if (!t) return std::unexpected(t.error());
      limit.grpc_timeout_header_offset = *t;
    }
    out.max_stream_duration = limit;
  }
  auto hash_policy = translateHashPolicies(proto);
  if (!hash_policy) return std::unexpected(hash_policy.error());
  out.hash_policy = std::move(*hash_policy);
  auto upgrades = translateRouteUpgrades(proto);
  if (!upgrades) return std::unexpected(upgrades.error());
  out.upgrade_configs = std::move(*upgrades);
  return out;
}

Result<config::DirectResponse> translateDirectResponse(const route::DirectResponseAction& proto) {
  config::DirectResponse out;
  if (proto.status() < 100 || proto.status() > 599) {
    return fail("status must be in [100, 599]", "status");
  }
  out.status = proto.status();
  if (proto.has_body()) {
    const auto& body = proto.body();
    switch (body.specifier_case()) {
      case core::DataSource::kInlineString:
        out.body = body.inline_string();
        break;
      case core::DataSource::kInlineBytes:
        out.body = body.inline_bytes();
        break;
      case core::DataSource::kFilename:
        return fail("bodies from files are not supported; use inline_string", "body.filename");
      case core::DataSource::kEnvironmentVariable:
        return fail("bodies from environment variables are not supported; use inline_string",
                    "body.environment_variable");
      case core::DataSource::SPECIFIER_NOT_SET:
        break;
    }
  }
  return out;
}

Result<config::Route> translateRoute(const route::Route& proto) {
  config::Route out;
  out.name = proto.name();
  if (!proto.has_match()) return fail("a match is required", "match");
  auto match = translateRouteMatch(proto.match());
  if (!match) return std::unexpected(nest("match", match.error()));
  out.match = std::move(*match);
  switch (proto.action_case()) {
    case route::Route::kRoute: {
      auto action = translateRouteAction(proto.route());
      if (!action) return std::unexpected(nest("route", action.error()));
      out.route = std::move(*action);
      if (proto.has_per_request_buffer_limit_bytes()) {
        out.route->retry_buffer_bytes = proto.per_request_buffer_limit_bytes().value();
      }
      break;
    }
    case route::Route::kDirectResponse: {
      auto direct = translateDirectResponse(proto.direct_response());
      if (!direct) return std::unexpected(nest("direct_response", direct.error()));
      out.direct_response = std::move(*direct);
      break;
    }
    case route::Route::ACTION_NOT_SET:
      return fail("a route needs an action: route or direct_response (redirect and others are not supported)");
  }
  auto headers = translateHeaderMutations(proto);
  if (!headers) return std::unexpected(headers.error());
  if (out.direct_response && (!headers->request_headers_to_add.empty() || !headers->request_headers_to_remove.empty())) {
    // Nothing goes upstream; Envoy accepts and ignores these, culvert says so.
    return fail("request header mutations have no effect on a direct_response route", "request_headers_to_add");
  }
  out.headers = std::move(*headers);
  return out;
}

// Envoy's domain rules: "*" alone, or one wildcard as the whole first or last label part.
Result<void> validateDomain(const std::string& domain) {
  if (domain.empty()) return fail("a domain must not be empty");
  if (domain == "*") return {};
  auto stars = std::count(domain.begin(), domain.end(), '*');
  if (stars == 0) return {};
  if (stars == 1 && (domain.front() == '*' || domain.back() == '*')) return {};
  return fail("invalid wildcard domain '" + domain + "': only a leading or trailing '*' is allowed");
}

Result<config::VirtualHost> translateVirtualHost(const route::VirtualHost& proto) {
  config::VirtualHost out;
  if (proto.name().empty()) return fail("a virtual host name is required", "name");
  out.name = proto.name();
  if (proto.require_tls() != route::VirtualHost::NONE) {
    return fail("require_tls is not supported", "require_tls");
  }
  if (proto.domains_size() == 0) return fail("at least one domain is required", "domains");
  for (int i = 0; i < proto.domains_size(); ++i) {
    auto domain = common::lowerAscii(proto.domains(i));
    if (auto v = validateDomain(domain); !v) return std::unexpected(nest(indexed("domains", i), v.error()));
    out.domains.push_back(std::move(domain));
  }
  // A route's retry_policy and buffer limit replace the virtual host's, never merge.
  std::optional<config::RetryPolicy> vhost_retry;
  if (proto.has_retry_policy()) {
    auto policy = translateRetryPolicy(proto.retry_policy());
    if (!policy) return std::unexpected(nest("retry_policy", policy.error()));
    vhost_retry = std::move(*policy);
  }
  bool vhost_hedge = false;
  if (proto.has_hedge_policy()) {
    auto hedge = translateHedgePolicy(proto.hedge_policy());
    if (!hedge) return std::unexpected(nest("hedge_policy", hedge.error()));
    vhost_hedge = *hedge;
  }
  for (int i = 0; i < proto.routes_size(); ++i) {
    auto r = translateRoute(proto.routes(i));
    if (!r) return std::unexpected(nest(indexed("routes", i), r.error()));
    if (r->route) {
      if (!r->route->retry_policy) r->route->retry_policy = vhost_retry;
      if (!proto.routes(i).route().has_hedge_policy()) r->route->hedge_on_per_try_timeout = vhost_hedge;
      if (!proto.routes(i).has_per_request_buffer_limit_bytes() && proto.has_per_request_buffer_limit_bytes()) {
        r->route->retry_buffer_bytes = proto.per_request_buffer_limit_bytes().value();
      }
    }
    out.routes.push_back(std::move(*r));
  }
  auto headers = translateHeaderMutations(proto);
  if (!headers) return std::unexpected(headers.error());
  out.headers = std::move(*headers);
  return out;
}

Result<config::RouteConfiguration> translateRouteConfigurationChecked(const route::RouteConfiguration& proto) {
  config::RouteConfiguration out;
  out.name = proto.name();
  if (proto.has_validate_clusters() && proto.validate_clusters().value()) {
    return fail("validate_clusters: true is not supported", "validate_clusters");
  }
  std::set<std::string> names;
  std::set<std::string> domains;
  for (int i = 0; i < proto.virtual_hosts_size(); ++i) {
    auto where = indexed("virtual_hosts", i);
    auto vh = translateVirtualHost(proto.virtual_hosts(i));
    if (!vh) return std::unexpected(nest(where, vh.error()));
    if (!names.insert(vh->name).second) {
      return fail("duplicate virtual host name '" + vh->name + "'", where + ".name");
    }
    for (size_t d = 0; d < vh->domains.size(); ++d) {
      if (!domains.insert(vh->domains[d]).second) {
        return fail("domain '" + vh->domains[d] + "' appears in more than one virtual host",
                    where + "." + indexed("domains", static_cast<int>(d)));
      }
    }
    out.virtual_hosts.push_back(std::move(*vh));
  }
  auto headers = translateHeaderMutations(proto);
  if (!headers) return std::unexpected(headers.error());
  out.headers = std::move(*headers);
  return out;
}

// --- Listeners ---

Result<config::FilterChainMatch> translateFilterChainMatch(const listener::FilterChainMatch& proto) {
  config::FilterChainMatch out;
  if (proto.has_destination_port()) {
    uint32_t port = proto.destination_port().value();
    if (port == 0 || port > 65535) return fail("must be in [1, 65535]", "destination_port");
    out.destination_port = static_cast<uint16_t>(port);
  }
  for (int i = 0; i < proto.prefix_ranges_size(); ++i) {
    const auto& range = proto.prefix_ranges(i);
    auto cidr = common::CidrRange::parse(range.address_prefix(),
                                         range.has_prefix_len() ? range.prefix_len().value() : 0);
    if (!cidr) return fail(cidr.error().message, indexed("prefix_ranges", i));
    out.prefix_ranges.push_back(*cidr);
  }
  for (int i = 0; i < proto.server_names_size(); ++i) {
    if (proto.server_names(i).empty()) return fail("must not be empty", indexed("server_names", i));
    out.server_names.push_back(common::lowerAscii(proto.server_names(i)));
  }
  const auto& tp = proto.transport_protocol();
  if (!tp.empty() && tp != "raw_buffer" && tp != "tls") {
    return fail("transport_protocol must be empty, raw_buffer or tls", "transport_protocol");
  }
  out.transport_protocol = tp;
  return out;
}

// One line that two chains with the same match share (Envoy rejects such listeners).
std::string matchKey(const config::FilterChainMatch& m) {
  std::string key = m.destination_port ? std::to_string(*m.destination_port) : "*";
  key += "|" + m.transport_protocol + "|";
  std::vector<std::string> parts;
  for (const auto& r : m.prefix_ranges) parts.push_back(r.prefix.ip() + "/" + std::to_string(r.length));
  std::sort(parts.begin(), parts.end());
  for (const auto& p : parts) key += p + ",";
  key += "|";
  parts = m.server_names;
  std::sort(parts.begin(), parts.end());
  for (const auto& p : parts) key += p + ",";
  return key;
}

Result<void> translateHttpFilters(const hcm::HttpConnectionManager& proto) {
  bool router_seen = false;
  for (int i = 0; i < proto.http_filters_size(); ++i) {
    const auto& filter = proto.http_filters(i);
    auto where = indexed("http_filters", i);
    bool is_router = false;
    if (filter.has_typed_config()) {
      if (messageNameOf(filter.typed_config().type_url()) == kRouterMessage) {
        router::Router config;
        if (!filter.typed_config().UnpackTo(&config)) {
          return fail("cannot decode the Router config", where + ".typed_config");
        }
        if (auto u = rejectUnknownFields(config); !u) {
          return std::unexpected(nest(where + ".typed_config", u.error()));
        }
        is_router = true;
      }
    } else {
      is_router = filter.name() == kRouterName;
    }
    if (!is_router) {
      if (filter.is_optional()) continue;  // Envoy skips an unsupported optional filter too.
      std::string type = filter.has_typed_config() ? filter.typed_config().type_url() : "no typed_config";
      return fail("HTTP filter '" + filter.name() + "' (" + type +
                      ") is not supported; only envoy.filters.http.router is (mark others is_optional to skip them)",
                  where);
    }
    if (filter.disabled()) return fail("the router filter cannot be disabled", where + ".disabled");
    if (router_seen) return fail("more than one router filter", where);
    router_seen = true;
    // Envoy requires the terminal filter last; optional filters after it would be skipped
    // anyway, required ones are an error.
    for (int j = i + 1; j < proto.http_filters_size(); ++j) {
      if (!proto.http_filters(j).is_optional()) {
        return fail("the router must be the last HTTP filter", indexed("http_filters", j));
      }
    }
    break;
  }
  if (!router_seen) return fail("the last HTTP filter must be envoy.filters.http.router", "http_filters");
  return {};
}

Result<config::HttpConnectionManager> translateHcm(const hcm::HttpConnectionManager& proto) {
  if (auto u = rejectUnknownFields(proto); !u) return std::unexpected(u.error());
  config::HttpConnectionManager out;
  switch (proto.codec_type()) {
    case hcm::HttpConnectionManager::AUTO:
      out.codec_type = config::HttpConnectionManager::CodecType::Auto;
      break;
    case hcm::HttpConnectionManager::HTTP1:
      out.codec_type = config::HttpConnectionManager::CodecType::Http1;
      break;
    case hcm::HttpConnectionManager::HTTP2:
      out.codec_type = config::HttpConnectionManager::CodecType::Http2;
      break;
    default:
      return fail("codec_type " + hcm::HttpConnectionManager::CodecType_Name(proto.codec_type()) +
                      " is not supported; AUTO, HTTP1 and HTTP2 are",
                  "codec_type");
  }
  if (proto.stat_prefix().empty()) return fail("stat_prefix is required", "stat_prefix");
  out.stat_prefix = proto.stat_prefix();
  switch (proto.route_specifier_case()) {
    case hcm::HttpConnectionManager::kRds:
      if (proto.rds().route_config_name().empty()) {
        return fail("route_config_name is required", "rds.route_config_name");
      }
      out.route_config_name = proto.rds().route_config_name();
      break;
    case hcm::HttpConnectionManager::kRouteConfig: {
      auto rc = translateRouteConfigurationChecked(proto.route_config());
      if (!rc) return std::unexpected(nest("route_config", rc.error()));
      out.route_config_name = rc->name;
      out.route_config = std::make_shared<const config::RouteConfiguration>(std::move(*rc));
      break;
    }
    case hcm::HttpConnectionManager::ROUTE_SPECIFIER_NOT_SET:
      return fail("one of rds or route_config is required (scoped_routes is not supported)");
  }
  if (auto f = translateHttpFilters(proto); !f) return std::unexpected(f.error());
  auto timeout = [](const google::protobuf::Duration& d, const char* where, std::chrono::milliseconds& out) {
    auto t = toMillis(d, where);
    if (t) out = *t;
    return t;
  };
  if (proto.has_stream_idle_timeout()) {
    if (auto t = timeout(proto.stream_idle_timeout(), "stream_idle_timeout", out.timeouts.stream_idle); !t) {
      return std::unexpected(t.error());
    }
  }
  if (proto.has_request_timeout()) {
    if (auto t = timeout(proto.request_timeout(), "request_timeout", out.timeouts.request); !t) {
      return std::unexpected(t.error());
    }
  }
  if (proto.has_request_headers_timeout()) {
    if (auto t = timeout(proto.request_headers_timeout(), "request_headers_timeout", out.timeouts.request_headers);
        !t) {
      return std::unexpected(t.error());
    }
  }
  if (proto.has_drain_timeout()) {
    if (auto t = timeout(proto.drain_timeout(), "drain_timeout", out.drain_timeout); !t) {
      return std::unexpected(t.error());
    }
  }
  if (proto.has_common_http_protocol_options()) {
    // One lifetime for whichever protocol the connection speaks (under AUTO, the sniff
    // decides); its other fields are rejected as unknown.
    auto lifetime = translateConnectionLifetime(proto.common_http_protocol_options());
    if (!lifetime) return std::unexpected(nest("common_http_protocol_options", lifetime.error()));
    out.connection_lifetime = *lifetime;
  }
  auto logs = translateAccessLogs(proto.access_log());
  if (!logs) return std::unexpected(logs.error());
  out.access_logs = std::move(*logs);
  for (int i = 0; i < proto.upgrade_configs_size(); ++i) {
    const auto& u = proto.upgrade_configs(i);
    const std::string where = indexed("upgrade_configs", i);
    auto type = translateUpgradeType(u.upgrade_type());
    if (!type) return std::unexpected(nest(where, type.error()));
    if (u.filters_size() > 0) {
      return fail("custom upgrade filter chains are not supported; leave filters empty", where + ".filters");
    }
    if (out.codec_type == config::HttpConnectionManager::CodecType::Http2) {
      // Upgrades are an HTTP/1.1 mechanism; extended CONNECT (RFC 8441) is not implemented.
      return fail("upgrades need HTTP/1.1 downstream; codec_type HTTP2 cannot carry them", where);
    }
    for (const auto& seen : out.upgrade_configs) {
      if (seen.upgrade_type == *type) return fail("upgrade_type " + *type + " is listed twice", where);
    }
    out.upgrade_configs.push_back({*type, u.has_enabled() ? u.enabled().value() : true, false});
  }
  return out;
}

Result<config::TcpProxy> translateTcpProxy(const tcp::TcpProxy& proto) {
  if (auto u = rejectUnknownFields(proto); !u) return std::unexpected(u.error());
  config::TcpProxy out;
  if (proto.stat_prefix().empty()) return fail("stat_prefix is required", "stat_prefix");
  out.stat_prefix = proto.stat_prefix();
  if (proto.cluster().empty()) return fail("a cluster is required", "cluster");
  out.cluster = proto.cluster();
  if (proto.has_idle_timeout()) {
    auto t = toMillis(proto.idle_timeout(), "idle_timeout");
    if (!t) return std::unexpected(t.error());
    out.idle_timeout = *t;
  }
  auto logs = translateAccessLogs(proto.access_log());
  if (!logs) return std::unexpected(logs.error());
  out.access_logs = std::move(*logs);
  return out;
}

Result<config::FilterChain> translateFilterChain(const listener::FilterChain& proto) {
  config::FilterChain out;
  out.name = proto.name();
  if (proto.has_transport_socket()) {
    return fail("transport sockets (TLS termination) on filter chains are not supported", "transport_socket");
  }
  auto match = translateFilterChainMatch(proto.filter_chain_match());
  if (!match) return std::unexpected(nest("filter_chain_match", match.error()));
  out.match = std::move(*match);
  if (proto.filters_size() == 0) {
    return fail("a filter chain needs one network filter: " + std::string(kHttpConnectionManagerName) + " or " +
                    std::string(kTcpProxyName),
                "filters");
  }
  if (proto.filters_size() > 1) {
    return fail("only one network filter per chain is supported", "filters[1]");
  }
  const auto& filter = proto.filters(0);
  if (!filter.has_typed_config()) return fail("typed_config is required", "filters[0].typed_config");
  if (messageNameOf(filter.typed_config().type_url()) == kTcpProxyMessage) {
    tcp::TcpProxy config;
    if (!filter.typed_config().UnpackTo(&config)) {
      return fail("cannot decode the TcpProxy config", "filters[0].typed_config");
    }
    auto tcp_proxy = translateTcpProxy(config);
    if (!tcp_proxy) return std::unexpected(nest("filters[0].typed_config", tcp_proxy.error()));
    out.tcp_proxy = std::move(*tcp_proxy);
    return out;
  }
  if (messageNameOf(filter.typed_config().type_url()) != kHttpConnectionManagerMessage) {
    return fail("network filter '" + filter.name() + "' (" + filter.typed_config().type_url() +
                    ") is not supported; only " + std::string(kHttpConnectionManagerName) + " and " +
                    std::string(kTcpProxyName) + " are",
                "filters[0].typed_config");
  }
  hcm::HttpConnectionManager config;
  if (!filter.typed_config().UnpackTo(&config)) {
    return fail("cannot decode the HttpConnectionManager config", "filters[0].typed_config");
  }
  auto http = translateHcm(config);
  if (!http) return std::unexpected(nest("filters[0].typed_config", http.error()));
  out.http = std::move(*http);
  return out;
}

Result<config::Endpoint> translateLbEndpoint(const endpoint::LbEndpoint& proto) {
  if (!proto.has_endpoint()) return fail("an endpoint is required", "endpoint");
  if (!proto.endpoint().has_address()) return fail("an address is required", "endpoint.address");
  auto address = translateSocketAddress(proto.endpoint().address(), /*allow_port_zero=*/false);
  if (!address) return std::unexpected(nest("endpoint.address", address.error()));
  config::Endpoint out;
  out.address = *address;
  if (proto.has_load_balancing_weight()) {
    if (proto.load_balancing_weight().value() == 0) return fail("must be at least 1", "load_balancing_weight");
    out.weight = proto.load_balancing_weight().value();
  }
  return out;
}


// --- DNS clusters ---

constexpr std::string_view kCaresResolverMessage = "envoy.extensions.network.dns_resolver.cares.v3.CaresDnsResolverConfig";

// A DNS name as RFC 1123 allows it (letters, digits, '-', '.', '_' for service labels),
// or an IP literal.
bool isResolvableName(const std::string& name) {
  if (name.empty() || name.size() > 253) return false;
  return std::all_of(name.begin(), name.end(), [](unsigned char c) {
    return std::isalnum(c) || c == '-' || c == '.' || c == '_' || c == ':';
  });
}

Result<std::vector<common::SocketAddress>> translateResolvers(
    const google::protobuf::RepeatedPtrField<core::Address>& proto, std::string_view field) {
  std::vector<common::SocketAddress> out;
  for (int i = 0; i < proto.size(); ++i) {
    auto where = indexed(field, i);
    // A resolver's port defaults to 53.
    auto address = translateSocketAddress(proto.Get(i), /*allow_port_zero=*/true);
    if (!address) return std::unexpected(nest(where, address.error()));
    out.push_back(address->port() == 0 ? *common::SocketAddress::parse(address->ip(), 53) : *address);
  }
  return out;
}

void applyResolverOptions(const core::DnsResolverOptions& proto, config::DnsResolution& out) {
  out.use_tcp = proto.use_tcp_for_dns_lookups();
  out.no_default_search_domain = proto.no_default_search_domain();
}

// The resolver: typed_dns_resolver_config wins over dns_resolution_config, which wins
// over dns_resolvers + use_tcp_for_dns_lookups (Envoy's precedence).
Result<void> translateDnsResolver(const cluster::Cluster& proto, config::DnsResolution& out) {
  if (proto.has_typed_dns_resolver_config()) {
    const auto& typed = proto.typed_dns_resolver_config();
    if (messageNameOf(typed.typed_config().type_url()) != kCaresResolverMessage) {
      return fail("DNS resolver '" + typed.name() + "' (" + typed.typed_config().type_url() +
                      ") is not supported; only " + std::string(kCaresResolverMessage) + " is",
                  "typed_dns_resolver_config.typed_config");
    }
    cares::CaresDnsResolverConfig config;
    if (!typed.typed_config().UnpackTo(&config)) {
      return fail("cannot decode the CaresDnsResolverConfig", "typed_dns_resolver_config.typed_config");
    }
    auto where = std::string("typed_dns_resolver_config.typed_config.");
    if (auto u = rejectUnknownFields(config); !u) return std::unexpected(nest(where, u.error()));
    if (config.resolvers_size() == 0) return fail("at least one resolver is required", where + "resolvers");
    if (config.use_resolvers_as_fallback()) {
      return fail("use_resolvers_as_fallback is not supported: the resolvers are used, not /etc/resolv.conf",
                  where + "use_resolvers_as_fallback");
    }
    if (config.filter_unroutable_families()) {
      return fail("filter_unroutable_families is not supported", where + "filter_unroutable_families");
    }
    if (config.has_udp_max_queries() && config.udp_max_queries().value() != 0) {
      return fail("udp_max_queries is not supported (c-ares 1.18 has no such option)", where + "udp_max_queries");
    }
    auto resolvers = translateResolvers(config.resolvers(), "resolvers");
    if (!resolvers) return std::unexpected(nest("typed_dns_resolver_config.typed_config", resolvers.error()));
    out.resolvers = std::move(*resolvers);
    applyResolverOptions(config.dns_resolver_options(), out);
    return {};
  }
  if (proto.has_dns_resolution_config()) {
    const auto& config = proto.dns_resolution_config();
    auto resolvers = translateResolvers(config.resolvers(), "resolvers");
    if (!resolvers) return std::unexpected(nest("dns_resolution_config", resolvers.error()));
    out.resolvers = std::move(*resolvers);
    applyResolverOptions(config.dns_resolver_options(), out);
    return {};
  }
  auto resolvers = translateResolvers(proto.dns_resolvers(), "dns_resolvers");
  if (!resolvers) return std::unexpected(resolvers.error());
  out.resolvers = std::move(*resolvers);
  out.use_tcp = proto.use_tcp_for_dns_lookups();
  return {};
}

// Envoy's grouping: entries naming the same locality at the same priority are one locality,
// their hosts together, weighed by the last of them that names a locality and carries a
// weight (Envoy records weights by locality, so an entry without `locality` adds none).
// Returns each entry's locality index.
std::vector<uint32_t> groupLocalities(const endpoint::ClusterLoadAssignment& proto,
                                      std::vector<config::Locality>& localities) {
  using Key = std::tuple<uint32_t, std::string_view, std::string_view, std::string_view>;
  std::map<Key, uint32_t> index_of;
  std::vector<uint32_t> out;
  out.reserve(static_cast<size_t>(proto.endpoints_size()));
  for (const auto& entry : proto.endpoints()) {
    const auto& name = entry.locality();
    auto [it, added] = index_of.try_emplace(Key{entry.priority(), name.region(), name.zone(), name.sub_zone()},
                                            static_cast<uint32_t>(localities.size()));
    if (added) localities.push_back({0, entry.priority(), 0});
    auto& locality = localities[it->second];
    locality.hosts += static_cast<uint32_t>(entry.lb_endpoints_size());
    if (entry.has_locality() && entry.has_load_balancing_weight()) locality.weight = entry.load_balancing_weight().value();
    out.push_back(it->second);
  }
  return out;
}

// Envoy's validation: a locality's weight is at least 1, and a priority's weights sum
// to at most UINT32_MAX.
Result<void> checkLocalityWeights(const endpoint::ClusterLoadAssignment& proto) {
  std::map<uint32_t, uint64_t> weight_per_priority;
  for (int i = 0; i < proto.endpoints_size(); ++i) {
    const auto& locality = proto.endpoints(i);
    if (!locality.has_load_balancing_weight()) continue;
    if (locality.load_balancing_weight().value() == 0) {
      return fail("must be at least 1", indexed("endpoints", i) + ".load_balancing_weight");
    }
    uint64_t& sum = weight_per_priority[locality.priority()];
    sum += locality.load_balancing_weight().value();
    if (sum > UINT32_MAX) {
      return fail("the localities of one priority have weights summing past 4294967295",
                  indexed("endpoints", i) + ".load_balancing_weight");
    }
  }
  return {};
}

Result<config::DnsResolution::Target> translateDnsTarget(const endpoint::LbEndpoint& proto) {
  if (!proto.has_endpoint() || !proto.endpoint().has_address()) return fail("an address is required", "endpoint.address");
  const auto& address = proto.endpoint().address();
  if (!address.has_socket_address()) return fail("a socket_address is required", "endpoint.address.socket_address");
  const auto& sa = address.socket_address();
  auto where = std::string("endpoint.address.socket_address.");
  if (sa.protocol() != core::SocketAddress::TCP) return fail("only TCP is supported", where + "protocol");
  if (!sa.resolver_name().empty()) return fail("custom resolvers are not supported", where + "resolver_name");
  if (sa.ipv4_compat()) return fail("ipv4_compat is not supported", where + "ipv4_compat");
  if (sa.has_named_port()) return fail("named ports are not supported", where + "named_port");
  if (sa.port_value() == 0 || sa.port_value() > 65535) return fail("a port in 1..65535 is required", where + "port_value");
  if (!isResolvableName(sa.address())) {
    return fail("'" + sa.address() + "' is not a DNS name or IP address", where + "address");
  }
  config::DnsResolution::Target out;
  out.hostname = sa.address();
  out.port = static_cast<uint16_t>(sa.port_value());
  if (proto.has_load_balancing_weight()) {
    if (proto.load_balancing_weight().value() == 0) return fail("must be at least 1", "load_balancing_weight");
    out.weight = proto.load_balancing_weight().value();
  }
  return out;
}

// STRICT_DNS / LOGICAL_DNS: the hostnames to resolve and how, and the load_assignment's
// localities (their `hosts` stay 0: what a locality holds is what its names resolve to).
Result<config::DnsResolution> translateDnsResolution(const cluster::Cluster& proto, bool logical,
                                                     std::vector<config::Locality>& localities) {
  config::DnsResolution out;
  if (proto.has_dns_refresh_rate()) {
    auto t = toMillis(proto.dns_refresh_rate(), "dns_refresh_rate");
    if (!t) return std::unexpected(t.error());
    if (t->count() <= 1) return fail("must be more than 1ms", "dns_refresh_rate");
    out.refresh_rate = *t;
  }
  if (proto.has_dns_failure_refresh_rate()) {
    const auto& rate = proto.dns_failure_refresh_rate();
    if (!rate.has_base_interval()) return fail("base_interval is required", "dns_failure_refresh_rate.base_interval");
    auto base = toMillis(rate.base_interval(), "dns_failure_refresh_rate.base_interval");
    if (!base) return std::unexpected(base.error());
    if (base->count() <= 1) return fail("must be more than 1ms", "dns_failure_refresh_rate.base_interval");
    out.failure_base_interval = *base;
    out.failure_max_interval = *base * 10;
    if (rate.has_max_interval()) {
      auto max = toMillis(rate.max_interval(), "dns_failure_refresh_rate.max_interval");
      if (!max) return std::unexpected(max.error());
      if (*max < *base) return fail("must be at least base_interval", "dns_failure_refresh_rate.max_interval");
      out.failure_max_interval = *max;
    }
  }
  out.respect_dns_ttl = proto.respect_dns_ttl();
  switch (proto.dns_lookup_family()) {
    case cluster::Cluster::AUTO: out.lookup_family = config::DnsResolution::LookupFamily::Auto; break;
    case cluster::Cluster::V4_ONLY: out.lookup_family = config::DnsResolution::LookupFamily::V4Only; break;
    case cluster::Cluster::V6_ONLY: out.lookup_family = config::DnsResolution::LookupFamily::V6Only; break;
    case cluster::Cluster::V4_PREFERRED: out.lookup_family = config::DnsResolution::LookupFamily::V4Preferred; break;
    case cluster::Cluster::ALL: out.lookup_family = config::DnsResolution::LookupFamily::All; break;
    default: return fail("unknown dns_lookup_family", "dns_lookup_family");
  }
  if (auto ok = translateDnsResolver(proto, out); !ok) return std::unexpected(ok.error());
  if (proto.has_wait_for_warm_on_init() && proto.wait_for_warm_on_init().value()) {
    return fail("wait_for_warm_on_init true is not supported: a DNS cluster is published before its first answer "
                "(requests meanwhile get 503); leave it unset or false",
                "wait_for_warm_on_init");
  }

  const auto& cla = proto.load_assignment();
  if (auto u = rejectUnknownFields(cla); !u) return std::unexpected(nest("load_assignment", u.error()));
  std::set<uint32_t> priorities;
  for (const auto& locality : cla.endpoints()) priorities.insert(locality.priority());
  if (!priorities.empty() && *priorities.rbegin() + 1 != priorities.size()) {
    return fail("priorities must run from 0 without gaps", "load_assignment.endpoints");
  }
  if (auto ok = checkLocalityWeights(cla); !ok) return std::unexpected(nest("load_assignment", ok.error()));
  // Each resolved address inherits the locality of the entry its name came from (Envoy's
  // DNS clusters register every host with its LocalityLbEndpoints).
  const auto locality_of = groupLocalities(cla, localities);
  for (auto& locality : localities) locality.hosts = 0;
  for (int i = 0; i < cla.endpoints_size(); ++i) {
    const auto& locality = cla.endpoints(i);
    for (int j = 0; j < locality.lb_endpoints_size(); ++j) {
      const auto& lb = locality.lb_endpoints(j);
      auto where = "load_assignment." + indexed("endpoints", i) + "." + indexed("lb_endpoints", j);
      switch (lb.health_status()) {
        case core::UNHEALTHY:
        case core::DRAINING:
        case core::TIMEOUT:
          continue;
        case core::DEGRADED:
          return fail("DEGRADED endpoints are not supported", where + ".health_status");
        default:
          break;
      }
      auto target = translateDnsTarget(lb);
      if (!target) return std::unexpected(nest(where, target.error()));
      target->priority = locality.priority();
      target->locality = locality_of[static_cast<size_t>(i)];
      out.targets.push_back(std::move(*target));
    }
  }
  // Envoy's rule: a LOGICAL_DNS cluster is one logical host.
  if (logical && (cla.endpoints_size() != 1 || cla.endpoints(0).lb_endpoints_size() != 1)) {
    return fail("a LOGICAL_DNS cluster needs exactly one locality with exactly one lb_endpoint", "load_assignment");
  }
  return out;
}

}  // namespace

Result<config::Listener> translateListener(const listener::Listener& proto) {
  if (auto u = rejectUnknownFields(proto); !u) return std::unexpected(u.error());
  config::Listener out;
  if (proto.name().empty()) return fail("a listener needs a name", "name");
  out.name = proto.name();
  if (proto.has_use_original_dst() && proto.use_original_dst().value()) {
    return fail("use_original_dst is not supported: culvert's in-pod listener already delivers the original "
                "destination; use virtual listeners (bind_to_port: false) per destination",
                "use_original_dst");
  }
  if (proto.has_transparent() && proto.transparent().value()) {
    return fail("transparent listeners are not supported", "transparent");
  }
  if (proto.has_freebind() && proto.freebind().value()) return fail("freebind is not supported", "freebind");
  if (proto.has_default_filter_chain()) return fail("default_filter_chain is not supported yet", "default_filter_chain");
  out.bind_to_port = proto.has_bind_to_port() ? proto.bind_to_port().value() : true;
  if (!proto.has_address()) return fail("an address is required", "address");
  // A binding listener may ask for an ephemeral port; a capture selector needs a real one.
  auto address = translateSocketAddress(proto.address(), /*allow_port_zero=*/out.bind_to_port);
  if (!address) return std::unexpected(nest("address", address.error()));
  out.address = *address;
  if (proto.filter_chains_size() == 0) return fail("at least one filter chain is required", "filter_chains");
  std::set<std::string> matches;
  for (int i = 0; i < proto.filter_chains_size(); ++i) {
    auto chain = translateFilterChain(proto.filter_chains(i));
    if (!chain) return std::unexpected(nest(indexed("filter_chains", i), chain.error()));
    if (!matches.insert(matchKey(chain->match)).second) {
      return fail("another filter chain has the same filter_chain_match",
                  indexed("filter_chains", i) + ".filter_chain_match");
    }
    out.filter_chains.push_back(std::move(*chain));
  }
  return out;
}

Result<config::RouteConfiguration> translateRouteConfiguration(const route::RouteConfiguration& proto) {
  if (auto u = rejectUnknownFields(proto); !u) return std::unexpected(u.error());
  return translateRouteConfigurationChecked(proto);
}

Result<config::Cluster> translateCluster(const cluster::Cluster& proto) {
  if (auto u = rejectUnknownFields(proto); !u) return std::unexpected(u.error());
  config::Cluster out;
  if (proto.name().empty()) return fail("a cluster needs a name", "name");
  out.name = proto.name();
  switch (proto.type()) {
    case cluster::Cluster::STATIC:
      out.type = config::ClusterType::Static;
      break;
    case cluster::Cluster::EDS:
      out.type = config::ClusterType::Eds;
      out.eds_service_name = proto.eds_cluster_config().service_name().empty()
                                 ? proto.name()
                                 : proto.eds_cluster_config().service_name();
      break;
    case cluster::Cluster::ORIGINAL_DST:
      out.type = config::ClusterType::OriginalDst;
      // Envoy's rule: the cluster itself provides the host (the connection's original
      // destination), so no other load balancer applies.
      if (proto.lb_policy() != cluster::Cluster::CLUSTER_PROVIDED) {
        return fail("an ORIGINAL_DST cluster needs lb_policy CLUSTER_PROVIDED", "lb_policy");
      }
      if (proto.has_load_assignment()) {
        return fail("an ORIGINAL_DST cluster takes no load_assignment", "load_assignment");
      }
      break;
    case cluster::Cluster::STRICT_DNS:
    case cluster::Cluster::LOGICAL_DNS: {
      const bool logical = proto.type() == cluster::Cluster::LOGICAL_DNS;
      out.type = logical ? config::ClusterType::LogicalDns : config::ClusterType::StrictDns;
      auto dns = translateDnsResolution(proto, logical, out.localities);
      if (!dns) return std::unexpected(dns.error());
      out.dns = std::move(*dns);
      break;
    }
    default:
      return fail("cluster type " + cluster::Cluster::DiscoveryType_Name(proto.type()) + " is not supported", "type");
  }
  if (auto policies = translateUpstreamPolicies(proto, out); !policies) return std::unexpected(policies.error());
  if (proto.has_connect_timeout()) {
    auto t = toMillis(proto.connect_timeout(), "connect_timeout");
    if (!t) return std::unexpected(t.error());
    if (t->count() <= 0) return fail("must be at least 1ms", "connect_timeout");
    out.connect_timeout = *t;
  }
  if (proto.has_transport_socket()) {
    return fail("upstream transport sockets (TLS) are not supported", "transport_socket");
  }
  bool max_requests_set = false;
  if (!proto.typed_extension_protocol_options().empty()) {
    // Sorted for a stable message.
    std::set<std::string> keys;
    for (const auto& [key, value] : proto.typed_extension_protocol_options()) keys.insert(key);
    for (const auto& key : keys) {
      // culvert.v1.ClusterExtensions: translateUpstreamPolicies; anything else is rejected there.
      if (key != kHttpProtocolOptionsName) continue;
      auto where = "typed_extension_protocol_options[\"" + key + "\"]";
      auto options = translateHttpProtocolOptions(proto.typed_extension_protocol_options().at(key));
      if (!options) return std::unexpected(nest(where, options.error()));
      out.http_protocol = options->protocol;
      out.connection_lifetime = options->lifetime;
      max_requests_set = options->max_requests_set;
    }
  }
  // Envoy's deprecated Cluster.max_requests_per_connection: used when the protocol
  // options do not set theirs.
  if (proto.has_max_requests_per_connection() && !max_requests_set) {
    out.connection_lifetime.max_requests = proto.max_requests_per_connection().value();
  }
  // Envoy ignores load_assignment on EDS clusters; so does culvert.
  if (out.type == config::ClusterType::Static && proto.has_load_assignment()) {
    auto assignment = translateClusterLoadAssignment(proto.load_assignment());
    if (!assignment) return std::unexpected(nest("load_assignment", assignment.error()));
    out.endpoints = std::move(assignment->endpoints);
    out.localities = std::move(assignment->localities);
  }
  return out;
}

namespace {

std::set<std::string> messageFieldNames(const google::protobuf::Descriptor* type) {
  std::set<std::string> out;
  for (int i = 0; i < type->field_count(); ++i) {
    if (type->field(i)->cpp_type() == google::protobuf::FieldDescriptor::CPPTYPE_MESSAGE) {
      out.insert(type->field(i)->name());
    }
  }
  return out;
}

// Whether the endpoint messages have exactly the message fields cleanInCommonShape
// checks: a field added to the proto subset later turns the fast path off rather than
// letting its unknown fields through.
bool commonShapeIsCurrent() {
  static const bool current = [] {
    using Names = std::set<std::string>;
    return messageFieldNames(endpoint::ClusterLoadAssignment::descriptor()) == Names{"endpoints"} &&
           messageFieldNames(endpoint::LocalityLbEndpoints::descriptor()) ==
               Names{"locality", "lb_endpoints", "load_balancing_weight"} &&
           messageFieldNames(endpoint::LbEndpoint::descriptor()) == Names{"endpoint", "metadata", "load_balancing_weight"} &&
           messageFieldNames(endpoint::Endpoint::descriptor()) == Names{"address"} &&
           messageFieldNames(core::Address::descriptor()) == Names{"socket_address", "pipe", "envoy_internal_address"} &&
           messageFieldNames(core::SocketAddress::descriptor()).empty() &&
           messageFieldNames(core::Locality::descriptor()).empty() &&
           messageFieldNames(google::protobuf::UInt32Value::descriptor()).empty();
  }();
  return current;
}

// True when no message of the assignment has unknown fields, checked through generated
// accessors. The reflective walk (rejectUnknownFields) was most of a 10,000-endpoint
// update's cost. False — the caller then runs that walk, which also names the field —
// on any unknown field and on parts this does not look into (metadata, a pipe or
// internal address).
bool cleanInCommonShape(const endpoint::ClusterLoadAssignment& proto) {
  if (!commonShapeIsCurrent()) return false;
  // Generated messages of protobuf 3.21 have no public unknown_fields(); each type's
  // Reflection is fetched once (GetReflection() runs a thread-local call_once per call).
  auto clean = []<typename M>(const M& m) {
    static const google::protobuf::Reflection* const reflection = M::GetReflection();
    return reflection->GetUnknownFields(m).empty();
  };
  if (!clean(proto)) return false;
  for (const auto& locality : proto.endpoints()) {
    if (!clean(locality)) return false;
    if (locality.has_locality() && !clean(locality.locality())) return false;
    if (locality.has_load_balancing_weight() && !clean(locality.load_balancing_weight())) return false;
    for (const auto& lb : locality.lb_endpoints()) {
      if (!clean(lb) || lb.has_metadata()) return false;
      if (lb.has_load_balancing_weight() && !clean(lb.load_balancing_weight())) return false;
      if (!lb.has_endpoint()) continue;
      const auto& e = lb.endpoint();
      if (!clean(e)) return false;
      if (!e.has_address()) continue;
      const auto& a = e.address();
      if (!clean(a) || a.has_pipe() || a.has_envoy_internal_address()) return false;
      if (a.has_socket_address() && !clean(a.socket_address())) return false;
    }
  }
  return true;
}

}  // namespace

Result<config::LoadAssignment> translateClusterLoadAssignment(const endpoint::ClusterLoadAssignment& proto) {
  if (!cleanInCommonShape(proto)) {
    if (auto u = rejectUnknownFields(proto); !u) return std::unexpected(u.error());
  }
  config::LoadAssignment out;
  std::vector<config::Endpoint> endpoints;
  size_t total = 0;
  for (const auto& locality : proto.endpoints()) total += static_cast<size_t>(locality.lb_endpoints_size());
  endpoints.reserve(total);
  out.localities.reserve(static_cast<size_t>(proto.endpoints_size()));
  // Envoy's rule: priorities run from 0 without gaps.
  std::set<uint32_t> priorities;
  for (const auto& locality : proto.endpoints()) priorities.insert(locality.priority());
  if (!priorities.empty() && *priorities.rbegin() + 1 != priorities.size()) {
    return fail("priorities must run from 0 without gaps", "endpoints");
  }
  if (auto ok = checkLocalityWeights(proto); !ok) return std::unexpected(ok.error());
  const auto locality_of = groupLocalities(proto, out.localities);
  for (int i = 0; i < proto.endpoints_size(); ++i) {
    const auto& locality = proto.endpoints(i);
    auto where = indexed("endpoints", i);
    for (int j = 0; j < locality.lb_endpoints_size(); ++j) {
      const auto& lb = locality.lb_endpoints(j);
      // Built only for an error: no allocation per endpoint on the success path.
      auto lb_where = [&] { return where + "." + indexed("lb_endpoints", j); };
      switch (lb.health_status()) {
        case core::UNHEALTHY:
        case core::DRAINING:
        case core::TIMEOUT:
          continue;
        case core::DEGRADED:
          return fail("DEGRADED endpoints are not supported", lb_where() + ".health_status");
        default:
          break;
      }
      auto ep = translateLbEndpoint(lb);
      if (!ep) return std::unexpected(nest(lb_where(), ep.error()));
      ep->priority = locality.priority();
      ep->locality = locality_of[static_cast<size_t>(i)];
      endpoints.push_back(*ep);
    }
  }
  out.endpoints = std::move(endpoints);
  return out;
}

}  // namespace culvert::xds::translate
