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

Http1Session::Exchange::Exchange(Http1Session& s)
    : session(s),
      parser(http::http1::Parser::Mode::Request, *this),
      headers_timer([](void* p) { static_cast<Http1Session*>(p)->onStreamTimeout(StreamTimeout::Headers); }, &s),
      request_timer([](void* p) { static_cast<Http1Session*>(p)->onStreamTimeout(StreamTimeout::Request); }, &s),
      stream_idle_timer([](void* p) { static_cast<Http1Session*>(p)->onStreamTimeout(StreamTimeout::Idle); }, &s),
      max_duration_timer([](void* p) { static_cast<Http1Session*>(p)->onStreamTimeout(StreamTimeout::MaxDuration); },
                         &s) {}

Http1Session::Exchange::~Exchange() = default;

Http1Session::Http1Session(WorkerServices& services, std::shared_ptr<const Pod> pod,
                           std::shared_ptr<const Http1Settings> settings,
                           std::unique_ptr<network::TcpConnection> downstream, Owner& owner)
    : services_(services), pod_(std::move(pod)), downstream_(std::move(downstream)), owner_(owner),
      settings_(std::move(settings)),
      cx_idle_timer_([](void* p) { static_cast<Http1Session*>(p)->onConnectionIdleTimeout(); }, this) {
  downstream_->setCallbacks(this);
  pod_->tenant->downstream_cx_total->inc();
  pod_->tenant->downstream_cx_active->add(1);
  buffered_.bind(*pod_->tenant);
}

Http1Session::~Http1Session() {
  exchange_.reset();  // its router and timers go before what they borrow from the session
  pod_->tenant->downstream_cx_active->add(-1);
  pod_->tenant->budget.releaseConnection();
}

void Http1Session::start(std::string_view initial_bytes) {
  if (settings_->access_logs.enabled()) {
    log_facts_ = std::make_unique<ConnectionLogFacts>(connectionLogFacts(downstream_->fd(), *pod_, original_destination_));
  }
  if (settings_->lifetime.max_duration.count() > 0) {
    cx_max_duration_timer_ = std::make_unique<event::QueuedTimer>(
        [](void* p) { static_cast<Http1Session*>(p)->onMaxConnectionDuration(); }, this);
    cx_max_duration_timer_->enable(services_.dispatcher.timerQueue(), settings_->lifetime.max_duration);
  }
  armConnectionIdleTimer();
  downstream_->readEnable(true);
  if (!initial_bytes.empty()) onData(initial_bytes);
}

void Http1Session::armConnectionIdleTimer() {
  if (settings_->lifetime.idle_timeout.count() == 0) return;
  cx_idle_timer_.enable(services_.dispatcher.timerQueue(), settings_->lifetime.idle_timeout);
}

bool Http1Session::tunnelOpen() const { return exchange_ && exchange_->tunnel && exchange_->tunnel->open(); }

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
      std::string pending = downstream_pending_.take();
      onData(pending);
    }
    // Reading stopped at the pause; the replay may have answered everything from inside
    // the parser (a direct response), which re-enables nothing itself.
    updateDownstreamReading();
  });
  pod_->tenant->share_paused->inc();
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
    if (!exchange_) {
      // A request's first bytes: its state exists from here to the end of its exchange
      // (a fresh parser each time: between messages llhttp keeps nothing that matters).
      if (data.empty()) return;
      exchange_ = std::make_unique<Exchange>(*this);
    }
    Exchange& ex = *exchange_;
    if (!in_exchange_ && !request_begun_ && !data.empty()) {
      cx_idle_timer_.disable();
      beginStreamTimers();
    }
    if (ex.stream_idle_timer.enabled()) armStreamTimer(ex.stream_idle_timer, ex.stream_idle);
    parser_inside_dispatch_ = true;
    auto r = ex.parser.dispatch(data);
    parser_inside_dispatch_ = false;
    if (r.status == http::http1::Parser::Status::Ok) return;
    if (r.status == http::http1::Parser::Status::Error) {
      pod_->tenant->downstream_rq_bad->inc();
      // Rare by construction (the connection closes), so the labelled lookup is affordable.
      services_.stats
          .counter("culvert_http_downstream_rq_rejected_total",
                   {{"tenant", pod_->tenant->name}, {"reason", http::http1::toString(ex.parser.rejectReason())}},
                   "Malformed downstream HTTP/1.1 requests by reason (answered 400)")
          .inc();
      spdlog::debug("pod {}/{}: bad request ({}): {}", pod_->namespace_name, pod_->name,
                    http::http1::toString(ex.parser.rejectReason()), ex.parser.errorReason());
      close_after_response_ = true;
      ex.decision = {};
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
    // The exchange ended inside the parser (a local reply): the next bytes start another.
    if (close_after_response_) return;
    if (data.empty()) return;
  }
}

void Http1Session::onRequestHead(http::RequestHead&& head) {
  Exchange& ex = *exchange_;
  ex.headers_timer.disable();
  request_begun_ = false;  // the next request's first byte starts its timers again
  ex.request = std::move(head);
  ex.request_start = std::chrono::steady_clock::now();
  if (settings_->access_logs.enabled()) {
    beginRecord(ex.log, *log_facts_, *pod_, ex.request.version_minor == 0 ? "HTTP/1.0" : "HTTP/1.1", ex.request_start);
    ex.log.request = &ex.request;
  }
  request_complete_ = false;
  in_exchange_ = true;
  discard_body_ = false;
  response_started_ = false;
  close_after_response_ = !ex.request.keep_alive || draining_;
  if (settings_->lifetime.max_requests > 0 && ++requests_ == settings_->lifetime.max_requests && !draining_) {
    // max_requests_per_connection, as Envoy: this request is the connection's last; its
    // answer says "connection: close".
    pod_->tenant->downstream_cx_max_requests_reached->inc();
    draining_ = true;
    close_after_response_ = true;
  }
  pod_->tenant->downstream_rq_total->inc();
  if (!admitRequest()) return;
  // HTTP/1.0 clients do not send Expect; a 1.0 request carrying it gets no interim reply.
  if (router::takeExpectContinue(ex.request.headers) && ex.request.version_minor == 1) {
    downstream_->write("HTTP/1.1 100 Continue\r\n\r\n");
  }
  if (auto upgrade = router::requestedUpgrade(ex.request)) {
    startUpgrade(*upgrade);
    return;
  }
  routeRequest();
}

bool Http1Session::admitRequest() {
  auto refused = exchange_->request_slot.admit(*pod_->tenant);
  if (!refused) return true;
  // Only this tenant is over its budget: a 503 the client may retry after a pause.
  http::HeaderMap headers;
  headers.add("retry-after", "1");
  headers.add(std::string(tenant::kOverloadHeader), tenant::overloadReason(*refused));
  exchange_->log.fail(Flag::OverloadManager, "tenant_over_budget{" + tenant::overloadReason(*refused) + "}");
  sendLocalReply(503, "tenant over budget\n", &headers);
  return false;
}

// Bytes waiting in user space on either side, for the tenant's buffered-bytes budget.
void Http1Session::chargeBuffered() {
  buffered_.set(closed_ ? 0
                        : downstream_pending_.size() + downstream_->queuedWriteBytes() +
                              (exchange_ && exchange_->router ? exchange_->router->queuedRequestBytes() : 0));
}

void Http1Session::routeRequest() {
  Exchange& ex = *exchange_;
  ex.decision = router::decideRoute(*settings_->routes, ex.request, routeRandom());
  const auto* route = ex.decision.route;
  if (route == nullptr) {
    ex.log.fail(Flag::NoRouteFound, "route_not_found");
    sendLocalReply(404, "no route\n");
    return;
  }
  ex.log.route_name = route->name;
  if (route->direct_response) {
    ex.log.response_code_details = "direct_response";
    sendLocalReply(static_cast<int>(route->direct_response->status), route->direct_response->body);
    return;
  }
  const auto& action = *route->route;
  ex.action = &action;
  ex.log.upstream_cluster = ex.decision.cluster();
  if (action.idle_timeout) {
    // The route's idle_timeout replaces the connection manager's stream_idle_timeout.
    ex.stream_idle = *action.idle_timeout;
    ex.stream_idle_timer.disable();
    if (ex.stream_idle.count() > 0) armStreamTimer(ex.stream_idle_timer, ex.stream_idle);
  }
  if (action.max_stream_duration) {
    auto limit = router::streamDurationLimit(*action.max_stream_duration, ex.request.headers);
    if (limit.count() > 0) armStreamTimer(ex.max_duration_timer, limit);
  }

  // The request as the upstream will see it.
  prepareUpstreamRequest(ex.request, *settings_->routes, ex.decision, pod_->ip);
  ex.router.emplace(services_, *pod_, ex, ex.log, ex.request, false, original_destination_);
  // A request without a body is whole with its head.
  ex.router->start(ex.decision, http::http1::requestFraming(ex.request) == BodyFraming::None);
}

void Http1Session::beginStreamTimers() {
  Exchange& ex = *exchange_;
  request_begun_ = true;
  ex.stream_idle = settings_->stream_timeouts.stream_idle;
  if (settings_->stream_timeouts.request_headers.count() > 0) armStreamTimer(ex.headers_timer, settings_->stream_timeouts.request_headers);
  if (settings_->stream_timeouts.request.count() > 0) armStreamTimer(ex.request_timer, settings_->stream_timeouts.request);
  if (ex.stream_idle.count() > 0) armStreamTimer(ex.stream_idle_timer, ex.stream_idle);
}

void Http1Session::armStreamTimer(event::QueuedTimer& timer, std::chrono::milliseconds after) {
  timer.enable(services_.dispatcher.timerQueue(), after);
}

// Envoy's answers: 408 while no response has begun, else the connection closes.
void Http1Session::onStreamTimeout(StreamTimeout kind) {
  if (closed_) return;
  Exchange& ex = *exchange_;  // the stream timers are the exchange's
  std::string_view body = recordStreamTimeout(kind, *pod_->tenant, ex.log);
  spdlog::debug("pod {}/{}: {}", pod_->namespace_name, pod_->name, body);
  if (ex.router) ex.router->cancel();
  if (response_started_ && in_exchange_) {
    flushResponse();
    close();
    return;
  }
  bool grpc = isGrpcRequest(ex.request);
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
  if (exchange_ && exchange_->stream_idle_timer.enabled()) armStreamTimer(exchange_->stream_idle_timer, exchange_->stream_idle);
}

void Http1Session::endRequest() {
  if (!exchange_) return;
  Exchange& ex = *exchange_;
  if (ex.router) ex.router->cancel();
  ex.request_timer.disable();
  ex.stream_idle_timer.disable();
  ex.max_duration_timer.disable();
}

void Http1Session::onBody(std::string_view data) {
  Exchange& ex = *exchange_;
  ex.log.bytes_received += data.size();
  if (discard_body_) return;
  if (ex.router) ex.router->sendData(data);
  updateDownstreamReading();
}

void Http1Session::updateDownstreamReading() {
  if (closed_ || tunnelOpen()) return;
  bool blocked = share_pause_ != nullptr || downstream_pending_.size() > kPendingLimit ||
                 (in_exchange_ && exchange_->router && !exchange_->router->acceptsRequestData());
  downstream_->readEnable(!blocked);
  chargeBuffered();
}

void Http1Session::updateUpstreamReading() {
  if (closed_ || !exchange_ || !exchange_->router || tunnelOpen()) return;
  exchange_->router->setResponseFlow(downstream_->queuedWriteBytes() <= kWriteHighWatermark);
  chargeBuffered();
}

void Http1Session::onMessageComplete() {
  Exchange& ex = *exchange_;
  request_complete_ = true;
  ex.log.last_downstream_rx = services_.dispatcher.now();
  if (discard_body_) {
    if (!in_exchange_) return;
    // The response (or a local reply) went out already: the exchange ends with the request.
    finishExchange();
    return;
  }
  ex.request_timer.disable();
  if (ex.router) ex.router->end();  // the route and per-try timeouts start here
}

void Http1Session::onUpstreamHead(http::ResponseHead& head, bool end_stream) {
  Exchange& ex = *exchange_;
  response_started_ = true;
  countStatus(head.status);
  router::prepareDownstreamResponse(*settings_->routes, ex.decision, head.headers);
  ex.log.response_code = static_cast<uint32_t>(head.status);
  ex.log.response_code_details = "via_upstream";
  if (settings_->access_logs.enabled()) ex.log.response_headers = head.headers;
  ex.response_framing = http::http1::responseFraming(head, ex.request.method == "HEAD");
  http::http1::appendResponseHead(ex.response_out, head, ex.response_framing, close_after_response_);
  if (end_stream) onUpstreamEnd({});
}

void Http1Session::onUpstreamData(std::string_view data) {
  Exchange& ex = *exchange_;
  ex.log.bytes_sent += data.size();
  http::http1::appendBody(ex.response_out, data, ex.response_framing);
}

// What one upstream read produced (head, body, end) leaves in one write.
void Http1Session::flushResponse() {
  if (!exchange_ || exchange_->response_out.empty()) return;
  std::string& out = exchange_->response_out;
  downstream_->write(out);
  out.clear();
  if (out.capacity() > kRetainedOutputBytes) out.shrink_to_fit();
  updateUpstreamReading();
}

// Response trailers (an HTTP/2 upstream's) have no HTTP/1.1 encoding here and are dropped.
void Http1Session::onUpstreamEnd(const http::HeaderMap&) {
  http::http1::appendBodyEnd(exchange_->response_out, exchange_->response_framing);
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
  Exchange& ex = *exchange_;  // a reply answers a request: its exchange exists
  endRequest();
  response_started_ = true;
  countStatus(status);
  ex.log.response_code = static_cast<uint32_t>(status);
  ex.log.bytes_sent += body.size();
  http::ResponseHead head;
  head.status = status;
  head.content_length = body.size();
  head.headers.add("content-type", "text/plain");
  router::prepareDownstreamResponse(*settings_->routes, ex.decision, head.headers);
  if (extra_headers) {
    for (const auto& [name, value] : extra_headers->entries()) head.headers.add(name, value);
  }
  std::string out = http::http1::encodeResponseHead(head, BodyFraming::ContentLength, close_after_response_);
  out.append(body);
  if (settings_->access_logs.enabled()) ex.log.response_headers = head.headers;
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
  exchange_->log.response_code = 200;
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
  if (!exchange_ || exchange_->request_start == std::chrono::steady_clock::time_point{}) return;
  Exchange& ex = *exchange_;
  auto us = std::chrono::duration_cast<std::chrono::microseconds>(std::chrono::steady_clock::now() - ex.request_start);
  ex.request_start = {};
  std::string_view route = ex.decision.route ? std::string_view(ex.decision.route->name) : std::string_view{};
  router::requestDurationHistogram(services_.stats, pod_->tenant->name, route, ex.decision.cluster())
      .observe(static_cast<uint64_t>(us.count()));
  logRequest();
}

// Once per request, from recordDuration: the line is formatted here and queued for the
// writer thread (proxy/accesslog/log_file.h), never written from the worker.
void Http1Session::logRequest() {
  if (!settings_->access_logs.enabled()) return;
  if (tunnel_log_pending_) return;  // close() logs it with the tunnel's bytes
  Exchange& ex = *exchange_;
  ex.log.end = std::chrono::steady_clock::now();
  settings_->access_logs.log(ex.log);
  ex.log.request = nullptr;
}

void Http1Session::finishExchange() {
  recordDuration();
  in_exchange_ = false;
  endRequest();
  exchange_->request_slot.release();
  if (close_after_response_) {
    if (downstream_->queuedWriteBytes() == 0) close();
    return;
  }
  // An idle keep-alive connection holds no per-request state: the exchange (parser,
  // request, router, timers, response staging, log record) goes now, not when the next
  // request comes. After the current callback: we may be inside its parser or router.
  services_.dispatcher.deferredDelete(std::move(exchange_));
  armConnectionIdleTimer();
  // Reached from an upstream callback (not from inside the downstream parser): replay
  // what arrived meanwhile (a new exchange parses it).
  if (!parser_inside_dispatch_) {
    updateDownstreamReading();
    if (!downstream_pending_.empty()) {
      std::string pending = downstream_pending_.take();
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
  if (exchange_ && exchange_->tunnel && reason == network::CloseReason::RemoteClose &&
      exchange_->tunnel->downstreamEnded()) {
    return;
  }
  if (in_exchange_) exchange_->log.flags.set(Flag::DownstreamConnectionTermination);
  close();
}

void Http1Session::onWriteDrained() {
  if (close_after_response_ && !in_exchange_) {
    close();
    return;
  }
  // A slow reader draining a long response is activity too (Envoy counts encoded data).
  if (exchange_ && exchange_->stream_idle_timer.enabled()) armStreamTimer(exchange_->stream_idle_timer, exchange_->stream_idle);
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
  buffered_.set(0);
  share_pause_.reset();
  endRequest();
  cx_idle_timer_.disable();
  cx_max_duration_timer_.reset();
  if (exchange_) {
    // The exchange itself goes with the session (we may be inside its parser or router).
    Exchange& ex = *exchange_;
    ex.request_slot.release();
    ex.headers_timer.disable();
    ex.tunnel_pick.reset();
    if (ex.tunnel) {
      if (tunnel_log_pending_) {
        tunnel_log_pending_ = false;
        ex.log.bytes_received += ex.tunnel->bytesFromDownstream();
        ex.log.bytes_sent += ex.tunnel->bytesToDownstream();
        logRequest();
      }
      ex.tunnel->abort();
      services_.dispatcher.deferredDelete(std::move(ex.tunnel));  // we may be inside its callbacks
    }
    if (ex.tunnels_active) ex.tunnels_active->add(-1);
    ex.tunnels_active = nullptr;
  }
  downstream_->close();
  owner_.onSessionDone(this);
}

}  // namespace culvert::server
