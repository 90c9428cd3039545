#pragma once

#include <map>
#include <memory>
#include <optional>
#include <string>
#include <string_view>

#include "proxy/config/snapshot.h"
#include "proxy/upstream/load_balancer.h"

namespace culvert::upstream {

// retry_host_predicate previous_hosts: a retry's pick re-runs the balancer up to
// extra_picks times while it lands on an endpoint already tried, then takes the last.
struct HostsToAvoid {
  const std::vector<common::SocketAddress>* tried = nullptr;
  uint32_t extra_picks = 0;
};

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
  std::expected<Selection, PickError> pickEndpoint(std::string_view cluster_name, HostsToAvoid avoid = {});

private:
  struct Entry {
    std::shared_ptr<const config::Cluster> cluster;
    RoundRobinBalancer balancer;
  };
  std::shared_ptr<const config::ClusterTable> table_;
  std::map<std::string, Entry, std::less<>> clusters_;
};

}  // namespace culvert::upstream
