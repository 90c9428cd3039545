#include "proxy/server/listener_index.h"

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

const config::FilterChain* selectFilterChain(const config::Listener& listener, const common::SocketAddress& dst) {
  const config::FilterChain* best = nullptr;
  int best_prefix = -1;
  bool best_port = false;
  for (const auto& chain : listener.filter_chains) {
    const auto& m = chain.match;
    if (m.destination_port && *m.destination_port != dst.port()) continue;
    // Server names and transport protocol need a sniffed ClientHello; a plain-text
    // connection only matches chains that do not ask for them.
    if (!m.server_names.empty() || (m.transport_protocol != "" && m.transport_protocol != "raw_buffer")) continue;
    int prefix = m.prefix_ranges.empty() ? 0 : -1;
    for (const auto& range : m.prefix_ranges) {
      if (range.contains(dst) && static_cast<int>(range.length) > prefix) prefix = static_cast<int>(range.length);
    }
    if (prefix < 0) continue;
    bool port = m.destination_port.has_value();
    // Envoy's order: an exact destination port outranks any prefix, then the longest prefix.
    if ((port && !best_port) || (port == best_port && prefix > best_prefix)) {
      best = &chain;
      best_prefix = prefix;
      best_port = port;
    }
  }
  return best;
}

}  // namespace culvert::server
