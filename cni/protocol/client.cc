#include "cni/protocol/client.h"

#include <poll.h>
#include <sys/socket.h>
#include <sys/un.h>
#include <unistd.h>

#include <algorithm>
#include <cerrno>
#include <cstring>

namespace culvert::cni {

using common::fail;
using common::Result;
using Clock = std::chrono::steady_clock;

namespace {

class Fd {
public:
  explicit Fd(int fd) : fd_(fd) {}
  ~Fd() {
    if (fd_ >= 0) ::close(fd_);
  }
  Fd(const Fd&) = delete;
  Fd& operator=(const Fd&) = delete;
  int get() const { return fd_; }

private:
  int fd_;
};

std::string errnoText(int err) { return std::strerror(err); }

// Waits for `events` until the deadline. Returns 1 when ready, 0 on timeout, -errno.
int waitFor(int fd, short events, Clock::time_point deadline) {
  for (;;) {
    auto left = std::chrono::duration_cast<std::chrono::milliseconds>(deadline - Clock::now()).count();
    if (left <= 0) return 0;
    pollfd p{fd, events, 0};
    int n = ::poll(&p, 1, static_cast<int>(std::min<long long>(left, 60'000)));
    if (n < 0) {
      if (errno == EINTR) continue;
      return -errno;
    }
    if (n > 0) return 1;
  }
}

}  // namespace

Result<EnrollmentResponse> callEnrollment(const std::filesystem::path& socket_path,
                                          const EnrollmentRequest& request,
                                          std::chrono::milliseconds timeout) {
  const std::string where = socket_path.string();
  const auto deadline = Clock::now() + timeout;
  auto timedOut = [&](const char* phase) {
    return fail(std::string("timed out after ") + std::to_string(timeout.count()) + " ms " + phase +
                    " (is culvertd stuck?)",
                where);
  };

  sockaddr_un addr{};
  addr.sun_family = AF_UNIX;
  if (where.empty() || where.size() >= sizeof(addr.sun_path)) {
    return fail("not a usable unix socket path (empty or longer than " + std::to_string(sizeof(addr.sun_path) - 1) +
                    " bytes)",
                where);
  }
  std::memcpy(addr.sun_path, where.data(), where.size());

  Fd fd(::socket(AF_UNIX, SOCK_STREAM | SOCK_CLOEXEC | SOCK_NONBLOCK, 0));
  if (fd.get() < 0) return fail("socket: " + errnoText(errno), where);

  if (::connect(fd.get(), reinterpret_cast<sockaddr*>(&addr), sizeof addr) != 0) {
    int err = errno;
    // A full backlog makes a non-blocking unix connect fail with EAGAIN rather than wait;
    // retry until the deadline instead of failing a CNI ADD on a momentary burst.
    while (err == EAGAIN || err == EINTR) {
      if (Clock::now() >= deadline) return timedOut("connecting");
      ::usleep(2000);
      err = ::connect(fd.get(), reinterpret_cast<sockaddr*>(&addr), sizeof addr) == 0 ? 0 : errno;
    }
    if (err == EINPROGRESS) {
      int w = waitFor(fd.get(), POLLOUT, deadline);
      if (w == 0) return timedOut("connecting");
      if (w < 0) return fail("poll: " + errnoText(-w), where);
      socklen_t len = sizeof err;
      ::getsockopt(fd.get(), SOL_SOCKET, SO_ERROR, &err, &len);
    }
    if (err != 0) {
      std::string hint = (err == ENOENT || err == ECONNREFUSED) ? " (is culvertd running?)" : "";
      return fail("cannot connect: " + errnoText(err) + hint, where);
    }
  }

  const std::string out = encodeRequest(request);
  size_t sent = 0;
  while (sent < out.size()) {
    ssize_t n = ::send(fd.get(), out.data() + sent, out.size() - sent, MSG_NOSIGNAL);
    if (n > 0) {
      sent += static_cast<size_t>(n);
      continue;
    }
    if (n < 0 && (errno == EAGAIN || errno == EINTR)) {
      int w = waitFor(fd.get(), POLLOUT, deadline);
      if (w == 0) return timedOut("sending the request");
      if (w < 0) return fail("poll: " + errnoText(-w), where);
      continue;
    }
    return fail("send: " + errnoText(errno), where);
  }

  std::string in;
  char buf[16384];
  for (;;) {
    if (auto nl = in.find('\n'); nl != std::string::npos) {
      auto response = parseResponse(std::string_view(in).substr(0, nl));
      if (!response) return fail("bad reply from culvertd: " + response.error().describe(), where);
      return response;
    }
    if (in.size() > kMaxResponseLineBytes) {
      return fail("reply exceeds " + std::to_string(kMaxResponseLineBytes) + " bytes", where);
    }
    ssize_t n = ::recv(fd.get(), buf, sizeof buf, 0);
    if (n > 0) {
      in.append(buf, static_cast<size_t>(n));
      continue;
    }
    if (n == 0) {
      return fail(in.empty() ? "culvertd closed the connection without replying"
                             : "culvertd closed the connection in the middle of its reply",
                  where);
    }
    if (errno == EAGAIN || errno == EINTR) {
      int w = waitFor(fd.get(), POLLIN, deadline);
      if (w == 0) return timedOut("waiting for the reply");
      if (w < 0) return fail("poll: " + errnoText(-w), where);
      continue;
    }
    return fail("recv: " + errnoText(errno), where);
  }
}

}  // namespace culvert::cni
