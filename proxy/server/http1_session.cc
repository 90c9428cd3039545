#include "proxy/server/http1_session.h"

#include <sys/socket.h>

#include <cstdio>

#include <spdlog/spdlog.h>

#include "proxy/http/http2/message.h"
#include "proxy/router/hash_policy.h"
#include "proxy/router/route_stats.h"
#include "proxy/router/router.h"
#include "proxy/router/stream_duration.h"
#include "proxy/router/upgrade.h"
#include "proxy/server/upstream_request.h"

namespace culvert::server {

namespace {

using http::http1::BodyFraming;
using Flag = accesslog::ResponseFlag;

// A read pauses while this much waits for a slower side (pipelined requests, or request
// body before the upstream connection is up).
constexpr size_t kPendingLimit = 64 * 1024;
// Back-pressure: a side stops reading while the other side's socket has more than this
// queued in user space, and resumes once that queue has drained into the kernel.
constexpr size_t kWriteHighWatermark = 256 * 1024;
// While a response streams, the staging buffer keeps at most this much capacity between
// upstream reads (finishExchange releases it entirely).
constexpr size_t kRetainedOutputBytes = 4 * 1024;

}  // namespace

// The upstream half of one request: the pooled connection and its response parser.
class Http1Session::UpstreamExchange : public network::ConnectionCallbacks, public http::http1::ParserCallbacks {
public:
  UpstreamExchange(Http1Session& session, std::unique_ptr<network::TcpConnection> connection, bool head_request)
      : session_(session), connection_(std::move(connection)), parser_(http::http1::Parser::Mode::Response, *this) {
    parser_.expectHeadResponse(head_request);
    connection_->setCallbacks(this);
    connection_->readEnable(true);
  }

  void write(std::string_view data) { connection_->write(data); }
  size_t queuedWriteBytes() const { return connection_->queuedWriteBytes(); }
  void readEnable(bool enabled) { connection_->readEnable(enabled); }
  void onWriteDrained() override { session_.updateDownstreamReading(); }
  // Hands the connection back for reuse, or closes it.
  // Reading stays on: the pool watches the connection from here.
  std::unique_ptr<network::TcpConnection> release() {
    connection_->setCallbacks(nullptr);
    return std::move(connection_);
  }
  bool responseComplete() const { return response_complete_; }
  // The session gave up on this attempt (it is being retried or timed out): close the
  // connection and make no more calls into the session.
  void abandon() {
    abandoned_ = true;
    connection_->close();
  }

  // Response bytes are the tenant's work too (a 1 MiB body costs more than its request):
  // charged, and paused like the downstream side when the tenant is over its share.
  void onData(std::string_view data) override {
    session_.onUpstreamActivity();
    auto& tenant = *session_.pod_->tenant;
    Http1Session& session = session_;  // `this` may be handed to deferred delete inside
    session.services_.scheduler.run(tenant.id, tenant.weight.load(std::memory_order_relaxed),
                                    [&] { onResponseData(data); });
    session.pauseUpstreamIfOverShare();
  }

  void onResponseData(std::string_view data) {
    if (response_complete_) {
      // Bytes after a complete response: this connection can't be trusted for reuse.
      reusable_ = false;
      return;
    }
    auto r = parser_.dispatch(data);
    if (abandoned_) return;
    if (r.status == http::http1::Parser::Status::Error) {
      session_.onUpstreamFailed("malformed upstream response: " + parser_.errorReason(), head_seen_);
      return;
    }
    if (r.status == http::http1::Parser::Status::Paused && r.consumed != data.size()) reusable_ = false;
    if (response_complete_) {
      session_.onResponseComplete(reusable_);
    } else {
      session_.flushResponse();
    }
  }
  void onClose(network::CloseReason reason) override {
    if (response_complete_) return;
    // A body delimited by the connection closing ends here.
    if (head_seen_ && parser_.finish() && response_complete_) {
      session_.onResponseComplete(false);
      return;
    }
    session_.onUpstreamFailed(std::string("upstream connection closed: ") + network::toString(reason), head_seen_);
  }
  void onResponseHead(http::ResponseHead&& head) override {
    if (abandoned_) return;
    head_seen_ = true;
    reusable_ = head.keep_alive;
    session_.onResponseHead(head);
  }
  void onBody(std::string_view data) override {
    if (!abandoned_) session_.onResponseBody(data);
  }
  void onMessageComplete() override { response_complete_ = true; }

private:
  Http1Session& session_;
  std::unique_ptr<network::TcpConnection> connection_;
  http::http1::Parser parser_;
  bool head_seen_ = false;
  bool response_complete_ = false;
  bool reusable_ = false;
  bool abandoned_ = false;
};

Http1Session::Http1Session(WorkerServices services, std::shared_ptr<const Pod> pod,
                           std::shared_ptr<const config::RouteConfiguration> routes,
                           std::unique_ptr<network::TcpConnection> downstream, OnDone on_done)
    : services_(services), pod_(std::move(pod)), routes_(std::move(routes)), downstream_(std::move(downstream)),
      on_done_(std::move(on_done)), parser_(http::http1::Parser::Mode::Request, *this) {
  downstream_->setCallbacks(this);
  pod_->tenant->downstream_cx_total->inc();
  pod_->tenant->downstream_cx_active->add(1);
  buffered_.bind(*pod_->tenant);
}

Http1Session::~Http1Session() {
  pod_->tenant->downstream_cx_active->add(-1);
  pod_->tenant->budget.releaseConnection();
}

void Http1Session::start(std::string_view initial_bytes) {
  if (lifetime_.max_duration.count() > 0) {
    cx_max_duration_timer_ = services_.dispatcher.createTimer([this] { onMaxConnectionDuration(); });
    cx_max_duration_timer_->enable(lifetime_.max_duration);
  }
  armConnectionIdleTimer();
  downstream_->readEnable(true);
  if (!initial_bytes.empty()) onData(initial_bytes);
}

void Http1Session::armConnectionIdleTimer() {
  if (lifetime_.idle_timeout.count() == 0) return;
  if (!cx_idle_timer_) cx_idle_timer_ = services_.dispatcher.createTimer([this] { onConnectionIdleTimeout(); });
  cx_idle_timer_->enable(lifetime_.idle_timeout);
}

void Http1Session::onConnectionIdleTimeout() {
  if (in_exchange_ || request_begun_) return;  // a request began meanwhile (its timers rule)
  pod_->tenant->downstream_cx_idle_timeout->inc();
  close();
}

void Http1Session::onMaxConnectionDuration() {
  pod_->tenant->downstream_cx_max_duration_reached->inc();
  draining_ = true;
  if (!in_exchange_ && !request_begun_) {
    close();
    return;
  }
  // The request in flight is answered with "connection: close" (if its head has not gone
  // out yet) and the connection closes after it.
  close_after_response_ = true;
}

void Http1Session::onData(std::string_view data) {
  if (share_pause_ || services_.scheduler.overShare(pod_->tenant->id)) {
    // The tenant is over its share: keep what was already read for later, read no more.
    downstream_pending_.append(data);
    pauseIfOverShare();
    return;
  }
  services_.scheduler.run(pod_->tenant->id, pod_->tenant->weight.load(std::memory_order_relaxed), [&] { feed(data); });
  pauseIfOverShare();
}

// The tenant used its share of the worker while another tenant has work: stop reading
// until the scheduler's next round (the bytes wait in the kernel, not in memory).
void Http1Session::pauseIfOverShare() {
  if (closed_ || tunnelOpen() || share_pause_ || !services_.scheduler.overShare(pod_->tenant->id)) return;
  share_pause_ = services_.scheduler.pause(pod_->tenant->id, [this] {
    share_pause_.reset();
    // Replay what was held back, unless it waits for the response in flight (the end
    // of that exchange replays it).
    if (!downstream_pending_.empty() && !(in_exchange_ && request_complete_)) {
      std::string pending = std::move(downstream_pending_);
      downstream_pending_.clear();
      onData(pending);
      return;
    }
    updateDownstreamReading();
  });
  downstream_->readEnable(false);
}

void Http1Session::feed(std::string_view data) {
  std::string remainder;
  while (!closed_) {
    if (in_exchange_ && request_complete_) {
      // The parser waits for the response to the request before this one.
      downstream_pending_.append(data);
      updateDownstreamReading();
      return;
    }
    if (!in_exchange_ && !request_begun_ && !data.empty()) {
      if (cx_idle_timer_) cx_idle_timer_->disable();
      beginStreamTimers();
    }
    if (stream_idle_timer_ && stream_idle_timer_->enabled()) stream_idle_timer_->enable(stream_idle_);
    parser_inside_dispatch_ = true;
    auto r = parser_.dispatch(data);
    parser_inside_dispatch_ = false;
    if (r.status == http::http1::Parser::Status::Ok) return;
    if (r.status == http::http1::Parser::Status::Error) {
      pod_->tenant->downstream_rq_bad->inc();
      // Rare by construction (the connection closes), so the labelled lookup is affordable.
      services_.stats
          .counter("culvert_http_downstream_rq_rejected_total",
                   {{"tenant", pod_->tenant->name}, {"reason", http::http1::toString(parser_.rejectReason())}},
                   "Malformed downstream HTTP/1.1 requests by reason (answered 400)")
          .inc();
      spdlog::debug("pod {}/{}: bad request ({}): {}", pod_->namespace_name, pod_->name,
                    http::http1::toString(parser_.rejectReason()), parser_.errorReason());
      close_after_response_ = true;
      decision_ = {};
      if (!response_started_) {
        sendLocalReply(400, "bad request\n");
      } else {
        close();
      }
      return;
    }
    // Paused: one request is complete.
    remainder.assign(data.substr(r.consumed));
    data = remainder;
    if (in_exchange_) continue;  // stores the remainder above
    parser_.resume();
    if (close_after_response_) return;
    if (data.empty()) return;
  }
}

void Http1Session::onRequestHead(http::RequestHead&& head) {
  if (headers_timer_) headers_timer_->disable();
  request_begun_ = false;  // the next request's first byte starts its timers again
  request_ = std::move(head);
  request_start_ = std::chrono::steady_clock::now();
  if (access_logs_.enabled()) {
    beginRecord(log_, log_facts_, *pod_, request_.version_minor == 0 ? "HTTP/1.0" : "HTTP/1.1", request_start_);
    log_.request = &request_;
  }
  request_complete_ = false;
  in_exchange_ = true;
  discard_body_ = false;
  response_started_ = false;
  close_after_response_ = !request_.keep_alive || draining_;
  route_timeout_ = std::chrono::milliseconds(0);
  pod_->tenant->downstream_rq_total->inc();
  if (!admitRequest()) return;
  // HTTP/1.0 clients do not send Expect; a 1.0 request carrying it gets no interim reply.
  if (router::takeExpectContinue(request_.headers) && request_.version_minor == 1) {
    downstream_->write("HTTP/1.1 100 Continue\r\n\r\n");
  }
  if (auto upgrade = router::requestedUpgrade(request_)) {
    startUpgrade(*upgrade);
    return;
  }
  routeRequest();
}

bool Http1Session::admitRequest() {
  auto refused = request_slot_.admit(*pod_->tenant);
  if (!refused) return true;
  // Only this tenant is over its budget: a 503 the client may retry after a pause.
  http::HeaderMap headers;
  headers.add("retry-after", "1");
  headers.add(std::string(tenant::kOverloadHeader), tenant::overloadReason(*refused));
  log_.fail(Flag::OverloadManager, "tenant_over_budget{" + tenant::overloadReason(*refused) + "}");
  sendLocalReply(503, "tenant over budget\n", &headers);
  return false;
}

// Bytes waiting in user space on either side, for the tenant's buffered-bytes budget.
void Http1Session::chargeBuffered() {
  buffered_.set(closed_ ? 0
                        : downstream_pending_.size() + upstream_pending_.size() + downstream_->queuedWriteBytes() +
                              (upstream_ ? upstream_->queuedWriteBytes() : 0));
}

void Http1Session::routeRequest() {
  decision_ = router::decideRoute(*routes_, request_, routeRandom());
  const auto* route = decision_.route;
  if (route == nullptr) {
    log_.fail(Flag::NoRouteFound, "route_not_found");
    sendLocalReply(404, "no route\n");
    return;
  }
  log_.route_name = route->name;
  if (route->direct_response) {
    log_.response_code_details = "direct_response";
    sendLocalReply(static_cast<int>(route->direct_response->status), route->direct_response->body);
    return;
  }
  const auto& action = *route->route;
  action_ = &action;
  log_.upstream_cluster = decision_.cluster();
  route_timeout_ = action.timeout;
  if (action.idle_timeout) {
    // The route's idle_timeout replaces the connection manager's stream_idle_timeout.
    stream_idle_ = *action.idle_timeout;
    if (stream_idle_timer_) stream_idle_timer_->disable();
    if (stream_idle_.count() > 0) armStreamTimer(stream_idle_timer_, stream_idle_, StreamTimeout::Idle);
  }
  if (action.max_stream_duration) {
    auto limit = router::streamDurationLimit(*action.max_stream_duration, request_.headers);
    if (limit.count() > 0) armStreamTimer(max_duration_timer_, limit, StreamTimeout::MaxDuration);
  }

  // The request as the upstream will see it.
  prepareUpstreamRequest(request_, *routes_, decision_, pod_->ip);
  request_framing_ = http::http1::requestFraming(request_);
  upstream_pending_ = http::http1::encodeRequestHead(request_, request_framing_);

  // For weighted_clusters, the cluster this request was given.
  const std::string_view cluster = decision_.cluster();
  if (retry_resources_cluster_ != cluster || !retry_resources_) {
    retry_resources_ = services_.retry_resources.forCluster(std::string(cluster));
    retry_resources_cluster_ = cluster;
  }
  retry_budget_request_.emplace(retry_resources_);
  if (action.retry_policy) {
    // The cluster's limits are read when the retry is decided (below, at each pick).
    retry_ = std::make_unique<router::RetryState>(
        *action.retry_policy, config::RetryLimits{}, retry_resources_, [] { return routeRandom(); },
        [] { return std::chrono::system_clock::now(); });
    replay_ = upstream_pending_;
    replay_head_bytes_ = replay_.size();
  }
  startAttempt();
}

void Http1Session::startAttempt() {
  bool is_retry = retry_ && retry_->retriesDone() > 0;
  if (is_retry && retry_->disabled()) {
    // The body outgrew the buffer while the retry waited: nothing left to replay.
    pod_->tenant->upstream_rq_retry_body_too_large->inc();
    close_after_response_ = close_after_response_ || !request_complete_;
    sendLocalReply(503, "upstream connect error or disconnect/reset before headers\n");
    return;
  }
  upstream::ClusterManager::PickContext pick;
  const auto& action = *action_;
  if (!action.hash_policy.empty()) pick.hash = router::hashRequest(action.hash_policy, request_.headers, pod_->ip);
  if (is_retry && retry_->avoidsPreviousHosts()) {
    pick.avoid = {&retry_->triedHosts(), retry_->hostSelectionMaxAttempts()};
  }
  auto selection = services_.clusters.pickEndpoint(decision_.cluster(), pick);
  if (!selection) {
    switch (selection.error()) {
      case upstream::ClusterManager::PickError::NoCluster:
        log_.fail(Flag::NoClusterFound, "cluster_not_found");
        sendLocalReply(503, "no cluster\n");
        break;
      case upstream::ClusterManager::PickError::NoHealthyEndpoint:
        log_.fail(Flag::NoHealthyUpstream, "no_healthy_upstream");
        sendLocalReply(503, "no healthy upstream\n");
        break;
      case upstream::ClusterManager::PickError::Overflow:
        log_.fail(Flag::UpstreamOverflow, "upstream_overflow");
        sendLocalReply(503, "upstream overflow\n");
        break;
    }
    return;
  }
  upstream_request_ = std::move(selection->request);

  common::SocketAddress endpoint = selection->endpoint.address;
  if (selection->original_destination) {
    if (!original_destination_) {
      sendLocalReply(503, "no original destination for an ORIGINAL_DST cluster\n");
      return;
    }
    endpoint = *original_destination_;
  }
  log_.upstream_host = endpoint.toString();
  ++log_.attempt_count;
  if (selection->cluster->http_protocol == config::UpstreamHttpProtocol::Http2 && services_.http2_pool != nullptr) {
    // An HTTP/2 cluster: the head goes as a HEADERS block and the body as raw DATA, with
    // no HTTP/1.1 framing on this side. Not retried: the bridge streams the body on.
    retry_.reset();
    upstream_pending_.clear();
    bool has_body = request_framing_ != BodyFraming::None;
    request_framing_ = BodyFraming::None;
    pool_key_ = upstream::PoolKey{pod_->id, endpoint.toString(), upstream::Protocol::Http2};
    h2_upstream_ = std::make_unique<Http2UpstreamBridge>(*this, http::http2::toRequestBlock(request_, "http"), !has_body);
    h2_upstream_->start(*services_.http2_pool,
                        {pool_key_, pod_->netnsFd(), endpoint, selection->cluster->connect_timeout});
    return;
  }
  if (retry_) {
    retry_->setLimits(selection->cluster->retry_limits);
    retry_->recordHost(endpoint);
    if (is_retry) upstream_pending_ = replay_;
  }

  pool_key_ = upstream::PoolKey{pod_->id, endpoint.toString(), upstream::Protocol::Http1, action.cluster};
  upstream::ConnectRequest connect{pool_key_, pod_->netnsFd(), endpoint, selection->cluster->connect_timeout};
  armPerTryTimers();
  attempt_cluster_ = decision_.cluster();
  attempt_endpoint_ = endpoint;
  attempt_reported_ = false;
  if (!services_.pool.hasIdle(pool_key_)) {
    // A new connection: the cluster's max_connections and max_pending_requests apply.
    auto connection_unit = services_.clusters.reserveConnection(decision_.cluster());
    if (!connection_unit) {
      log_.fail(Flag::UpstreamOverflow, "upstream_overflow");
      sendLocalReply(503, "upstream overflow\n");
      return;
    }
    auto pending_unit = services_.clusters.reservePending(decision_.cluster());
    if (!pending_unit) {
      log_.fail(Flag::UpstreamOverflow, "upstream_overflow");
      sendLocalReply(503, "upstream overflow\n");
      return;
    }
    pending_unit_ = std::move(*pending_unit);
    connect.lifetime_token = std::make_shared<upstream::ResourceHold>(std::move(*connection_unit));
  }
  attempt_started_ = services_.dispatcher.now();
  connecting_ = services_.pool.acquire(connect, [this](auto result) { onUpstreamReady(std::move(result)); });
}

void Http1Session::sendRequestBytes(std::string_view bytes) {
  if (retry_ && !retry_->disabled()) {
    replay_.append(bytes);
    if (replay_.size() - replay_head_bytes_ > action_->retry_buffer_bytes) {
      // Beyond the buffer the request streams on, and can no longer be retried.
      retry_->disable();
      replay_.clear();
      replay_.shrink_to_fit();
    }
  }
  if (upstream_) {
    upstream_->write(bytes);
  } else if (!(back_off_timer_ && back_off_timer_->enabled())) {
    upstream_pending_.append(bytes);
  }
}

void Http1Session::onAttemptFailed(router::AttemptFailure failure, const std::string& reason) {
  spdlog::debug("pod {}/{}: {} {}: {}", pod_->namespace_name, pod_->name, request_.method, request_.path, reason);
  if (retry_ && scheduleRetry(retry_->onFailure(failure))) return;
  abandonAttempt();
  if (failure == router::AttemptFailure::ConnectFailure) {
    log_.fail(Flag::UpstreamConnectionFailure, "upstream_reset_before_response_started{connection_failure}");
  } else {
    log_.fail(Flag::UpstreamConnectionTermination, "upstream_reset_before_response_started{connection_termination}");
  }
  close_after_response_ = close_after_response_ || !request_complete_;
  sendLocalReply(503, "upstream connect error or disconnect/reset before headers\n");
}

bool Http1Session::scheduleRetry(router::RetryState::Decision decision) {
  using Verdict = router::RetryState::Verdict;
  switch (decision.verdict) {
    case Verdict::Retry:
      break;
    case Verdict::NoRetry:
      return false;
    case Verdict::LimitExceeded:
      log_.flags.set(Flag::UpstreamRetryLimitExceeded);
      pod_->tenant->upstream_rq_retry_limit_exceeded->inc();
      return false;
    case Verdict::Overflow:
      pod_->tenant->upstream_rq_retry_overflow->inc();
      return false;
    case Verdict::Disabled:
      pod_->tenant->upstream_rq_retry_body_too_large->inc();
      return false;
  }
  pod_->tenant->upstream_rq_retry->inc();
  abandonAttempt();
  if (!back_off_timer_) back_off_timer_ = services_.dispatcher.createTimer([this] { startAttempt(); });
  // Even a zero wait runs from the loop, never from inside the failed attempt's callbacks.
  back_off_timer_->enable(decision.back_off);
  updateDownstreamReading();
  return true;
}

// Drops the current attempt: its connection is mid-exchange and can never be reused.
void Http1Session::abandonAttempt() {
  connecting_.reset();
  if (upstream_) {
    upstream_->abandon();
    services_.dispatcher.deferredDelete(std::move(upstream_));
  }
  if (h2_upstream_) services_.dispatcher.deferredDelete(std::move(h2_upstream_));
  upstream_pending_.clear();
  if (per_try_timer_) per_try_timer_->disable();
  if (per_try_idle_timer_) per_try_idle_timer_->disable();
}

// Envoy's per-try timeout runs from when the whole request is on its way upstream.
void Http1Session::armPerTryTimers() {
  if (!retry_ || !request_complete_) return;
  const auto& policy = retry_->policy();
  if (policy.per_try_timeout.count() > 0) {
    if (!per_try_timer_) per_try_timer_ = services_.dispatcher.createTimer([this] { onPerTryTimeout(false); });
    per_try_timer_->enable(policy.per_try_timeout);
  }
  if (policy.per_try_idle_timeout.count() > 0) {
    if (!per_try_idle_timer_) {
      per_try_idle_timer_ = services_.dispatcher.createTimer([this] { onPerTryTimeout(true); });
    }
    per_try_idle_timer_->enable(policy.per_try_idle_timeout);
  }
}

void Http1Session::beginStreamTimers() {
  request_begun_ = true;
  stream_idle_ = stream_timeouts_.stream_idle;
  if (stream_timeouts_.request_headers.count() > 0) {
    armStreamTimer(headers_timer_, stream_timeouts_.request_headers, StreamTimeout::Headers);
  }
  if (stream_timeouts_.request.count() > 0) armStreamTimer(request_timer_, stream_timeouts_.request, StreamTimeout::Request);
  if (stream_idle_.count() > 0) armStreamTimer(stream_idle_timer_, stream_idle_, StreamTimeout::Idle);
}

void Http1Session::armStreamTimer(std::unique_ptr<event::Timer>& timer, std::chrono::milliseconds after,
                                  StreamTimeout kind) {
  if (!timer) timer = services_.dispatcher.createTimer([this, kind] { onStreamTimeout(kind); });
  timer->enable(after);
}

// Envoy's answers: 408 while no response has begun, else the connection closes.
void Http1Session::onStreamTimeout(StreamTimeout kind) {
  if (closed_) return;
  const char* body = "stream timeout\n";
  switch (kind) {
    case StreamTimeout::Headers:
      pod_->tenant->downstream_rq_headers_timeout->inc();
      body = "request header timeout\n";
      break;
    case StreamTimeout::Request:
      pod_->tenant->downstream_rq_request_timeout->inc();
      body = "request timeout\n";
      break;
    case StreamTimeout::Idle:
      pod_->tenant->downstream_rq_idle_timeout->inc();
      break;
    case StreamTimeout::MaxDuration:
      pod_->tenant->downstream_rq_max_duration_reached->inc();
      body = "downstream duration timeout\n";
      break;
  }
  spdlog::debug("pod {}/{}: {}", pod_->namespace_name, pod_->name, body);
  switch (kind) {
    case StreamTimeout::Headers:
      log_.response_code_details = "request_header_timeout";
      break;
    case StreamTimeout::Request:
      log_.response_code_details = "request_overall_timeout";
      break;
    case StreamTimeout::Idle:
      log_.fail(Flag::StreamIdleTimeout, "stream_idle_timeout");
      break;
    case StreamTimeout::MaxDuration:
      log_.fail(Flag::DurationTimeout, "max_duration_timeout");
      break;
  }
  abandonAttempt();
  if (response_started_ && in_exchange_) {
    flushResponse();
    close();
    return;
  }
  bool grpc = request_.headers.get("content-type").value_or("").starts_with("application/grpc");
  if (kind == StreamTimeout::MaxDuration && (request_complete_ || grpc)) {
    // Envoy: 504 once the request is in, 408 before; gRPC: DEADLINE_EXCEEDED either way.
    sendTimeoutReply();
    return;
  }
  // The rest of the request cannot be trusted to follow: the connection ends here.
  close_after_response_ = true;
  sendLocalReply(408, body);
}

void Http1Session::onUpstreamActivity() {
  if (stream_idle_timer_ && stream_idle_timer_->enabled()) stream_idle_timer_->enable(stream_idle_);
  if (per_try_idle_timer_ && per_try_idle_timer_->enabled()) {
    per_try_idle_timer_->enable(retry_->policy().per_try_idle_timeout);
  }
}

void Http1Session::onPerTryTimeout(bool idle) {
  if (!in_exchange_ || closed_ || !retry_) return;
  (idle ? pod_->tenant->upstream_rq_per_try_idle_timeout : pod_->tenant->upstream_rq_per_try_timeout)->inc();
  if (response_started_) {
    // Part of the response went out: as with the route timeout, only closing is left.
    abandonAttempt();
    flushResponse();
    close();
    return;
  }
  auto failure = idle ? router::AttemptFailure::PerTryIdleTimeout : router::AttemptFailure::PerTryTimeout;
  if (scheduleRetry(retry_->onFailure(failure))) return;
  abandonAttempt();
  log_.fail(Flag::UpstreamRequestTimeout, idle ? "upstream_per_try_idle_timeout" : "upstream_per_try_timeout");
  sendTimeoutReply();
}

void Http1Session::endRequest() {
  retry_.reset();
  retry_budget_request_.reset();
  if (!replay_.empty()) {
    replay_.clear();
    if (replay_.capacity() > kRetainedOutputBytes) replay_.shrink_to_fit();
  }
  if (per_try_timer_) per_try_timer_->disable();
  if (per_try_idle_timer_) per_try_idle_timer_->disable();
  if (back_off_timer_) back_off_timer_->disable();
  if (request_timer_) request_timer_->disable();
  if (stream_idle_timer_) stream_idle_timer_->disable();
  if (max_duration_timer_) max_duration_timer_->disable();
}

void Http1Session::onUpstreamReady(common::Result<std::unique_ptr<network::TcpConnection>> connection) {
  connecting_.reset();
  pending_unit_.reset();
  if (!connection) {
    reportAttempt({upstream::AttemptOutcome::Kind::ConnectFailure});
    pod_->tenant->upstream_cx_connect_fail->inc();
    log_.upstream_transport_failure_reason = connection.error().describe();
    onAttemptFailed(router::AttemptFailure::ConnectFailure,
                    "upstream " + pool_key_.endpoint + ": " + connection.error().describe());
    return;
  }
  upstream_ = std::make_unique<UpstreamExchange>(*this, std::move(*connection), request_.method == "HEAD");
  upstream_->write(upstream_pending_);
  upstream_pending_.clear();
  upstream_pending_.shrink_to_fit();
  updateDownstreamReading();
  updateUpstreamReading();
}

void Http1Session::onBody(std::string_view data) {
  log_.bytes_received += data.size();
  if (discard_body_) return;
  if (h2_upstream_) {
    h2_upstream_->sendData(data);
    updateDownstreamReading();
    return;
  }
  if (upstream_ || retry_) {
    std::string chunk;
    http::http1::appendBody(chunk, data, request_framing_);
    sendRequestBytes(chunk);
    updateDownstreamReading();
    return;
  }
  http::http1::appendBody(upstream_pending_, data, request_framing_);
  updateDownstreamReading();
}

void Http1Session::updateDownstreamReading() {
  if (closed_ || tunnelOpen()) return;
  bool blocked = share_pause_ != nullptr || downstream_pending_.size() > kPendingLimit ||
                 upstream_pending_.size() > kPendingLimit ||
                 (upstream_ && upstream_->queuedWriteBytes() > kWriteHighWatermark) ||
                 (h2_upstream_ && h2_upstream_->queuedBytes() > kWriteHighWatermark) ||
                 (back_off_timer_ && back_off_timer_->enabled());  // a retry waits: the body waits too
  downstream_->readEnable(!blocked);
  chargeBuffered();
}

void Http1Session::pauseUpstreamIfOverShare() {
  if (closed_ || !upstream_ || upstream_share_pause_ || !services_.scheduler.overShare(pod_->tenant->id)) return;
  upstream_share_pause_ = services_.scheduler.pause(pod_->tenant->id, [this] {
    upstream_share_pause_.reset();
    updateUpstreamReading();
  });
  upstream_->readEnable(false);
}

void Http1Session::updateUpstreamReading() {
  if (!closed_ && h2_upstream_ && downstream_->queuedWriteBytes() <= kWriteHighWatermark) {
    h2_upstream_->downstreamDrained();
  }
  if (closed_ || !upstream_ || tunnelOpen()) return;
  upstream_->readEnable(!upstream_share_pause_ && downstream_->queuedWriteBytes() <= kWriteHighWatermark);
  chargeBuffered();
}

void Http1Session::onMessageComplete() {
  request_complete_ = true;
  log_.last_downstream_rx = services_.dispatcher.now();
  if (discard_body_) {
    if (!in_exchange_) return;
    // A local reply already went out: the exchange ends with the request.
    finishExchange();
    return;
  }
  if (h2_upstream_) h2_upstream_->end();
  std::string end;
  http::http1::appendBodyEnd(end, request_framing_);
  sendRequestBytes(end);
  if (request_timer_) request_timer_->disable();
  if (connecting_ || upstream_) armPerTryTimers();
  // Envoy's route timeout: from the end of the downstream request to the end of the
  // upstream response, connecting included; 0 disables it.
  if (route_timeout_.count() > 0 && in_exchange_) {
    if (!route_timer_) route_timer_ = services_.dispatcher.createTimer([this] { onRouteTimeout(); });
    route_timer_->enable(route_timeout_);
  }
  if (upstream_ && upstream_->responseComplete()) finishExchange();
}

void Http1Session::onResponseHead(http::ResponseHead& head) {
  if (retry_) {
    bool retried_before = retry_->retriesDone() > 0;
    auto decision = retry_->onResponse(head.status, head.headers);
    if (scheduleRetry(decision)) return;
    if (retried_before && decision.verdict == router::RetryState::Verdict::NoRetry) {
      pod_->tenant->upstream_rq_retry_success->inc();
    }
    // The response goes downstream: nothing will be replayed any more.
    retry_->disable();
    replay_.clear();
    replay_.shrink_to_fit();
  }
  response_started_ = true;
  reportAttempt({upstream::AttemptOutcome::Kind::Response, head.status,
                 std::chrono::duration_cast<std::chrono::microseconds>(services_.dispatcher.now() - attempt_started_)});
  countStatus(head.status);
  http::http1::removeHopByHopHeaders(head.headers);
  router::prepareDownstreamResponse(*routes_, decision_, head.headers);
  log_.response_code = static_cast<uint32_t>(head.status);
  log_.response_code_details = "via_upstream";
  log_.first_upstream_rx = services_.dispatcher.now();
  if (access_logs_.enabled()) log_.response_headers = head.headers;
  response_framing_ = http::http1::responseFraming(head, request_.method == "HEAD");
  response_out_ += http::http1::encodeResponseHead(head, response_framing_, close_after_response_);
}

void Http1Session::onResponseBody(std::string_view data) {
  log_.bytes_sent += data.size();
  http::http1::appendBody(response_out_, data, response_framing_);
}

// What one upstream read produced (head, body, end) leaves in one write.
void Http1Session::flushResponse() {
  if (response_out_.empty()) return;
  downstream_->write(response_out_);
  response_out_.clear();
  if (response_out_.capacity() > kRetainedOutputBytes) response_out_.shrink_to_fit();
  updateUpstreamReading();
}

void Http1Session::onResponseComplete(bool upstream_reusable) {
  if (h2_upstream_) services_.dispatcher.deferredDelete(std::move(h2_upstream_));
  http::http1::appendBodyEnd(response_out_, response_framing_);
  flushResponse();
  if (!request_complete_) {
    // The upstream answered before the request ended: its connection is not reusable and
    // the rest of the request body is dropped.
    services_.dispatcher.deferredDelete(std::move(upstream_));
    discard_body_ = true;
    return;
  }
  if (upstream_reusable && upstream_) {
    services_.pool.release(pool_key_, upstream_->release());
  }
  // We are inside the exchange's own read callback.
  if (upstream_) services_.dispatcher.deferredDelete(std::move(upstream_));
  finishExchange();
}

void Http1Session::onUpstreamFailed(const std::string& reason, bool response_started) {
  flushResponse();
  reportAttempt({upstream::AttemptOutcome::Kind::Reset});
  // Deleting the HTTP/2 bridge from inside its own callback: defer. (An HTTP/1.1
  // attempt's exchange goes below, or in abandonAttempt when it is retried.)
  if (h2_upstream_) services_.dispatcher.deferredDelete(std::move(h2_upstream_));
  if (response_started) {
    spdlog::debug("pod {}/{}: {} {}: {}", pod_->namespace_name, pod_->name, request_.method, request_.path, reason);
    // Deleting the exchange from inside its own callback: defer.
    if (upstream_) services_.dispatcher.deferredDelete(std::move(upstream_));
    log_.fail(Flag::UpstreamConnectionTermination, "upstream_reset_after_response_started{connection_termination}");
    // Part of a response went out; the only honest signal left is closing.
    close();
    return;
  }
  onAttemptFailed(router::AttemptFailure::Reset, reason);
}

void Http1Session::sendLocalReply(int status, std::string_view body, const http::HeaderMap* extra_headers) {
  connecting_.reset();
  endRequest();
  response_started_ = true;
  countStatus(status);
  log_.response_code = static_cast<uint32_t>(status);
  log_.bytes_sent += body.size();
  http::ResponseHead head;
  head.status = status;
  head.content_length = body.size();
  head.headers.add("content-type", "text/plain");
  router::prepareDownstreamResponse(*routes_, decision_, head.headers);
  if (extra_headers) {
    for (const auto& [name, value] : extra_headers->entries()) head.headers.add(name, value);
  }
  std::string out = http::http1::encodeResponseHead(head, BodyFraming::ContentLength, close_after_response_);
  out.append(body);
  if (access_logs_.enabled()) log_.response_headers = head.headers;
  downstream_->write(out);
  if (close_after_response_) {
    recordDuration();
    in_exchange_ = false;
    if (downstream_->queuedWriteBytes() == 0) close();
    return;
  }
  if (request_complete_) {
    finishExchange();
  } else {
    discard_body_ = true;
  }
}

void Http1Session::onRouteTimeout() {
  if (!in_exchange_ || closed_) return;
  pod_->tenant->upstream_rq_timeout->inc();
  log_.fail(Flag::UpstreamRequestTimeout, "upstream_response_timeout");
  spdlog::debug("pod {}/{}: {} {}: route timeout {} ms", pod_->namespace_name, pod_->name, request_.method,
                request_.path, route_timeout_.count());
  pending_unit_.reset();
  reportAttempt({upstream::AttemptOutcome::Kind::Timeout});
  // The upstream connection is mid-exchange: it can never be reused.
  abandonAttempt();
  if (response_started_) {
    flushResponse();
    close();
    return;
  }
  sendTimeoutReply();
}

// 504, or for a gRPC request DEADLINE_EXCEEDED as a trailers-only response (what a gRPC
// client understands; Envoy answers the same).
void Http1Session::sendTimeoutReply() {
  auto content_type = request_.headers.get("content-type");
  if (!content_type || !content_type->starts_with("application/grpc")) {
    sendLocalReply(504, "upstream request timeout\n");
    return;
  }
  connecting_.reset();
  endRequest();
  response_started_ = true;
  countStatus(200);
  log_.response_code = 200;
  http::ResponseHead head;
  head.status = 200;
  head.content_length = 0;
  head.headers.add("content-type", "application/grpc");
  head.headers.add("grpc-status", "4");
  head.headers.add("grpc-message", "upstream request timeout");
  downstream_->write(http::http1::encodeResponseHead(head, BodyFraming::ContentLength, close_after_response_));
  if (close_after_response_) {
    in_exchange_ = false;
    if (downstream_->queuedWriteBytes() == 0) close();
    return;
  }
  if (request_complete_) {
    finishExchange();
  } else {
    discard_body_ = true;
  }
}

void Http1Session::recordDuration() {
  if (request_start_ == std::chrono::steady_clock::time_point{}) return;
  auto us = std::chrono::duration_cast<std::chrono::microseconds>(std::chrono::steady_clock::now() - request_start_);
  request_start_ = {};
  std::string_view route = decision_.route ? std::string_view(decision_.route->name) : std::string_view{};
  router::requestDurationHistogram(services_.stats, pod_->tenant->name, route, decision_.cluster())
      .observe(static_cast<uint64_t>(us.count()));
  logRequest();
}

void Http1Session::setAccessLogs(accesslog::SessionLogs logs) {
  access_logs_ = std::move(logs);
  if (access_logs_.enabled()) log_facts_ = connectionLogFacts(downstream_->fd(), *pod_, original_destination_);
}

// Once per request, from recordDuration: the line is formatted here and queued for the
// writer thread (proxy/accesslog/log_file.h), never written from the worker.
void Http1Session::logRequest() {
  if (!access_logs_.enabled()) return;
  if (tunnel_log_pending_) return;  // close() logs it with the tunnel's bytes
  log_.end = std::chrono::steady_clock::now();
  access_logs_.log(log_);
  log_.request = nullptr;
}

void Http1Session::reportAttempt(const upstream::AttemptOutcome& outcome) {
  // Once per attempt: a reset after the head was reported changes nothing.
  if (attempt_reported_ || attempt_cluster_.empty()) return;
  attempt_reported_ = true;
  services_.clusters.reportOutcome(attempt_cluster_, attempt_endpoint_, outcome);
}

void Http1Session::finishExchange() {
  recordDuration();
  in_exchange_ = false;
  endRequest();
  // An idle keep-alive connection holds no per-request state: the request's headers and
  // the response staging buffer are released here, not when the next request comes.
  request_ = http::RequestHead{};
  decision_ = {};
  std::string().swap(response_out_);
  request_slot_.release();
  upstream_request_.reset();
  attempt_cluster_.clear();
  if (route_timer_) route_timer_->disable();
  if (close_after_response_) {
    if (downstream_->queuedWriteBytes() == 0) close();
    return;
  }
  armConnectionIdleTimer();
  // Reached from an upstream callback (not from inside the downstream parser): resume the
  // parser and replay what arrived meanwhile.
  if (!parser_inside_dispatch_) {
    parser_.resume();
    updateDownstreamReading();
    if (!downstream_pending_.empty()) {
      std::string pending = std::move(downstream_pending_);
      downstream_pending_.clear();
      onData(pending);
    }
  }
}

void Http1Session::countStatus(int status) {
  if (status >= 500) {
    pod_->tenant->downstream_rq_5xx->inc();
  } else if (status >= 400) {
    pod_->tenant->downstream_rq_4xx->inc();
  } else if (status >= 200 && status < 300) {
    pod_->tenant->downstream_rq_2xx->inc();
  }
}

void Http1Session::onClose(network::CloseReason reason) {
  // A client may send its CONNECT (and payload) and half-close before the tunnel is up.
  if (tunnel_ && reason == network::CloseReason::RemoteClose && tunnel_->downstreamEnded()) return;
  if (in_exchange_) log_.flags.set(Flag::DownstreamConnectionTermination);
  close();
}

void Http1Session::onWriteDrained() {
  if (close_after_response_ && !in_exchange_) {
    close();
    return;
  }
  // A slow reader draining a long response is activity too (Envoy counts encoded data).
  if (stream_idle_timer_ && stream_idle_timer_->enabled()) stream_idle_timer_->enable(stream_idle_);
  updateUpstreamReading();
}

void Http1Session::abort() {
  // The pod is gone (CNI DEL): reset, not FIN, so nothing in it waits for more (DESIGN §5).
  if (!closed_ && downstream_ && !downstream_->closed()) {
    linger reset{1, 0};
    ::setsockopt(downstream_->fd(), SOL_SOCKET, SO_LINGER, &reset, sizeof reset);
  }
  close();
}

void Http1Session::close() {
  if (closed_) return;
  closed_ = true;
  recordDuration();
  request_slot_.release();
  buffered_.set(0);
  share_pause_.reset();
  upstream_share_pause_.reset();
  route_timer_.reset();
  connecting_.reset();
  endRequest();
  per_try_timer_.reset();
  per_try_idle_timer_.reset();
  back_off_timer_.reset();
  headers_timer_.reset();
  request_timer_.reset();
  stream_idle_timer_.reset();
  max_duration_timer_.reset();
  cx_idle_timer_.reset();
  cx_max_duration_timer_.reset();
  pending_unit_.reset();
  upstream_request_.reset();
  if (upstream_) services_.dispatcher.deferredDelete(std::move(upstream_));
  if (h2_upstream_) services_.dispatcher.deferredDelete(std::move(h2_upstream_));
  if (tunnel_) {
    if (tunnel_log_pending_) {
      tunnel_log_pending_ = false;
      log_.bytes_received += tunnel_->bytesFromDownstream();
      log_.bytes_sent += tunnel_->bytesToDownstream();
      logRequest();
    }
    tunnel_->abort();
    services_.dispatcher.deferredDelete(std::move(tunnel_));  // we may be inside its callbacks
  }
  if (tunnels_active_) tunnels_active_->add(-1);
  tunnels_active_ = nullptr;
  downstream_->close();
  if (on_done_) on_done_(this);
}

}  // namespace culvert::server
