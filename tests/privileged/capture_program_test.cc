// The real capture programs (cgroup/connect4 + sockops) against real sockets: each test
// loads its own CaptureProgram, attached to its own child cgroup, pinned under its own
// bpffs root, with "pods" that are loopback-only network namespaces (DESIGN.md §7, §8).
#include <arpa/inet.h>
#include <bpf/bpf.h>
#include <errno.h>
#include <gtest/gtest.h>
#include <fcntl.h>
#include <poll.h>
#include <sched.h>
#include <sys/socket.h>
#include <sys/wait.h>

#include <algorithm>
#include <array>
#include <filesystem>
#include <memory>

#include "ebpf/include/culvert_bpf.h"
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

// An accepted connection's original-destination record, taken by the accepted socket's
// netns cookie and its peer (the worker has both without asking the socket).
std::optional<common::SocketAddress> takeRecord(CaptureProgram& program, int accepted_fd) {
  sockaddr_storage peer{};
  socklen_t len = sizeof peer;
  if (getpeername(accepted_fd, reinterpret_cast<sockaddr*>(&peer), &len) != 0) return std::nullopt;
  return program.takeOriginalDestination(CaptureProgram::netnsCookie(accepted_fd),
                                         common::SocketAddress::fromSockaddr(reinterpret_cast<sockaddr*>(&peer)));
}

// Records of this pod other than cv_enrolled's entry and its counters.
size_t recordsOf(const CaptureProgram& program, const TestNetns& pod) { return program.entriesForNetns(pod.cookie()) - 2; }

constexpr uint16_t kCapturePort = 15001;
constexpr const char* kVip = "10.96.0.10";  // a service VIP: never routed anywhere
constexpr uint16_t kVipPort = 80;

common::SocketAddress addr(const char* ip, uint16_t port) { return *common::SocketAddress::parse(ip, port); }

PodCaptureEntry podEntry(uint32_t tenant, FailMode mode) {
  PodCaptureEntry e;
  e.tenant_id = tenant;
  e.fail_mode = mode;
  return e;
}

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
    ASSERT_TRUE(program_->enrollPod(cookie, podEntry(3, mode)));
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
    auto orig = takeRecord(*program_, conn.get());
    // The record is consumed by the lookup.
    EXPECT_FALSE(takeRecord(*program_, conn.get()).has_value());
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
  // cgroup/getpeername4: the app sees the VIP it dialled, not the in-pod listener.
  EXPECT_EQ(r.peer_string, "10.96.0.10:80");
  EXPECT_TRUE(r.sent);

  auto orig = acceptCaptured(listener.get());
  ASSERT_TRUE(orig.has_value()) << "no original destination recorded";
  EXPECT_EQ(orig->toString(), "10.96.0.10:80");

  Counters c = program_->counters();
  EXPECT_EQ(c.captured, 1u);
  EXPECT_EQ(c.rekeyed, 1u);
  EXPECT_EQ(c.refused + c.fail_open + c.record_failed + c.rekey_failed, 0u);
}

// What the worker does: the record keyed by the pod's netns cookie (the in-pod listener's
// netns is the pod's) and the client address accept4 returned, with no call on the socket.
TEST_F(CaptureProgramTest, OriginalDestinationByPodCookieAndAcceptedPeer) {
  enroll(*pod_, FailMode::Open);
  UniqueFd listener = taggedListener(*pod_);
  ASSERT_TRUE(listener);
  ConnectResult r = connectVip(*pod_);
  ASSERT_EQ(r.error, 0) << describe(r);
  UniqueFd conn = acceptWithin(listener.get(), 5000);
  ASSERT_TRUE(conn);
  sockaddr_storage peer{};
  socklen_t len = sizeof peer;
  ASSERT_EQ(getpeername(conn.get(), reinterpret_cast<sockaddr*>(&peer), &len), 0);
  auto client = common::SocketAddress::fromSockaddr(reinterpret_cast<sockaddr*>(&peer));
  auto orig = program_->takeOriginalDestination(pod_->cookie(), client);
  ASSERT_TRUE(orig.has_value()) << "no record for " << client.toString();
  EXPECT_EQ(orig->toString(), "10.96.0.10:80");
  EXPECT_FALSE(program_->takeOriginalDestination(pod_->cookie(), client).has_value());  // consumed
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

TEST_F(CaptureProgramTest, AFailModeChangedInPlaceTakesEffectAtTheNextConnect) {
  enroll(*pod_, FailMode::Closed);
  EXPECT_EQ(connectVip(*pod_).error, ECONNREFUSED);
  ASSERT_TRUE(program_->setPodFailMode(pod_->cookie(), FailMode::Open));
  EXPECT_EQ(connectVip(*pod_).error, ENETUNREACH);  // untouched now
  auto entry = program_->enrolledPod(pod_->cookie());
  ASSERT_TRUE(entry.has_value());
  EXPECT_EQ(entry->fail_mode, FailMode::Open);
  EXPECT_EQ(entry->tenant_id, 3u);  // the rest of the entry is kept
  ASSERT_TRUE(program_->setPodFailMode(pod_->cookie(), FailMode::Closed));
  EXPECT_EQ(connectVip(*pod_).error, ECONNREFUSED);

  // A pod that left is not enrolled again by it.
  TestNetns other;
  auto set = program_->setPodFailMode(other.cookie(), FailMode::Closed);
  ASSERT_FALSE(set);
  EXPECT_NE(set.error().message.find("not enrolled"), std::string::npos) << set.error().describe();
  EXPECT_FALSE(program_->enrolledPod(other.cookie()).has_value());
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

  auto bad = program_->setCapturedDestinations({addr("10.96.0.30", 80), addr("fd00::1", 0)});
  ASSERT_FALSE(bad);
  EXPECT_NE(bad.error().message.find("port"), std::string::npos);
  // Rejected as a whole: the previous set is intact.
  EXPECT_EQ(connectVip(*pod_, "10.96.0.20", 443).error, ECONNREFUSED);
  EXPECT_EQ(connectVip(*pod_, "10.96.0.30", 80).error, ENETUNREACH);

  // IPv6 and IPv4 entries in one set; a v4-mapped entry is the IPv4 destination.
  ASSERT_TRUE(program_->setCapturedDestinations({addr("fd00:96::20", 443), addr("::ffff:10.96.0.40", 80)}));
  EXPECT_EQ(connectVip(*pod_, "fd00:96::20", 443).error, ECONNREFUSED);
  EXPECT_EQ(connectVip(*pod_, "10.96.0.40", 80).error, ECONNREFUSED);
  EXPECT_EQ(connectVip(*pod_, "10.96.0.20", 443).error, ENETUNREACH);
}

// Programs attached to the test cgroup for one hook (this cgroup's own list).
std::vector<uint32_t> attachedIds(const std::filesystem::path& cgroup, bpf_attach_type type) {
  UniqueFd cg(open(cgroup.c_str(), O_RDONLY | O_DIRECTORY | O_CLOEXEC));
  std::array<uint32_t, 16> ids{};
  uint32_t count = ids.size();
  uint32_t flags = 0;
  if (!cg || bpf_prog_query(cg.get(), type, 0, &flags, ids.data(), &count) != 0) return {};
  return {ids.begin(), ids.begin() + count};
}

constexpr bpf_attach_type kHooks[] = {BPF_CGROUP_INET4_CONNECT, BPF_CGROUP_INET6_CONNECT, BPF_CGROUP_INET4_GETPEERNAME,
                                      BPF_CGROUP_INET6_GETPEERNAME, BPF_CGROUP_SOCK_OPS};

TEST_F(CaptureProgramTest, MapsAndLinksArePinnedUnderTheLayoutVersionAndOutliveTheProcess) {
  EXPECT_EQ(program_->cgroupPath(), cgroup_->path());
  EXPECT_FALSE(program_->adoptedPins());
  auto dir = program_->pinDir();
  EXPECT_EQ(dir, bpffs_->pinRoot() / ("v" + std::to_string(CV_LAYOUT_VERSION)));
  for (const char* name : {"cv_enrolled", "cv_captured", "cv_captured6", "cv_captured_prefix", "cv_sock_tag", "cv_sock_dst", "cv_orig_dst",
                           "cv_excluded_ports", "cv_excluded_cidrs", "cv_config", "cv_counters", "cv_pod_counters", "cv_tenant_scope",
                           "link_cv_connect4", "link_cv_connect6", "link_cv_getpeername4", "link_cv_getpeername6",
                           "link_cv_sockops"}) {
    EXPECT_TRUE(std::filesystem::exists(dir / name)) << name;
  }
  // A crash (the object goes away without uninstall): capture keeps working.
  enroll(*pod_, FailMode::Closed);
  program_.reset();
  EXPECT_TRUE(std::filesystem::exists(dir / "cv_enrolled"));
  EXPECT_EQ(connectVip(*pod_).error, ECONNREFUSED) << "programs detached with the process";
  for (auto hook : kHooks) EXPECT_EQ(attachedIds(cgroup_->path(), hook).size(), 1u) << hook;

  auto removed = CaptureProgram::uninstall(bpffs_->pinRoot());
  ASSERT_TRUE(removed) << removed.error().describe();
  EXPECT_NE(removed->find("detached " + std::to_string(std::size(kHooks)) + " links"), std::string::npos) << *removed;
  EXPECT_FALSE(std::filesystem::exists(dir));
  for (auto hook : kHooks) EXPECT_TRUE(attachedIds(cgroup_->path(), hook).empty()) << hook;
  EXPECT_EQ(connectVip(*pod_).error, ENETUNREACH);  // nothing captures any more
}

TEST_F(CaptureProgramTest, ARestartAdoptsPinsWithoutADuplicateAttachmentOrLostEnrollment) {
  enroll(*pod_, FailMode::Closed);
  ASSERT_TRUE(program_->setCapturedDestinations({addr(kVip, kVipPort), addr("fd00:96::10", 80)}));
  auto before = attachedIds(cgroup_->path(), BPF_CGROUP_INET4_CONNECT);
  ASSERT_EQ(before.size(), 1u);
  program_.reset();  // kill -9: nothing cleaned up

  auto again = CaptureProgram::load({bpffs_->pinRoot(), cgroup_->path(), kCapturePort});
  ASSERT_TRUE(again) << again.error().describe();
  program_ = std::move(*again);
  EXPECT_TRUE(program_->adoptedPins());
  EXPECT_EQ(program_->adoptedLinks(), static_cast<int>(std::size(kHooks)));
  for (auto hook : kHooks) EXPECT_EQ(attachedIds(cgroup_->path(), hook).size(), 1u) << "hook " << hook;
  // The link now runs the new program.
  EXPECT_NE(attachedIds(cgroup_->path(), BPF_CGROUP_INET4_CONNECT), before);
  EXPECT_EQ(program_->enrolledNetnsCookies(), std::vector<uint64_t>{pod_->cookie()});
  EXPECT_TRUE(program_->attachReport().empty()) << program_->attachReport();

  // Enrollment and captured destinations survived: capture works through the new program.
  UniqueFd listener = taggedListener(*pod_);
  ASSERT_TRUE(listener);
  ConnectResult r = connectVip(*pod_);
  ASSERT_EQ(r.error, 0) << describe(r);
  auto orig = acceptCaptured(listener.get());
  ASSERT_TRUE(orig.has_value());
  EXPECT_EQ(orig->toString(), "10.96.0.10:80");
  EXPECT_EQ(connectVip(*pod_, "fd00:96::10", 80).error, ECONNREFUSED);  // no ::1 listener: fail closed
}

TEST_F(CaptureProgramTest, PinsOfAnotherLayoutVersionAreRefusedClearly) {
  program_.reset();
  ASSERT_TRUE(CaptureProgram::uninstall(bpffs_->pinRoot()));
  auto old_dir = bpffs_->pinRoot() / ("v" + std::to_string(CV_LAYOUT_VERSION - 1));  // the layout before
  ASSERT_TRUE(std::filesystem::create_directories(old_dir));
  // Any bpffs object will do as an "old pin": an array map.
  int fd = bpf_map_create(BPF_MAP_TYPE_ARRAY, "cv_old", 4, 4, 1, nullptr);
  ASSERT_GE(fd, 0);
  ASSERT_EQ(bpf_obj_pin(fd, (old_dir / "cv_enrolled").c_str()), 0);
  close(fd);
  auto p = CaptureProgram::load({bpffs_->pinRoot(), cgroup_->path(), kCapturePort});
  ASSERT_FALSE(p);
  EXPECT_NE(p.error().describe().find("layout version " + std::to_string(CV_LAYOUT_VERSION - 1)), std::string::npos)
      << p.error().describe();
  EXPECT_NE(p.error().describe().find("culvertd uninstall"), std::string::npos) << p.error().describe();
  EXPECT_TRUE(attachedIds(cgroup_->path(), BPF_CGROUP_INET4_CONNECT).empty());
  ASSERT_TRUE(CaptureProgram::uninstall(bpffs_->pinRoot()));
  EXPECT_FALSE(std::filesystem::exists(old_dir));
}

TEST_F(CaptureProgramTest, AnotherProgramOnConnect4IsReportedWithTheOrder) {
  // A second, independent instance (its own pin root) on the same cgroup stands in for
  // another product's connect4 program (e.g. Cilium's socket LB).
  BpffsRoot other_root;
  ASSERT_TRUE(other_root.error().empty());
  auto other = CaptureProgram::load({other_root.pinRoot(), cgroup_->path(), kCapturePort});
  ASSERT_TRUE(other) << other.error().describe();
  const auto& report = (*other)->attachReport();
  EXPECT_NE(report.find("cgroup/connect4 runs 2 programs"), std::string::npos) << report;
  EXPECT_NE(report.find("1. cv_connect4"), std::string::npos) << report;
  EXPECT_NE(report.find("2. cv_connect4"), std::string::npos) << report;
  EXPECT_NE(report.find("[culvert]"), std::string::npos) << report;
  (void)CaptureProgram::uninstall(other_root.pinRoot());
}

// Another product's connect4 program (Cilium's socket LB's place): a plain program
// attached with BPF_F_ALLOW_MULTI before culvert loads; detached when the test ends.
class ForeignConnect4 {
public:
  explicit ForeignConnect4(const std::filesystem::path& cgroup) {
    // r0 = 1 (let the connect proceed); exit.
    bpf_insn insns[2] = {};
    insns[0].code = BPF_ALU64 | BPF_MOV | BPF_K;
    insns[0].dst_reg = BPF_REG_0;
    insns[0].imm = 1;
    insns[1].code = BPF_JMP | BPF_EXIT;
    LIBBPF_OPTS(bpf_prog_load_opts, opts, .expected_attach_type = BPF_CGROUP_INET4_CONNECT);
    prog_ = bpf_prog_load(BPF_PROG_TYPE_CGROUP_SOCK_ADDR, "lb_connect4", "GPL", insns, 2, &opts);
    cg_ = open(cgroup.c_str(), O_RDONLY | O_DIRECTORY | O_CLOEXEC);
    attached_ = prog_ >= 0 && cg_ >= 0 &&
                bpf_prog_attach(prog_, cg_, BPF_CGROUP_INET4_CONNECT, BPF_F_ALLOW_MULTI) == 0;
  }
  ~ForeignConnect4() {
    if (attached_) bpf_prog_detach2(prog_, cg_, BPF_CGROUP_INET4_CONNECT);
    if (prog_ >= 0) close(prog_);
    if (cg_ >= 0) close(cg_);
  }
  bool attached() const { return attached_; }

private:
  int prog_ = -1;
  int cg_ = -1;
  bool attached_ = false;
};

TEST_F(CaptureProgramTest, AForeignConnect4ProgramIsNamedInTheReportAndCaptureStillWorks) {
  program_.reset();  // culvert loads after the other product, as on a Cilium node
  (void)CaptureProgram::uninstall(bpffs_->pinRoot());
  ForeignConnect4 foreign(cgroup_->path());
  ASSERT_TRUE(foreign.attached()) << strerror(errno);
  auto loaded = CaptureProgram::load({bpffs_->pinRoot(), cgroup_->path(), kCapturePort});
  ASSERT_TRUE(loaded) << loaded.error().describe();
  program_ = std::move(*loaded);
  ASSERT_TRUE(program_->setCapturedDestinations({addr(kVip, kVipPort)}));
  const auto& report = program_->attachReport();
  auto theirs = report.find(". lb_connect4");
  auto ours = report.find(". cv_connect4");
  EXPECT_NE(report.find("cgroup/connect4 runs 2 programs"), std::string::npos) << report;
  ASSERT_NE(theirs, std::string::npos) << report;
  ASSERT_NE(ours, std::string::npos) << report;
  EXPECT_NE(report.find("[culvert]", ours), std::string::npos) << report;
  EXPECT_EQ(report.find("[culvert]"), report.find("[culvert]", ours)) << "only culvert's is marked: " << report;
  EXPECT_LT(theirs, ours) << "attached first, runs first: " << report;

  // Both run; a pass-through program before culvert's leaves capture intact.
  enroll(*pod_, FailMode::Open);
  UniqueFd listener = taggedListener(*pod_);
  ASSERT_TRUE(listener);
  ConnectResult r = connectVip(*pod_);
  ASSERT_EQ(r.error, 0) << describe(r);
  auto orig = acceptCaptured(listener.get());
  ASSERT_TRUE(orig.has_value());
  EXPECT_EQ(orig->toString(), "10.96.0.10:80");
}

TEST(CaptureProgramKernel, ThisKernelHasEveryFeature) {
  CULVERT_REQUIRE_ROOT();
  auto missing = CaptureProgram::missingKernelFeatures();
  std::string list;
  for (const auto& m : missing) list += m + "; ";
  EXPECT_TRUE(missing.empty()) << list;
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


// ---- IPv6 and IPv4-mapped ---------------------------------------------------------

TEST_F(CaptureProgramTest, Ipv6VipLandsOnTheIpv6ListenerAndGetpeernameShowsTheVip) {
  ASSERT_TRUE(program_->setCapturedDestinations({addr("fd00:96::10", 80)}));
  enroll(*pod_, FailMode::Closed);
  UniqueFd listener6 = culvert::testing::listenOn(*pod_, "::1", kCapturePort,
                                                  [this](int fd) { ASSERT_TRUE(program_->tagSocket(fd)); });
  ASSERT_TRUE(listener6) << "no ::1 in the test netns";

  ConnectResult r = connectVip(*pod_, "fd00:96::10", 80);
  ASSERT_EQ(r.error, 0) << describe(r);
  EXPECT_EQ(r.peer_string, "[fd00:96::10]:80");
  auto orig = acceptCaptured(listener6.get());
  ASSERT_TRUE(orig.has_value());
  EXPECT_EQ(orig->toString(), "[fd00:96::10]:80");
  EXPECT_EQ(program_->counters().captured, 1u);
}

TEST_F(CaptureProgramTest, Ipv6FailClosedRefusesWithoutTheIpv6Listener) {
  ASSERT_TRUE(program_->setCapturedDestinations({addr("fd00:96::10", 80)}));
  enroll(*pod_, FailMode::Closed);
  UniqueFd listener4 = taggedListener(*pod_);  // only the IPv4 group: IPv6 is not live
  ASSERT_TRUE(listener4);
  EXPECT_EQ(connectVip(*pod_, "fd00:96::10", 80).error, ECONNREFUSED);
  EXPECT_FALSE(acceptWithin(listener4.get(), 0));
}

TEST_F(CaptureProgramTest, DualStackSocketToMappedVipLandsOnTheIpv4Listener) {
  enroll(*pod_, FailMode::Closed);
  UniqueFd listener = taggedListener(*pod_);
  ASSERT_TRUE(listener);

  ConnectResult r = connectVip(*pod_, "::ffff:10.96.0.10", kVipPort);
  ASSERT_EQ(r.error, 0) << describe(r);
  EXPECT_EQ(r.peer_string, "[::ffff:10.96.0.10]:80");
  auto orig = acceptCaptured(listener.get());
  ASSERT_TRUE(orig.has_value());
  EXPECT_EQ(orig->toString(), "10.96.0.10:80");
}

TEST_F(CaptureProgramTest, APrefixSelectorCapturesOnlyItsPrefixOnThatPort) {
  CapturedPrefix v4{*common::CidrRange::parse("10.100.0.0", 16), 443, {}};
  CapturedPrefix v6{*common::CidrRange::parse("fd00:100::", 32), 443, {}};
  ASSERT_TRUE(program_->setCapturedDestinations({}, {v4, v6}));
  enroll(*pod_, FailMode::Closed);  // captured + no listener = ECONNREFUSED
  EXPECT_EQ(connectVip(*pod_, "10.100.3.4", 443).error, ECONNREFUSED);
  EXPECT_EQ(connectVip(*pod_, "fd00:100::4", 443).error, ECONNREFUSED);
  EXPECT_EQ(connectVip(*pod_, "10.101.3.4", 443).error, ENETUNREACH);
  EXPECT_EQ(connectVip(*pod_, "10.100.3.4", 80).error, ENETUNREACH);
  EXPECT_EQ(connectVip(*pod_, kVip, kVipPort).error, ENETUNREACH);  // the previous set is gone
  // Replacing the set removes stale prefixes.
  ASSERT_TRUE(program_->setCapturedDestinations({addr(kVip, kVipPort)}));
  EXPECT_EQ(connectVip(*pod_, "10.100.3.4", 443).error, ENETUNREACH);
  EXPECT_EQ(connectVip(*pod_, kVip, kVipPort).error, ECONNREFUSED);
}

// ---- never captured ---------------------------------------------------------------

TEST_F(CaptureProgramTest, ARestrictedTenantIsCapturedOnlyWhereItsSlotIsSet) {
  TenantScope slot5;
  slot5.set(5);
  ASSERT_TRUE(program_->setCapturedDestinations({{addr(kVip, kVipPort), slot5}, addr("10.96.0.11", 80)}));
  ASSERT_TRUE(program_->setTenantScopeSlot(3, 5));  // the pod's tenant (podEntry(3, ...))
  EXPECT_EQ(program_->tenantScopeSlots(), (std::map<uint32_t, uint32_t>{{3, 5}}));
  enroll(*pod_, FailMode::Closed);  // captured + no listener = ECONNREFUSED: a cheap probe
  EXPECT_EQ(connectVip(*pod_).error, ECONNREFUSED);
  ConnectResult out = connectVip(*pod_, "10.96.0.11", 80);
  EXPECT_EQ(out.error, ENETUNREACH) << describe(out);  // out of scope: untouched
  EXPECT_EQ(program_->counters().out_of_scope, 1u);
  EXPECT_EQ(program_->podCounters(pod_->cookie()).out_of_scope, 1u);

  // The entries' tenant sets are rewritten in place: the scope flips.
  ASSERT_TRUE(program_->setCapturedDestinations({addr(kVip, kVipPort), {addr("10.96.0.11", 80), slot5}}));
  EXPECT_EQ(connectVip(*pod_).error, ENETUNREACH);
  EXPECT_EQ(connectVip(*pod_, "10.96.0.11", 80).error, ECONNREFUSED);

  // Unrestricted again: every captured destination.
  ASSERT_TRUE(program_->clearTenantScopeSlot(3));
  ASSERT_TRUE(program_->clearTenantScopeSlot(3));  // not restricted is not an error
  EXPECT_TRUE(program_->tenantScopeSlots().empty());
  EXPECT_EQ(connectVip(*pod_).error, ECONNREFUSED);
  EXPECT_FALSE(program_->setTenantScopeSlot(3, CV_MAX_SCOPED_TENANTS));
}

TEST_F(CaptureProgramTest, UdpIsNeverCaptured) {
  enroll(*pod_, FailMode::Closed);
  UniqueFd listener = taggedListener(*pod_);
  ASSERT_TRUE(listener);
  culvert::testing::ConnectOptions udp;
  udp.type = SOCK_DGRAM;
  ConnectResult r = connectFromChild(cgroup_->path(), *pod_, kVip, kVipPort, {}, udp);
  EXPECT_EQ(r.error, ENETUNREACH) << describe(r);  // untouched: no route to the VIP
  Counters c = program_->counters();
  EXPECT_EQ(c.captured + c.refused + c.passthrough, 0u);
}

TEST_F(CaptureProgramTest, HostNetnsIsNeverCapturedEvenWhenItsDestinationIs) {
  // The test's own (host) netns is in the cgroup's reach but never enrolled: a connect
  // from it to a captured loopback destination reaches that destination directly.
  UniqueFd target(::socket(AF_INET, SOCK_STREAM | SOCK_CLOEXEC, 0));
  sockaddr_in a{};
  a.sin_family = AF_INET;
  a.sin_addr.s_addr = htonl(INADDR_LOOPBACK);
  ASSERT_EQ(bind(target.get(), reinterpret_cast<sockaddr*>(&a), sizeof a), 0);
  ASSERT_EQ(listen(target.get(), 4), 0);
  socklen_t len = sizeof a;
  getsockname(target.get(), reinterpret_cast<sockaddr*>(&a), &len);
  uint16_t port = ntohs(a.sin_port);
  ASSERT_TRUE(program_->setCapturedDestinations({addr("127.0.0.1", port)}));
  enroll(*pod_, FailMode::Closed);

  ConnectResult r = connectFromChild(cgroup_->path(), *pod_, "127.0.0.1", port);
  // From the enrolled pod it is captured (fail closed: no listener in the pod).
  EXPECT_EQ(r.error, ECONNREFUSED) << describe(r);

  // From the host netns: untouched.
  int procs_ok = 0;
  pid_t pid = fork();
  if (pid == 0) {
    auto procs = cgroup_->path() / "cgroup.procs";
    FILE* f = fopen(procs.c_str(), "w");
    if (f == nullptr || fputs("0", f) < 0 || fclose(f) != 0) _exit(2);
    int s = ::socket(AF_INET, SOCK_STREAM, 0);
    _exit(connect(s, reinterpret_cast<sockaddr*>(&a), sizeof a) == 0 ? 0 : 1);
  }
  ASSERT_GT(pid, 0);
  waitpid(pid, &procs_ok, 0);
  EXPECT_TRUE(WIFEXITED(procs_ok) && WEXITSTATUS(procs_ok) == 0) << "host connect failed";
  EXPECT_TRUE(acceptWithin(target.get(), 2000));
}

TEST_F(CaptureProgramTest, ExcludedPortsAndCidrsGlobalAndPerPodAreNotCaptured) {
  ASSERT_TRUE(program_->setCapturedDestinations({addr("0.0.0.0", 8080), addr("0.0.0.0", 9090),
                                                 addr("0.0.0.0", 7070), addr("::", 7070)}));
  auto cidr = [](const char* ip, uint32_t len) { return *common::CidrRange::parse(ip, len); };
  ASSERT_TRUE(program_->setGlobalExclusions({8080}, {cidr("10.200.0.0", 16)}));
  PodCaptureEntry entry = podEntry(3, FailMode::Closed);
  entry.exclude_ports = {9090};
  entry.exclude_cidrs = {cidr("10.201.0.0", 16), cidr("fd00:201::", 32)};
  ASSERT_TRUE(program_->enrollPod(pod_->cookie(), entry));
  // Fail closed with no listener: captured = ECONNREFUSED, not captured = ENETUNREACH.
  EXPECT_EQ(connectVip(*pod_, "10.96.1.1", 8080).error, ENETUNREACH);   // global port
  EXPECT_EQ(connectVip(*pod_, "10.96.1.1", 9090).error, ENETUNREACH);   // pod port
  EXPECT_EQ(connectVip(*pod_, "10.200.1.1", 7070).error, ENETUNREACH);  // global CIDR
  EXPECT_EQ(connectVip(*pod_, "10.201.1.1", 7070).error, ENETUNREACH);  // pod CIDR
  EXPECT_EQ(connectVip(*pod_, "fd00:201::1", 7070).error, ENETUNREACH); // pod CIDR, IPv6
  EXPECT_EQ(connectVip(*pod_, "10.202.1.1", 7070).error, ECONNREFUSED);  // captured
  EXPECT_EQ(connectVip(*pod_, "fd00:202::1", 7070).error, ECONNREFUSED); // captured
  EXPECT_EQ(program_->counters().excluded, 5u);
  EXPECT_EQ(program_->podCounters(pod_->cookie()).excluded, 5u);
  EXPECT_EQ(program_->podCounters(pod_->cookie()).refused, 2u);

  // Another pod has none of this pod's exclusions.
  TestNetns other;
  ASSERT_TRUE(other.onlyLoopback());
  ASSERT_TRUE(program_->enrollPod(other.cookie(), podEntry(4, FailMode::Closed)));
  EXPECT_EQ(connectVip(other, "10.96.1.1", 9090).error, ECONNREFUSED);
  EXPECT_EQ(connectVip(other, "10.96.1.1", 8080).error, ENETUNREACH);  // global still applies

  // Unenroll removes the pod's exclusions and counters, not the global ones.
  ASSERT_TRUE(program_->unenrollPod(pod_->cookie()));
  EXPECT_EQ(program_->entriesForNetns(pod_->cookie()), 0u);
  EXPECT_GT(program_->entriesForNetns(0), 0u);
}

TEST_F(CaptureProgramTest, ThePodsOwnAddressIsNotCapturedByAWildcard) {
  ASSERT_TRUE(culvert::testing::addAddress(*pod_, "10.244.0.5/32"));
  ASSERT_TRUE(program_->setCapturedDestinations({addr("0.0.0.0", 8080)}));
  PodCaptureEntry entry = podEntry(3, FailMode::Open);
  entry.exclude_cidrs = {*common::CidrRange::parse("10.244.0.5", 32)};
  ASSERT_TRUE(program_->enrollPod(pod_->cookie(), entry));
  UniqueFd capture = taggedListener(*pod_);
  UniqueFd app = culvert::testing::listenOn(*pod_, "10.244.0.5", 8080);
  ASSERT_TRUE(capture);
  ASSERT_TRUE(app);
  ConnectResult r = connectVip(*pod_, "10.244.0.5", 8080);
  ASSERT_EQ(r.error, 0) << describe(r);
  EXPECT_TRUE(acceptWithin(app.get(), 2000)) << "the pod's own service did not get the connection";
  EXPECT_FALSE(acceptWithin(capture.get(), 0));
}

TEST_F(CaptureProgramTest, BypassLeavesEveryConnectUntouched) {
  enroll(*pod_, FailMode::Closed);
  ASSERT_FALSE(program_->bypass());
  ASSERT_TRUE(program_->setBypass(true));
  EXPECT_TRUE(program_->bypass());
  EXPECT_EQ(connectVip(*pod_).error, ENETUNREACH);
  ASSERT_TRUE(program_->setBypass(false));
  EXPECT_EQ(connectVip(*pod_).error, ECONNREFUSED);
}

// ---- enrolled cookies, original-destination cleanup --------------------------------

TEST_F(CaptureProgramTest, EnrolledCookiesCanBeListedAndPurged) {
  TestNetns other;
  enroll(*pod_, FailMode::Closed);
  enroll(other, FailMode::Open);
  auto cookies = program_->enrolledNetnsCookies();
  std::vector<uint64_t> expected{pod_->cookie(), other.cookie()};
  std::sort(expected.begin(), expected.end());
  EXPECT_EQ(cookies, expected);
  auto entry = program_->enrolledPod(pod_->cookie());
  ASSERT_TRUE(entry.has_value());
  EXPECT_EQ(entry->fail_mode, FailMode::Closed);
  EXPECT_EQ(entry->tenant_id, 3u);
  ASSERT_TRUE(program_->unenrollPod(other.cookie()));
  EXPECT_EQ(program_->enrolledNetnsCookies(), std::vector<uint64_t>{pod_->cookie()});
  EXPECT_FALSE(program_->enrolledPod(other.cookie()).has_value());
}

TEST_F(CaptureProgramTest, AnAbortedUnacceptedConnectionLeavesNoRecordWithinOneSecond) {
  enroll(*pod_, FailMode::Open);
  UniqueFd listener = taggedListener(*pod_);
  ASSERT_TRUE(listener);
  // The client connects (the SYN completes against the backlog) and then aborts with
  // RST (SO_LINGER 0) before the proxy ever accepts.
  ConnectResult r = connectFromChild(cgroup_->path(), *pod_, kVip, kVipPort, [](int fd) {
    linger l{1, 0};
    setsockopt(fd, SOL_SOCKET, SO_LINGER, &l, sizeof l);
  });
  ASSERT_EQ(r.error, 0) << describe(r);
  EXPECT_EQ(program_->counters().rekeyed, 1u);
  size_t left = 1;
  for (int i = 0; i < 100 && left != 0; ++i) {
    left = recordsOf(*program_, *pod_);
    if (left != 0) usleep(10000);
  }
  EXPECT_EQ(left, 0u) << "cv_orig_dst still holds the aborted connection's record after 1 s";
}

TEST_F(CaptureProgramTest, AClientThatClosedBeforeTheAcceptStillGetsItsDestination) {
  enroll(*pod_, FailMode::Open);
  UniqueFd listener = taggedListener(*pod_);
  ASSERT_TRUE(listener);
  // The client connects, sends and closes with a FIN before the proxy accepts. The
  // kernel turns the orphaned FIN_WAIT2 socket into a timewait one at once, which the
  // close callback sees as a transition to CLOSE: only aborts may delete the record,
  // or this connection's request would reach the proxy with no destination.
  ConnectResult r = connectVip(*pod_);
  ASSERT_EQ(r.error, 0) << describe(r);
  usleep(50000);
  ASSERT_EQ(recordsOf(*program_, *pod_), 1u) << "a queued connection keeps its record";
  auto orig = acceptCaptured(listener.get());
  ASSERT_TRUE(orig.has_value());
  EXPECT_EQ(orig->toString(), "10.96.0.10:80");
}

TEST_F(CaptureProgramTest, UnenrollingAPodDeletesTheRecordsOfItsUnacceptedConnections) {
  enroll(*pod_, FailMode::Open);
  UniqueFd listener = taggedListener(*pod_);
  ASSERT_TRUE(listener);
  for (int i = 0; i < 3; ++i) {
    ConnectResult r = connectVip(*pod_);
    ASSERT_EQ(r.error, 0) << describe(r);
  }
  usleep(50000);
  ASSERT_EQ(recordsOf(*program_, *pod_), 3u);
  ASSERT_TRUE(program_->unenrollPod(pod_->cookie()));
  EXPECT_EQ(program_->entriesForNetns(pod_->cookie()), 0u) << "the pod's DEL leaves map entries behind";
}

// A pod's VIPs for the multi-connection tests, by family: "10.96.<net>.<host>" or
// "fd00:96:<net>::<host>".
std::string vipOf(int family, int net, int host) {
  return family == AF_INET ? "10.96." + std::to_string(net) + "." + std::to_string(host)
                           : "fd00:96:" + std::to_string(net) + "::" + std::to_string(host);
}

// Runs in a forked child: joins the cgroup and the pod's netns, or exits.
void enterPod(const std::filesystem::path& cgroup, const TestNetns& pod) {
  auto procs = cgroup / "cgroup.procs";
  int cg = open(procs.c_str(), O_WRONLY);
  if (cg < 0 || write(cg, "0", 1) != 1) _exit(2);
  if (setns(pod.fd(), CLONE_NEWNET) != 0) _exit(3);
}

class CaptureProgramFamilyTest : public CaptureProgramTest {
protected:
  // The family's tagged in-pod listener (127.0.0.1 or ::1).
  UniqueFd taggedListenerOf(int family) {
    if (family == AF_INET) return taggedListener(*pod_);
    return culvert::testing::listenOn(*pod_, "::1", kCapturePort,
                                      [this](int fd) { ASSERT_TRUE(program_->tagSocket(fd)); });
  }

  // kN children connect at once, each to its own VIP, and hold the connection open until
  // the parent has accepted everything: each record must be its connection's own.
  void concurrentConnectsEachGetTheirOwnDestination(int family) {
    constexpr int kN = 50;
    std::vector<CapturedDestination> dsts;
    for (int i = 0; i < kN; ++i) dsts.push_back(addr(vipOf(family, 1, i + 1).c_str(), 80));
    ASSERT_TRUE(program_->setCapturedDestinations(dsts));
    enroll(*pod_, FailMode::Closed);
    UniqueFd listener = taggedListenerOf(family);
    ASSERT_TRUE(listener);

    int go[2];
    ASSERT_EQ(pipe2(go, O_CLOEXEC), 0);
    std::vector<pid_t> pids;
    for (int i = 0; i < kN; ++i) {
      auto vip = addr(vipOf(family, 1, i + 1).c_str(), 80);
      pid_t pid = fork();
      if (pid == 0) {
        enterPod(cgroup_->path(), *pod_);
        close(go[1]);
        char b;
        (void)read(go[0], &b, 1);  // wait for the start signal (EOF)
        int s = ::socket(family, SOCK_STREAM, 0);
        if (connect(s, vip.sockaddr_ptr(), vip.length()) != 0) _exit(4);
        uint8_t id = static_cast<uint8_t>(i + 1);
        if (send(s, &id, 1, 0) != 1) _exit(5);
        (void)read(s, &b, 1);  // until the parent closes
        _exit(0);
      }
      ASSERT_GT(pid, 0);
      pids.push_back(pid);
    }
    close(go[0]);
    close(go[1]);  // everyone starts
    std::vector<UniqueFd> conns;
    int matched = 0;
    for (int i = 0; i < kN; ++i) {
      UniqueFd c = acceptWithin(listener.get(), 5000);
      if (!c) break;
      uint8_t id = 0;
      pollfd p{c.get(), POLLIN, 0};
      if (poll(&p, 1, 5000) != 1 || recv(c.get(), &id, 1, 0) != 1) continue;
      auto orig = takeRecord(*program_, c.get());
      if (orig && *orig == addr(vipOf(family, 1, id).c_str(), 80)) ++matched;
      conns.push_back(std::move(c));
    }
    conns.clear();
    for (pid_t pid : pids) {
      int status = 0;
      waitpid(pid, &status, 0);
      EXPECT_TRUE(WIFEXITED(status) && WEXITSTATUS(status) == 0) << "child exit " << status;
    }
    EXPECT_EQ(matched, kN);
    EXPECT_EQ(program_->counters().captured, static_cast<uint64_t>(kN));
    // Every record was taken on accept: only cv_enrolled and the pod's counters are left,
    // and unenrolling removes those too.
    EXPECT_EQ(program_->entriesForNetns(pod_->cookie()), 2u);
    ASSERT_TRUE(program_->unenrollPod(pod_->cookie()));
    EXPECT_EQ(program_->entriesForNetns(pod_->cookie()), 0u);
  }

  // One client reuses the same source port at once for alternating VIPs: each
  // connection's record must be its own, never the previous one's.
  void rapidPortReuseGetsTheNewDestination(int family) {
    const std::string vips[2] = {vipOf(family, 2, 1), vipOf(family, 2, 2)};
    constexpr int kRounds = 8;
    ASSERT_TRUE(program_->setCapturedDestinations({addr(vips[0].c_str(), 80), addr(vips[1].c_str(), 80)}));
    enroll(*pod_, FailMode::Closed);
    UniqueFd listener = taggedListenerOf(family);
    ASSERT_TRUE(listener);
    const auto source = addr(family == AF_INET ? "127.0.0.1" : "::1", 40123);
    const common::SocketAddress dst[2] = {addr(vips[0].c_str(), 80), addr(vips[1].c_str(), 80)};
    pid_t pid = fork();
    if (pid == 0) {
      enterPod(cgroup_->path(), *pod_);
      for (int round = 0; round < kRounds; ++round) {
        int s = ::socket(family, SOCK_STREAM, 0);
        int one = 1;
        setsockopt(s, SOL_SOCKET, SO_REUSEADDR, &one, sizeof one);
        if (bind(s, source.sockaddr_ptr(), source.length()) != 0) _exit(10 + round);
        if (connect(s, dst[round % 2].sockaddr_ptr(), dst[round % 2].length()) != 0) _exit(30 + round);
        uint8_t id = static_cast<uint8_t>(round);
        if (send(s, &id, 1, 0) != 1) _exit(50 + round);
        char b;
        (void)read(s, &b, 1);  // until the proxy side closes
        linger l{1, 0};        // then RST: no TIME_WAIT, the port is free at once
        setsockopt(s, SOL_SOCKET, SO_LINGER, &l, sizeof l);
        close(s);
      }
      _exit(0);
    }
    ASSERT_GT(pid, 0);
    int ok = 0;
    for (int round = 0; round < kRounds; ++round) {
      UniqueFd c = acceptWithin(listener.get(), 5000);
      if (!c) break;
      uint8_t id = 255;
      pollfd p{c.get(), POLLIN, 0};
      if (poll(&p, 1, 5000) != 1 || recv(c.get(), &id, 1, 0) != 1) break;
      auto orig = takeRecord(*program_, c.get());
      EXPECT_TRUE(orig.has_value()) << "round " << round;
      if (orig && id < kRounds && *orig == dst[id % 2]) ++ok;
    }
    int status = 0;
    waitpid(pid, &status, 0);
    EXPECT_TRUE(WIFEXITED(status) && WEXITSTATUS(status) == 0) << "client exit status " << status;
    EXPECT_EQ(ok, kRounds);
  }
};

TEST_F(CaptureProgramFamilyTest, FiftyConcurrentConnectsEachGetTheirOwnDestination) {
  concurrentConnectsEachGetTheirOwnDestination(AF_INET);
}

TEST_F(CaptureProgramFamilyTest, Ipv6FiftyConcurrentConnectsEachGetTheirOwnDestination) {
  concurrentConnectsEachGetTheirOwnDestination(AF_INET6);
}

TEST_F(CaptureProgramFamilyTest, RapidPortReuseGetsTheNewDestination) { rapidPortReuseGetsTheNewDestination(AF_INET); }

TEST_F(CaptureProgramFamilyTest, Ipv6RapidPortReuseGetsTheNewDestination) {
  rapidPortReuseGetsTheNewDestination(AF_INET6);
}

// ---- IPv6 variants of the single-connection rules ---------------------------------

constexpr const char* kVip6 = "fd00:96::10";

TEST_F(CaptureProgramFamilyTest, Ipv6CulvertsOwnTaggedSocketIsNotCaptured) {
  ASSERT_TRUE(program_->setCapturedDestinations({addr(kVip6, 80)}));
  enroll(*pod_, FailMode::Closed);
  UniqueFd listener = taggedListenerOf(AF_INET6);
  ASSERT_TRUE(listener);
  ConnectResult r = connectVip(*pod_, kVip6, 80, /*tag_client=*/true);
  EXPECT_EQ(r.error, ENETUNREACH) << describe(r);
  EXPECT_FALSE(acceptWithin(listener.get(), 0));
  EXPECT_EQ(program_->counters().passthrough, 1u);
  EXPECT_EQ(program_->counters().captured, 0u);
}

TEST_F(CaptureProgramFamilyTest, Ipv6UdpIsNeverCaptured) {
  ASSERT_TRUE(program_->setCapturedDestinations({addr(kVip6, 80)}));
  enroll(*pod_, FailMode::Closed);
  UniqueFd listener = taggedListenerOf(AF_INET6);
  ASSERT_TRUE(listener);
  culvert::testing::ConnectOptions udp;
  udp.type = SOCK_DGRAM;
  ConnectResult r = connectFromChild(cgroup_->path(), *pod_, kVip6, 80, {}, udp);
  EXPECT_EQ(r.error, ENETUNREACH) << describe(r);
  Counters c = program_->counters();
  EXPECT_EQ(c.captured + c.refused + c.passthrough, 0u);
}

TEST_F(CaptureProgramFamilyTest, Ipv6FailOpenDoesNotRedirectToAnUntaggedListener) {
  ASSERT_TRUE(program_->setCapturedDestinations({addr(kVip6, 80)}));
  enroll(*pod_, FailMode::Open);
  UniqueFd app_listener = culvert::testing::listenOn(*pod_, "::1", kCapturePort);  // the app's own
  ASSERT_TRUE(app_listener);
  ConnectResult r = connectVip(*pod_, kVip6, 80);
  EXPECT_EQ(r.error, ENETUNREACH) << describe(r);  // untouched, not redirected
  EXPECT_FALSE(acceptWithin(app_listener.get(), 0));
  EXPECT_EQ(program_->counters().fail_open, 1u);
  EXPECT_EQ(program_->counters().captured, 0u);
}

TEST_F(CaptureProgramFamilyTest, Ipv6BypassLeavesEveryConnectUntouched) {
  ASSERT_TRUE(program_->setCapturedDestinations({addr(kVip6, 80)}));
  enroll(*pod_, FailMode::Closed);
  ASSERT_TRUE(program_->setBypass(true));
  EXPECT_EQ(connectVip(*pod_, kVip6, 80).error, ENETUNREACH);
  ASSERT_TRUE(program_->setBypass(false));
  EXPECT_EQ(connectVip(*pod_, kVip6, 80).error, ECONNREFUSED);
}

TEST_F(CaptureProgramFamilyTest, Ipv6AnAbortedUnacceptedConnectionLeavesNoRecordWithinOneSecond) {
  ASSERT_TRUE(program_->setCapturedDestinations({addr(kVip6, 80)}));
  enroll(*pod_, FailMode::Open);
  UniqueFd listener = taggedListenerOf(AF_INET6);
  ASSERT_TRUE(listener);
  ConnectResult r = connectFromChild(cgroup_->path(), *pod_, kVip6, 80, [](int fd) {
    linger l{1, 0};
    setsockopt(fd, SOL_SOCKET, SO_LINGER, &l, sizeof l);
  });
  ASSERT_EQ(r.error, 0) << describe(r);
  EXPECT_EQ(program_->counters().rekeyed, 1u);
  size_t left = 1;
  for (int i = 0; i < 100 && left != 0; ++i) {
    left = recordsOf(*program_, *pod_);
    if (left != 0) usleep(10000);
  }
  EXPECT_EQ(left, 0u) << "cv_orig_dst still holds the aborted connection's record after 1 s";
}

TEST_F(CaptureProgramFamilyTest, Ipv6HostNetnsIsNeverCapturedEvenWhenItsDestinationIs) {
  UniqueFd target(::socket(AF_INET6, SOCK_STREAM | SOCK_CLOEXEC, 0));
  sockaddr_in6 a{};
  a.sin6_family = AF_INET6;
  a.sin6_addr = in6addr_loopback;
  ASSERT_EQ(bind(target.get(), reinterpret_cast<sockaddr*>(&a), sizeof a), 0) << "no ::1 on the host";
  ASSERT_EQ(listen(target.get(), 4), 0);
  socklen_t len = sizeof a;
  getsockname(target.get(), reinterpret_cast<sockaddr*>(&a), &len);
  uint16_t port = ntohs(a.sin6_port);
  ASSERT_TRUE(program_->setCapturedDestinations({addr("::1", port)}));
  enroll(*pod_, FailMode::Closed);
  EXPECT_EQ(connectFromChild(cgroup_->path(), *pod_, "::1", port).error, ECONNREFUSED);  // the pod: captured

  pid_t pid = fork();
  if (pid == 0) {
    auto procs = cgroup_->path() / "cgroup.procs";
    int cg = open(procs.c_str(), O_WRONLY);
    if (cg < 0 || write(cg, "0", 1) != 1) _exit(2);
    int s = ::socket(AF_INET6, SOCK_STREAM, 0);
    _exit(connect(s, reinterpret_cast<sockaddr*>(&a), sizeof a) == 0 ? 0 : 1);
  }
  ASSERT_GT(pid, 0);
  int status = 0;
  waitpid(pid, &status, 0);
  EXPECT_TRUE(WIFEXITED(status) && WEXITSTATUS(status) == 0) << "host connect failed";
  EXPECT_TRUE(acceptWithin(target.get(), 2000));
}

// The in-pod listener group (DESIGN.md §2): with tcp_migrate_req set in the pod's netns
// (PodManager does it at enrollment), connections queued on a socket that closes move to
// another socket of the reuseport group instead of being reset.
class ReuseportMigrationTest : public CaptureProgramTest {
protected:
  // Forks n captured clients that connect, send their index and wait for EOF.
  std::vector<pid_t> connectClients(int n, int go_fd_read, int go_fd_write, int listener_fd) {
    std::vector<pid_t> pids;
    for (int i = 0; i < n; ++i) {
      pid_t pid = fork();
      if (pid == 0) {
        auto procs = cgroup_->path() / "cgroup.procs";
        int cg = open(procs.c_str(), O_WRONLY);
        if (cg < 0 || write(cg, "0", 1) != 1) _exit(2);
        if (setns(pod_->fd(), CLONE_NEWNET) != 0) _exit(3);
        close(go_fd_write);
        close(listener_fd);  // a forked copy would keep the listener open after the parent closes it
        int s = ::socket(AF_INET, SOCK_STREAM, 0);
        sockaddr_in d{};
        d.sin_family = AF_INET;
        d.sin_port = htons(kVipPort);
        inet_pton(AF_INET, kVip, &d.sin_addr);
        if (connect(s, reinterpret_cast<sockaddr*>(&d), sizeof d) != 0) _exit(4);
        uint8_t id = static_cast<uint8_t>(i);
        if (send(s, &id, 1, 0) != 1) _exit(5);
        char b;
        (void)read(go_fd_read, &b, 1);  // until the parent is done
        _exit(0);
      }
      pids.push_back(pid);
    }
    return pids;
  }

  // Queues kN connections on socket A alone, adds B to the group, closes A; returns how
  // many connections B then accepts with their original destination.
  int migratedAfterClose(bool migrate_req) {
    constexpr int kN = 10;
    pod_->run([&] {
      int fd = ::open("/proc/sys/net/ipv4/tcp_migrate_req", O_WRONLY | O_CLOEXEC);
      if (fd >= 0) {
        EXPECT_EQ(::write(fd, migrate_req ? "1" : "0", 1), 1);
        ::close(fd);
      }
    });
    auto reuseport = [this](int fd) {
      int one = 1;
      EXPECT_EQ(setsockopt(fd, SOL_SOCKET, SO_REUSEPORT, &one, sizeof one), 0);
      EXPECT_TRUE(program_->tagSocket(fd));
    };
    UniqueFd a = listenIn(*pod_, kCapturePort, reuseport);
    EXPECT_TRUE(a);
    int go[2];
    EXPECT_EQ(pipe2(go, O_CLOEXEC), 0);
    auto pids = connectClients(kN, go[0], go[1], a.get());
    // Every client is connected (the handshake completes against A's backlog).
    for (int i = 0; i < 200 && program_->counters().rekeyed < static_cast<uint64_t>(kN); ++i) usleep(10000);
    usleep(100000);
    UniqueFd b = listenIn(*pod_, kCapturePort, reuseport);
    EXPECT_TRUE(b);
    a.reset();  // a worker's socket goes away with connections still queued on it
    int got = 0;
    std::vector<UniqueFd> conns;
    for (;;) {
      UniqueFd c = acceptWithin(b.get(), 500);
      if (!c) break;
      uint8_t id = 0;
      pollfd p{c.get(), POLLIN, 0};
      if (poll(&p, 1, 1000) == 1 && recv(c.get(), &id, 1, 0) == 1) {
        auto orig = takeRecord(*program_, c.get());
        if (orig && orig->toString() == "10.96.0.10:80") ++got;
      }
      conns.push_back(std::move(c));
    }
    close(go[0]);
    close(go[1]);
    for (pid_t pid : pids) waitpid(pid, nullptr, 0);
    return got;
  }
};

TEST_F(ReuseportMigrationTest, ClosingOneSocketOfTheGroupLosesNoQueuedConnection) {
  enroll(*pod_, FailMode::Closed);
  EXPECT_EQ(migratedAfterClose(true), 10);
}

TEST_F(ReuseportMigrationTest, WithoutMigrateReqTheQueuedConnectionsWouldBeLost) {
  // The control: proves the test above depends on tcp_migrate_req.
  enroll(*pod_, FailMode::Closed);
  EXPECT_EQ(migratedAfterClose(false), 0);
}

// Load errors name the missing piece (checked before anything privileged is tried).
TEST(CaptureProgramLoad, PinRootOffBpffsSaysHowToMountOne) {
  auto root = detectCgroup2Root();
  ASSERT_TRUE(root);
  auto p = CaptureProgram::load({"/tmp/culvert-not-bpffs", *root, kCapturePort});
  ASSERT_FALSE(p);
  EXPECT_NE(p.error().describe().find("mount -t bpf"), std::string::npos) << p.error().describe();
}

TEST(CaptureProgramLoad, WithoutPrivilegeTheErrorSaysSoNotThatTheKernelLacksBpf) {
  CULVERT_REQUIRE_ROOT();
  auto root = detectCgroup2Root();
  ASSERT_TRUE(root);
  BpffsRoot bpffs;
  ASSERT_TRUE(bpffs.error().empty()) << bpffs.error();
  TestCgroup cgroup(*root);
  ASSERT_TRUE(cgroup.error().empty()) << cgroup.error();
  int fds[2];
  ASSERT_EQ(pipe2(fds, O_CLOEXEC), 0);
  UniqueFd rd(fds[0]);
  pid_t pid = fork();
  ASSERT_GE(pid, 0);
  if (pid == 0) {
    if (setgid(65534) != 0 || setuid(65534) != 0) _exit(2);  // nobody: no capabilities
    auto p = CaptureProgram::load({bpffs.pinRoot(), cgroup.path(), kCapturePort});
    std::string message = p ? "loaded" : p.error().describe();
    (void)!write(fds[1], message.data(), message.size());
    _exit(0);
  }
  close(fds[1]);
  std::string message;
  char buf[512];
  for (ssize_t n; (n = read(rd.get(), buf, sizeof buf)) > 0;) message.append(buf, n);
  int status = 0;
  waitpid(pid, &status, 0);
  ASSERT_TRUE(WIFEXITED(status) && WEXITSTATUS(status) == 0) << status;
  EXPECT_NE(message.find("no permission to use BPF"), std::string::npos) << message;
  EXPECT_EQ(message.find("kernel lacks"), std::string::npos) << message;
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
