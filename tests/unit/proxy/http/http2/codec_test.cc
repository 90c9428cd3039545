#include "proxy/http/http2/codec.h"

#include <gtest/gtest.h>

#include <map>
#include <optional>
#include <string>
#include <vector>

namespace culvert::http::http2 {
namespace {

// Records what one side of the connection decoded.
struct Recorder : CodecCallbacks {
  struct StreamLog {
    HeaderMap headers;
    bool head_ended = false;
    std::string body;
    bool data_ended = false;
    std::optional<HeaderMap> trailers;
    std::optional<uint32_t> closed_with;
  };
  std::map<int32_t, StreamLog> streams;
  std::vector<int32_t> opened;
  std::vector<HeaderRejectReason> rejected;
  std::optional<uint32_t> goaway_code;
  std::vector<int32_t> goaway_last_ids;
  bool auto_consume = true;
  Codec* codec = nullptr;

  void onHeaders(int32_t id, HeaderMap&& headers, bool end_stream) override {
    opened.push_back(id);
    streams[id].headers = std::move(headers);
    streams[id].head_ended = end_stream;
  }
  void onData(int32_t id, std::string_view data) override {
    streams[id].body.append(data);
    if (auto_consume) codec->consume(id, data.size());
  }
  void onEndStream(int32_t id) override { streams[id].data_ended = true; }
  void onTrailers(int32_t id, HeaderMap&& trailers) override { streams[id].trailers = std::move(trailers); }
  void onStreamClose(int32_t id, uint32_t error_code) override { streams[id].closed_with = error_code; }
  void onGoaway(int32_t last_stream_id, uint32_t error_code) override {
    goaway_code = error_code;
    goaway_last_ids.push_back(last_stream_id);
  }
  void onHeaderRejected(int32_t, HeaderRejectReason reason) override { rejected.push_back(reason); }
};

// Two codecs wired back to back in memory.
class CodecPair : public ::testing::Test {
protected:
  void make(Limits server_limits = {}, Limits client_limits = {}) {
    server_ = std::make_unique<Codec>(Mode::Server, server_limits, server_log_);
    client_ = std::make_unique<Codec>(Mode::Client, client_limits, client_log_);
    server_log_.codec = server_.get();
    client_log_.codec = client_.get();
  }
  void SetUp() override { make(); }

  // Moves bytes both ways until neither side has anything to say.
  void pump() {
    for (int i = 0; i < 1000; ++i) {
      std::string c2s, s2c;
      client_->takeOutput(c2s);
      server_->takeOutput(s2c);
      if (c2s.empty() && s2c.empty()) return;
      if (!c2s.empty()) {
        ASSERT_TRUE(server_->receive(c2s));
      }
      if (!s2c.empty()) {
        ASSERT_TRUE(client_->receive(s2c));
      }
    }
    FAIL() << "the codecs never went quiet";
  }

  static HeaderMap request(std::string path = "/") {
    HeaderMap h;
    h.add(":method", "POST");
    h.add(":scheme", "http");
    h.add(":authority", "svc.test");
    h.add(":path", std::move(path));
    return h;
  }
  static HeaderMap response(std::string status = "200") {
    HeaderMap h;
    h.add(":status", std::move(status));
    return h;
  }

  Recorder server_log_, client_log_;
  std::unique_ptr<Codec> server_, client_;
};

TEST_F(CodecPair, RequestAndResponseWithBodiesAndTrailers) {
  auto h = request("/echo");
  h.add("te", "trailers");
  int32_t id = client_->submitRequest(h, false);
  ASSERT_GT(id, 0);
  client_->sendData(id, "hello ");
  client_->sendData(id, "world");
  client_->endStream(id);
  pump();
  ASSERT_EQ(server_log_.opened, std::vector<int32_t>{id});
  auto& req = server_log_.streams[id];
  EXPECT_EQ(req.headers.get(":path"), "/echo");
  EXPECT_EQ(req.headers.get("te"), "trailers");
  EXPECT_FALSE(req.head_ended);
  EXPECT_EQ(req.body, "hello world");
  EXPECT_TRUE(req.data_ended);

  ASSERT_TRUE(server_->submitResponse(id, response(), false));
  server_->sendData(id, "reply");
  HeaderMap trailers;
  trailers.add("grpc-status", "0");
  server_->endStream(id, trailers);
  pump();
  auto& resp = client_log_.streams[id];
  EXPECT_EQ(resp.headers.get(":status"), "200");
  EXPECT_EQ(resp.body, "reply");
  ASSERT_TRUE(resp.trailers.has_value());
  EXPECT_EQ(resp.trailers->get("grpc-status"), "0");
  EXPECT_EQ(resp.closed_with, 0u);
  EXPECT_EQ(client_->openStreams(), 0u);
  EXPECT_EQ(server_->openStreams(), 0u);
}

// nghttp2 points into a submitted block rather than copying it: the codec keeps the block
// until its HEADERS frame is serialized, whatever the caller does with its own copy.
TEST_F(CodecPair, SubmittedBlocksOutliveTheCallersCopy) {
  const std::string long_value(200, 'v');  // on the heap, unlike a short (SSO) value
  std::vector<int32_t> ids;
  for (int i = 0; i < 3; ++i) {
    auto h = request("/" + std::to_string(i));
    h.add("x-long", long_value + std::to_string(i));
    ids.push_back(client_->submitRequest(std::move(h), true));
  }
  // Freed memory reused before anything is serialized.
  std::vector<std::string> clobber(64, std::string(210, '#'));
  pump();
  ASSERT_EQ(server_log_.opened, ids);
  for (int i = 0; i < 3; ++i) {
    EXPECT_EQ(server_log_.streams[ids[i]].headers.get(":path"), "/" + std::to_string(i));
    EXPECT_EQ(server_log_.streams[ids[i]].headers.get("x-long"), long_value + std::to_string(i));
  }
  for (int i = 0; i < 3; ++i) {
    auto h = response();
    h.add("x-long", long_value + std::to_string(i));
    ASSERT_TRUE(server_->submitResponse(ids[i], std::move(h), true));
  }
  clobber.assign(64, std::string(210, '%'));
  pump();
  for (int i = 0; i < 3; ++i) {
    EXPECT_EQ(client_log_.streams[ids[i]].headers.get(":status"), "200");
    EXPECT_EQ(client_log_.streams[ids[i]].headers.get("x-long"), long_value + std::to_string(i));
  }
}

TEST_F(CodecPair, HeadersOnlyRequestEndsAtTheHead) {
  auto h = request();
  h.set(":method", "GET");
  int32_t id = client_->submitRequest(h, true);
  pump();
  EXPECT_TRUE(server_log_.streams[id].head_ended);
  ASSERT_TRUE(server_->submitResponse(id, response("204"), true));
  pump();
  EXPECT_EQ(client_log_.streams[id].headers.get(":status"), "204");
  EXPECT_TRUE(client_log_.streams[id].head_ended);
}

TEST_F(CodecPair, ConcurrentStreamsAnsweredOutOfOrder) {
  std::vector<int32_t> ids;
  for (int i = 0; i < 3; ++i) ids.push_back(client_->submitRequest(request("/" + std::to_string(i)), true));
  pump();
  ASSERT_EQ(server_log_.opened.size(), 3u);
  EXPECT_EQ(server_->openStreams(), 3u);
  for (auto it = ids.rbegin(); it != ids.rend(); ++it) {
    server_->submitResponse(*it, response(), false);
    server_->sendData(*it, server_log_.streams[*it].headers.get(":path").value_or("?"));
    server_->endStream(*it);
  }
  pump();
  for (int i = 0; i < 3; ++i) EXPECT_EQ(client_log_.streams[ids[i]].body, "/" + std::to_string(i));
}

TEST_F(CodecPair, SlowReaderHoldsTheSenderAtTheWindow) {
  server_log_.auto_consume = false;
  int32_t id = client_->submitRequest(request(), false);
  const std::string body(1024 * 1024, 'x');
  client_->sendData(id, body);
  pump();
  // Nothing consumed: the server holds at most one stream window, the rest waits in the
  // sender (where back-pressure can act on it).
  size_t received = server_log_.streams[id].body.size();
  EXPECT_EQ(received, Limits{}.initial_stream_window);
  EXPECT_EQ(client_->queuedBytes(id), body.size() - received);

  server_->consume(id, received);
  pump();
  EXPECT_EQ(server_log_.streams[id].body.size(), 2 * received);
  server_->consume(id, received);
  server_->consume(id, received);
  pump();
  server_->consume(id, received);
  pump();
  EXPECT_EQ(server_log_.streams[id].body.size(), body.size());
  EXPECT_EQ(client_->queuedBytes(id), 0u);
}

TEST_F(CodecPair, ConnectionSpecificHeadersResetTheStream) {
  for (const char* name : {"connection", "keep-alive", "proxy-connection", "transfer-encoding", "upgrade"}) {
    auto h = request();
    h.add(name, "x");
    int32_t id = client_->submitRequest(h, true);
    pump();
    EXPECT_FALSE(server_log_.streams[id].headers.get(":path")) << name;
    EXPECT_EQ(client_log_.streams[id].closed_with, 1u /* PROTOCOL_ERROR */) << name;
  }
  EXPECT_EQ(server_log_.rejected, std::vector<HeaderRejectReason>(5, HeaderRejectReason::ConnectionSpecific));
  EXPECT_TRUE(server_log_.opened.empty());
}

TEST_F(CodecPair, TeOtherThanTrailersIsRejected) {
  auto h = request();
  h.add("te", "gzip");
  int32_t id = client_->submitRequest(h, true);
  pump();
  EXPECT_EQ(server_log_.rejected, std::vector<HeaderRejectReason>{HeaderRejectReason::TeNotTrailers});
  EXPECT_TRUE(client_log_.streams[id].closed_with.has_value());
  EXPECT_NE(*client_log_.streams[id].closed_with, 0u);
}

TEST_F(CodecPair, HeaderCountAndSizeLimits) {
  Limits limits;
  limits.max_header_count = 10;
  limits.max_header_list_bytes = 4096;
  make(limits);
  auto many = request();
  for (int i = 0; i < 10; ++i) many.add("x-h" + std::to_string(i), "v");
  int32_t a = client_->submitRequest(many, true);
  auto big = request();
  big.add("x-big", std::string(5000, 'b'));
  int32_t b = client_->submitRequest(big, true);
  int32_t ok = client_->submitRequest(request(), true);
  pump();
  EXPECT_EQ(server_log_.rejected,
            (std::vector<HeaderRejectReason>{HeaderRejectReason::TooManyHeaders, HeaderRejectReason::HeadersTooLarge}));
  EXPECT_NE(client_log_.streams[a].closed_with.value_or(0), 0u);
  EXPECT_NE(client_log_.streams[b].closed_with.value_or(0), 0u);
  EXPECT_EQ(server_log_.opened, std::vector<int32_t>{ok});
}

TEST_F(CodecPair, PeerMaxConcurrentStreamsAndGoaway) {
  Limits limits;
  limits.max_concurrent_streams = 2;
  make(limits);
  client_->submitRequest(request(), true);
  pump();
  EXPECT_EQ(client_->peerMaxConcurrentStreams(), 2u);
  server_->goAway();
  pump();
  EXPECT_TRUE(client_->goawayReceived());
  EXPECT_EQ(client_log_.goaway_code, 0u);
}

// A graceful drain: the notice (2^31-1) stops the client opening streams but keeps the
// connection; the final GOAWAY names the last stream taken, which still completes, and
// the connection is finished once it has.
TEST_F(CodecPair, ShutdownNoticeThenGoawayLetsTheStreamInFlightFinish) {
  int32_t first = client_->submitRequest(request(), true);
  pump();
  server_->shutdownNotice();
  pump();
  EXPECT_EQ(client_log_.goaway_last_ids, std::vector<int32_t>{0x7fffffff});
  EXPECT_FALSE(server_->finished());
  // The client opens no more: nghttp2 refuses the stream itself, it never goes out.
  int32_t refused = client_->submitRequest(request(), true);
  server_->goAway();
  pump();
  EXPECT_EQ(client_log_.goaway_last_ids, (std::vector<int32_t>{0x7fffffff, first}));
  EXPECT_NE(client_log_.streams[refused].closed_with.value_or(0), 0u);
  EXPECT_EQ(server_log_.opened, std::vector<int32_t>{first});
  EXPECT_FALSE(server_->finished());  // the stream is still open
  server_->submitResponse(first, response(), true);
  pump();
  EXPECT_EQ(client_log_.streams[first].closed_with, 0u);
  EXPECT_TRUE(server_->finished());
  EXPECT_FALSE(server_->failed());
}

// Idle: no stream open when the drain starts; the final GOAWAY still goes out, and then
// the connection is finished. (Read off the wire: an nghttp2 client with no stream left
// is done after the notice and ignores what follows.)
TEST_F(CodecPair, ShutdownNoticeThenGoawayOnAnIdleConnection) {
  int32_t first = client_->submitRequest(request(), true);
  pump();
  server_->submitResponse(first, response(), true);
  pump();
  server_->shutdownNotice();
  pump();
  EXPECT_FALSE(server_->finished());
  server_->goAway();
  std::string out;
  server_->takeOutput(out);
  ASSERT_EQ(out.size(), 17u);  // one GOAWAY: 9 bytes of frame header, last stream id, error code
  EXPECT_EQ(out[3], 0x7);
  EXPECT_EQ(out.substr(9, 8), std::string("\0\0\0\1\0\0\0\0", 8));  // last stream 1, NO_ERROR
  EXPECT_TRUE(server_->finished());
}

TEST_F(CodecPair, GarbageIsAConnectionError) {
  EXPECT_FALSE(server_->receive("GET / HTTP/1.1\r\nHost: x\r\n\r\n"));
  EXPECT_TRUE(server_->finished());
  EXPECT_TRUE(server_->failed());
}

}  // namespace
}  // namespace culvert::http::http2
