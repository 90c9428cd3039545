#include "proxy/network/listener.h"

#include <fcntl.h>
#include <sys/socket.h>
#include <unistd.h>

#include <cerrno>
#include <cstring>

#include <spdlog/spdlog.h>

namespace culvert::network {

namespace {
// Accepts per wake-up, so one busy listener cannot monopolise its worker.
constexpr int kMaxAcceptsPerWake = 64;
}  // namespace

TcpListener::TcpListener(event::Dispatcher& dispatcher, FileDescriptor listen_fd, AcceptCallback on_accept)
    : fd_(std::move(listen_fd)), on_accept_(std::move(on_accept)), poll_(new uv_poll_t) {
  uv_poll_init(dispatcher.loop(), poll_, fd_.get());
  poll_->data = this;
  uv_poll_start(poll_, UV_READABLE, &TcpListener::onReadable);
}

TcpListener::~TcpListener() {
  uv_poll_stop(poll_);
  poll_->data = nullptr;
  uv_close(reinterpret_cast<uv_handle_t*>(poll_), [](uv_handle_t* h) { delete reinterpret_cast<uv_poll_t*>(h); });
}

void TcpListener::onReadable(uv_poll_t* poll, int status, int) {
  auto* self = static_cast<TcpListener*>(poll->data);
  if (self == nullptr || status < 0) return;
  self->acceptAll();
}

void TcpListener::shedWithReserveDescriptor() {
  thread_local int reserve = ::open("/dev/null", O_RDONLY | O_CLOEXEC);
  if (reserve >= 0) {
    ::close(reserve);
    reserve = -1;
  }
  int fd = ::accept4(fd_.get(), nullptr, nullptr, SOCK_CLOEXEC);
  if (fd >= 0) ::close(fd);
  reserve = ::open("/dev/null", O_RDONLY | O_CLOEXEC);
}

void TcpListener::acceptAll() {
  for (int i = 0; i < kMaxAcceptsPerWake; ++i) {
    sockaddr_storage peer{};
    socklen_t peer_len = sizeof peer;
    int fd = ::accept4(fd_.get(), reinterpret_cast<sockaddr*>(&peer), &peer_len, SOCK_NONBLOCK | SOCK_CLOEXEC);
    if (fd >= 0) {
      on_accept_(FileDescriptor(fd), common::SocketAddress::fromSockaddr(reinterpret_cast<sockaddr*>(&peer)));
      continue;
    }
    if (errno == EAGAIN || errno == EINTR || errno == ECONNABORTED) return;
    ++accept_errors_;
    if (errno == EMFILE || errno == ENFILE) {
      // Out of descriptors: a level-triggered poll would spin on the queued connection.
      // Spend the reserve descriptor to take it and close it at once (the client sees a
      // reset, not a hang), then re-arm the reserve.
      shedWithReserveDescriptor();
      spdlog::warn("accept on fd {}: out of file descriptors; connection shed (raise RLIMIT_NOFILE)", fd_.get());
      return;
    }
    spdlog::warn("accept on fd {}: {}", fd_.get(), std::strerror(errno));
    return;
  }
}

}  // namespace culvert::network
