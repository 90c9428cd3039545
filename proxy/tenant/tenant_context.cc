#include "proxy/tenant/tenant_context.h"

namespace culvert::tenant {

std::shared_ptr<TenantContext> TenantContext::create(uint32_t id, std::string name, common::StatsStore& stats) {
  auto t = std::make_shared<TenantContext>();
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
  t->upstream_cx_connect_fail = &stats.counter("culvert_upstream_cx_connect_fail_total", labels,
                                               "Upstream connection attempts that failed");
  t->no_filter_chain = &stats.counter("culvert_downstream_cx_no_filter_chain_total", labels,
                                      "Captured connections that matched no listener or filter chain");
  return t;
}

}  // namespace culvert::tenant
