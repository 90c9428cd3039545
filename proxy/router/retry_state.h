#pragma once

// Retry decisions for one downstream request (Envoy's RetryPolicy semantics), independent
// of the codec: a session reports how each attempt ended and RetryState says whether to
// try again, and after how long. Time and randomness are injected, so every decision is
// unit-tested without sockets.

#include <atomic>
#include <chrono>
#include <cstdint>
#include <functional>
#include <map>
#include <memory>
#include <mutex>
#include <optional>
#include <string>
#include <vector>

#include "proxy/common/socket_address.h"
#include "proxy/config/snapshot.h"
#include "proxy/http/header_map.h"

namespace culvert::router {

// How an attempt ended without a response head.
enum class AttemptFailure {
  ConnectFailure,     // the upstream connection could not be made (refused, connect_timeout)
  Reset,              // the connection closed or reset before the response head
  RefusedStream,      // HTTP/2 REFUSED_STREAM
  PerTryTimeout,      // per_try_timeout expired
  PerTryIdleTimeout,  // per_try_idle_timeout expired
};

// Whether `retry_on` covers a response. `headers` are the response head's (gRPC
// trailers-only responses carry grpc-status there).
bool isRetriableResponse(const config::RetryPolicy& policy, int status, const http::HeaderMap& headers);
// Whether `retry_on` covers an attempt that ended without a response head.
bool isRetriableFailure(const config::RetryPolicy& policy, AttemptFailure failure);

// What the router does with one attempt's outcome when several attempts may be out
// (hedging), in Envoy's order: a retry comes first (the caller never retries an attempt
// that already started a hedge at its per-try timeout: Envoy's "retried" attempt). An
// outcome not retried — a failure, or an answer that retry_on covers but that could not be
// retried — yields to the attempts still in flight or to a retry waiting for its back-off;
// anything else goes downstream (an answer) or ends the request (a failure: 503).
enum class OutcomeAction { Retry, Yield, Downstream };
struct OutcomeFacts {
  bool retry_scheduled = false;  // the verdict was Retry and the retry is on its way
  bool failed = false;           // no response head (reset, refused stream, timeout)
  bool retriable = false;        // an answer that retry_on covers
  bool others_pending = false;   // other attempts in flight, or a retry waiting
};
OutcomeAction outcomeAction(const OutcomeFacts& outcome);

// Envoy's fully jittered exponential back-off: before retry k (1-based) a uniformly random
// wait in [0, (2^k - 1) * base), never more than max_interval.
class JitteredBackOff {
public:
  JitteredBackOff(std::chrono::milliseconds base, std::chrono::milliseconds max) : base_(base), max_(max) {}
  std::chrono::milliseconds next(uint64_t random);

private:
  std::chrono::milliseconds base_;
  std::chrono::milliseconds max_;
  uint32_t retry_ = 1;
};

// The wait a rate-limited response asks for through one of `reset_headers` (Retry-After:
// seconds, or a UNIX timestamp), when it is positive and within max_interval; else none.
std::optional<std::chrono::milliseconds> rateLimitedBackOff(const config::RetryPolicy& policy,
                                                            const http::HeaderMap& headers,
                                                            std::chrono::system_clock::time_point now);

// A cluster's retry circuit breaker (circuit_breakers max_retries, or retry_budget), shared
// by every worker: counts requests and retries in flight to the cluster.
class RetryResources {
public:
  // Pure rule: may one more retry start? The budget, when set, replaces max_retries.
  static bool allows(const config::RetryLimits& limits, uint64_t active_requests, uint64_t active_retries);

  void requestStarted() { active_requests_.fetch_add(1, std::memory_order_relaxed); }
  void requestEnded() { active_requests_.fetch_sub(1, std::memory_order_relaxed); }
  // Takes a retry slot if the limits allow; the caller calls retryEnded() once that retry's
  // attempt ends.
  bool tryStartRetry(const config::RetryLimits& limits);
  void retryEnded() { active_retries_.fetch_sub(1, std::memory_order_relaxed); }
  uint64_t activeRetries() const { return active_retries_.load(std::memory_order_relaxed); }

  // Counts one request in flight to the cluster for its lifetime (the budget's base).
  class ActiveRequest {
  public:
    explicit ActiveRequest(std::shared_ptr<RetryResources> resources) : resources_(std::move(resources)) {
      resources_->requestStarted();
    }
    ~ActiveRequest() { resources_->requestEnded(); }
    ActiveRequest(const ActiveRequest&) = delete;
    ActiveRequest& operator=(const ActiveRequest&) = delete;
    const std::shared_ptr<RetryResources>& resources() const { return resources_; }

  private:
    std::shared_ptr<RetryResources> resources_;
  };

private:
  std::atomic<uint64_t> active_requests_{0};
  std::atomic<uint64_t> active_retries_{0};
};

// One RetryResources per cluster name, for the whole process (Envoy's circuit breakers are
// per cluster, not per worker). Entries live as long as culvertd; there are few clusters.
class RetryResourceRegistry {
public:
  // Each routing priority of a cluster has its own retry breaker, as in Envoy.
  std::shared_ptr<RetryResources> forCluster(const std::string& cluster,
                                             config::RoutingPriority priority = config::RoutingPriority::Default);

private:
  std::mutex mutex_;
  std::map<std::pair<std::string, config::RoutingPriority>, std::shared_ptr<RetryResources>> by_cluster_;
};

// One request's retries.
class RetryState {
public:
  using Random = std::function<uint64_t()>;
  using WallClock = std::function<std::chrono::system_clock::time_point()>;

  enum class Verdict {
    NoRetry,        // not retriable: the attempt's outcome goes downstream
    Retry,          // wait back_off, then try again
    LimitExceeded,  // retriable, but num_retries are used up
    Overflow,       // retriable, but the cluster's retry circuit breaker is open
    Disabled,       // retriable, but the request can no longer be replayed (body beyond the buffer)
  };
  struct Decision {
    Verdict verdict = Verdict::NoRetry;
    std::chrono::milliseconds back_off{0};
  };

  // `policy` must outlive the state (the session's route table holds it); `resources` may
  // be null (no circuit breaker accounting, as in unit tests).
  RetryState(const config::RetryPolicy& policy, config::RetryLimits limits, std::shared_ptr<RetryResources> resources,
             Random random, WallClock wall_clock);
  ~RetryState();
  RetryState(const RetryState&) = delete;
  RetryState& operator=(const RetryState&) = delete;

  Decision onResponse(int status, const http::HeaderMap& headers);
  Decision onFailure(AttemptFailure failure);

  // The cluster's retry circuit breaker, known once the cluster is picked.
  void setLimits(const config::RetryLimits& limits) { limits_ = limits; }
  // The request body outgrew the retry buffer: no more retries.
  void disable() { disabled_ = true; }
  bool disabled() const { return disabled_; }
  // Called when an attempt starts and when it ends (a retry holds a circuit breaker slot
  // from its decision until its attempt ends).
  void attemptEnded();

  // previous_hosts: the endpoints already tried, for the next pick to avoid.
  void recordHost(const common::SocketAddress& host) { tried_hosts_.push_back(host); }
  const std::vector<common::SocketAddress>& triedHosts() const { return tried_hosts_; }
  bool avoidsPreviousHosts() const { return policy_.previous_hosts; }
  uint32_t hostSelectionMaxAttempts() const { return policy_.host_selection_retry_max_attempts; }

  uint32_t retriesDone() const { return retries_done_; }
  const config::RetryPolicy& policy() const { return policy_; }

private:
  Decision decide(bool retriable, std::optional<std::chrono::milliseconds> rate_limited);

  const config::RetryPolicy& policy_;
  config::RetryLimits limits_;
  std::shared_ptr<RetryResources> resources_;
  Random random_;
  WallClock wall_clock_;
  JitteredBackOff back_off_;
  uint32_t retries_done_ = 0;
  bool holds_retry_slot_ = false;
  bool disabled_ = false;
  std::vector<common::SocketAddress> tried_hosts_;
};

}  // namespace culvert::router
