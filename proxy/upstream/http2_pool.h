#pragma once

#include <chrono>
#include <functional>
#include <map>
#include <memory>
#include <string>
#include <vector>

#include "proxy/common/recycled.h"
#include "proxy/common/stats.h"
#include "proxy/event/dispatcher.h"
#include "proxy/http/http2/codec.h"
#include "proxy/network/connection.h"
#include "proxy/upstream/connection_pool.h"

namespace culvert::upstream {

// What one upstream HTTP/2 stream reports to the request that opened it.
class Http2StreamCallbacks {
public:
  virtual ~Http2StreamCallbacks() = default;
  virtual void onResponseHeaders(http::HeaderMap&& headers, bool end_stream) = 0;
  virtual void onResponseData(std::string_view data) = 0;
  virtual void onResponseEnd(http::HeaderMap&& trailers) = 0;  // trailers may be empty
  // Reset, refused or the connection failed; nothing more is reported. `error_code` is the
  // stream's HTTP/2 error (RST_STREAM, or REFUSED_STREAM for streams a GOAWAY cut off); 0
  // when the whole connection failed.
  virtual void onStreamFailed(const std::string& reason, uint32_t error_code) = 0;
  // The request's queued body bytes went out: the downstream may read more.
  virtual void onRequestDrained() {}
};

class Http2Pool;

// One upstream HTTP/2 connection multiplexing the streams of one (pod, endpoint) on a
// worker, up to the peer's SETTINGS_MAX_CONCURRENT_STREAMS.
class Http2Connection : public network::ConnectionCallbacks, public http::http2::CodecCallbacks {
public:
  // `share`: the tenant whose reads and response processing this connection's are.
  Http2Connection(Http2Pool& pool, PoolKey key, std::unique_ptr<network::TcpConnection> connection,
                  network::WorkShare share = {});
  ~Http2Connection() override;

  bool canOpenStream() const;
  // Opens a stream; 0 when it cannot.
  int32_t openStream(http::HeaderMap headers, bool end_stream, Http2StreamCallbacks* callbacks);
  void sendData(int32_t id, std::string_view data);
  void endStream(int32_t id, const http::HeaderMap& trailers = {});
  // The request is gone: resets the stream if it is still open. No callback follows.
  void cancel(int32_t id);
  // `bytes` of the stream's response went downstream: the upstream may send more.
  void consume(int32_t id, size_t bytes);
  size_t queuedBytes(int32_t id) const { return codec_.queuedBytes(id); }
  const PoolKey& key() const { return key_; }
  size_t activeStreams() const { return streams_.size(); }
  // Flushes the codec's output to the socket (after a batch of calls above).
  void flush();

  // network::ConnectionCallbacks
  void onData(std::string_view data) override;
  void onClose(network::CloseReason reason) override;
  void onWriteDrained() override { flush(); }
  // Shared: the reads wait for the tenant's share and turn (as the downstream session's
  // do), and what they bring is processed as the tenant's work.
  network::WorkShare readShare() const override { return share_; }

  // http2::CodecCallbacks
  void onHeaders(int32_t id, http::HeaderMap&& headers, bool end_stream) override;
  void onData(int32_t id, std::string_view data) override;
  void onEndStream(int32_t id) override;
  void onTrailers(int32_t id, http::HeaderMap&& trailers) override;
  void onStreamClose(int32_t id, uint32_t error_code) override;
  void onStreamDrained(int32_t id) override;
  void onGoaway(int32_t last_stream_id, uint32_t error_code) override;

private:
  void fail(const std::string& reason);
  void maybeRetire();
  void receive(std::string_view data);

  Http2Pool& pool_;
  PoolKey key_;
  std::unique_ptr<network::TcpConnection> connection_;
  network::WorkShare share_;
  http::http2::Codec codec_;
  common::RecyclingHashMap<int32_t, Http2StreamCallbacks*> streams_;
  std::string out_;
  bool in_codec_ = false;  // inside nghttp2 (receive or takeOutput)
  bool flush_pending_ = false;
  bool draining_ = false;  // GOAWAY received or sent: no new streams
  uint32_t streams_opened_ = 0;  // counted under max_requests_per_connection
  bool goaway_at_end_ = false;   // draining without a GOAWAY sent yet: send one at the close
  bool closed_ = false;
  std::chrono::steady_clock::time_point idle_since_;
  // Set when its endpoint left its cluster: streams still open then are ended.
  EarliestDeadline::TimePoint drain_deadline_ = EarliestDeadline::kNever;
  friend class Http2Pool;
};

// One worker's upstream HTTP/2 connections, keyed like the HTTP/1.1 pool (source pod,
// endpoint): a request joins a connection with room for a stream, else one being made,
// else a new one. Connections without streams close after the cluster's idle_timeout;
// ones older than its max_connection_duration, or that opened max_requests_per_connection
// streams, take no new streams and close when their streams finish.
class Http2Pool {
public:
  using Ready = std::function<void(common::Result<Http2Connection*>)>;

  // Connection lifetimes come from `sockets` (the clusters' common_http_protocol_options).
  Http2Pool(event::Dispatcher& dispatcher, ConnectionPool& sockets, common::StatsStore& stats);
  ~Http2Pool();

  // Calls `ready` with a connection that can open a stream now (synchronously, returning
  // null) or once one is connected. Destroying the returned handle cancels.
  std::unique_ptr<PendingConnection> acquire(const ConnectRequest& request, Ready ready);
  void drainPod(uint64_t pod_id);
  // After a configuration change: connections whose endpoint left its cluster take no new
  // streams (GOAWAY) and close once their streams finish — at once when they have none,
  // and with the streams still open at the pool's drain timeout.
  void drainDeadEndpoints();
  size_t connectionCount() const { return connections_.size(); }
  event::Dispatcher& dispatcher() { return dispatcher_; }

private:
  friend class Http2Connection;
  class Waiter;
  struct Connecting {
    std::unique_ptr<PendingConnection> pending;
    std::vector<Waiter*> waiters;
  };
  void onConnected(const PoolKey& key, network::WorkShare share,
                   common::Result<std::unique_ptr<network::TcpConnection>> result);
  void removeWaiter(const PoolKey& key, Waiter* waiter);
  void retire(Http2Connection* connection);
  void drain(Http2Connection& connection);
  // Drains a connection whose endpoint left, ending it at the drain timeout.
  void drainLeftEndpoint(Http2Connection& connection);
  // Asks the sweep to run when `connection` reaches its idle or maximum lifetime.
  void scheduleLifetime(const Http2Connection& connection);
  // When `connection` is due to drain (kNever: not due), and why.
  std::pair<EarliestDeadline::TimePoint, LifetimeEnd> lifetimeEnd(const Http2Connection& connection) const;
  void sweep();

  event::Dispatcher& dispatcher_;
  ConnectionPool& sockets_;
  std::multimap<PoolKey, std::unique_ptr<Http2Connection>> connections_;
  std::map<PoolKey, Connecting> connecting_;
  std::vector<Waiter*>* firing_ = nullptr;  // the waiters onConnected is calling back
  EarliestDeadline sweep_;
  common::Counter& cx_total_;
  common::Gauge& cx_active_;
  common::Counter& rq_total_;
};

}  // namespace culvert::upstream
