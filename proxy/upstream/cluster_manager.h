#pragma once

#include <chrono>
#include <expected>
#include <functional>
#include <map>
#include <memory>
#include <optional>
#include <string>
#include <string_view>
#include <vector>

#include "proxy/common/stats.h"
#include "proxy/config/snapshot.h"
#include "proxy/upstream/load_balancer.h"
#include "proxy/upstream/locality_load.h"
#include "proxy/upstream/outlier_detector.h"
#include "proxy/upstream/priority_load.h"
#include "proxy/upstream/resource_manager.h"

namespace culvert::upstream {

class ClusterManager;

// One worker's state for one cluster: per-priority balancers, requests in flight per
// endpoint, the outlier detector and the host sets they produce.
struct ClusterState;

// A request counted against its endpoint (LEAST_REQUEST) and the cluster's max_requests
// until destroyed.
class ActiveRequest {
public:
  ActiveRequest() = default;
  ActiveRequest(std::shared_ptr<ClusterState> state, uint32_t host, ResourceHold hold);
  ActiveRequest(ActiveRequest&&) noexcept = default;
  ActiveRequest& operator=(ActiveRequest&& other) noexcept;
  ~ActiveRequest();
  void reset();

private:
  std::shared_ptr<ClusterState> state_;
  uint32_t host_ = 0;
  ResourceHold hold_;
};

// retry_host_predicate previous_hosts: a retry's pick re-runs the balancer up to
// extra_picks times while it lands on an endpoint already tried, then takes the last.
struct HostsToAvoid {
  const std::vector<common::SocketAddress>* tried = nullptr;
  uint32_t extra_picks = 0;
};

// One worker's view of the clusters: the configuration part plus this worker's load
// balancing, outlier and circuit-breaker state, which survives configuration updates for
// clusters (and endpoints) that stay.
class ClusterManager {
public:
  using Clock = std::chrono::steady_clock;
  struct Options {
    common::StatsStore* stats = nullptr;              // per-cluster counters; none when null
    std::shared_ptr<ResourceRegistry> resources;      // shared by workers; own one when null
    Random random;                                    // defaultRandom() when empty
    std::function<Clock::time_point()> now;           // Clock::now when empty
  };
  ClusterManager();
  explicit ClusterManager(Options options);
  ~ClusterManager();
  // Not copied or moved: last_hit_ is an iterator into this object's own map.
  ClusterManager(const ClusterManager&) = delete;
  ClusterManager& operator=(const ClusterManager&) = delete;

  void update(std::shared_ptr<const config::ClusterTable> clusters);

  // Request facts a pick uses.
  struct PickContext {
    std::optional<uint64_t> hash;  // from the route's hash_policy
    bool count_request = true;     // HTTP requests count against max_requests; TCP proxying does not
    HostsToAvoid avoid = {};       // a retry's previous hosts
    config::RoutingPriority priority = config::RoutingPriority::Default;  // whose max_requests
  };
  struct Selection {
    std::shared_ptr<const config::Cluster> cluster;
    config::Endpoint endpoint;  // unset for ORIGINAL_DST: the caller uses the connection's
    bool original_destination = false;
    ActiveRequest request;  // hold it for the request's lifetime
  };
  // Overflow: max_requests is reached (counted as Envoy does, in upstream_rq_pending_overflow).
  enum class PickError { NoCluster, NoHealthyEndpoint, Overflow };
  std::expected<Selection, PickError> pickEndpoint(std::string_view cluster_name, const PickContext& context);
  std::expected<Selection, PickError> pickEndpoint(std::string_view cluster_name) { return pickEndpoint(cluster_name, {}); }

  // Circuit breakers around making a new upstream connection: a connection unit (held by
  // the connection for its life) and a pending-request unit (held until it is connected).
  // Empty on overflow, which is counted.
  // Each routing priority has its own thresholds and counts.
  std::optional<ResourceHold> reserveConnection(std::string_view cluster_name,
                                                config::RoutingPriority priority = config::RoutingPriority::Default);
  std::optional<ResourceHold> reservePending(std::string_view cluster_name,
                                             config::RoutingPriority priority = config::RoutingPriority::Default);

  // The one call a session makes per upstream attempt: feeds outlier detection.
  void reportOutcome(std::string_view cluster_name, const common::SocketAddress& endpoint, const AttemptOutcome& outcome);

  // An active health check's verdict on an endpoint (combined with EDS health: EDS
  // UNHEALTHY endpoints never get here).
  void setHealthCheckResult(std::string_view cluster_name, const common::SocketAddress& endpoint, bool healthy);

  // Whether the cluster has the endpoint now (the pool's question about its connections).
  bool hasEndpoint(std::string_view cluster_name, const common::SocketAddress& endpoint) const;
  // The cluster's pooled-connection lifetime (the default for an unknown cluster).
  config::ConnectionLifetime connectionLifetime(std::string_view cluster_name) const;

  // For tests and the admin view.
  bool isEjected(std::string_view cluster_name, const common::SocketAddress& endpoint) const;

private:
  struct Metrics {
    common::Counter* cx_overflow;
    common::Counter* rq_pending_overflow;
    common::Counter* lb_healthy_panic;
    common::Gauge* ejections_active;
  };
  // The state this worker has made for the cluster, if any.
  ClusterState* find(std::string_view name) const;
  // This worker's state for the cluster, made on first use when update() did not make it;
  // null for an unknown cluster.
  std::shared_ptr<ClusterState>* state(std::string_view name);
  // The cluster's configuration, with or without state here.
  const config::Cluster* configOf(std::string_view name) const;
  std::shared_ptr<ClusterState> makeState(const std::string& name, std::shared_ptr<const config::Cluster> cluster,
                                          ClusterState* old);
  // The cluster's series (created at publish, so they show before the first pick).
  std::optional<Metrics> registerMetrics(const std::string& name);
  void refreshHostSets(ClusterState& state);
  void refreshLocalities(ClusterState& state);
  void noteJoinTimes(ClusterState& state, ClusterState* old);
  void slowStartWeights(ClusterState& state, Clock::time_point now);

  Options options_;
  std::shared_ptr<const config::ClusterTable> table_;
  using States = std::map<std::string, std::shared_ptr<ClusterState>, std::less<>>;
  // The entry named `name`, if any. A request looks its cluster up by name about seven
  // times (pick, outcome, pool checks), so the last hit is remembered: a map node stays
  // put until erased, and clusters_ loses nodes only when update() replaces it.
  States::iterator lookup(std::string_view name) const;

  States clusters_;
  mutable States::iterator last_hit_ = clusters_.end();
  uint64_t next_hosts_version_ = 0;
};

}  // namespace culvert::upstream
