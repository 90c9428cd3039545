#pragma once

#include <netinet/in.h>
#include <sys/socket.h>

#include <compare>
#include <cstdint>
#include <optional>
#include <string>
#include <string_view>

#include "proxy/common/error.h"

namespace culvert::common {

// An IPv4 or IPv6 address and port, stored as a sockaddr so it can be handed to the
// kernel as is. Value type; cheap to copy: 28 bytes (a sockaddr_in6), not a 128-byte
// sockaddr_storage — every endpoint of every cluster holds one.
class SocketAddress {
public:
  SocketAddress() = default;

  static Result<SocketAddress> parse(std::string_view ip, uint16_t port);
  // "1.2.3.4:80", "[::1]:80".
  static Result<SocketAddress> parseHostPort(std::string_view host_port);
  static SocketAddress fromSockaddr(const sockaddr* sa);

  int family() const { return storage_.any.sa_family; }
  bool isV4() const { return family() == AF_INET; }
  uint16_t port() const;
  const sockaddr* sockaddr_ptr() const { return &storage_.any; }
  socklen_t length() const;
  // IPv4 address in network byte order (only when isV4()).
  uint32_t ipv4() const;
  bool isAnyAddress() const;

  std::string ip() const;
  std::string toString() const;  // "1.2.3.4:80" or "[::1]:80"

  // Family, address and port (not IPv6 flow info or scope): what toString() shows. The
  // order is by family, then address bytes, then port.
  friend bool operator==(const SocketAddress& a, const SocketAddress& b) { return (a <=> b) == 0; }
  friend std::strong_ordering operator<=>(const SocketAddress& a, const SocketAddress& b);

private:
  union Storage {
    sockaddr any;
    sockaddr_in v4;
    sockaddr_in6 v6;
  } storage_{};
};

// "name:port" where name is a DNS name or an IP literal ("[v6]" bracketed), for peers
// that may be named (a control plane); resolved later, asynchronously, by the user.
struct HostPort {
  std::string host;  // without brackets
  uint16_t port = 0;
  bool is_ip_literal = false;

  static Result<HostPort> parse(std::string_view host_port);
};

// An address prefix ("10.0.0.0/8"), IPv4 or IPv6.
struct CidrRange {
  SocketAddress prefix;
  uint32_t length = 0;

  static Result<CidrRange> parse(std::string_view ip, uint32_t prefix_len);
  bool contains(const SocketAddress& addr) const;
};

}  // namespace culvert::common
