#include "proxy/server/http2_upstream_bridge.h"

#include "proxy/http/http1/encoder.h"
#include "proxy/http/http2/message.h"
#include "proxy/server/http1_session.h"

namespace culvert::server {

namespace {
constexpr size_t kHighWatermark = 256 * 1024;
}

Http2UpstreamBridge::Http2UpstreamBridge(Http1Session& session, http::HeaderMap request_block, bool end_at_head)
    : session_(session), block_(std::move(request_block)), ended_(end_at_head) {}

void Http2UpstreamBridge::start(upstream::Http2Pool& pool, const upstream::ConnectRequest& connect) {
  connecting_ = pool.acquire(connect, [this](auto result) { onReady(result); });
}

Http2UpstreamBridge::~Http2UpstreamBridge() {
  if (connection_ != nullptr) connection_->cancel(stream_id_);
}

void Http2UpstreamBridge::onReady(common::Result<upstream::Http2Connection*> connection) {
  connecting_.reset();
  if (!connection) {
    session_.pod_->tenant->upstream_cx_connect_fail->inc();
    session_.onUpstreamFailed(connection.error().describe(), false);
    return;
  }
  bool end_now = ended_ && pending_.empty();
  stream_id_ = (*connection)->openStream(block_, end_now, this);
  if (stream_id_ <= 0) {
    session_.onUpstreamFailed("cannot open a stream on the upstream HTTP/2 connection", false);
    return;
  }
  connection_ = *connection;
  block_ = http::HeaderMap{};
  if (!pending_.empty()) connection_->sendData(stream_id_, pending_);
  if (ended_ && !end_now) connection_->endStream(stream_id_);
  pending_.clear();
  pending_.shrink_to_fit();
  session_.updateDownstreamReading();
}

void Http2UpstreamBridge::sendData(std::string_view data) {
  if (connection_ != nullptr) {
    connection_->sendData(stream_id_, data);
  } else {
    pending_.append(data);
  }
}

void Http2UpstreamBridge::end() {
  if (ended_) return;
  ended_ = true;
  if (connection_ != nullptr) connection_->endStream(stream_id_);
}

size_t Http2UpstreamBridge::queuedBytes() const {
  return connection_ != nullptr ? connection_->queuedBytes(stream_id_) : pending_.size();
}

void Http2UpstreamBridge::downstreamDrained() {
  if (connection_ == nullptr || unconsumed_ == 0) return;
  connection_->consume(stream_id_, unconsumed_);
  unconsumed_ = 0;
}

void Http2UpstreamBridge::onResponseHeaders(http::HeaderMap&& headers, bool end_stream) {
  head_seen_ = true;
  auto head = http::http2::toResponseHead(std::move(headers));
  if (end_stream) connection_ = nullptr;
  session_.onResponseHead(head);
  if (end_stream) session_.onResponseComplete(false);
}

void Http2UpstreamBridge::onResponseData(std::string_view data) {
  session_.onResponseBody(data);
  session_.flushResponse();
  unconsumed_ += data.size();
  if (session_.downstream_->queuedWriteBytes() <= kHighWatermark) downstreamDrained();
}

void Http2UpstreamBridge::onResponseEnd(http::HeaderMap&&) {
  connection_ = nullptr;
  session_.onResponseComplete(false);
}

void Http2UpstreamBridge::onStreamFailed(const std::string& reason) {
  connection_ = nullptr;
  session_.onUpstreamFailed(reason, head_seen_);
}

void Http2UpstreamBridge::onRequestDrained() { session_.updateDownstreamReading(); }

}  // namespace culvert::server
