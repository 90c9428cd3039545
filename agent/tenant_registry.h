#pragma once

#include <map>
#include <memory>
#include <set>
#include <string>
#include <vector>

#include <nlohmann/json.hpp>

#include "proxy/common/stats.h"
#include "proxy/config/snapshot.h"
#include "proxy/tenant/tenant_context.h"

namespace culvert::agent {

// The tenants culvertd knows (main thread only): one TenantContext per name, shared by
// that tenant's pods, kept current with the culvert.v1.Tenant resources of the last
// published configuration over the bootstrap's defaults. The data path never looks a
// tenant up here: pods carry their TenantContext (DESIGN.md §4).
class TenantRegistry {
public:
  TenantRegistry(common::StatsStore& stats, config::TenantLimits defaults, uint64_t buffered_bytes_watermark);

  // The tenant's context, made on first use with its current resource applied.
  std::shared_ptr<tenant::TenantContext> get(const std::string& name);
  // The tenant's id (what cv_enrolled and cv_tenant_scope carry): given on first use, the
  // lowest id from 1 not taken (0 is the node tenant's), and never changed while culvertd
  // runs. A tenant needs no pod to have one (a Tenant resource's scope is written first).
  uint32_t idOf(const std::string& name);
  // At start, before any id is given: the id a previous culvertd gave `name` (the pod
  // registry keeps it), so BPF records that survived the restart keep meaning the same
  // tenant. Ignored when the name or the id is already taken.
  void reserveId(const std::string& name, uint32_t id);
  // A new configuration's Tenant resources: every known tenant's limits and scope are
  // swapped (a tenant whose resource went away falls back to the defaults).
  void apply(std::shared_ptr<const config::TenantTable> tenants);

  // The fail mode the tenant's Tenant resource sets (Default: none, or no resource).
  config::TenantFailMode failModeOf(const std::string& name) const;

  const config::TenantLimits& defaults() const { return defaults_; }
  const tenant::MemoryWatermark& memory() const { return *memory_; }

  // /config_dump?tenant=NAME: that tenant's resource, effective limits, usage, and the
  // listeners and routes of `snapshot` it may use — nothing of other tenants.
  nlohmann::json dump(const std::string& name, const config::Snapshot& snapshot) const;

private:
  common::StatsStore& stats_;
  config::TenantLimits defaults_;
  std::shared_ptr<tenant::MemoryWatermark> memory_;
  std::shared_ptr<const config::TenantTable> table_ = std::make_shared<config::TenantTable>();
  std::map<std::string, std::shared_ptr<tenant::TenantContext>> tenants_;
  std::map<std::string, uint32_t> ids_;
  std::set<uint32_t> taken_ids_;
};

}  // namespace culvert::agent
