#include "proxy/router/route_matcher.h"

#include <algorithm>
#include <cctype>
#include <string>

namespace culvert::router {

namespace {

std::string lowerHost(std::string_view authority) {
  std::string host(authority);
  std::transform(host.begin(), host.end(), host.begin(),
                 [](unsigned char c) { return static_cast<char>(std::tolower(c)); });
  return host;
}

std::string_view stripPort(std::string_view host) {
  if (!host.empty() && host.front() == '[') {
    auto close = host.find(']');
    return close == std::string_view::npos ? host : host.substr(0, close + 1);
  }
  auto colon = host.rfind(':');
  return colon == std::string_view::npos ? host : host.substr(0, colon);
}

bool equalsIgnoreCase(std::string_view a, std::string_view b) {
  return a.size() == b.size() &&
         std::equal(a.begin(), a.end(), b.begin(), [](char x, char y) {
           return std::tolower(static_cast<unsigned char>(x)) == std::tolower(static_cast<unsigned char>(y));
         });
}

bool pathMatches(const config::RouteMatch& m, std::string_view path) {
  // The query string never takes part in prefix or path matching.
  auto q = path.find('?');
  std::string_view p = q == std::string_view::npos ? path : path.substr(0, q);
  if (m.path) return m.case_sensitive ? p == *m.path : equalsIgnoreCase(p, *m.path);
  if (m.prefix) {
    if (p.size() < m.prefix->size()) return false;
    auto head = p.substr(0, m.prefix->size());
    return m.case_sensitive ? head == *m.prefix : equalsIgnoreCase(head, *m.prefix);
  }
  return false;
}

bool headersMatch(const std::vector<config::HeaderMatcher>& matchers, const http::HeaderMap& headers) {
  for (const auto& hm : matchers) {
    auto value = headers.get(hm.name);
    bool ok;
    if (hm.exact_match) {
      ok = value && *value == *hm.exact_match;
    } else {
      ok = value.has_value();  // present_match, or a bare name
    }
    if (ok == hm.invert_match) return false;
  }
  return true;
}

}  // namespace

const config::VirtualHost* selectVirtualHost(const config::RouteConfiguration& routes, std::string_view authority) {
  std::string full = lowerHost(authority);
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

const config::Route* selectRoute(const config::VirtualHost& vhost, std::string_view path, const http::HeaderMap& headers) {
  for (const auto& route : vhost.routes) {
    if (pathMatches(route.match, path) && headersMatch(route.match.headers, headers)) return &route;
  }
  return nullptr;
}

const config::Route* matchRoute(const config::RouteConfiguration& routes, std::string_view authority,
                                std::string_view path, const http::HeaderMap& headers) {
  const auto* vhost = selectVirtualHost(routes, authority);
  return vhost ? selectRoute(*vhost, path, headers) : nullptr;
}

}  // namespace culvert::router
