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

// A latency (or size) distribution with fixed bucket bounds, as a Prometheus histogram.
// Observations land in one of a few cache-line-separated shards picked per thread, so
// workers do not contend on one line; a scrape merges the shards. Values are integers in
// the histogram's own unit (microseconds for durations); `scale` converts them for
// exposition (1e-6: seconds).
class Histogram {
public:
  // Request durations: 0.5 ms .. 60 s, in microseconds.
  static const std::vector<uint64_t>& defaultDurationBoundsUs();

  Histogram(std::vector<uint64_t> upper_bounds, double scale);
  void observe(uint64_t value);

  struct Totals {
    std::vector<uint64_t> cumulative;  // per bound, then +Inf
    uint64_t sum = 0;
    uint64_t count = 0;
  };
  Totals totals() const;
  const std::vector<uint64_t>& upperBounds() const { return bounds_; }
  double scale() const { return scale_; }

private:
  static constexpr size_t kShards = 8;
  struct alignas(64) Shard {
    std::unique_ptr<std::atomic<uint64_t>[]> buckets;  // bounds_.size() + 1
    std::atomic<uint64_t> sum{0};
  };
  std::vector<uint64_t> bounds_;
  double scale_;
  Shard shards_[kShards];
};

using Labels = std::vector<std::pair<std::string, std::string>>;

// Owns every named metric. Lookups take a lock and happen when an object is created
// (a connection's tenant context, a cluster), never per request; the returned reference
// stays valid for the store's lifetime.
class StatsStore {
public:
  Counter& counter(const std::string& name, const Labels& labels = {}, const std::string& help = {});
  Gauge& gauge(const std::string& name, const Labels& labels = {}, const std::string& help = {});
  // Every series of one histogram family shares the bounds and scale of its first.
  Histogram& histogram(const std::string& name, const Labels& labels = {}, const std::string& help = {},
                       const std::vector<uint64_t>& upper_bounds = Histogram::defaultDurationBoundsUs(),
                       double scale = 1e-6);

  // Unique per store for the process lifetime (caches key on it, not on an address that
  // a later store may reuse).
  uint64_t id() const { return id_; }

  // Prometheus text exposition format 0.0.4. When `tenant` is set, only series carrying
  // tenant="<tenant>" are shown.
  std::string renderPrometheus(const std::string& tenant_filter = {}) const;

private:
  struct Family {
    std::string help;
    bool is_gauge = false;
    bool is_histogram = false;
    // In the map's nodes (which never move): a separate allocation per series cost ~40
    // bytes, and a cluster has four series.
    std::map<Labels, Counter> counters;
    std::map<Labels, Gauge> gauges;
    std::map<Labels, std::unique_ptr<Histogram>> histograms;
  };
  static inline std::atomic<uint64_t> next_id_{1};
  const uint64_t id_ = next_id_.fetch_add(1, std::memory_order_relaxed);
  mutable std::mutex mutex_;
  std::map<std::string, Family> families_;
};

}  // namespace culvert::common
