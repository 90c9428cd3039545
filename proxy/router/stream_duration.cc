#include "proxy/router/stream_duration.h"

#include <charconv>

namespace culvert::router {

std::optional<std::chrono::milliseconds> parseGrpcTimeout(std::string_view value) {
  using namespace std::chrono;
  if (value.size() < 2 || value.size() > 9) return std::nullopt;
  uint64_t n = 0;
  auto digits = value.substr(0, value.size() - 1);
  auto [end, ec] = std::from_chars(digits.data(), digits.data() + digits.size(), n);
  if (ec != std::errc() || end != digits.data() + digits.size()) return std::nullopt;
  auto roundUp = [](auto d) { return ceil<milliseconds>(d); };
  switch (value.back()) {
    case 'H': return duration_cast<milliseconds>(hours(n));
    case 'M': return duration_cast<milliseconds>(minutes(n));
    case 'S': return duration_cast<milliseconds>(seconds(n));
    case 'm': return milliseconds(n);
    case 'u': return roundUp(microseconds(n));
    case 'n': return roundUp(nanoseconds(n));
    default: return std::nullopt;
  }
}

std::chrono::milliseconds streamDurationLimit(const config::MaxStreamDuration& limit,
                                              const http::HeaderMap& request_headers) {
  if (limit.grpc_timeout_header_max) {
    if (auto header = request_headers.get("grpc-timeout")) {
      if (auto timeout = parseGrpcTimeout(*header); timeout && timeout->count() > 0) {
        auto t = *timeout;
        if (limit.grpc_timeout_header_max->count() > 0 && t > *limit.grpc_timeout_header_max) {
          t = *limit.grpc_timeout_header_max;
        }
        if (t > limit.grpc_timeout_header_offset) t -= limit.grpc_timeout_header_offset;
        return t;
      }
    }
  }
  return limit.max;
}

}  // namespace culvert::router
