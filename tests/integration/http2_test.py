#!/usr/bin/python3
"""HTTP/2 and gRPC through culvert, captured and on a bound listener.

    /usr/bin/python3 tests/integration/http2_test.py \
        --culvertd build/agent/culvertd --culvertctl build/agent/culvertctl

Needs root (exit 77 = skip when not root, unless CULVERT_REQUIRE_PRIVILEGED=1).
Pods "client" (10.244.2.1) and "server" (10.244.2.2). In the server pod: the python
HTTP/1.1 echo server (:8080), nghttpd --echo-upload (:8443, HTTP/2 prior knowledge,
-v so it logs every header it received) and a python3-grpcio server (:50051) that
reports what it received. Captured: curl --http2-prior-knowledge, nghttp (several
streams on one connection), a raw HTTP/2 client sending illegal headers, a large body
to a slow reader, and a grpcio client (unary, server/client/bidi streaming, an error
status). Bound listener on 127.0.0.1: h2load against loopback upstreams.
"""

import hashlib
import json
import os
import re
import subprocess
import sys
import threading
import time

sys.path.insert(0, os.path.dirname(os.path.abspath(__file__)))
import testhosts as th  # noqa: E402
from culvertd_harness import Culvertd, check_isolated, describe, free_port, run_test  # noqa: E402

CLIENT_IP, SERVER_IP = "10.244.2.1", "10.244.2.2"
H1_PORT, H2_PORT, GRPC_PORT = 8080, 8443, 50051
VIP, GRPC_VIP = "10.96.0.20", "10.96.0.21"
NGHTTPD = "/usr/sbin/nghttpd"
NGHTTP = "/usr/bin/nghttp"
H2LOAD = "/usr/bin/h2load"
PYTHON = "/usr/bin/python3"
BIG = 8 * 1024 * 1024

HTTP2_OPTIONS = """\
  typed_extension_protocol_options:
    envoy.extensions.upstreams.http.v3.HttpProtocolOptions:
      "@type": type.googleapis.com/envoy.extensions.upstreams.http.v3.HttpProtocolOptions
      explicit_http_config: {{http2_protocol_options: {{}}}}
"""


def hcm(stat_prefix: str, h1_cluster: str, h2_cluster: str) -> str:
    return f"""\
    - name: envoy.filters.network.http_connection_manager
      typed_config:
        "@type": type.googleapis.com/envoy.extensions.filters.network.http_connection_manager.v3.HttpConnectionManager
        stat_prefix: {stat_prefix}
        route_config:
          name: {stat_prefix}
          virtual_hosts:
          - name: all
            domains: ["*"]
            routes:
            - match: {{prefix: "/h1/"}}
              route: {{cluster: {h1_cluster}}}
            - match: {{prefix: "/"}}
              route: {{cluster: {h2_cluster}}}
        http_filters:
        - name: envoy.filters.http.router
          typed_config: {{"@type": type.googleapis.com/envoy.extensions.filters.http.router.v3.Router}}
"""


def cluster(name: str, ip: str, port: int, http2: bool) -> str:
    out = f"""\
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
    return out + (HTTP2_OPTIONS.format() if http2 else "")


def resources(bound_port: int, local_h1: int, local_h2: int) -> str:
    return f"""\
version_info: "1"
resources:
- "@type": type.googleapis.com/envoy.config.listener.v3.Listener
  name: vip
  address: {{socket_address: {{address: {VIP}, port_value: 80}}}}
  bind_to_port: false
  filter_chains:
  - filters:
{hcm("vip", "h1", "h2")}
- "@type": type.googleapis.com/envoy.config.listener.v3.Listener
  name: grpc
  address: {{socket_address: {{address: {GRPC_VIP}, port_value: {GRPC_PORT}}}}}
  bind_to_port: false
  filter_chains:
  - filters:
{hcm("grpc", "grpc", "grpc")}
- "@type": type.googleapis.com/envoy.config.listener.v3.Listener
  name: bound
  address: {{socket_address: {{address: 127.0.0.1, port_value: {bound_port}}}}}
  filter_chains:
  - filters:
{hcm("bound", "local_h1", "local_h2")}
{cluster("h1", SERVER_IP, H1_PORT, False)}
{cluster("h2", SERVER_IP, H2_PORT, True)}
{cluster("grpc", SERVER_IP, GRPC_PORT, True)}
{cluster("local_h1", "127.0.0.1", local_h1, False)}
{cluster("local_h2", "127.0.0.1", local_h2, True)}
"""


GRPC_SERVER = r'''
import sys
from concurrent import futures
import grpc

def seen(ctx):
    m = dict(ctx.invocation_metadata())
    return (("x-seen-xff", m.get("x-forwarded-for", "")), ("x-seen-request-id", m.get("x-request-id", "")))

def unary(req, ctx):
    if req == b"fail":
        ctx.abort(grpc.StatusCode.NOT_FOUND, "no such thing")
    ctx.set_trailing_metadata(seen(ctx))
    return b"unary:" + req

def server_stream(req, ctx):
    for i in range(int(req)):
        yield b"item%d" % i
    ctx.set_trailing_metadata((("x-count", req.decode()),))

def client_stream(it, ctx):
    parts = list(it)
    return b"got%d:" % len(parts) + b",".join(parts)

def bidi(it, ctx):
    for x in it:
        yield b"echo:" + x

handlers = {
    "Unary": grpc.unary_unary_rpc_method_handler(unary),
    "ServerStream": grpc.unary_stream_rpc_method_handler(server_stream),
    "ClientStream": grpc.stream_unary_rpc_method_handler(client_stream),
    "Bidi": grpc.stream_stream_rpc_method_handler(bidi),
}
server = grpc.server(futures.ThreadPoolExecutor(max_workers=8),
                     options=[("grpc.max_receive_message_length", 8 << 20)])
server.add_generic_rpc_handlers((grpc.method_handlers_generic_handler("test.Echo", handlers),))
server.add_insecure_port(sys.argv[1])
server.start()
print("READY", flush=True)
server.wait_for_termination()
'''

GRPC_CLIENT = r'''
import json, sys
import grpc
ch = grpc.insecure_channel(sys.argv[1], options=[("grpc.enable_http_proxy", 0),
                                                 ("grpc.max_receive_message_length", 8 << 20)])
out = {}
u = ch.unary_unary("/test.Echo/Unary")
resp, call = u.with_call(b"hi", timeout=10)
out["unary"] = resp.decode()
out["unary_code"] = call.code().name
out["unary_trailers"] = dict(call.trailing_metadata())
try:
    u(b"fail", timeout=10)
    out["fail"] = "no error"
except grpc.RpcError as e:
    out["fail"] = [e.code().name, e.details()]
call = ch.unary_stream("/test.Echo/ServerStream")(b"5", timeout=10)
out["server_stream"] = [x.decode() for x in call]
out["server_stream_trailers"] = dict(call.trailing_metadata())
out["client_stream"] = ch.stream_unary("/test.Echo/ClientStream")(iter([b"a", b"b", b"c"]), timeout=10).decode()
out["bidi"] = [x.decode() for x in ch.stream_stream("/test.Echo/Bidi")(iter([b"x", b"y", b"z"]), timeout=10)]
out["big"] = len(u(b"z" * (1 << 20), timeout=20))
print(json.dumps(out))
'''

GRPC_ONE_CALL = r'''
import sys
import grpc
ch = grpc.insecure_channel(sys.argv[1], options=[("grpc.enable_http_proxy", 0)])
try:
    ch.unary_unary("/test.Echo/Unary")(b"again", timeout=10)
    print("OK")
except grpc.RpcError as e:
    print(e.code().name)
'''

# Speaks just enough HTTP/2 by hand to send a header block nghttp2-based clients refuse
# to send (HPACK literals without indexing or Huffman), and reports what came back for
# stream 1.
RAW_H2_CLIENT = r'''
import socket, struct, sys
def frame(t, flags, sid, payload):
    return struct.pack(">I", len(payload))[1:] + bytes([t, flags]) + struct.pack(">I", sid) + payload
def lit(n, v):
    n, v = n.encode(), v.encode()
    return b"\x00" + bytes([len(n)]) + n + bytes([len(v)]) + v
block = (lit(":method", "GET") + lit(":scheme", "http") + lit(":path", "/h1/bad") +
         lit(":authority", "vip") + lit(sys.argv[3], sys.argv[4]))
s = socket.create_connection((sys.argv[1], int(sys.argv[2])), timeout=5)
s.sendall(b"PRI * HTTP/2.0\r\n\r\nSM\r\n\r\n" + frame(4, 0, 0, b"") + frame(1, 0x5, 1, block))
buf = b""
while True:
    d = s.recv(65536)
    if not d:
        print("EOF")
        break
    buf += d
    while len(buf) >= 9:
        ln = int.from_bytes(buf[:3], "big")
        if len(buf) < 9 + ln:
            break
        t, sid, p = buf[3], int.from_bytes(buf[5:9], "big") & 0x7fffffff, buf[9:9 + ln]
        buf = buf[9 + ln:]
        if sid == 1 and t == 3:
            print("RST_STREAM", int.from_bytes(p, "big"))
            sys.exit(0)
        if sid == 1 and t == 1:
            print("HEADERS")
            sys.exit(0)
        if t == 7:
            print("GOAWAY")
            sys.exit(0)
'''


def rss_kib(pid: int) -> int:
    with open(f"/proc/{pid}/status") as f:
        for line in f:
            if line.startswith("VmRSS:"):
                return int(line.split()[1])
    return 0


def scenario(net: th.TestNetwork, args, R: th.Results) -> None:
    client = net.add_pod("client", CLIENT_IP)
    server = net.add_pod("server", SERVER_IP)
    d = Culvertd(net, args, R)
    check_isolated(net, R)

    # --- upstreams
    htdocs = net.path("htdocs")
    os.makedirs(htdocs, exist_ok=True)
    with open(os.path.join(htdocs, "hello.txt"), "w") as f:
        f.write("hello over h2\n")
    for i in range(4):
        with open(os.path.join(htdocs, f"f{i}.txt"), "w") as f:
            f.write(f"file {i}\n")
    big = os.urandom(BIG)
    big_path = net.path("big.bin")
    with open(big_path, "wb") as f:
        f.write(big)
    big_sha = hashlib.sha256(big).hexdigest()

    net.start_echo_server(server, H1_PORT)
    nghttpd_log = net.path("nghttpd.log")
    with open(nghttpd_log, "w") as logf:
        server.spawn([NGHTTPD, "--no-tls", "-v", "--echo-upload", "-a", SERVER_IP, "-d", htdocs, str(H2_PORT)],
                     stdout=logf, stderr=logf)
    grpc_server_py = net.path("grpc_server.py")
    with open(grpc_server_py, "w") as f:
        f.write(GRPC_SERVER)
    grpc_log = open(net.path("grpc_server.log"), "w")
    grpc_proc = server.spawn([PYTHON, "-B", grpc_server_py, f"{SERVER_IP}:{GRPC_PORT}"],
                             stdout=subprocess.PIPE, stderr=grpc_log)
    grpc_log.close()
    R.check("gRPC server started", grpc_proc.stdout.readline().strip() == b"READY", fatal=True)

    # Loopback upstreams for the bound listener (culvertd's own netns).
    local_h1, local_h2, bound_port = free_port(), free_port(), free_port()
    echo_py = net.path("echo_server.py")
    if not os.path.exists(echo_py):
        with open(echo_py, "w") as f:
            f.write(th.ECHO_SERVER_PY)
    local_echo = net.spawn([PYTHON, "-B", echo_py, "127.0.0.1", str(local_h1)],
                           stdout=subprocess.PIPE, stderr=subprocess.DEVNULL)
    local_echo.stdout.readline()
    with open(net.path("nghttpd-local.log"), "w") as logf:
        net.spawn([NGHTTPD, "--no-tls", "--echo-upload", "-a", "127.0.0.1", "-d", htdocs, str(local_h2)],
                  stdout=logf, stderr=logf)
    time.sleep(0.5)

    d.start({"http2.yaml": resources(bound_port, local_h1, local_h2)})
    d.enroll(client, namespace="h2")
    tenant = {"tenant": "h2"}

    def curl(*a: str, max_time: float = 10):
        return client.curl(*a, cgroup=d.cgroup, max_time=max_time, timeout=max_time + 20)

    # --- HTTP/2 downstream → HTTP/1.1 upstream
    cp = curl("--http2-prior-knowledge", "-w", r"\nVERSION=%{http_version}\n", f"http://{VIP}/h1/hello")
    R.check("h2 → h1: curl --http2-prior-knowledge reaches the HTTP/1.1 echo server through capture",
            cp.returncode == 0 and f"peer={CLIENT_IP} path=/h1/hello" in cp.stdout and "host=10.96.0.20" in cp.stdout
            and "VERSION=2" in cp.stdout, describe(cp))
    # --- HTTP/1.1 on the same listener still works (codec_type AUTO)
    cp = curl("--http1.1", f"http://{VIP}/h1/plain")
    R.check("codec AUTO: HTTP/1.1 on the same listener", cp.returncode == 0 and "path=/h1/plain" in cp.stdout,
            describe(cp))

    # --- HTTP/2 → HTTP/2 (nghttpd records what it received)
    cp = curl("--http2-prior-knowledge", "-H", "x-probe: h2h2", "-d", "ping-body", f"http://{VIP}/echo")
    R.check("h2 → h2: nghttpd echoes the uploaded body", cp.returncode == 0 and cp.stdout == "ping-body",
            describe(cp))
    time.sleep(0.3)
    log = th._read(nghttpd_log)
    R.check("h2 → h2: nghttpd received :authority, x-probe and x-forwarded-for = the pod's IP",
            ":authority: 10.96.0.20" in log and "x-probe: h2h2" in log and f"x-forwarded-for: {CLIENT_IP}" in log,
            log[-2000:])
    cp = curl("--http2-prior-knowledge", f"http://{VIP}/hello.txt")
    R.check("h2 → h2: GET of a file", cp.returncode == 0 and cp.stdout == "hello over h2\n", describe(cp))

    # --- HTTP/1.1 downstream → HTTP/2 upstream (Host → :authority, chunked → DATA)
    cp = curl("--http1.1", "-w", r"\nVERSION=%{http_version}", f"http://{VIP}/hello.txt")
    R.check("h1 → h2: GET through an HTTP/2 cluster",
            cp.returncode == 0 and cp.stdout == "hello over h2\n\nVERSION=1.1", describe(cp))
    cp = curl("--http1.1", "-H", "Transfer-Encoding: chunked", "-H", "x-probe: h1h2", "--data-binary", "chunked-body",
              f"http://{VIP}/echo-chunked")
    R.check("h1 → h2: a chunked upload arrives as DATA and is echoed", cp.returncode == 0 and cp.stdout == "chunked-body",
            describe(cp))
    time.sleep(0.3)
    log = th._read(nghttpd_log)
    R.check("h1 → h2: nghttpd received :path, :authority from Host and x-probe, no transfer-encoding",
            ":path: /echo-chunked" in log and "x-probe: h1h2" in log and "transfer-encoding" not in log,
            log[-2000:])

    # --- concurrent streams on one connection (nghttp sends every URI at once)
    streams_before = d.metric("culvert_http2_downstream_streams_total", tenant) or 0
    cx_before = d.metric("culvert_downstream_cx_total", tenant) or 0
    # nghttp fetches each distinct URI once. Each concurrent stream to the HTTP/1.1 echo
    # server needs a connection of its own: 4 go there, 4 to nghttpd.
    uris = [f"http://{VIP}/h1/c{i}" for i in range(4)] + [f"http://{VIP}/f{i}.txt" for i in range(4)]
    cp = client.run([NGHTTP, "-v", *uris], cgroup=d.cgroup, check=False, timeout=30)
    R.check("nghttp: 8 concurrent streams on one connection all answered 200",
            cp.returncode == 0 and cp.stdout.count(":status: 200") == 8
            and all(f"path=/h1/c{i}" in cp.stdout for i in range(4))
            and all(f"file {i}" in cp.stdout for i in range(4)) and cp.stdout.count("] Connected") == 1,
            describe(cp)[-3000:])
    streams = d.wait_metric("culvert_http2_downstream_streams_total", streams_before + 8, tenant)
    cx = d.metric("culvert_downstream_cx_total", tenant)
    R.check("nghttp: 8 streams counted on one downstream connection",
            streams == streams_before + 8 and cx == cx_before + 1,
            f"streams {streams_before}→{streams}, connections {cx_before}→{cx}")

    # --- illegal headers: the stream is reset (PROTOCOL_ERROR) and counted
    raw_py = net.path("raw_h2.py")
    with open(raw_py, "w") as f:
        f.write(RAW_H2_CLIENT)
    for name, value, reason in (("connection", "close", "connection_specific_header"),
                                ("transfer-encoding", "chunked", "connection_specific_header"),
                                ("te", "gzip", "te_not_trailers")):
        cp = client.run([PYTHON, "-B", raw_py, VIP, "80", name, value], cgroup=d.cgroup, check=False, timeout=20)
        R.check(f"illegal header {name}: {value} → RST_STREAM PROTOCOL_ERROR",
                cp.returncode == 0 and cp.stdout.strip() == "RST_STREAM 1", describe(cp))
    labels = dict(tenant, reason="connection_specific_header")
    v = d.wait_metric("culvert_http2_downstream_rq_rejected_total", 2, labels)
    R.check("rejected headers counted by reason (connection_specific_header = 2)", v == 2, f"value {v}")
    v = d.wait_metric("culvert_http2_downstream_rq_rejected_total", 1, dict(tenant, reason="te_not_trailers"))
    R.check("rejected headers counted by reason (te_not_trailers = 1)", v == 1, f"value {v}")

    # --- flow control: 8 MiB up and back to a reader that takes 2 MiB/s; culvert holds
    # windows, not the body
    pid = d.proc.pid
    base = rss_kib(pid)
    peak = [base]
    done = threading.Event()

    def sample():
        while not done.is_set():
            peak[0] = max(peak[0], rss_kib(pid))
            time.sleep(0.05)

    t = threading.Thread(target=sample)
    t.start()
    out_path = net.path("big.out")
    cp = curl("--http2-prior-knowledge", "--limit-rate", "2M", "--data-binary", f"@{big_path}", "-o", out_path,
              f"http://{VIP}/upload", max_time=60)
    done.set()
    t.join()
    got = open(out_path, "rb").read() if os.path.exists(out_path) else b""
    R.check("slow reader: 8 MiB echoed intact through culvert",
            cp.returncode == 0 and hashlib.sha256(got).hexdigest() == big_sha, f"{len(got)} bytes; {describe(cp)}")
    grew = peak[0] - base
    R.check("slow reader: culvertd RSS grew by far less than the body (< 3 MiB)", grew < 3 * 1024,
            f"RSS {base} KiB → peak {peak[0]} KiB (+{grew} KiB) for an 8 MiB body")

    # --- gRPC through capture (HTTP/2 upstream), both ends real grpcio
    client_py = net.path("grpc_client.py")
    with open(client_py, "w") as f:
        f.write(GRPC_CLIENT)
    cp = client.run([PYTHON, "-B", client_py, f"{GRPC_VIP}:{GRPC_PORT}"], cgroup=d.cgroup, check=False, timeout=60)
    try:
        res = json.loads(cp.stdout.strip().splitlines()[-1])
    except (ValueError, IndexError):
        res = {}
    R.check("gRPC: client ran", bool(res), describe(cp))
    if res:
        R.check("gRPC unary: response, OK status, trailers from the server",
                res["unary"] == "unary:hi" and res["unary_code"] == "OK"
                and res["unary_trailers"].get("x-seen-xff") == CLIENT_IP
                and len(res["unary_trailers"].get("x-seen-request-id", "")) == 36, str(res))
        R.check("gRPC error status and message intact", res["fail"] == ["NOT_FOUND", "no such thing"], str(res))
        R.check("gRPC server streaming with trailers",
                res["server_stream"] == [f"item{i}" for i in range(5)]
                and res["server_stream_trailers"].get("x-count") == "5", str(res))
        R.check("gRPC client streaming", res["client_stream"] == "got3:a,b,c", str(res))
        R.check("gRPC bidi streaming", res["bidi"] == ["echo:x", "echo:y", "echo:z"], str(res))
        R.check("gRPC 1 MiB message both ways", res["big"] == len("unary:") + (1 << 20), str(res))
    v = d.metric("culvert_http2_upstream_cx_total")
    R.check("upstream HTTP/2 connections counted", v is not None and v >= 2, f"value {v}")

    # --- the gRPC server goes away: its pooled connection is dropped, calls fail fast
    # (503 → UNAVAILABLE), and a new server is reached on a new connection
    one_call_py = net.path("grpc_one_call.py")
    with open(one_call_py, "w") as f:
        f.write(GRPC_ONE_CALL)
    net.stop(grpc_proc)
    time.sleep(0.3)
    cp = client.run([PYTHON, "-B", one_call_py, f"{GRPC_VIP}:{GRPC_PORT}"], cgroup=d.cgroup, check=False, timeout=30)
    R.check("gRPC server gone: the call fails UNAVAILABLE", cp.stdout.strip() == "UNAVAILABLE", describe(cp))
    grpc_log = open(net.path("grpc_server2.log"), "w")
    grpc_proc = server.spawn([PYTHON, "-B", grpc_server_py, f"{SERVER_IP}:{GRPC_PORT}"],
                             stdout=subprocess.PIPE, stderr=grpc_log)
    grpc_log.close()
    R.check("gRPC server restarted", grpc_proc.stdout.readline().strip() == b"READY", fatal=True)
    cx_before = d.metric("culvert_http2_upstream_cx_total") or 0
    cp = client.run([PYTHON, "-B", one_call_py, f"{GRPC_VIP}:{GRPC_PORT}"], cgroup=d.cgroup, check=False, timeout=30)
    R.check("gRPC server back: the call succeeds on a new upstream connection",
            cp.stdout.strip() == "OK" and (d.metric("culvert_http2_upstream_cx_total") or 0) > cx_before,
            describe(cp))

    # --- bound listener: h2load to both upstream kinds. Each concurrent stream to an
    # HTTP/1.1 upstream needs its own connection (a thread of the python echo server):
    # 4 streams there, 4 connections × 8 streams to nghttpd.
    for path, what, conns, streams in (("/h1/load", "HTTP/1.1 upstream", 1, 4),
                                       ("/hello.txt", "HTTP/2 upstream", 4, 8)):
        cp = net.run([H2LOAD, "-n", "400", "-c", str(conns), "-m", str(streams),
                      f"http://127.0.0.1:{bound_port}{path}"], check=False, timeout=60)
        m = re.search(r"requests: (\d+) total, \d+ started, (\d+) done, (\d+) succeeded", cp.stdout)
        ok = m is not None and m.group(3) == "400" and "status codes: 400 2xx" in cp.stdout
        R.check(f"bound listener: h2load 400 requests over {conns}×{streams} streams to the {what}", ok,
                describe(cp)[-1500:])

    # --- an endpoint leaves its HTTP/2 cluster: the pooled connections to it get a GOAWAY
    # and close (no streams are open), while the other clusters' connections stay
    def established(port: int) -> int:
        cp = net.run(["ss", "-Htn", "state", "established", f"( dport = :{port} )"], check=False)
        return len([line for line in cp.stdout.splitlines() if line.strip()])

    R.check("pooled HTTP/2 connections to local_h2 before the update", established(local_h2) > 0,
            f"{established(local_h2)} established")
    active_before = d.metric("culvert_http2_upstream_cx_active") or 0
    moved = resources(bound_port, local_h1, local_h2).replace(
        f"port_value: {local_h2}}}", f"port_value: {local_h1}}}").replace('version_info: "1"', 'version_info: "2"')
    d.write_resources("http2.yaml", moved)
    deadline = time.monotonic() + 3
    while established(local_h2) > 0 and time.monotonic() < deadline:
        time.sleep(0.05)
    R.check("endpoint left: its HTTP/2 connections closed", established(local_h2) == 0,
            f"{established(local_h2)} still established")
    active_after = d.metric("culvert_http2_upstream_cx_active") or 0
    R.check("endpoint left: only those connections went (the h2 and gRPC clusters keep theirs)",
            0 < active_after < active_before, f"before={active_before} after={active_after}")


if __name__ == "__main__":
    sys.exit(run_test("integration_http2", scenario))
