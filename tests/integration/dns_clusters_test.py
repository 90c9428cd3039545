#!/usr/bin/python3
"""STRICT_DNS and LOGICAL_DNS clusters end to end, through capture.

    /usr/bin/python3 tests/integration/dns_clusters_test.py \
        --culvertd build/agent/culvertd --culvertctl build/agent/ctl/culvertctl

Needs root (exit 77 = skip when not root, unless CULVERT_REQUIRE_PRIVILEGED=1).
A DNS server written here (python stdlib, UDP) listens on 127.0.0.1 in the host netns —
culvertd resolves from its own netns — and answers A records (TTL and SERVFAIL set per
name in a JSON zone file the test rewrites) with the addresses of test pods
10.244.9.11-13, each running a small server that names itself. Every cluster points its
c-ares resolver at that server only. culvertd runs one worker, so counts are exact.

- STRICT_DNS: a name resolving to s1 and s2 spreads 20 requests 10/10; resolutions come
  every dns_refresh_rate (500 ms, ±max(25 ms, 10 %)); changing the answer to s3 moves all
  traffic within one refresh (+150 ms of publish slack), and the idle pooled connections
  to s1/s2 close (endpoint-removal drain); SERVFAIL keeps s3 serving and counts failures,
  retried at dns_failure_refresh_rate.
- respect_dns_ttl: with dns_refresh_rate 5 s and TTL 1 s, resolutions come every 1 s
  (±100 ms).
- LOGICAL_DNS (lookup family AUTO: AAAA first, then A): new connections go to the first
  address of the latest answer; the pooled connection to the previous address stays open.
"""

import http.client
import json
import os
import sys
import time

sys.path.insert(0, os.path.dirname(os.path.abspath(__file__)))
import testhosts as th  # noqa: E402
from culvertd_harness import Culvertd, check_isolated, describe, free_port, run_test  # noqa: E402

CLIENT_IP = "10.244.9.1"
SERVERS = {"s1": "10.244.9.11", "s2": "10.244.9.12", "s3": "10.244.9.13"}
PORT = 8080
REFRESH_MS = 500
FAILURE_BASE_MS = 200

# DNS over UDP on 127.0.0.1:argv[1]; zone from the JSON file argv[2] (re-read per query):
# {"name": {"a": [ip...], "ttl": s, "servfail": bool}}. Unknown names: NXDOMAIN; AAAA and
# other types of a known name: no records (NODATA). Logs "<monotonic> <name> <type>".
DNS_PY = r'''
import json, socket, struct, sys, time
port, zone_file = int(sys.argv[1]), sys.argv[2]
s = socket.socket(socket.AF_INET, socket.SOCK_DGRAM)
s.bind(("127.0.0.1", port))
print("READY", flush=True)
while True:
    q, peer = s.recvfrom(512)
    if len(q) < 12: continue
    i, labels = 12, []
    while q[i]:
        labels.append(q[i + 1:i + 1 + q[i]].decode()); i += 1 + q[i]
    name, qtype = ".".join(labels).lower(), struct.unpack("!H", q[i + 1:i + 3])[0]
    print("%.6f %s %s" % (time.monotonic(), name, {1: "A", 28: "AAAA"}.get(qtype, qtype)), flush=True)
    with open(zone_file) as f:
        zone = json.load(f).get(name)
    rcode, answers = 0, []
    if zone is None: rcode = 3
    elif zone.get("servfail"): rcode = 2
    elif qtype == 1: answers = zone["a"]
    head = q[:2] + struct.pack("!BBHHHH", 0x81, 0x80 | rcode, 1, len(answers), 0, 0)
    out = head + q[12:i + 5]
    for ip in answers:
        out += struct.pack("!HHHIH", 0xC00C, 1, 1, zone.get("ttl", 30), 4) + socket.inet_aton(ip)
    s.sendto(out, peer)
'''

# HTTP server naming itself; GET /conns answers how many other connections are open.
SERVER_PY = r'''
import http.server, socketserver, sys, threading
name, addr, port = sys.argv[1], sys.argv[2], int(sys.argv[3])
lock, open_conns = threading.Lock(), [0]
class H(http.server.BaseHTTPRequestHandler):
    protocol_version = "HTTP/1.1"
    def setup(self):
        super().setup()
        with lock: open_conns[0] += 1
    def finish(self):
        with lock: open_conns[0] -= 1
        super().finish()
    def do_GET(self):
        if self.path == "/conns":
            with lock: body = ("conns=%d\n" % (open_conns[0] - 1)).encode()
        else:
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

# In the client pod. argv[1]: {"mode": "seq", "url", "n", "new_conn": bool} or
# {"mode": "poll", "url", "ms", "pause_ms"}; one JSON line per answer {"t", "body"|"error"}.
CLIENT_PY = r'''
import http.client, json, sys, time, urllib.parse
plan = json.loads(sys.argv[1])
u = urllib.parse.urlparse(plan["url"])
conn = None
def one():
    global conn
    if conn is None or plan.get("new_conn"):
        if conn: conn.close()
        conn = http.client.HTTPConnection(u.hostname, u.port or 80, timeout=5)
    try:
        conn.request("GET", u.path)
        r = conn.getresponse()
        return {"t": time.monotonic(), "status": r.status, "body": r.read().decode().strip()}
    except Exception as e:
        conn.close(); conn = None
        return {"t": time.monotonic(), "error": repr(e)}
if plan["mode"] == "seq":
    for _ in range(plan["n"]): print(json.dumps(one()), flush=True)
else:
    end = time.monotonic() + plan["ms"] / 1000.0
    while time.monotonic() < end:
        print(json.dumps(one()), flush=True)
        time.sleep(plan.get("pause_ms", 0) / 1000.0)
'''

VIPS = {"strict": "10.96.9.1", "ttl": "10.96.9.2", "logical": "10.96.9.3"}


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


def dns_cluster(name: str, kind: str, host: str, dns_port: int, extra: str) -> str:
    return f"""\
- "@type": type.googleapis.com/envoy.config.cluster.v3.Cluster
  name: {name}
  type: {kind}
  connect_timeout: 1s
{extra}  typed_dns_resolver_config:
    name: envoy.network.dns_resolver.cares
    typed_config:
      "@type": type.googleapis.com/envoy.extensions.network.dns_resolver.cares.v3.CaresDnsResolverConfig
      resolvers: [{{socket_address: {{address: 127.0.0.1, port_value: {dns_port}}}}}]
      dns_resolver_options: {{no_default_search_domain: true}}
  load_assignment:
    cluster_name: {name}
    endpoints:
    - lb_endpoints:
      - endpoint: {{address: {{socket_address: {{address: {host}, port_value: {PORT}}}}}}}
"""


def resources(dns_port: int) -> str:
    parts = ['version_info: "1"\nresources:\n']
    for name, vip in VIPS.items():
        parts.append(listener(name, vip))
    parts.append(dns_cluster("strict", "STRICT_DNS", "strict.dns.test", dns_port,
                             f"  dns_refresh_rate: {REFRESH_MS / 1000}s\n"
                             "  dns_lookup_family: V4_ONLY\n"
                             "  dns_failure_refresh_rate:\n"
                             f"    base_interval: {FAILURE_BASE_MS / 1000}s\n"
                             f"    max_interval: {FAILURE_BASE_MS / 1000}s\n"))
    parts.append(dns_cluster("ttl", "STRICT_DNS", "ttl.dns.test", dns_port,
                             "  dns_refresh_rate: 5s\n  respect_dns_ttl: true\n"
                             "  dns_lookup_family: V4_ONLY\n"))
    parts.append(dns_cluster("logical", "LOGICAL_DNS", "logical.dns.test", dns_port,
                             "  dns_refresh_rate: 0.3s\n"))
    return "".join(parts)


def within(measured_ms: float, want_ms: float) -> bool:
    return abs(measured_ms - want_ms) <= max(25.0, 0.1 * want_ms)


def scenario(net: th.TestNetwork, args, R: th.Results) -> None:
    client = net.add_pod("client", CLIENT_IP)
    pods = {name: net.add_pod(name, ip) for name, ip in SERVERS.items()}
    check_isolated(net, R)

    scripts = {}
    for name, text in (("dns", DNS_PY), ("server", SERVER_PY), ("client", CLIENT_PY)):
        scripts[name] = net.path(f"dns_test_{name}.py")
        with open(scripts[name], "w") as f:
            f.write(text)
    for name, pod in pods.items():
        proc = pod.spawn([th.PYTHON, "-B", scripts["server"], name, pod.ip, str(PORT)],
                         stdout=th.subprocess.PIPE)
        line = proc.stdout.readline()
        R.check(f"server {name} started", line.strip() == b"READY", repr(line), fatal=True)

    zone_file = net.path("zone.json")

    def set_zone(zone: dict) -> float:
        with open(zone_file + ".tmp", "w") as f:
            json.dump(zone, f)
        os.rename(zone_file + ".tmp", zone_file)
        return time.monotonic()

    zone = {"strict.dns.test": {"a": [SERVERS["s1"], SERVERS["s2"]], "ttl": 30},
            "ttl.dns.test": {"a": [SERVERS["s1"]], "ttl": 1},
            "logical.dns.test": {"a": [SERVERS["s1"], SERVERS["s2"]], "ttl": 30}}
    set_zone(zone)
    dns_port = free_port()
    dns_log_path = net.path("dns_queries.log")
    dns_log = open(dns_log_path, "w")
    dns = net.spawn([th.PYTHON, "-B", scripts["dns"], str(dns_port), zone_file], stdout=dns_log)
    dns_log.close()
    deadline = time.monotonic() + 5
    while time.monotonic() < deadline and "READY" not in open(dns_log_path).read():
        time.sleep(0.02)
    R.check("DNS server on 127.0.0.1 started", dns.poll() is None, fatal=True)

    def queries(name: str, qtype: str = "A") -> list[float]:
        out = []
        for line in open(dns_log_path):
            parts = line.split()
            if len(parts) == 3 and parts[1] == name and parts[2] == qtype:
                out.append(float(parts[0]))
        return out

    d = Culvertd(net, args, R, workers=1)
    d.start({"dns.yaml": resources(dns_port)})
    d.enroll(client)

    def drive(plan: dict, timeout: float = 30) -> list[dict]:
        cp = client.run([th.PYTHON, "-B", scripts["client"], json.dumps(plan)], cgroup=d.cgroup,
                        check=False, timeout=timeout)
        if cp.returncode != 0:
            R.check(f"client ran {plan['mode']}", False, describe(cp))
            return []
        return [json.loads(x) for x in cp.stdout.splitlines() if x.strip()]

    def server_of(answer: dict) -> str | None:
        body = answer.get("body", "")
        return body.split("=", 1)[1] if body.startswith("server=") else None

    def conns(server: str) -> int:
        cp = client.run(["curl", "-s", "--max-time", "2", f"http://{SERVERS[server]}:{PORT}/conns"],
                        check=False)
        text = cp.stdout.strip()
        return int(text.split("=", 1)[1]) if text.startswith("conns=") else -1

    strict_url = f"http://{VIPS['strict']}/"
    R.check("strict: resolved to two hosts",
            d.wait_metric("culvert_cluster_dns_hosts", 2, {"cluster": "strict"}, timeout=5) == 2,
            str(d.metric("culvert_cluster_dns_hosts", {"cluster": "strict"})))

    # --- STRICT_DNS spreads over every address
    answers = drive({"mode": "seq", "url": strict_url, "n": 20})
    got = [server_of(a) for a in answers]
    R.check("strict: 20 requests split 10/10 over the two resolved hosts",
            got.count("s1") == 10 and got.count("s2") == 10, str(got))

    # --- re-resolution every dns_refresh_rate
    time.sleep(2.2)
    ts = queries("strict.dns.test")[-4:]
    gaps = [round((b - a) * 1000, 1) for a, b in zip(ts, ts[1:])]
    print(f"measured: strict resolution gaps {gaps} ms (refresh {REFRESH_MS} ms)", flush=True)
    R.check(f"strict: resolutions every {REFRESH_MS} ms (±max(25 ms, 10 %))",
            len(gaps) == 3 and all(within(g, REFRESH_MS) for g in gaps), f"gaps {gaps} ms")
    R.check("strict: culvert holds pooled connections to s1 and s2", conns("s1") >= 1 and conns("s2") >= 1,
            f"s1={conns('s1')} s2={conns('s2')}")

    # --- a new answer moves the traffic within one refresh
    zone["strict.dns.test"]["a"] = [SERVERS["s3"]]
    changed_at = set_zone(zone)
    answers = drive({"mode": "poll", "url": strict_url, "ms": REFRESH_MS + 700, "pause_ms": 10})
    first_s3 = next((a["t"] for a in answers if server_of(a) == "s3"), None)
    after = [server_of(a) for a in answers if first_s3 is not None and a["t"] >= first_s3]
    asked = [t for t in queries("strict.dns.test") if t >= changed_at]
    moved_ms = None if first_s3 is None else round((first_s3 - changed_at) * 1000)
    print(f"measured: traffic moved {moved_ms} ms after the DNS answer changed", flush=True)
    R.check(f"strict: traffic moved to the new address within {REFRESH_MS} ms + 150 ms publish slack",
            moved_ms is not None and moved_ms <= REFRESH_MS + 150 and bool(asked) and first_s3 >= asked[0],
            f"moved after {moved_ms} ms; first query after the change at "
            f"{round((asked[0] - changed_at) * 1000) if asked else None} ms")
    R.check("strict: after the move every request went to s3", bool(after) and set(after) == {"s3"},
            str(sorted(set(after))))
    R.check("strict: hosts gauge is 1", d.metric("culvert_cluster_dns_hosts", {"cluster": "strict"}) == 1)
    time.sleep(0.2)
    R.check("strict: idle pooled connections to the removed hosts were closed",
            conns("s1") == 0 and conns("s2") == 0, f"s1={conns('s1')} s2={conns('s2')}")

    # --- failure keeps the last hosts
    failures_before = d.metric("culvert_cluster_dns_resolution_failures_total", {"cluster": "strict"}) or 0
    zone["strict.dns.test"]["servfail"] = True
    failed_at = set_zone(zone)
    answers = drive({"mode": "poll", "url": strict_url, "ms": 1500, "pause_ms": 20})
    got = {server_of(a) for a in answers}
    failures = (d.metric("culvert_cluster_dns_resolution_failures_total", {"cluster": "strict"}) or 0) - failures_before
    R.check("strict: while DNS fails, every request still reaches the last host (s3)",
            bool(answers) and got == {"s3"}, str(got))
    R.check("strict: failures counted", failures >= 2, f"{failures} failures")
    ts = [t for t in queries("strict.dns.test") if t >= failed_at]
    gaps = [round((b - a) * 1000, 1) for a, b in zip(ts[1:], ts[2:])]
    print(f"measured: failure retry gaps {gaps} ms", flush=True)
    R.check(f"strict: failed resolutions retried within dns_failure_refresh_rate ({FAILURE_BASE_MS} ms, jittered)",
            len(gaps) >= 2 and all(g <= FAILURE_BASE_MS + 25 for g in gaps), f"gaps {gaps} ms")
    R.check("strict: hosts gauge still 1 during the failure",
            d.metric("culvert_cluster_dns_hosts", {"cluster": "strict"}) == 1)
    zone["strict.dns.test"] = {"a": [SERVERS["s2"]], "ttl": 30}
    set_zone(zone)
    time.sleep((REFRESH_MS + 300) / 1000)
    answers = drive({"mode": "seq", "url": strict_url, "n": 4})
    R.check("strict: recovers when DNS answers again", [server_of(a) for a in answers] == ["s2"] * 4,
            str([server_of(a) for a in answers]))

    # --- respect_dns_ttl
    ts = queries("ttl.dns.test")[-3:]
    gaps = [round((b - a) * 1000, 1) for a, b in zip(ts, ts[1:])]
    print(f"measured: respect_dns_ttl resolution gaps {gaps} ms (TTL 1 s)", flush=True)
    R.check("ttl: respect_dns_ttl re-resolves at the 1 s TTL, not the 5 s refresh rate (±100 ms)",
            len(gaps) == 2 and all(within(g, 1000) for g in gaps), f"gaps {gaps} ms")

    # --- LOGICAL_DNS
    logical_url = f"http://{VIPS['logical']}/"
    answers = drive({"mode": "seq", "url": logical_url, "n": 4, "new_conn": True})
    R.check("logical: every new connection goes to the first address (s1)",
            [server_of(a) for a in answers] == ["s1"] * 4, str([server_of(a) for a in answers]))
    R.check("logical: AUTO asked AAAA first, then fell back to A",
            bool(queries("logical.dns.test", "AAAA")) and bool(queries("logical.dns.test", "A")))
    s1_before = conns("s1")
    zone["logical.dns.test"]["a"] = [SERVERS["s2"], SERVERS["s1"]]
    changed_at = set_zone(zone)
    deadline = time.monotonic() + 2
    while time.monotonic() < deadline and not [t for t in queries("logical.dns.test", "A") if t > changed_at]:
        time.sleep(0.02)
    time.sleep(0.15)
    answers = drive({"mode": "seq", "url": logical_url, "n": 4, "new_conn": True})
    R.check("logical: after the change new connections go to the new first address (s2)",
            [server_of(a) for a in answers] == ["s2"] * 4, str([server_of(a) for a in answers]))
    R.check("logical: the pooled connection to the previous address stays open",
            s1_before >= 1 and conns("s1") == s1_before, f"before={s1_before} after={conns('s1')}")
    resolutions = d.metric("culvert_cluster_dns_resolutions_total", {"cluster": "logical"}) or 0
    R.check("logical: resolutions counted", resolutions >= 2, str(resolutions))

    log = open(d.log_path).read()
    R.check("culvertd logs the host change", "cluster strict: DNS hosts now" in log)


if __name__ == "__main__":
    sys.exit(run_test("dns_clusters_test", scenario))
