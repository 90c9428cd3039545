#pragma once

#include <atomic>
#include <chrono>
#include <filesystem>
#include <optional>
#include <string>
#include <string_view>
#include <vector>

#include <nlohmann/json.hpp>

#include "proxy/common/error.h"

namespace culvert::agent {

// `culvertd install-cni` / `uninstall-cni`: what the DaemonSet's init container runs.
struct CniInstallOptions {
  std::filesystem::path plugin_binary;           // the culvert-cni to copy
  std::optional<std::filesystem::path> bin_dir;  // default: detectCniBinDir()
  std::filesystem::path conf_dir = "/etc/cni/net.d";
  // culvert's entry in the conflist (type culvert-cni and its keys).
  nlohmann::ordered_json entry = {{"type", "culvert-cni"}};
};

inline constexpr std::string_view kCulvertPluginType = "culvert-cni";

// The runtime's CNI bin directory: the first of `candidates` that exists
// (/opt/cni/bin, then Debian's /usr/lib/cni).
common::Result<std::filesystem::path> detectCniBinDir(
    const std::vector<std::filesystem::path>& candidates = {"/opt/cni/bin", "/usr/lib/cni"});

// The conflist the runtime uses: the lexically first *.conflist (or *.conf with
// "plugins") in the directory.
common::Result<std::filesystem::path> findConflist(const std::filesystem::path& conf_dir);

// Pure edits of a conflist's text. Both keep every other field and the key order, and
// return nullopt when the file already is as wanted (so nothing is rewritten).
// insert: culvert's entry becomes the last plugin, exactly once.
common::Result<std::optional<std::string>> insertCulvertEntry(std::string_view conflist,
                                                              const nlohmann::ordered_json& entry);
// remove: every culvert-cni entry goes; nothing else changes.
common::Result<std::optional<std::string>> removeCulvertEntry(std::string_view conflist);

// Copies the plugin (temp + rename, mode 0755) and inserts the entry (temp + rename).
common::Result<void> installCni(const CniInstallOptions& options);
// Removes only culvert's entry and binary.
common::Result<void> uninstallCni(const CniInstallOptions& options);

// Keeps culvert's entry in place: re-inserts within `period` of another agent rewriting
// the conflist (inotify on the directory, and a poll every `period`). Returns when `stop`
// becomes true.
void watchConflist(const CniInstallOptions& options, const std::atomic<bool>& stop,
                   std::chrono::milliseconds period = std::chrono::milliseconds(500));

}  // namespace culvert::agent

namespace culvert::agent {

// `culvertd install-cni|uninstall-cni [options]` (argv[1] is the subcommand). Returns the
// exit code.
int runCniInstallCommand(int argc, char** argv);

// The culvert-cni to install when --plugin is not given: next to culvertd (a build tree,
// a tarball), else <prefix>/lib/cni/culvert-cni for culvertd in <prefix>/sbin or
// <prefix>/bin (the image and the .deb ship /usr/sbin/culvertd and /usr/lib/cni/culvert-cni).
// The first candidate when none exists, so the error names it.
std::filesystem::path defaultPluginBinary(const std::filesystem::path& culvertd_path);

}  // namespace culvert::agent
