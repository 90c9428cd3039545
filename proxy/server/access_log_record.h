#pragma once

#include <optional>
#include <string>

#include "proxy/accesslog/stream_info.h"
#include "proxy/common/socket_address.h"
#include "proxy/server/pod.h"

namespace culvert::server {

// What every access-log record of one downstream connection shares: who and where.
struct ConnectionLogFacts {
  // The pod's enrolled IP with the client's port (the capture redirect makes the socket's
  // peer 127.0.0.1); a connection to a bound listener keeps its real peer.
  std::string remote_address;
  // The original destination of a captured connection, else the socket's local address.
  std::string local_address;
};

ConnectionLogFacts connectionLogFacts(int fd, const Pod& pod,
                                      const std::optional<common::SocketAddress>& original_destination);

// Starts a record: time, protocol, and the connection's and pod's facts.
void beginRecord(accesslog::StreamInfo& info, const ConnectionLogFacts& facts, const Pod& pod, std::string protocol,
                 accesslog::StreamInfo::SteadyTime now);

}  // namespace culvert::server
