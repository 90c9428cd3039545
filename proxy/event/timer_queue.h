#pragma once

#include <uv.h>

#include <chrono>
#include <cstddef>
#include <cstdint>
#include <memory>
#include <vector>

namespace culvert::event {

class TimerQueue;

// A timer kept in a TimerQueue: 40 bytes inline in its owner, no libuv handle and no
// allocation of its own, for the many timers that are mostly re-armed or disarmed and
// rarely fire (a connection's idle timeout, a stream's idle and route timeouts). The
// callback is a plain function and a context pointer, so it costs 16 bytes, not a
// std::function's 32. Disarmed when destroyed.
class QueuedTimer {
public:
  using Callback = void (*)(void* context);
  QueuedTimer(Callback callback, void* context) : callback_(callback), context_(context) {}
  ~QueuedTimer() { disable(); }
  QueuedTimer(const QueuedTimer&) = delete;
  QueuedTimer& operator=(const QueuedTimer&) = delete;

  // (Re-)arms: fires once, `after` from the loop's current time (at least 1 ms).
  void enable(TimerQueue& queue, std::chrono::milliseconds after);
  void disable();
  bool enabled() const { return next_ != nullptr; }

private:
  friend class TimerQueue;
  QueuedTimer() = default;  // a lane's sentinel
  void unlink();

  QueuedTimer* prev_ = nullptr;
  QueuedTimer* next_ = nullptr;  // null: disarmed
  uint64_t deadline_ = 0;        // loop time, ms
  Callback callback_ = nullptr;
  void* context_ = nullptr;
};

// All QueuedTimers of one Dispatcher on a single uv_timer_t. Timers are grouped in lanes by
// duration; within a lane, deadlines are "now + duration" with a non-decreasing now, so
// appending keeps each lane sorted and arming, re-arming and disarming are O(1) list
// operations (a uv_timer_t is a heap node: O(log n) per re-arm, plus 152 bytes and a close
// per timer). The one uv timer is set to the earliest lane head; a disarmed head may make
// it fire early, which then only re-arms it. Few distinct durations are expected (a lane
// per configured timeout); lanes left empty are dropped when the queue next fires.
class TimerQueue {
public:
  // `loop` null: manual time from 0, advanced by advanceTo() (tests).
  explicit TimerQueue(uv_loop_t* loop);
  ~TimerQueue();  // disarms every timer still armed
  TimerQueue(const TimerQueue&) = delete;
  TimerQueue& operator=(const TimerQueue&) = delete;

  uint64_t now() const { return loop_ != nullptr ? uv_now(loop_) : manual_now_; }
  // Manual time only: moves time forward and fires what is due.
  void advanceTo(uint64_t now_ms);
  // When the queue asks to be woken next (UINT64_MAX: not at all). For tests.
  uint64_t wakeAt() const { return wake_at_; }
  size_t laneCount() const { return lanes_.size(); }

private:
  friend class QueuedTimer;
  struct Lane {
    uint64_t duration;
    QueuedTimer head;  // sentinel of a circular list
  };
  void add(QueuedTimer& timer, uint64_t after);
  void fire();
  void wake(uint64_t at);

  uv_loop_t* loop_;
  uv_timer_t* handle_ = nullptr;  // owned; freed in its close callback
  uint64_t manual_now_ = 0;
  uint64_t wake_at_ = UINT64_MAX;
  bool firing_ = false;
  std::vector<std::unique_ptr<Lane>> lanes_;
};

}  // namespace culvert::event
