#pragma once

#include <map>
#include <memory>
#include <tuple>
#include <vector>

#include "proxy/config/snapshot.h"
#include "proxy/network/sniffer.h"

namespace culvert::server {

// Finds the virtual listener (bind_to_port: false) for a captured connection's original
// destination: the exact VIP:port first, then the same port on any IP.
class VirtualListenerIndex {
public:
  explicit VirtualListenerIndex(const config::ListenerTable& listeners);
  const config::Listener* find(const common::SocketAddress& original_destination) const;
  // Every address the capture programs must redirect (what the BPF "captured" map holds).
  std::vector<common::SocketAddress> capturedDestinations() const;

private:
  std::map<std::pair<std::string, uint16_t>, const config::Listener*> exact_;
  std::map<std::pair<int, uint16_t>, const config::Listener*> any_ip_;
  std::shared_ptr<const config::ListenerTable> keep_;
};

// The filter chain of `listener` that matches a connection to `destination`: an explicit
// destination port wins, then the longest destination prefix; null when none matches.
// `sniffed` (when the listener needed sniffing) adds Envoy's later criteria: server names
// (exact beats *.suffix), transport protocol, and — among chains still tied — the chain
// whose kind (HTTP connection manager or TCP proxy) fits what the bytes looked like.
const config::FilterChain* selectFilterChain(const config::Listener& listener,
                                             const common::SocketAddress& destination,
                                             const network::SniffResult* sniffed = nullptr);

// Whether choosing among the listener's chains needs the connection's first bytes: some
// chain matches on server names or transport protocol, or HTTP and TCP chains coexist.
bool needsSniffing(const config::Listener& listener);

}  // namespace culvert::server
