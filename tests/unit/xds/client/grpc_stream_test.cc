#include "xds/client/grpc_stream.h"

#include <gtest/gtest.h>
#include <netinet/in.h>
#include <sys/socket.h>
#include <unistd.h>
#include <uv.h>

#include <optional>
#include <string>

#include "proxy/common/socket_address.h"
#include "tests/unit/proxy/tls/test_certs.h"

namespace culvert::xds::client {
namespace {

TEST(GrpcTarget, ParsesHostPortAndUnix) {
  auto tcp = parseGrpcTarget("127.0.0.1:18000");
  ASSERT_TRUE(tcp);
  EXPECT_EQ(tcp->host_port, "127.0.0.1:18000");
  EXPECT_EQ(tcp->authority, "127.0.0.1:18000");
  auto unix_target = parseGrpcTarget("unix:/run/cp.sock");
  ASSERT_TRUE(unix_target);
  EXPECT_EQ(unix_target->unix_path, "/run/cp.sock");
  EXPECT_FALSE(parseGrpcTarget("unix:"));
  auto named = parseGrpcTarget("cp.example:18000");
  ASSERT_TRUE(named);
  EXPECT_EQ(named->host_port, "cp.example:18000");
  EXPECT_EQ(named->authority, "cp.example:18000");
  EXPECT_FALSE(parseGrpcTarget("cp_bad:18000"));
  EXPECT_FALSE(parseGrpcTarget("cp.example"));
}

// A TCP peer that accepts and then says nothing: no SETTINGS, no PING ack.
struct SilentServer {
  uv_tcp_t listener{};
  uv_tcp_t* peer = nullptr;
  uint16_t port = 0;
  size_t bytes_read = 0;
  int first_byte = -1;
  char buf[4096];

  explicit SilentServer(uv_loop_t* loop) {
    uv_tcp_init(loop, &listener);
    listener.data = this;
    sockaddr_in addr{};
    uv_ip4_addr("127.0.0.1", 0, &addr);
    uv_tcp_bind(&listener, reinterpret_cast<const sockaddr*>(&addr), 0);
    uv_listen(reinterpret_cast<uv_stream_t*>(&listener), 4, [](uv_stream_t* l, int) {
      auto* self = static_cast<SilentServer*>(l->data);
      self->peer = new uv_tcp_t{};
      uv_tcp_init(l->loop, self->peer);
      self->peer->data = self;
      uv_accept(l, reinterpret_cast<uv_stream_t*>(self->peer));
      uv_read_start(
          reinterpret_cast<uv_stream_t*>(self->peer),
          [](uv_handle_t* h, size_t, uv_buf_t* b) {
            auto* s = static_cast<SilentServer*>(h->data);
            *b = uv_buf_init(s->buf, sizeof s->buf);
          },
          [](uv_stream_t* s, ssize_t n, const uv_buf_t* b) {
            auto* self = static_cast<SilentServer*>(s->data);
            if (n <= 0) return;
            if (self->bytes_read == 0) self->first_byte = static_cast<unsigned char>(b->base[0]);
            self->bytes_read += static_cast<size_t>(n);
          });
    });
    sockaddr_storage bound{};
    int len = sizeof bound;
    uv_tcp_getsockname(&listener, reinterpret_cast<sockaddr*>(&bound), &len);
    port = ntohs(reinterpret_cast<sockaddr_in*>(&bound)->sin_port);
  }
  void close() {
    uv_close(reinterpret_cast<uv_handle_t*>(&listener), nullptr);
    if (peer != nullptr) uv_close(reinterpret_cast<uv_handle_t*>(peer), [](uv_handle_t* h) { delete reinterpret_cast<uv_tcp_t*>(h); });
  }
};

TEST(GrpcStream, KeepaliveDropsAPeerThatNeverAcksPing) {
  event::Dispatcher d("test");
  SilentServer server(d.loop());
  auto target = parseGrpcTarget("127.0.0.1:" + std::to_string(server.port));
  ASSERT_TRUE(target);
  GrpcStreamOptions options;
  options.method_path = "/x.Y/Z";
  options.keepalive_interval = std::chrono::milliseconds(50);
  options.keepalive_timeout = std::chrono::milliseconds(100);
  bool opened = false;
  std::optional<std::pair<int, std::string>> closed;
  std::unique_ptr<GrpcStream> stream;
  stream = std::make_unique<GrpcStream>(
      d, *target, options,
      GrpcStream::Callbacks{[&] { opened = true; }, [](std::string) {},
                            [&](int status, std::string message) {
                              closed.emplace(status, message);
                              d.deferredDelete(std::move(stream));
                              server.close();
                              d.exit();
                            }});
  stream->start();
  EXPECT_TRUE(stream->send("hello"));
  auto guard = d.createTimer([&] { d.exit(); });
  guard->enable(std::chrono::seconds(5));
  d.run();
  EXPECT_TRUE(opened);
  ASSERT_TRUE(closed.has_value());
  EXPECT_EQ(closed->first, kGrpcTransportFailure);
  EXPECT_NE(closed->second.find("keepalive"), std::string::npos) << closed->second;
  // The client preface, SETTINGS, HEADERS and the framed message did go out.
  EXPECT_GT(server.bytes_read, 24u + 5u + 5u);
}

// Over TLS the stream opens only once the handshake is done, and the handshake counts
// against connect_timeout: a peer that accepts but never answers the ClientHello fails it.
TEST(GrpcStream, TlsHandshakeCountsAgainstTheConnectTimeout) {
  // Before the loop exists: making the certificates takes a while, and libuv's cached
  // loop time would make the connect timer expire at once.
  tls::ClientConfig tls_config;
  tls_config.ca_file = tls::testing::certPath("ca.crt");
  tls_config.server_name = "xds.test";
  auto context = tls::ClientContext::load(tls_config);
  ASSERT_TRUE(context) << context.error().describe();
  event::Dispatcher d("test");
  SilentServer server(d.loop());
  auto target = parseGrpcTarget("127.0.0.1:" + std::to_string(server.port));
  ASSERT_TRUE(target);
  GrpcStreamOptions options;
  options.method_path = "/x.Y/Z";
  options.connect_timeout = std::chrono::milliseconds(300);
  options.tls = *context;
  bool opened = false;
  std::optional<std::pair<int, std::string>> closed;
  std::unique_ptr<GrpcStream> stream;
  stream = std::make_unique<GrpcStream>(d, *target, options,
                                        GrpcStream::Callbacks{[&] { opened = true; }, [](std::string) {},
                                                              [&](int status, std::string message) {
                                                                closed.emplace(status, message);
                                                                d.deferredDelete(std::move(stream));
                                                                server.close();
                                                                d.exit();
                                                              }});
  stream->start();
  EXPECT_TRUE(stream->send("queued until open"));
  auto guard = d.createTimer([&] { d.exit(); });
  guard->enable(std::chrono::seconds(5));
  d.run();
  EXPECT_FALSE(opened);
  ASSERT_TRUE(closed.has_value());
  EXPECT_EQ(closed->first, kGrpcTransportFailure);
  EXPECT_EQ(closed->second, "connect timed out");
  // Only a ClientHello went out: a TLS handshake record (0x16), no HTTP/2 preface in clear.
  EXPECT_GT(server.bytes_read, 0u);
  EXPECT_EQ(server.first_byte, 0x16);
}

// Opens a stream to `address` and returns how it closed (nullopt: it did not, in time).
std::optional<std::pair<int, std::string>> runUntilClosed(const std::string& address) {
  event::Dispatcher d("test");
  auto target = parseGrpcTarget(address);
  EXPECT_TRUE(target) << address;
  if (!target) return std::nullopt;
  GrpcStreamOptions options;
  options.method_path = "/x.Y/Z";
  std::optional<std::pair<int, std::string>> closed;
  std::unique_ptr<GrpcStream> stream;
  stream = std::make_unique<GrpcStream>(d, *target, options,
                                        GrpcStream::Callbacks{[] {}, [](std::string) {},
                                                              [&](int status, std::string message) {
                                                                closed.emplace(status, message);
                                                                d.deferredDelete(std::move(stream));
                                                                d.exit();
                                                              }});
  stream->start();
  auto guard = d.createTimer([&] { d.exit(); });
  guard->enable(std::chrono::seconds(10));
  d.run();
  return closed;
}

// A loopback port that was bound and closed again: nothing listens there.
uint16_t closedPort() {
  int fd = ::socket(AF_INET, SOCK_STREAM, 0);
  sockaddr_in addr{};
  addr.sin_family = AF_INET;
  addr.sin_addr.s_addr = htonl(INADDR_LOOPBACK);
  EXPECT_EQ(::bind(fd, reinterpret_cast<sockaddr*>(&addr), sizeof addr), 0);
  socklen_t len = sizeof addr;
  ::getsockname(fd, reinterpret_cast<sockaddr*>(&addr), &len);
  ::close(fd);
  return ntohs(addr.sin_port);
}

void expectTransportFailure(const std::optional<std::pair<int, std::string>>& closed, const std::string& says) {
  ASSERT_TRUE(closed.has_value());
  EXPECT_EQ(closed->first, kGrpcTransportFailure);
  EXPECT_NE(closed->second.find(says), std::string::npos) << closed->second;
}

TEST(GrpcStream, ConnectionRefusedIsATransportFailure) {
  expectTransportFailure(runUntilClosed("127.0.0.1:" + std::to_string(closedPort())), "connect");
}

// A control plane named by DNS is resolved off the loop (uv_getaddrinfo), then connected.
TEST(GrpcStream, NamedTargetIsResolvedThenConnected) {
  expectTransportFailure(runUntilClosed("localhost:" + std::to_string(closedPort())), "connect");
}

TEST(GrpcStream, UnresolvableNameIsATransportFailure) {
  expectTransportFailure(runUntilClosed("no-such-host.invalid:18000"), "resolve no-such-host.invalid:18000");
}

}  // namespace
}  // namespace culvert::xds::client
