#include "proxy/upstream/outlier_detector.h"

#include <algorithm>
#include <cmath>

namespace culvert::upstream {

std::string_view toString(EjectionReason reason) {
  switch (reason) {
    case EjectionReason::Consecutive5xx: return "consecutive_5xx";
    case EjectionReason::ConsecutiveGatewayFailure: return "consecutive_gateway_failure";
    case EjectionReason::ConsecutiveLocalOriginFailure: return "consecutive_local_origin_failure";
    case EjectionReason::SuccessRate: return "success_rate";
    case EjectionReason::FailurePercentage: return "failure_percentage";
    case EjectionReason::Latency: return "latency";
  }
  return "unknown";
}

OutlierDetector::OutlierDetector(config::OutlierDetection config, size_t hosts, Random random, Clock::time_point now)
    : config_(config), random_(std::move(random)), hosts_(hosts), next_interval_(now + config.interval) {
  refreshNextEvent();
}

void OutlierDetector::adoptHost(uint32_t host, const OutlierDetector& previous, uint32_t previous_host) {
  hosts_[host] = previous.hosts_[previous_host];
  if (hosts_[host].ejected) ++ejected_count_;
  refreshNextEvent();
}

std::optional<EjectionReason> OutlierDetector::report(uint32_t host, const AttemptOutcome& outcome, Clock::time_point now) {
  std::optional<EjectionReason> out;
  if (host >= hosts_.size()) return out;
  if (outcome.kind == AttemptOutcome::Kind::Response) {
    auto& h = hosts_[host];
    if (config_.latency_ejection_multiple > 0) {
      double us = static_cast<double>(outcome.latency.count());
      h.latency_ewma_us = h.interval_latency_samples == 0 && h.latency_ewma_us == 0
                              ? us
                              : config_.latency_ewma_alpha * us + (1 - config_.latency_ewma_alpha) * h.latency_ewma_us;
      ++h.interval_latency_samples;
    }
    if (config_.split_external_local_origin_errors) putLocalOrigin(host, false, now, out);
    putHttpStatus(host, outcome.status, now, out);
    return out;
  }
  if (config_.split_external_local_origin_errors) {
    putLocalOrigin(host, true, now, out);
  } else {
    // Envoy maps local-origin failures to the status the client sees.
    putHttpStatus(host, outcome.kind == AttemptOutcome::Kind::Timeout ? 504 : 503, now, out);
  }
  return out;
}

void OutlierDetector::putHttpStatus(uint32_t host, int status, Clock::time_point now, std::optional<EjectionReason>& out) {
  auto& h = hosts_[host];
  if (status >= 500 && status <= 599) {
    ++h.interval_failure;
    if (status >= 502 && status <= 504) {
      if (++h.consecutive_gateway == config_.consecutive_gateway_failure) {
        // Envoy resets the count whether or not the ejection is enforced.
        h.consecutive_gateway = 0;
        if (!h.ejected && tryEject(host, config_.enforcing_consecutive_gateway_failure, now)) {
          out = EjectionReason::ConsecutiveGatewayFailure;
          h.consecutive_5xx = 0;
        }
      }
    } else {
      h.consecutive_gateway = 0;
    }
    if (++h.consecutive_5xx == config_.consecutive_5xx) {
      h.consecutive_5xx = 0;
      if (!h.ejected && tryEject(host, config_.enforcing_consecutive_5xx, now)) {
        out = EjectionReason::Consecutive5xx;
        h.consecutive_gateway = 0;
      }
    }
    return;
  }
  ++h.interval_success;
  h.consecutive_5xx = 0;
  h.consecutive_gateway = 0;
}

void OutlierDetector::putLocalOrigin(uint32_t host, bool failed, Clock::time_point now, std::optional<EjectionReason>& out) {
  auto& h = hosts_[host];
  if (!failed) {
    h.consecutive_local = 0;
    return;
  }
  if (++h.consecutive_local == config_.consecutive_local_origin_failure) {
    h.consecutive_local = 0;
    if (!h.ejected && tryEject(host, config_.enforcing_consecutive_local_origin_failure, now)) {
      out = EjectionReason::ConsecutiveLocalOriginFailure;
    }
  }
}

bool OutlierDetector::tryEject(uint32_t host, uint32_t enforcing_percent, Clock::time_point now) {
  if (enforcing_percent == 0 || random_() % 100 >= enforcing_percent) return false;
  // Envoy: ejecting must keep the ejected share within max_ejection_percent.
  double share = 100.0 * static_cast<double>(ejected_count_ + 1) / static_cast<double>(hosts_.size());
  if (share > std::min<uint32_t>(100, config_.max_ejection_percent)) return false;
  auto& h = hosts_[host];
  h.ejected = true;
  h.ejected_this_interval = true;
  ++h.num_ejections;
  ++ejected_count_;
  auto cap = std::max(config_.base_ejection_time, config_.max_ejection_time);
  auto duration = std::min<std::chrono::milliseconds>(config_.base_ejection_time * h.num_ejections, cap);
  h.ejected_until = now + duration;
  refreshNextEvent();
  return true;
}

std::vector<EjectionReason> OutlierDetector::tick(Clock::time_point now, bool& changed) {
  std::vector<EjectionReason> made;
  changed = false;
  if (now < next_event_) return made;
  for (auto& h : hosts_) {
    if (h.ejected && h.ejected_until <= now) {
      h.ejected = false;
      --ejected_count_;
      changed = true;
    }
  }
  if (now >= next_interval_) {
    size_t before = ejected_count_;
    runInterval(now, made);
    changed = changed || ejected_count_ != before;
    // Intervals are counted from the first one, not from when a pick noticed.
    while (next_interval_ <= now) next_interval_ += config_.interval;
  }
  refreshNextEvent();
  return made;
}

void OutlierDetector::runInterval(Clock::time_point now, std::vector<EjectionReason>& made) {
  const size_t n = hosts_.size();
  // Success rate: hosts with enough requests; eject those below mean − factor × stdev.
  std::vector<std::pair<uint32_t, double>> rates;
  for (uint32_t i = 0; i < n; ++i) {
    const auto& h = hosts_[i];
    uint64_t volume = h.interval_success + h.interval_failure;
    if (!h.ejected && volume >= config_.success_rate_request_volume && volume > 0) {
      rates.emplace_back(i, 100.0 * static_cast<double>(h.interval_success) / static_cast<double>(volume));
    }
  }
  if (rates.size() >= config_.success_rate_minimum_hosts && !rates.empty() && config_.enforcing_success_rate > 0) {
    double mean = 0;
    for (const auto& [i, r] : rates) mean += r;
    mean /= static_cast<double>(rates.size());
    double variance = 0;
    for (const auto& [i, r] : rates) variance += (r - mean) * (r - mean);
    double stdev = std::sqrt(variance / static_cast<double>(rates.size()));
    double threshold = mean - stdev * (config_.success_rate_stdev_factor / 1000.0);
    for (const auto& [i, r] : rates) {
      if (r < threshold && !hosts_[i].ejected && tryEject(i, config_.enforcing_success_rate, now)) {
        made.push_back(EjectionReason::SuccessRate);
      }
    }
  }
  // Failure percentage: hosts with enough requests whose failure share reaches the threshold.
  if (config_.enforcing_failure_percentage > 0) {
    std::vector<std::pair<uint32_t, double>> failures;
    for (uint32_t i = 0; i < n; ++i) {
      const auto& h = hosts_[i];
      uint64_t volume = h.interval_success + h.interval_failure;
      if (!h.ejected && volume >= config_.failure_percentage_request_volume && volume > 0) {
        failures.emplace_back(i, 100.0 * static_cast<double>(h.interval_failure) / static_cast<double>(volume));
      }
    }
    if (failures.size() >= config_.failure_percentage_minimum_hosts) {
      for (const auto& [i, f] : failures) {
        if (f >= config_.failure_percentage_threshold && !hosts_[i].ejected &&
            tryEject(i, config_.enforcing_failure_percentage, now)) {
          made.push_back(EjectionReason::FailurePercentage);
        }
      }
    }
  }
  // culvert's latency ejection: an EWMA above `multiple` × the median of the cluster's.
  if (config_.latency_ejection_multiple > 0) {
    std::vector<std::pair<uint32_t, double>> latencies;
    for (uint32_t i = 0; i < n; ++i) {
      const auto& h = hosts_[i];
      if (!h.ejected && h.interval_latency_samples >= config_.latency_ejection_request_volume &&
          h.interval_latency_samples > 0) {
        latencies.emplace_back(i, h.latency_ewma_us);
      }
    }
    if (latencies.size() >= std::max<uint32_t>(config_.latency_ejection_minimum_hosts, 1)) {
      std::vector<double> sorted;
      for (const auto& [i, l] : latencies) sorted.push_back(l);
      std::sort(sorted.begin(), sorted.end());
      double median = sorted.size() % 2 ? sorted[sorted.size() / 2]
                                        : (sorted[sorted.size() / 2 - 1] + sorted[sorted.size() / 2]) / 2;
      for (const auto& [i, l] : latencies) {
        if (l > config_.latency_ejection_multiple * median && !hosts_[i].ejected && tryEject(i, 100, now)) {
          made.push_back(EjectionReason::Latency);
        }
      }
    }
  }
  for (auto& h : hosts_) {
    // Envoy: a host that stayed in during the interval earns back one step of its
    // ejection multiplier.
    if (!h.ejected && !h.ejected_this_interval && h.num_ejections > 0) --h.num_ejections;
    h.ejected_this_interval = false;
    h.interval_success = 0;
    h.interval_failure = 0;
    h.interval_latency_samples = 0;
  }
}

void OutlierDetector::refreshNextEvent() {
  next_event_ = next_interval_;
  for (const auto& h : hosts_) {
    if (h.ejected && h.ejected_until < next_event_) next_event_ = h.ejected_until;
  }
}

}  // namespace culvert::upstream
