#pragma once

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

// Recovers a captured connection's original destination from an accepted socket, and
// forgets it (each record is read once).
class OriginalDestinationSource {
public:
  virtual ~OriginalDestinationSource() = default;
  virtual std::optional<common::SocketAddress> takeOriginalDestination(int accepted_fd) = 0;
};

}  // namespace culvert::network
