#pragma once

// One bidirectional-streaming gRPC call over HTTP/2 (nghttp2) on a libuv TCP or unix
// stream, on one Dispatcher's thread. Just enough gRPC for ADS: length-prefixed,
// uncompressed messages; content-type application/grpc; te: trailers; grpc-status and
// grpc-message from trailers (or a trailers-only response); HTTP/2 PING keepalive.
//
// Bytes pass through a tls::Transport (plaintext or TLS), so encryption happens in
// memory and every read and write stays on libuv.
//
// The HTTP/2 session code is private to this class (grpc_stream.cc) so it can later run
// on the proxy's own HTTP/2 codec (proxy/http/http2) without changing this interface.

#include <chrono>
#include <functional>
#include <memory>
#include <string>

#include "proxy/common/error.h"
#include "proxy/event/dispatcher.h"
#include "proxy/tls/client_context.h"

namespace culvert::xds::client {

// "host:port" (an IP literal; [v6]:port) or "unix:PATH".
struct GrpcTarget {
  std::string unix_path;        // set for unix:PATH
  std::string host_port;        // set for TCP
  std::string authority;        // :authority to send
};
common::Result<GrpcTarget> parseGrpcTarget(std::string_view address);

struct GrpcStreamOptions {
  std::string method_path;  // "/package.Service/Method"
  std::chrono::milliseconds keepalive_interval{30000};
  std::chrono::milliseconds keepalive_timeout{10000};
  std::chrono::milliseconds connect_timeout{5000};
  size_t max_message_bytes = 64u << 20;
  // TLS to the server (its handshake counts against connect_timeout); null = plaintext.
  std::shared_ptr<const tls::ClientContext> tls;
};

// gRPC status codes culvert uses; -1 marks a transport failure (no grpc-status).
inline constexpr int kGrpcTransportFailure = -1;

class GrpcStream {
public:
  struct Callbacks {
    std::function<void()> on_open;                      // HTTP/2 up, request headers sent
    std::function<void(std::string message)> on_message;  // one whole gRPC message
    // Exactly once, last. The owner may destroy the stream from inside it.
    std::function<void(int grpc_status, std::string message)> on_close;
  };

  GrpcStream(event::Dispatcher& dispatcher, GrpcTarget target, GrpcStreamOptions options, Callbacks callbacks);
  ~GrpcStream();
  GrpcStream(const GrpcStream&) = delete;
  GrpcStream& operator=(const GrpcStream&) = delete;

  void start();
  // Queues one message; false when the stream is closed.
  bool send(const std::string& message);

private:
  struct Impl;
  std::unique_ptr<Impl> impl_;
};

}  // namespace culvert::xds::client
