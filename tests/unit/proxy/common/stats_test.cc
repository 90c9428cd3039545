#include "proxy/common/stats.h"

#include <gtest/gtest.h>

#include <thread>

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

namespace culvert::common {
namespace {

TEST(HistogramTest, CumulativeBucketsSumAndCount) {
  Histogram h({10, 100}, 1.0);
  h.observe(5);
  h.observe(10);  // le is inclusive
  h.observe(50);
  h.observe(1000);
  auto t = h.totals();
  EXPECT_EQ(t.cumulative, (std::vector<uint64_t>{2, 3, 4}));
  EXPECT_EQ(t.count, 4u);
  EXPECT_EQ(t.sum, 1065u);
}

TEST(HistogramTest, ShardsFromManyThreadsMerge) {
  Histogram h({10}, 1.0);
  std::vector<std::thread> threads;
  for (int i = 0; i < 8; ++i) {
    threads.emplace_back([&] {
      for (int j = 0; j < 1000; ++j) h.observe(j % 2 ? 1 : 20);
    });
  }
  for (auto& t : threads) t.join();
  auto t = h.totals();
  EXPECT_EQ(t.count, 8000u);
  EXPECT_EQ(t.cumulative[0], 4000u);
  EXPECT_EQ(t.sum, 4000u * 21);
}

TEST(HistogramTest, RendersPrometheusHistogram) {
  StatsStore store;
  auto& h = store.histogram("culvert_rq_duration_seconds", {{"tenant", "a"}}, "Durations", {1000, 5000}, 1e-6);
  h.observe(800);
  h.observe(4000);
  h.observe(9000);
  EXPECT_EQ(&h, &store.histogram("culvert_rq_duration_seconds", {{"tenant", "a"}}));
  std::string text = store.renderPrometheus();
  EXPECT_NE(text.find("# TYPE culvert_rq_duration_seconds histogram\n"), std::string::npos) << text;
  EXPECT_NE(text.find("culvert_rq_duration_seconds_bucket{tenant=\"a\",le=\"0.001\"} 1\n"), std::string::npos) << text;
  EXPECT_NE(text.find("culvert_rq_duration_seconds_bucket{tenant=\"a\",le=\"0.005\"} 2\n"), std::string::npos) << text;
  EXPECT_NE(text.find("culvert_rq_duration_seconds_bucket{tenant=\"a\",le=\"+Inf\"} 3\n"), std::string::npos) << text;
  EXPECT_NE(text.find("culvert_rq_duration_seconds_sum{tenant=\"a\"} 0.0138\n"), std::string::npos) << text;
  EXPECT_NE(text.find("culvert_rq_duration_seconds_count{tenant=\"a\"} 3\n"), std::string::npos) << text;
  // A second series of the family takes the first one's bounds.
  store.histogram("culvert_rq_duration_seconds", {{"tenant", "b"}}).observe(2000);
  text = store.renderPrometheus("b");
  EXPECT_NE(text.find("culvert_rq_duration_seconds_bucket{tenant=\"b\",le=\"0.005\"} 1\n"), std::string::npos) << text;
  EXPECT_EQ(text.find("tenant=\"a\""), std::string::npos) << text;
}

}  // namespace
}  // namespace culvert::common
