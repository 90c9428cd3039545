#pragma once

#include <chrono>
#include <cstdint>
#include <unordered_map>

namespace culvert::event {

// Per-worker scheduler through which all connection work runs (DESIGN.md §1). It knows
// the tenant of every piece of work: today it runs work at once and charges the time to
// the tenant; fair sharing (deficit round robin over per-tenant ready queues, pausing a
// tenant's reads when it exceeds its share) plugs in here without touching callers.
class Scheduler {
public:
  using TenantId = uint32_t;

  template <typename Fn>
  void run(TenantId tenant, Fn&& work) {
    auto start = std::chrono::steady_clock::now();
    work();
    charged_[tenant] += std::chrono::steady_clock::now() - start;
  }

  std::chrono::nanoseconds charged(TenantId tenant) const {
    auto it = charged_.find(tenant);
    return it == charged_.end() ? std::chrono::nanoseconds{0} : it->second;
  }

private:
  std::unordered_map<TenantId, std::chrono::nanoseconds> charged_;
};

}  // namespace culvert::event
