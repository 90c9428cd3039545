#pragma once

#include <chrono>
#include <cstdint>
#include <optional>
#include <string_view>
#include <vector>

#include "proxy/config/snapshot.h"
#include "proxy/upstream/load_balancer.h"

namespace culvert::upstream {

// How one upstream attempt ended, as the session saw it.
struct AttemptOutcome {
  enum class Kind {
    Response,        // the upstream answered with `status`
    ConnectFailure,  // local origin: connect refused / failed / timed out
    Reset,           // local origin: the connection broke before a complete response
    Timeout,         // local origin: the route timeout expired
  };
  Kind kind = Kind::Response;
  int status = 0;
  std::chrono::microseconds latency{0};  // request sent → response complete (Response only)
};

enum class EjectionReason { Consecutive5xx, ConsecutiveGatewayFailure, ConsecutiveLocalOriginFailure, SuccessRate,
                            FailurePercentage, Latency };
std::string_view toString(EjectionReason reason);

// Envoy's outlier detection for one (worker, cluster): consecutive errors eject at once,
// success rate / failure percentage / latency (culvert's) are judged every `interval`.
// An ejected endpoint returns after base_ejection_time × its ejection count (capped by
// max(base, max_ejection_time)). Time and randomness are injected: every method takes
// `now`, enforcing_* percentages draw from `random`.
class OutlierDetector {
public:
  using Clock = std::chrono::steady_clock;

  OutlierDetector(config::OutlierDetection config, size_t hosts, Random random, Clock::time_point now);

  // Records one attempt; returns the reason when it ejected the endpoint.
  std::optional<EjectionReason> report(uint32_t host, const AttemptOutcome& outcome, Clock::time_point now);
  // Returns ejected endpoints whose time is up and, once per interval, judges the
  // interval's statistics. Cheap when nothing is due. Returns the reasons of ejections it
  // made; `changed` tells whether the ejected set changed at all.
  std::vector<EjectionReason> tick(Clock::time_point now, bool& changed);

  bool ejected(uint32_t host) const { return hosts_[host].ejected; }
  size_t ejectedCount() const { return ejected_count_; }
  uint32_t ejectionCount(uint32_t host) const { return hosts_[host].num_ejections; }
  // Keeps an endpoint's history across a configuration update that keeps the endpoint.
  void adoptHost(uint32_t host, const OutlierDetector& previous, uint32_t previous_host);

private:
  struct HostState {
    uint32_t consecutive_5xx = 0;
    uint32_t consecutive_gateway = 0;
    uint32_t consecutive_local = 0;
    uint64_t interval_success = 0;
    uint64_t interval_failure = 0;
    uint64_t interval_latency_samples = 0;
    double latency_ewma_us = 0;
    bool ejected = false;
    uint32_t num_ejections = 0;
    bool ejected_this_interval = false;
    Clock::time_point ejected_until{};
  };

  void putHttpStatus(uint32_t host, int status, Clock::time_point now, std::optional<EjectionReason>& out);
  void putLocalOrigin(uint32_t host, bool failed, Clock::time_point now, std::optional<EjectionReason>& out);
  bool tryEject(uint32_t host, uint32_t enforcing_percent, Clock::time_point now);
  void runInterval(Clock::time_point now, std::vector<EjectionReason>& ejected);
  void refreshNextEvent();

  config::OutlierDetection config_;
  Random random_;
  std::vector<HostState> hosts_;
  size_t ejected_count_ = 0;
  Clock::time_point next_interval_;
  Clock::time_point next_event_;
};

}  // namespace culvert::upstream
