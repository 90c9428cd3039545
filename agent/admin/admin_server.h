#pragma once

#include <uv.h>

#include <chrono>
#include <cstdint>
#include <filesystem>
#include <functional>
#include <map>
#include <memory>
#include <optional>
#include <string>
#include <unordered_map>
#include <unordered_set>

#include "agent/unix_socket.h"
#include "proxy/common/error.h"
#include "proxy/common/socket_address.h"
#include "proxy/event/dispatcher.h"

namespace culvert::agent {

struct AdminRequest {
  std::string method;
  std::string path;                          // without the query string, not decoded
  std::map<std::string, std::string> query;  // percent-decoded; a repeated key keeps the last value
};

struct AdminResponse {
  int status = 200;
  std::string content_type = "text/plain; charset=utf-8";
  std::string body;
};

// The admin HTTP/1.1 server on the main Dispatcher: GET only, one request per connection
// (every response carries Connection: close), bounded request size and time.
class AdminServer {
public:
  // `reply` must be called once (later calls are ignored); it may be called later and
  // from any thread (it posts to the dispatcher), also after the client went away.
  using Reply = std::function<void(AdminResponse)>;
  using Handler = std::function<void(const AdminRequest&, Reply)>;

  struct Options {
    std::optional<common::SocketAddress> address{};  // TCP; port 0 picks a free port
    std::filesystem::path socket_path{};           // unix socket; empty = none
    UnixListenOptions unix_listen{};               // mode 0600 by default
    size_t max_request_bytes = 16 * 1024;          // request line + headers (+ body)
    std::chrono::milliseconds request_timeout{10'000};
    size_t max_connections = 64;
  };

  struct Counters {
    uint64_t connections_accepted = 0;
    uint64_t connections_rejected = 0;
    uint64_t requests = 0;
    uint64_t bad_requests = 0;  // 400, 405, 413 and timeouts
  };

  // At least one of address / socket_path must be set. Call on the dispatcher's thread (or
  // before it runs); destroy the server on that thread, before the Dispatcher.
  static common::Result<std::unique_ptr<AdminServer>> create(event::Dispatcher& dispatcher, Options options);
  ~AdminServer();
  AdminServer(const AdminServer&) = delete;
  AdminServer& operator=(const AdminServer&) = delete;

  // Exact path match ("/stats"); a later handler for the same path replaces the earlier.
  void addHandler(std::string path, std::function<void(const AdminRequest&, std::function<void(AdminResponse)>)> handler);

  // The TCP address actually bound (the real port when options.address had port 0).
  std::optional<common::SocketAddress> boundAddress() const { return bound_address_; }
  const Counters& counters() const { return counters_; }

private:
  struct Connection;

  AdminServer(event::Dispatcher& dispatcher, Options options);
  common::Result<void> listenTcp();
  common::Result<void> listenPipe();
  static void onConnection(uv_stream_t* server, int status);
  void accept(uv_stream_t* server);
  void startRequest(Connection& c);
  void respond(Connection& c, const AdminResponse& response);
  void reject(Connection& c, int status, std::string body);
  void closeConnection(Connection& c);

  event::Dispatcher& dispatcher_;
  Options options_;
  std::unordered_map<std::string, Handler> handlers_;
  uv_tcp_t* tcp_ = nullptr;    // owned; freed in its close callback
  uv_pipe_t* pipe_ = nullptr;  // owned; freed in its close callback
  UnixListener unix_listener_;
  std::optional<common::SocketAddress> bound_address_;
  std::unordered_set<Connection*> connections_;
  Counters counters_;
  std::shared_ptr<AdminServer*> alive_ = std::make_shared<AdminServer*>(this);
};

// Percent-decodes a query component ('+' is a space). Invalid escapes are kept as is.
std::string percentDecode(std::string_view text);
// "a=1&b=x%20y" -> {a:1, b:"x y"}.
std::map<std::string, std::string> parseQuery(std::string_view query);

}  // namespace culvert::agent
