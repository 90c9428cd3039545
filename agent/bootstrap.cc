#include "agent/bootstrap.h"

#include <sys/un.h>
#include <unistd.h>
#include <yaml-cpp/yaml.h>

#include <algorithm>
#include <array>
#include <cerrno>
#include <cstring>
#include <charconv>
#include <fstream>
#include <functional>
#include <limits>
#include <set>
#include <sstream>
#include <thread>
#include <vector>

namespace culvert::agent {

using common::fail;
using common::Result;

common::SocketAddress defaultAdminAddress() {
  auto address = common::SocketAddress::parse("127.0.0.1", 15000);
  return address ? *address : common::SocketAddress();
}

std::string_view toString(FailMode mode) { return mode == FailMode::Open ? "open" : "closed"; }

std::string_view toString(common::LogFormat format) {
  return format == common::LogFormat::Json ? "json" : "text";
}

Result<common::CidrRange> parseCidrText(std::string_view text) {
  auto slash = text.find('/');
  std::string_view ip = text.substr(0, slash);
  auto addr = common::SocketAddress::parse(ip, 0);
  if (!addr) return fail("'" + std::string(text) + "' is not an address or CIDR");
  uint32_t len = addr->isV4() ? 32 : 128;
  if (slash != std::string_view::npos) {
    std::string_view rest = text.substr(slash + 1);
    auto [end, ec] = std::from_chars(rest.data(), rest.data() + rest.size(), len);
    if (rest.empty() || ec != std::errc() || end != rest.data() + rest.size()) {
      return fail("'" + std::string(text) + "' has a bad prefix length");
    }
  }
  auto cidr = common::CidrRange::parse(ip, len);
  if (!cidr) return fail("'" + std::string(text) + "': " + cidr.error().message);
  return *cidr;
}

namespace {

std::string hostName() {
  std::array<char, 256> buf{};
  if (gethostname(buf.data(), buf.size() - 1) != 0 || buf[0] == '\0') return "localhost";
  return buf.data();
}

std::string_view kindOf(const YAML::Node& n) {
  switch (n.Type()) {
    case YAML::NodeType::Null: return "null";
    case YAML::NodeType::Scalar: return "a scalar";
    case YAML::NodeType::Sequence: return "a list";
    case YAML::NodeType::Map: return "a mapping";
    default: return "nothing";
  }
}

// Null reads as "" so `admin.socket:` means "none", like the documented "".
Result<std::string> readString(const YAML::Node& n, const std::string& where) {
  if (n.IsNull()) return std::string();
  if (!n.IsScalar()) return fail("expected a string, got " + std::string(kindOf(n)), where);
  return n.Scalar();
}

Result<uint64_t> readUnsigned(const YAML::Node& n, const std::string& where, uint64_t min, uint64_t max) {
  std::string range = std::to_string(min) + ".." + std::to_string(max);
  if (!n.IsScalar()) return fail("expected an integer " + range + ", got " + std::string(kindOf(n)), where);
  const std::string& s = n.Scalar();
  uint64_t value = 0;
  auto [end, ec] = std::from_chars(s.data(), s.data() + s.size(), value);
  if (s.empty() || end != s.data() + s.size() || (ec != std::errc() && ec != std::errc::result_out_of_range)) {
    return fail("expected an integer " + range + ", got '" + s + "'", where);
  }
  if (ec == std::errc::result_out_of_range || value < min || value > max) {
    return fail("must be " + range + ", got " + s, where);
  }
  return value;
}

Result<std::string> readNonEmpty(const YAML::Node& n, const std::string& where) {
  auto s = readString(n, where);
  if (s && s->empty()) return fail("must not be empty", where);
  return s;
}

// A unix socket path must fit sockaddr_un::sun_path with its terminating NUL.
Result<void> checkSocketPath(const std::string& path, const std::string& where) {
  if (path.size() >= sizeof(sockaddr_un{}.sun_path)) {
    return fail("unix socket path is " + std::to_string(path.size()) + " bytes, the limit is " +
                    std::to_string(sizeof(sockaddr_un{}.sun_path) - 1),
                where);
  }
  return {};
}

using Setter = std::function<Result<void>(const YAML::Node&, Bootstrap&, const std::string& where)>;

template <typename Assign>
Setter nonEmptyString(Assign assign) {
  return [assign](const YAML::Node& n, Bootstrap& b, const std::string& where) -> Result<void> {
    auto s = readNonEmpty(n, where);
    if (!s) return std::unexpected(s.error());
    assign(b, std::move(*s));
    return {};
  };
}

// An unsigned integer field, in [min, max] (by default the type's full range).
template <typename T, typename Field>
Setter unsignedField(Field field, uint64_t min = 0, uint64_t max = std::numeric_limits<T>::max()) {
  return [field, min, max](const YAML::Node& n, Bootstrap& b, const std::string& where) -> Result<void> {
    auto v = readUnsigned(n, where, min, max);
    if (!v) return std::unexpected(v.error());
    field(b) = static_cast<T>(*v);
    return {};
  };
}

// Every key the bootstrap accepts, by dotted path. Sections are implied by prefixes.
const std::vector<std::pair<std::string, Setter>>& fieldTable() {
  static const std::vector<std::pair<std::string, Setter>> table = {
      {"node.id", nonEmptyString([](Bootstrap& b, std::string v) { b.node.id = std::move(v); })},
      {"node.cluster", nonEmptyString([](Bootstrap& b, std::string v) { b.node.cluster = std::move(v); })},
      {"node.locality.region", nonEmptyString([](Bootstrap& b, std::string v) { b.node.locality.region = std::move(v); })},
      {"node.locality.zone", nonEmptyString([](Bootstrap& b, std::string v) { b.node.locality.zone = std::move(v); })},
      {"node.locality.sub_zone",
       nonEmptyString([](Bootstrap& b, std::string v) { b.node.locality.sub_zone = std::move(v); })},
      {"node.metadata",
       [](const YAML::Node& n, Bootstrap& b, const std::string& where) -> Result<void> {
         if (n.IsNull()) return {};
         if (!n.IsMap()) return fail("expected a mapping of strings, got " + std::string(kindOf(n)), where);
         for (auto it = n.begin(); it != n.end(); ++it) {
           if (!it->first.IsScalar()) return fail("keys must be plain strings", where);
           std::string key = it->first.Scalar();
           auto v = readString(it->second, where + "." + key);
           if (!v) return std::unexpected(v.error());
           if (!b.node.metadata.emplace(key, *v).second) return fail("duplicate key", where + "." + key);
         }
         return {};
       }},
      {"admin.address",
       [](const YAML::Node& n, Bootstrap& b, const std::string& where) -> Result<void> {
         auto s = readString(n, where);
         if (!s) return std::unexpected(s.error());
         if (s->empty()) {
           b.admin.address.reset();
           return {};
         }
         auto addr = common::SocketAddress::parseHostPort(*s);
         if (!addr) return fail(addr.error().message, where);
         b.admin.address = *addr;
         return {};
       }},
      {"admin.socket",
       [](const YAML::Node& n, Bootstrap& b, const std::string& where) -> Result<void> {
         auto s = readString(n, where);
         if (!s) return std::unexpected(s.error());
         if (auto ok = checkSocketPath(*s, where); !ok) return ok;
         b.admin.socket = *s;
         return {};
       }},
      {"workers", unsignedField<uint32_t>([](Bootstrap& b) -> auto& { return b.workers; }, 0, 1024)},
      {"resources.path", nonEmptyString([](Bootstrap& b, std::string v) { b.resources.path = std::move(v); })},
      {"capture.port", unsignedField<uint16_t>([](Bootstrap& b) -> auto& { return b.capture.port; }, 1, 65535)},
      {"capture.cgroup",
       [](const YAML::Node& n, Bootstrap& b, const std::string& where) -> Result<void> {
         auto s = readString(n, where);
         if (!s) return std::unexpected(s.error());
         b.capture.cgroup = *s;
         return {};
       }},
      {"capture.fail_mode",
       [](const YAML::Node& n, Bootstrap& b, const std::string& where) -> Result<void> {
         auto s = readString(n, where);
         if (!s) return std::unexpected(s.error());
         if (*s == "open") {
           b.capture.fail_mode = FailMode::Open;
         } else if (*s == "closed") {
           b.capture.fail_mode = FailMode::Closed;
         } else {
           return fail("must be open or closed, got '" + *s + "'", where);
         }
         return {};
       }},
      {"capture.exclude_ports",
       [](const YAML::Node& n, Bootstrap& b, const std::string& where) -> Result<void> {
         if (n.IsNull()) return {};
         if (!n.IsSequence()) return fail("expected a list of ports, got " + std::string(kindOf(n)), where);
         b.capture.exclude_ports.clear();
         for (size_t i = 0; i < n.size(); ++i) {
           auto v = readUnsigned(n[i], where + "[" + std::to_string(i) + "]", 1, 65535);
           if (!v) return std::unexpected(v.error());
           b.capture.exclude_ports.push_back(static_cast<uint16_t>(*v));
         }
         return {};
       }},
      {"capture.exclude_cidrs",
       [](const YAML::Node& n, Bootstrap& b, const std::string& where) -> Result<void> {
         if (n.IsNull()) return {};
         if (!n.IsSequence()) return fail("expected a list of CIDRs, got " + std::string(kindOf(n)), where);
         b.capture.exclude_cidrs.clear();
         for (size_t i = 0; i < n.size(); ++i) {
           std::string at = where + "[" + std::to_string(i) + "]";
           auto s = readNonEmpty(n[i], at);
           if (!s) return std::unexpected(s.error());
           auto cidr = parseCidrText(*s);
           if (!cidr) return fail(cidr.error().message, at);
           b.capture.exclude_cidrs.push_back(*cidr);
         }
         return {};
       }},
      {"bpf.pin_root", nonEmptyString([](Bootstrap& b, std::string v) { b.bpf.pin_root = std::move(v); })},
      {"enrollment.socket",
       [](const YAML::Node& n, Bootstrap& b, const std::string& where) -> Result<void> {
         auto s = readNonEmpty(n, where);
         if (!s) return std::unexpected(s.error());
         if (auto ok = checkSocketPath(*s, where); !ok) return ok;
         b.enrollment.socket = *s;
         return {};
       }},
      {"enrollment.on_unreachable",
       [](const YAML::Node& n, Bootstrap& b, const std::string& where) -> Result<void> {
         auto s = readString(n, where);
         if (!s) return std::unexpected(s.error());
         if (*s != "fail" && *s != "allow") return fail("must be fail or allow, got '" + *s + "'", where);
         b.enrollment.allow_uncaptured = *s == "allow";
         return {};
       }},
      {"state_dir", nonEmptyString([](Bootstrap& b, std::string v) { b.state_dir = std::move(v); })},
      {"drain_timeout",
       unsignedField<uint32_t>([](Bootstrap& b) -> auto& { return b.drain_timeout_seconds; }, 0, 3600)},
      {"main_thread_nice", unsignedField<uint32_t>([](Bootstrap& b) -> auto& { return b.main_thread_nice; }, 0, 19)},
      {"xds.address",
       [](const YAML::Node& n, Bootstrap& b, const std::string& where) -> Result<void> {
         auto s = readString(n, where);
         if (!s) return std::unexpected(s.error());
         if (s->starts_with("unix:")) {
           if (s->size() == 5) return fail("unix: needs a path", where);
           if (auto ok = checkSocketPath(s->substr(5), where); !ok) return ok;
         } else if (!s->empty()) {
           auto addr = common::HostPort::parse(*s);
           if (!addr) return fail(addr.error().message + " (expected host:port, or unix:PATH)", where);
         }
         b.xds.address = *s;
         return {};
       }},
      {"xds.max_stale",
       unsignedField<uint32_t>([](Bootstrap& b) -> auto& { return b.xds.max_stale_seconds; }, 0, 365u * 86400u)},
      {"xds.delta",
       [](const YAML::Node& n, Bootstrap& b, const std::string& where) -> Result<void> {
         auto s = readString(n, where);
         if (!s) return std::unexpected(s.error());
         if (*s != "true" && *s != "false") return fail("must be true or false, got '" + *s + "'", where);
         b.xds.delta = *s == "true";
         return {};
       }},
      {"xds.tls.ca_file", nonEmptyString([](Bootstrap& b, std::string v) { b.xds.tls.ca_file = std::move(v); })},
      {"xds.tls.cert_file", nonEmptyString([](Bootstrap& b, std::string v) { b.xds.tls.cert_file = std::move(v); })},
      {"xds.tls.key_file", nonEmptyString([](Bootstrap& b, std::string v) { b.xds.tls.key_file = std::move(v); })},
      {"xds.tls.server_name",
       nonEmptyString([](Bootstrap& b, std::string v) { b.xds.tls.server_name = std::move(v); })},
      {"xds.tls.match_subject_alt_names",
       [](const YAML::Node& n, Bootstrap& b, const std::string& where) -> Result<void> {
         if (n.IsNull()) return {};
         if (!n.IsSequence()) return fail("expected a list like [\"URI:spiffe://...\"], got " + std::string(kindOf(n)), where);
         b.xds.tls.match_subject_alt_names.clear();
         for (size_t i = 0; i < n.size(); ++i) {
           std::string at = where + "[" + std::to_string(i) + "]";
           auto s = readNonEmpty(n[i], at);
           if (!s) return std::unexpected(s.error());
           if (auto m = tls::parseSanMatcher(*s); !m) return fail(m.error().message, at);
           b.xds.tls.match_subject_alt_names.push_back(*s);
         }
         return {};
       }},
      {"tenants.defaults.max_downstream_connections", unsignedField<uint32_t>([](Bootstrap& b) -> auto& {
         return b.tenants.defaults.max_downstream_connections;
       })},
      {"tenants.defaults.max_requests_in_flight", unsignedField<uint32_t>([](Bootstrap& b) -> auto& {
         return b.tenants.defaults.max_requests_in_flight;
       })},
      {"tenants.defaults.max_buffered_bytes", unsignedField<uint64_t>([](Bootstrap& b) -> auto& {
         return b.tenants.defaults.max_buffered_bytes;
       })},
      {"tenants.defaults.max_requests_per_second", unsignedField<uint32_t>([](Bootstrap& b) -> auto& {
         return b.tenants.defaults.max_requests_per_second;
       })},
      {"tenants.defaults.burst", unsignedField<uint32_t>([](Bootstrap& b) -> auto& { return b.tenants.defaults.burst; })},
      {"tenants.buffered_bytes_watermark", unsignedField<uint64_t>([](Bootstrap& b) -> auto& {
         return b.tenants.buffered_bytes_watermark;
       })},
      {"log.level",
       [](const YAML::Node& n, Bootstrap& b, const std::string& where) -> Result<void> {
         static const std::set<std::string, std::less<>> levels = {"trace", "debug", "info", "warn",
                                                                   "error", "critical", "off"};
         auto s = readString(n, where);
         if (!s) return std::unexpected(s.error());
         if (!levels.contains(*s)) {
           return fail("must be one of trace, debug, info, warn, error, critical, off; got '" + *s + "'", where);
         }
         b.log.level = *s;
         return {};
       }},
      {"log.format",
       [](const YAML::Node& n, Bootstrap& b, const std::string& where) -> Result<void> {
         auto s = readString(n, where);
         if (!s) return std::unexpected(s.error());
         if (*s == "text") {
           b.log.format = common::LogFormat::Text;
         } else if (*s == "json") {
           b.log.format = common::LogFormat::Json;
         } else {
           return fail("must be text or json, got '" + *s + "'", where);
         }
         return {};
       }},
  };
  return table;
}

// The keys allowed directly under `prefix` ("" = top level), for unknown-key errors.
std::vector<std::string> keysUnder(const std::string& prefix) {
  std::vector<std::string> keys;
  for (const auto& [path, setter] : fieldTable()) {
    if (!prefix.empty() && !path.starts_with(prefix + ".")) continue;
    std::string rest = prefix.empty() ? path : path.substr(prefix.size() + 1);
    std::string first = rest.substr(0, rest.find('.'));
    if (std::find(keys.begin(), keys.end(), first) == keys.end()) keys.push_back(first);
  }
  return keys;
}

bool isSection(const std::string& path) {
  for (const auto& [key, setter] : fieldTable()) {
    if (key.starts_with(path + ".")) return true;
  }
  return false;
}

const Setter* findSetter(const std::string& path) {
  for (const auto& [key, setter] : fieldTable()) {
    if (key == path) return &setter;
  }
  return nullptr;
}

Result<void> walk(const YAML::Node& map, const std::string& prefix, Bootstrap& b) {
  std::set<std::string> seen;
  for (auto it = map.begin(); it != map.end(); ++it) {
    if (!it->first.IsScalar()) {
      return fail("keys must be plain strings", prefix.empty() ? "(top level)" : prefix);
    }
    const std::string& key = it->first.Scalar();
    std::string path = prefix.empty() ? key : prefix + "." + key;
    if (!seen.insert(key).second) return fail("duplicate key", path);
    if (const Setter* set = findSetter(path)) {
      if (auto ok = (*set)(it->second, b, path); !ok) return ok;
      continue;
    }
    if (isSection(path)) {
      if (it->second.IsNull()) continue;  // "admin:" with nothing under it = defaults
      if (!it->second.IsMap()) return fail("expected a mapping, got " + std::string(kindOf(it->second)), path);
      if (auto ok = walk(it->second, path, b); !ok) return ok;
      continue;
    }
    std::string known;
    for (const auto& k : keysUnder(prefix)) known += (known.empty() ? "" : ", ") + k;
    return fail("unknown key (expected one of: " + known + ")", path);
  }
  return {};
}

// Checks between xds.tls keys (each key alone is checked by its setter).
Result<void> checkXdsTls(const Bootstrap::Xds& xds) {
  const auto& t = xds.tls;
  bool any = !t.cert_file.empty() || !t.key_file.empty() || !t.server_name.empty() ||
             !t.match_subject_alt_names.empty();
  if (any && t.ca_file.empty()) return fail("required when any other xds.tls key is set", "xds.tls.ca_file");
  if (t.cert_file.empty() != t.key_file.empty()) {
    return fail("a client certificate needs its key: set cert_file and key_file together",
                t.cert_file.empty() ? "xds.tls.cert_file" : "xds.tls.key_file");
  }
  if (t.enabled() && xds.address.starts_with("unix:") && t.server_name.empty() &&
      t.match_subject_alt_names.empty()) {
    return fail("a unix: address names no server: set server_name or match_subject_alt_names", "xds.tls");
  }
  return {};
}

}  // namespace

Result<tls::ClientConfig> xdsTlsClientConfig(const Bootstrap::Xds& xds) {
  tls::ClientConfig c;
  c.ca_file = xds.tls.ca_file;
  c.cert_file = xds.tls.cert_file;
  c.key_file = xds.tls.key_file;
  c.server_name = xds.tls.server_name;
  for (const auto& text : xds.tls.match_subject_alt_names) {
    auto m = tls::parseSanMatcher(text);
    if (!m) return fail(m.error().message, "xds.tls.match_subject_alt_names");
    c.san_matchers.push_back(*m);
  }
  if (c.server_name.empty() && !xds.address.starts_with("unix:")) {
    auto hp = common::HostPort::parse(xds.address);
    if (!hp) return fail(hp.error().message, "xds.address");
    if (!hp->is_ip_literal) {
      c.server_name = hp->host;
    } else if (c.san_matchers.empty()) {
      auto ip = tls::parseSanMatcher("IP:" + hp->host);
      if (!ip) return fail(ip.error().message, "xds.address");
      c.san_matchers.push_back(*ip);
    }
  }
  if (c.server_name.empty() && c.san_matchers.empty()) {
    return fail("nothing identifies the control plane: set server_name or match_subject_alt_names", "xds.tls");
  }
  return c;
}

Result<Bootstrap> parseBootstrap(std::string_view yaml) {
  Bootstrap b;
  b.node.id = hostName();
  try {
    std::vector<YAML::Node> docs = YAML::LoadAll(std::string(yaml));
    if (docs.size() > 1) return fail("expected one YAML document, got " + std::to_string(docs.size()));
    if (docs.empty() || docs[0].IsNull()) return b;
    if (!docs[0].IsMap()) return fail("the bootstrap must be a YAML mapping, got " + std::string(kindOf(docs[0])));
    if (auto ok = walk(docs[0], "", b); !ok) return std::unexpected(ok.error());
    if (auto ok = checkXdsTls(b.xds); !ok) return std::unexpected(ok.error());
  } catch (const YAML::Exception& e) {
    // e.mark is 0-based; people count lines from 1.
    if (e.mark.is_null()) return fail("invalid YAML: " + e.msg);
    return fail("invalid YAML at line " + std::to_string(e.mark.line + 1) + ", column " +
                std::to_string(e.mark.column + 1) + ": " + e.msg);
  } catch (const std::exception& e) {
    return fail(std::string("cannot parse bootstrap: ") + e.what());
  }
  return b;
}

Result<Bootstrap> loadBootstrapFile(const std::filesystem::path& path) {
  std::ifstream in(path, std::ios::binary);
  if (!in) return fail("cannot open bootstrap file: " + std::string(std::strerror(errno)), path.string());
  std::stringstream text;
  text << in.rdbuf();
  if (in.bad()) return fail("cannot read bootstrap file", path.string());
  auto b = parseBootstrap(text.str());
  if (!b) {
    common::Error e = b.error();
    e.where = e.where.empty() ? path.string() : path.string() + ": " + e.where;
    return std::unexpected(std::move(e));
  }
  return b;
}

Bootstrap embeddedDefaultBootstrap() {
  // The embedded text is a compile-time constant covered by a unit test, so this cannot
  // fail in a released binary; fall back to the struct defaults rather than abort.
  auto b = parseBootstrap(kEmbeddedBootstrapYaml);
  if (b) return *b;
  Bootstrap fallback;
  fallback.node.id = hostName();
  return fallback;
}

uint32_t effectiveWorkers(const Bootstrap& bootstrap) {
  if (bootstrap.workers != 0) return bootstrap.workers;
  unsigned cpus = std::thread::hardware_concurrency();
  return cpus == 0 ? 1 : cpus;
}

std::string formatBootstrap(const Bootstrap& b) {
  YAML::Emitter out;
  out << YAML::BeginMap;
  out << YAML::Key << "node" << YAML::Value << YAML::BeginMap;
  out << YAML::Key << "id" << YAML::Value << YAML::DoubleQuoted << b.node.id;
  out << YAML::Key << "cluster" << YAML::Value << YAML::DoubleQuoted << b.node.cluster;
  if (!b.node.locality.region.empty() || !b.node.locality.zone.empty() || !b.node.locality.sub_zone.empty()) {
    out << YAML::Key << "locality" << YAML::Value << YAML::BeginMap;
    if (!b.node.locality.region.empty()) out << YAML::Key << "region" << YAML::Value << YAML::DoubleQuoted << b.node.locality.region;
    if (!b.node.locality.zone.empty()) out << YAML::Key << "zone" << YAML::Value << YAML::DoubleQuoted << b.node.locality.zone;
    if (!b.node.locality.sub_zone.empty()) {
      out << YAML::Key << "sub_zone" << YAML::Value << YAML::DoubleQuoted << b.node.locality.sub_zone;
    }
    out << YAML::EndMap;
  }
  if (!b.node.metadata.empty()) {
    out << YAML::Key << "metadata" << YAML::Value << YAML::BeginMap;
    for (const auto& [k, v] : b.node.metadata) out << YAML::Key << k << YAML::Value << YAML::DoubleQuoted << v;
    out << YAML::EndMap;
  }
  out << YAML::EndMap;
  out << YAML::Key << "admin" << YAML::Value << YAML::BeginMap;
  out << YAML::Key << "address" << YAML::Value << YAML::DoubleQuoted
      << (b.admin.address ? b.admin.address->toString() : std::string());
  out << YAML::Key << "socket" << YAML::Value << YAML::DoubleQuoted << b.admin.socket.string();
  out << YAML::EndMap;
  out << YAML::Key << "workers" << YAML::Value << b.workers;
  out << YAML::Key << "resources" << YAML::Value << YAML::BeginMap;
  out << YAML::Key << "path" << YAML::Value << YAML::DoubleQuoted << b.resources.path.string();
  out << YAML::EndMap;
  out << YAML::Key << "capture" << YAML::Value << YAML::BeginMap;
  out << YAML::Key << "port" << YAML::Value << b.capture.port;
  out << YAML::Key << "cgroup" << YAML::Value << YAML::DoubleQuoted << b.capture.cgroup.string();
  out << YAML::Key << "fail_mode" << YAML::Value << std::string(toString(b.capture.fail_mode));
  out << YAML::Key << "exclude_ports" << YAML::Value << YAML::Flow << YAML::BeginSeq;
  for (uint16_t port : b.capture.exclude_ports) out << port;
  out << YAML::EndSeq;
  out << YAML::Key << "exclude_cidrs" << YAML::Value << YAML::Flow << YAML::BeginSeq;
  for (const auto& c : b.capture.exclude_cidrs) out << c.prefix.ip() + "/" + std::to_string(c.length);
  out << YAML::EndSeq;
  out << YAML::EndMap;
  out << YAML::Key << "bpf" << YAML::Value << YAML::BeginMap;
  out << YAML::Key << "pin_root" << YAML::Value << YAML::DoubleQuoted << b.bpf.pin_root.string();
  out << YAML::EndMap;
  out << YAML::Key << "enrollment" << YAML::Value << YAML::BeginMap;
  out << YAML::Key << "socket" << YAML::Value << YAML::DoubleQuoted << b.enrollment.socket.string();
  out << YAML::Key << "on_unreachable" << YAML::Value << (b.enrollment.allow_uncaptured ? "allow" : "fail");
  out << YAML::EndMap;
  out << YAML::Key << "state_dir" << YAML::Value << YAML::DoubleQuoted << b.state_dir.string();
  out << YAML::Key << "drain_timeout" << YAML::Value << b.drain_timeout_seconds;
  out << YAML::Key << "main_thread_nice" << YAML::Value << b.main_thread_nice;
  out << YAML::Key << "xds" << YAML::Value << YAML::BeginMap;
  out << YAML::Key << "address" << YAML::Value << YAML::DoubleQuoted << b.xds.address;
  out << YAML::Key << "max_stale" << YAML::Value << b.xds.max_stale_seconds;
  out << YAML::Key << "delta" << YAML::Value << (b.xds.delta ? "true" : "false");
  if (b.xds.tls.enabled()) {
    const auto& t = b.xds.tls;
    out << YAML::Key << "tls" << YAML::Value << YAML::BeginMap;
    out << YAML::Key << "ca_file" << YAML::Value << YAML::DoubleQuoted << t.ca_file;
    if (!t.cert_file.empty()) {
      out << YAML::Key << "cert_file" << YAML::Value << YAML::DoubleQuoted << t.cert_file;
      out << YAML::Key << "key_file" << YAML::Value << YAML::DoubleQuoted << t.key_file;
    }
    if (!t.server_name.empty()) out << YAML::Key << "server_name" << YAML::Value << YAML::DoubleQuoted << t.server_name;
    if (!t.match_subject_alt_names.empty()) {
      out << YAML::Key << "match_subject_alt_names" << YAML::Value << YAML::Flow << YAML::BeginSeq;
      for (const auto& m : t.match_subject_alt_names) out << YAML::DoubleQuoted << m;
      out << YAML::EndSeq;
    }
    out << YAML::EndMap;
  }
  out << YAML::EndMap;
  out << YAML::Key << "tenants" << YAML::Value << YAML::BeginMap;
  out << YAML::Key << "defaults" << YAML::Value << YAML::BeginMap;
  out << YAML::Key << "max_downstream_connections" << YAML::Value << b.tenants.defaults.max_downstream_connections;
  out << YAML::Key << "max_requests_in_flight" << YAML::Value << b.tenants.defaults.max_requests_in_flight;
  out << YAML::Key << "max_buffered_bytes" << YAML::Value << b.tenants.defaults.max_buffered_bytes;
  out << YAML::Key << "max_requests_per_second" << YAML::Value << b.tenants.defaults.max_requests_per_second;
  out << YAML::Key << "burst" << YAML::Value << b.tenants.defaults.burst;
  out << YAML::EndMap;
  out << YAML::Key << "buffered_bytes_watermark" << YAML::Value << b.tenants.buffered_bytes_watermark;
  out << YAML::EndMap;
  out << YAML::Key << "log" << YAML::Value << YAML::BeginMap;
  out << YAML::Key << "level" << YAML::Value << b.log.level;
  out << YAML::Key << "format" << YAML::Value << std::string(toString(b.log.format));
  out << YAML::EndMap;
  out << YAML::EndMap;
  return std::string(out.c_str()) + "\n";
}

}  // namespace culvert::agent
