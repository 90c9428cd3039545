#!/usr/bin/python3
"""Retries over HTTP/2 upstreams, through capture, against fault_upstream_h2.py.

    /usr/bin/python3 tests/integration/http2_upstream_retries_test.py \
        --culvertd build/agent/culvertd --culvertctl build/agent/culvertctl

Needs root (exit 77 = skip when not root, unless CULVERT_REQUIRE_PRIVILEGED=1) and
python3-h2. Pod "client" (10.244.1.1) sends to the never-routed VIP 10.96.0.10:80;
culvert's cluster "h2" speaks HTTP/2 (h2c, explicit_http_config http2_protocol_options)
to fault_upstream_h2.py in pod "a" (10.244.1.2:8080), which refuses streams
(RST_STREAM REFUSED_STREAM), resets them with other codes, cuts them with a GOAWAY,
closes the connection mid-stream, stalls, answers late or answers an error (gRPC
trailers-only too) on request, a different fault per attempt where hedging needs it.
Every scenario asserts the exact streams the upstream saw, the client's status, culvert's
retry counters and culvert_http2_upstream_rq_total (streams opened), and where it
matters which upstream connection each stream rode and which streams culvert reset
(per-try timeouts, hedges that lost, retriable heads whose body was still coming). Each runs from an HTTP/1.1 client (curl) and an HTTP/2
client (curl --http2-prior-knowledge): the upstream side is the same RouterStream.
Timings are held to +-max(25 ms, 10%).
"""

import os
import re
import sys
import time
import uuid

sys.path.insert(0, os.path.dirname(os.path.abspath(__file__)))
import testhosts as th  # noqa: E402
from culvertd_harness import (HTTP2_UPSTREAM, Culvertd, check_isolated, fault_request, run_test,  # noqa: E402
                              yaml_cluster, yaml_http_listener, yaml_resources, yaml_retry_policy, yaml_route)
from fault_upstream import attempts, connections  # noqa: E402
from fault_upstream_h2 import FaultUpstreamH2, resets  # noqa: E402

CLIENT_IP = "10.244.1.1"
SERVER_IP = "10.244.1.2"
PORT = 8080
VIP = "10.96.0.10"
PER_TRY = 0.2
IDLE = 0.15
# HTTP/2 error codes (RFC 9113 section 7).
INTERNAL_ERROR, REFUSED_STREAM, CANCEL = 0x2, 0x7, 0x8


def policy(retry_on: str, *more: str) -> str:
    return yaml_retry_policy("\n".join([f'  retry_on: "{retry_on}"', "  num_retries: 2", *more]))


ROUTES = "".join([
    yaml_route("/refused", "h2", policy("refused-stream")),
    yaml_route("/reset", "h2", policy("reset")),
    yaml_route("/r5xx", "h2", policy("5xx")),
    yaml_route("/codes", "h2", policy("retriable-status-codes", "  retriable_status_codes: [429]")),
    yaml_route("/pertry", "h2", policy("5xx", f"  per_try_timeout: {PER_TRY}s")),
    yaml_route("/idle", "h2", policy("reset", f"  per_try_idle_timeout: {IDLE}s")),
    yaml_route("/grpc", "h2", policy("unavailable")),
    yaml_route("/cf", "h2", policy("connect-failure")),
    yaml_route("/dead", "h2dead", policy("connect-failure")),
    yaml_route("/hedge", "h2", policy("5xx", f"  per_try_timeout: {PER_TRY}s").rstrip("\n")
               + "\n                hedge_policy: {hedge_on_per_try_timeout: true}\n"),
    yaml_route("/hidle", "h2", policy("5xx", f"  per_try_idle_timeout: {IDLE}s").rstrip("\n")
               + "\n                hedge_policy: {hedge_on_per_try_timeout: true}\n"),
    yaml_route("/plain", "h2"),
])

RESOURCES = yaml_resources(yaml_http_listener("vip", VIP, 80, ROUTES),
                           yaml_cluster("h2", [(SERVER_IP, PORT, 1)], HTTP2_UPSTREAM),
                           yaml_cluster("h2dead", [(SERVER_IP, 9, 1)], HTTP2_UPSTREAM))

COUNTERS = ["culvert_upstream_cx_connect_fail_total", "culvert_upstream_rq_retry_total",
            "culvert_upstream_rq_retry_success_total",
            "culvert_upstream_rq_retry_limit_exceeded_total", "culvert_upstream_rq_per_try_timeout_total",
            "culvert_upstream_rq_per_try_idle_timeout_total",
            "culvert_upstream_rq_timeout_total", "culvert_http2_upstream_rq_total"]


def tolerance(expected_s: float) -> float:
    return max(0.025, 0.1 * expected_s)


def scenario(net: th.TestNetwork, args, R: th.Results) -> None:
    client = net.add_pod("client", CLIENT_IP)
    server = net.add_pod("a", SERVER_IP)
    check_isolated(net, R)
    log = net.path("attempts.jsonl")
    FaultUpstreamH2.start(net, server, PORT, "a", log)

    d = Culvertd(net, args, R)
    d.start({"h2retries.yaml": RESOURCES})
    d.enroll(client)

    def metric(name: str) -> float:
        return d.metric(name) or 0.0

    def expect(name: str, path: str, headers: tuple, want_attempts: int, want_status: int | None, counters: dict,
               http2: bool, data: str | None = None):
        """One request; checks its status (unless None), the exact streams the upstream saw,
        the streams culvert opened, and the counter deltas (`counters`: short name -> delta)."""
        name = f"{'h2' if http2 else 'h1'} client: {name}"
        key = f"{re.sub(r'[^a-z0-9]+', '-', name.lower())[:40]}-{uuid.uuid4().hex[:8]}"
        want = {f"culvert_upstream_{c}_total": n for c, n in counters.items()}
        want["culvert_http2_upstream_rq_total"] = want_attempts
        before = {c: metric(c) for c in COUNTERS}
        r = fault_request(client, d.cgroup, f"http://{VIP}{path}", key, headers, data, http2)
        seen = attempts(log, key)
        if want_status is not None:
            R.check(f"{name}: status {want_status}", r.status == want_status, str(r))
        R.check(f"{name}: {want_attempts} stream(s) reached the upstream", len(seen) == want_attempts,
                f"saw {len(seen)}: {[(a['conn'], a['stream_id'], a['attempt']) for a in seen]}")
        for c, n in want.items():
            got = (d.wait_metric(c, before[c] + n) if n else metric(c)) - before[c]
            R.check(f"{name}: {c} +{n}", got == n, f"got +{got}")
        return r, seen, key

    def same_connection(name: str, seen: list) -> None:
        R.check(f"{name}: every stream on one upstream connection (a stream reset keeps it)",
                len({a["conn"] for a in seen}) == 1, str([a["conn"] for a in seen]))

    def new_connections(name: str, seen: list) -> None:
        R.check(f"{name}: each stream on a new upstream connection", len({a["conn"] for a in seen}) == len(seen),
                str([a["conn"] for a in seen]))

    def resets_of(key: str, n: int) -> list[tuple[int, int]]:
        """(stream id, error code) of the RST_STREAMs the upstream got for `key`, once n came
        (or 2 s passed)."""
        deadline = time.monotonic() + 2
        while time.monotonic() < deadline and len(resets(log, key)) < n:
            time.sleep(0.05)
        return sorted((x["stream_id"], x["error_code"]) for x in resets(log, key))

    for http2 in (False, True):
        p = "h2" if http2 else "h1"

        # --- refused-stream: RST_STREAM(REFUSED_STREAM)
        _, seen, _ = expect("REFUSED_STREAM always: num_retries+1 streams, then 503", "/refused",
                            (f"x-fault-rst: {REFUSED_STREAM}",), 3, 503,
                            {"rq_retry": 2, "rq_retry_limit_exceeded": 1, "rq_retry_success": 0}, http2)
        same_connection(f"{p} REFUSED_STREAM always", seen)
        expect("REFUSED_STREAM once: the retry answers 200", "/refused",
               (f"x-fault-rst: {REFUSED_STREAM}", "x-fault-fail-first: 1"), 2, 200,
               {"rq_retry": 1, "rq_retry_success": 1, "rq_retry_limit_exceeded": 0}, http2)
        # --- a GOAWAY whose last-stream-id is below the request's stream: REFUSED_STREAM too
        _, seen, _ = expect("GOAWAY below the stream: retried on a new connection", "/refused",
                            ("x-fault-goaway: 1", "x-fault-fail-first: 1"), 2, 200,
                            {"rq_retry": 1, "rq_retry_success": 1}, http2)
        new_connections(f"{p} GOAWAY", seen)
        if seen:
            deadline = time.monotonic() + 3
            while time.monotonic() < deadline and not [c for c in connections(log, "a")
                                                        if c["conn"] == seen[0]["conn"]]:
                time.sleep(0.05)
            gone = [c for c in connections(log, "a") if c["conn"] == seen[0]["conn"]]
            R.check(f"{p} GOAWAY: culvert closed the drained connection",
                    len(gone) == 1 and gone[0]["goaway"], str(gone))
        _, seen, _ = expect("REFUSED_STREAM with a body: the body is replayed", "/refused",
                            (f"x-fault-rst: {REFUSED_STREAM}", "x-fault-fail-first: 2"), 3, 200, {"rq_retry": 2},
                            http2, data="x" * 600)
        R.check(f"{p} REFUSED_STREAM with a body: every stream got all 600 bytes",
                [a["body_bytes"] for a in seen] == [600] * 3, str([a["body_bytes"] for a in seen]))
        # A server refuses before reading the body: the refused streams' DATA is dropped
        # and the buffered body goes whole on the stream that is answered.
        r, _, _ = expect("REFUSED_STREAM at HEADERS during a 40000-byte upload: the body is replayed", "/refused",
                         (f"x-fault-rst: {REFUSED_STREAM}", "x-fault-early: 1", "x-fault-fail-first: 2"), 3, 200,
                         {"rq_retry": 2}, http2, data="y" * 40000)
        R.check(f"{p} REFUSED_STREAM at HEADERS: the answering stream got all 40000 bytes",
                "attempt=3 status=200" in r.cp.stdout and "body=40000" in r.cp.stdout, str(r))
        # --- refused-stream covers neither other resets nor a closed connection
        expect("refused-stream: RST_STREAM(INTERNAL_ERROR) not retried", "/refused",
               (f"x-fault-rst: {INTERNAL_ERROR}",), 1, 503, {"rq_retry": 0}, http2)
        expect("refused-stream: a connection closed mid-stream not retried", "/refused",
               ("x-fault-close: 1",), 1, 503, {"rq_retry": 0}, http2)
        expect("connect-failure: REFUSED_STREAM not retried", "/cf", (f"x-fault-rst: {REFUSED_STREAM}",), 1, 503,
               {"rq_retry": 0}, http2)
        expect("no retry policy: REFUSED_STREAM not retried", "/plain", (f"x-fault-rst: {REFUSED_STREAM}",), 1,
               503, {"rq_retry": 0}, http2)

        # --- reset: any RST_STREAM code, a connection closed (FIN or RST) before the answer
        _, seen, _ = expect("reset: RST_STREAM(INTERNAL_ERROR) twice, then 200", "/reset",
                            (f"x-fault-rst: {INTERNAL_ERROR}", "x-fault-fail-first: 2"), 3, 200,
                            {"rq_retry": 2, "rq_retry_success": 1}, http2)
        same_connection(f"{p} reset INTERNAL_ERROR", seen)
        expect("reset: RST_STREAM(CANCEL) always: 503", "/reset", (f"x-fault-rst: {CANCEL}",), 3, 503,
               {"rq_retry": 2, "rq_retry_limit_exceeded": 1}, http2)
        expect("reset: RST_STREAM(REFUSED_STREAM) is a reset too", "/reset",
               (f"x-fault-rst: {REFUSED_STREAM}", "x-fault-fail-first: 1"), 2, 200, {"rq_retry": 1}, http2)
        _, seen, _ = expect("reset: connection closed (FIN) mid-stream, retried", "/reset",
                            ("x-fault-close: 1", "x-fault-fail-first: 1"), 2, 200, {"rq_retry": 1}, http2)
        new_connections(f"{p} reset FIN", seen)
        _, seen, _ = expect("reset: connection reset (TCP RST) mid-stream, retried", "/reset",
                            ("x-fault-close: rst", "x-fault-fail-first: 2"), 3, 200, {"rq_retry": 2}, http2)
        new_connections(f"{p} reset TCP RST", seen)
        # After the response head went downstream nothing is retried: the client sees the
        # cut. An HTTP/2 client may see the RST_STREAM without the HEADERS before it (seen
        # here: curl got no status) when culvert got both in one loop turn.
        r, _, _ = expect("reset after the response head: not retried, the client sees the cut", "/reset",
                         ("x-fault-close: after-head",), 1, None if http2 else 200, {"rq_retry": 0}, http2)
        R.check(f"{p} reset after the head: curl reports an incomplete response", r.cp.returncode != 0, str(r))
        expect("reset: a 503 is not a reset", "/reset", ("x-fault-status: 503",), 1, 503, {"rq_retry": 0}, http2)

        # --- 5xx and retriable-status-codes over HTTP/2
        expect("5xx: 503 twice, then 200", "/r5xx", ("x-fault-status: 503", "x-fault-fail-first: 2"), 3, 200,
               {"rq_retry": 2, "rq_retry_success": 1}, http2)
        expect("5xx: 500 always: num_retries used up, the 500 goes back", "/r5xx", ("x-fault-status: 500",), 3,
               500, {"rq_retry": 2, "rq_retry_limit_exceeded": 1}, http2)
        # A retriable head whose body is still coming: the retry resets that stream.
        _, seen, key = expect("5xx: a 503 head with a slow body is retried at the head", "/r5xx",
                              ("x-fault-status: 503", "x-fault-trickle-ms: 100", "x-fault-fail-first: 1"), 2, 200,
                              {"rq_retry": 1, "rq_retry_success": 1}, http2)
        same_connection(f"{p} 5xx slow body", seen)
        if seen:
            got = resets_of(key, 1)
            R.check(f"{p} 5xx slow body: the 503's stream was reset with CANCEL",
                    got == [(seen[0]["stream_id"], CANCEL)], f"resets={got}")
        expect("5xx covers RST_STREAM(INTERNAL_ERROR)", "/r5xx",
               (f"x-fault-rst: {INTERNAL_ERROR}", "x-fault-fail-first: 1"), 2, 200, {"rq_retry": 1}, http2)
        expect("retriable-status-codes [429]: 429 once, then 200", "/codes",
               ("x-fault-status: 429", "x-fault-fail-first: 1"), 2, 200, {"rq_retry": 1}, http2)
        expect("retriable-status-codes [429]: 503 not retried", "/codes", ("x-fault-status: 503",), 1, 503,
               {"rq_retry": 0}, http2)

        # --- per_try_timeout on a stalled stream: the stream is reset (CANCEL), the
        # connection stays, the retry starts after the back-off (25 ms base: retry k waits
        # within [0, (2^k - 1) * 25 ms)).
        r, seen, key = expect("per_try_timeout: two stalled streams, then 200", "/pertry",
                              ("x-fault-stall: 1", "x-fault-fail-first: 2"), 3, 200,
                              {"rq_retry": 2, "rq_per_try_timeout": 2, "rq_timeout": 0}, http2)
        same_connection(f"{p} per_try_timeout", seen)
        if len(seen) == 3:
            gaps = [seen[1]["t"] - seen[0]["t"], seen[2]["t"] - seen[1]["t"]]
            ok = all(PER_TRY - tolerance(PER_TRY) <= g <= PER_TRY + b + tolerance(PER_TRY + b)
                     for g, b in zip(gaps, (0.025, 0.075)))
            R.check(f"{p} per_try_timeout: streams {PER_TRY * 1000:.0f} ms (+ back-off) apart "
                    f"(measured {[round(g * 1000) for g in gaps]} ms)", ok)
            R.check(f"{p} per_try_timeout: answered after two tries (measured {r.time})",
                    r.time is not None and 2 * PER_TRY - tolerance(2 * PER_TRY) <= r.time
                    <= 2 * PER_TRY + 0.1 + tolerance(2 * PER_TRY + 0.1), f"head at {r.time}")
            got = resets_of(key, 2)
            R.check(f"{p} per_try_timeout: culvert reset both stalled streams with CANCEL",
                    got == [(a["stream_id"], CANCEL) for a in seen[:2]], f"resets={got}")
        r, _, _ = expect("per_try_timeout: a slow answer within the try (100 ms) is not retried", "/pertry",
                         ("x-fault-delay-ms: 100",), 1, 200, {"rq_retry": 0, "rq_per_try_timeout": 0}, http2)
        R.check(f"{p} slow answer: after 100 ms (measured {r.time})",
                r.time is not None and abs(r.time - 0.1) <= tolerance(0.1),
                f"head at {r.time}")
        expect("per_try_timeout: a too slow answer (500 ms) is retried", "/pertry",
               ("x-fault-delay-ms: 500", "x-fault-fail-first: 1"), 2, 200, {"rq_retry": 1, "rq_per_try_timeout": 1},
               http2)

        # --- per_try_idle_timeout: re-armed by every DATA frame of the stream
        r, _, _ = expect("per_try_idle_timeout: a body trickling every 50 ms is not cut", "/idle",
                         ("x-fault-trickle-ms: 50",), 1, 200, {"rq_retry": 0, "rq_per_try_idle_timeout": 0}, http2)
        R.check(f"{p} trickle: the whole 5-byte body arrived", r.cp.stdout.count(".....") == 1, str(r))
        expect("per_try_idle_timeout: a silent stream (500 ms) is reset and retried", "/idle",
               ("x-fault-delay-ms: 500", "x-fault-fail-first: 1"), 2, 200,
               {"rq_retry": 1, "rq_per_try_idle_timeout": 1}, http2)

        # --- hedging: at the per-try timeout a second stream starts beside the first on the
        # same connection; the first answer wins and the other stream is reset (CANCEL).
        r, seen, key = expect("hedge: the second stream answers first", "/hedge",
                              ("x-fault-delay-ms: 700", "x-fault-fail-first: 1"), 2, 200,
                              {"rq_retry": 1, "rq_per_try_timeout": 1, "rq_timeout": 0}, http2)
        R.check(f"{p} hedge: answered 200-225 ms in, not at 700 ms (measured {r.time})",
                r.time is not None and PER_TRY - tolerance(PER_TRY) <= r.time <= 0.225 + tolerance(0.225))
        same_connection(f"{p} hedge", seen)
        if len(seen) == 2:
            got = resets_of(key, 1)
            R.check(f"{p} hedge: the first, slow stream was reset with CANCEL",
                    got == [(seen[0]["stream_id"], CANCEL)], f"resets={got}")

        # Envoy's router: an attempt that started a hedge is not retried again (its retriable
        # answer yields to the hedge still out), and any other attempt's failure is retried
        # even while another attempt is out.
        # The first stream's 503 (250 ms) comes between the hedge's start (200-225 ms) and
        # its answer (150 ms later, within its own per-try timeout).
        r, seen, _ = expect("hedge: the first stream's late 503 waits for the hedge, no third stream", "/hedge",
                            ("x-fault-plan: status=503,delay-ms=250 | delay-ms=150",), 2, 200,
                            {"rq_retry": 1, "rq_per_try_timeout": 1}, http2)
        R.check(f"{p} hedge: the hedge's answer at 350-375 ms (measured {r.time})",
                r.time is not None and 0.35 - tolerance(0.35) <= r.time <= 0.375 + tolerance(0.375), str(r))
        r, seen, key = expect("hedge: the hedge's reset is retried while the first stream is out", "/hedge",
                              ("x-fault-plan: delay-ms=700 | rst=2",), 3, 200,
                              {"rq_retry": 2, "rq_per_try_timeout": 1}, http2)
        R.check(f"{p} hedge: the third stream answers within 200-300 ms, not the first at 700 ms "
                f"(measured {r.time})", r.time is not None and 0.2 - tolerance(0.2) <= r.time <= 0.3 + tolerance(0.3),
                str(r))
        if len(seen) == 3:
            got = resets_of(key, 1)
            R.check(f"{p} hedge: the slow first stream was reset with CANCEL", got == [(seen[0]["stream_id"], CANCEL)],
                    f"resets={got}")

        # Envoy hedges on the per-try idle timeout too: the silent first stream stays.
        r, seen, key = expect("hedge on per_try_idle_timeout: the second stream answers first", "/hidle",
                              ("x-fault-delay-ms: 700", "x-fault-fail-first: 1"), 2, 200,
                              {"rq_retry": 1, "rq_per_try_idle_timeout": 1, "rq_timeout": 0}, http2)
        R.check(f"{p} hedge on idle: answered {IDLE * 1000:.0f}-{IDLE * 1000 + 25:.0f} ms in, not at 700 ms "
                f"(measured {r.time})",
                r.time is not None and IDLE - tolerance(IDLE) <= r.time <= IDLE + 0.025 + tolerance(IDLE + 0.025))
        if len(seen) == 2:
            got = resets_of(key, 1)
            R.check(f"{p} hedge on idle: the silent first stream was reset with CANCEL",
                    got == [(seen[0]["stream_id"], CANCEL)], f"resets={got}")
            # Hedged, not abandoned: the first stream was still open when the second began.
            reset_at = [x["t"] for x in resets(log, key)]
            R.check(f"{p} hedge on idle: the first stream was reset after the hedge started, not at its timeout",
                    len(reset_at) == 1 and reset_at[0] >= seen[1]["t"], f"reset at {reset_at}, hedge at {seen[1]['t']}")

        # --- connect failure to an HTTP/2 endpoint (nothing listens on port 9)
        expect("connect-failure: refused connects retried, then 503", "/dead", (), 0, 503,
               {"rq_retry": 2, "cx_connect_fail": 3, "rq_retry_limit_exceeded": 1}, http2)

        # --- gRPC: retry_on unavailable (grpc-status 14 in a trailers-only answer)
        grpc = ("content-type: application/grpc", "te: trailers")
        r, _, _ = expect("unavailable: grpc-status 14 twice, then OK", "/grpc",
                         (*grpc, "x-fault-grpc-status: 14", "x-fault-fail-first: 2"), 3, 200,
                         {"rq_retry": 2, "rq_retry_success": 1}, http2)
        R.check(f"{p} unavailable: the final grpc-status is 0", r.headers.get("grpc-status") == "0", str(r))
        r, _, _ = expect("unavailable: grpc-status 13 not retried", "/grpc", (*grpc, "x-fault-grpc-status: 13"), 1,
                         200, {"rq_retry": 0}, http2)
        R.check(f"{p} grpc-status 13 passed on", r.headers.get("grpc-status") == "13", str(r))
        # As in Envoy, only a trailers-only answer's grpc-status is looked at: once a
        # message went downstream, grpc-status 14 in the trailers is the answer.
        r, _, _ = expect("unavailable: grpc-status 14 in trailers after a message not retried", "/grpc",
                         (*grpc, "x-fault-grpc-trailer: 14"), 1, 200, {"rq_retry": 0}, http2)
        if http2:
            R.check("h2 client: the trailers' grpc-status 14 reaches the client", r.headers.get("grpc-status") == "14",
                    str(r))


if __name__ == "__main__":
    sys.exit(run_test("integration_http2_upstream_retries", scenario))
