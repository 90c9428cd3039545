#include "proxy/router/retry_state.h"

#include <algorithm>
#include <charconv>

#include "proxy/router/route_matcher.h"

namespace culvert::router {

namespace {

using config::RetryPolicy;

bool has(const RetryPolicy& policy, uint32_t bit) { return (policy.retry_on & bit) != 0; }

std::optional<uint64_t> parseUnsigned(std::string_view s) {
  while (!s.empty() && (s.front() == ' ' || s.front() == '\t')) s.remove_prefix(1);
  while (!s.empty() && (s.back() == ' ' || s.back() == '\t')) s.remove_suffix(1);
  uint64_t value = 0;
  auto [end, ec] = std::from_chars(s.data(), s.data() + s.size(), value);
  if (ec != std::errc() || end != s.data() + s.size() || s.empty()) return std::nullopt;
  return value;
}

// Route header matchers applied to a response head: any one matching is enough.
bool anyHeaderMatches(const std::vector<config::HeaderMatcher>& matchers, const http::HeaderMap& headers) {
  for (const auto& hm : matchers) {
    if (matchesHeader(hm, headers)) return true;
  }
  return false;
}

bool retriableGrpcStatus(const RetryPolicy& policy, const http::HeaderMap& headers) {
  auto value = headers.get("grpc-status");
  if (!value) return false;
  auto code = parseUnsigned(*value);
  if (!code) return false;
  switch (*code) {
    case 1: return has(policy, RetryPolicy::kGrpcCancelled);
    case 4: return has(policy, RetryPolicy::kGrpcDeadlineExceeded);
    case 8: return has(policy, RetryPolicy::kGrpcResourceExhausted);
    case 13: return has(policy, RetryPolicy::kGrpcInternal);
    case 14: return has(policy, RetryPolicy::kGrpcUnavailable);
    default: return false;
  }
}

}  // namespace

bool isRetriableResponse(const RetryPolicy& policy, int status, const http::HeaderMap& headers) {
  if (has(policy, RetryPolicy::k5xx) && status >= 500 && status <= 599) return true;
  if (has(policy, RetryPolicy::kGatewayError) && (status == 502 || status == 503 || status == 504)) return true;
  if (has(policy, RetryPolicy::kRetriable4xx) && status == 409) return true;
  if (has(policy, RetryPolicy::kRetriableStatusCodes) &&
      std::ranges::find(policy.retriable_status_codes, static_cast<uint32_t>(status)) !=
          policy.retriable_status_codes.end()) {
    return true;
  }
  if (has(policy, RetryPolicy::kRetriableHeaders) && anyHeaderMatches(policy.retriable_headers, headers)) return true;
  return retriableGrpcStatus(policy, headers);
}

bool isRetriableFailure(const RetryPolicy& policy, AttemptFailure failure) {
  // Envoy: 5xx, gateway-error and reset all cover "no response at all" (connect failure,
  // reset, per-try timeout, refused stream); connect-failure and refused-stream are narrower.
  if (has(policy, RetryPolicy::k5xx) || has(policy, RetryPolicy::kGatewayError) ||
      has(policy, RetryPolicy::kReset)) {
    return true;
  }
  switch (failure) {
    case AttemptFailure::ConnectFailure: return has(policy, RetryPolicy::kConnectFailure);
    case AttemptFailure::RefusedStream: return has(policy, RetryPolicy::kRefusedStream);
    case AttemptFailure::Reset:
    case AttemptFailure::PerTryTimeout:
    case AttemptFailure::PerTryIdleTimeout: return false;
  }
  return false;
}

OutcomeAction outcomeAction(const OutcomeFacts& outcome) {
  if (outcome.retry_scheduled) return OutcomeAction::Retry;
  if (outcome.others_pending && (outcome.failed || outcome.retriable)) return OutcomeAction::Yield;
  return OutcomeAction::Downstream;
}

std::chrono::milliseconds JitteredBackOff::next(uint64_t random) {
  const uint64_t multiplier = (uint64_t{1} << std::min<uint32_t>(retry_, 62)) - 1;
  const uint64_t base = std::max<uint64_t>(1, static_cast<uint64_t>(base_.count()));
  const uint64_t ceiling = multiplier > UINT64_MAX / base ? UINT64_MAX : multiplier * base;
  if (ceiling <= static_cast<uint64_t>(max_.count())) ++retry_;  // stop growing once capped
  return std::chrono::milliseconds(std::min<uint64_t>(random % ceiling, static_cast<uint64_t>(max_.count())));
}

std::optional<std::chrono::milliseconds> rateLimitedBackOff(const RetryPolicy& policy, const http::HeaderMap& headers,
                                                            std::chrono::system_clock::time_point now) {
  using std::chrono::milliseconds;
  for (const auto& reset : policy.reset_headers) {
    auto value = headers.get(reset.name);
    if (!value) continue;
    auto number = parseUnsigned(*value);
    if (!number) continue;
    milliseconds wait{0};
    if (reset.format == RetryPolicy::ResetHeader::Format::Seconds) {
      if (*number > 1'000'000'000) continue;  // beyond any max_interval; avoids overflow
      wait = milliseconds(*number * 1000);
    } else {
      auto at = std::chrono::system_clock::time_point(std::chrono::seconds(*number));
      if (at <= now) continue;
      wait = std::chrono::duration_cast<milliseconds>(at - now);
    }
    // Envoy discards a value beyond max_interval and tries the next header.
    if (wait.count() <= 0 || wait > policy.reset_max_interval) continue;
    return wait;
  }
  return std::nullopt;
}

bool RetryResources::allows(const config::RetryLimits& limits, uint64_t active_requests, uint64_t active_retries) {
  if (limits.budget) {
    // Envoy: retries may be budget_percent of the requests in flight, never fewer than
    // min_retry_concurrency.
    auto budget = static_cast<uint64_t>(static_cast<double>(active_requests) * limits.budget->budget_percent / 100.0);
    return active_retries < std::max<uint64_t>(budget, limits.budget->min_retry_concurrency);
  }
  return active_retries < limits.max_retries;
}

bool RetryResources::tryStartRetry(const config::RetryLimits& limits) {
  uint64_t retries = active_retries_.load(std::memory_order_relaxed);
  do {
    if (!allows(limits, active_requests_.load(std::memory_order_relaxed), retries)) return false;
  } while (!active_retries_.compare_exchange_weak(retries, retries + 1, std::memory_order_relaxed));
  return true;
}

std::shared_ptr<RetryResources> RetryResourceRegistry::forCluster(const std::string& cluster,
                                                                  config::RoutingPriority priority) {
  std::lock_guard lock(mutex_);
  auto& entry = by_cluster_[{cluster, priority}];
  if (!entry) entry = std::make_shared<RetryResources>();
  return entry;
}

RetryState::RetryState(const RetryPolicy& policy, config::RetryLimits limits, std::shared_ptr<RetryResources> resources,
                       Random random, WallClock wall_clock)
    : policy_(policy), limits_(limits), resources_(std::move(resources)), random_(std::move(random)),
      wall_clock_(std::move(wall_clock)), back_off_(policy.base_interval, policy.max_interval) {}

RetryState::~RetryState() { attemptEnded(); }

void RetryState::attemptEnded() {
  if (holds_retry_slot_ && resources_) resources_->retryEnded();
  holds_retry_slot_ = false;
}

RetryState::Decision RetryState::onResponse(int status, const http::HeaderMap& headers) {
  if (!isRetriableResponse(policy_, status, headers)) return {};
  std::optional<std::chrono::milliseconds> rate_limited;
  if (!policy_.reset_headers.empty()) rate_limited = rateLimitedBackOff(policy_, headers, wall_clock_());
  return decide(true, rate_limited);
}

RetryState::Decision RetryState::onFailure(AttemptFailure failure) {
  return decide(isRetriableFailure(policy_, failure), std::nullopt);
}

RetryState::Decision RetryState::decide(bool retriable, std::optional<std::chrono::milliseconds> rate_limited) {
  attemptEnded();
  if (!retriable) return {};
  if (disabled_) return {Verdict::Disabled};
  if (retries_done_ >= policy_.num_retries) return {Verdict::LimitExceeded};
  if (resources_ && !resources_->tryStartRetry(limits_)) return {Verdict::Overflow};
  holds_retry_slot_ = resources_ != nullptr;
  ++retries_done_;
  // The server's wait, when it named one, replaces the exponential one (which still
  // advances, as in Envoy, so a later retry without the header backs off further).
  auto exponential = back_off_.next(random_());
  return {Verdict::Retry, rate_limited.value_or(exponential)};
}

}  // namespace culvert::router
