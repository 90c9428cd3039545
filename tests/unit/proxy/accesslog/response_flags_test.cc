#include "proxy/accesslog/response_flags.h"

#include <gtest/gtest.h>

#include "proxy/accesslog/access_log.h"

namespace culvert::accesslog {
namespace {

TEST(ResponseFlags, EnvoysCodesInEnvoysOrder) {
  ResponseFlags flags;
  EXPECT_EQ(flags.toString(), "-");
  flags.set(ResponseFlag::UpstreamRetryLimitExceeded);
  flags.set(ResponseFlag::UpstreamConnectionFailure);
  EXPECT_EQ(flags.toString(), "UF,URX");
  flags.set(ResponseFlag::NoHealthyUpstream);
  EXPECT_EQ(flags.toString(), "UH,UF,URX");
}

TEST(ResponseFlags, ShortCodesRoundTrip) {
  for (uint32_t i = 0; i < static_cast<uint32_t>(ResponseFlag::Count); ++i) {
    auto flag = static_cast<ResponseFlag>(i);
    EXPECT_EQ(parseShortCode(shortCode(flag)), flag) << shortCode(flag);
  }
  EXPECT_EQ(shortCode(ResponseFlag::NoRouteFound), "NR");
  EXPECT_EQ(shortCode(ResponseFlag::UpstreamOverflow), "UO");
  EXPECT_EQ(shortCode(ResponseFlag::OverloadManager), "OM");
  EXPECT_EQ(shortCode(ResponseFlag::DownstreamConnectionTermination), "DC");
  EXPECT_FALSE(parseShortCode("XX"));
}

TEST(Filter, StatusCodeAndFlags) {
  StreamInfo info;
  info.response_code = 404;
  Filter ge{{Filter::StatusCode{Filter::Op::Ge, 400}}, std::nullopt};
  Filter le{{Filter::StatusCode{Filter::Op::Le, 299}}, std::nullopt};
  Filter eq{{Filter::StatusCode{Filter::Op::Eq, 404}}, std::nullopt};
  EXPECT_TRUE(ge.matches(info));
  EXPECT_FALSE(le.matches(info));
  EXPECT_TRUE(eq.matches(info));
  Filter any_flag{std::nullopt, ResponseFlags{}};
  EXPECT_FALSE(any_flag.matches(info));
  info.flags.set(ResponseFlag::NoRouteFound);
  EXPECT_TRUE(any_flag.matches(info));
  ResponseFlags uf;
  uf.set(ResponseFlag::UpstreamConnectionFailure);
  EXPECT_FALSE((Filter{std::nullopt, uf}.matches(info)));
}

}  // namespace
}  // namespace culvert::accesslog
