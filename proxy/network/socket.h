#pragma once

#include <memory>

#include "proxy/common/error.h"
#include "proxy/common/socket_address.h"

namespace culvert::network {

// An open file descriptor, closed on destruction.
class FileDescriptor {
public:
  FileDescriptor() = default;
  explicit FileDescriptor(int fd) : fd_(fd) {}
  ~FileDescriptor();
  FileDescriptor(FileDescriptor&& o) noexcept : fd_(o.release()) {}
  FileDescriptor& operator=(FileDescriptor&& o) noexcept;
  FileDescriptor(const FileDescriptor&) = delete;
  FileDescriptor& operator=(const FileDescriptor&) = delete;

  int get() const { return fd_; }
  int release() {
    int fd = fd_;
    fd_ = -1;
    return fd;
  }
  explicit operator bool() const { return fd_ >= 0; }

private:
  int fd_ = -1;
};

// A listening TCP socket with SO_REUSEPORT (one per worker in a group), non-blocking.
common::Result<FileDescriptor> createListenSocket(const common::SocketAddress& address, int backlog, bool reuse_port);

// A non-blocking TCP socket created inside the network namespace `netns_fd` (or the
// current one when -1). The calling thread enters the namespace only for socket():
// setns(pod) -> socket() -> setns(back), never across a callback (DESIGN.md §2).
common::Result<FileDescriptor> createTcpSocketInNetns(int netns_fd, int family);

// The netns of the calling thread, opened once per thread and kept for setns back.
int currentThreadNetns();

// RLIMIT_NOFILE raised to its hard limit; returns the new soft limit.
uint64_t raiseFileLimit();

}  // namespace culvert::network
