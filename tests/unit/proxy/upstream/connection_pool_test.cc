#include "proxy/upstream/connection_pool.h"

#include <arpa/inet.h>
#include <netinet/in.h>
#include <sys/socket.h>
#include <unistd.h>

#include <gtest/gtest.h>

#include <functional>

#include "proxy/network/socket.h"
#include "tests/unit/proxy/upstream/pool_test_util.h"

namespace culvert::upstream {
namespace {

using testing::Listener;
using testing::runUntil;

// Connects one pooled connection per key (to the key's endpoint) through `pool`, running
// the loop until all are up.
std::vector<std::unique_ptr<network::TcpConnection>> connectAll(event::Dispatcher& d, ConnectionPool& pool,
                                                                 const std::vector<PoolKey>& keys) {
  std::vector<std::unique_ptr<network::TcpConnection>> connected;
  std::vector<std::unique_ptr<PendingConnection>> pending;
  for (const auto& key : keys) {
    pending.push_back(pool.acquire(ConnectRequest{key, -1, std::chrono::seconds(2)}, [&](auto result) {
      ASSERT_TRUE(result) << result.error().describe();
      connected.push_back(std::move(*result));
      if (connected.size() == keys.size()) d.exit();
    }));
  }
  auto deadline = d.createTimer([&] { d.exit(); });
  deadline->enable(std::chrono::seconds(5));
  d.run();
  EXPECT_EQ(connected.size(), keys.size());
  return connected;
}

config::ConnectionLifetime lifetime(std::chrono::milliseconds idle, std::chrono::milliseconds max) {
  config::ConnectionLifetime out;
  out.idle_timeout = idle;
  out.max_duration = max;
  return out;
}

uint64_t counter(common::StatsStore& stats, const std::string& name, const std::string& cluster) {
  return stats.counter(name, {{"cluster", cluster}}).value();
}

TEST(ConnectionPoolTest, IdleTimeoutIsTheClusters) {
  Listener server;
  event::Dispatcher d("pool");
  common::StatsStore stats;
  ConnectionPool pool(d, nullptr, std::chrono::seconds(60), &stats);
  pool.setLifetimes([](std::string_view cluster) {
    return cluster == "fast" ? lifetime(std::chrono::milliseconds(200), {}) : lifetime(std::chrono::seconds(10), {});
  });
  auto address = *common::SocketAddress::parse("127.0.0.1", server.port);
  PoolKey fast{1, address, Protocol::Http1, "fast"};
  PoolKey slow{1, address, Protocol::Http1, "slow"};
  auto connected = connectAll(d, pool, {fast, slow});
  ASSERT_EQ(connected.size(), 2u);
  pool.release(fast, std::move(connected[0]));
  pool.release(slow, std::move(connected[1]));
  auto took = runUntil(d, [&] { return !pool.hasIdle(fast); }, std::chrono::seconds(2));
  EXPECT_FALSE(pool.hasIdle(fast));
  EXPECT_GE(took.count(), 175);
  EXPECT_LE(took.count(), 225);
  EXPECT_TRUE(pool.hasIdle(slow));
  EXPECT_EQ(counter(stats, "culvert_upstream_cx_idle_timeout_total", "fast"), 1u);
  EXPECT_EQ(counter(stats, "culvert_upstream_cx_idle_timeout_total", "slow"), 0u);
}

TEST(ConnectionPoolTest, MaxConnectionDurationEndsReuse) {
  Listener server;
  event::Dispatcher d("pool");
  common::StatsStore stats;
  ConnectionPool pool(d, nullptr, std::chrono::seconds(60), &stats);
  pool.setLifetimes([](std::string_view) { return lifetime(std::chrono::seconds(10), std::chrono::milliseconds(150)); });
  auto address = *common::SocketAddress::parse("127.0.0.1", server.port);
  PoolKey key{1, address, Protocol::Http1, "c"};
  auto connected = connectAll(d, pool, {key, key});
  ASSERT_EQ(connected.size(), 2u);
  // Parked: closed when its life ends, although its idle timeout is far off.
  pool.release(key, std::move(connected[0]));
  EXPECT_TRUE(pool.hasIdle(key));
  runUntil(d, [&] { return !pool.hasIdle(key); }, std::chrono::seconds(2));
  EXPECT_FALSE(pool.hasIdle(key));
  EXPECT_EQ(counter(stats, "culvert_upstream_cx_max_duration_reached_total", "c"), 1u);
  // Busy past its life: closed instead of parked when its exchange ends.
  pool.release(key, std::move(connected[1]));
  EXPECT_EQ(pool.idleCount(), 0u);
  EXPECT_EQ(counter(stats, "culvert_upstream_cx_max_duration_reached_total", "c"), 2u);
  EXPECT_EQ(counter(stats, "culvert_upstream_cx_idle_timeout_total", "c"), 0u);
}

TEST(ConnectionPoolTest, MaxRequestsPerConnectionEndsReuseAfterTheLastExchange) {
  Listener server;
  event::Dispatcher d("pool");
  common::StatsStore stats;
  ConnectionPool pool(d, nullptr, std::chrono::seconds(60), &stats);
  pool.setLifetimes([](std::string_view cluster) {
    auto out = lifetime(std::chrono::seconds(10), {});
    out.max_requests = cluster == "three" ? 3 : 0;
    return out;
  });
  auto address = *common::SocketAddress::parse("127.0.0.1", server.port);
  for (const std::string cluster : {"three", "unlimited"}) {
    PoolKey key{1, address, Protocol::Http1, cluster};
    auto connected = connectAll(d, pool, {key});
    ASSERT_EQ(connected.size(), 1u);
    auto* first = connected[0].get();
    pool.release(key, std::move(connected[0]));
    for (int exchange = 2; exchange <= 4; ++exchange) {
      if (!pool.hasIdle(key)) break;
      std::unique_ptr<network::TcpConnection> reused;
      auto pending = pool.acquire(ConnectRequest{key, -1, std::chrono::seconds(2)},
                                  [&](auto result) { reused = std::move(*result); });
      ASSERT_EQ(pending, nullptr) << cluster << ": a parked connection is handed out at once";
      EXPECT_EQ(reused.get(), first) << cluster;
      pool.release(key, std::move(reused));
    }
    if (cluster == "three") {
      // Released after its 3rd exchange: closed, not parked.
      EXPECT_FALSE(pool.hasIdle(key));
      EXPECT_EQ(pool.connectionsCreated(), 1u);
      EXPECT_EQ(counter(stats, "culvert_upstream_cx_max_requests_total", "three"), 1u);
    } else {
      EXPECT_TRUE(pool.hasIdle(key)) << "4 exchanges and still reused";
      EXPECT_EQ(counter(stats, "culvert_upstream_cx_max_requests_total", "unlimited"), 0u);
    }
  }
}

TEST(ConnectionPoolTest, ZeroIdleTimeoutKeepsConnections) {
  Listener server;
  event::Dispatcher d("pool");
  ConnectionPool pool(d, nullptr, std::chrono::milliseconds(1));
  pool.setLifetimes([](std::string_view) { return lifetime({}, {}); });
  auto address = *common::SocketAddress::parse("127.0.0.1", server.port);
  PoolKey key{1, address, Protocol::Http1, "c"};
  auto connected = connectAll(d, pool, {key});
  ASSERT_EQ(connected.size(), 1u);
  pool.release(key, std::move(connected[0]));
  runUntil(d, [] { return false; }, std::chrono::milliseconds(50));
  EXPECT_TRUE(pool.hasIdle(key));
}

TEST(ConnectionPoolTest, EndpointsThatLeaveTheirClusterAreNotKept) {
  Listener server;
  event::Dispatcher d("pool");
  ConnectionPool pool(d, nullptr, std::chrono::seconds(60));
  auto address = *common::SocketAddress::parse("127.0.0.1", server.port);
  PoolKey a{1, address, Protocol::Http1, "a"};
  PoolKey b{1, address, Protocol::Http1, "b"};
  std::vector<std::unique_ptr<network::TcpConnection>> connected;
  std::vector<std::unique_ptr<PendingConnection>> pending;
  for (const auto& key : {a, a, b}) {
    pending.push_back(pool.acquire(ConnectRequest{key, -1, std::chrono::seconds(2)}, [&](auto result) {
      ASSERT_TRUE(result) << result.error().describe();
      connected.push_back(std::move(*result));
      if (connected.size() == 3) d.exit();
    }));
  }
  auto deadline = d.createTimer([&] { d.exit(); });
  deadline->enable(std::chrono::seconds(5));
  d.run();
  ASSERT_EQ(connected.size(), 3u);
  pool.release(a, std::move(connected[0]));
  pool.release(b, std::move(connected[2]));
  EXPECT_EQ(pool.idleCount(), 2u);
  EXPECT_TRUE(pool.hasIdle(a));
  // Cluster "a" no longer has the endpoint: its idle connection closes at once, and a busy
  // one is closed rather than parked when its exchange ends.
  pool.setLiveEndpoints([&](std::string_view cluster, const common::SocketAddress& endpoint) {
    return cluster == "b" && endpoint == address;
  });
  EXPECT_FALSE(pool.hasIdle(a));
  EXPECT_TRUE(pool.hasIdle(b));
  pool.release(a, std::move(connected[1]));
  EXPECT_EQ(pool.idleCount(), 1u);
}

TEST(ConnectionPoolTest, LivenessIsAskedPerCluster) {
  Listener server;
  event::Dispatcher d("pool");
  ConnectionPool pool(d, nullptr, std::chrono::seconds(60));
  auto address = *common::SocketAddress::parse("127.0.0.1", server.port);
  PoolKey logical{1, address, Protocol::Http1, "logical"};
  PoolKey strict{1, address, Protocol::Http1, "strict"};
  std::vector<std::unique_ptr<network::TcpConnection>> connected;
  std::vector<std::unique_ptr<PendingConnection>> pending;
  for (const auto& key : {logical, strict}) {
    pending.push_back(pool.acquire(ConnectRequest{key, -1, std::chrono::seconds(2)}, [&](auto result) {
      ASSERT_TRUE(result) << result.error().describe();
      connected.push_back(std::move(*result));
      if (connected.size() == 2) d.exit();
    }));
  }
  auto deadline = d.createTimer([&] { d.exit(); });
  deadline->enable(std::chrono::seconds(5));
  d.run();
  ASSERT_EQ(connected.size(), 2u);
  pool.release(logical, std::move(connected[0]));
  pool.release(strict, std::move(connected[1]));
  // Both clusters now resolve elsewhere; the cluster manager keeps the LOGICAL_DNS one's.
  pool.setLiveEndpoints([](std::string_view cluster, const common::SocketAddress& endpoint) {
    return cluster == "logical" || endpoint == *common::SocketAddress::parse("127.0.0.2", 80);
  });
  EXPECT_TRUE(pool.hasIdle(logical));
  EXPECT_FALSE(pool.hasIdle(strict));
}

// A holder of a lent connection: records when the pool ends it.
struct Borrower : LentConnection {
  std::function<void()> on_drain_timeout;
  int drain_timeouts = 0;
  void onDrainTimeout() override {
    ++drain_timeouts;
    if (on_drain_timeout) on_drain_timeout();
  }
};

// DESIGN §5: a busy connection to an endpoint that left its cluster is ended at the drain
// timeout; one given back in time, or whose endpoint came back, is not.
TEST(ConnectionPoolTest, BusyConnectionsToALeftEndpointEndAtTheDrainTimeout) {
  Listener server;
  event::Dispatcher d("pool");
  common::StatsStore stats;
  ConnectionPool pool(d, nullptr, std::chrono::seconds(60), &stats, std::chrono::milliseconds(100));
  auto address = *common::SocketAddress::parse("127.0.0.1", server.port);
  PoolKey a{1, address, Protocol::Http1, "a"};
  PoolKey b{1, address, Protocol::Http1, "b"};
  auto connected = connectAll(d, pool, {a, a, b});
  ASSERT_EQ(connected.size(), 3u);
  Borrower busy, returned, other;
  pool.lend(busy, a);
  pool.lend(returned, a);
  pool.lend(other, b);
  pool.setLiveEndpoints([](std::string_view cluster, const common::SocketAddress&) { return cluster == "b"; });
  auto give_back = d.createTimer([&] { pool.giveBack(returned); });
  give_back->enable(std::chrono::milliseconds(30));
  auto took = runUntil(d, [&] { return busy.drain_timeouts > 0; }, std::chrono::seconds(2));
  EXPECT_EQ(busy.drain_timeouts, 1);
  EXPECT_GE(took.count(), 95);
  EXPECT_LE(took.count(), 200);
  EXPECT_EQ(returned.drain_timeouts, 0);
  EXPECT_EQ(other.drain_timeouts, 0);
  EXPECT_EQ(counter(stats, "culvert_upstream_cx_drain_timeout_total", "a"), 1u);

  // Cluster "b" loses the endpoint, then gets it back before the deadline.
  pool.setLiveEndpoints([](std::string_view, const common::SocketAddress&) { return false; });
  auto back = d.createTimer([&] { pool.setLiveEndpoints([](std::string_view, const common::SocketAddress&) { return true; }); });
  back->enable(std::chrono::milliseconds(30));
  runUntil(d, [] { return false; }, std::chrono::milliseconds(200));
  EXPECT_EQ(other.drain_timeouts, 0);
  EXPECT_EQ(counter(stats, "culvert_upstream_cx_drain_timeout_total", "b"), 0u);
}

// Ending one loan may end others (a request abandons its hedged attempts): the pool must
// not touch a loan given back from inside another's callback.
TEST(ConnectionPoolTest, DrainTimeoutSurvivesLoansGivenBackFromACallback) {
  Listener server;
  event::Dispatcher d("pool");
  ConnectionPool pool(d, nullptr, std::chrono::seconds(60), nullptr, std::chrono::milliseconds(20));
  auto address = *common::SocketAddress::parse("127.0.0.1", server.port);
  PoolKey a{1, address, Protocol::Http1, "a"};
  auto first = std::make_unique<Borrower>();
  auto second = std::make_unique<Borrower>();
  pool.lend(*first, a);
  pool.lend(*second, a);
  // Whichever is ended first destroys the other.
  first->on_drain_timeout = [&] { second.reset(); };
  second->on_drain_timeout = [&] { first.reset(); };
  pool.setLiveEndpoints([](std::string_view, const common::SocketAddress&) { return false; });
  runUntil(d, [&] { return !first || !second; }, std::chrono::seconds(1));
  EXPECT_TRUE(!first != !second);  // exactly one was ended; the other was destroyed
  runUntil(d, [] { return false; }, std::chrono::milliseconds(50));
}

}  // namespace
}  // namespace culvert::upstream
