#pragma once

#include <functional>
#include <memory>
#include <string>

#include "proxy/config/snapshot.h"
#include "proxy/event/scheduler.h"
#include "proxy/http/http1/encoder.h"
#include "proxy/http/http1/parser.h"
#include "proxy/network/connection.h"
#include "proxy/server/pod.h"
#include "proxy/upstream/cluster_manager.h"
#include "proxy/upstream/connection_pool.h"

namespace culvert::server {

// What a session borrows from the worker it runs on.
struct WorkerServices {
  common::StatsStore& stats;
  event::Dispatcher& dispatcher;
  event::Scheduler& scheduler;
  upstream::ClusterManager& clusters;
  upstream::ConnectionPool& pool;
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

  void feed(std::string_view data);
  void routeRequest();
  void sendLocalReply(int status, std::string_view body);
  void onUpstreamReady(common::Result<std::unique_ptr<network::TcpConnection>> connection);
  void onResponseHead(http::ResponseHead& head);
  void onResponseBody(std::string_view data);
  void onResponseComplete(bool upstream_reusable);
  void flushResponse();
  void onUpstreamFailed(const std::string& reason, bool response_started);
  void finishExchange();
  void countStatus(int status);
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
  http::http1::BodyFraming request_framing_ = http::http1::BodyFraming::None;
  bool request_complete_ = false;
  bool in_exchange_ = false;
  bool discard_body_ = false;  // answered locally; the rest of the request body is dropped
  std::string upstream_pending_;  // request bytes waiting for the upstream connection
  std::unique_ptr<upstream::PendingConnection> connecting_;
  std::unique_ptr<UpstreamExchange> upstream_;
  upstream::PoolKey pool_key_;
  // Upstream selection and protection for the request in flight: its active-request
  // unit, its pending unit while connecting, and what the attempt is reported against.
  upstream::ActiveRequest active_request_;
  upstream::ResourceHold pending_unit_;
  std::string attempt_cluster_;
  common::SocketAddress attempt_endpoint_;
  std::chrono::steady_clock::time_point attempt_started_;
  bool attempt_reported_ = false;
  std::chrono::milliseconds route_timeout_{0};  // the matched route's; 0 = none
  std::unique_ptr<event::Timer> route_timer_;   // made on first use, reused per request

  // The response in flight.
  http::http1::BodyFraming response_framing_ = http::http1::BodyFraming::None;
  bool response_started_ = false;
  bool close_after_response_ = false;
  std::string response_out_;  // response bytes of the current upstream read, not yet written

  std::string downstream_pending_;  // bytes read while the parser waited (pipelining)
  bool parser_inside_dispatch_ = false;
  bool closed_ = false;
};

}  // namespace culvert::server
