#include "proxy/network/sniffer.h"

#include <gtest/gtest.h>

namespace culvert::network {
namespace {

void put16(std::string& s, size_t v) {
  s += static_cast<char>((v >> 8) & 0xff);
  s += static_cast<char>(v & 0xff);
}

// A minimal TLS 1.2 ClientHello record, with an SNI extension when `sni` is not empty.
std::string clientHello(const std::string& sni) {
  std::string ext;
  if (!sni.empty()) {
    std::string name;
    name += '\0';
    put16(name, sni.size());
    name += sni;
    std::string list;
    put16(list, name.size());
    list += name;
    put16(ext, 0);  // server_name
    put16(ext, list.size());
    ext += list;
  }
  std::string body;
  body += "\x03\x03";
  body += std::string(32, 'r');
  body += '\0';  // session id
  put16(body, 2);
  body += "\x13\x01";
  body += '\x01';
  body += '\0';  // compression
  put16(body, ext.size());
  body += ext;
  std::string hs;
  hs += '\x01';
  hs += '\0';
  put16(hs, body.size());
  hs += body;
  std::string record = "\x16\x03\x01";
  put16(record, hs.size());
  return record + hs;
}

TEST(SnifferTest, TlsClientHelloGivesTransportAndServerName) {
  auto r = sniff(clientHello("API.Example.com"));
  EXPECT_EQ(r.state, SniffResult::State::Done);
  EXPECT_EQ(r.transport_protocol, "tls");
  EXPECT_EQ(r.server_name, "api.example.com");
  EXPECT_FALSE(r.http);
}

TEST(SnifferTest, PartialClientHelloAsksForMore) {
  std::string hello = clientHello("a.example");
  for (size_t n : {size_t{1}, size_t{4}, size_t{5}, hello.size() - 1}) {
    EXPECT_EQ(sniff(hello.substr(0, n)).state, SniffResult::State::NeedMoreBytes) << n;
  }
}

TEST(SnifferTest, ClientHelloWithoutSni) {
  auto r = sniff(clientHello(""));
  EXPECT_EQ(r.state, SniffResult::State::Done);
  EXPECT_EQ(r.transport_protocol, "tls");
  EXPECT_EQ(r.server_name, "");
}

TEST(SnifferTest, HttpRequestLinesAndPreface) {
  for (std::string start : {"GET / HTTP/1.1\r\n", "POST /x HTTP/1.1", "PRI * HTTP/2.0\r\n\r\nSM\r\n\r\n", "OPTIONS * "}) {
    auto r = sniff(start);
    EXPECT_EQ(r.state, SniffResult::State::Done) << start;
    EXPECT_TRUE(r.http) << start;
    EXPECT_EQ(r.transport_protocol, "raw_buffer");
  }
}

TEST(SnifferTest, PrefixOfAMethodWaitsThenOtherBytesAreNotHttp) {
  EXPECT_EQ(sniff("GE").state, SniffResult::State::NeedMoreBytes);
  EXPECT_EQ(sniff("PRI * HT").state, SniffResult::State::NeedMoreBytes);
  auto redis = sniff("*1\r\n$4\r\nPING\r\n");
  EXPECT_EQ(redis.state, SniffResult::State::Done);
  EXPECT_FALSE(redis.http);
  auto lower = sniff("get / HTTP/1.1");
  EXPECT_FALSE(lower.http);
}

}  // namespace
}  // namespace culvert::network
