#include "proxy/upstream/http2_pool.h"

#include <sys/socket.h>
#include <unistd.h>

#include <gtest/gtest.h>

#include <thread>

#include "proxy/event/scheduler.h"
#include "tests/unit/proxy/upstream/pool_test_util.h"

namespace culvert::upstream {
namespace {

using namespace std::chrono_literals;
using testing::Listener;
using testing::runUntil;

// An HTTP/2 origin on the test's side of the loop: its socket is served by hand (pump)
// through a server codec, so the test decides when each response goes out.
struct Origin : http::http2::CodecCallbacks {
  Listener listener;
  network::FileDescriptor fd;
  http::http2::Codec codec{http::http2::Mode::Server, http::http2::Limits{}, *this};
  std::vector<int32_t> requests;

  // Accepts, reads what came and writes what the codec has.
  void pump() {
    if (!fd) {
      int accepted = ::accept4(listener.fd.get(), nullptr, nullptr, SOCK_NONBLOCK);
      if (accepted < 0) return;
      fd = network::FileDescriptor(accepted);
    }
    char buf[16384];
    ssize_t n;
    while ((n = ::read(fd.get(), buf, sizeof buf)) > 0) codec.receive({buf, static_cast<size_t>(n)});
    std::string out;
    codec.takeOutput(out);
    if (!out.empty()) {
      EXPECT_EQ(::write(fd.get(), out.data(), out.size()), static_cast<ssize_t>(out.size()));
    }
  }
  void respond(int32_t id, std::string_view body) {
    http::HeaderMap head;
    head.add(":status", "200");
    codec.submitResponse(id, std::move(head), false);
    codec.sendData(id, body);
    codec.endStream(id);
    pump();
  }

  void onHeaders(int32_t id, http::HeaderMap&&, bool) override { requests.push_back(id); }
  void onData(int32_t, std::string_view) override {}
  void onEndStream(int32_t) override {}
  void onTrailers(int32_t, http::HeaderMap&&) override {}
  void onStreamClose(int32_t, uint32_t) override {}
};

// What a stream got. Passing its DATA on takes 3 ms (a slow downstream write, say).
struct Response : Http2StreamCallbacks {
  std::string body;
  bool ended = false;
  void onResponseHeaders(http::HeaderMap&&, bool) override {}
  void onResponseData(std::string_view data) override {
    body.append(data);
    std::this_thread::sleep_for(3ms);
  }
  void onResponseEnd(http::HeaderMap&&) override { ended = true; }
  void onStreamFailed(const std::string& reason, uint32_t) override { ADD_FAILURE() << reason; }
};

http::HeaderMap get() {
  http::HeaderMap h;
  h.add(":method", "GET");
  h.add(":scheme", "http");
  h.add(":authority", "origin");
  h.add(":path", "/");
  return h;
}

// An upstream HTTP/2 connection carries one pod's streams, so its reads are its tenant's:
// while the tenant is over its share the response stays in the kernel, and it comes when
// a round finds the tenant within its share again.
TEST(Http2PoolReadShare, AResponseWaitsWhileItsTenantIsOverItsShare) {
  constexpr auto kRound = 100ms;
  Origin origin;
  event::Dispatcher d("h2pool");
  event::Scheduler scheduler(&d, 500us, kRound);
  common::StatsStore stats;
  ConnectionPool sockets(d, nullptr, 60s, &stats);
  Http2Pool pool(d, sockets, stats);
  common::Counter waited;
  ConnectRequest request{{1, *common::SocketAddress::parse("127.0.0.1", origin.listener.port), Protocol::Http2}, -1,
                         2s};
  request.share = {&scheduler, 7, 1, &waited};

  Http2Connection* connection = nullptr;
  auto pending = pool.acquire(request, [&](common::Result<Http2Connection*> r) {
    ASSERT_TRUE(r) << r.error().describe();
    connection = *r;
  });
  runUntil(d, [&] { return origin.pump(), connection != nullptr; }, 2s);
  ASSERT_NE(connection, nullptr);
  Response response;
  int32_t id = connection->openStream(get(), true, &response);
  ASSERT_GT(id, 0);
  runUntil(d, [&] { return origin.pump(), !origin.requests.empty(); }, 2s);
  ASSERT_EQ(origin.requests.size(), 1u);

  // Tenant 7 over its share: tenant 8 has credit, 7 spent twice its quantum.
  scheduler.run(8, [] {});
  scheduler.run(7, [] { std::this_thread::sleep_for(1ms); });
  ASSERT_TRUE(scheduler.overShare(7));
  auto charged_before = scheduler.charged(7);
  origin.respond(origin.requests[0], "hello");
  auto start = std::chrono::steady_clock::now();
  runUntil(d, [&] { return std::chrono::steady_clock::now() - start > 30ms; }, 1s);
  EXPECT_EQ(response.body, "") << "read while its tenant was over its share";
  EXPECT_EQ(waited.value(), 1u);

  runUntil(d, [&] { return origin.pump(), response.ended; }, 2s);
  EXPECT_TRUE(response.ended);
  EXPECT_EQ(response.body, "hello");
  EXPECT_GE(std::chrono::steady_clock::now() - start, kRound - 5ms);
  // Passing the response on was the tenant's work too, not only the read.
  EXPECT_GE(scheduler.charged(7) - charged_before, 3ms);
}

}  // namespace
}  // namespace culvert::upstream
