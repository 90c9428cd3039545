#pragma once

#include <string>
#include <string_view>

namespace culvert::common {

// ASCII case folding for protocol text (header names, hosts, tokens): inline, and free
// of the locale lookup std::tolower makes per character, which showed in the request
// path's profile. Bytes outside A-Z pass through. xDS translation lowers configured
// names and values with it too, so both sides of a comparison fold alike.
constexpr char toLowerAscii(char c) { return c >= 'A' && c <= 'Z' ? static_cast<char>(c + ('a' - 'A')) : c; }

inline void lowerAsciiInPlace(std::string& text) {
  for (char& c : text) c = toLowerAscii(c);
}

inline std::string lowerAscii(std::string_view text) {
  std::string out(text);
  lowerAsciiInPlace(out);
  return out;
}

constexpr bool equalsIgnoreCaseAscii(std::string_view a, std::string_view b) {
  if (a.size() != b.size()) return false;
  for (size_t i = 0; i < a.size(); ++i) {
    if (toLowerAscii(a[i]) != toLowerAscii(b[i])) return false;
  }
  return true;
}

}  // namespace culvert::common
