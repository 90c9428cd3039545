#include "proxy/http/http2/message.h"

#include <algorithm>
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

// Fields an HTTP/2 block may carry, from a head that came from either version. Names
// are compared as string_views: length first, where std::string == const char* calls
// memcmp for every candidate.
bool carriedInBlock(const HeaderMap::Entry& field) {
  std::string_view name = field.first;
  if (name == "host" || name == "content-length" || isConnectionSpecificHeader(name)) return false;
  return name != "te" || field.second == "trailers";
}

void appendRegularFields(HeaderMap& block, const HeaderMap& headers) {
  for (const auto& field : headers.entries()) {
    if (carriedInBlock(field)) block.add(field.first, field.second);
  }
}

}  // namespace

RequestHead toRequestHead(HeaderMap&& block, bool end_stream) {
  RequestHead head;
  // The block's own vector becomes the head's: pseudo-headers and content-length leave
  // it and the other fields close up in order, so no field is copied and, with the room
  // the codec reserved, nothing is allocated.
  auto entries = std::move(block).takeEntries();
  const bool has_host =
      std::ranges::any_of(entries, [](const HeaderMap::Entry& e) { return std::string_view(e.first) == "host"; });
  size_t kept = 0;
  for (size_t i = 0; i < entries.size(); ++i) {
    auto& [name, value] = entries[i];
    std::string_view n = name;  // compared length first (carriedInBlock)
    bool keep = false;
    bool first = false;
    if (n == ":method") {
      head.method = std::move(value);
    } else if (n == ":path") {
      head.path = std::move(value);
    } else if (n == ":authority") {
      if (has_host) continue;
      name = "host";
      keep = first = true;
    } else if (n.starts_with(':')) {
      continue;  // :scheme
    } else if (n == "content-length") {
      head.content_length = parseLength(value);
    } else {
      keep = true;
    }
    if (!keep) continue;
    if (kept != i) entries[kept] = std::move(entries[i]);
    // Host first, where an HTTP/1.1 request has it (pseudo-headers come first in a block,
    // so it is there already unless the block put a field before them).
    if (first) std::rotate(entries.begin(), entries.begin() + kept, entries.begin() + kept + 1);
    ++kept;
  }
  entries.resize(kept);
  head.headers = HeaderMap(std::move(entries));
  // Room for the few fields the router adds (x-forwarded-for, x-request-id,
  // x-forwarded-proto), so none of those reallocates.
  head.headers.reserve(kept + kRouterAddedHeaders);
  if (end_stream && !head.content_length) {
    if (head.method == "POST" || head.method == "PUT" || head.method == "PATCH") head.content_length = 0;
  } else if (!head.content_length) {
    head.chunked = true;
  }
  return head;
}

HeaderMap toRequestBlock(const RequestHead& head, std::string_view scheme) {
  HeaderMap block;
  block.reserve(head.headers.size() + 5);  // + 4 pseudo-headers and content-length
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
  auto entries = std::move(block).takeEntries();
  head.headers.reserve(entries.size());
  for (auto& [name, value] : entries) {
    if (name == ":status") {
      head.status = static_cast<int>(parseLength(value).value_or(502));
    } else if (name.starts_with(':')) {
      continue;
    } else if (name == "content-length") {
      head.content_length = parseLength(value);
    } else {
      head.headers.add(std::move(name), std::move(value));
    }
  }
  return head;
}

HeaderMap toResponseBlock(ResponseHead&& head) {
  // The head is spent: its vector becomes the block's, as in toRequestHead. Fields not
  // carried leave it and :status goes in front, so no field is copied and, with the room
  // the HTTP/1.1 parser reserved, nothing is allocated.
  auto entries = std::move(head.headers).takeEntries();
  std::erase_if(entries, [](const HeaderMap::Entry& field) { return !carriedInBlock(field); });
  entries.reserve(entries.size() + 2);  // + :status and content-length
  entries.emplace(entries.begin(), ":status", std::to_string(head.status));
  if (head.content_length) entries.emplace_back("content-length", std::to_string(*head.content_length));
  return HeaderMap(std::move(entries));
}

}  // namespace culvert::http::http2
