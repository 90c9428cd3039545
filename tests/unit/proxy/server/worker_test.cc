// The worker's HTTP/1.1 data path over real loopback sockets: a captured connection is
// accepted, matched to its virtual listener by original destination, routed, and
// forwarded to a real upstream, with keep-alive on both sides.
#include "proxy/server/worker.h"

#include <arpa/inet.h>
#include <fcntl.h>
#include <poll.h>
#include <sys/socket.h>
#include <unistd.h>

#include <gtest/gtest.h>

#include <algorithm>
#include <atomic>
#include <functional>
#include <iostream>
#include <future>
#include <map>
#include <mutex>
#include <thread>
#include <vector>

#include "proxy/http/http2/codec.h"
#include "proxy/server/server.h"

namespace culvert::server {
namespace {

using namespace std::chrono_literals;

// A blocking HTTP/1.1 origin: answers each request (no request bodies) with the request
// head it received as the body, so tests can see what the proxy sent.
// A listening socket on 127.0.0.1 whose connections are handed, one at a time and in
// accept order, to `serve` on the server's own thread; `serve` owns (closes) the fd.
// Stops and joins on destruction, or earlier with stop().
class LoopbackServer {
public:
  LoopbackServer(std::function<void(int fd)> serve, int backlog = 16) : serve_(std::move(serve)) {
    auto fd = network::createListenSocket(*common::SocketAddress::parse("127.0.0.1", 0), backlog, false);
    listen_fd_ = std::move(*fd);
    sockaddr_in sa{};
    socklen_t len = sizeof sa;
    getsockname(listen_fd_.get(), reinterpret_cast<sockaddr*>(&sa), &len);
    port_ = ntohs(sa.sin_port);
    thread_ = std::thread([this] {
      while (!stop_) {
        pollfd p{listen_fd_.get(), POLLIN, 0};
        if (poll(&p, 1, 50) <= 0) continue;
        int fd = accept4(listen_fd_.get(), nullptr, nullptr, SOCK_CLOEXEC);
        if (fd >= 0) serve_(fd);
      }
    });
  }
  ~LoopbackServer() { stop(); }
  void stop() {
    stop_ = true;
    if (thread_.joinable()) thread_.join();
  }
  bool stopping() const { return stop_; }
  uint16_t port() const { return port_; }

private:
  std::function<void(int)> serve_;
  network::FileDescriptor listen_fd_;
  uint16_t port_ = 0;
  std::atomic<bool> stop_{false};
  std::thread thread_;
};

class TestOrigin {
public:
  ~TestOrigin() {
    server_.stop();
    for (auto& t : conn_threads_) t.join();
  }
  uint16_t port() const { return server_.port(); }
  int connections() const { return connections_; }
  static constexpr size_t kBigBody = 64 * 1024 * 1024;
  static constexpr auto kSlowAnswer = std::chrono::milliseconds(300);  // GET /api/slow
  size_t bigBytesWritten() const { return big_written_; }
  std::string lastHead() {
    std::lock_guard l(mu_);
    return last_head_;
  }

private:
  // A 64 MiB response, written as fast as the proxy takes it.
  bool writeBig(int fd) {
    std::string head = "HTTP/1.1 200 OK\r\nContent-Length: " + std::to_string(kBigBody) + "\r\n\r\n";
    if (write(fd, head.data(), head.size()) < 0) return false;
    std::string block(256 * 1024, 'x');
    for (size_t sent = 0; sent < kBigBody && !server_.stopping();) {
      ssize_t n = write(fd, block.data(), std::min(block.size(), kBigBody - sent));
      if (n <= 0) return false;
      sent += static_cast<size_t>(n);
      big_written_ = sent;
    }
    return true;
  }

  void handle(int fd) {
    std::string buf;
    char tmp[4096];
    while (!server_.stopping()) {
      pollfd p{fd, POLLIN, 0};
      if (poll(&p, 1, 50) <= 0) continue;
      ssize_t n = read(fd, tmp, sizeof tmp);
      if (n <= 0) break;
      buf.append(tmp, static_cast<size_t>(n));
      size_t end;
      while ((end = buf.find("\r\n\r\n")) != std::string::npos) {
        std::string head = buf.substr(0, end + 4);
        buf.erase(0, end + 4);
        {
          std::lock_guard l(mu_);
          last_head_ = head;
        }
        if (head.starts_with("GET /api/stall ")) continue;  // never answers
        if (head.starts_with("GET /api/slow ")) std::this_thread::sleep_for(kSlowAnswer);
        if (head.starts_with("GET /api/big ")) {
          if (!writeBig(fd)) break;
          continue;
        }
        std::string resp = "HTTP/1.1 200 OK\r\nContent-Length: " + std::to_string(head.size()) + "\r\n\r\n" + head;
        if (write(fd, resp.data(), resp.size()) < 0) break;
      }
    }
    close(fd);
  }

  std::atomic<int> connections_{0};
  std::atomic<size_t> big_written_{0};
  std::vector<std::thread> conn_threads_;  // touched by the server's thread only, until stop()
  std::mutex mu_;
  std::string last_head_;
  // Last: it starts accepting once everything above exists, and stops first.
  LoopbackServer server_{[this](int fd) {
                           ++connections_;
                           conn_threads_.emplace_back([this, fd] { handle(fd); });
                         },
                         64};
};

// A server-first TCP origin: greets each connection with a banner, then echoes what it
// receives until the client half-closes, then closes.
class BannerEchoOrigin {
public:
  uint16_t port() const { return server_.port(); }
  std::string received() {
    std::lock_guard l(mu_);
    return received_;
  }

private:
  void serve(int c) {
    if (write(c, "HELLO\r\n", 7) != 7) {
      close(c);
      return;
    }
    std::vector<char> buf(64 << 10);  // a flood's pace is the proxy's, not this loop's
    while (!server_.stopping()) {
      pollfd cp{c, POLLIN, 0};
      if (poll(&cp, 1, 50) <= 0) continue;
      ssize_t n = read(c, buf.data(), buf.size());
      if (n <= 0) break;
      {
        std::lock_guard l(mu_);
        received_.append(buf.data(), static_cast<size_t>(n));
      }
      if (::send(c, buf.data(), static_cast<size_t>(n), MSG_NOSIGNAL) != n) break;
    }
    close(c);
  }

  std::mutex mu_;
  std::string received_;
  LoopbackServer server_{[this](int c) { serve(c); }};  // last: see TestOrigin
};

// Stands in for the BPF map: every accepted connection "was going to" the VIP.
class FixedOriginalDestination : public network::OriginalDestinationSource {
public:
  explicit FixedOriginalDestination(common::SocketAddress dst) : dst_(dst) {}
  std::optional<common::SocketAddress> takeOriginalDestination(uint64_t, const common::SocketAddress&) override {
    return dst_;
  }
  common::SocketAddress dst_;
};

class WorkerTest : public ::testing::Test {
protected:
  void SetUp() override {
    main_thread_ = std::thread([this] { main_.run(); });
    server_ = std::make_unique<Server>(main_, 1, WorkerHooks{nullptr, &original_dst_}, stats_);
    server_->start();
    server_->publish(makeSnapshot(origin_.port()));
    auto listen = network::createListenSocket(*common::SocketAddress::parse("127.0.0.1", 0), 64, true);
    ASSERT_TRUE(listen);
    sockaddr_in sa{};
    socklen_t len = sizeof sa;
    getsockname(listen->get(), reinterpret_cast<sockaddr*>(&sa), &len);
    listen_port_ = ntohs(sa.sin_port);
    auto pod = std::make_shared<Pod>();
    pod->id = 42;
    pod->namespace_name = "default";
    pod->name = "client";
    pod->ip = "10.244.1.1";
    pod->tenant = tenant::TenantContext::create(1, "default", stats_);
    tenant_ = pod->tenant;
    std::vector<network::FileDescriptor> fds;
    fds.push_back(std::move(*listen));
    server_->addPod(pod, std::move(fds));
  }
  void TearDown() override {
    server_->stop();
    main_.exit();
    main_thread_.join();
  }
  // Publishes on the main thread, as culvertd does, and gives the worker a turn to apply it.
  Server::PublishResult publishFromMain(std::shared_ptr<const config::Snapshot> snapshot) {
    std::promise<Server::PublishResult> published;
    main_.post([&] { published.set_value(server_->publish(std::move(snapshot))); });
    auto result = published.get_future().get();
    std::this_thread::sleep_for(20ms);
    return result;
  }

  static std::shared_ptr<const config::Snapshot> makeSnapshot(uint16_t origin_port) {
    auto routes = std::make_shared<config::RouteConfiguration>();
    config::VirtualHost vh;
    vh.name = "all";
    vh.domains = {"*"};
    config::Route direct;
    direct.match.path = "/direct";
    direct.direct_response = config::DirectResponse{418, "teapot"};
    config::Route to_dead;
    to_dead.match.prefix = "/dead";
    to_dead.route = config::RouteAction{};
    to_dead.route->cluster = "dead";
    config::Route to_backend;
    to_backend.match.prefix = "/api";
    to_backend.route = config::RouteAction{};
    to_backend.route->cluster = "backend";
    config::Route stalls = to_backend;
    stalls.match.prefix = "/api/stall";
    stalls.route->timeout = std::chrono::milliseconds(200);
    vh.routes = {direct, to_dead, stalls, to_backend};
    routes->virtual_hosts.push_back(vh);

    auto listener = std::make_shared<config::Listener>();
    listener->name = "vip";
    listener->address = *common::SocketAddress::parse("10.96.0.10", 80);
    listener->bind_to_port = false;
    config::FilterChain chain;
    chain.http.route_config = routes;
    listener->filter_chains.push_back(chain);

    auto backend = std::make_shared<config::Cluster>();
    backend->name = "backend";
    backend->endpoints.push_back({*common::SocketAddress::parse("127.0.0.1", origin_port), 1});
    auto dead = std::make_shared<config::Cluster>();
    dead->name = "dead";
    dead->connect_timeout = 500ms;
    // Port 1 on loopback: nothing listens, the connect is refused at once.
    dead->endpoints.push_back({*common::SocketAddress::parse("127.0.0.1", 1), 1});

    auto snapshot = std::make_shared<config::Snapshot>();
    auto listeners = std::make_shared<config::ListenerTable>();
    listeners->by_name["vip"] = listener;
    auto clusters = std::make_shared<config::ClusterTable>();
    clusters->by_name["backend"] = backend;
    clusters->by_name["dead"] = dead;
    snapshot->listeners = listeners;
    snapshot->clusters = clusters;
    return snapshot;
  }

  // Publishes the default snapshot with `extra` chains after the VIP's HTTP chain (the
  // sniff picks between them) and a STATIC cluster `cluster` on 127.0.0.1:`port`.
  void publishWithExtraChains(std::vector<config::FilterChain> extra, const std::string& cluster, uint16_t port) {
    auto snapshot = std::const_pointer_cast<config::Snapshot>(makeSnapshot(origin_.port()));
    auto listeners = std::make_shared<config::ListenerTable>(*snapshot->listeners);
    auto vip = std::make_shared<config::Listener>(*listeners->by_name.at("vip"));
    for (auto& chain : extra) vip->filter_chains.push_back(std::move(chain));
    listeners->by_name["vip"] = vip;
    auto clusters = std::make_shared<config::ClusterTable>(*snapshot->clusters);
    auto added = std::make_shared<config::Cluster>();
    added->name = cluster;
    added->endpoints.push_back({*common::SocketAddress::parse("127.0.0.1", port), 1});
    clusters->by_name[cluster] = added;
    snapshot->listeners = listeners;
    snapshot->clusters = clusters;
    publishFromMain(snapshot);
  }

  int connectClient() {
    int fd = socket(AF_INET, SOCK_STREAM | SOCK_CLOEXEC, 0);
    sockaddr_in sa{};
    sa.sin_family = AF_INET;
    sa.sin_port = htons(listen_port_);
    sa.sin_addr.s_addr = htonl(INADDR_LOOPBACK);
    EXPECT_EQ(connect(fd, reinterpret_cast<sockaddr*>(&sa), sizeof sa), 0);
    return fd;
  }

  // Reads until `count` complete responses (Content-Length framed) or EOF/timeout.
  static std::vector<std::string> readResponses(int fd, size_t count, bool* eof = nullptr) {
    std::string buf;
    std::vector<std::string> out;
    char tmp[8192];
    auto deadline = std::chrono::steady_clock::now() + 5s;
    while (out.size() < count && std::chrono::steady_clock::now() < deadline) {
      size_t head_end = buf.find("\r\n\r\n");
      if (head_end != std::string::npos) {
        auto cl = buf.find("content-length: ");
        if (cl == std::string::npos || cl > head_end) cl = buf.find("Content-Length: ");
        size_t len = cl != std::string::npos && cl < head_end ? std::stoul(buf.substr(cl + 16)) : 0;
        if (buf.size() >= head_end + 4 + len) {
          out.push_back(buf.substr(0, head_end + 4 + len));
          buf.erase(0, head_end + 4 + len);
          continue;
        }
      }
      pollfd p{fd, POLLIN, 0};
      if (poll(&p, 1, 100) <= 0) continue;
      ssize_t n = read(fd, tmp, sizeof tmp);
      if (n <= 0) {
        if (eof) *eof = true;
        break;
      }
      buf.append(tmp, static_cast<size_t>(n));
    }
    return out;
  }

  static void send(int fd, const std::string& data) { ASSERT_EQ(write(fd, data.data(), data.size()), static_cast<ssize_t>(data.size())); }

  common::StatsStore stats_;
  event::Dispatcher main_{"main"};
  std::thread main_thread_;
  TestOrigin origin_;
  FixedOriginalDestination original_dst_{*common::SocketAddress::parse("10.96.0.10", 80)};
  std::unique_ptr<Server> server_;
  std::shared_ptr<tenant::TenantContext> tenant_;
  uint16_t listen_port_ = 0;
};

TEST_F(WorkerTest, ForwardsPipelinedKeepAliveRequestsOverOneUpstreamConnection) {
  int fd = connectClient();
  send(fd, "GET /api/one HTTP/1.1\r\nHost: svc\r\n\r\nGET /api/two HTTP/1.1\r\nHost: svc\r\nX-Request-Id: keep-me\r\n\r\n");
  auto responses = readResponses(fd, 2);
  ASSERT_EQ(responses.size(), 2u);
  EXPECT_NE(responses[0].find("GET /api/one HTTP/1.1"), std::string::npos);
  EXPECT_NE(responses[1].find("GET /api/two HTTP/1.1"), std::string::npos);
  // The pod's enrolled IP, never loopback, and a generated request id.
  EXPECT_NE(responses[0].find("x-forwarded-for: 10.244.1.1\r\n"), std::string::npos);
  EXPECT_NE(responses[0].find("x-request-id: "), std::string::npos);
  EXPECT_NE(responses[1].find("x-request-id: keep-me\r\n"), std::string::npos);
  // A third request later on the same downstream connection reuses the pooled upstream.
  send(fd, "GET /api/three HTTP/1.1\r\nHost: svc\r\n\r\n");
  ASSERT_EQ(readResponses(fd, 1).size(), 1u);
  close(fd);
  EXPECT_EQ(origin_.connections(), 1);
  EXPECT_EQ(tenant_->downstream_rq_total->value(), 3u);
  EXPECT_EQ(tenant_->downstream_rq_2xx->value(), 3u);
}

TEST_F(WorkerTest, SlowClientBackPressuresTheUpstream) {
  int fd = connectClient();
  send(fd, "GET /api/big HTTP/1.1\r\nHost: svc\r\n\r\n");
  // The client reads nothing for a while: the proxy must stop reading the upstream
  // rather than buffer the body. What the origin got rid of is bounded by the socket
  // buffers on both legs plus the proxy's high watermark, far below the body's size.
  std::this_thread::sleep_for(500ms);
  size_t written_while_stalled = origin_.bigBytesWritten();
  EXPECT_LT(written_while_stalled, TestOrigin::kBigBody / 2);
  // Then everything arrives, intact.
  size_t received = 0;
  char buf[65536];
  std::string head;
  auto deadline = std::chrono::steady_clock::now() + 20s;
  size_t head_len = 0;
  while (std::chrono::steady_clock::now() < deadline) {
    ssize_t n = read(fd, buf, sizeof buf);
    if (n <= 0) break;
    if (head_len == 0) {
      head.append(buf, static_cast<size_t>(n));
      auto end = head.find("\r\n\r\n");
      if (end == std::string::npos) continue;
      head_len = end + 4;
      received = head.size() - head_len;
    } else {
      received += static_cast<size_t>(n);
    }
    if (received >= TestOrigin::kBigBody) break;
  }
  close(fd);
  EXPECT_TRUE(head.starts_with("HTTP/1.1 200 "));
  EXPECT_EQ(received, TestOrigin::kBigBody);
}

TEST_F(WorkerTest, RouteTimeoutAnswers504AndKeepsTheDownstreamConnection) {
  int fd = connectClient();
  auto start = std::chrono::steady_clock::now();
  send(fd, "GET /api/stall HTTP/1.1\r\nHost: svc\r\n\r\n");
  auto responses = readResponses(fd, 1);
  auto elapsed = std::chrono::steady_clock::now() - start;
  ASSERT_EQ(responses.size(), 1u);
  EXPECT_TRUE(responses[0].starts_with("HTTP/1.1 504 ")) << responses[0];
  // The route says 200 ms; within max(25 ms, 10 %) plus this loaded machine's slack.
  EXPECT_GE(elapsed, 190ms);
  EXPECT_LT(elapsed, 400ms);
  EXPECT_EQ(tenant_->upstream_rq_timeout->value(), 1u);
  // The downstream connection stays usable; the stalled upstream one is not reused.
  send(fd, "GET /api/after HTTP/1.1\r\nHost: svc\r\n\r\n");
  auto after = readResponses(fd, 1);
  ASSERT_EQ(after.size(), 1u);
  EXPECT_NE(after[0].find("GET /api/after"), std::string::npos);
  close(fd);
  EXPECT_EQ(origin_.connections(), 2);
}

TEST_F(WorkerTest, DirectResponseAndNoRoute) {
  int fd = connectClient();
  send(fd, "GET /direct HTTP/1.1\r\nHost: svc\r\n\r\nGET /nowhere HTTP/1.1\r\nHost: svc\r\n\r\n");
  auto responses = readResponses(fd, 2);
  ASSERT_EQ(responses.size(), 2u);
  EXPECT_TRUE(responses[0].starts_with("HTTP/1.1 418 "));
  EXPECT_NE(responses[0].find("teapot"), std::string::npos);
  EXPECT_TRUE(responses[1].starts_with("HTTP/1.1 404 "));
  close(fd);
  EXPECT_EQ(origin_.connections(), 0);
}

// Each request's state (parser included) is made at its first byte and freed when it is
// answered; pipelined requests behind a local reply, one whose unread body is dropped,
// and an upstream answer each get a fresh one, and the connection stays usable.
TEST_F(WorkerTest, PipelinedRequestsAfterLocalRepliesEachGetAFreshExchange) {
  int fd = connectClient();
  send(fd,
       "POST /nowhere HTTP/1.1\r\nHost: svc\r\nContent-Length: 5\r\n\r\nhello"
       "GET /api/after-404 HTTP/1.1\r\nHost: svc\r\n\r\n"
       "GET /direct HTTP/1.1\r\nHost: svc\r\n\r\n"
       "GET /api/last HTTP/1.1\r\nHost: svc\r\n\r\n");
  auto responses = readResponses(fd, 4);
  ASSERT_EQ(responses.size(), 4u);
  EXPECT_TRUE(responses[0].starts_with("HTTP/1.1 404 ")) << responses[0];
  EXPECT_NE(responses[1].find("GET /api/after-404 HTTP/1.1"), std::string::npos) << responses[1];
  EXPECT_TRUE(responses[2].starts_with("HTTP/1.1 418 ")) << responses[2];
  EXPECT_NE(responses[3].find("GET /api/last HTTP/1.1"), std::string::npos) << responses[3];
  // Idle, then one more: the connection and its pooled upstream are still there.
  std::this_thread::sleep_for(50ms);
  send(fd, "GET /api/again HTTP/1.1\r\nHost: svc\r\n\r\n");
  auto again = readResponses(fd, 1);
  ASSERT_EQ(again.size(), 1u);
  EXPECT_NE(again[0].find("GET /api/again HTTP/1.1"), std::string::npos);
  close(fd);
  EXPECT_EQ(origin_.connections(), 1);
  EXPECT_EQ(tenant_->downstream_rq_total->value(), 5u);
}

TEST_F(WorkerTest, RefusedUpstreamGives503AndCountsIt) {
  int fd = connectClient();
  send(fd, "GET /dead HTTP/1.1\r\nHost: svc\r\n\r\n");
  auto responses = readResponses(fd, 1);
  ASSERT_EQ(responses.size(), 1u);
  EXPECT_TRUE(responses[0].starts_with("HTTP/1.1 503 "));
  close(fd);
  EXPECT_EQ(tenant_->upstream_cx_connect_fail->value(), 1u);
  EXPECT_EQ(tenant_->downstream_rq_5xx->value(), 1u);
}

TEST_F(WorkerTest, MalformedRequestGets400AndClose) {
  int fd = connectClient();
  send(fd, "GET / HTTP/1.1\r\nHost: a\r\nContent-Length: 1\r\nContent-Length: 2\r\n\r\n");
  bool eof = false;
  auto responses = readResponses(fd, 1, &eof);
  ASSERT_EQ(responses.size(), 1u);
  EXPECT_TRUE(responses[0].starts_with("HTTP/1.1 400 "));
  EXPECT_NE(responses[0].find("connection: close"), std::string::npos);
  readResponses(fd, 1, &eof);
  EXPECT_TRUE(eof);
  close(fd);
  EXPECT_EQ(tenant_->downstream_rq_bad->value(), 1u);
  EXPECT_EQ(stats_.counter("culvert_http_downstream_rq_rejected_total",
                           {{"tenant", "default"}, {"reason", "duplicate_content_length"}}).value(), 1u);
}

TEST_F(WorkerTest, SmugglingShapeLlhttpAcceptsIsRejectedAndNeverReachesTheUpstream) {
  int fd = connectClient();
  send(fd, "GET /api/x HTTP/1.1\r\nHost: a\r\nX: a\r\n folded\r\n\r\n");
  auto responses = readResponses(fd, 1);
  ASSERT_EQ(responses.size(), 1u);
  EXPECT_TRUE(responses[0].starts_with("HTTP/1.1 400 "));
  close(fd);
  EXPECT_EQ(origin_.connections(), 0);
  EXPECT_EQ(stats_.counter("culvert_http_downstream_rq_rejected_total", {{"tenant", "default"}, {"reason", "obs_fold"}})
                .value(),
            1u);
}

uint16_t freePort() {
  auto fd = network::createListenSocket(*common::SocketAddress::parse("127.0.0.1", 0), 1, false);
  sockaddr_in sa{};
  socklen_t len = sizeof sa;
  getsockname(fd->get(), reinterpret_cast<sockaddr*>(&sa), &len);
  return ntohs(sa.sin_port);
}

TEST_F(WorkerTest, BoundListenerServesDirectConnectionsAndIsClosedWhenRemoved) {
  uint16_t port = freePort();
  auto snapshot = std::const_pointer_cast<config::Snapshot>(makeSnapshot(origin_.port()));
  auto listeners = std::make_shared<config::ListenerTable>(*snapshot->listeners);
  auto bound = std::make_shared<config::Listener>(*listeners->by_name.at("vip"));
  bound->name = "bound";
  bound->bind_to_port = true;
  bound->address = *common::SocketAddress::parse("127.0.0.1", port);
  listeners->by_name["bound"] = bound;
  snapshot->listeners = listeners;
  std::promise<Server::PublishResult> published;
  main_.post([&] { published.set_value(server_->publish(snapshot)); });
  auto result = published.get_future().get();
  EXPECT_TRUE(result.bind_errors.empty());
  EXPECT_EQ(result.captured.size(), 1u);  // only the virtual listener is captured

  std::this_thread::sleep_for(50ms);  // the worker starts accepting on its next turn
  int fd = socket(AF_INET, SOCK_STREAM | SOCK_CLOEXEC, 0);
  sockaddr_in sa{};
  sa.sin_family = AF_INET;
  sa.sin_port = htons(port);
  sa.sin_addr.s_addr = htonl(INADDR_LOOPBACK);
  ASSERT_EQ(connect(fd, reinterpret_cast<sockaddr*>(&sa), sizeof sa), 0);
  send(fd, "GET /api/bound HTTP/1.1\r\nHost: svc\r\n\r\n");
  auto responses = readResponses(fd, 1);
  ASSERT_EQ(responses.size(), 1u);
  EXPECT_NE(responses[0].find("GET /api/bound"), std::string::npos);
  // The client is the peer address, not an enrolled pod.
  EXPECT_NE(responses[0].find("x-forwarded-for: 127.0.0.1\r\n"), std::string::npos);
  close(fd);

  // A second binding of the same address elsewhere fails, and is reported.
  auto clash = std::make_shared<config::Snapshot>(*snapshot);
  auto clash_listeners = std::make_shared<config::ListenerTable>(*listeners);
  auto other = std::make_shared<config::Listener>(*bound);
  other->name = "clash";
  auto taken = network::createListenSocket(*common::SocketAddress::parse("127.0.0.1", 0), 1, false);
  sockaddr_in tsa{};
  socklen_t tlen = sizeof tsa;
  getsockname(taken->get(), reinterpret_cast<sockaddr*>(&tsa), &tlen);
  other->address = *common::SocketAddress::parse("127.0.0.1", ntohs(tsa.sin_port));
  clash_listeners->by_name["clash"] = other;
  clash->listeners = clash_listeners;
  std::promise<Server::PublishResult> clashed;
  main_.post([&] { clashed.set_value(server_->publish(clash)); });
  auto clash_result = clashed.get_future().get();
  ASSERT_EQ(clash_result.bind_errors.size(), 1u);
  EXPECT_NE(clash_result.bind_errors[0].describe().find("listener clash"), std::string::npos);

  // Removing the listener closes its sockets.
  std::promise<void> removed;
  main_.post([&] {
    server_->publish(makeSnapshot(origin_.port()));
    removed.set_value();
  });
  removed.get_future().get();
  std::this_thread::sleep_for(50ms);
  int again = socket(AF_INET, SOCK_STREAM | SOCK_CLOEXEC, 0);
  EXPECT_NE(connect(again, reinterpret_cast<sockaddr*>(&sa), sizeof sa), 0);
  close(again);
}

// Reads until `want` bytes arrived or EOF/timeout.
std::string readAtLeast(int fd, size_t want, bool* eof = nullptr) {
  std::string out;
  char buf[4096];
  auto deadline = std::chrono::steady_clock::now() + 3s;
  while (out.size() < want && std::chrono::steady_clock::now() < deadline) {
    pollfd p{fd, POLLIN, 0};
    if (poll(&p, 1, 50) <= 0) continue;
    ssize_t n = read(fd, buf, sizeof buf);
    if (n <= 0) {
      if (eof) *eof = true;
      break;
    }
    out.append(buf, static_cast<size_t>(n));
  }
  return out;
}

class TcpProxyTest : public WorkerTest {
protected:
  // The VIP's listener gets, besides its HTTP chain, a TCP proxy chain to the banner
  // origin and a TLS chain for one server name: now it needs sniffing.
  void publishMixedListener() {
    config::FilterChain tcp;
    tcp.tcp_proxy = config::TcpProxy{"banner", "banner", std::chrono::seconds(5)};
    config::FilterChain tls;
    tls.match.server_names = {"db.example.com"};
    tls.match.transport_protocol = "tls";
    tls.tcp_proxy = config::TcpProxy{"tls", "banner", std::chrono::seconds(5)};
    publishWithExtraChains({tcp, tls}, "banner", banner_.port());
  }
  BannerEchoOrigin banner_;
};

TEST_F(TcpProxyTest, ServerFirstProtocolFallsBackToTcpAfterTheSniffTimeout) {
  publishMixedListener();
  int fd = connectClient();
  auto start = std::chrono::steady_clock::now();
  EXPECT_EQ(readAtLeast(fd, 7), "HELLO\r\n");
  EXPECT_LT(std::chrono::steady_clock::now() - start, 1s);
  send(fd, "ping\n");
  EXPECT_EQ(readAtLeast(fd, 5), "ping\n");
  // Half-close travels through: the origin sees EOF, closes, and so does the client.
  shutdown(fd, SHUT_WR);
  bool eof = false;
  readAtLeast(fd, 1, &eof);
  EXPECT_TRUE(eof);
  close(fd);
  EXPECT_EQ(banner_.received(), "ping\n");
  EXPECT_EQ(origin_.connections(), 0);
}

TEST_F(TcpProxyTest, HttpOnTheSameListenerStillGoesToTheHttpChain) {
  publishMixedListener();
  int fd = connectClient();
  send(fd, "GET /api/sniffed HTTP/1.1\r\nHost: svc\r\n\r\n");
  auto responses = readResponses(fd, 1);
  ASSERT_EQ(responses.size(), 1u);
  EXPECT_NE(responses[0].find("GET /api/sniffed"), std::string::npos);
  close(fd);
  EXPECT_EQ(banner_.received(), "");
}

TEST_F(TcpProxyTest, TlsClientHelloIsPassedThroughByServerName) {
  publishMixedListener();
  // A ClientHello for db.example.com (record + handshake headers, no real crypto needed:
  // culvert passes TLS through without terminating it).
  std::string sni = "db.example.com";
  std::string ext;
  auto put16 = [](std::string& s, size_t v) {
    s += static_cast<char>((v >> 8) & 0xff);
    s += static_cast<char>(v & 0xff);
  };
  std::string name("\0", 1);
  put16(name, sni.size());
  name += sni;
  std::string list;
  put16(list, name.size());
  list += name;
  put16(ext, 0);
  put16(ext, list.size());
  ext += list;
  std::string body = "\x03\x03" + std::string(32, 'r') + std::string("\0", 1);
  put16(body, 2);
  body += "\x13\x01\x01";
  body += std::string("\0", 1);
  put16(body, ext.size());
  body += ext;
  std::string hs = "\x01" + std::string("\0", 1);
  put16(hs, body.size());
  hs += body;
  std::string hello = "\x16\x03\x01";
  put16(hello, hs.size());
  hello += hs;

  int fd = connectClient();
  send(fd, hello);
  EXPECT_EQ(readAtLeast(fd, 7 + hello.size()), "HELLO\r\n" + hello);
  close(fd);
  EXPECT_EQ(banner_.received(), hello);
}

TEST_F(WorkerTest, OriginalDstClusterGoesWhereTheConnectionWasGoing) {
  auto snapshot = std::const_pointer_cast<config::Snapshot>(makeSnapshot(origin_.port()));
  auto clusters = std::make_shared<config::ClusterTable>(*snapshot->clusters);
  auto passthrough = std::make_shared<config::Cluster>();
  passthrough->name = "dead";  // the route to /dead now passes through
  passthrough->type = config::ClusterType::OriginalDst;
  clusters->by_name["dead"] = passthrough;
  snapshot->clusters = clusters;
  auto listeners = std::make_shared<config::ListenerTable>(*snapshot->listeners);
  auto vip = std::make_shared<config::Listener>(*listeners->by_name.at("vip"));
  vip->address = *common::SocketAddress::parse("127.0.0.1", origin_.port());
  listeners->by_name["vip"] = vip;
  snapshot->listeners = listeners;
  original_dst_.dst_ = vip->address;
  publishFromMain(snapshot);
  int fd = connectClient();
  send(fd, "GET /dead/end HTTP/1.1\r\nHost: svc\r\n\r\n");
  auto responses = readResponses(fd, 1);
  ASSERT_EQ(responses.size(), 1u);
  EXPECT_TRUE(responses[0].starts_with("HTTP/1.1 200 "));
  EXPECT_NE(responses[0].find("GET /dead/end"), std::string::npos);
  close(fd);
  EXPECT_EQ(origin_.connections(), 1);
}

TEST_F(WorkerTest, ProbeAnswersWhileWorkersTurn) {
  std::promise<bool> result;
  main_.post([&] { server_->probeWorkers(1s, [&](bool ok) { result.set_value(ok); }); });
  EXPECT_TRUE(result.get_future().get());
}

}  // namespace
}  // namespace culvert::server

// --- Tenant budgets on the data path (proxy/tenant): each shed sheds only its tenant.
namespace culvert::server {
namespace {

class TenantBudgetTest : public WorkerTest {
protected:
  void SetUp() override {
    WorkerTest::SetUp();
    // A second pod, of another tenant, with its own in-pod listener.
    auto listen = network::createListenSocket(*common::SocketAddress::parse("127.0.0.1", 0), 64, true);
    ASSERT_TRUE(listen);
    sockaddr_in sa{};
    socklen_t len = sizeof sa;
    getsockname(listen->get(), reinterpret_cast<sockaddr*>(&sa), &len);
    other_port_ = ntohs(sa.sin_port);
    auto pod = std::make_shared<Pod>();
    pod->id = 43;
    pod->namespace_name = "other";
    pod->name = "client";
    pod->ip = "10.244.2.1";
    pod->tenant = tenant::TenantContext::create(2, "other", stats_);
    other_ = pod->tenant;
    std::vector<network::FileDescriptor> fds;
    fds.push_back(std::move(*listen));
    server_->addPod(pod, std::move(fds));
  }
  void setLimits(config::TenantLimits limits) { tenant_->budget.setLimits(limits); }
  int connectOther() {
    int fd = socket(AF_INET, SOCK_STREAM | SOCK_CLOEXEC, 0);
    sockaddr_in sa{};
    sa.sin_family = AF_INET;
    sa.sin_port = htons(other_port_);
    sa.sin_addr.s_addr = htonl(INADDR_LOOPBACK);
    EXPECT_EQ(connect(fd, reinterpret_cast<sockaddr*>(&sa), sizeof sa), 0);
    return fd;
  }
  // One GET on a fresh connection of the other tenant: it must be served.
  void expectOtherServed() {
    int fd = connectOther();
    send(fd, "GET /api/other HTTP/1.1\r\nHost: svc\r\n\r\n");
    auto r = readResponses(fd, 1);
    close(fd);
    ASSERT_EQ(r.size(), 1u);
    EXPECT_TRUE(r[0].starts_with("HTTP/1.1 200 ")) << r[0];
  }
  uint64_t shed(tenant::Budget b) const { return tenant_->shed[static_cast<size_t>(b)]->value(); }
  // The other tenant has a request now and then until `stop`: while it does, the fair
  // scheduler holds the first tenant to its share.
  std::thread keepOtherTenantBusy(std::atomic<bool>& stop) {
    return std::thread([this, &stop] {
      int fd = connectOther();
      while (!stop) {
        send(fd, "GET /direct HTTP/1.1\r\nHost: svc\r\n\r\n");
        if (readResponses(fd, 1).size() != 1) break;
        std::this_thread::sleep_for(200us);
      }
      close(fd);
    });
  }
  static void expectShed(const std::string& response, const std::string& reason) {
    EXPECT_TRUE(response.starts_with("HTTP/1.1 503 ")) << response;
    EXPECT_NE(response.find("retry-after: 1\r\n"), std::string::npos) << response;
    EXPECT_NE(response.find("x-culvert-overload: " + reason + "\r\n"), std::string::npos) << response;
  }

  uint16_t other_port_ = 0;
  std::shared_ptr<tenant::TenantContext> other_;
};

TEST_F(TenantBudgetTest, ConnectionsOverTheBudgetAreResetWithinAMillisecondOfAccept) {
  setLimits({.max_downstream_connections = 2});
  int a = connectClient();
  int b = connectClient();
  for (int fd : {a, b}) {
    send(fd, "GET /api/held HTTP/1.1\r\nHost: svc\r\n\r\n");
    ASSERT_EQ(readResponses(fd, 1).size(), 1u);
  }
  // Each extra connection: the kernel completes the handshake, the worker resets it as
  // soon as it accepts. Measured from connect() to the RST reaching the client, which
  // also takes two thread wake-ups: on a busy VM those alone can take a millisecond
  // (medians of 60 µs to 1.1 ms in runs of this test on one slow day). So up to three
  // batches of 15; a reset that waited for anything (a round, a timer) fails all three.
  std::chrono::microseconds best_median = std::chrono::seconds(1);
  int batches = 0;
  while (batches < 3 && best_median >= 1ms) {
    ++batches;
    std::vector<std::chrono::microseconds> reset_after;
    for (int i = 0; i < 15; ++i) {
      auto start = std::chrono::steady_clock::now();
      int fd = connectClient();
      pollfd p{fd, POLLIN, 0};
      ASSERT_EQ(poll(&p, 1, 2000), 1);
      char c;
      EXPECT_EQ(read(fd, &c, 1), -1);
      EXPECT_EQ(errno, ECONNRESET);
      reset_after.push_back(std::chrono::duration_cast<std::chrono::microseconds>(std::chrono::steady_clock::now() - start));
      close(fd);
    }
    std::sort(reset_after.begin(), reset_after.end());
    std::cout << "[ measured ] connection over budget reset after (median of 15) " << reset_after[7].count()
              << " us, max " << reset_after.back().count() << " us\n";
    best_median = std::min(best_median, reset_after[7]);
  }
  EXPECT_LT(best_median, 1ms);
  EXPECT_EQ(shed(tenant::Budget::Connections), 15u * static_cast<uint64_t>(batches));
  expectOtherServed();
  // A held connection closes: a new one is admitted.
  close(a);
  std::this_thread::sleep_for(50ms);
  int c = connectClient();
  send(c, "GET /api/again HTTP/1.1\r\nHost: svc\r\n\r\n");
  auto r = readResponses(c, 1);
  ASSERT_EQ(r.size(), 1u);
  EXPECT_TRUE(r[0].starts_with("HTTP/1.1 200 "));
  close(b);
  close(c);
}

// The fair scheduler pauses a tenant over its share and resumes it the next round. A
// connection paused with a request already read (held back, replayed at the resume) must
// read again after the replay: it did not (a direct response answers from inside the
// parser, which re-enables nothing), and such a connection waited forever.
TEST_F(TenantBudgetTest, EveryConnectionOfATenantPausedForItsShareIsServedAgain) {
  std::atomic<bool> stop{false};
  std::thread other = keepOtherTenantBusy(stop);
  // 16 connections of the first tenant, each with 8 pipelined requests a burst: more
  // work in a loop turn than a round's credit, so it is paused with requests read.
  constexpr int kConnections = 16, kPipelined = 8, kBursts = 60;
  std::vector<int> fds;
  for (int i = 0; i < kConnections; ++i) fds.push_back(connectClient());
  std::string burst;
  for (int i = 0; i < kPipelined; ++i) burst += "GET /direct HTTP/1.1\r\nHost: svc\r\n\r\n";
  auto paused_before = tenant_->share_paused->value();
  int served = 0;
  for (int b = 0; b < kBursts && served == b * kConnections * kPipelined; ++b) {
    for (int fd : fds) send(fd, burst);
    for (int fd : fds) served += static_cast<int>(readResponses(fd, kPipelined).size());
  }
  stop = true;
  other.join();
  for (int fd : fds) close(fd);
  EXPECT_EQ(served, kBursts * kConnections * kPipelined);
  // Not a vacuous pass: the scheduler did pause this tenant's connections.
  EXPECT_GT(tenant_->share_paused->value(), paused_before);
}

TEST_F(TenantBudgetTest, RequestsInFlightOverTheBudgetGet503WithRetryAfter) {
  setLimits({.max_requests_in_flight = 1});
  int stalled = connectClient();
  send(stalled, "GET /api/stall HTTP/1.1\r\nHost: svc\r\n\r\n");  // in flight for 200 ms
  std::this_thread::sleep_for(50ms);
  int fd = connectClient();
  send(fd, "GET /api/second HTTP/1.1\r\nHost: svc\r\n\r\n");
  auto r = readResponses(fd, 1);
  ASSERT_EQ(r.size(), 1u);
  expectShed(r[0], "tenant-requests-in-flight");
  EXPECT_EQ(shed(tenant::Budget::RequestsInFlight), 1u);
  expectOtherServed();
  EXPECT_EQ(other_->shed[static_cast<size_t>(tenant::Budget::RequestsInFlight)]->value(), 0u);
  // Once the first finishes (504 from its route timeout), the slot is free again.
  ASSERT_EQ(readResponses(stalled, 1).size(), 1u);
  send(fd, "GET /api/third HTTP/1.1\r\nHost: svc\r\n\r\n");
  r = readResponses(fd, 1);
  ASSERT_EQ(r.size(), 1u);
  EXPECT_TRUE(r[0].starts_with("HTTP/1.1 200 ")) << r[0];
  // Released when the exchange ends, just after the response is written.
  auto deadline = std::chrono::steady_clock::now() + 1s;
  while (tenant_->budget.requestsInFlight() != 0 && std::chrono::steady_clock::now() < deadline) {
    std::this_thread::sleep_for(1ms);
  }
  EXPECT_EQ(tenant_->budget.requestsInFlight(), 0u);
  close(stalled);
  close(fd);
}

TEST_F(TenantBudgetTest, RequestRateOverTheBucketGets503) {
  setLimits({.max_requests_per_second = 1, .burst = 3});
  int fd = connectClient();
  std::string three;
  for (int i = 0; i < 4; ++i) three += "GET /api/r HTTP/1.1\r\nHost: svc\r\n\r\n";
  send(fd, three);
  auto r = readResponses(fd, 4);
  ASSERT_EQ(r.size(), 4u);
  for (int i = 0; i < 3; ++i) EXPECT_TRUE(r[i].starts_with("HTTP/1.1 200 ")) << i;
  expectShed(r[3], "tenant-request-rate");
  EXPECT_EQ(shed(tenant::Budget::RequestRate), 1u);
  expectOtherServed();
  close(fd);
}

TEST_F(TenantBudgetTest, AListenerOrRoutesOutOfTheTenantsScopeAreClosedAndCounted) {
  auto scoped = std::make_shared<config::Tenant>();
  scoped->name = "default";
  scoped->allowed_listeners = {"some-other-vip"};
  tenant_->apply(scoped, {});
  int fd = connectClient();
  send(fd, "GET /api/x HTTP/1.1\r\nHost: svc\r\n\r\n");
  bool eof = false;
  EXPECT_TRUE(readResponses(fd, 1, &eof).empty());
  EXPECT_TRUE(eof);
  close(fd);
  EXPECT_EQ(tenant_->no_filter_chain->value(), 1u);
  expectOtherServed();

  // The listener allowed, its routes not: the same.
  scoped = std::make_shared<config::Tenant>(*scoped);
  scoped->allowed_listeners = {"vip"};
  scoped->allowed_routes = {"some-other-routes"};
  tenant_->apply(scoped, {});
  fd = connectClient();
  send(fd, "GET /api/x HTTP/1.1\r\nHost: svc\r\n\r\n");
  eof = false;
  EXPECT_TRUE(readResponses(fd, 1, &eof).empty());
  EXPECT_TRUE(eof);
  close(fd);
  EXPECT_EQ(tenant_->no_filter_chain->value(), 2u);
  EXPECT_EQ(tenant_->budget.connections(), 0u);  // released, not leaked

  tenant_->apply(nullptr, {});  // no resource: everything allowed again
  fd = connectClient();
  send(fd, "GET /api/x HTTP/1.1\r\nHost: svc\r\n\r\n");
  auto r = readResponses(fd, 1);
  ASSERT_EQ(r.size(), 1u);
  EXPECT_TRUE(r[0].starts_with("HTTP/1.1 200 "));
  close(fd);
}

TEST_F(TenantBudgetTest, BufferedBytesOverTheBudgetShedNewRequestsOfThatTenantOnly) {
  setLimits({.max_buffered_bytes = 64 * 1024});
  int slow = connectClient();
  send(slow, "GET /api/big HTTP/1.1\r\nHost: svc\r\n\r\n");  // and never read: the proxy holds bytes
  auto deadline = std::chrono::steady_clock::now() + 3s;
  while (tenant_->budget.bufferedBytes() <= 64 * 1024 && std::chrono::steady_clock::now() < deadline) {
    std::this_thread::sleep_for(10ms);
  }
  ASSERT_GT(tenant_->budget.bufferedBytes(), 64u * 1024);
  int fd = connectClient();
  send(fd, "GET /api/more HTTP/1.1\r\nHost: svc\r\n\r\n");
  auto r = readResponses(fd, 1);
  ASSERT_EQ(r.size(), 1u);
  expectShed(r[0], "tenant-buffered-bytes");
  expectOtherServed();
  close(slow);
  close(fd);
  deadline = std::chrono::steady_clock::now() + 3s;
  while (tenant_->budget.bufferedBytes() != 0 && std::chrono::steady_clock::now() < deadline) {
    std::this_thread::sleep_for(10ms);
  }
  EXPECT_EQ(tenant_->budget.bufferedBytes(), 0u);  // a closed connection holds nothing
}

// An origin that accepts every upgrade: it records the request head, answers an interim
// 103 and then 101 with a greeting behind it, and echoes what follows until EOF.
class UpgradeOrigin {
public:
  uint16_t port() const { return server_.port(); }
  int connections() const { return connections_; }
  std::string head() {
    std::lock_guard l(mu_);
    return head_;
  }

private:
  void serve(int c) {
    std::string buf;
    char tmp[4096];
    while (!server_.stopping()) {
      pollfd cp{c, POLLIN, 0};
      if (poll(&cp, 1, 50) <= 0) continue;
      ssize_t n = read(c, tmp, sizeof tmp);
      if (n <= 0) return;
      buf.append(tmp, static_cast<size_t>(n));
      auto end = buf.find("\r\n\r\n");
      if (end == std::string::npos) continue;
      {
        std::lock_guard l(mu_);
        head_ = buf.substr(0, end + 4);
      }
      std::string reply =
          "HTTP/1.1 103 Early Hints\r\nLink: </a.css>\r\n\r\n"
          "HTTP/1.1 101 Switching Protocols\r\nUpgrade: websocket\r\nConnection: Upgrade\r\n\r\nWELCOME";
      reply += buf.substr(end + 4);  // bytes that came with the head are echoed too
      if (write(c, reply.data(), reply.size()) != static_cast<ssize_t>(reply.size())) return;
      break;
    }
    while (!server_.stopping()) {
      pollfd cp{c, POLLIN, 0};
      if (poll(&cp, 1, 50) <= 0) continue;
      ssize_t n = read(c, tmp, sizeof tmp);
      if (n <= 0 || write(c, tmp, static_cast<size_t>(n)) != n) return;
    }
  }

  std::atomic<int> connections_{0};
  std::mutex mu_;
  std::string head_;
  LoopbackServer server_{[this](int c) {  // last: see TestOrigin
    ++connections_;
    serve(c);
    close(c);
  }};
};

// Upgrades (proxy/server/tunnel.h): a forwarded WebSocket, a terminated CONNECT to the
// banner origin, and an upgrade that is not enabled.
class TunnelTest : public TcpProxyTest {
protected:
  void publishUpgrades() {
    auto snapshot = std::const_pointer_cast<config::Snapshot>(makeSnapshot(origin_.port()));
    auto listeners = std::make_shared<config::ListenerTable>(*snapshot->listeners);
    auto vip = std::make_shared<config::Listener>(*listeners->by_name.at("vip"));
    auto routes = std::make_shared<config::RouteConfiguration>(*vip->filter_chains[0].http.route_config);
    config::Route connect;
    connect.match.connect_matcher = true;
    connect.route = config::RouteAction{};
    connect.route->cluster = "banner";
    connect.route->upgrade_configs = {{"connect", true, true}};
    config::Route silent;
    silent.match.prefix = "/silent";
    silent.route = config::RouteAction{};
    silent.route->cluster = "silent";
    silent.route->idle_timeout = 200ms;
    silent.route->upgrade_configs = {{"websocket", true, false}};
    config::Route websocket;
    websocket.match.prefix = "/ws";
    websocket.route = config::RouteAction{};
    websocket.route->cluster = "upgrade";
    auto& vh_routes = routes->virtual_hosts[0].routes;
    vh_routes.insert(vh_routes.begin(), {connect, websocket, silent});
    vip->filter_chains[0].http.route_config = routes;
    // websocket is listed but off: only the /ws route turns it on.
    vip->filter_chains[0].http.upgrade_configs = {{"connect", true, false}, {"websocket", false, false}};
    routes->virtual_hosts[0].routes[1].route->upgrade_configs = {{"websocket", true, false}};
    listeners->by_name["vip"] = vip;
    auto clusters = std::make_shared<config::ClusterTable>(*snapshot->clusters);
    auto banner = std::make_shared<config::Cluster>();
    banner->name = "banner";
    banner->endpoints.push_back({*common::SocketAddress::parse("127.0.0.1", banner_.port()), 1});
    clusters->by_name["banner"] = banner;
    auto upgrade = std::make_shared<config::Cluster>();
    upgrade->name = "upgrade";
    upgrade->endpoints.push_back({*common::SocketAddress::parse("127.0.0.1", upgrade_origin_.port()), 1});
    clusters->by_name["upgrade"] = upgrade;
    auto silent_cluster = std::make_shared<config::Cluster>();
    silent_cluster->name = "silent";
    sockaddr_in sa{};
    socklen_t len = sizeof sa;
    getsockname(silent_listener_.get(), reinterpret_cast<sockaddr*>(&sa), &len);
    silent_cluster->endpoints.push_back({*common::SocketAddress::parse("127.0.0.1", ntohs(sa.sin_port)), 1});
    clusters->by_name["silent"] = silent_cluster;
    snapshot->listeners = listeners;
    snapshot->clusters = clusters;
    publishFromMain(snapshot);
  }
  UpgradeOrigin upgrade_origin_;
  // Connects (the kernel completes the handshake) and never answers.
  network::FileDescriptor silent_listener_ =
      std::move(*network::createListenSocket(*common::SocketAddress::parse("127.0.0.1", 0), 16, false));
};

TEST_F(TunnelTest, AnUpstreamThatNeverAnswersTheUpgradeGets408AtTheIdleTimeout) {
  publishUpgrades();
  int fd = connectClient();
  auto start = std::chrono::steady_clock::now();
  send(fd, "GET /silent HTTP/1.1\r\nHost: svc\r\nConnection: Upgrade\r\nUpgrade: websocket\r\n\r\n");
  bool eof = false;
  auto r = readResponses(fd, 1, &eof);
  ASSERT_EQ(r.size(), 1u);
  EXPECT_TRUE(r[0].starts_with("HTTP/1.1 408 ")) << r[0];
  EXPECT_GE(std::chrono::steady_clock::now() - start, 150ms);
  readResponses(fd, 1, &eof);
  EXPECT_TRUE(eof);
  close(fd);
  EXPECT_GE(tenant_->downstream_rq_idle_timeout->value(), 1u);
}

TEST_F(TunnelTest, WebSocketIsForwardedOnAFreshConnectionAndTunnelledAfter101) {
  publishUpgrades();
  for (int round = 1; round <= 2; ++round) {
    int fd = connectClient();
    send(fd, "GET /ws/chat HTTP/1.1\r\nHost: svc\r\nConnection: keep-alive, Upgrade\r\nUpgrade: websocket\r\n"
             "Sec-WebSocket-Key: dGhlIHNhbXBsZSBub25jZQ==\r\nSec-WebSocket-Version: 13\r\n\r\nearly");
    // The 103 is dropped; the 101 keeps Upgrade/Connection; the greeting and the echo of
    // the bytes sent behind the head follow it.
    std::string want = "HTTP/1.1 101 Switching Protocols\r\nconnection: upgrade\r\nupgrade: websocket\r\n\r\nWELCOMEearly";
    EXPECT_EQ(readAtLeast(fd, want.size()), want);
    send(fd, "frame");
    EXPECT_EQ(readAtLeast(fd, 5), "frame");
    std::string head = upgrade_origin_.head();
    EXPECT_TRUE(head.starts_with("GET /ws/chat HTTP/1.1\r\n")) << head;
    EXPECT_NE(head.find("connection: upgrade\r\n"), std::string::npos) << head;
    EXPECT_NE(head.find("upgrade: websocket\r\n"), std::string::npos) << head;
    EXPECT_NE(head.find("sec-websocket-key: dGhlIHNhbXBsZSBub25jZQ==\r\n"), std::string::npos) << head;
    EXPECT_NE(head.find("x-forwarded-for: 10.244.1.1\r\n"), std::string::npos) << head;
    EXPECT_EQ(head.find("keep-alive"), std::string::npos) << head;
    // The client's FIN ends the upstream side, whose close ends ours.
    shutdown(fd, SHUT_WR);
    bool eof = false;
    readAtLeast(fd, 1, &eof);
    EXPECT_TRUE(eof);
    close(fd);
    // A tunnel's connection is never pooled: every upgrade makes its own.
    EXPECT_EQ(upgrade_origin_.connections(), round);
  }
  EXPECT_EQ(origin_.connections(), 0);
}

TEST_F(TunnelTest, TerminatedConnectAnswers200AndTunnelsRawBytesWithHalfClose) {
  publishUpgrades();
  int fd = connectClient();
  // Bytes right behind the head are the tunnel's first payload.
  send(fd, "CONNECT db.internal:5432 HTTP/1.1\r\nHost: db.internal:5432\r\n\r\nearly\n");
  std::string got = readAtLeast(fd, 19 + 7 + 6);
  EXPECT_EQ(got, "HTTP/1.1 200 OK\r\n\r\nHELLO\r\nearly\n");
  send(fd, "ping\n");
  EXPECT_EQ(readAtLeast(fd, 5), "ping\n");
  shutdown(fd, SHUT_WR);
  bool eof = false;
  readAtLeast(fd, 1, &eof);
  EXPECT_TRUE(eof);
  close(fd);
  EXPECT_EQ(banner_.received(), "early\nping\n");
  EXPECT_EQ(origin_.connections(), 0);
  auto deadline = std::chrono::steady_clock::now() + 3s;
  while (tenant_->budget.bufferedBytes() != 0 && std::chrono::steady_clock::now() < deadline) {
    std::this_thread::sleep_for(10ms);
  }
  EXPECT_EQ(tenant_->budget.bufferedBytes(), 0u);
}

TEST_F(TunnelTest, UpgradesNotEnabledAre403AndNeverReachTheUpstream) {
  publishUpgrades();
  int fd = connectClient();
  send(fd, "GET /api/ws HTTP/1.1\r\nHost: svc\r\nConnection: Upgrade\r\nUpgrade: websocket\r\n\r\n");
  bool eof = false;
  auto r = readResponses(fd, 1, &eof);
  ASSERT_EQ(r.size(), 1u);
  EXPECT_TRUE(r[0].starts_with("HTTP/1.1 403 "));
  EXPECT_NE(r[0].find("connection: close"), std::string::npos);
  readResponses(fd, 1, &eof);
  EXPECT_TRUE(eof);
  close(fd);
  int again = connectClient();
  send(again, "GET /api/plain HTTP/1.1\r\nHost: svc\r\nUpgrade: websocket\r\n\r\n");
  auto plain = readResponses(again, 1);
  ASSERT_EQ(plain.size(), 1u);
  // Upgrade without "upgrade" in Connection is no upgrade request: forwarded, header dropped.
  EXPECT_TRUE(plain[0].starts_with("HTTP/1.1 200 "));
  EXPECT_EQ(plain[0].find("websocket"), std::string::npos);
  close(again);
  EXPECT_EQ(origin_.connections(), 1);
  EXPECT_EQ(banner_.received(), "");
}

TEST_F(TunnelTest, AClientThatDoesNotReadHoldsTheTunnelAtItsWatermarks) {
  publishUpgrades();
  int fd = connectClient();
  send(fd, "CONNECT db.internal:5432 HTTP/1.1\r\nHost: db.internal:5432\r\n\r\n");
  ASSERT_EQ(readAtLeast(fd, 19 + 7), "HTTP/1.1 200 OK\r\n\r\nHELLO\r\n");
  // Write without reading: the echo comes back into culvert, which must stop reading
  // (both ways) instead of holding it all; the writes then block in the kernel.
  fcntl(fd, F_SETFL, fcntl(fd, F_GETFL) | O_NONBLOCK);
  std::string block(64 * 1024, 'x');
  for (size_t i = 0; i < block.size(); ++i) block[i] = static_cast<char>('a' + i % 26);
  constexpr size_t kTotal = 64 * 1024 * 1024;
  size_t written = 0;
  auto deadline = std::chrono::steady_clock::now() + 1500ms;
  while (written < kTotal && std::chrono::steady_clock::now() < deadline) {
    ssize_t n = write(fd, block.data() + written % block.size(), block.size() - written % block.size());
    if (n > 0) {
      written += static_cast<size_t>(n);
    } else {
      std::this_thread::sleep_for(5ms);
    }
  }
  EXPECT_LT(written, kTotal);  // the writer was stopped
  // Per direction at most the high watermark plus one read.
  size_t held = tenant_->budget.bufferedBytes();
  EXPECT_LE(held, 2 * (Tunnel::kWriteHighWatermark + 64 * 1024)) << held;
  std::cout << "tunnel back-pressure: client wrote " << written << " bytes before blocking; culvert held " << held
            << " bytes\n";
  // Reading resumes everything: every byte comes back, in order.
  fcntl(fd, F_SETFL, fcntl(fd, F_GETFL) & ~O_NONBLOCK);
  shutdown(fd, SHUT_WR);
  std::string back;
  char buf[65536];
  pollfd p{fd, POLLIN, 0};
  while (back.size() < written && poll(&p, 1, 3000) > 0) {
    ssize_t n = read(fd, buf, sizeof buf);
    if (n <= 0) break;
    back.append(buf, static_cast<size_t>(n));
  }
  ASSERT_EQ(back.size(), written);
  bool intact = true;
  for (size_t i = 0; i < back.size() && intact; ++i) intact = back[i] == block[i % block.size()];
  EXPECT_TRUE(intact);
  close(fd);
}

// HTTP/2 has no upgrades here: a CONNECT stream is answered 501, and the connection goes on.
TEST_F(TunnelTest, Http2ConnectIsAnswered501) {
  publishUpgrades();
  struct Client : http::http2::CodecCallbacks {
    std::map<int32_t, std::string> status;
    void onHeaders(int32_t id, http::HeaderMap&& headers, bool) override {
      status[id] = std::string(headers.get(":status").value_or(""));
    }
    void onData(int32_t, std::string_view) override {}
    void onEndStream(int32_t) override {}
    void onTrailers(int32_t, http::HeaderMap&&) override {}
    void onStreamClose(int32_t, uint32_t) override {}
  } callbacks;
  http::http2::Codec codec(http::http2::Mode::Client, {}, callbacks);
  http::HeaderMap connect;
  connect.add(":method", "CONNECT");
  connect.add(":authority", "db.internal:5432");
  int32_t connect_id = codec.submitRequest(connect, false);
  http::HeaderMap get;
  get.add(":method", "GET");
  get.add(":scheme", "http");
  get.add(":authority", "svc");
  get.add(":path", "/direct");
  int32_t get_id = codec.submitRequest(get, true);
  int fd = connectClient();
  auto deadline = std::chrono::steady_clock::now() + 3s;
  while ((callbacks.status.size() < 2) && std::chrono::steady_clock::now() < deadline) {
    std::string out;
    codec.takeOutput(out);
    if (!out.empty()) send(fd, out);
    pollfd p{fd, POLLIN, 0};
    if (poll(&p, 1, 50) <= 0) continue;
    char buf[16384];
    ssize_t n = read(fd, buf, sizeof buf);
    if (n <= 0) break;
    ASSERT_TRUE(codec.receive(std::string_view(buf, static_cast<size_t>(n))));
  }
  close(fd);
  EXPECT_EQ(callbacks.status[connect_id], "501");
  EXPECT_EQ(callbacks.status[get_id], "418");  // the direct response: the connection still serves
  EXPECT_EQ(banner_.received(), "");
}

TEST_F(TunnelTest, AConnectClientThatHalfClosesAtOnceStillGetsItsAnswer) {
  publishUpgrades();
  int fd = connectClient();
  send(fd, "CONNECT db.internal:5432 HTTP/1.1\r\nHost: db.internal:5432\r\n\r\nquery\n");
  shutdown(fd, SHUT_WR);  // before culvert has even connected upstream
  bool eof = false;
  std::string got = readAtLeast(fd, 1 << 20, &eof);
  EXPECT_EQ(got, "HTTP/1.1 200 OK\r\n\r\nHELLO\r\nquery\n");
  EXPECT_TRUE(eof);
  close(fd);
  EXPECT_EQ(banner_.received(), "query\n");
}

// A downstream HTTP/2 connection driven by a real nghttp2 client codec over a real socket,
// recording when each frame of interest arrived (ms since the client was created).
class Http2TestClient : public http::http2::CodecCallbacks {
public:
  explicit Http2TestClient(int fd) : fd_(fd), codec_(http::http2::Mode::Client, {}, *this) {}
  ~Http2TestClient() override { close(fd_); }

  int32_t get(const std::string& path) {
    http::HeaderMap h;
    h.add(":method", "GET");
    h.add(":scheme", "http");
    h.add(":authority", "svc");
    h.add(":path", path);
    return codec_.submitRequest(h, true);
  }
  // Moves bytes both ways until `done` holds, the peer closes, or `timeout` passes.
  void runUntil(const std::function<bool()>& done, std::chrono::milliseconds timeout = 3000ms) {
    auto deadline = std::chrono::steady_clock::now() + timeout;
    while (!done() && !eof_ms && std::chrono::steady_clock::now() < deadline) {
      std::string out;
      codec_.takeOutput(out);
      if (!out.empty() && write(fd_, out.data(), out.size()) != static_cast<ssize_t>(out.size())) return;
      pollfd p{fd_, POLLIN, 0};
      if (poll(&p, 1, 5) <= 0) continue;
      char buf[16384];
      ssize_t n = read(fd_, buf, sizeof buf);
      if (n <= 0) {
        eof_ms = elapsedMs();
        return;
      }
      codec_.receive(std::string_view(buf, static_cast<size_t>(n)));
      recordGoaways(std::string_view(buf, static_cast<size_t>(n)));
    }
  }
  int64_t elapsedMs() const {
    return std::chrono::duration_cast<std::chrono::milliseconds>(std::chrono::steady_clock::now() - start_).count();
  }

  struct Goaway {
    int32_t last_stream_id;
    int64_t at_ms;
  };
  std::vector<Goaway> goaways;
  std::map<int32_t, std::string> status;
  std::map<int32_t, int64_t> closed_ms;  // stream id -> when it ended cleanly
  std::optional<int64_t> eof_ms;

  void onHeaders(int32_t id, http::HeaderMap&& headers, bool) override {
    status[id] = std::string(headers.get(":status").value_or(""));
  }
  void onData(int32_t id, std::string_view data) override { codec_.consume(id, data.size()); }
  void onEndStream(int32_t) override {}
  void onTrailers(int32_t, http::HeaderMap&&) override {}
  void onStreamClose(int32_t id, uint32_t error_code) override {
    if (error_code == 0) closed_ms[id] = elapsedMs();
  }

private:
  // GOAWAY frames as they come off the wire: an nghttp2 client with no stream left is
  // done after the first one and would not report the final one.
  void recordGoaways(std::string_view data) {
    frames_.append(data);
    while (frames_.size() >= 9) {
      size_t length = (uint8_t(frames_[0]) << 16) | (uint8_t(frames_[1]) << 8) | uint8_t(frames_[2]);
      if (frames_.size() < 9 + length) return;
      if (frames_[3] == 0x7 && length >= 8) {
        int32_t last = ((uint8_t(frames_[9]) & 0x7f) << 24) | (uint8_t(frames_[10]) << 16) |
                       (uint8_t(frames_[11]) << 8) | uint8_t(frames_[12]);
        goaways.push_back({last, elapsedMs()});
      }
      frames_.erase(0, 9 + length);
    }
  }

  int fd_;
  http::http2::Codec codec_;
  std::string frames_;  // what the server sent, not yet split into frames
  std::chrono::steady_clock::time_point start_ = std::chrono::steady_clock::now();
};

// common_http_protocol_options and drain_timeout on downstream connections, with the
// default codec (AUTO): the sniff picks HTTP/2 or HTTP/1.1, the same lifetime applies.
class ConnectionLifetimeTest : public WorkerTest {
protected:
  static constexpr int32_t kShutdownNoticeId = 0x7fffffff;

  void publishLifetime(config::ConnectionLifetime lifetime, std::chrono::milliseconds drain_timeout) {
    auto snapshot = std::const_pointer_cast<config::Snapshot>(makeSnapshot(origin_.port()));
    auto listener = std::make_shared<config::Listener>(*snapshot->listeners->by_name.at("vip"));
    listener->filter_chains[0].http.connection_lifetime = lifetime;
    listener->filter_chains[0].http.drain_timeout = drain_timeout;
    auto listeners = std::make_shared<config::ListenerTable>(*snapshot->listeners);
    listeners->by_name["vip"] = listener;
    snapshot->listeners = listeners;
    publishFromMain(snapshot);
  }
  // Within max(25 ms, 10%) late, as the integration tests hold timers, plus a little for
  // a loaded machine; early only by what the client's clock can be behind the server's:
  // the client times from when it read the last answer, which a descheduled test thread
  // reads a few ms after the worker wrote it and started the timer (145 ms for 150 was
  // seen under ctest -j2).
  static void expectAbout(int64_t measured_ms, int64_t want_ms, const char* what) {
    EXPECT_GE(measured_ms, want_ms - 10) << what;
    EXPECT_LE(measured_ms, want_ms + std::max<int64_t>(40, want_ms / 10)) << what;
  }
};

TEST_F(ConnectionLifetimeTest, AnIdleHttp2ConnectionGetsTheNoticeThenTheFinalGoawayAndCloses) {
  publishLifetime({.idle_timeout = 150ms, .max_duration = 0ms}, 100ms);
  Http2TestClient client(connectClient());
  int32_t id = client.get("/direct");
  client.runUntil([&] { return client.closed_ms.count(id) > 0; });
  ASSERT_EQ(client.status[id], "418");
  int64_t answered = client.closed_ms[id];
  client.runUntil([] { return false; }, 2000ms);
  ASSERT_TRUE(client.eof_ms.has_value());
  ASSERT_EQ(client.goaways.size(), 2u);
  // The notice keeps new streams away but the connection open for those racing it; the
  // final GOAWAY names the last stream taken.
  EXPECT_EQ(client.goaways[0].last_stream_id, kShutdownNoticeId);
  EXPECT_EQ(client.goaways[1].last_stream_id, id);
  expectAbout(client.goaways[0].at_ms - answered, 150, "notice: idle_timeout after the last stream");
  expectAbout(client.goaways[1].at_ms - answered, 250, "final GOAWAY: drain_timeout after the notice");
  expectAbout(*client.eof_ms - answered, 250, "closed with the final GOAWAY: no stream left");
  EXPECT_EQ(tenant_->downstream_cx_idle_timeout->value(), 1u);
  EXPECT_EQ(tenant_->downstream_cx_max_duration_reached->value(), 0u);
}

TEST_F(ConnectionLifetimeTest, AnOpenStreamHoldsTheIdleTimeoutOff) {
  publishLifetime({.idle_timeout = 100ms, .max_duration = 0ms}, 50ms);
  Http2TestClient client(connectClient());
  int32_t id = client.get("/api/slow");  // open for 300 ms, three idle timeouts
  client.runUntil([&] { return client.closed_ms.count(id) > 0; });
  EXPECT_EQ(client.status[id], "200");
  EXPECT_TRUE(client.goaways.empty());
  client.runUntil([] { return false; }, 2000ms);
  ASSERT_FALSE(client.goaways.empty());
  expectAbout(client.goaways[0].at_ms - client.closed_ms[id], 100, "idle from the end of the stream");
  EXPECT_EQ(tenant_->downstream_cx_idle_timeout->value(), 1u);
}

TEST_F(ConnectionLifetimeTest, AStreamInFlightAtMaxConnectionDurationFinishesThenTheConnectionCloses) {
  publishLifetime({.idle_timeout = 0ms, .max_duration = 100ms}, 50ms);
  Http2TestClient client(connectClient());
  int32_t id = client.get("/api/slow");  // answered at about 300 ms
  client.runUntil([] { return false; }, 2000ms);
  ASSERT_TRUE(client.eof_ms.has_value());
  ASSERT_EQ(client.goaways.size(), 2u);
  EXPECT_EQ(client.goaways[0].last_stream_id, kShutdownNoticeId);
  expectAbout(client.goaways[0].at_ms, 100, "notice at max_connection_duration");
  EXPECT_EQ(client.goaways[1].last_stream_id, id);
  expectAbout(client.goaways[1].at_ms, 150, "final GOAWAY after drain_timeout");
  // The stream the final GOAWAY admitted completes; then the connection closes.
  EXPECT_EQ(client.status[id], "200");
  ASSERT_EQ(client.closed_ms.count(id), 1u);
  EXPECT_GE(client.closed_ms[id], TestOrigin::kSlowAnswer.count());
  EXPECT_GE(*client.eof_ms, client.closed_ms[id]);
  EXPECT_LE(*client.eof_ms - client.closed_ms[id], 40);
  EXPECT_EQ(tenant_->downstream_cx_max_duration_reached->value(), 1u);
  EXPECT_EQ(tenant_->downstream_cx_idle_timeout->value(), 0u);
}

TEST_F(ConnectionLifetimeTest, TheSameLifetimeAppliesWhenTheSniffPicksHttp1) {
  publishLifetime({.idle_timeout = 150ms, .max_duration = 0ms}, 5000ms);
  int fd = connectClient();
  send(fd, "GET /direct HTTP/1.1\r\nHost: svc\r\n\r\n");
  ASSERT_EQ(readResponses(fd, 1).size(), 1u);
  auto answered = std::chrono::steady_clock::now();
  bool eof = false;
  readResponses(fd, 1, &eof);
  auto idle = std::chrono::duration_cast<std::chrono::milliseconds>(std::chrono::steady_clock::now() - answered);
  EXPECT_TRUE(eof);
  expectAbout(idle.count(), 150, "HTTP/1.1 closes at idle_timeout (drain_timeout is HTTP/2's)");
  EXPECT_EQ(tenant_->downstream_cx_idle_timeout->value(), 1u);
  close(fd);
}

TEST_F(ConnectionLifetimeTest, Http1MaxRequestsPerConnectionClosesAfterTheLastRequestsAnswer) {
  publishLifetime({.idle_timeout = 0ms, .max_duration = 0ms, .max_requests = 2}, 5000ms);
  int fd = connectClient();
  send(fd, "GET /direct HTTP/1.1\r\nHost: svc\r\n\r\n");
  auto first = readResponses(fd, 1);
  ASSERT_EQ(first.size(), 1u);
  EXPECT_EQ(first[0].find("connection: close"), std::string::npos) << first[0];
  // The 2nd is the last: answered with "connection: close", then the connection closes,
  // a 3rd request pipelined behind it unanswered (the client retries it elsewhere).
  send(fd, "GET /direct HTTP/1.1\r\nHost: svc\r\n\r\nGET /direct HTTP/1.1\r\nHost: svc\r\n\r\n");
  bool eof = false;
  auto rest = readResponses(fd, 2, &eof);
  ASSERT_EQ(rest.size(), 1u);
  EXPECT_NE(rest[0].find("connection: close"), std::string::npos) << rest[0];
  EXPECT_TRUE(eof);
  EXPECT_EQ(tenant_->downstream_cx_max_requests_reached->value(), 1u);
  close(fd);
}

TEST_F(ConnectionLifetimeTest, Http2MaxRequestsPerConnectionDrainsAfterTheLastStream) {
  publishLifetime({.idle_timeout = 0ms, .max_duration = 0ms, .max_requests = 2}, 50ms);
  Http2TestClient client(connectClient());
  int32_t first = client.get("/direct");
  client.runUntil([&] { return client.closed_ms.count(first) > 0; });
  EXPECT_TRUE(client.goaways.empty()) << "one stream of two: no drain yet";
  int32_t second = client.get("/direct");
  client.runUntil([] { return false; }, 2000ms);
  EXPECT_EQ(client.status[first], "418");
  EXPECT_EQ(client.status[second], "418");
  ASSERT_EQ(client.goaways.size(), 2u);
  EXPECT_EQ(client.goaways[0].last_stream_id, kShutdownNoticeId);
  EXPECT_EQ(client.goaways[1].last_stream_id, second);
  expectAbout(client.goaways[1].at_ms - client.goaways[0].at_ms, 50, "final GOAWAY after drain_timeout");
  ASSERT_TRUE(client.eof_ms.has_value());
  EXPECT_EQ(tenant_->downstream_cx_max_requests_reached->value(), 1u);
  EXPECT_EQ(tenant_->downstream_cx_max_duration_reached->value(), 0u);
}

}  // namespace
}  // namespace culvert::server

// --- The fair scheduler's pauses on HTTP/2 and TCP proxy sessions (HTTP/1.1 above).
namespace culvert::server {
namespace {

// HTTP/2: a connection whose tenant is over its share stops reading until the next
// round, and every stream it carries is still answered.
TEST_F(TenantBudgetTest, AnHttp2ConnectionPausedForItsShareAnswersEveryStream) {
  std::atomic<bool> stop{false};
  std::thread other = keepOtherTenantBusy(stop);
  constexpr int kConnections = 4, kStreams = 32, kBursts = 20;
  std::vector<std::unique_ptr<Http2TestClient>> clients;
  for (int i = 0; i < kConnections; ++i) clients.push_back(std::make_unique<Http2TestClient>(connectClient()));
  auto paused_before = tenant_->share_paused->value();
  size_t answered = 0;
  for (int b = 0; b < kBursts; ++b) {
    std::vector<std::vector<int32_t>> ids(kConnections);
    for (int c = 0; c < kConnections; ++c) {
      for (int i = 0; i < kStreams; ++i) ids[c].push_back(clients[c]->get("/direct"));
    }
    for (int c = 0; c < kConnections; ++c) {
      auto& client = *clients[c];
      client.runUntil([&] { return client.closed_ms.size() >= static_cast<size_t>((b + 1) * kStreams); });
      for (int32_t id : ids[c]) answered += client.status[id] == "418";
    }
  }
  stop = true;
  other.join();
  EXPECT_EQ(answered, static_cast<size_t>(kConnections * kStreams * kBursts));
  EXPECT_GT(tenant_->share_paused->value(), paused_before);
}

// TCP proxy: a flood of bytes through the tunnel pauses it for its share; every byte
// still comes back from the echo origin.
class TcpFairShareTest : public TenantBudgetTest {
protected:
  void SetUp() override {
    TenantBudgetTest::SetUp();
    // Beside the HTTP chain (the other tenant's requests): the sniff sends what is not
    // HTTP to the echo origin.
    config::FilterChain tcp;
    tcp.tcp_proxy = config::TcpProxy{"echo", "echo", std::chrono::seconds(5)};
    publishWithExtraChains({tcp}, "echo", echo_.port());
  }
  BannerEchoOrigin echo_;
};

TEST_F(TcpFairShareTest, ATunnelPausedForItsShareDeliversEveryByte) {
  std::atomic<bool> stop{false};
  std::thread other = keepOtherTenantBusy(stop);
  auto paused_before = tenant_->share_paused->value();
  int fd = connectClient();
  // At least 32 MiB, and on until the tunnel was paused (up to 5 s): on a loaded host the
  // other tenant's thread may not have run during the first 32 MiB, and without its work
  // nothing is over a share.
  constexpr size_t kMinBytes = 32 << 20;
  std::atomic<size_t> sent{0};
  std::atomic<bool> writer_done{false};
  std::thread writer([&] {
    std::string chunk(64 << 10, 'x');
    auto deadline = std::chrono::steady_clock::now() + 5s;
    while (sent < kMinBytes ||
           (tenant_->share_paused->value() == paused_before && std::chrono::steady_clock::now() < deadline)) {
      if (::send(fd, chunk.data(), chunk.size(), MSG_NOSIGNAL) != static_cast<ssize_t>(chunk.size())) break;
      sent += chunk.size();
    }
    writer_done = true;
  });
  std::string echoed;
  char buf[65536];
  auto deadline = std::chrono::steady_clock::now() + 15s;
  while (!(writer_done && echoed.size() >= sent + 7) && std::chrono::steady_clock::now() < deadline) {
    pollfd p{fd, POLLIN, 0};
    if (poll(&p, 1, 50) <= 0) continue;
    ssize_t n = read(fd, buf, sizeof buf);
    if (n <= 0) break;
    echoed.append(buf, static_cast<size_t>(n));
  }
  ::shutdown(fd, SHUT_RDWR);  // a writer still blocked (the relay stalled) fails and ends
  writer.join();
  stop = true;
  other.join();
  close(fd);
  ASSERT_TRUE(echoed.starts_with("HELLO\r\n"));
  echoed.erase(0, 7);
  EXPECT_GE(sent, kMinBytes);
  EXPECT_EQ(echoed.size(), sent.load());
  EXPECT_EQ(echoed.find_first_not_of('x'), std::string::npos);
  EXPECT_GT(tenant_->share_paused->value(), paused_before);
}

}  // namespace
}  // namespace culvert::server
