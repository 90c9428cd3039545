#include "proxy/common/stats.h"

#include <gtest/gtest.h>

namespace culvert::common {
namespace {

TEST(StatsStoreTest, RendersPrometheusTextWithLabels) {
  StatsStore store;
  store.counter("culvert_rq_total", {{"tenant", "a"}}, "Requests").inc(3);
  store.counter("culvert_rq_total", {{"tenant", "b"}}).inc();
  store.gauge("culvert_cx_active", {{"tenant", "a"}}).set(2);
  std::string text = store.renderPrometheus();
  EXPECT_NE(text.find("# HELP culvert_rq_total Requests\n"), std::string::npos);
  EXPECT_NE(text.find("# TYPE culvert_rq_total counter\n"), std::string::npos);
  EXPECT_NE(text.find("culvert_rq_total{tenant=\"a\"} 3\n"), std::string::npos);
  EXPECT_NE(text.find("culvert_rq_total{tenant=\"b\"} 1\n"), std::string::npos);
  EXPECT_NE(text.find("# TYPE culvert_cx_active gauge\nculvert_cx_active{tenant=\"a\"} 2\n"), std::string::npos);
}

TEST(StatsStoreTest, SameNameAndLabelsIsTheSameCounter) {
  StatsStore store;
  auto& a = store.counter("x", {{"tenant", "t"}});
  auto& b = store.counter("x", {{"tenant", "t"}});
  EXPECT_EQ(&a, &b);
}

TEST(StatsStoreTest, TenantFilterShowsOnlyThatTenant) {
  StatsStore store;
  store.counter("culvert_rq_total", {{"tenant", "a"}}).inc();
  store.counter("culvert_rq_total", {{"tenant", "b"}}).inc();
  store.counter("culvert_global_total").inc();
  std::string text = store.renderPrometheus("a");
  EXPECT_NE(text.find("tenant=\"a\""), std::string::npos);
  EXPECT_EQ(text.find("tenant=\"b\""), std::string::npos);
  EXPECT_EQ(text.find("culvert_global_total"), std::string::npos);
}

TEST(StatsStoreTest, EscapesLabelValues) {
  StatsStore store;
  store.counter("x", {{"tenant", "a\"b\\c"}}).inc();
  EXPECT_NE(store.renderPrometheus().find(R"(x{tenant="a\"b\\c"} 1)"), std::string::npos);
}

}  // namespace
}  // namespace culvert::common
