#pragma once

#include <cstdint>
#include <memory>
#include <string>

#include "proxy/common/stats.h"

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
  common::Counter* no_filter_chain = nullptr;

  static std::shared_ptr<TenantContext> create(uint32_t id, std::string name, common::StatsStore& stats);
};

}  // namespace culvert::tenant
