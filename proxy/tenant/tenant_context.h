#pragma once

#include <array>
#include <atomic>
#include <cstdint>
#include <memory>
#include <string>
#include <string_view>

#include "proxy/common/stats.h"
#include "proxy/config/tenant.h"
#include "proxy/tenant/budget.h"

namespace culvert::tenant {

// Everything the data path charges to a tenant, handed to listeners and connections so
// no data-path code reaches a global tenant table (DESIGN.md §4). Shared by all workers;
// counters are atomic.
struct TenantContext {
  uint32_t id = 0;
  std::string name;

  common::Counter* downstream_cx_total = nullptr;
  common::Gauge* downstream_cx_active = nullptr;
  common::Counter* downstream_rq_total = nullptr;
  common::Counter* downstream_rq_2xx = nullptr;
  common::Counter* downstream_rq_4xx = nullptr;
  common::Counter* downstream_rq_5xx = nullptr;
  common::Counter* downstream_rq_bad = nullptr;
  common::Counter* upstream_cx_connect_fail = nullptr;
  common::Counter* upstream_rq_timeout = nullptr;
  // Retries and per-try timeouts (proxy/router/retry_state.h).
  common::Counter* upstream_rq_retry = nullptr;
  common::Counter* upstream_rq_retry_success = nullptr;
  common::Counter* upstream_rq_retry_overflow = nullptr;
  common::Counter* upstream_rq_retry_limit_exceeded = nullptr;
  common::Counter* upstream_rq_retry_body_too_large = nullptr;
  common::Counter* upstream_rq_per_try_timeout = nullptr;
  common::Counter* upstream_rq_per_try_idle_timeout = nullptr;
  // Downstream stream timeouts (HttpConnectionManager), answered 408.
  common::Counter* downstream_rq_idle_timeout = nullptr;
  common::Counter* downstream_rq_request_timeout = nullptr;
  common::Counter* downstream_rq_headers_timeout = nullptr;
  common::Counter* downstream_rq_max_duration_reached = nullptr;
  // Downstream connection lifetimes (HttpConnectionManager.common_http_protocol_options).
  common::Counter* downstream_cx_idle_timeout = nullptr;
  common::Counter* downstream_cx_max_duration_reached = nullptr;
  common::Counter* downstream_cx_max_requests_reached = nullptr;
  common::Counter* no_filter_chain = nullptr;
  // Fair scheduling (proxy/event/scheduler.h): a connection of the tenant stopped reading
  // until the next round.
  common::Counter* share_paused = nullptr;

  // Budgets (proxy/tenant/budget.h) and what was shed, by budget kind.
  TenantBudget budget;
  std::array<common::Counter*, kBudgetKinds> shed{};
  void countShed(Budget b) const { shed[static_cast<size_t>(b)]->inc(); }

  // The tenant's culvert.v1.Tenant resource (scope, weight); null = none (all allowed).
  // Swapped as a whole by the main thread.
  std::atomic<std::shared_ptr<const config::Tenant>> resource;
  std::atomic<uint32_t> weight{1};  // the resource's, read per scheduled piece of work
  bool allowsListener(std::string_view listener) const;
  bool allowsRoute(std::string_view route_config) const;
  // Applies a Tenant resource (or none) over the bootstrap's default limits.
  void apply(std::shared_ptr<const config::Tenant> tenant, const config::TenantLimits& defaults);

  explicit TenantContext(std::shared_ptr<MemoryWatermark> memory = nullptr) : budget(std::move(memory)) {}
  static std::shared_ptr<TenantContext> create(uint32_t id, std::string name, common::StatsStore& stats,
                                               std::shared_ptr<MemoryWatermark> memory = nullptr);
};

// One admitted request's in-flight slot: released once, by release() or destruction.
class RequestSlot {
public:
  RequestSlot() = default;
  RequestSlot(const RequestSlot&) = delete;
  RequestSlot& operator=(const RequestSlot&) = delete;
  ~RequestSlot() { release(); }
  // nullopt = admitted (the slot is held); else the budget that refused it, counted.
  std::optional<Budget> admit(TenantContext& tenant);
  void release();

private:
  TenantContext* held_ = nullptr;
};

// The bytes one connection holds, charged to its tenant; set(0) or destruction uncharges.
class BufferCharge {
public:
  BufferCharge() = default;
  BufferCharge(const BufferCharge&) = delete;
  BufferCharge& operator=(const BufferCharge&) = delete;
  ~BufferCharge() { set(0); }
  void bind(TenantContext& tenant) { tenant_ = &tenant; }
  void set(uint64_t bytes);

private:
  TenantContext* tenant_ = nullptr;
  uint64_t charged_ = 0;
};

// The reason header of a shed request ("x-culvert-overload: tenant-<budget>").
inline constexpr std::string_view kOverloadHeader = "x-culvert-overload";
std::string overloadReason(Budget budget);

}  // namespace culvert::tenant
