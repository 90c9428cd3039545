#pragma once

#include <chrono>
#include <functional>
#include <memory>
#include <string>

#include "proxy/event/dispatcher.h"
#include "proxy/event/scheduler.h"
#include "proxy/http/http1/encoder.h"
#include "proxy/http/http1/parser.h"
#include "proxy/network/connection.h"
#include "proxy/tenant/tenant_context.h"
#include "proxy/upstream/connection_pool.h"

namespace culvert::server {

// The upgraded part of an HTTP/1.1 stream: a WebSocket (or other Upgrade) after its 101,
// a CONNECT after its 2xx. It makes its own upstream connection (never pooled: after an
// upgrade the connection is no longer HTTP), forwards the request head when the upgrade
// is forwarded, and once the upgrade succeeds takes the downstream connection over and
// moves bytes both ways with back-pressure, half-close passed on and an idle timeout.
//
// Until then the downstream connection stays with the session (which keeps bytes the
// client sent after the request head); a refused upgrade's response is relayed as an
// ordinary response, after which the session closes the connection.
class Tunnel {
public:
  enum class Mode {
    ForwardUpgrade,    // send the request upstream; tunnel on 101
    ForwardConnect,    // send the CONNECT upstream; tunnel on 2xx
    TerminateConnect,  // no request upstream: answer 200 downstream once connected
  };

  // What the tunnel needs from the session that owns the downstream connection.
  struct Hooks {
    // Route response header mutations and status counting, on the head going downstream.
    std::function<void(http::ResponseHead&)> shape_response;
    // Downstream bytes read after the request head (the first tunnel payload).
    std::function<std::string()> take_early_bytes;
    // The upstream could not be reached: the session answers 503 (no byte went downstream).
    std::function<void(const std::string& reason)> on_connect_failed;
    // The tunnel is open: the session stops its own timers and reads.
    std::function<void()> on_open;
    // A refused upgrade's response went downstream in full: the session closes once written.
    std::function<void()> on_response_relayed;
    // The tunnel ended (either side closed, idle timeout, upstream error): close both.
    std::function<void()> on_done;
    // A timeout before anything went downstream: the session answers (408 idle, 504 duration).
    std::function<void(bool idle)> on_timeout_before_response;
  };

  struct Options {
    Mode mode = Mode::ForwardUpgrade;
    std::string request_head;  // the encoded request for the upstream (Forward modes)
    std::chrono::milliseconds idle_timeout{0};  // 0 = none
    std::chrono::milliseconds max_duration{0};  // the route's max_stream_duration; 0 = none
  };

  Tunnel(event::Dispatcher& dispatcher, event::Scheduler& scheduler, tenant::TenantContext& tenant,
         network::TcpConnection& downstream, Options options, Hooks hooks);
  ~Tunnel();
  Tunnel(const Tunnel&) = delete;
  Tunnel& operator=(const Tunnel&) = delete;

  void start(upstream::ConnectionPool& pool, const upstream::ConnectRequest& request);
  bool open() const { return phase_ == Phase::Open; }
  // The session is closing: drop the upstream side, call no hook any more.
  void abort();
  // The client half-closed before the tunnel opened: its FIN is passed on once it is.
  // false: too late or too early to matter (the session closes).
  bool downstreamEnded();
  // Payload bytes relayed once open (the access log's BYTES_RECEIVED / BYTES_SENT).
  uint64_t bytesFromDownstream() const { return bytes_from_downstream_; }
  uint64_t bytesToDownstream() const { return bytes_to_downstream_; }

  // Back-pressure: a side stops reading while the other side has more than this queued
  // in user space, and resumes once that queue has drained into the kernel.
  static constexpr size_t kWriteHighWatermark = 256 * 1024;

private:
  class Side;
  class ResponseReader;
  enum class Phase { Connecting, AwaitingResponse, RelayingResponse, Open, Done };

  void onConnected(common::Result<std::unique_ptr<network::TcpConnection>> connection);
  void onUpstreamHandshakeData(std::string_view data);
  void onResponseHead(http::ResponseHead&& head);
  void openTunnel(std::string_view upstream_early_bytes);
  void onSideData(Side& from, std::string_view data);
  void onSideEof(Side& from);
  void onSideDrained();
  void updateReading();
  // Over the tenant's share of the worker: neither side reads until the next round.
  void pauseIfOverShare();
  void touch();
  void onTimeout(bool idle);
  void finish();

  event::Dispatcher& dispatcher_;
  event::Scheduler& scheduler_;
  tenant::TenantContext& tenant_;
  network::TcpConnection& downstream_connection_;
  Options options_;
  Hooks hooks_;
  uint64_t bytes_from_downstream_ = 0;
  uint64_t bytes_to_downstream_ = 0;
  Phase phase_ = Phase::Connecting;
  std::unique_ptr<upstream::PendingConnection> connecting_;
  std::unique_ptr<Side> upstream_;
  std::unique_ptr<Side> downstream_;  // set once open
  std::unique_ptr<ResponseReader> response_;
  http::http1::BodyFraming relay_framing_ = http::http1::BodyFraming::None;
  std::unique_ptr<event::Timer> idle_timer_;
  std::unique_ptr<event::Timer> max_duration_timer_;
  std::unique_ptr<event::Scheduler::Pause> share_pause_;
  bool downstream_ended_early_ = false;
  tenant::BufferCharge buffered_;
};

}  // namespace culvert::server
