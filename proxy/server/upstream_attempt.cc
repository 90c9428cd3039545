#include "proxy/server/upstream_attempt.h"

#include "proxy/common/recycled.h"
#include "proxy/http/http1/encoder.h"
#include "proxy/http/http1/parser.h"
#include "proxy/http/http2/message.h"
#include "proxy/server/tenant_share.h"

namespace culvert::server {

namespace {

using http::http1::BodyFraming;
using router::AttemptFailure;

constexpr uint32_t kRefusedStream = 0x7;
// The thread's request-encoding buffer keeps up to this much capacity between requests.
constexpr size_t kKeptEncodeBuffer = 64 * 1024;

// A pooled HTTP/1.1 connection of the attempt's own, returned to the pool when the
// exchange ends cleanly. One per request in flight: its blocks are reused
// (common/recycled.h).
class Http1Attempt final : public UpstreamAttempt,
                           public upstream::LentConnection,
                           public network::ConnectionCallbacks,
                           public http::http1::ParserCallbacks,
                           public common::Recycled<Http1Attempt> {
public:
  Http1Attempt(AttemptServices services, const http::RequestHead& request, const tenant::TenantContext& tenant,
               AttemptCallbacks& callbacks, common::SocketAddress endpoint)
      : UpstreamAttempt(std::move(endpoint)), services_(services), request_(request), tenant_(tenant),
        callbacks_(callbacks), parser_(http::http1::Parser::Mode::Response, *this) {
    parser_.expectHeadResponse(request_.method == "HEAD");
  }

  ~Http1Attempt() override {
    connecting_.reset();
    if (connection_) {
      connection_->setCallbacks(nullptr);
      connection_->close();
    }
  }

  void start(const upstream::ConnectRequest& connect) override {
    key_ = connect.key;
    auto pending = services_.pool.acquire(connect, [this](auto result) { onReady(std::move(result)); });
    if (!done_ && !connection_) connecting_ = std::move(pending);
  }

  void sendData(std::string_view data) override {
    if (connection_) {
      std::string chunk;
      http::http1::appendBody(chunk, data, framing_);
      connection_->write(chunk);
    } else {
      pending_.append(data);
    }
  }

  void end(const http::HeaderMap&) override {
    if (ended_) return;
    ended_ = true;
    if (!connection_) return;
    std::string last;
    http::http1::appendBodyEnd(last, framing_);
    if (!last.empty()) connection_->write(last);
  }

  size_t queuedBytes() const override { return connection_ ? connection_->queuedWriteBytes() : pending_.size(); }
  bool connected() const override { return connection_ != nullptr; }

  void setResponseFlow(bool open) override {
    flow_open_ = open;
    applyReading();
  }

  void abandon() override {
    done_ = true;
    connecting_.reset();
    share_pause_.reset();
    services_.pool.giveBack(*this);
    if (connection_) {
      connection_->setCallbacks(nullptr);
      connection_->close();
    }
  }

  // network::ConnectionCallbacks. Response bytes are the tenant's work too (a 1 MiB body
  // costs more than its request): charged, and paused like the downstream when the tenant
  // is over its share of the worker.
  void onData(std::string_view data) override {
    if (done_) return;
    callbacks_.onAttemptActivity(*this);
    if (share_pause_ || services_.scheduler.overShare(tenant_.id)) {
      // Another of the tenant's connections used up its share in this loop turn: keep
      // the bytes for the resume rather than parse and relay them now.
      held_.append(data);
      pauseIfOverShare();
      return;
    }
    services_.scheduler.run(tenant_.id, tenant_.weight.load(std::memory_order_relaxed), [&] { onResponseBytes(data); });
    pauseIfOverShare();
  }
  void onClose(network::CloseReason reason) override {
    if (done_) return;
    if (!held_.empty()) {
      replayHeld();
      if (done_) return;
    }
    // A body delimited by the connection closing ends here.
    if (head_seen_ && parser_.finish() && response_complete_) {
      reusable_ = false;
      complete();
      return;
    }
    fail(AttemptFailure::Reset, std::string("upstream connection closed: ") + network::toString(reason));
  }
  void onWriteDrained() override {
    if (!done_) callbacks_.onAttemptDrained(*this);
  }
  // Not read at all while the tenant is over its share (the held bytes above are what
  // came in the read that took it over).
  network::WorkShare readShare() const override { return tenantShare(services_.scheduler, tenant_); }

  // http1::ParserCallbacks (the response)
  void onResponseHead(http::ResponseHead&& head) override {
    if (done_) return;
    head_seen_ = true;
    reusable_ = head.keep_alive;
    http::http1::removeHopByHopHeaders(head.headers);
    callbacks_.onAttemptHead(*this, std::move(head), false);
  }
  void onBody(std::string_view data) override {
    if (!done_) callbacks_.onAttemptData(*this, data);
  }
  void onMessageComplete() override { response_complete_ = true; }

  // upstream::LentConnection: the endpoint left its cluster and this exchange outlived
  // the drain timeout.
  void onDrainTimeout() override {
    if (done_ || !connection_) return;
    connection_->setCallbacks(nullptr);
    connection_->close();
    fail(AttemptFailure::Reset, "upstream " + key_.endpoint.toString() + " left its cluster: closed at the drain timeout");
  }

private:
  void onReady(common::Result<std::unique_ptr<network::TcpConnection>> connection) {
    connecting_.reset();
    if (done_) return;
    if (!connection) {
      fail(AttemptFailure::ConnectFailure,
           "upstream " + key_.endpoint.toString() + ": " + connection.error().describe());
      return;
    }
    connection_ = std::move(*connection);
    connection_->setCallbacks(this);
    services_.pool.lend(*this, key_);
    applyReading();
    framing_ = http::http1::requestFraming(request_);
    // A request that ended without a body and without a length (an HTTP/2 client's
    // HEADERS with END_STREAM) needs no chunked framing.
    if (ended_ && pending_.empty() && !request_.content_length) framing_ = BodyFraming::None;
    // One buffer per thread: write() copies what the kernel does not take at once.
    thread_local std::string out;
    out.clear();
    http::http1::appendRequestHead(out, request_, framing_);
    http::http1::appendBody(out, pending_, framing_);
    if (ended_) http::http1::appendBodyEnd(out, framing_);
    std::string().swap(pending_);
    connection_->write(out);
    if (out.capacity() > kKeptEncodeBuffer) std::string().swap(out);  // a large body went through it
    callbacks_.onAttemptConnected(*this);
  }

  void onResponseBytes(std::string_view data) {
    if (response_complete_) {
      reusable_ = false;  // bytes after a complete response: not to be trusted for reuse
      return;
    }
    auto r = parser_.dispatch(data);
    if (done_) return;
    if (r.status == http::http1::Parser::Status::Error) {
      fail(AttemptFailure::Reset, "malformed upstream response: " + parser_.errorReason());
      return;
    }
    if (r.status == http::http1::Parser::Status::Paused && r.consumed != data.size()) reusable_ = false;
    if (response_complete_) {
      complete();
    } else {
      callbacks_.onAttemptReadDone(*this);
    }
  }

  // The response is whole: the connection goes back to the pool when the request was
  // whole too and nothing odd happened, else it closes.
  void complete() {
    done_ = true;
    share_pause_.reset();
    services_.pool.giveBack(*this);
    if (reusable_ && ended_ && connection_) {
      connection_->setCallbacks(nullptr);
      services_.pool.release(key_, std::move(connection_));
    }
    callbacks_.onAttemptEnd(*this, {});
  }

  void fail(AttemptFailure failure, const std::string& reason) {
    done_ = true;
    share_pause_.reset();
    services_.pool.giveBack(*this);
    callbacks_.onAttemptFailed(*this, failure, reason, head_seen_);
  }

  void pauseIfOverShare() {
    if (done_ || !connection_ || share_pause_ || !services_.scheduler.overShare(tenant_.id)) return;
    share_pause_ = services_.scheduler.pause(tenant_.id, [this] {
      share_pause_.reset();
      if (!held_.empty()) {
        replayHeld();
        if (done_) return;
        pauseIfOverShare();
      }
      applyReading();
    });
    tenant_.share_paused->inc();
    connection_->readEnable(false);
  }

  void replayHeld() {
    std::string held = std::move(held_);
    held_.clear();
    services_.scheduler.run(tenant_.id, tenant_.weight.load(std::memory_order_relaxed), [&] { onResponseBytes(held); });
  }

  void applyReading() {
    if (connection_ && !done_) connection_->readEnable(flow_open_ && !share_pause_);
  }

  AttemptServices services_;
  const http::RequestHead& request_;
  const tenant::TenantContext& tenant_;
  AttemptCallbacks& callbacks_;
  upstream::PoolKey key_;
  std::unique_ptr<upstream::PendingConnection> connecting_;
  std::unique_ptr<network::TcpConnection> connection_;
  http::http1::Parser parser_;
  BodyFraming framing_ = BodyFraming::None;
  std::string pending_;  // request body before the connection is up
  bool ended_ = false;
  bool head_seen_ = false;
  bool response_complete_ = false;
  bool reusable_ = false;
  bool flow_open_ = true;
  bool done_ = false;  // ended, failed or abandoned: no more callbacks
  std::unique_ptr<event::Scheduler::Pause> share_pause_;
  std::string held_;  // response bytes read while the tenant was over its share
};

// A stream on a shared upstream HTTP/2 connection.
class Http2Attempt final : public UpstreamAttempt, public upstream::Http2StreamCallbacks {
public:
  Http2Attempt(AttemptServices services, const http::RequestHead& request, bool te_trailers,
               AttemptCallbacks& callbacks, common::SocketAddress endpoint)
      : UpstreamAttempt(std::move(endpoint)), services_(services), request_(request), te_trailers_(te_trailers),
        callbacks_(callbacks) {}

  ~Http2Attempt() override {
    if (connection_ != nullptr) connection_->cancel(stream_id_);
  }

  void start(const upstream::ConnectRequest& connect) override {
    endpoint_ = connect.key.endpoint;
    if (services_.http2_pool == nullptr) {
      fail(AttemptFailure::ConnectFailure, "no HTTP/2 upstream pool", 0);
      return;
    }
    auto pending = services_.http2_pool->acquire(connect, [this](auto result) { onReady(result); });
    if (!done_ && connection_ == nullptr) connecting_ = std::move(pending);
  }

  void sendData(std::string_view data) override {
    if (connection_ != nullptr) {
      connection_->sendData(stream_id_, data);
    } else {
      pending_.append(data);
    }
  }

  void end(const http::HeaderMap& trailers) override {
    if (ended_) return;
    ended_ = true;
    trailers_ = trailers;
    if (connection_ != nullptr) connection_->endStream(stream_id_, trailers_);
  }

  size_t queuedBytes() const override {
    return connection_ != nullptr ? connection_->queuedBytes(stream_id_) : pending_.size();
  }
  bool connected() const override { return connection_ != nullptr || response_seen_; }

  void setResponseFlow(bool open) override {
    flow_open_ = open;
    if (open) giveWindow();
  }

  void abandon() override {
    done_ = true;
    connecting_.reset();
    if (connection_ != nullptr) connection_->cancel(stream_id_);
    connection_ = nullptr;
  }

  // upstream::Http2StreamCallbacks
  void onResponseHeaders(http::HeaderMap&& block, bool end_stream) override {
    if (done_) return;
    response_seen_ = true;
    head_seen_ = true;
    callbacks_.onAttemptActivity(*this);
    if (end_stream) {
      connection_ = nullptr;
      done_ = true;
    }
    callbacks_.onAttemptHead(*this, http::http2::toResponseHead(std::move(block)), end_stream);
  }
  void onResponseData(std::string_view data) override {
    if (done_) return;
    callbacks_.onAttemptActivity(*this);
    unconsumed_ += data.size();
    callbacks_.onAttemptData(*this, data);
    if (done_) return;
    callbacks_.onAttemptReadDone(*this);
    giveWindow();
  }
  void onResponseEnd(http::HeaderMap&& trailers) override {
    if (done_) return;
    connection_ = nullptr;
    done_ = true;
    callbacks_.onAttemptEnd(*this, std::move(trailers));
  }
  void onStreamFailed(const std::string& reason, uint32_t error_code) override {
    connection_ = nullptr;
    if (done_) return;
    fail(error_code == kRefusedStream ? AttemptFailure::RefusedStream : AttemptFailure::Reset, reason, error_code);
  }
  void onRequestDrained() override {
    if (!done_) callbacks_.onAttemptDrained(*this);
  }

private:
  void onReady(common::Result<upstream::Http2Connection*> connection) {
    connecting_.reset();
    if (done_) return;
    if (!connection) {
      fail(AttemptFailure::ConnectFailure, "upstream " + endpoint_.toString() + ": " + connection.error().describe(), 0);
      return;
    }
    auto block = http::http2::toRequestBlock(request_, "http");
    if (te_trailers_) block.add("te", "trailers");
    bool end_at_head = ended_ && pending_.empty() && trailers_.size() == 0;
    stream_id_ = (*connection)->openStream(std::move(block), end_at_head, this);
    if (stream_id_ <= 0) {
      fail(AttemptFailure::Reset, "cannot open a stream on the upstream HTTP/2 connection", 0);
      return;
    }
    connection_ = *connection;
    if (!pending_.empty()) connection_->sendData(stream_id_, pending_);
    if (ended_ && !end_at_head) connection_->endStream(stream_id_, trailers_);
    std::string().swap(pending_);
    callbacks_.onAttemptConnected(*this);
  }

  // Reopens the upstream's window for the response bytes that went downstream.
  void giveWindow() {
    if (!flow_open_ || connection_ == nullptr || unconsumed_ == 0) return;
    connection_->consume(stream_id_, unconsumed_);
    unconsumed_ = 0;
  }

  void fail(AttemptFailure failure, const std::string& reason, uint32_t) {
    done_ = true;
    callbacks_.onAttemptFailed(*this, failure, reason, head_seen_);
  }

  AttemptServices services_;
  const http::RequestHead& request_;
  bool te_trailers_;
  AttemptCallbacks& callbacks_;
  common::SocketAddress endpoint_;  // formatted only for a failure
  std::unique_ptr<upstream::PendingConnection> connecting_;
  upstream::Http2Connection* connection_ = nullptr;
  int32_t stream_id_ = 0;
  std::string pending_;  // request body before the stream is open
  http::HeaderMap trailers_;
  bool ended_ = false;
  bool head_seen_ = false;
  bool response_seen_ = false;
  bool flow_open_ = true;
  bool done_ = false;
  size_t unconsumed_ = 0;  // response DATA passed on, upstream window not yet reopened
};

}  // namespace

std::unique_ptr<UpstreamAttempt> UpstreamAttempt::http1(AttemptServices services, const http::RequestHead& request,
                                                        const tenant::TenantContext& tenant,
                                                        AttemptCallbacks& callbacks, common::SocketAddress endpoint) {
  return std::make_unique<Http1Attempt>(services, request, tenant, callbacks, std::move(endpoint));
}

std::unique_ptr<UpstreamAttempt> UpstreamAttempt::http2(AttemptServices services, const http::RequestHead& request,
                                                        bool te_trailers, AttemptCallbacks& callbacks,
                                                        common::SocketAddress endpoint) {
  return std::make_unique<Http2Attempt>(services, request, te_trailers, callbacks, std::move(endpoint));
}

}  // namespace culvert::server
