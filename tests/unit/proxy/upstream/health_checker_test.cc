#include "proxy/upstream/health_checker.h"

#include <gtest/gtest.h>

namespace culvert::upstream {
namespace {

TEST(HealthTrackerTest, FirstResultDecidesThenThresholds) {
  HealthTracker t(2, 3);
  EXPECT_TRUE(t.healthy());
  EXPECT_FALSE(t.record(true));  // first success: stays healthy
  EXPECT_FALSE(t.record(false));
  EXPECT_FALSE(t.record(false));
  EXPECT_TRUE(t.healthy());
  EXPECT_TRUE(t.record(false));  // third failure in a row
  EXPECT_FALSE(t.healthy());
  EXPECT_FALSE(t.record(true));
  EXPECT_FALSE(t.record(false));  // breaks the run of successes
  EXPECT_FALSE(t.record(true));
  EXPECT_TRUE(t.record(true));
  EXPECT_TRUE(t.healthy());
}

TEST(HealthTrackerTest, FirstFailureMarksUnhealthyAtOnce) {
  HealthTracker t(2, 3);
  EXPECT_TRUE(t.record(false));
  EXPECT_FALSE(t.healthy());
}

TEST(HealthCheckHttpTest, RequestAndStatus) {
  config::HealthCheck hc;
  hc.kind = config::HealthCheck::Kind::Http;
  hc.path = "/healthz";
  EXPECT_EQ(healthCheckRequest(hc, "backend"),
            "GET /healthz HTTP/1.1\r\nHost: backend\r\nUser-Agent: Envoy/HC\r\nConnection: close\r\n\r\n");
  hc.host = "svc";
  EXPECT_NE(healthCheckRequest(hc, "backend").find("Host: svc\r\n"), std::string::npos);
  EXPECT_EQ(responseStatus("HTTP/1.1 200 OK\r\n"), 200u);
  EXPECT_EQ(responseStatus("HTTP/1.0 503 Service Unavailable\r\nx: y\r\n\r\n"), 503u);
  EXPECT_FALSE(responseStatus("HTTP/1.1 200 O"));
  EXPECT_EQ(responseStatus("SSH-2.0-OpenSSH\r\n"), 0u);
  EXPECT_TRUE(expectedStatus(hc, 200));
  EXPECT_FALSE(expectedStatus(hc, 204));
  hc.expected_statuses = {{200, 300}, {404, 405}};
  EXPECT_TRUE(expectedStatus(hc, 204));
  EXPECT_TRUE(expectedStatus(hc, 404));
  EXPECT_FALSE(expectedStatus(hc, 300));
}

}  // namespace
}  // namespace culvert::upstream

#include <arpa/inet.h>
#include <netinet/in.h>
#include <sys/socket.h>
#include <unistd.h>

#include <map>
#include <thread>

namespace culvert::upstream {
namespace {

// A loopback listener that answers each connection with `response` and closes.
class TinyServer {
public:
  explicit TinyServer(std::string response) : response_(std::move(response)) {
    fd_ = ::socket(AF_INET, SOCK_STREAM, 0);
    sockaddr_in a{};
    a.sin_family = AF_INET;
    a.sin_addr.s_addr = htonl(INADDR_LOOPBACK);
    EXPECT_EQ(::bind(fd_, reinterpret_cast<sockaddr*>(&a), sizeof a), 0);
    EXPECT_EQ(::listen(fd_, 16), 0);
    socklen_t len = sizeof a;
    ::getsockname(fd_, reinterpret_cast<sockaddr*>(&a), &len);
    port_ = ntohs(a.sin_port);
    thread_ = std::thread([this] {
      while (true) {
        int c = ::accept(fd_, nullptr, nullptr);
        if (c < 0) return;
        char buf[1024];
        ssize_t n = ::read(c, buf, sizeof buf);
        if (n > 0) {
          requests_.append(buf, static_cast<size_t>(n));
          (void)!::write(c, response_.data(), response_.size());
        }
        ::close(c);
      }
    });
  }
  ~TinyServer() {
    ::shutdown(fd_, SHUT_RDWR);
    ::close(fd_);
    thread_.join();
  }
  uint16_t port() const { return port_; }
  std::string requests_;

private:
  std::string response_;
  int fd_;
  uint16_t port_ = 0;
  std::thread thread_;
};

// A loopback port with nothing listening.
uint16_t closedPort() {
  int fd = ::socket(AF_INET, SOCK_STREAM, 0);
  sockaddr_in a{};
  a.sin_family = AF_INET;
  a.sin_addr.s_addr = htonl(INADDR_LOOPBACK);
  ::bind(fd, reinterpret_cast<sockaddr*>(&a), sizeof a);
  socklen_t len = sizeof a;
  ::getsockname(fd, reinterpret_cast<sockaddr*>(&a), &len);
  ::close(fd);
  return ntohs(a.sin_port);
}

TEST(HealthCheckerTest, HttpChecksMarkBadStatusesAndClosedPortsUnhealthy) {
  TinyServer ok("HTTP/1.1 200 OK\r\nContent-Length: 0\r\n\r\n");
  TinyServer failing("HTTP/1.1 503 Service Unavailable\r\nContent-Length: 0\r\n\r\n");
  auto cluster = std::make_shared<config::Cluster>();
  cluster->name = "backend";
  for (uint16_t port : {ok.port(), failing.port(), closedPort()}) {
    cluster->endpoints.push_back({*common::SocketAddress::parse("127.0.0.1", port), 1, 0});
  }
  config::HealthCheck hc;
  hc.kind = config::HealthCheck::Kind::Http;
  hc.path = "/healthz";
  hc.interval = std::chrono::milliseconds(50);
  hc.timeout = std::chrono::milliseconds(500);
  cluster->health_check = hc;

  event::Dispatcher d("hc");
  std::map<uint32_t, bool> changes;
  std::unique_ptr<HealthChecker> checker;
  auto stop = d.createTimer([&] { d.exit(); });
  d.post([&] {
    checker = std::make_unique<HealthChecker>(d, cluster, defaultRandom(), [&](uint32_t i, bool healthy) {
      changes[i] = healthy;
      if (changes.size() == 2) stop->enable(std::chrono::milliseconds(120));  // a few more rounds
    });
  });
  auto deadline = d.createTimer([&] { d.exit(); });
  deadline->enable(std::chrono::seconds(5));
  d.run();
  checker.reset();
  EXPECT_EQ(changes, (std::map<uint32_t, bool>{{1, false}, {2, false}}));
  EXPECT_NE(ok.requests_.find("GET /healthz HTTP/1.1\r\nHost: backend\r\n"), std::string::npos) << ok.requests_;
}

}  // namespace
}  // namespace culvert::upstream
