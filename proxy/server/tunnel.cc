#include "proxy/server/tunnel.h"

#include <spdlog/spdlog.h>

#include "proxy/http/http1/encoder.h"
#include "proxy/server/tenant_share.h"

namespace culvert::server {

namespace {
// A response head bigger than this from the upstream is refused like a malformed one.
constexpr size_t kMaxResponseHeadBytes = 64 * 1024;
}  // namespace

// One connection of the pair: the upstream one (owned) or the downstream one (the
// session's, borrowed once the tunnel is open).
class Tunnel::Side : public network::ConnectionCallbacks {
public:
  Side(Tunnel& tunnel, network::TcpConnection& connection, std::unique_ptr<network::TcpConnection> owned = nullptr,
       bool eof = false)
      : tunnel_(tunnel), connection_(connection), owned_(std::move(owned)), eof_(eof) {
    connection_.setCallbacks(this);
  }
  ~Side() override {
    if (owned_) owned_->close();
  }
  void onData(std::string_view data) override { tunnel_.onSideData(*this, data); }
  void onClose(network::CloseReason reason) override {
    if (reason == network::CloseReason::RemoteClose) {
      eof_ = true;
      tunnel_.onSideEof(*this);
    } else {
      tunnel_.finish();
    }
  }
  void onWriteDrained() override { tunnel_.onSideDrained(); }
  network::WorkShare writeShare() const override { return tenantShare(tunnel_.scheduler_, tunnel_.tenant_); }
  network::WorkShare readShare() const override { return writeShare(); }

  network::TcpConnection& connection() { return connection_; }
  bool eof() const { return eof_; }

private:
  Tunnel& tunnel_;
  network::TcpConnection& connection_;
  std::unique_ptr<network::TcpConnection> owned_;
  bool eof_ = false;
};

// The upstream's answer to a forwarded upgrade: the head decides between a tunnel and an
// ordinary response, whose body is then relayed.
class Tunnel::ResponseReader : public http::http1::ParserCallbacks {
public:
  ResponseReader(Tunnel& tunnel, bool connect) : tunnel_(tunnel), parser_(http::http1::Parser::Mode::Response, *this) {
    parser_.maxHeaderBytes = kMaxResponseHeadBytes;
    // A 2xx to CONNECT has no body: what follows its head is the tunnel (llhttp cannot
    // know the request was a CONNECT). A refused CONNECT's body is not relayed either.
    parser_.expectHeadResponse(connect);
  }
  void onResponseHead(http::ResponseHead&& head) override {
    // An interim answer (103 Early Hints and the like, not 101) is dropped, as Envoy
    // does; the real answer follows it.
    interim_ = head.status >= 100 && head.status < 200 && head.status != 101;
    if (interim_) return;
    head_seen_ = true;
    tunnel_.onResponseHead(std::move(head));
  }
  void onBody(std::string_view data) override {
    if (tunnel_.phase_ != Phase::RelayingResponse) return;
    std::string out;
    http::http1::appendBody(out, data, tunnel_.relay_framing_);
    tunnel_.downstream_connection_.write(out);
  }
  void onMessageComplete() override { complete_ = !interim_; }

  // Parses what the upstream sent; past an interim answer, on to the message after it.
  http::http1::Parser::DispatchResult dispatch(std::string_view data) {
    size_t consumed = 0;
    while (true) {
      auto r = parser_.dispatch(data.substr(consumed));
      consumed += r.consumed;
      if (r.status != http::http1::Parser::Status::Paused || !interim_) return {r.status, consumed};
      interim_ = false;
      parser_.resume();
      if (consumed == data.size()) return {http::http1::Parser::Status::Ok, consumed};
    }
  }
  http::http1::Parser& parser() { return parser_; }
  bool headSeen() const { return head_seen_; }
  bool complete() const { return complete_; }

private:
  Tunnel& tunnel_;
  http::http1::Parser parser_;
  bool head_seen_ = false;
  bool complete_ = false;
  bool interim_ = false;
};

Tunnel::Tunnel(event::Dispatcher& dispatcher, event::Scheduler& scheduler, tenant::TenantContext& tenant,
               network::TcpConnection& downstream, Options options, Hooks hooks)
    : dispatcher_(dispatcher), scheduler_(scheduler), tenant_(tenant), downstream_connection_(downstream),
      options_(std::move(options)), hooks_(std::move(hooks)) {
  buffered_.bind(tenant_);
  if (options_.idle_timeout.count() > 0) {
    idle_timer_ = dispatcher_.createTimer([this] {
      spdlog::debug("tenant {}: tunnel idle timeout ({} ms)", tenant_.name, options_.idle_timeout.count());
      tenant_.downstream_rq_idle_timeout->inc();
      onTimeout(true);
    });
  }
}

// The downstream connection is never touched here: its session may be gone already
// (both are deferred deletes), which is why abort() lets go of it first.
Tunnel::~Tunnel() { connecting_.reset(); }

void Tunnel::start(upstream::ConnectionPool& pool, const upstream::ConnectRequest& request) {
  touch();
  if (options_.max_duration.count() > 0) {
    max_duration_timer_ = dispatcher_.createTimer([this] {
      spdlog::debug("tenant {}: tunnel reached its max_stream_duration ({} ms)", tenant_.name,
                    options_.max_duration.count());
      tenant_.downstream_rq_max_duration_reached->inc();
      onTimeout(false);
    });
    max_duration_timer_->enable(options_.max_duration);
  }
  connecting_ = pool.acquire(request, [this](auto result) { onConnected(std::move(result)); });
}

void Tunnel::onConnected(common::Result<std::unique_ptr<network::TcpConnection>> connection) {
  connecting_.reset();
  if (!connection) {
    phase_ = Phase::Done;
    hooks_.on_connect_failed(connection.error().describe());
    return;
  }
  auto* raw = connection->get();
  upstream_ = std::make_unique<Side>(*this, *raw, std::move(*connection));
  upstream_->connection().readEnable(true);
  touch();
  if (options_.mode == Mode::TerminateConnect) {
    http::ResponseHead head;
    head.status = 200;
    hooks_.shape_response(head);
    downstream_connection_.write(http::http1::encodeResponseHead(head, http::http1::BodyFraming::None, false));
    openTunnel({});
    return;
  }
  phase_ = Phase::AwaitingResponse;
  response_ = std::make_unique<ResponseReader>(*this, options_.mode == Mode::ForwardConnect);
  upstream_->connection().write(options_.request_head);
  std::string().swap(options_.request_head);
}

void Tunnel::onUpstreamHandshakeData(std::string_view data) {
  auto r = response_->dispatch(data);
  if (phase_ == Phase::Done) return;
  if (r.status == http::http1::Parser::Status::Error) {
    if (!response_->headSeen()) {
      phase_ = Phase::Done;
      hooks_.on_connect_failed("malformed upstream response: " + response_->parser().errorReason());
    } else {
      finish();
    }
    return;
  }
  if (phase_ == Phase::AwaitingResponse && response_->complete()) {
    // The head made the tunnel's decision inside dispatch: what follows it is payload.
    openTunnel(data.substr(r.consumed));
    return;
  }
  if (phase_ == Phase::RelayingResponse && response_->complete()) {
    std::string end;
    http::http1::appendBodyEnd(end, relay_framing_);
    downstream_connection_.write(end);
    phase_ = Phase::Done;
    hooks_.on_response_relayed();
  }
}

void Tunnel::onResponseHead(http::ResponseHead&& head) {
  bool upgraded = options_.mode == Mode::ForwardConnect ? head.status >= 200 && head.status < 300 : head.status == 101;
  if (!upgraded) {
    // An ordinary response: relayed as such, then the connection closes.
    phase_ = Phase::RelayingResponse;
    relay_framing_ = options_.mode == Mode::ForwardConnect ? http::http1::BodyFraming::ContentLength
                                                           : http::http1::responseFraming(head, false);
    if (options_.mode == Mode::ForwardConnect) head.content_length = 0;
    http::http1::removeHopByHopHeaders(head.headers);
    hooks_.shape_response(head);
    downstream_connection_.write(http::http1::encodeResponseHead(head, relay_framing_, true));
    return;
  }
  std::string upgrade(head.headers.get("upgrade").value_or(""));
  http::http1::removeHopByHopHeaders(head.headers);
  if (options_.mode == Mode::ForwardUpgrade) {
    head.headers.add("connection", "upgrade");
    head.headers.add("upgrade", upgrade);
  }
  hooks_.shape_response(head);
  downstream_connection_.write(http::http1::encodeResponseHead(head, http::http1::BodyFraming::None, false));
  // openTunnel runs once dispatch() says where the head ended.
}

void Tunnel::openTunnel(std::string_view upstream_early_bytes) {
  phase_ = Phase::Open;
  if (response_) dispatcher_.deferredDelete(std::move(response_));  // we may be inside its parser
  downstream_ = std::make_unique<Side>(*this, downstream_connection_, nullptr, downstream_ended_early_);
  if (!downstream_ended_early_) downstream_connection_.readEnable(true);
  hooks_.on_open();
  if (!upstream_early_bytes.empty()) downstream_connection_.write(upstream_early_bytes);
  bytes_to_downstream_ += upstream_early_bytes.size();
  std::string early = hooks_.take_early_bytes();
  bytes_from_downstream_ += early.size();
  if (!early.empty()) upstream_->connection().write(early);
  if (downstream_ended_early_) upstream_->connection().shutdownWrite();
  updateReading();
}

void Tunnel::onSideData(Side& from, std::string_view data) {
  touch();
  if (phase_ == Phase::AwaitingResponse || phase_ == Phase::RelayingResponse) {
    onUpstreamHandshakeData(data);
    return;
  }
  if (phase_ != Phase::Open) return;
  // Tunnel bytes are the tenant's work: run under its share of the worker.
  scheduler_.run(tenant_.id, tenant_.weight.load(std::memory_order_relaxed), [&] {
    bool from_downstream = &from == downstream_.get();
    (from_downstream ? bytes_from_downstream_ : bytes_to_downstream_) += data.size();
    Side& to = from_downstream ? *upstream_ : *downstream_;
    to.connection().write(data);
    updateReading();
  });
  pauseIfOverShare();
}

void Tunnel::pauseIfOverShare() {
  if (phase_ != Phase::Open || share_pause_ || !scheduler_.overShare(tenant_.id)) return;
  share_pause_ = scheduler_.pause(tenant_.id, [this] {
    share_pause_.reset();
    updateReading();
  });
  tenant_.share_paused->inc();
  updateReading();
}

void Tunnel::onSideEof(Side& from) {
  if (phase_ != Phase::Open) {
    if (phase_ == Phase::Done) return;
    // The upstream closed during the handshake.
    if (phase_ == Phase::RelayingResponse && response_->parser().finish() && response_->complete()) {
      std::string end;
      http::http1::appendBodyEnd(end, relay_framing_);
      downstream_connection_.write(end);
      phase_ = Phase::Done;
      hooks_.on_response_relayed();
      return;
    }
    if (phase_ == Phase::AwaitingResponse) {
      phase_ = Phase::Done;
      hooks_.on_connect_failed("upstream closed before answering the upgrade");
      return;
    }
    finish();
    return;
  }
  // Pass the half-close on (after what is queued); done once both directions ended and
  // what they sent has reached the kernel.
  Side& other = &from == downstream_.get() ? *upstream_ : *downstream_;
  other.connection().shutdownWrite();
  onSideDrained();
}

void Tunnel::onSideDrained() {
  if (phase_ != Phase::Open) return;
  touch();
  if (downstream_->eof() && upstream_->eof() && downstream_connection_.queuedWriteBytes() == 0 &&
      upstream_->connection().queuedWriteBytes() == 0) {
    finish();
    return;
  }
  updateReading();
}

void Tunnel::updateReading() {
  if (phase_ != Phase::Open) return;
  size_t to_upstream = upstream_->connection().queuedWriteBytes();
  size_t to_downstream = downstream_connection_.queuedWriteBytes();
  bool paused = share_pause_ != nullptr;
  if (!downstream_->eof()) downstream_connection_.readEnable(!paused && to_upstream <= kWriteHighWatermark);
  if (!upstream_->eof()) upstream_->connection().readEnable(!paused && to_downstream <= kWriteHighWatermark);
  buffered_.set(to_upstream + to_downstream);
}

void Tunnel::onTimeout(bool idle) {
  if (phase_ == Phase::Connecting || phase_ == Phase::AwaitingResponse) {
    // Nothing went downstream yet: the client gets an answer, as for any stream.
    connecting_.reset();
    if (upstream_) upstream_->connection().close();
    phase_ = Phase::Done;
    hooks_.on_timeout_before_response(idle);
    return;
  }
  finish();
}

void Tunnel::touch() {
  if (idle_timer_) idle_timer_->enable(options_.idle_timeout);
}

bool Tunnel::downstreamEnded() {
  // Only a terminated CONNECT may end early: a forwarded upgrade's answer could not be
  // told apart from the client going away.
  if (phase_ != Phase::Connecting || options_.mode != Mode::TerminateConnect) return false;
  downstream_ended_early_ = true;
  return true;
}

void Tunnel::abort() {
  if (downstream_ && !downstream_connection_.closed()) downstream_connection_.setCallbacks(nullptr);
  phase_ = Phase::Done;
  finish();
}

void Tunnel::finish() {
  // Done already: a failed handshake or a relayed response was reported, the session closes.
  bool was_done = phase_ == Phase::Done;
  phase_ = Phase::Done;
  connecting_.reset();
  idle_timer_.reset();
  max_duration_timer_.reset();
  share_pause_.reset();
  buffered_.set(0);
  if (upstream_) upstream_->connection().close();
  if (!was_done) hooks_.on_done();
}

}  // namespace culvert::server
