#include "tests/privileged/test_env.h"

#include <arpa/inet.h>
#include <fcntl.h>
#include <linux/magic.h>
#include <net/if.h>
#include <poll.h>
#include <sched.h>
#include <signal.h>
#include <sys/ioctl.h>
#include <sys/mount.h>
#include <sys/socket.h>
#include <sys/stat.h>
#include <sys/vfs.h>
#include <sys/wait.h>

#include <atomic>
#include <cerrno>
#include <chrono>
#include <cstdlib>
#include <cstring>
#include <fstream>
#include <thread>

namespace culvert::testing {

namespace {

std::string errnoText(const std::string& what) { return what + ": " + std::strerror(errno); }

bool onBpffs(const std::filesystem::path& p) {
  struct statfs st {};
  return statfs(p.c_str(), &st) == 0 && static_cast<unsigned long>(st.f_type) == BPF_FS_MAGIC;
}

}  // namespace

bool privilegedRequired() {
  const char* v = std::getenv("CULVERT_REQUIRE_PRIVILEGED");
  return v != nullptr && std::string(v) == "1";
}

std::string privilegedUnavailableReason() {
  if (geteuid() != 0) return "privileged test: needs root (CAP_BPF, CAP_NET_ADMIN, CAP_SYS_ADMIN)";
  if (access("/sys/kernel/btf/vmlinux", R_OK) != 0) return "privileged test: kernel has no BTF";
  return {};
}

std::string uniqueName(const std::string& prefix) {
  static std::atomic<int> counter{0};
  return prefix + "-" + std::to_string(getpid()) + "-" + std::to_string(counter++);
}

BpffsRoot::BpffsRoot() {
  if (onBpffs("/sys/fs/bpf")) {
    pin_root_ = std::filesystem::path("/sys/fs/bpf") / uniqueName("culvert-test");
    return;
  }
  char tmpl[] = "/tmp/culvert-test-bpffs-XXXXXX";
  if (mkdtemp(tmpl) == nullptr) {
    error_ = errnoText("mkdtemp for a private bpffs");
    return;
  }
  private_mount_ = tmpl;
  if (mount("bpf", tmpl, "bpf", 0, "mode=0700") != 0) {
    error_ = errnoText(std::string("mount a private bpffs on ") + tmpl);
    rmdir(tmpl);
    private_mount_.clear();
    return;
  }
  pin_root_ = private_mount_ / "culvert";
}

BpffsRoot::~BpffsRoot() {
  std::error_code ec;
  if (!pin_root_.empty()) std::filesystem::remove_all(pin_root_, ec);
  if (!private_mount_.empty()) {
    umount2(private_mount_.c_str(), MNT_DETACH);
    rmdir(private_mount_.c_str());
  }
}

TestCgroup::TestCgroup(const std::filesystem::path& parent) {
  path_ = parent / uniqueName("culvert-test");
  if (mkdir(path_.c_str(), 0755) != 0) {
    error_ = errnoText("mkdir " + path_.string());
    path_.clear();
  }
}

TestCgroup::~TestCgroup() {
  if (path_.empty()) return;
  // A cgroup is removable once its last process is reaped; that can lag a little.
  for (int i = 0; i < 100; ++i) {
    if (rmdir(path_.c_str()) == 0 || errno == ENOENT) return;
    std::this_thread::sleep_for(std::chrono::milliseconds(10));
  }
}

TestNetns::TestNetns() {
  UniqueFd original(open("/proc/thread-self/ns/net", O_RDONLY | O_CLOEXEC));
  if (!original) {
    error_ = errnoText("open /proc/thread-self/ns/net");
    return;
  }
  if (unshare(CLONE_NEWNET) != 0) {
    error_ = errnoText("unshare(CLONE_NEWNET)");
    return;
  }
  fd_ = UniqueFd(open("/proc/thread-self/ns/net", O_RDONLY | O_CLOEXEC));
  if (!fd_) error_ = errnoText("open the new netns");

  // Bring lo up: a new netns starts with lo down.
  if (fd_) {
    UniqueFd s(::socket(AF_INET, SOCK_DGRAM | SOCK_CLOEXEC, 0));
    ifreq ifr{};
    std::strncpy(ifr.ifr_name, "lo", IFNAMSIZ - 1);
    if (!s || ioctl(s.get(), SIOCGIFFLAGS, &ifr) != 0) {
      error_ = errnoText("SIOCGIFFLAGS lo");
    } else {
      ifr.ifr_flags = static_cast<short>(ifr.ifr_flags | IFF_UP);
      if (ioctl(s.get(), SIOCSIFFLAGS, &ifr) != 0) error_ = errnoText("SIOCSIFFLAGS lo up");
    }
  }
  if (setns(original.get(), CLONE_NEWNET) != 0) {
    // The thread is stranded in the test netns: nothing sane can follow.
    std::perror("setns back to the original netns");
    std::abort();
  }
}

bool TestNetns::run(const std::function<void()>& fn) const {
  UniqueFd original(open("/proc/thread-self/ns/net", O_RDONLY | O_CLOEXEC));
  if (!original || setns(fd_.get(), CLONE_NEWNET) != 0) return false;
  fn();
  if (setns(original.get(), CLONE_NEWNET) != 0) {
    std::perror("setns back to the original netns");
    std::abort();
  }
  return true;
}

UniqueFd TestNetns::socket(int domain, int type) const {
  UniqueFd s;
  run([&] { s = UniqueFd(::socket(domain, type | SOCK_CLOEXEC, 0)); });
  return s;
}

uint64_t TestNetns::cookie() const {
  UniqueFd s = socket(AF_INET, SOCK_DGRAM);
  uint64_t cookie = 0;
  socklen_t len = sizeof cookie;
  if (!s || getsockopt(s.get(), SOL_SOCKET, 71 /* SO_NETNS_COOKIE */, &cookie, &len) != 0) return 0;
  return cookie;
}

bool TestNetns::onlyLoopback() const {
  bool only_lo = false;
  run([&] {
    struct if_nameindex* names = if_nameindex();
    if (names == nullptr) return;
    only_lo = true;
    for (auto* n = names; n->if_index != 0; ++n) {
      if (std::strcmp(n->if_name, "lo") != 0) only_lo = false;
    }
    if_freenameindex(names);
  });
  return only_lo;
}

UniqueFd listenIn(const TestNetns& netns, uint16_t port, const std::function<void(int)>& before_bind) {
  UniqueFd s = netns.socket(AF_INET, SOCK_STREAM);
  if (!s) return s;
  if (before_bind) before_bind(s.get());
  int one = 1;
  setsockopt(s.get(), SOL_SOCKET, SO_REUSEADDR, &one, sizeof one);
  sockaddr_in addr{};
  addr.sin_family = AF_INET;
  addr.sin_port = htons(port);
  addr.sin_addr.s_addr = htonl(INADDR_LOOPBACK);
  if (bind(s.get(), reinterpret_cast<sockaddr*>(&addr), sizeof addr) != 0 || listen(s.get(), 16) != 0) {
    return UniqueFd();
  }
  return s;
}

UniqueFd listenOn(const TestNetns& netns, const char* ip, uint16_t port, const std::function<void(int)>& before_bind) {
  bool v6 = std::strchr(ip, ':') != nullptr;
  UniqueFd s = netns.socket(v6 ? AF_INET6 : AF_INET, SOCK_STREAM);
  if (!s) return s;
  if (before_bind) before_bind(s.get());
  int one = 1;
  setsockopt(s.get(), SOL_SOCKET, SO_REUSEADDR, &one, sizeof one);
  sockaddr_storage ss{};
  socklen_t len = 0;
  if (v6) {
    setsockopt(s.get(), IPPROTO_IPV6, IPV6_V6ONLY, &one, sizeof one);
    auto* a = reinterpret_cast<sockaddr_in6*>(&ss);
    a->sin6_family = AF_INET6;
    a->sin6_port = htons(port);
    if (inet_pton(AF_INET6, ip, &a->sin6_addr) != 1) return UniqueFd();
    len = sizeof *a;
  } else {
    auto* a = reinterpret_cast<sockaddr_in*>(&ss);
    a->sin_family = AF_INET;
    a->sin_port = htons(port);
    if (inet_pton(AF_INET, ip, &a->sin_addr) != 1) return UniqueFd();
    len = sizeof *a;
  }
  if (bind(s.get(), reinterpret_cast<sockaddr*>(&ss), len) != 0 || listen(s.get(), 128) != 0) return UniqueFd();
  return s;
}

bool addAddress(const TestNetns& netns, const char* ip_with_len) {
  int rc = -1;
  std::string cmd = std::string("ip addr add ") + ip_with_len + " dev lo 2>/dev/null";
  // fork()ed by system() from this thread: the child inherits the thread's netns.
  netns.run([&] { rc = std::system(cmd.c_str()); });
  return rc == 0;
}

std::string addressString(const sockaddr* sa) {
  char buf[INET6_ADDRSTRLEN] = {};
  if (sa->sa_family == AF_INET) {
    const auto* a = reinterpret_cast<const sockaddr_in*>(sa);
    inet_ntop(AF_INET, &a->sin_addr, buf, sizeof buf);
    return std::string(buf) + ":" + std::to_string(ntohs(a->sin_port));
  }
  if (sa->sa_family == AF_INET6) {
    const auto* a = reinterpret_cast<const sockaddr_in6*>(sa);
    inet_ntop(AF_INET6, &a->sin6_addr, buf, sizeof buf);
    return "[" + std::string(buf) + "]:" + std::to_string(ntohs(a->sin6_port));
  }
  return "family " + std::to_string(sa->sa_family);
}

namespace {

// Fixed-size message from the child: no allocation across fork.
struct ChildReport {
  int error;
  int stage;  // 0 ok; else which set-up step failed, with errno in `error`
  sockaddr_storage peer;
  int sent;
};

enum ChildStage { kStageOk = 0, kStageCgroup = 1, kStageSetns = 2, kStageSocket = 3 };

[[noreturn]] void report(int fd, const ChildReport& r) {
  ssize_t n = write(fd, &r, sizeof r);
  _exit(n == static_cast<ssize_t>(sizeof r) ? 0 : 1);
}

[[noreturn]] void childMain(int report_fd, const std::filesystem::path& procs, int netns_fd, const char* ip,
                            uint16_t port, const std::function<void(int)>& after_socket, ConnectOptions options) {
  ChildReport r{};
  // Join the cgroup first: the connect hook sees a process by its cgroup.
  int cg = open(procs.c_str(), O_WRONLY | O_CLOEXEC);
  if (cg < 0 || write(cg, "0", 1) != 1) {
    r.stage = kStageCgroup;
    r.error = errno;
    report(report_fd, r);
  }
  close(cg);
  if (setns(netns_fd, CLONE_NEWNET) != 0) {
    r.stage = kStageSetns;
    r.error = errno;
    report(report_fd, r);
  }
  int domain = options.domain != 0 ? options.domain : (std::strchr(ip, ':') != nullptr ? AF_INET6 : AF_INET);
  int s = ::socket(domain, options.type | SOCK_CLOEXEC, 0);
  if (s < 0) {
    r.stage = kStageSocket;
    r.error = errno;
    report(report_fd, r);
  }
  if (after_socket) after_socket(s);
  timeval tv{5, 0};  // a bounded connect, whatever happens
  setsockopt(s, SOL_SOCKET, SO_SNDTIMEO, &tv, sizeof tv);
  sockaddr_storage dst{};
  socklen_t dst_len = 0;
  if (domain == AF_INET6) {
    auto* a = reinterpret_cast<sockaddr_in6*>(&dst);
    a->sin6_family = AF_INET6;
    a->sin6_port = htons(port);
    inet_pton(AF_INET6, ip, &a->sin6_addr);
    dst_len = sizeof *a;
  } else {
    auto* a = reinterpret_cast<sockaddr_in*>(&dst);
    a->sin_family = AF_INET;
    a->sin_port = htons(port);
    inet_pton(AF_INET, ip, &a->sin_addr);
    dst_len = sizeof *a;
  }
  if (connect(s, reinterpret_cast<sockaddr*>(&dst), dst_len) != 0) {
    r.error = errno;
    report(report_fd, r);
  }
  r.error = 0;
  socklen_t len = sizeof r.peer;
  getpeername(s, reinterpret_cast<sockaddr*>(&r.peer), &len);
  r.sent = send(s, "x", 1, MSG_NOSIGNAL) == 1;
  report(report_fd, r);
}

}  // namespace

ConnectResult connectFromChild(const std::filesystem::path& cgroup, const TestNetns& netns, const char* ip,
                               uint16_t port, const std::function<void(int)>& after_socket, ConnectOptions options) {
  ConnectResult result;
  int fds[2];
  if (pipe2(fds, O_CLOEXEC) != 0) {
    result.failure = errnoText("pipe2");
    return result;
  }
  UniqueFd rd(fds[0]);
  UniqueFd wr(fds[1]);
  auto procs = cgroup / "cgroup.procs";
  pid_t pid = fork();
  if (pid < 0) {
    result.failure = errnoText("fork");
    return result;
  }
  if (pid == 0) childMain(wr.get(), procs, netns.fd(), ip, port, after_socket, options);
  wr.reset();

  ChildReport r{};
  pollfd p{rd.get(), POLLIN, 0};
  bool got = poll(&p, 1, 10000) == 1 && read(rd.get(), &r, sizeof r) == static_cast<ssize_t>(sizeof r);
  if (!got) kill(pid, SIGKILL);
  int status = 0;
  waitpid(pid, &status, 0);
  if (!got) {
    result.failure = "client child did not report within 10 s";
    return result;
  }
  static const char* const kStages[] = {"", "join cgroup", "setns into the test netns", "socket()"};
  if (r.stage != kStageOk) {
    result.failure = std::string("client child: ") + kStages[r.stage] + ": " + std::strerror(r.error);
    return result;
  }
  result.error = r.error;
  if (r.error == 0) {
    if (r.peer.ss_family == AF_INET) std::memcpy(&result.peer, &r.peer, sizeof result.peer);
    result.peer_string = addressString(reinterpret_cast<const sockaddr*>(&r.peer));
  }
  result.sent = r.sent != 0;
  return result;
}

UniqueFd acceptWithin(int listen_fd, int timeout_ms) {
  pollfd p{listen_fd, POLLIN, 0};
  if (poll(&p, 1, timeout_ms) != 1) return UniqueFd();
  return UniqueFd(accept4(listen_fd, nullptr, nullptr, SOCK_CLOEXEC));
}

}  // namespace culvert::testing
