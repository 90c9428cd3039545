#include "proxy/server/http2_session.h"

#include <sys/socket.h>

#include <spdlog/spdlog.h>

#include "proxy/http/http1/encoder.h"
#include "proxy/http/http1/parser.h"
#include "proxy/http/http2/message.h"
#include "proxy/server/upstream_request.h"

namespace culvert::server {

namespace {

// A side stops taking bytes while this much waits to go out on the other side.
constexpr size_t kHighWatermark = 256 * 1024;
constexpr size_t kRetainedOutputBytes = 4 * 1024;
constexpr uint32_t kInternalError = 0x2;
// How long a finished connection waits for its queued output to move (Envoy's
// delayed_close_timeout default).
constexpr std::chrono::milliseconds kDelayedCloseTimeout{1000};

}  // namespace

// One request/response exchange: the downstream stream and its upstream, which is either a
// pooled HTTP/1.1 connection of its own or a stream on a shared HTTP/2 connection.
class Http2Session::Stream : public upstream::Http2StreamCallbacks,
                             public network::ConnectionCallbacks,
                             public http::http1::ParserCallbacks {
public:
  Stream(Http2Session& session, int32_t id) : session_(session), id_(id) {}
  ~Stream() override { detach(); }

  void start(http::HeaderMap&& block, bool end_stream) {
    request_ = http::http2::toRequestHead(std::move(block), end_stream);
    request_ended_ = end_stream;
    if (session_.access_logs_.enabled()) {
      beginRecord(log_, session_.log_facts_, *session_.pod_, "HTTP/2", session_.services_.dispatcher.now());
      log_.request = &request_;
      if (end_stream) log_.last_downstream_rx = log_.start;
    }
    // A stream is a request of the pod's tenant: its budgets apply as to HTTP/1.1.
    if (auto refused = slot_.admit(*session_.pod_->tenant)) {
      http::HeaderMap shed;
      shed.add("retry-after", "1");
      shed.add(std::string(tenant::kOverloadHeader), tenant::overloadReason(*refused));
      log_.fail(accesslog::ResponseFlag::OverloadManager,
                "tenant_over_budget{" + tenant::overloadReason(*refused) + "}");
      localReply(503, "tenant over budget\n", &shed);
      return;
    }
    if (request_.method == "CONNECT") {
      // Tunnels are HTTP/1.1 only (proxy/server/tunnel.h); extended CONNECT (RFC 8441) is
      // never offered (no SETTINGS_ENABLE_CONNECT_PROTOCOL), so nghttp2 refuses :protocol.
      session_.services_.stats
          .counter("culvert_http_downstream_upgrades_rejected_total",
                   {{"tenant", session_.pod_->tenant->name}, {"type", "connect"}, {"reason", "http2"}},
                   "Upgrade and CONNECT requests refused: not enabled (403), or CONNECT over HTTP/2 (501)")
          .inc();
      localReply(501, "CONNECT over HTTP/2 is not supported; use HTTP/1.1\n");
      return;
    }
    bool te_trailers = request_.headers.get("te") == "trailers";
    auto target = routeToUpstream(session_.services_.clusters, *session_.routes_, request_,
                                  session_.original_destination_, routeRandom(), decision_);
    if (decision_.route != nullptr) log_.route_name = decision_.route->name;
    if (!target) {
      if (target.error().flag) log_.flags.set(*target.error().flag);
      log_.response_code_details = target.error().details;
      localReply(target.error().status, target.error().body);
      return;
    }
    log_.upstream_cluster = decision_.cluster();
    log_.upstream_host = target->endpoint.toString();
    log_.attempt_count = 1;
    timeout_ = decision_.route->route->timeout;
    prepareUpstreamRequest(request_, *session_.routes_, decision_, session_.pod_->ip);
    const auto& cluster = *target->cluster;
    bool http2 = cluster.http_protocol != config::UpstreamHttpProtocol::Http1;
    upstream::ConnectRequest connect{
        {session_.pod_->id, target->endpoint.toString(), http2 ? upstream::Protocol::Http2 : upstream::Protocol::Http1},
        session_.pod_->netnsFd(),
        target->endpoint,
        cluster.connect_timeout};
    key_ = connect.key;
    if (http2) {
      // gRPC needs "te: trailers" end to end; hop-by-hop removal took it out.
      if (te_trailers) request_.headers.add("te", "trailers");
      if (session_.services_.http2_pool == nullptr) {
        localReply(503, "no HTTP/2 upstream pool\n");
        return;
      }
      connecting_ = session_.services_.http2_pool->acquire(connect, [this](auto result) { onHttp2Ready(result); });
    } else {
      connecting_ = session_.services_.pool.acquire(connect, [this](auto result) { onHttp1Ready(std::move(result)); });
    }
    if (request_ended_) armTimer();
  }

  void onRequestData(std::string_view data) {
    unconsumed_ += data.size();
    log_.bytes_received += data.size();
    if (local_) {
      grantDownstream();
      return;
    }
    if (h1_) {
      std::string chunk;
      http::http1::appendBody(chunk, data, request_framing_);
      h1_->write(chunk);
    } else if (h2_ != nullptr) {
      h2_->sendData(h2_id_, data);
    } else {
      pending_.append(data);  // bounded by the stream window we advertised
    }
    grantDownstream();
  }

  void onRequestEnd(http::HeaderMap&& trailers) {
    request_ended_ = true;
    log_.last_downstream_rx = session_.services_.dispatcher.now();
    if (local_) return;
    request_trailers_ = std::move(trailers);
    if (h1_) {
      std::string end;
      http::http1::appendBodyEnd(end, request_framing_);
      h1_->write(end);
      if (response_complete_) finishHttp1();
    } else if (h2_ != nullptr) {
      h2_->endStream(h2_id_, request_trailers_);
    }
    armTimer();
  }

  // The codec sent all of our response DATA: the upstream may go on.
  void onDownstreamDrained() {
    if (h1_) h1_->readEnable(true);
    if (h2_ != nullptr && upstream_unconsumed_ > 0) {
      h2_->consume(h2_id_, upstream_unconsumed_);
      upstream_unconsumed_ = 0;
    }
  }

  // The downstream stream is gone: let go of the upstream (never reused mid-exchange).
  void detach() {
    logStream();
    timer_.reset();
    connecting_.reset();
    if (h2_ != nullptr) {
      h2_->cancel(h2_id_);
      h2_ = nullptr;
    }
    if (h1_) {
      h1_->setCallbacks(nullptr);
      h1_->close();
      session_.services_.dispatcher.deferredDelete(std::move(h1_));
    }
  }

  // --- HTTP/2 upstream (upstream::Http2StreamCallbacks) ---
  void onResponseHeaders(http::HeaderMap&& block, bool end_stream) override {
    auto head = http::http2::toResponseHead(std::move(block));
    startResponse(head, end_stream);
    if (end_stream) endResponse({});
  }
  void onResponseData(std::string_view data) override {
    log_.bytes_sent += data.size();
    session_.codec_.sendData(id_, data);
    upstream_unconsumed_ += data.size();
    if (session_.codec_.queuedBytes(id_) <= kHighWatermark) {
      h2_->consume(h2_id_, upstream_unconsumed_);
      upstream_unconsumed_ = 0;
    }
    session_.scheduleFlush();
  }
  void onResponseEnd(http::HeaderMap&& trailers) override {
    h2_ = nullptr;
    endResponse(trailers);
  }
  void onStreamFailed(const std::string& reason) override {
    h2_ = nullptr;
    fail(reason);
  }
  void onRequestDrained() override { grantDownstream(); }

  // --- HTTP/1.1 upstream (network::ConnectionCallbacks, http1::ParserCallbacks) ---
  void onData(std::string_view data) override {
    if (response_complete_) {
      h1_reusable_ = false;  // bytes after a complete response
      return;
    }
    auto r = parser_->dispatch(data);
    if (r.status == http::http1::Parser::Status::Error) {
      fail("malformed upstream response: " + parser_->errorReason());
      return;
    }
    if (r.status == http::http1::Parser::Status::Paused && r.consumed != data.size()) h1_reusable_ = false;
    if (response_complete_) {
      if (request_ended_) {
        finishHttp1();
      } else {
        // Answered before the request ended: the connection is not reusable.
        dropHttp1();
      }
    }
    session_.scheduleFlush();
  }
  void onClose(network::CloseReason reason) override {
    if (response_complete_) return;
    if (response_started_ && parser_->finish() && response_complete_) {
      dropHttp1();
      session_.scheduleFlush();
      return;
    }
    dropHttp1();
    fail(std::string("upstream connection closed: ") + network::toString(reason));
  }
  void onWriteDrained() override { grantDownstream(); }
  void onResponseHead(http::ResponseHead&& head) override {
    h1_reusable_ = head.keep_alive;
    http::http1::removeHopByHopHeaders(head.headers);
    startResponse(head, false);
  }
  void onBody(std::string_view data) override {
    log_.bytes_sent += data.size();
    session_.codec_.sendData(id_, data);
    if (session_.codec_.queuedBytes(id_) > kHighWatermark) h1_->readEnable(false);
  }
  void onMessageComplete() override { endResponse({}); }

private:
  void onHttp1Ready(common::Result<std::unique_ptr<network::TcpConnection>> connection) {
    connecting_.reset();
    if (!connection) {
      session_.pod_->tenant->upstream_cx_connect_fail->inc();
      connectFailed(connection.error().describe());
      return;
    }
    h1_ = std::move(*connection);
    parser_ = std::make_unique<http::http1::Parser>(http::http1::Parser::Mode::Response, *this);
    parser_->expectHeadResponse(request_.method == "HEAD");
    h1_->setCallbacks(this);
    h1_->readEnable(true);
    if (request_ended_ && !request_.content_length && pending_.empty()) request_.chunked = false;
    request_framing_ = http::http1::requestFraming(request_);
    std::string out = http::http1::encodeRequestHead(request_, request_framing_);
    http::http1::appendBody(out, pending_, request_framing_);
    if (request_ended_) http::http1::appendBodyEnd(out, request_framing_);
    releasePending();
    h1_->write(out);
    grantDownstream();
  }

  void onHttp2Ready(common::Result<upstream::Http2Connection*> connection) {
    connecting_.reset();
    if (!connection) {
      session_.pod_->tenant->upstream_cx_connect_fail->inc();
      connectFailed(connection.error().describe());
      return;
    }
    auto* c = *connection;
    bool end_at_head = request_ended_ && pending_.empty() && request_trailers_.size() == 0;
    h2_id_ = c->openStream(http::http2::toRequestBlock(request_, "http"), end_at_head, this);
    if (h2_id_ <= 0) {
      fail("cannot open a stream on the upstream HTTP/2 connection");
      return;
    }
    h2_ = c;
    if (!pending_.empty()) c->sendData(h2_id_, pending_);
    if (request_ended_ && !end_at_head) c->endStream(h2_id_, request_trailers_);
    releasePending();
    grantDownstream();
  }

  void releasePending() {
    pending_.clear();
    pending_.shrink_to_fit();
  }

  // Reopens the client's window for what the upstream took.
  void grantDownstream() {
    if (unconsumed_ == 0) return;
    bool upstream_full = (h1_ && h1_->queuedWriteBytes() > kHighWatermark) ||
                         (h2_ != nullptr && h2_->queuedBytes(h2_id_) > kHighWatermark);
    bool connected = local_ || h1_ || h2_ != nullptr;
    if (!connected || upstream_full) return;
    session_.codec_.consume(id_, unconsumed_);
    unconsumed_ = 0;
    session_.scheduleFlush();
  }

  void startResponse(http::ResponseHead& head, bool end_stream) {
    response_started_ = true;
    session_.countStatus(head.status);
    router::prepareDownstreamResponse(*session_.routes_, decision_, head.headers);
    log_.response_code = static_cast<uint32_t>(head.status);
    log_.response_code_details = "via_upstream";
    log_.first_upstream_rx = session_.services_.dispatcher.now();
    if (session_.access_logs_.enabled()) log_.response_headers = head.headers;
    session_.codec_.submitResponse(id_, http::http2::toResponseBlock(head), end_stream);
  }

  void endResponse(const http::HeaderMap& trailers) {
    response_complete_ = true;
    if (session_.access_logs_.enabled()) log_.response_trailers = trailers;
    timer_.reset();
    session_.codec_.endStream(id_, trailers);
    // The response is whole while the client still sends: the rest of the request is
    // dropped as it comes (a reset here would overtake the response's queued DATA).
    if (!request_ended_) local_ = true;
    session_.scheduleFlush();
  }

  void finishHttp1() {
    if (h1_ && h1_reusable_) {
      h1_->setCallbacks(nullptr);
      session_.services_.pool.release(key_, std::move(h1_));
    }
    dropHttp1();
  }

  void dropHttp1() {
    if (!h1_) return;
    h1_->setCallbacks(nullptr);
    h1_->close();
    // We may be inside the connection's own callback.
    session_.services_.dispatcher.deferredDelete(std::move(h1_));
  }

  void fail(const std::string& reason) {
    spdlog::debug("pod {}/{}: {} {}: {}", session_.pod_->namespace_name, session_.pod_->name, request_.method,
                  request_.path, reason);
    timer_.reset();
    dropHttp1();
    if (response_started_) {
      log_.fail(accesslog::ResponseFlag::UpstreamConnectionTermination,
                "upstream_reset_after_response_started{connection_termination}");
      session_.codec_.resetStream(id_, kInternalError);
      session_.scheduleFlush();
      return;
    }
    if (!log_.flags.has(accesslog::ResponseFlag::UpstreamConnectionFailure)) {
      log_.fail(accesslog::ResponseFlag::UpstreamConnectionTermination,
                "upstream_reset_before_response_started{connection_termination}");
    }
    localReply(503, "upstream connect error or disconnect/reset before headers\n");
  }

  void connectFailed(const std::string& reason) {
    log_.upstream_transport_failure_reason = reason;
    log_.fail(accesslog::ResponseFlag::UpstreamConnectionFailure,
              "upstream_reset_before_response_started{connection_failure}");
    fail(reason);
  }

  // Once per stream, when it closes: formatted here, written by the writer thread.
  void logStream() {
    if (logged_ || !session_.access_logs_.enabled() || log_.request == nullptr) return;
    logged_ = true;
    if (!response_complete_ && !local_) log_.flags.set(accesslog::ResponseFlag::DownstreamConnectionTermination);
    log_.end = session_.services_.dispatcher.now();
    session_.access_logs_.log(log_);
  }

  void localReply(int status, std::string_view body, const http::HeaderMap* extra_headers = nullptr) {
    connecting_.reset();
    local_ = true;
    response_started_ = true;
    releasePending();
    session_.countStatus(status);
    log_.response_code = static_cast<uint32_t>(status);
    log_.bytes_sent += body.size();
    http::ResponseHead head;
    head.status = status;
    head.headers.add("content-type", "text/plain");
    head.headers.add("content-length", std::to_string(body.size()));
    router::prepareDownstreamResponse(*session_.routes_, decision_, head.headers);
    if (extra_headers) {
      for (const auto& [name, value] : extra_headers->entries()) head.headers.add(name, value);
    }
    if (session_.access_logs_.enabled()) log_.response_headers = head.headers;
    auto block = http::http2::toResponseBlock(head);
    session_.codec_.submitResponse(id_, block, body.empty());
    if (!body.empty()) {
      session_.codec_.sendData(id_, body);
      session_.codec_.endStream(id_);
    }
    grantDownstream();
    session_.scheduleFlush();
  }

  // Envoy's route timeout: from the end of the request to the end of the response.
  void armTimer() {
    if (timeout_.count() <= 0 || local_ || response_complete_ || timer_) return;
    timer_ = session_.services_.dispatcher.createTimer([this] { onTimeout(); });
    timer_->enable(timeout_);
  }

  void onTimeout() {
    session_.pod_->tenant->upstream_rq_timeout->inc();
    log_.fail(accesslog::ResponseFlag::UpstreamRequestTimeout, "upstream_response_timeout");
    connecting_.reset();
    if (h2_ != nullptr) {
      h2_->cancel(h2_id_);
      h2_ = nullptr;
    }
    dropHttp1();
    if (response_started_) {
      session_.codec_.resetStream(id_, kInternalError);
      session_.scheduleFlush();
      return;
    }
    localReply(504, "upstream request timeout\n");
  }

  Http2Session& session_;
  int32_t id_;
  http::RequestHead request_;
  tenant::RequestSlot slot_;  // the tenant's in-flight and rate budgets, held for the stream's life
  router::RouteDecision decision_;
  http::HeaderMap request_trailers_;
  bool request_ended_ = false;
  bool local_ = false;  // answered by culvert; the rest of the request is dropped
  std::string pending_;  // request body before the upstream is ready
  size_t unconsumed_ = 0;  // request DATA taken from the client, window not yet reopened
  upstream::PoolKey key_;
  std::unique_ptr<upstream::PendingConnection> connecting_;
  std::chrono::milliseconds timeout_{0};
  std::unique_ptr<event::Timer> timer_;
  bool response_started_ = false;
  bool response_complete_ = false;

  // HTTP/1.1 upstream
  std::unique_ptr<network::TcpConnection> h1_;
  std::unique_ptr<http::http1::Parser> parser_;
  http::http1::BodyFraming request_framing_ = http::http1::BodyFraming::None;
  bool h1_reusable_ = false;

  // HTTP/2 upstream
  upstream::Http2Connection* h2_ = nullptr;
  int32_t h2_id_ = 0;
  size_t upstream_unconsumed_ = 0;  // response DATA passed on, upstream window not yet reopened

  accesslog::StreamInfo log_;  // filled only when access logs are configured
  bool logged_ = false;
};

void Http2Session::setAccessLogs(accesslog::SessionLogs logs) {
  access_logs_ = std::move(logs);
  if (access_logs_.enabled()) log_facts_ = connectionLogFacts(downstream_->fd(), *pod_, original_destination_);
}

Http2Session::Http2Session(WorkerServices services, std::shared_ptr<const Pod> pod,
                           std::shared_ptr<const config::RouteConfiguration> routes,
                           std::unique_ptr<network::TcpConnection> downstream, OnDone on_done)
    : services_(services), pod_(std::move(pod)), routes_(std::move(routes)), downstream_(std::move(downstream)),
      on_done_(std::move(on_done)), codec_(http::http2::Mode::Server, http::http2::Limits{}, *this),
      streams_total_(services_.stats.counter("culvert_http2_downstream_streams_total", {{"tenant", pod_->tenant->name}},
                                             "Streams opened on downstream HTTP/2 connections")),
      cx_active_(services_.stats.gauge("culvert_http2_downstream_cx_active", {},
                                       "Open downstream HTTP/2 connections")) {
  downstream_->setCallbacks(this);
  pod_->tenant->downstream_cx_total->inc();
  pod_->tenant->downstream_cx_active->add(1);
  cx_active_.add(1);
  flush_check_ = new uv_check_t{};
  uv_check_init(services_.dispatcher.loop(), flush_check_);
  flush_check_->data = this;
}

Http2Session::~Http2Session() {
  flush_check_->data = nullptr;
  uv_close(reinterpret_cast<uv_handle_t*>(flush_check_), [](uv_handle_t* h) { delete reinterpret_cast<uv_check_t*>(h); });
  streams_.clear();
  pod_->tenant->downstream_cx_active->add(-1);
  pod_->tenant->budget.releaseConnection();  // charged at accept, like every session
  cx_active_.add(-1);
}

void Http2Session::start(std::string_view initial_bytes) {
  if (lifetime_.max_duration.count() > 0) {
    cx_max_duration_timer_ = services_.dispatcher.createTimer([this] { onMaxConnectionDuration(); });
    cx_max_duration_timer_->enable(lifetime_.max_duration);
  }
  armConnectionIdleTimer();
  downstream_->readEnable(true);
  flush();  // our SETTINGS
  if (!initial_bytes.empty()) onData(initial_bytes);
}

Http2Session::Stream* Http2Session::find(int32_t id) {
  auto it = streams_.find(id);
  return it == streams_.end() ? nullptr : it->second.get();
}

void Http2Session::onData(std::string_view data) {
  services_.scheduler.run(pod_->tenant->id, [&] {
    in_codec_ = true;
    bool ok = codec_.receive(data);
    in_codec_ = false;
    if (!ok) {
      pod_->tenant->downstream_rq_bad->inc();
      spdlog::debug("pod {}/{}: HTTP/2 connection error", pod_->namespace_name, pod_->name);
    }
    flush();
  });
}

void Http2Session::scheduleFlush() {
  if (closed_ || flush_scheduled_) return;
  flush_scheduled_ = true;
  uv_check_start(flush_check_, [](uv_check_t* handle) {
    uv_check_stop(handle);
    auto* self = static_cast<Http2Session*>(handle->data);
    if (self == nullptr) return;
    self->flush_scheduled_ = false;
    self->flush();
  });
}

void Http2Session::flush() {
  if (closed_) return;
  if (in_codec_) {
    flush_pending_ = true;
    return;
  }
  do {
    flush_pending_ = false;
    // Past the watermark the output waits in nghttp2, bounded by the client's windows.
    if (downstream_->queuedWriteBytes() > kHighWatermark) break;
    in_codec_ = true;
    codec_.takeOutput(out_);
    in_codec_ = false;
    if (!out_.empty()) {
      downstream_->write(out_);
      out_.clear();
      if (out_.capacity() > kRetainedOutputBytes) out_.shrink_to_fit();
    }
  } while (flush_pending_ && !closed_);
  if (closed_ || !codec_.finished()) return;
  // A graceful end waits for its last bytes to reach the kernel (onWriteDrained flushes
  // again); after a connection error there is nothing worth waiting for.
  if (codec_.failed() || downstream_->queuedWriteBytes() == 0) {
    close();
  } else if (!delayed_close_timer_) {
    // As Envoy's delayed_close_timeout: a reader that takes nothing for this long is
    // dropped; one still reading is given the rest of its response.
    delayed_close_timer_ =
        services_.dispatcher.createTimer([this, queued = downstream_->queuedWriteBytes()]() mutable {
          if (downstream_->queuedWriteBytes() < queued) {
            queued = downstream_->queuedWriteBytes();
            delayed_close_timer_->enable(kDelayedCloseTimeout);
            return;
          }
          close();
        });
    delayed_close_timer_->enable(kDelayedCloseTimeout);
  }
}

void Http2Session::armConnectionIdleTimer() {
  if (lifetime_.idle_timeout.count() == 0 || draining_) return;
  if (!cx_idle_timer_) cx_idle_timer_ = services_.dispatcher.createTimer([this] { onConnectionIdleTimeout(); });
  cx_idle_timer_->enable(lifetime_.idle_timeout);
}

void Http2Session::onConnectionIdleTimeout() {
  if (!streams_.empty() || draining_) return;
  pod_->tenant->downstream_cx_idle_timeout->inc();
  startDrain();
}

void Http2Session::onMaxConnectionDuration() {
  pod_->tenant->downstream_cx_max_duration_reached->inc();
  startDrain();
}

void Http2Session::startDrain() {
  if (closed_ || draining_) return;
  draining_ = true;
  if (cx_idle_timer_) cx_idle_timer_->disable();  // the drain ends the connection now
  codec_.shutdownNotice();
  drain_timer_ = services_.dispatcher.createTimer([this] { onDrainTimeout(); });
  drain_timer_->enable(drain_timeout_);
  flush();
}

void Http2Session::onDrainTimeout() {
  // Streams up to the last one taken go on; once they are done the codec is finished
  // and flush() closes the connection.
  codec_.goAway();
  flush();
}

void Http2Session::onHeaders(int32_t id, http::HeaderMap&& headers, bool end_stream) {
  if (cx_idle_timer_) cx_idle_timer_->disable();
  streams_total_.inc();
  pod_->tenant->downstream_rq_total->inc();
  auto stream = std::make_unique<Stream>(*this, id);
  auto* raw = stream.get();
  streams_[id] = std::move(stream);
  raw->start(std::move(headers), end_stream);
}

void Http2Session::onData(int32_t id, std::string_view data) {
  if (auto* s = find(id)) {
    s->onRequestData(data);
  } else {
    codec_.consume(id, data.size());
  }
}

void Http2Session::onEndStream(int32_t id) {
  if (auto* s = find(id)) s->onRequestEnd({});
}

void Http2Session::onTrailers(int32_t id, http::HeaderMap&& trailers) {
  if (auto* s = find(id)) s->onRequestEnd(std::move(trailers));
}

void Http2Session::onStreamClose(int32_t id, uint32_t) {
  auto it = streams_.find(id);
  if (it == streams_.end()) return;
  // Possibly reached from inside one of the stream's own calls: delete it later.
  it->second->detach();
  services_.dispatcher.deferredDelete(std::move(it->second));
  streams_.erase(it);
  if (streams_.empty()) armConnectionIdleTimer();
}

void Http2Session::onStreamDrained(int32_t id) {
  if (auto* s = find(id)) s->onDownstreamDrained();
}

void Http2Session::onHeaderRejected(int32_t, http::http2::HeaderRejectReason reason) {
  pod_->tenant->downstream_rq_bad->inc();
  // Rare by construction, so the labelled lookup is affordable.
  services_.stats
      .counter("culvert_http2_downstream_rq_rejected_total",
               {{"tenant", pod_->tenant->name}, {"reason", http::http2::toString(reason)}},
               "Downstream HTTP/2 streams reset for their headers, by reason")
      .inc();
}

void Http2Session::countStatus(int status) {
  if (status >= 500) {
    pod_->tenant->downstream_rq_5xx->inc();
  } else if (status >= 400) {
    pod_->tenant->downstream_rq_4xx->inc();
  } else if (status >= 200 && status < 300) {
    pod_->tenant->downstream_rq_2xx->inc();
  }
}

void Http2Session::onClose(network::CloseReason) { close(); }

void Http2Session::abort() {
  // The pod is gone (CNI DEL): reset, not FIN (DESIGN.md §5).
  if (!closed_ && downstream_ && !downstream_->closed()) {
    linger reset{1, 0};
    ::setsockopt(downstream_->fd(), SOL_SOCKET, SO_LINGER, &reset, sizeof reset);
  }
  close();
}

void Http2Session::close() {
  if (closed_) return;
  closed_ = true;
  // Disabled, not destroyed: close() may run inside one of their callbacks.
  for (auto* timer : {cx_idle_timer_.get(), cx_max_duration_timer_.get(), drain_timer_.get(),
                      delayed_close_timer_.get()}) {
    if (timer) timer->disable();
  }
  for (auto& [id, stream] : streams_) {
    stream->detach();
    services_.dispatcher.deferredDelete(std::move(stream));
  }
  streams_.clear();
  downstream_->close();
  if (on_done_) on_done_(this);
}

}  // namespace culvert::server
