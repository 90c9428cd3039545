#include "proxy/http/http2/message.h"

#include <charconv>

#include "proxy/http/http2/codec.h"

namespace culvert::http::http2 {

namespace {

std::optional<uint64_t> parseLength(std::string_view v) {
  uint64_t n = 0;
  auto [end, ec] = std::from_chars(v.data(), v.data() + v.size(), n);
  if (ec != std::errc() || end != v.data() + v.size()) return std::nullopt;
  return n;
}

// Fields an HTTP/2 block may carry, from a head that came from either version.
void appendRegularFields(HeaderMap& block, const HeaderMap& headers) {
  for (const auto& [name, value] : headers.entries()) {
    if (name == "host" || name == "content-length" || isConnectionSpecificHeader(name)) continue;
    if (name == "te" && value != "trailers") continue;
    block.add(name, value);
  }
}

}  // namespace

RequestHead toRequestHead(HeaderMap&& block, bool end_stream) {
  RequestHead head;
  std::optional<std::string> authority;
  for (auto& [name, value] : block.entries()) {
    if (name == ":method") {
      head.method = value;
    } else if (name == ":path") {
      head.path = value;
    } else if (name == ":authority") {
      authority = value;
    } else if (name.starts_with(':')) {
      continue;  // :scheme
    } else if (name == "content-length") {
      head.content_length = parseLength(value);
    } else {
      head.headers.add(name, value);
    }
  }
  if (authority && !head.headers.get("host")) {
    // Host first, where an HTTP/1.1 request has it.
    HeaderMap with_host;
    with_host.add("host", *authority);
    for (const auto& [name, value] : head.headers.entries()) with_host.add(name, value);
    head.headers = std::move(with_host);
  }
  if (end_stream && !head.content_length) {
    if (head.method == "POST" || head.method == "PUT" || head.method == "PATCH") head.content_length = 0;
  } else if (!head.content_length) {
    head.chunked = true;
  }
  return head;
}

HeaderMap toRequestBlock(const RequestHead& head, std::string_view scheme) {
  HeaderMap block;
  block.add(":method", head.method);
  block.add(":scheme", std::string(scheme));
  block.add(":authority", std::string(head.authority()));
  block.add(":path", head.path);
  appendRegularFields(block, head.headers);
  if (head.content_length) block.add("content-length", std::to_string(*head.content_length));
  return block;
}

ResponseHead toResponseHead(HeaderMap&& block) {
  ResponseHead head;
  for (auto& [name, value] : block.entries()) {
    if (name == ":status") {
      head.status = static_cast<int>(parseLength(value).value_or(502));
    } else if (name.starts_with(':')) {
      continue;
    } else if (name == "content-length") {
      head.content_length = parseLength(value);
    } else {
      head.headers.add(name, value);
    }
  }
  return head;
}

HeaderMap toResponseBlock(const ResponseHead& head) {
  HeaderMap block;
  block.add(":status", std::to_string(head.status));
  appendRegularFields(block, head.headers);
  if (head.content_length) block.add("content-length", std::to_string(*head.content_length));
  return block;
}

}  // namespace culvert::http::http2
