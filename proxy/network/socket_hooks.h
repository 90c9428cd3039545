#pragma once

#include <cstdint>
#include <optional>

#include "proxy/common/error.h"
#include "proxy/common/socket_address.h"

namespace culvert::network {

// Marks a socket as culvert's own, so the capture programs never redirect it (the BPF
// sk_storage tag; DESIGN.md §2). Implemented by the agent over ebpf/loader: proxy/*
// never depends on ebpf.
class SocketTagger {
public:
  virtual ~SocketTagger() = default;
  virtual common::Result<void> tag(int fd) = 0;
};

// Recovers a captured connection's original destination, and forgets it (each record is
// read once). The record is keyed by the pod's netns cookie and the client's address,
// which the caller already has (the pod it accepted for, the address accept4 returned).
class OriginalDestinationSource {
public:
  virtual ~OriginalDestinationSource() = default;
  virtual std::optional<common::SocketAddress> takeOriginalDestination(uint64_t netns_cookie,
                                                                       const common::SocketAddress& client) = 0;
};

}  // namespace culvert::network
