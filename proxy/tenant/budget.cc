#include "proxy/tenant/budget.h"

#include <algorithm>
#include <utility>

namespace culvert::tenant {

std::string_view toString(Budget budget) {
  switch (budget) {
    case Budget::Connections:
      return "connections";
    case Budget::RequestsInFlight:
      return "requests_in_flight";
    case Budget::RequestRate:
      return "request_rate";
    case Budget::BufferedBytes:
      return "buffered_bytes";
    case Budget::Memory:
      return "memory";
  }
  return "unknown";
}

void MemoryWatermark::onTenantBuffered(uint64_t before, uint64_t after) {
  if (after >= before) {
    total_.fetch_add(after - before, std::memory_order_relaxed);
  } else {
    total_.fetch_sub(before - after, std::memory_order_relaxed);
  }
  if (before == 0 && after > 0) active_tenants_.fetch_add(1, std::memory_order_relaxed);
  if (before > 0 && after == 0) active_tenants_.fetch_sub(1, std::memory_order_relaxed);
}

bool MemoryWatermark::shouldShed(uint64_t tenant_bytes) const {
  uint64_t limit = this->limit();
  uint64_t total = this->total();
  if (limit == 0 || total <= limit || tenant_bytes == 0) return false;
  uint64_t tenants = std::max<uint32_t>(activeTenants(), 1);
  return tenant_bytes * tenants >= total;
}

TenantBudget::TenantBudget(std::shared_ptr<MemoryWatermark> memory)
    : memory_(std::move(memory)), limits_(std::make_shared<const config::TenantLimits>()) {}

void TenantBudget::setLimits(const config::TenantLimits& limits) {
  limits_.store(std::make_shared<const config::TenantLimits>(limits));
}

bool TenantBudget::tryAcquireConnection() {
  uint32_t max = limits()->max_downstream_connections;
  uint64_t now = connections_.fetch_add(1, std::memory_order_relaxed) + 1;
  if (max != 0 && now > max) {
    connections_.fetch_sub(1, std::memory_order_relaxed);
    return false;
  }
  return true;
}

void TenantBudget::releaseConnection() { connections_.fetch_sub(1, std::memory_order_relaxed); }

std::optional<Budget> TenantBudget::admitRequest(Clock::time_point now) {
  auto limits = this->limits();
  uint64_t buffered = bufferedBytes();
  if (limits->max_buffered_bytes != 0 && buffered > limits->max_buffered_bytes) return Budget::BufferedBytes;
  if (memory_ && memory_->shouldShed(buffered)) return Budget::Memory;
  uint64_t in_flight = in_flight_.fetch_add(1, std::memory_order_relaxed) + 1;
  if (limits->max_requests_in_flight != 0 && in_flight > limits->max_requests_in_flight) {
    in_flight_.fetch_sub(1, std::memory_order_relaxed);
    return Budget::RequestsInFlight;
  }
  if (limits->max_requests_per_second != 0 && !takeToken(*limits, now)) {
    in_flight_.fetch_sub(1, std::memory_order_relaxed);
    return Budget::RequestRate;
  }
  return std::nullopt;
}

void TenantBudget::releaseRequest() { in_flight_.fetch_sub(1, std::memory_order_relaxed); }

void TenantBudget::addBuffered(int64_t delta) {
  if (delta == 0) return;
  uint64_t before;
  if (delta > 0) {
    before = buffered_.fetch_add(static_cast<uint64_t>(delta), std::memory_order_relaxed);
  } else {
    before = buffered_.fetch_sub(static_cast<uint64_t>(-delta), std::memory_order_relaxed);
  }
  if (memory_) memory_->onTenantBuffered(before, before + static_cast<uint64_t>(delta));
}

bool TenantBudget::takeToken(const config::TenantLimits& limits, Clock::time_point now) {
  const double rate = limits.max_requests_per_second;
  const double capacity = limits.burst != 0 ? limits.burst : limits.max_requests_per_second;
  std::lock_guard lock(bucket_mutex_);
  if (tokens_ < 0) {
    tokens_ = capacity;
  } else if (now > refilled_at_) {
    tokens_ += std::chrono::duration<double>(now - refilled_at_).count() * rate;
  }
  tokens_ = std::min(tokens_, capacity);  // also when the limits shrank
  refilled_at_ = std::max(refilled_at_, now);
  if (tokens_ < 1) return false;
  tokens_ -= 1;
  return true;
}

}  // namespace culvert::tenant
