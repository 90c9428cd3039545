#include "proxy/common/ascii.h"

#include <gtest/gtest.h>

#include <string>

namespace culvert::common {
namespace {

TEST(AsciiTest, LowersOnlyAsciiLetters) {
  EXPECT_EQ(lowerAscii("Content-Type: X-AZ az 09 @[`{"), "content-type: x-az az 09 @[`{");
  // UTF-8 bytes (here "É") and other bytes above 0x7f pass through unchanged.
  std::string utf8 = "H\xC3\x89LLO\xFF";
  EXPECT_EQ(lowerAscii(utf8), "h\xC3\x89llo\xFF");
  std::string in_place = "WWW.Example.COM";
  lowerAsciiInPlace(in_place);
  EXPECT_EQ(in_place, "www.example.com");
  static_assert(toLowerAscii('Q') == 'q' && toLowerAscii('q') == 'q' && toLowerAscii('0') == '0');
}

// The word-at-a-time fold against the byte-at-a-time rule: every byte value at every
// position of a word, and in the tail after the last whole word.
TEST(AsciiTest, LowersWholeWordsAsByteByByte) {
  for (size_t length : {1, 7, 8, 9, 16, 23}) {
    for (int start = 0; start < 256; ++start) {
      std::string text(length, '\0');
      for (size_t i = 0; i < length; ++i) text[i] = static_cast<char>((start + 37 * i) % 256);
      std::string expected = text;
      for (char& c : expected) c = toLowerAscii(c);
      lowerAsciiInPlace(text);
      ASSERT_EQ(text, expected) << "length " << length << ", first byte " << start;
    }
  }
}

TEST(AsciiTest, ComparesIgnoringAsciiCase) {
  EXPECT_TRUE(equalsIgnoreCaseAscii("100-Continue", "100-continue"));
  EXPECT_TRUE(equalsIgnoreCaseAscii("", ""));
  EXPECT_FALSE(equalsIgnoreCaseAscii("100-continue", "100-continu"));
  EXPECT_FALSE(equalsIgnoreCaseAscii("a[", "A{"));  // '[' and '{' are not a case pair
  EXPECT_FALSE(equalsIgnoreCaseAscii("\xC3\x89", "\xC3\xA9"));  // no folding beyond ASCII
}

}  // namespace
}  // namespace culvert::common
