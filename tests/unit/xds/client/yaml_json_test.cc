#include "xds/client/yaml_json.h"

#include <gtest/gtest.h>

namespace culvert::xds::client {
namespace {

TEST(YamlToJson, KeepsScalarTypes) {
  auto out = yamlToJson(R"(
plain_true: true
plain_false: False
quoted_bool: "true"
int: 80
negative: -3
quoted_int: "80"
float: 1.5
nul: ~
empty:
word: hello
list: [1, "two", yes]
nested: { a: { b: 1s } }
)");
  ASSERT_TRUE(out) << out.error().describe();
  ASSERT_EQ(out->size(), 1u);
  const auto& j = (*out)[0];
  EXPECT_EQ(j["plain_true"], true);
  EXPECT_EQ(j["plain_false"], false);
  EXPECT_EQ(j["quoted_bool"], "true");
  EXPECT_TRUE(j["int"].is_number_integer());
  EXPECT_EQ(j["int"], 80);
  EXPECT_EQ(j["negative"], -3);
  EXPECT_EQ(j["quoted_int"], "80");
  EXPECT_DOUBLE_EQ(j["float"].get<double>(), 1.5);
  EXPECT_TRUE(j["nul"].is_null());
  EXPECT_TRUE(j["empty"].is_null());
  EXPECT_EQ(j["word"], "hello");
  EXPECT_EQ(j["list"], nlohmann::json::parse(R"([1, "two", "yes"])"));
  EXPECT_EQ(j["nested"]["a"]["b"], "1s");
}

TEST(YamlToJson, NumberShapes) {
  auto out = yamlToJson("[+7, 0.5, .5, 5., 1e3, -2.5E-1, 1.2.3, 10.96.0.10, 1e, '-', 18446744073709551616]");
  ASSERT_TRUE(out) << out.error().describe();
  const auto& j = (*out)[0];
  EXPECT_EQ(j[0], 7);
  EXPECT_DOUBLE_EQ(j[1].get<double>(), 0.5);
  EXPECT_DOUBLE_EQ(j[2].get<double>(), 0.5);
  EXPECT_DOUBLE_EQ(j[3].get<double>(), 5.0);
  EXPECT_DOUBLE_EQ(j[4].get<double>(), 1000.0);
  EXPECT_DOUBLE_EQ(j[5].get<double>(), -0.25);
  EXPECT_EQ(j[6], "1.2.3");
  EXPECT_EQ(j[7], "10.96.0.10");
  EXPECT_EQ(j[8], "1e");
  EXPECT_EQ(j[9], "-");
  EXPECT_EQ(j[10], "18446744073709551616");  // beyond 64 bits: left to protobuf to judge
}

TEST(YamlToJson, MultipleDocuments) {
  auto out = yamlToJson("a: 1\n---\nb: 2\n");
  ASSERT_TRUE(out);
  ASSERT_EQ(out->size(), 2u);
  EXPECT_EQ((*out)[1]["b"], 2);
}

TEST(YamlToJson, InvalidYamlIsAnErrorNotAnException) {
  auto out = yamlToJson("a: [1, 2\n");
  ASSERT_FALSE(out);
  EXPECT_NE(out.error().message.find("YAML"), std::string::npos);
}

}  // namespace
}  // namespace culvert::xds::client
