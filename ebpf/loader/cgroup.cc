#include "ebpf/loader/cgroup.h"

#include <linux/magic.h>
#include <sys/vfs.h>

#include <fstream>
#include <optional>
#include <sstream>
#include <string>
#include <vector>

namespace culvert::ebpf {

namespace {

// mountinfo escapes space, tab, newline and backslash as \ooo.
bool isOctal(char c) { return c >= '0' && c <= '7'; }

std::string unescapeMountField(std::string_view s) {
  std::string out;
  out.reserve(s.size());
  for (size_t i = 0; i < s.size(); ++i) {
    if (s[i] == '\\' && i + 3 < s.size() && isOctal(s[i + 1]) && isOctal(s[i + 2]) && isOctal(s[i + 3])) {
      out.push_back(static_cast<char>((s[i + 1] - '0') * 64 + (s[i + 2] - '0') * 8 + (s[i + 3] - '0')));
      i += 3;
    } else {
      out.push_back(s[i]);
    }
  }
  return out;
}

}  // namespace

common::Result<std::filesystem::path> cgroup2RootFromMountinfo(std::string_view mountinfo) {
  std::vector<std::string> candidates;
  std::istringstream in{std::string(mountinfo)};
  std::string line;
  while (std::getline(in, line)) {
    // "<id> <parent> <maj:min> <root> <mount point> <options> [optional...] - <fstype> <source> <super options>"
    auto sep = line.find(" - ");
    if (sep == std::string::npos) continue;
    std::istringstream head(line.substr(0, sep));
    std::string id, parent, devno, root, mount_point;
    if (!(head >> id >> parent >> devno >> root >> mount_point)) continue;
    std::istringstream tail(line.substr(sep + 3));
    std::string fstype;
    if (!(tail >> fstype) || fstype != "cgroup2") continue;
    // A bind mount of a sub-cgroup is not the hierarchy's root.
    if (root != "/") continue;
    candidates.push_back(unescapeMountField(mount_point));
  }
  if (candidates.empty()) {
    return common::fail(
        "no cgroup v2 filesystem is mounted (looked for fstype cgroup2 in /proc/self/mountinfo); "
        "mount one with `mount -t cgroup2 none /sys/fs/cgroup` or set capture.cgroup");
  }
  for (const char* preferred : {"/sys/fs/cgroup", "/sys/fs/cgroup/unified"}) {
    for (const auto& c : candidates) {
      if (c == preferred) return std::filesystem::path(c);
    }
  }
  return std::filesystem::path(candidates.front());
}

common::Result<std::filesystem::path> detectCgroup2Root() {
  std::ifstream f("/proc/self/mountinfo");
  if (!f) return common::fail("cannot read /proc/self/mountinfo (is /proc mounted?)");
  std::stringstream buf;
  buf << f.rdbuf();
  return cgroup2RootFromMountinfo(buf.str());
}

bool isCgroup2Directory(const std::filesystem::path& path) {
  struct statfs st {};
  if (statfs(path.c_str(), &st) != 0) return false;
  return static_cast<unsigned long>(st.f_type) == CGROUP2_SUPER_MAGIC;
}

}  // namespace culvert::ebpf
