#include "proxy/event/scheduler.h"

#include <vector>

namespace culvert::event {

Scheduler::Scheduler(Dispatcher* dispatcher, std::chrono::nanoseconds quantum, std::chrono::milliseconds round)
    : dispatcher_(dispatcher), share_(quantum), round_(round) {}

Scheduler::Pause::~Pause() { scheduler_.paused_.erase(id_); }

std::unique_ptr<Scheduler::Pause> Scheduler::pause(TenantId tenant, std::function<void()> resume) {
  uint64_t id = next_pause_id_++;
  paused_.emplace(id, Paused{tenant, std::move(resume)});
  if (dispatcher_ != nullptr && !timer_armed_) {
    if (!round_timer_) round_timer_ = dispatcher_->createTimer([this] { onRoundTimer(); });
    round_timer_->enable(round_);
    timer_armed_ = true;
  }
  return std::unique_ptr<Pause>(new Pause(*this, id));
}

void Scheduler::startRound(std::chrono::steady_clock::time_point now) {
  // Rounds are time: after an idle gap, the rounds it spanned have passed too. They
  // count toward forgetting a tenant (FairShare::newRound) only as far as the worker could
  // have seen that tenant's work: none when the loop has not looked for I/O since the
  // last round (one long turn), else the rounds it spent not running work, at least one.
  auto elapsed = now - round_started_;
  uint64_t polls = dispatcher_ != nullptr ? dispatcher_->polls() : 0;
  uint64_t aged = 0;
  if (dispatcher_ == nullptr) {
    aged = static_cast<uint64_t>(elapsed / round_);
  } else if (newTurn()) {
    aged = std::max<uint64_t>(static_cast<uint64_t>(std::max(elapsed - worked_, std::chrono::nanoseconds{0}) / round_), 1);
  }
  share_.newRound(static_cast<uint64_t>(elapsed / round_), aged);
  round_started_ = now;
  worked_ = std::chrono::nanoseconds{0};
  polls_at_round_start_ = polls;
}

void Scheduler::onRoundTimer() {
  timer_armed_ = false;
  startRound(std::chrono::steady_clock::now());
  // Resume callbacks may pause again (re-arming the timer) or cancel other pauses.
  // A tenant alone gets every connection back; one that others wait for gets as many as
  // its credit is expected to pay for (at least one), in pause order.
  std::vector<uint64_t> ready;
  std::unordered_map<TenantId, int64_t> budget;
  for (const auto& [id, p] : paused_) {
    if (share_.overShare(p.tenant)) continue;
    if (share_.othersWaiting(p.tenant)) {
      auto [left, fresh] = budget.try_emplace(p.tenant, share_.deficit(p.tenant));
      if (!fresh && left->second <= 0) continue;
      auto it = work_.find(p.tenant);
      left->second -= std::max<int64_t>(it == work_.end() ? 0 : it->second.mean_cost, 1);
    }
    ready.push_back(id);
  }
  for (uint64_t id : ready) {
    auto it = paused_.find(id);
    if (it == paused_.end()) continue;
    auto resume = std::move(it->second.resume);
    paused_.erase(it);
    resume();
  }
  if (!paused_.empty() && !timer_armed_) {
    round_timer_->enable(round_);
    timer_armed_ = true;
  }
}

}  // namespace culvert::event
