// Worker-side cost of an access-log line: formatting culvert's default JSON line, and
// handing it to the file's per-worker buffer (the writer thread's share is not here).
//   build/tests/bench/accesslog_format_bench
#include <benchmark/benchmark.h>

#include "proxy/accesslog/formatter.h"
#include "proxy/accesslog/log_file.h"

namespace culvert::accesslog {
namespace {

struct Sample {
  http::RequestHead request;
  StreamInfo info;
  Sample() {
    request.method = "GET";
    request.path = "/api/v1/orders/12345";
    request.headers.add("host", "orders.shop");
    request.headers.add("x-request-id", "6f1c2a3e-1111-4222-8333-944455556666");
    request.headers.add("user-agent", "curl/7.88.1");
    info.request = &request;
    info.protocol = "HTTP/1.1";
    info.response_code = 200;
    info.response_code_details = "via_upstream";
    info.start_time = std::chrono::system_clock::now();
    info.start = std::chrono::steady_clock::now();
    info.end = info.start + std::chrono::milliseconds(3);
    info.upstream_host = *common::SocketAddress::parse("10.244.1.7", 8080);
    info.upstream_cluster = "orders";
    info.route_name = "orders";
    info.downstream_remote_address = "10.244.0.5:40312";
    info.downstream_local_address = "10.96.0.10:80";
    info.tenant = "shop";
    info.pod_name = "web-1";
    info.pod_namespace = "shop";
    info.pod_ip = "10.244.0.5";
  }
};

void BM_FormatDefaultJsonLine(benchmark::State& state) {
  Sample s;
  auto f = Formatter::defaultJson();
  for (auto _ : state) benchmark::DoNotOptimize(f->format(s.info));
}
BENCHMARK(BM_FormatDefaultJsonLine);

void BM_AppendToWorkerBuffer(benchmark::State& state) {
  Sample s;
  common::StatsStore stats;
  LogManager manager({.shards = 1}, stats);
  auto file = manager.file("/dev/null");
  std::string line = Formatter::defaultJson()->format(s.info);
  for (auto _ : state) file->append(0, line);
  state.counters["dropped"] = static_cast<double>(file->dropped());
}
BENCHMARK(BM_AppendToWorkerBuffer);

}  // namespace
}  // namespace culvert::accesslog

BENCHMARK_MAIN();
