#include "proxy/router/route_matcher.h"

#include <charconv>
#include <optional>
#include <string>

#include "proxy/common/ascii.h"

namespace culvert::router {

namespace {

std::string_view stripPort(std::string_view host) {
  if (!host.empty() && host.front() == '[') {
    auto close = host.find(']');
    return close == std::string_view::npos ? host : host.substr(0, close + 1);
  }
  auto colon = host.rfind(':');
  return colon == std::string_view::npos ? host : host.substr(0, colon);
}

bool startsWithIgnoreCase(std::string_view text, std::string_view prefix) {
  return text.size() >= prefix.size() && common::equalsIgnoreCaseAscii(text.substr(0, prefix.size()), prefix);
}

std::string_view pathOnly(std::string_view path) {
  auto q = path.find('?');
  return q == std::string_view::npos ? path : path.substr(0, q);
}

bool pathMatches(const config::RouteMatch& m, std::string_view path) {
  // The query string never takes part in path matching.
  std::string_view p = pathOnly(path);
  if (m.path) return m.case_sensitive ? p == *m.path : common::equalsIgnoreCaseAscii(p, *m.path);
  if (m.prefix) return m.case_sensitive ? p.starts_with(*m.prefix) : startsWithIgnoreCase(p, *m.prefix);
  if (m.safe_regex) return m.safe_regex->fullMatch(p);
  return false;
}

// Envoy matches a header that appears more than once against its values joined by ','.
std::optional<std::string> joinedHeader(const http::HeaderMap& headers, std::string_view name) {
  std::optional<std::string> out;
  for (const auto& [k, v] : headers.entries()) {
    if (k != name) continue;
    if (out) {
      *out += ',';
      *out += v;
    } else {
      out = v;
    }
  }
  return out;
}

bool rangeMatches(const config::Int64Range& range, std::string_view value) {
  int64_t n = 0;
  auto [end, ec] = std::from_chars(value.data(), value.data() + value.size(), n);
  if (ec != std::errc() || end != value.data() + value.size()) return false;
  return n >= range.start && n < range.end;
}

bool headersMatch(const std::vector<config::HeaderMatcher>& matchers, const http::HeaderMap& headers) {
  for (const auto& hm : matchers) {
    if (!matchesHeader(hm, headers)) return false;
  }
  return true;
}

}  // namespace

bool matchesHeader(const config::HeaderMatcher& hm, const http::HeaderMap& headers) {
  auto value = joinedHeader(headers, hm.name);
  bool ok;
  if (hm.string_match) {
    ok = value && matchesString(*hm.string_match, *value);
  } else if (hm.range_match) {
    ok = value && rangeMatches(*hm.range_match, *value);
  } else {
    ok = value.has_value();  // present_match, or a bare name
  }
  return ok != hm.invert_match;
}

namespace {

// The first value of `name` in the query string, undecoded (as Envoy matches it); an
// empty value for a bare "name".
std::optional<std::string_view> queryParameter(std::string_view query, std::string_view name) {
  while (!query.empty()) {
    auto amp = query.find('&');
    std::string_view pair = query.substr(0, amp);
    query = amp == std::string_view::npos ? std::string_view{} : query.substr(amp + 1);
    auto eq = pair.find('=');
    std::string_view key = pair.substr(0, eq);
    if (key == name) return eq == std::string_view::npos ? std::string_view{} : pair.substr(eq + 1);
  }
  return std::nullopt;
}

bool queryParametersMatch(const std::vector<config::QueryParameterMatcher>& matchers, std::string_view path) {
  if (matchers.empty()) return true;
  auto q = path.find('?');
  std::string_view query = q == std::string_view::npos ? std::string_view{} : path.substr(q + 1);
  if (auto hash = query.find('#'); hash != std::string_view::npos) query = query.substr(0, hash);
  for (const auto& qm : matchers) {
    auto value = queryParameter(query, qm.name);
    if (!value) return false;
    if (qm.string_match && !matchesString(*qm.string_match, *value)) return false;
  }
  return true;
}

}  // namespace

bool matchesString(const config::StringMatcher& m, std::string_view value) {
  using Kind = config::StringMatcher::Kind;
  if (m.kind == Kind::Regex) return m.regex->fullMatch(value);
  if (!m.ignore_case) {
    switch (m.kind) {
      case Kind::Exact: return value == m.value;
      case Kind::Prefix: return value.starts_with(m.value);
      case Kind::Suffix: return value.ends_with(m.value);
      case Kind::Contains: return value.find(m.value) != std::string_view::npos;
      case Kind::Regex: break;
    }
    return false;
  }
  // m.value is lower-case already (translate).
  std::string lowered = common::lowerAscii(value);
  std::string_view v = lowered;
  switch (m.kind) {
    case Kind::Exact: return v == m.value;
    case Kind::Prefix: return v.starts_with(m.value);
    case Kind::Suffix: return v.ends_with(m.value);
    case Kind::Contains: return v.find(m.value) != std::string_view::npos;
    case Kind::Regex: break;
  }
  return false;
}

const config::VirtualHost* selectVirtualHost(const config::RouteConfiguration& routes, std::string_view authority) {
  std::string full = common::lowerAscii(authority);
  std::string_view host = stripPort(full);
  const config::VirtualHost* suffix_best = nullptr;
  size_t suffix_len = 0;
  const config::VirtualHost* prefix_best = nullptr;
  size_t prefix_len = 0;
  const config::VirtualHost* any = nullptr;
  for (const auto& vh : routes.virtual_hosts) {
    for (const auto& domain : vh.domains) {
      if (domain == host || domain == full) return &vh;
      if (domain == "*") {
        if (!any) any = &vh;
      } else if (domain.starts_with("*")) {
        std::string_view suffix = std::string_view(domain).substr(1);
        if (host.size() > suffix.size() && host.ends_with(suffix) && suffix.size() > suffix_len) {
          suffix_best = &vh;
          suffix_len = suffix.size();
        }
      } else if (domain.ends_with("*")) {
        std::string_view prefix = std::string_view(domain).substr(0, domain.size() - 1);
        if (host.size() > prefix.size() && host.starts_with(prefix) && prefix.size() > prefix_len) {
          prefix_best = &vh;
          prefix_len = prefix.size();
        }
      }
    }
  }
  if (suffix_best) return suffix_best;
  if (prefix_best) return prefix_best;
  return any;
}

const config::Route* selectRoute(const config::VirtualHost& vhost, std::string_view path, const http::HeaderMap& headers,
                                 bool connect) {
  for (const auto& route : vhost.routes) {
    if (route.match.connect_matcher != connect) continue;
    if (connect ? headersMatch(route.match.headers, headers)
                : pathMatches(route.match, path) && headersMatch(route.match.headers, headers) &&
        queryParametersMatch(route.match.query_parameters, path)) {
      return &route;
    }
  }
  return nullptr;
}

const config::Route* matchRoute(const config::RouteConfiguration& routes, std::string_view authority,
                                std::string_view path, const http::HeaderMap& headers) {
  const auto* vhost = selectVirtualHost(routes, authority);
  return vhost ? selectRoute(*vhost, path, headers) : nullptr;
}

}  // namespace culvert::router
