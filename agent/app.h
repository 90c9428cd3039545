#pragma once

#include <nlohmann/json.hpp>
#include <uv.h>

#include <memory>
#include <string>

#include "agent/admin/admin_server.h"
#include "agent/bootstrap.h"
#include "agent/enrollment_server.h"
#include "agent/pod_manager.h"
#include "agent/sd_notify.h"
#include "ebpf/loader/capture_program.h"
#include "proxy/common/stats.h"
#include "proxy/event/dispatcher.h"
#include "proxy/network/socket_hooks.h"
#include "proxy/server/server.h"
#include "proxy/upstream/dns_cluster.h"
#include "xds/client/ads_client.h"
#include "xds/client/dir_watcher.h"
#include "xds/client/file_source.h"

namespace culvert::agent {

// The proxy's socket hooks, served by the BPF capture program.
class BpfSocketHooks : public network::SocketTagger, public network::OriginalDestinationSource {
public:
  explicit BpfSocketHooks(ebpf::CaptureProgram& capture) : capture_(capture) {}
  common::Result<void> tag(int fd) override { return capture_.tagSocket(fd); }
  std::optional<common::SocketAddress> takeOriginalDestination(uint64_t netns_cookie,
                                                               const common::SocketAddress& client) override {
    return capture_.takeOriginalDestination(netns_cookie, client);
  }

private:
  ebpf::CaptureProgram& capture_;
};

// `culvertd uninstall`: detaches and unpins every BPF object under bpf.pin_root and
// removes state_dir's contents (the pod registry, the last-good configuration). Says
// what it removed.
common::Result<std::string> uninstall(const Bootstrap& bootstrap);

// culvertd: wires configuration, BPF capture, the workers, enrollment and admin on the
// main thread. run() returns when SIGTERM or SIGINT stopped it cleanly.
class App {
public:
  explicit App(Bootstrap bootstrap);
  ~App();

  // Loads configuration, attaches BPF, starts workers and servers.
  common::Result<void> start();
  // Runs the main loop until a stop signal; then tears everything down in order.
  void run();

private:
  // bootstrap main_thread_nice: the calling (main) thread only; the workers keep theirs.
  void lowerMainThreadPriority();
  common::Result<void> loadResources();
  common::Result<void> restorePods();
  // The one publish path of both configuration sources (resource files and ADS).
  common::Result<void> applySnapshot(std::shared_ptr<const config::Snapshot> snapshot);
  // `source` with the DNS clusters' endpoints as they resolved last.
  std::shared_ptr<const config::Snapshot> withDnsEndpoints(const std::shared_ptr<const config::Snapshot>& source);
  // A DNS cluster's hosts changed: the workers get the new cluster table, as after EDS.
  void republishDnsClusters();
  common::Result<void> startAds();
  // Returns freed heap pages to the kernel once configuration stops changing.
  void scheduleHeapTrim();
  // Captured destinations and tenant scope slots for a configuration; how many entries.
  common::Result<size_t> writeCapture(const config::Snapshot& snapshot);
  void installAdminHandlers();
  void handleEnrollment(const cni::EnrollmentRequest& request, std::function<void(cni::EnrollmentResponse)> reply);
  std::string renderStats(const std::string& tenant);
  std::string renderPodCaptureStats(const std::string& tenant);
  nlohmann::json captureStatus() const;
  std::string configDump() const;
  // /config_dump?tenant=NAME: one tenant's slice only.
  std::string tenantConfigDump(const std::string& tenant) const;
  void startServiceNotifications();
  void stop();

  Bootstrap bootstrap_;
  event::Dispatcher main_{"main"};
  common::StatsStore stats_;
  std::unique_ptr<ebpf::CaptureProgram> capture_;
  std::unique_ptr<BpfSocketHooks> hooks_;
  std::unique_ptr<server::Server> server_;
  std::unique_ptr<PodManager> pods_;
  std::unique_ptr<EnrollmentServer> enrollment_;
  std::unique_ptr<AdminServer> admin_;
  std::unique_ptr<xds::client::AdsClient> ads_;
  std::unique_ptr<xds::client::DirWatcher> resources_watcher_;

  bool config_loaded_ = false;
  std::string resources_dump_ = "null";
  xds::client::ResourceSources resource_sources_;  // the last load's, for keepLastGood
  std::string config_version_;
  std::shared_ptr<const config::Snapshot> snapshot_;  // the last published
  std::shared_ptr<const config::Snapshot> source_snapshot_;  // as the configuration source gave it
  // The listeners and tenants the BPF captured destinations were last written from, and
  // how many entries that wrote.
  std::shared_ptr<const config::ListenerTable> captured_listeners_;
  std::shared_ptr<const config::TenantTable> captured_tenants_;
  size_t captured_count_ = 0;
  // STRICT_DNS / LOGICAL_DNS resolution, on the main loop, from culvertd's own netns.
  std::unique_ptr<upstream::DnsClusterSet> dns_clusters_;
  uv_signal_t sigterm_{};
  uv_signal_t sigint_{};
  uv_signal_t sighup_{};
  uv_signal_t sigusr1_{};  // reopen access-log files (logrotate)
  bool stopping_ = false;
  // systemd Type=notify readiness and watchdog (agent/sd_notify.h); inert without NOTIFY_SOCKET.
  SdNotifier notifier_;
  std::unique_ptr<event::Timer> ready_retry_;
  std::unique_ptr<event::Timer> watchdog_;
  std::unique_ptr<event::Timer> heap_trim_;
  common::Counter& resource_errors_;
  common::Gauge& scope_overflow_;
  common::Counter& heap_trims_;
};

}  // namespace culvert::agent
