#include "agent/capture_plan.h"

namespace culvert::agent {

CapturePlan planCapture(const config::ListenerTable& listeners, const ListenerScopes& scopes) {
  CapturePlan plan;
  for (const auto& [name, listener] : listeners.by_name) {
    if (listener->bind_to_port) continue;
    ebpf::TenantScope tenants;
    if (auto it = scopes.find(name); it != scopes.end()) tenants = it->second;
    const auto& address = listener->address;
    if (!address.isAnyAddress() || listener->filter_chains.empty()) {
      plan.destinations.emplace_back(address, tenants);
      continue;
    }
    std::vector<ebpf::CapturedPrefix> narrowed;
    bool whole_port = false;
    for (const auto& chain : listener->filter_chains) {
      if (chain.match.prefix_ranges.empty()) {
        whole_port = true;  // this chain takes any destination on the port
        break;
      }
      for (const auto& range : chain.match.prefix_ranges) {
        if (range.prefix.family() == address.family()) narrowed.push_back({range, address.port(), tenants});
      }
    }
    if (whole_port) {
      plan.destinations.emplace_back(address, tenants);
    } else {
      plan.prefixes.insert(plan.prefixes.end(), narrowed.begin(), narrowed.end());
    }
  }
  return plan;
}

ScopeSlots assignScopeSlots(const std::map<uint32_t, uint32_t>& current, const std::set<uint32_t>& restricted,
                            size_t capacity) {
  ScopeSlots out;
  std::vector<bool> taken(capacity, false);
  for (const auto& [id, slot] : current) {
    if (slot < capacity) taken[slot] = true;  // held before this change: not free yet
  }
  for (uint32_t id : restricted) {
    if (auto it = current.find(id); it != current.end() && it->second < capacity) out.slots[id] = it->second;
  }
  size_t next = 0;
  for (uint32_t id : restricted) {
    if (out.slots.contains(id)) continue;
    while (next < capacity && taken[next]) ++next;
    if (next == capacity) {
      out.overflow.push_back(id);
      continue;
    }
    taken[next] = true;
    out.slots[id] = static_cast<uint32_t>(next);
  }
  return out;
}

std::set<uint32_t> restrictedTenants(const config::TenantTable& tenants,
                                     const std::function<uint32_t(const std::string&)>& id_of) {
  std::set<uint32_t> out;
  for (const auto& [name, tenant] : tenants.by_name) {
    if (!tenant->allowed_listeners.empty()) out.insert(id_of(name));
  }
  return out;
}

ListenerScopes listenerScopes(const config::TenantTable& tenants,
                              const std::function<uint32_t(const std::string&)>& id_of,
                              const std::map<uint32_t, uint32_t>& slots) {
  ListenerScopes out;
  for (const auto& [name, tenant] : tenants.by_name) {
    if (tenant->allowed_listeners.empty()) continue;
    auto it = slots.find(id_of(name));
    if (it == slots.end()) continue;  // overflow: unrestricted in BPF
    for (const auto& listener : tenant->allowed_listeners) out[listener].set(it->second);
  }
  return out;
}

}  // namespace culvert::agent
