#include "agent/capture_plan.h"

namespace culvert::agent {

CapturePlan planCapture(const config::ListenerTable& listeners) {
  CapturePlan plan;
  for (const auto& [name, listener] : listeners.by_name) {
    if (listener->bind_to_port) continue;
    const auto& address = listener->address;
    if (!address.isAnyAddress() || listener->filter_chains.empty()) {
      plan.destinations.push_back(address);
      continue;
    }
    std::vector<ebpf::CapturedPrefix> narrowed;
    bool whole_port = false;
    for (const auto& chain : listener->filter_chains) {
      if (chain.match.prefix_ranges.empty()) {
        whole_port = true;  // this chain takes any destination on the port
        break;
      }
      for (const auto& range : chain.match.prefix_ranges) {
        if (range.prefix.family() == address.family()) narrowed.push_back({range, address.port()});
      }
    }
    if (whole_port) {
      plan.destinations.push_back(address);
    } else {
      plan.prefixes.insert(plan.prefixes.end(), narrowed.begin(), narrowed.end());
    }
  }
  return plan;
}

}  // namespace culvert::agent
