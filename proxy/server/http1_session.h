#pragma once

#include <functional>
#include <memory>
#include <string>

#include "proxy/accesslog/access_log.h"
#include "proxy/accesslog/stream_info.h"
#include "proxy/config/snapshot.h"
#include "proxy/event/scheduler.h"
#include "proxy/http/http1/encoder.h"
#include "proxy/http/http1/parser.h"
#include "proxy/network/connection.h"
#include "proxy/router/router.h"
#include "proxy/router/retry_state.h"
#include "proxy/server/access_log_record.h"
#include "proxy/server/pod.h"
#include "proxy/server/router_stream.h"
#include "proxy/server/tunnel.h"
#include "proxy/server/upstream_request.h"
#include "proxy/upstream/cluster_manager.h"
#include "proxy/upstream/connection_pool.h"
#include "proxy/upstream/http2_pool.h"
#include "proxy/server/worker_services.h"

namespace culvert::server {

// One downstream HTTP/1.1 connection through the HTTP connection manager and router:
// requests are parsed, routed and forwarded one at a time (pipelined requests wait in
// the kernel and in one pending buffer), responses stream back as they arrive. The
// upstream half of each request (attempts, retries, upstream timeouts) is a RouterStream.
class Http1Session : public network::ConnectionCallbacks,
                     public http::http1::ParserCallbacks,
                     public RouterStream::Downstream {
public:
  using OnDone = std::function<void(Http1Session*)>;

  Http1Session(WorkerServices services, std::shared_ptr<const Pod> pod,
               std::shared_ptr<const config::RouteConfiguration> routes,
               std::unique_ptr<network::TcpConnection> downstream, OnDone on_done);
  ~Http1Session() override;

  // Feeds bytes that were read before the session existed (protocol sniffing).
  void start(std::string_view initial_bytes = {});
  const Pod& pod() const { return *pod_; }
  // Where a captured connection was going: the endpoint of ORIGINAL_DST clusters.
  void setOriginalDestination(std::optional<common::SocketAddress> destination) {
    original_destination_ = std::move(destination);
  }
  // The connection manager's stream timeouts (default: Envoy's).
  void setStreamTimeouts(const config::StreamTimeouts& timeouts) { stream_timeouts_ = timeouts; }
  // The connection manager's common_http_protocol_options (default: Envoy's); before start().
  void setConnectionLifetime(const config::ConnectionLifetime& lifetime) { lifetime_ = lifetime; }
  // The connection manager's access logs; each request is logged when it ends.
  void setAccessLogs(accesslog::SessionLogs logs);
  // The connection manager's upgrade_configs (WebSocket, CONNECT): see proxy/server/tunnel.h.
  void setUpgradeConfigs(std::vector<config::UpgradeConfig> configs) { upgrade_configs_ = std::move(configs); }
  // Closes both sides now (pod removed, shutdown).
  void abort();

  // ConnectionCallbacks (downstream)
  void onData(std::string_view data) override;
  void onClose(network::CloseReason reason) override;
  void onWriteDrained() override;

  // ParserCallbacks (downstream request parser)
  void onRequestHead(http::RequestHead&& head) override;
  void onBody(std::string_view data) override;
  void onMessageComplete() override;

  // RouterStream::Downstream (the request in flight's response)
  void onUpstreamHead(http::ResponseHead& head, bool end_stream) override;
  void onUpstreamData(std::string_view data) override;
  void onUpstreamEnd(const http::HeaderMap& trailers) override;
  void onUpstreamReadDone() override { flushResponse(); }
  void onRouterReply(const RouterReply& reply) override;
  void onResponseAborted() override;
  void onRequestWritable() override { updateDownstreamReading(); }
  void onUpstreamActivity() override;

private:
  void feed(std::string_view data);
  // The connection's lifetime (common_http_protocol_options).
  void armConnectionIdleTimer();
  void onConnectionIdleTimeout();
  void onMaxConnectionDuration();
  void routeRequest();
  // An Upgrade or CONNECT request: refused (403), answered locally, or handed to a Tunnel.
  void startUpgrade(const std::string& type);
  Tunnel::Hooks tunnelHooks(const std::string& type);
  bool tunnelOpen() const { return tunnel_ && tunnel_->open(); }
  void sendLocalReply(int status, std::string_view body, const http::HeaderMap* extra_headers = nullptr);
  // DEADLINE_EXCEEDED as a trailers-only response, a gRPC request's timeout.
  void sendGrpcDeadlineExceeded();
  // The tenant's budgets (proxy/tenant): admission of a new request, bytes held.
  bool admitRequest();
  void chargeBuffered();
  void pauseIfOverShare();  // the worker's fair share between tenants
  // The request is over (answered, timed out, or the connection ends): its router and
  // timers stop.
  void endRequest();
  // Downstream stream timeouts: request_headers_timeout, request_timeout, stream idle.
  void beginStreamTimers();
  void armStreamTimer(std::unique_ptr<event::Timer>& timer, std::chrono::milliseconds after, StreamTimeout kind);
  void onStreamTimeout(StreamTimeout kind);
  void flushResponse();
  void finishExchange();
  void countStatus(int status);
  void recordDuration();
  void logRequest();
  void updateDownstreamReading();
  void updateUpstreamReading();
  void close();

  WorkerServices services_;
  std::shared_ptr<const Pod> pod_;
  std::shared_ptr<const config::RouteConfiguration> routes_;
  std::optional<common::SocketAddress> original_destination_;
  std::unique_ptr<network::TcpConnection> downstream_;
  OnDone on_done_;
  http::http1::Parser parser_;

  // The request in flight.
  http::RequestHead request_;
  router::RouteDecision decision_;
  std::chrono::steady_clock::time_point request_start_{};  // {}: recorded already, or none
  bool request_complete_ = false;
  bool in_exchange_ = false;
  bool discard_body_ = false;  // answered already; the rest of the request body is dropped
  // The request's upstream half; made for the first request, started again for each.
  std::optional<RouterStream> router_;
  const config::RouteAction* action_ = nullptr;  // the matched route's (routes_ keeps it)
  upstream::ActiveRequest tunnel_pick_;  // an upgrade's endpoint pick, for the tunnel's life
  config::StreamTimeouts stream_timeouts_;
  std::chrono::milliseconds stream_idle_{0};  // the connection manager's, or the route's
  bool request_begun_ = false;                // a request's first byte arrived
  std::unique_ptr<event::Timer> headers_timer_;
  std::unique_ptr<event::Timer> request_timer_;
  std::unique_ptr<event::Timer> stream_idle_timer_;
  std::unique_ptr<event::Timer> max_duration_timer_;  // the route's max_stream_duration / grpc-timeout

  // The connection's own lifetime: closed when idle too long, drained when too old.
  config::ConnectionLifetime lifetime_;
  std::unique_ptr<event::Timer> cx_idle_timer_;  // runs while no request is in flight
  std::unique_ptr<event::Timer> cx_max_duration_timer_;
  bool draining_ = false;  // past max_connection_duration: the request in flight is the last

  // The response in flight.
  http::http1::BodyFraming response_framing_ = http::http1::BodyFraming::None;
  bool response_started_ = false;
  bool close_after_response_ = false;
  std::string response_out_;  // response bytes of the current upstream read, not yet written

  std::string downstream_pending_;  // bytes read while the parser waited (pipelining)
  bool parser_inside_dispatch_ = false;
  bool closed_ = false;

  std::vector<config::UpgradeConfig> upgrade_configs_;
  std::unique_ptr<Tunnel> tunnel_;  // an upgrade in progress or open
  bool tunnel_log_pending_ = false;  // the open tunnel's access-log line, written when it ends
  common::Gauge* tunnels_active_ = nullptr;  // set while this connection's tunnel is open

  tenant::RequestSlot request_slot_;  // the in-flight request's slot in its tenant's budget
  tenant::BufferCharge buffered_;     // what this connection holds, charged to its tenant
  std::unique_ptr<event::Scheduler::Pause> share_pause_;  // set while the tenant is over its share

  // Access log: the request in flight's record (filled only when logs are configured).
  accesslog::SessionLogs access_logs_;
  ConnectionLogFacts log_facts_;
  accesslog::StreamInfo log_;
};

}  // namespace culvert::server
