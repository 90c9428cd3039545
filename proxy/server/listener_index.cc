#include "proxy/server/listener_index.h"

#include <algorithm>
#include <tuple>

namespace culvert::server {

VirtualListenerIndex::VirtualListenerIndex(const config::ListenerTable& listeners) {
  for (const auto& [name, listener] : listeners.by_name) {
    if (listener->bind_to_port) continue;
    const auto& a = listener->address;
    if (a.isAnyAddress()) {
      any_ip_[{a.family(), a.port()}] = listener.get();
    } else {
      exact_[{a.ip(), a.port()}] = listener.get();
    }
  }
}

const config::Listener* VirtualListenerIndex::find(const common::SocketAddress& dst) const {
  if (auto it = exact_.find({dst.ip(), dst.port()}); it != exact_.end()) return it->second;
  if (auto it = any_ip_.find({dst.family(), dst.port()}); it != any_ip_.end()) return it->second;
  return nullptr;
}

std::vector<common::SocketAddress> VirtualListenerIndex::capturedDestinations() const {
  std::vector<common::SocketAddress> out;
  for (const auto& [key, listener] : exact_) out.push_back(listener->address);
  for (const auto& [key, listener] : any_ip_) out.push_back(listener->address);
  return out;
}

namespace {

// How well `server_name` matches a chain's server_names: 0 = no names (any), -1 = no
// match, else higher for more specific (exact beats the longest wildcard suffix).
int serverNameScore(const std::vector<std::string>& names, const std::string& server_name) {
  if (names.empty()) return 0;
  int best = -1;
  for (const auto& n : names) {
    if (n == server_name) return 100000;
    if (n.starts_with("*.") && server_name.size() > n.size() - 1 && server_name.ends_with(n.substr(1))) {
      best = std::max(best, static_cast<int>(n.size()));
    }
  }
  return best;
}

}  // namespace

const config::FilterChain* selectFilterChain(const config::Listener& listener, const common::SocketAddress& dst,
                                             const network::SniffResult* sniffed) {
  const config::FilterChain* best = nullptr;
  // Envoy's order: destination port, destination prefix length, server name, transport
  // protocol; then (culvert) the chain kind that fits the sniffed bytes.
  std::tuple<bool, int, int, bool, bool> best_rank{};
  for (const auto& chain : listener.filter_chains) {
    const auto& m = chain.match;
    if (m.destination_port && *m.destination_port != dst.port()) continue;
    int prefix = m.prefix_ranges.empty() ? 0 : -1;
    for (const auto& range : m.prefix_ranges) {
      if (range.contains(dst) && static_cast<int>(range.length) > prefix) prefix = static_cast<int>(range.length);
    }
    if (prefix < 0) continue;
    int name_score = 0;
    bool transport_set = !m.transport_protocol.empty();
    if (sniffed == nullptr) {
      // Without the first bytes, chains that need them cannot match.
      if (!m.server_names.empty() || (transport_set && m.transport_protocol != "raw_buffer")) continue;
    } else {
      name_score = serverNameScore(m.server_names, sniffed->server_name);
      if (name_score < 0) continue;
      if (transport_set && m.transport_protocol != sniffed->transport_protocol) continue;
    }
    bool kind_fits = sniffed == nullptr || chain.isHttp() == (sniffed->http && sniffed->transport_protocol != "tls");
    std::tuple<bool, int, int, bool, bool> rank{m.destination_port.has_value(), prefix, name_score, transport_set,
                                                kind_fits};
    if (best == nullptr || rank > best_rank) {
      best = &chain;
      best_rank = rank;
    }
  }
  return best;
}

bool needsSniffing(const config::Listener& listener) {
  bool http = false;
  bool tcp = false;
  for (const auto& chain : listener.filter_chains) {
    if (!chain.match.server_names.empty() || !chain.match.transport_protocol.empty()) return true;
    (chain.isHttp() ? http : tcp) = true;
  }
  return http && tcp;
}

}  // namespace culvert::server
