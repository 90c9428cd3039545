#include "proxy/event/timer_queue.h"

#include <algorithm>

namespace culvert::event {

void QueuedTimer::unlink() {
  prev_->next_ = next_;
  next_->prev_ = prev_;
  prev_ = next_ = nullptr;
}

void QueuedTimer::disable() {
  if (next_ != nullptr) unlink();
}

void QueuedTimer::enable(TimerQueue& queue, std::chrono::milliseconds after) {
  disable();
  queue.add(*this, static_cast<uint64_t>(std::max<int64_t>(after.count(), 1)));
}

TimerQueue::TimerQueue(uv_loop_t* loop) : loop_(loop) {
  if (loop_ == nullptr) return;
  handle_ = new uv_timer_t;
  uv_timer_init(loop_, handle_);
  handle_->data = this;
}

TimerQueue::~TimerQueue() {
  for (auto& lane : lanes_) {
    while (lane->head.next_ != &lane->head) lane->head.next_->unlink();
  }
  if (handle_ != nullptr) {
    uv_timer_stop(handle_);
    handle_->data = nullptr;
    uv_close(reinterpret_cast<uv_handle_t*>(handle_), [](uv_handle_t* h) { delete reinterpret_cast<uv_timer_t*>(h); });
  }
}

void TimerQueue::add(QueuedTimer& timer, uint64_t after) {
  Lane* lane = nullptr;
  for (auto& l : lanes_) {
    if (l->duration == after) {
      lane = l.get();
      break;
    }
  }
  if (lane == nullptr) {
    lanes_.push_back(std::make_unique<Lane>());
    lane = lanes_.back().get();
    lane->duration = after;
    lane->head.prev_ = lane->head.next_ = &lane->head;
  }
  timer.deadline_ = now() + after;
  // Append: the lane stays sorted because every deadline in it is an earlier now + after.
  timer.prev_ = lane->head.prev_;
  timer.next_ = &lane->head;
  lane->head.prev_->next_ = &timer;
  lane->head.prev_ = &timer;
  if (timer.deadline_ < wake_at_) wake(timer.deadline_);
}

void TimerQueue::wake(uint64_t at) {
  wake_at_ = at;
  if (firing_ || handle_ == nullptr) return;  // fire() re-arms when it is done
  uint64_t current = now();
  uv_timer_start(
      handle_,
      [](uv_timer_t* h) {
        if (auto* self = static_cast<TimerQueue*>(h->data)) self->fire();
      },
      at > current ? at - current : 0, 0);
}

void TimerQueue::advanceTo(uint64_t now_ms) {
  manual_now_ = std::max(manual_now_, now_ms);
  if (manual_now_ >= wake_at_) fire();
}

void TimerQueue::fire() {
  firing_ = true;
  wake_at_ = UINT64_MAX;
  uint64_t current = now();
  // Due timers fire in deadline order across lanes (a merge of the lane heads). Callbacks
  // may add lanes or arm timers; a re-armed timer is due at least 1 ms past `current`, so
  // this ends.
  for (;;) {
    QueuedTimer* due = nullptr;
    for (auto& lane : lanes_) {
      QueuedTimer* first = lane->head.next_;
      if (first != &lane->head && first->deadline_ <= current && (due == nullptr || first->deadline_ < due->deadline_)) {
        due = first;
      }
    }
    if (due == nullptr) break;
    due->unlink();
    due->callback_(due->context_);
  }
  uint64_t next = UINT64_MAX;
  std::erase_if(lanes_, [&](const std::unique_ptr<Lane>& lane) {
    if (lane->head.next_ == &lane->head) return true;
    next = std::min(next, lane->head.next_->deadline_);
    return false;
  });
  firing_ = false;
  wake_at_ = UINT64_MAX;
  if (next != UINT64_MAX) wake(next);
}

}  // namespace culvert::event
