#include "proxy/common/stats.h"

#include <algorithm>

namespace culvert::common {

Counter& StatsStore::counter(const std::string& name, const Labels& labels, const std::string& help) {
  std::lock_guard lock(mutex_);
  auto& family = families_[name];
  if (!help.empty()) family.help = help;
  auto& slot = family.counters[labels];
  if (!slot) slot = std::make_unique<Counter>();
  return *slot;
}

Gauge& StatsStore::gauge(const std::string& name, const Labels& labels, const std::string& help) {
  std::lock_guard lock(mutex_);
  auto& family = families_[name];
  family.is_gauge = true;
  if (!help.empty()) family.help = help;
  auto& slot = family.gauges[labels];
  if (!slot) slot = std::make_unique<Gauge>();
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
    if (family.is_gauge) {
      for (const auto& [labels, g] : family.gauges) {
        if (matchesTenant(labels, tenant_filter)) series += name + renderLabels(labels) + " " + std::to_string(g->value()) + "\n";
      }
    } else {
      for (const auto& [labels, c] : family.counters) {
        if (matchesTenant(labels, tenant_filter)) series += name + renderLabels(labels) + " " + std::to_string(c->value()) + "\n";
      }
    }
    if (series.empty()) continue;
    if (!family.help.empty()) out += "# HELP " + name + " " + family.help + "\n";
    out += "# TYPE " + name + (family.is_gauge ? " gauge\n" : " counter\n");
    out += series;
  }
  return out;
}

}  // namespace culvert::common
