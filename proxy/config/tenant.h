#pragma once

// culvert.v1.Tenant as the data path sees it (xds/proto/culvert/v1/tenant.proto).

#include <cstdint>
#include <map>
#include <memory>
#include <optional>
#include <string>
#include <vector>

namespace culvert::config {

// A tenant's budgets; 0 = no limit.
struct TenantLimits {
  uint32_t max_downstream_connections = 0;
  uint32_t max_requests_in_flight = 0;
  uint64_t max_buffered_bytes = 0;
  uint32_t max_requests_per_second = 0;
  uint32_t burst = 0;  // token bucket size; 0 = max_requests_per_second

  bool operator==(const TenantLimits&) const = default;
};

// Limits as a Tenant resource sets them: an unset field falls back to the bootstrap's
// default for tenants.
struct TenantLimitOverrides {
  std::optional<uint32_t> max_downstream_connections;
  std::optional<uint32_t> max_requests_in_flight;
  std::optional<uint64_t> max_buffered_bytes;
  std::optional<uint32_t> max_requests_per_second;
  std::optional<uint32_t> burst;

  TenantLimits over(const TenantLimits& defaults) const {
    return TenantLimits{max_downstream_connections.value_or(defaults.max_downstream_connections),
                        max_requests_in_flight.value_or(defaults.max_requests_in_flight),
                        max_buffered_bytes.value_or(defaults.max_buffered_bytes),
                        max_requests_per_second.value_or(defaults.max_requests_per_second),
                        burst.value_or(defaults.burst)};
  }
};

enum class TenantFailMode { Default, Open, Closed };

struct Tenant {
  std::string name;
  TenantLimitOverrides limits;
  uint32_t weight = 1;
  TenantFailMode fail_mode = TenantFailMode::Default;
  std::vector<std::string> allowed_listeners;  // empty = all
  std::vector<std::string> allowed_routes;     // empty = all
};

struct TenantTable {
  std::map<std::string, std::shared_ptr<const Tenant>> by_name;
};

}  // namespace culvert::config
