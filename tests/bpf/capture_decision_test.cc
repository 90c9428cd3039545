// The capture decision of ebpf/bpf/lib/capture.h, run over fake helpers (DESIGN.md §7:
// cgroup_sock_addr and sock_ops have no BPF_PROG_RUN here; tests/privileged covers the
// real programs).
#include <arpa/inet.h>
#include <gtest/gtest.h>

#include <cstring>

#include "tests/bpf/fake_shim.h"

namespace {

uint32_t ip(const char* s) {
  in_addr a{};
  EXPECT_EQ(inet_pton(AF_INET, s, &a), 1) << s;
  return a.s_addr;
}

uint16_t port(uint16_t p) { return htons(p); }

cv_captured_key key(const char* addr, uint16_t p) {
  cv_captured_key k{};
  k.ip4 = ip(addr);
  k.port = port(p);
  return k;
}

// An enrolled pod with a live listener and 10.96.0.10:80 captured: the capture path.
cvt_env capturingPod() {
  cvt_env env{};
  env.enrolled = 1;
  env.enrolled_value.tenant_id = 7;
  env.enrolled_value.fail_mode = CV_FAIL_OPEN;
  env.listener_live = 1;
  env.captured[env.n_captured++] = key("10.96.0.10", 80);
  return env;
}

cv_connect_facts tcp() {
  cv_connect_facts f{};
  f.is_tcp = 1;
  return f;
}

cv_decision evaluate(cvt_env& env, cv_connect_facts f, const char* dst, uint16_t p) {
  return cvt_connect4_evaluate(&env, &f, ip(dst), port(p));
}

TEST(CaptureDecision, CapturedDestinationWithLiveListenerIsRedirected) {
  auto env = capturingPod();
  auto f = tcp();
  auto d = cvt_connect4_evaluate(&env, &f, ip("10.96.0.10"), port(80));
  EXPECT_EQ(d.verdict, CV_REDIRECT);
  EXPECT_EQ(d.reason, CV_R_LISTENER_LIVE);
  EXPECT_EQ(f.tenant_id, 7u);  // the facts carry the pod's enrollment
  EXPECT_EQ(env.calls_enrolled, 1);
  EXPECT_EQ(env.calls_own_socket, 1);
  EXPECT_EQ(env.calls_captured, 1);  // exact hit: no wildcard lookup
  EXPECT_EQ(env.calls_listener, 1);
}

TEST(CaptureDecision, NonTcpIsNeverLookedAt) {
  auto env = capturingPod();
  cv_connect_facts f{};  // is_tcp = 0 (UDP connect, raw, MPTCP...)
  auto d = evaluate(env, f, "10.96.0.10", 80);
  EXPECT_EQ(d.verdict, CV_PASS);
  EXPECT_EQ(d.reason, CV_R_NOT_TCP);
  EXPECT_EQ(env.calls_enrolled + env.calls_own_socket + env.calls_captured + env.calls_listener, 0);
}

TEST(CaptureDecision, NotEnrolledNetnsPasses) {
  auto env = capturingPod();
  env.enrolled = 0;
  auto d = evaluate(env, tcp(), "10.96.0.10", 80);
  EXPECT_EQ(d.verdict, CV_PASS);
  EXPECT_EQ(d.reason, CV_R_NOT_ENROLLED);
  EXPECT_EQ(env.calls_own_socket + env.calls_captured + env.calls_listener, 0);
}

TEST(CaptureDecision, CulvertsOwnSocketPasses) {
  auto env = capturingPod();
  env.own_socket = 1;
  auto d = evaluate(env, tcp(), "10.96.0.10", 80);
  EXPECT_EQ(d.verdict, CV_PASS);
  EXPECT_EQ(d.reason, CV_R_OWN_SOCKET);
  EXPECT_EQ(env.calls_captured + env.calls_listener, 0);
}

TEST(CaptureDecision, OwnSocketPassesEvenWhenFailClosedAndListenerDown) {
  auto env = capturingPod();
  env.own_socket = 1;
  env.listener_live = 0;
  env.enrolled_value.fail_mode = CV_FAIL_CLOSED;
  EXPECT_EQ(evaluate(env, tcp(), "10.96.0.10", 80).verdict, CV_PASS);
}

TEST(CaptureDecision, UncapturedDestinationPassesWithoutListenerLookup) {
  auto env = capturingPod();
  env.enrolled_value.fail_mode = CV_FAIL_CLOSED;
  env.listener_live = 0;
  auto d = evaluate(env, tcp(), "10.96.0.11", 80);
  EXPECT_EQ(d.verdict, CV_PASS);  // fail closed only concerns captured destinations
  EXPECT_EQ(d.reason, CV_R_NOT_CAPTURED);
  EXPECT_EQ(env.calls_captured, 3);  // exact, wildcard, then the prefix trie
  EXPECT_EQ(env.calls_listener, 0);  // the costly lookup only for captured destinations
}

TEST(CaptureDecision, SameIpOtherPortIsNotCaptured) {
  auto env = capturingPod();
  EXPECT_EQ(evaluate(env, tcp(), "10.96.0.10", 443).reason, CV_R_NOT_CAPTURED);
}

TEST(CaptureDecision, WildcardSelectorCapturesThatPortOnAnyIp) {
  auto env = capturingPod();
  env.captured[env.n_captured++] = key("0.0.0.0", 8080);
  auto d = evaluate(env, tcp(), "192.0.2.1", 8080);
  EXPECT_EQ(d.verdict, CV_REDIRECT);
  EXPECT_EQ(env.calls_captured, 2);
  EXPECT_EQ(evaluate(env, tcp(), "192.0.2.1", 8081).reason, CV_R_NOT_CAPTURED);
}

TEST(CaptureDecision, WildcardSelectorLeavesLoopbackAlone) {
  // A pod reaching its own sidecar on localhost:8080 is not egress.
  auto env = capturingPod();
  env.captured[env.n_captured++] = key("0.0.0.0", 8080);
  EXPECT_EQ(evaluate(env, tcp(), "127.0.0.1", 8080).reason, CV_R_NOT_CAPTURED);
  EXPECT_EQ(evaluate(env, tcp(), "127.1.2.3", 8080).reason, CV_R_NOT_CAPTURED);
}

TEST(CaptureDecision, ExactLoopbackSelectorStillCaptures) {
  auto env = capturingPod();
  env.captured[env.n_captured++] = key("127.0.0.53", 53);
  EXPECT_EQ(evaluate(env, tcp(), "127.0.0.53", 53).verdict, CV_REDIRECT);
}

TEST(CaptureDecision, ListenerDownFailOpenLeavesConnectUntouched) {
  auto env = capturingPod();
  env.listener_live = 0;
  env.enrolled_value.fail_mode = CV_FAIL_OPEN;
  auto d = evaluate(env, tcp(), "10.96.0.10", 80);
  EXPECT_EQ(d.verdict, CV_PASS);
  EXPECT_EQ(d.reason, CV_R_LISTENER_DOWN);
}

TEST(CaptureDecision, ListenerDownFailClosedRefuses) {
  auto env = capturingPod();
  env.listener_live = 0;
  env.enrolled_value.fail_mode = CV_FAIL_CLOSED;
  auto d = evaluate(env, tcp(), "10.96.0.10", 80);
  EXPECT_EQ(d.verdict, CV_REFUSE);
  EXPECT_EQ(d.reason, CV_R_LISTENER_DOWN);
}

TEST(CaptureDecision, UnknownFailModeValueFailsOpen) {
  // Only an explicit CV_FAIL_CLOSED refuses: a garbage byte never blocks traffic.
  auto env = capturingPod();
  env.listener_live = 0;
  env.enrolled_value.fail_mode = 9;
  EXPECT_EQ(evaluate(env, tcp(), "10.96.0.10", 80).verdict, CV_PASS);
}

TEST(CaptureDecision, RecordFailureFollowsFailMode) {
  auto f = tcp();
  f.fail_mode = CV_FAIL_OPEN;
  auto d = cvt_decide_record_failed(&f);
  EXPECT_EQ(d.verdict, CV_PASS);
  EXPECT_EQ(d.reason, CV_R_RECORD_FAILED);
  f.fail_mode = CV_FAIL_CLOSED;
  EXPECT_EQ(cvt_decide_record_failed(&f).verdict, CV_REFUSE);
}

TEST(CaptureDecision, AsksForFactsInRuleOrder) {
  auto f = tcp();
  EXPECT_EQ(cvt_decide(&f).verdict, CV_NEED);
  EXPECT_EQ(cvt_decide(&f).need, CV_FACT_ENROLLED);
  f.known = CV_FACT_ENROLLED;
  f.value = CV_FACT_ENROLLED;
  EXPECT_EQ(cvt_decide(&f).need, CV_FACT_OWN_SOCKET);
  f.known |= CV_FACT_OWN_SOCKET;
  EXPECT_EQ(cvt_decide(&f).need, CV_FACT_CAPTURED);
  f.known |= CV_FACT_CAPTURED;
  f.value |= CV_FACT_CAPTURED;
  EXPECT_EQ(cvt_decide(&f).need, CV_FACT_IN_SCOPE);
  f.known |= CV_FACT_IN_SCOPE;
  f.value |= CV_FACT_IN_SCOPE;
  EXPECT_EQ(cvt_decide(&f).need, CV_FACT_EXCLUDED);
  f.known |= CV_FACT_EXCLUDED;
  EXPECT_EQ(cvt_decide(&f).need, CV_FACT_LISTENER_LIVE);
  f.known |= CV_FACT_LISTENER_LIVE;
  EXPECT_NE(cvt_decide(&f).verdict, CV_NEED);
}

// The rules as a table, checked against every combination of facts: an independent
// statement of DESIGN.md §2/§5 that cv_decide must agree with.
TEST(CaptureDecision, AllFactCombinationsMatchTheRules) {
  for (int bypass = 0; bypass < 2; ++bypass) {
    for (int tcp_bit = 0; tcp_bit < 2; ++tcp_bit) {
      for (uint32_t value = 0; value < 64; ++value) {
        for (uint8_t mode : {CV_FAIL_OPEN, CV_FAIL_CLOSED}) {
          cv_connect_facts f{};
          f.bypass = static_cast<uint8_t>(bypass);
          f.is_tcp = static_cast<uint8_t>(tcp_bit);
          f.known = 0x3f;
          f.value = value;
          f.fail_mode = mode;
          bool enrolled = value & CV_FACT_ENROLLED;
          bool own = value & CV_FACT_OWN_SOCKET;
          bool captured = value & CV_FACT_CAPTURED;
          bool excluded = value & CV_FACT_EXCLUDED;
          bool live = value & CV_FACT_LISTENER_LIVE;
          bool in_scope = value & CV_FACT_IN_SCOPE;
          int expected = CV_PASS;
          if (!bypass && tcp_bit && enrolled && !own && captured && in_scope && !excluded) {
            expected = live ? CV_REDIRECT : (mode == CV_FAIL_CLOSED ? CV_REFUSE : CV_PASS);
          }
          EXPECT_EQ(cvt_decide(&f).verdict, expected) << "bypass=" << bypass << " tcp=" << tcp_bit
                                                      << " facts=" << value << " fail_mode=" << int(mode);
        }
      }
    }
  }
}

TEST(CaptureDecision, EachOutcomeIsChargedToItsCounter) {
  cv_counters c{};
  auto charge = [&](uint8_t verdict, uint8_t reason) {
    cv_decision d{};
    d.verdict = verdict;
    d.reason = reason;
    return cvt_counter_for(&c, d);
  };
  EXPECT_EQ(charge(CV_REDIRECT, CV_R_LISTENER_LIVE), &c.captured);
  EXPECT_EQ(charge(CV_PASS, CV_R_NOT_CAPTURED), &c.passthrough);
  EXPECT_EQ(charge(CV_PASS, CV_R_OWN_SOCKET), &c.passthrough);
  EXPECT_EQ(charge(CV_REFUSE, CV_R_LISTENER_DOWN), &c.refused);
  EXPECT_EQ(charge(CV_PASS, CV_R_LISTENER_DOWN), &c.fail_open);
  EXPECT_EQ(charge(CV_PASS, CV_R_RECORD_FAILED), &c.record_failed);
  EXPECT_EQ(charge(CV_REFUSE, CV_R_RECORD_FAILED), &c.record_failed);
  EXPECT_EQ(charge(CV_PASS, CV_R_EXCLUDED), &c.excluded);
  EXPECT_EQ(charge(CV_PASS, CV_R_OUT_OF_SCOPE), &c.out_of_scope);
  EXPECT_EQ(charge(CV_PASS, CV_R_BYPASS), nullptr);
  // Connects outside capture's scope cost no per-CPU write.
  EXPECT_EQ(charge(CV_PASS, CV_R_NOT_TCP), nullptr);
  EXPECT_EQ(charge(CV_PASS, CV_R_NOT_ENROLLED), nullptr);
}

TEST(CaptureDecision, PendingRecordHoldsTheOriginalDestination) {
  cv_pending_dst p;
  std::memset(&p, 0xab, sizeof p);  // every byte must be written (hash keys/values)
  cvt_make_pending4(&p, 0x1122334455667788ull, ip("10.96.0.10"), port(80));
  EXPECT_EQ(p.netns_cookie, 0x1122334455667788ull);
  EXPECT_EQ(p.orig_dst.family, CV_AF_INET);
  EXPECT_EQ(p.orig_dst.addr[0], ip("10.96.0.10"));
  EXPECT_EQ(p.orig_dst.addr[1] | p.orig_dst.addr[2] | p.orig_dst.addr[3], 0u);
  EXPECT_EQ(p.orig_dst.port, port(80));
  EXPECT_EQ(p.orig_dst.pad, 0);
  EXPECT_EQ(p.pad, 0u);
}

TEST(CaptureDecision, OrigDstKeyMatchesWhatGetpeernameGives) {
  // sock_ops: local_ip4 network order, local_port HOST order. The proxy builds the key
  // from getpeername(): sin_addr and sin_port, both network order.
  cv_orig_dst_key k;
  std::memset(&k, 0xab, sizeof k);
  cvt_make_orig_dst_key4(&k, 42, ip("127.0.0.1"), 40001);

  sockaddr_in peer{};
  peer.sin_family = AF_INET;
  peer.sin_addr.s_addr = ip("127.0.0.1");
  peer.sin_port = htons(40001);
  cv_orig_dst_key expected{};
  expected.netns_cookie = 42;
  expected.client.family = CV_AF_INET;
  expected.client.addr[0] = peer.sin_addr.s_addr;
  expected.client.port = peer.sin_port;
  EXPECT_EQ(std::memcmp(&k, &expected, sizeof k), 0);
  EXPECT_EQ(k.client.port, htons(40001));
}

TEST(CaptureDecision, LoopbackIsAllOf127Slash8) {
  EXPECT_TRUE(cvt_is_loopback4(ip("127.0.0.1")));
  EXPECT_TRUE(cvt_is_loopback4(ip("127.255.255.254")));
  EXPECT_FALSE(cvt_is_loopback4(ip("128.0.0.1")));
  EXPECT_FALSE(cvt_is_loopback4(ip("10.127.0.1")));
}

// ---- IPv6, IPv4-mapped, exclusions, bypass -----------------------------------------

struct Ip6 {
  uint32_t w[4];
};

Ip6 ip6(const char* s) {
  Ip6 a{};
  EXPECT_EQ(inet_pton(AF_INET6, s, a.w), 1) << s;
  return a;
}

cv_captured6_key key6(const char* addr, uint16_t p) {
  cv_captured6_key k{};
  Ip6 a = ip6(addr);
  std::memcpy(k.ip6, a.w, sizeof k.ip6);
  k.port = port(p);
  return k;
}

cv_decision evaluate6(cvt_env& env, cv_connect_facts f, const char* dst, uint16_t p) {
  Ip6 a = ip6(dst);
  return cvt_connect6_evaluate(&env, &f, a.w, port(p));
}

cv_cidr_key cidr(uint64_t cookie, const char* addr, uint32_t len) {
  cv_cidr_key k{};
  if (std::strchr(addr, ':') != nullptr) {
    Ip6 a = ip6(addr);
    std::memcpy(k.addr, a.w, sizeof k.addr);
    k.family = CV_AF_INET6;
  } else {
    k.addr[0] = ip(addr);
    k.family = CV_AF_INET;
  }
  k.netns_cookie = cookie;
  k.prefixlen = CV_CIDR_KEY_FIXED_BITS + len;
  return k;
}

cv_port_key portKey(uint64_t cookie, uint16_t p) {
  cv_port_key k{};
  k.netns_cookie = cookie;
  k.port = port(p);
  return k;
}

TEST(CaptureDecision6, CapturedIpv6DestinationIsRedirectedToTheIpv6Listener) {
  auto env = capturingPod();
  env.captured6[env.n_captured6++] = key6("fd00:96::10", 80);
  auto d = evaluate6(env, tcp(), "fd00:96::10", 80);
  EXPECT_EQ(d.verdict, CV_REDIRECT);
  EXPECT_EQ(env.listener_family, CV_AF_INET6);
  EXPECT_EQ(evaluate6(env, tcp(), "fd00:96::11", 80).reason, CV_R_NOT_CAPTURED);
}

TEST(CaptureDecision6, Ipv4MappedDestinationIsDecidedAsIpv4) {
  auto env = capturingPod();  // captures 10.96.0.10:80 in the IPv4 map only
  auto d = evaluate6(env, tcp(), "::ffff:10.96.0.10", 80);
  EXPECT_EQ(d.verdict, CV_REDIRECT);
  EXPECT_EQ(env.listener_family, CV_AF_INET);  // the 127.0.0.1 group serves it

  cv_dst dst{};
  Ip6 a = ip6("::ffff:10.96.0.10");
  cvt_dst_from6(&dst, a.w, port(80));
  EXPECT_EQ(dst.family, CV_AF_INET);
  EXPECT_EQ(dst.addr[0], ip("10.96.0.10"));
  EXPECT_EQ(dst.addr[1] | dst.addr[2] | dst.addr[3], 0u);
}

TEST(CaptureDecision6, WildcardIpv6SelectorLeavesLoopbackAndUnspecifiedAlone) {
  auto env = capturingPod();
  env.captured6[env.n_captured6++] = key6("::", 8080);
  EXPECT_EQ(evaluate6(env, tcp(), "2001:db8::1", 8080).verdict, CV_REDIRECT);
  EXPECT_EQ(evaluate6(env, tcp(), "::1", 8080).reason, CV_R_NOT_CAPTURED);
  EXPECT_EQ(evaluate6(env, tcp(), "::", 8080).reason, CV_R_NOT_CAPTURED);
  // An IPv6 wildcard does not capture IPv4(-mapped) destinations: they are IPv4.
  EXPECT_EQ(evaluate6(env, tcp(), "::ffff:192.0.2.1", 8080).reason, CV_R_NOT_CAPTURED);
}

TEST(CaptureDecision6, OrigDstKeyOfAMappedSocketIsIpv4) {
  // A dual-stack socket connected to ::ffff:127.0.0.1 is accepted by the IPv4 listener,
  // whose getpeername() shows 127.0.0.1: the key must be the IPv4 one.
  Ip6 local = ip6("::ffff:127.0.0.1");
  cv_orig_dst_key k6, k4;
  std::memset(&k6, 0xab, sizeof k6);
  std::memset(&k4, 0xcd, sizeof k4);
  cvt_make_orig_dst_key6(&k6, 7, local.w, 40002);
  cvt_make_orig_dst_key4(&k4, 7, ip("127.0.0.1"), 40002);
  EXPECT_EQ(std::memcmp(&k6, &k4, sizeof k6), 0);

  Ip6 lo = ip6("::1");
  std::memset(&k6, 0xab, sizeof k6);
  cvt_make_orig_dst_key6(&k6, 7, lo.w, 40003);
  EXPECT_EQ(k6.client.family, CV_AF_INET6);
  EXPECT_EQ(std::memcmp(k6.client.addr, lo.w, 16), 0);
  EXPECT_EQ(k6.client.port, htons(40003));
  EXPECT_EQ(k6.client.pad, 0);
  EXPECT_EQ(k6.pad, 0u);
}

cv_prefix_key prefixKey(const char* addr, uint32_t len, uint16_t p) {
  cv_prefix_key k{};
  if (std::strchr(addr, ':') != nullptr) {
    Ip6 a = ip6(addr);
    std::memcpy(k.addr, a.w, sizeof k.addr);
    k.family = CV_AF_INET6;
  } else {
    k.addr[0] = ip(addr);
    k.family = CV_AF_INET;
  }
  k.port = port(p);
  k.prefixlen = CV_PREFIX_KEY_FIXED_BITS + len;
  return k;
}

TEST(CaptureDecision, PrefixSelectorCapturesThatPortOnThatPrefixOnly) {
  auto env = capturingPod();
  env.captured_prefixes[env.n_captured_prefixes++] = prefixKey("10.100.0.0", 16, 443);
  env.captured_prefixes[env.n_captured_prefixes++] = prefixKey("fd00:100::", 32, 443);
  EXPECT_EQ(evaluate(env, tcp(), "10.100.7.7", 443).verdict, CV_REDIRECT);
  EXPECT_EQ(evaluate(env, tcp(), "10.101.7.7", 443).reason, CV_R_NOT_CAPTURED);
  EXPECT_EQ(evaluate(env, tcp(), "10.100.7.7", 444).reason, CV_R_NOT_CAPTURED);  // other port
  EXPECT_EQ(evaluate6(env, tcp(), "fd00:100::9", 443).verdict, CV_REDIRECT);
  EXPECT_EQ(evaluate6(env, tcp(), "::ffff:10.100.1.1", 443).verdict, CV_REDIRECT);  // mapped = IPv4
  EXPECT_EQ(evaluate6(env, tcp(), "fd00:101::9", 443).reason, CV_R_NOT_CAPTURED);
}

TEST(CaptureDecision, PrefixSelectorNeverCapturesLoopback) {
  auto env = capturingPod();
  env.captured_prefixes[env.n_captured_prefixes++] = prefixKey("0.0.0.0", 0, 443);
  env.captured_prefixes[env.n_captured_prefixes++] = prefixKey("::", 0, 443);
  EXPECT_EQ(evaluate(env, tcp(), "192.0.2.1", 443).verdict, CV_REDIRECT);
  EXPECT_EQ(evaluate(env, tcp(), "127.0.0.1", 443).reason, CV_R_NOT_CAPTURED);
  EXPECT_EQ(evaluate6(env, tcp(), "::1", 443).reason, CV_R_NOT_CAPTURED);
}

TEST(CaptureExclusions, GlobalAndPodPortsAreExcluded) {
  auto env = capturingPod();
  env.netns_cookie = 55;
  env.captured[env.n_captured++] = key("0.0.0.0", 8080);
  env.captured[env.n_captured++] = key("0.0.0.0", 9090);
  env.excluded_ports[env.n_excluded_ports++] = portKey(0, 8080);   // bootstrap: every pod
  env.excluded_ports[env.n_excluded_ports++] = portKey(56, 9090);  // another pod's record
  auto d = evaluate(env, tcp(), "10.96.3.3", 8080);
  EXPECT_EQ(d.verdict, CV_PASS);
  EXPECT_EQ(d.reason, CV_R_EXCLUDED);
  EXPECT_EQ(evaluate(env, tcp(), "10.96.3.3", 9090).verdict, CV_REDIRECT);
  env.excluded_ports[env.n_excluded_ports++] = portKey(55, 9090);  // this pod's record
  EXPECT_EQ(evaluate(env, tcp(), "10.96.3.3", 9090).reason, CV_R_EXCLUDED);
}

TEST(CaptureExclusions, CidrsAndOwnAddressesAreExcludedPerScope) {
  auto env = capturingPod();
  env.netns_cookie = 55;
  env.captured[env.n_captured++] = key("0.0.0.0", 80);
  env.captured6[env.n_captured6++] = key6("::", 80);
  env.excluded_cidrs[env.n_excluded_cidrs++] = cidr(0, "10.200.0.0", 16);
  env.excluded_cidrs[env.n_excluded_cidrs++] = cidr(55, "10.244.1.7", 32);  // the pod's own IP
  env.excluded_cidrs[env.n_excluded_cidrs++] = cidr(55, "fd00:244::7", 128);
  env.excluded_cidrs[env.n_excluded_cidrs++] = cidr(56, "10.96.9.0", 24);   // another pod
  EXPECT_EQ(evaluate(env, tcp(), "10.200.44.1", 80).reason, CV_R_EXCLUDED);
  EXPECT_EQ(evaluate(env, tcp(), "10.201.0.1", 80).verdict, CV_REDIRECT);
  EXPECT_EQ(evaluate(env, tcp(), "10.244.1.7", 80).reason, CV_R_EXCLUDED);
  EXPECT_EQ(evaluate(env, tcp(), "10.244.1.8", 80).verdict, CV_REDIRECT);
  EXPECT_EQ(evaluate6(env, tcp(), "fd00:244::7", 80).reason, CV_R_EXCLUDED);
  EXPECT_EQ(evaluate6(env, tcp(), "::ffff:10.244.1.7", 80).reason, CV_R_EXCLUDED);
  EXPECT_EQ(evaluate(env, tcp(), "10.96.9.1", 80).verdict, CV_REDIRECT);  // not this pod's rule
}

TEST(CaptureExclusions, ExclusionsAreOnlyLookedUpForCapturedDestinations) {
  auto env = capturingPod();
  EXPECT_EQ(evaluate(env, tcp(), "10.96.0.99", 80).reason, CV_R_NOT_CAPTURED);
  EXPECT_EQ(env.calls_excluded, 0);
  EXPECT_EQ(evaluate(env, tcp(), "10.96.0.10", 80).verdict, CV_REDIRECT);
  EXPECT_EQ(env.calls_excluded, 4);  // port + CIDR, global + pod
}

TEST(CaptureDecision, BypassIsCheckedBeforeAnythingElse) {
  auto env = capturingPod();
  env.enrolled_value.fail_mode = CV_FAIL_CLOSED;
  env.listener_live = 0;
  auto f = tcp();
  f.bypass = 1;
  auto d = evaluate(env, f, "10.96.0.10", 80);
  EXPECT_EQ(d.verdict, CV_PASS);
  EXPECT_EQ(d.reason, CV_R_BYPASS);
  EXPECT_EQ(env.calls_enrolled + env.calls_own_socket + env.calls_captured + env.calls_listener, 0);
}

// ---- tenant scope (cv_tenant_scope + the captured entries' tenant bits) ----------

void allow(cv_captured_value& v, uint32_t slot) { v.tenants[slot / 64] |= 1ull << (slot % 64); }

// The pod (tenant 7) is restricted, with scope slot `slot`.
void restrict(cvt_env& env, uint32_t slot, uint32_t tenant_id = 7) {
  env.scoped_tenant[env.n_scoped] = tenant_id;
  env.scoped_slot[env.n_scoped++] = slot;
}

TEST(CaptureScope, UnrestrictedTenantUsesEveryCapturedDestination) {
  auto env = capturingPod();  // 10.96.0.10:80, no tenant bits
  restrict(env, 3, /*tenant_id=*/8);  // another tenant is restricted: not this pod's
  auto d = evaluate(env, tcp(), "10.96.0.10", 80);
  EXPECT_EQ(d.verdict, CV_REDIRECT);
  EXPECT_EQ(env.calls_scope, 1);
}

TEST(CaptureScope, RestrictedTenantIsCapturedOnlyWhereItsBitIsSet) {
  auto env = capturingPod();
  env.captured[env.n_captured] = key("10.96.0.20", 80);
  allow(env.captured_value[env.n_captured++], 130);  // the third word
  restrict(env, 130);
  EXPECT_EQ(evaluate(env, tcp(), "10.96.0.20", 80).verdict, CV_REDIRECT);
  auto f = tcp();
  auto d = cvt_connect4_evaluate(&env, &f, ip("10.96.0.10"), port(80));
  EXPECT_EQ(d.verdict, CV_PASS);
  EXPECT_EQ(d.reason, CV_R_OUT_OF_SCOPE);
  EXPECT_TRUE(f.known & CV_FACT_IN_SCOPE);
  // Out of scope costs no exclusion or listener lookup: the connect is simply untouched.
  env.calls_excluded = env.calls_listener = 0;
  evaluate(env, tcp(), "10.96.0.10", 80);
  EXPECT_EQ(env.calls_excluded + env.calls_listener, 0);
}

TEST(CaptureScope, OutOfScopePassesEvenWhenFailClosedAndListenerDown) {
  auto env = capturingPod();
  env.enrolled_value.fail_mode = CV_FAIL_CLOSED;
  env.listener_live = 0;
  restrict(env, 0);
  EXPECT_EQ(evaluate(env, tcp(), "10.96.0.10", 80).reason, CV_R_OUT_OF_SCOPE);
  allow(env.captured_value[0], 0);
  EXPECT_EQ(evaluate(env, tcp(), "10.96.0.10", 80).verdict, CV_REFUSE);  // in scope: fail mode again
}

TEST(CaptureScope, Ipv6AndMappedDestinationsFollowTheirEntrysScope) {
  auto env = capturingPod();
  env.captured6[env.n_captured6] = key6("fd00:96::10", 80);
  allow(env.captured6_value[env.n_captured6++], 5);
  env.captured6[env.n_captured6++] = key6("fd00:96::11", 80);
  restrict(env, 5);
  EXPECT_EQ(evaluate6(env, tcp(), "fd00:96::10", 80).verdict, CV_REDIRECT);
  EXPECT_EQ(evaluate6(env, tcp(), "fd00:96::11", 80).reason, CV_R_OUT_OF_SCOPE);
  // ::ffff:10.96.0.10 is the IPv4 entry, which does not carry bit 5.
  EXPECT_EQ(evaluate6(env, tcp(), "::ffff:10.96.0.10", 80).reason, CV_R_OUT_OF_SCOPE);
  allow(env.captured_value[0], 5);
  EXPECT_EQ(evaluate6(env, tcp(), "::ffff:10.96.0.10", 80).verdict, CV_REDIRECT);
}

TEST(CaptureScope, WildcardEntriesCarryTheirOwnScope) {
  auto env = capturingPod();
  env.captured[env.n_captured] = key("0.0.0.0", 8080);
  allow(env.captured_value[env.n_captured++], 1);
  env.captured6[env.n_captured6] = key6("::", 8080);
  allow(env.captured6_value[env.n_captured6++], 1);
  env.captured_prefixes[env.n_captured_prefixes] = prefixKey("10.100.0.0", 16, 443);
  allow(env.captured_prefix_value[env.n_captured_prefixes++], 1);
  restrict(env, 1);
  EXPECT_EQ(evaluate(env, tcp(), "192.0.2.9", 8080).verdict, CV_REDIRECT);
  EXPECT_EQ(evaluate6(env, tcp(), "2001:db8::9", 8080).verdict, CV_REDIRECT);
  EXPECT_EQ(evaluate(env, tcp(), "10.100.3.3", 443).verdict, CV_REDIRECT);
  env.scoped_slot[0] = 2;  // the tenant's slot moves: none of these carry bit 2
  EXPECT_EQ(evaluate(env, tcp(), "192.0.2.9", 8080).reason, CV_R_OUT_OF_SCOPE);
  EXPECT_EQ(evaluate6(env, tcp(), "2001:db8::9", 8080).reason, CV_R_OUT_OF_SCOPE);
  EXPECT_EQ(evaluate(env, tcp(), "10.100.3.3", 443).reason, CV_R_OUT_OF_SCOPE);
}

// The worker picks the exact listener before the any-IP one and then checks the tenant:
// a tenant not allowed the exact listener is not captured by a wildcard it may use.
TEST(CaptureScope, TheExactEntryDecidesBeforeTheWildcard) {
  auto env = capturingPod();  // exact 10.96.0.10:80 without bit 4
  env.captured[env.n_captured] = key("0.0.0.0", 80);
  allow(env.captured_value[env.n_captured++], 4);
  restrict(env, 4);
  EXPECT_EQ(evaluate(env, tcp(), "10.96.0.10", 80).reason, CV_R_OUT_OF_SCOPE);
  EXPECT_EQ(evaluate(env, tcp(), "10.96.0.11", 80).verdict, CV_REDIRECT);
}

TEST(CaptureScope, ASlotOutOfRangeAllowsNothing) {
  auto env = capturingPod();
  for (auto& w : env.captured_value[0].tenants) w = ~0ull;
  restrict(env, CV_MAX_SCOPED_TENANTS);
  EXPECT_EQ(evaluate(env, tcp(), "10.96.0.10", 80).reason, CV_R_OUT_OF_SCOPE);
}

TEST(CaptureScope, UncapturedDestinationsNeverLookTheTenantUp) {
  auto env = capturingPod();
  restrict(env, 0);
  EXPECT_EQ(evaluate(env, tcp(), "10.96.0.99", 80).reason, CV_R_NOT_CAPTURED);
  EXPECT_EQ(env.calls_scope, 0);
}

}  // namespace
