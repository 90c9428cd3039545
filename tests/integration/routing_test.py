#!/usr/bin/python3
"""Routing through capture: regex routes, header and query matchers, weighted clusters,
header mutations, regex rewrites, x-forwarded-for and x-request-id, as the upstream
sees them.

    /usr/bin/python3 tests/integration/routing_test.py \
        --culvertd build/agent/culvertd --culvertctl build/agent/culvertctl

Needs root (exit 77 = skip when not root, unless CULVERT_REQUIRE_PRIVILEGED=1).
Pods "client" (10.244.1.1) and "server" (10.244.1.2); the server runs two header-echo
upstreams ("a" on 8081, "b" on 8082) that answer every GET with one JSON line naming
themselves, the path and the request headers they received.
"""

import json
import os
import re
import subprocess
import sys
import time

sys.path.insert(0, os.path.dirname(os.path.abspath(__file__)))
import testhosts as th  # noqa: E402
from culvertd_harness import Culvertd, check_isolated, describe, run_test, sum_metric  # noqa: E402

CLIENT_IP, SERVER_IP = "10.244.1.1", "10.244.1.2"
PORT_A, PORT_B = 8081, 8082
VIP = "10.96.0.20"
SPLIT_REQUESTS = 400
DURATION = "culvert_http_downstream_rq_duration_seconds"
DURATION_COUNT = DURATION + "_count"
UUID4 = re.compile(r"^[0-9a-f]{8}-[0-9a-f]{4}-4[0-9a-f]{3}-[89ab][0-9a-f]{3}-[0-9a-f]{12}$")

HEADER_ECHO_PY = r'''
import http.server, json, socketserver, sys
addr, port, name = sys.argv[1], int(sys.argv[2]), sys.argv[3]
class H(http.server.BaseHTTPRequestHandler):
    protocol_version = "HTTP/1.1"
    def do_GET(self, body_len=None):
        body = (json.dumps({"name": name, "path": self.path, "body_len": body_len,
                            "headers": [[k.lower(), v] for k, v in self.headers.items()]}) + "\n").encode()
        self.send_response(200)
        self.send_header("Content-Type", "application/json")
        self.send_header("Content-Length", str(len(body)))
        self.send_header("X-Upstream-Secret", "s3cr3t")
        self.end_headers()
        self.wfile.write(body)
    def do_POST(self):
        n = int(self.headers.get("Content-Length", "0"))
        self.do_GET(len(self.rfile.read(n)))
    def log_message(self, fmt, *a):
        pass
class S(socketserver.ThreadingMixIn, http.server.HTTPServer):
    daemon_threads = True
    allow_reuse_address = True
srv = S((addr, port), H)
print("READY", flush=True)
srv.serve_forever()
'''

RESOURCES = """\
version_info: "1"
resources:
- "@type": type.googleapis.com/envoy.config.listener.v3.Listener
  name: vip
  address: {{socket_address: {{address: {vip}, port_value: 80}}}}
  bind_to_port: false
  filter_chains:
  - filters:
    - name: envoy.filters.network.http_connection_manager
      typed_config:
        "@type": type.googleapis.com/envoy.extensions.filters.network.http_connection_manager.v3.HttpConnectionManager
        stat_prefix: vip
        route_config:
          name: local
          request_headers_to_add:
          - header: {{key: x-level, value: global}}
            append_action: OVERWRITE_IF_EXISTS_OR_ADD
          response_headers_to_remove: [x-upstream-secret]
          virtual_hosts:
          - name: all
            domains: ["*"]
            request_headers_to_remove: [x-secret]
            request_headers_to_add:
            - header: {{key: x-vhost, value: "100%%"}}
            routes:
            - match: {{safe_regex: {{regex: "/users/[0-9]+"}}}}
              response_headers_to_add:
              - header: {{key: x-route, value: users}}
              route:
                cluster: a
                regex_rewrite: {{pattern: {{regex: "^/users/([0-9]+)$"}}, substitution: "/u/\\\\1"}}
            - match:
                prefix: /hdr
                headers:
                - name: x-version
                  safe_regex_match: {{regex: "v[12]"}}
                - name: x-shard
                  range_match: {{start: 10, end: 20}}
              route: {{cluster: b}}
            - match:
                prefix: /q
                query_parameters:
                - name: debug
                  string_match: {{exact: "1"}}
              direct_response: {{status: 200, body: {{inline_string: "debug route\\n"}}}}
            - name: split
              match: {{prefix: /split}}
              route:
                weighted_clusters:
                  clusters:
                  - name: a
                    weight: 25
                    request_headers_to_add:
                    - header: {{key: x-picked, value: a}}
                  - name: b
                    weight: 75
            - name: default
              match: {{prefix: "/"}}
              request_headers_to_add:
              - header: {{key: x-level, value: route}}
                append_action: OVERWRITE_IF_EXISTS_OR_ADD
              route: {{cluster: a}}
        http_filters:
        - name: envoy.filters.http.router
          typed_config: {{"@type": type.googleapis.com/envoy.extensions.filters.http.router.v3.Router}}
- "@type": type.googleapis.com/envoy.config.cluster.v3.Cluster
  name: a
  type: STATIC
  connect_timeout: 1s
  load_assignment:
    cluster_name: a
    endpoints:
    - lb_endpoints:
      - endpoint: {{address: {{socket_address: {{address: {server_ip}, port_value: {port_a}}}}}}}
- "@type": type.googleapis.com/envoy.config.cluster.v3.Cluster
  name: b
  type: STATIC
  connect_timeout: 1s
  load_assignment:
    cluster_name: b
    endpoints:
    - lb_endpoints:
      - endpoint: {{address: {{socket_address: {{address: {server_ip}, port_value: {port_b}}}}}}}
"""


def start_header_echo(net: th.TestNetwork, pod: th.Pod, port: int, name: str) -> subprocess.Popen:
    script = net.path("header_echo.py")
    if not os.path.exists(script):
        with open(script, "w") as f:
            f.write(HEADER_ECHO_PY)
    proc = pod.spawn([th.PYTHON, "-B", script, pod.ip, str(port), name],
                     stdout=subprocess.PIPE, stderr=subprocess.DEVNULL)
    line = proc.stdout.readline()
    if line.strip() != b"READY":
        net.stop(proc)
        raise th.CommandError(f"header echo {name} did not start")
    return proc


def echoes(stdout: str) -> list[dict]:
    """The JSON lines the upstreams answered with (curl -i output is skipped)."""
    out = []
    for line in stdout.splitlines():
        if line.startswith("{"):
            out.append(json.loads(line))
    return out


def values(echo: dict, name: str) -> list[str]:
    return [v for k, v in echo["headers"] if k == name]


def scenario(net: th.TestNetwork, args, R: th.Results) -> None:
    client = net.add_pod("client", CLIENT_IP)
    server = net.add_pod("server", SERVER_IP)
    d = Culvertd(net, args, R)
    check_isolated(net, R)
    start_header_echo(net, server, PORT_A, "a")
    start_header_echo(net, server, PORT_B, "b")
    d.start({"routing.yaml": RESOURCES.format(vip=VIP, server_ip=SERVER_IP, port_a=PORT_A, port_b=PORT_B)})
    d.enroll(client)

    def get(path: str, *curl_args: str):
        return client.curl(*curl_args, f"http://{VIP}{path}", cgroup=d.cgroup)

    def one(name: str, cp) -> dict | None:
        e = echoes(cp.stdout)
        if not R.check(name, cp.returncode == 0 and len(e) == 1, describe(cp)):
            return None
        return e[0]

    # --- regex route, regex rewrite, response header mutations
    cp = get("/users/42?x=1", "-i")
    e = one("safe_regex route reaches cluster a", cp)
    if e:
        R.check("regex_rewrite: upstream path is /u/42, query kept", e["name"] == "a" and e["path"] == "/u/42?x=1",
                str(e))
    R.check("route response_headers_to_add: x-route: users",
            re.search(r"(?im)^x-route: users\r?$", cp.stdout) is not None, cp.stdout[:400])
    R.check("route configuration response_headers_to_remove: no x-upstream-secret",
            "x-upstream-secret" not in cp.stdout.lower(), cp.stdout[:400])
    e = one("regex does not match a longer path: default route", get("/users/42/posts"))
    if e:
        R.check("default route keeps the path", e["name"] == "a" and e["path"] == "/users/42/posts", str(e))

    # --- header matchers
    e = one("header matchers (regex + range) select cluster b",
            get("/hdr", "-H", "x-version: v2", "-H", "x-shard: 15"))
    if e:
        R.check("matched request went to b", e["name"] == "b", str(e))
    for label, hdrs in [("regex mismatch", ["x-version: v3", "x-shard: 15"]),
                        ("range end is exclusive", ["x-version: v1", "x-shard: 20"])]:
        argv = []
        for h in hdrs:
            argv += ["-H", h]
        e = one(f"header matchers: {label} falls through", get("/hdr", *argv))
        if e:
            R.check(f"header matchers: {label} goes to a", e["name"] == "a", str(e))

    # --- query parameter matcher
    cp = get("/q?debug=1")
    R.check("query_parameters: debug=1 takes the direct response", cp.stdout == "debug route\n", describe(cp))
    e = one("query_parameters: debug=2 falls through", get("/q?debug=2"))

    # --- header mutations, x-forwarded-for, x-request-id
    e = one("header mutations request", get("/plain", "-H", "x-secret: no", "-H", "x-level: client",
                                            "-H", "x-forwarded-for: 192.0.2.9"))
    if e:
        R.check("virtual host request_headers_to_remove: x-secret gone", not values(e, "x-secret"), str(e))
        R.check("request_headers_to_add: x-vhost: 100% (%% unescaped)", values(e, "x-vhost") == ["100%"], str(e))
        R.check("the route configuration level wins over the route (x-level: global)",
                values(e, "x-level") == ["global"], str(e))
        R.check("x-forwarded-for appended with the client pod IP",
                values(e, "x-forwarded-for") == [f"192.0.2.9, {CLIENT_IP}"], str(e))
        rid = values(e, "x-request-id")
        R.check("x-request-id generated (UUID v4)", len(rid) == 1 and UUID4.match(rid[0]) is not None, str(rid))
    e = one("plain request", get("/plain"))
    if e:
        R.check("x-forwarded-for is the client pod IP, never 127.0.0.1",
                values(e, "x-forwarded-for") == [CLIENT_IP], str(e))
    e = one("request with an x-request-id", get("/plain", "-H", "x-request-id: keep-me-123"))
    if e:
        R.check("x-request-id kept when present", values(e, "x-request-id") == ["keep-me-123"], str(e))

    # --- Expect: 100-continue is answered by culvert (Envoy's proxy_100_continue: false)
    cp = get("/upload", "-i", "-X", "POST", "--data-binary", "x" * 2000, "-H", "Expect: 100-continue",
             "--expect100-timeout", "5", "-w", "\nTIME=%{time_total}\n")
    e = one("100-continue: POST reaches the upstream", cp)
    t = re.search(r"TIME=([\d.]+)", cp.stdout)
    R.check("100-continue: culvert sends 100 Continue at once (curl does not wait out its 5 s)",
            "HTTP/1.1 100 Continue" in cp.stdout and t is not None and float(t.group(1)) < 2.5, cp.stdout[:300])
    if e:
        R.check("100-continue: the body arrives and the upstream sees no Expect",
                e["body_len"] == 2000 and not values(e, "expect"), str(e))

    # --- weighted clusters: 25/75 over SPLIT_REQUESTS requests on one connection
    cp = client.curl(f"http://{VIP}/split/[1-{SPLIT_REQUESTS}]", cgroup=d.cgroup, max_time=60, timeout=90)
    got = echoes(cp.stdout)
    n_a = sum(1 for x in got if x["name"] == "a")
    n_b = sum(1 for x in got if x["name"] == "b")
    R.check(f"weighted split: {SPLIT_REQUESTS} answers", cp.returncode == 0 and len(got) == SPLIT_REQUESTS,
            f"{len(got)} answers; {describe(cp)[:300]}")
    # Binomial(400, 0.25): mean 100, sd 8.7; 60..140 is beyond 4.5 sd.
    R.check("weighted split within tolerance (a 25%, b 75%)", 60 <= n_a <= 140 and n_a + n_b == len(got),
            f"a={n_a} b={n_b}")
    R.check("weighted cluster request_headers_to_add only on its own cluster",
            all(values(x, "x-picked") == (["a"] if x["name"] == "a" else []) for x in got))

    # --- latency histograms per route and cluster: the split's counts, bucket for bucket
    split_a = d.wait_metric(DURATION_COUNT, n_a, {"route": "split", "cluster": "a"})
    split_b = d.wait_metric(DURATION_COUNT, n_b, {"route": "split", "cluster": "b"})
    R.check("duration histogram _count per cluster equals the requests the split sent there",
            split_a == n_a and split_b == n_b, f"a={split_a}/{n_a} b={split_b}/{n_b}")
    text = d.stats_text()
    inf = sum_metric(text, DURATION + "_bucket", {"cluster": "b", "route": "split", "le": "+Inf"})
    R.check("le=\"+Inf\" bucket equals _count", inf == split_b, f"+Inf={inf} count={split_b}")
    named = sum_metric(text, DURATION_COUNT, {"route": "default", "cluster": "a", "tenant": "default"})
    R.check("the named route 'default' has its own series", named is not None and named >= 4, str(named))
    direct = sum_metric(text, DURATION_COUNT, {"cluster": ""})
    R.check("direct responses are counted with cluster=\"\"", direct is not None and direct >= 1, str(direct))

    # --- a bad edit of the resource file: the listener and cluster "a" gain fields culvert
    # rejects; both keep their last good versions and the traffic keeps flowing.
    bad = RESOURCES.replace('version_info: "1"', 'version_info: "2"', 1)
    bad = bad.replace("  bind_to_port: false\n", "  bind_to_port: false\n  enable_mptcp: true\n", 1)
    bad = bad.replace("  name: a\n  type: STATIC\n", "  name: a\n  type: STATIC\n  colour: blue\n", 1)
    assert bad.count("enable_mptcp") == 1 and bad.count("colour") == 1
    rejected_before = d.metric("culvert_config_resource_rejected_total") or 0
    d.write_resources("routing.yaml", bad.format(vip=VIP, server_ip=SERVER_IP, port_a=PORT_A, port_b=PORT_B))
    kept = []
    deadline = time.monotonic() + 5
    while time.monotonic() < deadline and len(kept) < 2:
        code, body = d.admin_get("/config_dump")
        dump = json.loads(body) if code == 200 else {}
        kept = ((dump.get("resources") or {}).get("kept_last_good")) or []
        time.sleep(0.1)
    R.check("bad edit: /config_dump lists listener vip and cluster a as kept_last_good",
            sorted(k["name"] for k in kept) == ["a", "vip"], json.dumps(kept))
    R.check("bad edit: both rejections counted",
            (d.metric("culvert_config_resource_rejected_total") or 0) == rejected_before + 2)
    e = one("bad edit: the listener and cluster a still serve /users/42", get("/users/42"))
    if e:
        R.check("bad edit: the last good routes still apply (regex rewrite to /u/42)",
                e["name"] == "a" and e["path"] == "/u/42", str(e))
    log = open(d.log_path).read()
    R.check("bad edit: the log says what keeps its last good version",
            "resource Listener vip keeps its last good version" in log
            and "resource Cluster a keeps its last good version" in log, log[-1500:])

    # --- a YAML syntax error: nothing of the file can be read; everything it had stays.
    rejected_before = d.metric("culvert_config_resource_rejected_total") or 0
    d.write_resources("routing.yaml", 'version_info: "3"\nresources: [ {\n')
    got = d.wait_metric("culvert_config_resource_rejected_total", rejected_before + 1, timeout=5)
    R.check("broken YAML: the file's error is counted", got == rejected_before + 1, f"{rejected_before} -> {got}")
    e = one("broken YAML: the listener and its clusters still serve /users/42", get("/users/42"))
    if e:
        R.check("broken YAML: still the last good routes", e["name"] == "a" and e["path"] == "/u/42", str(e))
    e = one("broken YAML: cluster b, which only that file defined, still serves", get("/hdr", "-H", "x-version: v1",
                                                                                           "-H", "x-shard: 12"))
    if e:
        R.check("broken YAML: /hdr still reaches b", e["name"] == "b", str(e))


if __name__ == "__main__":
    sys.exit(run_test("integration_routing", scenario))
