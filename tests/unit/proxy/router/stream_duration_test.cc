#include "proxy/router/stream_duration.h"

#include <gtest/gtest.h>

namespace culvert::router {
namespace {

using std::chrono::milliseconds;

TEST(GrpcTimeoutTest, Units) {
  EXPECT_EQ(parseGrpcTimeout("2H"), milliseconds(7'200'000));
  EXPECT_EQ(parseGrpcTimeout("3M"), milliseconds(180'000));
  EXPECT_EQ(parseGrpcTimeout("5S"), milliseconds(5000));
  EXPECT_EQ(parseGrpcTimeout("250m"), milliseconds(250));
  EXPECT_EQ(parseGrpcTimeout("1500u"), milliseconds(2));  // rounded up
  EXPECT_EQ(parseGrpcTimeout("1n"), milliseconds(1));
  EXPECT_EQ(parseGrpcTimeout("99999999m"), milliseconds(99'999'999));
}

TEST(GrpcTimeoutTest, Malformed) {
  for (const char* bad : {"", "S", "5", "5s", "-5S", "5 S", "123456789S", "1.5S"}) {
    EXPECT_EQ(parseGrpcTimeout(bad), std::nullopt) << bad;
  }
}

http::HeaderMap withTimeout(const char* value) {
  http::HeaderMap h;
  h.add("grpc-timeout", value);
  return h;
}

TEST(StreamDurationTest, EnvoysRule) {
  config::MaxStreamDuration limit;
  limit.max = milliseconds(1000);
  EXPECT_EQ(streamDurationLimit(limit, withTimeout("200m")), milliseconds(1000));  // no header max: ignored
  limit.grpc_timeout_header_max = milliseconds(500);
  EXPECT_EQ(streamDurationLimit(limit, withTimeout("200m")), milliseconds(200));
  EXPECT_EQ(streamDurationLimit(limit, withTimeout("2S")), milliseconds(500));  // capped
  EXPECT_EQ(streamDurationLimit(limit, http::HeaderMap{}), milliseconds(1000));
  EXPECT_EQ(streamDurationLimit(limit, withTimeout("junk")), milliseconds(1000));
  limit.grpc_timeout_header_max = milliseconds(0);  // the header, uncapped
  EXPECT_EQ(streamDurationLimit(limit, withTimeout("2S")), milliseconds(2000));
  limit.grpc_timeout_header_offset = milliseconds(50);
  EXPECT_EQ(streamDurationLimit(limit, withTimeout("2S")), milliseconds(1950));
  EXPECT_EQ(streamDurationLimit(config::MaxStreamDuration{}, withTimeout("2S")), milliseconds(0));
}

}  // namespace
}  // namespace culvert::router
