#pragma once

#include <bitset>
#include <cstdint>
#include <filesystem>
#include <map>
#include <memory>
#include <optional>
#include <string>
#include <vector>

#include "proxy/common/error.h"
#include "proxy/common/socket_address.h"

struct capture_bpf;  // bpftool skeleton (generated into the build dir)

namespace culvert::ebpf {

enum class FailMode : uint8_t { Open = 0, Closed = 1 };
// "open" / "closed", as the bootstrap and enrollment records spell them.
inline const char* toString(FailMode mode) { return mode == FailMode::Closed ? "closed" : "open"; }

// What cv_enrolled holds for one pod netns, plus what that pod never has captured.
struct PodCaptureEntry {
  uint32_t tenant_id = 0;
  FailMode fail_mode = FailMode::Open;
  // Destination ports and prefixes this pod never has captured (its enrollment record's
  // exclude_ports / exclude_cidrs, and its own addresses as /32 or /128).
  std::vector<uint16_t> exclude_ports;
  std::vector<common::CidrRange> exclude_cidrs;
};

// The restricted tenants that may use a captured destination, by scope slot (see
// cv_tenant_scope in ebpf/include/culvert_bpf.h). Unrestricted tenants use every one.
inline constexpr size_t kMaxScopedTenants = 256;  // CV_MAX_SCOPED_TENANTS
using TenantScope = std::bitset<kMaxScopedTenants>;

// A captured address (a virtual listener's) and the restricted tenants allowed to use it.
struct CapturedDestination {
  CapturedDestination(common::SocketAddress a, TenantScope t = {}) : address(std::move(a)), tenants(t) {}  // NOLINT
  common::SocketAddress address;
  TenantScope tenants;
};

// A port on a destination prefix: an any-IP virtual listener narrowed by the
// destination prefix ranges of its filter chains.
struct CapturedPrefix {
  common::CidrRange range;
  uint16_t port = 0;
  TenantScope tenants;
};

// Sums over CPUs of cv_counters (see ebpf/include/culvert_bpf.h for meanings).
struct Counters {
  uint64_t captured = 0;
  uint64_t passthrough = 0;
  uint64_t refused = 0;
  uint64_t fail_open = 0;
  uint64_t record_failed = 0;
  uint64_t rekeyed = 0;
  uint64_t rekey_failed = 0;
  uint64_t excluded = 0;
  uint64_t out_of_scope = 0;

  Counters& operator+=(const Counters& o) {
    captured += o.captured;
    passthrough += o.passthrough;
    refused += o.refused;
    fail_open += o.fail_open;
    record_failed += o.record_failed;
    rekeyed += o.rekeyed;
    rekey_failed += o.rekey_failed;
    excluded += o.excluded;
    out_of_scope += o.out_of_scope;
    return *this;
  }
};

// cv_connect4/6, cv_getpeername4/6 + cv_sockops loaded from the compiled-in skeleton,
// attached to one cgroup v2 directory with bpf_links; links and maps are pinned under
// <pin_root>/v<CV_LAYOUT_VERSION>/. Restart-safe: load() re-adopts pinned maps (their
// entries survive) and swaps its programs into pinned links (one attachment per hook,
// never two); destroying the object only closes fds. uninstall() detaches and unpins.
//
// All methods are bpf() syscalls on map fds owned by this object: safe to call from
// several threads at once. setCapturedDestinations() must not race with itself.
class CaptureProgram {
public:
  struct Options {
    std::filesystem::path pin_root = "/sys/fs/bpf/culvert";  // must be on a bpffs
    std::filesystem::path cgroup_path;                       // a cgroup v2 directory
    uint16_t capture_port = 15001;                           // in-pod listener port
  };

  static common::Result<std::unique_ptr<CaptureProgram>> load(const Options& options);

  // What the running kernel lacks of what the programs need (empty = all there).
  static std::vector<std::string> missingKernelFeatures();

  // The global bypass through the pinned cv_config map of a running (or crashed)
  // culvertd: works without culvertd, which is the point of an emergency switch.
  static common::Result<void> setPinnedBypass(const std::filesystem::path& pin_root, bool bypass);
  static common::Result<bool> pinnedBypass(const std::filesystem::path& pin_root);

  // Detaches every pinned link and removes every pin (all layout versions) under
  // pin_root. Says what it removed.
  static common::Result<std::string> uninstall(const std::filesystem::path& pin_root);

  ~CaptureProgram();
  CaptureProgram(const CaptureProgram&) = delete;
  CaptureProgram& operator=(const CaptureProgram&) = delete;

  // Writes the pod's exclusions and counters first, then cv_enrolled (capture starts
  // with its exclusions in place). Re-enrolling a cookie replaces its exclusions.
  common::Result<void> enrollPod(uint64_t netns_cookie, const PodCaptureEntry& entry);
  // Removes cv_enrolled first, then the pod's exclusions and counters. Not enrolled is
  // not an error (CNI DEL may repeat). Also the way to purge a stale cookie.
  common::Result<void> unenrollPod(uint64_t netns_cookie);
  // Changes an enrolled pod's fail mode in place (its Tenant resource's fail_mode changed).
  common::Result<void> setPodFailMode(uint64_t netns_cookie, FailMode mode);
  // Every netns cookie in cv_enrolled, sorted (for purging cookies of dead netns).
  std::vector<uint64_t> enrolledNetnsCookies() const;
  // cv_enrolled's value for one cookie; nullopt when not enrolled. Exclusions are not
  // read back (left empty).
  std::optional<PodCaptureEntry> enrolledPod(uint64_t netns_cookie) const;

  // Replaces the set of captured destinations: adds the new ones first, then deletes
  // the stale ones, so a destination in both sets is never missing. 0.0.0.0:port
  // ([::]:port) means that port on any non-loopback IPv4 (IPv6) address. An invalid
  // entry fails the call before any map is touched. `prefixes` (cv_captured_prefix)
  // capture a port on a destination prefix, never loopback. An entry's tenant set is
  // rewritten in place when it changes (one map update: never missing meanwhile); the same
  // destination given twice allows the union of both sets.
  common::Result<void> setCapturedDestinations(const std::vector<CapturedDestination>& destinations,
                                               const std::vector<CapturedPrefix>& prefixes = {});

  // cv_tenant_scope: restricted tenants' scope slots, by tenant id. Read at start to keep
  // the slots a previous culvertd gave (pinned maps survive it).
  std::map<uint32_t, uint32_t> tenantScopeSlots() const;
  common::Result<void> setTenantScopeSlot(uint32_t tenant_id, uint32_t slot);
  // Not restricted is not an error.
  common::Result<void> clearTenantScopeSlot(uint32_t tenant_id);

  // Replaces the node-wide exclusions (bootstrap capture.exclude_ports/exclude_cidrs).
  common::Result<void> setGlobalExclusions(const std::vector<uint16_t>& ports,
                                           const std::vector<common::CidrRange>& cidrs);

  // The global bypass (`culvertctl capture off`): while on, every connect is untouched.
  common::Result<void> setBypass(bool bypass);
  bool bypass() const;

  // Marks a socket as culvert's own (call right after socket()): never captured, and
  // required for a listener to count as live.
  common::Result<void> tagSocket(int fd);

  // The original destination of a connection accepted on an in-pod listener, looked up
  // by the accepted socket's netns cookie (the in-pod listener's, i.e. the pod's) and the
  // client address (as accept4 returned it), and deleted. nullopt when there is no record.
  std::optional<common::SocketAddress> takeOriginalDestination(uint64_t netns_cookie, const common::SocketAddress& client);
  // Deletes every original-destination record; returns how many there were. At start,
  // before any in-pod listener re-opens, every record belongs to a connection queued on
  // a listener of the previous process: the kernel reset those, but a client that had
  // already closed gracefully (FIN_WAIT2) leaves no close callback that may delete it.
  size_t clearOriginalDestinations();

  Counters counters() const;
  // This pod's counters (zero when not enrolled).
  Counters podCounters(uint64_t netns_cookie) const;

  // SO_NETNS_COOKIE of the socket's netns; 0 on failure (the kernel never hands out 0).
  static uint64_t netnsCookie(int fd);

  const std::filesystem::path& cgroupPath() const { return cgroup_path_; }
  // <pin_root>/v<layout version>: where the maps are pinned.
  const std::filesystem::path& pinDir() const { return pin_dir_; }
  uint16_t capturePort() const { return capture_port_; }
  // Whether load() found pinned maps (a restart) and how many pinned links it re-used.
  bool adoptedPins() const { return adopted_; }
  int adoptedLinks() const { return adopted_links_; }
  // Non-empty when other programs run on cgroup/connect4 at this cgroup: which, in
  // which order (e.g. Cilium's socket LB).
  const std::string& attachReport() const { return attach_report_; }

  // Map entries that still carry this cookie (for tests and purge checks): exclusions,
  // counters and original-destination records.
  size_t entriesForNetns(uint64_t netns_cookie) const;

private:
  CaptureProgram() = default;
  common::Result<void> writeExclusions(uint64_t netns_cookie, const std::vector<uint16_t>& ports,
                                       const std::vector<common::CidrRange>& cidrs);
  void deleteExclusions(uint64_t netns_cookie);

  capture_bpf* skel_ = nullptr;
  std::filesystem::path cgroup_path_;
  std::filesystem::path pin_dir_;
  uint16_t capture_port_ = 0;
  bool adopted_ = false;
  int adopted_links_ = 0;
  std::string attach_report_;
  int enrolled_fd_ = -1;
  int captured_fd_ = -1;
  int sock_tag_fd_ = -1;
  int orig_dst_fd_ = -1;
  int counters_fd_ = -1;
  int captured6_fd_ = -1;
  int captured_prefix_fd_ = -1;
  int excluded_ports_fd_ = -1;
  int excluded_cidrs_fd_ = -1;
  int config_fd_ = -1;
  int pod_counters_fd_ = -1;
  int tenant_scope_fd_ = -1;
  int num_cpus_ = 0;
};

}  // namespace culvert::ebpf
