#pragma once

#include <cstddef>
#include <optional>
#include <string>
#include <string_view>
#include <utility>
#include <vector>

namespace culvert::http {

// Fields the router adds to every proxied request (x-forwarded-for, x-request-id,
// x-forwarded-proto): the room a request head reserves for them.
inline constexpr size_t kRouterAddedHeaders = 3;

// Ordered header list with lower-case names (HTTP/2's rule, applied to HTTP/1 on decode).
class HeaderMap {
public:
  using Entry = std::pair<std::string, std::string>;

  HeaderMap() = default;
  // Takes `entries` as they are (a block converted in place).
  explicit HeaderMap(std::vector<Entry> entries) : entries_(std::move(entries)) {}

  void add(std::string name, std::string value) { entries_.emplace_back(std::move(name), std::move(value)); }
  // First value of `name` (lower-case), if any.
  std::optional<std::string_view> get(std::string_view name) const {
    for (const auto& [k, v] : entries_) {
      if (k == name) return std::string_view(v);
    }
    return std::nullopt;
  }
  void remove(std::string_view name) {
    std::erase_if(entries_, [&](const Entry& e) { return e.first == name; });
  }
  // One pass for many names (each remove() is a pass of its own).
  template <class Pred>
  void removeIf(Pred pred) {
    std::erase_if(entries_, pred);
  }
  void set(std::string name, std::string value) {
    remove(name);
    add(std::move(name), std::move(value));
  }
  const std::vector<Entry>& entries() const { return entries_; }
  size_t size() const { return entries_.size(); }
  // Room for `n` entries: a map built entry by entry otherwise reallocates (and moves
  // every string) at 1, 2, 4, 8 and 16.
  void reserve(size_t n) { entries_.reserve(n); }
  // The entries, moved out: converts one block into another without copying strings.
  std::vector<Entry> takeEntries() && { return std::move(entries_); }

private:
  std::vector<Entry> entries_;
};

struct RequestHead {
  std::string method;
  std::string path;  // request-target as sent (origin form)
  HeaderMap headers;
  int version_minor = 1;
  bool keep_alive = true;
  bool chunked = false;
  std::optional<uint64_t> content_length;

  std::string_view authority() const { return headers.get("host").value_or(std::string_view{}); }
};

struct ResponseHead {
  int status = 200;
  std::string reason;
  HeaderMap headers;
  int version_minor = 1;
  bool keep_alive = true;
  bool chunked = false;
  std::optional<uint64_t> content_length;
};

}  // namespace culvert::http
