#pragma once

#include <cstdint>
#include <functional>
#include <map>
#include <set>
#include <string>
#include <vector>

#include "ebpf/loader/capture_program.h"
#include "proxy/config/snapshot.h"

namespace culvert::agent {

// The scope slots of the restricted tenants allowed to use each virtual listener, by
// listener name. A listener absent here is allowed to no restricted tenant.
using ListenerScopes = std::map<std::string, ebpf::TenantScope>;

// What the BPF captured-destination maps hold for a listener table (DESIGN.md §3):
// each virtual listener (bind_to_port: false) captures its address; an any-IP listener
// (0.0.0.0 / ::) whose every filter chain names destination prefix ranges captures
// only those prefixes on its port (filter_chain_match narrows it). Ranges of the other
// address family than the listener's can never match its connections and are left out.
// Every entry carries the restricted tenants allowed its listener (`scopes`).
struct CapturePlan {
  std::vector<ebpf::CapturedDestination> destinations;
  std::vector<ebpf::CapturedPrefix> prefixes;
};

CapturePlan planCapture(const config::ListenerTable& listeners, const ListenerScopes& scopes = {});

// Scope slots (bits of the captured entries) of the restricted tenants — those whose
// Tenant resource names allowed_listeners. A tenant keeps the slot it has (`current`, read
// back from the pinned map, so a restart keeps them too); a newly restricted tenant takes
// the lowest slot nobody held before this change, so a slot given up now is never reused
// by another tenant before the captured entries stop carrying it. Beyond `capacity`,
// restricted tenants get no slot (`overflow`): BPF captures for them as for an
// unrestricted tenant and only the worker enforces their scope.
struct ScopeSlots {
  std::map<uint32_t, uint32_t> slots;  // tenant id -> slot
  std::vector<uint32_t> overflow;      // tenant ids
};
ScopeSlots assignScopeSlots(const std::map<uint32_t, uint32_t>& current, const std::set<uint32_t>& restricted,
                            size_t capacity = ebpf::kMaxScopedTenants);

// Tenant ids of the Tenant resources that restrict listeners.
std::set<uint32_t> restrictedTenants(const config::TenantTable& tenants,
                                     const std::function<uint32_t(const std::string&)>& id_of);

// Which slots may use which listener: each restricted tenant with a slot sets its bit on
// the listeners it names.
ListenerScopes listenerScopes(const config::TenantTable& tenants,
                              const std::function<uint32_t(const std::string&)>& id_of,
                              const std::map<uint32_t, uint32_t>& slots);

}  // namespace culvert::agent
