#include "proxy/event/dispatcher.h"

#include <gtest/gtest.h>

#include <atomic>
#include <future>
#include <string>
#include <vector>

#include "proxy/event/scheduler.h"

namespace culvert::event {
namespace {

TEST(DispatcherTest, PostRunsOnTheDispatcherThreadInOrder) {
  Dispatcher d("test");
  std::thread t([&] { d.run(); });
  std::vector<int> order;
  std::promise<std::thread::id> ran_on;
  for (int i = 0; i < 100; ++i) d.post([&order, i] { order.push_back(i); });
  d.post([&] { ran_on.set_value(std::this_thread::get_id()); });
  auto id = ran_on.get_future().get();
  auto dispatcher_thread = t.get_id();
  d.exit();
  t.join();
  EXPECT_EQ(id, dispatcher_thread);
  ASSERT_EQ(order.size(), 100u);
  for (int i = 0; i < 100; ++i) EXPECT_EQ(order[static_cast<size_t>(i)], i);
}

TEST(DispatcherTest, TimerFiresOnceAfterDelayAndCanBeDisabled) {
  Dispatcher d("test");
  int fired = 0;
  int never = 0;
  auto start = std::chrono::steady_clock::now();
  std::chrono::steady_clock::duration elapsed{};
  auto timer = d.createTimer([&] {
    ++fired;
    elapsed = std::chrono::steady_clock::now() - start;
    d.exit();
  });
  auto disabled = d.createTimer([&] { ++never; });
  timer->enable(std::chrono::milliseconds(30));
  disabled->enable(std::chrono::milliseconds(10));
  disabled->disable();
  d.run();
  EXPECT_EQ(fired, 1);
  EXPECT_EQ(never, 0);
  EXPECT_GE(elapsed, std::chrono::milliseconds(25));
}

struct Tracked {
  explicit Tracked(std::atomic<int>& n) : n_(n) {}
  ~Tracked() { ++n_; }
  std::atomic<int>& n_;
};

TEST(DispatcherTest, DeferredDeleteRunsAfterTheCurrentCallback) {
  Dispatcher d("test");
  std::atomic<int> destroyed{0};
  int seen_inside = -1;
  d.post([&] {
    d.deferredDelete(std::make_unique<Tracked>(destroyed));
    seen_inside = destroyed.load();
    d.post([&] { d.exit(); });
  });
  d.run();
  EXPECT_EQ(seen_inside, 0);
  EXPECT_EQ(destroyed.load(), 1);
}

// An object whose destructor defers the deletion of another, as a session deleting its
// streams does.
struct Chained {
  Chained(Dispatcher& d, std::atomic<int>& n, int depth) : d_(d), n_(n), depth_(depth) {}
  ~Chained() {
    ++n_;
    if (depth_ > 0) d_.deferredDelete(std::make_unique<Chained>(d_, n_, depth_ - 1));
  }
  Dispatcher& d_;
  std::atomic<int>& n_;
  int depth_;
};

TEST(DispatcherTest, DeletionsDeferredWhileDeletingRunInTheSamePass) {
  Dispatcher d("test");
  std::atomic<int> destroyed{0};
  int after_first_pass = -1;
  d.post([&] {
    d.deferredDelete(std::make_unique<Chained>(d, destroyed, 3));
    d.deferredDelete(std::make_unique<Tracked>(destroyed));
    // Posted callbacks run before the loop's idle phase, so the next one sees the pass done.
    d.post([&] {
      after_first_pass = destroyed.load();
      d.exit();
    });
  });
  d.run();
  EXPECT_EQ(after_first_pass, 5);  // the chain of 4 and the Tracked
  EXPECT_EQ(destroyed.load(), 5);
}

TEST(DispatcherTest, DeferredAtExitAreDeletedByRun) {
  Dispatcher d("test");
  std::atomic<int> destroyed{0};
  d.post([&] {
    d.deferredDelete(std::make_unique<Chained>(d, destroyed, 2));
    d.exit();
  });
  d.run();
  EXPECT_EQ(destroyed.load(), 3);
}

struct TurnEndRecorder : Dispatcher::TurnEnd {
  std::vector<std::string>* log;
  std::string name;
  TurnEndRecorder(std::vector<std::string>* l, std::string n) : log(l), name(std::move(n)) {}
  void onTurnEnd() override { log->push_back(name); }
};

// Turn-end work runs once, after the callbacks of the turn that registered it, in order
// of registration; a cancelled registration does not run.
TEST(DispatcherTest, TurnEndRunsOnceAfterTheTurnsCallbacks) {
  Dispatcher d("test");
  std::vector<std::string> log;
  TurnEndRecorder a(&log, "a"), b(&log, "b"), cancelled(&log, "cancelled");
  d.post([&] {
    d.atTurnEnd(&a);
    d.cancelTurnEnd(d.atTurnEnd(&cancelled));
    d.atTurnEnd(&b);
    log.push_back("callback");
  });
  d.post([&] { log.push_back("second callback"); });
  auto stop = d.createTimer([&] { d.exit(); });
  stop->enable(std::chrono::milliseconds(20));
  d.run();
  EXPECT_EQ(log, (std::vector<std::string>{"callback", "second callback", "a", "b"}));
}

// Registered outside an I/O callback (here a timer's), it still runs before the loop next
// waits: the next timer is 10 s away and the loop stops from the turn-end work.
TEST(DispatcherTest, TurnEndRegisteredOutsideIoRunsBeforeTheLoopWaits) {
  Dispatcher d("test");
  struct Exit : Dispatcher::TurnEnd {
    Dispatcher* d;
    bool ran = false;
    void onTurnEnd() override {
      ran = true;
      d->exit();
    }
  } exit_at_turn_end;
  exit_at_turn_end.d = &d;
  auto registers = d.createTimer([&] { d.atTurnEnd(&exit_at_turn_end); });
  registers->enable(std::chrono::milliseconds(1));
  auto limit = d.createTimer([&] { d.exit(); });
  limit->enable(std::chrono::seconds(10));
  auto start = std::chrono::steady_clock::now();
  d.run();
  EXPECT_TRUE(exit_at_turn_end.ran);
  EXPECT_LT(std::chrono::steady_clock::now() - start, std::chrono::seconds(5));
}

// Work that yields to the rest of its turn runs after the turn's callbacks and the
// turn-end pass, and what it registers for the turn's end runs after it, in the same turn.
// Only inside the I/O callbacks may work still yield.
TEST(DispatcherTest, LateWorkRunsAfterTheTurnEndPassAndBeforeItsOwnWrites) {
  Dispatcher d("test");
  std::vector<std::string> log;
  TurnEndRecorder a(&log, "a"), after_late(&log, "after late");
  struct Late {
    Late(Dispatcher* d, std::vector<std::string>* log, Dispatcher::TurnEnd* then, std::string name)
        : d(d), log(log), then(then), name(std::move(name)) {}
    Dispatcher* d;
    std::vector<std::string>* log;
    Dispatcher::TurnEnd* then;
    std::string name;
    void run() {
      log->push_back(name + (d->inIoPhase() ? " (in I/O)" : ""));
      if (then) d->atTurnEnd(then);
    }
  };
  Late late(&d, &log, &after_late, "late");
  Late cancelled(&d, &log, nullptr, "cancelled");
  bool in_io = false;
  d.post([&] {
    in_io = d.inIoPhase();
    d.lateInTurn<Late, &Late::run>(&late);
    d.lateInTurn<Late, &Late::run>(&cancelled);
    d.cancelLateInTurn(&cancelled);
    d.atTurnEnd(&a);
    log.push_back("callback");
  });
  auto stop = d.createTimer([&] { d.exit(); });
  stop->enable(std::chrono::milliseconds(20));
  d.run();
  EXPECT_TRUE(in_io);
  EXPECT_EQ(log, (std::vector<std::string>{"callback", "a", "late", "after late"}));
}

TEST(SchedulerTest, ChargesWorkToItsTenant) {
  Scheduler s;
  bool ran = false;
  s.run(7, [&] {
    ran = true;
    auto until = std::chrono::steady_clock::now() + std::chrono::milliseconds(2);
    while (std::chrono::steady_clock::now() < until) {
    }
  });
  EXPECT_TRUE(ran);
  EXPECT_GE(s.charged(7), std::chrono::milliseconds(2));
  EXPECT_EQ(s.charged(8), std::chrono::nanoseconds(0));
}

}  // namespace
}  // namespace culvert::event
