#include "proxy/event/timer_queue.h"

#include <gtest/gtest.h>

#include <chrono>
#include <string>
#include <vector>

#include "proxy/event/dispatcher.h"

namespace culvert::event {
namespace {

using std::chrono::milliseconds;

// A timer that records its name when it fires.
struct Named {
  Named(std::vector<std::string>& log, std::string name)
      : log(log), name(std::move(name)), timer(&Named::onFire, this) {}
  static void onFire(void* self) {
    auto* n = static_cast<Named*>(self);
    n->log.push_back(n->name);
    if (n->then) n->then();
  }
  std::vector<std::string>& log;
  std::string name;
  std::function<void()> then;
  QueuedTimer timer;
};

TEST(TimerQueueTest, FiresInDeadlineOrderAcrossLanes) {
  TimerQueue q(nullptr);
  std::vector<std::string> log;
  Named a(log, "a"), b(log, "b"), c(log, "c");
  a.timer.enable(q, milliseconds(30));
  b.timer.enable(q, milliseconds(10));
  q.advanceTo(5);
  c.timer.enable(q, milliseconds(30));  // due at 35, same lane as a (due at 30)
  EXPECT_EQ(q.laneCount(), 2u);
  EXPECT_EQ(q.wakeAt(), 10u);
  q.advanceTo(9);
  EXPECT_TRUE(log.empty());
  q.advanceTo(10);
  EXPECT_EQ(log, (std::vector<std::string>{"b"}));
  EXPECT_FALSE(b.timer.enabled());
  EXPECT_EQ(q.wakeAt(), 30u);
  EXPECT_EQ(q.laneCount(), 1u);  // the 10 ms lane emptied and was dropped
  q.advanceTo(100);
  EXPECT_EQ(log, (std::vector<std::string>{"b", "a", "c"}));
  EXPECT_EQ(q.wakeAt(), UINT64_MAX);
  EXPECT_EQ(q.laneCount(), 0u);
}

TEST(TimerQueueTest, ReArmingMovesATimerToTheBackOfItsLane) {
  TimerQueue q(nullptr);
  std::vector<std::string> log;
  Named a(log, "a"), b(log, "b");
  a.timer.enable(q, milliseconds(10));
  b.timer.enable(q, milliseconds(10));
  q.advanceTo(5);
  a.timer.enable(q, milliseconds(10));  // now due at 15, after b
  q.advanceTo(10);
  EXPECT_EQ(log, (std::vector<std::string>{"b"}));
  q.advanceTo(14);
  EXPECT_EQ(log.size(), 1u);
  q.advanceTo(15);
  EXPECT_EQ(log, (std::vector<std::string>{"b", "a"}));
}

TEST(TimerQueueTest, DisabledAndDestroyedTimersNeverFire) {
  TimerQueue q(nullptr);
  std::vector<std::string> log;
  Named a(log, "a");
  {
    Named gone(log, "gone");
    gone.timer.enable(q, milliseconds(10));
  }
  a.timer.enable(q, milliseconds(10));
  a.timer.disable();
  EXPECT_FALSE(a.timer.enabled());
  q.advanceTo(50);  // the wake-up comes (it was armed for the first deadline) and finds nothing
  EXPECT_TRUE(log.empty());
  EXPECT_EQ(q.wakeAt(), UINT64_MAX);
}

TEST(TimerQueueTest, CallbacksMayArmDisarmAndReArmThemselves) {
  TimerQueue q(nullptr);
  std::vector<std::string> log;
  Named a(log, "a"), b(log, "b"), c(log, "c"), d(log, "d");
  a.then = [&] {
    b.timer.disable();                       // due at the same time, not fired yet
    a.timer.enable(q, milliseconds(10));     // itself again, same lane
    c.timer.enable(q, milliseconds(3));      // a new lane from inside fire()
    d.timer.enable(q, milliseconds(0));      // 0 is 1 ms: never fires in the same pass
  };
  a.timer.enable(q, milliseconds(10));
  b.timer.enable(q, milliseconds(10));
  q.advanceTo(10);
  EXPECT_EQ(log, (std::vector<std::string>{"a"}));
  EXPECT_EQ(q.wakeAt(), 11u);
  a.then = nullptr;
  q.advanceTo(11);
  EXPECT_EQ(log, (std::vector<std::string>{"a", "d"}));
  q.advanceTo(20);
  EXPECT_EQ(log, (std::vector<std::string>{"a", "d", "c", "a"}));
  EXPECT_FALSE(b.timer.enabled());
}

TEST(TimerQueueTest, DestroyingTheQueueDisarmsItsTimers) {
  std::vector<std::string> log;
  Named a(log, "a");
  {
    TimerQueue q(nullptr);
    a.timer.enable(q, milliseconds(10));
  }
  EXPECT_FALSE(a.timer.enabled());
}

// The real thing: one libuv timer under many queued timers on a Dispatcher's loop.
TEST(TimerQueueTest, RunsOnTheDispatcherLoop) {
  Dispatcher d("test");
  std::vector<std::string> log;
  Named later(log, "later"), sooner(log, "sooner"), never(log, "never");
  later.then = [&] { d.exit(); };
  auto start = std::chrono::steady_clock::now();
  later.timer.enable(d.timerQueue(), milliseconds(40));
  sooner.timer.enable(d.timerQueue(), milliseconds(20));
  never.timer.enable(d.timerQueue(), milliseconds(20));
  never.timer.disable();
  d.run();
  // The loop's clock is cached per iteration and counts whole milliseconds, as for any
  // libuv timer: allow it to run a little early against the wall clock.
  EXPECT_GE(std::chrono::steady_clock::now() - start, milliseconds(35));
  EXPECT_EQ(log, (std::vector<std::string>{"sooner", "later"}));
}

}  // namespace
}  // namespace culvert::event
