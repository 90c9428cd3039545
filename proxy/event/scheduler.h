#pragma once

#include <chrono>
#include <cstdint>
#include <functional>
#include <map>
#include <memory>
#include <unordered_map>

#include "proxy/event/dispatcher.h"
#include "proxy/event/fair_share.h"

namespace culvert::event {

// Per-worker scheduler through which all connection work runs (DESIGN.md §1). It knows
// the tenant of every piece of work, charges the time to it, and shares the worker's
// time between tenants by weight (FairShare): after work, a tenant over its share has
// its connections pause reading until the next round, which starts `round` later. A
// round resumes a paused tenant's connections only as far as its credit is expected to
// go (its mean cost per piece of work) while others wait: resuming all of a flooding
// tenant's connections at once would let each of them run once in the same loop turn,
// which every other tenant then waits behind. The rest stay paused, first in line.
class Scheduler {
public:
  using TenantId = uint32_t;

  // Without a dispatcher (tests) rounds advance only as work runs, nobody is paused.
  explicit Scheduler(Dispatcher* dispatcher = nullptr,
                     std::chrono::nanoseconds quantum = std::chrono::microseconds(500),
                     std::chrono::milliseconds round = std::chrono::milliseconds(1));

  template <typename Fn>
  void run(TenantId tenant, Fn&& work) {
    run(tenant, 1, std::forward<Fn>(work));
  }
  template <typename Fn>
  void run(TenantId tenant, uint32_t weight, Fn&& work) {
    auto start = std::chrono::steady_clock::now();
    work();
    auto end = std::chrono::steady_clock::now();
    auto& spent = work_[tenant];
    spent.charged += end - start;
    spent.mean_cost += ((end - start).count() - spent.mean_cost) / 8;
    if (end - round_started_ >= round_) startRound(end);
    share_.charge(tenant, weight, end - start);
  }

  std::chrono::nanoseconds charged(TenantId tenant) const {
    auto it = work_.find(tenant);
    return it == work_.end() ? std::chrono::nanoseconds{0} : it->second.charged;
  }

  // Whether the tenant's connections should stop reading now.
  bool overShare(TenantId tenant) const { return dispatcher_ != nullptr && share_.overShare(tenant); }

  // A paused connection: `resume` runs (once) when a round starts with its tenant back
  // within its share. Destroying the handle cancels it.
  class Pause {
  public:
    ~Pause();
    Pause(const Pause&) = delete;
    Pause& operator=(const Pause&) = delete;

  private:
    friend class Scheduler;
    Pause(Scheduler& s, uint64_t id) : scheduler_(s), id_(id) {}
    Scheduler& scheduler_;
    uint64_t id_;
  };
  std::unique_ptr<Pause> pause(TenantId tenant, std::function<void()> resume);
  size_t pausedCount() const { return paused_.size(); }
  // Starts a round now, as the round timer does (tests drive rounds by hand with it).
  void onRoundTimerForTest() { onRoundTimer(); }

private:
  void startRound(std::chrono::steady_clock::time_point now);
  void onRoundTimer();

  Dispatcher* dispatcher_;
  FairShare share_;
  std::chrono::milliseconds round_;
  std::chrono::steady_clock::time_point round_started_ = std::chrono::steady_clock::now();
  std::unique_ptr<Timer> round_timer_;
  bool timer_armed_ = false;
  struct Work {
    std::chrono::nanoseconds charged{0};
    int64_t mean_cost = 0;  // ns per piece of work, a moving average over the last ~8
  };
  std::unordered_map<TenantId, Work> work_;
  struct Paused {
    TenantId tenant;
    std::function<void()> resume;
  };
  std::map<uint64_t, Paused> paused_;  // in pause order: resumed first-paused first
  uint64_t next_pause_id_ = 0;
};

}  // namespace culvert::event
