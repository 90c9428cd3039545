#pragma once

#include <optional>
#include <string>
#include <string_view>

namespace culvert::network {

// What the first bytes of a downstream connection say about it: enough for filter chain
// matching on transport_protocol, server_names and HTTP vs. other TCP. Pure function.
struct SniffResult {
  enum class State { NeedMoreBytes, Done };
  State state = State::NeedMoreBytes;
  std::string transport_protocol = "raw_buffer";  // or "tls"
  std::string server_name;                        // SNI of a TLS ClientHello, lower-cased
  bool http = false;                              // an HTTP/1.x request line or the HTTP/2 preface
};

// Bytes a sniffer reads at most before deciding with what it has.
inline constexpr size_t kMaxSniffBytes = 16 * 1024;

SniffResult sniff(std::string_view initial_bytes);

// Whether a connection's first bytes are the HTTP/2 client connection preface.
bool startsWithHttp2Preface(std::string_view initial_bytes);

}  // namespace culvert::network
