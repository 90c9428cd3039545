#include "agent/ctl/ctl.h"

#include <algorithm>
#include <charconv>
#include <iomanip>
#include <map>
#include <ostream>
#include <random>
#include <sstream>
#include <vector>

#include "agent/bootstrap.h"
#include "cni/protocol/client.h"
#include "ebpf/loader/capture_program.h"

namespace culvert::agent {

using common::fail;
using common::Result;

namespace {

// Record fields -> the flags that set them, so validation errors name what to fix.
std::string flagFor(const std::string& where) {
  static const std::map<std::string, std::string, std::less<>> flags = {
      {"container_id", "--container-id"}, {"ifname", "--ifname"},       {"pod_uid", "--pod-uid"},
      {"namespace", "--namespace"},       {"name", "--name"},           {"netns_path", "--netns"},
      {"ips", "--ip"},                    {"tenant", "--tenant"},       {"exclude_ports", "--exclude-port"},
      {"exclude_cidrs", "--exclude-cidr"}, {"fail_mode", "--fail-mode"},
  };
  std::string field = where.substr(0, where.find('['));
  auto it = flags.find(field);
  return it == flags.end() ? where : it->second;
}

Result<std::chrono::milliseconds> parseDuration(std::string_view text) {
  std::string_view digits = text;
  long long scale = 1000;  // plain numbers are seconds
  if (digits.ends_with("ms")) {
    digits.remove_suffix(2);
    scale = 1;
  } else if (digits.ends_with("s")) {
    digits.remove_suffix(1);
  }
  long long value = 0;
  auto [end, ec] = std::from_chars(digits.data(), digits.data() + digits.size(), value);
  if (digits.empty() || ec != std::errc() || end != digits.data() + digits.size() || value <= 0 ||
      value > 3'600'000 / scale) {  // at most an hour
    return fail("--timeout: expected a duration like 500ms, 5s or 5, got '" + std::string(text) + "'");
  }
  return std::chrono::milliseconds(value * scale);
}

Result<uint16_t> parsePort(std::string_view text) {
  unsigned value = 0;
  auto [end, ec] = std::from_chars(text.data(), text.data() + text.size(), value);
  if (text.empty() || ec != std::errc() || end != text.data() + text.size() || value == 0 || value > 65535) {
    return fail("--exclude-port: expected a port 1..65535, got '" + std::string(text) + "'");
  }
  return static_cast<uint16_t>(value);
}

const std::map<std::string, std::vector<std::string>, std::less<>>& subcommandOptions() {
  static const std::map<std::string, std::vector<std::string>, std::less<>> options = {
      {"enroll",
       {"--netns", "--namespace", "--name", "--container-id", "--ifname", "--ip", "--tenant", "--fail-mode",
        "--pod-uid", "--exclude-port", "--exclude-cidr"}},
      {"unenroll", {"--container-id", "--ifname", "--netns"}},
      {"pods", {"--json"}},
      {"capture", {}},
  };
  return options;
}

bool takesValue(std::string_view flag) { return flag != "--json" && flag != "--version" && flag != "--help"; }

std::string joined(const std::vector<std::string>& items, std::string_view sep) {
  std::string out;
  for (const auto& item : items) out += (out.empty() ? "" : std::string(sep)) + item;
  return out;
}

// The CAPTURE column: culvertd reports each pod's capture state in the list response's
// "capture" object (keyed "<container_id>/<ifname>"); "-" from a culvertd that does not.
std::string captureState(const nlohmann::json& extra, const cni::EnrollmentRecord& p) {
  auto capture = extra.find("capture");
  if (capture == extra.end() || !capture->is_object()) return "-";
  auto pods = capture->find("pods");
  if (pods == capture->end() || !pods->is_object()) return "-";
  auto it = pods->find(p.container_id + "/" + p.ifname);
  if (it == pods->end() || !it->is_string()) return "-";
  return it->get<std::string>();
}

// The FAIL_MODE column: the mode in effect as culvertd reports it (the record's, else the
// tenant's, else the bootstrap's); the record's own from a culvertd that does not.
std::string failMode(const nlohmann::json& extra, const cni::EnrollmentRecord& p) {
  auto capture = extra.find("capture");
  if (capture != extra.end() && capture->is_object()) {
    auto modes = capture->find("fail_modes");
    if (modes != capture->end() && modes->is_object()) {
      auto it = modes->find(p.container_id + "/" + p.ifname);
      if (it != modes->end() && it->is_string()) return it->get<std::string>();
    }
  }
  return p.fail_mode.value_or("-");
}

void printPods(const std::vector<cni::EnrollmentRecord>& pods, const nlohmann::json& extra, std::ostream& out) {
  std::vector<std::vector<std::string>> rows = {
      {"NAMESPACE", "NAME", "CONTAINER_ID", "IFNAME", "IPS", "TENANT", "FAIL_MODE", "CAPTURE", "NETNS"}};
  for (const auto& p : pods) {
    rows.push_back({p.namespace_, p.name, p.container_id, p.ifname, p.ips.empty() ? "-" : joined(p.ips, ","),
                    p.tenant.value_or("-"), failMode(extra, p), captureState(extra, p), p.netns_path});
  }
  std::vector<size_t> width(rows[0].size(), 0);
  for (const auto& row : rows) {
    for (size_t i = 0; i < row.size(); ++i) width[i] = std::max(width[i], row[i].size());
  }
  for (const auto& row : rows) {
    for (size_t i = 0; i < row.size(); ++i) {
      if (i + 1 == row.size()) {
        out << row[i];
      } else {
        out << std::left << std::setw(static_cast<int>(width[i] + 2)) << row[i];
      }
    }
    out << "\n";
  }
}

}  // namespace

std::string ctlUsage() {
  return R"(usage: culvertctl [--config FILE] [--socket PATH] [--timeout DURATION] COMMAND [OPTIONS]

commands:
  enroll --netns PATH --namespace NS --name NAME [--container-id ID] [--ifname IF]
         [--ip IP ...] [--tenant T] [--fail-mode open|closed] [--pod-uid UID]
         [--exclude-port PORT ...] [--exclude-cidr CIDR ...]
      capture a pod's traffic (prints the container id, generated when not given)
  unenroll --container-id ID [--ifname IF] | --netns PATH
      stop capturing a pod
  pods [--json]
      list enrolled pods and their capture state
  capture off|on|status
      global capture bypass (off = every connect untouched), written straight into
      the pinned BPF map under the bootstrap's bpf.pin_root: works while culvertd is down

global options:
  --config FILE      bootstrap to read enrollment.socket from (default: the embedded one)
  --socket PATH      culvertd's enrollment socket (overrides the bootstrap)
  --timeout DURATION how long to wait for culvertd (500ms, 5s; default 10s)
  --version, --help
)";
}

std::string generateContainerId() {
  std::random_device rd;
  std::ostringstream id;
  id << "ctl-" << std::hex << std::setfill('0');
  for (int i = 0; i < 4; ++i) id << std::setw(8) << rd();
  return id.str();
}

Result<CtlCommand> parseCtlArgs(std::span<const std::string> args) {
  CtlCommand cmd;
  std::string subcommand;
  std::map<std::string, std::vector<std::string>, std::less<>> values;  // flag -> every value given

  for (size_t i = 0; i < args.size(); ++i) {
    std::string_view arg = args[i];
    if (arg == "--help" || arg == "-h") return CtlCommand{};
    if (arg == "--version") {
      cmd.kind = CtlCommand::Kind::Version;
      return cmd;
    }
    if (!arg.starts_with("-")) {
      if (subcommand == "capture" && cmd.capture_action.empty()) {
        if (arg != "on" && arg != "off" && arg != "status") {
          return fail("capture takes on, off or status, got '" + std::string(arg) + "'");
        }
        cmd.capture_action = arg;
        continue;
      }
      if (!subcommand.empty()) return fail("unexpected argument '" + std::string(arg) + "'");
      if (!subcommandOptions().contains(arg)) {
        return fail("unknown command '" + std::string(arg) + "' (expected enroll, unenroll, pods or capture)");
      }
      subcommand = arg;
      continue;
    }
    std::string flag(arg.substr(0, arg.find('=')));
    std::optional<std::string> value;
    if (auto eq = arg.find('='); eq != std::string_view::npos) value = std::string(arg.substr(eq + 1));
    if (takesValue(flag) && !value) {
      if (i + 1 >= args.size()) return fail(flag + " needs a value");
      value = args[++i];
    }
    if (!takesValue(flag) && value) return fail(flag + " takes no value");
    values[flag].push_back(value.value_or(""));
  }

  // Global options.
  auto single = [&](std::string_view flag) -> Result<std::optional<std::string>> {
    auto it = values.find(flag);
    if (it == values.end()) return std::optional<std::string>();
    if (it->second.size() > 1) return fail(std::string(flag) + " given more than once");
    return std::optional<std::string>(it->second.front());
  };
  for (std::string_view flag : {"--config", "--socket", "--timeout"}) {
    auto v = single(flag);
    if (!v) return std::unexpected(v.error());
    if (!*v) continue;
    if ((*v)->empty()) return fail(std::string(flag) + " must not be empty");
    if (flag == "--config") cmd.config = **v;
    if (flag == "--socket") cmd.socket = **v;
    if (flag == "--timeout") {
      auto d = parseDuration(**v);
      if (!d) return std::unexpected(d.error());
      cmd.timeout = *d;
    }
    values.erase(values.find(flag));
  }

  if (subcommand.empty()) return fail("no command given (expected enroll, unenroll, pods or capture)");
  const auto& allowed = subcommandOptions().at(subcommand);
  for (const auto& [flag, list] : values) {
    if (std::find(allowed.begin(), allowed.end(), flag) == allowed.end()) {
      return fail("unknown option " + flag + " for '" + subcommand + "'");
    }
    bool repeatable = flag == "--ip" || flag == "--exclude-port" || flag == "--exclude-cidr";
    if (!repeatable && list.size() > 1) return fail(flag + " given more than once");
  }
  auto get = [&](std::string_view flag) -> std::optional<std::string> {
    auto it = values.find(flag);
    if (it == values.end()) return std::nullopt;
    return it->second.front();
  };
  auto all = [&](std::string_view flag) -> std::vector<std::string> {
    auto it = values.find(flag);
    return it == values.end() ? std::vector<std::string>() : it->second;
  };

  if (subcommand == "enroll") {
    cmd.kind = CtlCommand::Kind::Enroll;
    for (std::string_view required : {"--netns", "--namespace", "--name"}) {
      if (!get(required)) return fail("enroll needs " + std::string(required));
    }
    cni::EnrollmentRecord r;
    r.netns_path = *get("--netns");
    r.namespace_ = *get("--namespace");
    r.name = *get("--name");
    if (auto id = get("--container-id")) {
      r.container_id = *id;
    } else {
      r.container_id = generateContainerId();
      cmd.generated_container_id = true;
    }
    if (auto ifname = get("--ifname")) r.ifname = *ifname;
    r.pod_uid = get("--pod-uid").value_or("");
    r.ips = all("--ip");
    r.tenant = get("--tenant");
    r.fail_mode = get("--fail-mode");
    for (const auto& p : all("--exclude-port")) {
      auto port = parsePort(p);
      if (!port) return std::unexpected(port.error());
      r.exclude_ports.push_back(*port);
    }
    r.exclude_cidrs = all("--exclude-cidr");
    if (auto ok = cni::validateRecord(r); !ok) return fail(flagFor(ok.error().where) + ": " + ok.error().message);
    cmd.request = cni::EnrollmentRequest::enroll(std::move(r));
  } else if (subcommand == "unenroll") {
    cmd.kind = CtlCommand::Kind::Unenroll;
    auto id = get("--container-id");
    auto netns = get("--netns");
    if (id && netns) return fail("unenroll takes --container-id or --netns, not both");
    if (!id && !netns) return fail("unenroll needs --container-id ID [--ifname IF] or --netns PATH");
    if (netns && get("--ifname")) return fail("--ifname goes with --container-id, not --netns");
    cmd.request = netns ? cni::EnrollmentRequest::unenrollByNetns(*netns)
                        : cni::EnrollmentRequest::unenrollByKey(*id, get("--ifname").value_or("eth0"));
    // The daemon's own checks, run here so mistakes are caught before connecting.
    if (auto ok = cni::requestFromJson(cni::toJson(cmd.request)); !ok) {
      return fail(flagFor(ok.error().where) + ": " + ok.error().message);
    }
  } else if (subcommand == "capture") {
    cmd.kind = CtlCommand::Kind::Capture;
    if (cmd.capture_action.empty()) return fail("capture needs on, off or status");
  } else {
    cmd.kind = CtlCommand::Kind::Pods;
    cmd.json = values.contains("--json");
    cmd.request = cni::EnrollmentRequest::list();
  }
  return cmd;
}

int runCtl(std::span<const std::string> args, std::ostream& out, std::ostream& err) {
  auto cmd = parseCtlArgs(args);
  if (!cmd) {
    err << "culvertctl: " << cmd.error().describe() << " (see culvertctl --help)\n";
    return 1;
  }
  if (cmd->kind == CtlCommand::Kind::Help) {
    out << ctlUsage();
    return 0;
  }
  if (cmd->kind == CtlCommand::Kind::Version) {
    out << "culvertctl " << CULVERT_VERSION << "\n";
    return 0;
  }

  if (cmd->kind == CtlCommand::Kind::Capture) {
    auto bootstrap = cmd->config ? loadBootstrapFile(*cmd->config) : Result<Bootstrap>(embeddedDefaultBootstrap());
    if (!bootstrap) {
      err << "culvertctl: " << bootstrap.error().describe() << "\n";
      return 1;
    }
    const auto& root = bootstrap->bpf.pin_root;
    if (cmd->capture_action != "status") {
      bool bypass = cmd->capture_action == "off";
      if (auto ok = ebpf::CaptureProgram::setPinnedBypass(root, bypass); !ok) {
        err << "culvertctl: " << ok.error().describe() << "\n";
        return 1;
      }
    }
    auto bypass = ebpf::CaptureProgram::pinnedBypass(root);
    if (!bypass) {
      err << "culvertctl: " << bypass.error().describe() << "\n";
      return 1;
    }
    out << "capture " << (*bypass ? "off (global bypass: every connect untouched)" : "on") << "\n";
    return 0;
  }

  std::filesystem::path socket;
  if (cmd->socket) {
    socket = *cmd->socket;
  } else if (cmd->config) {
    auto bootstrap = loadBootstrapFile(*cmd->config);
    if (!bootstrap) {
      err << "culvertctl: " << bootstrap.error().describe() << "\n";
      return 1;
    }
    socket = bootstrap->enrollment.socket;
  } else {
    socket = embeddedDefaultBootstrap().enrollment.socket;
  }

  auto response = cni::callEnrollment(socket, cmd->request, cmd->timeout);
  if (!response) {
    err << "culvertctl: " << response.error().describe() << "\n";
    return 1;
  }
  if (!response->ok) {
    err << "culvertctl: culvertd refused the request: " << response->error << "\n";
    return 1;
  }

  const auto& req = cmd->request;
  switch (cmd->kind) {
    case CtlCommand::Kind::Enroll:
      out << "enrolled " << req.record.namespace_ << "/" << req.record.name << " container_id=" << req.record.container_id
          << " ifname=" << req.record.ifname << "\n";
      break;
    case CtlCommand::Kind::Unenroll:
      if (!req.netns_path.empty()) {
        out << "unenrolled netns=" << req.netns_path << "\n";
      } else {
        out << "unenrolled container_id=" << req.container_id << " ifname=" << req.ifname << "\n";
      }
      break;
    case CtlCommand::Kind::Pods: {
      std::vector<cni::EnrollmentRecord> pods = response->pods.value_or(std::vector<cni::EnrollmentRecord>{});
      if (cmd->json) {
        nlohmann::json list = nlohmann::json::array();
        for (const auto& p : pods) list.push_back(cni::toJson(p));
        out << list.dump(2, ' ', false, nlohmann::json::error_handler_t::replace) << "\n";
      } else {
        printPods(pods, response->extra, out);
      }
      break;
    }
    default: break;
  }
  return 0;
}

}  // namespace culvert::agent
