#include "cni/plugin/plugin.h"

#include <fcntl.h>
#include <unistd.h>

#include <algorithm>
#include <cerrno>
#include <cstring>
#include <ostream>
#include <set>

namespace culvert::cni {

using nlohmann::json;

namespace {

std::unexpected<CniError> cniFail(int code, std::string msg, std::string details = {}) {
  return std::unexpected(CniError{code, std::move(msg), std::move(details)});
}

std::string dump(const json& j) { return j.dump(-1, ' ', false, json::error_handler_t::replace); }

// Reads an optional string key; wrong type is a config error naming the key.
std::expected<std::optional<std::string>, CniError> optString(const json& obj, const char* key) {
  auto it = obj.find(key);
  if (it == obj.end() || it->is_null()) return std::optional<std::string>();
  if (!it->is_string()) return cniFail(kCniErrInvalidConfig, std::string(key) + " must be a string", it->type_name());
  return std::optional<std::string>(it->get<std::string>());
}

}  // namespace

std::string cniErrorJson(int code, std::string_view msg, std::string_view details, std::string_view cni_version) {
  json j = {{"cniVersion", cni_version}, {"code", code}, {"msg", msg}};
  if (!details.empty()) j["details"] = details;
  return dump(j);
}

bool isSupportedVersion(std::string_view version) {
  return std::ranges::find(kSupportedVersions, version) != std::end(kSupportedVersions);
}

std::expected<NetConf, CniError> parseNetConf(std::string_view stdin_text, std::string_view command) {
  json j = json::parse(stdin_text, nullptr, /*allow_exceptions=*/false);
  if (j.is_discarded()) return cniFail(kCniErrDecode, "network configuration on stdin is not valid JSON");
  if (!j.is_object()) return cniFail(kCniErrDecode, "network configuration must be a JSON object");
  NetConf c;
  auto version = optString(j, "cniVersion");
  if (!version) return std::unexpected(version.error());
  if (!*version) return cniFail(kCniErrInvalidConfig, "cniVersion is missing from the network configuration");
  c.cni_version = **version;
  if (!isSupportedVersion(c.cni_version)) {
    return cniFail(kCniErrIncompatibleVersion, "unsupported cniVersion " + c.cni_version,
                   "culvert-cni supports 0.4.0, 1.0.0 and 1.1.0");
  }
  if ((command == "STATUS" || command == "GC") && c.cni_version != "1.1.0") {
    return cniFail(kCniErrIncompatibleVersion, std::string(command) + " needs cniVersion 1.1.0, got " + c.cni_version);
  }
  auto name = optString(j, "name");
  if (!name) return std::unexpected(name.error());
  if (!*name || (*name)->empty()) return cniFail(kCniErrInvalidConfig, "name is missing from the network configuration");
  c.name = **name;

  if (auto it = j.find("prevResult"); it != j.end() && !it->is_null()) {
    if (!it->is_object()) return cniFail(kCniErrInvalidConfig, "prevResult must be an object");
    c.prev_result = *it;
  }
  auto socket = optString(j, "enrollment_socket");
  if (!socket) return std::unexpected(socket.error());
  if (*socket) {
    if ((*socket)->empty() || (*socket)->front() != '/') {
      return cniFail(kCniErrInvalidConfig, "enrollment_socket must be an absolute path", **socket);
    }
    c.enrollment_socket = **socket;
  }
  if (auto it = j.find("exempt_namespaces"); it != j.end() && !it->is_null()) {
    if (!it->is_array()) return cniFail(kCniErrInvalidConfig, "exempt_namespaces must be a list of strings");
    c.exempt_namespaces.clear();
    for (const auto& e : *it) {
      if (!e.is_string()) return cniFail(kCniErrInvalidConfig, "exempt_namespaces must be a list of strings");
      c.exempt_namespaces.push_back(e.get<std::string>());
    }
  }
  if (auto it = j.find("timeout_ms"); it != j.end() && !it->is_null()) {
    if (!it->is_number_unsigned() || it->get<uint64_t>() == 0 || it->get<uint64_t>() > 600'000) {
      return cniFail(kCniErrInvalidConfig, "timeout_ms must be an integer in 1..600000");
    }
    c.timeout = std::chrono::milliseconds(it->get<uint64_t>());
  }
  auto unreachable = optString(j, "on_unreachable");
  if (!unreachable) return std::unexpected(unreachable.error());
  if (*unreachable) {
    if (**unreachable != "fail" && **unreachable != "allow") {
      return cniFail(kCniErrInvalidConfig, "on_unreachable must be fail or allow, got '" + **unreachable + "'");
    }
    c.allow_uncaptured = **unreachable == "allow";
  }
  auto dir = optString(j, "uncaptured_dir");
  if (!dir) return std::unexpected(dir.error());
  if (*dir) c.uncaptured_dir = **dir;

  if (auto it = j.find("cni.dev/valid-attachments"); it != j.end() && !it->is_null()) {
    if (!it->is_array()) return cniFail(kCniErrInvalidConfig, "cni.dev/valid-attachments must be a list");
    c.has_valid_attachments = true;
    for (const auto& a : *it) {
      if (!a.is_object() || !a.contains("containerID") || !a["containerID"].is_string() ||
          (a.contains("ifname") && !a["ifname"].is_string())) {
        return cniFail(kCniErrInvalidConfig, "cni.dev/valid-attachments entries need a string containerID and ifname");
      }
      c.valid_attachments.emplace_back(a["containerID"].get<std::string>(), a.value("ifname", std::string("eth0")));
    }
  }
  if (command == "GC" && !c.has_valid_attachments) {
    return cniFail(kCniErrInvalidConfig, "GC needs cni.dev/valid-attachments");
  }
  return c;
}

std::expected<std::map<std::string, std::string>, CniError> parseCniArgs(std::string_view args) {
  std::map<std::string, std::string> out;
  while (!args.empty()) {
    auto semi = args.find(';');
    std::string_view pair = args.substr(0, semi);
    args = semi == std::string_view::npos ? std::string_view() : args.substr(semi + 1);
    if (pair.empty()) continue;
    auto eq = pair.find('=');
    if (eq == std::string_view::npos || eq == 0) {
      return cniFail(kCniErrInvalidEnvironment, "CNI_ARGS: expected KEY=VALUE, got '" + std::string(pair) + "'");
    }
    out[std::string(pair.substr(0, eq))] = std::string(pair.substr(eq + 1));
  }
  return out;
}

std::expected<std::vector<std::string>, CniError> podIpsFromResult(const json& result) {
  std::vector<std::string> out;
  auto it = result.find("ips");
  if (it == result.end() || it->is_null()) return out;
  if (!it->is_array()) return cniFail(kCniErrInvalidConfig, "prevResult.ips must be a list");
  for (size_t i = 0; i < it->size(); ++i) {
    const json& ip = (*it)[i];
    std::string where = "prevResult.ips[" + std::to_string(i) + "].address";
    if (!ip.is_object() || !ip.contains("address") || !ip["address"].is_string()) {
      return cniFail(kCniErrInvalidConfig, where + " must be a string ADDRESS/PREFIX");
    }
    std::string address = ip["address"].get<std::string>();
    out.push_back(address.substr(0, address.find('/')));
  }
  return out;
}

bool isExempt(const NetConf& conf, std::string_view pod_namespace) {
  return std::ranges::find(conf.exempt_namespaces, pod_namespace) != conf.exempt_namespaces.end();
}

std::expected<EnrollmentRecord, CniError> buildRecord(const Invocation& inv, const NetConf& conf) {
  auto args = parseCniArgs(inv.args);
  if (!args) return std::unexpected(args.error());
  auto arg = [&](const char* key) {
    auto it = args->find(key);
    return it == args->end() ? std::string() : it->second;
  };
  EnrollmentRecord r;
  r.container_id = inv.container_id;
  r.ifname = inv.ifname;
  r.netns_path = inv.netns;
  r.pod_uid = arg("K8S_POD_UID");
  r.network = conf.name;
  r.namespace_ = arg("K8S_POD_NAMESPACE");
  r.name = arg("K8S_POD_NAME");
  // Outside Kubernetes there are no K8S_POD_*: the pod is its container in "default".
  if (r.namespace_.empty()) r.namespace_ = "default";
  if (r.name.empty()) r.name = inv.container_id;
  if (conf.prev_result) {
    auto ips = podIpsFromResult(*conf.prev_result);
    if (!ips) return std::unexpected(ips.error());
    r.ips = std::move(*ips);
  }
  if (auto valid = validateRecord(r); !valid) {
    return cniFail(kCniErrInvalidEnvironment, "cannot build the enrollment record: " + valid.error().describe());
  }
  return r;
}

namespace {

struct Context {
  const Invocation& inv;
  std::ostream& out;
  std::ostream& log;
  const EnrollmentCall& call;
  std::string version = "1.0.0";  // of the error objects, once the config says
};

int fail(Context& ctx, const CniError& e) {
  ctx.out << cniErrorJson(e.code, e.msg, e.details, ctx.version) << "\n";
  return 1;
}

// The spec's result is prevResult, passed through unchanged (a result must carry a
// cniVersion: the config's, when prevResult came without one).
int printPrevResult(Context& ctx, const NetConf& conf) {
  json result = conf.prev_result.value_or(json::object());
  if (!result.contains("cniVersion")) result["cniVersion"] = conf.cni_version;
  ctx.out << dump(result) << "\n";
  return 0;
}

std::expected<void, CniError> requireEnv(const Invocation& inv, bool netns) {
  if (inv.container_id.empty()) return cniFail(kCniErrInvalidEnvironment, "CNI_CONTAINERID is not set");
  if (inv.ifname.empty()) return cniFail(kCniErrInvalidEnvironment, "CNI_IFNAME is not set");
  if (netns && inv.netns.empty()) return cniFail(kCniErrInvalidEnvironment, "CNI_NETNS is not set");
  return {};
}

// Records a pod that started uncaptured, for culvertd to count and enroll at its start.
void markUncaptured(Context& ctx, const NetConf& conf, const EnrollmentRecord& record) {
  std::error_code ec;
  std::filesystem::create_directories(conf.uncaptured_dir, ec);
  auto path = std::filesystem::path(conf.uncaptured_dir) / (record.container_id + "_" + record.ifname + ".json");
  auto tmp = path;
  tmp += ".tmp";
  int fd = ::open(tmp.c_str(), O_WRONLY | O_CREAT | O_TRUNC | O_CLOEXEC, 0600);
  std::string data = dump(toJson(record)) + "\n";
  bool ok = fd >= 0 && ::write(fd, data.data(), data.size()) == static_cast<ssize_t>(data.size());
  if (fd >= 0) ::close(fd);
  if (!ok || ::rename(tmp.c_str(), path.c_str()) != 0) {
    ctx.log << "culvert-cni: cannot write " << path.string() << ": " << std::strerror(errno) << "\n";
  }
}

int cmdAdd(Context& ctx, const NetConf& conf) {
  if (auto ok = requireEnv(ctx.inv, true); !ok) return fail(ctx, ok.error());
  if (!conf.prev_result) {
    return fail(ctx, {kCniErrInvalidConfig, "culvert-cni is a chained plugin and got no prevResult",
                      "put culvert after the primary network plugin in the conflist"});
  }
  auto record = buildRecord(ctx.inv, conf);
  if (!record) return fail(ctx, record.error());
  if (isExempt(conf, record->namespace_)) return printPrevResult(ctx, conf);

  auto response = ctx.call(conf.enrollment_socket, EnrollmentRequest::enroll(*record), conf.timeout);
  if (!response) {
    if (conf.allow_uncaptured) {
      ctx.log << "culvert-cni: culvertd unreachable (" << response.error().describe() << "); pod "
              << record->namespace_ << "/" << record->name << " (" << record->container_id
              << ") starts UNCAPTURED (on_unreachable: allow)\n";
      markUncaptured(ctx, conf, *record);
      return printPrevResult(ctx, conf);
    }
    return fail(ctx, {kCniErrTryAgainLater, "culvertd is unreachable; the pod must not start uncaptured",
                      response.error().describe()});
  }
  if (!response->ok) return fail(ctx, {kCniErrEnrollmentRefused, "culvertd refused the enrollment", response->error});
  return printPrevResult(ctx, conf);
}

int cmdDel(Context& ctx, const NetConf& conf) {
  if (auto ok = requireEnv(ctx.inv, false); !ok) return fail(ctx, ok.error());
  auto response = ctx.call(conf.enrollment_socket, EnrollmentRequest::unenrollByKey(ctx.inv.container_id, ctx.inv.ifname),
                           conf.timeout);
  // DEL must succeed when culvertd is gone: nothing of the pod is left to release then
  // (its listener died with culvertd, and a restarted culvertd drops dead pods).
  if (!response) {
    ctx.log << "culvert-cni: DEL " << ctx.inv.container_id << ": culvertd unreachable ("
            << response.error().describe() << "); nothing to release\n";
    return 0;
  }
  if (!response->ok) return fail(ctx, {kCniErrEnrollmentRefused, "culvertd refused the unenrollment", response->error});
  return 0;
}

std::expected<std::vector<EnrollmentRecord>, CniError> listPods(Context& ctx, const NetConf& conf, int unreachable_code) {
  auto response = ctx.call(conf.enrollment_socket, EnrollmentRequest::list(), conf.timeout);
  if (!response) return cniFail(unreachable_code, "culvertd is unreachable", response.error().describe());
  if (!response->ok) return cniFail(unreachable_code, "culvertd refused to list pods", response->error);
  return response->pods.value_or(std::vector<EnrollmentRecord>{});
}

int cmdCheck(Context& ctx, const NetConf& conf) {
  if (auto ok = requireEnv(ctx.inv, true); !ok) return fail(ctx, ok.error());
  if (!conf.prev_result) return fail(ctx, {kCniErrInvalidConfig, "CHECK needs prevResult", ""});
  auto record = buildRecord(ctx.inv, conf);
  if (!record) return fail(ctx, record.error());
  if (isExempt(conf, record->namespace_)) return 0;
  auto pods = listPods(ctx, conf, kCniErrTryAgainLater);
  if (!pods) return fail(ctx, pods.error());
  for (const auto& p : *pods) {
    if (p.container_id == record->container_id && p.ifname == record->ifname) {
      if (p.netns_path != record->netns_path) {
        return fail(ctx, {kCniErrNotCaptured, "the pod is enrolled with another network namespace",
                          "enrolled " + p.netns_path + ", runtime says " + record->netns_path});
      }
      return 0;
    }
  }
  return fail(ctx, {kCniErrNotCaptured, "the pod is not captured: culvertd has no enrollment for it",
                    record->container_id + " " + record->ifname});
}

int cmdStatus(Context& ctx, const NetConf& conf) {
  auto pods = listPods(ctx, conf, kCniErrPluginNotAvailable);
  if (!pods) return fail(ctx, pods.error());
  return 0;
}

int cmdGc(Context& ctx, const NetConf& conf) {
  auto pods = listPods(ctx, conf, kCniErrTryAgainLater);
  if (!pods) return fail(ctx, pods.error());
  std::set<std::pair<std::string, std::string>> valid(conf.valid_attachments.begin(), conf.valid_attachments.end());
  for (const auto& p : *pods) {
    // Only this network's attachments: culvertctl's and other networks' pods stay.
    if (p.network != conf.name || valid.contains({p.container_id, p.ifname})) continue;
    auto response = ctx.call(conf.enrollment_socket, EnrollmentRequest::unenrollByKey(p.container_id, p.ifname),
                             conf.timeout);
    if (!response) return fail(ctx, {kCniErrTryAgainLater, "culvertd is unreachable", response.error().describe()});
    if (!response->ok) return fail(ctx, {kCniErrEnrollmentRefused, "culvertd refused the unenrollment", response->error});
    ctx.log << "culvert-cni: GC removed " << p.namespace_ << "/" << p.name << " (" << p.container_id << " " << p.ifname
            << ")\n";
  }
  return 0;
}

}  // namespace

int runPlugin(const Invocation& inv, std::string_view stdin_text, std::ostream& out, std::ostream& log,
              const EnrollmentCall& call) {
  Context ctx{inv, out, log, call, "1.0.0"};
  const std::string& cmd = inv.command;
  if (cmd == "VERSION") {
    json versions = json::array();
    for (auto v : kSupportedVersions) versions.push_back(std::string(v));
    json j = {{"cniVersion", "1.1.0"}, {"supportedVersions", versions}};
    out << j.dump() << "\n";
    return 0;
  }
  // The spec has no "not implemented" code; 4 ("invalid necessary environment
  // variables, like CNI_COMMAND") is its code for a CNI_COMMAND this plugin cannot act on.
  if (!inv.has_command || cmd.empty()) return fail(ctx, {kCniErrInvalidEnvironment, "CNI_COMMAND is not set", ""});
  if (cmd != "ADD" && cmd != "DEL" && cmd != "CHECK" && cmd != "STATUS" && cmd != "GC") {
    return fail(ctx, {kCniErrInvalidEnvironment, "unknown CNI_COMMAND " + cmd,
                      "expected ADD, DEL, CHECK, STATUS, GC or VERSION"});
  }
  auto conf = parseNetConf(stdin_text, cmd);
  if (!conf) {
    // Answer in the config's version when it named a supported one.
    json j = json::parse(stdin_text, nullptr, false);
    if (j.is_object() && j.contains("cniVersion") && j["cniVersion"].is_string() &&
        isSupportedVersion(j["cniVersion"].get<std::string>())) {
      ctx.version = j["cniVersion"].get<std::string>();
    }
    return fail(ctx, conf.error());
  }
  ctx.version = conf->cni_version;
  if (cmd == "ADD") return cmdAdd(ctx, *conf);
  if (cmd == "DEL") return cmdDel(ctx, *conf);
  if (cmd == "CHECK") return cmdCheck(ctx, *conf);
  if (cmd == "STATUS") return cmdStatus(ctx, *conf);
  return cmdGc(ctx, *conf);
}

}  // namespace culvert::cni
