#pragma once

#include <array>
#include <atomic>
#include <chrono>
#include <cstdint>
#include <memory>
#include <mutex>
#include <optional>
#include <string_view>

#include "proxy/config/tenant.h"

namespace culvert::tenant {

// What a tenant ran out of when it is shed.
enum class Budget { Connections, RequestsInFlight, RequestRate, BufferedBytes, Memory };
inline constexpr size_t kBudgetKinds = 5;
// "connections", "requests_in_flight", "request_rate", "buffered_bytes", "memory".
std::string_view toString(Budget budget);

// The process-wide buffered-bytes watermark. Over it, a tenant holding at least an even
// share of the buffered bytes (among the tenants holding any) is shed: the heaviest
// tenant always qualifies and a tenant below the average never does, so the heaviest go
// first and never everyone at once. Shared by every tenant's budget; lock-free.
class MemoryWatermark {
public:
  explicit MemoryWatermark(uint64_t limit = 0) : limit_(limit) {}
  void setLimit(uint64_t limit) { limit_.store(limit, std::memory_order_relaxed); }
  uint64_t limit() const { return limit_.load(std::memory_order_relaxed); }
  uint64_t total() const { return total_.load(std::memory_order_relaxed); }
  uint32_t activeTenants() const { return active_tenants_.load(std::memory_order_relaxed); }

  // A tenant's buffered bytes went from `before` to `after`.
  void onTenantBuffered(uint64_t before, uint64_t after);
  bool shouldShed(uint64_t tenant_bytes) const;

private:
  std::atomic<uint64_t> limit_;
  std::atomic<uint64_t> total_{0};
  std::atomic<uint32_t> active_tenants_{0};
};

// One tenant's budgets, shared by every worker (atomics; the token bucket takes a short
// lock). Limits are replaced as a whole when the tenant's resource changes, so a check
// never sees half of an old and half of a new set.
class TenantBudget {
public:
  using Clock = std::chrono::steady_clock;

  // `memory` (optional) is shared: a budget may outlive whoever made it (shutdown).
  explicit TenantBudget(std::shared_ptr<MemoryWatermark> memory = nullptr);

  void setLimits(const config::TenantLimits& limits);
  std::shared_ptr<const config::TenantLimits> limits() const { return limits_.load(); }

  // A downstream connection: false = over max_downstream_connections (nothing charged).
  bool tryAcquireConnection();
  void releaseConnection();

  // A new request. nullopt = admitted, and the caller holds one in-flight slot until
  // releaseRequest(); otherwise the budget that refused it (nothing charged).
  std::optional<Budget> admitRequest(Clock::time_point now);
  void releaseRequest();

  // Bytes the proxy holds for this tenant's connections.
  void addBuffered(int64_t delta);

  uint64_t connections() const { return connections_.load(std::memory_order_relaxed); }
  uint64_t requestsInFlight() const { return in_flight_.load(std::memory_order_relaxed); }
  uint64_t bufferedBytes() const { return buffered_.load(std::memory_order_relaxed); }

private:
  bool takeToken(const config::TenantLimits& limits, Clock::time_point now);

  std::shared_ptr<MemoryWatermark> memory_;
  std::atomic<std::shared_ptr<const config::TenantLimits>> limits_;
  std::atomic<uint64_t> connections_{0};
  std::atomic<uint64_t> in_flight_{0};
  std::atomic<uint64_t> buffered_{0};
  std::mutex bucket_mutex_;
  double tokens_ = -1;  // < 0: not started (the bucket starts full)
  Clock::time_point refilled_at_{};
};

}  // namespace culvert::tenant
