#pragma once

#include <uv.h>

#include <array>
#include <cstdint>
#include <filesystem>
#include <functional>
#include <memory>
#include <unordered_set>

#include "agent/unix_socket.h"
#include "cni/protocol/enrollment.h"
#include "proxy/common/error.h"
#include "proxy/event/dispatcher.h"

namespace culvert::agent {

using cni::EnrollmentRequest;
using cni::EnrollmentResponse;

// Serves the enrollment protocol (cni/protocol/enrollment.h) on a unix socket, on the
// main Dispatcher. One request per line; a connection handles its requests one at a time,
// in order. Bad input gets {"ok":false} and is counted; it never affects other connections.
class EnrollmentServer {
public:
  // `reply` must be called exactly once (later calls are ignored); it may be called later
  // and from any thread (it posts to the dispatcher), also after the client went away.
  using Handler = std::function<void(const EnrollmentRequest&, std::function<void(EnrollmentResponse)> reply)>;

  struct Counters {
    uint64_t connections_accepted = 0;
    uint64_t connections_rejected = 0;  // over max_connections
    uint64_t requests = 0;              // well-formed requests handed to the handler
    uint64_t bad_requests = 0;          // invalid JSON / fields / oversized lines
    uint64_t replies_dropped = 0;       // reply after the client closed
  };

  struct Options {
    std::filesystem::path socket_path{};
    size_t max_connections = 256;
    UnixListenOptions listen{};  // mode 0600 by default
  };

  // Must be called on the dispatcher's thread (or before it runs). Destroy the server on
  // that thread too, before the Dispatcher.
  static common::Result<std::unique_ptr<EnrollmentServer>> create(event::Dispatcher& dispatcher, Options options,
                                                                  Handler handler);
  ~EnrollmentServer();
  EnrollmentServer(const EnrollmentServer&) = delete;
  EnrollmentServer& operator=(const EnrollmentServer&) = delete;

  const std::filesystem::path& socketPath() const { return options_.socket_path; }
  const Counters& counters() const { return counters_; }
  size_t activeConnections() const { return connections_.size(); }

private:
  struct Connection;

  EnrollmentServer(event::Dispatcher& dispatcher, Options options, Handler handler);
  static void onConnection(uv_stream_t* server, int status);
  void accept();
  void startReading(Connection& c);
  void onRead(Connection& c, ssize_t nread, const uv_buf_t* buf);
  void processLines(Connection& c);
  void dispatch(Connection& c, std::string line);
  void send(Connection& c, const EnrollmentResponse& response, bool close_after);
  void closeConnection(Connection& c);

  event::Dispatcher& dispatcher_;
  Options options_;
  Handler handler_;
  UnixListener listener_;
  uv_pipe_t* pipe_ = nullptr;  // owned; freed in its close callback
  std::unordered_set<Connection*> connections_;
  Counters counters_;
  std::array<char, 65536> read_buffer_{};
  // Expires with the server; late replies check it before touching counters_.
  std::shared_ptr<EnrollmentServer*> alive_ = std::make_shared<EnrollmentServer*>(this);
};

}  // namespace culvert::agent
