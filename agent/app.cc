#include "agent/app.h"

#include <malloc.h>
#include <sys/resource.h>
#include <unistd.h>

#include <cstring>

#include <nlohmann/json.hpp>
#include <spdlog/spdlog.h>

#include "agent/capture_plan.h"
#include "ebpf/loader/cgroup.h"
#include "proxy/network/socket.h"
#include "proxy/upstream/cares_dns_resolver.h"
#include "xds/client/file_source.h"

namespace culvert::agent {

namespace {
constexpr std::chrono::milliseconds kHealthProbeTimeout{1000};
// How long configuration must stay unchanged before the heap is trimmed (App::applySnapshot).
constexpr std::chrono::milliseconds kHeapTrimQuietPeriod{2000};
}

common::Result<std::string> uninstall(const Bootstrap& bootstrap) {
  auto removed = ebpf::CaptureProgram::uninstall(bootstrap.bpf.pin_root);
  if (!removed) return std::unexpected(common::nest("bpf.pin_root", removed.error()));
  std::string out = *removed;
  std::error_code ec;
  const auto& dir = bootstrap.state_dir;
  if (std::filesystem::is_directory(dir, ec)) {
    size_t n = 0;
    for (const auto& entry : std::filesystem::directory_iterator(dir, ec)) {
      std::filesystem::remove_all(entry.path(), ec);
      if (ec) return common::fail("remove " + entry.path().string() + ": " + ec.message(), "state_dir");
      ++n;
    }
    out += "; removed " + std::to_string(n) + " entries of state_dir " + dir.string();
  }
  return out;
}

App::App(Bootstrap bootstrap)
    : bootstrap_(std::move(bootstrap)),
      resource_errors_(stats_.counter("culvert_config_resource_rejected_total", {},
                                      "Resources rejected while loading configuration")),
      scope_overflow_(stats_.gauge("culvert_tenant_scope_unenforced_in_bpf", {},
                                   "Restricted tenants beyond the BPF scope capacity (only the worker enforces "
                                   "their allowed_listeners)")),
      heap_trims_(stats_.counter("culvert_heap_trims_total", {},
                                 "Heap trims (freed memory returned to the kernel) after configuration went quiet")) {}

App::~App() { stop(); }

void App::lowerMainThreadPriority() {
  if (bootstrap_.main_thread_nice == 0) return;
  // Linux keeps the nice value per thread: this one alone, after the workers started.
  int nice = static_cast<int>(bootstrap_.main_thread_nice);
  if (setpriority(PRIO_PROCESS, static_cast<id_t>(gettid()), nice) != 0) {
    spdlog::warn("main_thread_nice {}: setpriority failed ({}); the main thread keeps its priority", nice,
                 std::strerror(errno));
    return;
  }
  spdlog::info("main thread at nice {}: the workers run first on a shared core", nice);
}

common::Result<void> App::start() {
  uint64_t nofile = network::raiseFileLimit();
  spdlog::info("culvertd {} starting: node {}, {} workers, RLIMIT_NOFILE {}", CULVERT_VERSION, bootstrap_.node.id,
               effectiveWorkers(bootstrap_), nofile);

  ebpf::CaptureProgram::Options capture_options;
  capture_options.pin_root = bootstrap_.bpf.pin_root;
  capture_options.capture_port = bootstrap_.capture.port;
  capture_options.cgroup_path = bootstrap_.capture.cgroup;
  if (capture_options.cgroup_path.empty()) {
    auto root = ebpf::detectCgroup2Root();
    if (!root) return std::unexpected(common::nest("capture.cgroup", root.error()));
    capture_options.cgroup_path = *root;
  }
  auto capture = ebpf::CaptureProgram::load(capture_options);
  if (!capture) return std::unexpected(capture.error());
  capture_ = std::move(*capture);
  if (capture_->adoptedPins()) {
    spdlog::info("re-adopted pinned BPF maps in {} ({} of 5 links swapped to this build's programs)",
                 capture_->pinDir().string(), capture_->adoptedLinks());
  }
  if (!capture_->attachReport().empty()) spdlog::warn("another program shares the connect hook: {}", capture_->attachReport());
  if (auto ok = capture_->setGlobalExclusions(bootstrap_.capture.exclude_ports, bootstrap_.capture.exclude_cidrs); !ok) {
    return std::unexpected(common::nest("capture.exclude_ports/exclude_cidrs", ok.error()));
  }
  spdlog::info("capture attached at cgroup {}, maps pinned in {}", capture_->cgroupPath().string(),
               capture_->pinDir().string());

  hooks_ = std::make_unique<BpfSocketHooks>(*capture_);
  server::WorkerHooks worker_hooks{hooks_.get(), hooks_.get()};
  worker_hooks.drain_timeout = std::chrono::seconds(bootstrap_.drain_timeout_seconds);
  server_ = std::make_unique<server::Server>(main_, effectiveWorkers(bootstrap_), worker_hooks, stats_);
  server_->start();
  lowerMainThreadPriority();
  pods_ = std::make_unique<PodManager>(bootstrap_, *capture_, *server_, stats_);
  pods_->setRegistry(std::make_unique<Registry>(bootstrap_.state_dir));
  pods_->reserveTenantIds();  // before the configuration writes tenants' scope to BPF
  upstream::DnsClusterSet::Options dns;
  dns.resolvers = [this](const config::DnsResolution& resolution)
      -> common::Result<std::unique_ptr<upstream::DnsResolver>> {
    upstream::CaresDnsResolver::Options options;
    options.servers = resolution.resolvers;
    options.use_tcp = resolution.use_tcp;
    options.no_default_search_domain = resolution.no_default_search_domain;
    auto resolver = upstream::CaresDnsResolver::create(main_, options);
    if (!resolver) return std::unexpected(resolver.error());
    return std::unique_ptr<upstream::DnsResolver>(std::move(*resolver));
  };
  dns.timers = upstream::dispatcherDnsTimers(main_);
  dns.stats = &stats_;
  // Posted: a resolution callback runs inside c-ares, which must not see its channel
  // replaced under it by what the publish triggers.
  dns.on_change = [this] { main_.post([this] { republishDnsClusters(); }); };
  dns_clusters_ = std::make_unique<upstream::DnsClusterSet>(std::move(dns));

  if (bootstrap_.xds.address.empty()) {
    if (auto loaded = loadResources(); !loaded) return loaded;
    // Reload on change (as on SIGHUP); the whole directory is re-read and published at once.
    auto watcher = xds::client::DirWatcher::create(main_, bootstrap_.resources.path, std::chrono::milliseconds(200),
                                                   [this] {
                                                     spdlog::info("resources.path changed: reloading");
                                                     if (auto ok = loadResources(); !ok) {
                                                       spdlog::error("reload: {}", ok.error().describe());
                                                     }
                                                   });
    if (watcher) {
      resources_watcher_ = std::move(*watcher);
    } else {
      spdlog::warn("resources.path is not watched (reload with SIGHUP): {}", watcher.error().describe());
    }
  } else if (auto ads = startAds(); !ads) {
    return ads;
  }
  if (auto restored = restorePods(); !restored) return restored;

  EnrollmentServer::Options enrollment_options;
  enrollment_options.socket_path = bootstrap_.enrollment.socket;
  auto enrollment = EnrollmentServer::create(
      main_, enrollment_options, [this](const auto& request, auto reply) { handleEnrollment(request, std::move(reply)); });
  if (!enrollment) return std::unexpected(common::nest("enrollment.socket", enrollment.error()));
  enrollment_ = std::move(*enrollment);

  if (bootstrap_.admin.address || !bootstrap_.admin.socket.empty()) {
    AdminServer::Options admin_options;
    admin_options.address = bootstrap_.admin.address;
    admin_options.socket_path = bootstrap_.admin.socket;
    auto admin = AdminServer::create(main_, admin_options);
    if (!admin) return std::unexpected(common::nest("admin", admin.error()));
    admin_ = std::move(*admin);
    installAdminHandlers();
    if (admin_->boundAddress()) spdlog::info("admin listening on {}", admin_->boundAddress()->toString());
  }

  auto on_signal = [](uv_signal_t* handle, int signum) {
    auto* app = static_cast<App*>(handle->data);
    if (signum == SIGUSR1) {
      // logrotate's postrotate: access-log files are reopened by their writer thread.
      app->server_->accessLogs().reopen();
      return;
    }
    if (signum == SIGHUP) {
      if (app->ads_) return;  // the control plane is the configuration source
      if (auto ok = app->loadResources(); !ok) spdlog::error("reload: {}", ok.error().describe());
      return;
    }
    spdlog::info("received {}, stopping", signum == SIGTERM ? "SIGTERM" : "SIGINT");
    app->stop();
  };
  for (auto* s : {&sigterm_, &sigint_, &sighup_, &sigusr1_}) {
    uv_signal_init(main_.loop(), s);
    s->data = this;
  }
  uv_signal_start(&sigterm_, on_signal, SIGTERM);
  uv_signal_start(&sigint_, on_signal, SIGINT);
  uv_signal_start(&sighup_, on_signal, SIGHUP);
  uv_signal_start(&sigusr1_, on_signal, SIGUSR1);
  startServiceNotifications();
  return {};
}

void App::startServiceNotifications() {
  auto notifier = SdNotifier::fromEnvironment();
  if (!notifier) {
    spdlog::warn("systemd notifications disabled: {}", notifier.error().describe());
    return;
  }
  notifier_ = *notifier;
  if (!notifier_.enabled()) return;
  // READY=1 exactly when /ready would answer 200: configuration loaded and every worker
  // answering. Workers that do not answer yet are probed again a second later.
  ready_retry_ = main_.createTimer([this] {
    if (stopping_) return;
    server_->probeWorkers(kHealthProbeTimeout, [this](bool ok) {
      if (stopping_) return;
      if (!ok || !config_loaded_) {
        ready_retry_->enable(std::chrono::seconds(1));
        return;
      }
      if (auto sent = notifier_.notify("READY=1\nSTATUS=serving"); !sent) {
        spdlog::warn("sd_notify READY: {}", sent.error().describe());
      }
    });
  });
  ready_retry_->enable(std::chrono::milliseconds(0));
  // WATCHDOG=1 only while the workers answer, so a stalled worker loop lets systemd's
  // WatchdogSec restart the service just as /healthz fails a kubelet liveness probe.
  if (auto interval = notifier_.watchdogInterval()) {
    spdlog::info("systemd watchdog: pinging every {} ms while workers answer", interval->count());
    auto timeout = std::min<std::chrono::milliseconds>(*interval, kHealthProbeTimeout);
    watchdog_ = main_.createTimer([this, timeout] {
      if (stopping_) return;
      server_->probeWorkers(timeout, [this](bool ok) {
        if (!ok || stopping_) return;
        if (auto sent = notifier_.notify("WATCHDOG=1"); !sent) spdlog::warn("sd_notify WATCHDOG: {}", sent.error().describe());
      });
    });
    watchdog_->enable(*interval, *interval);
  }
}

common::Result<void> App::restorePods() {
  // Before the enrollment socket opens: the registry's live pods first, then the pods
  // culvert-cni let start uncaptured, then BPF entries of netns culvertd does not know.
  // No listener is open yet, so no captured connect can succeed and make a record:
  // whatever records exist are of the previous process's queued connections.
  size_t stale_records = capture_->clearOriginalDestinations();
  auto report = pods_->restore();
  if (!report) return std::unexpected(common::nest("state_dir", report.error()));
  size_t adopted = pods_->adoptUncaptured(bootstrap_.enrollment.socket.parent_path() / "uncaptured");
  auto known = pods_->cookies();
  size_t purged = 0;
  for (uint64_t cookie : capture_->enrolledNetnsCookies()) {
    if (known.contains(cookie)) continue;
    if (auto ok = capture_->unenrollPod(cookie); ok) ++purged;
  }
  spdlog::info("registry {}: {} pods re-enrolled, {} dropped, {} started uncaptured and adopted, {} unknown BPF "
               "entries purged, {} stale original-destination records deleted",
               (bootstrap_.state_dir / "pods.json").string(), report->restored, report->dropped, adopted, purged,
               stale_records);
  return {};
}

common::Result<void> App::loadResources() {
  const auto& dir = bootstrap_.resources.path;
  std::shared_ptr<const config::Snapshot> snapshot;
  std::error_code ec;
  if (!std::filesystem::exists(dir, ec)) {
    // No resources is a valid, empty configuration: the daemon runs and captures nothing.
    spdlog::warn("resources.path {} does not exist: serving an empty configuration", dir.string());
    snapshot = std::make_shared<config::Snapshot>();
    resources_dump_ = "null";
  } else {
    auto loaded = xds::client::loadResourceDirectory(dir);
    if (!loaded) return std::unexpected(common::nest("resources.path", loaded.error()));
    for (const auto& e : loaded->errors) {
      resource_errors_.inc();
      spdlog::error("resource rejected: {}: {} {}: {}", e.file, e.type_url, e.resource, e.reason);
    }
    if (snapshot_) {
      for (const auto& kept : xds::client::keepLastGood(*loaded, *snapshot_, resource_sources_)) {
        std::string_view type = kept.type_url;  // ".../envoy.config.listener.v3.Listener": "Listener"
        spdlog::warn("resource {} {} keeps its last good version", type.substr(type.rfind('.') + 1), kept.name);
      }
    }
    snapshot = std::make_shared<config::Snapshot>(std::move(loaded->snapshot));
    resources_dump_ = loaded->config_dump_json;
    resource_sources_ = std::move(loaded->sources);
  }
  return applySnapshot(std::move(snapshot));
}

common::Result<void> App::startAds() {
  auto target = xds::client::parseGrpcTarget(bootstrap_.xds.address);
  if (!target) return std::unexpected(common::nest("xds.address", target.error()));
  xds::client::AdsClientOptions options;
  options.address = bootstrap_.xds.address;
  if (bootstrap_.xds.tls.enabled()) {
    auto config = xdsTlsClientConfig(bootstrap_.xds);
    if (!config) return std::unexpected(config.error());
    auto context = tls::ClientContext::load(*config);
    if (!context) return std::unexpected(common::nest("xds.tls", context.error()));
    options.tls = *context;
  }
  options.node_id = bootstrap_.node.id;
  options.node_cluster = bootstrap_.node.cluster;
  options.delta = bootstrap_.xds.delta;
  options.locality_region = bootstrap_.node.locality.region;
  options.locality_zone = bootstrap_.node.locality.zone;
  options.locality_sub_zone = bootstrap_.node.locality.sub_zone;
  options.node_metadata = bootstrap_.node.metadata;
  options.state_file = bootstrap_.state_dir / "xds_last_good.bin";
  options.max_stale = std::chrono::seconds(bootstrap_.xds.max_stale_seconds);
  ads_ = std::make_unique<xds::client::AdsClient>(main_, stats_, options, *target, [this](auto snapshot) {
    if (auto ok = applySnapshot(std::move(snapshot)); !ok) spdlog::error("xds: {}", ok.error().describe());
  });
  spdlog::info("xds: control plane at {} ({}); resources.path is not read", bootstrap_.xds.address,
               options.tls ? "TLS 1.2" : "plaintext");
  ads_->start();
  return {};
}

std::shared_ptr<const config::Snapshot> App::withDnsEndpoints(const std::shared_ptr<const config::Snapshot>& source) {
  auto clusters = dns_clusters_->resolve(source->clusters);
  if (clusters == source->clusters) return source;
  auto out = std::make_shared<config::Snapshot>(*source);
  out->clusters = std::move(clusters);
  return out;
}

void App::republishDnsClusters() {
  if (stopping_ || !source_snapshot_) return;
  auto snapshot = withDnsEndpoints(source_snapshot_);
  if (snapshot->clusters == snapshot_->clusters) return;
  snapshot_ = snapshot;
  // Only endpoints changed: listeners, tenants and captured destinations stay as they are.
  server_->publish(snapshot);
}

common::Result<void> App::applySnapshot(std::shared_ptr<const config::Snapshot> source) {
  source_snapshot_ = source;
  dns_clusters_->update(*source->clusters);
  auto snapshot = withDnsEndpoints(source);
  config_version_ = snapshot->version;
  snapshot_ = snapshot;
  // Tenant limits and scope first, so the new listeners never run under the old ones.
  if (pods_) pods_->applyTenants(snapshot->tenants);
  auto published = server_->publish(snapshot);
  for (const auto& e : published.bind_errors) {
    resource_errors_.inc();
    spdlog::error("bound listener not served: {}", e.describe());
  }
  // The virtual listeners' addresses, any-IP ones narrowed by their chains' prefixes,
  // each with the restricted tenants allowed to use it.
  // Captured destinations follow listeners and tenants only. An update that kept every
  // one of them (EDS, CDS) skips the BPF write, whose diff walks the maps: 5 % of a
  // 10,000-endpoint EDS update's main-thread time.
  if (!captured_listeners_ || captured_listeners_->by_name != snapshot->listeners->by_name ||
      captured_tenants_->by_name != snapshot->tenants->by_name) {
    auto captured = writeCapture(*snapshot);
    if (!captured) return std::unexpected(captured.error());
    // The tables only: the whole snapshot would keep its cluster table alive too.
    captured_listeners_ = snapshot->listeners;
    captured_tenants_ = snapshot->tenants;
    captured_count_ = *captured;
  }
  config_loaded_ = true;
  scheduleHeapTrim();
  spdlog::info("configuration {} loaded: {} listeners, {} clusters, {} captured destinations",
               config_version_.empty() ? "(unversioned)" : config_version_, snapshot->listeners->by_name.size(),
               snapshot->clusters->by_name.size(), captured_count_);
  return {};
}

// Decoding a large update (protobuf arenas, the gRPC message buffer) leaves megabytes
// freed but still resident in the heap; handing those pages back makes RSS follow the
// configuration's size (~300 bytes per endpoint otherwise). Trimming after every update
// cost the main thread 3.5 ms of a 10,000-endpoint EDS update's 8.6 (madvise, then page
// faults as the next decode touched the same pages again), on the core a worker may
// share. So the trim waits until configuration has been quiet for kHeapTrimQuietPeriod:
// a stream of updates reuses the pages, which go back once it stops.
void App::scheduleHeapTrim() {
  if (!heap_trim_) {
    heap_trim_ = main_.createTimer([this] {
      malloc_trim(0);
      heap_trims_.inc();
    });
  }
  heap_trim_->enable(kHeapTrimQuietPeriod);
}

// Tenant scope in BPF (ARCHITECTURE.md "BPF maps"): the order of the writes keeps every
// moment between two configurations safe — a tenant no longer restricted loses its slot
// first (it then captures everything, as the new configuration says), the captured
// entries get their new tenant bits in place, and only then does a newly restricted
// tenant get its slot (until then it captures as before).
common::Result<size_t> App::writeCapture(const config::Snapshot& snapshot) {
  auto& tenants = pods_->tenants();
  auto id_of = [&tenants](const std::string& name) { return tenants.idOf(name); };
  auto current = capture_->tenantScopeSlots();
  auto assigned = assignScopeSlots(current, restrictedTenants(*snapshot.tenants, id_of));
  for (const auto& [id, slot] : current) {
    if (assigned.slots.contains(id)) continue;
    if (auto ok = capture_->clearTenantScopeSlot(id); !ok) return std::unexpected(common::nest("tenant scope", ok.error()));
  }
  auto plan = planCapture(*snapshot.listeners, listenerScopes(*snapshot.tenants, id_of, assigned.slots));
  if (auto ok = capture_->setCapturedDestinations(plan.destinations, plan.prefixes); !ok) {
    return std::unexpected(common::nest("captured destinations", ok.error()));
  }
  for (const auto& [id, slot] : assigned.slots) {
    if (auto it = current.find(id); it != current.end() && it->second == slot) continue;
    if (auto ok = capture_->setTenantScopeSlot(id, slot); !ok) return std::unexpected(common::nest("tenant scope", ok.error()));
  }
  scope_overflow_.set(static_cast<int64_t>(assigned.overflow.size()));
  if (!assigned.overflow.empty()) {
    spdlog::warn("{} restricted tenants beyond the {} that BPF can scope: their pods' connects to any virtual "
                 "listener are captured and only the worker enforces their allowed_listeners",
                 assigned.overflow.size(), ebpf::kMaxScopedTenants);
  }
  return plan.destinations.size() + plan.prefixes.size();
}

void App::handleEnrollment(const cni::EnrollmentRequest& request, std::function<void(cni::EnrollmentResponse)> reply) {
  common::Result<void> result;
  switch (request.op) {
    case cni::EnrollmentOp::Enroll:
      result = pods_->enroll(request.record);
      break;
    case cni::EnrollmentOp::Unenroll:
      result = request.netns_path.empty() ? pods_->unenrollByKey(request.container_id, request.ifname)
                                          : pods_->unenrollByNetns(request.netns_path);
      break;
    case cni::EnrollmentOp::List: {
      auto response = cni::EnrollmentResponse::success();
      response.pods = pods_->list();
      response.extra["capture"] = captureStatus();
      reply(std::move(response));
      return;
    }
  }
  if (!result) {
    spdlog::warn("{} failed: {}", cni::toString(request.op), result.error().describe());
    reply(cni::EnrollmentResponse::failure(result.error().describe()));
    return;
  }
  reply(cni::EnrollmentResponse::success());
}

void App::installAdminHandlers() {
  admin_->addHandler("/ready", [this](const AdminRequest&, auto reply) {
    if (!config_loaded_ || !capture_) {
      reply({503, "text/plain; charset=utf-8",
             ads_ ? "not ready: waiting for the control plane at " + bootstrap_.xds.address + "\n"
                  : std::string("not ready: configuration not loaded\n")});
      return;
    }
    std::string body = "ready\n";
    if (ads_ && ads_->stale()) {
      auto age = ads_->staleAge();
      if (age > ads_->maxStale()) {
        reply({503, "text/plain; charset=utf-8",
               "not ready: stale: the stored configuration is " + std::to_string(age.count()) +
                   "s old, beyond xds.max_stale, and the control plane has not confirmed it\n"});
        return;
      }
      body = "ready (stale: serving the stored configuration, " + std::to_string(age.count()) +
             "s old; the control plane has not confirmed it)\n";
    }
    server_->probeWorkers(kHealthProbeTimeout, [reply, body](bool ok) {
      reply(ok ? AdminResponse{200, "text/plain; charset=utf-8", body}
               : AdminResponse{503, "text/plain; charset=utf-8", "not ready: a worker did not answer\n"});
    });
  });
  admin_->addHandler("/healthz", [this](const AdminRequest&, auto reply) {
    server_->probeWorkers(kHealthProbeTimeout, [reply](bool ok) {
      reply(ok ? AdminResponse{200, "text/plain; charset=utf-8", "ok\n"}
               : AdminResponse{503, "text/plain; charset=utf-8", "a worker loop is stalled\n"});
    });
  });
  admin_->addHandler("/stats/prometheus", [this](const AdminRequest& request, auto reply) {
    auto tenant = request.query.find("tenant");
    reply({200, "text/plain; version=0.0.4; charset=utf-8",
           renderStats(tenant == request.query.end() ? std::string() : tenant->second)});
  });
  admin_->addHandler("/config_dump", [this](const AdminRequest& request, auto reply) {
    auto tenant = request.query.find("tenant");
    reply({200, "application/json",
           tenant == request.query.end() ? configDump() : tenantConfigDump(tenant->second)});
  });
}

std::string App::renderStats(const std::string& tenant) {
  std::string out = stats_.renderPrometheus(tenant);
  if (!capture_) return out;
  if (!tenant.empty()) return out + renderPodCaptureStats(tenant);
  // Node-wide BPF counters, summed over CPUs at scrape time.
  auto c = capture_->counters();
  auto counter = [&](const char* name, const char* help, uint64_t v) {
    out += std::string("# HELP ") + name + " " + help + "\n# TYPE " + name + " counter\n" + name + " " +
           std::to_string(v) + "\n";
  };
  counter("culvert_capture_connect_captured_total", "Connects redirected to an in-pod listener", c.captured);
  counter("culvert_capture_connect_passthrough_total", "Connects from enrolled pods left untouched", c.passthrough);
  counter("culvert_capture_connect_refused_total", "Connects refused by fail mode closed", c.refused);
  counter("culvert_capture_connect_fail_open_total", "Connects passed by fail mode open", c.fail_open);
  counter("culvert_capture_connect_excluded_total", "Connects to captured destinations left alone by an exclusion",
          c.excluded);
  counter("culvert_capture_connect_out_of_scope_total",
          "Connects to captured destinations outside the pod's tenant's scope, left untouched", c.out_of_scope);
  out += renderPodCaptureStats(std::string());
  return out;
}

// {"bypass": bool, "pods": {"<container_id>/<ifname>": "<state>"}, "fail_modes": {same
// key: "open" | "closed"}} for `culvertctl pods`:
// "on (IPv4+IPv6)" / "on (IPv4)" when the pod's netns is in cv_enrolled, "bypassed"
// under the global bypass, "missing from BPF" when its entry is gone (a defect).
nlohmann::json App::captureStatus() const {
  nlohmann::json out = nlohmann::json::object();
  bool bypass = capture_ && capture_->bypass();
  out["bypass"] = bypass;
  nlohmann::json pods = nlohmann::json::object();
  nlohmann::json fail_modes = nlohmann::json::object();  // in effect, whatever set it
  if (pods_ && capture_) {
    for (const auto& p : pods_->status()) {
      std::string state;
      if (!capture_->enrolledPod(p.netns_cookie)) {
        state = "missing from BPF";
      } else if (bypass) {
        state = "bypassed";
      } else {
        state = p.ipv6 ? "on (IPv4+IPv6)" : "on (IPv4)";
      }
      pods[p.record.container_id + "/" + p.record.ifname] = state;
      fail_modes[p.record.container_id + "/" + p.record.ifname] = ebpf::toString(p.fail_mode);
    }
  }
  out["pods"] = pods;
  out["fail_modes"] = fail_modes;
  return out;
}

// Per-pod and per-tenant BPF counters (cv_pod_counters, summed over CPUs at scrape
// time); `tenant` non-empty limits them to that tenant's pods.
std::string App::renderPodCaptureStats(const std::string& tenant) {
  if (!pods_) return {};
  struct Row {
    const char* outcome;
    uint64_t ebpf::Counters::*field;
  };
  static constexpr Row kRows[] = {
      {"captured", &ebpf::Counters::captured},   {"passthrough", &ebpf::Counters::passthrough},
      {"refused", &ebpf::Counters::refused},     {"fail_open", &ebpf::Counters::fail_open},
      {"excluded", &ebpf::Counters::excluded},   {"out_of_scope", &ebpf::Counters::out_of_scope},
  };
  auto label = [](const std::string& v) {
    std::string o;
    for (char ch : v) {
      if (ch == '\\' || ch == '"') o += '\\';
      if (ch == '\n') {
        o += "\\n";
        continue;
      }
      o += ch;
    }
    return o;
  };
  std::string pod_lines;
  std::map<std::string, ebpf::Counters> by_tenant;
  for (const auto& p : pods_->status()) {
    if (!tenant.empty() && p.tenant != tenant) continue;
    auto c = capture_->podCounters(p.netns_cookie);
    auto& t = by_tenant[p.tenant];
    for (const auto& row : kRows) {
      t.*row.field += c.*row.field;
      pod_lines += "culvert_capture_pod_connects_total{namespace=\"" + label(p.record.namespace_) + "\",pod=\"" +
                   label(p.record.name) + "\",tenant=\"" + label(p.tenant) + "\",outcome=\"" + row.outcome +
                   "\"} " + std::to_string(c.*row.field) + "\n";
    }
  }
  for (const auto& [name, c] : pods_->departedCounters()) {
    if (tenant.empty() || name == tenant) by_tenant[name] += c;
  }
  std::string out =
      "# HELP culvert_capture_pod_connects_total Connects from an enrolled pod by capture outcome\n"
      "# TYPE culvert_capture_pod_connects_total counter\n" +
      pod_lines +
      "# HELP culvert_capture_tenant_connects_total Connects from a tenant's pods by capture outcome\n"
      "# TYPE culvert_capture_tenant_connects_total counter\n";
  for (const auto& [name, c] : by_tenant) {
    for (const auto& row : kRows) {
      out += "culvert_capture_tenant_connects_total{tenant=\"" + label(name) + "\",outcome=\"" + row.outcome + "\"} " +
             std::to_string(c.*row.field) + "\n";
    }
  }
  return out;
}

std::string App::configDump() const {
  nlohmann::json dump;
  dump["bootstrap"] = formatBootstrap(bootstrap_);
  dump["version"] = config_version_;
  dump["resources"] = nlohmann::json::parse(resources_dump_, nullptr, false);
  if (ads_) dump["xds"] = nlohmann::json::parse(ads_->configDumpJson(), nullptr, false);
  nlohmann::json pods = nlohmann::json::array();
  if (pods_) {
    for (const auto& record : pods_->list()) pods.push_back(cni::toJson(record));
  }
  dump["pods"] = pods;
  return dump.dump(2) + "\n";
}

std::string App::tenantConfigDump(const std::string& tenant) const {
  nlohmann::json dump;
  dump["version"] = config_version_;
  if (pods_ && snapshot_) dump["tenant"] = pods_->tenants().dump(tenant, *snapshot_);
  nlohmann::json pods = nlohmann::json::array();
  if (pods_) {
    for (const auto& p : pods_->status()) {
      if (p.tenant == tenant) pods.push_back(cni::toJson(p.record));
    }
  }
  dump["pods"] = pods;
  return dump.dump(2) + "\n";
}

void App::run() {
  main_.run();
}

void App::stop() {
  if (stopping_) return;
  stopping_ = true;
  if (auto sent = notifier_.notify("STOPPING=1"); !sent) spdlog::warn("sd_notify STOPPING: {}", sent.error().describe());
  watchdog_.reset();
  ready_retry_.reset();
  heap_trim_.reset();
  // Stop taking new work, then stop the data path, then let go of the capture handles
  // (pins and links stay): pods fall back to their fail mode only once nothing can serve
  // them any more.
  admin_.reset();
  ads_.reset();
  resources_watcher_.reset();
  dns_clusters_.reset();
  enrollment_.reset();
  // Pods stay enrolled in BPF (restart safety): until a culvertd re-opens their
  // listeners their fail mode applies. `culvertd uninstall` removes capture for good.
  if (pods_) pods_->closeAll();
  if (server_) server_->stop();
  capture_.reset();
  for (auto* s : {&sigterm_, &sigint_, &sighup_, &sigusr1_}) {
    if (s->loop && !uv_is_closing(reinterpret_cast<uv_handle_t*>(s))) uv_close(reinterpret_cast<uv_handle_t*>(s), nullptr);
  }
  main_.exit();
}

}  // namespace culvert::agent
