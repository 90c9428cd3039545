#pragma once

#include <chrono>
#include <filesystem>
#include <iosfwd>
#include <optional>
#include <span>
#include <string>

#include "cni/protocol/enrollment.h"
#include "proxy/common/error.h"

namespace culvert::agent {

// A parsed culvertctl command line. Kept apart from running it so parsing is testable
// without a daemon.
struct CtlCommand {
  enum class Kind { Help, Version, Enroll, Unenroll, Pods, Capture };

  Kind kind = Kind::Help;
  std::optional<std::filesystem::path> config;  // --config: bootstrap to read enrollment.socket from
  std::optional<std::filesystem::path> socket;  // --socket: overrides the bootstrap
  std::chrono::milliseconds timeout{10'000};    // --timeout 500ms|5s|5
  bool json = false;                            // pods --json
  cni::EnrollmentRequest request;               // Enroll / Unenroll / Pods
  bool generated_container_id = false;
  std::string capture_action;                   // capture: "on" | "off" | "status"
};

// `args` excludes argv[0]. Errors are phrased for the person at the terminal.
common::Result<CtlCommand> parseCtlArgs(std::span<const std::string> args);

std::string ctlUsage();

// A fresh container id for `enroll` without --container-id ("ctl-" + 32 hex digits).
std::string generateContainerId();

// Runs culvertctl and returns its exit code (0 ok, 1 error); results go to `out`,
// "culvertctl: <reason>" to `err`.
int runCtl(std::span<const std::string> args, std::ostream& out, std::ostream& err);

}  // namespace culvert::agent
