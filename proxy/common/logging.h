#pragma once

#include <spdlog/formatter.h>
#include <spdlog/spdlog.h>

#include <memory>
#include <string_view>

#include "proxy/common/error.h"

namespace culvert::common {

enum class LogFormat { Text, Json };

// Configures the process-wide spdlog logger. Call once, before threads start.
Result<void> setupLogging(std::string_view level, LogFormat format);

// The line formatter setupLogging installs. In JSON, every line is one valid JSON object
// whatever the message holds (quotes, backslashes, control bytes from hostile input).
std::unique_ptr<spdlog::formatter> makeLogFormatter(LogFormat format);

}  // namespace culvert::common
