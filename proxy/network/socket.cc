#include "proxy/network/socket.h"

#include <fcntl.h>
#include <netinet/in.h>
#include <netinet/tcp.h>
#include <sched.h>
#include <sys/resource.h>
#include <sys/socket.h>
#include <unistd.h>

#include <cerrno>
#include <cstring>
#include <string>

namespace culvert::network {

FileDescriptor::~FileDescriptor() {
  if (fd_ >= 0) ::close(fd_);
}

FileDescriptor& FileDescriptor::operator=(FileDescriptor&& o) noexcept {
  if (this != &o) {
    if (fd_ >= 0) ::close(fd_);
    fd_ = o.release();
  }
  return *this;
}

namespace {
std::string errnoText(const char* what) { return std::string(what) + ": " + std::strerror(errno); }
}  // namespace

common::Result<FileDescriptor> createListenSocket(const common::SocketAddress& address, int backlog, bool reuse_port) {
  FileDescriptor fd(::socket(address.family(), SOCK_STREAM | SOCK_NONBLOCK | SOCK_CLOEXEC, 0));
  if (!fd) return common::fail(errnoText("socket"), address.toString());
  int one = 1;
  setsockopt(fd.get(), SOL_SOCKET, SO_REUSEADDR, &one, sizeof one);
  if (reuse_port && setsockopt(fd.get(), SOL_SOCKET, SO_REUSEPORT, &one, sizeof one) != 0) {
    return common::fail(errnoText("SO_REUSEPORT"), address.toString());
  }
  if (address.family() == AF_INET6) setsockopt(fd.get(), IPPROTO_IPV6, IPV6_V6ONLY, &one, sizeof one);
  if (::bind(fd.get(), address.sockaddr_ptr(), address.length()) != 0) {
    return common::fail(errnoText("bind"), address.toString());
  }
  if (::listen(fd.get(), backlog) != 0) return common::fail(errnoText("listen"), address.toString());
  return fd;
}

int currentThreadNetns() {
  thread_local int netns = ::open("/proc/thread-self/ns/net", O_RDONLY | O_CLOEXEC);
  return netns;
}

common::Result<FileDescriptor> createTcpSocketInNetns(int netns_fd, int family) {
  if (netns_fd < 0) {
    FileDescriptor fd(::socket(family, SOCK_STREAM | SOCK_NONBLOCK | SOCK_CLOEXEC, 0));
    if (!fd) return common::fail(errnoText("socket"));
    return fd;
  }
  int home = currentThreadNetns();
  if (home < 0) return common::fail(errnoText("open /proc/thread-self/ns/net"));
  if (::setns(netns_fd, CLONE_NEWNET) != 0) return common::fail(errnoText("setns into pod netns"));
  FileDescriptor fd(::socket(family, SOCK_STREAM | SOCK_NONBLOCK | SOCK_CLOEXEC, 0));
  int socket_errno = errno;
  if (::setns(home, CLONE_NEWNET) != 0) {
    // A thread stranded in a pod's netns would open every later socket there.
    std::abort();
  }
  if (!fd) {
    errno = socket_errno;
    return common::fail(errnoText("socket in pod netns"));
  }
  return fd;
}

uint64_t raiseFileLimit() {
  rlimit lim{};
  if (getrlimit(RLIMIT_NOFILE, &lim) != 0) return 0;
  if (lim.rlim_cur < lim.rlim_max) {
    lim.rlim_cur = lim.rlim_max;
    setrlimit(RLIMIT_NOFILE, &lim);
  }
  return lim.rlim_cur;
}

}  // namespace culvert::network
