#!/usr/bin/python3
"""xDS end-to-end: culvertd against a real gRPC control plane on another stack.

    /usr/bin/python3 tests/integration/xds_ads_test.py \
        --culvertd build/agent/culvertd --culvertctl build/agent/culvertctl

The control plane is Python grpcio (Debian python3-grpcio) speaking
envoy.service.discovery.v3.AggregatedDiscoveryService/StreamAggregatedResources;
its messages come from the project's own .proto subset compiled with protoc
--python_out into the run's temp dir. It pushes, updates, breaks and removes
LDS/RDS/CDS/EDS resources and checks every ACK and NACK (version_info,
response_nonce, error_detail) while a client pod keeps sending requests through
capture. Then culvertd restarts with its control plane down and must serve the
stored configuration as "stale", reconnect when the control plane comes up, and
resume from the stored versions.

Needs root (exit 77 = skip when not root, unless CULVERT_REQUIRE_PRIVILEGED=1).
"""

import argparse
import importlib
import os
import queue
import signal
import subprocess
import sys
import threading
import time
import traceback

sys.path.insert(0, os.path.dirname(os.path.abspath(__file__)))
import testhosts as th  # noqa: E402
from culvertd_harness import (describe, free_port, http_get, sum_metric,  # noqa: E402
                              tail)

REPO = os.path.dirname(os.path.dirname(os.path.dirname(os.path.abspath(__file__))))
PROTO_ROOT = os.path.join(REPO, "xds", "proto")
CLIENT_IP, SERVER_IP, SERVER_PORT = "10.244.1.1", "10.244.1.2", 8080
VIP, VIP2 = "10.96.0.10", "10.96.0.11"
CAPTURE_PORT = 15001
CURL_CONNECT_FAILED = 7
LDS = "type.googleapis.com/envoy.config.listener.v3.Listener"
RDS = "type.googleapis.com/envoy.config.route.v3.RouteConfiguration"
CDS = "type.googleapis.com/envoy.config.cluster.v3.Cluster"
EDS = "type.googleapis.com/envoy.config.endpoint.v3.ClusterLoadAssignment"

BOOTSTRAP = """\
node: {{id: xds-test, cluster: test, locality: {{zone: z1}}, metadata: {{team: net}}}}
admin: {{address: "127.0.0.1:{admin_port}", socket: ""}}
workers: 2
resources: {{path: "{tmp}/no-resources"}}
capture: {{port: {capture_port}, cgroup: "{cgroup}", fail_mode: open}}
bpf: {{pin_root: "{pin_root}"}}
enrollment: {{socket: "{tmp}/cni.sock"}}
state_dir: "{tmp}/state"
xds: {{address: "{xds}", max_stale: {max_stale}, delta: {delta}}}
log: {{level: debug}}
"""

# Sends one HTTP/1.1 request per new connection to VIP:80 at ~RATE/s until
# STOP_FILE exists; prints "ok=N bad=N rate=R/s" (bad = non-200 or any socket error).
# Each thread keeps to an absolute schedule (a slow request is caught up after), so the
# offered rate holds at 200/s on a 2-core box.
LOADER = r'''
import os, socket, sys, threading, time
vip, rate, stop = sys.argv[1], float(sys.argv[2]), sys.argv[3]
THREADS = 16
lock = threading.Lock()
counts = {"ok": 0, "bad": 0, "before_stop": 0}
errors = {}
stopped_at = []  # when the first thread saw the stop file: the rate's window ends there

def one():
    try:
        with socket.create_connection((vip, 80), timeout=3) as s:
            s.sendall(b"GET /load HTTP/1.1\r\nHost: vip\r\nConnection: close\r\n\r\n")
            data = b""
            while True:
                chunk = s.recv(4096)
                if not chunk:
                    break
                data += chunk
        return None if data.startswith(b"HTTP/1.1 200") else repr(data[:40])
    except OSError as e:
        return str(e)

def worker(index):
    period = THREADS / rate
    due = time.monotonic() + index * period / THREADS  # threads spread over one period
    while True:
        if os.path.exists(stop):
            with lock:
                if not stopped_at:
                    stopped_at.append(time.monotonic())
            return
        now = time.monotonic()
        if due > now:
            time.sleep(due - now)
        due += period
        err = one()
        with lock:
            if not stopped_at:
                counts["before_stop"] += 1
            if err is None:
                counts["ok"] += 1
            else:
                counts["bad"] += 1
                errors[err] = errors.get(err, 0) + 1

t0 = time.monotonic()
ts = [threading.Thread(target=worker, args=(i,)) for i in range(THREADS)]
for t in ts:
    t.start()
for t in ts:
    t.join()
secs = (stopped_at[0] if stopped_at else time.monotonic()) - t0
print(f"ok={counts['ok']} bad={counts['bad']} rate={counts['before_stop'] / secs:.0f}/s errors={errors}",
      flush=True)
'''


def compile_protos(outdir: str):
    """protoc --python_out for the project's subset; returns the modules."""
    protos = []
    for root, _, files in os.walk(PROTO_ROOT):
        for f in files:
            if f.endswith(".proto"):
                protos.append(os.path.relpath(os.path.join(root, f), PROTO_ROOT))
    os.makedirs(outdir, exist_ok=True)
    subprocess.run(["protoc", f"-I{PROTO_ROOT}", "-I/usr/include", f"--python_out={outdir}", *sorted(protos)],
                   check=True, cwd=PROTO_ROOT)
    sys.path.insert(0, outdir)
    mods = {}
    for p in protos:
        name = p[:-len(".proto")].replace("/", ".") + "_pb2"
        mods[name.rsplit(".", 1)[1]] = importlib.import_module(name)
    return mods


class ControlPlane:
    """One ADS service; each new stream replaces the previous one."""

    def __init__(self, pb, address: str, delta: bool = False, credentials=None):
        import grpc
        from concurrent import futures
        self.pb = pb
        self.delta = delta
        self.cond = threading.Condition()
        self.requests = []  # every DiscoveryRequest, all streams, in order
        self.streams = 0
        self.out = None
        self.nonce = 0
        D = pb["discovery_pb2"]
        req, resp = ((D.DeltaDiscoveryRequest, D.DeltaDiscoveryResponse) if delta
                     else (D.DiscoveryRequest, D.DiscoveryResponse))
        handler = grpc.stream_stream_rpc_method_handler(
            self._stream, request_deserializer=req.FromString,
            response_serializer=resp.SerializeToString)
        self.server = grpc.server(futures.ThreadPoolExecutor(max_workers=8))
        self.server.add_generic_rpc_handlers((grpc.method_handlers_generic_handler(
            "envoy.service.discovery.v3.AggregatedDiscoveryService",
            {"DeltaAggregatedResources" if delta else "StreamAggregatedResources": handler}),))
        port = (self.server.add_secure_port(address, credentials) if credentials
                else self.server.add_insecure_port(address))
        if not port:
            raise RuntimeError(f"cannot listen on {address}")
        self.server.start()

    def stop(self):
        self.server.stop(grace=0).wait(5)

    def _stream(self, request_iterator, context):
        q = queue.Queue()
        with self.cond:
            self.streams += 1
            self.out = q
            self.cond.notify_all()

        def reader():
            try:
                for r in request_iterator:
                    with self.cond:
                        self.requests.append(r)
                        self.cond.notify_all()
            except Exception:  # noqa: BLE001 (stream cancelled)
                pass
        threading.Thread(target=reader, daemon=True).start()
        while context.is_active():
            try:
                item = q.get(timeout=0.1)
            except queue.Empty:
                continue
            yield item

    def push(self, type_url: str, version: str, resources) -> str:
        D = self.pb["discovery_pb2"]
        self.nonce += 1
        nonce = f"nonce-{self.nonce}"
        r = D.DiscoveryResponse(type_url=type_url, version_info=version, nonce=nonce)
        for res in resources:
            # An Any is sent as it is (a bench packs a large resource once, not per push).
            if res.DESCRIPTOR.full_name == "google.protobuf.Any":
                r.resources.add().CopyFrom(res)
            else:
                r.resources.add().Pack(res)
        with self.cond:
            q = self.out
        q.put(r)
        return nonce

    def push_delta(self, type_url: str, resources, removed=(), name_of=lambda r: r.name) -> str:
        D = self.pb["discovery_pb2"]
        self.nonce += 1
        nonce = f"dnonce-{self.nonce}"
        r = D.DeltaDiscoveryResponse(type_url=type_url, nonce=nonce, system_version_info=nonce,
                                     removed_resources=list(removed))
        for version, res in resources:
            item = r.resources.add(name=name_of(res), version=version)
            item.resource.Pack(res)
        with self.cond:
            q = self.out
        q.put(r)
        return nonce

    def wait(self, pred, start: int = 0, timeout: float = 10.0):
        """First request at index >= start satisfying pred, or None."""
        deadline = time.monotonic() + timeout
        with self.cond:
            while True:
                for r in self.requests[start:]:
                    if pred(r):
                        return r
                left = deadline - time.monotonic()
                if left <= 0:
                    return None
                self.cond.wait(left)

    def mark(self) -> int:
        with self.cond:
            return len(self.requests)


class Resources:
    def __init__(self, pb):
        self.pb = pb
        from google.protobuf import empty_pb2, json_format  # noqa: F401 (Empty: the "unsupported filter")
        self.jf = json_format

    def listener(self, name, vip, route, bad_filter=False):
        filters = []
        if bad_filter:
            filters.append({"name": "envoy.filters.http.lua",
                            "typed_config": {"@type": "type.googleapis.com/google.protobuf.Empty"}})
        filters.append({"name": "envoy.filters.http.router", "typed_config": {
            "@type": "type.googleapis.com/envoy.extensions.filters.http.router.v3.Router"}})
        d = {"name": name,
             "address": {"socket_address": {"address": vip, "port_value": 80}},
             "bind_to_port": False,
             "filter_chains": [{"filters": [{
                 "name": "envoy.filters.network.http_connection_manager",
                 "typed_config": {
                     "@type": "type.googleapis.com/envoy.extensions.filters.network."
                              "http_connection_manager.v3.HttpConnectionManager",
                     "stat_prefix": name,
                     "rds": {"route_config_name": route, "config_source": {"ads": {}}},
                     "http_filters": filters}}]}]}
        return self.jf.ParseDict(d, self.pb["listener_pb2"].Listener())

    def route(self, name, cluster):
        d = {"name": name, "virtual_hosts": [{"name": "all", "domains": ["*"], "routes": [
            {"match": {"prefix": "/"}, "route": {"cluster": cluster}}]}]}
        return self.jf.ParseDict(d, self.pb["route_pb2"].RouteConfiguration())

    def cluster(self, name, bad_lb_policy=False):
        # 5 s: the test echo server (socketserver, listen backlog 5) drops SYNs under the
        # load burst; a 1 s timeout would turn one retransmitted SYN into a 503.
        d = {"name": name, "type": "EDS", "connect_timeout": "5s",
             "eds_cluster_config": {"eds_config": {"ads": {}}}}
        if bad_lb_policy:
            d["lb_policy"] = "CLUSTER_PROVIDED"  # only for ORIGINAL_DST: rejected
        return self.jf.ParseDict(d, self.pb["cluster_pb2"].Cluster())

    def cla(self, name, ip, port):
        d = {"cluster_name": name, "endpoints": [{"lb_endpoints": [{"endpoint": {"address": {
            "socket_address": {"address": ip, "port_value": port}}}}]}]}
        return self.jf.ParseDict(d, self.pb["endpoint_pb2"].ClusterLoadAssignment())


class XdsTest:
    def __init__(self, net: th.TestNetwork, args, R: th.Results):
        self.net, self.args, self.R = net, args, R
        self.proc = None
        self.logs = []
        self.cp = None

    # ------------------------------------------------------------ helpers
    def admin(self, path):
        try:
            return http_get(f"http://127.0.0.1:{self.admin_port}{path}")
        except OSError as e:
            return None, str(e)

    def metric(self, name):
        code, body = self.admin("/stats/prometheus")
        return sum_metric(body, name) if code == 200 else None

    def curl(self, ip, path):
        return self.client.curl(f"http://{ip}{path}", cgroup=self.cg)

    def reaches_server(self, ip, path):
        cp = self.curl(ip, path)
        return cp.returncode == 0 and f"path={path} " in cp.stdout, describe(cp)

    def start_culvertd(self, xds_address, tag, delta=False, max_stale=3600):
        boot = os.path.join(self.net.tmpdir, f"bootstrap-{tag}.yaml")
        with open(boot, "w") as f:
            f.write(BOOTSTRAP.format(admin_port=self.admin_port, tmp=self.net.tmpdir,
                                     capture_port=CAPTURE_PORT, cgroup=self.cg.path,
                                     pin_root=self.pin_root, xds=xds_address,
                                     delta="true" if delta else "false", max_stale=max_stale))
        self.boot = boot
        log = os.path.join(self.net.tmpdir, f"culvertd-{tag}.log")
        self.logs.append(log)
        with open(log, "w") as logf:
            self.proc = self.net.spawn([self.args.culvertd, "--config", boot], stdout=logf, stderr=logf)

    def stop_culvertd(self):
        self.proc.send_signal(signal.SIGTERM)
        try:
            rc = self.proc.wait(timeout=5)
        except subprocess.TimeoutExpired:
            rc = None
        self.R.check("culvertd exits 0 on SIGTERM", rc == 0, f"rc={rc}")
        self.net.stop(self.proc, signal.SIGKILL)

    def wait_ready(self, want_code=200, timeout=15.0):
        deadline = time.monotonic() + timeout
        last = None
        while time.monotonic() < deadline:
            if self.proc.poll() is not None:
                return None, f"culvertd exited with {self.proc.returncode}"
            last = self.admin("/ready")
            if last[0] == want_code:
                return last
            time.sleep(0.1)
        return last

    def start_load(self, tag):
        """LOADER through capture to VIP at 200/s, until check_load."""
        stop_file = os.path.join(self.net.tmpdir, f"stop-load-{tag}")
        out = os.path.join(self.net.tmpdir, f"load-{tag}.out")
        with open(out, "w") as lf:
            proc = self.client.spawn(["/usr/bin/python3", "-c", LOADER, VIP, "200", stop_file],
                                     cgroup=self.cg, stdout=lf, stderr=lf)
        return proc, stop_file, out

    def check_load(self, load, variant):
        proc, stop_file, out = load
        open(stop_file, "w").close()
        proc.wait(timeout=10)
        self.net.stop(proc)
        with open(out) as f:
            text = f.read().strip()
        okn = int(text.split("ok=")[1].split()[0]) if "ok=" in text else 0
        rate = float(text.split("rate=")[1].split("/")[0]) if "rate=" in text else 0.0
        print(f"load ({variant}): {text}", flush=True)
        self.R.check(f"{variant}: load through capture during pushes, NACKs and repair: no failures",
                     "bad=0 " in text + " " and okn > 200, text)
        self.R.check(f"{variant}: the load ran at 200 requests/s (190 at least)", rate >= 190, text)

    def enroll(self):
        cp = self.net.run([self.args.culvertctl, "--config", self.boot, "enroll", "--netns",
                           self.client.netns_path, "--namespace", "default", "--name", "client",
                           "--ip", CLIENT_IP], timeout=20)
        self.R.check("culvertctl enroll exits 0", cp.returncode == 0, describe(cp), fatal=True)

    def expect_ack(self, name, type_url, version, nonce, start):
        r = self.cp.wait(lambda r: r.type_url == type_url and r.response_nonce == nonce, start)
        self.R.check(f"{name}: ACK version_info={version!r} nonce={nonce}",
                     r is not None and r.version_info == version and not r.HasField("error_detail"),
                     f"got {r}")
        return r

    def expect_nack(self, name, type_url, last_good, nonce, start, must_name):
        r = self.cp.wait(lambda r: r.type_url == type_url and r.response_nonce == nonce, start)
        ok = (r is not None and r.version_info == last_good and r.HasField("error_detail")
              and r.error_detail.code == 3 and all(s in r.error_detail.message for s in must_name))
        self.R.check(f"{name}: NACK version_info={last_good!r} nonce={nonce} naming {must_name}", ok,
                     f"got {r}")
        return r

    def expect_subscription(self, name, type_url, names, start):
        r = self.cp.wait(lambda r: r.type_url == type_url and sorted(r.resource_names) == sorted(names),
                         start)
        self.R.check(f"{name}: subscribes {type_url.rsplit('.', 1)[1]} {names}", r is not None,
                     f"requests: {self.cp.requests[start:]}")

    # ----------------------------------------------------------- scenario
    def run(self):
        R, net, a = self.R, self.net, self.args
        pb = compile_protos(os.path.join(net.tmpdir, "py"))
        res = Resources(pb)
        self.client = net.add_pod("client", CLIENT_IP)
        self.server = net.add_pod("server", SERVER_IP)
        self.cg = net.make_cgroup()
        self.pin_root = net.assign_pin_root()
        net.assert_isolated()
        net.start_echo_server(self.server, SERVER_PORT)
        os.makedirs(os.path.join(net.tmpdir, "state"), mode=0o700)
        self.admin_port = free_port()

        # --- phase 1: control plane on a unix socket
        sock = os.path.join(net.tmpdir, "ads.sock")
        self.cp = cp = ControlPlane(pb, f"unix:{sock}")
        self.start_culvertd(f"unix:{sock}", "1")
        first = cp.wait(lambda r: r.type_url == LDS, 0, timeout=15)
        R.check("stream opens with an LDS request carrying the node", first is not None
                and first.node.id == "xds-test" and first.node.cluster == "test"
                and first.node.locality.zone == "z1" and first.node.metadata.fields["team"].string_value == "net"
                and first.node.user_agent_name == "culvert"
                and first.version_info == "" and first.response_nonce == "", f"got {first}", fatal=True)
        R.check("a wildcard CDS request follows", cp.wait(lambda r: r.type_url == CDS, 0) is not None)
        code, body = self.admin("/ready")
        R.check("/ready is 503 waiting for the control plane", code == 503 and "control plane" in body,
                f"{code} {body!r}")

        m = cp.mark()
        n = cp.push(CDS, "c1", [res.cluster("backend")])
        self.expect_ack("CDS c1", CDS, "c1", n, m)
        self.expect_subscription("cluster backend", EDS, ["backend"], m)
        m = cp.mark()
        n = cp.push(LDS, "l1", [res.listener("vip", VIP, "routes")])
        self.expect_ack("LDS l1", LDS, "l1", n, m)
        self.expect_subscription("listener vip", RDS, ["routes"], m)
        m = cp.mark()
        n = cp.push(RDS, "r1", [res.route("routes", "backend")])
        self.expect_ack("RDS r1", RDS, "r1", n, m)
        n = cp.push(EDS, "e1", [res.cla("backend", SERVER_IP, SERVER_PORT)])
        self.expect_ack("EDS e1", EDS, "e1", n, m)
        code, body = self.wait_ready()
        R.check("/ready 200 once configured", code == 200, f"{code} {body!r}", fatal=True)
        self.enroll()
        ok, why = self.reaches_server(VIP, "/one")
        R.check("VIP proxied through capture to the EDS endpoint", ok, why, fatal=True)

        # --- phase 2: pushes, NACKs and repair under load
        load = self.start_load("sotw")
        time.sleep(1.0)

        m = cp.mark()
        n = cp.push(LDS, "l2", [res.listener("vip", VIP, "routes", bad_filter=True),
                                res.listener("vip2", VIP2, "routes")])
        self.expect_nack("LDS l2 (vip asks for a non-optional lua filter)", LDS, "l1", n, m,
                         ["vip:", "envoy.filters.http.lua"])
        time.sleep(0.3)
        ok, why = self.reaches_server(VIP, "/after-nack")
        R.check("after the NACK the last good vip still serves", ok, why)
        ok, why = self.reaches_server(VIP2, "/vip2")
        R.check("the valid vip2 of the NACKed response is applied", ok, why)

        m = cp.mark()
        n = cp.push(EDS, "e2", [res.cla("backend", SERVER_IP, 0)])
        self.expect_nack("EDS e2 (port 0)", EDS, "e1", n, m, ["backend:", "port"])
        ok, why = self.reaches_server(VIP, "/after-eds-nack")
        R.check("after the EDS NACK the last good endpoints serve", ok, why)
        m = cp.mark()
        n = cp.push(CDS, "c2", [res.cluster("backend", bad_lb_policy=True)])
        self.expect_nack("CDS c2 (lb_policy CLUSTER_PROVIDED on an EDS cluster)", CDS, "c1", n, m,
                         ["backend:", "lb_policy"])
        ok, why = self.reaches_server(VIP, "/after-cds-nack")
        R.check("after the CDS NACK the last good cluster serves", ok, why)

        m = cp.mark()
        n = cp.push(LDS, "l3", [res.listener("vip", VIP, "routes")])
        self.expect_ack("LDS l3 (repaired; vip2 removed)", LDS, "l3", n, m)
        n2 = cp.push(EDS, "e3", [res.cla("backend", SERVER_IP, SERVER_PORT)])
        self.expect_ack("EDS e3 (repaired)", EDS, "e3", n2, m)
        time.sleep(0.3)
        cpv = self.curl(VIP2, "/gone")
        R.check("vip2 removed by the State of the World LDS update (curl exit 7)",
                cpv.returncode == CURL_CONNECT_FAILED, describe(cpv))

        time.sleep(1.0)
        self.check_load(load, "SotW")

        code, body = self.admin("/config_dump")
        import json
        dump = json.loads(body) if code == 200 else {}
        lds = dump.get("xds", {}).get("types", {}).get("LDS", {})
        R.check("/config_dump: LDS version l3 with vip listed", lds.get("version") == "l3"
                and [x["name"] for x in lds.get("resources", [])] == ["vip"], json.dumps(lds)[:600])
        rej = lds.get("last_rejected", {})
        R.check("/config_dump: last rejected LDS version l2 and its reason",
                rej.get("version") == "l2" and any("lua" in x["reason"] for x in rej.get("resources", [])),
                json.dumps(rej)[:600])
        R.check("stats: connected", self.metric("culvert_xds_connected") == 1)
        R.check("stats: 3 rejections", self.metric("culvert_xds_update_rejections_total") == 3,
                str(self.metric("culvert_xds_update_rejections_total")))
        successes = self.metric("culvert_xds_update_successes_total") or 0
        R.check("stats: >= 6 successes", successes >= 6)
        R.check("stats: every update attempted is a success or a rejection",
                self.metric("culvert_xds_update_attempts_total") == successes + 3,
                f"attempts {self.metric('culvert_xds_update_attempts_total')}, successes {successes}")
        R.check("stats: the last apply's duration is recorded",
                (self.metric("culvert_xds_apply_duration_microseconds") or 0) > 0)

        # --- phase 3: restart with the control plane down -> stale
        self.stop_culvertd()
        cp.stop()
        port = free_port()

        # The stored configuration is served only while younger than xds.max_stale: first
        # it ages past it while served (/ready turns 503), then a start finds it too old.
        state_file = os.path.join(self.net.tmpdir, "state", "xds_last_good.bin")
        max_stale = int(time.time() - os.path.getmtime(state_file)) + 3
        self.start_culvertd(f"127.0.0.1:{port}", "2aging", max_stale=max_stale)
        code, body = self.wait_ready()
        R.check(f"max_stale {max_stale} s: the stored configuration is served, stale",
                code == 200 and "stale" in body, f"{code} {body!r}")
        R.check("max_stale: the log says the stored configuration is served as stale",
                "as stale until the control plane confirms it" in open(self.logs[-1]).read())
        code, body = self.wait_ready(503, timeout=max_stale + 5)
        R.check("max_stale: /ready turns 503 once the served configuration ages past it",
                code == 503 and "beyond xds.max_stale" in body, f"{code} {body!r}")
        self.stop_culvertd()
        self.start_culvertd(f"127.0.0.1:{port}", "2old", max_stale=1)
        time.sleep(1.0)
        code, body = self.admin("/ready")
        R.check("max_stale 1 s: a start does not serve the older stored configuration",
                code == 503 and "waiting for the control plane" in body, f"{code} {body!r}")
        R.check("max_stale: the log says why it is not served",
                "beyond xds.max_stale 1s: not serving it" in open(self.logs[-1]).read())
        R.check("max_stale: no stale gauge for a configuration not served", self.metric("culvert_xds_stale") == 0)
        self.stop_culvertd()

        self.start_culvertd(f"127.0.0.1:{port}", "2")
        code, body = self.wait_ready()
        R.check("restart, control plane down: /ready 200 saying stale",
                code == 200 and "stale" in body, f"{code} {body!r}", fatal=True)
        R.check("stats: stale gauge 1", self.metric("culvert_xds_stale") == 1)
        self.enroll()
        ok, why = self.reaches_server(VIP, "/stale")
        R.check("the stored configuration serves traffic", ok, why)

        self.cp = cp = ControlPlane(pb, f"127.0.0.1:{port}")
        first = cp.wait(lambda r: r.type_url == LDS, 0, timeout=20)
        R.check("reconnects over TCP and resumes from the stored LDS version l3",
                first is not None and first.version_info == "l3" and first.response_nonce == "", f"got {first}",
                fatal=True)
        r = cp.wait(lambda r: r.type_url == EDS, 0)
        R.check("resumes EDS with version e3 and names [backend]",
                r is not None and r.version_info == "e3" and list(r.resource_names) == ["backend"], f"got {r}")
        m = cp.mark()
        n = cp.push(LDS, "l3", [res.listener("vip", VIP, "routes")])
        self.expect_ack("LDS l3 again", LDS, "l3", n, m)
        n = cp.push(CDS, "c1", [res.cluster("backend")])
        self.expect_ack("CDS c1 again", CDS, "c1", n, m)
        code, body = self.admin("/ready")
        R.check("/ready no longer stale", code == 200 and "stale" not in body, f"{code} {body!r}")

        # --- phase 4: removal
        m = cp.mark()
        n = cp.push(LDS, "l4", [])
        self.expect_ack("LDS l4 (no listeners)", LDS, "l4", n, m)
        self.expect_subscription("no listener names routes: RDS unsubscribed", RDS, [], m)
        time.sleep(0.3)
        cpv = self.curl(VIP, "/removed")
        R.check("removed listener: VIP no longer captured (curl exit 7)",
                cpv.returncode == CURL_CONNECT_FAILED, describe(cpv))
        self.stop_culvertd()
        cp.stop()

        # --- phase 5: Delta ADS
        dport = free_port()
        self.cp = cp = ControlPlane(pb, f"127.0.0.1:{dport}", delta=True)
        # A SotW client against a Delta-only server: the gRPC error (UNIMPLEMENTED, a
        # trailers-only response) is reported and retried, never fatal.
        self.start_culvertd(f"127.0.0.1:{dport}", "3sotw")
        deadline = time.monotonic() + 10
        seen = ""
        while time.monotonic() < deadline and "grpc-status 12" not in seen:
            time.sleep(0.2)
            seen = tail(self.logs[-1], 50)
        R.check("SotW against a Delta-only server: grpc-status 12 (UNIMPLEMENTED) logged, then a retry",
                "grpc-status 12" in seen and "reconnecting in" in seen, seen[-600:])
        R.check("culvertd still running", self.proc.poll() is None)
        self.stop_culvertd()
        self.start_culvertd(f"127.0.0.1:{dport}", "3", delta=True)
        first = cp.wait(lambda r: r.type_url == CDS, 0, timeout=15)
        R.check("delta: stream opens with CDS, telling the server it holds backend",
                first is not None and dict(first.initial_resource_versions) == {"backend": "c1"}, f"got {first}",
                fatal=True)
        m = cp.mark()
        n = cp.push_delta(LDS, [("dl1", res.listener("vip", VIP, "routes"))])
        r = cp.wait(lambda r: r.type_url == LDS and r.response_nonce == n, m)
        R.check("delta: LDS ACK (nonce, no error_detail)", r is not None and not r.HasField("error_detail"),
                f"got {r}")
        r = cp.wait(lambda r: r.type_url == RDS and list(r.resource_names_subscribe) == ["routes"], m)
        R.check("delta: subscribes RDS routes", r is not None)
        m = cp.mark()
        n1 = cp.push_delta(RDS, [("dr1", res.route("routes", "backend"))])
        n2 = cp.push_delta(EDS, [("de1", res.cla("backend", SERVER_IP, SERVER_PORT))],
                           name_of=lambda x: x.cluster_name)
        for name, t, n in (("RDS", RDS, n1), ("EDS", EDS, n2)):
            r = cp.wait(lambda r, t=t, n=n: r.type_url == t and r.response_nonce == n, m)
            R.check(f"delta: {name} ACK", r is not None and not r.HasField("error_detail"), f"got {r}")
        n = cp.push_delta(CDS, [("dc1", res.cluster("backend"))])
        cp.wait(lambda r: r.type_url == CDS and r.response_nonce == n, m)
        code, body = self.wait_ready()
        R.check("delta: /ready 200", code == 200, f"{code} {body!r}")
        self.enroll()
        ok, why = self.reaches_server(VIP, "/delta")
        R.check("delta: VIP proxied through capture", ok, why)
        load = self.start_load("delta")
        time.sleep(1.0)
        m = cp.mark()
        n = cp.push_delta(LDS, [("dl2", res.listener("vip", VIP, "routes", bad_filter=True)),
                                ("dl2", res.listener("vip2", VIP2, "routes"))])
        r = cp.wait(lambda r: r.type_url == LDS and r.response_nonce == n, m)
        R.check("delta: NACK names vip and why", r is not None and r.HasField("error_detail")
                and "vip: " in r.error_detail.message and "lua" in r.error_detail.message, f"got {r}")
        ok, why = self.reaches_server(VIP, "/delta-nack")
        R.check("delta: last good vip still serves after the NACK", ok, why)
        ok, why = self.reaches_server(VIP2, "/delta-vip2")
        R.check("delta: the valid vip2 applied", ok, why)
        m = cp.mark()
        n = cp.push_delta(LDS, [], removed=["vip2"])
        r = cp.wait(lambda r: r.type_url == LDS and r.response_nonce == n, m)
        R.check("delta: removal ACKed", r is not None and not r.HasField("error_detail"), f"got {r}")
        time.sleep(0.3)
        cpv = self.curl(VIP2, "/delta-removed")
        R.check("delta: removed vip2 no longer captured (curl exit 7)",
                cpv.returncode == CURL_CONNECT_FAILED, describe(cpv))
        ok, why = self.reaches_server(VIP, "/delta-still")
        R.check("delta: vip unaffected by vip2's removal", ok, why)

        # CDS and EDS: an invalid update is NACKed by name and the last good one serves.
        m = cp.mark()
        n = cp.push_delta(CDS, [("dc2", res.cluster("backend", bad_lb_policy=True))])
        r = cp.wait(lambda r: r.type_url == CDS and r.response_nonce == n, m)
        R.check("delta: CDS NACK names backend and why", r is not None and r.HasField("error_detail")
                and "backend: " in r.error_detail.message and "lb_policy" in r.error_detail.message, f"got {r}")
        n = cp.push_delta(EDS, [("de2", res.cla("backend", SERVER_IP, 0))], name_of=lambda x: x.cluster_name)
        r = cp.wait(lambda r: r.type_url == EDS and r.response_nonce == n, m)
        R.check("delta: EDS NACK names backend and why", r is not None and r.HasField("error_detail")
                and "backend: " in r.error_detail.message and "port" in r.error_detail.message, f"got {r}")
        ok, why = self.reaches_server(VIP, "/delta-after-nacks")
        R.check("delta: the last good cluster and endpoints serve after the NACKs", ok, why)
        m = cp.mark()
        n1 = cp.push_delta(CDS, [("dc3", res.cluster("backend"))])
        n2 = cp.push_delta(EDS, [("de3", res.cla("backend", SERVER_IP, SERVER_PORT))],
                           name_of=lambda x: x.cluster_name)
        for name, t, n in (("CDS", CDS, n1), ("EDS", EDS, n2)):
            r = cp.wait(lambda r, t=t, n=n: r.type_url == t and r.response_nonce == n, m)
            R.check(f"delta: {name} repaired and ACKed", r is not None and not r.HasField("error_detail"),
                    f"got {r}")
        time.sleep(1.0)
        self.check_load(load, "delta")
        self.stop_culvertd()
        cp.stop()

    def dump_logs(self):
        for log in self.logs:
            print(f"----- {log} (last 120 lines) -----")
            print(tail(log, 120), end="")
        if self.cp is not None:
            print(f"----- control plane saw {len(self.cp.requests)} requests -----", flush=True)


def main() -> int:
    ap = argparse.ArgumentParser(description=__doc__.split("\n")[0])
    ap.add_argument("--culvertd", required=True)
    ap.add_argument("--culvertctl", required=True)
    ap.add_argument("--keep-tmp", action="store_true")
    args = ap.parse_args()
    args.culvertd = os.path.abspath(args.culvertd)
    args.culvertctl = os.path.abspath(args.culvertctl)
    th.require_root_or_skip("integration_xds_ads")
    R = th.Results()
    prefix = None
    try:
        with th.TestNetwork(keep_tmp=args.keep_tmp) as net:
            prefix = net.prefix
            t = XdsTest(net, args, R)
            try:
                t.run()
            except th.Fatal:
                pass
            except Exception:  # noqa: BLE001
                R.check("scenario raised", False, traceback.format_exc())
            finally:
                if t.cp is not None:
                    try:
                        t.cp.stop()
                    except Exception:  # noqa: BLE001
                        pass
                if R.failed:
                    t.dump_logs()
    except th.Fatal:
        pass
    except Exception:  # noqa: BLE001
        R.check("test hosts", False, traceback.format_exc())
    if prefix:
        left = th.find_leftovers(prefix)
        if args.keep_tmp:
            left = [x for x in left if not x.startswith("tmp ")]
        R.check("cleanup: nothing of this run left", not left, str(left))
    return R.summary()


if __name__ == "__main__":
    sys.exit(main())
