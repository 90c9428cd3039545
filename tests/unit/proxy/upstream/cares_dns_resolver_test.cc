// The real c-ares resolver on a real libuv loop against a tiny real DNS server on
// loopback (UDP), written here: it answers A/AAAA with a configured TTL, NXDOMAIN for
// unknown names, and SERVFAIL for names marked failing.

#include "proxy/upstream/cares_dns_resolver.h"

#include <arpa/inet.h>
#include <gtest/gtest.h>
#include <netinet/in.h>
#include <poll.h>
#include <sys/socket.h>
#include <unistd.h>

#include <atomic>
#include <map>
#include <mutex>
#include <thread>

namespace culvert::upstream {
namespace {

using Family = config::DnsResolution::LookupFamily;
using std::chrono::milliseconds;

class TinyDnsServer {
public:
  struct Zone {
    std::vector<std::string> a, aaaa;
    uint32_t ttl = 30;
    bool servfail = false;
  };

  TinyDnsServer() {
    fd_ = ::socket(AF_INET, SOCK_DGRAM, 0);
    sockaddr_in sa{};
    sa.sin_family = AF_INET;
    sa.sin_addr.s_addr = htonl(INADDR_LOOPBACK);
    EXPECT_EQ(::bind(fd_, reinterpret_cast<sockaddr*>(&sa), sizeof sa), 0);
    socklen_t len = sizeof sa;
    ::getsockname(fd_, reinterpret_cast<sockaddr*>(&sa), &len);
    port_ = ntohs(sa.sin_port);
    thread_ = std::thread([this] { serve(); });
  }
  ~TinyDnsServer() {
    stop_ = true;
    thread_.join();
    ::close(fd_);
  }
  uint16_t port() const { return port_; }
  void set(const std::string& name, Zone zone) {
    std::lock_guard lock(mutex_);
    zones_[name] = std::move(zone);
  }
  // Queries seen, as "name/type".
  std::vector<std::string> queries() {
    std::lock_guard lock(mutex_);
    return queries_;
  }

private:
  void serve() {
    while (!stop_) {
      pollfd p{fd_, POLLIN, 0};
      if (::poll(&p, 1, 20) <= 0) continue;
      uint8_t buf[512];
      sockaddr_storage from{};
      socklen_t from_len = sizeof from;
      ssize_t n = ::recvfrom(fd_, buf, sizeof buf, 0, reinterpret_cast<sockaddr*>(&from), &from_len);
      if (n < 12) continue;
      auto reply = answer(buf, static_cast<size_t>(n));
      if (!reply.empty()) ::sendto(fd_, reply.data(), reply.size(), 0, reinterpret_cast<sockaddr*>(&from), from_len);
    }
  }

  std::vector<uint8_t> answer(const uint8_t* q, size_t n) {
    size_t i = 12;
    std::string name;
    while (i < n && q[i] != 0) {
      size_t len = q[i];
      if (!name.empty()) name += '.';
      name.append(reinterpret_cast<const char*>(q + i + 1), std::min(len, n - i - 1));
      i += len + 1;
    }
    if (i + 5 > n) return {};
    const size_t question_end = i + 5;
    const uint16_t qtype = static_cast<uint16_t>(q[i + 1] << 8 | q[i + 2]);
    std::lock_guard lock(mutex_);
    queries_.push_back(name + "/" + (qtype == 1 ? "A" : qtype == 28 ? "AAAA" : std::to_string(qtype)));
    std::vector<uint8_t> out(q, q + question_end);
    out[2] = 0x81;  // QR, RD
    out[3] = 0x80;  // RA, rcode 0
    out[6] = out[7] = out[8] = out[9] = out[10] = out[11] = 0;
    auto zone = zones_.find(name);
    if (zone == zones_.end()) {
      out[3] |= 3;  // NXDOMAIN
      return out;
    }
    if (zone->second.servfail) {
      out[3] |= 2;
      return out;
    }
    const auto& ips = qtype == 1 ? zone->second.a : qtype == 28 ? zone->second.aaaa : std::vector<std::string>{};
    out[7] = static_cast<uint8_t>(ips.size());
    for (const auto& ip : ips) {
      uint8_t rdata[16];
      const bool v4 = qtype == 1;
      ::inet_pton(v4 ? AF_INET : AF_INET6, ip.c_str(), rdata);
      const uint32_t ttl = zone->second.ttl;
      const uint8_t rr[] = {0xc0, 0x0c, 0, static_cast<uint8_t>(qtype), 0, 1,
                            static_cast<uint8_t>(ttl >> 24), static_cast<uint8_t>(ttl >> 16),
                            static_cast<uint8_t>(ttl >> 8), static_cast<uint8_t>(ttl), 0,
                            static_cast<uint8_t>(v4 ? 4 : 16)};
      out.insert(out.end(), rr, rr + sizeof rr);
      out.insert(out.end(), rdata, rdata + (v4 ? 4 : 16));
    }
    return out;
  }

  int fd_ = -1;
  uint16_t port_ = 0;
  std::atomic<bool> stop_{false};
  std::thread thread_;
  std::mutex mutex_;
  std::map<std::string, Zone> zones_;
  std::vector<std::string> queries_;
};

struct CaresDnsResolverTest : ::testing::Test {
  TinyDnsServer server;
  event::Dispatcher dispatcher{"dns-test"};

  std::unique_ptr<CaresDnsResolver> makeResolver() {
    CaresDnsResolver::Options options;
    options.servers.push_back(*common::SocketAddress::parse("127.0.0.1", server.port()));
    options.no_default_search_domain = true;
    auto r = CaresDnsResolver::create(dispatcher, options);
    EXPECT_TRUE(r.has_value()) << r.error().describe();
    return std::move(*r);
  }

  // Resolves on the loop; fails the test when no answer comes within 3 s.
  DnsResponse resolve(CaresDnsResolver& resolver, const std::string& name, Family family) {
    std::optional<DnsResponse> got;
    auto guard = dispatcher.createTimer([&] { dispatcher.exit(); });
    guard->enable(milliseconds(3000));
    auto query = resolver.resolve(name, family, [&](DnsResponse r) {
      got = std::move(r);
      dispatcher.exit();
    });
    if (!got) dispatcher.run();
    EXPECT_TRUE(got.has_value()) << "no answer for " << name;
    return got.value_or(DnsResponse{});
  }
};

std::vector<std::string> ips(const DnsResponse& r) {
  std::vector<std::string> out;
  for (const auto& rec : r.records) out.push_back(rec.address.ip());
  return out;
}

TEST_F(CaresDnsResolverTest, ARecordsInTheServersOrderWithTheirTtl) {
  server.set("svc.test", {{"10.244.0.7", "10.244.0.3", "10.244.0.5"}, {}, 42});
  auto resolver = makeResolver();
  auto r = resolve(*resolver, "svc.test", Family::V4Only);
  ASSERT_TRUE(r.ok) << r.error;
  EXPECT_EQ(ips(r), (std::vector<std::string>{"10.244.0.7", "10.244.0.3", "10.244.0.5"}));
  for (const auto& rec : r.records) EXPECT_EQ(rec.ttl, std::chrono::seconds(42));
  EXPECT_EQ(server.queries(), (std::vector<std::string>{"svc.test/A"}));
}

TEST_F(CaresDnsResolverTest, V6OnlyAsksForAaaaOnly) {
  server.set("svc.test", {{"10.244.0.7"}, {"fd00::7"}, 5});
  auto resolver = makeResolver();
  auto r = resolve(*resolver, "svc.test", Family::V6Only);
  ASSERT_TRUE(r.ok) << r.error;
  EXPECT_EQ(ips(r), (std::vector<std::string>{"fd00::7"}));
  EXPECT_EQ(server.queries(), (std::vector<std::string>{"svc.test/AAAA"}));
}

TEST_F(CaresDnsResolverTest, AutoPrefersIpv6AndFallsBackToIpv4) {
  server.set("both.test", {{"10.244.0.7"}, {"fd00::7"}, 5});
  server.set("v4.test", {{"10.244.0.8"}, {}, 5});
  auto resolver = makeResolver();
  EXPECT_EQ(ips(resolve(*resolver, "both.test", Family::Auto)), (std::vector<std::string>{"fd00::7"}));
  EXPECT_EQ(ips(resolve(*resolver, "v4.test", Family::Auto)), (std::vector<std::string>{"10.244.0.8"}));
}

TEST_F(CaresDnsResolverTest, V4PreferredPrefersIpv4AndFallsBackToIpv6) {
  server.set("both.test", {{"10.244.0.7"}, {"fd00::7"}, 5});
  server.set("v6.test", {{}, {"fd00::8"}, 5});
  auto resolver = makeResolver();
  EXPECT_EQ(ips(resolve(*resolver, "both.test", Family::V4Preferred)), (std::vector<std::string>{"10.244.0.7"}));
  EXPECT_EQ(ips(resolve(*resolver, "v6.test", Family::V4Preferred)), (std::vector<std::string>{"fd00::8"}));
}

TEST_F(CaresDnsResolverTest, AllReturnsBothFamilies) {
  server.set("both.test", {{"10.244.0.7"}, {"fd00::7"}, 5});
  auto resolver = makeResolver();
  auto got = ips(resolve(*resolver, "both.test", Family::All));
  std::sort(got.begin(), got.end());
  EXPECT_EQ(got, (std::vector<std::string>{"10.244.0.7", "fd00::7"}));
}

TEST_F(CaresDnsResolverTest, NxdomainIsAnAnswerWithoutAddressesAndServfailIsAFailure) {
  server.set("broken.test", {{}, {}, 5, /*servfail=*/true});
  auto resolver = makeResolver();
  auto missing = resolve(*resolver, "missing.test", Family::V4Only);
  EXPECT_TRUE(missing.ok);
  EXPECT_TRUE(missing.records.empty());
  auto broken = resolve(*resolver, "broken.test", Family::V4Only);
  EXPECT_FALSE(broken.ok);
  EXPECT_FALSE(broken.error.empty());
}

TEST_F(CaresDnsResolverTest, AnIpLiteralResolvesToItselfWithoutAQuery) {
  auto resolver = makeResolver();
  auto r = resolve(*resolver, "10.244.0.9", Family::V4Only);
  ASSERT_TRUE(r.ok) << r.error;
  EXPECT_EQ(ips(r), (std::vector<std::string>{"10.244.0.9"}));
  EXPECT_TRUE(server.queries().empty());
}

TEST_F(CaresDnsResolverTest, ACancelledQueryNeverCallsBack) {
  server.set("svc.test", {{"10.244.0.7"}, {}, 5});
  auto resolver = makeResolver();
  bool called = false;
  auto query = resolver->resolve("svc.test", Family::V4Only, [&](DnsResponse) { called = true; });
  query.reset();
  auto stop = dispatcher.createTimer([&] { dispatcher.exit(); });
  stop->enable(milliseconds(200));
  dispatcher.run();
  EXPECT_FALSE(called);
  EXPECT_EQ(server.queries().size(), 1u);  // it was asked; its answer was dropped
}

TEST_F(CaresDnsResolverTest, ASilentServerNeverBlocksTheLoop) {
  // A UDP socket that never answers.
  int silent = ::socket(AF_INET, SOCK_DGRAM, 0);
  sockaddr_in sa{};
  sa.sin_family = AF_INET;
  sa.sin_addr.s_addr = htonl(INADDR_LOOPBACK);
  ASSERT_EQ(::bind(silent, reinterpret_cast<sockaddr*>(&sa), sizeof sa), 0);
  socklen_t len = sizeof sa;
  ::getsockname(silent, reinterpret_cast<sockaddr*>(&sa), &len);
  CaresDnsResolver::Options options;
  options.servers.push_back(*common::SocketAddress::parse("127.0.0.1", ntohs(sa.sin_port)));
  auto resolver = CaresDnsResolver::create(dispatcher, options);
  ASSERT_TRUE(resolver.has_value());
  bool answered = false;
  auto query = (*resolver)->resolve("svc.test", Family::V4Only, [&](DnsResponse) { answered = true; });
  int ticks = 0;
  std::unique_ptr<event::Timer> tick;
  tick = dispatcher.createTimer([&] {
    if (++ticks == 10) dispatcher.exit();
  });
  tick->enable(milliseconds(5), milliseconds(5));
  auto start = std::chrono::steady_clock::now();
  dispatcher.run();
  // Ten 5 ms ticks while the query waits for its (seconds-long) c-ares timeout.
  EXPECT_EQ(ticks, 10);
  EXPECT_LT(std::chrono::steady_clock::now() - start, milliseconds(1000));
  EXPECT_FALSE(answered);
  query.reset();
  resolver->reset();
  ::close(silent);
}

}  // namespace
}  // namespace culvert::upstream
