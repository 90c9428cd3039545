#pragma once

#include <atomic>
#include <cstdint>
#include <map>
#include <memory>
#include <mutex>
#include <string>

namespace culvert::upstream {

// One circuit-breaker budget (connections, pending or active requests) of a cluster,
// shared by every worker as Envoy's are: the limits are per cluster, not per thread.
class ResourceLimit {
public:
  // Takes one unit unless `max` are in use.
  bool tryAcquire(uint64_t max) {
    uint64_t current = count_.load(std::memory_order_relaxed);
    do {
      if (current >= max) return false;
    } while (!count_.compare_exchange_weak(current, current + 1, std::memory_order_relaxed));
    return true;
  }
  void release() { count_.fetch_sub(1, std::memory_order_relaxed); }
  uint64_t count() const { return count_.load(std::memory_order_relaxed); }

private:
  std::atomic<uint64_t> count_{0};
};

// A cluster's budgets for one routing priority (Envoy keeps DEFAULT and HIGH apart).
struct PriorityResources {
  ResourceLimit connections;
  ResourceLimit pending_requests;
  ResourceLimit requests;
};

struct ClusterResources {
  PriorityResources by_priority[2];  // config::RoutingPriority: Default, High
  PriorityResources& at(uint8_t priority) { return by_priority[priority]; }
};

// Hands every worker the same ClusterResources for a cluster name; they live while some
// worker (or an open connection) holds them, so counts survive configuration updates.
class ResourceRegistry {
public:
  std::shared_ptr<ClusterResources> get(const std::string& cluster) {
    std::lock_guard lock(mutex_);
    auto& weak = by_cluster_[cluster];
    auto strong = weak.lock();
    if (!strong) {
      strong = std::make_shared<ClusterResources>();
      weak = strong;
    }
    return strong;
  }

private:
  std::mutex mutex_;
  std::map<std::string, std::weak_ptr<ClusterResources>> by_cluster_;
};

// Holds one unit of a ResourceLimit until destroyed.
class ResourceHold {
public:
  ResourceHold() = default;
  ResourceHold(std::shared_ptr<ClusterResources> owner, ResourceLimit* limit) : owner_(std::move(owner)), limit_(limit) {}
  ResourceHold(ResourceHold&& other) noexcept : owner_(std::move(other.owner_)), limit_(other.limit_) { other.limit_ = nullptr; }
  ResourceHold& operator=(ResourceHold&& other) noexcept {
    if (this != &other) {
      reset();
      owner_ = std::move(other.owner_);
      limit_ = other.limit_;
      other.limit_ = nullptr;
    }
    return *this;
  }
  ~ResourceHold() { reset(); }
  void reset() {
    if (limit_) limit_->release();
    limit_ = nullptr;
    owner_.reset();
  }
  explicit operator bool() const { return limit_ != nullptr; }

private:
  std::shared_ptr<ClusterResources> owner_;
  ResourceLimit* limit_ = nullptr;
};

}  // namespace culvert::upstream
