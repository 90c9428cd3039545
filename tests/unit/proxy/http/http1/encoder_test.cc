#include "proxy/http/http1/encoder.h"

#include <gtest/gtest.h>

namespace culvert::http::http1 {
namespace {

TEST(Http1EncoderTest, RemovesHopByHopIncludingConnectionTokens) {
  HeaderMap h;
  h.add("host", "a");
  h.add("connection", "keep-alive, X-Private");
  h.add("x-private", "secret");
  h.add("keep-alive", "timeout=5");
  h.add("transfer-encoding", "chunked");
  h.add("upgrade", "websocket");
  h.add("x-kept", "1");
  removeHopByHopHeaders(h);
  EXPECT_EQ(h.size(), 2u);
  EXPECT_TRUE(h.get("host"));
  EXPECT_TRUE(h.get("x-kept"));
}

TEST(Http1EncoderTest, DropsEveryPerHopNameAndContentLengthButNoLookAlike) {
  HeaderMap h;
  for (const char* name : {"connection", "keep-alive", "proxy-connection", "transfer-encoding", "te", "trailer",
                           "upgrade", "proxy-authenticate", "content-length"}) {
    h.add(name, "1");
  }
  // The same lengths as names that go, and one name that differs in its last byte.
  for (const char* name : {"tx", "trailes", "connectiox", "content-lengtx", "proxy-authorization", "x-forwarded-proto"}) {
    h.add(name, "kept");
  }
  removeHopByHopHeaders(h);
  ASSERT_EQ(h.size(), 6u);
  for (const auto& [name, value] : h.entries()) EXPECT_EQ(value, "kept") << name;
}

// Appending must not depend on the buffer's size or capacity (the session's output
// buffers and the per-thread upstream buffer hold earlier bytes and grow as they go).
TEST(Http1EncoderTest, AppendingIntoAnyBufferGivesTheSameHead) {
  RequestHead r;
  r.method = "POST";
  r.path = "/upload";
  r.headers.add("host", "a.example");
  r.headers.add("x-long", std::string(700, 'v'));
  r.headers.add("x-request-id", "0123456789abcdef0123456789abcdef0123");
  r.content_length = 5;
  const std::string head = encodeRequestHead(r, requestFraming(r));
  for (size_t held = 0; held < 3000; held += 97) {
    std::string out(held, 'p');
    appendRequestHead(out, r, requestFraming(r));
    ASSERT_EQ(out, std::string(held, 'p') + head) << "after " << held << " bytes";
  }
}

TEST(Http1EncoderTest, RequestHeadKeepsContentLength) {
  RequestHead r;
  r.method = "POST";
  r.path = "/x";
  r.headers.add("host", "a");
  r.content_length = 5;
  EXPECT_EQ(encodeRequestHead(r, requestFraming(r)), "POST /x HTTP/1.1\r\nhost: a\r\ncontent-length: 5\r\n\r\n");
}

TEST(Http1EncoderTest, HeadsAppendAfterWhatTheBufferHolds) {
  RequestHead r;
  r.method = "GET";
  r.path = "/";
  r.headers.add("host", "a");
  std::string out = "earlier";
  appendRequestHead(out, r, BodyFraming::None);
  EXPECT_EQ(out, "earlierGET / HTTP/1.1\r\nhost: a\r\n\r\n");
  ResponseHead h;
  h.status = 404;
  h.content_length = 0;
  out = "0\r\n\r\n";  // the end of the previous response, not yet written
  appendResponseHead(out, h, BodyFraming::ContentLength, true);
  EXPECT_EQ(out, "0\r\n\r\nHTTP/1.1 404 Not Found\r\ncontent-length: 0\r\nconnection: close\r\n\r\n");
}

TEST(Http1EncoderTest, UnknownLengthResponseBecomesChunked) {
  ResponseHead r;
  r.status = 200;
  EXPECT_EQ(responseFraming(r, false), BodyFraming::Chunked);
  std::string out = encodeResponseHead(r, BodyFraming::Chunked, true);
  EXPECT_EQ(out, "HTTP/1.1 200 OK\r\ntransfer-encoding: chunked\r\nconnection: close\r\n\r\n");
  std::string body;
  appendBody(body, "hello", BodyFraming::Chunked);
  appendBodyEnd(body, BodyFraming::Chunked);
  EXPECT_EQ(body, "5\r\nhello\r\n0\r\n\r\n");
}

TEST(Http1EncoderTest, BodylessStatusesHaveNoFraming) {
  ResponseHead r;
  r.status = 204;
  EXPECT_EQ(responseFraming(r, false), BodyFraming::None);
  r.status = 304;
  EXPECT_EQ(responseFraming(r, false), BodyFraming::None);
  r.status = 200;
  EXPECT_EQ(responseFraming(r, true), BodyFraming::None);
}

}  // namespace
}  // namespace culvert::http::http1
