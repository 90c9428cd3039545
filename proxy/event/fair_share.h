#pragma once

#include <algorithm>
#include <chrono>
#include <cstdint>
#include <unordered_map>

namespace culvert::event {

// The fairness policy of a worker's scheduler, as a pure class (no clock, no loop):
// deficit round robin over worker time. Each round, every tenant that had work gets
// weight × quantum of credit; the work it runs is charged after the fact. A tenant that
// spent its credit while another tenant with work still has some is over its share: its
// reads pause until the next round, so the others' work goes first. Alone, a tenant is
// never paused (the worker's time is not wasted).
class FairShare {
public:
  using TenantId = uint32_t;
  using Duration = std::chrono::nanoseconds;

  explicit FairShare(Duration quantum) : quantum_(quantum) {}

  void charge(TenantId tenant, uint32_t weight, Duration cost) {
    auto [it, fresh] = tenants_.try_emplace(tenant);
    auto& t = it->second;
    t.weight = std::max<uint32_t>(weight, 1);
    if (fresh) t.deficit = credit(t);
    t.deficit -= cost.count();
    t.active_now = true;
  }

  bool overShare(TenantId tenant) const {
    auto it = tenants_.find(tenant);
    if (it == tenants_.end() || it->second.deficit > 0) return false;
    for (const auto& [id, t] : tenants_) {
      if (id != tenant && (t.active_now || t.active_before) && t.deficit > 0) return true;
    }
    return false;
  }

  // Credit carries over but never beyond one round's worth (idling saves nothing); a
  // tenant with no work for two rounds is forgotten.
  void newRound() {
    for (auto it = tenants_.begin(); it != tenants_.end();) {
      auto& t = it->second;
      if (!t.active_now && !t.active_before) {
        it = tenants_.erase(it);
        continue;
      }
      t.deficit = std::min(t.deficit + credit(t), credit(t));
      t.active_before = t.active_now;
      t.active_now = false;
      ++it;
    }
  }

  int64_t deficit(TenantId tenant) const {
    auto it = tenants_.find(tenant);
    return it == tenants_.end() ? 0 : it->second.deficit;
  }
  size_t tenants() const { return tenants_.size(); }

private:
  struct Tenant {
    int64_t deficit = 0;  // ns of credit left this round
    uint32_t weight = 1;
    bool active_now = false;     // charged this round
    bool active_before = false;  // charged the round before
  };
  int64_t credit(const Tenant& t) const { return quantum_.count() * t.weight; }

  Duration quantum_;
  std::unordered_map<TenantId, Tenant> tenants_;
};

}  // namespace culvert::event
