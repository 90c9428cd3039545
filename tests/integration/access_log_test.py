#!/usr/bin/python3
"""Access logs through capture: FileAccessLog JSON lines for HTTP/1.1, HTTP/2, an upstream
connect failure (UF, with the transport failure reason), no route (NR), retries used up
(URX), a request shed by its tenant's budget (OM) and a TCP proxy connection, one file shared by both listeners; logrotate's
rename + SIGUSR1; the drop counter.

    /usr/bin/python3 tests/integration/access_log_test.py \
        --culvertd build/agent/culvertd --culvertctl build/agent/culvertctl

Needs root (exit 77 = skip when not root, unless CULVERT_REQUIRE_PRIVILEGED=1).
Pods "client" (10.244.3.1, tenant "shop"), "tight" (10.244.3.3, tenant "tight": one
request per second) and "server" (10.244.3.2, an HTTP/1.1 echo server on 8080; nothing
listens on 8099).
"""

import json
import os
import signal
import sys
import time

sys.path.insert(0, os.path.dirname(os.path.abspath(__file__)))
import testhosts as th  # noqa: E402
from culvertd_harness import Culvertd, check_isolated, describe, run_test  # noqa: E402

CLIENT_IP, SERVER_IP, TIGHT_IP = "10.244.3.1", "10.244.3.2", "10.244.3.3"
HTTP_VIP, TCP_VIP = "10.96.0.40", "10.96.0.41"
ECHO_PORT, DEAD_PORT, TCP_PORT = 8080, 8099, 9000

HTTP_FORMAT = """\
                json_format:
                  start: "%START_TIME%"
                  method: "%REQ(:METHOD)%"
                  path: "%REQ(:PATH)%"
                  authority: "%REQ(:AUTHORITY)%"
                  request_id: "%REQ(X-REQUEST-ID)%"
                  ua: "%REQ(X-MISSING?USER-AGENT):4%"
                  protocol: "%PROTOCOL%"
                  code: "%RESPONSE_CODE%"
                  flags: "%RESPONSE_FLAGS%"
                  details: "%RESPONSE_CODE_DETAILS%"
                  content_type: "%RESP(CONTENT-TYPE)%"
                  received: "%BYTES_RECEIVED%"
                  sent: "%BYTES_SENT%"
                  duration: "%DURATION%"
                  upstream: "%UPSTREAM_HOST%"
                  cluster: "%UPSTREAM_CLUSTER%"
                  route: "%ROUTE_NAME%"
                  failure: "%UPSTREAM_TRANSPORT_FAILURE_REASON%"
                  attempts: "%UPSTREAM_REQUEST_ATTEMPT_COUNT%"
                  remote: "%DOWNSTREAM_REMOTE_ADDRESS%"
                  local: "%DOWNSTREAM_LOCAL_ADDRESS%"
                  tenant: "%CULVERT_TENANT%"
                  pod: "%CULVERT_POD_NAMESPACE%/%CULVERT_POD_NAME%"
                  pod_ip: "%CULVERT_POD_IP%"
                  kind: http
"""

RESOURCES = """\
version_info: "1"
resources:
- "@type": type.googleapis.com/envoy.config.listener.v3.Listener
  name: http
  address: {{socket_address: {{address: {http_vip}, port_value: 80}}}}
  bind_to_port: false
  filter_chains:
  - filters:
    - name: envoy.filters.network.http_connection_manager
      typed_config:
        "@type": type.googleapis.com/envoy.extensions.filters.network.http_connection_manager.v3.HttpConnectionManager
        stat_prefix: http
        access_log:
        - name: envoy.access_loggers.file
          typed_config:
            "@type": type.googleapis.com/envoy.extensions.access_loggers.file.v3.FileAccessLog
            path: {log}
            log_format:
{http_format}
        route_config:
          name: routes
          virtual_hosts:
          - name: all
            domains: ["*"]
            routes:
            - name: ok
              match: {{prefix: /ok}}
              route: {{cluster: web}}
            - name: down
              match: {{prefix: /down}}
              route: {{cluster: dead}}
            - name: retry
              match: {{prefix: /retry}}
              route:
                cluster: dead
                retry_policy: {{retry_on: connect-failure, num_retries: 2}}
        http_filters:
        - name: envoy.filters.http.router
          typed_config: {{"@type": type.googleapis.com/envoy.extensions.filters.http.router.v3.Router}}
- "@type": type.googleapis.com/envoy.config.listener.v3.Listener
  name: tcp
  address: {{socket_address: {{address: {tcp_vip}, port_value: {tcp_port}}}}}
  bind_to_port: false
  filter_chains:
  - filters:
    - name: envoy.filters.network.tcp_proxy
      typed_config:
        "@type": type.googleapis.com/envoy.extensions.filters.network.tcp_proxy.v3.TcpProxy
        stat_prefix: tcp
        cluster: web
        access_log:
        - name: envoy.access_loggers.file
          typed_config:
            "@type": type.googleapis.com/envoy.extensions.access_loggers.file.v3.FileAccessLog
            path: {log}
            log_format:
              json_format:
                kind: tcp
                code: "%RESPONSE_CODE%"
                protocol: "%PROTOCOL%"
                flags: "%RESPONSE_FLAGS%"
                received: "%BYTES_RECEIVED%"
                sent: "%BYTES_SENT%"
                upstream: "%UPSTREAM_HOST%"
                cluster: "%UPSTREAM_CLUSTER%"
                remote: "%DOWNSTREAM_REMOTE_ADDRESS%"
                local: "%DOWNSTREAM_LOCAL_ADDRESS%"
                pod_ip: "%CULVERT_POD_IP%"
- "@type": type.googleapis.com/culvert.v1.Tenant
  name: tight
  limits: {{max_requests_per_second: 1, burst: 1}}
- "@type": type.googleapis.com/envoy.config.cluster.v3.Cluster
  name: web
  type: STATIC
  connect_timeout: 1s
  load_assignment:
    cluster_name: web
    endpoints:
    - lb_endpoints:
      - endpoint: {{address: {{socket_address: {{address: {server_ip}, port_value: {echo_port}}}}}}}
- "@type": type.googleapis.com/envoy.config.cluster.v3.Cluster
  name: dead
  type: STATIC
  connect_timeout: 1s
  load_assignment:
    cluster_name: dead
    endpoints:
    - lb_endpoints:
      - endpoint: {{address: {{socket_address: {{address: {server_ip}, port_value: {dead_port}}}}}}}
"""


def read_lines(path: str) -> list[dict]:
    try:
        with open(path) as f:
            text = f.read()
    except FileNotFoundError:
        return []
    out = []
    for line in text.splitlines():
        out.append(json.loads(line))  # every line must be one JSON object
    return out


def wait_line(path: str, pred, timeout: float = 5.0) -> dict | None:
    """The first line matching `pred`, waiting for the writer thread (50 ms turns)."""
    deadline = time.monotonic() + timeout
    while True:
        for rec in read_lines(path):
            if pred(rec):
                return rec
        if time.monotonic() > deadline:
            return None
        time.sleep(0.05)


def expect(R: th.Results, name: str, rec: dict | None, want: dict) -> None:
    if rec is None:
        R.check(name, False, "no such access-log line")
        return
    bad = {k: (rec.get(k), v) for k, v in want.items() if rec.get(k) != v}
    R.check(name, not bad, f"(got, want) = {bad}; line = {rec}")


def scenario(net: th.TestNetwork, args, R: th.Results) -> None:
    client = net.add_pod("client", CLIENT_IP)
    server = net.add_pod("server", SERVER_IP)
    d = Culvertd(net, args, R)
    check_isolated(net, R)
    net.start_echo_server(server, ECHO_PORT)
    log = net.path("access.log")
    d.start({"access_log.yaml": RESOURCES.format(http_vip=HTTP_VIP, tcp_vip=TCP_VIP, tcp_port=TCP_PORT,
                                                 server_ip=SERVER_IP, echo_port=ECHO_PORT, dead_port=DEAD_PORT,
                                                 log=log, http_format=HTTP_FORMAT.rstrip("\n"))})
    d.enroll(client, namespace="shop", name="web-client")

    def curl(*a: str):
        return client.curl(*a, cgroup=d.cgroup, max_time=10, timeout=30)

    common = {"pod_ip": CLIENT_IP, "tenant": "shop", "pod": "shop/web-client", "kind": "http",
              "local": f"{HTTP_VIP}:80"}

    # --- HTTP/1.1 200
    cp = curl("-H", "x-request-id: rid-h1", "-A", "curl-test", f"http://{HTTP_VIP}/ok/one")
    R.check("HTTP/1.1 request answered", cp.returncode == 0 and "path=/ok/one" in cp.stdout, describe(cp))
    rec = wait_line(log, lambda r: r.get("request_id") == "rid-h1")
    expect(R, "HTTP/1.1 200: exact fields", rec, dict(
        common, method="GET", path="/ok/one", authority=HTTP_VIP, ua="curl", protocol="HTTP/1.1", code=200,
        flags="-", details="via_upstream", content_type="text/plain", received=0, sent=len(cp.stdout),
        upstream=f"{SERVER_IP}:{ECHO_PORT}", cluster="web", route="ok", failure=None, attempts=1))
    if rec:
        R.check("HTTP/1.1: the remote address is the pod's IP with the client's port, never 127.0.0.1",
                rec["remote"].startswith(CLIENT_IP + ":") and rec["remote"].split(":")[1].isdigit(), rec["remote"])
        R.check("HTTP/1.1: numbers are JSON numbers, START_TIME is ISO 8601 UTC with ms",
                isinstance(rec["duration"], int) and rec["start"].endswith("Z") and len(rec["start"]) == 24,
                str(rec))

    # --- HTTP/2 200 (prior knowledge)
    cp = curl("--http2-prior-knowledge", "-H", "x-request-id: rid-h2", f"http://{HTTP_VIP}/ok/two")
    R.check("HTTP/2 request answered", cp.returncode == 0 and "path=/ok/two" in cp.stdout, describe(cp))
    expect(R, "HTTP/2 200: exact fields", wait_line(log, lambda r: r.get("request_id") == "rid-h2"), dict(
        common, method="GET", path="/ok/two", protocol="HTTP/2", code=200, flags="-", details="via_upstream",
        sent=len(cp.stdout), upstream=f"{SERVER_IP}:{ECHO_PORT}", cluster="web", route="ok", attempts=1))

    # --- 503: upstream connect failure (nothing listens on DEAD_PORT)
    cp = curl("-H", "x-request-id: rid-uf", "-o", "/dev/null", "-w", "%{http_code}", f"http://{HTTP_VIP}/down")
    R.check("connect failure answered 503", cp.stdout.strip() == "503", describe(cp))
    rec = wait_line(log, lambda r: r.get("request_id") == "rid-uf")
    expect(R, "503 connect failure: UF with the reason", rec, dict(
        common, code=503, flags="UF", details="upstream_reset_before_response_started{connection_failure}",
        upstream=f"{SERVER_IP}:{DEAD_PORT}", cluster="dead", route="down", attempts=1))
    if rec:
        R.check("503 connect failure: UPSTREAM_TRANSPORT_FAILURE_REASON names the refusal",
                isinstance(rec["failure"], str) and "refused" in rec["failure"].lower(), str(rec["failure"]))

    # --- 503 after retries: URX + UF, three attempts
    cp = curl("-H", "x-request-id: rid-urx", "-o", "/dev/null", "-w", "%{http_code}", f"http://{HTTP_VIP}/retry")
    R.check("retries used up answered 503", cp.stdout.strip() == "503", describe(cp))
    expect(R, "retries used up: UF,URX after 3 attempts", wait_line(log, lambda r: r.get("request_id") == "rid-urx"),
           dict(common, code=503, flags="UF,URX", attempts=3, route="retry"))

    # --- 404: no route (a path no route matches)
    cp = curl("-H", "x-request-id: rid-nr", "-o", "/dev/null", "-w", "%{http_code}", f"http://{HTTP_VIP}/nothing")
    R.check("no route answered 404", cp.stdout.strip() == "404", describe(cp))
    expect(R, "404 no route: NR", wait_line(log, lambda r: r.get("request_id") == "rid-nr"), dict(
        common, code=404, flags="NR", details="route_not_found", upstream=None, cluster=None, route=None,
        attempts=0))

    # --- a tenant over its request-rate budget: 503 + OM, the budget in the details
    tight = net.add_pod("tight", TIGHT_IP)
    d.enroll(tight, namespace="tight", name="tight-client")
    cp = tight.curl("-H", "x-request-id: rid-om", "-o", "/dev/null", "-o", "/dev/null", "-o", "/dev/null",
                    "-w", "%{http_code} ", *[f"http://{HTTP_VIP}/ok/{i}" for i in range(3)],
                    cgroup=d.cgroup, max_time=10, timeout=30)
    R.check("tight tenant: part of a burst of 3 is shed with 503", "503" in cp.stdout, describe(cp))
    expect(R, "tenant shed: OM with the budget", wait_line(log, lambda r: r.get("request_id") == "rid-om" and
                                                                 r.get("code") == 503), dict(
        common, code=503, flags="OM", details="tenant_over_budget{tenant-request-rate}", tenant="tight",
        pod="tight/tight-client", pod_ip=TIGHT_IP, upstream=None, route=None, attempts=0))

    # --- TCP proxy: one line per connection, in the same file (opened once)
    cp = curl(f"http://{TCP_VIP}:{TCP_PORT}/tcp-path")
    R.check("TCP proxy connection answered", cp.returncode == 0 and "path=/tcp-path" in cp.stdout, describe(cp))
    rec = wait_line(log, lambda r: r.get("kind") == "tcp")
    expect(R, "TCP proxy: exact fields", rec, dict(
        kind="tcp", code=0, protocol=None, flags="-", upstream=f"{SERVER_IP}:{ECHO_PORT}", cluster="web",
        local=f"{TCP_VIP}:{TCP_PORT}", pod_ip=CLIENT_IP))
    if rec:
        R.check("TCP proxy: bytes both ways counted", rec["received"] > 50 and rec["sent"] > len(cp.stdout),
                str(rec))
        R.check("TCP proxy: remote address is the pod's", rec["remote"].startswith(CLIENT_IP + ":"), rec["remote"])

    # --- logrotate: rename, SIGUSR1, the next line lands in a new file
    rotated = log + ".1"
    os.rename(log, rotated)
    d.proc.send_signal(signal.SIGUSR1)
    deadline = time.monotonic() + 5
    while not os.path.exists(log) and time.monotonic() < deadline:
        time.sleep(0.05)
    cp = curl("-H", "x-request-id: rid-rotated", f"http://{HTTP_VIP}/ok/three")
    R.check("after SIGUSR1: the line goes to the new file",
            wait_line(log, lambda r: r.get("request_id") == "rid-rotated") is not None,
            f"new file: {th._read(log)[:300]!r}")
    R.check("after SIGUSR1: the rotated file keeps the old lines and gets no new one",
            any(r.get("request_id") == "rid-h1" for r in read_lines(rotated)) and
            not any(r.get("request_id") == "rid-rotated" for r in read_lines(rotated)))

    # --- the drop counter exists and nothing was dropped at this rate
    dropped = d.metric("culvert_access_log_dropped_total", {"path": log})
    R.check("culvert_access_log_dropped_total{path} is exported and 0", dropped == 0, str(dropped))
    written = d.metric("culvert_access_log_written_bytes_total", {"path": log})
    R.check("culvert_access_log_written_bytes_total{path} counts what was written",
            written is not None and written >= os.path.getsize(rotated) + os.path.getsize(log), str(written))


if __name__ == "__main__":
    sys.exit(run_test("integration_access_log", scenario))
