#include "proxy/server/http1_session.h"

#include <sys/socket.h>

#include <cstdio>

#include <spdlog/spdlog.h>

#include "proxy/http/http2/message.h"
#include "proxy/router/route_stats.h"
#include "proxy/router/router.h"
#include "proxy/server/upstream_request.h"

namespace culvert::server {

namespace {

using http::http1::BodyFraming;

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

  // Response bytes are the tenant's work too (a 1 MiB body costs more than its request):
  // charged, and paused like the downstream side when the tenant is over its share.
  void onData(std::string_view data) override {
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
    head_seen_ = true;
    reusable_ = head.keep_alive;
    session_.onResponseHead(head);
  }
  void onBody(std::string_view data) override { session_.onResponseBody(data); }
  void onMessageComplete() override { response_complete_ = true; }

private:
  Http1Session& session_;
  std::unique_ptr<network::TcpConnection> connection_;
  http::http1::Parser parser_;
  bool head_seen_ = false;
  bool response_complete_ = false;
  bool reusable_ = false;
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
  downstream_->readEnable(true);
  if (!initial_bytes.empty()) onData(initial_bytes);
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
  if (closed_ || share_pause_ || !services_.scheduler.overShare(pod_->tenant->id)) return;
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
  request_ = std::move(head);
  request_start_ = std::chrono::steady_clock::now();
  request_complete_ = false;
  in_exchange_ = true;
  discard_body_ = false;
  response_started_ = false;
  close_after_response_ = !request_.keep_alive;
  route_timeout_ = std::chrono::milliseconds(0);
  pod_->tenant->downstream_rq_total->inc();
  if (!admitRequest()) return;
  // HTTP/1.0 clients do not send Expect; a 1.0 request carrying it gets no interim reply.
  if (router::takeExpectContinue(request_.headers) && request_.version_minor == 1) {
    downstream_->write("HTTP/1.1 100 Continue\r\n\r\n");
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
  auto target = routeToUpstream(services_.clusters, *routes_, request_, original_destination_, routeRandom(), decision_);
  if (!target) {
    sendLocalReply(target.error().status, target.error().body);
    return;
  }
  route_timeout_ = decision_.route->route->timeout;
  common::SocketAddress endpoint = target->endpoint;

  // The request as the upstream will see it.
  prepareUpstreamRequest(request_, *routes_, decision_, pod_->ip);
  if (target->cluster->http_protocol == config::UpstreamHttpProtocol::Http2 && services_.http2_pool != nullptr) {
    // The body goes as raw DATA: no HTTP/1.1 framing on this side.
    bool has_body = http::http1::requestFraming(request_) != BodyFraming::None;
    request_framing_ = BodyFraming::None;
    pool_key_ = upstream::PoolKey{pod_->id, endpoint.toString(), upstream::Protocol::Http2};
    h2_upstream_ = std::make_unique<Http2UpstreamBridge>(*this, http::http2::toRequestBlock(request_, "http"), !has_body);
    h2_upstream_->start(*services_.http2_pool,
                        {pool_key_, pod_->netnsFd(), endpoint, target->cluster->connect_timeout});
    return;
  }
  request_framing_ = http::http1::requestFraming(request_);
  upstream_pending_ = http::http1::encodeRequestHead(request_, request_framing_);

  pool_key_ = upstream::PoolKey{pod_->id, endpoint.toString(), upstream::Protocol::Http1};
  upstream::ConnectRequest connect{pool_key_, pod_->netnsFd(), endpoint, target->cluster->connect_timeout};
  connecting_ = services_.pool.acquire(connect, [this](auto result) { onUpstreamReady(std::move(result)); });
}

void Http1Session::onUpstreamReady(common::Result<std::unique_ptr<network::TcpConnection>> connection) {
  connecting_.reset();
  if (!connection) {
    pod_->tenant->upstream_cx_connect_fail->inc();
    spdlog::debug("pod {}/{}: upstream {}: {}", pod_->namespace_name, pod_->name, pool_key_.endpoint,
                  connection.error().describe());
    onUpstreamFailed(connection.error().describe(), false);
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
  if (discard_body_) return;
  if (h2_upstream_) {
    h2_upstream_->sendData(data);
    updateDownstreamReading();
    return;
  }
  if (upstream_) {
    std::string chunk;
    http::http1::appendBody(chunk, data, request_framing_);
    upstream_->write(chunk);
    updateDownstreamReading();
    return;
  }
  http::http1::appendBody(upstream_pending_, data, request_framing_);
  updateDownstreamReading();
}

void Http1Session::updateDownstreamReading() {
  if (closed_) return;
  bool blocked = share_pause_ != nullptr || downstream_pending_.size() > kPendingLimit ||
                 upstream_pending_.size() > kPendingLimit ||
                 (upstream_ && upstream_->queuedWriteBytes() > kWriteHighWatermark) ||
                 (h2_upstream_ && h2_upstream_->queuedBytes() > kWriteHighWatermark);
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
  if (closed_ || !upstream_) return;
  upstream_->readEnable(!upstream_share_pause_ && downstream_->queuedWriteBytes() <= kWriteHighWatermark);
  chargeBuffered();
}

void Http1Session::onMessageComplete() {
  request_complete_ = true;
  if (discard_body_) {
    if (!in_exchange_) return;
    // A local reply already went out: the exchange ends with the request.
    finishExchange();
    return;
  }
  if (h2_upstream_) h2_upstream_->end();
  std::string end;
  http::http1::appendBodyEnd(end, request_framing_);
  if (upstream_) {
    upstream_->write(end);
  } else {
    upstream_pending_ += end;
  }
  // Envoy's route timeout: from the end of the downstream request to the end of the
  // upstream response, connecting included; 0 disables it.
  if (route_timeout_.count() > 0 && in_exchange_) {
    if (!route_timer_) route_timer_ = services_.dispatcher.createTimer([this] { onRouteTimeout(); });
    route_timer_->enable(route_timeout_);
  }
  if (upstream_ && upstream_->responseComplete()) finishExchange();
}

void Http1Session::onResponseHead(http::ResponseHead& head) {
  response_started_ = true;
  countStatus(head.status);
  http::http1::removeHopByHopHeaders(head.headers);
  router::prepareDownstreamResponse(*routes_, decision_, head.headers);
  response_framing_ = http::http1::responseFraming(head, request_.method == "HEAD");
  response_out_ += http::http1::encodeResponseHead(head, response_framing_, close_after_response_);
}

void Http1Session::onResponseBody(std::string_view data) {
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
  spdlog::debug("pod {}/{}: {} {}: {}", pod_->namespace_name, pod_->name, request_.method, request_.path, reason);
  // Deleting the exchange from inside its own callback: defer.
  if (upstream_) services_.dispatcher.deferredDelete(std::move(upstream_));
  if (h2_upstream_) services_.dispatcher.deferredDelete(std::move(h2_upstream_));
  if (response_started) {
    // Part of a response went out; the only honest signal left is closing.
    close();
    return;
  }
  close_after_response_ = close_after_response_ || !request_complete_;
  sendLocalReply(503, "upstream connect error or disconnect/reset before headers\n");
}

void Http1Session::sendLocalReply(int status, std::string_view body, const http::HeaderMap* extra_headers) {
  connecting_.reset();
  response_started_ = true;
  countStatus(status);
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
  spdlog::debug("pod {}/{}: {} {}: route timeout {} ms", pod_->namespace_name, pod_->name, request_.method,
                request_.path, route_timeout_.count());
  connecting_.reset();
  // The upstream connection is mid-exchange: it can never be reused.
  if (upstream_) services_.dispatcher.deferredDelete(std::move(upstream_));
  h2_upstream_.reset();
  if (response_started_) {
    flushResponse();
    close();
    return;
  }
  sendLocalReply(504, "upstream request timeout\n");
}

void Http1Session::recordDuration() {
  if (request_start_ == std::chrono::steady_clock::time_point{}) return;
  auto us = std::chrono::duration_cast<std::chrono::microseconds>(std::chrono::steady_clock::now() - request_start_);
  request_start_ = {};
  std::string_view route = decision_.route ? std::string_view(decision_.route->name) : std::string_view{};
  router::requestDurationHistogram(services_.stats, pod_->tenant->name, route, decision_.cluster())
      .observe(static_cast<uint64_t>(us.count()));
}

void Http1Session::finishExchange() {
  recordDuration();
  in_exchange_ = false;
  // An idle keep-alive connection holds no per-request state: the request's headers and
  // the response staging buffer are released here, not when the next request comes.
  request_ = http::RequestHead{};
  decision_ = {};
  std::string().swap(response_out_);
  request_slot_.release();
  if (route_timer_) route_timer_->disable();
  if (close_after_response_) {
    if (downstream_->queuedWriteBytes() == 0) close();
    return;
  }
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

void Http1Session::onClose(network::CloseReason) { close(); }

void Http1Session::onWriteDrained() {
  if (close_after_response_ && !in_exchange_) {
    close();
    return;
  }
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
  if (upstream_) services_.dispatcher.deferredDelete(std::move(upstream_));
  if (h2_upstream_) services_.dispatcher.deferredDelete(std::move(h2_upstream_));
  downstream_->close();
  if (on_done_) on_done_(this);
}

}  // namespace culvert::server
