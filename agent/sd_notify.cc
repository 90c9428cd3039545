#include "agent/sd_notify.h"

#include <unistd.h>

#include <cerrno>
#include <charconv>
#include <cstdlib>
#include <cstring>

namespace culvert::agent {

common::Result<NotifyAddress> parseNotifySocket(std::string_view value) {
  if (value.empty()) return common::fail("is empty", "NOTIFY_SOCKET");
  if (value.front() != '/' && value.front() != '@') {
    return common::fail("must be an absolute path or an abstract name starting with '@'", "NOTIFY_SOCKET");
  }
  NotifyAddress out;
  out.addr.sun_family = AF_UNIX;
  if (value.size() > sizeof(out.addr.sun_path) - (value.front() == '/' ? 1 : 0)) {
    return common::fail("is longer than a unix socket path can be", "NOTIFY_SOCKET");
  }
  std::memcpy(out.addr.sun_path, value.data(), value.size());
  if (value.front() == '@') {
    // Abstract namespace: a leading NUL, and the length counts exactly the name bytes.
    out.addr.sun_path[0] = '\0';
    out.len = static_cast<socklen_t>(offsetof(sockaddr_un, sun_path) + value.size());
  } else {
    out.len = static_cast<socklen_t>(offsetof(sockaddr_un, sun_path) + value.size() + 1);
  }
  return out;
}

std::optional<std::chrono::milliseconds> watchdogPingInterval(const char* watchdog_usec, const char* watchdog_pid,
                                                              pid_t self) {
  if (watchdog_usec == nullptr || *watchdog_usec == '\0') return std::nullopt;
  if (watchdog_pid != nullptr && *watchdog_pid != '\0') {
    long long pid = 0;
    std::string_view p = watchdog_pid;
    auto [end, ec] = std::from_chars(p.data(), p.data() + p.size(), pid);
    if (ec != std::errc() || end != p.data() + p.size() || pid != self) return std::nullopt;
  }
  unsigned long long usec = 0;
  std::string_view u = watchdog_usec;
  auto [end, ec] = std::from_chars(u.data(), u.data() + u.size(), usec);
  if (ec != std::errc() || end != u.data() + u.size() || usec == 0) return std::nullopt;
  // Half the timeout, at least 1 ms so a tiny timeout still yields a usable timer.
  auto half = std::chrono::milliseconds(usec / 2000);
  return half.count() > 0 ? half : std::chrono::milliseconds(1);
}

common::Result<SdNotifier> SdNotifier::fromEnvironment(bool unset_environment) {
  SdNotifier notifier;
  const char* socket = std::getenv("NOTIFY_SOCKET");
  if (socket != nullptr) {
    auto address = parseNotifySocket(socket);
    if (!address) return std::unexpected(address.error());
    notifier.address_ = *address;
    notifier.watchdog_ = watchdogPingInterval(std::getenv("WATCHDOG_USEC"), std::getenv("WATCHDOG_PID"), ::getpid());
  }
  if (unset_environment) {
    ::unsetenv("NOTIFY_SOCKET");
    ::unsetenv("WATCHDOG_USEC");
    ::unsetenv("WATCHDOG_PID");
  }
  return notifier;
}

common::Result<void> SdNotifier::notify(std::string_view state) const {
  if (!address_) return {};
  int fd = ::socket(AF_UNIX, SOCK_DGRAM | SOCK_CLOEXEC, 0);
  if (fd < 0) return common::fail(std::string("socket: ") + std::strerror(errno), "NOTIFY_SOCKET");
  ssize_t sent = ::sendto(fd, state.data(), state.size(), MSG_NOSIGNAL,
                          reinterpret_cast<const sockaddr*>(&address_->addr), address_->len);
  int err = errno;
  ::close(fd);
  if (sent < 0) return common::fail(std::string("sendto: ") + std::strerror(err), "NOTIFY_SOCKET");
  if (static_cast<size_t>(sent) != state.size()) return common::fail("short datagram write", "NOTIFY_SOCKET");
  return {};
}

}  // namespace culvert::agent
