#pragma once

// STRICT_DNS and LOGICAL_DNS clusters: when to resolve, what the answers become, and
// the cluster tables the workers get. Runs on the main thread; the workers see results
// the way they see EDS updates (a new cluster table, endpoint-removal drain included).

#include <chrono>
#include <functional>
#include <map>
#include <memory>
#include <string>
#include <vector>

#include "proxy/common/stats.h"
#include "proxy/config/snapshot.h"
#include "proxy/event/dispatcher.h"
#include "proxy/upstream/dns_resolver.h"
#include "proxy/upstream/load_balancer.h"

namespace culvert::upstream {

// A one-shot timer; tests fire it by hand.
class DnsTimer {
public:
  virtual ~DnsTimer() = default;
  virtual void enable(std::chrono::milliseconds after) = 0;
  virtual void disable() = 0;
};
using DnsTimerFactory = std::function<std::unique_ptr<DnsTimer>(std::function<void()> on_fire)>;
// Timers on a Dispatcher's loop.
DnsTimerFactory dispatcherDnsTimers(event::Dispatcher& dispatcher);

// One DNS cluster's resolution loop, per lb_endpoint (target): resolve; on an answer,
// the target's hosts become its addresses (STRICT_DNS: all; LOGICAL_DNS: the first), each
// with the target's weight, priority and locality (its load_assignment entry's), and
// the next resolution is due after dns_refresh_rate, or after the answer's smallest TTL
// with respect_dns_ttl; on a failure the last hosts stay and the next resolution is due
// after dns_failure_refresh_rate's jittered back-off (dns_refresh_rate when unset).
class DnsCluster {
public:
  using OnChange = std::function<void()>;
  struct Stats {
    common::Counter* resolutions = nullptr;
    common::Counter* failures = nullptr;
    common::Gauge* hosts = nullptr;
  };
  DnsCluster(std::string name, bool logical, config::DnsResolution dns, DnsResolver& resolver, DnsTimerFactory timers,
             Random random, Stats stats, OnChange on_change);
  ~DnsCluster();

  // Takes over the hosts `previous` resolved for the same targets (a cluster whose
  // refresh or resolver settings changed), so it serves them until its own answers come.
  void adoptHosts(const DnsCluster& previous);
  // Resolves every target now.
  void start();
  // What resolved last, in target order (empty before the first answer).
  const std::vector<config::Endpoint>& endpoints() const { return endpoints_; }
  bool logical() const { return logical_; }
  const config::DnsResolution& dns() const { return dns_; }

private:
  struct Target;
  void resolve(Target& target);
  void onResponse(Target& target, DnsResponse response);
  std::chrono::milliseconds failureDelay(Target& target);
  void rebuild();

  std::string name_;
  bool logical_;
  config::DnsResolution dns_;
  DnsResolver& resolver_;
  DnsTimerFactory timers_;
  Random random_;
  Stats stats_;
  OnChange on_change_;
  std::vector<std::unique_ptr<Target>> targets_;
  std::vector<config::Endpoint> endpoints_;
};

// Every DNS cluster of the configuration, kept across updates while its name, type and
// resolution settings stay the same.
class DnsClusterSet {
public:
  using ResolverFactory = std::function<common::Result<std::unique_ptr<DnsResolver>>(const config::DnsResolution&)>;
  struct Options {
    ResolverFactory resolvers;
    DnsTimerFactory timers;
    Random random;                         // defaultRandom() when empty
    common::StatsStore* stats = nullptr;   // none when null
    std::function<void()> on_change;       // a DNS cluster's endpoints changed
  };
  explicit DnsClusterSet(Options options);
  ~DnsClusterSet();

  // Starts, keeps or stops resolution for the DNS clusters of `clusters`.
  void update(const config::ClusterTable& clusters);
  // `clusters` with every DNS cluster's endpoints set to what resolved last. The same
  // table when it has no DNS cluster; an unchanged DNS cluster keeps its object, so the
  // workers' per-cluster state (health checkers) is not rebuilt.
  std::shared_ptr<const config::ClusterTable> resolve(std::shared_ptr<const config::ClusterTable> clusters);
  size_t size() const { return clusters_.size(); }

private:
  struct Entry;
  Options options_;
  std::map<std::string, std::unique_ptr<Entry>> clusters_;
};

}  // namespace culvert::upstream
