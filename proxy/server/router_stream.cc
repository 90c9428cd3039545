#include "proxy/server/router_stream.h"

#include <algorithm>

#include <spdlog/spdlog.h>

#include "proxy/router/hash_policy.h"
#include "proxy/server/upstream_request.h"
#include "proxy/server/worker_services.h"
#include "proxy/server/tenant_share.h"

namespace culvert::server {

namespace {

using Flag = accesslog::ResponseFlag;
using router::AttemptFailure;

// Request body a connected upstream may have queued before the client stops being read,
// and what may wait for a connection being made.
constexpr size_t kQueuedHighWatermark = 256 * 1024;
constexpr size_t kPendingLimit = 64 * 1024;

}  // namespace

RouterStream::RouterStream(WorkerServices& services, const Pod& pod, Downstream& downstream,
                           accesslog::StreamInfo& log, const http::RequestHead& request, bool te_trailers,
                           const std::optional<common::SocketAddress>& original_destination)
    : services_(services), pod_(pod), downstream_(downstream), log_(log), request_(request),
      te_trailers_(te_trailers), original_destination_(original_destination),
      route_timer_([](void* self) { static_cast<RouterStream*>(self)->onRouteTimeout(); }, this) {}

RouterStream::~RouterStream() { releaseAll(); }

void RouterStream::start(const router::RouteDecision& decision, bool request_ended) {
  // A session may run one stream after another (HTTP/1.1 keep-alive): nothing of the last
  // request's stays.
  cancel();
  uint64_t request = ++requests_started_;
  request_ended_ = false;
  trailers_ = {};
  response_started_ = false;
  finished_ = false;
  action_ = &*decision.route->route;
  if (cluster_ != decision.cluster() || !retry_resources_ || priority_ != action_->priority) {
    cluster_ = decision.cluster();
    priority_ = action_->priority;
    retry_resources_ = services_.retry_resources.forCluster(cluster_, priority_);
  }
  retry_budget_request_.emplace(retry_resources_);
  if (action_->retry_policy) {
    // The cluster's limits are read when the retry is decided (at each pick).
    retry_ = std::make_unique<router::RetryState>(
        *action_->retry_policy, config::RetryLimits{}, retry_resources_, [] { return routeRandom(); },
        [] { return std::chrono::system_clock::now(); });
  }
  startAttempt();
  // Unless the first attempt's answer already let the session start its next request.
  if (request_ended && request == requests_started_) end();
}

void RouterStream::startAttempt() {
  bool is_retry = retry_ && retry_->retriesDone() > 0;
  if (is_retry && retry_->disabled()) {
    // The body outgrew the buffer while the retry waited: nothing left to replay.
    pod_.tenant->upstream_rq_retry_body_too_large->inc();
    reply(503, "upstream connect error or disconnect/reset before headers\n");
    return;
  }
  upstream::ClusterManager::PickContext pick;
  pick.priority = priority_;
  if (!action_->hash_policy.empty()) pick.hash = router::hashRequest(action_->hash_policy, request_.headers, pod_.ip);
  if (is_retry && retry_->avoidsPreviousHosts()) {
    pick.avoid = {&retry_->triedHosts(), retry_->hostSelectionMaxAttempts()};
  }
  // A hedge that cannot start leaves the attempts already out to answer.
  auto cannotStart = [&](Flag flag, const char* details, const char* body) {
    if (!attempts_.empty()) return;
    log_.fail(flag, details);
    reply(503, body);
  };
  auto selection = services_.clusters.pickEndpoint(cluster_, pick);
  if (!selection) {
    switch (selection.error()) {
      case upstream::ClusterManager::PickError::NoCluster:
        cannotStart(Flag::NoClusterFound, "cluster_not_found", "no cluster\n");
        break;
      case upstream::ClusterManager::PickError::NoHealthyEndpoint:
        cannotStart(Flag::NoHealthyUpstream, "no_healthy_upstream", "no healthy upstream\n");
        break;
      case upstream::ClusterManager::PickError::Overflow:
        cannotStart(Flag::UpstreamOverflow, "upstream_overflow", "upstream overflow\n");
        break;
    }
    return;
  }
  common::SocketAddress endpoint = selection->endpoint.address;
  if (selection->original_destination) {
    if (!original_destination_) {
      cannotStart(Flag::NoHealthyUpstream, "no_original_destination",
                  "no original destination for an ORIGINAL_DST cluster\n");
      return;
    }
    endpoint = *original_destination_;
  }
  const auto& cluster = *selection->cluster;
  bool http2 = cluster.http_protocol == config::UpstreamHttpProtocol::Http2;
  upstream::ConnectRequest connect{
      {pod_.id, endpoint, http2 ? upstream::Protocol::Http2 : upstream::Protocol::Http1},
      pod_.netnsFd(),
      cluster.connect_timeout};
  // Pooled per cluster (the weighted pick's): a connection counts against its cluster's
  // max_connections, and closes when its endpoint leaves that cluster.
  connect.key.cluster = cluster_;
  connect.key.priority = static_cast<uint8_t>(priority_);
  if (http2) connect.share = tenantShare(services_.scheduler, *pod_.tenant);
  auto attempt = std::make_unique<Attempt>();
  attempt->active = std::move(selection->request);
  if (!http2) {
    if (!services_.pool.hasIdle(connect.key)) {
      // A new connection: the cluster's max_connections and max_pending_requests apply.
      auto connection_unit = services_.clusters.reserveConnection(cluster_, priority_);
      auto pending_unit = connection_unit ? services_.clusters.reservePending(cluster_, priority_) : std::nullopt;
      if (!connection_unit || !pending_unit) {
        cannotStart(Flag::UpstreamOverflow, "upstream_overflow", "upstream overflow\n");
        return;
      }
      attempt->pending = std::move(*pending_unit);
      connect.lifetime_token = std::make_shared<upstream::ResourceHold>(std::move(*connection_unit));
    }
  }
  if (retry_) {
    retry_->setLimits(cluster.retryLimits(priority_));
    retry_->recordHost(endpoint);
  }
  log_.upstream_host = endpoint;
  ++log_.attempt_count;

  AttemptServices attempt_services{services_.dispatcher, services_.scheduler, services_.pool, services_.http2_pool};
  attempt->upstream = http2 ? UpstreamAttempt::http2(attempt_services, request_, te_trailers_, *this, endpoint)
                            : UpstreamAttempt::http1(attempt_services, request_, *pod_.tenant, *this, endpoint);
  attempt->upstream->setResponseFlow(flow_open_);
  attempt->started = services_.dispatcher.now();
  auto* upstream = attempt->upstream.get();
  attempts_.push_back(std::move(attempt));
  if (is_retry) {
    // The body so far (whole, when hedging) goes again, before any new byte.
    if (!replay_.empty()) upstream->sendData(replay_);
    if (request_ended_) upstream->end(trailers_);
  }
  upstream->start(connect);
  if (finished_ || find(*upstream) == nullptr) return;  // failed at once
  if (request_ended_) armPerTryTimers(*attempts_.back());
}

void RouterStream::sendData(std::string_view data) {
  if (finished_) return;  // the response is over: the rest of the request is dropped
  if (retry_ && !retry_->disabled()) {
    replay_.append(data);
    if (replay_.size() > action_->retry_buffer_bytes) {
      // Beyond the buffer the request streams on and can no longer be retried.
      stopRetrying();
    }
  }
  for (auto& attempt : attempts_) attempt->upstream->sendData(data);
}

void RouterStream::end(const http::HeaderMap& trailers) {
  if (finished_ || request_ended_) return;
  request_ended_ = true;
  trailers_ = trailers;
  for (auto& attempt : attempts_) {
    attempt->upstream->end(trailers_);
    armPerTryTimers(*attempt);
  }
  // Envoy's route timeout: from the end of the downstream request to the end of the
  // upstream response, connecting and every retry included; 0 disables it. A response
  // already under way (streaming) is not timed.
  if (action_->timeout.count() > 0 && !response_started_) {
    route_timer_.enable(services_.dispatcher.timerQueue(), action_->timeout);
  }
}

bool RouterStream::acceptsRequestData() const {
  if (finished_) return true;  // whatever comes is dropped
  if (back_off_timer_ && back_off_timer_->enabled()) return false;  // a retry waits: the body waits too
  for (const auto& attempt : attempts_) {
    size_t limit = attempt->upstream->connected() ? kQueuedHighWatermark : kPendingLimit;
    if (attempt->upstream->queuedBytes() > limit) return false;
  }
  return true;
}

size_t RouterStream::queuedRequestBytes() const {
  size_t bytes = replay_.size();
  for (const auto& attempt : attempts_) bytes += attempt->upstream->queuedBytes();
  return bytes;
}

void RouterStream::setResponseFlow(bool open) {
  if (flow_open_ == open) return;
  flow_open_ = open;
  for (auto& attempt : attempts_) attempt->upstream->setResponseFlow(open);
}

void RouterStream::cancel() {
  releaseAll();
  finish();
}

RouterStream::Attempt* RouterStream::find(UpstreamAttempt& upstream) {
  for (auto& attempt : attempts_) {
    if (attempt->upstream.get() == &upstream) return attempt.get();
  }
  return nullptr;
}

void RouterStream::release(Attempt& attempt, bool abandon) {
  if (abandon) attempt.upstream->abandon();
  attempt.active.reset();
  attempt.pending.reset();
  if (attempt.per_try_timer) attempt.per_try_timer->disable();
  if (attempt.per_try_idle_timer) attempt.per_try_idle_timer->disable();
  auto it = std::find_if(attempts_.begin(), attempts_.end(), [&](const auto& a) { return a.get() == &attempt; });
  // We may be inside the attempt's own callback, or its timer's: it goes after that returns.
  services_.dispatcher.deferredDelete(std::move(*it));
  attempts_.erase(it);
}

void RouterStream::releaseAll() {
  while (!attempts_.empty()) release(*attempts_.back(), true);
}

void RouterStream::report(Attempt& attempt, const upstream::AttemptOutcome& outcome) {
  // Once per attempt: a reset after the head was reported changes nothing.
  if (attempt.reported) return;
  attempt.reported = true;
  services_.clusters.reportOutcome(cluster_, attempt.upstream->endpoint(), outcome);
}

// Envoy's per-try timeouts run from when the whole request is on its way upstream.
void RouterStream::armPerTryTimers(Attempt& attempt) {
  if (!retry_ || response_started_) return;
  const auto& policy = retry_->policy();
  auto* upstream = attempt.upstream.get();
  if (policy.per_try_timeout.count() > 0 && !attempt.per_try_timer) {
    attempt.per_try_timer = services_.dispatcher.createTimer([this, upstream] { onPerTryTimeout(upstream, false); });
    attempt.per_try_timer->enable(policy.per_try_timeout);
  }
  if (policy.per_try_idle_timeout.count() > 0 && !attempt.per_try_idle_timer) {
    attempt.per_try_idle_timer =
        services_.dispatcher.createTimer([this, upstream] { onPerTryTimeout(upstream, true); });
    attempt.per_try_idle_timer->enable(policy.per_try_idle_timeout);
  }
}

void RouterStream::onAttemptConnected(UpstreamAttempt& upstream) {
  if (auto* attempt = find(upstream)) attempt->pending.reset();
  downstream_.onRequestWritable();
}

void RouterStream::onAttemptActivity(UpstreamAttempt& upstream) {
  auto* attempt = find(upstream);
  if (attempt && attempt->per_try_idle_timer && attempt->per_try_idle_timer->enabled()) {
    attempt->per_try_idle_timer->enable(retry_->policy().per_try_idle_timeout);
  }
  downstream_.onUpstreamActivity();
}

void RouterStream::onAttemptDrained(UpstreamAttempt&) { downstream_.onRequestWritable(); }

void RouterStream::onAttemptHead(UpstreamAttempt& upstream, http::ResponseHead&& head, bool end_stream) {
  auto* attempt = find(upstream);
  if (attempt == nullptr || finished_) return;
  auto latency = std::chrono::duration_cast<std::chrono::microseconds>(services_.dispatcher.now() - attempt->started);
  if (retry_) {
    bool retried_before = retry_->retriesDone() > 0;
    router::OutcomeFacts outcome;
    if (attempt->hedged) {
      // Its retry is the hedge already out: it is not retried again (Envoy).
      outcome.retriable = router::isRetriableResponse(retry_->policy(), head.status, head.headers);
    } else {
      auto decision = retry_->onResponse(head.status, head.headers);
      outcome.retriable = decision.verdict != router::RetryState::Verdict::NoRetry;
      if (outcome.retriable) {
        report(*attempt, {upstream::AttemptOutcome::Kind::Response, head.status, latency});
        outcome.retry_scheduled = scheduleRetry(decision);
      }
    }
    outcome.others_pending = othersPending(attempt);
    if (router::outcomeAction(outcome) != router::OutcomeAction::Downstream) {
      // Retried, or (hedged) a retriable answer that was not retried yields to the
      // attempts still out or the retry waiting, one of which may do better.
      report(*attempt, {upstream::AttemptOutcome::Kind::Response, head.status, latency});
      release(*attempt, true);
      return;
    }
    if (retried_before && !outcome.retriable && !attempt->hedged) pod_.tenant->upstream_rq_retry_success->inc();
  }
  // This attempt's answer goes downstream: the others (hedging) are cancelled and nothing
  // will be replayed any more.
  for (size_t i = attempts_.size(); i-- > 0;) {
    if (attempts_[i].get() != attempt) release(*attempts_[i], true);
  }
  stopRetrying();
  if (back_off_timer_) back_off_timer_->disable();
  if (attempt->per_try_timer) attempt->per_try_timer->disable();
  if (attempt->per_try_idle_timer) attempt->per_try_idle_timer->disable();
  response_started_ = true;
  report(*attempt, {upstream::AttemptOutcome::Kind::Response, head.status, latency});
  log_.upstream_host = upstream.endpoint();
  log_.first_upstream_rx = services_.dispatcher.now();
  if (end_stream) {
    finish();
    release(*attempt, false);
  }
  downstream_.onUpstreamHead(head, end_stream);  // last: the session may start its next request
}

void RouterStream::onAttemptData(UpstreamAttempt& upstream, std::string_view data) {
  if (finished_ || find(upstream) == nullptr) return;
  downstream_.onUpstreamData(data);
}

void RouterStream::onAttemptReadDone(UpstreamAttempt& upstream) {
  if (!finished_ && response_started_ && find(upstream) != nullptr) downstream_.onUpstreamReadDone();
}

void RouterStream::onAttemptEnd(UpstreamAttempt& upstream, http::HeaderMap&& trailers) {
  auto* attempt = find(upstream);
  if (attempt == nullptr || finished_) return;
  finish();
  release(*attempt, false);
  downstream_.onUpstreamEnd(trailers);
}

void RouterStream::onAttemptFailed(UpstreamAttempt& upstream, AttemptFailure failure, const std::string& reason,
                                   bool head_seen) {
  auto* attempt = find(upstream);
  if (attempt == nullptr || finished_) return;
  spdlog::debug("pod {}/{}: {} {}: {}", pod_.namespace_name, pod_.name, request_.method, request_.path, reason);
  if (failure == AttemptFailure::ConnectFailure) {
    pod_.tenant->upstream_cx_connect_fail->inc();
    log_.upstream_transport_failure_reason = reason;
    report(*attempt, {upstream::AttemptOutcome::Kind::ConnectFailure});
  } else {
    report(*attempt, {upstream::AttemptOutcome::Kind::Reset});
  }
  if (head_seen && response_started_) {
    // Part of the response went out; the only honest signal left is a reset or close.
    log_.fail(Flag::UpstreamConnectionTermination, "upstream_reset_after_response_started{connection_termination}");
    finish();
    release(*attempt, false);
    downstream_.onResponseAborted();
    return;
  }
  bool hedged = attempt->hedged;
  release(*attempt, false);
  // Envoy's order: a retry first, also while a hedge is out (never for an attempt whose
  // retry is the hedge); else the attempts still out, or a retry waiting, may answer.
  router::OutcomeFacts outcome;
  outcome.failed = true;
  outcome.retry_scheduled = !hedged && retry_ && scheduleRetry(retry_->onFailure(failure));
  outcome.others_pending = othersPending(nullptr);
  if (router::outcomeAction(outcome) == router::OutcomeAction::Downstream) failRequest(failure);
}

bool RouterStream::othersPending(const Attempt* except) const {
  if (back_off_timer_ && back_off_timer_->enabled()) return true;
  return std::ranges::any_of(attempts_, [&](const auto& a) { return a.get() != except; });
}

void RouterStream::onPerTryTimeout(UpstreamAttempt* upstream, bool idle) {
  auto* attempt = find(*upstream);
  if (attempt == nullptr || finished_ || response_started_ || !retry_) return;
  (idle ? pod_.tenant->upstream_rq_per_try_idle_timeout : pod_.tenant->upstream_rq_per_try_timeout)->inc();
  report(*attempt, {upstream::AttemptOutcome::Kind::Timeout});
  auto failure = idle ? AttemptFailure::PerTryIdleTimeout : AttemptFailure::PerTryTimeout;
  if (action_->hedge_on_per_try_timeout) {
    // Hedging (either per-try timeout, as Envoy's router): the attempt stays; another
    // starts beside it (after the back-off) and the first good answer wins.
    if (attempt->per_try_timer) attempt->per_try_timer->disable();
    if (attempt->per_try_idle_timer) attempt->per_try_idle_timer->disable();
    attempt->hedged = scheduleRetry(retry_->onFailure(failure));
    return;
  }
  release(*attempt, true);
  if (!attempts_.empty()) return;  // hedged: the attempts still out may answer
  if (scheduleRetry(retry_->onFailure(failure))) return;
  log_.fail(Flag::UpstreamRequestTimeout, idle ? "upstream_per_try_idle_timeout" : "upstream_per_try_timeout");
  replyTimeout();
}

void RouterStream::onRouteTimeout() {
  if (finished_) return;
  pod_.tenant->upstream_rq_timeout->inc();
  log_.fail(Flag::UpstreamRequestTimeout, "upstream_response_timeout");
  spdlog::debug("pod {}/{}: {} {}: route timeout {} ms", pod_.namespace_name, pod_.name, request_.method,
                request_.path, action_->timeout.count());
  for (auto& attempt : attempts_) report(*attempt, {upstream::AttemptOutcome::Kind::Timeout});
  releaseAll();
  if (response_started_) {
    finish();
    downstream_.onResponseAborted();
    return;
  }
  replyTimeout();
}

bool RouterStream::scheduleRetry(router::RetryState::Decision decision) {
  using Verdict = router::RetryState::Verdict;
  switch (decision.verdict) {
    case Verdict::Retry:
      break;
    case Verdict::NoRetry:
      return false;
    case Verdict::LimitExceeded:
      log_.flags.set(Flag::UpstreamRetryLimitExceeded);
      pod_.tenant->upstream_rq_retry_limit_exceeded->inc();
      return false;
    case Verdict::Overflow:
      pod_.tenant->upstream_rq_retry_overflow->inc();
      return false;
    case Verdict::Disabled:
      pod_.tenant->upstream_rq_retry_body_too_large->inc();
      return false;
  }
  pod_.tenant->upstream_rq_retry->inc();
  if (!back_off_timer_) back_off_timer_ = services_.dispatcher.createTimer([this] { startAttempt(); });
  // Even a zero wait runs from the loop, never from inside the failed attempt's callbacks.
  back_off_timer_->enable(decision.back_off);
  return true;
}

void RouterStream::stopRetrying() {
  if (retry_) retry_->disable();
  std::string().swap(replay_);
}

void RouterStream::failRequest(AttemptFailure failure) {
  if (failure == AttemptFailure::ConnectFailure) {
    log_.fail(Flag::UpstreamConnectionFailure, "upstream_reset_before_response_started{connection_failure}");
  } else {
    log_.fail(Flag::UpstreamConnectionTermination, "upstream_reset_before_response_started{connection_termination}");
  }
  reply(503, "upstream connect error or disconnect/reset before headers\n");
}

void RouterStream::reply(int status, std::string body) {
  finish();
  releaseAll();
  downstream_.onRouterReply({status, std::move(body), false});
}

// 504, or for a gRPC request DEADLINE_EXCEEDED.
void RouterStream::replyTimeout() {
  finish();
  releaseAll();
  downstream_.onRouterReply({504, "upstream request timeout\n", isGrpcRequest(request_)});
}

// The response is decided (complete, an answer of the router's own, or aborted): timers
// and retry state go; the circuit-breaker units go with the attempts.
void RouterStream::finish() {
  finished_ = true;
  if (back_off_timer_) back_off_timer_->disable();
  route_timer_.disable();
  retry_.reset();
  retry_budget_request_.reset();
  std::string().swap(replay_);
}

}  // namespace culvert::server
