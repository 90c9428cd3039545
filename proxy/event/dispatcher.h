#pragma once

#include <uv.h>

#include <atomic>
#include <chrono>
#include <cstdint>
#include <functional>
#include <memory>
#include <mutex>
#include <string>
#include <thread>
#include <vector>

namespace culvert::event {

class Timer;
class TimerQueue;

// One libuv loop and the thread that runs it. Everything on a Dispatcher runs on its
// thread; other threads reach it only through post().
class Dispatcher {
public:
  explicit Dispatcher(std::string name);
  ~Dispatcher();
  Dispatcher(const Dispatcher&) = delete;
  Dispatcher& operator=(const Dispatcher&) = delete;

  const std::string& name() const { return name_; }
  uv_loop_t* loop() { return &loop_; }

  // Thread-safe: runs `fn` on this dispatcher's thread, in order of posting.
  void post(std::function<void()> fn);

  // Runs the loop on the calling thread until exit() is called.
  void run();
  // Thread-safe: makes run() return once the current iteration ends. Handles still open
  // are closed first.
  void exit();
  bool isThisThread() const { return std::this_thread::get_id() == thread_id_.load(); }

  std::unique_ptr<Timer> createTimer(std::function<void()> cb);
  // The loop's one queue for QueuedTimers (proxy/event/timer_queue.h), made on first use.
  TimerQueue& timerQueue();

  // Destroys `object` on this thread after the current callback returns, so a connection
  // can delete itself from inside its own callback.
  template <typename T>
  void deferredDelete(std::unique_ptr<T> object) {
    deferred_.push_back({object.release(), [](void* p) { delete static_cast<T*>(p); }});
    scheduleDeferredDelete();
  }

  // Work that waits for the end of the loop turn: after the turn's I/O callbacks (libuv's
  // check phase) or, for what registers outside them, before the loop next waits for I/O
  // (its prepare phase). Connections write a turn's small writes there, each connection's
  // in one system call and all of them back to back, so a peer woken by the first finds
  // the rest already queued (one wakeup of it per turn, not one per write).
  class TurnEnd {
  public:
    virtual void onTurnEnd() = 0;

  protected:
    ~TurnEnd() = default;
  };
  // Calls `who->onTurnEnd()` once, at this turn's end. The ticket cancels it.
  uint32_t atTurnEnd(TurnEnd* who);
  void cancelTurnEnd(uint32_t ticket);
  // Inside a turn-end pass: what is written now has nothing left to wait for.
  bool atTurnEndNow() const { return in_turn_end_; }

  // Work that yields to the rest of its turn: it runs once the turn's other I/O
  // callbacks have run and the writes they made have left (the turn-end pass), followed
  // by a turn-end pass of its own. A tenant that has had more of the worker than another
  // reads there (Scheduler::yieldsInTurn), so the other's request that came in the same
  // turn is relayed first, and does not wait for the busier tenant's part of the turn.
  // Calls `(who->*Fn)()` once, late in this turn (registered outside the turn's I/O
  // callbacks: late in the coming one). A function, not an interface: a connection pays
  // no second vtable pointer for it.
  template <typename T, void (T::*Fn)()>
  void lateInTurn(T* who) {
    late_.push_back({who, [](void* p) { (static_cast<T*>(p)->*Fn)(); }});
  }
  void cancelLateInTurn(const void* who);
  // Inside the turn's I/O callbacks (libuv's poll phase), where work may still yield.
  bool inIoPhase() const { return in_io_; }
  // Loop turns that went on to look for I/O (counted just before each look). Between two
  // equal readings the loop read no socket it had not read already.
  uint64_t polls() const { return polls_; }

  // Monotonic time as of this loop iteration (cheap).
  std::chrono::steady_clock::time_point now() const;

private:
  static void onAsync(uv_async_t* handle);
  static void onDeferred(uv_idle_t* handle);
  void runTurnEnd();
  // The check phase: the turn-end pass, then what yielded to it and its own writes.
  void endTurn();
  void runPosted();
  void scheduleDeferredDelete();
  // Deletes everything deferred, including what those deletions defer.
  void runDeferredDeletes();

  std::string name_;
  uv_loop_t loop_{};
  uv_async_t async_{};
  uv_idle_t deferred_idle_{};
  std::atomic<std::thread::id> thread_id_{};
  std::mutex mutex_;
  std::vector<std::function<void()>> posted_;
  // An object awaiting deletion and how to delete it: a plain function, where a
  // shared_ptr<void> spent a control block per object (two per HTTP/2 request).
  struct Deferred {
    void* object;
    void (*destroy)(void*);
  };
  // Both keep their capacity from batch to batch: deferring allocates nothing.
  std::vector<Deferred> deferred_;
  std::vector<Deferred> deleting_;  // the batch being destroyed
  std::unique_ptr<TimerQueue> timer_queue_;
  // Waiting for the turn's end, in order of registration; cancelled ones are null. Both
  // handles stay started and unreferenced: they keep no loop alive and cost a check each.
  std::vector<TurnEnd*> turn_end_;
  bool in_turn_end_ = false;
  // Waiting for the late part of the turn, in order; cancelled ones have no object.
  struct Late {
    void* object;
    void (*run)(void*);
  };
  std::vector<Late> late_;
  std::vector<Late> running_late_;  // the batch being run (capacity kept)
  bool in_io_ = false;
  uint64_t polls_ = 0;
  uv_check_t turn_end_check_{};
  uv_prepare_t turn_end_prepare_{};
};

// A one-shot or repeating timer on a Dispatcher. Disabled when destroyed.
class Timer {
public:
  Timer(Dispatcher& dispatcher, std::function<void()> cb);
  ~Timer();
  void enable(std::chrono::milliseconds after, std::chrono::milliseconds repeat = {});
  void disable();
  bool enabled() const;

private:
  uv_timer_t* timer_;  // owned; freed in the close callback
  std::function<void()> cb_;
};

}  // namespace culvert::event
