#include "proxy/common/logging.h"

#include <spdlog/sinks/stdout_sinks.h>

namespace culvert::common {

Result<void> setupLogging(std::string_view level, LogFormat format) {
  auto lvl = spdlog::level::from_str(std::string(level));
  if (lvl == spdlog::level::off && level != "off") {
    return fail("unknown log level '" + std::string(level) + "' (trace, debug, info, warn, error, off)", "log.level");
  }
  auto logger = spdlog::stderr_logger_mt("culvert");
  spdlog::set_default_logger(logger);
  spdlog::set_level(lvl);
  if (format == LogFormat::Json) {
    // One JSON object per line; the message is escaped by the caller's discipline of
    // not logging raw request bytes.
    spdlog::set_pattern(R"({"time":"%Y-%m-%dT%H:%M:%S.%fZ","level":"%l","thread":%t,"msg":"%v"})",
                        spdlog::pattern_time_type::utc);
  } else {
    spdlog::set_pattern("%Y-%m-%dT%H:%M:%S.%e %^%l%$ [%t] %v");
  }
  spdlog::flush_on(spdlog::level::warn);
  return {};
}

}  // namespace culvert::common
