#pragma once

#include <uv.h>


#include <chrono>
#include <cstddef>
#include <functional>
#include <memory>
#include <string>
#include <string_view>

#include "proxy/common/socket_address.h"
#include "proxy/common/stats.h"
#include "proxy/event/dispatcher.h"
#include "proxy/event/scheduler.h"

namespace culvert::network {

enum class CloseReason { RemoteClose, ReadError, WriteError, ConnectFailed, LocalClose };

const char* toString(CloseReason reason);

// Whose work a connection's reads or writes are (DESIGN §1: a tenant's share of the
// worker covers all of its work).
struct WorkShare {
  event::Scheduler* scheduler = nullptr;  // null: not shared
  uint32_t tenant = 0;
  uint32_t weight = 1;
  common::Counter* paused = nullptr;  // counts reads that waited for a round (optional)
};

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
  // Asked when bytes the kernel did not take must wait, and before each slice of them.
  // Shared (a scheduler): they go to libuv a 64 KiB slice per loop turn, each slice
  // charged to the tenant, none while the tenant is over its share — so one tenant's large
  // responses cannot fill a loop turn with kernel copies every other tenant waits behind.
  // Not shared (the default): libuv writes them all as the socket takes them. Asked
  // rather than stored, so an idle connection pays nothing for it.
  virtual WorkShare writeShare() const { return {}; }
  // Asked before each read from the socket. Shared, the read is the tenant's work
  // (charged), and it waits: for the next loop turn once the tenant has had its part
  // of this one (Scheduler::turnSpent), for a round that finds the tenant within its share
  // once it is over it. Refused reads cost nothing, not even the copy out of the kernel:
  // libuv reads every ready socket in a turn, and with 64 connections relaying large
  // bodies those reads made turns of tens of milliseconds that every other tenant's new
  // request waited behind. Not shared (the default): read as they come.
  virtual WorkShare readShare() const { return {}; }
};

// A TCP connection on one Dispatcher, over a libuv handle. Reads go through the
// dispatcher's single shared buffer, so an idle connection holds no read buffer. Small
// writes are coalesced until the end of the loop turn (see write()).
class TcpConnection final : private event::Dispatcher::TurnEnd {
public:
  // Adopts an open, non-blocking socket (accepted, or created by a socket factory).
  static common::Result<std::unique_ptr<TcpConnection>> adopt(event::Dispatcher& dispatcher, int fd);
  ~TcpConnection();
  TcpConnection(const TcpConnection&) = delete;
  TcpConnection& operator=(const TcpConnection&) = delete;

  // A new owner (or none) starts without the old owner's wait for its tenant's share.
  void setCallbacks(ConnectionCallbacks* callbacks);
  // Starts connecting an adopted, unconnected socket; `done(0)` or `done(-errno)`.
  void connect(const common::SocketAddress& to, std::function<void(int status)> done);
  // What the owner wants; reads also wait while its tenant is over its share (readShare).
  void readEnable(bool enabled);
  // Writes `data` after what was written before. Small writes wait for the end of the
  // loop turn (up to kCoalescedBytes in all) and go to the kernel in one system call with
  // everything else the turn wrote on this connection, every connection's back to back.
  // Written at once, as the proxy used to, each wrote to a peer that had just gone back
  // to sleep: with 64 keep-alive connections relayed, the peers were woken ~0.8 times a
  // request, against 0.05 for HAProxy, which also writes at the end of its loop pass.
  void write(std::string_view data);
  // Half-closes: sends FIN once every queued write has reached the kernel. Reading goes on.
  void shutdownWrite();
  // Bytes the kernel has not taken yet, apart from those waiting for the turn's end:
  // those are few and bounded, and go to the kernel before the loop next waits.
  size_t queuedWriteBytes() const { return queued_write_bytes_; }
  // Closes the socket, after handing the kernel what waits for the turn's end (what the
  // kernel did not take at once is dropped, as are queued writes). No callback runs
  // after this. Safe to call more than once.
  void close();
  bool closed() const { return closed_; }
  int fd() const;
  event::Dispatcher& dispatcher() { return dispatcher_; }
  // What the upstream pool that made this connection keeps with it: `token` (say, a
  // circuit-breaker unit) lives exactly as long as this object, and `created_at` starts
  // its life (max_connection_duration), `exchanges` counts its use
  // (max_requests_per_connection). On the heap: downstream connections, the many idle
  // ones, pay a pointer.
  void setPoolFacts(std::shared_ptr<void> token, std::chrono::steady_clock::time_point created_at) {
    pool_facts_ = std::make_unique<PoolFacts>(PoolFacts{std::move(token), created_at});
  }
  // The start of its life as its pool recorded it; {} when no pool made it.
  std::chrono::steady_clock::time_point createdAt() const {
    return pool_facts_ ? pool_facts_->created_at : std::chrono::steady_clock::time_point{};
  }
  // Counts one more exchange finished on it (max_requests_per_connection); the total so
  // far, 0 when no pool made it.
  uint32_t countExchange() { return pool_facts_ ? ++pool_facts_->exchanges : 0; }

  // Coalesced writes wait for the end of the turn while they add up to no more than this.
  static constexpr size_t kCoalescedBytes = 16 * 1024;

private:
  TcpConnection(event::Dispatcher& dispatcher, uv_tcp_t* handle);
  // Dispatcher::TurnEnd: the coalesced bytes go to the kernel now.
  void onTurnEnd() override;
  // Writes the coalesced bytes, then `more`, as far as the kernel takes them now; the
  // rest waits as queued writes do.
  void writeNow(std::string_view more);
  // Gives the coalescing buffer back and drops the turn-end registration.
  void releaseCoalesced();
  // Bytes the kernel did not take at once: to libuv's queue, or held for the tenant's share.
  void enqueue(std::string_view data);
  static void onAlloc(uv_handle_t* handle, size_t suggested, uv_buf_t* buf);
  // Dispatcher::lateInTurn: the read onAlloc left to the late part of the turn
  // (Scheduler::yieldsInTurn), made here as libuv would have made it.
  void readLate();
  // Over its share (readShare), the tenant stops reading until a round finds it within
  // its share again; otherwise (its part of this turn is spent) nothing changes.
  void waitForReadShare();
  // The socket is read while the owner wants it and no share wait is on.
  void applyReading();
  static void onRead(uv_stream_t* stream, ssize_t nread, const uv_buf_t* buf);
  void notifyClose(CloseReason reason);
  void deferCloseNotification(CloseReason reason);
  // Hands `data` to libuv as one write request (it completes in a later loop turn).
  void queueWrite(std::string data);
  void onQueuedWriteDone(size_t size, int status);
  // Shared writes: the next slice now (charged) or when the tenant is back within its share.
  void paceNextSlice();
  // Over its share: holds the bytes until a round finds the tenant within it again.
  bool holdForShare(const WorkShare& share);
  void sendSlice();
  void shutdownNow();
  // Guards callbacks posted to the loop; made on first need (most connections never post).
  std::weak_ptr<bool> aliveToken();
  struct ConnectRequest;  // a connect in progress and its callback

  event::Dispatcher& dispatcher_;
  uv_tcp_t* handle_;  // freed in the close callback, which may run after we are gone
  ConnectionCallbacks* callbacks_ = nullptr;
  ConnectRequest* connecting_ = nullptr;  // owned by libuv until its callback
  size_t queued_write_bytes_ = 0;
  // Writes waiting for the turn's end: a buffer from the thread's spares while there are any.
  std::string* coalesced_ = nullptr;
  // Shared writes (ConnectionCallbacks::writeShare): exists only while bytes wait.
  struct HeldWrites;
  std::unique_ptr<HeldWrites> held_;
  // Set while reads wait for the tenant's share (readShare); reading_ is what the owner wants.
  std::unique_ptr<event::Scheduler::Pause> read_share_wait_;
  bool reading_ = false;
  bool closed_ = false;
  bool close_notified_ = false;
  bool read_late_ = false;  // registered with Dispatcher::lateInTurn
  uint32_t turn_end_ticket_ = 0;  // valid while coalesced_ is set (packed beside the flags)
  std::shared_ptr<bool> alive_;  // see aliveToken()
  struct PoolFacts {
    std::shared_ptr<void> token;
    std::chrono::steady_clock::time_point created_at;
    uint32_t exchanges = 0;
  };
  std::unique_ptr<PoolFacts> pool_facts_;
};

}  // namespace culvert::network
