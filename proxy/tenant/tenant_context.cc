#include "proxy/tenant/tenant_context.h"

namespace culvert::tenant {

std::shared_ptr<TenantContext> TenantContext::create(uint32_t id, std::string name, common::StatsStore& stats,
                                                     std::shared_ptr<MemoryWatermark> memory) {
  auto t = std::make_shared<TenantContext>(std::move(memory));
  t->id = id;
  t->name = std::move(name);
  common::Labels labels{{"tenant", t->name}};
  auto status = [&](const char* cls) {
    return &stats.counter("culvert_http_downstream_rq_status_total", {{"tenant", t->name}, {"class", cls}},
                          "Downstream HTTP responses by status class");
  };
  t->downstream_cx_total = &stats.counter("culvert_downstream_cx_total", labels, "Downstream connections accepted");
  t->downstream_cx_active = &stats.gauge("culvert_downstream_cx_active", labels, "Downstream connections open");
  t->downstream_rq_total = &stats.counter("culvert_http_downstream_rq_total", labels, "Downstream HTTP requests");
  t->downstream_rq_2xx = status("2xx");
  t->downstream_rq_4xx = status("4xx");
  t->downstream_rq_5xx = status("5xx");
  t->downstream_rq_bad = &stats.counter("culvert_http_downstream_rq_malformed_total", labels,
                                        "Malformed downstream HTTP requests (answered 400)");
  t->upstream_rq_timeout = &stats.counter("culvert_upstream_rq_timeout_total", labels,
                                          "Requests whose route timeout expired (answered 504)");
  t->upstream_rq_retry = &stats.counter("culvert_upstream_rq_retry_total", labels, "Upstream request retries started");
  t->upstream_rq_retry_success = &stats.counter("culvert_upstream_rq_retry_success_total", labels,
                                                "Retried requests whose last attempt got a non-retriable response");
  t->upstream_rq_retry_overflow = &stats.counter("culvert_upstream_rq_retry_overflow_total", labels,
                                                 "Retries not made because the cluster's retry circuit breaker was open");
  t->upstream_rq_retry_limit_exceeded = &stats.counter("culvert_upstream_rq_retry_limit_exceeded_total", labels,
                                                       "Retriable outcomes passed on because num_retries were used up");
  t->upstream_rq_retry_body_too_large = &stats.counter(
      "culvert_upstream_rq_retry_body_too_large_total", labels,
      "Retriable outcomes passed on because the request body outgrew the retry buffer");
  t->upstream_rq_per_try_timeout = &stats.counter("culvert_upstream_rq_per_try_timeout_total", labels,
                                                  "Upstream attempts whose per_try_timeout expired");
  t->upstream_rq_per_try_idle_timeout = &stats.counter("culvert_upstream_rq_per_try_idle_timeout_total", labels,
                                                       "Upstream attempts whose per_try_idle_timeout expired");
  t->downstream_rq_idle_timeout = &stats.counter("culvert_downstream_rq_idle_timeout_total", labels,
                                                 "Requests whose stream idle timeout expired");
  t->downstream_rq_request_timeout = &stats.counter("culvert_downstream_rq_request_timeout_total", labels,
                                                    "Requests not received whole within request_timeout");
  t->downstream_rq_headers_timeout = &stats.counter("culvert_downstream_rq_headers_timeout_total", labels,
                                                    "Requests whose head did not arrive within request_headers_timeout");
  t->downstream_rq_max_duration_reached =
      &stats.counter("culvert_downstream_rq_max_duration_reached_total", labels,
                     "Requests that outlived their route's max_stream_duration or capped grpc-timeout");
  t->downstream_cx_idle_timeout = &stats.counter("culvert_downstream_cx_idle_timeout_total", labels,
                                                 "Downstream connections closed after idle_timeout without a request");
  t->downstream_cx_max_duration_reached =
      &stats.counter("culvert_downstream_cx_max_duration_reached_total", labels,
                     "Downstream connections drained at max_connection_duration");
  t->downstream_cx_max_requests_reached =
      &stats.counter("culvert_downstream_cx_max_requests_reached_total", labels,
                     "Downstream connections drained after max_requests_per_connection requests");
  t->upstream_cx_connect_fail = &stats.counter("culvert_upstream_cx_connect_fail_total", labels,
                                               "Upstream connection attempts that failed");
  t->no_filter_chain = &stats.counter("culvert_downstream_cx_no_filter_chain_total", labels,
                                      "Captured connections that matched no listener or filter chain");
  t->share_paused = &stats.counter("culvert_tenant_share_paused_total", labels,
                                   "Times a connection of the tenant stopped reading until the next scheduler round: "
                                   "the tenant had used its share of a worker while another tenant had work");
  for (size_t i = 0; i < kBudgetKinds; ++i) {
    t->shed[i] = &stats.counter("culvert_tenant_shed_total",
                                {{"tenant", t->name}, {"budget", std::string(toString(static_cast<Budget>(i)))}},
                                "Connections and requests refused because the tenant was over a budget");
  }
  return t;
}

namespace {
bool listed(const std::vector<std::string>& allowed, std::string_view name) {
  if (allowed.empty()) return true;
  for (const auto& a : allowed) {
    if (a == name) return true;
  }
  return false;
}
}  // namespace

bool TenantContext::allowsListener(std::string_view listener) const {
  auto r = resource.load();
  return !r || listed(r->allowed_listeners, listener);
}

bool TenantContext::allowsRoute(std::string_view route_config) const {
  auto r = resource.load();
  return !r || listed(r->allowed_routes, route_config);
}

void TenantContext::apply(std::shared_ptr<const config::Tenant> tenant, const config::TenantLimits& defaults) {
  budget.setLimits(tenant ? tenant->limits.over(defaults) : defaults);
  weight.store(tenant ? tenant->weight : 1, std::memory_order_relaxed);
  resource.store(std::move(tenant));
}

std::optional<Budget> RequestSlot::admit(TenantContext& tenant) {
  release();
  auto refused = tenant.budget.admitRequest(TenantBudget::Clock::now());
  if (refused) {
    tenant.countShed(*refused);
    return refused;
  }
  held_ = &tenant;
  return std::nullopt;
}

void RequestSlot::release() {
  if (held_ == nullptr) return;
  held_->budget.releaseRequest();
  held_ = nullptr;
}

void BufferCharge::set(uint64_t bytes) {
  if (tenant_ == nullptr || bytes == charged_) return;
  tenant_->budget.addBuffered(static_cast<int64_t>(bytes) - static_cast<int64_t>(charged_));
  charged_ = bytes;
}

std::string overloadReason(Budget budget) {
  std::string reason = "tenant-";
  for (char c : toString(budget)) reason += c == '_' ? '-' : c;
  return reason;
}

}  // namespace culvert::tenant
