#include "proxy/network/connection.h"

#include <fcntl.h>
#include <netinet/in.h>
#include <sys/ioctl.h>
#include <sys/socket.h>
#include <unistd.h>

#include <gtest/gtest.h>

#include <functional>
#include <string>
#include <thread>
#include <vector>

#include "proxy/network/socket.h"
#include "tests/unit/proxy/network/tcp_segments.h"

namespace culvert::network {
namespace {

using namespace std::chrono_literals;

// A connected loopback TCP pair: `writer` adopted by a TcpConnection, `reader` a plain
// non-blocking fd the test drains by hand. Small buffers, so a few hundred KiB queue.
struct Pair {
  int writer = -1;
  int reader = -1;
  Pair() {
    auto listener = createListenSocket(*common::SocketAddress::parse("127.0.0.1", 0), 1, false);
    EXPECT_TRUE(listener.has_value());
    sockaddr_in a{};
    socklen_t len = sizeof a;
    ::getsockname(listener->get(), reinterpret_cast<sockaddr*>(&a), &len);
    writer = ::socket(AF_INET, SOCK_STREAM, 0);
    int small = 16 * 1024;
    ::setsockopt(writer, SOL_SOCKET, SO_SNDBUF, &small, sizeof small);
    // Loopback: the handshake is done when connect() returns, so the accept finds it.
    EXPECT_EQ(::connect(writer, reinterpret_cast<sockaddr*>(&a), sizeof a), 0);
    reader = ::accept(listener->get(), nullptr, nullptr);
    EXPECT_GE(reader, 0);
    ::setsockopt(reader, SOL_SOCKET, SO_RCVBUF, &small, sizeof small);
    ::fcntl(writer, F_SETFL, ::fcntl(writer, F_GETFL) | O_NONBLOCK);
    ::fcntl(reader, F_SETFL, ::fcntl(reader, F_GETFL) | O_NONBLOCK);
  }
  ~Pair() {
    if (reader >= 0) ::close(reader);
  }
  // Reads what is there; false once the peer's FIN was read.
  bool drain(std::string& into) const {
    char buf[65536];
    for (;;) {
      ssize_t n = ::read(reader, buf, sizeof buf);
      if (n > 0) {
        into.append(buf, static_cast<size_t>(n));
        continue;
      }
      return n != 0;
    }
  }
};

// Runs the loop until `condition` holds (checked every millisecond) or `limit` passes.
template <typename Condition>
void runUntil(event::Dispatcher& d, Condition condition, std::chrono::milliseconds limit = 5s) {
  auto check = d.createTimer([&] {
    if (condition()) d.exit();
  });
  check->enable(1ms, 1ms);
  auto give_up = d.createTimer([&] { d.exit(); });
  give_up->enable(limit);
  d.run();
}

// Runs the loop, reading what `pair` receives every millisecond, until the writer's FIN
// arrives (true) or 10 s pass (false).
bool readUntilEof(event::Dispatcher& d, const Pair& pair, std::string& received) {
  bool eof = false;
  runUntil(
      d, [&] { return eof = !pair.drain(received); }, 10s);
  return eof;
}

// Counts drains and keeps what it reads; its writes are `share`'s, its reads
// `read_share`'s (none by default).
struct Drained : ConnectionCallbacks {
  int drained = 0;
  std::string data;
  WorkShare share;
  WorkShare read_share;
  void onData(std::string_view d) override { data.append(d); }
  void onClose(CloseReason) override {}
  void onWriteDrained() override { ++drained; }
  WorkShare writeShare() const override { return share; }
  WorkShare readShare() const override { return read_share; }
};

std::string pattern(size_t size) {
  std::string s(size, '\0');
  for (size_t i = 0; i < size; ++i) s[i] = static_cast<char>('a' + (i * 7 + i / 251) % 26);
  return s;
}

// The connection under test: `pair.writer` adopted on a dispatcher of its own, reporting
// to `callbacks`. `scheduler` is there for tests that share its writes (callbacks.share).
// Members go in reverse: the connection before the scheduler its held writes may pause on.
struct Adopted {
  explicit Adopted(std::chrono::nanoseconds quantum = 500us, std::chrono::milliseconds round = 1ms)
      : scheduler(&d, quantum, round) {
    auto adopted = TcpConnection::adopt(d, pair.writer);
    EXPECT_TRUE(adopted) << adopted.error().describe();
    if (!adopted) return;
    connection = std::move(*adopted);
    connection->setCallbacks(&callbacks);
  }
  Pair pair;
  event::Dispatcher d{"conn"};
  event::Scheduler scheduler;
  Drained callbacks;
  std::unique_ptr<TcpConnection> connection;
};

bool peerHasBytes(const Pair& pair) {
  char c;
  return ::recv(pair.reader, &c, 1, MSG_PEEK | MSG_DONTWAIT) == 1;
}

// Small writes made in one loop turn wait for its end and reach the kernel in one system
// call: the peer sees nothing during the turn, then every byte, in order, in one segment
// (with TCP_NODELAY each write() would have been a segment of its own).
TEST(TcpConnectionCoalescing, SmallWritesOfATurnGoOutTogetherAtItsEnd) {
  Adopted t;
  ASSERT_TRUE(t.connection);
  auto& [pair, d, scheduler, callbacks, connection] = t;
  int fd = connection->fd();
  uint32_t segments_before = testing::dataSegmentsSent(fd);

  std::vector<std::string> pieces;
  std::string expected;
  for (int i = 0; i < 10; ++i) {
    pieces.push_back("piece " + std::to_string(i) + ";");
    expected += pieces.back();
  }
  bool seen_during_turn = true;
  d.post([&] {
    for (const auto& piece : pieces) connection->write(piece);
    EXPECT_EQ(connection->queuedWriteBytes(), 0u);
    seen_during_turn = peerHasBytes(pair) || testing::dataSegmentsSent(fd) != segments_before;
  });
  std::string received;
  runUntil(d, [&] {
    pair.drain(received);
    return received.size() >= expected.size();
  });
  EXPECT_FALSE(seen_during_turn);
  EXPECT_EQ(received, expected);
  EXPECT_EQ(testing::dataSegmentsSent(fd) - segments_before, 1u);
  EXPECT_EQ(callbacks.drained, 0);  // nothing was ever queued
}

// A write made at the turn's end (an HTTP/2 session's flush) has nothing to wait for: it
// is in the kernel when write() returns.
TEST(TcpConnectionCoalescing, WritesMadeAtTheTurnsEndGoOutAtOnce) {
  Adopted t;
  ASSERT_TRUE(t.connection);
  auto& [pair, d, scheduler, callbacks, connection] = t;
  struct WriteAtTurnEnd : event::Dispatcher::TurnEnd {
    TcpConnection* connection;
    const Pair* pair;
    bool in_kernel_on_return = false;
    void onTurnEnd() override {
      connection->write("flushed");
      in_kernel_on_return = peerHasBytes(*pair);
    }
  } flusher;
  flusher.connection = connection.get();
  flusher.pair = &pair;
  d.post([&] { d.atTurnEnd(&flusher); });
  std::string received;
  runUntil(d, [&] {
    pair.drain(received);
    return !received.empty();
  });
  EXPECT_TRUE(flusher.in_kernel_on_return);
  EXPECT_EQ(received, "flushed");
}

// A write too large to wait sends what waits first, then itself; later small writes wait
// behind what the kernel did not take. Every byte arrives once, in order.
TEST(TcpConnectionCoalescing, LargeWritesKeepTheOrderWithWaitingOnes) {
  Adopted t;
  ASSERT_TRUE(t.connection);
  auto& [pair, d, scheduler, callbacks, connection] = t;
  auto body = pattern(256 * 1024);
  std::string expected;
  d.post([&] {
    for (auto piece : {std::string_view("head;"), std::string_view(body).substr(0, TcpConnection::kCoalescedBytes + 1),
                       std::string_view("middle;"), std::string_view(body), std::string_view("tail;")}) {
      connection->write(piece);
      expected += piece;
    }
    connection->shutdownWrite();
  });
  std::string received;
  EXPECT_TRUE(readUntilEof(d, pair, received));
  EXPECT_EQ(received.size(), expected.size());
  EXPECT_TRUE(received == expected);
}

// A half-close or a close in the same turn as small writes sends them before the FIN.
TEST(TcpConnectionCoalescing, ShutdownAndCloseSendWhatWaitsFirst) {
  for (bool close : {false, true}) {
    SCOPED_TRACE(close ? "close" : "shutdownWrite");
    Adopted t;
    ASSERT_TRUE(t.connection);
    auto& [pair, d, scheduler, callbacks, connection] = t;
    d.post([&] {
      connection->write("HTTP/1.1 400 Bad Request\r\n");
      connection->write("content-length: 0\r\n\r\n");
      if (close) {
        connection->close();
      } else {
        connection->shutdownWrite();
      }
    });
    std::string received;
    EXPECT_TRUE(readUntilEof(d, pair, received));
    EXPECT_EQ(received, "HTTP/1.1 400 Bad Request\r\ncontent-length: 0\r\n\r\n");
  }
}

// The system call made at the turn's end is work of the tenant whose writes waited.
TEST(TcpConnectionCoalescing, TheTurnEndWriteIsChargedToTheTenant) {
  Adopted t;
  ASSERT_TRUE(t.connection);
  auto& [pair, d, scheduler, callbacks, connection] = t;
  callbacks.share = {&scheduler, 7, 1};
  d.post([&] { connection->write("small"); });
  std::string received;
  runUntil(d, [&] {
    pair.drain(received);
    return !received.empty();
  });
  EXPECT_EQ(received, "small");
  EXPECT_GT(scheduler.charged(7), 0ns);
}

// Shared writes keep every byte in order, send the FIN after the held ones, report the
// drain once, and charge the slices they write outside any caller's work to the tenant.
TEST(TcpConnectionSharedWrites, DeliversInOrderAndChargesTheTenant) {
  Adopted t;
  ASSERT_TRUE(t.connection);
  auto& [pair, d, scheduler, callbacks, connection] = t;
  callbacks.share = {&scheduler, 7, 1};

  auto body = pattern(3 * 1024 * 1024 + 123);
  connection->write(std::string_view(body).substr(0, 1024 * 1024));
  connection->write(std::string_view(body).substr(1024 * 1024));
  EXPECT_GT(connection->queuedWriteBytes(), 0u);
  connection->shutdownWrite();
  auto charged_before = scheduler.charged(7);

  std::string received;
  EXPECT_TRUE(readUntilEof(d, pair, received));
  ASSERT_EQ(received.size(), body.size());
  EXPECT_TRUE(received == body);
  EXPECT_EQ(callbacks.drained, 1);
  EXPECT_EQ(connection->queuedWriteBytes(), 0u);
  EXPECT_GT(scheduler.charged(7), charged_before);
}

// Held bytes are cut into 64 KiB slices as they arrive: writes of every size, straddling
// slice boundaries, still reach the peer whole and in order.
TEST(TcpConnectionSharedWrites, WritesOfEverySizeKeepTheirOrderAcrossSlices) {
  Adopted t;
  ASSERT_TRUE(t.connection);
  auto& [pair, d, scheduler, callbacks, connection] = t;
  callbacks.share = {&scheduler, 7, 1};

  auto body = pattern(4 * 1024 * 1024 + 77);
  std::string_view rest(body);
  // Sizes from 1 byte to well over a slice, in no order.
  for (size_t i = 0; !rest.empty(); ++i) {
    size_t n = std::min(rest.size(), (i * 40503) % 150000 + 1);
    connection->write(rest.substr(0, n));
    rest.remove_prefix(n);
  }
  EXPECT_GT(connection->queuedWriteBytes(), 0u);
  connection->shutdownWrite();

  std::string received;
  EXPECT_TRUE(readUntilEof(d, pair, received));
  ASSERT_EQ(received.size(), body.size());
  EXPECT_TRUE(received == body);
  EXPECT_EQ(connection->queuedWriteBytes(), 0u);
}

// Makes tenant 7 over its share: tenant 8 has work and credit, 7 spent twice its quantum.
void overShare(event::Scheduler& scheduler) {
  scheduler.run(8, [] {});
  scheduler.run(7, [] { std::this_thread::sleep_for(1ms); });
}

// A tenant over its share of the worker: its held bytes wait for a round that finds it
// within its share again; the kernel gets nothing more meanwhile.
TEST(TcpConnectionSharedWrites, OverShareTenantWaitsForTheRound) {
  constexpr auto kRound = 100ms;
  Adopted t(500us, kRound);
  ASSERT_TRUE(t.connection);
  auto& [pair, d, scheduler, callbacks, connection] = t;
  callbacks.share = {&scheduler, 7, 1};

  overShare(scheduler);
  ASSERT_TRUE(scheduler.overShare(7));

  auto body = pattern(1024 * 1024);
  auto start = std::chrono::steady_clock::now();
  connection->write(body);
  ASSERT_GT(connection->queuedWriteBytes(), 0u);
  std::string received;
  // After 30 ms the kernel's buffers are long drained: later bytes are held ones.
  std::chrono::steady_clock::time_point more_came{};
  runUntil(d, [&] {
    auto before = received.size();
    pair.drain(received);
    auto now = std::chrono::steady_clock::now();
    if (more_came == std::chrono::steady_clock::time_point{} && received.size() > before && now - start > 30ms) {
      more_came = now;
    }
    return received.size() == body.size();
  });

  EXPECT_TRUE(received == body);
  ASSERT_NE(more_came, std::chrono::steady_clock::time_point{});
  // Held until the round timer found tenant 7 back within its share (one round or two:
  // it had spent two quanta).
  EXPECT_GE(more_came - start, kRound - 5ms);
}

// Unshared (the default writeShare) a connection writes as before: libuv takes all of it at once.
TEST(TcpConnectionSharedWrites, UnsharedConnectionsAreUnchanged) {
  Adopted t;
  ASSERT_TRUE(t.connection);
  auto& [pair, d, scheduler, callbacks, connection] = t;
  auto body = pattern(512 * 1024);
  connection->write(body);
  connection->shutdownWrite();
  std::string received;
  readUntilEof(d, pair, received);
  EXPECT_TRUE(received == body);
  EXPECT_EQ(callbacks.drained, 1);
}

// Bytes the peer sent and the connection has not read: still in the kernel.
int unreadBytes(int fd) {
  int n = 0;
  ::ioctl(fd, FIONREAD, &n);
  return n;
}


// A tenant over its share is not read at all, not even copied out of the kernel, until
// a round finds it within its share again; then every byte comes, in order.
TEST(TcpConnectionReadShare, OverShareTenantIsNotReadUntilTheRound) {
  constexpr auto kRound = 100ms;
  Adopted t(500us, kRound);
  ASSERT_TRUE(t.connection);
  auto& [pair, d, scheduler, callbacks, connection] = t;
  common::Counter waited;
  callbacks.read_share = {&scheduler, 7, 1, &waited};
  overShare(scheduler);
  ASSERT_TRUE(scheduler.overShare(7));

  const std::string sent = "GET / HTTP/1.1\r\n\r\n";
  ASSERT_EQ(::write(pair.reader, sent.data(), sent.size()), static_cast<ssize_t>(sent.size()));
  auto start = std::chrono::steady_clock::now();
  connection->readEnable(true);
  runUntil(d, [&] { return std::chrono::steady_clock::now() - start > 30ms; });
  EXPECT_EQ(callbacks.data, "");
  EXPECT_EQ(unreadBytes(pair.writer), static_cast<int>(sent.size()));  // left in the kernel
  EXPECT_EQ(scheduler.pausedCount(), 1u);
  EXPECT_EQ(waited.value(), 1u);

  runUntil(d, [&] { return callbacks.data.size() == sent.size(); });
  EXPECT_EQ(callbacks.data, sent);
  EXPECT_GE(std::chrono::steady_clock::now() - start, kRound - 5ms);
  EXPECT_EQ(scheduler.pausedCount(), 0u);
}

// The owner's wish holds across the wait: reads it turned off stay off after the round,
// and a new owner (the pool taking the connection back) starts without the wait.
TEST(TcpConnectionReadShare, TheOwnersReadEnableAndANewOwnerWin) {
  constexpr auto kRound = 20ms;
  Adopted t(500us, kRound);
  ASSERT_TRUE(t.connection);
  auto& [pair, d, scheduler, callbacks, connection] = t;
  callbacks.read_share = {&scheduler, 7, 1};
  overShare(scheduler);
  ASSERT_EQ(::write(pair.reader, "x", 1), 1);
  connection->readEnable(true);
  runUntil(d, [&] { return scheduler.pausedCount() == 1; });
  ASSERT_EQ(scheduler.pausedCount(), 1u);
  connection->readEnable(false);
  auto start = std::chrono::steady_clock::now();
  runUntil(d, [&] { return std::chrono::steady_clock::now() - start > 3 * kRound; });
  EXPECT_EQ(scheduler.pausedCount(), 0u);  // the round came
  EXPECT_EQ(callbacks.data, "");           // and reading stayed off

  overShare(scheduler);
  connection->readEnable(true);
  runUntil(d, [&] { return scheduler.pausedCount() == 1; });
  ASSERT_EQ(scheduler.pausedCount(), 1u);
  Drained next_owner;  // shares nothing
  connection->setCallbacks(&next_owner);
  EXPECT_EQ(scheduler.pausedCount(), 0u);
  runUntil(d, [&] { return next_owner.data == "x"; }, 1s);
  EXPECT_EQ(next_owner.data, "x");
  connection->setCallbacks(&callbacks);  // before next_owner goes
}

// A tenant that had its quanta of a loop turn is read again the next turn, without a
// pause (alone, it is never over its share): of two of its connections whose bytes came
// together, the one read second waits for the next turn.
TEST(TcpConnectionReadShare, ATenantThatHadItsQuantumOfATurnIsReadNextTurn) {
  Adopted t;
  ASSERT_TRUE(t.connection);
  auto& [pair, d, scheduler, callbacks, connection] = t;
  Pair second_pair;
  auto second = TcpConnection::adopt(d, second_pair.writer);
  ASSERT_TRUE(second);
  // Notes the turn it reads in, and spends there more than a tenant alone may in a turn.
  struct Costly : Drained {
    event::Dispatcher* d = nullptr;
    event::Scheduler* s = nullptr;
    std::vector<uint64_t> turns;
    void onData(std::string_view) override {
      turns.push_back(d->polls());
      s->run(7, [] { std::this_thread::sleep_for(500us * (event::Scheduler::kAloneTurnQuanta + 1)); });
    }
  };
  Costly a, b;
  for (Costly* c : {&a, &b}) {
    c->d = &d;
    c->s = &scheduler;
    c->read_share = {&scheduler, 7, 1};
  }
  connection->setCallbacks(&a);
  (*second)->setCallbacks(&b);
  ASSERT_EQ(::write(pair.reader, "x", 1), 1);
  ASSERT_EQ(::write(second_pair.reader, "y", 1), 1);
  connection->readEnable(true);
  (*second)->readEnable(true);
  runUntil(d, [&] { return a.turns.size() == 1 && b.turns.size() == 1; }, 1s);
  ASSERT_EQ(a.turns.size(), 1u);
  ASSERT_EQ(b.turns.size(), 1u);
  EXPECT_NE(a.turns[0], b.turns[0]);
  EXPECT_EQ(scheduler.pausedCount(), 0u);
  connection->setCallbacks(&callbacks);
  (*second)->setCallbacks(nullptr);
}

// Beside a tenant that has had less of the worker this round, a busier tenant's read
// waits for the late part of the turn: the lighter tenant's bytes, though they came
// second, are read first, and its reply has left before the busier tenant's read.
TEST(TcpConnectionReadShare, ABusierTenantsReadWaitsForTheLighterTenantsReply) {
  Adopted t(500us, 10000ms);  // no new round (and no fresh credit) during the test
  ASSERT_TRUE(t.connection);
  auto& [pair, d, scheduler, callbacks, connection] = t;
  Pair light_pair;
  auto light = TcpConnection::adopt(d, light_pair.writer);
  ASSERT_TRUE(light);
  constexpr uint32_t kBusy = 1, kLight = 2;
  scheduler.run(kBusy, [] { std::this_thread::sleep_for(200us); });
  scheduler.run(kLight, [] {});
  std::vector<std::string> order;
  bool reply_out_before_busy_read = false;
  struct Recorder : Drained {
    std::function<void()> on_data;
    void onData(std::string_view) override { on_data(); }
  };
  Recorder busy, lighter;
  busy.read_share = {&scheduler, kBusy, 1};
  lighter.read_share = {&scheduler, kLight, 1};
  busy.on_data = [&] {
    order.push_back("busy");
    reply_out_before_busy_read = peerHasBytes(light_pair);
  };
  lighter.on_data = [&] {
    order.push_back("light");
    (*light)->write("reply");  // coalesced: leaves at the turn-end pass
  };
  connection->setCallbacks(&busy);
  (*light)->setCallbacks(&lighter);
  ASSERT_EQ(::write(pair.reader, "a", 1), 1);  // the busy tenant's bytes come first
  ASSERT_EQ(::write(light_pair.reader, "b", 1), 1);
  connection->readEnable(true);
  (*light)->readEnable(true);
  runUntil(d, [&] { return order.size() == 2; }, 1s);
  EXPECT_EQ(order, (std::vector<std::string>{"light", "busy"}));
  EXPECT_TRUE(reply_out_before_busy_read);
  EXPECT_GT(scheduler.charged(kBusy), 200us);  // the late read is charged too
  connection->setCallbacks(&callbacks);
  (*light)->setCallbacks(nullptr);
}

// A late read that finds the peer's FIN reports the close, as libuv's own read would.
TEST(TcpConnectionReadShare, ALateReadReportsThePeersClose) {
  Adopted t(500us, 10000ms);
  ASSERT_TRUE(t.connection);
  auto& [pair, d, scheduler, callbacks, connection] = t;
  scheduler.run(1, [] { std::this_thread::sleep_for(200us); });
  scheduler.run(2, [] {});
  struct CloseRecorder : Drained {
    int closes = 0;
    void onClose(CloseReason reason) override {
      ++closes;
      EXPECT_EQ(reason, CloseReason::RemoteClose);
    }
  } busy;
  busy.read_share = {&scheduler, 1, 1};
  connection->setCallbacks(&busy);
  ::shutdown(pair.reader, SHUT_WR);
  connection->readEnable(true);
  runUntil(d, [&] { return busy.closes > 0; }, 1s);
  runUntil(d, [] { return false; }, 20ms);  // no second report
  EXPECT_EQ(busy.closes, 1);
  connection->setCallbacks(&callbacks);
}

}  // namespace
}  // namespace culvert::network
