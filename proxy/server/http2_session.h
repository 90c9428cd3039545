#pragma once

#include <chrono>
#include <functional>
#include <memory>
#include <optional>
#include <string>

#include "proxy/common/owned_list.h"
#include "proxy/common/recycled.h"
#include "proxy/config/snapshot.h"
#include "proxy/event/dispatcher.h"
#include "proxy/http/http2/codec.h"
#include "proxy/network/connection.h"
#include "proxy/server/http1_session.h"
#include "proxy/server/pod.h"
#include "proxy/server/tenant_share.h"

namespace culvert::server {

// One downstream HTTP/2 connection through the HTTP connection manager and router: every
// stream is routed on its own (proxy/router) and its upstream half runs in a RouterStream
// (retries, timeouts, HTTP/1.1 or HTTP/2 upstreams as the cluster says), exactly as an
// HTTP/1.1 request's does. Bodies stream both ways; each side's flow-control window only
// reopens as the other side drains, so a slow reader holds the sender at its window.
class Http2Session : public network::ConnectionCallbacks,
                     public http::http2::CodecCallbacks,
                     public common::ListHook,
                     private event::Dispatcher::TurnEnd {
public:
  using OnDone = std::function<void(Http2Session*)>;

  Http2Session(WorkerServices services, std::shared_ptr<const Pod> pod,
               std::shared_ptr<const config::RouteConfiguration> routes,
               std::unique_ptr<network::TcpConnection> downstream, OnDone on_done);
  ~Http2Session() override;

  // Feeds bytes that were read before the session existed (protocol sniffing).
  void start(std::string_view initial_bytes = {});
  const Pod& pod() const { return *pod_; }
  void setOriginalDestination(std::optional<common::SocketAddress> destination) {
    original_destination_ = std::move(destination);
  }
  // The connection manager's stream timeouts (default: Envoy's).
  void setStreamTimeouts(const config::StreamTimeouts& timeouts) { stream_timeouts_ = timeouts; }
  // The connection manager's access logs; each stream is logged when it closes.
  void setAccessLogs(accesslog::SessionLogs logs);
  // The connection manager's common_http_protocol_options and drain_timeout; before start().
  void setConnectionLifetime(const config::ConnectionLifetime& lifetime, std::chrono::milliseconds drain_timeout) {
    lifetime_ = lifetime;
    drain_timeout_ = drain_timeout;
  }
  // Closes both sides now (pod removed, shutdown).
  void abort();

  // network::ConnectionCallbacks (downstream)
  void onData(std::string_view data) override;
  void onClose(network::CloseReason reason) override;
  void onWriteDrained() override { flush(); }
  network::WorkShare writeShare() const override { return tenantShare(services_.scheduler, *pod_->tenant); }
  network::WorkShare readShare() const override { return writeShare(); }

  // http2::CodecCallbacks (downstream)
  void onHeaders(int32_t id, http::HeaderMap&& headers, bool end_stream) override;
  void onData(int32_t id, std::string_view data) override;
  void onEndStream(int32_t id) override;
  void onTrailers(int32_t id, http::HeaderMap&& trailers) override;
  void onStreamClose(int32_t id, uint32_t error_code) override;
  void onStreamDrained(int32_t id) override;
  void onHeaderRejected(int32_t id, http::http2::HeaderRejectReason reason) override;

private:
  class Stream;
  friend class Stream;

  Stream* find(int32_t id);
  // Writes the codec's output while the socket keeps up.
  void flush();
  // What upstream events of one loop turn produce leaves in one write: the flush runs at
  // the turn's end (Dispatcher::TurnEnd), after its I/O callbacks or, when a timer asked,
  // before the loop waits again.
  void scheduleFlush();
  void onTurnEnd() override;
  void close();
  void countStatus(int status);
  // The tenant used its share of the worker while another tenant has work: read no more
  // until the scheduler's next round.
  void pauseIfOverShare();

  // The connection's lifetime, as Envoy's connection manager drains it: idle_timeout
  // (no stream open) and max_connection_duration start a drain; the shutdown notice goes
  // out at once, the final GOAWAY drain_timeout later; the connection closes once that
  // is out and the streams it admitted are done.
  void armConnectionIdleTimer();
  void onConnectionIdleTimeout();
  void onMaxConnectionDuration();
  void startDrain();
  void onDrainTimeout();

  WorkerServices services_;
  std::shared_ptr<const Pod> pod_;
  std::shared_ptr<const config::RouteConfiguration> routes_;
  std::optional<common::SocketAddress> original_destination_;
  config::StreamTimeouts stream_timeouts_;
  std::unique_ptr<network::TcpConnection> downstream_;
  OnDone on_done_;
  http::http2::Codec codec_;
  common::RecyclingHashMap<int32_t, std::unique_ptr<Stream>> streams_;
  std::string out_;
  bool in_codec_ = false;     // inside nghttp2: output is taken after it returns
  bool flush_pending_ = false;
  bool flush_scheduled_ = false;
  uint32_t flush_ticket_ = 0;  // Dispatcher::atTurnEnd's, while flush_scheduled_
  bool closed_ = false;
  config::ConnectionLifetime lifetime_;
  std::chrono::milliseconds drain_timeout_{5000};
  bool draining_ = false;  // the shutdown notice went out
  uint32_t streams_begun_ = 0;  // for max_requests_per_connection
  std::unique_ptr<event::Timer> cx_idle_timer_;  // runs while no stream is open
  std::unique_ptr<event::Timer> cx_max_duration_timer_;
  std::unique_ptr<event::Timer> drain_timer_;
  std::unique_ptr<event::Timer> delayed_close_timer_;  // finished, output still queued
  std::unique_ptr<event::Scheduler::Pause> share_pause_;
  std::string held_;  // bytes read while the tenant was over its share, parsed at the resume
  accesslog::SessionLogs access_logs_;
  ConnectionLogFacts log_facts_;
  common::Counter& streams_total_;
  common::Gauge& cx_active_;
};

}  // namespace culvert::server
