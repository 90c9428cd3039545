#pragma once

#include <nlohmann/json.hpp>

#include <chrono>
#include <expected>
#include <filesystem>
#include <functional>
#include <iosfwd>
#include <map>
#include <optional>
#include <string>
#include <string_view>
#include <vector>

#include "cni/protocol/enrollment.h"

namespace culvert::cni {

// CNI spec error codes (spec "Error" section; 1-99 are reserved for the spec).
inline constexpr int kCniErrIncompatibleVersion = 1;
inline constexpr int kCniErrUnsupportedField = 2;
inline constexpr int kCniErrUnknownContainer = 3;
inline constexpr int kCniErrInvalidEnvironment = 4;  // e.g. an unusable CNI_COMMAND
inline constexpr int kCniErrIo = 5;
inline constexpr int kCniErrDecode = 6;  // stdin is not JSON
inline constexpr int kCniErrInvalidConfig = 7;
inline constexpr int kCniErrTryAgainLater = 11;
inline constexpr int kCniErrPluginNotAvailable = 50;  // STATUS (1.1.0)
// culvert's own codes (100+ are the plugin's).
inline constexpr int kCniErrEnrollmentRefused = 100;  // culvertd answered no
inline constexpr int kCniErrNotCaptured = 101;        // CHECK: the pod is not enrolled

inline constexpr std::string_view kDefaultEnrollmentSocket = "/run/culvert/cni.sock";
inline constexpr std::string_view kDefaultUncapturedDir = "/run/culvert/uncaptured";
inline constexpr std::chrono::milliseconds kDefaultTimeout{5000};

// The CNI error object: {"cniVersion","code","msg","details"}.
std::string cniErrorJson(int code, std::string_view msg, std::string_view details,
                         std::string_view cni_version = "1.0.0");

struct CniError {
  int code = 0;
  std::string msg;
  std::string details;
};

// The plugin's network configuration (stdin). Plugin-specific keys, all optional:
//   enrollment_socket   culvertd's enrollment.socket (default /run/culvert/cni.sock)
//   exempt_namespaces   namespaces never enrolled (default ["kube-system", "culvert-system"])
//   timeout_ms          bound on one exchange with culvertd (default 5000)
//   on_unreachable      "fail" (default: ADD fails with code 11, retryable) or "allow"
//                       (the pod starts uncaptured: a log line on stderr and a marker in
//                       uncaptured_dir, which culvertd counts and enrolls at its start)
//   uncaptured_dir      default /run/culvert/uncaptured
struct NetConf {
  std::string cni_version;
  std::string name;
  std::optional<nlohmann::json> prev_result;
  std::string enrollment_socket{kDefaultEnrollmentSocket};
  std::vector<std::string> exempt_namespaces{"kube-system", "culvert-system"};
  std::chrono::milliseconds timeout = kDefaultTimeout;
  bool allow_uncaptured = false;
  std::string uncaptured_dir{kDefaultUncapturedDir};
  // GC (1.1.0): cni.dev/valid-attachments as (containerID, ifname).
  std::vector<std::pair<std::string, std::string>> valid_attachments;
  bool has_valid_attachments = false;
};

inline constexpr std::string_view kSupportedVersions[] = {"0.4.0", "1.0.0", "1.1.0"};
bool isSupportedVersion(std::string_view version);

// Parses and checks stdin for `command`. Errors carry the spec code (6 undecodable,
// 1 unsupported cniVersion, 7 a missing or ill-typed field).
std::expected<NetConf, CniError> parseNetConf(std::string_view stdin_text, std::string_view command);

// CNI_ARGS: "K1=V1;K2=V2". Malformed pairs are an error (code 4).
std::expected<std::map<std::string, std::string>, CniError> parseCniArgs(std::string_view args);

// The pod's addresses from a 0.4.0/1.0.0/1.1.0 result: ips[].address without the prefix
// length, in order, IPv4 and IPv6.
std::expected<std::vector<std::string>, CniError> podIpsFromResult(const nlohmann::json& result);

// The environment one invocation sees (CNI_* variables).
struct Invocation {
  std::string command;
  std::string container_id;
  std::string netns;
  std::string ifname;
  std::string args;
  std::string path;
  bool has_command = false;
};

// Builds the enrollment record for ADD from the environment, CNI_ARGS and prevResult.
std::expected<EnrollmentRecord, CniError> buildRecord(const Invocation& inv, const NetConf& conf);

bool isExempt(const NetConf& conf, std::string_view pod_namespace);

// How the plugin talks to culvertd (tests inject a fake).
using EnrollmentCall = std::function<common::Result<EnrollmentResponse>(
    const std::filesystem::path& socket, const EnrollmentRequest& request, std::chrono::milliseconds timeout)>;

// Runs one plugin invocation. Writes the result or error JSON to `out`, log lines to
// `log`, and returns the process exit code.
int runPlugin(const Invocation& inv, std::string_view stdin_text, std::ostream& out, std::ostream& log,
              const EnrollmentCall& call);

}  // namespace culvert::cni
