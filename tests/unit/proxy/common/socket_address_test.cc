#include "proxy/common/socket_address.h"

#include <arpa/inet.h>

#include <gtest/gtest.h>

#include <string>
#include <vector>

namespace culvert::common {
namespace {

TEST(SocketAddressTest, ParsesIpv4AndIpv6HostPort) {
  auto v4 = SocketAddress::parseHostPort("10.96.0.10:80");
  ASSERT_TRUE(v4);
  EXPECT_TRUE(v4->isV4());
  EXPECT_EQ(v4->port(), 80);
  EXPECT_EQ(v4->toString(), "10.96.0.10:80");

  auto v6 = SocketAddress::parseHostPort("[fd00::1]:8080");
  ASSERT_TRUE(v6);
  EXPECT_EQ(v6->family(), AF_INET6);
  EXPECT_EQ(v6->toString(), "[fd00::1]:8080");
}

TEST(SocketAddressTest, EqualityAndOrderFollowFamilyAddressPort) {
  auto a = *SocketAddress::parseHostPort("10.0.0.2:80");
  EXPECT_EQ(a, *SocketAddress::parseHostPort("10.0.0.2:80"));
  EXPECT_NE(a, *SocketAddress::parseHostPort("10.0.0.2:81"));
  EXPECT_NE(a, *SocketAddress::parseHostPort("10.0.0.3:80"));
  EXPECT_LT(*SocketAddress::parseHostPort("10.0.0.2:81"), *SocketAddress::parseHostPort("10.0.0.3:80"));
  EXPECT_LT(*SocketAddress::parseHostPort("9.255.255.255:80"), *SocketAddress::parseHostPort("10.0.0.0:80"));
  EXPECT_LT(a, *SocketAddress::parseHostPort("10.0.0.2:443"));
  // Numerically, not by the bytes' order in a little-endian word.
  EXPECT_LT(*SocketAddress::parseHostPort("10.0.0.255:80"), *SocketAddress::parseHostPort("10.0.1.0:80"));
  EXPECT_LT(*SocketAddress::parseHostPort("10.0.0.2:2"), *SocketAddress::parseHostPort("10.0.0.2:256"));
  EXPECT_EQ(*SocketAddress::parseHostPort("[fd00::1]:80"), *SocketAddress::parseHostPort("[fd00:0::1]:80"));
  EXPECT_NE(*SocketAddress::parseHostPort("[fd00::1]:80"), *SocketAddress::parseHostPort("[fd00::2]:80"));
  EXPECT_NE(SocketAddress{}, a);
  EXPECT_EQ(SocketAddress{}, SocketAddress{});
  // Every endpoint holds one: a sockaddr_in6, not a 128-byte sockaddr_storage.
  EXPECT_LE(sizeof(SocketAddress), sizeof(sockaddr_in6));
}

TEST(SocketAddressTest, FormatsIpv4Extremes) {
  EXPECT_EQ(SocketAddress::parse("0.0.0.0", 0)->toString(), "0.0.0.0:0");
  EXPECT_EQ(SocketAddress::parse("255.255.255.255", 65535)->toString(), "255.255.255.255:65535");
  EXPECT_EQ(SocketAddress::parse("10.0.100.9", 8080)->ip(), "10.0.100.9");
  EXPECT_EQ(SocketAddress{}.toString(), ":0");
}

TEST(SocketAddressTest, RejectsMalformedInput) {
  EXPECT_FALSE(SocketAddress::parseHostPort("10.0.0.1"));
  EXPECT_FALSE(SocketAddress::parseHostPort("10.0.0.1:99999"));
  EXPECT_FALSE(SocketAddress::parseHostPort("nonsense:80"));
  EXPECT_FALSE(SocketAddress::parseHostPort("[::1:80"));
}

TEST(SocketAddressTest, AnyAddress) {
  EXPECT_TRUE(SocketAddress::parse("0.0.0.0", 80)->isAnyAddress());
  EXPECT_TRUE(SocketAddress::parse("::", 80)->isAnyAddress());
  EXPECT_FALSE(SocketAddress::parse("10.0.0.1", 80)->isAnyAddress());
}

TEST(HostPortTest, DnsNamesAndIpLiterals) {
  auto named = HostPort::parse("xds.culvert-system.svc:18000");
  ASSERT_TRUE(named);
  EXPECT_EQ(named->host, "xds.culvert-system.svc");
  EXPECT_EQ(named->port, 18000);
  EXPECT_FALSE(named->is_ip_literal);
  auto v6 = HostPort::parse("[fd00::1]:80");
  ASSERT_TRUE(v6);
  EXPECT_EQ(v6->host, "fd00::1");
  EXPECT_TRUE(v6->is_ip_literal);
  EXPECT_FALSE(HostPort::parse("host"));
  EXPECT_FALSE(HostPort::parse("host:0"));
  EXPECT_FALSE(HostPort::parse("bad_name:80"));
  EXPECT_FALSE(HostPort::parse("-lead.example:80"));
  EXPECT_FALSE(HostPort::parse("a..b:80"));
}

// IPv4 literals take a fast path; what it accepts and the address it yields must be
// inet_pton's, which decides whatever the fast path declines.
TEST(SocketAddressTest, Ipv4ParsingAgreesWithInetPton) {
  std::vector<std::string> inputs = {"0.0.0.0", "1.2.3.4", "10.0.39.15", "255.255.255.255", "256.1.1.1",
                                     "1.2.3.256", "01.2.3.4", "1.2.3.04", "1.02.3.4", "00.0.0.0",
                                     "1.2.3", "1.2.3.4.5", "1..2.3", ".1.2.3", "1.2.3.", "1.2.3.4 ",
                                     " 1.2.3.4", "1.2.3.-4", "1.2.3.4a", "0x1.2.3.4", "1234.1.1.1",
                                     "999.1.1.1", "1.2.3.0000", "", "::ffff:1.2.3.4", "1.2.3.4/8"};
  for (int i = 0; i < 300; ++i) {
    inputs.push_back(std::to_string(i) + "." + std::to_string(i % 7) + "." + std::to_string(300 - i) + "." +
                     std::to_string(i * 3));
  }
  for (const auto& input : inputs) {
    in_addr expected{};
    bool valid = inet_pton(AF_INET, input.c_str(), &expected) == 1;
    auto parsed = SocketAddress::parse(input, 80);
    if (!valid) {
      EXPECT_FALSE(parsed && parsed->isV4()) << input;
      continue;
    }
    ASSERT_TRUE(parsed) << input;
    ASSERT_TRUE(parsed->isV4()) << input;
    EXPECT_EQ(parsed->ipv4(), expected.s_addr) << input;
    EXPECT_EQ(parsed->port(), 80) << input;
    EXPECT_EQ(parsed->ip(), input) << input;
  }
}

TEST(CidrRangeTest, ContainsRespectsPrefixLength) {
  auto r = CidrRange::parse("10.96.0.0", 12);
  ASSERT_TRUE(r);
  EXPECT_TRUE(r->contains(*SocketAddress::parse("10.96.0.10", 0)));
  EXPECT_TRUE(r->contains(*SocketAddress::parse("10.111.255.1", 0)));
  EXPECT_FALSE(r->contains(*SocketAddress::parse("10.112.0.1", 0)));
  EXPECT_FALSE(r->contains(*SocketAddress::parse("fd00::1", 0)));
  EXPECT_FALSE(CidrRange::parse("10.0.0.0", 33));
  EXPECT_TRUE(CidrRange::parse("0.0.0.0", 0)->contains(*SocketAddress::parse("1.2.3.4", 0)));
}

}  // namespace
}  // namespace culvert::common
