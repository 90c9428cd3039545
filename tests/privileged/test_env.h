#pragma once

// RAII pieces for privileged tests (DESIGN.md §7, §8): each test gets its own bpffs pin
// root, its own child cgroup and its own network namespace with only loopback, and
// removes them on every exit path. Nothing here routes, forwards or NATs.

#include <netinet/in.h>
#include <unistd.h>

#include <filesystem>
#include <functional>
#include <string>

namespace culvert::testing {

class UniqueFd {
public:
  UniqueFd() = default;
  explicit UniqueFd(int fd) : fd_(fd) {}
  ~UniqueFd() { reset(); }
  UniqueFd(UniqueFd&& o) noexcept : fd_(o.release()) {}
  UniqueFd& operator=(UniqueFd&& o) noexcept {
    if (this != &o) {
      reset();
      fd_ = o.release();
    }
    return *this;
  }
  int get() const { return fd_; }
  explicit operator bool() const { return fd_ >= 0; }
  int release() {
    int fd = fd_;
    fd_ = -1;
    return fd;
  }
  void reset() {
    if (fd_ >= 0) ::close(fd_);
    fd_ = -1;
  }

private:
  int fd_ = -1;
};

// True when CI demands that privileged tests run (CULVERT_REQUIRE_PRIVILEGED=1).
bool privilegedRequired();
// Empty when the tests can run here, else why not.
std::string privilegedUnavailableReason();

// Skips the test (or fails it when privileged tests are required) unless root.
#define CULVERT_REQUIRE_ROOT()                                                         \
  do {                                                                                 \
    auto culvert_reason_ = ::culvert::testing::privilegedUnavailableReason();          \
    if (!culvert_reason_.empty()) {                                                    \
      if (::culvert::testing::privilegedRequired()) {                                  \
        FAIL() << "CULVERT_REQUIRE_PRIVILEGED=1 but " << culvert_reason_;              \
      }                                                                                \
      GTEST_SKIP() << culvert_reason_;                                                 \
    }                                                                                  \
  } while (0)

// A unique name for this process and call: "<prefix>-<pid>-<n>".
std::string uniqueName(const std::string& prefix);

// A pin root on a bpffs: under /sys/fs/bpf when it is mounted, else on a private bpffs
// instance mounted on a temp dir (each bpffs mount is its own instance), unmounted after.
class BpffsRoot {
public:
  BpffsRoot();
  ~BpffsRoot();
  BpffsRoot(const BpffsRoot&) = delete;
  BpffsRoot& operator=(const BpffsRoot&) = delete;

  const std::string& error() const { return error_; }
  const std::filesystem::path& pinRoot() const { return pin_root_; }

private:
  std::filesystem::path pin_root_;
  std::filesystem::path private_mount_;
  std::string error_;
};

// A child cgroup of the cgroup v2 root, removed after its processes exited.
class TestCgroup {
public:
  explicit TestCgroup(const std::filesystem::path& parent);
  ~TestCgroup();
  TestCgroup(const TestCgroup&) = delete;
  TestCgroup& operator=(const TestCgroup&) = delete;

  const std::string& error() const { return error_; }
  const std::filesystem::path& path() const { return path_; }

private:
  std::filesystem::path path_;
  std::string error_;
};

// A fresh network namespace with only `lo`, up. Held by an fd: it goes away with the
// last socket in it, also when the test process dies.
class TestNetns {
public:
  TestNetns();
  const std::string& error() const { return error_; }
  int fd() const { return fd_.get(); }

  // Runs fn with the calling thread inside this netns, then switches back.
  bool run(const std::function<void()>& fn) const;
  // A socket(domain, type, 0) created inside this netns.
  UniqueFd socket(int domain, int type) const;
  // SO_NETNS_COOKIE of this netns.
  uint64_t cookie() const;
  // DESIGN.md §8: the only interface is loopback, so nothing can leave the namespace.
  bool onlyLoopback() const;

private:
  UniqueFd fd_;
  std::string error_;
};

// A TCP listener on 127.0.0.1:port inside netns; before_bind runs right after socket()
// (where culvert tags its sockets).
UniqueFd listenIn(const TestNetns& netns, uint16_t port, const std::function<void(int)>& before_bind = {});
// The same on any address ("::1", "10.244.0.5"); IPv6 sockets are IPV6_V6ONLY.
UniqueFd listenOn(const TestNetns& netns, const char* ip, uint16_t port,
                  const std::function<void(int)>& before_bind = {});

// Adds ip/len to the netns's lo (a "pod address": it exists only inside that netns).
bool addAddress(const TestNetns& netns, const char* ip_with_len);

// What a client process saw.
struct ConnectResult {
  int error = -1;           // 0 when connect() succeeded, else its errno
  sockaddr_in peer{};       // getpeername() after a successful connect (IPv4 sockets)
  std::string peer_string;  // getpeername() as "ip:port" / "[ip]:port", any family
  bool sent = false;        // wrote one byte 'x' after connecting
  std::string failure;      // set up problems (fork, cgroup, setns...)
};

// How the child makes its socket.
struct ConnectOptions {
  int domain = 0;             // 0: AF_INET6 when ip contains ':', else AF_INET
  int type = SOCK_STREAM;     // SOCK_DGRAM for UDP
};

// Forks a client that joins `cgroup` (before entering the netns, DESIGN.md §8), enters
// netns, creates a TCP socket, runs after_socket(fd) (e.g. to tag it), and connects to
// ip:port. Waits at most 10 s.
ConnectResult connectFromChild(const std::filesystem::path& cgroup, const TestNetns& netns, const char* ip,
                               uint16_t port, const std::function<void(int)>& after_socket = {},
                               ConnectOptions options = {});

// "ip:port" or "[ip]:port" of a sockaddr.
std::string addressString(const sockaddr* sa);

// accept() with a timeout; empty fd on timeout.
UniqueFd acceptWithin(int listen_fd, int timeout_ms);

}  // namespace culvert::testing
