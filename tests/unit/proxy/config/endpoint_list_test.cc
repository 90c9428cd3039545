#include <gtest/gtest.h>

#include "proxy/config/snapshot.h"

namespace culvert::config {
namespace {

Endpoint at(const char* ip, uint32_t weight = 1) { return {*SocketAddress::parse(ip, 80), weight}; }

TEST(EndpointList, CopiesShareOneVector) {
  EndpointList a = std::vector<Endpoint>{at("10.0.0.1"), at("10.0.0.2")};
  EndpointList b = a;
  EXPECT_TRUE(b.sharesWith(a));
  EXPECT_EQ(&b.vector(), &a.vector());
  ASSERT_EQ(b.size(), 2u);
  EXPECT_EQ(b[1].address.toString(), "10.0.0.2:80");
  Cluster c;
  c.endpoints = a;
  Cluster copy = c;  // a cluster resolved again from the same resources
  EXPECT_TRUE(copy.endpoints.sharesWith(a));
}

TEST(EndpointList, AWriteToASharedListCopiesFirst) {
  EndpointList a = {at("10.0.0.1")};
  EndpointList b = a;
  b.push_back(at("10.0.0.2", 5));
  EXPECT_FALSE(b.sharesWith(a));
  ASSERT_EQ(a.size(), 1u);  // the other holder sees no change
  ASSERT_EQ(b.size(), 2u);
  EXPECT_EQ(b.back().weight, 5u);
  const auto* before = &b.vector();
  b.push_back(at("10.0.0.3"));  // not shared: no copy
  EXPECT_EQ(b.size(), 3u);
  EXPECT_EQ(&b.vector(), before);
}

TEST(EndpointList, EmptyListsReadAsAnEmptyVector) {
  EndpointList none;
  EXPECT_TRUE(none.empty());
  EXPECT_EQ(none.size(), 0u);
  EXPECT_EQ(none.begin(), none.end());
  EndpointList from_empty = std::vector<Endpoint>{};
  EXPECT_TRUE(from_empty.empty());
  const std::vector<Endpoint>& as_vector = none;
  EXPECT_TRUE(as_vector.empty());
}

}  // namespace
}  // namespace culvert::config
