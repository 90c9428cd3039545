#pragma once

#include <nlohmann/json.hpp>

#include <cstddef>
#include <cstdint>
#include <optional>
#include <string>
#include <string_view>
#include <vector>

#include "proxy/common/error.h"  // header-only: the plugin links nothing from proxy/

namespace culvert::cni {

// One pod interface to capture, keyed by (container_id, ifname). Sent by culvert-cni ADD
// and `culvertctl enroll`; JSON keys are the field names, except namespace_ -> "namespace".
struct EnrollmentRecord {
  std::string container_id;
  std::string ifname = "eth0";
  std::string pod_uid;
  std::string namespace_;
  std::string name;
  std::string netns_path;
  std::vector<std::string> ips;
  std::optional<std::string> tenant;
  std::vector<uint16_t> exclude_ports;
  std::vector<std::string> exclude_cidrs;
  std::optional<std::string> fail_mode;  // "open" | "closed"; absent = the bootstrap's
  // The CNI network (conflist name) that enrolled the pod; absent for culvertctl. CNI GC
  // only collects its own network's pods.
  std::optional<std::string> network;

  bool operator==(const EnrollmentRecord&) const = default;
};

// Field checks shared by both ends: required fields present, IPs/CIDRs/ports well formed.
// Error::where names the field ("ips[1]").
common::Result<void> validateRecord(const EnrollmentRecord& record);

nlohmann::json toJson(const EnrollmentRecord& record);
// Missing required fields and wrong JSON types are errors naming the field; unknown
// fields are ignored so a newer plugin can talk to an older culvertd during an upgrade.
// The result is validated.
common::Result<EnrollmentRecord> recordFromJson(const nlohmann::json& json);

enum class EnrollmentOp { Enroll, Unenroll, List };

// {"op":"enroll","record":{...}}
// {"op":"unenroll","container_id":"..","ifname":".."}  or  {"op":"unenroll","netns_path":".."}
// {"op":"list"}
struct EnrollmentRequest {
  EnrollmentOp op = EnrollmentOp::List;
  EnrollmentRecord record;   // Enroll
  std::string container_id;  // Unenroll by key (ifname defaults to "eth0")
  std::string ifname;
  std::string netns_path;    // Unenroll by network namespace (every interface in it)

  static EnrollmentRequest enroll(EnrollmentRecord record);
  static EnrollmentRequest unenrollByKey(std::string container_id, std::string ifname = "eth0");
  static EnrollmentRequest unenrollByNetns(std::string netns_path);
  static EnrollmentRequest list();

  bool operator==(const EnrollmentRequest&) const = default;
};

// {"ok":true[, "pods":[...]][, other keys]} or {"ok":false,"error":"..."}
struct EnrollmentResponse {
  bool ok = true;
  std::string error;
  std::optional<std::vector<EnrollmentRecord>> pods;  // set for list
  // Any other top-level keys, passed through, so culvertd can report more (e.g. which
  // listener it opened) without a protocol change. Always a JSON object.
  nlohmann::json extra = nlohmann::json::object();

  static EnrollmentResponse success();
  static EnrollmentResponse failure(std::string error);

  bool operator==(const EnrollmentResponse&) const = default;
};

std::string_view toString(EnrollmentOp op);

nlohmann::json toJson(const EnrollmentRequest& request);
common::Result<EnrollmentRequest> requestFromJson(const nlohmann::json& json);
nlohmann::json toJson(const EnrollmentResponse& response);
common::Result<EnrollmentResponse> responseFromJson(const nlohmann::json& json);

// Wire framing: one JSON object per line. encode* appends the '\n'; parse* take one line
// (a trailing '\n' or "\r\n" is allowed) and never throw.
std::string encodeRequest(const EnrollmentRequest& request);
std::string encodeResponse(const EnrollmentResponse& response);
common::Result<EnrollmentRequest> parseRequest(std::string_view line);
common::Result<EnrollmentResponse> parseResponse(std::string_view line);

// Bounds on one line. A list response carries every enrolled pod, hence the larger one.
inline constexpr size_t kMaxRequestLineBytes = 64 * 1024;
inline constexpr size_t kMaxResponseLineBytes = 16 * 1024 * 1024;

}  // namespace culvert::cni
