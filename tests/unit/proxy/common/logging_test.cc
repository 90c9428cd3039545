#include "proxy/common/logging.h"

#include <gtest/gtest.h>
#include <nlohmann/json.hpp>

namespace culvert::common {
namespace {

std::string formatLine(LogFormat format, std::string_view message) {
  auto formatter = makeLogFormatter(format);
  spdlog::details::log_msg msg("culvert", spdlog::level::warn, spdlog::string_view_t(message.data(), message.size()));
  spdlog::memory_buf_t out;
  formatter->format(msg, out);
  return std::string(out.data(), out.size());
}

TEST(LogFormatterTest, JsonLineIsValidJsonWhateverTheMessageHolds) {
  const std::string hostile = std::string("file \"a\\b.yaml\": bad\tvalue\nnext line \x01\x1f\x7f end ") + "caf\xc3\xa9";
  std::string line = formatLine(LogFormat::Json, hostile);
  ASSERT_FALSE(line.empty());
  EXPECT_EQ(line.back(), '\n');
  EXPECT_EQ(line.find('\n'), line.size() - 1) << "one record, one line";
  auto doc = nlohmann::json::parse(line);
  EXPECT_EQ(doc["msg"], hostile);
  EXPECT_EQ(doc["level"], "warning");
  EXPECT_TRUE(doc["thread"].is_number());
  EXPECT_EQ(doc["time"].get<std::string>().back(), 'Z');
}

TEST(LogFormatterTest, TextLineKeepsTheMessageAsIs) {
  std::string line = formatLine(LogFormat::Text, "quote \" stays");
  EXPECT_NE(line.find("warning [") , std::string::npos) << line;
  EXPECT_NE(line.find("quote \" stays"), std::string::npos) << line;
}

}  // namespace
}  // namespace culvert::common
