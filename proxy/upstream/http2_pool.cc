#include "proxy/upstream/http2_pool.h"

#include <algorithm>
#include <utility>

#include "proxy/event/scheduler.h"

namespace culvert::upstream {

namespace {
// The codec's output waits in nghttp2 (bounded by the peers' windows) rather than in the
// socket's user-space queue beyond this.
constexpr size_t kSocketHighWatermark = 256 * 1024;
constexpr uint32_t kCancel = 0x8;  // RFC 9113 CANCEL
}  // namespace

Http2Connection::Http2Connection(Http2Pool& pool, PoolKey key, std::unique_ptr<network::TcpConnection> connection,
                                 network::WorkShare share)
    : pool_(pool), key_(std::move(key)), connection_(std::move(connection)), share_(share),
      codec_(http::http2::Mode::Client, http::http2::Limits{}, *this), idle_since_(pool.dispatcher().now()) {
  connection_->setCallbacks(this);
  connection_->readEnable(true);
  flush();  // the preface and SETTINGS
  pool_.scheduleLifetime(*this);
}

Http2Connection::~Http2Connection() {
  if (connection_) connection_->close();
}

bool Http2Connection::canOpenStream() const {
  return !draining_ && !closed_ && streams_.size() < codec_.peerMaxConcurrentStreams();
}

int32_t Http2Connection::openStream(http::HeaderMap headers, bool end_stream, Http2StreamCallbacks* callbacks) {
  if (!canOpenStream()) return 0;
  int32_t id = codec_.submitRequest(std::move(headers), end_stream);
  if (id <= 0) return 0;
  streams_[id] = callbacks;
  pool_.rq_total_.inc();
  auto max_requests = pool_.sockets_.lifetimeOf(key_).max_requests;
  if (max_requests > 0 && ++streams_opened_ >= max_requests && !draining_) {
    // Its last stream: no new ones; it closes, with a GOAWAY, once its streams finish.
    // Not a GOAWAY now: nghttp2 sends it ahead of this stream's HEADERS, then refuses to
    // open the stream.
    pool_.sockets_.countLifetimeEnd(key_, LifetimeEnd::MaxRequests);
    draining_ = true;
    goaway_at_end_ = true;
  }
  flush();
  return id;
}

void Http2Connection::sendData(int32_t id, std::string_view data) {
  codec_.sendData(id, data);
  flush();
}

void Http2Connection::endStream(int32_t id, const http::HeaderMap& trailers) {
  codec_.endStream(id, trailers);
  flush();
}

void Http2Connection::cancel(int32_t id) {
  if (streams_.erase(id) == 0) return;
  codec_.resetStream(id, kCancel);
  flush();
  maybeRetire();
}

void Http2Connection::consume(int32_t id, size_t bytes) {
  codec_.consume(id, bytes);
  flush();
}

void Http2Connection::flush() {
  if (closed_) return;
  if (in_codec_) {
    flush_pending_ = true;  // nghttp2 is not re-entrant: taken once it returns
    return;
  }
  do {
    flush_pending_ = false;
    if (connection_->queuedWriteBytes() > kSocketHighWatermark) break;
    in_codec_ = true;
    codec_.takeOutput(out_);
    in_codec_ = false;
    if (!out_.empty()) {
      connection_->write(out_);
      out_.clear();
    }
  } while (flush_pending_ && !closed_);
  if (!closed_ && codec_.finished()) fail("HTTP/2 session ended");
}

void Http2Connection::onData(std::string_view data) {
  if (share_.scheduler == nullptr) {
    receive(data);
    return;
  }
  share_.scheduler->run(share_.tenant, share_.weight, [&] { receive(data); });
}

void Http2Connection::receive(std::string_view data) {
  in_codec_ = true;
  bool ok = codec_.receive(data);
  in_codec_ = false;
  if (!ok) {
    fail("upstream HTTP/2 protocol error");
    return;
  }
  flush();
  if (!closed_) maybeRetire();
}

void Http2Connection::onClose(network::CloseReason reason) {
  fail(std::string("upstream connection closed: ") + network::toString(reason));
}

void Http2Connection::fail(const std::string& reason) {
  if (closed_) return;
  closed_ = true;
  auto streams = std::move(streams_);
  streams_.clear();
  for (auto& [id, callbacks] : streams) callbacks->onStreamFailed(reason, 0);
  pool_.retire(this);
}

void Http2Connection::maybeRetire() {
  if (!streams_.empty()) return;
  idle_since_ = pool_.dispatcher().now();
  if (!draining_) pool_.scheduleLifetime(*this);
  if (draining_ && !in_codec_) {
    // Let the GOAWAY and any RST_STREAM reach the socket first.
    if (goaway_at_end_) codec_.goAway();
    codec_.takeOutput(out_);
    if (!out_.empty()) connection_->write(out_);
    out_.clear();
    closed_ = true;
    pool_.retire(this);
  }
}

void Http2Connection::onHeaders(int32_t id, http::HeaderMap&& headers, bool end_stream) {
  auto it = streams_.find(id);
  if (it == streams_.end()) return;
  auto* callbacks = it->second;
  if (end_stream) streams_.erase(it);
  callbacks->onResponseHeaders(std::move(headers), end_stream);
}

void Http2Connection::onData(int32_t id, std::string_view data) {
  auto it = streams_.find(id);
  if (it == streams_.end()) {
    codec_.consume(id, data.size());  // nobody wants it: do not stall the connection
    return;
  }
  it->second->onResponseData(data);
}

void Http2Connection::onEndStream(int32_t id) {
  auto it = streams_.find(id);
  if (it == streams_.end()) return;
  auto* callbacks = it->second;
  streams_.erase(it);
  callbacks->onResponseEnd({});
}

void Http2Connection::onTrailers(int32_t id, http::HeaderMap&& trailers) {
  auto it = streams_.find(id);
  if (it == streams_.end()) return;
  auto* callbacks = it->second;
  streams_.erase(it);
  callbacks->onResponseEnd(std::move(trailers));
}

void Http2Connection::onStreamClose(int32_t id, uint32_t error_code) {
  auto it = streams_.find(id);
  if (it == streams_.end()) return;
  auto* callbacks = it->second;
  streams_.erase(it);
  callbacks->onStreamFailed(error_code == 0 ? "upstream stream closed before the response ended"
                                            : "upstream reset the stream (HTTP/2 error " + std::to_string(error_code) + ")",
                            error_code);
}

void Http2Connection::onStreamDrained(int32_t id) {
  auto it = streams_.find(id);
  if (it != streams_.end()) it->second->onRequestDrained();
}

void Http2Connection::onGoaway(int32_t, uint32_t) {
  // Streams above last_stream_id are closed by nghttp2 (REFUSED_STREAM) and reported
  // through onStreamClose; the rest finish here, then the connection closes.
  draining_ = true;
}

// A request waiting for a connection being made.
class Http2Pool::Waiter : public PendingConnection {
public:
  Waiter(Http2Pool& pool, PoolKey key, Ready ready) : pool_(pool), key_(std::move(key)), ready_(std::move(ready)) {}
  ~Waiter() override {
    if (!fired_) pool_.removeWaiter(key_, this);
  }
  void fire(common::Result<Http2Connection*> result) {
    fired_ = true;
    auto ready = std::move(ready_);
    ready(result);  // may destroy this waiter
  }
  bool fired() const { return fired_; }

private:
  Http2Pool& pool_;
  PoolKey key_;
  Ready ready_;
  bool fired_ = false;
};

Http2Pool::Http2Pool(event::Dispatcher& dispatcher, ConnectionPool& sockets, common::StatsStore& stats)
    : dispatcher_(dispatcher), sockets_(sockets), sweep_(dispatcher, [this] { sweep(); }),
      cx_total_(stats.counter("culvert_http2_upstream_cx_total", {}, "Upstream HTTP/2 connections opened")),
      cx_active_(stats.gauge("culvert_http2_upstream_cx_active", {}, "Open upstream HTTP/2 connections")),
      rq_total_(stats.counter("culvert_http2_upstream_rq_total", {}, "Streams opened on upstream HTTP/2 connections")) {}

Http2Pool::~Http2Pool() {
  cx_active_.add(-static_cast<int64_t>(connections_.size()));
}

std::unique_ptr<PendingConnection> Http2Pool::acquire(const ConnectRequest& request, Ready ready) {
  auto [begin, end] = connections_.equal_range(request.key);
  auto now = dispatcher_.now();
  for (auto it = begin; it != end; ++it) {
    // One past its lifetime whose sweep has not run yet takes no new stream.
    if (it->second->canOpenStream() && lifetimeEnd(*it->second).first > now) {
      ready(it->second.get());
      return nullptr;
    }
  }
  auto waiter = std::make_unique<Waiter>(*this, request.key, std::move(ready));
  bool start = connecting_.find(request.key) == connecting_.end();
  connecting_[request.key].waiters.push_back(waiter.get());
  if (start) {
    auto key = request.key;
    auto pending = sockets_.acquire(request, [this, key, share = request.share](auto result) {
      onConnected(key, share, std::move(result));
    });
    if (auto it = connecting_.find(key); it != connecting_.end()) it->second.pending = std::move(pending);
  }
  if (waiter->fired()) return nullptr;  // failed synchronously
  return waiter;
}

void Http2Pool::onConnected(const PoolKey& key, network::WorkShare share,
                            common::Result<std::unique_ptr<network::TcpConnection>> result) {
  auto it = connecting_.find(key);
  if (it == connecting_.end()) return;
  auto waiters = std::move(it->second.waiters);
  // We are inside the pending connection's own callback: delete it after.
  if (it->second.pending) dispatcher_.deferredDelete(std::move(it->second.pending));
  connecting_.erase(it);
  Http2Connection* connection = nullptr;
  if (result) {
    auto owned = std::make_unique<Http2Connection>(*this, key, std::move(*result), share);
    connection = owned.get();
    connections_.emplace(key, std::move(owned));
    cx_total_.inc();
    cx_active_.add(1);
  }
  // A waiter's callback may destroy other waiters: each is detached (fired) just before
  // its own callback, and the rest are looked up again.
  firing_ = &waiters;
  for (size_t i = 0; i < waiters.size(); ++i) {
    auto* w = waiters[i];
    if (w == nullptr) continue;
    waiters[i] = nullptr;
    if (result) {
      w->fire(connection);
    } else {
      w->fire(std::unexpected(result.error()));
    }
  }
  firing_ = nullptr;
  // Made for an endpoint that left while it connected: it serves the requests that waited
  // for it and drains like the others.
  if (connection && !connection->closed_ && !sockets_.isLive(connection->key())) drainLeftEndpoint(*connection);
}

void Http2Pool::removeWaiter(const PoolKey& key, Waiter* waiter) {
  if (firing_ != nullptr) std::replace(firing_->begin(), firing_->end(), waiter, static_cast<Waiter*>(nullptr));
  auto it = connecting_.find(key);
  if (it == connecting_.end()) return;
  std::erase(it->second.waiters, waiter);
  // Nobody waits any more: the connection is still made and kept for the next request.
}

void Http2Pool::retire(Http2Connection* connection) {
  auto [begin, end] = connections_.equal_range(connection->key());
  for (auto it = begin; it != end; ++it) {
    if (it->second.get() == connection) {
      cx_active_.add(-1);
      dispatcher_.deferredDelete(std::move(it->second));
      connections_.erase(it);
      return;
    }
  }
}

std::pair<EarliestDeadline::TimePoint, LifetimeEnd> Http2Pool::lifetimeEnd(const Http2Connection& connection) const {
  if (connection.draining_ || connection.closed_) return {EarliestDeadline::kNever, LifetimeEnd::IdleTimeout};
  auto lifetime = sockets_.lifetimeOf(connection.key());
  auto life_end = lifetime.max_duration.count() > 0 ? connection.connection_->createdAt() + lifetime.max_duration
                                                     : EarliestDeadline::kNever;
  auto idle_end = lifetime.idle_timeout.count() > 0 && connection.streams_.empty()
                      ? connection.idle_since_ + lifetime.idle_timeout
                      : EarliestDeadline::kNever;
  if (life_end <= idle_end) return {life_end, LifetimeEnd::MaxDuration};
  return {idle_end, LifetimeEnd::IdleTimeout};
}

void Http2Pool::scheduleLifetime(const Http2Connection& connection) {
  auto end = lifetimeEnd(connection).first;
  if (end != EarliestDeadline::kNever) sweep_.request(end);
}

void Http2Pool::sweep() {
  auto now = dispatcher_.now();
  auto next = EarliestDeadline::kNever;
  std::vector<Http2Connection*> due, drain_over;
  for (auto& [key, connection] : connections_) {
    if (connection->closed_) continue;
    if (connection->drain_deadline_ <= now) {
      sockets_.countLifetimeEnd(key, LifetimeEnd::DrainTimeout);
      drain_over.push_back(connection.get());
      continue;
    }
    next = std::min(next, connection->drain_deadline_);
    auto [end, why] = lifetimeEnd(*connection);
    if (end <= now) {
      sockets_.countLifetimeEnd(key, why);
      due.push_back(connection.get());
    } else {
      next = std::min(next, end);
    }
  }
  for (auto* c : due) drain(*c);
  // Failing a connection calls its streams back, and they may open streams elsewhere (a
  // retry): the connections are collected first. Retired ones are deleted later, so the
  // pointers stay valid here.
  for (auto* c : drain_over) c->fail("upstream " + c->key().endpoint.toString() + " left its cluster: closed at the drain timeout");
  if (next != EarliestDeadline::kNever) sweep_.request(next);
}

// GOAWAY: no new streams; the connection closes once its streams finish.
void Http2Pool::drain(Http2Connection& connection) {
  connection.draining_ = true;
  connection.codec_.goAway();
  connection.flush();
  connection.maybeRetire();
}

void Http2Pool::drainLeftEndpoint(Http2Connection& connection) {
  if (connection.drain_deadline_ == EarliestDeadline::kNever) {
    connection.drain_deadline_ = dispatcher_.now() + sockets_.drainTimeout();
    sweep_.request(connection.drain_deadline_);
  }
  if (!connection.draining_) drain(connection);
}

void Http2Pool::drainDeadEndpoints() {
  std::vector<Http2Connection*> dead;
  for (auto& [key, connection] : connections_) {
    // Also ones already draining (a GOAWAY, max_connection_duration): their streams get
    // the same deadline.
    if (!connection->closed_ && connection->drain_deadline_ == EarliestDeadline::kNever && !sockets_.isLive(key)) {
      dead.push_back(connection.get());
    }
  }
  for (auto* c : dead) drainLeftEndpoint(*c);
}

void Http2Pool::drainPod(uint64_t pod_id) {
  std::vector<Http2Connection*> doomed;
  for (auto& [key, connection] : connections_) {
    if (key.pod_id == pod_id) doomed.push_back(connection.get());
  }
  for (auto* c : doomed) c->fail("the pod was removed");
}

}  // namespace culvert::upstream
