#pragma once

#include <functional>
#include <memory>
#include <string>

#include "proxy/accesslog/access_log.h"
#include "proxy/accesslog/stream_info.h"
#include "proxy/common/owned_list.h"
#include "proxy/common/recycled.h"
#include "proxy/config/snapshot.h"
#include "proxy/event/scheduler.h"
#include "proxy/event/timer_queue.h"
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
#include "proxy/server/tenant_share.h"

namespace culvert::server {

// The connection manager's settings an HTTP/1.1 session follows. Immutable and shared:
// the worker makes one per filter chain of its configuration, so an idle connection holds
// a pointer to them, not its own copy.
struct Http1Settings {
  std::shared_ptr<const config::RouteConfiguration> routes;  // the chain's (inline or RDS)
  config::StreamTimeouts stream_timeouts;  // default: Envoy's
  config::ConnectionLifetime lifetime;     // common_http_protocol_options
  std::vector<config::UpgradeConfig> upgrade_configs;  // WebSocket, CONNECT: see tunnel.h
  accesslog::SessionLogs access_logs;      // each request is logged when it ends
};

// One downstream HTTP/1.1 connection through the HTTP connection manager and router:
// requests are parsed, routed and forwarded one at a time (pipelined requests wait in
// the kernel and in one pending buffer), responses stream back as they arrive. The
// upstream half of each request (attempts, retries, upstream timeouts) is a RouterStream.
//
// Memory: an idle keep-alive connection costs only this object (the socket, the pod,
// its filter chain's shared settings and routes, the idle-timeout bookkeeping on the
// worker's shared TimerQueue, the links of the worker's session list) plus the
// TcpConnection and its libuv handle. Everything a request needs — its parser,
// head, route decision, RouterStream, stream timers, response staging, access-log record,
// tunnel — is an Exchange, made at the request's first byte and freed when it ends.
class Http1Session : public network::ConnectionCallbacks, public common::ListHook {
public:
  // Told when the session is done (closed); it may then be deleted, after the callback.
  class Owner {
  public:
    virtual void onSessionDone(Http1Session* session) = 0;

  protected:
    ~Owner() = default;
  };

  // `services` and `owner` must outlive the session (the worker's); `settings` are its
  // filter chain's, shared.
  Http1Session(WorkerServices& services, std::shared_ptr<const Pod> pod, std::shared_ptr<const Http1Settings> settings,
               std::unique_ptr<network::TcpConnection> downstream, Owner& owner);
  ~Http1Session() override;

  // Feeds bytes that were read before the session existed (protocol sniffing).
  void start(std::string_view initial_bytes = {});
  const Pod& pod() const { return *pod_; }
  // Where a captured connection was going: the endpoint of ORIGINAL_DST clusters (and
  // the access log's). Before start().
  void setOriginalDestination(std::optional<common::SocketAddress> destination) {
    original_destination_ = std::move(destination);
  }
  // Closes both sides now (pod removed, shutdown).
  void abort();
  // Whether a request is in flight (its Exchange exists). For tests and stats.
  bool hasExchange() const { return exchange_ != nullptr; }

  // ConnectionCallbacks (downstream)
  void onData(std::string_view data) override;
  void onClose(network::CloseReason reason) override;
  void onWriteDrained() override;
  network::WorkShare writeShare() const override { return tenantShare(services_.scheduler, *pod_->tenant); }
  network::WorkShare readShare() const override { return writeShare(); }

private:
  struct Exchange;

  // ParserCallbacks (downstream request parser), reached through the Exchange.
  void onRequestHead(http::RequestHead&& head);
  void onBody(std::string_view data);
  void onMessageComplete();

  // RouterStream::Downstream (the request in flight's response), reached through the Exchange.
  void onUpstreamHead(http::ResponseHead& head, bool end_stream);
  void onUpstreamData(std::string_view data);
  void onUpstreamEnd(const http::HeaderMap& trailers);
  void onRouterReply(const RouterReply& reply);
  void onResponseAborted();
  void onUpstreamActivity();

  void feed(std::string_view data);
  // The connection's lifetime (common_http_protocol_options).
  void armConnectionIdleTimer();
  void onConnectionIdleTimeout();
  void onMaxConnectionDuration();
  void routeRequest();
  // An Upgrade or CONNECT request: refused (403), answered locally, or handed to a Tunnel.
  void startUpgrade(const std::string& type);
  Tunnel::Hooks tunnelHooks(const std::string& type);
  bool tunnelOpen() const;
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
  void armStreamTimer(event::QueuedTimer& timer, std::chrono::milliseconds after);
  void onStreamTimeout(StreamTimeout kind);
  void flushResponse();
  void finishExchange();
  void countStatus(int status);
  void recordDuration();
  void logRequest();
  void updateDownstreamReading();
  void updateUpstreamReading();
  void close();

  WorkerServices& services_;
  std::shared_ptr<const Pod> pod_;
  std::optional<common::SocketAddress> original_destination_;
  std::unique_ptr<network::TcpConnection> downstream_;
  Owner& owner_;
  std::shared_ptr<const Http1Settings> settings_;

  // The connection's own lifetime: closed when idle too long, drained when too old.
  event::QueuedTimer cx_idle_timer_;  // runs while no request is in flight
  std::unique_ptr<event::QueuedTimer> cx_max_duration_timer_;  // only with max_connection_duration
  std::unique_ptr<ConnectionLogFacts> log_facts_;  // only when access logs are configured

  // Bytes read while the parser waited (pipelining) or the tenant was over its share;
  // on the heap, so the usual connection, which has none, pays a pointer.
  class PendingBytes {
  public:
    void append(std::string_view data) {
      if (data.empty()) return;
      if (!bytes_) bytes_ = std::make_unique<std::string>();
      bytes_->append(data);
    }
    size_t size() const { return bytes_ ? bytes_->size() : 0; }
    bool empty() const { return size() == 0; }
    std::string take() {
      std::string out = bytes_ ? std::move(*bytes_) : std::string();
      bytes_.reset();
      return out;
    }

  private:
    std::unique_ptr<std::string> bytes_;
  };
  PendingBytes downstream_pending_;
  tenant::BufferCharge buffered_;     // what this connection holds, charged to its tenant
  std::unique_ptr<event::Scheduler::Pause> share_pause_;  // set while the tenant is over its share

  // The request in flight; null while the connection is idle.
  std::unique_ptr<Exchange> exchange_;

  // Bit-fields: every session keeps them while its connection is open.
  bool request_begun_ : 1 = false;  // a request's first byte arrived
  bool in_exchange_ : 1 = false;    // its head arrived, its answer is not finished
  bool request_complete_ : 1 = false;
  bool discard_body_ : 1 = false;  // answered already; the rest of the request body is dropped
  bool response_started_ : 1 = false;
  bool close_after_response_ : 1 = false;
  bool draining_ : 1 = false;  // past max_connection_duration or max_requests: the request in flight is the last
  bool parser_inside_dispatch_ : 1 = false;
  bool tunnel_log_pending_ : 1 = false;  // the open tunnel's access-log line, written when it ends
  bool closed_ : 1 = false;
  uint32_t requests_ = 0;  // requests begun, counted only under max_requests_per_connection
};

// What one request needs while it is in flight (see Http1Session). It is the parser's
// and the RouterStream's callback target and forwards to the session. One is made and
// freed per request: at ~1.7 KB it is past glibc's per-thread cache, so a worker reuses
// the freed blocks (common/recycled.h) of as many as 64 keep-alive clients' exchanges.
struct Http1Session::Exchange final : http::http1::ParserCallbacks,
                                      RouterStream::Downstream,
                                      common::Recycled<Http1Session::Exchange, 64> {
  explicit Exchange(Http1Session& session);
  ~Exchange() override;

  // ParserCallbacks
  void onRequestHead(http::RequestHead&& head) override { session.onRequestHead(std::move(head)); }
  void onBody(std::string_view data) override { session.onBody(data); }
  void onMessageComplete() override { session.onMessageComplete(); }
  // RouterStream::Downstream
  void onUpstreamHead(http::ResponseHead& head, bool end_stream) override { session.onUpstreamHead(head, end_stream); }
  void onUpstreamData(std::string_view data) override { session.onUpstreamData(data); }
  void onUpstreamEnd(const http::HeaderMap& trailers) override { session.onUpstreamEnd(trailers); }
  void onUpstreamReadDone() override { session.flushResponse(); }
  void onRouterReply(const RouterReply& reply) override { session.onRouterReply(reply); }
  void onResponseAborted() override { session.onResponseAborted(); }
  void onRequestWritable() override { session.updateDownstreamReading(); }
  void onUpstreamActivity() override { session.onUpstreamActivity(); }

  Http1Session& session;
  http::http1::Parser parser;
  http::RequestHead request;
  router::RouteDecision decision;
  std::chrono::steady_clock::time_point request_start{};  // {}: recorded already, or none
  const config::RouteAction* action = nullptr;  // the matched route's (routes_ keeps it)
  // Access log: the request's record (filled only when logs are configured); the router
  // records into it, so it outlives the router.
  accesslog::StreamInfo log;
  std::optional<RouterStream> router;           // the request's upstream half
  std::chrono::milliseconds stream_idle{0};     // the connection manager's, or the route's
  event::QueuedTimer headers_timer;
  event::QueuedTimer request_timer;
  event::QueuedTimer stream_idle_timer;
  event::QueuedTimer max_duration_timer;  // the route's max_stream_duration / grpc-timeout
  // The response in flight.
  http::http1::BodyFraming response_framing = http::http1::BodyFraming::None;
  std::string response_out;  // response bytes of the current upstream read, not yet written
  tenant::RequestSlot request_slot;  // the request's slot in its tenant's budget
  // An upgrade: its endpoint pick and tunnel, for the tunnel's life (the connection ends with it).
  upstream::ActiveRequest tunnel_pick;
  std::unique_ptr<Tunnel> tunnel;
  common::Gauge* tunnels_active = nullptr;  // set while the tunnel is open
};

}  // namespace culvert::server
