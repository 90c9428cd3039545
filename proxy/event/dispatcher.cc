#include "proxy/event/dispatcher.h"

#include <utility>

#include <spdlog/spdlog.h>

#include "proxy/event/timer_queue.h"

namespace culvert::event {

Dispatcher::Dispatcher(std::string name) : name_(std::move(name)) {
  uv_loop_init(&loop_);
  async_.data = this;
  uv_async_init(&loop_, &async_, &Dispatcher::onAsync);
  deferred_idle_.data = this;
  uv_idle_init(&loop_, &deferred_idle_);
  turn_end_check_.data = this;
  uv_check_init(&loop_, &turn_end_check_);
  uv_check_start(&turn_end_check_, [](uv_check_t* h) { static_cast<Dispatcher*>(h->data)->endTurn(); });
  uv_unref(reinterpret_cast<uv_handle_t*>(&turn_end_check_));
  turn_end_prepare_.data = this;
  uv_prepare_init(&loop_, &turn_end_prepare_);
  uv_prepare_start(&turn_end_prepare_, [](uv_prepare_t* h) {
    auto* self = static_cast<Dispatcher*>(h->data);
    self->runTurnEnd();
    ++self->polls_;
    self->in_io_ = true;
  });
  uv_unref(reinterpret_cast<uv_handle_t*>(&turn_end_prepare_));
  thread_id_ = std::this_thread::get_id();
}

Dispatcher::~Dispatcher() {
  timer_queue_.reset();  // closes its handle before the walk below closes the others
  // Close our own handles, then any stragglers, then drain the loop so libuv frees them.
  if (!uv_is_closing(reinterpret_cast<uv_handle_t*>(&async_))) {
    uv_close(reinterpret_cast<uv_handle_t*>(&async_), nullptr);
  }
  if (!uv_is_closing(reinterpret_cast<uv_handle_t*>(&deferred_idle_))) {
    uv_close(reinterpret_cast<uv_handle_t*>(&deferred_idle_), nullptr);
  }
  for (auto* h : {reinterpret_cast<uv_handle_t*>(&turn_end_check_), reinterpret_cast<uv_handle_t*>(&turn_end_prepare_)}) {
    if (!uv_is_closing(h)) uv_close(h, nullptr);
  }
  uv_walk(&loop_, [](uv_handle_t* h, void*) { if (!uv_is_closing(h)) uv_close(h, nullptr); }, nullptr);
  // Run until every close callback has freed its handle (a uv_stop() left over from
  // exit() makes one pass return early, hence the loop).
  do {
    uv_run(&loop_, UV_RUN_DEFAULT);
    runDeferredDeletes();
  } while (uv_loop_close(&loop_) == UV_EBUSY);
}

void Dispatcher::post(std::function<void()> fn) {
  {
    std::lock_guard lock(mutex_);
    posted_.push_back(std::move(fn));
  }
  uv_async_send(&async_);
}

void Dispatcher::onAsync(uv_async_t* handle) {
  static_cast<Dispatcher*>(handle->data)->runPosted();
}

void Dispatcher::runPosted() {
  std::vector<std::function<void()>> batch;
  {
    std::lock_guard lock(mutex_);
    batch.swap(posted_);
  }
  for (auto& fn : batch) fn();
}

void Dispatcher::run() {
  thread_id_ = std::this_thread::get_id();
  uv_run(&loop_, UV_RUN_DEFAULT);
  // Run what was posted before exit, the writes it made and whatever waits for deferred
  // deletion.
  runPosted();
  runTurnEnd();
  runDeferredDeletes();
}

void Dispatcher::exit() {
  post([this] { uv_stop(&loop_); });
}

std::unique_ptr<Timer> Dispatcher::createTimer(std::function<void()> cb) {
  return std::make_unique<Timer>(*this, std::move(cb));
}

TimerQueue& Dispatcher::timerQueue() {
  if (!timer_queue_) timer_queue_ = std::make_unique<TimerQueue>(&loop_);
  return *timer_queue_;
}

void Dispatcher::scheduleDeferredDelete() {
  if (!uv_is_active(reinterpret_cast<uv_handle_t*>(&deferred_idle_))) {
    uv_idle_start(&deferred_idle_, &Dispatcher::onDeferred);
  }
}

void Dispatcher::onDeferred(uv_idle_t* handle) {
  uv_idle_stop(handle);
  static_cast<Dispatcher*>(handle->data)->runDeferredDeletes();
}

void Dispatcher::runDeferredDeletes() {
  // Deleting may defer more deletions, into deferred_: loop until none are left.
  while (!deferred_.empty()) {
    deleting_.swap(deferred_);
    for (const auto& d : deleting_) d.destroy(d.object);
    deleting_.clear();
  }
}

uint32_t Dispatcher::atTurnEnd(TurnEnd* who) {
  turn_end_.push_back(who);
  return static_cast<uint32_t>(turn_end_.size() - 1);
}

void Dispatcher::cancelTurnEnd(uint32_t ticket) {
  if (ticket < turn_end_.size()) turn_end_[ticket] = nullptr;
}

void Dispatcher::runTurnEnd() {
  if (turn_end_.empty()) return;
  in_turn_end_ = true;
  // What these calls register joins this pass (indexes, not iterators: it may grow).
  for (size_t i = 0; i < turn_end_.size(); ++i) {
    if (TurnEnd* who = turn_end_[i]) {
      turn_end_[i] = nullptr;
      who->onTurnEnd();
    }
  }
  turn_end_.clear();
  in_turn_end_ = false;
}

void Dispatcher::endTurn() {
  in_io_ = false;
  runTurnEnd();
  if (late_.empty()) return;
  running_late_.swap(late_);
  for (auto& late : running_late_) {
    if (void* object = std::exchange(late.object, nullptr)) late.run(object);
  }
  running_late_.clear();
  runTurnEnd();
}

void Dispatcher::cancelLateInTurn(const void* who) {
  for (auto* list : {&late_, &running_late_}) {
    for (auto& late : *list) {
      if (late.object == who) late.object = nullptr;
    }
  }
}

std::chrono::steady_clock::time_point Dispatcher::now() const {
  return std::chrono::steady_clock::time_point(std::chrono::milliseconds(uv_now(const_cast<uv_loop_t*>(&loop_))));
}

Timer::Timer(Dispatcher& dispatcher, std::function<void()> cb) : timer_(new uv_timer_t), cb_(std::move(cb)) {
  uv_timer_init(dispatcher.loop(), timer_);
  timer_->data = this;
}

Timer::~Timer() {
  uv_timer_stop(timer_);
  timer_->data = nullptr;
  uv_close(reinterpret_cast<uv_handle_t*>(timer_), [](uv_handle_t* h) { delete reinterpret_cast<uv_timer_t*>(h); });
}

void Timer::enable(std::chrono::milliseconds after, std::chrono::milliseconds repeat) {
  uv_timer_start(
      timer_,
      [](uv_timer_t* t) {
        if (auto* self = static_cast<Timer*>(t->data)) self->cb_();
      },
      static_cast<uint64_t>(after.count()), static_cast<uint64_t>(repeat.count()));
}

void Timer::disable() { uv_timer_stop(timer_); }

bool Timer::enabled() const { return uv_is_active(reinterpret_cast<const uv_handle_t*>(timer_)) != 0; }

}  // namespace culvert::event
