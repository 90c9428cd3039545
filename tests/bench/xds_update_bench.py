#!/usr/bin/python3
"""xDS benchmarks against a real culvertd and a real ADS control plane (issue #6).

  memory   RSS delta per cluster and per endpoint: a CDS update grows the cluster count
           0 → 1,000 → 5,000 (STATIC, one endpoint each); in a fresh process an EDS update
           grows one cluster 0 → 10,000 → 50,000 endpoints. At workers=1 and workers=2,
           per-cluster metrics included (the default stats store), repeated --runs times.
  latency  data-plane latency (wrk through a bound culvert listener to nginx) with and
           without an EDS update of 10,000 endpoints (alternating content, another cluster;
           --unchanged: the same each time) every second; --runs interleaved pairs.
  cpu      CPU time per EDS update of 10,000 endpoints (alternating content; --unchanged:
           the same each time, as a State of the World resend) by culvertd
           thread (main, worker-N, xds-store), from /proc/PID/task/TID/schedstat over
           --updates updates, each followed by /ready; --runs fresh processes.

  tests/bench/xds_update_bench.py --culvertd build/agent/culvertd memory  [--runs 5]
  tests/bench/xds_update_bench.py --culvertd build/agent/culvertd latency [--runs 5] [--seconds 10]
  tests/bench/xds_update_bench.py --culvertd build/agent/culvertd cpu     [--runs 5] [--updates 60]
  tests/bench/xds_update_bench.py --culvertd build/agent/culvertd --smoke  # both, tiny (ctest)

The control plane is the xDS integration test's (Python grpcio, the project's own .proto
subset compiled by protoc into a temp dir). Prints a Markdown report: medians and ranges,
with the load average at the start of every run, since this machine may be shared.
Needs root (culvertd loads its capture programs, attached to a private cgroup).
"""
import argparse
import os
import re
import shutil
import signal
import statistics
import subprocess
import sys
import tempfile
import threading
import time

HERE = os.path.dirname(os.path.abspath(__file__))
sys.path.insert(0, HERE)
sys.path.insert(0, os.path.join(os.path.dirname(HERE), "integration"))
from http1_proxy_bench import cgroup2_root, free_port, process_tree, wait_port  # noqa: E402
from culvertd_harness import http_get  # noqa: E402
from xds_ads_test import CDS, EDS, LDS, ControlPlane, compile_protos  # noqa: E402


def loadavg():
    with open("/proc/loadavg") as f:
        return " ".join(f.read().split()[:3])


def memory_kib(pid):
    """VmRSS and RssAnon (the heap: what configuration costs) in KiB."""
    out = {}
    with open(f"/proc/{pid}/status") as f:
        for line in f:
            key, _, value = line.partition(":")
            if key in ("VmRSS", "RssAnon"):
                out[key] = int(value.split()[0])
    return out


def thread_cpu_ns(pid):
    """CPU time (ns) by thread name, summed over threads of the same name."""
    out = {}
    for tid in os.listdir(f"/proc/{pid}/task"):
        try:
            with open(f"/proc/{pid}/task/{tid}/comm") as f:
                name = f.read().strip()
            with open(f"/proc/{pid}/task/{tid}/schedstat") as f:
                ns = int(f.read().split()[0])
        except OSError:
            continue
        name = "main" if int(tid) == pid else name
        out[name] = out.get(name, 0) + ns
    return out


def idle_control_plane():
    """Puts every thread of this process but the calling one (the bench's main thread,
    which starts wrk) at SCHED_IDLE: the control plane's gRPC threads and the updater.
    Threads created later by those inherit it. A platform's control plane runs on other
    machines; here it shares the two cores with the data path, and Python gRPC sending a
    300 KB response took several ms of a core once a second (preempting wrk, nginx or
    culvertd's worker), which is the control plane's cost, not culvert's. At SCHED_IDLE it
    runs only on time no one else wants and yields at once when they wake."""
    me = threading.get_native_id()
    for tid in os.listdir("/proc/self/task"):
        if int(tid) != me:
            try:
                os.sched_setscheduler(int(tid), os.SCHED_IDLE, os.sched_param(0))
            except ProcessLookupError:
                pass  # a thread that has just ended


def med_range(values, fmt="{:.0f}"):
    return f"{fmt.format(statistics.median(values))} ({fmt.format(min(values))}–{fmt.format(max(values))})"


class Resources:
    """Builds xDS messages directly (ParseDict is too slow for 50,000 endpoints)."""

    def __init__(self, pb):
        self.pb = pb

    def bound_listener(self, name, port, cluster):
        L, H, R = self.pb["listener_pb2"], self.pb["http_connection_manager_pb2"], self.pb["router_pb2"]
        hcm = H.HttpConnectionManager(stat_prefix=name)
        vh = hcm.route_config.virtual_hosts.add(name="all", domains=["*"])
        route = vh.routes.add()
        route.match.prefix = "/"
        route.route.cluster = cluster
        f = hcm.http_filters.add(name="envoy.filters.http.router")
        f.typed_config.Pack(R.Router())
        listener = L.Listener(name=name)
        listener.address.socket_address.address = "127.0.0.1"
        listener.address.socket_address.port_value = port
        chain_filter = listener.filter_chains.add().filters.add(name="envoy.filters.network.http_connection_manager")
        chain_filter.typed_config.Pack(hcm)
        return listener

    def cluster(self, name, eds=False, lb_policy=None, endpoint=None):
        C = self.pb["cluster_pb2"].Cluster
        c = C(name=name, type=C.EDS if eds else C.STATIC)
        c.connect_timeout.seconds = 5
        if lb_policy:
            c.lb_policy = getattr(C, lb_policy)
        if eds:
            c.eds_cluster_config.eds_config.ads.SetInParent()
        if endpoint:
            c.load_assignment.CopyFrom(self.cla(name, [endpoint]))
        return c

    def cla(self, name, endpoints):
        a = self.pb["endpoint_pb2"].ClusterLoadAssignment(cluster_name=name)
        if endpoints:
            locality = a.endpoints.add()
            for ip, port in endpoints:
                sa = locality.lb_endpoints.add().endpoint.address.socket_address
                sa.address = ip
                sa.port_value = port
        return a


def fake_endpoints(n, port):
    """n distinct addresses in 10.0.0.0/8 (never connected to: no traffic is routed there)."""
    return [(f"10.{(i >> 16) & 255}.{(i >> 8) & 255}.{i & 255}", port) for i in range(n)]


class Culvertd:
    """One culvertd process with its private cgroup, pin root and temp dir."""

    def __init__(self, binary, workers, xds_address, cpu=None, wrap="", main_thread_nice=0):
        self.tmp = tempfile.mkdtemp(prefix="culvert-xdsbench-")
        self.cgroup = os.path.join(cgroup2_root(), f"culvert-xdsbench-{os.getpid()}-{os.path.basename(self.tmp)}")
        self.pin_root = f"/sys/fs/bpf/{os.path.basename(self.cgroup)}"
        os.makedirs(self.cgroup)
        os.makedirs(os.path.join(self.tmp, "no-resources"))
        self.admin_port = free_port()
        boot = os.path.join(self.tmp, "culvertd.yaml")
        with open(boot, "w") as f:
            f.write(f"""node: {{id: xdsbench}}
admin: {{address: "127.0.0.1:{self.admin_port}", socket: ""}}
workers: {workers}
main_thread_nice: {main_thread_nice}
resources: {{path: {self.tmp}/no-resources}}
capture: {{cgroup: {self.cgroup}, port: {free_port()}}}
bpf: {{pin_root: {self.pin_root}}}
enrollment: {{socket: {self.tmp}/cni.sock}}
state_dir: {self.tmp}/state
xds: {{address: "{xds_address}"}}
log: {{level: warn}}
""")
        cmd = ([] if not cpu else ["taskset", "-c", str(cpu)]) + wrap.split() + [binary, "--config", boot]
        self.log = open(os.path.join(self.tmp, "culvertd.log"), "w")
        self.proc = subprocess.Popen(cmd, stdout=self.log, stderr=self.log, start_new_session=True)
        self.wrapped = bool(wrap)
        self.trims_expected = 0

    @property
    def pid(self):
        """culvertd's own pid (a wrapper such as heaptrack runs it as a child)."""
        if not self.wrapped:
            return self.proc.pid
        for _ in range(100):
            for pid in process_tree([self.proc.pid]):
                try:
                    with open(f"/proc/{pid}/comm") as f:
                        if f.read().strip() == "culvertd":
                            return pid
                except OSError:
                    pass
            time.sleep(0.1)
        raise RuntimeError("culvertd did not start under the wrapper")

    def workers_turned(self):
        """/ready answers after every worker ran a posted probe; posts run in order, so
        every publish posted before it has been applied by then."""
        code, body = http_get(f"http://127.0.0.1:{self.admin_port}/ready")
        if code != 200:
            raise RuntimeError(f"/ready: {code} {body}")

    def stats(self):
        return http_get(f"http://127.0.0.1:{self.admin_port}/stats/prometheus", timeout=30)[1]

    def stop(self):
        if self.proc.poll() is None:
            # Only culvertd itself: a wrapper (heaptrack) must outlive it to write its data.
            os.kill(self.pid, signal.SIGTERM)
            try:
                self.proc.wait(timeout=120 if self.wrapped else 10)
            except subprocess.TimeoutExpired:
                os.killpg(self.proc.pid, signal.SIGKILL)
                self.proc.wait()
        self.log.close()
        if os.path.isdir(self.cgroup):
            os.rmdir(self.cgroup)
        shutil.rmtree(self.pin_root, ignore_errors=True)
        shutil.rmtree(self.tmp, ignore_errors=True)


class Bench:
    def __init__(self, args):
        self.args = args
        self.tmp = tempfile.mkdtemp(prefix="culvert-xdsbench-pb-")
        try:
            self.pb = compile_protos(os.path.join(self.tmp, "pb"))
            self.res = Resources(self.pb)
            self.xds_port = free_port()
            self.cp = ControlPlane(self.pb, f"127.0.0.1:{self.xds_port}")
        except BaseException:
            shutil.rmtree(self.tmp, ignore_errors=True)
            raise
        self.version = 0
        self.children = []

    def cleanup(self):
        for p in self.children:
            if p.poll() is None:
                os.killpg(p.pid, signal.SIGTERM)
                p.wait(timeout=10)
        self.cp.stop()
        shutil.rmtree(self.tmp, ignore_errors=True)

    def start_culvertd(self, workers, cpu=None):
        mark = self.cp.mark()
        c = Culvertd(self.args.culvertd, workers, f"127.0.0.1:{self.xds_port}", cpu, self.args.wrap,
                     self.args.main_thread_nice)
        if not self.cp.wait(lambda r: r.type_url == CDS, start=mark, timeout=20):
            c.stop()
            raise RuntimeError("culvertd did not subscribe to CDS")
        return c

    def push(self, type_url, resources, timeout=60.0):
        """Pushes one SotW response and waits for its ACK (a NACK is an error)."""
        self.version += 1
        version = str(self.version)
        mark = self.cp.mark()
        nonce = self.cp.push(type_url, version, resources)
        reply = self.cp.wait(lambda r: r.type_url == type_url and r.response_nonce == nonce, start=mark,
                             timeout=timeout)
        if reply is None:
            raise RuntimeError(f"no reply to {type_url} version {version}")
        if reply.version_info != version:
            raise RuntimeError(f"NACK of {type_url} version {version}: {reply.error_detail.message}")

    # --- memory ----------------------------------------------------------------------

    # culvertd trims its heap once configuration has been quiet for 2 s (App::scheduleHeapTrim).
    HEAP_TRIM_WAIT = 2.5

    def settled_memory(self, c):
        c.workers_turned()
        time.sleep(self.HEAP_TRIM_WAIT)
        c.trims_expected += 1
        return memory_kib(c.pid)

    @staticmethod
    def check_trimmed(c):
        """Every measured point was after a trim: else RSS carried the decode's freed pages."""
        m = re.search(r"^culvert_heap_trims_total (\d+)", c.stats(), re.M)
        if not m or int(m.group(1)) < c.trims_expected:
            raise RuntimeError(f"culvert_heap_trims_total {m and m.group(1)}, want {c.trims_expected}")

    def memory_clusters(self, workers, steps):
        c = self.start_culvertd(workers)
        try:
            self.push(CDS, [])
            self.push(LDS, [])
            points = [(0, self.settled_memory(c))]
            for n in steps:
                self.push(CDS, [self.res.cluster(f"c{i}", endpoint=(f"10.1.{(i >> 8) & 255}.{i & 255}", 8080))
                                for i in range(n)])
                points.append((n, self.settled_memory(c)))
            # Stats included: every cluster's metrics exist in the store that is measured.
            last = f'cluster="c{steps[-1] - 1}"'
            if last not in c.stats():
                raise RuntimeError(f"no metric with {last}")
            self.check_trimmed(c)
            return points
        finally:
            c.stop()

    def memory_endpoints(self, workers, steps):
        c = self.start_culvertd(workers)
        try:
            self.push(CDS, [self.res.cluster("big", eds=True)])
            self.push(EDS, [self.res.cla("big", [])])
            self.push(LDS, [])
            points = [(0, self.settled_memory(c))]
            for n in steps:
                self.push(EDS, [self.res.cla("big", fake_endpoints(n, 8080))])
                points.append((n, self.settled_memory(c)))
            self.check_trimmed(c)
            return points
        finally:
            c.stop()

    def run_memory(self):
        a = self.args
        rows = {}
        for run in range(a.runs):
            for workers in a.workers:
                for kind, steps, measure in (("cluster", a.clusters, self.memory_clusters),
                                             ("endpoint", a.endpoints, self.memory_endpoints)):
                    if kind not in a.kinds:
                        continue
                    load = loadavg()
                    points = measure(workers, steps)
                    # From 0 to each count, and between successive counts (the marginal
                    # cost: code paged in and one-off allocations cancel out).
                    spans = [(points[0], p) for p in points[1:]] + list(zip(points[1:], points[2:]))
                    for (n0, m0), (n1, m1) in spans:
                        rows.setdefault((kind, workers, n0, n1), []).append({
                            "rss": (m1["VmRSS"] - m0["VmRSS"]) * 1024 / (n1 - n0),
                            "anon": (m1["RssAnon"] - m0["RssAnon"]) * 1024 / (n1 - n0),
                            "base_mib": points[0][1]["VmRSS"] / 1024, "load": load})
                    print(f"memory run {run + 1}/{a.runs} workers={workers} {kind}s {points}", file=sys.stderr)
        lines = [f"Runs: {a.runs}; bytes per cluster or endpoint = RSS delta ÷ count added, "
                 "median (min–max). Load averages (1/5/15 min) at each run's start: "
                 + "; ".join(sorted({r['load'] for rs in rows.values() for r in rs})), "",
                 "| what | workers | count | VmRSS delta per item (bytes) | RssAnon delta per item (bytes) | base VmRSS (MiB) |",
                 "|---|---|---|---|---|---|"]
        for (kind, workers, n0, n1), rs in sorted(rows.items()):
            lines.append(f"| {kind} | {workers} | {n0} → {n1} | {med_range([r['rss'] for r in rs])} | "
                         f"{med_range([r['anon'] for r in rs])} | {med_range([r['base_mib'] for r in rs], '{:.1f}')} |")
        return "\n".join(lines)

    # --- CPU per update, by thread ----------------------------------------------------

    def run_cpu(self):
        a = self.args
        per_thread = {}
        for run in range(a.runs):
            c = self.start_culvertd(workers=1, cpu=a.culvertd_cpus)
            try:
                self.push(CDS, [self.res.cluster("big", eds=True)])
                msgs = self.packed_updates()
                self.push(EDS, msgs[1])
                self.push(LDS, [self.res.bound_listener("bench", free_port(), "big")])
                c.workers_turned()
                before = thread_cpu_ns(c.pid)
                for i in range(a.updates):
                    self.push(EDS, msgs[i % 2])
                    c.workers_turned()
                after = thread_cpu_ns(c.pid)
            finally:
                c.stop()
            for name in after:
                per_thread.setdefault(name, []).append((after[name] - before.get(name, 0)) / a.updates / 1e6)
            print(f"cpu run {run + 1}/{a.runs}: " + ", ".join(f"{n} {v[-1]:.2f} ms" for n, v in sorted(per_thread.items())),
                  file=sys.stderr)
        lines = [f"Runs: {a.runs} fresh culvertd (workers: 1, CPUs {a.culvertd_cpus or 'any'}), {a.updates} EDS updates of "
                 f"{a.update_endpoints} endpoints each ({self.content()}), ACK and /ready after each. CPU ms per update, median (min–max). "
                 f"Load average at the end: {loadavg()}", "",
                 "| thread | CPU ms per update |", "|---|---|"]
        for name, values in sorted(per_thread.items()):
            lines.append(f"| {name} | {med_range(values, '{:.2f}')} |")
        return "\n".join(lines)

    def content(self):
        return "the same endpoints each time" if self.args.unchanged else "alternating content"

    # --- latency under updates -------------------------------------------------------

    def start_origin(self):
        port = free_port()
        conf = os.path.join(self.tmp, "origin.conf")
        with open(conf, "w") as f:
            f.write(f"""daemon off; worker_processes 1; pid {self.tmp}/origin.pid; error_log stderr error;
events {{ worker_connections 4096; }}
http {{ access_log off; keepalive_requests 1000000;
  server {{ listen 127.0.0.1:{port} backlog=4096; location / {{ return 200 "hello\\n"; }} }}
}}
""")
        p = subprocess.Popen(["taskset", "-c", "1", "/usr/sbin/nginx", "-c", conf, "-p", self.tmp],
                             stdout=subprocess.DEVNULL, stderr=subprocess.DEVNULL, start_new_session=True)
        self.children.append(p)
        wait_port(port)
        return port

    def wrk(self, port, seconds, connections):
        from http1_proxy_bench import Bench as Http1Bench
        return Http1Bench.wrk(None, port, "/", connections, seconds)

    def packed_updates(self):
        """Two EDS updates of cluster "big", packed once, whose endpoints' ports differ, so
        applying one after the other changes every endpoint; with --unchanged both carry the
        same endpoints (a State of the World control plane resending an unchanged resource)."""
        from google.protobuf import any_pb2
        msgs = []
        for salt in ((0, 0) if self.args.unchanged else (0, 1)):
            packed = any_pb2.Any()
            packed.Pack(self.res.cla("big", fake_endpoints(self.args.update_endpoints, 8080 + salt)))
            msgs.append([packed])
        return msgs

    def updater(self, stop, counts):
        """An EDS update replacing cluster "big"'s endpoints every second, two contents
        alternating (ports differ, so every endpoint changes). Each is packed once: this
        process shares the machine with culvertd, and serializing 10,000 endpoints per
        push took its CPU for ~6 ms a second (perf sched_switch: python3 preempting
        culvertd's worker), which is the control plane's cost, not culvert's."""
        if self.args.control_plane_priority == "idle":
            os.sched_setscheduler(0, os.SCHED_IDLE, os.sched_param(0))
        msgs = self.packed_updates()
        salt = 0
        while not stop.wait(max(0.0, 1.0 - (time.monotonic() % 1.0))):
            self.push(EDS, msgs[salt])
            counts["updates"] += 1
            salt ^= 1

    def run_latency(self):
        a = self.args
        origin = self.start_origin()
        c = self.start_culvertd(workers=1, cpu=a.culvertd_cpus)
        results = {"baseline": [], "updates": []}
        try:
            listen = free_port()
            self.push(CDS, [self.res.cluster("origin", endpoint=("127.0.0.1", origin)),
                            self.res.cluster("big", eds=True)])
            self.push(EDS, [self.res.cla("big", fake_endpoints(a.update_endpoints, 8080))])
            self.push(LDS, [self.res.bound_listener("bench", listen, "origin")])
            wait_port(listen)
            self.wrk(listen, 1, a.connections)  # warm the pool
            if a.control_plane_priority == "idle":
                idle_control_plane()
            for run in range(a.runs):
                for mode in ("baseline", "updates"):
                    load = loadavg()
                    stop, counts, t = threading.Event(), {"updates": 0}, None
                    if mode == "updates":
                        t = threading.Thread(target=self.updater, args=(stop, counts))
                        t.start()
                    try:
                        r = self.wrk(listen, a.seconds, a.connections)
                    finally:
                        stop.set()
                        if t:
                            t.join()
                    r.update(load=load, updates=counts["updates"], rps=r["requests"] / a.seconds)
                    results[mode].append(r)
                    print(f"latency run {run + 1}/{a.runs} {mode}: {r}", file=sys.stderr)
        finally:
            c.stop()
        base_p99 = statistics.median(r["p99_ms"] for r in results["baseline"])
        base_p50 = statistics.median(r["p50_ms"] for r in results["baseline"])
        lines = [f"Runs: {a.runs} interleaved pairs of {a.seconds} s; wrk -t1 -c{a.connections}; culvertd workers: 1 "
                 f"on CPUs {a.culvertd_cpus or 'any'} (main thread and worker alike), nginx and wrk on CPU 1; the control plane (unpinned) at "
                 f"{'SCHED_IDLE' if a.control_plane_priority == 'idle' else 'normal priority'}; update: EDS of {a.update_endpoints} endpoints ({self.content()}) for a cluster "
                 "no request uses, every second. Median (min–max). Load averages at each run's start: "
                 + "; ".join(r["load"] for rs in results.values() for r in rs), "",
                 "| mode | updates | requests/s | p50 ms | p99 ms | p50 ÷ baseline | p99 ÷ baseline | errors |",
                 "|---|---|---|---|---|---|---|---|"]
        for mode, rs in results.items():
            p50, p99 = statistics.median(r["p50_ms"] for r in rs), statistics.median(r["p99_ms"] for r in rs)
            lines.append(f"| {mode} | {med_range([r['updates'] for r in rs])} | {med_range([r['rps'] for r in rs])} | "
                         f"{med_range([r['p50_ms'] for r in rs], '{:.3f}')} | {med_range([r['p99_ms'] for r in rs], '{:.3f}')} | "
                         f"{p50 / base_p50:.2f} | {p99 / base_p99:.2f} | {sum(r['errors'] for r in rs)} |")
        errors = sum(r["errors"] for rs in results.values() for r in rs)
        return "\n".join(lines), errors


def main():
    ap = argparse.ArgumentParser(description=__doc__.split("\n")[0])
    ap.add_argument("--culvertd", required=True)
    ap.add_argument("what", nargs="*", help="memory, latency and/or cpu")
    ap.add_argument("--runs", type=int, default=5)
    ap.add_argument("--seconds", type=int, default=10)
    ap.add_argument("--connections", type=int, default=16)
    ap.add_argument("--clusters", type=int, nargs="+", default=[1000, 5000])
    ap.add_argument("--endpoints", type=int, nargs="+", default=[10000, 50000])
    ap.add_argument("--update-endpoints", type=int, default=10000)
    ap.add_argument("--updates", type=int, default=60, help="cpu: updates per run")
    ap.add_argument("--unchanged", action="store_true",
                    help="latency, cpu: every update resends the same endpoints instead of alternating two contents")
    ap.add_argument("--control-plane-priority", choices=["normal", "idle"], default="normal",
                    help="latency: 'idle' puts the control plane's threads at SCHED_IDLE, to see how much of the "
                         "p99 is its own CPU on the shared cores (it then may miss some of the once-a-second updates)")
    ap.add_argument("--culvertd-cpus", default="0", help="latency, cpu: taskset -c list for culvertd ('' = unpinned)")
    ap.add_argument("--main-thread-nice", type=int, default=0, help="culvertd's bootstrap main_thread_nice")
    ap.add_argument("--wrap", default="", help="run culvertd under this, e.g. 'heaptrack -o /tmp/cv' (memory only)")
    ap.add_argument("--workers", type=int, nargs="+", default=[1, 2], help="memory: worker counts")
    ap.add_argument("--kinds", nargs="+", default=["cluster", "endpoint"], help="memory: what to add")
    ap.add_argument("--smoke", action="store_true", help="both benchmarks, tiny: checks the harness works")
    args = ap.parse_args()
    if args.smoke:
        args.what = ["memory", "latency", "cpu"]
        args.runs, args.seconds, args.clusters, args.endpoints, args.updates = 1, 2, [200], [2000], 3
    if not args.what or set(args.what) - {"memory", "latency", "cpu"}:
        ap.error("say memory, latency and/or cpu (or --smoke)")
    args.culvertd = os.path.abspath(args.culvertd)
    if os.geteuid() != 0:
        print("needs root (culvertd loads BPF programs)", file=sys.stderr)
        return 77 if os.environ.get("CULVERT_REQUIRE_PRIVILEGED") != "1" else 1
    bench = Bench(args)
    errors = 0
    try:
        if "memory" in args.what:
            print(bench.run_memory() + "\n")
        if "latency" in args.what:
            text, errors = bench.run_latency()
            print(text + "\n")
        if "cpu" in args.what:
            print(bench.run_cpu())
    finally:
        bench.cleanup()
    if errors:
        print(f"{errors} request errors", file=sys.stderr)
        return 1
    return 0


if __name__ == "__main__":
    sys.exit(main())
