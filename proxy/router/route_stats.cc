#include "proxy/router/route_stats.h"

#include <map>
#include <string>
#include <tuple>

namespace culvert::router {

common::Histogram& requestDurationHistogram(common::StatsStore& stats, std::string_view tenant, std::string_view route,
                                            std::string_view cluster) {
  using Key = std::tuple<uint64_t, std::string, std::string, std::string>;
  thread_local std::map<Key, common::Histogram*, std::less<>> cache;
  auto lookup = std::make_tuple(stats.id(), tenant, route, cluster);
  if (auto it = cache.find(lookup); it != cache.end()) return *it->second;
  auto& h = stats.histogram("culvert_http_downstream_rq_duration_seconds",
                            {{"tenant", std::string(tenant)}, {"route", std::string(route)}, {"cluster", std::string(cluster)}},
                            "Downstream HTTP request durations, from the request head to the end of the response");
  cache.emplace(Key{stats.id(), std::string(tenant), std::string(route), std::string(cluster)}, &h);
  return h;
}

}  // namespace culvert::router
