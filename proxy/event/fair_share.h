#pragma once

#include <algorithm>
#include <chrono>
#include <cstdint>
#include <utility>
#include <vector>

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
    Tenant* t = find(tenant);
    bool fresh = t == nullptr;
    if (fresh) t = &tenants_.emplace_back(Tenant{.id = tenant});
    t->weight = std::max<uint32_t>(weight, 1);
    if (fresh) t->deficit = credit(*t);
    t->deficit -= cost.count();
    t->last_round = round_;
  }

  bool overShare(TenantId tenant) const {
    const Tenant* t = find(tenant);
    if (t == nullptr || t->deficit > 0) return false;
    return othersWaiting(tenant);
  }

  // Whether another tenant had work lately and has credit left: time `tenant` takes now
  // is time they wait for.
  bool othersWaiting(TenantId tenant) const {
    for (const auto& t : tenants_) {
      if (t.id != tenant && round_ - t.last_round < kActiveRounds && t.deficit > 0) return true;
    }
    return false;
  }

  // Starts the next round, or skips `rounds` - 1 empty ones (a worker idle for a second
  // spans a thousand: a tenant that last had work then has none now). Credit carries
  // over but never beyond one round's worth (idling saves nothing).
  void newRound(uint64_t rounds = 1) { newRound(rounds, rounds); }
  // The same, where only `aged` of the rounds count toward forgetting a tenant with no
  // work for kActiveRounds rounds. The scheduler counts the rounds in which the worker
  // could have seen another tenant's work: not those spent inside one long loop turn,
  // when that tenant's bytes wait unread in the kernel. Forgotten there, it left the
  // tenant running the turn alone and never over its share, so the turn ran on (20–35 ms
  // of one tenant's 1 MiB responses, docs/benchmarks.md).
  void newRound(uint64_t rounds, uint64_t aged) {
    rounds = std::max<uint64_t>(rounds, 1);
    round_ += aged;
    for (size_t i = 0; i < tenants_.size();) {
      auto& t = tenants_[i];
      if (round_ - t.last_round >= kActiveRounds) {
        t = tenants_.back();  // order does not matter; the vector keeps its capacity
        tenants_.pop_back();
        continue;
      }
      int64_t earned = credit(t) * static_cast<int64_t>(std::min<uint64_t>(rounds, kActiveRounds));
      t.deficit = std::min(t.deficit + earned, credit(t));
      ++i;
    }
  }

  // Whether another tenant that had work lately has more of its credit left than
  // `tenant`, for its weight: `tenant` has had more of the worker this round. A tenant
  // not charged yet this round has had none of it.
  bool lighterActive(TenantId tenant) const {
    const Tenant* me = find(tenant);
    if (me == nullptr) return false;
    for (const auto& t : tenants_) {
      if (t.id != tenant && round_ - t.last_round < kActiveRounds &&
          t.deficit * static_cast<int64_t>(me->weight) > me->deficit * static_cast<int64_t>(t.weight)) {
        return true;
      }
    }
    return false;
  }

  Duration quantum() const { return quantum_; }
  int64_t deficit(TenantId tenant) const {
    const Tenant* t = find(tenant);
    return t == nullptr ? 0 : t->deficit;
  }
  size_t tenants() const { return tenants_.size(); }

private:
  struct Tenant {
    TenantId id = 0;
    int64_t deficit = 0;  // ns of credit left this round
    uint32_t weight = 1;
    uint64_t last_round = 0;  // the round it last had work in
  };
  int64_t credit(const Tenant& t) const { return quantum_.count() * t.weight; }
  const Tenant* find(TenantId id) const {
    for (const auto& t : tenants_) {
      if (t.id == id) return &t;
    }
    return nullptr;
  }
  Tenant* find(TenantId id) { return const_cast<Tenant*>(std::as_const(*this).find(id)); }

  Duration quantum_;
  uint64_t round_ = 0;  // rounds that count toward forgetting (newRound's `aged`)
  // Tenants with work in the last kActiveRounds rounds: a handful per worker, so a
  // vector searched in order, which (unlike a hash map's nodes) allocates nothing when a
  // tenant comes back after being forgotten, as one does every few requests.
  std::vector<Tenant> tenants_;
};

}  // namespace culvert::event
