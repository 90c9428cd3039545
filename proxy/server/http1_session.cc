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

Http1Session::Http1Session(WorkerServices services, std::shared_ptr<const Pod> pod,
                           std::shared_ptr<const config::RouteConfiguration> routes,
                           std::unique_ptr<network::TcpConnection> downstream, OnDone on_done)
    : services_(services), pod_(std::move(pod)), routes_(std::move(routes)), downstream_(std::move(downstream)),
      on_done_(std::move(on_done)), parser_(http::http1::Parser::Mode::Request, *this) {
  downstream_->setCallbacks(this);
  downstream_->shareWrites(services_.scheduler, pod_->tenant->id, pod_->tenant->weight);
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
                        : downstream_pending_.size() + downstream_->queuedWriteBytes() +
                              (router_ ? router_->queuedRequestBytes() : 0));
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
  if (!router_) router_.emplace(services_, *pod_, *this, log_, request_, false, original_destination_);
  // A request without a body is whole with its head.
  router_->start(decision_, http::http1::requestFraming(request_) == BodyFraming::None);
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
  std::string_view body = recordStreamTimeout(kind, *pod_->tenant, log_);
  spdlog::debug("pod {}/{}: {}", pod_->namespace_name, pod_->name, body);
  if (router_) router_->cancel();
  if (response_started_ && in_exchange_) {
    flushResponse();
    close();
    return;
  }
  bool grpc = isGrpcRequest(request_);
  if (kind == StreamTimeout::MaxDuration && (request_complete_ || grpc)) {
    // Envoy: 504 once the request is in, 408 before; gRPC: DEADLINE_EXCEEDED either way.
    onRouterReply({504, "upstream request timeout\n", grpc});
    return;
  }
  // The rest of the request cannot be trusted to follow: the connection ends here.
  close_after_response_ = true;
  sendLocalReply(408, body);
}

void Http1Session::onUpstreamActivity() {
  if (stream_idle_timer_ && stream_idle_timer_->enabled()) stream_idle_timer_->enable(stream_idle_);
}

void Http1Session::endRequest() {
  if (router_) router_->cancel();
  if (request_timer_) request_timer_->disable();
  if (stream_idle_timer_) stream_idle_timer_->disable();
  if (max_duration_timer_) max_duration_timer_->disable();
}

void Http1Session::onBody(std::string_view data) {
  log_.bytes_received += data.size();
  if (discard_body_) return;
  if (router_) router_->sendData(data);
  updateDownstreamReading();
}

void Http1Session::updateDownstreamReading() {
  if (closed_ || tunnelOpen()) return;
  bool blocked = share_pause_ != nullptr || downstream_pending_.size() > kPendingLimit ||
                 (in_exchange_ && router_ && !router_->acceptsRequestData());
  downstream_->readEnable(!blocked);
  chargeBuffered();
}

void Http1Session::updateUpstreamReading() {
  if (closed_ || !router_ || tunnelOpen()) return;
  router_->setResponseFlow(downstream_->queuedWriteBytes() <= kWriteHighWatermark);
  chargeBuffered();
}

void Http1Session::onMessageComplete() {
  request_complete_ = true;
  log_.last_downstream_rx = services_.dispatcher.now();
  if (discard_body_) {
    if (!in_exchange_) return;
    // The response (or a local reply) went out already: the exchange ends with the request.
    finishExchange();
    return;
  }
  if (request_timer_) request_timer_->disable();
  if (router_) router_->end();  // the route and per-try timeouts start here
}

void Http1Session::onUpstreamHead(http::ResponseHead& head, bool end_stream) {
  response_started_ = true;
  countStatus(head.status);
  router::prepareDownstreamResponse(*routes_, decision_, head.headers);
  log_.response_code = static_cast<uint32_t>(head.status);
  log_.response_code_details = "via_upstream";
  if (access_logs_.enabled()) log_.response_headers = head.headers;
  response_framing_ = http::http1::responseFraming(head, request_.method == "HEAD");
  response_out_ += http::http1::encodeResponseHead(head, response_framing_, close_after_response_);
  if (end_stream) onUpstreamEnd({});
}

void Http1Session::onUpstreamData(std::string_view data) {
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

// Response trailers (an HTTP/2 upstream's) have no HTTP/1.1 encoding here and are dropped.
void Http1Session::onUpstreamEnd(const http::HeaderMap&) {
  http::http1::appendBodyEnd(response_out_, response_framing_);
  flushResponse();
  if (!request_complete_) {
    // The upstream answered before the request ended: the rest of the body is dropped
    // (the attempt did not pool its connection).
    discard_body_ = true;
    return;
  }
  finishExchange();
}

void Http1Session::onResponseAborted() {
  // Part of a response went out; the only honest signal left is closing.
  flushResponse();
  close();
}

void Http1Session::onRouterReply(const RouterReply& reply) {
  // A request whose body is still coming cannot be trusted to end cleanly: the
  // connection closes after the answer (Envoy's rule for HTTP/1.1).
  close_after_response_ = close_after_response_ || !request_complete_;
  if (reply.grpc_deadline_exceeded) {
    sendGrpcDeadlineExceeded();
  } else {
    sendLocalReply(reply.status, reply.body);
  }
}

void Http1Session::sendLocalReply(int status, std::string_view body, const http::HeaderMap* extra_headers) {
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

// DEADLINE_EXCEEDED as a trailers-only response (what a gRPC client understands; Envoy
// answers the same).
void Http1Session::sendGrpcDeadlineExceeded() {
  endRequest();
  response_started_ = true;
  countStatus(200);
  log_.response_code = 200;
  auto head = grpcDeadlineExceededHead();
  head.content_length = 0;  // HTTP/1.1 framing: no body
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
  endRequest();
  headers_timer_.reset();
  request_timer_.reset();
  stream_idle_timer_.reset();
  max_duration_timer_.reset();
  cx_idle_timer_.reset();
  cx_max_duration_timer_.reset();
  tunnel_pick_.reset();
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
