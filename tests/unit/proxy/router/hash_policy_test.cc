#include "proxy/router/hash_policy.h"

#include <gtest/gtest.h>

#include "proxy/common/xxhash64.h"

namespace culvert::router {
namespace {

using Kind = config::HashPolicy::Kind;

http::HeaderMap headers(std::initializer_list<std::pair<std::string, std::string>> list) {
  http::HeaderMap out;
  for (const auto& [k, v] : list) out.add(k, v);
  return out;
}

uint64_t rotl1(uint64_t h) { return (h << 1) | (h >> 63); }

TEST(HashPolicyTest, HeaderHash) {
  std::vector<config::HashPolicy> p{{Kind::Header, "x-user", false}};
  EXPECT_EQ(hashRequest(p, headers({{"x-user", "alice"}}), "10.0.0.1"), common::xxHash64("alice"));
  EXPECT_FALSE(hashRequest(p, headers({}), "10.0.0.1"));
}

TEST(HashPolicyTest, CookieHash) {
  std::vector<config::HashPolicy> p{{Kind::Cookie, "session", false}};
  EXPECT_EQ(hashRequest(p, headers({{"cookie", "a=1; session=xyz; b=2"}}), ""), common::xxHash64("xyz"));
  EXPECT_EQ(hashRequest(p, headers({{"cookie", "a=1"}, {"cookie", "session=\"q\""}}), ""), common::xxHash64("q"));
  EXPECT_FALSE(hashRequest(p, headers({{"cookie", "sessionx=1"}}), ""));
  EXPECT_EQ(findCookie(headers({{"cookie", " x = y "}}), "x"), "y");
}

TEST(HashPolicyTest, SourceIpIsThePodsIp) {
  std::vector<config::HashPolicy> p{{Kind::SourceIp, "", false}};
  EXPECT_EQ(hashRequest(p, headers({}), "10.244.0.7"), common::xxHash64("10.244.0.7"));
}

TEST(HashPolicyTest, CombinationAndTerminal) {
  std::vector<config::HashPolicy> both{{Kind::Header, "a", false}, {Kind::Header, "b", false}};
  auto h = headers({{"a", "1"}, {"b", "2"}});
  EXPECT_EQ(hashRequest(both, h, ""), rotl1(common::xxHash64("1")) ^ common::xxHash64("2"));
  // Only the second present: its hash alone.
  EXPECT_EQ(hashRequest(both, headers({{"b", "2"}}), ""), common::xxHash64("2"));
  std::vector<config::HashPolicy> terminal{{Kind::Header, "a", true}, {Kind::Header, "b", false}};
  EXPECT_EQ(hashRequest(terminal, h, ""), common::xxHash64("1"));
  // A terminal policy that found nothing does not stop the walk.
  EXPECT_EQ(hashRequest(terminal, headers({{"b", "2"}}), ""), common::xxHash64("2"));
}

}  // namespace
}  // namespace culvert::router
