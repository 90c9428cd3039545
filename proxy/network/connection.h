#pragma once

#include <uv.h>

#include <atomic>
#include <chrono>
#include <cstddef>
#include <functional>
#include <memory>
#include <string>
#include <string_view>

#include "proxy/common/socket_address.h"
#include "proxy/event/dispatcher.h"
#include "proxy/event/scheduler.h"

namespace culvert::network {

enum class CloseReason { RemoteClose, ReadError, WriteError, ConnectFailed, LocalClose };

const char* toString(CloseReason reason);

class ConnectionCallbacks {
public:
  virtual ~ConnectionCallbacks() = default;
  // `data` is only valid during the call (it lives in the worker's shared read buffer).
  virtual void onData(std::string_view data) = 0;
  // The peer closed or the socket failed. Called at most once; the owner then destroys
  // (or close()s) the connection.
  virtual void onClose(CloseReason reason) = 0;
  // All queued writes reached the kernel (after write() had to queue).
  virtual void onWriteDrained() {}
};

// A TCP connection on one Dispatcher, over a libuv handle. Reads go through the
// dispatcher's single shared buffer, so an idle connection holds no read buffer.
class TcpConnection {
public:
  // Adopts an open, non-blocking socket (accepted, or created by a socket factory).
  static common::Result<std::unique_ptr<TcpConnection>> adopt(event::Dispatcher& dispatcher, int fd);
  ~TcpConnection();
  TcpConnection(const TcpConnection&) = delete;
  TcpConnection& operator=(const TcpConnection&) = delete;

  void setCallbacks(ConnectionCallbacks* callbacks) { callbacks_ = callbacks; }
  // Starts connecting an adopted, unconnected socket; `done(0)` or `done(-errno)`.
  void connect(const common::SocketAddress& to, std::function<void(int status)> done);
  void readEnable(bool enabled);
  void write(std::string_view data);
  // Half-closes: sends FIN once every queued write has reached the kernel. Reading goes on.
  void shutdownWrite();
  size_t queuedWriteBytes() const { return queued_write_bytes_; }
  // Puts this connection's queued writes under the worker's scheduler (DESIGN §1: a
  // tenant's share of the worker covers its writes, not only its reads). What the kernel
  // does not take at once then goes a slice per loop turn, each slice charged to `tenant`,
  // and waits while the tenant is over its share — so one tenant's large responses cannot
  // fill a loop turn with kernel copies that every other tenant waits behind. `scheduler`
  // and `weight` must outlive the connection.
  void shareWrites(event::Scheduler& scheduler, uint32_t tenant, const std::atomic<uint32_t>& weight);
  // Closes the socket. No callback runs after this. Safe to call more than once.
  void close();
  bool closed() const { return closed_; }
  int fd() const;
  event::Dispatcher& dispatcher() { return dispatcher_; }
  // Keeps `token` (say, a circuit-breaker unit) alive exactly as long as this object.
  void attach(std::shared_ptr<void> token) { attached_ = std::move(token); }
  // When the socket was adopted: the start of its life (max_connection_duration).
  std::chrono::steady_clock::time_point createdAt() const { return created_at_; }

private:
  TcpConnection(event::Dispatcher& dispatcher, uv_tcp_t* handle);
  static void onAlloc(uv_handle_t* handle, size_t suggested, uv_buf_t* buf);
  static void onRead(uv_stream_t* stream, ssize_t nread, const uv_buf_t* buf);
  void notifyClose(CloseReason reason);
  void deferCloseNotification(CloseReason reason);
  // Hands `data` to libuv as one write request (it completes in a later loop turn).
  void queueWrite(std::string data);
  void onQueuedWriteDone(size_t size, int status);
  // Shared writes: the next slice now (charged) or when the tenant is back within its share.
  void paceNextSlice();
  // Over its share: holds the bytes until a round finds the tenant within it again.
  bool holdForShare();
  void sendSlice();
  void shutdownNow();

  event::Dispatcher& dispatcher_;
  uv_tcp_t* handle_;  // freed in the close callback, which may run after we are gone
  ConnectionCallbacks* callbacks_ = nullptr;
  std::function<void(int)> connect_done_;
  size_t queued_write_bytes_ = 0;
  // Shared writes (shareWrites); `held_` exists only while bytes wait in user space.
  struct HeldWrites;
  event::Scheduler* scheduler_ = nullptr;
  const std::atomic<uint32_t>* weight_ = nullptr;
  uint32_t tenant_ = 0;
  std::unique_ptr<HeldWrites> held_;
  bool reading_ = false;
  bool closed_ = false;
  bool close_notified_ = false;
  std::shared_ptr<bool> alive_ = std::make_shared<bool>(true);  // guards posted callbacks
  std::shared_ptr<void> attached_;
  std::chrono::steady_clock::time_point created_at_;
};

}  // namespace culvert::network
