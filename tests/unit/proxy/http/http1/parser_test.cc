#include "proxy/http/http1/parser.h"

#include <gtest/gtest.h>

#include <vector>

namespace culvert::http::http1 {
namespace {

struct Recorder : ParserCallbacks {
  std::vector<RequestHead> requests;
  std::vector<ResponseHead> responses;
  std::string body;
  int complete = 0;
  void onRequestHead(RequestHead&& h) override { requests.push_back(std::move(h)); }
  void onResponseHead(ResponseHead&& h) override { responses.push_back(std::move(h)); }
  void onBody(std::string_view d) override { body.append(d); }
  void onMessageComplete() override { ++complete; }
};

TEST(Http1ParserTest, ParsesRequestWithLowerCasedHeaders) {
  Recorder r;
  Parser p(Parser::Mode::Request, r);
  std::string req = "GET /a?b=1 HTTP/1.1\r\nHost: Example\r\nX-Thing: v\r\n\r\n";
  auto res = p.dispatch(req);
  EXPECT_EQ(res.status, Parser::Status::Paused);
  EXPECT_EQ(res.consumed, req.size());
  ASSERT_EQ(r.requests.size(), 1u);
  EXPECT_EQ(r.requests[0].method, "GET");
  EXPECT_EQ(r.requests[0].path, "/a?b=1");
  EXPECT_EQ(r.requests[0].authority(), "Example");
  EXPECT_EQ(r.requests[0].headers.get("x-thing"), "v");
  EXPECT_TRUE(r.requests[0].keep_alive);
  EXPECT_EQ(r.complete, 1);
}

TEST(Http1ParserTest, PausesBetweenPipelinedRequests) {
  Recorder r;
  Parser p(Parser::Mode::Request, r);
  std::string two = "GET /1 HTTP/1.1\r\nHost: a\r\n\r\nGET /2 HTTP/1.1\r\nHost: a\r\n\r\n";
  auto first = p.dispatch(two);
  ASSERT_EQ(first.status, Parser::Status::Paused);
  EXPECT_EQ(r.requests.size(), 1u);
  p.resume();
  auto second = p.dispatch(std::string_view(two).substr(first.consumed));
  EXPECT_EQ(second.status, Parser::Status::Paused);
  ASSERT_EQ(r.requests.size(), 2u);
  EXPECT_EQ(r.requests[1].path, "/2");
}

TEST(Http1ParserTest, DecodesChunkedBodyAcrossSplits) {
  Recorder r;
  Parser p(Parser::Mode::Request, r);
  std::string req = "POST / HTTP/1.1\r\nHost: a\r\nTransfer-Encoding: chunked\r\n\r\n5\r\nhello\r\n6\r\n world\r\n0\r\n\r\n";
  for (size_t i = 0; i < req.size(); ++i) {
    auto res = p.dispatch(std::string_view(req).substr(i, 1));
    ASSERT_NE(res.status, Parser::Status::Error) << i;
  }
  EXPECT_TRUE(r.requests.at(0).chunked);
  EXPECT_EQ(r.body, "hello world");
  EXPECT_EQ(r.complete, 1);
}

struct SmugglingCase {
  const char* name;
  std::string request;
  RejectReason reason;
};

class Http1SmugglingTest : public ::testing::TestWithParam<SmugglingCase> {};

// One regression test per request-smuggling shape: each is rejected with its own reason,
// whether it arrives in one read or byte by byte.
TEST_P(Http1SmugglingTest, RejectedWithItsReason) {
  const auto& c = GetParam();
  for (bool bytewise : {false, true}) {
    Recorder r;
    Parser p(Parser::Mode::Request, r);
    Parser::Status status = Parser::Status::Ok;
    if (bytewise) {
      for (size_t i = 0; i < c.request.size() && status == Parser::Status::Ok; ++i) {
        status = p.dispatch(std::string_view(c.request).substr(i, 1)).status;
      }
    } else {
      status = p.dispatch(c.request).status;
    }
    EXPECT_EQ(status, Parser::Status::Error) << c.name << (bytewise ? " (bytewise)" : "");
    EXPECT_EQ(p.rejectReason(), c.reason) << c.name << ": " << p.errorReason();
    EXPECT_EQ(r.complete, 0) << c.name;
  }
}

INSTANTIATE_TEST_SUITE_P(
    Shapes, Http1SmugglingTest,
    ::testing::Values(
        SmugglingCase{"cl_te", "POST / HTTP/1.1\r\nHost: a\r\nContent-Length: 3\r\nTransfer-Encoding: chunked\r\n\r\n0\r\n\r\n",
                      RejectReason::ContentLengthWithTransferEncoding},
        SmugglingCase{"duplicate_cl", "POST / HTTP/1.1\r\nHost: a\r\nContent-Length: 3\r\nContent-Length: 4\r\n\r\nabcd",
                      RejectReason::DuplicateContentLength},
        SmugglingCase{"bad_chunk_size", "POST / HTTP/1.1\r\nHost: a\r\nTransfer-Encoding: chunked\r\n\r\nzz\r\n",
                      RejectReason::BadChunkSize},
        SmugglingCase{"nul_in_name", std::string("GET / HTTP/1.1\r\nHo\0st: a\r\n\r\n", 30), RejectReason::InvalidHeaderChar},
        SmugglingCase{"ctl_in_value", "GET / HTTP/1.1\r\nHost: a\x01b\r\n\r\n", RejectReason::InvalidHeaderChar},
        SmugglingCase{"obs_fold", "GET / HTTP/1.1\r\nHost: a\r\nX: a\r\n b\r\n\r\n", RejectReason::ObsFold},
        SmugglingCase{"whitespace_before_colon", "GET / HTTP/1.1\r\nHost : a\r\n\r\n", RejectReason::WhitespaceBeforeColon},
        SmugglingCase{"bare_lf_after_request_line", "GET / HTTP/1.1\nHost: a\r\n\r\n", RejectReason::BareLf},
        SmugglingCase{"bare_lf_ending_head", "GET / HTTP/1.1\r\nHost: a\r\n\n", RejectReason::BareLf},
        // After a long value (which the scan jumps over to its line end), the line end
        // and the next line are still checked.
        SmugglingCase{"bare_lf_after_long_value",
                      "GET / HTTP/1.1\r\nX: " + std::string(2000, 'v') + "\nHost: a\r\n\r\n", RejectReason::BareLf},
        SmugglingCase{"obs_fold_after_long_value",
                      "GET / HTTP/1.1\r\nX: " + std::string(2000, 'v') + "\r\n\tb\r\nHost: a\r\n\r\n",
                      RejectReason::ObsFold},
        // Header names are run over in one loop up to their colon; what stops it is still checked.
        SmugglingCase{"whitespace_before_colon_after_long_name",
                      "GET / HTTP/1.1\r\nX-" + std::string(300, 'n') + "\t: a\r\nHost: a\r\n\r\n",
                      RejectReason::WhitespaceBeforeColon},
        SmugglingCase{"bare_lf_ending_a_name", "GET / HTTP/1.1\r\nHost: a\r\nX-Name\n\r\n", RejectReason::BareLf},
        SmugglingCase{"chunk_missing_crlf",
                      "POST / HTTP/1.1\r\nHost: a\r\nTransfer-Encoding: chunked\r\n\r\n5\r\nhelloXX0\r\n\r\n",
                      RejectReason::ChunkMissingCrlf},
        SmugglingCase{"chunk_missing_lf",
                      "POST / HTTP/1.1\r\nHost: a\r\nTransfer-Encoding: chunked\r\n\r\n5\r\nhello\rX0\r\n\r\n",
                      RejectReason::ChunkMissingCrlf},
        SmugglingCase{"te_not_chunked_last", "POST / HTTP/1.1\r\nHost: a\r\nTransfer-Encoding: chunked, gzip\r\n\r\n",
                      RejectReason::BadTransferEncoding}),
    [](const auto& info) { return std::string(info.param.name); });

TEST(Http1ParserTest, ChunkedBodiesWithExtensionsAndManyChunksStillParse) {
  Recorder r;
  Parser p(Parser::Mode::Request, r);
  std::string req = "POST / HTTP/1.1\r\nHost: a\r\nTransfer-Encoding: chunked\r\n\r\n3;ext=1\r\nabc\r\n1\r\nd\r\n0\r\nX-Trailer: t\r\n\r\nGET /next HTTP/1.1\r\nHost: a\r\n\r\n";
  auto res = p.dispatch(req);
  ASSERT_EQ(res.status, Parser::Status::Paused) << p.errorReason();
  EXPECT_EQ(r.body, "abcd");
  EXPECT_EQ(r.complete, 1);
  p.resume();
  EXPECT_EQ(p.dispatch(std::string_view(req).substr(res.consumed)).status, Parser::Status::Paused);
  ASSERT_EQ(r.requests.size(), 2u);
  EXPECT_EQ(r.requests[1].path, "/next");
}

TEST(Http1ParserTest, LimitsHeaderBytes) {
  Recorder r;
  Parser p(Parser::Mode::Request, r);
  p.maxHeaderBytes = 100;
  std::string req = "GET / HTTP/1.1\r\nX-Big: " + std::string(200, 'a') + "\r\n\r\n";
  EXPECT_EQ(p.dispatch(req).status, Parser::Status::Error);
  EXPECT_NE(p.errorReason().find("exceed"), std::string::npos);
}

TEST(Http1ParserTest, ResponseToHeadHasNoBody) {
  Recorder r;
  Parser p(Parser::Mode::Response, r);
  p.expectHeadResponse(true);
  auto res = p.dispatch("HTTP/1.1 200 OK\r\nContent-Length: 10\r\n\r\n");
  EXPECT_EQ(res.status, Parser::Status::Paused);
  EXPECT_EQ(r.complete, 1);
  EXPECT_EQ(r.responses.at(0).content_length, 10u);
}

TEST(Http1ParserTest, ReadUntilCloseResponseEndsAtFinish) {
  Recorder r;
  Parser p(Parser::Mode::Response, r);
  EXPECT_EQ(p.dispatch("HTTP/1.0 200 OK\r\n\r\nabc").status, Parser::Status::Ok);
  EXPECT_EQ(r.complete, 0);
  EXPECT_TRUE(p.finish());
  EXPECT_EQ(r.complete, 1);
  EXPECT_EQ(r.body, "abc");
  EXPECT_FALSE(r.responses.at(0).keep_alive);
}

}  // namespace
}  // namespace culvert::http::http1

namespace culvert::http::http1 {
namespace {

// What llhttp 8.1 does with the head of an upgrade: the message completes at the end of
// the head, and the parser reports where, so the bytes after it go to the tunnel.
TEST(Http1ParserUpgradeTest, ConnectStopsAtTheEndOfItsHead) {
  Recorder r;
  Parser p(Parser::Mode::Request, r);
  std::string head = "CONNECT example.com:443 HTTP/1.1\r\nHost: example.com:443\r\n\r\n";
  std::string bytes = head + "\x16\x03\x01 not http";
  auto res = p.dispatch(bytes);
  ASSERT_EQ(res.status, Parser::Status::Paused);
  EXPECT_EQ(res.consumed, head.size());
  ASSERT_EQ(r.requests.size(), 1u);
  EXPECT_EQ(r.requests[0].method, "CONNECT");
  EXPECT_EQ(r.requests[0].path, "example.com:443");
  EXPECT_EQ(r.complete, 1);
  EXPECT_EQ(r.body, "");
}

TEST(Http1ParserUpgradeTest, WebSocketUpgradeStopsAtTheEndOfItsHead) {
  Recorder r;
  Parser p(Parser::Mode::Request, r);
  std::string head =
      "GET /chat HTTP/1.1\r\nHost: a\r\nConnection: Upgrade\r\nUpgrade: websocket\r\n"
      "Sec-WebSocket-Key: dGhlIHNhbXBsZSBub25jZQ==\r\nSec-WebSocket-Version: 13\r\n\r\n";
  std::string bytes = head + "\x81\x05hello";
  auto res = p.dispatch(bytes);
  ASSERT_EQ(res.status, Parser::Status::Paused);
  EXPECT_EQ(res.consumed, head.size());
  ASSERT_EQ(r.requests.size(), 1u);
  EXPECT_EQ(r.requests[0].headers.get("upgrade"), "websocket");
  EXPECT_EQ(r.complete, 1);
  EXPECT_EQ(r.body, "");
}

TEST(Http1ParserUpgradeTest, SwitchingProtocolsResponseStopsAtTheEndOfItsHead) {
  Recorder r;
  Parser p(Parser::Mode::Response, r);
  std::string head = "HTTP/1.1 101 Switching Protocols\r\nConnection: Upgrade\r\nUpgrade: websocket\r\n\r\n";
  std::string bytes = head + "\x81\x02hi";
  auto res = p.dispatch(bytes);
  ASSERT_EQ(res.status, Parser::Status::Paused);
  EXPECT_EQ(res.consumed, head.size());
  ASSERT_EQ(r.responses.size(), 1u);
  EXPECT_EQ(r.responses[0].status, 101);
  EXPECT_EQ(r.complete, 1);
  EXPECT_EQ(r.body, "");
}

TEST(Http1ParserUpgradeTest, HeadResponseModeEndsA2xxToConnectAtItsHead) {
  // llhttp cannot know a 200 answers a CONNECT; the tunnel marks it bodiless.
  Recorder r;
  Parser p(Parser::Mode::Response, r);
  p.expectHeadResponse(true);
  std::string head = "HTTP/1.1 200 Connection established\r\n\r\n";
  auto res = p.dispatch(head + "payload");
  ASSERT_EQ(res.status, Parser::Status::Paused);
  EXPECT_EQ(res.consumed, head.size());
  EXPECT_EQ(r.body, "");
}

}  // namespace
}  // namespace culvert::http::http1
