#include "agent/pod_manager.h"

#include <fcntl.h>
#include <sched.h>
#include <sys/stat.h>
#include <unistd.h>

#include <cerrno>
#include <cstdio>
#include <cstring>

#include <nlohmann/json.hpp>

#include <spdlog/spdlog.h>

#include "proxy/network/socket.h"

namespace culvert::agent {

namespace {

// Backlog of each in-pod listen socket; the kernel caps it at net.core.somaxconn.
constexpr int kListenBacklog = 4096;

std::string errnoText(const std::string& what) { return what + ": " + std::strerror(errno); }

// "closed" or "open", as enrollment records and the registry spell a fail mode.
ebpf::FailMode failModeNamed(const std::string& text) {
  return text == "closed" ? ebpf::FailMode::Closed : ebpf::FailMode::Open;
}

bool sameFile(const struct stat& a, const char* path) {
  struct stat b{};
  return ::stat(path, &b) == 0 && a.st_dev == b.st_dev && a.st_ino == b.st_ino;
}

// Runs `fn` with the calling thread inside `netns_fd`, and always returns it home.
template <typename Fn>
auto inNetns(int netns_fd, Fn&& fn) -> decltype(fn()) {
  int home = network::currentThreadNetns();
  if (home < 0) return common::fail(errnoText("open /proc/thread-self/ns/net"));
  if (::setns(netns_fd, CLONE_NEWNET) != 0) return common::fail(errnoText("setns into the pod's netns"));
  auto result = fn();
  if (::setns(home, CLONE_NEWNET) != 0) std::abort();  // never strand the main thread in a pod
  return result;
}

}  // namespace

PodManager::PodManager(const Bootstrap& bootstrap, ebpf::CaptureProgram& capture, server::Server& server,
                       common::StatsStore& stats)
    : bootstrap_(bootstrap), capture_(capture), server_(server), stats_(stats),
      tenants_(stats, bootstrap.tenants.defaults, bootstrap.tenants.buffered_bytes_watermark),
      enrolled_gauge_(stats.gauge("culvert_pods_enrolled", {}, "Pods whose traffic is captured")),
      uncaptured_counter_(stats.counter("culvert_cni_uncaptured_pods_total", {},
                                        "Pods culvert-cni let start uncaptured while culvertd was unreachable")) {}

std::shared_ptr<tenant::TenantContext> PodManager::tenantFor(const std::string& name) {
  return tenants_.get(name);
}

ebpf::FailMode PodManager::failModeFor(const cni::EnrollmentRecord& record) const {
  if (record.fail_mode) return failModeNamed(*record.fail_mode);
  switch (tenants_.failModeOf(record.tenant.value_or(record.namespace_))) {
    case config::TenantFailMode::Open:
      return ebpf::FailMode::Open;
    case config::TenantFailMode::Closed:
      return ebpf::FailMode::Closed;
    case config::TenantFailMode::Default:
      break;
  }
  return bootstrap_.capture.fail_mode == FailMode::Closed ? ebpf::FailMode::Closed : ebpf::FailMode::Open;
}

void PodManager::applyTenants(std::shared_ptr<const config::TenantTable> tenants) {
  tenants_.apply(std::move(tenants));
  tenants_configured_ = true;
  bool changed = false;
  for (auto& [key, e] : pods_) {
    auto mode = failModeFor(e.record);
    if (mode == e.fail_mode) continue;
    if (auto ok = capture_.setPodFailMode(e.pod->id, mode); !ok) {
      spdlog::error("pod {}/{}: fail mode stays {}: {}", e.record.namespace_, e.record.name,
                    ebpf::toString(e.fail_mode), ok.error().describe());
      continue;
    }
    e.fail_mode = mode;
    changed = true;
    spdlog::info("pod {}/{}: fail mode {} (tenant {})", e.record.namespace_, e.record.name, ebpf::toString(mode),
                 e.pod->tenant->name);
  }
  // The registry keeps the mode in effect, for a restart that finds no configuration.
  if (changed) {
    if (auto saved = persist(); !saved) spdlog::error("registry: {}", saved.error().describe());
  }
}

common::Result<void> PodManager::enroll(const cni::EnrollmentRecord& record) { return enrollAs(record, std::nullopt); }

common::Result<void> PodManager::enrollAs(const cni::EnrollmentRecord& record,
                                          std::optional<std::pair<uint64_t, uint64_t>> expect,
                                          std::optional<ebpf::FailMode> restored_mode) {
  if (auto valid = cni::validateRecord(record); !valid) return valid;
  Key key{record.container_id, record.ifname};

  network::FileDescriptor netns(::open(record.netns_path.c_str(), O_RDONLY | O_CLOEXEC));
  if (!netns) return common::fail(errnoText("open"), "netns_path " + record.netns_path);
  struct stat st{};
  if (::fstat(netns.get(), &st) != 0) return common::fail(errnoText("fstat"), "netns_path");
  if (sameFile(st, "/proc/self/ns/net") || sameFile(st, "/proc/1/ns/net")) {
    return common::fail("refusing to enroll the host's or culvertd's own network namespace", "netns_path");
  }
  if (expect && (expect->first != st.st_dev || expect->second != st.st_ino)) {
    return common::fail("the path now names another network namespace than at ADD", "netns_path");
  }
  if (auto it = pods_.find(key); it != pods_.end()) {
    // A repeated ADD for the same interface and netns is a no-op; a different netns under
    // the same key replaces the stale enrollment.
    if (it->second.netns_dev == st.st_dev && it->second.netns_ino == st.st_ino) return {};
    remove(it);
  }

  size_t workers = server_.workerCount();
  auto listen4 = *common::SocketAddress::parse("127.0.0.1", bootstrap_.capture.port);
  auto listen6 = *common::SocketAddress::parse("::1", bootstrap_.capture.port);
  bool have_v6 = false;
  auto sockets = inNetns(netns.get(), [&]() -> common::Result<std::vector<network::FileDescriptor>> {
    // With tcp_migrate_req a closing member of the reuseport group hands its queued
    // connections to the others instead of resetting them.
    if (int fd = ::open("/proc/sys/net/ipv4/tcp_migrate_req", O_WRONLY | O_CLOEXEC); fd >= 0) {
      if (::write(fd, "1", 1) != 1) spdlog::warn("pod {}/{}: cannot set tcp_migrate_req", record.namespace_, record.name);
      ::close(fd);
    }
    // One reuseport group per family: workers sockets on 127.0.0.1 (IPv4 and
    // IPv4-mapped connects), then workers sockets on [::1] (IPv6 connects).
    std::vector<network::FileDescriptor> fds;
    for (const auto* address : {&listen4, &listen6}) {
      bool v6 = address == &listen6;
      for (size_t i = 0; i < workers; ++i) {
        auto fd = network::createListenSocket(*address, kListenBacklog, true);
        if (!fd) {
          const auto& m = fd.error().message;
          if (m.starts_with("bind: Address already in use")) {
            return common::fail("capture port " + std::to_string(bootstrap_.capture.port) + " on " +
                                    address->ip() +
                                    " is taken in the pod by another program; culvert cannot capture this pod",
                                "capture.port");
          }
          if (v6 && i == 0 && (m.starts_with("bind: Cannot assign") || m.starts_with("socket: Address family"))) {
            // IPv6 is off in this pod: nothing there can connect over IPv6 either.
            spdlog::info("pod {}/{}: no ::1, IPv4 capture only", record.namespace_, record.name);
            break;
          }
          if (m.starts_with("bind: Cannot assign")) return common::fail("the pod's loopback interface is down", "netns_path");
          return std::unexpected(fd.error());
        }
        if (auto tagged = capture_.tagSocket(fd->get()); !tagged) return std::unexpected(tagged.error());
        fds.push_back(std::move(*fd));
        if (v6) have_v6 = true;
      }
    }
    return fds;
  });
  if (!sockets) return std::unexpected(sockets.error());

  uint64_t cookie = ebpf::CaptureProgram::netnsCookie(sockets->front().get());
  if (cookie == 0) return common::fail("cannot read the pod's netns cookie", "netns_path");
  auto fail_mode = failModeFor(record);
  // Restored before any configuration (a control plane not reached yet, nothing stored):
  // the tenant's fail_mode is unknown, so the pod keeps the mode it had rather than the
  // bootstrap's; the first configuration settles it (applyTenants).
  if (restored_mode && !record.fail_mode && !tenants_configured_) fail_mode = *restored_mode;
  // Never captured for this pod: its record's exclusions and its own addresses (the
  // bootstrap's exclusions apply to every pod through the global entries).
  ebpf::PodCaptureEntry entry;
  entry.fail_mode = fail_mode;
  entry.exclude_ports = record.exclude_ports;
  for (size_t i = 0; i < record.exclude_cidrs.size(); ++i) {
    auto cidr = parseCidrText(record.exclude_cidrs[i]);
    if (!cidr) return common::fail(cidr.error().message, "exclude_cidrs[" + std::to_string(i) + "]");
    entry.exclude_cidrs.push_back(*cidr);
  }
  for (size_t i = 0; i < record.ips.size(); ++i) {
    auto ip = parseCidrText(record.ips[i]);
    if (!ip) return common::fail(ip.error().message, "ips[" + std::to_string(i) + "]");
    ip->length = ip->prefix.isV4() ? 32 : 128;  // the pod's own address, whatever its subnet
    entry.exclude_cidrs.push_back(*ip);
  }

  auto pod = std::make_shared<server::Pod>();
  pod->id = cookie;
  pod->namespace_name = record.namespace_;
  pod->name = record.name;
  pod->ip = record.ips.empty() ? std::string("unknown") : record.ips.front();
  pod->netns = std::make_shared<network::FileDescriptor>(std::move(netns));
  pod->tenant = tenantFor(record.tenant.value_or(record.namespace_));

  // Workers first, then BPF: capture starts only once a worker accepts on the group
  // (before that, connects queue in the listen backlog, which is just as good).
  server_.addPod(pod, std::move(*sockets));
  entry.tenant_id = pod->tenant->id;
  if (auto ok = capture_.enrollPod(cookie, entry); !ok) {
    server_.removePod(cookie);
    return ok;
  }
  pods_[key] = Enrolled{record, pod, st.st_dev, st.st_ino, have_v6, fail_mode};
  enrolled_gauge_.set(static_cast<int64_t>(pods_.size()));
  // Persisted before the answer: a pod the runtime was told is captured survives a crash.
  if (auto saved = persist(); !saved) {
    remove(pods_.find(key));
    return std::unexpected(common::nest("state_dir", saved.error()));
  }
  spdlog::info("enrolled pod {}/{} ({} {}, netns cookie {}, tenant {}, {})", record.namespace_, record.name,
               record.container_id, record.ifname, cookie, pod->tenant->name,
               have_v6 ? "IPv4 + IPv6" : "IPv4 only");
  return {};
}

common::Result<void> PodManager::persist() {
  if (!registry_ || batch_) return {};
  std::vector<RegistryEntry> entries;
  entries.reserve(pods_.size());
  for (const auto& [key, e] : pods_) {
    entries.push_back({e.record, static_cast<uint64_t>(e.netns_dev), static_cast<uint64_t>(e.netns_ino),
                       e.pod->tenant->id, ebpf::toString(e.fail_mode)});
  }
  return registry_->save(entries);
}

void PodManager::remove(std::map<Key, Enrolled>::iterator it) {
  const auto& pod = it->second.pod;
  departed_[pod->tenant->name] += capture_.podCounters(pod->id);  // before the entry goes
  if (auto ok = capture_.unenrollPod(pod->id); !ok) {
    spdlog::warn("pod {}/{}: removing BPF entry: {}", pod->namespace_name, pod->name, ok.error().describe());
  }
  server_.removePod(pod->id);
  spdlog::info("unenrolled pod {}/{} ({} {})", pod->namespace_name, pod->name, it->first.first, it->first.second);
  pods_.erase(it);
  enrolled_gauge_.set(static_cast<int64_t>(pods_.size()));
  if (auto saved = persist(); !saved) spdlog::error("registry: {}", saved.error().describe());
}

common::Result<void> PodManager::unenrollByKey(const std::string& container_id, const std::string& ifname) {
  if (auto it = pods_.find({container_id, ifname.empty() ? "eth0" : ifname}); it != pods_.end()) remove(it);
  return {};
}

common::Result<void> PodManager::unenrollByNetns(const std::string& netns_path) {
  struct stat st{};
  bool have_stat = ::stat(netns_path.c_str(), &st) == 0;
  for (auto it = pods_.begin(); it != pods_.end();) {
    bool match = it->second.record.netns_path == netns_path ||
                 (have_stat && it->second.netns_dev == st.st_dev && it->second.netns_ino == st.st_ino);
    if (match) {
      auto next = std::next(it);
      remove(it);
      it = next;
    } else {
      ++it;
    }
  }
  return {};
}

std::vector<cni::EnrollmentRecord> PodManager::list() const {
  std::vector<cni::EnrollmentRecord> out;
  for (const auto& [key, e] : pods_) out.push_back(e.record);
  return out;
}

std::vector<PodManager::PodStatus> PodManager::status() const {
  std::vector<PodStatus> out;
  for (const auto& [key, e] : pods_) out.push_back({e.record, e.pod->id, e.pod->tenant->name, e.ipv6, e.fail_mode});
  return out;
}

void PodManager::closeAll() {
  for (const auto& [key, e] : pods_) server_.removePod(e.pod->id);
  pods_.clear();
  enrolled_gauge_.set(0);
}

void PodManager::reserveTenantIds() {
  if (!registry_) return;
  auto entries = registry_->load();
  if (!entries) return;  // restore() reports it
  for (const auto& e : *entries) tenants_.reserveId(e.record.tenant.value_or(e.record.namespace_), e.tenant_id);
}

common::Result<PodManager::RestoreReport> PodManager::restore() {
  RestoreReport report;
  if (!registry_) return report;
  auto entries = registry_->load();
  if (!entries) return std::unexpected(entries.error());
  auto live = partitionByLiveness(*entries, statPath);
  batch_ = true;
  for (const auto& e : live.alive) {
    std::optional<ebpf::FailMode> mode;
    if (!e.fail_mode.empty()) mode = failModeNamed(e.fail_mode);
    if (auto ok = enrollAs(e.record, std::pair<uint64_t, uint64_t>(e.netns_dev, e.netns_ino), mode); !ok) {
      spdlog::warn("registry: pod {}/{} ({} {}) not re-enrolled: {}", e.record.namespace_, e.record.name,
                   e.record.container_id, e.record.ifname, ok.error().describe());
      ++report.dropped;
      continue;
    }
    ++report.restored;
  }
  for (const auto& e : live.dead) {
    spdlog::info("registry: pod {}/{} ({} {}) is gone (netns {} removed or replaced): dropped", e.record.namespace_,
                 e.record.name, e.record.container_id, e.record.ifname, e.record.netns_path);
    ++report.dropped;
  }
  batch_ = false;
  if (auto saved = persist(); !saved) return std::unexpected(saved.error());
  return report;
}

size_t PodManager::adoptUncaptured(const std::filesystem::path& dir) {
  std::error_code ec;
  size_t adopted = 0;
  std::vector<std::filesystem::path> markers;
  for (const auto& entry : std::filesystem::directory_iterator(dir, ec)) {
    if (entry.path().extension() == ".json") markers.push_back(entry.path());
  }
  for (const auto& path : markers) {
    uncaptured_counter_.inc();
    std::string text;
    if (FILE* f = std::fopen(path.c_str(), "re")) {
      char buf[4096];
      size_t n;
      while ((n = std::fread(buf, 1, sizeof buf, f)) > 0) text.append(buf, n);
      std::fclose(f);
    }
    auto json = nlohmann::json::parse(text, nullptr, false);
    auto record = json.is_discarded() ? common::Result<cni::EnrollmentRecord>(common::fail("not JSON"))
                                      : cni::recordFromJson(json);
    if (!record) {
      spdlog::warn("uncaptured pod marker {}: {}", path.string(), record.error().describe());
    } else if (::access(record->netns_path.c_str(), F_OK) != 0) {
      spdlog::info("pod {}/{} started uncaptured and is gone", record->namespace_, record->name);
    } else if (auto ok = enroll(*record); !ok) {
      spdlog::warn("pod {}/{} started uncaptured; enrolling it now failed: {}", record->namespace_, record->name,
                   ok.error().describe());
    } else {
      spdlog::warn("pod {}/{} started uncaptured while culvertd was unreachable; captured from now on",
                   record->namespace_, record->name);
      ++adopted;
    }
    std::filesystem::remove(path, ec);
  }
  return adopted;
}

std::set<uint64_t> PodManager::cookies() const {
  std::set<uint64_t> out;
  for (const auto& [key, e] : pods_) out.insert(e.pod->id);
  return out;
}

}  // namespace culvert::agent
