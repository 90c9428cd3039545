#!/usr/bin/python3
"""Retries, hedging and timeouts through capture, against controllable upstreams.

    /usr/bin/python3 tests/integration/retries_timeouts_test.py \
        --culvertd build/agent/culvertd --culvertctl build/agent/culvertctl

Needs root (exit 77 = skip when not root, unless CULVERT_REQUIRE_PRIVILEGED=1).
Pod "client" (10.244.1.1) curls the never-routed VIP 10.96.0.10:80; three fault
upstreams (fault_upstream.py: a 10.244.1.2, b .3, c .4) fail, stall, reset or answer
Retry-After on request. Each scenario asserts the exact attempts the upstreams saw
(their shared attempt log), the counters, and timings within +-max(25 ms, 10%). The
router is the same for HTTP/1.1 and HTTP/2 clients (proxy/server/router_stream.h), so
the main scenarios run again over HTTP/2 (curl --http2-prior-knowledge, as gRPC clients
connect).
"""

import os
import re
import sys
import uuid

sys.path.insert(0, os.path.dirname(os.path.abspath(__file__)))
import testhosts as th  # noqa: E402
from culvertd_harness import (Culvertd, check_isolated, describe, fault_request, run_test, yaml_cluster, yaml_http_listener,  # noqa: E402
                              yaml_resources, yaml_retry_policy, yaml_route)
from fault_upstream import FaultUpstream, attempts  # noqa: E402

CLIENT_IP = "10.244.1.1"
SERVERS = {"a": "10.244.1.2", "b": "10.244.1.3", "c": "10.244.1.4"}
PORT = 8080
VIP = "10.96.0.10"

ROUTES = "".join([
    yaml_route("/r5xx", "one", yaml_retry_policy("""  retry_on: "5xx"
  num_retries: 2
  retry_back_off: {base_interval: 0.1s}""")),
    yaml_route("/gw", "one", yaml_retry_policy("""  retry_on: "gateway-error"
  num_retries: 3""")),
    yaml_route("/reset", "one", yaml_retry_policy("""  retry_on: "reset"
  num_retries: 2""")),
    yaml_route("/cf", "dead", yaml_retry_policy("""  retry_on: "connect-failure"
  num_retries: 2""")),
    yaml_route("/r4xx", "one", yaml_retry_policy("""  retry_on: "retriable-4xx"
  num_retries: 1""")),
    yaml_route("/codes", "one", yaml_retry_policy("""  retry_on: "retriable-status-codes"
  retriable_status_codes: [429]
  num_retries: 2""")),
    yaml_route("/hdr", "one", yaml_retry_policy("""  retry_on: "retriable-headers"
  retriable_headers: [{name: x-upstream-retry, exact_match: "yes"}]
  num_retries: 1""")),
    yaml_route("/grpc", "one", yaml_retry_policy("""  retry_on: "unavailable,resource-exhausted"
  num_retries: 2""")),
    yaml_route("/ra", "one", yaml_retry_policy("""  retry_on: "retriable-status-codes"
  retriable_status_codes: [429]
  num_retries: 1
  rate_limited_retry_back_off:
    reset_headers: [{name: Retry-After, format: SECONDS}]
    max_interval: 5s""")),
    yaml_route("/prev", "three", yaml_retry_policy("""  retry_on: "5xx"
  num_retries: 2
  retry_host_predicate: [{name: envoy.retry_host_predicates.previous_hosts}]
  host_selection_retry_max_attempts: 12""")),
    yaml_route("/body", "one", yaml_retry_policy("""  retry_on: "5xx"
  num_retries: 2""")).rstrip("\n") + "\n              per_request_buffer_limit_bytes: 1024\n",
    yaml_route("/pertry", "one", yaml_retry_policy("""  retry_on: "5xx"
  num_retries: 2
  per_try_timeout: 0.2s""")),
    yaml_route("/idle", "one", yaml_retry_policy("""  retry_on: "5xx"
  num_retries: 1
  per_try_idle_timeout: 0.15s""")),
    yaml_route("/routeto", "one", "                timeout: 0.55s\n" + yaml_retry_policy("""  retry_on: "5xx"
  num_retries: 5
  per_try_timeout: 0.2s""")),
    yaml_route("/tight", "tight", yaml_retry_policy("""  retry_on: "5xx"
  num_retries: 2""")),
    yaml_route("/ridle", "one", "                idle_timeout: 0.4s\n"),
    yaml_route("/maxdur", "one", "                max_stream_duration: {max_stream_duration: 0.3s}\n"),
    yaml_route("/deadline", "one", "                max_stream_duration: {grpc_timeout_header_max: 0.5s}\n"),
    yaml_route("/hedge", "pair", yaml_retry_policy("""  retry_on: "5xx"
  num_retries: 1
  per_try_timeout: 0.2s
  retry_host_predicate: [{name: envoy.retry_host_predicates.previous_hosts}]
  host_selection_retry_max_attempts: 5""").rstrip("\n") + "\n                hedge_policy: {hedge_on_per_try_timeout: true}\n"),
    yaml_route("/plain", "one"),
])


RESOURCES = yaml_resources(yaml_http_listener("vip", VIP, 80, ROUTES, """\
        request_headers_timeout: 0.3s
        stream_idle_timeout: 2s
        request_timeout: 3s
"""), yaml_cluster("one", [(SERVERS["a"], PORT, 1)]), yaml_cluster(
    "three", [(SERVERS["a"], PORT, 10), (SERVERS["b"], PORT, 1), (SERVERS["c"], PORT, 1)]), yaml_cluster(
    "dead", [(SERVERS["a"], 9, 1)]), yaml_cluster(
    "tight", [(SERVERS["a"], PORT, 1)], "  circuit_breakers: {thresholds: [{max_retries: 0}]}\n"), yaml_cluster(
    "pair", [(SERVERS["b"], PORT, 1), (SERVERS["c"], PORT, 1)]))


# A client that holds a request open on purpose (curl cannot): prints the status of the
# answer and the seconds from connecting to reading it.
RAW_CLIENT = r"""
import select, socket, sys, time
vip, mode = sys.argv[1], sys.argv[2]
s = socket.create_connection((vip, 80), timeout=10)
t0 = time.monotonic()
if mode == "headers":      # the head never completes
    s.sendall(b"GET /plain HTTP/1.1\r\nHost: x\r\n")
elif mode == "idle":       # the head, 2 of 10 body bytes, then silence
    s.sendall(b"POST /plain HTTP/1.1\r\nHost: x\r\nContent-Length: 10\r\n\r\nab")
else:                      # "request": one body byte every 0.5 s, never the whole body
    s.sendall(b"POST /plain HTTP/1.1\r\nHost: x\r\nContent-Length: 100\r\n\r\n")
data = b""
while b"\r\n" not in data:
    r, _, _ = select.select([s], [], [], 0.5)
    if r:
        chunk = s.recv(4096)
        if not chunk:
            break
        data += chunk
    elif mode == "request":
        s.sendall(b"x")
    if time.monotonic() - t0 > 9:
        break
line = data.split(b"\r\n", 1)[0].decode(errors="replace")
print("STATUS=%s T=%.3f" % (line.split(" ")[1] if " " in line else "none", time.monotonic() - t0))
"""


def tolerance(expected_s: float) -> float:
    return max(0.025, 0.1 * expected_s)


def scenario(net: th.TestNetwork, args, R: th.Results) -> None:
    client = net.add_pod("client", CLIENT_IP)
    pods = {name: net.add_pod(name, ip) for name, ip in SERVERS.items()}
    check_isolated(net, R)
    log = net.path("attempts.jsonl")
    for name, pod in pods.items():
        FaultUpstream.start(net, pod, PORT, name, log)

    d = Culvertd(net, args, R)
    d.start({"retries.yaml": RESOURCES})
    d.enroll(client)

    def request(path: str, key: str, *headers: str, data: str | None = None, max_time: float = 8,
                http2: bool = False):
        return fault_request(client, d.cgroup, f"http://{VIP}{path}", key, headers, data, http2, max_time)

    def new_key(name: str) -> str:
        return f"{name}-{uuid.uuid4().hex[:8]}"

    def counter(name: str) -> float:
        return d.metric(f"culvert_upstream_{name}_total") or 0.0

    def deltas(names, before) -> dict:
        return {n: counter(n) - before[n] for n in names}

    COUNTERS = ["rq_retry", "rq_retry_success", "rq_retry_overflow", "rq_retry_limit_exceeded",
                "rq_retry_body_too_large", "rq_per_try_timeout", "rq_per_try_idle_timeout",
                "rq_timeout", "cx_connect_fail"]

    def snapshot():
        return {n: counter(n) for n in COUNTERS}

    def expect(name: str, path: str, headers: tuple, want_attempts: int, want_status: int,
               want_counters: dict, data: str | None = None, http2: bool = False):
        key = new_key(name)
        before = snapshot()
        r = request(path, key, *headers, data=data, http2=http2)
        seen = attempts(log, key)
        R.check(f"{name}: status {want_status}", r.status == want_status, str(r))
        R.check(f"{name}: {want_attempts} attempt(s)", len(seen) == want_attempts,
                f"saw {len(seen)}: {[(a['server'], a['attempt']) for a in seen]}")
        for c, want in want_counters.items():
            got = d.wait_metric(f"culvert_upstream_{c}_total", before[c] + want) - before[c] if want else \
                counter(c) - before[c]
            R.check(f"{name}: culvert_upstream_{c}_total +{want}", got == want, f"got +{got}")
        return r, seen

    # --- each retry_on class: exact attempt counts
    expect("5xx retried until success", "/r5xx", ("x-fault-status: 503", "x-fault-fail-first: 2"), 3, 200,
           {"rq_retry": 2, "rq_retry_success": 1, "rq_retry_limit_exceeded": 0})
    expect("5xx: num_retries used up", "/r5xx", ("x-fault-status: 500",), 3, 500,
           {"rq_retry": 2, "rq_retry_limit_exceeded": 1, "rq_retry_success": 0})
    expect("no retry policy: one attempt", "/plain", ("x-fault-status: 503",), 1, 503, {"rq_retry": 0})
    expect("gateway-error retries 502", "/gw", ("x-fault-status: 502", "x-fault-fail-first: 1"), 2, 200,
           {"rq_retry": 1})
    expect("gateway-error leaves 500 alone", "/gw", ("x-fault-status: 500",), 1, 500, {"rq_retry": 0})
    expect("gateway-error: 3 retries then the 504 goes back", "/gw", ("x-fault-status: 504",), 4, 504,
           {"rq_retry": 3, "rq_retry_limit_exceeded": 1})
    expect("reset retried", "/reset", ("x-fault-reset: 1", "x-fault-fail-first: 2"), 3, 200, {"rq_retry": 2})
    expect("reset: a 503 is not a reset", "/reset", ("x-fault-status: 503",), 1, 503, {"rq_retry": 0})
    expect("connect-failure retried (refused port), then 503", "/cf", (), 0, 503,
           {"rq_retry": 2, "cx_connect_fail": 3, "rq_retry_limit_exceeded": 1})
    expect("retriable-4xx retries 409", "/r4xx", ("x-fault-status: 409", "x-fault-fail-first: 1"), 2, 200,
           {"rq_retry": 1})
    expect("retriable-4xx leaves 404 alone", "/r4xx", ("x-fault-status: 404",), 1, 404, {"rq_retry": 0})
    expect("retriable-status-codes retries 429", "/codes", ("x-fault-status: 429", "x-fault-fail-first: 2"), 3,
           200, {"rq_retry": 2})
    expect("retriable-status-codes leaves 503 alone", "/codes", ("x-fault-status: 503",), 1, 503,
           {"rq_retry": 0})
    expect("retriable-headers", "/hdr", ("x-fault-status: 200", "x-fault-header: x-upstream-retry=yes",
                                         "x-fault-fail-first: 1"), 2, 200, {"rq_retry": 1})
    expect("retriable-headers: other value not retried", "/hdr",
           ("x-fault-status: 200", "x-fault-header: x-upstream-retry=no"), 1, 200, {"rq_retry": 0})
    r, _ = expect("gRPC unavailable (trailers-only) retried", "/grpc",
                  ("x-fault-grpc-status: 14", "x-fault-fail-first: 2"), 3, 200, {"rq_retry": 2})
    R.check("gRPC: the final grpc-status is 0", r.headers.get("grpc-status") == "0", str(r))
    expect("gRPC resource-exhausted retried", "/grpc", ("x-fault-grpc-status: 8", "x-fault-fail-first: 1"), 2,
           200, {"rq_retry": 1})
    r, _ = expect("gRPC internal not in retry_on: not retried", "/grpc", ("x-fault-grpc-status: 13",), 1, 200,
                  {"rq_retry": 0})
    R.check("gRPC internal: grpc-status 13 passed on", r.headers.get("grpc-status") == "13", str(r))

    # --- back-off timing: retry k waits at most (2^k - 1) * 100 ms (fully jittered)
    for i in range(3):
        _, seen = expect(f"back-off sample {i + 1}", "/r5xx", ("x-fault-status: 503",), 3, 503,
                         {"rq_retry": 2})
        if len(seen) == 3:
            gaps = [seen[1]["t"] - seen[0]["t"], seen[2]["t"] - seen[1]["t"]]
            ok = all(g <= k * 0.1 + tolerance(k * 0.1) for g, k in zip(gaps, (1, 3)))
            R.check(f"back-off sample {i + 1}: gaps within [0, 100 ms] and [0, 300 ms]", ok,
                    f"gaps={[round(g * 1000) for g in gaps]} ms")

    # --- Retry-After honoured
    _, seen = expect("Retry-After: 1 s", "/ra", ("x-fault-status: 429", "x-fault-retry-after: 1",
                                                 "x-fault-fail-first: 1"), 2, 200, {"rq_retry": 1})
    if len(seen) == 2:
        gap = seen[1]["t"] - seen[0]["t"]
        R.check("Retry-After: the retry came 1 s later", abs(gap - 1.0) <= tolerance(1.0),
                f"gap={gap * 1000:.0f} ms")
    _, seen = expect("Retry-After beyond max_interval: exponential back-off instead", "/ra",
                     ("x-fault-status: 429", "x-fault-retry-after: 30", "x-fault-fail-first: 1"), 2, 200,
                     {"rq_retry": 1})
    if len(seen) == 2:
        gap = seen[1]["t"] - seen[0]["t"]
        R.check("Retry-After 30 s > max_interval 5 s: retried within 25 ms", gap <= 0.025 + tolerance(0.025),
                f"gap={gap * 1000:.0f} ms")

    # --- previous_hosts spreads the attempts over the endpoints (a has weight 10)
    for i in range(2):
        _, seen = expect(f"previous_hosts sample {i + 1}", "/prev", ("x-fault-status: 503",), 3, 503,
                         {"rq_retry": 2})
        servers = [a["server"] for a in seen]
        R.check(f"previous_hosts sample {i + 1}: three different endpoints", sorted(servers) == ["a", "b", "c"],
                f"servers={servers}")

    # --- the retry buffer
    _, seen = expect("body within the buffer is replayed", "/body", ("x-fault-status: 503",
                                                                      "x-fault-fail-first: 2"), 3, 200,
                     {"rq_retry": 2}, data="x" * 600)
    R.check("body within the buffer: every attempt got all 600 bytes",
            [a["body_bytes"] for a in seen] == [600, 600, 600], str([a["body_bytes"] for a in seen]))
    _, seen = expect("body beyond the buffer: streamed, not retried", "/body", ("x-fault-status: 503",), 1, 503,
                     {"rq_retry": 0, "rq_retry_body_too_large": 1}, data="x" * 4000)
    R.check("body beyond the buffer: the upstream got all 4000 bytes",
            [a["body_bytes"] for a in seen] == [4000], str([a["body_bytes"] for a in seen]))

    # --- per-try timeout
    r, seen = expect("per_try_timeout: two stalled tries, then success", "/pertry",
                     ("x-fault-stall: 1", "x-fault-fail-first: 2"), 3, 200,
                     {"rq_retry": 2, "rq_per_try_timeout": 2, "rq_timeout": 0})
    if len(seen) == 3:
        gaps = [seen[1]["t"] - seen[0]["t"], seen[2]["t"] - seen[1]["t"]]
        # 200 ms per try, then a back-off in [0, 25 ms) / [0, 75 ms).
        ok = all(0.2 - tolerance(0.2) <= g <= 0.2 + b + tolerance(0.2 + b) for g, b in zip(gaps, (0.025, 0.075)))
        R.check("per_try_timeout: tries 200 ms (+ back-off) apart", ok, f"gaps={[round(g * 1000) for g in gaps]} ms")
    expect("per_try_idle_timeout: a silent try is retried", "/idle",
           ("x-fault-delay-ms: 500", "x-fault-fail-first: 1"), 2, 200,
           {"rq_retry": 1, "rq_per_try_idle_timeout": 1})

    # --- the route timeout covers every try
    r, seen = expect("route timeout 550 ms over 200 ms tries: 504", "/routeto", ("x-fault-stall: 1",), 3, 504,
                     {"rq_timeout": 1, "rq_per_try_timeout": 2})
    R.check("route timeout: the 504 came after 550 ms",
            r.time is not None and abs(r.time - 0.55) <= tolerance(0.55), f"head at {r.time}")
    r, _ = expect("route timeout, gRPC request: DEADLINE_EXCEEDED", "/routeto",
                  ("x-fault-stall: 1", "content-type: application/grpc"), 3, 200, {"rq_timeout": 1})
    R.check("gRPC timeout: grpc-status 4 trailers-only", r.headers.get("grpc-status") == "4", str(r))

    # --- downstream stream timeouts (HttpConnectionManager, route idle_timeout): 408
    script = net.path("raw_client.py")
    with open(script, "w") as f:
        f.write(RAW_CLIENT)
    for mode, seconds, counter_name in (("headers", 0.3, "headers_timeout"), ("idle", 2.0, "idle_timeout"),
                                        ("request", 3.0, "request_timeout")):
        metric = f"culvert_downstream_rq_{counter_name}_total"
        before = d.metric(metric) or 0.0
        cp = client.run([th.PYTHON, "-B", script, VIP, mode], cgroup=d.cgroup, timeout=20)
        m = re.search(r"STATUS=(\S+) T=([0-9.]+)", cp.stdout)
        R.check(f"{mode} timeout: 408", m is not None and m.group(1) == "408", describe(cp))
        R.check(f"{mode} timeout: after {seconds * 1000:.0f} ms",
                m is not None and abs(float(m.group(2)) - seconds) <= tolerance(seconds), describe(cp))
        after = d.wait_metric(metric, before + 1)
        R.check(f"{metric} +1", after == before + 1, f"before={before} after={after}")
    before = d.metric("culvert_downstream_rq_idle_timeout_total") or 0.0
    r = request("/ridle", new_key("route idle"), "x-fault-stall: 1")
    R.check("route idle_timeout 400 ms over a stalled upstream: 408", r.status == 408, str(r))
    R.check("route idle_timeout: after 400 ms", r.time is not None and abs(r.time - 0.4) <= tolerance(0.4),
            f"head at {r.time}")
    after = d.wait_metric("culvert_downstream_rq_idle_timeout_total", before + 1)
    R.check("route idle_timeout counted", after == before + 1, f"before={before} after={after}")

    # --- max_stream_duration, and grpc-timeout capped by grpc_timeout_header_max
    for name, path, headers, seconds, grpc in (
            ("max_stream_duration 300 ms", "/maxdur", ("x-fault-stall: 1",), 0.3, False),
            ("grpc-timeout 200m", "/deadline", ("x-fault-stall: 1", "grpc-timeout: 200m",
                                              "content-type: application/grpc"), 0.2, True),
            ("grpc-timeout 5S capped at 500 ms", "/deadline", ("x-fault-stall: 1", "grpc-timeout: 5S",
                                                            "content-type: application/grpc"), 0.5, True)):
        metric = "culvert_downstream_rq_max_duration_reached_total"
        before = d.metric(metric) or 0.0
        r = request(path, new_key(name), *headers)
        if grpc:
            R.check(f"{name}: grpc-status 4", r.status == 200 and r.headers.get("grpc-status") == "4", str(r))
        else:
            R.check(f"{name}: 504", r.status == 504, str(r))
        R.check(f"{name}: after {seconds * 1000:.0f} ms",
                r.time is not None and abs(r.time - seconds) <= tolerance(seconds), f"head at {r.time}")
        after = d.wait_metric(metric, before + 1)
        R.check(f"{name}: {metric} +1", after == before + 1, f"before={before} after={after}")

    # --- the retry circuit breaker
    expect("max_retries 0: the retry overflows", "/tight", ("x-fault-status: 503",), 1, 503,
           {"rq_retry": 0, "rq_retry_overflow": 1})

    for http2 in (False, True):
        hedging(expect, http2, R)
    over_http2(expect, request, new_key, d, R)


def hedging(expect, http2: bool, R: th.Results) -> None:
    """hedge_on_per_try_timeout: at the 200 ms per-try timeout a second attempt starts on
    the other endpoint (previous_hosts) while the first stays; the first answer wins."""
    proto = "h2" if http2 else "h1"
    r, seen = expect(f"{proto} hedge: the hedge answers first", "/hedge",
                     ("x-fault-delay-ms: 700", "x-fault-fail-first: 1"), 2, 200,
                     {"rq_per_try_timeout": 1, "rq_retry": 1, "rq_timeout": 0}, http2=http2)
    # 200 ms, then a back-off in [0, 25 ms), then the hedge's immediate answer.
    R.check(f"{proto} hedge: answered 200-225 ms in, not at the first try's 700 ms",
            r.time is not None and 0.2 - tolerance(0.2) <= r.time <= 0.225 + tolerance(0.225), f"head at {r.time}")
    R.check(f"{proto} hedge: the two attempts went to different endpoints",
            len({a["server"] for a in seen}) == 2, str([a["server"] for a in seen]))
    if len(seen) == 2:
        gap = seen[1]["t"] - seen[0]["t"]
        R.check(f"{proto} hedge: the hedge started at the per-try timeout",
                0.2 - tolerance(0.2) <= gap <= 0.225 + tolerance(0.225), f"gap={gap * 1000:.0f} ms")
    r, seen = expect(f"{proto} hedge: the first try still wins when it answers first", "/hedge",
                     ("x-fault-delay-ms: 350", "x-fault-fail-first: 2"), 2, 200,
                     {"rq_per_try_timeout": 1, "rq_retry": 1, "rq_timeout": 0}, http2=http2)
    R.check(f"{proto} hedge: the first try's answer at 350 ms, not the hedge's (~550 ms)",
            r.time is not None and abs(r.time - 0.35) <= tolerance(0.35), f"head at {r.time}")


def over_http2(expect, request, new_key, d, R: th.Results) -> None:
    """The same router behind an HTTP/2 client: retries, per-try and route timeouts, the
    gRPC deadline and the stream idle timeout."""
    expect("h2: 5xx retried until success", "/r5xx", ("x-fault-status: 503", "x-fault-fail-first: 2"), 3, 200,
           {"rq_retry": 2, "rq_retry_success": 1}, http2=True)
    expect("h2: reset retried", "/reset", ("x-fault-reset: 1", "x-fault-fail-first: 1"), 2, 200, {"rq_retry": 1},
           http2=True)
    expect("h2: connect-failure retried, then 503", "/cf", (), 0, 503,
           {"rq_retry": 2, "cx_connect_fail": 3, "rq_retry_limit_exceeded": 1}, http2=True)
    r, _ = expect("h2: gRPC unavailable retried", "/grpc", ("x-fault-grpc-status: 14", "x-fault-fail-first: 1"), 2,
                  200, {"rq_retry": 1}, http2=True)
    R.check("h2: gRPC: the final grpc-status is 0", r.headers.get("grpc-status") == "0", str(r))
    _, seen = expect("h2: body within the buffer is replayed", "/body",
                     ("x-fault-status: 503", "x-fault-fail-first: 1"), 2, 200, {"rq_retry": 1}, data="x" * 600,
                     http2=True)
    R.check("h2: every attempt got all 600 bytes", [a["body_bytes"] for a in seen] == [600, 600],
            str([a["body_bytes"] for a in seen]))
    expect("h2: per_try_timeout: a stalled try, then success", "/pertry",
           ("x-fault-stall: 1", "x-fault-fail-first: 1"), 2, 200, {"rq_retry": 1, "rq_per_try_timeout": 1}, http2=True)
    r, _ = expect("h2: route timeout, gRPC request: DEADLINE_EXCEEDED", "/routeto",
                  ("x-fault-stall: 1", "content-type: application/grpc"), 3, 200, {"rq_timeout": 1}, http2=True)
    R.check("h2: gRPC route timeout: grpc-status 4", r.headers.get("grpc-status") == "4", str(r))
    R.check("h2: gRPC route timeout after 550 ms", r.time is not None and abs(r.time - 0.55) <= tolerance(0.55),
            f"head at {r.time}")
    for name, path, headers, seconds, metric, status in (
            ("h2: grpc-timeout 200m", "/deadline",
             ("x-fault-stall: 1", "grpc-timeout: 200m", "content-type: application/grpc"), 0.2,
             "culvert_downstream_rq_max_duration_reached_total", 200),
            ("h2: max_stream_duration 300 ms", "/maxdur", ("x-fault-stall: 1",), 0.3,
             "culvert_downstream_rq_max_duration_reached_total", 504),
            ("h2: route idle_timeout 400 ms", "/ridle", ("x-fault-stall: 1",), 0.4,
             "culvert_downstream_rq_idle_timeout_total", 408)):
        before = d.metric(metric) or 0.0
        r = request(path, new_key(name), *headers, http2=True)
        R.check(f"{name}: {status}", r.status == status, str(r))
        if status == 200:
            R.check(f"{name}: grpc-status 4", r.headers.get("grpc-status") == "4", str(r))
        R.check(f"{name}: after {seconds * 1000:.0f} ms",
                r.time is not None and abs(r.time - seconds) <= tolerance(seconds), f"head at {r.time}")
        after = d.wait_metric(metric, before + 1)
        R.check(f"{name}: {metric} +1", after == before + 1, f"before={before} after={after}")


if __name__ == "__main__":
    sys.exit(run_test("integration_retries_timeouts", scenario))
