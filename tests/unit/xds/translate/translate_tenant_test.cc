#include <google/protobuf/text_format.h>
#include <google/protobuf/unknown_field_set.h>
#include <gtest/gtest.h>

#include "xds/proto/culvert/v1/tenant.pb.h"
#include "xds/translate/translate.h"

namespace culvert::xds::translate {
namespace {

culvert::v1::Tenant parse(const std::string& text) {
  culvert::v1::Tenant t;
  EXPECT_TRUE(google::protobuf::TextFormat::ParseFromString(text, &t)) << text;
  return t;
}

TEST(TranslateTenant, EveryFieldAndTheUnsetOnesStayUnset) {
  auto t = translateTenant(parse(R"(
    name: "team-a"
    limits { max_downstream_connections { value: 10 } max_requests_in_flight { value: 0 }
             max_buffered_bytes { value: 1048576 } max_requests_per_second { value: 50 } burst { value: 5 } }
    weight { value: 3 }
    fail_mode: CLOSED
    allowed_listeners: "vip-a" allowed_routes: "routes-a" allowed_routes: "routes-b")"));
  ASSERT_TRUE(t) << t.error().describe();
  EXPECT_EQ(t->name, "team-a");
  EXPECT_EQ(t->limits.max_downstream_connections, 10u);
  EXPECT_EQ(t->limits.max_requests_in_flight, 0u);  // set to 0: no limit, not the default
  EXPECT_EQ(t->limits.max_buffered_bytes, 1048576u);
  EXPECT_EQ(t->limits.max_requests_per_second, 50u);
  EXPECT_EQ(t->limits.burst, 5u);
  EXPECT_EQ(t->weight, 3u);
  EXPECT_EQ(t->fail_mode, config::TenantFailMode::Closed);
  EXPECT_EQ(t->allowed_listeners, std::vector<std::string>{"vip-a"});
  EXPECT_EQ(t->allowed_routes, (std::vector<std::string>{"routes-a", "routes-b"}));

  auto minimal = translateTenant(parse(R"(name: "b")"));
  ASSERT_TRUE(minimal);
  EXPECT_FALSE(minimal->limits.max_downstream_connections);
  EXPECT_EQ(minimal->weight, 1u);
  EXPECT_EQ(minimal->fail_mode, config::TenantFailMode::Default);
  EXPECT_EQ(translateTenant(parse(R"(name: "c" fail_mode: OPEN)"))->fail_mode, config::TenantFailMode::Open);
  config::TenantLimits defaults{1, 2, 3, 4, 5};
  EXPECT_EQ(minimal->limits.over(defaults), defaults);
}

TEST(TranslateTenant, RejectionsNameTheField) {
  struct Case {
    const char* text;
    const char* where;
  } cases[] = {
      {R"(limits { max_requests_in_flight { value: 1 } })", "name"},
      {R"(name: "a" weight { value: 0 })", "weight"},
      {R"(name: "a" weight { value: 1001 })", "weight"},
      {R"(name: "a" limits { burst { value: 5 } })", "limits.burst"},
      {R"(name: "a" allowed_listeners: "x" allowed_listeners: "x")", "allowed_listeners[1]"},
      {R"(name: "a" allowed_routes: "")", "allowed_routes[0]"},
  };
  for (const auto& c : cases) {
    auto t = translateTenant(parse(c.text));
    ASSERT_FALSE(t) << c.text;
    EXPECT_EQ(t.error().where, c.where) << c.text << ": " << t.error().describe();
  }
}

TEST(TranslateTenant, AnUnknownFailModeIsRejected) {
  auto proto = parse(R"(name: "a")");
  proto.set_fail_mode(static_cast<culvert::v1::Tenant::FailMode>(7));  // a newer control plane's value
  auto t = translateTenant(proto);
  ASSERT_FALSE(t);
  EXPECT_EQ(t.error().where, "fail_mode") << t.error().describe();
}

TEST(TranslateTenant, RejectsUnknownFields) {
  auto proto = parse(R"(name: "a")");
  proto.GetReflection()->MutableUnknownFields(&proto)->AddVarint(99, 1);
  auto t = translateTenant(proto);
  ASSERT_FALSE(t);
  EXPECT_NE(t.error().message.find("field number 99"), std::string::npos) << t.error().describe();
}

}  // namespace
}  // namespace culvert::xds::translate
