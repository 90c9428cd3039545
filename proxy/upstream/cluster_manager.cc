#include "proxy/upstream/cluster_manager.h"

#include <algorithm>
#include <cmath>

#include <spdlog/spdlog.h>

namespace culvert::upstream {

struct ClusterState {
  std::shared_ptr<const config::Cluster> cluster;
  std::shared_ptr<ClusterResources> resources;
  std::vector<uint32_t> active_requests;                 // by endpoint index; LEAST_REQUEST only
  std::vector<std::unique_ptr<LoadBalancer>> balancers;  // by priority
  std::unique_ptr<OutlierDetector> outlier;  // only when configured: it is large
  std::vector<bool> hc_unhealthy;  // by endpoint index: failed active health checks
  // Endpoint indices sorted by address (ties in endpoint order), to find an endpoint by
  // address (health checks, outlier detection, the pool asking whether an endpoint is
  // still live). Built on the first lookup, so an update costs nothing here: four bytes
  // per endpoint per worker, where a map of address strings took ~100.
  std::vector<uint32_t> by_address;
  bool by_address_built = false;
  // Derived from health; rebuilt when an ejection starts or ends.
  std::vector<std::vector<uint32_t>> all_hosts;      // by priority
  std::vector<std::vector<uint32_t>> healthy_hosts;  // by priority
  // Locality weighting by scheduler only (not RING_HASH / MAGLEV, whose ring or table
  // carries the localities' weights): a balancer and the healthy hosts per locality, and
  // each priority's locality scheduler (rebuilt with the host sets).
  std::vector<std::unique_ptr<LoadBalancer>> locality_balancers;  // by locality
  std::vector<std::vector<uint32_t>> healthy_by_locality;
  std::vector<LocalityScheduler> locality_schedulers;  // by priority
  uint64_t hosts_version = 0;  // PickInput::hosts_version: new at each rebuild, odd
  // Slow start only: when each endpoint joined (by index), the end of the last window, and
  // the weights handed to the balancer while a window is open.
  std::vector<ClusterManager::Clock::time_point> joined_at;
  ClusterManager::Clock::time_point slow_start_until{};
  std::vector<double> slow_start_weights;
  PriorityLoad load;
  bool dirty = true;
  // Metrics (null without a stats store).
  common::StatsStore* stats = nullptr;
  common::Counter* cx_overflow = nullptr;
  common::Counter* rq_pending_overflow = nullptr;
  common::Counter* lb_healthy_panic = nullptr;
  common::Gauge* ejections_active = nullptr;
  int64_t ejections_reported = 0;  // this worker's share of ejections_active
};

namespace {

bool hashes(const config::Cluster& cluster) {
  return cluster.lb_policy == config::LbPolicy::RingHash || cluster.lb_policy == config::LbPolicy::Maglev;
}

// Locality weighting as a pick of a locality, then of a host in it (ROUND_ROBIN,
// LEAST_REQUEST, RANDOM). RING_HASH and MAGLEV weigh localities in their ring or table.
bool schedulesLocalities(const config::Cluster& cluster) { return cluster.locality_weighted && !hashes(cluster); }

// Whether b's balancers may carry on from a's: same endpoints and the same balancer
// settings (a balancer holds its policy's config).
bool sameEndpoints(const config::Cluster& a, const config::Cluster& b) {
  if (a.endpoints.size() != b.endpoints.size() || a.lb_policy != b.lb_policy) return false;
  if (a.locality_weighted != b.locality_weighted || a.localities != b.localities) return false;
  if (a.least_request.choice_count != b.least_request.choice_count ||
      a.least_request.active_request_bias != b.least_request.active_request_bias ||
      a.ring_hash.minimum_ring_size != b.ring_hash.minimum_ring_size ||
      a.ring_hash.maximum_ring_size != b.ring_hash.maximum_ring_size || a.maglev_table_size != b.maglev_table_size) {
    return false;
  }
  for (size_t i = 0; i < a.endpoints.size(); ++i) {
    const auto& x = a.endpoints[i];
    const auto& y = b.endpoints[i];
    if (x.weight != y.weight || x.priority != y.priority || x.locality != y.locality || x.address != y.address) {
      return false;
    }
  }
  return true;
}

std::vector<uint32_t> sortedByAddress(const std::vector<config::Endpoint>& endpoints) {
  std::vector<uint32_t> order(endpoints.size());
  for (uint32_t i = 0; i < order.size(); ++i) order[i] = i;
  std::ranges::stable_sort(order, [&](uint32_t a, uint32_t b) { return endpoints[a].address < endpoints[b].address; });
  return order;
}

// The first endpoint with this address, if any.
std::optional<uint32_t> findEndpoint(ClusterState& state, const common::SocketAddress& address) {
  const auto& endpoints = state.cluster->endpoints;
  if (!state.by_address_built) {
    state.by_address = sortedByAddress(endpoints);
    state.by_address_built = true;
  }
  auto it = std::ranges::lower_bound(state.by_address, address, std::less<>{},
                                     [&](uint32_t i) -> const common::SocketAddress& { return endpoints[i].address; });
  if (it == state.by_address.end() || endpoints[*it].address != address) return std::nullopt;
  return *it;
}

void countEjection(ClusterState& state, EjectionReason reason) {
  spdlog::info("cluster {}: outlier detection ejected an endpoint ({})", state.cluster->name, toString(reason));
  if (!state.stats) return;
  // Rare: the labelled lookup is affordable here.
  state.stats
      ->counter("culvert_outlier_detection_ejections_total",
                {{"cluster", state.cluster->name}, {"reason", std::string(toString(reason))}},
                "Endpoints ejected by outlier detection, per cluster and reason (each worker ejects on its own)")
      .inc();
}

// Moves this worker's share of the ejections_active gauge to `count`.
void reportEjections(ClusterState& state, int64_t count) {
  if (state.ejections_active) state.ejections_active->add(count - state.ejections_reported);
  state.ejections_reported = count;
}

int64_t ejectedNow(const ClusterState& state) {
  return state.outlier ? static_cast<int64_t>(state.outlier->ejectedCount()) : 0;
}

}  // namespace

ActiveRequest::ActiveRequest(std::shared_ptr<ClusterState> state, uint32_t host, ResourceHold hold)
    : state_(std::move(state)), host_(host), hold_(std::move(hold)) {
  if (state_ && host_ < state_->active_requests.size()) ++state_->active_requests[host_];
}

ActiveRequest& ActiveRequest::operator=(ActiveRequest&& other) noexcept {
  if (this != &other) {
    reset();
    state_ = std::move(other.state_);
    host_ = other.host_;
    hold_ = std::move(other.hold_);
  }
  return *this;
}

ActiveRequest::~ActiveRequest() { reset(); }

void ActiveRequest::reset() {
  if (state_ && host_ < state_->active_requests.size() && state_->active_requests[host_] > 0) {
    --state_->active_requests[host_];
  }
  state_.reset();
  hold_.reset();
}

ClusterManager::ClusterManager() : ClusterManager(Options{}) {}

ClusterManager::ClusterManager(Options options) : options_(std::move(options)) {
  if (!options_.resources) options_.resources = std::make_shared<ResourceRegistry>();
  if (!options_.random) options_.random = defaultRandom();
  if (!options_.now) options_.now = [] { return Clock::now(); };
}

ClusterManager::~ClusterManager() = default;

namespace {

// Whether a cluster needs this worker's state from the moment it is published, not only
// from its first pick: slow start counts an endpoint's window from when it appears, and
// health checks and outlier detection run whether or not this worker picks.
bool needsStateAtPublish(const config::Cluster& cluster) {
  return cluster.slow_start || cluster.health_check || cluster.outlier_detection;
}

}  // namespace

void ClusterManager::update(std::shared_ptr<const config::ClusterTable> clusters) {
  std::map<std::string, std::shared_ptr<ClusterState>, std::less<>> next;
  for (const auto& [name, cluster] : clusters->by_name) {
    auto old_it = clusters_.find(name);
    ClusterState* old = old_it == clusters_.end() ? nullptr : old_it->second.get();
    if (old && old->cluster == cluster) {
      next[name] = old_it->second;
      continue;
    }
    if (!old && !needsStateAtPublish(*cluster)) {
      // Made at the first pick on this worker (state()): most of a node's clusters are
      // idle on most workers, and their state was ~600 bytes each per worker. Their
      // series still exist from publish on.
      registerMetrics(name);
      continue;
    }
    auto state = makeState(name, cluster, old);
    if (old) reportEjections(*old, 0);
    reportEjections(*state, ejectedNow(*state));
    next[name] = std::move(state);
  }
  for (const auto& [name, old] : clusters_) {
    if (!next.contains(name)) reportEjections(*old, 0);
  }
  clusters_ = std::move(next);
  last_hit_ = clusters_.end();
  table_ = std::move(clusters);
}

std::shared_ptr<ClusterState> ClusterManager::makeState(const std::string& name,
                                                        std::shared_ptr<const config::Cluster> cluster, ClusterState* old) {
  auto state = std::make_shared<ClusterState>();
  state->cluster = cluster;
  state->resources = options_.resources->get(name);
  // Only LEAST_REQUEST reads requests in flight: other clusters skip the counting and
  // its 4 bytes per endpoint per worker (ActiveRequest ignores an empty vector).
  if (cluster->lb_policy == config::LbPolicy::LeastRequest) state->active_requests.assign(cluster->endpoints.size(), 0);
  uint32_t levels = 0;
  for (const auto& endpoint : cluster->endpoints) levels = std::max(levels, endpoint.priority + 1);
  if (old && sameEndpoints(*old->cluster, *cluster) && old->balancers.size() == levels) {
    // Keeps round-robin positions and rings. Requests in flight stay counted on the old
    // state (their ActiveRequest releases there), so the new one starts from zero.
    state->balancers = std::move(old->balancers);
    state->locality_balancers = std::move(old->locality_balancers);
  } else {
    for (uint32_t p = 0; p < levels; ++p) state->balancers.push_back(makeLoadBalancer(*cluster, options_.random));
    if (schedulesLocalities(*cluster)) {
      for (size_t l = 0; l < cluster->localities.size(); ++l) {
        state->locality_balancers.push_back(makeLoadBalancer(*cluster, options_.random));
      }
    }
  }
  if (cluster->slow_start) noteJoinTimes(*state, old);
  state->hc_unhealthy.assign(cluster->endpoints.size(), false);
  if (old && cluster->health_check) {
    for (uint32_t index = 0; index < cluster->endpoints.size(); ++index) {
      if (auto was = findEndpoint(*old, cluster->endpoints[index].address)) {
        state->hc_unhealthy[index] = old->hc_unhealthy[*was];
      }
    }
  }
  if (cluster->outlier_detection) {
    state->outlier = std::make_unique<OutlierDetector>(*cluster->outlier_detection, cluster->endpoints.size(),
                                                       options_.random, options_.now());
    if (old && old->outlier) {
      for (uint32_t index = 0; index < cluster->endpoints.size(); ++index) {
        if (auto was = findEndpoint(*old, cluster->endpoints[index].address)) {
          state->outlier->adoptHost(index, *old->outlier, *was);
        }
      }
    }
  }
  if (auto metrics = registerMetrics(name)) {
    state->stats = options_.stats;
    state->cx_overflow = metrics->cx_overflow;
    state->rq_pending_overflow = metrics->rq_pending_overflow;
    state->lb_healthy_panic = metrics->lb_healthy_panic;
    state->ejections_active = metrics->ejections_active;
  }
  return state;
}

std::optional<ClusterManager::Metrics> ClusterManager::registerMetrics(const std::string& name) {
  if (!options_.stats) return std::nullopt;
  common::Labels labels{{"cluster", name}};
  auto& stats = *options_.stats;
  return Metrics{
      &stats.counter("culvert_upstream_cx_overflow_total", labels,
                     "Requests refused (503) because the cluster's circuit breaker max_connections was reached"),
      &stats.counter("culvert_upstream_rq_pending_overflow_total", labels,
                     "Requests refused (503) by the cluster's circuit breakers max_pending_requests or max_requests"),
      &stats.counter("culvert_upstream_lb_healthy_panic_total", labels,
                     "Picks made in panic mode (too few healthy endpoints: all endpoints of the priority used)"),
      &stats.gauge("culvert_outlier_detection_ejections_active", labels,
                   "Endpoints currently ejected by outlier detection, summed over workers"),
  };
}

// An endpoint joins when it first appears in the cluster on this worker; one that stays
// across an update keeps its time. Endpoints of a cluster that had no slow start before
// count as long settled.
void ClusterManager::noteJoinTimes(ClusterState& state, ClusterState* old) {
  const auto& endpoints = state.cluster->endpoints;
  const auto now = options_.now();
  const auto settled = now - state.cluster->slow_start->window;
  state.joined_at.assign(endpoints.size(), now);
  for (uint32_t index = 0; index < endpoints.size(); ++index) {
    if (!old) continue;
    if (auto was = findEndpoint(*old, endpoints[index].address)) {
      state.joined_at[index] = old->joined_at.empty() ? settled : old->joined_at[*was];
    }
  }
  state.slow_start_until = Clock::time_point{};
  for (auto joined : state.joined_at) {
    state.slow_start_until = std::max(state.slow_start_until, joined + state.cluster->slow_start->window);
  }
}

// Envoy's slow-start weight: weight × max(min_weight_percent, time_factor^(1/aggression)),
// time_factor = max(seconds since joining, 1) / window seconds, for endpoints in a window.
void ClusterManager::slowStartWeights(ClusterState& state, Clock::time_point now) {
  const auto& endpoints = state.cluster->endpoints;
  const auto& slow = *state.cluster->slow_start;
  const double window = std::chrono::duration<double>(slow.window).count();
  state.slow_start_weights.resize(endpoints.size());
  for (uint32_t i = 0; i < endpoints.size(); ++i) {
    double weight = endpoints[i].weight == 0 ? 1 : endpoints[i].weight;
    auto age = now - state.joined_at[i];
    if (age < slow.window) {
      double time_factor = std::max(std::chrono::duration<double>(age).count(), 1.0) / window;
      weight *= std::max(slow.min_weight_percent / 100.0, std::pow(time_factor, 1.0 / slow.aggression));
    }
    state.slow_start_weights[i] = weight;
  }
}

// Per locality: its healthy hosts (in endpoint order, as healthy_hosts) and its health, then
// each priority's scheduler over its own localities.
void ClusterManager::refreshLocalities(ClusterState& state) {
  const auto& cluster = *state.cluster;
  const size_t count = cluster.localities.size();
  state.healthy_by_locality.assign(count, {});
  for (const auto& level : state.healthy_hosts) {
    for (uint32_t i : level) {
      if (uint32_t l = cluster.endpoints[i].locality; l < count) state.healthy_by_locality[l].push_back(i);
    }
  }
  std::vector<LocalityHealth> health(count);
  std::vector<std::vector<uint32_t>> members(state.balancers.size());
  for (uint32_t l = 0; l < count; ++l) {
    const auto& locality = cluster.localities[l];
    health[l] = {locality.weight, locality.hosts, static_cast<uint32_t>(state.healthy_by_locality[l].size())};
    if (locality.priority < members.size()) members[locality.priority].push_back(l);
  }
  state.locality_schedulers.clear();
  for (const auto& level : members) state.locality_schedulers.emplace_back(health, level);
}

ClusterManager::States::iterator ClusterManager::lookup(std::string_view name) const {
  if (last_hit_ != clusters_.end() && last_hit_->first == name) return last_hit_;
  // The map is a member of a const this only here: the memo needs a mutable iterator.
  auto it = const_cast<States&>(clusters_).find(name);
  if (it != clusters_.end()) last_hit_ = it;
  return it;
}

ClusterState* ClusterManager::find(std::string_view name) const {
  auto it = lookup(name);
  return it == clusters_.end() ? nullptr : it->second.get();
}

std::shared_ptr<ClusterState>* ClusterManager::state(std::string_view name) {
  if (auto it = lookup(name); it != clusters_.end()) return &it->second;
  if (!table_) return nullptr;
  auto config = table_->by_name.find(std::string(name));
  if (config == table_->by_name.end()) return nullptr;
  auto made = makeState(config->first, config->second, nullptr);
  reportEjections(*made, ejectedNow(*made));
  return &clusters_.emplace(config->first, std::move(made)).first->second;
}

const config::Cluster* ClusterManager::configOf(std::string_view name) const {
  if (auto* state = find(name)) return state->cluster.get();
  if (!table_) return nullptr;
  auto it = table_->by_name.find(std::string(name));
  return it == table_->by_name.end() ? nullptr : it->second.get();
}

void ClusterManager::refreshHostSets(ClusterState& state) {
  const auto& endpoints = state.cluster->endpoints;
  size_t levels = state.balancers.size();
  state.all_hosts.assign(levels, {});
  state.healthy_hosts.assign(levels, {});
  for (uint32_t i = 0; i < endpoints.size(); ++i) {
    uint32_t p = endpoints[i].priority;
    state.all_hosts[p].push_back(i);
    if (state.hc_unhealthy[i]) continue;
    if (!state.outlier || !state.outlier->ejected(i)) state.healthy_hosts[p].push_back(i);
  }
  std::vector<PriorityHealth> health(levels);
  for (size_t p = 0; p < levels; ++p) {
    health[p] = {static_cast<uint32_t>(state.all_hosts[p].size()), static_cast<uint32_t>(state.healthy_hosts[p].size())};
  }
  state.load = computePriorityLoad(health, state.cluster->healthy_panic_threshold);
  if (schedulesLocalities(*state.cluster)) refreshLocalities(state);
  // Odd for the healthy sets, +1 for the panic (all hosts) ones; unique in this manager,
  // so a balancer handed from an older state never mistakes a set for one it saw.
  next_hosts_version_ += 2;
  state.hosts_version = next_hosts_version_ - 1;
  state.dirty = false;
}

std::expected<ClusterManager::Selection, ClusterManager::PickError> ClusterManager::pickEndpoint(
    std::string_view name, const PickContext& context) {
  auto* found = state(name);
  if (!found) return std::unexpected(PickError::NoCluster);
  auto& state_ptr = *found;
  auto& state = *state_ptr;
  const auto& cluster = *state.cluster;

  ResourceHold request_hold;
  if (context.count_request) {
    auto& requests = state.resources->at(static_cast<uint8_t>(context.priority)).requests;
    if (!requests.tryAcquire(cluster.breakers(context.priority).max_requests)) {
      if (state.rq_pending_overflow) state.rq_pending_overflow->inc();
      return std::unexpected(PickError::Overflow);
    }
    request_hold = ResourceHold(state.resources, &requests);
  }
  if (cluster.type == config::ClusterType::OriginalDst) {
    return Selection{state.cluster, {}, true, ActiveRequest(nullptr, 0, std::move(request_hold))};
  }
  if (cluster.endpoints.empty()) return std::unexpected(PickError::NoHealthyEndpoint);

  if (state.outlier) {
    bool changed = false;
    for (auto reason : state.outlier->tick(options_.now(), changed)) countEjection(state, reason);
    if (changed) {
      state.dirty = true;
      reportEjections(state, ejectedNow(state));
    }
  }
  if (state.dirty) refreshHostSets(state);

  uint32_t priority = choosePriority(state.load.percent, context.hash ? *context.hash : options_.random());
  bool panic = state.load.panic[priority];
  const auto& hosts = panic ? state.all_hosts[priority] : state.healthy_hosts[priority];
  if (hosts.empty()) return std::unexpected(PickError::NoHealthyEndpoint);
  if (panic && state.lb_healthy_panic) state.lb_healthy_panic->inc();
  PickInput input{cluster.endpoints, hosts, &state.active_requests, context.hash,
                  state.hosts_version + (panic ? 1 : 0)};
  if (cluster.slow_start) {
    // Weights change with time inside a window: the balancer re-reads them every pick.
    if (auto now = options_.now(); now < state.slow_start_until) {
      slowStartWeights(state, now);
      input.weights = &state.slow_start_weights;
      input.hosts_version = 0;
    }
  }
  // RING_HASH / MAGLEV with locality weighting, in panic too (Envoy's thread-aware
  // balancers): the ring or table over the level's hosts weighs their localities.
  if (cluster.locality_weighted && hashes(cluster) && !cluster.localities.empty()) input.localities = &cluster.localities;
  // Locality weighting of the other policies (never in panic, as Envoy): a locality by
  // effective weight, then the balancer over its healthy hosts. Without a weighted
  // locality, the whole level.
  auto pickOnce = [&] {
    if (schedulesLocalities(cluster) && !panic) {
      if (auto locality = state.locality_schedulers[priority].pick()) {
        PickInput in_locality{input.endpoints, state.healthy_by_locality[*locality], input.active_requests,
                              input.hash,      input.hosts_version,                  input.weights};
        return state.locality_balancers[*locality]->pick(in_locality);
      }
    }
    return state.balancers[priority]->pick(input);
  };
  uint32_t index = pickOnce();
  // Locality weighting left the ring or table without a host (no weighted locality has
  // one here): no endpoint, as in Envoy.
  if (index == LoadBalancer::kNoHost) return std::unexpected(PickError::NoHealthyEndpoint);
  // retry_host_predicate previous_hosts: pick again, up to extra_picks times, while the
  // balancer lands on an endpoint a previous attempt tried; then take the last pick.
  const auto& avoid = context.avoid;
  auto tried = [&](uint32_t i) {
    return avoid.tried && std::ranges::find(*avoid.tried, cluster.endpoints[i].address) != avoid.tried->end();
  };
  for (uint32_t extra = 0; extra < avoid.extra_picks && tried(index); ++extra) index = pickOnce();
  return Selection{state.cluster, cluster.endpoints[index], false, ActiveRequest(state_ptr, index, std::move(request_hold))};
}

std::optional<ResourceHold> ClusterManager::reserveConnection(std::string_view name, config::RoutingPriority priority) {
  auto* found = state(name);
  if (!found) return ResourceHold{};
  auto* state = found->get();
  auto& connections = state->resources->at(static_cast<uint8_t>(priority)).connections;
  if (!connections.tryAcquire(state->cluster->breakers(priority).max_connections)) {
    if (state->cx_overflow) state->cx_overflow->inc();
    return std::nullopt;
  }
  return ResourceHold(state->resources, &connections);
}

std::optional<ResourceHold> ClusterManager::reservePending(std::string_view name, config::RoutingPriority priority) {
  auto* found = state(name);
  if (!found) return ResourceHold{};
  auto* state = found->get();
  auto& pending = state->resources->at(static_cast<uint8_t>(priority)).pending_requests;
  if (!pending.tryAcquire(state->cluster->breakers(priority).max_pending_requests)) {
    if (state->rq_pending_overflow) state->rq_pending_overflow->inc();
    return std::nullopt;
  }
  return ResourceHold(state->resources, &pending);
}

void ClusterManager::reportOutcome(std::string_view name, const common::SocketAddress& endpoint,
                                   const AttemptOutcome& outcome) {
  auto* state = find(name);
  if (!state || !state->outlier) return;
  auto index = findEndpoint(*state, endpoint);
  if (!index) return;  // the endpoint left meanwhile
  if (auto reason = state->outlier->report(*index, outcome, options_.now())) {
    countEjection(*state, *reason);
    reportEjections(*state, ejectedNow(*state));
    state->dirty = true;
  }
}

void ClusterManager::setHealthCheckResult(std::string_view name, const common::SocketAddress& endpoint, bool healthy) {
  auto* found = state(name);
  if (!found) return;
  auto* state = found->get();
  auto index = findEndpoint(*state, endpoint);
  if (!index) return;
  state->hc_unhealthy[*index] = !healthy;
  state->dirty = true;
}

bool ClusterManager::hasEndpoint(std::string_view name, const common::SocketAddress& endpoint) const {
  // One lookup: asked twice per pooled request (lend and release).
  auto* state = find(name);
  const auto* cluster = state ? state->cluster.get() : configOf(name);
  if (!cluster) return false;
  // LOGICAL_DNS: connections made to an earlier answer stay until they end (Envoy's one
  // logical host); only new connections use the latest address.
  if (cluster->type == config::ClusterType::LogicalDns) return true;
  if (state) return findEndpoint(*state, endpoint).has_value();
  // Not picked from on this worker yet (so no index): rare, a scan will do.
  return std::ranges::any_of(cluster->endpoints, [&](const config::Endpoint& e) { return e.address == endpoint; });
}

config::ConnectionLifetime ClusterManager::connectionLifetime(std::string_view name) const {
  const auto* cluster = configOf(name);
  return cluster ? cluster->connection_lifetime : config::ConnectionLifetime{};
}

bool ClusterManager::isEjected(std::string_view name, const common::SocketAddress& endpoint) const {
  auto* state = find(name);
  if (!state || !state->outlier) return false;
  auto index = findEndpoint(*state, endpoint);
  return index && state->outlier->ejected(*index);
}

}  // namespace culvert::upstream
