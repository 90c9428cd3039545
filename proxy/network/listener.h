#pragma once

#include <uv.h>

#include <functional>

#include "proxy/network/socket.h"
#include "proxy/event/dispatcher.h"

namespace culvert::network {

// Accepts on a listening socket owned by this object. Each accepted socket is handed
// over as a non-blocking fd; running out of file descriptors is counted and survived.
class TcpListener {
public:
  // `peer` as accept4 returned it: the caller needs no getpeername of its own.
  using AcceptCallback = std::function<void(FileDescriptor accepted, const common::SocketAddress& peer)>;
  TcpListener(event::Dispatcher& dispatcher, FileDescriptor listen_fd, AcceptCallback on_accept);
  ~TcpListener();
  TcpListener(const TcpListener&) = delete;
  TcpListener& operator=(const TcpListener&) = delete;

  uint64_t acceptErrors() const { return accept_errors_; }
  int fd() const { return fd_.get(); }

private:
  static void onReadable(uv_poll_t* poll, int status, int events);
  void acceptAll();
  void shedWithReserveDescriptor();

  FileDescriptor fd_;
  AcceptCallback on_accept_;
  uv_poll_t* poll_;
  uint64_t accept_errors_ = 0;
};

}  // namespace culvert::network
