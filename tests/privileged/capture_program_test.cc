// The real capture programs (cgroup/connect4 + sockops) against real sockets: each test
// loads its own CaptureProgram, attached to its own child cgroup, pinned under its own
// bpffs root, with "pods" that are loopback-only network namespaces (DESIGN.md §7, §8).
#include <arpa/inet.h>
#include <errno.h>
#include <gtest/gtest.h>
#include <sys/socket.h>

#include <filesystem>
#include <memory>

#include "ebpf/loader/capture_program.h"
#include "ebpf/loader/cgroup.h"
#include "tests/privileged/test_env.h"

namespace culvert::ebpf {
namespace {

using culvert::testing::acceptWithin;
using culvert::testing::BpffsRoot;
using culvert::testing::connectFromChild;
using culvert::testing::ConnectResult;
using culvert::testing::listenIn;
using culvert::testing::TestCgroup;
using culvert::testing::TestNetns;
using culvert::testing::UniqueFd;

constexpr uint16_t kCapturePort = 15001;
constexpr const char* kVip = "10.96.0.10";  // a service VIP: never routed anywhere
constexpr uint16_t kVipPort = 80;

common::SocketAddress addr(const char* ip, uint16_t port) { return *common::SocketAddress::parse(ip, port); }

std::string describe(const ConnectResult& r) {
  if (!r.failure.empty()) return r.failure;
  return r.error == 0 ? "connected" : std::string("connect: ") + strerrorname_np(r.error);
}

class CaptureProgramTest : public ::testing::Test {
protected:
  void SetUp() override {
    CULVERT_REQUIRE_ROOT();
    auto root = detectCgroup2Root();
    ASSERT_TRUE(root) << root.error().describe();
    bpffs_ = std::make_unique<BpffsRoot>();
    ASSERT_TRUE(bpffs_->error().empty()) << bpffs_->error();
    cgroup_ = std::make_unique<TestCgroup>(*root);
    ASSERT_TRUE(cgroup_->error().empty()) << cgroup_->error();
    pod_ = std::make_unique<TestNetns>();
    ASSERT_TRUE(pod_->error().empty()) << pod_->error();
    ASSERT_TRUE(pod_->onlyLoopback()) << "test netns must have no route out (DESIGN.md §8)";

    auto program = CaptureProgram::load({bpffs_->pinRoot(), cgroup_->path(), kCapturePort});
    ASSERT_TRUE(program) << program.error().describe();
    program_ = std::move(*program);
    ASSERT_TRUE(program_->setCapturedDestinations({addr(kVip, kVipPort)}));
  }

  void TearDown() override {
    // Detach and unpin before the cgroup and pin root go away.
    program_.reset();
    pod_.reset();
    cgroup_.reset();
    bpffs_.reset();
  }

  void enroll(const TestNetns& netns, FailMode mode) {
    uint64_t cookie = netns.cookie();
    ASSERT_NE(cookie, 0u);
    ASSERT_TRUE(program_->enrollPod(cookie, {.tenant_id = 3, .fail_mode = mode}));
  }

  UniqueFd taggedListener(const TestNetns& netns) {
    return listenIn(netns, kCapturePort, [this](int fd) { ASSERT_TRUE(program_->tagSocket(fd)); });
  }

  ConnectResult connectVip(const TestNetns& netns, const char* ip = kVip, uint16_t port = kVipPort,
                           bool tag_client = false) {
    return connectFromChild(cgroup_->path(), netns, ip, port, [this, tag_client](int fd) {
      if (tag_client) (void)program_->tagSocket(fd);
    });
  }

  // Expects a captured connection on listener; returns its original destination.
  std::optional<common::SocketAddress> acceptCaptured(int listener) {
    UniqueFd conn = acceptWithin(listener, 5000);
    EXPECT_TRUE(conn) << "no connection arrived on the in-pod listener";
    if (!conn) return std::nullopt;
    char byte = 0;
    EXPECT_EQ(recv(conn.get(), &byte, 1, 0), 1);
    EXPECT_EQ(byte, 'x');
    auto orig = program_->takeOriginalDestination(conn.get());
    // The record is consumed by the lookup.
    EXPECT_FALSE(program_->takeOriginalDestination(conn.get()).has_value());
    return orig;
  }

  std::unique_ptr<BpffsRoot> bpffs_;
  std::unique_ptr<TestCgroup> cgroup_;
  std::unique_ptr<TestNetns> pod_;
  std::unique_ptr<CaptureProgram> program_;
};

TEST_F(CaptureProgramTest, CapturedVipLandsOnTaggedListenerWithOriginalDestination) {
  enroll(*pod_, FailMode::Open);
  UniqueFd listener = taggedListener(*pod_);
  ASSERT_TRUE(listener);

  ConnectResult r = connectVip(*pod_);
  ASSERT_EQ(r.error, 0) << describe(r);
  // No getpeername4 hook yet: the app sees the listener's address.
  EXPECT_EQ(ntohl(r.peer.sin_addr.s_addr), INADDR_LOOPBACK);
  EXPECT_EQ(ntohs(r.peer.sin_port), kCapturePort);
  EXPECT_TRUE(r.sent);

  auto orig = acceptCaptured(listener.get());
  ASSERT_TRUE(orig.has_value()) << "no original destination recorded";
  EXPECT_EQ(orig->toString(), "10.96.0.10:80");

  Counters c = program_->counters();
  EXPECT_EQ(c.captured, 1u);
  EXPECT_EQ(c.rekeyed, 1u);
  EXPECT_EQ(c.refused + c.fail_open + c.record_failed + c.rekey_failed, 0u);
}

TEST_F(CaptureProgramTest, WildcardPortCapturesAnyIpAndKeepsTheRealDestination) {
  ASSERT_TRUE(program_->setCapturedDestinations({addr("0.0.0.0", 8080)}));
  enroll(*pod_, FailMode::Open);
  UniqueFd listener = taggedListener(*pod_);
  ASSERT_TRUE(listener);

  ConnectResult r = connectVip(*pod_, "10.96.7.7", 8080);
  ASSERT_EQ(r.error, 0) << describe(r);
  auto orig = acceptCaptured(listener.get());
  ASSERT_TRUE(orig.has_value());
  EXPECT_EQ(orig->toString(), "10.96.7.7:8080");
}

TEST_F(CaptureProgramTest, NonEnrolledNetnsIsNotCaptured) {
  UniqueFd listener = taggedListener(*pod_);  // live listener, but the netns is not enrolled
  ASSERT_TRUE(listener);
  ConnectResult r = connectVip(*pod_);
  EXPECT_EQ(r.error, ENETUNREACH) << describe(r);  // untouched: no route to the VIP
  EXPECT_FALSE(acceptWithin(listener.get(), 0));
  EXPECT_EQ(program_->counters().captured, 0u);
}

TEST_F(CaptureProgramTest, CulvertsOwnTaggedSocketIsNotCaptured) {
  enroll(*pod_, FailMode::Closed);
  UniqueFd listener = taggedListener(*pod_);
  ASSERT_TRUE(listener);
  ConnectResult r = connectVip(*pod_, kVip, kVipPort, /*tag_client=*/true);
  EXPECT_EQ(r.error, ENETUNREACH) << describe(r);
  EXPECT_FALSE(acceptWithin(listener.get(), 0));
  Counters c = program_->counters();
  EXPECT_EQ(c.passthrough, 1u);
  EXPECT_EQ(c.captured, 0u);
}

TEST_F(CaptureProgramTest, FailClosedWithoutListenerRefuses) {
  enroll(*pod_, FailMode::Closed);
  ConnectResult r = connectVip(*pod_);
  EXPECT_EQ(r.error, ECONNREFUSED) << describe(r);
  EXPECT_EQ(program_->counters().refused, 1u);

  // Fail closed concerns captured destinations only.
  ConnectResult other = connectVip(*pod_, "10.96.0.11", 80);
  EXPECT_EQ(other.error, ENETUNREACH) << describe(other);
}

TEST_F(CaptureProgramTest, FailOpenDoesNotRedirectToAnUntaggedListener) {
  enroll(*pod_, FailMode::Open);
  UniqueFd app_listener = listenIn(*pod_, kCapturePort);  // the app's own socket on 15001
  ASSERT_TRUE(app_listener);
  ConnectResult r = connectVip(*pod_);
  EXPECT_EQ(r.error, ENETUNREACH) << describe(r);  // untouched, not redirected
  EXPECT_FALSE(acceptWithin(app_listener.get(), 0));
  Counters c = program_->counters();
  EXPECT_EQ(c.fail_open, 1u);
  EXPECT_EQ(c.captured, 0u);
}

TEST_F(CaptureProgramTest, FailClosedAlsoRefusesWhenOnlyAnUntaggedListenerExists) {
  enroll(*pod_, FailMode::Closed);
  UniqueFd app_listener = listenIn(*pod_, kCapturePort);
  ASSERT_TRUE(app_listener);
  ConnectResult r = connectVip(*pod_);
  EXPECT_EQ(r.error, ECONNREFUSED) << describe(r);
  EXPECT_FALSE(acceptWithin(app_listener.get(), 0));
}

TEST_F(CaptureProgramTest, UnenrolledPodIsNoLongerCaptured) {
  enroll(*pod_, FailMode::Closed);
  ASSERT_TRUE(program_->unenrollPod(pod_->cookie()));
  ASSERT_TRUE(program_->unenrollPod(pod_->cookie()));  // repeatable (CNI DEL may repeat)
  ConnectResult r = connectVip(*pod_);
  EXPECT_EQ(r.error, ENETUNREACH) << describe(r);
}

TEST_F(CaptureProgramTest, SetCapturedDestinationsReplacesTheSet) {
  enroll(*pod_, FailMode::Closed);  // captured + no listener = ECONNREFUSED: a cheap probe
  ASSERT_TRUE(program_->setCapturedDestinations({addr("10.96.0.20", 443), addr("10.96.0.21", 443)}));
  EXPECT_EQ(connectVip(*pod_, kVip, kVipPort).error, ENETUNREACH);  // stale entry removed
  EXPECT_EQ(connectVip(*pod_, "10.96.0.20", 443).error, ECONNREFUSED);
  EXPECT_EQ(connectVip(*pod_, "10.96.0.21", 443).error, ECONNREFUSED);

  auto v6 = program_->setCapturedDestinations({addr("10.96.0.30", 80), addr("fd00::1", 80)});
  ASSERT_FALSE(v6);
  EXPECT_NE(v6.error().message.find("IPv6"), std::string::npos);
  // Rejected as a whole: the previous set is intact.
  EXPECT_EQ(connectVip(*pod_, "10.96.0.20", 443).error, ECONNREFUSED);
  EXPECT_EQ(connectVip(*pod_, "10.96.0.30", 80).error, ENETUNREACH);
}

TEST_F(CaptureProgramTest, MapsArePinnedUnderTheLayoutVersionAndRemovedOnDestroy) {
  EXPECT_EQ(program_->cgroupPath(), cgroup_->path());
  auto dir = program_->pinDir();
  EXPECT_EQ(dir, bpffs_->pinRoot() / "v1");
  for (const char* name :
       {"cv_enrolled", "cv_captured", "cv_sock_tag", "cv_orig_dst_by_cookie", "cv_orig_dst", "cv_counters"}) {
    EXPECT_TRUE(std::filesystem::exists(dir / name)) << name;
  }
  program_.reset();
  EXPECT_FALSE(std::filesystem::exists(dir));
}

TEST_F(CaptureProgramTest, ANewLoadReplacesStalePinsAndTheOldOneLeavesThemAlone) {
  auto second = CaptureProgram::load({bpffs_->pinRoot(), cgroup_->path(), kCapturePort});
  ASSERT_TRUE(second) << second.error().describe();
  auto pin = (*second)->pinDir() / "cv_enrolled";
  program_.reset();  // the first instance must not unpin the second's maps
  EXPECT_TRUE(std::filesystem::exists(pin));
  second->reset();
  EXPECT_FALSE(std::filesystem::exists(pin));
}

TEST_F(CaptureProgramTest, NetnsCookieDistinguishesNamespaces) {
  TestNetns other;
  ASSERT_TRUE(other.error().empty()) << other.error();
  UniqueFd a = pod_->socket(AF_INET, SOCK_STREAM);
  UniqueFd b = pod_->socket(AF_INET, SOCK_DGRAM);
  UniqueFd c = other.socket(AF_INET, SOCK_STREAM);
  EXPECT_NE(CaptureProgram::netnsCookie(a.get()), 0u);
  EXPECT_EQ(CaptureProgram::netnsCookie(a.get()), CaptureProgram::netnsCookie(b.get()));
  EXPECT_NE(CaptureProgram::netnsCookie(a.get()), CaptureProgram::netnsCookie(c.get()));
  EXPECT_EQ(CaptureProgram::netnsCookie(-1), 0u);
}

// Load errors name the missing piece (checked before anything privileged is tried).
TEST(CaptureProgramLoad, PinRootOffBpffsSaysHowToMountOne) {
  auto root = detectCgroup2Root();
  ASSERT_TRUE(root);
  auto p = CaptureProgram::load({"/tmp/culvert-not-bpffs", *root, kCapturePort});
  ASSERT_FALSE(p);
  EXPECT_NE(p.error().describe().find("mount -t bpf"), std::string::npos) << p.error().describe();
}

TEST(CaptureProgramLoad, NonCgroup2PathIsRejectedWithTheRealMountPoint) {
  auto root = detectCgroup2Root();
  ASSERT_TRUE(root);
  auto p = CaptureProgram::load({"/sys/fs/bpf/culvert-x", "/tmp", kCapturePort});
  ASSERT_FALSE(p);
  EXPECT_NE(p.error().describe().find("not a cgroup v2 directory"), std::string::npos) << p.error().describe();
  EXPECT_NE(p.error().describe().find(root->string()), std::string::npos) << p.error().describe();
}

}  // namespace
}  // namespace culvert::ebpf
