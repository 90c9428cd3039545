#pragma once

#include <cstdint>

#include "proxy/accesslog/access_log.h"
#include "proxy/common/stats.h"
#include "proxy/event/dispatcher.h"
#include "proxy/event/scheduler.h"
#include "proxy/router/retry_state.h"
#include "proxy/upstream/cluster_manager.h"
#include "proxy/upstream/connection_pool.h"
#include "proxy/upstream/http2_pool.h"

namespace culvert::server {

// What a session borrows from the worker it runs on.
struct WorkerServices {
  common::StatsStore& stats;
  event::Dispatcher& dispatcher;
  event::Scheduler& scheduler;
  upstream::ClusterManager& clusters;
  upstream::ConnectionPool& pool;
  router::RetryResourceRegistry& retry_resources;  // per-cluster retry circuit breakers
  upstream::Http2Pool* http2_pool = nullptr;  // upstream HTTP/2 connections (multiplexed)
  accesslog::LogManager* access_logs = nullptr;  // access-log files; null = none
  uint32_t worker_index = 0;
};

}  // namespace culvert::server
