#include "proxy/upstream/connection_pool.h"

#include <arpa/inet.h>
#include <netinet/in.h>
#include <sys/socket.h>
#include <unistd.h>

#include <gtest/gtest.h>

namespace culvert::upstream {
namespace {

// A loopback listener whose accepted connections stay open (the kernel accepts them).
struct Listener {
  int fd = ::socket(AF_INET, SOCK_STREAM, 0);
  uint16_t port = 0;
  Listener() {
    sockaddr_in a{};
    a.sin_family = AF_INET;
    a.sin_addr.s_addr = htonl(INADDR_LOOPBACK);
    EXPECT_EQ(::bind(fd, reinterpret_cast<sockaddr*>(&a), sizeof a), 0);
    EXPECT_EQ(::listen(fd, 16), 0);
    socklen_t len = sizeof a;
    ::getsockname(fd, reinterpret_cast<sockaddr*>(&a), &len);
    port = ntohs(a.sin_port);
  }
  ~Listener() { ::close(fd); }
};

TEST(ConnectionPoolTest, EndpointsThatLeaveTheirClusterAreNotKept) {
  Listener server;
  event::Dispatcher d("pool");
  ConnectionPool pool(d, nullptr, std::chrono::seconds(60));
  auto address = *common::SocketAddress::parse("127.0.0.1", server.port);
  PoolKey a{1, address.toString(), Protocol::Http1, "a"};
  PoolKey b{1, address.toString(), Protocol::Http1, "b"};
  std::vector<std::unique_ptr<network::TcpConnection>> connected;
  std::vector<std::unique_ptr<PendingConnection>> pending;
  for (const auto& key : {a, a, b}) {
    pending.push_back(pool.acquire(ConnectRequest{key, -1, address, std::chrono::seconds(2)}, [&](auto result) {
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
  pool.setLiveEndpoints([&](std::string_view cluster, std::string_view endpoint) {
    return cluster == "b" && endpoint == address.toString();
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
  PoolKey logical{1, address.toString(), Protocol::Http1, "logical"};
  PoolKey strict{1, address.toString(), Protocol::Http1, "strict"};
  std::vector<std::unique_ptr<network::TcpConnection>> connected;
  std::vector<std::unique_ptr<PendingConnection>> pending;
  for (const auto& key : {logical, strict}) {
    pending.push_back(pool.acquire(ConnectRequest{key, -1, address, std::chrono::seconds(2)}, [&](auto result) {
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
  pool.setLiveEndpoints([](std::string_view cluster, std::string_view endpoint) {
    return cluster == "logical" || endpoint == "127.0.0.2:80";
  });
  EXPECT_TRUE(pool.hasIdle(logical));
  EXPECT_FALSE(pool.hasIdle(strict));
}

}  // namespace
}  // namespace culvert::upstream
