#include "proxy/http/http2/message.h"

#include <gtest/gtest.h>

#include <utility>
#include <vector>

namespace culvert::http::http2 {
namespace {

HeaderMap block(std::initializer_list<std::pair<const char*, const char*>> fields) {
  HeaderMap h;
  for (auto [n, v] : fields) h.add(n, v);
  return h;
}

TEST(Http2Message, RequestBlockToHeadPutsAuthorityIntoHost) {
  auto head = toRequestHead(block({{":method", "POST"}, {":scheme", "http"}, {":authority", "svc:8080"},
                                   {":path", "/a?b"}, {"x-a", "1"}, {"content-length", "5"}}),
                            false);
  EXPECT_EQ(head.method, "POST");
  EXPECT_EQ(head.path, "/a?b");
  EXPECT_EQ(head.authority(), "svc:8080");
  EXPECT_EQ(head.headers.entries().front().first, "host");
  EXPECT_EQ(head.content_length, 5u);
  EXPECT_FALSE(head.chunked);
  EXPECT_FALSE(head.headers.get("content-length"));
}

TEST(Http2Message, RequestBlockWithHostKeepsItsHostAndOrder) {
  auto head = toRequestHead(block({{":method", "GET"}, {":authority", "svc:8080"}, {":path", "/"}, {"x-a", "1"},
                                   {"host", "named"}, {"x-b", "2"}}),
                            true);
  ASSERT_EQ(head.headers.size(), 3u);
  EXPECT_EQ(head.headers.entries()[0], (HeaderMap::Entry{"x-a", "1"}));
  EXPECT_EQ(head.headers.entries()[1], (HeaderMap::Entry{"host", "named"}));
  EXPECT_EQ(head.headers.entries()[2], (HeaderMap::Entry{"x-b", "2"}));
}

TEST(Http2Message, RequestHeadHasRoomForTheFieldsTheRouterAdds) {
  auto head = toRequestHead(block({{":method", "GET"}, {":authority", "a"}, {":path", "/"}, {"x-a", "1"}}), true);
  const auto* before = head.headers.entries().data();
  for (size_t i = 0; i < http::kRouterAddedHeaders; ++i) head.headers.add("x-added", "v");
  EXPECT_EQ(head.headers.entries().data(), before);  // no reallocation
}

TEST(Http2Message, RequestHeadTakesTheBlocksOwnStorage) {
  auto b = block({{":method", "GET"}, {":scheme", "http"}, {":authority", "a"}, {":path", "/"}, {"x-a", "1"},
                  {"content-length", "0"}, {"x-b", "2"}});
  b.reserve(12);  // as the codec does
  const auto* storage = b.entries().data();
  auto head = toRequestHead(std::move(b), true);
  EXPECT_EQ(head.headers.entries().data(), storage);  // converted in place: no allocation
  ASSERT_EQ(head.headers.size(), 3u);
  EXPECT_EQ(head.headers.entries()[0], (HeaderMap::Entry{"host", "a"}));
  EXPECT_EQ(head.headers.entries()[1], (HeaderMap::Entry{"x-a", "1"}));
  EXPECT_EQ(head.headers.entries()[2], (HeaderMap::Entry{"x-b", "2"}));
}

TEST(Http2Message, HostGoesFirstEvenAfterAFieldThatPrecededTheAuthority) {
  auto head = toRequestHead(block({{":method", "GET"}, {"x-a", "1"}, {"x-b", "2"}, {":authority", "a"}, {":path", "/"},
                                   {"x-c", "3"}}),
                            true);
  ASSERT_EQ(head.headers.size(), 4u);
  EXPECT_EQ(head.headers.entries()[0], (HeaderMap::Entry{"host", "a"}));
  EXPECT_EQ(head.headers.entries()[1], (HeaderMap::Entry{"x-a", "1"}));
  EXPECT_EQ(head.headers.entries()[2], (HeaderMap::Entry{"x-b", "2"}));
  EXPECT_EQ(head.headers.entries()[3], (HeaderMap::Entry{"x-c", "3"}));
  EXPECT_EQ(head.path, "/");
}

TEST(Http2Message, BodyOfUnknownLengthIsChunkedForHttp1) {
  auto streaming = toRequestHead(block({{":method", "POST"}, {":path", "/"}, {":authority", "a"}}), false);
  EXPECT_TRUE(streaming.chunked);
  auto bodiless = toRequestHead(block({{":method", "GET"}, {":path", "/"}, {":authority", "a"}}), true);
  EXPECT_FALSE(bodiless.chunked);
  EXPECT_FALSE(bodiless.content_length);
  auto empty_post = toRequestHead(block({{":method", "POST"}, {":path", "/"}, {":authority", "a"}}), true);
  EXPECT_EQ(empty_post.content_length, 0u);
}

TEST(Http2Message, RequestHeadToBlockDropsWhatHttp2Forbids) {
  RequestHead head;
  head.method = "GET";
  head.path = "/x";
  head.headers.add("host", "svc");
  head.headers.add("connection", "keep-alive");
  head.headers.add("transfer-encoding", "chunked");
  head.headers.add("te", "gzip");
  head.headers.add("x-keep", "yes");
  auto out = toRequestBlock(head, "http");
  EXPECT_EQ(out.entries()[0], (HeaderMap::Entry{":method", "GET"}));
  EXPECT_EQ(out.get(":authority"), "svc");
  EXPECT_EQ(out.get(":path"), "/x");
  EXPECT_FALSE(out.get("host"));
  EXPECT_FALSE(out.get("connection"));
  EXPECT_FALSE(out.get("transfer-encoding"));
  EXPECT_FALSE(out.get("te"));
  EXPECT_EQ(out.get("x-keep"), "yes");

  head.headers.set("te", "trailers");
  EXPECT_EQ(toRequestBlock(head, "http").get("te"), "trailers");
}

TEST(Http2Message, ResponseBothWays) {
  auto head = toResponseHead(block({{":status", "404"}, {"content-length", "3"}, {"grpc-status", "5"}}));
  EXPECT_EQ(head.status, 404);
  EXPECT_EQ(head.content_length, 3u);
  EXPECT_EQ(head.headers.get("grpc-status"), "5");
  auto out = toResponseBlock(std::move(head));
  EXPECT_EQ(out.entries()[0], (HeaderMap::Entry{":status", "404"}));
  EXPECT_EQ(out.get("content-length"), "3");
  EXPECT_EQ(out.get("grpc-status"), "5");
}

// A head relayed from HTTP/1.1: connection-specific fields leave the block, the others
// keep their order, :status goes first and the length last.
TEST(Http2Message, ResponseBlockFromAnHttp1Head) {
  ResponseHead head;
  head.status = 200;
  head.content_length = 6;
  for (auto [name, value] : {std::pair{"server", "nginx"}, {"connection", "keep-alive"}, {"date", "Sun, 29 Nov 2026"},
                             {"keep-alive", "timeout=5"}, {"te", "gzip"}, {"transfer-encoding", "chunked"},
                             {"content-type", "text/plain"}}) {
    head.headers.add(name, value);
  }
  auto out = toResponseBlock(std::move(head));
  std::vector<HeaderMap::Entry> expected{
      {":status", "200"}, {"server", "nginx"}, {"date", "Sun, 29 Nov 2026"}, {"content-type", "text/plain"},
      {"content-length", "6"}};
  EXPECT_EQ(out.entries(), expected);
}

}  // namespace
}  // namespace culvert::http::http2
