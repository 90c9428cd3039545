#!/usr/bin/python3
"""HTTP/1.1 Upgrade (WebSocket) and CONNECT as tunnels, through capture.

    /usr/bin/python3 tests/integration/tunnels_test.py \
        --culvertd build/agent/culvertd --culvertctl build/agent/culvertctl

Needs root (exit 77 = skip when not root, unless CULVERT_REQUIRE_PRIVILEGED=1).
Pods "client" (10.244.1.1) and "server" (10.244.1.2). The server runs tunnel_peers.py:
a WebSocket echo server, a raw TCP echo and a minimal forward proxy; clients are
tunnel_peers.py (raw sockets) and curl --proxytunnel, in the captured client pod.
"""

import json
import os
import subprocess
import sys
import time

sys.path.insert(0, os.path.dirname(os.path.abspath(__file__)))
import testhosts as th  # noqa: E402
from culvertd_harness import Culvertd, check_isolated, describe, run_test  # noqa: E402

CLIENT_IP, SERVER_IP = "10.244.1.1", "10.244.1.2"
WS_PORT, ECHO_PORT, PROXY_PORT, HTTP_PORT = 8090, 9000, 9001, 8080
VIP = "10.96.0.30"        # upgrades configured
PLAIN_VIP = "10.96.0.31"  # no upgrade_configs: Envoy refuses every upgrade with 403
PEERS = os.path.join(os.path.dirname(os.path.abspath(__file__)), "tunnel_peers.py")
MIB = 1 << 20

HCM = """\
    - name: envoy.filters.network.http_connection_manager
      typed_config:
        "@type": type.googleapis.com/envoy.extensions.filters.network.http_connection_manager.v3.HttpConnectionManager
        stat_prefix: {name}
{upgrades}
        route_config:
          name: {name}
          virtual_hosts:
          - name: terminate-http
            domains: ["{server_ip}:{http_port}"]
            routes:
            - match: {{connect_matcher: {{}}}}
              route: {{cluster: http, upgrade_configs: [{{upgrade_type: CONNECT, connect_config: {{}}}}]}}
          - name: terminate-echo
            domains: ["{server_ip}:{echo_port}"]
            routes:
            - match: {{connect_matcher: {{}}}}
              route: {{cluster: echo, upgrade_configs: [{{upgrade_type: CONNECT, connect_config: {{}}}}]}}
          - name: forward
            domains: ["forward.test:443"]
            routes:
            - match: {{connect_matcher: {{}}}}
              route: {{cluster: proxy}}
          - name: all
            domains: ["*"]
            routes:
            - match: {{prefix: /nows}}
              route: {{cluster: ws, upgrade_configs: [{{upgrade_type: websocket, enabled: false}}]}}
            - match: {{prefix: /idle}}
              route: {{cluster: ws, idle_timeout: 1s}}
            - match: {{prefix: /short}}
              route: {{cluster: ws, max_stream_duration: {{max_stream_duration: 1s}}}}
            - match: {{prefix: "/"}}
              route: {{cluster: ws}}
        http_filters:
        - name: envoy.filters.http.router
          typed_config: {{"@type": type.googleapis.com/envoy.extensions.filters.http.router.v3.Router}}
"""

RESOURCES = """\
version_info: "1"
resources:
- "@type": type.googleapis.com/envoy.config.listener.v3.Listener
  name: vip
  address: {{socket_address: {{address: {vip}, port_value: 80}}}}
  bind_to_port: false
  filter_chains:
  - filters:
{hcm_upgrades}
- "@type": type.googleapis.com/envoy.config.listener.v3.Listener
  name: plain
  address: {{socket_address: {{address: {plain_vip}, port_value: 80}}}}
  bind_to_port: false
  filter_chains:
  - filters:
{hcm_plain}
{clusters}
"""

CLUSTER = """\
- "@type": type.googleapis.com/envoy.config.cluster.v3.Cluster
  name: {name}
  type: STATIC
  connect_timeout: 1s
  load_assignment:
    cluster_name: {name}
    endpoints:
    - lb_endpoints:
      - endpoint: {{address: {{socket_address: {{address: {ip}, port_value: {port}}}}}}}
"""


def resources(access_log_path: str) -> str:
    common = {"server_ip": SERVER_IP, "http_port": HTTP_PORT, "echo_port": ECHO_PORT}
    upgrades = ("        upgrade_configs:\n        - upgrade_type: websocket\n        - upgrade_type: CONNECT\n"
                "        access_log:\n        - name: envoy.access_loggers.file\n          typed_config:\n"
                "            \"@type\": type.googleapis.com/envoy.extensions.access_loggers.file.v3.FileAccessLog\n"
                f"            path: {access_log_path}")
    clusters = "".join(CLUSTER.format(name=n, ip=SERVER_IP, port=p) for n, p in
                       [("ws", WS_PORT), ("echo", ECHO_PORT), ("proxy", PROXY_PORT), ("http", HTTP_PORT)])
    return RESOURCES.format(vip=VIP, plain_vip=PLAIN_VIP,
                            hcm_upgrades=HCM.format(name="vip", upgrades=upgrades, **common),
                            hcm_plain=HCM.format(name="plain", upgrades="", **common),
                            clusters=clusters)


def scenario(net: th.TestNetwork, args, R: th.Results) -> None:
    client = net.add_pod("client", CLIENT_IP)
    server = net.add_pod("server", SERVER_IP)
    d = Culvertd(net, args, R)
    check_isolated(net, R)
    events_path = net.path("events.jsonl")
    peers = server.spawn([th.PYTHON, "-B", PEERS, "server", SERVER_IP, str(WS_PORT), str(ECHO_PORT),
                          str(PROXY_PORT), events_path], stdout=subprocess.PIPE, stderr=subprocess.DEVNULL)
    R.check("tunnel peers started", peers.stdout.readline().strip() == b"READY", fatal=True)
    net.start_echo_server(server, HTTP_PORT)
    access_log = net.path("access.log")
    d.start({"tunnels.yaml": resources(access_log)})
    d.enroll(client)

    def events() -> list[dict]:
        try:
            with open(events_path) as f:
                return [json.loads(line) for line in f if line.strip()]
        except FileNotFoundError:
            return []

    def wait_event(pred, timeout: float = 5.0) -> dict | None:
        deadline = time.monotonic() + timeout
        while time.monotonic() < deadline:
            for e in events():
                if pred(e):
                    return e
            time.sleep(0.05)
        return None

    def peer(*argv: str, timeout: float = 60) -> dict | None:
        cp = client.run([th.PYTHON, "-B", PEERS, "client", *argv], cgroup=d.cgroup, timeout=timeout)
        try:
            return json.loads(cp.stdout)
        except ValueError:
            R.check(f"client {argv[0]} ran", False, describe(cp))
            return None

    def header(head: dict, name: str) -> list[str]:
        return [v for k, v in head["headers"] if k == name]

    # --- WebSocket: handshake, frames both ways, a 1.5 MiB message each way read slowly
    sizes = [5, 200, 70000, 3 * MIB // 2, 3]
    out = peer("ws", VIP, "80", "/chat", ",".join(map(str, sizes)), "1.0")
    if out:
        R.check("websocket: 101 through culvert", out["response"]["status"] == 101, str(out["response"]))
        R.check("websocket: 101 keeps Upgrade and Connection",
                [v.lower() for v in header(out["response"], "upgrade")] == ["websocket"]
                and [v.lower() for v in header(out["response"], "connection")] == ["upgrade"], str(out["response"]))
        saw = out.get("upstream_saw", {"headers": []})
        seen = {k: v for k, v in saw["headers"]}
        R.check("websocket: upstream saw Upgrade: websocket and Connection: upgrade",
                seen.get("upgrade", "").lower() == "websocket" and "upgrade" in seen.get("connection", "").lower(),
                str(saw))
        R.check("websocket: upstream saw Sec-WebSocket-Key/Version", "sec-websocket-key" in seen
                and seen.get("sec-websocket-version") == "13", str(saw))
        R.check("websocket: x-forwarded-for is the pod's IP", seen.get("x-forwarded-for") == CLIENT_IP, str(saw))
        echoed = out.get("echoed", [])
        print("figure: websocket echo round trips through culvert (size bytes, ms; the 1.5 MiB one includes "
              "the client's 1 s pause before reading):", [(e["size"], e["ms"]) for e in echoed], flush=True)
        R.check("websocket: every message echoed intact, 1.5 MiB both ways with a slow reader",
                len(echoed) == len(sizes) and all(e["ok"] for e in echoed), str(echoed))
        R.check("websocket: 20 frames in one write come back in order", out.get("burst_ok") is True, str(out))
        R.check("websocket: close handshake then EOF", out.get("close_echoed") and out.get("eof_after_close"),
                str(out))
    R.check("websocket: upstream connection closed after the close handshake",
            wait_event(lambda e: e["kind"] == "ws" and e["event"] == "eof" and e.get("path") == "/chat") is not None,
            str(events()))
    R.check("websocket: upstream connection made from the pod's IP",
            wait_event(lambda e: e["kind"] == "ws" and e["event"] == "open" and e.get("path") == "/chat"
                       and e["peer"] == CLIENT_IP) is not None, str(events()))
    # The tunnel's access-log line is written when it ends, with the bytes it carried.
    line = None
    deadline = time.monotonic() + 5
    while line is None and time.monotonic() < deadline:
        if os.path.exists(access_log):
            with open(access_log) as f:
                line = next((json.loads(l) for l in f if '"/chat"' in l), None)
        time.sleep(0.05)
    payload = sum(sizes)
    R.check("websocket: one access-log line at the tunnel's end: 101, its bytes both ways, its whole life",
            line is not None and line["response_code"] == 101 and line["bytes_received"] > payload
            and line["bytes_sent"] > payload and line["duration"] >= 1000 and line["upstream_cluster"] == "ws"
            and line["upstream_host"] == f"{SERVER_IP}:{WS_PORT}", str(line))
    opened = d.wait_metric("culvert_http_downstream_upgrades_total", 1, {"type": "websocket"})
    R.check("culvert_http_downstream_upgrades_total{type=websocket} counts the tunnel", opened and opened >= 1,
            str(opened))

    # --- a refusing upstream's answer is relayed as an ordinary response
    out = peer("ws", VIP, "80", "/reject")
    if out:
        R.check("websocket: upstream's 403 relayed with its body",
                out["response"]["status"] == 403 and out.get("body") == "upstream refuses\n"
                and header(out["response"], "x-upstream") == ["yes"], str(out))
        R.check("websocket: connection closes after a refused upgrade", out.get("closed_after") is True, str(out))

    # --- upgrades not enabled: Envoy answers 403 without contacting the upstream
    before = len([e for e in events() if e["kind"] == "ws" and e["event"] == "open"])
    for label, vip, path in [("route disables websocket", VIP, "/nows"),
                             ("connection manager lists no upgrade", PLAIN_VIP, "/chat")]:
        out = peer("ws", vip, "80", path)
        if out:
            R.check(f"websocket refused ({label}): 403", out["response"]["status"] == 403, str(out))
            R.check(f"websocket refused ({label}): connection closed", out.get("closed_after") is True, str(out))
    time.sleep(0.2)
    R.check("refused upgrades never reached the upstream",
            len([e for e in events() if e["kind"] == "ws" and e["event"] == "open"]) == before, str(events()))
    rejected = d.wait_metric("culvert_http_downstream_upgrades_rejected_total", 2,
                             {"type": "websocket", "reason": "not_enabled"})
    R.check("culvert_http_downstream_upgrades_rejected_total counts both", rejected == 2, str(rejected))

    # --- teardown from either side, and the idle timeout
    out = peer("ws-hold", VIP, "80", "/chat", "bye", "3")
    R.check("upstream closes: culvert closes the client's connection", out and out["eof"] is True, str(out))
    n_eof = len([e for e in events() if e["kind"] == "ws" and e["event"] == "eof"])
    out = peer("ws-hold", VIP, "80", "/chat", "drop", "0")
    R.check("client closes: culvert closes the upstream connection",
            out is not None and wait_event(
                lambda e: len([x for x in events() if x["kind"] == "ws" and x["event"] == "eof"]) > n_eof) is not None,
            str(events()[-3:]))
    out = peer("ws-hold", VIP, "80", "/idle", "idle", "5")
    R.check("route idle_timeout (1 s) closes an idle tunnel", out and out["eof"] is True and 0.8 <= out["s"] <= 3,
            str(out))
    out = peer("ws-hold", VIP, "80", "/short", "idle", "5")
    R.check("route max_stream_duration (1 s) ends a tunnel (stream_idle_timeout is 5 min here)",
            out and out["eof"] is True and 0.5 <= out["s"] <= 3, str(out))

    # --- CONNECT terminated by culvert: curl --proxytunnel, then raw bytes with a half-close
    # Not Pod.curl: its --noproxy '*' would make curl skip the proxy and go direct.
    cp = client.run([th.CURL, "-q", "-sS", "-v", "--max-time", "5", "--proxytunnel", "-x", f"http://{VIP}:80",
                     f"http://{SERVER_IP}:{HTTP_PORT}/via-connect"], cgroup=d.cgroup, timeout=20)
    R.check("CONNECT (curl --proxytunnel): culvert answers 200 and the request goes through",
            cp.returncode == 0 and "CONNECT " in cp.stderr
            and "HTTP/1.1 200" in cp.stderr and f"peer={CLIENT_IP} path=/via-connect" in cp.stdout, describe(cp))
    out = peer("connect", VIP, "80", f"{SERVER_IP}:{ECHO_PORT}", str(16 * MIB), "half-close")
    if out:
        print(f"figure: 16 MiB echoed through a terminated CONNECT tunnel in {out.get('echo_ms')} ms", flush=True)
        R.check("CONNECT: 200 from culvert", out["response"]["status"] == 200, str(out))
        R.check("CONNECT: 16 MiB echoed intact through the raw TCP tunnel", out.get("echo_ok") is True, str(out))
        R.check("CONNECT: client's FIN reaches the echo server, whose FIN comes back", out.get("eof") is True,
                str(out))
    R.check("CONNECT: the echo server's connection came from the pod's IP",
            wait_event(lambda e: e["kind"] == "echo" and e["event"] == "open" and e["peer"] == CLIENT_IP) is not None,
            str(events()))
    opened = d.wait_metric("culvert_http_downstream_upgrades_total", 2, {"type": "connect"})
    R.check("culvert_http_downstream_upgrades_total{type=connect} counts both", opened == 2,
            "\n".join(x for x in d.stats_text().splitlines() if "upgrades" in x))

    # --- CONNECT without connect_config is forwarded: the upstream proxy sees the CONNECT
    out = peer("connect", VIP, "80", "forward.test:443", "100000")
    if out:
        R.check("forwarded CONNECT: the upstream proxy's 200 relayed", out["response"]["status"] == 200, str(out))
        R.check("forwarded CONNECT: bytes tunnelled through the upstream proxy", out.get("echo_ok") is True, str(out))
    fwd = wait_event(lambda e: e["kind"] == "proxy" and e["event"] == "open")
    R.check("forwarded CONNECT: upstream saw CONNECT forward.test:443 with x-forwarded-for",
            fwd is not None and fwd["line"].startswith("CONNECT forward.test:443 ")
            and [v for k, v in fwd["headers"] if k == "x-forwarded-for"] == [CLIENT_IP], str(fwd))

    # --- CONNECT refused: no matching connect route → 404; not enabled → 403
    out = peer("connect", VIP, "80", f"{SERVER_IP}:1234", "10")
    R.check("CONNECT matching no connect_matcher route: 404", out and out["response"]["status"] == 404, str(out))
    out = peer("connect", PLAIN_VIP, "80", f"{SERVER_IP}:{ECHO_PORT}", "10")
    R.check("CONNECT where the connection manager does not enable it: 403",
            out and out["response"]["status"] == 403 and out.get("closed_after") is True, str(out))
    deadline = time.monotonic() + 3
    while (active := d.metric("culvert_http_downstream_upgrades_active")) and time.monotonic() < deadline:
        time.sleep(0.05)
    R.check("no tunnel left open (culvert_http_downstream_upgrades_active back to 0)", active == 0, str(active))


if __name__ == "__main__":
    sys.exit(run_test("integration_tunnels", scenario))
