#include "proxy/server/http2_session.h"

#include <sys/socket.h>

#include <spdlog/spdlog.h>

#include "proxy/common/recycled.h"
#include "proxy/event/timer_queue.h"
#include "proxy/http/http1/encoder.h"
#include "proxy/http/http1/parser.h"
#include "proxy/http/http2/message.h"
#include "proxy/router/stream_duration.h"
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

// One stream: the connection manager's part (admission, routing, stream timeouts, the
// response's encoding) around a RouterStream, which runs the upstream attempts.
class Http2Session::Stream : public RouterStream::Downstream,
                             public common::Recycled<Http2Session::Stream> {
public:
  Stream(Http2Session& session, int32_t id) : session_(session), id_(id) {}
  ~Stream() override { detach(); }

  void start(http::HeaderMap&& block, bool end_stream) {
    request_ = http::http2::toRequestHead(std::move(block), end_stream);
    request_ended_ = end_stream;
    auto& services = session_.services_;
    if (session_.access_logs_.enabled()) {
      beginRecord(log_, session_.log_facts_, *session_.pod_, "HTTP/2", services.dispatcher.now());
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
      services.stats
          .counter("culvert_http_downstream_upgrades_rejected_total",
                   {{"tenant", session_.pod_->tenant->name}, {"type", "connect"}, {"reason", "http2"}},
                   "Upgrade and CONNECT requests refused: not enabled (403), or CONNECT over HTTP/2 (501)")
          .inc();
      localReply(501, "CONNECT over HTTP/2 is not supported; use HTTP/1.1\n");
      return;
    }
    const auto& timeouts = session_.stream_timeouts_;
    stream_idle_ = timeouts.stream_idle;
    if (!end_stream && timeouts.request.count() > 0) armTimer(request_timer_, timeouts.request);
    bool te_trailers = request_.headers.get("te") == "trailers";
    decision_ = router::decideRoute(*session_.routes_, request_, routeRandom());
    const auto* route = decision_.route;
    if (route == nullptr) {
      log_.fail(accesslog::ResponseFlag::NoRouteFound, "route_not_found");
      localReply(404, "no route\n");
      return;
    }
    log_.route_name = route->name;
    if (route->direct_response) {
      log_.response_code_details = "direct_response";
      localReply(static_cast<int>(route->direct_response->status), route->direct_response->body);
      return;
    }
    const auto& action = *route->route;
    log_.upstream_cluster = decision_.cluster();
    // The route's idle_timeout replaces the connection manager's stream_idle_timeout.
    if (action.idle_timeout) stream_idle_ = *action.idle_timeout;
    if (stream_idle_.count() > 0) armTimer(idle_timer_, stream_idle_);
    if (action.max_stream_duration) {
      auto limit = router::streamDurationLimit(*action.max_stream_duration, request_.headers);
      if (limit.count() > 0) armTimer(max_duration_timer_, limit);
    }
    prepareUpstreamRequest(request_, *session_.routes_, decision_, session_.pod_->ip);
    router_.emplace(services, *session_.pod_, *this, log_, request_, te_trailers, session_.original_destination_);
    router_->start(decision_, end_stream);
  }

  void onRequestData(std::string_view data) {
    unconsumed_ += data.size();
    log_.bytes_received += data.size();
    onActivity();
    if (!local_ && router_) router_->sendData(data);
    grantDownstream();
  }

  void onRequestEnd(http::HeaderMap&& trailers) {
    request_ended_ = true;
    log_.last_downstream_rx = session_.services_.dispatcher.now();
    request_timer_.disable();
    if (!local_ && router_) router_->end(trailers);
  }

  // The codec sent our queued response DATA: the upstream may go on.
  void onDownstreamDrained() {
    onActivity();
    if (router_) router_->setResponseFlow(true);
  }

  // The downstream stream is gone: let go of the upstream (never reused mid-exchange).
  void detach() {
    logStream();
    request_timer_.disable();
    idle_timer_.disable();
    max_duration_timer_.disable();
    if (router_) router_->cancel();
  }

  // --- RouterStream::Downstream ---
  void onUpstreamHead(http::ResponseHead& head, bool end_stream) override {
    response_started_ = true;
    session_.countStatus(head.status);
    router::prepareDownstreamResponse(*session_.routes_, decision_, head.headers);
    log_.response_code = static_cast<uint32_t>(head.status);
    log_.response_code_details = "via_upstream";
    if (session_.access_logs_.enabled()) log_.response_headers = head.headers;
    session_.codec_.submitResponse(id_, http::http2::toResponseBlock(std::move(head)), end_stream);
    if (end_stream) responseEnded();
    session_.scheduleFlush();
  }
  void onUpstreamData(std::string_view data) override {
    log_.bytes_sent += data.size();
    session_.codec_.sendData(id_, data);
    if (session_.codec_.queuedBytes(id_) > kHighWatermark) router_->setResponseFlow(false);
    session_.scheduleFlush();
  }
  void onUpstreamEnd(const http::HeaderMap& trailers) override {
    if (session_.access_logs_.enabled()) log_.response_trailers = trailers;
    session_.codec_.endStream(id_, trailers);
    responseEnded();
    session_.scheduleFlush();
  }
  void onRouterReply(const RouterReply& reply) override {
    if (reply.grpc_deadline_exceeded) {
      grpcDeadlineExceeded();
    } else {
      localReply(reply.status, reply.body);
    }
  }
  void onResponseAborted() override {
    log_.fail(accesslog::ResponseFlag::UpstreamConnectionTermination,
              "upstream_reset_after_response_started{connection_termination}");
    resetStream();
  }
  void onRequestWritable() override { grantDownstream(); }
  void onUpstreamActivity() override { onActivity(); }

private:
  void armTimer(event::QueuedTimer& timer, std::chrono::milliseconds after) {
    timer.enable(session_.services_.dispatcher.timerQueue(), after);
  }

  template <StreamTimeout kKind>
  static void onTimer(void* stream) {
    static_cast<Stream*>(stream)->onStreamTimeout(kKind);
  }

  void onActivity() {
    if (idle_timer_.enabled()) armTimer(idle_timer_, stream_idle_);
  }

  // Envoy's answers, as for HTTP/1.1: 408 while no response has begun (504 or gRPC
  // DEADLINE_EXCEEDED for max_stream_duration once the request is in), else a reset.
  void onStreamTimeout(StreamTimeout kind) {
    std::string_view body = recordStreamTimeout(kind, *session_.pod_->tenant, log_);
    if (router_) router_->cancel();
    if (response_started_) {
      resetStream();
      return;
    }
    bool grpc = isGrpcRequest(request_);
    if (kind == StreamTimeout::MaxDuration && (request_ended_ || grpc)) {
      onRouterReply({504, "upstream request timeout\n", grpc});
      return;
    }
    localReply(408, body);
  }

  // Reopens the client's window for what the upstream took.
  void grantDownstream() {
    if (unconsumed_ == 0) return;
    if (!local_ && router_ && !router_->finished() && !router_->acceptsRequestData()) return;
    session_.codec_.consume(id_, unconsumed_);
    unconsumed_ = 0;
    session_.scheduleFlush();
  }

  void responseEnded() {
    response_complete_ = true;
    request_timer_.disable();
    idle_timer_.disable();
    max_duration_timer_.disable();
    // The response is whole while the client still sends: the rest of the request is
    // dropped as it comes (a reset here would overtake the response's queued DATA).
    if (!request_ended_) local_ = true;
  }

  void resetStream() {
    responseEnded();
    session_.codec_.resetStream(id_, kInternalError);
    session_.scheduleFlush();
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
    if (router_) router_->cancel();
    local_ = true;
    response_started_ = true;
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
    session_.codec_.submitResponse(id_, http::http2::toResponseBlock(std::move(head)), body.empty());
    if (!body.empty()) {
      session_.codec_.sendData(id_, body);
      session_.codec_.endStream(id_);
    }
    responseEnded();
    grantDownstream();
    session_.scheduleFlush();
  }

  // DEADLINE_EXCEEDED as a trailers-only response (what a gRPC client understands).
  void grpcDeadlineExceeded() {
    if (router_) router_->cancel();
    local_ = true;
    response_started_ = true;
    session_.countStatus(200);
    log_.response_code = 200;
    auto head = grpcDeadlineExceededHead();
    if (session_.access_logs_.enabled()) log_.response_headers = head.headers;
    session_.codec_.submitResponse(id_, http::http2::toResponseBlock(std::move(head)), true);
    responseEnded();
    grantDownstream();
    session_.scheduleFlush();
  }

  Http2Session& session_;
  int32_t id_;
  http::RequestHead request_;
  tenant::RequestSlot slot_;  // the tenant's in-flight and rate budgets, held for the stream's life
  router::RouteDecision decision_;
  std::optional<RouterStream> router_;  // once the request is routed to a cluster
  bool request_ended_ = false;
  bool local_ = false;  // the response is decided: the rest of the request is dropped
  size_t unconsumed_ = 0;  // request DATA taken from the client, window not yet reopened
  bool response_started_ = false;
  bool response_complete_ = false;
  std::chrono::milliseconds stream_idle_{0};
  // In the loop's TimerQueue: no allocation or libuv handle per stream.
  event::QueuedTimer request_timer_{&onTimer<StreamTimeout::Request>, this};
  event::QueuedTimer idle_timer_{&onTimer<StreamTimeout::Idle>, this};
  event::QueuedTimer max_duration_timer_{&onTimer<StreamTimeout::MaxDuration>, this};

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
}

Http2Session::~Http2Session() {
  if (flush_scheduled_) services_.dispatcher.cancelTurnEnd(flush_ticket_);
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
  if (share_pause_ || services_.scheduler.overShare(pod_->tenant->id)) {
    // Another of the tenant's connections used up its share in this loop turn: the
    // frames wait, unparsed, for the resume (one read at most: reading stops here).
    held_.append(data);
    pauseIfOverShare();
    return;
  }
  services_.scheduler.run(pod_->tenant->id, pod_->tenant->weight.load(std::memory_order_relaxed), [&] {
    in_codec_ = true;
    bool ok = codec_.receive(data);
    in_codec_ = false;
    if (!ok) {
      pod_->tenant->downstream_rq_bad->inc();
      spdlog::debug("pod {}/{}: HTTP/2 connection error", pod_->namespace_name, pod_->name);
    }
    flush();
  });
  pauseIfOverShare();
}

void Http2Session::pauseIfOverShare() {
  if (closed_ || share_pause_ || !services_.scheduler.overShare(pod_->tenant->id)) return;
  share_pause_ = services_.scheduler.pause(pod_->tenant->id, [this] {
    share_pause_.reset();
    if (!held_.empty()) {
      std::string held = std::move(held_);
      held_.clear();
      onData(held);
    }
    if (!closed_ && !share_pause_) downstream_->readEnable(true);
  });
  pod_->tenant->share_paused->inc();
  downstream_->readEnable(false);
}

void Http2Session::scheduleFlush() {
  if (closed_ || flush_scheduled_) return;
  flush_scheduled_ = true;
  flush_ticket_ = services_.dispatcher.atTurnEnd(this);
}

void Http2Session::onTurnEnd() {
  flush_scheduled_ = false;
  flush();
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
  if (lifetime_.max_requests > 0 && ++streams_begun_ == lifetime_.max_requests && !draining_) {
    // max_requests_per_connection: drained as at max_connection_duration (approximate, as
    // in Envoy: streams the client opens before the final GOAWAY are still served).
    pod_->tenant->downstream_cx_max_requests_reached->inc();
    startDrain();
  }
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
  share_pause_.reset();
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
