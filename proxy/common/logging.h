#pragma once

#include <spdlog/spdlog.h>

#include <string_view>

#include "proxy/common/error.h"

namespace culvert::common {

enum class LogFormat { Text, Json };

// Configures the process-wide spdlog logger. Call once, before threads start.
Result<void> setupLogging(std::string_view level, LogFormat format);

}  // namespace culvert::common
