#pragma once

#include <vector>

#include "ebpf/loader/capture_program.h"
#include "proxy/config/snapshot.h"

namespace culvert::agent {

// What the BPF captured-destination maps hold for a listener table (DESIGN.md §3):
// each virtual listener (bind_to_port: false) captures its address; an any-IP listener
// (0.0.0.0 / ::) whose every filter chain names destination prefix ranges captures
// only those prefixes on its port (filter_chain_match narrows it). Ranges of the other
// address family than the listener's can never match its connections and are left out.
struct CapturePlan {
  std::vector<common::SocketAddress> destinations;
  std::vector<ebpf::CapturedPrefix> prefixes;
};

CapturePlan planCapture(const config::ListenerTable& listeners);

}  // namespace culvert::agent
