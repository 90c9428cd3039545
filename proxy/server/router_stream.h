#pragma once

#include <chrono>
#include <memory>
#include <optional>
#include <string>
#include <string_view>
#include <vector>

#include "proxy/accesslog/stream_info.h"
#include "proxy/common/recycled.h"
#include "proxy/config/snapshot.h"
#include "proxy/event/timer_queue.h"
#include "proxy/router/retry_state.h"
#include "proxy/router/router.h"
#include "proxy/server/pod.h"
#include "proxy/server/upstream_attempt.h"
#include "proxy/upstream/cluster_manager.h"

namespace culvert::server {

struct WorkerServices;

// What the router answers itself instead of an upstream response.
struct RouterReply {
  int status = 503;
  std::string body;
  // A gRPC request's timeout: DEADLINE_EXCEEDED as a trailers-only response (HTTP 200
  // with grpc-status 4), what a gRPC client understands; Envoy answers the same.
  bool grpc_deadline_exceeded = false;
};

// The router half of one request, the same for HTTP/1.1 and HTTP/2 clients (Envoy's router
// filter): from a routed request to an upstream response. It picks the endpoint (hash
// policy, previous hosts), holds the cluster's circuit breakers, runs upstream attempts over
// HTTP/1.1 or HTTP/2 as the cluster says, retries and hedges under the route's retry policy
// (replaying the body from a bounded buffer), applies the route and per-try timeouts and
// reports each attempt to outlier detection. The session owns the downstream codec: it
// feeds the request in and takes the response back through Downstream.
class RouterStream : public AttemptCallbacks {
public:
  class Downstream {
  public:
    virtual ~Downstream() = default;
    virtual void onUpstreamHead(http::ResponseHead& head, bool end_stream) = 0;
    virtual void onUpstreamData(std::string_view data) = 0;
    virtual void onUpstreamEnd(const http::HeaderMap& trailers) = 0;
    // An upstream read was handled: what it produced may go out in one write.
    virtual void onUpstreamReadDone() {}
    // No upstream response will come: the router answers this instead.
    virtual void onRouterReply(const RouterReply& reply) = 0;
    // The upstream failed or timed out after the response began: all that is left is to
    // reset the stream (HTTP/2) or close the connection (HTTP/1.1).
    virtual void onResponseAborted() = 0;
    // The upstream took request bytes (or a new attempt is connected): read more.
    virtual void onRequestWritable() = 0;
    // A byte came from the upstream (the stream idle timeout).
    virtual void onUpstreamActivity() {}
  };

  // `request` (as the upstream sees it), `pod` and `log` must outlive the stream.
  // `te_trailers`: the client asked for trailers (gRPC), kept for HTTP/2 upstreams.
  RouterStream(WorkerServices& services, const Pod& pod, Downstream& downstream, accesslog::StreamInfo& log,
               const http::RequestHead& request, bool te_trailers,
               const std::optional<common::SocketAddress>& original_destination);
  ~RouterStream() override;
  RouterStream(const RouterStream&) = delete;
  RouterStream& operator=(const RouterStream&) = delete;

  // Starts the first attempt for a routed request (decision.route has a route action). A
  // stream may be started again for the next request once the last one is finished: every
  // call into the session is the router's last step, so the session may do that from
  // inside one. `decision` must live until the request is finished.
  void start(const router::RouteDecision& decision, bool request_ended);
  // Request body, raw (not chunk-encoded), and its end.
  void sendData(std::string_view data);
  void end(const http::HeaderMap& trailers = {});

  // Whether the client's reading may go on: no retry waits and the upstream keeps up.
  bool acceptsRequestData() const;
  // Request bytes held in user space (the tenant's buffered-bytes budget).
  size_t queuedRequestBytes() const;
  // Whether the response may flow (the client keeps up).
  void setResponseFlow(bool open);
  // Stops everything now (a downstream timeout, reset or close): no callback follows.
  void cancel();
  bool responseStarted() const { return response_started_; }
  bool finished() const { return finished_; }

  // AttemptCallbacks
  void onAttemptConnected(UpstreamAttempt& attempt) override;
  void onAttemptHead(UpstreamAttempt& attempt, http::ResponseHead&& head, bool end_stream) override;
  void onAttemptData(UpstreamAttempt& attempt, std::string_view data) override;
  void onAttemptReadDone(UpstreamAttempt& attempt) override;
  void onAttemptEnd(UpstreamAttempt& attempt, http::HeaderMap&& trailers) override;
  void onAttemptFailed(UpstreamAttempt& attempt, router::AttemptFailure failure, const std::string& reason,
                       bool head_seen) override;
  void onAttemptActivity(UpstreamAttempt& attempt) override;
  void onAttemptDrained(UpstreamAttempt& attempt) override;

private:
  // One attempt in flight, with what it is reported against. One per request: its blocks
  // are reused (common/recycled.h).
  struct Attempt : common::Recycled<Attempt> {
    std::unique_ptr<UpstreamAttempt> upstream;
    upstream::ActiveRequest active;  // the pick, counted for LEAST_REQUEST and max_requests
    upstream::ResourceHold pending;  // max_pending_requests, until connected
    std::chrono::steady_clock::time_point started;
    std::unique_ptr<event::Timer> per_try_timer;
    std::unique_ptr<event::Timer> per_try_idle_timer;
    bool reported = false;
    // Started a hedge at its per-try timeout: never retried again (Envoy's "retried").
    bool hedged = false;
  };

  void startAttempt();
  void startHedge();
  Attempt* find(UpstreamAttempt& upstream);
  // Drops one attempt (abandoned, or ended): deleted after the current callback.
  void release(Attempt& attempt, bool abandon);
  void releaseAll();
  void report(Attempt& attempt, const upstream::AttemptOutcome& outcome);
  void armPerTryTimers(Attempt& attempt);
  // Attempts in flight besides `except` (null: any), or a retry waiting for its back-off.
  bool othersPending(const Attempt* except) const;
  void onPerTryTimeout(UpstreamAttempt* upstream, bool idle);
  void onRouteTimeout();
  // True when the decision was to retry and the retry is scheduled.
  bool scheduleRetry(router::RetryState::Decision decision);
  void stopRetrying();
  void failRequest(router::AttemptFailure failure);
  void reply(int status, std::string body);
  void replyTimeout();
  void finish();

  WorkerServices& services_;
  const Pod& pod_;
  Downstream& downstream_;
  accesslog::StreamInfo& log_;
  const http::RequestHead& request_;
  bool te_trailers_;
  const std::optional<common::SocketAddress>& original_destination_;

  const config::RouteAction* action_ = nullptr;
  std::string cluster_;
  config::RoutingPriority priority_ = config::RoutingPriority::Default;
  // More than one only while hedging: the usual one-element array is a recycled block.
  std::vector<std::unique_ptr<Attempt>, common::RecyclingAllocator<std::unique_ptr<Attempt>>> attempts_;
  uint64_t requests_started_ = 0;
  bool request_ended_ = false;
  http::HeaderMap trailers_;
  bool response_started_ = false;
  bool finished_ = false;
  bool flow_open_ = true;

  std::shared_ptr<router::RetryResources> retry_resources_;
  std::optional<router::RetryResources::ActiveRequest> retry_budget_request_;
  std::unique_ptr<router::RetryState> retry_;  // only when the route has a retry_policy
  std::string replay_;                         // the request body while a retry may replay it
  std::unique_ptr<event::Timer> back_off_timer_;
  // On the worker's shared TimerQueue: armed for every request, it rarely fires.
  event::QueuedTimer route_timer_;
};

}  // namespace culvert::server
