#pragma once

#include <algorithm>
#include <chrono>
#include <cstdint>
#include <unordered_map>

namespace culvert::event {

// The fairness policy of a worker's scheduler, as a pure class (no clock, no loop):
// deficit round robin over worker time. Each round, every tenant that had work gets
// weight × quantum of credit; the work it runs is charged after the fact. A tenant that
// spent its credit while another tenant that had work in the last few rounds still has
// some is over its share: its reads pause until the next round, so the others' work goes
// first. Alone, a tenant is never paused (the worker's time is not wasted).
class FairShare {
public:
  using TenantId = uint32_t;
  using Duration = std::chrono::nanoseconds;
  // A tenant counts as having work for this many rounds after its last: a tenant with a
  // request every few rounds (light, latency-sensitive) still holds the others back.
  static constexpr uint64_t kActiveRounds = 4;

  explicit FairShare(Duration quantum) : quantum_(quantum) {}

  void charge(TenantId tenant, uint32_t weight, Duration cost) {
    auto [it, fresh] = tenants_.try_emplace(tenant);
    auto& t = it->second;
    t.weight = std::max<uint32_t>(weight, 1);
    if (fresh) t.deficit = credit(t);
    t.deficit -= cost.count();
    t.last_round = round_;
  }

  bool overShare(TenantId tenant) const {
    auto it = tenants_.find(tenant);
    if (it == tenants_.end() || it->second.deficit > 0) return false;
    return othersWaiting(tenant);
  }

  // Whether another tenant had work lately and has credit left: time `tenant` takes now
  // is time they wait for.
  bool othersWaiting(TenantId tenant) const {
    for (const auto& [id, t] : tenants_) {
      if (id != tenant && round_ - t.last_round < kActiveRounds && t.deficit > 0) return true;
    }
    return false;
  }

  // Starts the next round, or skips `rounds` - 1 empty ones (a worker idle for a second
  // spans a thousand: a tenant that last had work then has none now). Credit carries
  // over but never beyond one round's worth (idling saves nothing); a tenant with no work
  // for kActiveRounds rounds is forgotten.
  void newRound(uint64_t rounds = 1) {
    rounds = std::max<uint64_t>(rounds, 1);
    round_ += rounds;
    for (auto it = tenants_.begin(); it != tenants_.end();) {
      auto& t = it->second;
      if (round_ - t.last_round >= kActiveRounds) {
        it = tenants_.erase(it);
        continue;
      }
      int64_t earned = credit(t) * static_cast<int64_t>(std::min<uint64_t>(rounds, kActiveRounds));
      t.deficit = std::min(t.deficit + earned, credit(t));
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
    uint64_t last_round = 0;  // the round it last had work in
  };
  int64_t credit(const Tenant& t) const { return quantum_.count() * t.weight; }

  Duration quantum_;
  uint64_t round_ = 0;
  std::unordered_map<TenantId, Tenant> tenants_;
};

}  // namespace culvert::event
