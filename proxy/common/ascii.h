#pragma once

#include <cstdint>
#include <cstring>
#include <string>
#include <string_view>

namespace culvert::common {

// ASCII case folding for protocol text (header names, hosts, tokens): inline, and free
// of the locale lookup std::tolower makes per character, which showed in the request
// path's profile. Bytes outside A-Z pass through. xDS translation lowers configured
// names and values with it too, so both sides of a comparison fold alike.
constexpr char toLowerAscii(char c) { return c >= 'A' && c <= 'Z' ? static_cast<char>(c + ('a' - 'A')) : c; }

// Eight bytes at a time (SWAR): every header name an HTTP/1.1 head brings is folded, and
// a byte at a time took 8 instructions per character.
inline void lowerAsciiInPlace(std::string& text) {
  constexpr uint64_t kEach = 0x0101010101010101ULL;
  char* p = text.data();
  size_t n = text.size();
  for (; n >= 8; p += 8, n -= 8) {
    uint64_t word;
    std::memcpy(&word, p, 8);
    // Per byte, with its top bit cleared so no sum carries into the next byte: the top
    // bit of b + 0x3f is set from 'A' (0x41) up, that of b + 0x25 from past 'Z' (0x5b)
    // up; bytes of 0x80 and above (~word's top bit clear) are not ASCII and stay as they are.
    uint64_t low7 = word & (0x7f * kEach);
    uint64_t upper = (low7 + 0x3f * kEach) ^ (low7 + 0x25 * kEach);
    upper &= ~word & (0x80 * kEach);
    word |= upper >> 2;  // 0x80 >> 2 = 0x20, the case bit
    std::memcpy(p, &word, 8);
  }
  for (; n > 0; ++p, --n) *p = toLowerAscii(*p);
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
