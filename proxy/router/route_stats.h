#pragma once

#include <string_view>

#include "proxy/common/stats.h"

namespace culvert::router {

// culvert_http_downstream_rq_duration_seconds{tenant, route, cluster}: one series per
// (tenant, route name, cluster) actually taken. Looked up through a per-thread cache, so
// the store's lock is taken once per series and worker, never per request.
common::Histogram& requestDurationHistogram(common::StatsStore& stats, std::string_view tenant, std::string_view route,
                                            std::string_view cluster);

}  // namespace culvert::router
