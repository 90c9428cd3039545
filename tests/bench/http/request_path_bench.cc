// The pure, per-request share of proxying one HTTP/1.1 request on a worker: parsing the
// head, routing it, and preparing the upstream request (x-forwarded-for, x-request-id,
// header mutations). No sockets: CPU-per-request changes too small for the proxy
// benchmark's noise (a few %) show here.
//   build/tests/bench/http_request_path_bench
#include <benchmark/benchmark.h>

#include <string>
#include <string_view>

#include "proxy/http/http1/parser.h"
#include "proxy/router/router.h"

namespace {

using culvert::http::RequestHead;
using culvert::http::http1::Parser;
using culvert::http::http1::ParserCallbacks;

// What curl and a typical service client send: eight headers, mixed case.
constexpr std::string_view kRequest =
    "GET /api/v1/orders/12345?expand=items HTTP/1.1\r\n"
    "Host: orders.shop.svc.cluster.local\r\n"
    "User-Agent: curl/7.88.1\r\n"
    "Accept: application/json\r\n"
    "Accept-Encoding: gzip, deflate\r\n"
    "Authorization: Bearer eyJhbGciOiJIUzI1NiJ9.eyJzdWIiOiIxMjM0In0.abc\r\n"
    "X-B3-TraceId: 80f198ee56343ba864fe8b2a57d3eff7\r\n"
    "Content-Type: application/json\r\n"
    "Connection: keep-alive\r\n"
    "\r\n";

class KeepHead : public ParserCallbacks {
public:
  void onRequestHead(RequestHead&& head) override { this->head = std::move(head); }
  void onBody(std::string_view) override {}
  void onMessageComplete() override {}
  RequestHead head;
};

void BM_ParseRequestHead(benchmark::State& state) {
  for (auto _ : state) {
    KeepHead keep;
    Parser parser(Parser::Mode::Request, keep);
    auto result = parser.dispatch(kRequest);
    if (result.status == Parser::Status::Error) return state.SkipWithError("parse error");
    benchmark::DoNotOptimize(keep.head);
  }
}
BENCHMARK(BM_ParseRequestHead);

culvert::config::RouteConfiguration routes() {
  culvert::config::RouteConfiguration config;
  config.name = "bench";
  for (std::string service : {"payments", "users", "orders"}) {
    culvert::config::VirtualHost host;
    host.name = service;
    host.domains = {service + ".shop.svc.cluster.local", service};
    for (std::string prefix : {"/api/v2/", "/api/v1/", "/"}) {
      culvert::config::Route route;
      route.match.prefix = prefix;
      route.route = culvert::config::RouteAction{};
      route.route->cluster = service;
      host.routes.push_back(route);
    }
    config.virtual_hosts.push_back(host);
  }
  return config;
}

void BM_RouteAndPrepareUpstreamRequest(benchmark::State& state) {
  KeepHead keep;
  Parser parser(Parser::Mode::Request, keep);
  if (parser.dispatch(kRequest).status == Parser::Status::Error) return state.SkipWithError("parse error");
  auto config = routes();
  uint64_t random = 0;
  for (auto _ : state) {
    RequestHead request = keep.head;
    auto decision = culvert::router::decideRoute(config, request, ++random);
    if (!decision.route) return state.SkipWithError("no route");
    culvert::router::prepareUpstreamRequest(config, decision, {"10.244.1.7"}, request);
    benchmark::DoNotOptimize(request);
  }
}
BENCHMARK(BM_RouteAndPrepareUpstreamRequest);

}  // namespace

BENCHMARK_MAIN();
