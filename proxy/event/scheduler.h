#pragma once

#include <algorithm>
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
// Rounds follow the loop's turns as well as time: at most one starts in a turn, and
// only rounds in which the loop looked for I/O can make it forget a tenant; and a
// tenant's reads wait for the next turn once it has had its part of this one
// (turnSpent), so no turn runs one tenant's ready sockets for long.
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
    spent.mean_cost += ((end - start).count() - spent.mean_cost) / 8;
    charge(spent, tenant, weight, end - start, end);
  }
  // Charges work of the tenant's that ran outside run(): the socket read libuv makes
  // before its read callback (a 64 KiB copy out of the kernel). Not a piece of work of
  // its own for the resume estimate: the callback's work follows it.
  void charge(TenantId tenant, uint32_t weight, std::chrono::nanoseconds cost) {
    charge(work_[tenant], tenant, weight, cost, std::chrono::steady_clock::now());
  }

  std::chrono::nanoseconds charged(TenantId tenant) const {
    auto it = work_.find(tenant);
    return it == work_.end() ? std::chrono::nanoseconds{0} : it->second.charged;
  }

  // Whether the tenant's connections should stop reading now.
  bool overShare(TenantId tenant) const { return dispatcher_ != nullptr && share_.overShare(tenant); }
  // Whether the tenant has had its part (× weight) of this loop turn: its sockets are
  // read next turn. Without it a tenant alone ran a turn through all of its ready
  // sockets (10–30 ms of 1 MiB responses), and another tenant's request that came
  // meanwhile waited for the turn to end. Beside other tenants the part is an eighth of
  // a quantum (kSharedTurnDivisor): their requests wait for less of a flood's turn (and
  // their writes for its end), while the flood's credit per round, and so its
  // throughput, stays (halving the quantum itself halved the flood's throughput too;
  // docs/benchmarks.md, "An eighth of a quantum"). Alone, a tenant gets
  // kAloneTurnQuanta quanta a turn: cutting its turns short buys nobody anything, and
  // costs it the batching of a long turn (one HTTP/2 read carries 32 requests; at one
  // quantum a turn the HTTP/2 bench spent 6–14 % more CPU per request).
  static constexpr int kSharedTurnDivisor = 8;
  static constexpr int kAloneTurnQuanta = 4;
  bool turnSpent(TenantId tenant, uint32_t weight) const {
    if (dispatcher_ == nullptr) return false;
    auto it = work_.find(tenant);
    if (it == work_.end() || it->second.turn != dispatcher_->polls()) return false;
    auto quantum = share_.quantum() * std::max<uint32_t>(weight, 1);
    auto budget = share_.tenants() > 1 ? quantum / kSharedTurnDivisor : quantum * kAloneTurnQuanta;
    return it->second.turn_spent >= budget;
  }

  // Whether the tenant's reads in this turn's I/O callbacks should wait for the late
  // part of the turn (Dispatcher::lateInTurn): another active tenant has had less of the
  // worker this round. That tenant's request that came in the same turn is then relayed,
  // and its writes leave, before this tenant's part of the turn, not after it.
  bool yieldsInTurn(TenantId tenant) const {
    return dispatcher_ != nullptr && dispatcher_->inIoPhase() && share_.lighterActive(tenant);
  }

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
  struct Work;
  void charge(Work& spent, TenantId tenant, uint32_t weight, std::chrono::nanoseconds cost,
              std::chrono::steady_clock::time_point now) {
    worked_ += cost;
    spent.charged += cost;
    uint64_t turn = dispatcher_ != nullptr ? dispatcher_->polls() : 0;
    if (spent.turn != turn) {
      spent.turn = turn;
      spent.turn_spent = std::chrono::nanoseconds{0};
    }
    spent.turn_spent += cost;
    // At most one round starts in a loop turn: a tenant that went over its share stays
    // over it for the rest of the turn, so the loop gets to the other tenants' I/O.
    // Started again as time passed within the turn, it got fresh credit every 1 ms and
    // ran on through every ready socket of its own (turns of 10–30 ms, docs/benchmarks.md).
    if (now - round_started_ >= round_ && newTurn()) startRound(now);
    share_.charge(tenant, weight, cost);
  }
  // Whether the loop has looked for I/O since the round started.
  bool newTurn() const { return dispatcher_ == nullptr || dispatcher_->polls() != polls_at_round_start_; }
  void startRound(std::chrono::steady_clock::time_point now);
  void onRoundTimer();

  Dispatcher* dispatcher_;
  FairShare share_;
  std::chrono::milliseconds round_;
  std::chrono::steady_clock::time_point round_started_ = std::chrono::steady_clock::now();
  uint64_t polls_at_round_start_ = 0;  // Dispatcher::polls() when the round started
  std::chrono::nanoseconds worked_{0};  // work run since the round started
  std::unique_ptr<Timer> round_timer_;
  bool timer_armed_ = false;
  struct Work {
    std::chrono::nanoseconds charged{0};
    int64_t mean_cost = 0;  // ns per piece of work, a moving average over the last ~8
    uint64_t turn = 0;      // Dispatcher::polls() of the turn turn_spent is for
    std::chrono::nanoseconds turn_spent{0};
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
