#include "proxy/server/http1_session.h"

#include <sys/socket.h>

#include <cstdio>
#include <random>

#include <spdlog/spdlog.h>

#include "proxy/router/hash_policy.h"
#include "proxy/router/route_matcher.h"

namespace culvert::server {

namespace {

using http::http1::BodyFraming;

// A read pauses while this much waits for a slower side (pipelined requests, or request
// body before the upstream connection is up).
constexpr size_t kPendingLimit = 64 * 1024;
// Back-pressure: a side stops reading while the other side's socket has more than this
// queued in user space, and resumes once that queue has drained into the kernel.
constexpr size_t kWriteHighWatermark = 256 * 1024;
// A connection keeps at most this much staging capacity between responses, so an idle
// connection holds no large buffer.
constexpr size_t kRetainedOutputBytes = 4 * 1024;

std::string generateRequestId() {
  thread_local std::mt19937_64 rng{std::random_device{}()};
  uint64_t a = rng();
  uint64_t b = rng();
  // RFC 4122 version 4 layout.
  a = (a & 0xffffffffffff0fffULL) | 0x0000000000004000ULL;
  b = (b & 0x3fffffffffffffffULL) | 0x8000000000000000ULL;
  char buf[37];
  std::snprintf(buf, sizeof buf, "%08x-%04x-%04x-%04x-%012llx", static_cast<unsigned>(a >> 32),
                static_cast<unsigned>((a >> 16) & 0xffff), static_cast<unsigned>(a & 0xffff),
                static_cast<unsigned>(b >> 48), static_cast<unsigned long long>(b & 0xffffffffffffULL));
  return buf;
}

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

  void onData(std::string_view data) override {
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
}

Http1Session::~Http1Session() {
  pod_->tenant->downstream_cx_active->add(-1);
}

void Http1Session::start(std::string_view initial_bytes) {
  downstream_->readEnable(true);
  if (!initial_bytes.empty()) onData(initial_bytes);
}

void Http1Session::onData(std::string_view data) {
  services_.scheduler.run(pod_->tenant->id, [&] { feed(data); });
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
  request_complete_ = false;
  in_exchange_ = true;
  discard_body_ = false;
  response_started_ = false;
  close_after_response_ = !request_.keep_alive;
  route_timeout_ = std::chrono::milliseconds(0);
  pod_->tenant->downstream_rq_total->inc();
  routeRequest();
}

void Http1Session::routeRequest() {
  const auto* route = router::matchRoute(*routes_, request_.authority(), request_.path, request_.headers);
  if (route == nullptr) {
    sendLocalReply(404, "no route\n");
    return;
  }
  if (route->direct_response) {
    sendLocalReply(static_cast<int>(route->direct_response->status), route->direct_response->body);
    return;
  }
  const auto& action = *route->route;
  route_timeout_ = action.timeout;
  upstream::ClusterManager::PickContext pick;
  if (!action.hash_policy.empty()) pick.hash = router::hashRequest(action.hash_policy, request_.headers, pod_->ip);
  auto selection = services_.clusters.pickEndpoint(action.cluster, pick);
  if (!selection) {
    switch (selection.error()) {
      case upstream::ClusterManager::PickError::NoCluster:
        sendLocalReply(503, "no cluster\n");
        break;
      case upstream::ClusterManager::PickError::NoHealthyEndpoint:
        sendLocalReply(503, "no healthy upstream\n");
        break;
      case upstream::ClusterManager::PickError::Overflow:
        sendLocalReply(503, "upstream overflow\n");
        break;
    }
    return;
  }
  active_request_ = std::move(selection->request);

  common::SocketAddress endpoint = selection->endpoint.address;
  if (selection->original_destination) {
    if (!original_destination_) {
      sendLocalReply(503, "no original destination for an ORIGINAL_DST cluster\n");
      return;
    }
    endpoint = *original_destination_;
  }

  // The request as the upstream will see it.
  auto& headers = request_.headers;
  http::http1::removeHopByHopHeaders(headers);
  if (action.prefix_rewrite && route->match.prefix) {
    request_.path = *action.prefix_rewrite + request_.path.substr(std::min(request_.path.size(), route->match.prefix->size()));
  }
  if (action.host_rewrite_literal) headers.set("host", *action.host_rewrite_literal);
  if (auto xff = headers.get("x-forwarded-for")) {
    headers.set("x-forwarded-for", std::string(*xff) + ", " + pod_->ip);
  } else {
    headers.add("x-forwarded-for", pod_->ip);
  }
  if (!headers.get("x-request-id")) headers.add("x-request-id", generateRequestId());
  if (!headers.get("x-forwarded-proto")) headers.add("x-forwarded-proto", "http");
  request_framing_ = http::http1::requestFraming(request_);
  upstream_pending_ = http::http1::encodeRequestHead(request_, request_framing_);

  pool_key_ = upstream::PoolKey{pod_->id, endpoint.toString(), upstream::Protocol::Http1, action.cluster};
  upstream::ConnectRequest connect{pool_key_, pod_->netnsFd(), endpoint, selection->cluster->connect_timeout};
  attempt_cluster_ = action.cluster;
  attempt_endpoint_ = endpoint;
  attempt_reported_ = false;
  if (!services_.pool.hasIdle(pool_key_)) {
    // A new connection: the cluster's max_connections and max_pending_requests apply.
    auto connection_unit = services_.clusters.reserveConnection(action.cluster);
    if (!connection_unit) {
      sendLocalReply(503, "upstream overflow\n");
      return;
    }
    auto pending_unit = services_.clusters.reservePending(action.cluster);
    if (!pending_unit) {
      sendLocalReply(503, "upstream overflow\n");
      return;
    }
    pending_unit_ = std::move(*pending_unit);
    connect.lifetime_token = std::make_shared<upstream::ResourceHold>(std::move(*connection_unit));
  }
  attempt_started_ = services_.dispatcher.now();
  connecting_ = services_.pool.acquire(connect, [this](auto result) { onUpstreamReady(std::move(result)); });
}

void Http1Session::onUpstreamReady(common::Result<std::unique_ptr<network::TcpConnection>> connection) {
  connecting_.reset();
  pending_unit_.reset();
  if (!connection) {
    reportAttempt({upstream::AttemptOutcome::Kind::ConnectFailure});
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
  bool blocked = downstream_pending_.size() > kPendingLimit || upstream_pending_.size() > kPendingLimit ||
                 (upstream_ && upstream_->queuedWriteBytes() > kWriteHighWatermark);
  downstream_->readEnable(!blocked);
}

void Http1Session::updateUpstreamReading() {
  if (closed_ || !upstream_) return;
  upstream_->readEnable(downstream_->queuedWriteBytes() <= kWriteHighWatermark);
}

void Http1Session::onMessageComplete() {
  request_complete_ = true;
  if (discard_body_) {
    if (!in_exchange_) return;
    // A local reply already went out: the exchange ends with the request.
    finishExchange();
    return;
  }
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
  reportAttempt({upstream::AttemptOutcome::Kind::Response, head.status,
                 std::chrono::duration_cast<std::chrono::microseconds>(services_.dispatcher.now() - attempt_started_)});
  countStatus(head.status);
  http::http1::removeHopByHopHeaders(head.headers);
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
  reportAttempt({upstream::AttemptOutcome::Kind::Reset});
  // Deleting the exchange from inside its own callback: defer.
  if (upstream_) services_.dispatcher.deferredDelete(std::move(upstream_));
  if (response_started) {
    // Part of a response went out; the only honest signal left is closing.
    close();
    return;
  }
  close_after_response_ = close_after_response_ || !request_complete_;
  sendLocalReply(503, "upstream connect error or disconnect/reset before headers\n");
}

void Http1Session::sendLocalReply(int status, std::string_view body) {
  connecting_.reset();
  response_started_ = true;
  countStatus(status);
  http::ResponseHead head;
  head.status = status;
  head.content_length = body.size();
  head.headers.add("content-type", "text/plain");
  std::string out = http::http1::encodeResponseHead(head, BodyFraming::ContentLength, close_after_response_);
  out.append(body);
  downstream_->write(out);
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

void Http1Session::onRouteTimeout() {
  if (!in_exchange_ || closed_) return;
  pod_->tenant->upstream_rq_timeout->inc();
  spdlog::debug("pod {}/{}: {} {}: route timeout {} ms", pod_->namespace_name, pod_->name, request_.method,
                request_.path, route_timeout_.count());
  connecting_.reset();
  pending_unit_.reset();
  reportAttempt({upstream::AttemptOutcome::Kind::Timeout});
  // The upstream connection is mid-exchange: it can never be reused.
  if (upstream_) services_.dispatcher.deferredDelete(std::move(upstream_));
  if (response_started_) {
    flushResponse();
    close();
    return;
  }
  sendLocalReply(504, "upstream request timeout\n");
}

void Http1Session::reportAttempt(const upstream::AttemptOutcome& outcome) {
  // Once per attempt: a reset after the head was reported changes nothing.
  if (attempt_reported_ || attempt_cluster_.empty()) return;
  attempt_reported_ = true;
  services_.clusters.reportOutcome(attempt_cluster_, attempt_endpoint_, outcome);
}

void Http1Session::finishExchange() {
  in_exchange_ = false;
  active_request_.reset();
  attempt_cluster_.clear();
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
  route_timer_.reset();
  connecting_.reset();
  pending_unit_.reset();
  active_request_.reset();
  if (upstream_) services_.dispatcher.deferredDelete(std::move(upstream_));
  downstream_->close();
  if (on_done_) on_done_(this);
}

}  // namespace culvert::server
