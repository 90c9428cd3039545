#pragma once

#include <sys/types.h>

#include <cstdint>
#include <map>
#include <memory>
#include <optional>
#include <set>
#include <string>
#include <utility>
#include <vector>

#include "agent/bootstrap.h"
#include "agent/registry.h"
#include "agent/tenant_registry.h"
#include "cni/protocol/enrollment.h"
#include "ebpf/loader/capture_program.h"
#include "proxy/common/stats.h"
#include "proxy/server/server.h"

namespace culvert::agent {

// The enrolled pods (main thread only): for each, its in-pod listener group, its BPF
// capture entry and its tenant. Enrolling opens the pod's netns, creates one
// SO_REUSEPORT listen socket per worker on 127.0.0.1:capture.port there, tags them as
// culvert's, marks the netns enrolled in BPF and hands the sockets to the workers.
class PodManager {
public:
  PodManager(const Bootstrap& bootstrap, ebpf::CaptureProgram& capture, server::Server& server,
             common::StatsStore& stats);

  common::Result<void> enroll(const cni::EnrollmentRecord& record);
  // Not enrolled is success: CNI DEL repeats.
  common::Result<void> unenrollByKey(const std::string& container_id, const std::string& ifname);
  common::Result<void> unenrollByNetns(const std::string& netns_path);
  std::vector<cni::EnrollmentRecord> list() const;
  // Each enrolled pod with its netns cookie and tenant (for per-pod capture stats and
  // `culvertctl pods`).
  struct PodStatus {
    cni::EnrollmentRecord record;
    uint64_t netns_cookie = 0;
    std::string tenant;
    bool ipv6 = false;  // an in-pod listener group on [::1] too
    ebpf::FailMode fail_mode = ebpf::FailMode::Open;  // in effect: record, else tenant, else bootstrap
  };
  std::vector<PodStatus> status() const;
  // Capture counts of the pods that have left, by tenant: a tenant's series is its pods'
  // counts plus these, so it never goes down when a pod leaves (while culvertd runs).
  const std::map<std::string, ebpf::Counters>& departedCounters() const { return departed_; }
  size_t size() const { return pods_.size(); }
  // Stops serving every pod (their listeners close) but leaves their BPF enrollment and
  // the registry: what culvertd does on SIGTERM, so a restarted culvertd loses no
  // enrollment and re-enrolls the pods still alive.
  void closeAll();

  // The on-disk registry (agent/registry.h): every enroll/unenroll is persisted before it
  // is answered. Without one (tests), nothing is persisted.
  void setRegistry(std::unique_ptr<Registry> registry) { registry_ = std::move(registry); }
  struct RestoreReport {
    size_t restored = 0;
    size_t dropped = 0;  // netns gone or replaced, or enrolling again failed
  };
  // At start, before the first configuration: gives each tenant of the registry's pods
  // the id it had, so BPF records and scope slots that survived the restart stay right.
  void reserveTenantIds();
  // At start: re-enrolls the registry's live pods, drops the rest and rewrites the file.
  common::Result<RestoreReport> restore();
  // At start: enrolls the pods culvert-cni let start uncaptured (markers in `dir`, written
  // with on_unreachable: allow), counts them and removes the markers.
  size_t adoptUncaptured(const std::filesystem::path& dir);
  // Netns cookies of the enrolled pods.
  std::set<uint64_t> cookies() const;
  // A new configuration's Tenant resources: limits and scope (TenantRegistry::apply), and
  // the fail mode of every pod whose enrollment names none, rewritten in BPF where its
  // tenant's fail_mode changed it.
  void applyTenants(std::shared_ptr<const config::TenantTable> tenants);
  // The tenants of the pods, with their budgets and Tenant resources.
  TenantRegistry& tenants() { return tenants_; }
  const TenantRegistry& tenants() const { return tenants_; }

private:
  struct Enrolled {
    cni::EnrollmentRecord record;
    std::shared_ptr<server::Pod> pod;
    dev_t netns_dev = 0;
    ino_t netns_ino = 0;
    bool ipv6 = false;
    ebpf::FailMode fail_mode = ebpf::FailMode::Open;  // as written in cv_enrolled
  };
  using Key = std::pair<std::string, std::string>;  // (container_id, ifname)

  std::shared_ptr<tenant::TenantContext> tenantFor(const std::string& name);
  // The enrollment record's fail mode, else its tenant's Tenant.fail_mode, else the
  // bootstrap's capture.fail_mode.
  ebpf::FailMode failModeFor(const cni::EnrollmentRecord& record) const;
  void remove(std::map<Key, Enrolled>::iterator it);
  common::Result<void> persist();
  // `expect`: the netns identity the registry saw at ADD; `restored_mode`: the fail mode
  // the pod had before a restart.
  common::Result<void> enrollAs(const cni::EnrollmentRecord& record, std::optional<std::pair<uint64_t, uint64_t>> expect,
                                std::optional<ebpf::FailMode> restored_mode = std::nullopt);

  const Bootstrap& bootstrap_;
  ebpf::CaptureProgram& capture_;
  server::Server& server_;
  common::StatsStore& stats_;
  std::map<Key, Enrolled> pods_;
  std::map<std::string, ebpf::Counters> departed_;  // by tenant name
  TenantRegistry tenants_;
  common::Gauge& enrolled_gauge_;
  common::Counter& uncaptured_counter_;
  std::unique_ptr<Registry> registry_;
  bool batch_ = false;  // restore(): persist once at the end
  // applyTenants has run: Tenant.fail_mode is known (else a restored pod keeps its mode).
  bool tenants_configured_ = false;
};

}  // namespace culvert::agent
