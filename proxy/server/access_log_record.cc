#include "proxy/server/access_log_record.h"

#include <arpa/inet.h>
#include <netinet/in.h>
#include <sys/socket.h>

namespace culvert::server {

namespace {

std::optional<std::pair<std::string, uint16_t>> socketAddress(int fd, bool peer) {
  sockaddr_storage ss{};
  socklen_t len = sizeof ss;
  int rc = peer ? ::getpeername(fd, reinterpret_cast<sockaddr*>(&ss), &len)
                : ::getsockname(fd, reinterpret_cast<sockaddr*>(&ss), &len);
  if (rc != 0) return std::nullopt;
  char buf[INET6_ADDRSTRLEN] = {};
  if (ss.ss_family == AF_INET) {
    auto* in = reinterpret_cast<sockaddr_in*>(&ss);
    ::inet_ntop(AF_INET, &in->sin_addr, buf, sizeof buf);
    return std::make_pair(std::string(buf), ntohs(in->sin_port));
  }
  if (ss.ss_family == AF_INET6) {
    auto* in6 = reinterpret_cast<sockaddr_in6*>(&ss);
    ::inet_ntop(AF_INET6, &in6->sin6_addr, buf, sizeof buf);
    return std::make_pair(std::string(buf), ntohs(in6->sin6_port));
  }
  return std::nullopt;
}

std::string hostPort(const std::string& ip, uint16_t port) {
  if (ip.find(':') != std::string::npos) return "[" + ip + "]:" + std::to_string(port);
  return ip + ":" + std::to_string(port);
}

}  // namespace

ConnectionLogFacts connectionLogFacts(int fd, const Pod& pod,
                                      const std::optional<common::SocketAddress>& original_destination) {
  ConnectionLogFacts facts;
  if (auto peer = socketAddress(fd, true)) {
    facts.remote_address = hostPort(pod.ip.empty() ? peer->first : pod.ip, peer->second);
  }
  if (original_destination) {
    facts.local_address = original_destination->toString();
  } else if (auto local = socketAddress(fd, false)) {
    facts.local_address = hostPort(local->first, local->second);
  }
  return facts;
}

void beginRecord(accesslog::StreamInfo& info, const ConnectionLogFacts& facts, const Pod& pod, std::string protocol,
                 accesslog::StreamInfo::SteadyTime now) {
  info = accesslog::StreamInfo{};
  info.begin(now);
  info.protocol = std::move(protocol);
  info.downstream_remote_address = facts.remote_address;
  info.downstream_local_address = facts.local_address;
  info.tenant = pod.tenant ? pod.tenant->name : std::string();
  info.pod_namespace = pod.namespace_name;
  info.pod_name = pod.name;
  info.pod_ip = pod.ip;
}

}  // namespace culvert::server
