#!/usr/bin/python3
"""Locality-weighted load balancing end to end, through capture.

    /usr/bin/python3 tests/integration/locality_lb_test.py \
        --culvertd build/agent/culvertd --culvertctl build/agent/ctl/culvertctl

Needs root (exit 77 = skip when not root, unless CULVERT_REQUIRE_PRIVILEGED=1).
A client pod and four upstream pods, each a small HTTP server that names itself: a1 and
a2 in locality zone-a (load_balancing_weight 3), b1 and b2 in zone-b (weight 1), served
from a resource file as one ClusterLoadAssignment that two EDS clusters use: "weighted"
(common_lb_config.locality_weighted_lb_config, ROUND_ROBIN) and "flat" (no locality
config). culvertd runs one worker, so one balancer sees every request; the split is
checked within a tolerance of 3 % of the requests all the same.

- weighted: 3:1 between the zones, even inside each; flat: an even quarter each.
- a1 marked UNHEALTHY in EDS: zone-a's availability is min(1, 1.4 × 1/2) = 0.7, so its
  effective weight 2.1 against 1 → 67.7 % to a2, 32.3 % to zone-b.
- a1 and a2 UNHEALTHY: zone-a's effective weight is 0 → everything to zone-b.

"hashed" (MAGLEV, hashing on the x-key header, locality-weighted) gets 3,000 requests with
distinct keys: Envoy's thread-aware balancers fold the localities' weights into the table,
so the keys split 37.5 / 37.5 / 12.5 / 12.5 % (each key's server is fixed by its table
slot: the observed shares sample the table's, checked within 3 % of the requests, about
3.5 standard deviations of that sampling), and every key lands where it did the first
time. With a1 UNHEALTHY the table uses the configured weights, not availability: a2
holds all of zone-a's 75 %.

Two STRICT_DNS clusters (a DNS server on 127.0.0.1 in the host netns, as in
dns_clusters_test.py) name a.loc.test (→ a1, a2) in zone-a, weight 3, and b.loc.test
(→ b1, b2) in zone-b, weight 1: every resolved address has its entry's locality, so
"dns_rr" (ROUND_ROBIN) and "dns_hashed" (MAGLEV on x-key) split 3:1 between the zones.
"""

import json
import os
import sys
import time

sys.path.insert(0, os.path.dirname(os.path.abspath(__file__)))
import testhosts as th  # noqa: E402
from culvertd_harness import Culvertd, check_isolated, describe, free_port, run_test  # noqa: E402
from dns_clusters_test import DNS_PY  # noqa: E402

CLIENT_IP = "10.244.7.1"
SERVERS = {"a1": "10.244.7.11", "a2": "10.244.7.12", "b1": "10.244.7.21", "b2": "10.244.7.22"}
ZONES = {"zone-a": (3, ["a1", "a2"]), "zone-b": (1, ["b1", "b2"])}
PORT = 8080
VIPS = {"weighted": "10.96.7.1", "flat": "10.96.7.2", "hashed": "10.96.7.3", "dns_rr": "10.96.7.4",
        "dns_hashed": "10.96.7.5"}
HASHED = {"hashed", "dns_hashed"}  # routes hashing on the x-key header
DNS_NAMES = {"a.loc.test": ["a1", "a2"], "b.loc.test": ["b1", "b2"]}
TOLERANCE = 0.03

SERVER_PY = r'''
import http.server, socketserver, sys
name, addr, port = sys.argv[1], sys.argv[2], int(sys.argv[3])
class H(http.server.BaseHTTPRequestHandler):
    protocol_version = "HTTP/1.1"
    disable_nagle_algorithm = True  # head and body are two writes: no wait for an ACK between
    def do_GET(self):
        body = ("server=%s\n" % name).encode()
        self.send_response(200)
        self.send_header("Content-Length", str(len(body)))
        self.end_headers()
        self.wfile.write(body)
    def log_message(self, fmt, *a):
        pass
class S(socketserver.ThreadingMixIn, http.server.HTTPServer):
    daemon_threads = True
    allow_reuse_address = True
srv = S((addr, port), H)
print("READY", flush=True)
srv.serve_forever()
'''

# Runs in the client pod: argv[1] URL, argv[2] N, argv[3] (optional) a header that
# carries "key-<i>" on request i. One keep-alive connection (reopened after an error);
# prints how many answers each server gave, as JSON, and with keys each one's server.
CLIENT_PY = r'''
import http.client, json, sys, urllib.parse
u = urllib.parse.urlparse(sys.argv[1])
header = sys.argv[3] if len(sys.argv) > 3 else None
counts, servers = {}, []
conn = None
for i in range(int(sys.argv[2])):
    try:
        if conn is None:
            conn = http.client.HTTPConnection(u.hostname, u.port or 80, timeout=10)
        conn.request("GET", u.path, headers={header: "key-%d" % i} if header else {})
        r = conn.getresponse()
        body = r.read().decode().strip()
        key = body.split("=", 1)[1] if r.status == 200 and body.startswith("server=") else "status=%d" % r.status
    except Exception as e:
        key = "error=" + type(e).__name__
        if conn is not None:
            conn.close()
        conn = None
    counts[key] = counts.get(key, 0) + 1
    servers.append(key)
print(json.dumps(servers if header else None))
print(json.dumps(counts))
'''


def listener(name: str, vip: str) -> str:
    hash_policy = ", hash_policy: [{header: {header_name: x-key}}]" if name in HASHED else ""
    return f"""\
- "@type": type.googleapis.com/envoy.config.listener.v3.Listener
  name: {name}
  address: {{socket_address: {{address: {vip}, port_value: 80}}}}
  bind_to_port: false
  filter_chains:
  - filters:
    - name: envoy.filters.network.http_connection_manager
      typed_config:
        "@type": type.googleapis.com/envoy.extensions.filters.network.http_connection_manager.v3.HttpConnectionManager
        stat_prefix: {name}
        route_config:
          name: {name}
          virtual_hosts:
          - name: all
            domains: ["*"]
            routes:
            - match: {{prefix: "/"}}
              route: {{cluster: {name}{hash_policy}}}
        http_filters:
        - name: envoy.filters.http.router
          typed_config: {{"@type": type.googleapis.com/envoy.extensions.filters.http.router.v3.Router}}
"""


def eds_cluster(name: str, extra: str = "") -> str:
    return f"""\
- "@type": type.googleapis.com/envoy.config.cluster.v3.Cluster
  name: {name}
  type: EDS
  eds_cluster_config: {{service_name: svc}}
  connect_timeout: 1s
{extra}"""


def assignment(unhealthy: set[str]) -> str:
    out = ['- "@type": type.googleapis.com/envoy.config.endpoint.v3.ClusterLoadAssignment\n'
           '  cluster_name: svc\n  endpoints:\n']
    for zone, (weight, servers) in ZONES.items():
        out.append(f"  - locality: {{region: test, zone: {zone}}}\n"
                   f"    load_balancing_weight: {weight}\n    lb_endpoints:\n")
        for s in servers:
            health = "UNHEALTHY" if s in unhealthy else "HEALTHY"
            out.append(f"    - endpoint: {{address: {{socket_address: {{address: {SERVERS[s]}, "
                       f"port_value: {PORT}}}}}}}\n      health_status: {health}\n")
    return "".join(out)


def dns_cluster(name: str, lb_policy: str, dns_port: int) -> str:
    out = [f"""\
- "@type": type.googleapis.com/envoy.config.cluster.v3.Cluster
  name: {name}
  type: STRICT_DNS
  connect_timeout: 1s
  lb_policy: {lb_policy}
  common_lb_config: {{locality_weighted_lb_config: {{}}}}
  dns_lookup_family: V4_ONLY
  typed_dns_resolver_config:
    name: envoy.network.dns_resolver.cares
    typed_config:
      "@type": type.googleapis.com/envoy.extensions.network.dns_resolver.cares.v3.CaresDnsResolverConfig
      resolvers: [{{socket_address: {{address: 127.0.0.1, port_value: {dns_port}}}}}]
      dns_resolver_options: {{no_default_search_domain: true}}
  load_assignment:
    cluster_name: {name}
    endpoints:
"""]
    for (zone, (weight, _)), host in zip(ZONES.items(), DNS_NAMES):
        out.append(f"    - locality: {{region: test, zone: {zone}}}\n"
                   f"      load_balancing_weight: {weight}\n"
                   f"      lb_endpoints:\n"
                   f"      - endpoint: {{address: {{socket_address: {{address: {host}, port_value: {PORT}}}}}}}\n")
    return "".join(out)


def resources(version: str, unhealthy: set[str], dns_port: int) -> str:
    return (f'version_info: "{version}"\nresources:\n' + "".join(listener(n, vip) for n, vip in VIPS.items()) +
            eds_cluster("weighted", "  common_lb_config: {locality_weighted_lb_config: {}}\n") +
            eds_cluster("flat") +
            eds_cluster("hashed", "  lb_policy: MAGLEV\n  common_lb_config: {locality_weighted_lb_config: {}}\n") +
            dns_cluster("dns_rr", "ROUND_ROBIN", dns_port) + dns_cluster("dns_hashed", "MAGLEV", dns_port) +
            assignment(unhealthy))


def scenario(net: th.TestNetwork, args, R: th.Results) -> None:
    client = net.add_pod("client", CLIENT_IP)
    pods = {name: net.add_pod(name, ip) for name, ip in SERVERS.items()}
    check_isolated(net, R)

    server_script = net.path("locality_server.py")
    with open(server_script, "w") as f:
        f.write(SERVER_PY)
    client_script = net.path("locality_client.py")
    with open(client_script, "w") as f:
        f.write(CLIENT_PY)
    for name, pod in pods.items():
        proc = pod.spawn([th.PYTHON, "-B", server_script, name, pod.ip, str(PORT)], stdout=th.subprocess.PIPE)
        line = proc.stdout.readline()
        R.check(f"server {name} started", line.strip() == b"READY", repr(line), fatal=True)

    # The DNS server of dns_clusters_test.py: A records from a JSON zone file.
    zone_file = net.path("zone.json")
    with open(zone_file, "w") as f:
        json.dump({name: {"a": [SERVERS[s] for s in servers], "ttl": 30} for name, servers in DNS_NAMES.items()}, f)
    dns_script = net.path("locality_dns.py")
    with open(dns_script, "w") as f:
        f.write(DNS_PY)
    dns_port = free_port()
    dns_log_path = net.path("dns_queries.log")
    with open(dns_log_path, "w") as dns_log:
        dns = net.spawn([th.PYTHON, "-B", dns_script, str(dns_port), zone_file], stdout=dns_log)
    deadline = time.monotonic() + 5
    while time.monotonic() < deadline and "READY" not in open(dns_log_path).read():
        time.sleep(0.02)
    R.check("DNS server on 127.0.0.1 started", dns.poll() is None, fatal=True)

    d = Culvertd(net, args, R, workers=1)
    d.start({"locality.yaml": resources("1", set(), dns_port)})
    d.enroll(client)

    def drive_keys(vip: str, n: int) -> tuple[dict[str, int], list[str]]:
        """n requests; with a hashing route, request i carries x-key: key-i."""
        argv = [th.PYTHON, "-B", client_script, f"http://{vip}/", str(n)]
        if any(VIPS[h] == vip for h in HASHED):
            argv.append("x-key")
        cp = client.run(argv, cgroup=d.cgroup, check=False, timeout=120)
        if cp.returncode != 0:
            R.check("client ran", False, describe(cp))
            return {}, []
        lines = cp.stdout.strip().splitlines()
        counts, servers = json.loads(lines[-1]), json.loads(lines[-2]) or []
        print(f"  {vip}: {dict(sorted(counts.items()))}", flush=True)
        return counts, servers

    def drive(vip: str, n: int) -> dict[str, int]:
        return drive_keys(vip, n)[0]

    def near(counts: dict[str, int], want: dict[str, float], n: int) -> bool:
        """Every server's share within TOLERANCE of `want` (servers not named: none)."""
        if sum(counts.values()) != n or set(counts) - set(want):
            return False
        return all(abs(counts.get(s, 0) - share * n) <= TOLERANCE * n for s, share in want.items())

    def reload(version: str, unhealthy: set[str]) -> None:
        d.write_resources("locality.yaml", resources(version, unhealthy, dns_port))
        # The directory is watched: config_dump shows the version once it is published;
        # the workers take it from their loops a moment later.
        deadline = time.monotonic() + 5
        seen = None
        while time.monotonic() < deadline:
            code, body = d.admin_get("/config_dump")
            seen = json.loads(body).get("version") if code == 200 else None
            if seen == version:
                time.sleep(0.3)
                return
            time.sleep(0.1)
        R.check(f"resource file version {version} applied", False, f"config_dump version {seen}", fatal=True)

    split = {"a1": 0.375, "a2": 0.375, "b1": 0.125, "b2": 0.125}

    def zone_a(counts: dict[str, int]) -> int:
        return counts.get("a1", 0) + counts.get("a2", 0)

    # --- MAGLEV: localities folded into the table
    n = 3000
    c, first = drive_keys(VIPS["hashed"], n)
    R.check("hashed (MAGLEV, x-key): 3,000 keys split 37.5 / 37.5 / 12.5 / 12.5 % (±3 %)", near(c, split, n), str(c))
    R.check("hashed: zone-a 75 % of the keys (±3 %)", abs(zone_a(c) - 0.75 * n) <= TOLERANCE * n, str(c))
    _, again = drive_keys(VIPS["hashed"], n)
    R.check("hashed: every key lands on the same server again", len(first) == n and first == again,
            f"{sum(a != b for a, b in zip(first, again))} of {n} moved")

    # --- STRICT_DNS: each address has its entry's locality
    for name in ("dns_rr", "dns_hashed"):
        R.check(f"{name}: resolved to four hosts",
                d.wait_metric("culvert_cluster_dns_hosts", 4, {"cluster": name}, timeout=5) == 4,
                str(d.metric("culvert_cluster_dns_hosts", {"cluster": name})))
    c = drive(VIPS["dns_rr"], 400)
    R.check("dns_rr (STRICT_DNS, ROUND_ROBIN): zone-a 3:1, even inside: 37.5 / 37.5 / 12.5 / 12.5 % of 400",
            near(c, split, 400), str(c))
    c = drive(VIPS["dns_hashed"], n)
    R.check("dns_hashed (STRICT_DNS, MAGLEV): 3,000 keys split 37.5 / 37.5 / 12.5 / 12.5 % (±3 %)",
            near(c, split, n), str(c))

    n = 400
    c = drive(VIPS["weighted"], n)
    R.check("weighted 3:1 between zones, even inside: a1 a2 37.5 %, b1 b2 12.5 % of 400",
            near(c, {"a1": 0.375, "a2": 0.375, "b1": 0.125, "b2": 0.125}, n), str(c))
    c = drive(VIPS["flat"], n)
    R.check("flat (no locality_weighted_lb_config): locality weights ignored, 25 % each",
            near(c, {s: 0.25 for s in SERVERS}, n), str(c))

    reload("2", {"a1"})
    n = 620
    c = drive(VIPS["weighted"], n)
    R.check("a1 UNHEALTHY in EDS: zone-a at 2.1 against 1 → a2 67.7 %, b1 b2 16.1 % each of 620",
            near(c, {"a2": 2.1 / 3.1, "b1": 0.5 / 3.1, "b2": 0.5 / 3.1}, n), str(c))
    c = drive(VIPS["flat"], 300)
    R.check("flat: a1 gets nothing, the other three a third each",
            near(c, {"a2": 1 / 3, "b1": 1 / 3, "b2": 1 / 3}, 300), str(c))

    n = 3000
    c = drive(VIPS["hashed"], n)
    R.check("hashed with a1 UNHEALTHY: configured weights, not availability: a2 75 %, b1 b2 12.5 % each (±3 %)",
            near(c, {"a2": 0.75, "b1": 0.125, "b2": 0.125}, n), str(c))

    reload("3", {"a1", "a2"})
    c = drive(VIPS["weighted"], 200)
    R.check("zone-a all UNHEALTHY: everything to zone-b, half each", near(c, {"b1": 0.5, "b2": 0.5}, 200), str(c))
    c = drive(VIPS["hashed"], 1000)
    R.check("hashed with zone-a all UNHEALTHY: the table is zone-b's, half each (±3 %)",
            near(c, {"b1": 0.5, "b2": 0.5}, 1000), str(c))

    d.stop()


if __name__ == "__main__":
    sys.exit(run_test("integration_locality_lb", scenario))
