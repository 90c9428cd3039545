#include "ebpf/loader/capture_program.h"

#include <arpa/inet.h>
#include <bpf/bpf.h>
#include <bpf/libbpf.h>
#include <fcntl.h>
#include <linux/magic.h>
#include <sys/socket.h>
#include <sys/vfs.h>
#include <unistd.h>

#include <algorithm>
#include <array>
#include <cerrno>
#include <cstring>
#include <string>
#include <system_error>

#include "capture.skel.h"
#include "ebpf/include/culvert_bpf.h"
#include "ebpf/loader/cgroup.h"

namespace culvert::ebpf {

namespace {

constexpr int kSoNetnsCookie = 71;  // SO_NETNS_COOKIE, Linux 5.14+; not in every libc header

std::string errnoName(int err) {
  const char* name = strerrorname_np(err);
  std::string s = name != nullptr ? name : "errno " + std::to_string(err);
  return s + " (" + std::strerror(err) + ")";
}

// libbpf 1.x returns -errno and also sets errno; accept either.
int libbpfErr(int ret) { return ret < 0 ? -ret : (errno != 0 ? errno : EINVAL); }

std::string privilegeHint(int err) {
  if (err == EPERM || err == EACCES) return " — run as root with CAP_BPF, CAP_NET_ADMIN and CAP_SYS_ADMIN";
  return {};
}

// The nearest existing ancestor of p (p itself when it exists).
std::filesystem::path existingAncestor(std::filesystem::path p) {
  std::error_code ec;
  while (!p.empty() && !std::filesystem::exists(p, ec)) {
    auto parent = p.parent_path();
    if (parent == p) break;
    p = parent;
  }
  return p;
}

bool onBpffs(const std::filesystem::path& p) {
  struct statfs st {};
  if (statfs(p.c_str(), &st) != 0) return false;
  return static_cast<unsigned long>(st.f_type) == BPF_FS_MAGIC;
}

std::string lastLines(const char* log, size_t max_chars) {
  std::string s(log);
  while (!s.empty() && (s.back() == '\n' || s.back() == '\0')) s.pop_back();
  if (s.size() > max_chars) s = "..." + s.substr(s.size() - max_chars);
  return s;
}

}  // namespace

common::Result<std::unique_ptr<CaptureProgram>> CaptureProgram::load(const Options& options) {
  // Preconditions first, so the error names the missing piece rather than a libbpf errno.
  if (access("/sys/kernel/btf/vmlinux", R_OK) != 0) {
    return common::fail(
        "kernel BTF is missing (/sys/kernel/btf/vmlinux): culvert's BPF programs are CO-RE and "
        "need a kernel built with CONFIG_DEBUG_INFO_BTF=y");
  }
  if (options.capture_port == 0) return common::fail("capture port must not be 0", "capture.port");
  if (options.cgroup_path.empty() || !isCgroup2Directory(options.cgroup_path)) {
    std::string hint;
    if (auto root = detectCgroup2Root()) hint = " (cgroup v2 is mounted at " + root->string() + ")";
    return common::fail("not a cgroup v2 directory" + hint, options.cgroup_path.string());
  }
  if (options.pin_root.empty() || !options.pin_root.is_absolute()) {
    return common::fail("BPF pin root must be an absolute path on a bpffs", "bpf.pin_root");
  }
  auto anchor = existingAncestor(options.pin_root);
  if (!onBpffs(anchor)) {
    return common::fail(anchor.string() +
                            " is not on a BPF filesystem: mount one with `mount -t bpf bpf /sys/fs/bpf` "
                            "(the node setup normally does) or point bpf.pin_root at one",
                        options.pin_root.string());
  }

  std::unique_ptr<CaptureProgram> self(new CaptureProgram());
  self->cgroup_path_ = options.cgroup_path;
  self->pin_dir_ = options.pin_root / ("v" + std::to_string(CV_LAYOUT_VERSION));
  self->capture_port_ = options.capture_port;

  // The verifier log is only filled on failure (log_level 0 retries with logging).
  static constexpr size_t kLogSize = 64 * 1024;
  auto log = std::make_unique<char[]>(kLogSize);
  log[0] = '\0';
  // Filled by hand: LIBBPF_OPTS uses a statement expression, which -Wpedantic rejects.
  bpf_object_open_opts open_opts{};
  open_opts.sz = sizeof(open_opts);
  open_opts.kernel_log_buf = log.get();
  open_opts.kernel_log_size = kLogSize;
  errno = 0;
  self->skel_ = capture_bpf__open_opts(&open_opts);
  if (self->skel_ == nullptr) {
    int err = errno != 0 ? errno : EINVAL;
    return common::fail("open the compiled-in BPF object: " + errnoName(err));
  }
  self->skel_->rodata->cv_capture_port = options.capture_port;

  if (int ret = capture_bpf__load(self->skel_); ret != 0) {
    int err = libbpfErr(ret);
    std::string msg = "load BPF programs: " + errnoName(err) + privilegeHint(err);
    if (err != EPERM && err != EACCES) {
      msg += " — the verifier rejected a program or the kernel lacks a helper (culvert needs Linux >= 5.18)";
    }
    if (log[0] != '\0') msg += "; verifier log tail:\n" + lastLines(log.get(), 2000);
    return common::fail(std::move(msg));
  }

  int cg_fd = open(options.cgroup_path.c_str(), O_RDONLY | O_DIRECTORY | O_CLOEXEC);
  if (cg_fd < 0) {
    int err = errno;
    return common::fail("open cgroup: " + errnoName(err) + privilegeHint(err), options.cgroup_path.string());
  }
  // Links (not legacy prog attach): several culvertd instances or tests can attach to
  // the same or nested cgroups, and closing the link detaches exactly this one.
  struct {
    bpf_program* prog;
    bpf_link** link;
    const char* name;
  } attachments[] = {
      {self->skel_->progs.cv_connect4, &self->skel_->links.cv_connect4, "cgroup/connect4"},
      {self->skel_->progs.cv_connect6, &self->skel_->links.cv_connect6, "cgroup/connect6"},
      {self->skel_->progs.cv_getpeername4, &self->skel_->links.cv_getpeername4, "cgroup/getpeername4"},
      {self->skel_->progs.cv_getpeername6, &self->skel_->links.cv_getpeername6, "cgroup/getpeername6"},
      {self->skel_->progs.cv_sockops, &self->skel_->links.cv_sockops, "sockops"},
  };
  for (auto& a : attachments) {
    errno = 0;
    *a.link = bpf_program__attach_cgroup(a.prog, cg_fd);
    if (*a.link == nullptr) {
      int err = errno != 0 ? errno : EINVAL;
      close(cg_fd);
      return common::fail(std::string("attach ") + a.name + " to " + options.cgroup_path.string() + ": " +
                          errnoName(err) + privilegeHint(err));
    }
  }
  close(cg_fd);

  self->enrolled_fd_ = bpf_map__fd(self->skel_->maps.cv_enrolled);
  self->captured_fd_ = bpf_map__fd(self->skel_->maps.cv_captured);
  self->sock_tag_fd_ = bpf_map__fd(self->skel_->maps.cv_sock_tag);
  self->orig_dst_fd_ = bpf_map__fd(self->skel_->maps.cv_orig_dst);
  self->counters_fd_ = bpf_map__fd(self->skel_->maps.cv_counters);
  self->captured6_fd_ = bpf_map__fd(self->skel_->maps.cv_captured6);
  self->excluded_ports_fd_ = bpf_map__fd(self->skel_->maps.cv_excluded_ports);
  self->excluded_cidrs_fd_ = bpf_map__fd(self->skel_->maps.cv_excluded_cidrs);
  self->config_fd_ = bpf_map__fd(self->skel_->maps.cv_config);
  self->pod_counters_fd_ = bpf_map__fd(self->skel_->maps.cv_pod_counters);
  self->num_cpus_ = libbpf_num_possible_cpus();
  if (self->num_cpus_ <= 0) return common::fail("cannot read the number of possible CPUs: " + errnoName(-self->num_cpus_));

  if (auto pinned = self->pinMaps(); !pinned) return std::unexpected(pinned.error());
  return self;
}

CaptureProgram::~CaptureProgram() {
  unpinMaps();
  // Destroys the links (detaching the programs) and closes the maps.
  if (skel_ != nullptr) capture_bpf__destroy(skel_);
}

namespace {

struct MapRef {
  bpf_map* map;
  const char* name;  // also the pin's file name
};

// Every map is pinned (not .rodata): the agent's tools and a restarted culvertd find
// them by name under <pin_root>/v<N>/.
std::array<MapRef, 11> pinnedMaps(capture_bpf* skel) {
  return {{
      {skel->maps.cv_enrolled, "cv_enrolled"},
      {skel->maps.cv_captured, "cv_captured"},
      {skel->maps.cv_captured6, "cv_captured6"},
      {skel->maps.cv_sock_tag, "cv_sock_tag"},
      {skel->maps.cv_sock_dst, "cv_sock_dst"},
      {skel->maps.cv_orig_dst, "cv_orig_dst"},
      {skel->maps.cv_excluded_ports, "cv_excluded_ports"},
      {skel->maps.cv_excluded_cidrs, "cv_excluded_cidrs"},
      {skel->maps.cv_config, "cv_config"},
      {skel->maps.cv_counters, "cv_counters"},
      {skel->maps.cv_pod_counters, "cv_pod_counters"},
  }};
}

}  // namespace

common::Result<void> CaptureProgram::pinMaps() {
  std::error_code ec;
  std::filesystem::create_directories(pin_dir_, ec);
  if (ec) return common::fail("create pin directory: " + ec.message(), pin_dir_.string());

  const auto maps = pinnedMaps(skel_);
  pinned_ = true;  // from here on, the destructor removes whatever got pinned
  for (const auto& m : maps) {
    auto path = pin_dir_ / m.name;
    // A previous run's pin (crash, kill -9): replaced, since adoption is not implemented.
    if (unlink(path.c_str()) != 0 && errno != ENOENT) {
      int err = errno;
      return common::fail("remove stale pin: " + errnoName(err), path.string());
    }
    if (int ret = bpf_map__pin(m.map, path.c_str()); ret != 0) {
      return common::fail("pin map: " + errnoName(libbpfErr(ret)), path.string());
    }
  }
  return {};
}

namespace {

uint32_t mapId(int fd) {
  bpf_map_info info{};
  uint32_t len = sizeof info;
  return bpf_obj_get_info_by_fd(fd, &info, &len) == 0 ? info.id : 0;
}

}  // namespace

void CaptureProgram::unpinMaps() {
  if (!pinned_ || skel_ == nullptr) return;
  const auto maps = pinnedMaps(skel_);
  for (const auto& m : maps) {
    auto path = pin_dir_ / m.name;
    // Only remove a pin that is still ours: a newer instance may have replaced it.
    int pinned_fd = bpf_obj_get(path.c_str());
    if (pinned_fd < 0) continue;
    bool ours = mapId(pinned_fd) == mapId(bpf_map__fd(m.map));
    close(pinned_fd);
    if (ours) unlink(path.c_str());
  }
  // Only removes the directories when empty; a pin root shared with others stays.
  rmdir(pin_dir_.c_str());
  rmdir(pin_dir_.parent_path().c_str());
  pinned_ = false;
}

namespace {

// Every key of a hash/LPM map, collected before any change (deleting while walking with
// get_next_key can restart the walk).
template <typename Key>
std::vector<Key> allKeys(int fd) {
  std::vector<Key> keys;
  Key cur{};
  Key next{};
  const void* prev = nullptr;
  while (bpf_map_get_next_key(fd, prev, &next) == 0) {
    keys.push_back(next);
    cur = next;
    prev = &cur;
  }
  return keys;
}

const uint8_t* addressBytes(const common::SocketAddress& a) {
  if (a.isV4()) return reinterpret_cast<const uint8_t*>(&reinterpret_cast<const sockaddr_in*>(a.sockaddr_ptr())->sin_addr);
  return reinterpret_cast<const uint8_t*>(&reinterpret_cast<const sockaddr_in6*>(a.sockaddr_ptr())->sin6_addr);
}

cv_cidr_key cidrKey(uint64_t netns_cookie, const common::CidrRange& range) {
  cv_cidr_key key{};
  bool v4 = range.prefix.isV4();
  uint32_t max = v4 ? 32 : 128;
  uint32_t len = std::min(range.length, max);
  key.family = v4 ? CV_AF_INET : CV_AF_INET6;
  key.netns_cookie = netns_cookie;
  auto* bytes = reinterpret_cast<uint8_t*>(key.addr);
  std::memcpy(bytes, addressBytes(range.prefix), v4 ? 4 : 16);
  // Host bits zeroed, so "10.1.2.3/8" and "10.0.0.0/8" are the same entry.
  for (uint32_t bit = len; bit < max; ++bit) bytes[bit / 8] &= static_cast<uint8_t>(~(0x80u >> (bit % 8)));
  key.prefixlen = CV_CIDR_KEY_FIXED_BITS + len;
  return key;
}

std::string fullHint(int err, const char* map, int capacity) {
  return err == E2BIG || err == ENOSPC ? std::string(" — ") + map + " is full (" + std::to_string(capacity) + " entries)"
                                       : std::string();
}

}  // namespace

common::Result<void> CaptureProgram::writeExclusions(uint64_t netns_cookie, const std::vector<uint16_t>& ports,
                                                     const std::vector<common::CidrRange>& cidrs) {
  const cv_captured_value value{};
  for (uint16_t port : ports) {
    if (port == 0) return common::fail("excluded port 0 is not a port", "exclude_ports");
    cv_port_key key{};
    key.netns_cookie = netns_cookie;
    key.port = htons(port);
    if (bpf_map_update_elem(excluded_ports_fd_, &key, &value, BPF_ANY) != 0) {
      int err = errno;
      return common::fail("exclude port " + std::to_string(port) + ": " + errnoName(err) +
                          fullHint(err, "cv_excluded_ports", CV_MAX_EXCLUDED_PORTS));
    }
  }
  for (const auto& range : cidrs) {
    if (range.prefix.family() != AF_INET && range.prefix.family() != AF_INET6) {
      return common::fail("excluded CIDR has no address family", "exclude_cidrs");
    }
    cv_cidr_key key = cidrKey(netns_cookie, range);
    if (bpf_map_update_elem(excluded_cidrs_fd_, &key, &value, BPF_ANY) != 0) {
      int err = errno;
      return common::fail("exclude " + range.prefix.ip() + "/" + std::to_string(range.length) + ": " + errnoName(err) +
                          fullHint(err, "cv_excluded_cidrs", CV_MAX_EXCLUDED_CIDRS));
    }
  }
  return {};
}

void CaptureProgram::deleteExclusions(uint64_t netns_cookie) {
  for (const auto& key : allKeys<cv_port_key>(excluded_ports_fd_)) {
    if (key.netns_cookie == netns_cookie) bpf_map_delete_elem(excluded_ports_fd_, &key);
  }
  for (const auto& key : allKeys<cv_cidr_key>(excluded_cidrs_fd_)) {
    if (key.netns_cookie == netns_cookie) bpf_map_delete_elem(excluded_cidrs_fd_, &key);
  }
}

common::Result<void> CaptureProgram::enrollPod(uint64_t netns_cookie, const PodCaptureEntry& entry) {
  if (netns_cookie == 0) return common::fail("netns cookie 0 is not a network namespace");
  // Re-enrolling replaces the exclusions: drop the old ones first (capture of this pod
  // may briefly see none of its own, never someone else's).
  deleteExclusions(netns_cookie);
  if (auto ok = writeExclusions(netns_cookie, entry.exclude_ports, entry.exclude_cidrs); !ok) {
    deleteExclusions(netns_cookie);
    return ok;
  }
  // Per-pod counters: created here, so the programs only ever look them up. A repeated
  // enroll keeps the counts (BPF_NOEXIST).
  std::vector<cv_counters> zero(static_cast<size_t>(num_cpus_));
  if (bpf_map_update_elem(pod_counters_fd_, &netns_cookie, zero.data(), BPF_NOEXIST) != 0 && errno != EEXIST) {
    int err = errno;
    deleteExclusions(netns_cookie);
    return common::fail("create counters for netns cookie " + std::to_string(netns_cookie) + ": " + errnoName(err) +
                        fullHint(err, "cv_pod_counters", CV_MAX_ENROLLED));
  }
  cv_enrolled_value value{};
  value.tenant_id = entry.tenant_id;
  value.fail_mode = entry.fail_mode == FailMode::Closed ? CV_FAIL_CLOSED : CV_FAIL_OPEN;
  if (bpf_map_update_elem(enrolled_fd_, &netns_cookie, &value, BPF_ANY) != 0) {
    int err = errno;
    deleteExclusions(netns_cookie);
    bpf_map_delete_elem(pod_counters_fd_, &netns_cookie);
    return common::fail("enroll netns cookie " + std::to_string(netns_cookie) + ": " + errnoName(err) +
                        fullHint(err, "cv_enrolled", CV_MAX_ENROLLED));
  }
  return {};
}

common::Result<void> CaptureProgram::unenrollPod(uint64_t netns_cookie) {
  if (bpf_map_delete_elem(enrolled_fd_, &netns_cookie) != 0 && errno != ENOENT) {
    int err = errno;
    return common::fail("unenroll netns cookie " + std::to_string(netns_cookie) + ": " + errnoName(err));
  }
  deleteExclusions(netns_cookie);
  bpf_map_delete_elem(pod_counters_fd_, &netns_cookie);
  // Records of connections the proxy never accepted (the close callback normally
  // removes them; this covers sockets still open when the pod goes).
  for (const auto& key : allKeys<cv_orig_dst_key>(orig_dst_fd_)) {
    if (key.netns_cookie == netns_cookie) bpf_map_delete_elem(orig_dst_fd_, &key);
  }
  return {};
}

std::vector<uint64_t> CaptureProgram::enrolledNetnsCookies() const {
  auto keys = allKeys<uint64_t>(enrolled_fd_);
  std::sort(keys.begin(), keys.end());
  return keys;
}

std::optional<PodCaptureEntry> CaptureProgram::enrolledPod(uint64_t netns_cookie) const {
  cv_enrolled_value value{};
  if (bpf_map_lookup_elem(enrolled_fd_, &netns_cookie, &value) != 0) return std::nullopt;
  PodCaptureEntry entry;
  entry.tenant_id = value.tenant_id;
  entry.fail_mode = value.fail_mode == CV_FAIL_CLOSED ? FailMode::Closed : FailMode::Open;
  return entry;
}

size_t CaptureProgram::entriesForNetns(uint64_t netns_cookie) const {
  size_t n = 0;
  for (const auto& key : allKeys<cv_port_key>(excluded_ports_fd_)) n += key.netns_cookie == netns_cookie;
  for (const auto& key : allKeys<cv_cidr_key>(excluded_cidrs_fd_)) n += key.netns_cookie == netns_cookie;
  for (const auto& key : allKeys<cv_orig_dst_key>(orig_dst_fd_)) n += key.netns_cookie == netns_cookie;
  for (uint64_t key : allKeys<uint64_t>(pod_counters_fd_)) n += key == netns_cookie;
  for (uint64_t key : allKeys<uint64_t>(enrolled_fd_)) n += key == netns_cookie;
  return n;
}

common::Result<void> CaptureProgram::setGlobalExclusions(const std::vector<uint16_t>& ports,
                                                         const std::vector<common::CidrRange>& cidrs) {
  deleteExclusions(0);
  if (auto ok = writeExclusions(0, ports, cidrs); !ok) {
    deleteExclusions(0);
    return ok;
  }
  return {};
}

common::Result<void> CaptureProgram::setBypass(bool bypass) {
  const uint32_t key = 0;
  cv_config config{};
  config.bypass = bypass ? 1 : 0;
  if (bpf_map_update_elem(config_fd_, &key, &config, BPF_ANY) != 0) {
    return common::fail(std::string("set capture bypass: ") + errnoName(errno));
  }
  return {};
}

bool CaptureProgram::bypass() const {
  const uint32_t key = 0;
  cv_config config{};
  return bpf_map_lookup_elem(config_fd_, &key, &config) == 0 && config.bypass != 0;
}

namespace {

// One family's captured set: add the wanted keys that are missing, then delete the
// present keys that are not wanted.
template <typename Key>
common::Result<void> replaceKeys(int fd, std::vector<Key> wanted, const char* map, int capacity) {
  auto less = [](const Key& a, const Key& b) { return std::memcmp(&a, &b, sizeof(Key)) < 0; };
  auto equal = [](const Key& a, const Key& b) { return std::memcmp(&a, &b, sizeof(Key)) == 0; };
  std::sort(wanted.begin(), wanted.end(), less);
  wanted.erase(std::unique(wanted.begin(), wanted.end(), equal), wanted.end());
  auto present = allKeys<Key>(fd);
  std::sort(present.begin(), present.end(), less);

  const cv_captured_value value{};
  for (const auto& k : wanted) {
    if (std::binary_search(present.begin(), present.end(), k, less)) continue;
    if (bpf_map_update_elem(fd, &k, &value, BPF_ANY) != 0) {
      int err = errno;
      return common::fail("add captured destination: " + errnoName(err) + fullHint(err, map, capacity));
    }
  }
  for (const auto& k : present) {
    if (std::binary_search(wanted.begin(), wanted.end(), k, less)) continue;
    if (bpf_map_delete_elem(fd, &k) != 0 && errno != ENOENT) {
      int err = errno;
      return common::fail("remove captured destination: " + errnoName(err));
    }
  }
  return {};
}

}  // namespace

common::Result<void> CaptureProgram::setCapturedDestinations(const std::vector<common::SocketAddress>& destinations) {
  std::vector<cv_captured_key> wanted4;
  std::vector<cv_captured6_key> wanted6;
  for (const auto& d : destinations) {
    if (d.port() == 0) return common::fail("a captured destination needs a port; nothing was changed", d.toString());
    if (d.isV4()) {
      cv_captured_key key{};
      key.ip4 = d.ipv4();
      key.port = htons(d.port());
      wanted4.push_back(key);
    } else if (d.family() == AF_INET6) {
      const auto* in6 = reinterpret_cast<const sockaddr_in6*>(d.sockaddr_ptr());
      cv_captured_key key4{};
      if (IN6_IS_ADDR_V4MAPPED(&in6->sin6_addr)) {
        // ::ffff:a.b.c.d is an IPv4 destination (connect6 decides it as one).
        std::memcpy(&key4.ip4, &in6->sin6_addr.s6_addr[12], 4);
        key4.port = htons(d.port());
        wanted4.push_back(key4);
        continue;
      }
      cv_captured6_key key{};
      std::memcpy(key.ip6, &in6->sin6_addr, sizeof key.ip6);
      key.port = htons(d.port());
      wanted6.push_back(key);
    } else {
      return common::fail("a captured destination must be IPv4 or IPv6; nothing was changed", d.toString());
    }
  }
  if (wanted4.size() > CV_MAX_CAPTURED || wanted6.size() > CV_MAX_CAPTURED) {
    return common::fail("more than " + std::to_string(CV_MAX_CAPTURED) +
                        " captured destinations of one family; nothing was changed");
  }
  if (auto ok = replaceKeys(captured_fd_, std::move(wanted4), "cv_captured", CV_MAX_CAPTURED); !ok) return ok;
  return replaceKeys(captured6_fd_, std::move(wanted6), "cv_captured6", CV_MAX_CAPTURED);
}

common::Result<void> CaptureProgram::tagSocket(int fd) {
  const uint32_t tag = CV_SOCK_TAG_CULVERT;
  if (bpf_map_update_elem(sock_tag_fd_, &fd, &tag, BPF_ANY) != 0) {
    int err = errno;
    return common::fail("tag socket fd " + std::to_string(fd) + " as culvert's: " + errnoName(err) +
                        (err == EBADF || err == ENOTSOCK || err == EOPNOTSUPP ? " — not an open socket" : ""));
  }
  return {};
}

std::optional<common::SocketAddress> CaptureProgram::takeOriginalDestination(int accepted_fd) {
  sockaddr_storage peer{};
  socklen_t len = sizeof peer;
  if (getpeername(accepted_fd, reinterpret_cast<sockaddr*>(&peer), &len) != 0) return std::nullopt;
  uint64_t netns = netnsCookie(accepted_fd);
  if (netns == 0) return std::nullopt;

  cv_orig_dst_key key{};
  key.netns_cookie = netns;
  if (peer.ss_family == AF_INET) {
    const auto* in = reinterpret_cast<const sockaddr_in*>(&peer);
    key.client.family = CV_AF_INET;
    key.client.addr[0] = in->sin_addr.s_addr;
    key.client.port = in->sin_port;
  } else if (peer.ss_family == AF_INET6) {
    const auto* in6 = reinterpret_cast<const sockaddr_in6*>(&peer);
    key.client.family = CV_AF_INET6;
    std::memcpy(key.client.addr, &in6->sin6_addr, sizeof key.client.addr);
    key.client.port = in6->sin6_port;
  } else {
    return std::nullopt;
  }

  cv_addr dst{};
  if (bpf_map_lookup_and_delete_elem(orig_dst_fd_, &key, &dst) != 0) return std::nullopt;

  sockaddr_storage out{};
  if (dst.family == CV_AF_INET) {
    auto* in = reinterpret_cast<sockaddr_in*>(&out);
    in->sin_family = AF_INET;
    in->sin_addr.s_addr = dst.addr[0];
    in->sin_port = dst.port;
  } else if (dst.family == CV_AF_INET6) {
    auto* in6 = reinterpret_cast<sockaddr_in6*>(&out);
    in6->sin6_family = AF_INET6;
    std::memcpy(&in6->sin6_addr, dst.addr, sizeof dst.addr);
    in6->sin6_port = dst.port;
  } else {
    return std::nullopt;
  }
  return common::SocketAddress::fromSockaddr(reinterpret_cast<const sockaddr*>(&out));
}

Counters CaptureProgram::counters() const {
  std::vector<cv_counters> per_cpu(static_cast<size_t>(num_cpus_));
  const uint32_t key = 0;
  Counters sum;
  if (bpf_map_lookup_elem(counters_fd_, &key, per_cpu.data()) != 0) return sum;
  for (const auto& c : per_cpu) {
    sum.captured += c.captured;
    sum.passthrough += c.passthrough;
    sum.refused += c.refused;
    sum.fail_open += c.fail_open;
    sum.record_failed += c.record_failed;
    sum.rekeyed += c.rekeyed;
    sum.rekey_failed += c.rekey_failed;
    sum.excluded += c.excluded;
  }
  return sum;
}

Counters CaptureProgram::podCounters(uint64_t netns_cookie) const {
  std::vector<cv_counters> per_cpu(static_cast<size_t>(num_cpus_));
  Counters sum;
  if (bpf_map_lookup_elem(pod_counters_fd_, &netns_cookie, per_cpu.data()) != 0) return sum;
  for (const auto& c : per_cpu) {
    sum.captured += c.captured;
    sum.passthrough += c.passthrough;
    sum.refused += c.refused;
    sum.fail_open += c.fail_open;
    sum.record_failed += c.record_failed;
    sum.excluded += c.excluded;
  }
  return sum;
}

uint64_t CaptureProgram::netnsCookie(int fd) {
  uint64_t cookie = 0;
  socklen_t len = sizeof cookie;
  if (getsockopt(fd, SOL_SOCKET, kSoNetnsCookie, &cookie, &len) != 0) return 0;
  return cookie;
}

}  // namespace culvert::ebpf
