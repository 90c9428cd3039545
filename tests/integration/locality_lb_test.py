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
"""

import json
import os
import sys
import time

sys.path.insert(0, os.path.dirname(os.path.abspath(__file__)))
import testhosts as th  # noqa: E402
from culvertd_harness import Culvertd, describe, run_test  # noqa: E402

CLIENT_IP = "10.244.7.1"
SERVERS = {"a1": "10.244.7.11", "a2": "10.244.7.12", "b1": "10.244.7.21", "b2": "10.244.7.22"}
ZONES = {"zone-a": (3, ["a1", "a2"]), "zone-b": (1, ["b1", "b2"])}
PORT = 8080
VIPS = {"weighted": "10.96.7.1", "flat": "10.96.7.2"}
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

# Runs in the client pod: argv[1] URL, argv[2] N. One keep-alive connection (reopened
# after an error); prints how many answers each server gave, as JSON.
CLIENT_PY = r'''
import http.client, json, sys, urllib.parse
u = urllib.parse.urlparse(sys.argv[1])
counts = {}
conn = None
for _ in range(int(sys.argv[2])):
    try:
        if conn is None:
            conn = http.client.HTTPConnection(u.hostname, u.port or 80, timeout=10)
        conn.request("GET", u.path)
        r = conn.getresponse()
        body = r.read().decode().strip()
        key = body.split("=", 1)[1] if r.status == 200 and body.startswith("server=") else "status=%d" % r.status
    except Exception as e:
        key = "error=" + type(e).__name__
        if conn is not None:
            conn.close()
        conn = None
    counts[key] = counts.get(key, 0) + 1
print(json.dumps(counts))
'''


def listener(name: str, vip: str) -> str:
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
              route: {{cluster: {name}}}
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


def resources(version: str, unhealthy: set[str]) -> str:
    return (f'version_info: "{version}"\nresources:\n' + listener("weighted", VIPS["weighted"]) +
            listener("flat", VIPS["flat"]) +
            eds_cluster("weighted", "  common_lb_config: {locality_weighted_lb_config: {}}\n") +
            eds_cluster("flat") + assignment(unhealthy))


def scenario(net: th.TestNetwork, args, R: th.Results) -> None:
    client = net.add_pod("client", CLIENT_IP)
    pods = {name: net.add_pod(name, ip) for name, ip in SERVERS.items()}
    try:
        net.assert_isolated()
        R.check("test hosts isolated (no default route, ip_forward unchanged)", True)
    except th.HostSafetyError as e:
        R.check("test hosts isolated", False, str(e), fatal=True)

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

    d = Culvertd(net, args, R, workers=1)
    d.start({"locality.yaml": resources("1", set())})
    d.enroll(client)

    def drive(vip: str, n: int) -> dict[str, int]:
        cp = client.run([th.PYTHON, "-B", client_script, f"http://{vip}/", str(n)], cgroup=d.cgroup,
                        check=False, timeout=60)
        if cp.returncode != 0:
            R.check("client ran", False, describe(cp))
            return {}
        counts = json.loads(cp.stdout.strip().splitlines()[-1])
        print(f"  {vip}: {dict(sorted(counts.items()))}", flush=True)
        return counts

    def near(counts: dict[str, int], want: dict[str, float], n: int) -> bool:
        """Every server's share within TOLERANCE of `want` (servers not named: none)."""
        if sum(counts.values()) != n or set(counts) - set(want):
            return False
        return all(abs(counts.get(s, 0) - share * n) <= TOLERANCE * n for s, share in want.items())

    def reload(version: str, unhealthy: set[str]) -> None:
        d.write_resources("locality.yaml", resources(version, unhealthy))
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

    reload("3", {"a1", "a2"})
    c = drive(VIPS["weighted"], 200)
    R.check("zone-a all UNHEALTHY: everything to zone-b, half each", near(c, {"b1": 0.5, "b2": 0.5}, 200), str(c))

    d.stop()


if __name__ == "__main__":
    sys.exit(run_test("integration_locality_lb", scenario))
