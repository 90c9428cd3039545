#include "proxy/router/upgrade.h"

#include "proxy/common/ascii.h"

namespace culvert::router {

namespace {

std::string_view trim(std::string_view text) {
  while (!text.empty() && (text.front() == ' ' || text.front() == '\t')) text.remove_prefix(1);
  while (!text.empty() && (text.back() == ' ' || text.back() == '\t')) text.remove_suffix(1);
  return text;
}

// Whether a comma-separated Connection header (any of its lines) carries `token`.
bool connectionHas(const http::HeaderMap& headers, std::string_view token) {
  for (const auto& [name, value] : headers.entries()) {
    if (name != "connection") continue;
    std::string_view rest = value;
    while (!rest.empty()) {
      auto comma = rest.find(',');
      if (common::lowerAscii(trim(rest.substr(0, comma))) == token) return true;
      if (comma == std::string_view::npos) break;
      rest.remove_prefix(comma + 1);
    }
  }
  return false;
}

const config::UpgradeConfig* find(std::span<const config::UpgradeConfig> configs, std::string_view type) {
  for (const auto& config : configs) {
    if (config.upgrade_type == type) return &config;
  }
  return nullptr;
}

}  // namespace

std::optional<std::string> requestedUpgrade(const http::RequestHead& request) {
  if (request.method == "CONNECT") return "connect";
  auto upgrade = request.headers.get("upgrade");
  if (!upgrade || !connectionHas(request.headers, "upgrade")) return std::nullopt;
  std::string type = common::lowerAscii(trim(*upgrade));
  if (type.empty()) return std::nullopt;
  return type;
}

UpgradeAction decideUpgrade(std::span<const config::UpgradeConfig> connection_manager,
                            const config::RouteAction* route, std::string_view type) {
  const auto* listed = find(connection_manager, type);
  if (listed == nullptr) return UpgradeAction::Reject;
  bool enabled = listed->enabled;
  bool terminate = false;
  if (route != nullptr) {
    if (const auto* override = find(route->upgrade_configs, type)) {
      enabled = override->enabled;
      terminate = override->terminate_connect;
    }
  }
  if (!enabled) return UpgradeAction::Reject;
  return terminate ? UpgradeAction::TerminateConnect : UpgradeAction::Forward;
}

}  // namespace culvert::router
