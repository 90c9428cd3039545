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

TEST(Http1ParserTest, RejectsSmugglingShapes) {
  for (const std::string& bad : std::vector<std::string>{"POST / HTTP/1.1\r\nHost: a\r\nContent-Length: 3\r\nTransfer-Encoding: chunked\r\n\r\n",
                          "POST / HTTP/1.1\r\nHost: a\r\nContent-Length: 3\r\nContent-Length: 4\r\n\r\n",
                          "POST / HTTP/1.1\r\nHost: a\r\nTransfer-Encoding: chunked\r\n\r\nzz\r\n",
                          std::string("GET / HTTP/1.1\r\nHo\0st: a\r\n\r\n", 30)}) {
    Recorder r;
    Parser p(Parser::Mode::Request, r);
    EXPECT_EQ(p.dispatch(bad).status, Parser::Status::Error) << bad;
    EXPECT_FALSE(p.errorReason().empty());
  }
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
