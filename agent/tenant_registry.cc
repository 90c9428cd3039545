#include "agent/tenant_registry.h"

#include <algorithm>

namespace culvert::agent {

namespace {

std::shared_ptr<const config::Tenant> find(const config::TenantTable& table, const std::string& name) {
  auto it = table.by_name.find(name);
  return it == table.by_name.end() ? nullptr : it->second;
}

nlohmann::json limitsJson(const config::TenantLimits& l) {
  return {{"max_downstream_connections", l.max_downstream_connections},
          {"max_requests_in_flight", l.max_requests_in_flight},
          {"max_buffered_bytes", l.max_buffered_bytes},
          {"max_requests_per_second", l.max_requests_per_second},
          {"burst", l.burst}};
}

}  // namespace

TenantRegistry::TenantRegistry(common::StatsStore& stats, config::TenantLimits defaults,
                               uint64_t buffered_bytes_watermark)
    : stats_(stats), defaults_(defaults), memory_(std::make_shared<tenant::MemoryWatermark>(buffered_bytes_watermark)) {}

std::shared_ptr<tenant::TenantContext> TenantRegistry::get(const std::string& name) {
  auto& t = tenants_[name];
  if (!t) {
    t = tenant::TenantContext::create(idOf(name), name, stats_, memory_);
    t->apply(find(*table_, name), defaults_);
  }
  return t;
}

uint32_t TenantRegistry::idOf(const std::string& name) {
  if (auto it = ids_.find(name); it != ids_.end()) return it->second;
  uint32_t id = 1;  // 0 is the node tenant's (connections to bound listeners)
  while (taken_ids_.contains(id)) ++id;
  ids_[name] = id;
  taken_ids_.insert(id);
  return id;
}

void TenantRegistry::reserveId(const std::string& name, uint32_t id) {
  if (id == 0 || ids_.contains(name) || taken_ids_.contains(id)) return;
  ids_[name] = id;
  taken_ids_.insert(id);
}

void TenantRegistry::apply(std::shared_ptr<const config::TenantTable> tenants) {
  table_ = tenants ? std::move(tenants) : std::make_shared<config::TenantTable>();
  for (auto& [name, context] : tenants_) context->apply(find(*table_, name), defaults_);
}

config::TenantFailMode TenantRegistry::failModeOf(const std::string& name) const {
  auto resource = find(*table_, name);
  return resource ? resource->fail_mode : config::TenantFailMode::Default;
}

nlohmann::json TenantRegistry::dump(const std::string& name, const config::Snapshot& snapshot) const {
  nlohmann::json out;
  out["tenant"] = name;
  auto resource = find(*table_, name);
  config::TenantLimits limits = resource ? resource->limits.over(defaults_) : defaults_;
  out["limits"] = limitsJson(limits);
  out["limits_source"] = resource ? "culvert.v1.Tenant" : "bootstrap tenants.defaults";
  if (resource) {
    out["weight"] = resource->weight;
    if (resource->fail_mode != config::TenantFailMode::Default) {
      out["fail_mode"] = resource->fail_mode == config::TenantFailMode::Closed ? "closed" : "open";
    }
    out["allowed_listeners"] = resource->allowed_listeners;
    out["allowed_routes"] = resource->allowed_routes;
  }
  auto allowed = [](const std::vector<std::string>& list, const std::string& n) {
    return list.empty() || std::find(list.begin(), list.end(), n) != list.end();
  };
  nlohmann::json listeners = nlohmann::json::array();
  nlohmann::json routes = nlohmann::json::array();
  for (const auto& [lname, listener] : snapshot.listeners->by_name) {
    if (resource && !allowed(resource->allowed_listeners, lname)) continue;
    listeners.push_back(lname);
    for (const auto& chain : listener->filter_chains) {
      if (!chain.isHttp()) continue;
      const auto& rname = chain.http.route_config->name;
      if (resource && !allowed(resource->allowed_routes, rname)) continue;
      if (std::find(routes.begin(), routes.end(), rname) == routes.end()) routes.push_back(rname);
    }
  }
  out["listeners"] = std::move(listeners);
  out["routes"] = std::move(routes);
  if (auto it = tenants_.find(name); it != tenants_.end()) {
    const auto& b = it->second->budget;
    out["usage"] = {{"downstream_connections", b.connections()},
                    {"requests_in_flight", b.requestsInFlight()},
                    {"buffered_bytes", b.bufferedBytes()}};
  }
  return out;
}

}  // namespace culvert::agent
