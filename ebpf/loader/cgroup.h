#pragma once

#include <filesystem>
#include <string_view>

#include "proxy/common/error.h"

namespace culvert::ebpf {

// The cgroup v2 mount point from /proc/self/mountinfo: /sys/fs/cgroup on unified
// hosts, /sys/fs/cgroup/unified on hybrid ones (DESIGN.md §8).
common::Result<std::filesystem::path> detectCgroup2Root();

// Same, from mountinfo text (testable without the host's mounts).
common::Result<std::filesystem::path> cgroup2RootFromMountinfo(std::string_view mountinfo);

// Whether path is a directory on a cgroup v2 filesystem.
bool isCgroup2Directory(const std::filesystem::path& path);

}  // namespace culvert::ebpf
