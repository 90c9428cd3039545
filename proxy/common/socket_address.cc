#include "proxy/common/socket_address.h"

#include <arpa/inet.h>

#include <cctype>
#include <charconv>
#include <cstring>
#include <optional>

namespace culvert::common {

namespace {

// A dotted quad in its canonical form ("10.1.2.3": four decimal octets ≤ 255, no leading
// zeros), in network byte order; nullopt for anything else, which inet_pton then decides.
// An EDS update parses every endpoint's address: this skips inet_pton's copy to a C
// string and its strlen (~15% of decoding 10,000 endpoints).
std::optional<uint32_t> parseCanonicalIpv4(std::string_view ip) {
  unsigned char bytes[4];
  size_t pos = 0;
  for (int i = 0; i < 4; ++i) {
    if (i > 0 && (pos >= ip.size() || ip[pos++] != '.')) return std::nullopt;
    size_t start = pos;
    unsigned value = 0;
    while (pos < ip.size() && pos - start < 3 && ip[pos] >= '0' && ip[pos] <= '9') value = value * 10 + (ip[pos++] - '0');
    size_t digits = pos - start;
    if (digits == 0 || value > 255 || (digits > 1 && ip[start] == '0')) return std::nullopt;
    bytes[i] = static_cast<unsigned char>(value);
  }
  if (pos != ip.size()) return std::nullopt;
  uint32_t out;
  std::memcpy(&out, bytes, sizeof out);
  return out;
}

}  // namespace

Result<SocketAddress> SocketAddress::parse(std::string_view ip, uint16_t port) {
  SocketAddress a;
  if (auto v4 = parseCanonicalIpv4(ip)) {
    a.storage_.v4.sin_family = AF_INET;
    a.storage_.v4.sin_port = htons(port);
    a.storage_.v4.sin_addr.s_addr = *v4;
    return a;
  }
  std::string s(ip);
  auto* v4 = &a.storage_.v4;
  auto* v6 = &a.storage_.v6;
  if (inet_pton(AF_INET, s.c_str(), &v4->sin_addr) == 1) {
    v4->sin_family = AF_INET;
    v4->sin_port = htons(port);
    return a;
  }
  a.storage_ = {};
  if (inet_pton(AF_INET6, s.c_str(), &v6->sin6_addr) == 1) {
    v6->sin6_family = AF_INET6;
    v6->sin6_port = htons(port);
    return a;
  }
  return fail("not an IPv4 or IPv6 address: '" + s + "'");
}

Result<SocketAddress> SocketAddress::parseHostPort(std::string_view hp) {
  std::string_view host;
  std::string_view port;
  if (!hp.empty() && hp.front() == '[') {
    auto close = hp.find(']');
    if (close == std::string_view::npos || close + 1 >= hp.size() || hp[close + 1] != ':') {
      return fail("expected [IPv6]:port, got '" + std::string(hp) + "'");
    }
    host = hp.substr(1, close - 1);
    port = hp.substr(close + 2);
  } else {
    auto colon = hp.rfind(':');
    if (colon == std::string_view::npos) {
      return fail("expected IP:port, got '" + std::string(hp) + "'");
    }
    host = hp.substr(0, colon);
    port = hp.substr(colon + 1);
  }
  unsigned value = 0;
  auto [end, ec] = std::from_chars(port.data(), port.data() + port.size(), value);
  if (ec != std::errc() || end != port.data() + port.size() || value > 65535) {
    return fail("bad port in '" + std::string(hp) + "'");
  }
  return parse(host, static_cast<uint16_t>(value));
}

SocketAddress SocketAddress::fromSockaddr(const sockaddr* sa) {
  SocketAddress a;
  if (sa->sa_family == AF_INET) {
    std::memcpy(&a.storage_, sa, sizeof(sockaddr_in));
  } else if (sa->sa_family == AF_INET6) {
    std::memcpy(&a.storage_, sa, sizeof(sockaddr_in6));
  }
  return a;
}

std::strong_ordering operator<=>(const SocketAddress& a, const SocketAddress& b) {
  if (auto c = a.family() <=> b.family(); c != 0) return c;
  if (a.isV4()) {
    // In host order, the numbers compare as the address bytes do, without a memcmp call:
    // a pool lookup compares endpoints about ten times per request.
    if (auto c = ntohl(a.storage_.v4.sin_addr.s_addr) <=> ntohl(b.storage_.v4.sin_addr.s_addr); c != 0) return c;
    return ntohs(a.storage_.v4.sin_port) <=> ntohs(b.storage_.v4.sin_port);
  }
  int bytes = 0;
  if (a.family() == AF_INET6) {
    bytes = std::memcmp(&a.storage_.v6.sin6_addr, &b.storage_.v6.sin6_addr, sizeof(in6_addr));
  }
  if (bytes != 0) return bytes < 0 ? std::strong_ordering::less : std::strong_ordering::greater;
  return a.port() <=> b.port();
}

uint16_t SocketAddress::port() const {
  if (isV4()) return ntohs(storage_.v4.sin_port);
  if (family() == AF_INET6) return ntohs(storage_.v6.sin6_port);
  return 0;
}

socklen_t SocketAddress::length() const {
  return isV4() ? sizeof(sockaddr_in) : sizeof(sockaddr_in6);
}

uint32_t SocketAddress::ipv4() const {
  return storage_.v4.sin_addr.s_addr;
}

bool SocketAddress::isAnyAddress() const {
  if (isV4()) return ipv4() == INADDR_ANY;
  if (family() == AF_INET6) {
    return IN6_IS_ADDR_UNSPECIFIED(&storage_.v6.sin6_addr);
  }
  return false;
}

namespace {

// Dotted quad without inet_ntop, which formats through sprintf: toString() runs per
// endpoint when a MAGLEV or ring-hash table is built and per pooled request.
char* formatIpv4(char* out, uint32_t network_order) {
  const auto* b = reinterpret_cast<const unsigned char*>(&network_order);
  for (int i = 0; i < 4; ++i) {
    if (i) *out++ = '.';
    out = std::to_chars(out, out + 3, b[i]).ptr;
  }
  return out;
}

}  // namespace

std::string SocketAddress::ip() const {
  char buf[INET6_ADDRSTRLEN] = {};
  if (isV4()) return std::string(buf, formatIpv4(buf, ipv4()));
  if (family() == AF_INET6) inet_ntop(AF_INET6, &storage_.v6.sin6_addr, buf, sizeof buf);
  return buf;
}

std::string SocketAddress::toString() const {
  if (isV4()) {
    char buf[sizeof "255.255.255.255:65535"];
    char* end = formatIpv4(buf, ipv4());
    *end++ = ':';
    end = std::to_chars(end, buf + sizeof buf, port()).ptr;
    return std::string(buf, end);
  }
  if (family() == AF_INET6) return "[" + ip() + "]:" + std::to_string(port());
  return ip() + ":" + std::to_string(port());
}

Result<HostPort> HostPort::parse(std::string_view hp) {
  if (auto ip = SocketAddress::parseHostPort(hp)) {
    return HostPort{ip->ip(), ip->port(), true};
  }
  auto colon = hp.rfind(':');
  if (colon == std::string_view::npos || colon == 0) {
    return fail("expected host:port, got '" + std::string(hp) + "'");
  }
  std::string_view host = hp.substr(0, colon);
  std::string_view port = hp.substr(colon + 1);
  unsigned value = 0;
  auto [end, ec] = std::from_chars(port.data(), port.data() + port.size(), value);
  if (ec != std::errc() || end != port.data() + port.size() || value == 0 || value > 65535) {
    return fail("bad port in '" + std::string(hp) + "'");
  }
  // A DNS name (RFC 1123): letters, digits, '-' and '.', labels not starting with '-'.
  bool label_start = true;
  for (char c : host) {
    bool ok = std::isalnum(static_cast<unsigned char>(c)) || c == '.' || (c == '-' && !label_start);
    if (!ok || (c == '.' && label_start)) return fail("not a DNS name or IP address: '" + std::string(host) + "'");
    label_start = c == '.';
  }
  if (host.size() > 253) return fail("host name too long");
  return HostPort{std::string(host), static_cast<uint16_t>(value), false};
}

Result<CidrRange> CidrRange::parse(std::string_view ip, uint32_t prefix_len) {
  auto addr = SocketAddress::parse(ip, 0);
  if (!addr) return std::unexpected(addr.error());
  uint32_t max = addr->isV4() ? 32 : 128;
  if (prefix_len > max) {
    return fail("prefix_len " + std::to_string(prefix_len) + " exceeds " + std::to_string(max));
  }
  return CidrRange{*addr, prefix_len};
}

namespace {
const uint8_t* rawBytes(const SocketAddress& a) {
  if (a.isV4()) return reinterpret_cast<const uint8_t*>(&reinterpret_cast<const sockaddr_in*>(a.sockaddr_ptr())->sin_addr);
  return reinterpret_cast<const uint8_t*>(&reinterpret_cast<const sockaddr_in6*>(a.sockaddr_ptr())->sin6_addr);
}
}  // namespace

bool CidrRange::contains(const SocketAddress& addr) const {
  if (addr.family() != prefix.family()) return false;
  const uint8_t* a = rawBytes(addr);
  const uint8_t* p = rawBytes(prefix);
  uint32_t full = length / 8;
  if (std::memcmp(a, p, full) != 0) return false;
  uint32_t rest = length % 8;
  if (rest == 0) return true;
  uint8_t mask = static_cast<uint8_t>(0xff << (8 - rest));
  return (a[full] & mask) == (p[full] & mask);
}

}  // namespace culvert::common
