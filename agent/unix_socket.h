#pragma once

#include <sys/types.h>

#include <filesystem>

#include "proxy/common/error.h"

namespace culvert::agent {

struct UnixListenOptions {
  mode_t mode = 0600;
  // A socket file that still accepts connections belongs to a running culvertd: refuse
  // unless asked to take it over (an upgrade where the old process is draining).
  bool replace_live = false;
  int backlog = 128;
};

// A bound, listening unix stream socket. The caller owns fd (CLOEXEC, non-blocking).
struct UnixListener {
  int fd = -1;
  dev_t dev = 0;
  ino_t ino = 0;
};

// Creates the parent directory, removes a stale socket file, and binds so that the socket
// never exists at `path` with a wider mode than `mode`: it is bound in a private 0700
// directory next to `path`, chmod'ed, then renamed into place (which also replaces a stale
// file atomically). Anything at `path` that is not a socket is left alone and is an error.
common::Result<UnixListener> listenUnix(const std::filesystem::path& path, const UnixListenOptions& options = {});

// Unlinks `path` only while it is still the socket `listener` bound, so a process that
// shuts down after a successor took the path over does not remove the successor's socket.
void removeUnixSocket(const std::filesystem::path& path, const UnixListener& listener);

// libuv writes to sockets without MSG_NOSIGNAL, so a client that hangs up before its
// reply would kill the process with SIGPIPE. Servers call this on creation; it only
// changes the default disposition (a handler someone installed is kept).
void ignoreSigpipe();

}  // namespace culvert::agent
