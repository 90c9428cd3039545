#include "proxy/common/xxhash64.h"

#include <gtest/gtest.h>

namespace culvert::common {
namespace {

// Reference values from libxxhash 0.8.1 (XXH64).
TEST(XxHash64Test, KnownAnswers) {
  EXPECT_EQ(xxHash64(""), 0xef46db3751d8e999ULL);
  EXPECT_EQ(xxHash64("a"), 0xd24ec4f1a98c6e5bULL);
  EXPECT_EQ(xxHash64("abc"), 0x44bc2cf5ad770999ULL);
  EXPECT_EQ(xxHash64("10.0.0.1:80_0"), 0x75041381e7371a08ULL);
  EXPECT_EQ(xxHash64("The quick brown fox jumps over the lazy dog"), 0x0b242d361fda71bcULL);
  EXPECT_EQ(xxHash64("10.0.0.1:80", 1), 0xa456919bcbffaa92ULL);
}

}  // namespace
}  // namespace culvert::common
