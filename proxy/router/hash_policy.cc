#include "proxy/router/hash_policy.h"

#include "proxy/common/xxhash64.h"

namespace culvert::router {

namespace {

std::string_view trim(std::string_view s) {
  while (!s.empty() && (s.front() == ' ' || s.front() == '\t')) s.remove_prefix(1);
  while (!s.empty() && (s.back() == ' ' || s.back() == '\t')) s.remove_suffix(1);
  return s;
}

}  // namespace

std::optional<std::string_view> findCookie(const http::HeaderMap& headers, std::string_view name) {
  for (const auto& [key, value] : headers.entries()) {
    if (key != "cookie") continue;
    std::string_view rest = value;
    while (!rest.empty()) {
      auto semi = rest.find(';');
      std::string_view pair = trim(rest.substr(0, semi));
      rest = semi == std::string_view::npos ? std::string_view{} : rest.substr(semi + 1);
      auto eq = pair.find('=');
      if (eq == std::string_view::npos || trim(pair.substr(0, eq)) != name) continue;
      std::string_view v = trim(pair.substr(eq + 1));
      if (v.size() >= 2 && v.front() == '"' && v.back() == '"') v = v.substr(1, v.size() - 2);
      return v;
    }
  }
  return std::nullopt;
}

std::optional<uint64_t> hashRequest(const std::vector<config::HashPolicy>& policies, const http::HeaderMap& headers,
                                    std::string_view source_ip) {
  std::optional<uint64_t> hash;
  for (const auto& policy : policies) {
    std::optional<std::string_view> input;
    switch (policy.kind) {
      case config::HashPolicy::Kind::Header:
        input = headers.get(policy.name);
        break;
      case config::HashPolicy::Kind::Cookie:
        input = findCookie(headers, policy.name);
        break;
      case config::HashPolicy::Kind::SourceIp:
        if (!source_ip.empty()) input = source_ip;
        break;
    }
    if (input) {
      uint64_t value = common::xxHash64(*input);
      hash = hash ? (((*hash << 1) | (*hash >> 63)) ^ value) : value;
    }
    if (policy.terminal && hash) break;
  }
  return hash;
}

}  // namespace culvert::router
