#pragma once

#include <sys/types.h>

#include <cstdint>
#include <filesystem>
#include <functional>
#include <optional>
#include <string>
#include <string_view>
#include <utility>
#include <vector>

#include "cni/protocol/enrollment.h"
#include "proxy/common/error.h"

namespace culvert::agent {

// One enrolled pod as culvertd remembers it across restarts: the record, and the identity
// (st_dev, st_ino) of its netns bind mount at ADD. A pod is alive while that path still
// names the same namespace: a runtime that deleted the pod removed the mount, and a new
// pod at the same path has another inode.
struct RegistryEntry {
  cni::EnrollmentRecord record;
  uint64_t netns_dev = 0;
  uint64_t netns_ino = 0;
  // The pod's tenant's id in BPF (cv_enrolled), kept so a restarted culvertd gives the
  // tenant the same id; 0 = not recorded (a registry written before ids were kept).
  uint32_t tenant_id = 0;
  // The fail mode in effect at the last save ("open" / "closed"; "" = not recorded), kept
  // so a pod restored before any configuration has arrived keeps the mode its tenant gave
  // it instead of falling back to the bootstrap's.
  std::string fail_mode;

  bool operator==(const RegistryEntry&) const = default;
};

// Writes `data` to `path` so that a crash leaves either the old or the new file: temp file
// in the same directory, fsync, rename, fsync of the directory.
common::Result<void> writeFileAtomically(const std::filesystem::path& path, std::string_view data);

std::string encodeRegistry(const std::vector<RegistryEntry>& entries);
// A damaged file is an error naming the entry; unknown keys are ignored.
common::Result<std::vector<RegistryEntry>> decodeRegistry(std::string_view text);

// (st_dev, st_ino) of a path, or nullopt when it does not exist.
using StatFn = std::function<std::optional<std::pair<uint64_t, uint64_t>>(const std::string& path)>;
std::optional<std::pair<uint64_t, uint64_t>> statPath(const std::string& path);

// The restart decision: which entries are still alive (their netns path names the same
// inode as at ADD) and which are dead.
struct Liveness {
  std::vector<RegistryEntry> alive;
  std::vector<RegistryEntry> dead;
};
Liveness partitionByLiveness(const std::vector<RegistryEntry>& entries, const StatFn& stat);

// The registry file <state_dir>/pods.json.
class Registry {
public:
  explicit Registry(std::filesystem::path state_dir);
  // No file yet = no pods.
  common::Result<std::vector<RegistryEntry>> load() const;
  common::Result<void> save(const std::vector<RegistryEntry>& entries) const;
  const std::filesystem::path& path() const { return path_; }

private:
  std::filesystem::path dir_;
  std::filesystem::path path_;
};

}  // namespace culvert::agent
