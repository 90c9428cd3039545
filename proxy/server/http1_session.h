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
#include "proxy/server/http2_upstream_bridge.h"
#include "proxy/router/retry_state.h"
#include "proxy/server/access_log_record.h"
#include "proxy/server/pod.h"
#include "proxy/server/tunnel.h"
#include "proxy/upstream/cluster_manager.h"
#include "proxy/upstream/connection_pool.h"
#include "proxy/upstream/http2_pool.h"

namespace culvert::server {

// What a session borrows from the worker it runs on.
struct WorkerServices {
  common::StatsStore& stats;
  event::Dispatcher& dispatcher;
  event::Scheduler& scheduler;
  upstream::ClusterManager& clusters;
  upstream::ConnectionPool& pool;
  router::RetryResourceRegistry& retry_resources;  // per-cluster retry circuit breakers
  upstream::Http2Pool* http2_pool = nullptr;  // upstream HTTP/2 connections (multiplexed)
  accesslog::LogManager* access_logs = nullptr;  // access-log files; null = none
  uint32_t worker_index = 0;
};

// One downstream HTTP/1.1 connection through the HTTP connection manager and router:
// requests are parsed, routed and forwarded one at a time (pipelined requests wait in
// the kernel and in one pending buffer), responses stream back as they arrive.
class Http1Session : public network::ConnectionCallbacks, public http::http1::ParserCallbacks {
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

private:
  class UpstreamExchange;
  friend class UpstreamExchange;
  friend class Http2UpstreamBridge;

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
  // The tenant's budgets (proxy/tenant): admission of a new request, bytes held.
  bool admitRequest();
  void chargeBuffered();
  void pauseIfOverShare();  // the worker's fair share between tenants
  void pauseUpstreamIfOverShare();
  // Retries (proxy/router/retry_state.h): one upstream attempt of the request in flight.
  void startAttempt();
  // Request bytes for the upstream: written, or held until it is connected, and kept for
  // a replay while a retry is still possible.
  void sendRequestBytes(std::string_view bytes);
  void onAttemptFailed(router::AttemptFailure failure, const std::string& reason);
  // True when the decision was to retry and the retry is scheduled.
  bool scheduleRetry(router::RetryState::Decision decision);
  void abandonAttempt();
  void armPerTryTimers();
  void onPerTryTimeout(bool idle);
  void onUpstreamActivity();
  void endRequest();
  // Downstream stream timeouts: request_headers_timeout, request_timeout, stream idle.
  enum class StreamTimeout { Headers, Request, Idle, MaxDuration };
  void beginStreamTimers();
  void armStreamTimer(std::unique_ptr<event::Timer>& timer, std::chrono::milliseconds after, StreamTimeout kind);
  void onStreamTimeout(StreamTimeout kind);
  void sendTimeoutReply();
  void onUpstreamReady(common::Result<std::unique_ptr<network::TcpConnection>> connection);
  void onResponseHead(http::ResponseHead& head);
  void onResponseBody(std::string_view data);
  void onResponseComplete(bool upstream_reusable);
  void flushResponse();
  void onUpstreamFailed(const std::string& reason, bool response_started);
  void finishExchange();
  void countStatus(int status);
  void recordDuration();
  void logRequest();
  void updateDownstreamReading();
  void onRouteTimeout();
  void reportAttempt(const upstream::AttemptOutcome& outcome);
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
  http::http1::BodyFraming request_framing_ = http::http1::BodyFraming::None;
  bool request_complete_ = false;
  bool in_exchange_ = false;
  bool discard_body_ = false;  // answered locally; the rest of the request body is dropped
  std::string upstream_pending_;  // request bytes waiting for the upstream connection
  std::unique_ptr<upstream::PendingConnection> connecting_;
  std::unique_ptr<UpstreamExchange> upstream_;
  std::unique_ptr<Http2UpstreamBridge> h2_upstream_;  // instead of upstream_ for an HTTP/2 cluster
  upstream::PoolKey pool_key_;
  // Upstream selection and protection for the request in flight: its active-request
  // unit, its pending unit while connecting, and what the attempt is reported against.
  upstream::ActiveRequest upstream_request_;  // the pick, counted for LEAST_REQUEST and max_requests
  upstream::ResourceHold pending_unit_;
  std::string attempt_cluster_;
  common::SocketAddress attempt_endpoint_;
  std::chrono::steady_clock::time_point attempt_started_;
  bool attempt_reported_ = false;
  std::chrono::milliseconds route_timeout_{0};  // the matched route's; 0 = none
  std::unique_ptr<event::Timer> route_timer_;   // made on first use, reused per request
  const config::RouteAction* action_ = nullptr;  // the matched route's (routes_ keeps it)
  std::optional<router::RetryResources::ActiveRequest> retry_budget_request_;
  std::unique_ptr<router::RetryState> retry_;  // only when the route has a retry_policy
  std::string replay_;  // request bytes so far, while a retry may replay them
  size_t replay_head_bytes_ = 0;
  std::shared_ptr<router::RetryResources> retry_resources_;  // of retry_resources_cluster_
  std::string retry_resources_cluster_;
  std::unique_ptr<event::Timer> per_try_timer_;
  std::unique_ptr<event::Timer> per_try_idle_timer_;
  std::unique_ptr<event::Timer> back_off_timer_;
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
  std::unique_ptr<event::Scheduler::Pause> upstream_share_pause_;  // the same, for response reads

  // Access log: the request in flight's record (filled only when logs are configured).
  accesslog::SessionLogs access_logs_;
  ConnectionLogFacts log_facts_;
  accesslog::StreamInfo log_;
};

}  // namespace culvert::server
