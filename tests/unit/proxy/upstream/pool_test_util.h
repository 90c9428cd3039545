// Helpers of the upstream pool tests (connection_pool_test, http2_pool_test).
#pragma once

#include <arpa/inet.h>
#include <netinet/in.h>
#include <sys/socket.h>

#include <chrono>
#include <functional>

#include "proxy/event/dispatcher.h"
#include "proxy/network/socket.h"

namespace culvert::upstream::testing {

// A loopback listener whose accepted connections stay open (the kernel accepts them).
struct Listener {
  network::FileDescriptor fd = *network::createListenSocket(*common::SocketAddress::parse("127.0.0.1", 0), 16, false);
  uint16_t port = 0;
  Listener() {
    sockaddr_in a{};
    socklen_t len = sizeof a;
    ::getsockname(fd.get(), reinterpret_cast<sockaddr*>(&a), &len);
    port = ntohs(a.sin_port);
  }
};

// Runs the loop until `done()` holds (checked every 2 ms) or `limit` passes; returns how
// long that took.
inline std::chrono::milliseconds runUntil(event::Dispatcher& d, const std::function<bool()>& done,
                                          std::chrono::milliseconds limit) {
  auto start = std::chrono::steady_clock::now();
  auto poll = d.createTimer([&] {
    if (done() || std::chrono::steady_clock::now() - start > limit) d.exit();
  });
  poll->enable(std::chrono::milliseconds(2), std::chrono::milliseconds(2));
  d.run();
  return std::chrono::duration_cast<std::chrono::milliseconds>(std::chrono::steady_clock::now() - start);
}

}  // namespace culvert::upstream::testing
