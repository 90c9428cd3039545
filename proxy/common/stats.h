#pragma once

#include <atomic>
#include <cstdint>
#include <map>
#include <memory>
#include <mutex>
#include <string>
#include <utility>
#include <vector>

namespace culvert::common {

// A monotonically increasing counter. Relaxed atomics: workers bump their own counters
// on the hot path, the admin thread only reads.
class Counter {
public:
  void inc(uint64_t n = 1) { value_.fetch_add(n, std::memory_order_relaxed); }
  uint64_t value() const { return value_.load(std::memory_order_relaxed); }

private:
  std::atomic<uint64_t> value_{0};
};

class Gauge {
public:
  void set(int64_t v) { value_.store(v, std::memory_order_relaxed); }
  void add(int64_t v) { value_.fetch_add(v, std::memory_order_relaxed); }
  int64_t value() const { return value_.load(std::memory_order_relaxed); }

private:
  std::atomic<int64_t> value_{0};
};

using Labels = std::vector<std::pair<std::string, std::string>>;

// Owns every named metric. Lookups take a lock and happen when an object is created
// (a connection's tenant context, a cluster), never per request; the returned reference
// stays valid for the store's lifetime.
class StatsStore {
public:
  Counter& counter(const std::string& name, const Labels& labels = {}, const std::string& help = {});
  Gauge& gauge(const std::string& name, const Labels& labels = {}, const std::string& help = {});

  // Prometheus text exposition format 0.0.4. When `tenant` is set, only series carrying
  // tenant="<tenant>" are shown.
  std::string renderPrometheus(const std::string& tenant_filter = {}) const;

private:
  struct Family {
    std::string help;
    bool is_gauge = false;
    std::map<Labels, std::unique_ptr<Counter>> counters;
    std::map<Labels, std::unique_ptr<Gauge>> gauges;
  };
  mutable std::mutex mutex_;
  std::map<std::string, Family> families_;
};

}  // namespace culvert::common
