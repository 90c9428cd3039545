#pragma once

#include <sys/socket.h>
#include <sys/types.h>
#include <sys/un.h>

#include <chrono>
#include <optional>
#include <string>
#include <string_view>

#include "proxy/common/error.h"

namespace culvert::agent {

// The service manager's notification socket, as named by $NOTIFY_SOCKET: a filesystem
// path ("/run/systemd/notify") or a Linux abstract name ("@name").
struct NotifyAddress {
  sockaddr_un addr{};
  socklen_t len = 0;
};

// Parses $NOTIFY_SOCKET. Errors name the cause (relative path, too long, empty).
common::Result<NotifyAddress> parseNotifySocket(std::string_view value);

// The keep-alive interval to use for $WATCHDOG_USEC / $WATCHDOG_PID, or nullopt when the
// watchdog is off or meant for another process. systemd recommends pinging at half the
// timeout; this returns that half.
std::optional<std::chrono::milliseconds> watchdogPingInterval(const char* watchdog_usec, const char* watchdog_pid,
                                                              pid_t self);

// sd_notify(3) implemented by hand (no libsystemd): one datagram per state change on the
// NOTIFY_SOCKET unix socket. Disabled (every call a no-op) when not started by a service
// manager that asked for notifications.
class SdNotifier {
public:
  // Reads NOTIFY_SOCKET, WATCHDOG_USEC and WATCHDOG_PID. With unset_environment the
  // variables are removed so child processes do not inherit them (sd_notify's behaviour).
  static common::Result<SdNotifier> fromEnvironment(bool unset_environment = true);
  SdNotifier() = default;

  bool enabled() const { return address_.has_value(); }
  std::optional<std::chrono::milliseconds> watchdogInterval() const { return watchdog_; }

  // Sends `state` (e.g. "READY=1\nSTATUS=serving") as one datagram. A no-op when disabled.
  common::Result<void> notify(std::string_view state) const;

private:
  std::optional<NotifyAddress> address_;
  std::optional<std::chrono::milliseconds> watchdog_;
};

}  // namespace culvert::agent
