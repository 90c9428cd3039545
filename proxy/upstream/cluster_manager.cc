#include "proxy/upstream/cluster_manager.h"

#include <algorithm>

namespace culvert::upstream {

void ClusterManager::update(std::shared_ptr<const config::ClusterTable> clusters) {
  std::map<std::string, Entry, std::less<>> next;
  for (const auto& [name, cluster] : clusters->by_name) {
    auto& entry = next[name];
    if (auto it = clusters_.find(name); it != clusters_.end() && it->second.cluster->endpoints.size() == cluster->endpoints.size()) {
      entry.balancer = it->second.balancer;
    }
    entry.cluster = cluster;
  }
  clusters_ = std::move(next);
  table_ = std::move(clusters);
}

std::expected<ClusterManager::Selection, ClusterManager::PickError> ClusterManager::pickEndpoint(std::string_view name,
                                                                                              HostsToAvoid avoid) {
  auto it = clusters_.find(name);
  if (it == clusters_.end()) return std::unexpected(PickError::NoCluster);
  auto& entry = it->second;
  if (entry.cluster->type == config::ClusterType::OriginalDst) return Selection{entry.cluster, {}, true};
  int index = entry.balancer.pick(entry.cluster->endpoints);
  if (index < 0) return std::unexpected(PickError::NoHealthyEndpoint);
  auto tried = [&](int i) {
    return avoid.tried && std::ranges::find(*avoid.tried, entry.cluster->endpoints[static_cast<size_t>(i)].address) !=
                              avoid.tried->end();
  };
  for (uint32_t extra = 0; extra < avoid.extra_picks && tried(index); ++extra) {
    index = entry.balancer.pick(entry.cluster->endpoints);
  }
  return Selection{entry.cluster, entry.cluster->endpoints[static_cast<size_t>(index)]};
}

}  // namespace culvert::upstream
