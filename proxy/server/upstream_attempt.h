#pragma once

#include <cstddef>
#include <memory>
#include <string>
#include <string_view>

#include "proxy/event/dispatcher.h"
#include "proxy/event/scheduler.h"
#include "proxy/http/header_map.h"
#include "proxy/router/retry_state.h"
#include "proxy/tenant/tenant_context.h"
#include "proxy/upstream/connection_pool.h"
#include "proxy/upstream/http2_pool.h"

namespace culvert::server {

class UpstreamAttempt;

// What an attempt reports to the request that runs it (RouterStream). After onAttemptEnd or
// onAttemptFailed nothing more is reported; abandon() stops the reports at once.
class AttemptCallbacks {
public:
  virtual ~AttemptCallbacks() = default;
  virtual void onAttemptConnected(UpstreamAttempt& attempt) = 0;
  virtual void onAttemptHead(UpstreamAttempt& attempt, http::ResponseHead&& head, bool end_stream) = 0;
  virtual void onAttemptData(UpstreamAttempt& attempt, std::string_view data) = 0;
  // One read of the response was handled (its head and body pieces reported).
  virtual void onAttemptReadDone(UpstreamAttempt& attempt) = 0;
  virtual void onAttemptEnd(UpstreamAttempt& attempt, http::HeaderMap&& trailers) = 0;
  // No (more) response: connect failure, reset, refused stream, malformed response.
  // `head_seen`: the response head had already been reported.
  virtual void onAttemptFailed(UpstreamAttempt& attempt, router::AttemptFailure failure, const std::string& reason,
                               bool head_seen) = 0;
  // A byte came from the upstream (per-try idle timeout, stream idle timeout).
  virtual void onAttemptActivity(UpstreamAttempt& attempt) = 0;
  // Request bytes the attempt held went out: it may take more.
  virtual void onAttemptDrained(UpstreamAttempt& attempt) = 0;
};

// What an attempt borrows from its worker.
struct AttemptServices {
  event::Dispatcher& dispatcher;
  event::Scheduler& scheduler;
  upstream::ConnectionPool& pool;
  upstream::Http2Pool* http2_pool;  // null: no HTTP/2 upstreams on this worker
};

// One try of a request against one endpoint: a pooled HTTP/1.1 connection of its own, or a
// stream on a shared HTTP/2 connection, as the cluster says. The request head is the one
// the upstream sees; the body comes raw (unframed) through sendData(), so a retry replays
// the same bytes over either protocol. Back-pressure both ways: queuedBytes() says how much
// request body waits, setResponseFlow() stops and resumes the response.
class UpstreamAttempt {
public:
  virtual ~UpstreamAttempt() = default;

  // Connects (or takes a pooled connection or stream); may report at once.
  virtual void start(const upstream::ConnectRequest& connect) = 0;
  virtual void sendData(std::string_view data) = 0;
  // The request is whole; `trailers` go only to an HTTP/2 upstream.
  virtual void end(const http::HeaderMap& trailers) = 0;
  // Request bytes waiting in user space (before the connection is up, or not yet written).
  virtual size_t queuedBytes() const = 0;
  virtual bool connected() const = 0;
  // Whether the response may flow now (the downstream keeps up and the tenant is within
  // its share). Off: the upstream is not read (HTTP/1.1) or its window stays shut (HTTP/2).
  virtual void setResponseFlow(bool open) = 0;
  // The request gave up on this attempt (retried, hedged, timed out): the connection is
  // closed or the stream reset; no callback follows.
  virtual void abandon() = 0;

  const common::SocketAddress& endpoint() const { return endpoint_; }

  // `request` must outlive the attempt. `tenant` pays for reading the response (HTTP/1.1).
  static std::unique_ptr<UpstreamAttempt> http1(AttemptServices services, const http::RequestHead& request,
                                                const tenant::TenantContext& tenant, AttemptCallbacks& callbacks,
                                                common::SocketAddress endpoint);
  // `te_trailers`: the client sent "te: trailers" (gRPC needs it end to end; hop-by-hop
  // removal took it out of `request`).
  static std::unique_ptr<UpstreamAttempt> http2(AttemptServices services, const http::RequestHead& request,
                                                bool te_trailers, AttemptCallbacks& callbacks,
                                                common::SocketAddress endpoint);

protected:
  explicit UpstreamAttempt(common::SocketAddress endpoint) : endpoint_(std::move(endpoint)) {}

private:
  common::SocketAddress endpoint_;
};

}  // namespace culvert::server
