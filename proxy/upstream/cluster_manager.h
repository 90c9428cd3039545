#pragma once

#include <map>
#include <memory>
#include <optional>
#include <string>
#include <string_view>

#include "proxy/config/snapshot.h"
#include "proxy/upstream/load_balancer.h"

namespace culvert::upstream {

// One worker's view of the clusters: the configuration part plus this worker's load
// balancer state, which survives configuration updates for clusters that stay.
class ClusterManager {
public:
  void update(std::shared_ptr<const config::ClusterTable> clusters);

  struct Selection {
    std::shared_ptr<const config::Cluster> cluster;
    config::Endpoint endpoint;  // unset for ORIGINAL_DST: the caller uses the connection's
    bool original_destination = false;
  };
  enum class PickError { NoCluster, NoHealthyEndpoint };
  std::expected<Selection, PickError> pickEndpoint(std::string_view cluster_name);

private:
  struct Entry {
    std::shared_ptr<const config::Cluster> cluster;
    RoundRobinBalancer balancer;
  };
  std::shared_ptr<const config::ClusterTable> table_;
  std::map<std::string, Entry, std::less<>> clusters_;
};

}  // namespace culvert::upstream
