#include "cni/protocol/enrollment.h"

#include <arpa/inet.h>
#include <net/if.h>

#include <charconv>

namespace culvert::cni {

using common::fail;
using common::Result;
using nlohmann::json;

namespace {

std::string_view typeName(const json& j) { return j.type_name(); }

// Typed field readers: absent -> the default (or an error when required), wrong type ->
// an error naming the field. No nlohmann conversion that could throw is used.
Result<std::optional<std::string>> optString(const json& obj, const char* key) {
  auto it = obj.find(key);
  if (it == obj.end() || it->is_null()) return std::optional<std::string>();
  if (!it->is_string()) return fail("expected a string, got " + std::string(typeName(*it)), key);
  return std::optional<std::string>(it->get_ref<const std::string&>());
}

Result<std::string> reqString(const json& obj, const char* key) {
  auto v = optString(obj, key);
  if (!v) return std::unexpected(v.error());
  if (!*v) return fail("missing required field", key);
  return std::move(**v);
}

Result<std::vector<std::string>> stringList(const json& obj, const char* key) {
  std::vector<std::string> out;
  auto it = obj.find(key);
  if (it == obj.end() || it->is_null()) return out;
  if (!it->is_array()) return fail("expected a list of strings, got " + std::string(typeName(*it)), key);
  for (size_t i = 0; i < it->size(); ++i) {
    const json& e = (*it)[i];
    if (!e.is_string()) {
      return fail("expected a string, got " + std::string(typeName(e)), std::string(key) + "[" + std::to_string(i) + "]");
    }
    out.push_back(e.get_ref<const std::string&>());
  }
  return out;
}

Result<std::vector<uint16_t>> portList(const json& obj, const char* key) {
  std::vector<uint16_t> out;
  auto it = obj.find(key);
  if (it == obj.end() || it->is_null()) return out;
  if (!it->is_array()) return fail("expected a list of ports, got " + std::string(typeName(*it)), key);
  for (size_t i = 0; i < it->size(); ++i) {
    const json& e = (*it)[i];
    std::string where = std::string(key) + "[" + std::to_string(i) + "]";
    // Parsed text gives unsigned numbers; a json built in C++ from an int is signed.
    if (e.is_number_unsigned()) {
      auto v = e.get<uint64_t>();
      if (v >= 1 && v <= 65535) {
        out.push_back(static_cast<uint16_t>(v));
        continue;
      }
      return fail("port must be 1..65535, got " + std::to_string(v), where);
    }
    if (e.is_number_integer()) {
      auto v = e.get<int64_t>();
      if (v >= 1 && v <= 65535) {
        out.push_back(static_cast<uint16_t>(v));
        continue;
      }
      return fail("port must be 1..65535, got " + std::to_string(v), where);
    }
    return fail("expected a port number, got " + std::string(typeName(e)), where);
  }
  return out;
}

bool isIp(const std::string& s) {
  unsigned char buf[16];
  return inet_pton(AF_INET, s.c_str(), buf) == 1 || inet_pton(AF_INET6, s.c_str(), buf) == 1;
}

Result<void> checkCidr(const std::string& s) {
  auto slash = s.find('/');
  if (slash == std::string::npos) return fail("expected ADDRESS/PREFIX, got '" + s + "'");
  std::string addr = s.substr(0, slash);
  std::string len = s.substr(slash + 1);
  unsigned char buf[16];
  unsigned max = 0;
  if (inet_pton(AF_INET, addr.c_str(), buf) == 1) {
    max = 32;
  } else if (inet_pton(AF_INET6, addr.c_str(), buf) == 1) {
    max = 128;
  } else {
    return fail("not an IPv4 or IPv6 prefix: '" + s + "'");
  }
  unsigned value = 0;
  auto [end, ec] = std::from_chars(len.data(), len.data() + len.size(), value);
  if (len.empty() || ec != std::errc() || end != len.data() + len.size() || value > max) {
    return fail("prefix length must be 0.." + std::to_string(max) + " in '" + s + "'");
  }
  return {};
}

// CNI's rule for container IDs: alphanumeric first, then alphanumerics, '_', '.', '-'.
bool isValidContainerId(const std::string& id) {
  if (id.empty() || !std::isalnum(static_cast<unsigned char>(id[0]))) return false;
  for (char c : id) {
    if (!std::isalnum(static_cast<unsigned char>(c)) && c != '_' && c != '.' && c != '-') return false;
  }
  return true;
}

Result<void> checkIfname(const std::string& name, const std::string& where) {
  if (name.empty()) return fail("must not be empty", where);
  if (name.size() >= IFNAMSIZ) return fail("longer than " + std::to_string(IFNAMSIZ - 1) + " characters", where);
  if (name == "." || name == "..") return fail("not a valid interface name", where);
  for (char c : name) {
    if (c == '/' || c == ':' || std::isspace(static_cast<unsigned char>(c)) || std::iscntrl(static_cast<unsigned char>(c))) {
      return fail("not a valid interface name: '" + name + "'", where);
    }
  }
  return {};
}

Result<void> checkNetnsPath(const std::string& path, const std::string& where) {
  if (path.empty()) return fail("must not be empty", where);
  if (path.front() != '/') return fail("must be an absolute path, got '" + path + "'", where);
  if (path.find('\0') != std::string::npos) return fail("contains a NUL byte", where);
  return {};
}

Result<void> checkContainerId(const std::string& id, const std::string& where) {
  if (id.empty()) return fail("must not be empty", where);
  if (!isValidContainerId(id)) {
    return fail("must start with a letter or digit and contain only letters, digits, '_', '.', '-'", where);
  }
  return {};
}

}  // namespace

Result<void> validateRecord(const EnrollmentRecord& r) {
  if (auto ok = checkContainerId(r.container_id, "container_id"); !ok) return ok;
  if (auto ok = checkIfname(r.ifname, "ifname"); !ok) return ok;
  if (r.namespace_.empty()) return fail("must not be empty", "namespace");
  if (r.name.empty()) return fail("must not be empty", "name");
  if (auto ok = checkNetnsPath(r.netns_path, "netns_path"); !ok) return ok;
  for (size_t i = 0; i < r.ips.size(); ++i) {
    if (!isIp(r.ips[i])) return fail("not an IPv4 or IPv6 address: '" + r.ips[i] + "'", "ips[" + std::to_string(i) + "]");
  }
  if (r.tenant && r.tenant->empty()) return fail("must not be empty when present", "tenant");
  for (size_t i = 0; i < r.exclude_ports.size(); ++i) {
    if (r.exclude_ports[i] == 0) return fail("port must be 1..65535, got 0", "exclude_ports[" + std::to_string(i) + "]");
  }
  for (size_t i = 0; i < r.exclude_cidrs.size(); ++i) {
    if (auto ok = checkCidr(r.exclude_cidrs[i]); !ok) {
      return fail(ok.error().message, "exclude_cidrs[" + std::to_string(i) + "]");
    }
  }
  if (r.fail_mode && *r.fail_mode != "open" && *r.fail_mode != "closed") {
    return fail("must be open or closed, got '" + *r.fail_mode + "'", "fail_mode");
  }
  return {};
}

json toJson(const EnrollmentRecord& r) {
  json j = {{"container_id", r.container_id}, {"ifname", r.ifname},         {"pod_uid", r.pod_uid},
            {"namespace", r.namespace_},      {"name", r.name},             {"netns_path", r.netns_path},
            {"ips", r.ips},                   {"exclude_ports", r.exclude_ports}, {"exclude_cidrs", r.exclude_cidrs}};
  if (r.tenant) j["tenant"] = *r.tenant;
  if (r.fail_mode) j["fail_mode"] = *r.fail_mode;
  if (r.network) j["network"] = *r.network;
  return j;
}

Result<EnrollmentRecord> recordFromJson(const json& j) {
  if (!j.is_object()) return fail("expected an object, got " + std::string(typeName(j)));
  EnrollmentRecord r;
  auto take = [](auto result, auto& into) -> Result<void> {
    if (!result) return std::unexpected(result.error());
    into = std::move(*result);
    return {};
  };
  if (auto ok = take(reqString(j, "container_id"), r.container_id); !ok) return std::unexpected(ok.error());
  std::optional<std::string> ifname;
  if (auto ok = take(optString(j, "ifname"), ifname); !ok) return std::unexpected(ok.error());
  if (ifname) r.ifname = *ifname;
  std::optional<std::string> pod_uid;
  if (auto ok = take(optString(j, "pod_uid"), pod_uid); !ok) return std::unexpected(ok.error());
  r.pod_uid = pod_uid.value_or("");
  if (auto ok = take(reqString(j, "namespace"), r.namespace_); !ok) return std::unexpected(ok.error());
  if (auto ok = take(reqString(j, "name"), r.name); !ok) return std::unexpected(ok.error());
  if (auto ok = take(reqString(j, "netns_path"), r.netns_path); !ok) return std::unexpected(ok.error());
  if (auto ok = take(stringList(j, "ips"), r.ips); !ok) return std::unexpected(ok.error());
  if (auto ok = take(optString(j, "tenant"), r.tenant); !ok) return std::unexpected(ok.error());
  if (auto ok = take(portList(j, "exclude_ports"), r.exclude_ports); !ok) return std::unexpected(ok.error());
  if (auto ok = take(stringList(j, "exclude_cidrs"), r.exclude_cidrs); !ok) return std::unexpected(ok.error());
  if (auto ok = take(optString(j, "fail_mode"), r.fail_mode); !ok) return std::unexpected(ok.error());
  if (auto ok = take(optString(j, "network"), r.network); !ok) return std::unexpected(ok.error());
  if (auto ok = validateRecord(r); !ok) return std::unexpected(ok.error());
  return r;
}

EnrollmentRequest EnrollmentRequest::enroll(EnrollmentRecord record) {
  EnrollmentRequest r;
  r.op = EnrollmentOp::Enroll;
  r.record = std::move(record);
  return r;
}

EnrollmentRequest EnrollmentRequest::unenrollByKey(std::string container_id, std::string ifname) {
  EnrollmentRequest r;
  r.op = EnrollmentOp::Unenroll;
  r.container_id = std::move(container_id);
  r.ifname = std::move(ifname);
  return r;
}

EnrollmentRequest EnrollmentRequest::unenrollByNetns(std::string netns_path) {
  EnrollmentRequest r;
  r.op = EnrollmentOp::Unenroll;
  r.netns_path = std::move(netns_path);
  return r;
}

EnrollmentRequest EnrollmentRequest::list() { return EnrollmentRequest{}; }

EnrollmentResponse EnrollmentResponse::success() { return EnrollmentResponse{}; }

EnrollmentResponse EnrollmentResponse::failure(std::string error) {
  EnrollmentResponse r;
  r.ok = false;
  r.error = std::move(error);
  return r;
}

std::string_view toString(EnrollmentOp op) {
  switch (op) {
    case EnrollmentOp::Enroll: return "enroll";
    case EnrollmentOp::Unenroll: return "unenroll";
    case EnrollmentOp::List: return "list";
  }
  return "?";
}

json toJson(const EnrollmentRequest& r) {
  json j = {{"op", toString(r.op)}};
  switch (r.op) {
    case EnrollmentOp::Enroll: j["record"] = toJson(r.record); break;
    case EnrollmentOp::Unenroll:
      if (!r.netns_path.empty()) {
        j["netns_path"] = r.netns_path;
      } else {
        j["container_id"] = r.container_id;
        j["ifname"] = r.ifname.empty() ? "eth0" : r.ifname;
      }
      break;
    case EnrollmentOp::List: break;
  }
  return j;
}

Result<EnrollmentRequest> requestFromJson(const json& j) {
  if (!j.is_object()) return fail("a request must be a JSON object, got " + std::string(typeName(j)));
  auto op = reqString(j, "op");
  if (!op) return std::unexpected(op.error());
  if (*op == "enroll") {
    auto it = j.find("record");
    if (it == j.end()) return fail("missing required field", "record");
    auto rec = recordFromJson(*it);
    if (!rec) return std::unexpected(common::nest("record", rec.error()));
    return EnrollmentRequest::enroll(std::move(*rec));
  }
  if (*op == "unenroll") {
    auto id = optString(j, "container_id");
    if (!id) return std::unexpected(id.error());
    auto ifname = optString(j, "ifname");
    if (!ifname) return std::unexpected(ifname.error());
    auto netns = optString(j, "netns_path");
    if (!netns) return std::unexpected(netns.error());
    if (*netns) {
      if (*id || *ifname) return fail("give either container_id (and ifname) or netns_path, not both", "netns_path");
      if (auto ok = checkNetnsPath(**netns, "netns_path"); !ok) return std::unexpected(ok.error());
      return EnrollmentRequest::unenrollByNetns(std::move(**netns));
    }
    if (!*id) return fail("unenroll needs container_id (and ifname) or netns_path", "container_id");
    if (auto ok = checkContainerId(**id, "container_id"); !ok) return std::unexpected(ok.error());
    std::string name = ifname->value_or("eth0");
    if (auto ok = checkIfname(name, "ifname"); !ok) return std::unexpected(ok.error());
    return EnrollmentRequest::unenrollByKey(std::move(**id), std::move(name));
  }
  if (*op == "list") return EnrollmentRequest::list();
  return fail("unknown op '" + *op + "' (expected enroll, unenroll or list)", "op");
}

json toJson(const EnrollmentResponse& r) {
  json j = r.extra.is_object() ? r.extra : json::object();
  j["ok"] = r.ok;
  if (!r.ok) j["error"] = r.error;
  if (r.pods) {
    json pods = json::array();
    for (const auto& p : *r.pods) pods.push_back(toJson(p));
    j["pods"] = std::move(pods);
  }
  return j;
}

Result<EnrollmentResponse> responseFromJson(const json& j) {
  if (!j.is_object()) return fail("a response must be a JSON object, got " + std::string(typeName(j)));
  EnrollmentResponse r;
  auto ok = j.find("ok");
  if (ok == j.end()) return fail("missing required field", "ok");
  if (!ok->is_boolean()) return fail("expected a boolean, got " + std::string(typeName(*ok)), "ok");
  r.ok = ok->get<bool>();
  auto error = optString(j, "error");
  if (!error) return std::unexpected(error.error());
  if (!r.ok) {
    if (!*error || (*error)->empty()) return fail("a failed response must say why", "error");
    r.error = std::move(**error);
  }
  if (auto pods = j.find("pods"); pods != j.end() && !pods->is_null()) {
    if (!pods->is_array()) return fail("expected a list, got " + std::string(typeName(*pods)), "pods");
    std::vector<EnrollmentRecord> list;
    for (size_t i = 0; i < pods->size(); ++i) {
      auto rec = recordFromJson((*pods)[i]);
      if (!rec) return std::unexpected(common::nest("pods[" + std::to_string(i) + "]", rec.error()));
      list.push_back(std::move(*rec));
    }
    r.pods = std::move(list);
  }
  for (auto it = j.begin(); it != j.end(); ++it) {
    if (it.key() != "ok" && it.key() != "error" && it.key() != "pods") r.extra[it.key()] = it.value();
  }
  return r;
}

namespace {

// Invalid UTF-8 in a field (a pod name from a buggy caller) must not throw: replace it.
std::string encodeLine(const json& j) {
  return j.dump(-1, ' ', false, json::error_handler_t::replace) + "\n";
}

Result<json> decodeLine(std::string_view line, size_t max_bytes) {
  if (!line.empty() && line.back() == '\n') line.remove_suffix(1);
  if (!line.empty() && line.back() == '\r') line.remove_suffix(1);
  if (line.size() > max_bytes) return fail("message exceeds " + std::to_string(max_bytes) + " bytes");
  if (line.find('\n') != std::string_view::npos) return fail("more than one line in a message");
  json j = json::parse(line, nullptr, /*allow_exceptions=*/false);
  if (j.is_discarded()) return fail("invalid JSON");
  return j;
}

}  // namespace

std::string encodeRequest(const EnrollmentRequest& request) { return encodeLine(toJson(request)); }

std::string encodeResponse(const EnrollmentResponse& response) { return encodeLine(toJson(response)); }

Result<EnrollmentRequest> parseRequest(std::string_view line) {
  try {
    auto j = decodeLine(line, kMaxRequestLineBytes);
    if (!j) return std::unexpected(j.error());
    return requestFromJson(*j);
  } catch (const std::exception& e) {
    return fail(std::string("malformed request: ") + e.what());
  }
}

Result<EnrollmentResponse> parseResponse(std::string_view line) {
  try {
    auto j = decodeLine(line, kMaxResponseLineBytes);
    if (!j) return std::unexpected(j.error());
    return responseFromJson(*j);
  } catch (const std::exception& e) {
    return fail(std::string("malformed response: ") + e.what());
  }
}

}  // namespace culvert::cni
