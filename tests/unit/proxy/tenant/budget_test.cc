#include "proxy/tenant/budget.h"

#include <gtest/gtest.h>

#include "proxy/common/stats.h"
#include "proxy/tenant/tenant_context.h"

namespace culvert::tenant {
namespace {

using namespace std::chrono_literals;
using Clock = TenantBudget::Clock;

config::TenantLimits limits(uint32_t cx, uint32_t in_flight, uint64_t buffered, uint32_t rps, uint32_t burst) {
  return config::TenantLimits{cx, in_flight, buffered, rps, burst};
}

TEST(TenantBudget, ZeroMeansNoLimit) {
  TenantBudget b;
  for (int i = 0; i < 1000; ++i) {
    EXPECT_TRUE(b.tryAcquireConnection());
    EXPECT_EQ(b.admitRequest(Clock::now()), std::nullopt);
  }
  EXPECT_EQ(b.connections(), 1000u);
  EXPECT_EQ(b.requestsInFlight(), 1000u);
}

TEST(TenantBudget, ConnectionsAreRefusedOverTheLimitAndFreedOnRelease) {
  TenantBudget b;
  b.setLimits(limits(2, 0, 0, 0, 0));
  EXPECT_TRUE(b.tryAcquireConnection());
  EXPECT_TRUE(b.tryAcquireConnection());
  EXPECT_FALSE(b.tryAcquireConnection());
  EXPECT_EQ(b.connections(), 2u);  // a refusal charges nothing
  b.releaseConnection();
  EXPECT_TRUE(b.tryAcquireConnection());
}

TEST(TenantBudget, RequestsInFlight) {
  TenantBudget b;
  b.setLimits(limits(0, 2, 0, 0, 0));
  auto now = Clock::now();
  EXPECT_EQ(b.admitRequest(now), std::nullopt);
  EXPECT_EQ(b.admitRequest(now), std::nullopt);
  EXPECT_EQ(b.admitRequest(now), Budget::RequestsInFlight);
  EXPECT_EQ(b.requestsInFlight(), 2u);
  b.releaseRequest();
  EXPECT_EQ(b.admitRequest(now), std::nullopt);
}

TEST(TenantBudget, TokenBucketStartsFullRefillsAtTheRateAndCapsAtTheBurst) {
  TenantBudget b;
  b.setLimits(limits(0, 0, 0, 10, 3));
  auto t0 = Clock::now();
  for (int i = 0; i < 3; ++i) {
    EXPECT_EQ(b.admitRequest(t0), std::nullopt) << i;
    b.releaseRequest();
  }
  EXPECT_EQ(b.admitRequest(t0), Budget::RequestRate);
  EXPECT_EQ(b.requestsInFlight(), 0u);  // a refused request holds no slot
  // 10/s: one token per 100 ms.
  EXPECT_EQ(b.admitRequest(t0 + 50ms), Budget::RequestRate);
  EXPECT_EQ(b.admitRequest(t0 + 100ms), std::nullopt);
  EXPECT_EQ(b.admitRequest(t0 + 100ms), Budget::RequestRate);
  // A long idle period refills to the burst, not beyond.
  for (int i = 0; i < 3; ++i) EXPECT_EQ(b.admitRequest(t0 + 10s), std::nullopt) << i;
  EXPECT_EQ(b.admitRequest(t0 + 10s), Budget::RequestRate);
}

TEST(TenantBudget, BufferedBytesOverTheLimitRefuseNewRequests) {
  TenantBudget b;
  b.setLimits(limits(0, 0, 1000, 0, 0));
  b.addBuffered(1000);
  EXPECT_EQ(b.admitRequest(Clock::now()), std::nullopt);
  b.releaseRequest();
  b.addBuffered(1);
  EXPECT_EQ(b.admitRequest(Clock::now()), Budget::BufferedBytes);
  b.addBuffered(-501);
  EXPECT_EQ(b.bufferedBytes(), 500u);
  EXPECT_EQ(b.admitRequest(Clock::now()), std::nullopt);
}

TEST(TenantBudget, LimitsSwapAsAWhole) {
  TenantBudget b;
  b.setLimits(limits(1, 0, 0, 0, 0));
  auto before = b.limits();
  b.setLimits(limits(5, 7, 0, 0, 0));
  EXPECT_EQ(before->max_downstream_connections, 1u);  // a reader's copy never changes under it
  EXPECT_EQ(b.limits()->max_downstream_connections, 5u);
  EXPECT_EQ(b.limits()->max_requests_in_flight, 7u);
}

TEST(MemoryWatermark, ShedsTheHeaviestTenantsFirstAndNeverTheLightOnes) {
  auto memory = std::make_shared<MemoryWatermark>(1000);
  TenantBudget heavy(memory), medium(memory), light(memory);
  heavy.addBuffered(900);
  medium.addBuffered(300);
  light.addBuffered(10);
  EXPECT_EQ(memory->total(), 1210u);
  EXPECT_EQ(memory->activeTenants(), 3u);
  auto now = Clock::now();
  // Average share 403: only the heaviest is at or above it.
  EXPECT_EQ(heavy.admitRequest(now), Budget::Memory);
  EXPECT_EQ(medium.admitRequest(now), std::nullopt);
  EXPECT_EQ(light.admitRequest(now), std::nullopt);
  // Under the watermark nobody is shed.
  heavy.addBuffered(-900);
  EXPECT_EQ(memory->activeTenants(), 2u);
  EXPECT_EQ(heavy.admitRequest(now), std::nullopt);
  EXPECT_EQ(medium.admitRequest(now), std::nullopt);
}

TEST(TenantContext, ApplyFallsBackToTheDefaultsAndScopesListenersAndRoutes) {
  common::StatsStore stats;
  auto t = TenantContext::create(1, "team-a", stats);
  config::TenantLimits defaults{10, 20, 30, 40, 50};
  t->apply(nullptr, defaults);
  EXPECT_EQ(*t->budget.limits(), defaults);
  EXPECT_TRUE(t->allowsListener("anything"));

  auto resource = std::make_shared<config::Tenant>();
  resource->name = "team-a";
  resource->limits.max_requests_in_flight = 2;
  resource->allowed_listeners = {"vip-a"};
  resource->allowed_routes = {"routes-a"};
  t->apply(resource, defaults);
  EXPECT_EQ(t->budget.limits()->max_requests_in_flight, 2u);
  EXPECT_EQ(t->budget.limits()->max_downstream_connections, 10u);  // unset: the default
  EXPECT_TRUE(t->allowsListener("vip-a"));
  EXPECT_FALSE(t->allowsListener("vip-b"));
  EXPECT_TRUE(t->allowsRoute("routes-a"));
  EXPECT_FALSE(t->allowsRoute("routes-b"));
}

TEST(TenantContext, RequestSlotCountsShedAndReleasesOnce) {
  common::StatsStore stats;
  auto t = TenantContext::create(1, "team-a", stats);
  t->budget.setLimits(config::TenantLimits{0, 1, 0, 0, 0});
  RequestSlot first;
  RequestSlot second;
  EXPECT_EQ(first.admit(*t), std::nullopt);
  EXPECT_EQ(second.admit(*t), Budget::RequestsInFlight);
  EXPECT_EQ(t->shed[static_cast<size_t>(Budget::RequestsInFlight)]->value(), 1u);
  EXPECT_NE(stats.renderPrometheus().find(
                "culvert_tenant_shed_total{tenant=\"team-a\",budget=\"requests_in_flight\"} 1"),
            std::string::npos);
  first.release();
  first.release();
  EXPECT_EQ(t->budget.requestsInFlight(), 0u);
  EXPECT_EQ(overloadReason(Budget::RequestsInFlight), "tenant-requests-in-flight");
}

TEST(TenantContext, BufferChargeFollowsTheConnectionAndUnchargesOnDestruction) {
  common::StatsStore stats;
  auto t = TenantContext::create(1, "team-a", stats);
  {
    BufferCharge charge;
    charge.bind(*t);
    charge.set(4096);
    EXPECT_EQ(t->budget.bufferedBytes(), 4096u);
    charge.set(100);
    EXPECT_EQ(t->budget.bufferedBytes(), 100u);
  }
  EXPECT_EQ(t->budget.bufferedBytes(), 0u);
}

}  // namespace
}  // namespace culvert::tenant
