#include "proxy/http/http1/encoder.h"

#include <charconv>
#include <cstdio>
#include <cstring>

#include "proxy/common/ascii.h"

namespace culvert::http::http1 {

namespace {

// Per-hop headers, plus content-length, which the encoder writes from the framing. By
// length first: every header of every relayed message is checked.
constexpr bool isDroppedOnRelay(std::string_view name) {
  switch (name.size()) {
    case 2: return name == "te";
    case 7: return name == "trailer" || name == "upgrade";
    case 10: return name == "connection" || name == "keep-alive";
    case 14: return name == "content-length";
    case 16: return name == "proxy-connection";
    case 17: return name == "transfer-encoding";
    case 18: return name == "proxy-authenticate";
    default: return false;
  }
}

char* put(char* at, std::string_view text) {
  std::memcpy(at, text.data(), text.size());
  return at + text.size();
}

// Sized once and copied piece by piece: four appends per header each checked the
// capacity and called memcpy, which showed in a relayed request's instruction count.
// (Not resize_and_overwrite: Debian 12's libstdc++ 12.2 hands its callback the grown
// capacity instead of the size asked for when the string reallocates.)
void appendHeaders(std::string& out, const HeaderMap& headers) {
  size_t size = 0;
  for (const auto& [name, value] : headers.entries()) size += name.size() + value.size() + 4;
  size_t held = out.size();
  out.resize(held + size);
  char* at = out.data() + held;
  for (const auto& [name, value] : headers.entries()) {
    at = put(put(put(put(at, name), ": "), value), "\r\n");
  }
}

void appendFraming(std::string& out, BodyFraming framing, std::optional<uint64_t> length) {
  if (framing == BodyFraming::ContentLength) {
    char digits[24];
    auto [end, ec] = std::to_chars(digits, digits + sizeof digits, length.value_or(0));
    out += "content-length: ";
    out.append(digits, end);
    out += "\r\n";
  } else if (framing == BodyFraming::Chunked) {
    out += "transfer-encoding: chunked\r\n";
  }
}

}  // namespace

void removeHopByHopHeaders(HeaderMap& headers) {
  if (auto connection = headers.get("connection")) {
    // Connection may name further per-hop headers ("Connection: close, x-foo").
    std::string list(*connection);
    size_t pos = 0;
    while (pos <= list.size()) {
      size_t comma = list.find(',', pos);
      std::string token = list.substr(pos, comma == std::string::npos ? std::string::npos : comma - pos);
      size_t b = token.find_first_not_of(" \t");
      size_t e = token.find_last_not_of(" \t");
      if (b != std::string::npos) {
        token = token.substr(b, e - b + 1);
        common::lowerAsciiInPlace(token);
        if (!isDroppedOnRelay(token)) headers.remove(token);  // those go in the pass below
      }
      if (comma == std::string::npos) break;
      pos = comma + 1;
    }
  }
  headers.removeIf([](const HeaderMap::Entry& e) { return isDroppedOnRelay(e.first); });
}

BodyFraming requestFraming(const RequestHead& head) {
  if (head.chunked) return BodyFraming::Chunked;
  if (head.content_length && *head.content_length > 0) return BodyFraming::ContentLength;
  if (head.content_length) return BodyFraming::ContentLength;  // explicit zero is kept
  return BodyFraming::None;
}

BodyFraming responseFraming(const ResponseHead& head, bool head_request) {
  if (head.status < 200 || head.status == 204 || head.status == 304) return BodyFraming::None;
  if (head.content_length) return BodyFraming::ContentLength;
  if (head_request) return BodyFraming::None;
  // Chunked, or read-until-close from an HTTP/1.0-style upstream: either way the length
  // is unknown, and chunked keeps the downstream connection reusable.
  return BodyFraming::Chunked;
}

namespace {

// A typical head fits in 256 bytes: one allocation (none in a buffer that has the room)
// instead of the string growing through 30, 60, 120 and 240 as fields are appended.
void reserveForHead(std::string& out) {
  constexpr size_t kTypicalHead = 256;
  if (out.capacity() - out.size() < kTypicalHead) out.reserve(out.size() + kTypicalHead);
}

}  // namespace

std::string encodeRequestHead(const RequestHead& head, BodyFraming framing) {
  std::string out;
  appendRequestHead(out, head, framing);
  return out;
}

void appendRequestHead(std::string& out, const RequestHead& head, BodyFraming framing) {
  reserveForHead(out);
  out += head.method;
  out += ' ';
  out += head.path;
  out += " HTTP/1.1\r\n";
  appendHeaders(out, head.headers);
  appendFraming(out, framing, head.content_length);
  out += "\r\n";
}

std::string encodeResponseHead(const ResponseHead& head, BodyFraming framing, bool close_connection) {
  std::string out;
  appendResponseHead(out, head, framing, close_connection);
  return out;
}

void appendResponseHead(std::string& out, const ResponseHead& head, BodyFraming framing, bool close_connection) {
  reserveForHead(out);
  out += "HTTP/1.1 ";
  out += std::to_string(head.status);
  out += ' ';
  out += head.reason.empty() ? reasonPhrase(head.status) : head.reason;
  out += "\r\n";
  appendHeaders(out, head.headers);
  appendFraming(out, framing, head.content_length);
  if (close_connection) out += "connection: close\r\n";
  out += "\r\n";
}

void appendBody(std::string& out, std::string_view data, BodyFraming framing) {
  if (data.empty()) return;
  if (framing == BodyFraming::Chunked) {
    char size[24];
    int n = std::snprintf(size, sizeof size, "%zx\r\n", data.size());
    out.append(size, static_cast<size_t>(n));
    out.append(data);
    out += "\r\n";
    return;
  }
  out.append(data);
}

void appendBodyEnd(std::string& out, BodyFraming framing) {
  if (framing == BodyFraming::Chunked) out += "0\r\n\r\n";
}

const char* reasonPhrase(int status) {
  switch (status) {
    case 100: return "Continue";
    case 200: return "OK";
    case 201: return "Created";
    case 204: return "No Content";
    case 301: return "Moved Permanently";
    case 302: return "Found";
    case 304: return "Not Modified";
    case 400: return "Bad Request";
    case 403: return "Forbidden";
    case 404: return "Not Found";
    case 405: return "Method Not Allowed";
    case 408: return "Request Timeout";
    case 413: return "Payload Too Large";
    case 429: return "Too Many Requests";
    case 431: return "Request Header Fields Too Large";
    case 500: return "Internal Server Error";
    case 502: return "Bad Gateway";
    case 503: return "Service Unavailable";
    case 504: return "Gateway Timeout";
    default: return "Unknown";
  }
}

}  // namespace culvert::http::http1
