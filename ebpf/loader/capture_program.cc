#include "ebpf/loader/capture_program.h"

#include <arpa/inet.h>
#include <bpf/bpf.h>
#include <bpf/libbpf.h>
#include <fcntl.h>
#include <linux/bpf.h>
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

static_assert(culvert::ebpf::kMaxScopedTenants == CV_MAX_SCOPED_TENANTS, "TenantScope covers every slot");

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

// The cgroup's id (what bpf_link_info reports): the kernfs id from its file handle.
uint64_t cgroupId(const std::filesystem::path& path) {
  alignas(file_handle) std::array<unsigned char, sizeof(file_handle) + sizeof(uint64_t)> buf{};
  auto* fh = reinterpret_cast<file_handle*>(buf.data());
  fh->handle_bytes = sizeof(uint64_t);
  int mount_id = 0;
  if (name_to_handle_at(AT_FDCWD, path.c_str(), fh, &mount_id, 0) != 0) return 0;
  uint64_t id = 0;
  std::memcpy(&id, buf.data() + sizeof(file_handle), sizeof id);
  return id;
}

std::string progName(uint32_t id) {
  int fd = bpf_prog_get_fd_by_id(id);
  if (fd < 0) return "?";
  bpf_prog_info info{};
  uint32_t len = sizeof info;
  std::string name = bpf_obj_get_info_by_fd(fd, &info, &len) == 0 ? std::string(info.name) : "?";
  close(fd);
  return name;
}

uint32_t progId(int prog_fd) {
  bpf_prog_info info{};
  uint32_t len = sizeof info;
  return bpf_obj_get_info_by_fd(prog_fd, &info, &len) == 0 ? info.id : 0;
}

// The programs that run for `type` on this cgroup, in the order they run (the
// effective list: this cgroup's own, then its ancestors'). Empty when culvert's is the
// only one.
std::string attachOrder(int cg_fd, bpf_attach_type type, const char* hook, int our_prog_fd) {
  std::array<uint32_t, 64> ids{};
  uint32_t count = ids.size();
  uint32_t flags = 0;
  if (bpf_prog_query(cg_fd, type, BPF_F_QUERY_EFFECTIVE, &flags, ids.data(), &count) != 0 || count <= 1) return {};
  uint32_t ours = progId(our_prog_fd);
  std::string out = std::string(hook) + " runs " + std::to_string(count) + " programs here, in this order:";
  for (uint32_t i = 0; i < count; ++i) {
    out += " " + std::to_string(i + 1) + ". " + progName(ids[i]) + " (id " + std::to_string(ids[i]) + ")" +
           (ids[i] == ours ? " [culvert]" : "");
  }
  out += "; a program before culvert's sees the original destination, one after it sees the rewritten "
         "in-pod listener address (Cilium's socket LB must not translate it)";
  return out;
}

}  // namespace

namespace {

struct MapRef {
  bpf_map* map;
  const char* name;  // also the pin's file name
};

// Every map is pinned (not .rodata): the agent's tools and a restarted culvertd find
// them by name under <pin_root>/v<N>/.
std::array<MapRef, 13> pinnedMaps(capture_bpf* skel) {
  return {{
      {skel->maps.cv_enrolled, "cv_enrolled"},
      {skel->maps.cv_captured, "cv_captured"},
      {skel->maps.cv_captured6, "cv_captured6"},
      {skel->maps.cv_captured_prefix, "cv_captured_prefix"},
      {skel->maps.cv_tenant_scope, "cv_tenant_scope"},
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

std::vector<std::string> CaptureProgram::missingKernelFeatures() {
  std::vector<std::string> missing;
  struct {
    bpf_prog_type type;
    const char* name;
  } progs[] = {{BPF_PROG_TYPE_CGROUP_SOCK_ADDR, "BPF_PROG_TYPE_CGROUP_SOCK_ADDR (cgroup/connect4|6)"},
               {BPF_PROG_TYPE_SOCK_OPS, "BPF_PROG_TYPE_SOCK_OPS"}};
  for (const auto& p : progs) {
    if (libbpf_probe_bpf_prog_type(p.type, nullptr) != 1) missing.push_back(p.name);
  }
  struct {
    bpf_map_type type;
    const char* name;
  } maps[] = {{BPF_MAP_TYPE_SK_STORAGE, "BPF_MAP_TYPE_SK_STORAGE"},
              {BPF_MAP_TYPE_LPM_TRIE, "BPF_MAP_TYPE_LPM_TRIE"},
              {BPF_MAP_TYPE_LRU_HASH, "BPF_MAP_TYPE_LRU_HASH"},
              {BPF_MAP_TYPE_PERCPU_HASH, "BPF_MAP_TYPE_PERCPU_HASH"}};
  for (const auto& m : maps) {
    if (libbpf_probe_bpf_map_type(m.type, nullptr) != 1) missing.push_back(m.name);
  }
  struct {
    bpf_prog_type type;
    bpf_func_id helper;
    const char* name;
  } helpers[] = {
      {BPF_PROG_TYPE_CGROUP_SOCK_ADDR, BPF_FUNC_sk_lookup_tcp, "bpf_sk_lookup_tcp in cgroup/connect"},
      {BPF_PROG_TYPE_CGROUP_SOCK_ADDR, BPF_FUNC_sk_storage_get, "bpf_sk_storage_get in cgroup/connect"},
      {BPF_PROG_TYPE_CGROUP_SOCK_ADDR, BPF_FUNC_get_netns_cookie, "bpf_get_netns_cookie in cgroup/connect"},
      {BPF_PROG_TYPE_CGROUP_SOCK_ADDR, BPF_FUNC_set_retval, "bpf_set_retval in cgroup/connect (Linux 5.18)"},
      {BPF_PROG_TYPE_SOCK_OPS, BPF_FUNC_sk_storage_get, "bpf_sk_storage_get in sock_ops"},
      {BPF_PROG_TYPE_SOCK_OPS, BPF_FUNC_get_netns_cookie, "bpf_get_netns_cookie in sock_ops (Linux 5.15)"},
      {BPF_PROG_TYPE_SOCK_OPS, BPF_FUNC_sock_ops_cb_flags_set, "bpf_sock_ops_cb_flags_set in sock_ops"},
  };
  for (const auto& h : helpers) {
    if (libbpf_probe_bpf_helper(h.type, h.helper, nullptr) != 1) missing.push_back(h.name);
  }
  return missing;
}

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

  // Without the privilege to use BPF every probe below fails too, and would blame the
  // kernel: say which it is.
  if (int fd = bpf_map_create(BPF_MAP_TYPE_ARRAY, nullptr, 4, 4, 1, nullptr); fd >= 0) {
    close(fd);
  } else if (errno == EPERM) {
    return common::fail(
        "no permission to use BPF (EPERM): culvertd loads BPF programs and attaches them to a cgroup; run it as "
        "root (the DaemonSet runs it privileged)");
  }
  if (auto missing = missingKernelFeatures(); !missing.empty()) {
    std::string list;
    for (const auto& m : missing) list += (list.empty() ? "" : ", ") + m;
    return common::fail("the kernel lacks what culvert's capture needs: " + list +
                        " (culvert needs Linux >= 5.18 with BPF cgroup hooks, sk_storage and LPM tries)");
  }

  std::unique_ptr<CaptureProgram> self(new CaptureProgram());
  self->cgroup_path_ = options.cgroup_path;
  self->pin_dir_ = options.pin_root / ("v" + std::to_string(CV_LAYOUT_VERSION));
  self->capture_port_ = options.capture_port;

  // Pins of another layout version: refuse rather than run beside them (both would
  // capture, with maps the other cannot read).
  {
    std::error_code ec;
    for (const auto& entry : std::filesystem::directory_iterator(options.pin_root, ec)) {
      auto name = entry.path().filename().string();
      if (name.size() < 2 || name[0] != 'v' || name.find_first_not_of("0123456789", 1) != std::string::npos) continue;
      if (entry.path() == self->pin_dir_ || std::filesystem::is_empty(entry.path(), ec)) continue;
      return common::fail("holds pins of BPF layout version " + name.substr(1) + " but this culvertd uses layout " +
                              std::to_string(CV_LAYOUT_VERSION) +
                              ": run `culvertd uninstall` (with the culvertd that made them, or this one) first",
                          options.pin_root.string());
    }
  }
  std::error_code mk;
  std::filesystem::create_directories(self->pin_dir_, mk);
  if (mk) return common::fail("create pin directory: " + mk.message(), self->pin_dir_.string());
  self->adopted_ = std::filesystem::exists(self->pin_dir_ / "cv_enrolled");

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
  // Maps are pinned by libbpf at load: an existing pin is reused (a restarted culvertd
  // keeps every enrollment, captured destination and socket tag), a missing one made.
  for (const auto& m : pinnedMaps(self->skel_)) {
    auto path = self->pin_dir_ / m.name;
    if (int ret = bpf_map__set_pin_path(m.map, path.c_str()); ret != 0) {
      return common::fail("set pin path: " + errnoName(libbpfErr(ret)), path.string());
    }
  }

  if (int ret = capture_bpf__load(self->skel_); ret != 0) {
    int err = libbpfErr(ret);
    std::string msg = "load BPF programs: " + errnoName(err) + privilegeHint(err);
    if (self->adopted_ && err == EINVAL) {
      msg += " — the maps pinned in " + self->pin_dir_.string() +
             " do not match this build's (a layout change without a version bump?); `culvertd uninstall` removes them";
    }
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
  uint64_t cgroup_id = cgroupId(options.cgroup_path);
  // Links (not legacy prog attach): several culvertd instances or tests can attach to
  // the same or nested cgroups, and each link is exactly one attachment. Pinned, so
  // they outlive the process: a restarted culvertd swaps its new program into the
  // pinned link (bpf_link_update) instead of attaching a second one.
  struct {
    bpf_program* prog;
    bpf_link** link;
    const char* name;
    bpf_attach_type type;
  } attachments[] = {
      {self->skel_->progs.cv_connect4, &self->skel_->links.cv_connect4, "cgroup/connect4", BPF_CGROUP_INET4_CONNECT},
      {self->skel_->progs.cv_connect6, &self->skel_->links.cv_connect6, "cgroup/connect6", BPF_CGROUP_INET6_CONNECT},
      {self->skel_->progs.cv_getpeername4, &self->skel_->links.cv_getpeername4, "cgroup/getpeername4",
       BPF_CGROUP_INET4_GETPEERNAME},
      {self->skel_->progs.cv_getpeername6, &self->skel_->links.cv_getpeername6, "cgroup/getpeername6",
       BPF_CGROUP_INET6_GETPEERNAME},
      {self->skel_->progs.cv_sockops, &self->skel_->links.cv_sockops, "sockops", BPF_CGROUP_SOCK_OPS},
  };
  for (auto& a : attachments) {
    std::string pin_name = std::string("link_") + bpf_program__name(a.prog);
    auto link_path = self->pin_dir_ / pin_name;
    if (std::filesystem::exists(link_path)) {
      errno = 0;
      bpf_link* old = bpf_link__open(link_path.c_str());
      bool reused = false;
      if (old != nullptr) {
        bpf_link_info info{};
        uint32_t len = sizeof info;
        bool same = bpf_obj_get_info_by_fd(bpf_link__fd(old), &info, &len) == 0 &&
                    info.type == BPF_LINK_TYPE_CGROUP && info.cgroup.cgroup_id == cgroup_id &&
                    info.cgroup.attach_type == static_cast<uint32_t>(a.type);
        if (same && bpf_link__update_program(old, a.prog) == 0) {
          *a.link = old;
          reused = true;
        } else {
          // Attached elsewhere (capture.cgroup changed) or defunct: detach it.
          bpf_link__detach(old);
          bpf_link__destroy(old);
        }
      }
      if (reused) {
        self->adopted_links_++;
        continue;
      }
      unlink(link_path.c_str());
    }
    errno = 0;
    *a.link = bpf_program__attach_cgroup(a.prog, cg_fd);
    if (*a.link == nullptr) {
      int err = errno != 0 ? errno : EINVAL;
      close(cg_fd);
      return common::fail(std::string("attach ") + a.name + " to " + options.cgroup_path.string() + ": " +
                          errnoName(err) + privilegeHint(err));
    }
    if (int ret = bpf_link__pin(*a.link, link_path.c_str()); ret != 0) {
      close(cg_fd);
      return common::fail(std::string("pin link: ") + errnoName(libbpfErr(ret)), link_path.string());
    }
  }
  self->attach_report_ = attachOrder(cg_fd, BPF_CGROUP_INET4_CONNECT, "cgroup/connect4",
                                     bpf_program__fd(self->skel_->progs.cv_connect4));
  close(cg_fd);

  self->enrolled_fd_ = bpf_map__fd(self->skel_->maps.cv_enrolled);
  self->captured_fd_ = bpf_map__fd(self->skel_->maps.cv_captured);
  self->sock_tag_fd_ = bpf_map__fd(self->skel_->maps.cv_sock_tag);
  self->orig_dst_fd_ = bpf_map__fd(self->skel_->maps.cv_orig_dst);
  self->counters_fd_ = bpf_map__fd(self->skel_->maps.cv_counters);
  self->captured6_fd_ = bpf_map__fd(self->skel_->maps.cv_captured6);
  self->captured_prefix_fd_ = bpf_map__fd(self->skel_->maps.cv_captured_prefix);
  self->excluded_ports_fd_ = bpf_map__fd(self->skel_->maps.cv_excluded_ports);
  self->excluded_cidrs_fd_ = bpf_map__fd(self->skel_->maps.cv_excluded_cidrs);
  self->config_fd_ = bpf_map__fd(self->skel_->maps.cv_config);
  self->pod_counters_fd_ = bpf_map__fd(self->skel_->maps.cv_pod_counters);
  self->tenant_scope_fd_ = bpf_map__fd(self->skel_->maps.cv_tenant_scope);
  self->num_cpus_ = libbpf_num_possible_cpus();
  if (self->num_cpus_ <= 0) return common::fail("cannot read the number of possible CPUs: " + errnoName(-self->num_cpus_));

  return self;
}

CaptureProgram::~CaptureProgram() {
  // Closes the fds only: the pinned links stay attached and the pinned maps keep their
  // entries for the next culvertd (uninstall() removes them).
  if (skel_ != nullptr) capture_bpf__destroy(skel_);
}


common::Result<std::string> CaptureProgram::uninstall(const std::filesystem::path& pin_root) {
  std::error_code ec;
  if (!std::filesystem::exists(pin_root, ec)) return std::string("nothing pinned under " + pin_root.string());
  size_t links = 0;
  size_t maps = 0;
  std::vector<std::filesystem::path> dirs;
  for (const auto& entry : std::filesystem::directory_iterator(pin_root, ec)) {
    auto name = entry.path().filename().string();
    if (!entry.is_directory() || name.size() < 2 || name[0] != 'v' ||
        name.find_first_not_of("0123456789", 1) != std::string::npos) {
      continue;
    }
    dirs.push_back(entry.path());
  }
  for (const auto& dir : dirs) {
    for (const auto& entry : std::filesystem::directory_iterator(dir, ec)) {
      const auto& path = entry.path();
      if (path.filename().string().starts_with("link_")) {
        // Detach explicitly: another process may still hold an fd to the link.
        int fd = bpf_obj_get(path.c_str());
        if (fd >= 0) {
          bpf_link_detach(fd);
          close(fd);
        }
        ++links;
      } else {
        ++maps;
      }
      if (unlink(path.c_str()) != 0 && errno != ENOENT) {
        int err = errno;
        return common::fail("remove pin: " + errnoName(err), path.string());
      }
    }
    if (rmdir(dir.c_str()) != 0 && errno != ENOENT) {
      int err = errno;
      return common::fail("remove pin directory: " + errnoName(err), dir.string());
    }
  }
  rmdir(pin_root.c_str());  // only when empty: a pin root shared with others stays
  return "detached " + std::to_string(links) + " links, removed " + std::to_string(maps) + " map pins under " +
         pin_root.string();
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
  const cv_flags_value value{};
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

common::Result<void> CaptureProgram::setPodFailMode(uint64_t netns_cookie, FailMode mode) {
  cv_enrolled_value value{};
  if (bpf_map_lookup_elem(enrolled_fd_, &netns_cookie, &value) != 0) {
    return common::fail("netns cookie " + std::to_string(netns_cookie) + " is not enrolled: " + errnoName(errno));
  }
  value.fail_mode = mode == FailMode::Closed ? CV_FAIL_CLOSED : CV_FAIL_OPEN;
  // BPF_EXIST: a pod unenrolled meanwhile is not enrolled again by this.
  if (bpf_map_update_elem(enrolled_fd_, &netns_cookie, &value, BPF_EXIST) != 0) {
    return common::fail("set the fail mode of netns cookie " + std::to_string(netns_cookie) + ": " +
                        errnoName(errno));
  }
  return {};
}

size_t CaptureProgram::clearOriginalDestinations() {
  size_t n = 0;
  for (const auto& key : allKeys<cv_orig_dst_key>(orig_dst_fd_)) n += bpf_map_delete_elem(orig_dst_fd_, &key) == 0;
  return n;
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

namespace {

common::Result<int> openPinnedConfig(const std::filesystem::path& pin_root) {
  auto path = pin_root / ("v" + std::to_string(CV_LAYOUT_VERSION)) / "cv_config";
  int fd = bpf_obj_get(path.c_str());
  if (fd < 0) {
    int err = errno;
    return common::fail("open pinned map: " + errnoName(err) + privilegeHint(err) +
                            (err == ENOENT ? " — culvertd has not run with this bpf.pin_root (or was uninstalled)" : ""),
                        path.string());
  }
  return fd;
}

}  // namespace

common::Result<void> CaptureProgram::setPinnedBypass(const std::filesystem::path& pin_root, bool bypass) {
  auto fd = openPinnedConfig(pin_root);
  if (!fd) return std::unexpected(fd.error());
  const uint32_t key = 0;
  cv_config config{};
  config.bypass = bypass ? 1 : 0;
  int rc = bpf_map_update_elem(*fd, &key, &config, BPF_ANY);
  int err = errno;
  close(*fd);
  if (rc != 0) return common::fail(std::string("set capture bypass: ") + errnoName(err));
  return {};
}

common::Result<bool> CaptureProgram::pinnedBypass(const std::filesystem::path& pin_root) {
  auto fd = openPinnedConfig(pin_root);
  if (!fd) return std::unexpected(fd.error());
  const uint32_t key = 0;
  cv_config config{};
  int rc = bpf_map_lookup_elem(*fd, &key, &config);
  int err = errno;
  close(*fd);
  if (rc != 0) return common::fail(std::string("read capture bypass: ") + errnoName(err));
  return config.bypass != 0;
}

bool CaptureProgram::bypass() const {
  const uint32_t key = 0;
  cv_config config{};
  return bpf_map_lookup_elem(config_fd_, &key, &config) == 0 && config.bypass != 0;
}

namespace {

cv_captured_value scopeValue(const TenantScope& tenants) {
  cv_captured_value v{};
  for (size_t slot = 0; slot < tenants.size(); ++slot) {
    if (tenants.test(slot)) v.tenants[slot / 64] |= uint64_t{1} << (slot % 64);
  }
  return v;
}

// One captured map: add or rewrite the wanted entries whose value differs (the same key
// twice allows the union of its tenant sets), then delete the present keys not wanted.
template <typename Key>
common::Result<void> replaceEntries(int fd, const std::vector<std::pair<Key, cv_captured_value>>& wanted_list,
                                    const char* map, int capacity) {
  auto less = [](const Key& a, const Key& b) { return std::memcmp(&a, &b, sizeof(Key)) < 0; };
  std::map<Key, cv_captured_value, decltype(less)> wanted(less);
  for (const auto& [key, value] : wanted_list) {
    auto& merged = wanted[key];
    for (int w = 0; w < CV_SCOPE_WORDS; ++w) merged.tenants[w] |= value.tenants[w];
  }
  for (const auto& [key, value] : wanted) {
    cv_captured_value present{};
    if (bpf_map_lookup_elem(fd, &key, &present) == 0 && std::memcmp(&present, &value, sizeof value) == 0) continue;
    if (bpf_map_update_elem(fd, &key, &value, BPF_ANY) != 0) {
      int err = errno;
      return common::fail("add captured destination: " + errnoName(err) + fullHint(err, map, capacity));
    }
  }
  for (const auto& key : allKeys<Key>(fd)) {
    if (wanted.contains(key)) continue;
    if (bpf_map_delete_elem(fd, &key) != 0 && errno != ENOENT) {
      int err = errno;
      return common::fail("remove captured destination: " + errnoName(err));
    }
  }
  return {};
}

}  // namespace

common::Result<void> CaptureProgram::setCapturedDestinations(const std::vector<CapturedDestination>& destinations,
                                                             const std::vector<CapturedPrefix>& prefixes) {
  std::vector<std::pair<cv_prefix_key, cv_captured_value>> wanted_prefixes;
  for (const auto& p : prefixes) {
    if (p.port == 0) return common::fail("a captured prefix needs a port; nothing was changed", p.range.prefix.ip());
    if (p.range.prefix.family() != AF_INET && p.range.prefix.family() != AF_INET6) {
      return common::fail("a captured prefix must be IPv4 or IPv6; nothing was changed");
    }
    // The same bits as an exclusion key (host bits zeroed), laid out for this trie.
    cv_cidr_key c = cidrKey(0, p.range);
    cv_prefix_key key{};
    key.port = htons(p.port);
    key.family = static_cast<uint16_t>(c.family);
    std::memcpy(key.addr, c.addr, sizeof key.addr);
    key.prefixlen = CV_PREFIX_KEY_FIXED_BITS + (c.prefixlen - CV_CIDR_KEY_FIXED_BITS);
    wanted_prefixes.emplace_back(key, scopeValue(p.tenants));
  }
  if (wanted_prefixes.size() > CV_MAX_CAPTURED_PREFIXES) {
    return common::fail("more than " + std::to_string(CV_MAX_CAPTURED_PREFIXES) +
                        " captured prefixes; nothing was changed");
  }
  std::vector<std::pair<cv_captured_key, cv_captured_value>> wanted4;
  std::vector<std::pair<cv_captured6_key, cv_captured_value>> wanted6;
  for (const auto& [d, tenants] : destinations) {
    if (d.port() == 0) return common::fail("a captured destination needs a port; nothing was changed", d.toString());
    if (d.isV4()) {
      cv_captured_key key{};
      key.ip4 = d.ipv4();
      key.port = htons(d.port());
      wanted4.emplace_back(key, scopeValue(tenants));
    } else if (d.family() == AF_INET6) {
      const auto* in6 = reinterpret_cast<const sockaddr_in6*>(d.sockaddr_ptr());
      cv_captured_key key4{};
      if (IN6_IS_ADDR_V4MAPPED(&in6->sin6_addr)) {
        // ::ffff:a.b.c.d is an IPv4 destination (connect6 decides it as one).
        std::memcpy(&key4.ip4, &in6->sin6_addr.s6_addr[12], 4);
        key4.port = htons(d.port());
        wanted4.emplace_back(key4, scopeValue(tenants));
        continue;
      }
      cv_captured6_key key{};
      std::memcpy(key.ip6, &in6->sin6_addr, sizeof key.ip6);
      key.port = htons(d.port());
      wanted6.emplace_back(key, scopeValue(tenants));
    } else {
      return common::fail("a captured destination must be IPv4 or IPv6; nothing was changed", d.toString());
    }
  }
  if (wanted4.size() > CV_MAX_CAPTURED || wanted6.size() > CV_MAX_CAPTURED) {
    return common::fail("more than " + std::to_string(CV_MAX_CAPTURED) +
                        " captured destinations of one family; nothing was changed");
  }
  if (auto ok = replaceEntries(captured_fd_, wanted4, "cv_captured", CV_MAX_CAPTURED); !ok) return ok;
  if (auto ok = replaceEntries(captured6_fd_, wanted6, "cv_captured6", CV_MAX_CAPTURED); !ok) return ok;
  return replaceEntries(captured_prefix_fd_, wanted_prefixes, "cv_captured_prefix", CV_MAX_CAPTURED_PREFIXES);
}

std::map<uint32_t, uint32_t> CaptureProgram::tenantScopeSlots() const {
  std::map<uint32_t, uint32_t> out;
  for (uint32_t id : allKeys<uint32_t>(tenant_scope_fd_)) {
    cv_tenant_scope_value v{};
    if (bpf_map_lookup_elem(tenant_scope_fd_, &id, &v) == 0) out[id] = v.slot;
  }
  return out;
}

common::Result<void> CaptureProgram::setTenantScopeSlot(uint32_t tenant_id, uint32_t slot) {
  if (slot >= CV_MAX_SCOPED_TENANTS) {
    return common::fail("scope slot " + std::to_string(slot) + " out of range (at most " +
                        std::to_string(CV_MAX_SCOPED_TENANTS) + " restricted tenants)");
  }
  cv_tenant_scope_value v{};
  v.slot = slot;
  if (bpf_map_update_elem(tenant_scope_fd_, &tenant_id, &v, BPF_ANY) != 0) {
    int err = errno;
    return common::fail("set tenant " + std::to_string(tenant_id) + "'s scope: " + errnoName(err) +
                        fullHint(err, "cv_tenant_scope", CV_MAX_SCOPED_TENANTS));
  }
  return {};
}

common::Result<void> CaptureProgram::clearTenantScopeSlot(uint32_t tenant_id) {
  if (bpf_map_delete_elem(tenant_scope_fd_, &tenant_id) != 0 && errno != ENOENT) {
    return common::fail("clear tenant " + std::to_string(tenant_id) + "'s scope: " + errnoName(errno));
  }
  return {};
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

std::optional<common::SocketAddress> CaptureProgram::takeOriginalDestination(uint64_t netns_cookie,
                                                                             const common::SocketAddress& client) {
  cv_orig_dst_key key{};
  key.netns_cookie = netns_cookie;
  if (client.family() == AF_INET) {
    const auto* in = reinterpret_cast<const sockaddr_in*>(client.sockaddr_ptr());
    key.client.family = CV_AF_INET;
    key.client.addr[0] = in->sin_addr.s_addr;
    key.client.port = in->sin_port;
  } else if (client.family() == AF_INET6) {
    const auto* in6 = reinterpret_cast<const sockaddr_in6*>(client.sockaddr_ptr());
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
    sum.out_of_scope += c.out_of_scope;
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
    sum.out_of_scope += c.out_of_scope;
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
