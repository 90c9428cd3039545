#include "proxy/upstream/dns_cluster.h"

#include <spdlog/spdlog.h>

#include <algorithm>
#include <limits>

namespace culvert::upstream {

using std::chrono::milliseconds;

namespace {

class DispatcherDnsTimer : public DnsTimer {
public:
  DispatcherDnsTimer(event::Dispatcher& dispatcher, std::function<void()> cb) : timer_(dispatcher.createTimer(std::move(cb))) {}
  void enable(milliseconds after) override { timer_->enable(after); }
  void disable() override { timer_->disable(); }

private:
  std::unique_ptr<event::Timer> timer_;
};

}  // namespace

DnsTimerFactory dispatcherDnsTimers(event::Dispatcher& dispatcher) {
  return [&dispatcher](std::function<void()> cb) -> std::unique_ptr<DnsTimer> {
    return std::make_unique<DispatcherDnsTimer>(dispatcher, std::move(cb));
  };
}

struct DnsCluster::Target {
  config::DnsResolution::Target config;
  std::vector<config::Endpoint> hosts;
  std::unique_ptr<DnsQuery> query;
  std::unique_ptr<DnsTimer> timer;
  uint32_t failure_retry = 1;  // Envoy's jittered back-off: the next retry's exponent
};

DnsCluster::DnsCluster(std::string name, bool logical, config::DnsResolution dns, DnsResolver& resolver,
                       DnsTimerFactory timers, Random random, Stats stats, OnChange on_change)
    : name_(std::move(name)),
      logical_(logical),
      dns_(std::move(dns)),
      resolver_(resolver),
      timers_(std::move(timers)),
      random_(random ? std::move(random) : defaultRandom()),
      stats_(stats),
      on_change_(std::move(on_change)) {
  for (const auto& config : dns_.targets) {
    auto target = std::make_unique<Target>();
    target->config = config;
    target->timer = timers_([this, t = target.get()] { resolve(*t); });
    targets_.push_back(std::move(target));
  }
}

DnsCluster::~DnsCluster() = default;

void DnsCluster::adoptHosts(const DnsCluster& previous) {
  if (previous.logical_ != logical_ || previous.dns_.targets != dns_.targets) return;
  for (size_t i = 0; i < targets_.size(); ++i) targets_[i]->hosts = previous.targets_[i]->hosts;
  endpoints_ = previous.endpoints_;
  if (stats_.hosts) stats_.hosts->set(static_cast<int64_t>(endpoints_.size()));
}

void DnsCluster::start() {
  for (auto& target : targets_) resolve(*target);
}

void DnsCluster::resolve(Target& target) {
  target.timer->disable();
  target.query = resolver_.resolve(target.config.hostname, dns_.lookup_family,
                                    [this, &target](DnsResponse response) { onResponse(target, std::move(response)); });
}

milliseconds DnsCluster::failureDelay(Target& target) {
  if (!dns_.failure_base_interval) return dns_.refresh_rate;
  // Fully jittered exponential back-off: uniform in [0, (2^k - 1) * base), capped at max.
  const uint64_t base = static_cast<uint64_t>(dns_.failure_base_interval->count());
  const uint64_t max = static_cast<uint64_t>(dns_.failure_max_interval.count());
  const uint64_t multiplier = (uint64_t{1} << std::min<uint32_t>(target.failure_retry, 62)) - 1;
  const uint64_t ceiling = multiplier > std::numeric_limits<uint64_t>::max() / base ? max : multiplier * base;
  if (ceiling <= max) ++target.failure_retry;
  return milliseconds(std::min<uint64_t>(random_() % std::max<uint64_t>(ceiling, 1), max));
}

void DnsCluster::onResponse(Target& target, DnsResponse response) {
  target.query.reset();
  if (stats_.resolutions) stats_.resolutions->inc();
  // LOGICAL_DNS needs an address: an empty answer keeps the last one, as a failure does.
  if (!response.ok || (logical_ && response.records.empty())) {
    if (stats_.failures) stats_.failures->inc();
    auto delay = failureDelay(target);
    spdlog::warn("cluster {}: resolving {} failed ({}); keeping {} hosts, retrying in {} ms", name_,
                 target.config.hostname, response.ok ? "no address" : response.error, target.hosts.size(),
                 delay.count());
    target.timer->enable(delay);
    return;
  }
  target.failure_retry = 1;
  std::vector<config::Endpoint> hosts;
  std::chrono::seconds min_ttl = std::chrono::seconds::max();
  for (const auto& record : response.records) {
    auto address = common::SocketAddress::parse(record.address.ip(), target.config.port);
    if (!address) continue;
    config::Endpoint endpoint;
    endpoint.address = *address;
    endpoint.weight = target.config.weight;
    endpoint.priority = target.config.priority;
    endpoint.locality = target.config.locality;
    hosts.push_back(endpoint);
    min_ttl = std::min(min_ttl, record.ttl);
    if (logical_) break;  // the first address only
  }
  target.hosts = std::move(hosts);
  rebuild();
  auto next = dns_.refresh_rate;
  if (dns_.respect_dns_ttl && !response.records.empty() && min_ttl > std::chrono::seconds(0)) {
    next = std::chrono::duration_cast<milliseconds>(min_ttl);
  }
  target.timer->enable(next);
}

void DnsCluster::rebuild() {
  std::vector<config::Endpoint> next;
  for (const auto& target : targets_) next.insert(next.end(), target->hosts.begin(), target->hosts.end());
  auto key = [](const std::vector<config::Endpoint>& v) {
    std::string out;
    for (const auto& e : v) {
      out += e.address.toString() + "/" + std::to_string(e.weight) + "/" + std::to_string(e.priority) + "/" +
             std::to_string(e.locality) + " ";
    }
    return out;
  };
  auto before = key(endpoints_);
  auto after = key(next);
  if (before == after) return;
  spdlog::info("cluster {}: DNS hosts now [{}] (were [{}])", name_, after, before);
  endpoints_ = std::move(next);
  if (stats_.hosts) stats_.hosts->set(static_cast<int64_t>(endpoints_.size()));
  if (on_change_) on_change_();
}

// --- DnsClusterSet ---

struct DnsClusterSet::Entry {
  std::unique_ptr<DnsResolver> resolver;  // outlives `cluster`, which holds queries on it
  std::unique_ptr<DnsCluster> cluster;
  std::shared_ptr<const config::Cluster> source;  // as configured
  std::shared_ptr<const config::Cluster> merged;  // with the resolved endpoints
  std::vector<config::Endpoint> merged_from;
};

DnsClusterSet::DnsClusterSet(Options options) : options_(std::move(options)) {
  if (!options_.random) options_.random = defaultRandom();
}

DnsClusterSet::~DnsClusterSet() = default;

void DnsClusterSet::update(const config::ClusterTable& clusters) {
  std::map<std::string, std::unique_ptr<Entry>> next;
  for (const auto& [name, cluster] : clusters.by_name) {
    if (!cluster->dns) continue;
    const bool logical = cluster->type == config::ClusterType::LogicalDns;
    auto it = clusters_.find(name);
    if (it != clusters_.end() && it->second->cluster && it->second->cluster->logical() == logical &&
        it->second->cluster->dns() == *cluster->dns) {
      next[name] = std::move(it->second);
      continue;
    }
    auto entry = std::make_unique<Entry>();
    auto resolver = options_.resolvers(*cluster->dns);
    if (!resolver) {
      spdlog::error("cluster {}: no DNS resolver: {}; it has no endpoints", name, resolver.error().describe());
      next[name] = std::move(entry);
      continue;
    }
    entry->resolver = std::move(*resolver);
    DnsCluster::Stats stats;
    if (options_.stats) {
      common::Labels labels{{"cluster", name}};
      stats.resolutions = &options_.stats->counter("culvert_cluster_dns_resolutions_total", labels,
                                                   "DNS resolutions of a STRICT_DNS/LOGICAL_DNS cluster's hostnames");
      stats.failures = &options_.stats->counter("culvert_cluster_dns_resolution_failures_total", labels,
                                                "DNS resolutions that failed (the last hosts were kept)");
      stats.hosts = &options_.stats->gauge("culvert_cluster_dns_hosts", labels,
                                           "Hosts a DNS cluster resolved to last");
    }
    entry->cluster = std::make_unique<DnsCluster>(name, logical, *cluster->dns, *entry->resolver, options_.timers,
                                                  options_.random, stats, options_.on_change);
    if (it != clusters_.end() && it->second->cluster) entry->cluster->adoptHosts(*it->second->cluster);
    next[name] = std::move(entry);
    next[name]->cluster->start();
  }
  // Removed or changed clusters: their queries are cancelled with them.
  clusters_ = std::move(next);
}

std::shared_ptr<const config::ClusterTable> DnsClusterSet::resolve(
    std::shared_ptr<const config::ClusterTable> clusters) {
  if (clusters_.empty()) return clusters;
  auto out = std::make_shared<config::ClusterTable>(*clusters);
  for (auto& [name, cluster] : out->by_name) {
    auto it = clusters_.find(name);
    if (it == clusters_.end() || !cluster->dns) continue;
    auto& entry = *it->second;
    const auto& resolved = entry.cluster ? entry.cluster->endpoints() : entry.merged_from;
    auto same = [](const std::vector<config::Endpoint>& a, const std::vector<config::Endpoint>& b) {
      return std::equal(a.begin(), a.end(), b.begin(), b.end(), [](const auto& x, const auto& y) {
        return x.address == y.address && x.weight == y.weight && x.priority == y.priority && x.locality == y.locality;
      });
    };
    if (entry.source != cluster || !entry.merged || !same(entry.merged_from, resolved)) {
      auto merged = std::make_shared<config::Cluster>(*cluster);
      merged->endpoints = resolved;
      // A locality holds what its names resolved to (its size for locality weighting).
      for (auto& locality : merged->localities) locality.hosts = 0;
      for (const auto& endpoint : merged->endpoints) {
        if (endpoint.locality < merged->localities.size()) ++merged->localities[endpoint.locality].hosts;
      }
      entry.source = cluster;
      entry.merged = merged;
      entry.merged_from = resolved;
    }
    cluster = entry.merged;
  }
  return out;
}

}  // namespace culvert::upstream
