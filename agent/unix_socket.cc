#include "agent/unix_socket.h"

#include <sys/socket.h>
#include <sys/stat.h>
#include <sys/un.h>
#include <unistd.h>

#include <csignal>
#include <cerrno>
#include <cstring>
#include <string>

namespace culvert::agent {

using common::fail;
using common::Result;

namespace {

std::string errnoText(int err) { return std::strerror(err); }

bool fillAddress(const std::string& path, sockaddr_un& addr) {
  addr = {};
  addr.sun_family = AF_UNIX;
  if (path.empty() || path.size() >= sizeof(addr.sun_path)) return false;
  std::memcpy(addr.sun_path, path.data(), path.size());
  return true;
}

// True when something accepts connections on the socket file at `path`.
bool isLive(const std::string& path) {
  sockaddr_un addr;
  if (!fillAddress(path, addr)) return false;
  int fd = ::socket(AF_UNIX, SOCK_STREAM | SOCK_CLOEXEC | SOCK_NONBLOCK, 0);
  if (fd < 0) return false;
  int rc = ::connect(fd, reinterpret_cast<sockaddr*>(&addr), sizeof addr);
  int err = rc == 0 ? 0 : errno;
  ::close(fd);
  return rc == 0 || err == EAGAIN;  // EAGAIN: a full backlog, so someone is listening
}

}  // namespace

Result<UnixListener> listenUnix(const std::filesystem::path& path, const UnixListenOptions& options) {
  const std::string target = path.string();
  sockaddr_un addr;
  if (!fillAddress(target, addr)) {
    return fail("not a usable unix socket path (empty or longer than " + std::to_string(sizeof(addr.sun_path) - 1) +
                    " bytes)",
                target);
  }
  std::filesystem::path parent = path.parent_path();
  if (parent.empty()) parent = ".";
  std::error_code ec;
  std::filesystem::create_directories(parent, ec);
  if (ec) return fail("cannot create directory " + parent.string() + ": " + ec.message(), target);

  struct stat st {};
  if (::lstat(target.c_str(), &st) == 0) {
    if (!S_ISSOCK(st.st_mode)) return fail("exists and is not a socket; refusing to replace it", target);
    if (isLive(target) && !options.replace_live) {
      return fail("another process is listening on this socket (is culvertd already running?)", target);
    }
  }

  int fd = ::socket(AF_UNIX, SOCK_STREAM | SOCK_CLOEXEC | SOCK_NONBLOCK, 0);
  if (fd < 0) return fail("socket: " + errnoText(errno), target);
  auto failClose = [&](std::string message) {
    ::close(fd);
    return fail(std::move(message), target);
  };

  // Bind in a private directory so the socket is never reachable with the umask's mode.
  std::string tmpl = (parent / ".culvert-XXXXXX").string();
  std::string private_dir;
  sockaddr_un tmp_addr;
  if (fillAddress(tmpl + "/s", tmp_addr) && ::mkdtemp(tmpl.data()) != nullptr) {
    private_dir = tmpl;
    fillAddress(private_dir + "/s", tmp_addr);
    if (::bind(fd, reinterpret_cast<sockaddr*>(&tmp_addr), sizeof tmp_addr) != 0 ||
        ::chmod(tmp_addr.sun_path, options.mode) != 0 || ::rename(tmp_addr.sun_path, target.c_str()) != 0) {
      int err = errno;
      ::unlink(tmp_addr.sun_path);
      ::rmdir(private_dir.c_str());
      return failClose("cannot bind: " + errnoText(err));
    }
    ::rmdir(private_dir.c_str());
  } else {
    // The private path would not fit sun_path (or the directory is not writable for
    // mkdtemp): bind in place; the socket has the umask's mode until the chmod.
    ::unlink(target.c_str());
    if (::bind(fd, reinterpret_cast<sockaddr*>(&addr), sizeof addr) != 0) return failClose("bind: " + errnoText(errno));
    if (::chmod(target.c_str(), options.mode) != 0) {
      int err = errno;
      ::unlink(target.c_str());
      return failClose("chmod: " + errnoText(err));
    }
  }

  if (::listen(fd, options.backlog) != 0) {
    int err = errno;
    ::unlink(target.c_str());
    return failClose("listen: " + errnoText(err));
  }
  UnixListener listener;
  listener.fd = fd;
  if (::stat(target.c_str(), &st) == 0) {
    listener.dev = st.st_dev;
    listener.ino = st.st_ino;
  }
  return listener;
}

void removeUnixSocket(const std::filesystem::path& path, const UnixListener& listener) {
  struct stat st {};
  if (::lstat(path.c_str(), &st) == 0 && S_ISSOCK(st.st_mode) && st.st_dev == listener.dev &&
      st.st_ino == listener.ino) {
    ::unlink(path.c_str());
  }
}

void ignoreSigpipe() {
  struct sigaction current {};
  if (::sigaction(SIGPIPE, nullptr, &current) == 0 && current.sa_handler == SIG_DFL) {
    struct sigaction ignore {};
    ignore.sa_handler = SIG_IGN;
    sigemptyset(&ignore.sa_mask);
    ::sigaction(SIGPIPE, &ignore, nullptr);
  }
}

}  // namespace culvert::agent
