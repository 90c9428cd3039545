#include "proxy/common/heap_optional.h"

#include <gtest/gtest.h>

#include <optional>
#include <string>

namespace culvert::common {
namespace {

TEST(HeapOptionalTest, ActsAsAnOptionalValue) {
  HeapOptional<std::string> a;
  EXPECT_FALSE(a);
  EXPECT_FALSE(a.has_value());
  a = std::string("x");
  ASSERT_TRUE(a);
  EXPECT_EQ(*a, "x");
  EXPECT_EQ(a->size(), 1u);
  a = std::nullopt;
  EXPECT_FALSE(a);
  // From a std::optional (int: g++ 12 warns falsely about a temporary optional<string>).
  HeapOptional<int> n = 1;
  n = std::optional<int>(2);
  EXPECT_EQ(*n, 2);
  n = std::optional<int>();
  EXPECT_FALSE(n);
  a.emplace(3, 'z');
  EXPECT_EQ(*a, "zzz");
  a.reset();
  EXPECT_FALSE(a);
}

TEST(HeapOptionalTest, CopiesAreDeepAndCompareByValue) {
  HeapOptional<std::string> a = std::string("one");
  HeapOptional<std::string> b = a;
  EXPECT_EQ(a, b);
  *b = "two";
  EXPECT_EQ(*a, "one");
  EXPECT_FALSE(a == b);
  b = a;
  EXPECT_EQ(*b, "one");
  HeapOptional<std::string> empty;
  EXPECT_FALSE(a == empty);
  EXPECT_EQ(empty, HeapOptional<std::string>());
  HeapOptional<std::string> moved = std::move(a);
  EXPECT_EQ(*moved, "one");
}

}  // namespace
}  // namespace culvert::common
