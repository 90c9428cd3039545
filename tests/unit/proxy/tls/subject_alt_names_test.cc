#include "proxy/tls/subject_alt_names.h"

#include <gtest/gtest.h>

#include "tests/unit/proxy/tls/test_certs.h"

namespace culvert::tls {
namespace {

using testing::derOf;

SanMatcher matcher(std::string_view text) {
  auto m = parseSanMatcher(text);
  EXPECT_TRUE(m.has_value()) << text;
  return m.value_or(SanMatcher{SanType::Dns, "unparsed"});
}

TEST(SanMatcherTest, ParsesEachKindAndNormalises) {
  EXPECT_EQ(matcher("DNS:XDS.Test"), (SanMatcher{SanType::Dns, "xds.test"}));
  EXPECT_EQ(matcher("ip:127.0.0.1"), (SanMatcher{SanType::Ip, "127.0.0.1"}));
  EXPECT_EQ(matcher("IP:0:0:0:0:0:0:0:1"), (SanMatcher{SanType::Ip, "::1"}));
  EXPECT_EQ(matcher("URI:spiffe://a/B"), (SanMatcher{SanType::Uri, "spiffe://a/B"}));
  EXPECT_EQ(toString(matcher("uri:spiffe://a/b")), "URI:spiffe://a/b");
}

TEST(SanMatcherTest, RejectsMalformed) {
  EXPECT_FALSE(parseSanMatcher("xds.test"));
  EXPECT_FALSE(parseSanMatcher("DNS:"));
  EXPECT_FALSE(parseSanMatcher("EMAIL:a@b"));
  auto bad_ip = parseSanMatcher("IP:10.0.0.256");
  ASSERT_FALSE(bad_ip);
  EXPECT_NE(bad_ip.error().message.find("not an IP address"), std::string::npos);
}

TEST(SubjectAltNamesFromDerTest, ReadsDnsIpAndUriInOrder) {
  auto sans = subjectAltNamesFromDer(derOf("server.crt"));
  ASSERT_TRUE(sans) << sans.error().message;
  std::vector<SubjectAltName> expected = {{SanType::Dns, "xds.test"},
                                          {SanType::Ip, "127.0.0.1"},
                                          {SanType::Ip, "::1"},
                                          {SanType::Uri, "spiffe://culvert.test/ns/cp/sa/xds"}};
  EXPECT_EQ(*sans, expected);
  EXPECT_EQ(describe(*sans), "DNS:xds.test, IP:127.0.0.1, IP:::1, URI:spiffe://culvert.test/ns/cp/sa/xds");
}

TEST(SubjectAltNamesFromDerTest, CertificateWithoutTheExtensionHasNone) {
  auto sans = subjectAltNamesFromDer(derOf("ca.crt"));
  ASSERT_TRUE(sans) << sans.error().message;
  EXPECT_TRUE(sans->empty());
  EXPECT_EQ(describe(*sans), "none");
}

TEST(SubjectAltNamesFromDerTest, TruncatedDerIsAnError) {
  std::string der = derOf("server.crt");
  EXPECT_FALSE(subjectAltNamesFromDer(der.substr(0, der.size() / 2)));
  EXPECT_FALSE(subjectAltNamesFromDer(""));
  EXPECT_FALSE(subjectAltNamesFromDer("\x30\x84\xff\xff\xff\xff"));
}

TEST(MatchesAnyTest, ExactIpUriAndDns) {
  std::vector<SubjectAltName> sans = {{SanType::Dns, "xds.test"},
                                      {SanType::Ip, "127.0.0.1"},
                                      {SanType::Uri, "spiffe://culvert.test/ns/cp/sa/xds"}};
  auto match = [&](std::vector<SanMatcher> m) { return matchesAny(sans, m); };
  EXPECT_TRUE(match({matcher("IP:127.0.0.1")}));
  EXPECT_FALSE(match({matcher("IP:127.0.0.2")}));
  EXPECT_TRUE(match({matcher("URI:spiffe://culvert.test/ns/cp/sa/xds")}));
  EXPECT_FALSE(match({matcher("URI:spiffe://culvert.test/ns/cp/sa/XDS")}));  // URIs are exact
  EXPECT_FALSE(match({matcher("URI:spiffe://culvert.test/ns/cp/sa")}));      // no prefixes
  EXPECT_TRUE(match({matcher("DNS:XDS.test")}));
  // A value of the right text but the wrong kind does not match.
  EXPECT_FALSE(match({SanMatcher{SanType::Dns, "127.0.0.1"}}));
  // Any one matcher is enough.
  EXPECT_TRUE(match({matcher("IP:10.0.0.1"), matcher("URI:spiffe://culvert.test/ns/cp/sa/xds")}));
  EXPECT_FALSE(match({}));
}

TEST(MatchesAnyTest, CertificateWildcardCoversOneLabel) {
  std::vector<SubjectAltName> sans = {{SanType::Dns, "*.cp.test"}};
  EXPECT_TRUE(matchesAny(sans, std::vector{matcher("DNS:xds.cp.test")}));
  EXPECT_FALSE(matchesAny(sans, std::vector{matcher("DNS:cp.test")}));
  EXPECT_FALSE(matchesAny(sans, std::vector{matcher("DNS:a.xds.cp.test")}));
}

TEST(MatchesAnyTest, Ipv6ComparesAddressesNotText) {
  std::vector<SubjectAltName> sans = {{SanType::Ip, "fd00::1"}};
  EXPECT_TRUE(matchesAny(sans, std::vector{matcher("IP:fd00:0:0::0001")}));
}

}  // namespace
}  // namespace culvert::tls
