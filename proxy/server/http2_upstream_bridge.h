#pragma once

#include <memory>
#include <string>
#include <string_view>

#include "proxy/http/header_map.h"
#include "proxy/upstream/connection_pool.h"
#include "proxy/upstream/http2_pool.h"

namespace culvert::server {

class Http1Session;

// The upstream half of an HTTP/1.1 request to an HTTP/2 cluster: one stream on a shared
// upstream HTTP/2 connection. The response goes back through the session's own
// head/body/complete path (so framing, back-pressure and timeouts stay the session's);
// response trailers have no HTTP/1.1 encoding in culvert and are dropped.
class Http2UpstreamBridge : public upstream::Http2StreamCallbacks {
public:
  Http2UpstreamBridge(Http1Session& session, http::HeaderMap request_block, bool end_at_head);
  ~Http2UpstreamBridge() override;
  // Acquires the connection; may call back into the session at once.
  void start(upstream::Http2Pool& pool, const upstream::ConnectRequest& connect);

  // Request body bytes (raw, not chunk-encoded) and the end of the request.
  void sendData(std::string_view data);
  void end();
  // Request bytes culvert still holds for this stream (pending connect or flow control).
  size_t queuedBytes() const;
  // The downstream socket drained: reopen the upstream's window for what went out.
  void downstreamDrained();

  void onResponseHeaders(http::HeaderMap&& headers, bool end_stream) override;
  void onResponseData(std::string_view data) override;
  void onResponseEnd(http::HeaderMap&& trailers) override;
  void onStreamFailed(const std::string& reason) override;
  void onRequestDrained() override;

private:
  void onReady(common::Result<upstream::Http2Connection*> connection);

  Http1Session& session_;
  http::HeaderMap block_;
  std::unique_ptr<upstream::PendingConnection> connecting_;
  upstream::Http2Connection* connection_ = nullptr;
  int32_t stream_id_ = 0;
  std::string pending_;  // request body before the stream is open
  bool ended_ = false;
  bool head_seen_ = false;
  size_t unconsumed_ = 0;  // response DATA passed on, upstream window not yet reopened
};

}  // namespace culvert::server
