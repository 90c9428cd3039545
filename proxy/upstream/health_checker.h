#pragma once

#include <cstdint>
#include <functional>
#include <memory>
#include <optional>
#include <string>
#include <string_view>
#include <vector>

#include "proxy/config/snapshot.h"
#include "proxy/event/dispatcher.h"
#include "proxy/upstream/load_balancer.h"

namespace culvert::upstream {

// Envoy's thresholds: unhealthy after unhealthy_threshold failures in a row, healthy
// again after healthy_threshold successes in a row. An endpoint starts healthy and its
// first result decides at once (Envoy: one success suffices at startup). Pure.
class HealthTracker {
public:
  HealthTracker(uint32_t healthy_threshold, uint32_t unhealthy_threshold)
      : healthy_threshold_(healthy_threshold), unhealthy_threshold_(unhealthy_threshold) {}
  // Returns true when the endpoint's health changed.
  bool record(bool success);
  bool healthy() const { return healthy_; }

private:
  uint32_t healthy_threshold_;
  uint32_t unhealthy_threshold_;
  bool healthy_ = true;
  bool first_ = true;
  uint32_t successes_ = 0;
  uint32_t failures_ = 0;
};

// The request an HTTP check sends (HTTP/1.1, Connection: close, User-Agent as Envoy's).
std::string healthCheckRequest(const config::HealthCheck& check, std::string_view cluster_name);
// The status of an HTTP/1.x response's status line once it is complete in `bytes`.
std::optional<uint32_t> responseStatus(std::string_view bytes);
bool expectedStatus(const config::HealthCheck& check, uint32_t status);

// Active health checks of one cluster's endpoints on one worker, from culvertd's own
// netns (not a pod's: a check belongs to no pod). Each endpoint is checked every
// interval (+ a random part of interval_jitter), on a new connection each time.
// `on_change(endpoint index, healthy)` is called when an endpoint's health changes.
class HealthChecker {
public:
  using OnChange = std::function<void(uint32_t endpoint, bool healthy)>;
  HealthChecker(event::Dispatcher& dispatcher, std::shared_ptr<const config::Cluster> cluster, Random random,
                OnChange on_change);
  ~HealthChecker();
  const std::shared_ptr<const config::Cluster>& cluster() const { return cluster_; }

private:
  class Probe;
  event::Dispatcher& dispatcher_;
  std::shared_ptr<const config::Cluster> cluster_;
  OnChange on_change_;
  std::vector<std::unique_ptr<Probe>> probes_;
};

}  // namespace culvert::upstream
