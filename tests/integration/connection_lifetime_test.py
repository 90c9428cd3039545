#!/usr/bin/python3
"""Connection lifetimes (common_http_protocol_options) through capture: upstream (a
cluster's) and downstream (an HttpConnectionManager's, HTTP/1.1 and HTTP/2).

    /usr/bin/python3 tests/integration/connection_lifetime_test.py \
        --culvertd build/agent/culvertd --culvertctl build/agent/culvertctl

Needs root (exit 77 = skip when not root, unless CULVERT_REQUIRE_PRIVILEGED=1).
Pod "client" (10.244.1.1) sends to the never-routed VIP 10.96.0.10:80; fault upstreams
(fault_upstream.py: a 10.244.1.2, b .3) record every connection they accepted and when
its peer closed it. One worker, so that every request shares one pool. The downstream
checks use a second VIP (10.96.0.11) whose connection manager closes idle keep-alive
connections and drains old ones, and a third (10.96.0.12, codec AUTO, drain_timeout
200 ms) that HTTP/2 clients reach: the drain there is Envoy's (GOAWAY 2^31-1 notice, the
final GOAWAY drain_timeout later, close once the admitted streams are done). Last, an
endpoint leaving its cluster (bootstrap drain_timeout 1 s): requests stalled on it are
ended at the drain timeout — a 503 without a retry policy, a retry to the new endpoint
with retry_on: reset — over an HTTP/1.1 cluster and an HTTP/2 one (fault_upstream_h2.py
on port 8090 of the same pods; its connection gets a GOAWAY when the endpoint leaves).
"""

import json
import os
import re
import subprocess
import sys
import time
import uuid

sys.path.insert(0, os.path.dirname(os.path.abspath(__file__)))
import testhosts as th  # noqa: E402
from culvertd_harness import Culvertd, check_isolated, describe, run_test  # noqa: E402
from fault_upstream import FaultUpstream, attempts, connections  # noqa: E402
from fault_upstream_h2 import FaultUpstreamH2  # noqa: E402

CLIENT_IP = "10.244.1.1"
SERVERS = {"a": "10.244.1.2", "b": "10.244.1.3"}
PORT = 8080
H2_PORT = 8090
VIP = "10.96.0.10"
IDLE_TIMEOUT = 0.3
MAX_DURATION = 0.6
MAX_REQUESTS = 3  # max_requests_per_connection of clusters counted and counted-h2
DOWNSTREAM_VIP = "10.96.0.11"
DOWNSTREAM_IDLE = 0.3
DOWNSTREAM_MAX = 0.8
H2_VIP = "10.96.0.12"
H2_DRAIN = 0.2
SHUTDOWN_NOTICE_ID = 2**31 - 1
ENDPOINT_DRAIN = 1.0  # bootstrap drain_timeout, seconds
# The resource directory is re-read 200 ms after the last change; then the apply.
RELOAD_SLACK = 0.6


def cluster(name: str, ip: str, common: str, protocol: str = "http_protocol_options", port: int = PORT) -> str:
    return f"""
- "@type": type.googleapis.com/envoy.config.cluster.v3.Cluster
  name: {name}
  type: STATIC
  connect_timeout: 1s
  typed_extension_protocol_options:
    envoy.extensions.upstreams.http.v3.HttpProtocolOptions:
      "@type": type.googleapis.com/envoy.extensions.upstreams.http.v3.HttpProtocolOptions
      common_http_protocol_options: {{{common}}}
      explicit_http_config: {{{protocol}: {{}}}}
  load_assignment:
    cluster_name: {name}
    endpoints:
    - lb_endpoints:
      - endpoint: {{address: {{socket_address: {{address: {ip}, port_value: {port}}}}}}}
"""


RESOURCES = f"""\
version_info: "1"
resources:
- "@type": type.googleapis.com/envoy.config.listener.v3.Listener
  name: vip
  address: {{socket_address: {{address: {VIP}, port_value: 80}}}}
  bind_to_port: false
  filter_chains:
  - filters:
    - name: envoy.filters.network.http_connection_manager
      typed_config:
        "@type": type.googleapis.com/envoy.extensions.filters.network.http_connection_manager.v3.HttpConnectionManager
        stat_prefix: vip
        route_config:
          name: local
          virtual_hosts:
          - name: all
            domains: ["*"]
            routes:
            - match: {{prefix: "/idle"}}
              route: {{cluster: idle}}
            - match: {{prefix: "/aged"}}
              route: {{cluster: aged}}
            - match: {{prefix: "/counted-h2"}}
              route: {{cluster: counted-h2}}
            - match: {{prefix: "/counted"}}
              route: {{cluster: counted}}
            - match: {{prefix: "/leaving-h2-retry"}}
              route: {{cluster: leaving-h2, retry_policy: {{retry_on: reset, num_retries: 1}}}}
            - match: {{prefix: "/leaving-h2"}}
              route: {{cluster: leaving-h2}}
            - match: {{prefix: "/leaving-retry"}}
              route: {{cluster: leaving, retry_policy: {{retry_on: reset, num_retries: 1}}}}
            - match: {{prefix: "/leaving"}}
              route: {{cluster: leaving}}
        http_filters:
        - name: envoy.filters.http.router
          typed_config: {{"@type": type.googleapis.com/envoy.extensions.filters.http.router.v3.Router}}
- "@type": type.googleapis.com/envoy.config.listener.v3.Listener
  name: downstream
  address: {{socket_address: {{address: {DOWNSTREAM_VIP}, port_value: 80}}}}
  bind_to_port: false
  filter_chains:
  - filters:
    - name: envoy.filters.network.http_connection_manager
      typed_config:
        "@type": type.googleapis.com/envoy.extensions.filters.network.http_connection_manager.v3.HttpConnectionManager
        stat_prefix: downstream
        codec_type: HTTP1
        common_http_protocol_options: {{idle_timeout: {DOWNSTREAM_IDLE}s, max_connection_duration: {DOWNSTREAM_MAX}s}}
        route_config:
          name: downstream
          virtual_hosts:
          - name: all
            domains: ["*"]
            routes:
            - match: {{prefix: "/"}}
              route: {{cluster: plain}}
        http_filters:
        - name: envoy.filters.http.router
          typed_config: {{"@type": type.googleapis.com/envoy.extensions.filters.http.router.v3.Router}}
- "@type": type.googleapis.com/envoy.config.listener.v3.Listener
  name: downstream-h2
  address: {{socket_address: {{address: {H2_VIP}, port_value: 80}}}}
  bind_to_port: false
  filter_chains:
  - filters:
    - name: envoy.filters.network.http_connection_manager
      typed_config:
        "@type": type.googleapis.com/envoy.extensions.filters.network.http_connection_manager.v3.HttpConnectionManager
        stat_prefix: downstream_h2
        codec_type: AUTO
        common_http_protocol_options: {{idle_timeout: {DOWNSTREAM_IDLE}s, max_connection_duration: {DOWNSTREAM_MAX}s}}
        drain_timeout: {H2_DRAIN}s
        route_config:
          name: downstream-h2
          virtual_hosts:
          - name: all
            domains: ["*"]
            routes:
            - match: {{prefix: "/"}}
              route: {{cluster: plain}}
        http_filters:
        - name: envoy.filters.http.router
          typed_config: {{"@type": type.googleapis.com/envoy.extensions.filters.http.router.v3.Router}}
""" + cluster("plain", SERVERS["a"], "") + cluster("idle", SERVERS["a"], f"idle_timeout: {IDLE_TIMEOUT}s") + cluster(
    "aged", SERVERS["b"], f"idle_timeout: 10s, max_connection_duration: {MAX_DURATION}s") + cluster(
    "counted", SERVERS["b"], f"max_requests_per_connection: {MAX_REQUESTS}") + cluster(
    "counted-h2", SERVERS["b"], f"max_requests_per_connection: {MAX_REQUESTS}", protocol="http2_protocol_options",
    port=H2_PORT)

def leaving_cluster(server: str) -> str:
    return "version_info: \"1\"\nresources:" + cluster("leaving", SERVERS[server], "") + cluster(
        "leaving-h2", SERVERS[server], "", protocol="http2_protocol_options", port=H2_PORT)


# One request for `path` that the upstream stalls (only its first attempt, with
# x-fault-fail-first); prints its status (or "none") and when it ended.
STALLED_CLIENT = r"""
import socket, sys, time
vip, path, key = sys.argv[1], sys.argv[2], sys.argv[3]
s = socket.create_connection((vip, 80), timeout=30)
s.sendall(("GET %s HTTP/1.1\r\nHost: x\r\nx-fault-key: %s\r\nx-fault-stall: 1\r\nx-fault-fail-first: 1\r\n"
           "Connection: close\r\n\r\n" % (path, key)).encode())
data = b""
try:
    while True:
        chunk = s.recv(4096)
        if not chunk:
            break
        data += chunk
except OSError:
    pass
print("STATUS=%s ENDED=%.4f" % (data.split(b" ", 2)[1].decode() if b" " in data else "none", time.monotonic()),
      flush=True)
"""


# Sends `count` requests for `path`, one every `gap` seconds, each on a new downstream
# connection (so that only the upstream side is pooled); prints each status.
SEQUENTIAL_CLIENT = r"""
import socket, sys, time
vip, path, key, count, gap = sys.argv[1], sys.argv[2], sys.argv[3], int(sys.argv[4]), float(sys.argv[5])
start = time.monotonic()
for i in range(count):
    time.sleep(max(0.0, start + i * gap - time.monotonic()))
    s = socket.create_connection((vip, 80), timeout=5)
    s.sendall(("GET %s HTTP/1.1\r\nHost: x\r\nx-fault-key: %s\r\nConnection: close\r\n\r\n" % (path, key)).encode())
    data = b""
    while True:
        chunk = s.recv(4096)
        if not chunk:
            break
        data += chunk
    s.close()
    print("STATUS=%s" % data.split(b" ", 2)[1].decode() if b" " in data else "STATUS=none", flush=True)
"""


# One keep-alive connection. "idle": one request, then wait; prints how long after its
# answer the connection was closed. "busy": a request every 0.1 s until the connection
# ends; prints how long it lived, how many answers came and whether the last one said
# "connection: close". "inflight": quick requests every 0.1 s (never idle), then at 0.6 s
# one the upstream answers 400 ms later (in flight at max_connection_duration); prints
# as "busy".
KEEPALIVE_CLIENT = r"""
import select, socket, sys, time
vip, mode = sys.argv[1], sys.argv[2]
s = socket.create_connection((vip, 80), timeout=5)
t0 = time.monotonic()
buf = b""
def answer():
    global buf
    while b"\r\n\r\n" not in buf:
        chunk = s.recv(4096)
        if not chunk:
            return None
        buf += chunk
    head, _, buf = buf.partition(b"\r\n\r\n")
    lines = head.decode(errors="replace").lower().split("\r\n")
    length = 0
    for line in lines[1:]:
        if line.startswith("content-length:"):
            length = int(line.split(":", 1)[1])
    while len(buf) < length:
        chunk = s.recv(4096)
        if not chunk:
            return None
        buf += chunk
    buf = buf[length:]
    return "connection: close" in lines
def wait_close():
    try:
        while s.recv(4096):
            pass
    except OSError:
        pass
    return time.monotonic()
request = b"GET /ds HTTP/1.1\r\nHost: x\r\n\r\n"
if mode == "idle":
    s.sendall(request)
    answer()
    t1 = time.monotonic()
    print("CLOSED_AFTER=%.3f" % (wait_close() - t1))
elif mode == "inflight":
    n = 0
    while time.monotonic() - t0 < 0.55:
        s.sendall(request)
        n += answer() is not None
        time.sleep(0.1)
    s.sendall(b"GET /ds HTTP/1.1\r\nHost: x\r\nx-fault-delay-ms: 400\r\n\r\n")
    said_close = answer()
    n += said_close is not None
    wait_close()
    print("LIFE=%.3f ANSWERS=%d LAST_SAID_CLOSE=%d" % (time.monotonic() - t0, n, bool(said_close)))
else:
    n, last_close = 0, False
    while time.monotonic() - t0 < 5:
        try:
            s.sendall(request)
            said_close = answer()
        except OSError:
            said_close = None
        if said_close is None:
            break
        n, last_close = n + 1, said_close
        if said_close:
            wait_close()
            break
        # Idle between requests: a close then is seen when it happens, not at the next send.
        if select.select([s], [], [], 0.1)[0]:
            wait_close()
            break
    print("LIFE=%.3f ANSWERS=%d LAST_SAID_CLOSE=%d" % (time.monotonic() - t0, n, last_close))
"""


# One HTTP/2 (prior knowledge) connection, spoken by hand (python3-h2 is not installed):
# HPACK literals out; in, only the :status of a response head, which nghttp2 sends as a
# static-table index. Prints JSON: every GOAWAY (last stream id, when), every stream (when
# opened, its status, when it ended) and when the connection closed, in seconds since the
# connection was made. "idle": one request, then wait. "busy": a request every 0.1 s until
# a GOAWAY comes. "inflight": one request the upstream answers 1.2 s later.
H2_CLIENT = r"""
import json, socket, struct, sys, time
vip, mode = sys.argv[1], sys.argv[2]
STATUS = {8: "200", 9: "204", 10: "206", 11: "304", 12: "400", 13: "404", 14: "500"}
def frame(t, flags, sid, payload=b""):
    return struct.pack(">I", len(payload))[1:] + bytes([t, flags]) + struct.pack(">I", sid) + payload
def lit(n, v):
    n, v = n.encode(), v.encode()
    return b"\x00" + bytes([len(n)]) + n + bytes([len(v)]) + v
s = socket.create_connection((vip, 80), timeout=10)
t0 = time.monotonic()
now = lambda: round(time.monotonic() - t0, 4)
out = {"goaways": [], "streams": {}, "eof": None}
next_id, buf = 1, b""
def request(extra=()):
    global next_id
    sid, next_id = next_id, next_id + 2
    block = lit(":method", "GET") + lit(":scheme", "http") + lit(":path", "/ds") + lit(":authority", "vip")
    for n, v in extra:
        block += lit(n, v)
    s.sendall(frame(1, 0x5, sid, block))
    out["streams"][sid] = {"opened": now(), "status": None, "ended": None}
    return sid
def pump(until):
    global buf
    while out["eof"] is None:
        left = until - time.monotonic()
        if left <= 0:
            return
        s.settimeout(left)
        try:
            d = s.recv(65536)
        except socket.timeout:
            return
        except OSError:
            d = b""
        if not d:
            out["eof"] = now()
            return
        buf += d
        while len(buf) >= 9 and len(buf) >= 9 + int.from_bytes(buf[:3], "big"):
            n = int.from_bytes(buf[:3], "big")
            t, flags, sid, p = buf[3], buf[4], int.from_bytes(buf[5:9], "big") & 0x7fffffff, buf[9:9 + n]
            buf = buf[9 + n:]
            st = out["streams"].get(sid)
            if t == 4 and not flags & 1:
                s.sendall(frame(4, 1, 0))
            elif t == 7:
                out["goaways"].append({"last": int.from_bytes(p[:4], "big") & 0x7fffffff, "at": now()})
            elif t == 1 and st is not None:
                st["status"] = STATUS.get(p[0] & 0x7f, "?") if p and p[0] & 0x80 else "?"
            if t in (0, 1) and flags & 1 and st is not None:
                st["ended"] = now()
s.sendall(b"PRI * HTTP/2.0\r\n\r\nSM\r\n\r\n" + frame(4, 0, 0))
if mode == "idle":
    sid = request()
    while out["streams"][sid]["ended"] is None and out["eof"] is None and now() < 5:
        pump(time.monotonic() + 0.05)
elif mode == "busy":
    while not out["goaways"] and out["eof"] is None and now() < 5:
        request()
        pump(time.monotonic() + 0.1)
else:
    request([("x-fault-delay-ms", "1200")])
pump(time.monotonic() + 5)
print("H2=" + json.dumps(out))
"""


def tolerance(expected_s: float) -> float:
    return max(0.025, 0.1 * expected_s)


def wait_for(predicate, timeout: float = 5.0):
    deadline = time.monotonic() + timeout
    while True:
        value = predicate()
        if value or time.monotonic() > deadline:
            return value
        time.sleep(0.02)


def scenario(net: th.TestNetwork, args, R: th.Results) -> None:
    client = net.add_pod("client", CLIENT_IP)
    pods = {name: net.add_pod(name, ip) for name, ip in SERVERS.items()}
    check_isolated(net, R)
    log = net.path("attempts.jsonl")
    for name, pod in pods.items():
        FaultUpstream.start(net, pod, PORT, name, log)
        FaultUpstreamH2.start(net, pod, H2_PORT, name + "-h2", log)

    d = Culvertd(net, args, R, workers=1, extra_bootstrap=f"drain_timeout: {ENDPOINT_DRAIN:.0f}\n")
    d.start({"lifetime.yaml": RESOURCES, "leaving.yaml": leaving_cluster("a")})
    d.enroll(client)
    script = net.path("sequential_client.py")
    with open(script, "w") as f:
        f.write(SEQUENTIAL_CLIENT)

    def send(path: str, key: str, count: int, gap: float):
        cp = client.run([th.PYTHON, "-B", script, VIP, path, key, str(count), str(gap)], cgroup=d.cgroup,
                        timeout=30, check=False)
        statuses = re.findall(r"STATUS=(\S+)", cp.stdout)
        R.check(f"{path}: {count} answers 200", statuses == ["200"] * count, describe(cp))

    # --- idle_timeout: the pooled connection is closed 300 ms after its exchange
    key = f"idle-{uuid.uuid4().hex[:8]}"
    send("/idle", key, 1, 0)
    seen = attempts(log, key)
    closed = wait_for(lambda: connections(log, "a"))
    R.check("idle_timeout: the upstream saw its connection closed", len(closed) == 1, str(closed))
    if closed and seen:
        idle = closed[0]["closed"] - seen[0]["t"]
        print(f"measured: upstream idle close {idle * 1000:.0f} ms after the exchange (want {IDLE_TIMEOUT * 1000:.0f})")
        R.check(f"idle_timeout: closed {IDLE_TIMEOUT * 1000:.0f} ms after the exchange",
                abs(idle - IDLE_TIMEOUT) <= tolerance(IDLE_TIMEOUT), f"after {idle * 1000:.0f} ms")
    got = d.wait_metric("culvert_upstream_cx_idle_timeout_total", 1, {"cluster": "idle"})
    R.check("culvert_upstream_cx_idle_timeout_total{cluster=idle} = 1", got == 1, f"got {got}")

    # --- max_connection_duration: reused until 600 ms old, then replaced
    key = f"aged-{uuid.uuid4().hex[:8]}"
    send("/aged", key, 12, 0.1)
    seen = attempts(log, key)
    ports = [a["peer_port"] for a in seen]
    first = wait_for(lambda: [c for c in connections(log, "b") if ports and c["peer_port"] == ports[0]])
    R.check("max_connection_duration: the first connection was reused", ports[:2] == [ports[0]] * 2, str(ports))
    R.check("max_connection_duration: a new connection replaced it", len(set(ports)) >= 2, str(ports))
    if first:
        life = first[0]["closed"] - first[0]["opened"]
        print(f"measured: first upstream connection lived {life * 1000:.0f} ms (want {MAX_DURATION * 1000:.0f}), "
              f"{first[0]['requests']} requests; ports {ports}")
        R.check(f"max_connection_duration: the first connection closed {MAX_DURATION * 1000:.0f} ms after it opened",
                abs(life - MAX_DURATION) <= tolerance(MAX_DURATION),
                f"lived {life * 1000:.0f} ms, {first[0]['requests']} requests")
    else:
        R.check("max_connection_duration: the first connection closed", False, str(connections(log, "b")))
    got = d.wait_metric("culvert_upstream_cx_max_duration_reached_total", 1, {"cluster": "aged"})
    R.check("culvert_upstream_cx_max_duration_reached_total{cluster=aged} >= 1", (got or 0) >= 1, f"got {got}")
    R.check("aged: no idle_timeout closes", (d.metric("culvert_upstream_cx_idle_timeout_total",
                                                      {"cluster": "aged"}) or 0) == 0)

    # --- max_requests_per_connection: 3 requests a connection, then a new one (both protocols)
    for path, cluster_name in (("/counted", "counted"), ("/counted-h2", "counted-h2")):
        key = f"{cluster_name}-{uuid.uuid4().hex[:8]}"
        send(f"{path}/{key}", key, 7, 0)
        ports = [a["peer_port"] for a in attempts(log, key)]
        R.check(f"{cluster_name}: max_requests_per_connection {MAX_REQUESTS}: 7 sequential requests on 3 connections "
                "in turn, 3 + 3 + 1", len(ports) == 7 and ports[0:3] == [ports[0]] * 3 and ports[3:6] == [ports[3]] * 3
                and len({ports[0], ports[3], ports[6]}) == 3, str(ports))
        got = d.wait_metric("culvert_upstream_cx_max_requests_total", 2, {"cluster": cluster_name})
        R.check(f"culvert_upstream_cx_max_requests_total{{cluster={cluster_name}}} = 2", got == 2, f"got {got}")

    # --- downstream: an idle keep-alive connection is closed, an old one drained
    keepalive = net.path("keepalive_client.py")
    with open(keepalive, "w") as f:
        f.write(KEEPALIVE_CLIENT)

    def keepalive_run(mode: str):
        cp = client.run([th.PYTHON, "-B", keepalive, DOWNSTREAM_VIP, mode], cgroup=d.cgroup, timeout=30, check=False)
        print(f"measured: downstream {mode}: {cp.stdout.strip()}")
        return cp

    cp = keepalive_run("idle")
    m = re.search(r"CLOSED_AFTER=([0-9.]+)", cp.stdout)
    R.check(f"downstream idle_timeout: closed {DOWNSTREAM_IDLE * 1000:.0f} ms after the answer",
            m is not None and abs(float(m.group(1)) - DOWNSTREAM_IDLE) <= tolerance(DOWNSTREAM_IDLE), describe(cp))
    got = d.wait_metric("culvert_downstream_cx_idle_timeout_total", 1)
    R.check("culvert_downstream_cx_idle_timeout_total = 1", got == 1, f"got {got}")

    cp = keepalive_run("busy")
    m = re.search(r"LIFE=([0-9.]+) ANSWERS=(\d+) LAST_SAID_CLOSE=(\d)", cp.stdout)
    R.check(f"downstream max_connection_duration: the connection ended {DOWNSTREAM_MAX * 1000:.0f} ms after it opened",
            m is not None and abs(float(m.group(1)) - DOWNSTREAM_MAX) <= tolerance(DOWNSTREAM_MAX), describe(cp))
    R.check("downstream max_connection_duration: reused until then (a request every 100 ms)",
            m is not None and int(m.group(2)) >= 5, describe(cp))
    got = d.wait_metric("culvert_downstream_cx_max_duration_reached_total", 1)
    R.check("culvert_downstream_cx_max_duration_reached_total = 1", got == 1, f"got {got}")
    R.check("the busy connection was never idle long enough to time out",
            d.metric("culvert_downstream_cx_idle_timeout_total") == 1)

    cp = keepalive_run("inflight")
    m = re.search(r"LIFE=([0-9.]+) ANSWERS=(\d+) LAST_SAID_CLOSE=(\d)", cp.stdout)
    R.check("downstream max_connection_duration, request in flight: answered with connection: close",
            m is not None and int(m.group(2)) >= 2 and m.group(3) == "1", describe(cp))
    R.check("downstream max_connection_duration, request in flight: closed after its answer",
            m is not None and float(m.group(1)) > DOWNSTREAM_MAX + 0.2, describe(cp))
    got = d.wait_metric("culvert_downstream_cx_max_duration_reached_total", 2)
    R.check("culvert_downstream_cx_max_duration_reached_total = 2", got == 2, f"got {got}")

    # --- downstream HTTP/2 (codec AUTO, the sniff picks HTTP/2): the same lifetime, drained
    # with GOAWAY: the notice (2^31-1), the final GOAWAY drain_timeout later, then close.
    h2_client = net.path("h2_client.py")
    with open(h2_client, "w") as f:
        f.write(H2_CLIENT)

    def h2_run(mode: str) -> dict:
        cp = client.run([th.PYTHON, "-B", h2_client, H2_VIP, mode], cgroup=d.cgroup, timeout=30, check=False)
        print(f"measured: downstream HTTP/2 {mode}: {cp.stdout.strip()}")
        m = re.search(r"H2=(.*)", cp.stdout)
        R.check(f"HTTP/2 {mode}: the client ran", m is not None, describe(cp), fatal=True)
        return json.loads(m.group(1))

    def about(measured, want: float) -> bool:
        return measured is not None and abs(measured - want) <= tolerance(want)

    def goaway_ids(out: dict) -> list:
        return [g["last"] for g in out["goaways"]]

    idle_before = d.metric("culvert_downstream_cx_idle_timeout_total") or 0
    max_before = d.metric("culvert_downstream_cx_max_duration_reached_total") or 0
    out = h2_run("idle")
    stream = out["streams"]["1"]
    R.check("HTTP/2 idle: the request was answered 200", stream["status"] == "200", str(out))
    R.check("HTTP/2 idle: the notice, then the final GOAWAY naming stream 1",
            goaway_ids(out) == [SHUTDOWN_NOTICE_ID, 1], str(out))
    if stream["ended"] is not None and len(out["goaways"]) == 2:
        R.check(f"HTTP/2 idle: the notice {DOWNSTREAM_IDLE * 1000:.0f} ms after the answer (idle_timeout)",
                about(out["goaways"][0]["at"] - stream["ended"], DOWNSTREAM_IDLE), str(out))
        R.check(f"HTTP/2 idle: the final GOAWAY {H2_DRAIN * 1000:.0f} ms later (drain_timeout)",
                about(out["goaways"][1]["at"] - stream["ended"], DOWNSTREAM_IDLE + H2_DRAIN), str(out))
        R.check("HTTP/2 idle: closed with the final GOAWAY",
                out["eof"] is not None and about(out["eof"] - stream["ended"], DOWNSTREAM_IDLE + H2_DRAIN), str(out))
    got = d.wait_metric("culvert_downstream_cx_idle_timeout_total", idle_before + 1)
    R.check("HTTP/2 idle: culvert_downstream_cx_idle_timeout_total rose by 1", got == idle_before + 1,
            f"before={idle_before} got {got}")

    out = h2_run("busy")
    answered = [st for st in out["streams"].values() if st["status"] == "200" and st["ended"] is not None]
    R.check("HTTP/2 busy: reused until max_connection_duration (a stream every 100 ms, all 200)",
            len(answered) >= 5 and len(answered) == len(out["streams"]), str(out))
    R.check("HTTP/2 busy: the notice, then the final GOAWAY naming the last stream opened",
            goaway_ids(out) == [SHUTDOWN_NOTICE_ID, max(int(k) for k in out["streams"])], str(out))
    if len(out["goaways"]) == 2:
        R.check(f"HTTP/2 busy: the notice at max_connection_duration ({DOWNSTREAM_MAX * 1000:.0f} ms)",
                about(out["goaways"][0]["at"], DOWNSTREAM_MAX), str(out))
        R.check(f"HTTP/2 busy: closed with the final GOAWAY {H2_DRAIN * 1000:.0f} ms later",
                about(out["goaways"][1]["at"], DOWNSTREAM_MAX + H2_DRAIN) and about(out["eof"], DOWNSTREAM_MAX + H2_DRAIN),
                str(out))
    got = d.wait_metric("culvert_downstream_cx_max_duration_reached_total", max_before + 1)
    R.check("HTTP/2 busy: culvert_downstream_cx_max_duration_reached_total rose by 1", got == max_before + 1,
            f"before={max_before} got {got}")

    out = h2_run("inflight")
    stream = out["streams"]["1"]
    R.check("HTTP/2 in flight at max_connection_duration: the notice, then the final GOAWAY naming it",
            goaway_ids(out) == [SHUTDOWN_NOTICE_ID, 1], str(out))
    R.check("HTTP/2 in flight: its answer (1.2 s) still came, 200", stream["status"] == "200"
            and stream["ended"] is not None and stream["ended"] >= 1.2, str(out))
    R.check("HTTP/2 in flight: the connection closed right after it",
            out["eof"] is not None and stream["ended"] is not None and 0 <= out["eof"] - stream["ended"] <= 0.05,
            str(out))
    got = d.wait_metric("culvert_downstream_cx_max_duration_reached_total", max_before + 2)
    R.check("HTTP/2 in flight: culvert_downstream_cx_max_duration_reached_total rose by 1", got == max_before + 2,
            f"before={max_before} got {got}")

    # A real client (nghttp) through the same drain: it sees both GOAWAYs and its answer.
    cp = client.run(["/usr/bin/nghttp", "-v", "-H", "x-fault-delay-ms: 1200", f"http://{H2_VIP}/ds"],
                    cgroup=d.cgroup, timeout=30, check=False)
    seen = [int(i) for i in re.findall(r"recv GOAWAY frame.*?last_stream_id=(\d+)", cp.stdout, re.S)]
    request_ids = re.findall(r"send HEADERS frame <[^>]*stream_id=(\d+)>", cp.stdout)
    statuses = re.findall(r":status: \d+", cp.stdout)
    print(f"measured: nghttp: GOAWAY last stream ids {seen}, request stream {request_ids}, {statuses}")
    R.check("nghttp: the notice, then the final GOAWAY naming its stream; the answer 200; exit 0",
            cp.returncode == 0 and len(request_ids) == 1 and seen == [SHUTDOWN_NOTICE_ID, int(request_ids[0])]
            and ":status: 200" in cp.stdout, describe(cp))

    # --- an endpoint leaves its cluster (DESIGN §5): two requests stalled on it are ended
    # at the drain timeout; the one whose route retries on reset goes to the new endpoint.
    stalled = net.path("stalled_client.py")
    with open(stalled, "w") as f:
        f.write(STALLED_CLIENT)
    paths = ("/leaving", "/leaving-retry", "/leaving-h2", "/leaving-h2-retry")
    keys = {path: f"leaving-{uuid.uuid4().hex[:8]}" for path in paths}
    procs = {path: client.spawn([th.PYTHON, "-B", stalled, VIP, path, key], cgroup=d.cgroup,
                                stdout=subprocess.PIPE, stderr=subprocess.PIPE, text=True)
             for path, key in keys.items()}
    both_stalled = wait_for(lambda: all(attempts(log, key) for key in keys.values()))
    R.check("endpoint drain: every request reached a and stalls there", bool(both_stalled),
            str({k: attempts(log, k) for k in keys.values()}))
    left = time.monotonic()
    d.write_resources("leaving.yaml", leaving_cluster("b"))
    ended = {}
    for path, proc in procs.items():
        try:
            out, err = proc.communicate(timeout=20)
        except subprocess.TimeoutExpired:
            net.stop(proc)
            out, err = proc.communicate()
        m = re.search(r"STATUS=(\S+) ENDED=([0-9.]+)", out)
        ended[path] = (m.group(1), float(m.group(2)) - left) if m else (None, None)
        print(f"measured: endpoint drain {path}: {ended[path][0]} {ended[path][1] or 0:.3f} s after a left "
              f"(drain_timeout {ENDPOINT_DRAIN:.0f} s, reload within {RELOAD_SLACK} s)")
    for path in procs:
        status, after = ended[path]
        R.check(f"endpoint drain {path}: ended between drain_timeout and drain_timeout + reload",
                after is not None and ENDPOINT_DRAIN <= after <= ENDPOINT_DRAIN + RELOAD_SLACK, str(ended[path]))
    for h1, h2 in (("/leaving", "/leaving-h2"), ("/leaving-retry", "/leaving-h2-retry")):
        for path, new in ((h1, "b"), (h2, "b-h2")):
            tried = attempts(log, keys[path])
            if "retry" in path:
                R.check(f"endpoint drain {path} (retry_on: reset): 200 from the retry", ended[path][0] == "200",
                        str(ended[path]))
                R.check(f"endpoint drain {path}: two attempts, a then the new endpoint {new}",
                        [a["server"] for a in tried] == [tried[0]["server"] if tried else None, new]
                        and tried[0]["server"].startswith("a"), str(tried))
            else:
                R.check(f"endpoint drain {path} (no retry policy): 503", ended[path][0] == "503", str(ended[path]))
                R.check(f"endpoint drain {path}: one attempt (not retried)", len(tried) == 1, str(tried))
    # HTTP/1.1: one connection per stalled request; HTTP/2: one connection carried both.
    got = d.wait_metric("culvert_upstream_cx_drain_timeout_total", 2, {"cluster": "leaving"})
    R.check("culvert_upstream_cx_drain_timeout_total{cluster=leaving} = 2", got == 2, f"got {got}")
    got = d.wait_metric("culvert_upstream_cx_drain_timeout_total", 1, {"cluster": "leaving-h2"})
    R.check("culvert_upstream_cx_drain_timeout_total{cluster=leaving-h2} = 1", got == 1, f"got {got}")

if __name__ == "__main__":
    sys.exit(run_test("integration_connection_lifetime", scenario))
