#include "proxy/common/stats.h"

#include <algorithm>
#include <cstdio>
#include <functional>
#include <thread>

namespace culvert::common {

Counter& StatsStore::counter(const std::string& name, const Labels& labels, const std::string& help) {
  std::lock_guard lock(mutex_);
  auto& family = families_[name];
  if (!help.empty()) family.help = help;
  return family.counters.try_emplace(labels).first->second;
}

Gauge& StatsStore::gauge(const std::string& name, const Labels& labels, const std::string& help) {
  std::lock_guard lock(mutex_);
  auto& family = families_[name];
  family.is_gauge = true;
  if (!help.empty()) family.help = help;
  return family.gauges.try_emplace(labels).first->second;
}

const std::vector<uint64_t>& Histogram::defaultDurationBoundsUs() {
  static const std::vector<uint64_t> bounds{500,     1000,    2500,    5000,     10000,    25000,   50000,
                                            100000,  250000,  500000,  1000000,  2500000,  5000000, 10000000,
                                            30000000, 60000000};
  return bounds;
}

Histogram::Histogram(std::vector<uint64_t> upper_bounds, double scale) : bounds_(std::move(upper_bounds)), scale_(scale) {
  for (auto& shard : shards_) {
    shard.buckets = std::make_unique<std::atomic<uint64_t>[]>(bounds_.size() + 1);
  }
}

void Histogram::observe(uint64_t value) {
  // One shard per thread for its lifetime: workers are long-lived threads.
  thread_local const size_t shard_index = std::hash<std::thread::id>{}(std::this_thread::get_id()) % kShards;
  auto& shard = shards_[shard_index];
  size_t bucket = static_cast<size_t>(std::lower_bound(bounds_.begin(), bounds_.end(), value) - bounds_.begin());
  shard.buckets[bucket].fetch_add(1, std::memory_order_relaxed);
  shard.sum.fetch_add(value, std::memory_order_relaxed);
}

Histogram::Totals Histogram::totals() const {
  Totals out;
  out.cumulative.assign(bounds_.size() + 1, 0);
  for (const auto& shard : shards_) {
    for (size_t i = 0; i <= bounds_.size(); ++i) out.cumulative[i] += shard.buckets[i].load(std::memory_order_relaxed);
    out.sum += shard.sum.load(std::memory_order_relaxed);
  }
  for (size_t i = 1; i < out.cumulative.size(); ++i) out.cumulative[i] += out.cumulative[i - 1];
  out.count = out.cumulative.back();
  return out;
}

Histogram& StatsStore::histogram(const std::string& name, const Labels& labels, const std::string& help,
                                 const std::vector<uint64_t>& upper_bounds, double scale) {
  std::lock_guard lock(mutex_);
  auto& family = families_[name];
  family.is_histogram = true;
  if (!help.empty()) family.help = help;
  auto it = family.histograms.find(labels);
  if (it != family.histograms.end()) return *it->second;
  auto made = family.histograms.empty()
                  ? std::make_unique<Histogram>(upper_bounds, scale)
                  : std::make_unique<Histogram>(family.histograms.begin()->second->upperBounds(),
                                                family.histograms.begin()->second->scale());
  auto& slot = family.histograms[labels];
  slot = std::move(made);
  return *slot;
}

namespace {

std::string escapeLabel(const std::string& v) {
  std::string out;
  for (char c : v) {
    if (c == '\\' || c == '"') out += '\\';
    if (c == '\n') {
      out += "\\n";
      continue;
    }
    out += c;
  }
  return out;
}

std::string renderLabels(const Labels& labels) {
  if (labels.empty()) return {};
  std::string out = "{";
  for (size_t i = 0; i < labels.size(); ++i) {
    if (i) out += ',';
    out += labels[i].first + "=\"" + escapeLabel(labels[i].second) + "\"";
  }
  return out + "}";
}

std::string formatNumber(double v) {
  char buf[32];
  std::snprintf(buf, sizeof buf, "%.9g", v);
  return buf;
}

// `labels` plus one more label (le="...") for bucket lines.
std::string renderLabelsWith(const Labels& labels, const std::string& key, const std::string& value) {
  Labels all = labels;
  all.emplace_back(key, value);
  return renderLabels(all);
}

std::string renderHistogram(const std::string& name, const Labels& labels, const Histogram& h) {
  auto totals = h.totals();
  std::string out;
  const auto& bounds = h.upperBounds();
  for (size_t i = 0; i < bounds.size(); ++i) {
    out += name + "_bucket" + renderLabelsWith(labels, "le", formatNumber(static_cast<double>(bounds[i]) * h.scale())) +
           " " + std::to_string(totals.cumulative[i]) + "\n";
  }
  out += name + "_bucket" + renderLabelsWith(labels, "le", "+Inf") + " " + std::to_string(totals.count) + "\n";
  out += name + "_sum" + renderLabels(labels) + " " + formatNumber(static_cast<double>(totals.sum) * h.scale()) + "\n";
  out += name + "_count" + renderLabels(labels) + " " + std::to_string(totals.count) + "\n";
  return out;
}

bool matchesTenant(const Labels& labels, const std::string& tenant) {
  if (tenant.empty()) return true;
  return std::any_of(labels.begin(), labels.end(),
                     [&](const auto& l) { return l.first == "tenant" && l.second == tenant; });
}

}  // namespace

std::string StatsStore::renderPrometheus(const std::string& tenant_filter) const {
  std::lock_guard lock(mutex_);
  std::string out;
  for (const auto& [name, family] : families_) {
    std::string series;
    if (family.is_histogram) {
      for (const auto& [labels, h] : family.histograms) {
        if (matchesTenant(labels, tenant_filter)) series += renderHistogram(name, labels, *h);
      }
    } else if (family.is_gauge) {
      for (const auto& [labels, g] : family.gauges) {
        if (matchesTenant(labels, tenant_filter)) series += name + renderLabels(labels) + " " + std::to_string(g.value()) + "\n";
      }
    } else {
      for (const auto& [labels, c] : family.counters) {
        if (matchesTenant(labels, tenant_filter)) series += name + renderLabels(labels) + " " + std::to_string(c.value()) + "\n";
      }
    }
    if (series.empty()) continue;
    if (!family.help.empty()) out += "# HELP " + name + " " + family.help + "\n";
    out += "# TYPE " + name + (family.is_histogram ? " histogram\n" : family.is_gauge ? " gauge\n" : " counter\n");
    out += series;
  }
  return out;
}

}  // namespace culvert::common
