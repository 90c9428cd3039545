#include "proxy/network/sniffer.h"

#include <array>
#include <cstdint>

#include "proxy/common/ascii.h"

namespace culvert::network {

namespace {

constexpr std::string_view kHttp2Preface = "PRI * HTTP/2.0\r\n\r\nSM\r\n\r\n";
constexpr std::array<std::string_view, 9> kMethods = {"GET ",    "POST ",   "PUT ",     "HEAD ", "DELETE ",
                                                      "OPTIONS ", "PATCH ", "CONNECT ", "TRACE "};

// Whether `bytes` is, or may still become, an HTTP request start.
enum class Match { No, Maybe, Yes };

Match matchHttp(std::string_view bytes) {
  Match best = Match::No;
  auto check = [&](std::string_view token) {
    if (bytes.size() >= token.size()) {
      if (bytes.starts_with(token)) best = Match::Yes;
    } else if (token.starts_with(bytes) && best == Match::No) {
      best = Match::Maybe;
    }
  };
  for (auto m : kMethods) check(m);
  check(kHttp2Preface);
  return best;
}

uint32_t readBe(std::string_view b, size_t at, size_t len) {
  uint32_t v = 0;
  for (size_t i = 0; i < len; ++i) v = (v << 8) | static_cast<uint8_t>(b[at + i]);
  return v;
}

// Parses the SNI out of a TLS ClientHello. nullopt: more bytes are needed. An empty
// string: a ClientHello without SNI, or not parseable as one.
std::optional<std::string> clientHelloServerName(std::string_view b) {
  // Record header: type 22 (handshake), version, length.
  if (b.size() < 5) return std::nullopt;
  size_t record_len = readBe(b, 3, 2);
  if (b.size() < 5 + record_len) {
    if (b.size() >= kMaxSniffBytes) return std::string();
    return std::nullopt;
  }
  std::string_view hs = b.substr(5, record_len);
  // Handshake header: type 1 (ClientHello), 3-byte length.
  if (hs.size() < 4 || static_cast<uint8_t>(hs[0]) != 1) return std::string();
  size_t p = 4 + 2 + 32;  // version, random
  auto need = [&](size_t n) { return p + n <= hs.size(); };
  if (!need(1)) return std::string();
  p += 1 + static_cast<uint8_t>(hs[p]);  // session id
  if (!need(2)) return std::string();
  p += 2 + readBe(hs, p, 2);  // cipher suites
  if (!need(1)) return std::string();
  p += 1 + static_cast<uint8_t>(hs[p]);  // compression methods
  if (!need(2)) return std::string();
  size_t ext_end = p + 2 + readBe(hs, p, 2);
  p += 2;
  while (p + 4 <= std::min(ext_end, hs.size())) {
    uint32_t type = readBe(hs, p, 2);
    size_t len = readBe(hs, p + 2, 2);
    p += 4;
    if (!need(len)) return std::string();
    if (type == 0 && len >= 5) {  // server_name: list length, name type 0, name length, name
      size_t name_len = readBe(hs, p + 3, 2);
      if (static_cast<uint8_t>(hs[p + 2]) == 0 && 5 + name_len <= len) {
        std::string name(hs.substr(p + 5, name_len));
        common::lowerAsciiInPlace(name);
        return name;
      }
      return std::string();
    }
    p += len;
  }
  return std::string();
}

}  // namespace

bool startsWithHttp2Preface(std::string_view bytes) { return bytes.starts_with(kHttp2Preface); }

SniffResult sniff(std::string_view bytes) {
  SniffResult r;
  if (bytes.empty()) return r;
  // A TLS handshake record: content type 22, major version 3.
  if (static_cast<uint8_t>(bytes[0]) == 0x16 && (bytes.size() < 2 || bytes[1] == 0x03)) {
    auto sni = clientHelloServerName(bytes);
    if (!sni) return r;
    r.state = SniffResult::State::Done;
    r.transport_protocol = "tls";
    r.server_name = std::move(*sni);
    return r;
  }
  Match m = matchHttp(bytes);
  if (m == Match::Maybe && bytes.size() < kMaxSniffBytes) return r;
  r.state = SniffResult::State::Done;
  r.http = m == Match::Yes;
  return r;
}

}  // namespace culvert::network
