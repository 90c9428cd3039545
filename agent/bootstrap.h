#pragma once

#include <cstdint>
#include <filesystem>
#include <map>
#include <optional>
#include <string>
#include <string_view>
#include <vector>

#include "proxy/common/error.h"
#include "proxy/common/logging.h"
#include "proxy/common/socket_address.h"
#include "proxy/tls/client_context.h"
#include "proxy/config/tenant.h"

namespace culvert::agent {

enum class FailMode { Open, Closed };

std::string_view toString(FailMode mode);
std::string_view toString(common::LogFormat format);

// 127.0.0.1:15000, the admin listener's default.
common::SocketAddress defaultAdminAddress();

// culvertd's startup configuration (the "bootstrap"): what the process needs before any
// xDS or resource file is read. Every field has a default, so an empty document is valid.
struct Bootstrap {
  struct Node {
    std::string id;  // parseBootstrap() defaults it to the host name
    std::string cluster = "culvert";
    // Sent to the control plane as Node.locality and Node.metadata (string values).
    struct Locality {
      std::string region, zone, sub_zone;
    } locality;
    std::map<std::string, std::string> metadata;
  } node;

  struct Admin {
    // Unset when the YAML says "" (TCP admin listener disabled).
    std::optional<common::SocketAddress> address = defaultAdminAddress();
    std::filesystem::path socket;  // empty = no unix admin socket
  } admin;

  uint32_t workers = 0;  // 0 = one per CPU, resolved by effectiveWorkers()

  struct Resources {
    std::filesystem::path path = "/etc/culvert/resources";
  } resources;

  struct Capture {
    uint16_t port = 15001;
    // Empty = attach at the node's root cgroup v2, detected at run time (kept empty here
    // so the detection is visible as a decision, not baked into the config).
    std::filesystem::path cgroup;
    FailMode fail_mode = FailMode::Open;
    // Never captured, for every pod: destination ports and prefixes (added to each
    // pod's own exclude_ports / exclude_cidrs from its enrollment record).
    std::vector<uint16_t> exclude_ports;
    std::vector<common::CidrRange> exclude_cidrs;
  } capture;

  struct Bpf {
    std::filesystem::path pin_root = "/sys/fs/bpf/culvert";
  } bpf;

  struct Enrollment {
    std::filesystem::path socket = "/run/culvert/cni.sock";
    // culvert-cni when culvertd is unreachable at ADD: false = fail ADD retryably (no pod
    // starts uncaptured), true = start the pod uncaptured (logged, counted). install-cni
    // writes it into the plugin's netconf.
    bool allow_uncaptured = false;
  } enrollment;

  std::filesystem::path state_dir = "/var/lib/culvert";

  // Seconds a busy upstream connection to an endpoint that left its cluster may go on
  // (HTTP/1.1: until its response ends; HTTP/2: after its GOAWAY) before it is closed.
  uint32_t drain_timeout_seconds = 30;

  // The nice value (0..19) the main thread — xDS and file decode and apply, admin,
  // enrollment — takes once the workers run (they keep the process's), so on a shared
  // core a worker with traffic runs first. 0 = unchanged. Threads the main thread starts
  // later inherit it.
  uint32_t main_thread_nice = 0;

  struct Xds {
    // "host:port" (IP literal) or "unix:PATH"; empty = no control plane, resource files only.
    std::string address;
    // Stored last-good resources (state_dir/xds_last_good.bin) older than this are not
    // served at start while the control plane is unreachable.
    uint32_t max_stale_seconds = 86400;
    bool delta = false;  // DeltaAggregatedResources instead of State of the World
    // TLS to the control plane: on when ca_file is set (docs/bootstrap.md).
    struct Tls {
      std::string ca_file;
      std::string cert_file, key_file;  // client certificate for mTLS: both or neither
      std::string server_name;          // default: the host of `address` when it is a name
      std::vector<std::string> match_subject_alt_names;  // "DNS:x", "IP:x", "URI:x"
      bool enabled() const { return !ca_file.empty(); }
    } tls;
  } xds;

  struct Tenants {
    // Budgets of a tenant without a culvert.v1.Tenant resource, and the base a resource's
    // unset limits fall back to; 0 = no limit.
    config::TenantLimits defaults;
    // Process-wide buffered bytes above which the tenants holding more than their share
    // are shed (the heaviest first, never everyone at once); 0 = none.
    uint64_t buffered_bytes_watermark = 0;
  } tenants;

  struct Log {
    std::string level = "info";
    common::LogFormat format = common::LogFormat::Text;
  } log;
};

// The compiled-in default, used when culvertd runs without --config. node.id is absent
// on purpose: it defaults to the host name at parse time.
inline constexpr std::string_view kEmbeddedBootstrapYaml = R"(# culvertd embedded default bootstrap
node:
  cluster: culvert
admin:
  address: 127.0.0.1:15000
  socket: ""
workers: 0
resources:
  path: /etc/culvert/resources
capture:
  port: 15001
  cgroup: ""
  fail_mode: open
  exclude_ports: []
  exclude_cidrs: []
bpf:
  pin_root: /sys/fs/bpf/culvert
enrollment:
  socket: /run/culvert/cni.sock
  on_unreachable: fail
state_dir: /var/lib/culvert
drain_timeout: 30
main_thread_nice: 0
xds:
  address: ""
  max_stale: 86400
  delta: false
tenants:
  defaults:
    max_downstream_connections: 0
    max_requests_in_flight: 0
    max_buffered_bytes: 0
    max_requests_per_second: 0
    burst: 0
  buffered_bytes_watermark: 0
log:
  level: info
  format: text
)";

// "10.0.0.0/8", "fd00::/8"; a bare address is a full-length prefix.
common::Result<common::CidrRange> parseCidrText(std::string_view text);

// Parses a bootstrap document. Unknown keys, duplicate keys, wrong types and
// out-of-range values are errors whose Error::where names the key ("capture.port").
common::Result<Bootstrap> parseBootstrap(std::string_view yaml);

// Reads and parses a file; Error::where is "<file>: <key>" (or just the file).
common::Result<Bootstrap> loadBootstrapFile(const std::filesystem::path& path);

// parseBootstrap(kEmbeddedBootstrapYaml); the embedded text is covered by a unit test.
Bootstrap embeddedDefaultBootstrap();

// The worker count to start: `workers`, or the number of CPUs (at least 1) when 0.
uint32_t effectiveWorkers(const Bootstrap& bootstrap);

// The TLS client settings xds.tls asks for, defaults filled in: server_name defaults to
// the host of xds.address when that is a DNS name; an IP literal address with neither
// server_name nor match_subject_alt_names is pinned by an IP SAN matcher for it (mbedTLS
// 2.28 cannot check IP SANs itself). Only meaningful when xds.tls.enabled().
common::Result<tls::ClientConfig> xdsTlsClientConfig(const Bootstrap::Xds& xds);

// The bootstrap as YAML with the same keys (for config dumps); parses back to itself.
std::string formatBootstrap(const Bootstrap& bootstrap);

}  // namespace culvert::agent
