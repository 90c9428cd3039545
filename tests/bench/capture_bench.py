#!/usr/bin/python3
"""Capture benchmark: the same culvertd addressed through capture vs directly.

    /usr/bin/python3 tests/bench/capture_bench.py \
        --culvertd build/agent/culvertd --culvertctl build/agent/ctl/culvertctl \
        [--runs 5] [--duration 5] [--markdown docs/benchmarks.md]

A benchmark, not a timed test: it prints figures and fails only when something does
not work (a wrk error, non-2xx answers). What it measures, with wrk (Debian's):

  keep-alive requests/s    wrk -t1 -c16 -d<duration>
  new connections/s        the same with "Connection: close" (one request per connection)

each on two paths to the same culvertd (one worker) answering with a route
direct_response (no upstream, so only capture + proxy are measured):

  capture   wrk in an enrolled pod (its own netns, in the capture cgroup) dials the
            never-routed VIP 10.96.0.10:80; connect4 redirects it to the pod's in-pod
            listener
  direct    wrk in culvertd's netns, in the same cgroup (so the connect hook runs and
            passes it), dials a bound listener (bind_to_port: true) on 127.0.0.1

culvertd runs in a netns of its own ("node", loopback only) so that both paths use an
equally quiet network stack; culvertd is pinned to CPU 0 and wrk to CPU 1.

with 10 and with 10,000 captured destinations (virtual listeners), in --runs
interleaved rounds (each round: both destination counts, both modes, both paths, the
path order alternating). Medians and ranges; ratio = capture / direct. Beside the rates,
the CPU time per request of culvertd (its core's share, from /proc) and of the client
(wrk and the kernel work done on its behalf, from the children's rusage): a rate ratio
says which path is faster, the CPU split says whose side the difference is on.
With --bpf-stats the kernel also counts the time its BPF programs run
(kernel.bpf_stats_enabled, set back to its value afterwards): each cell then gives the
nanoseconds per request of every culvert program attached to the capture cgroup, which
is the capture's own cost on the client's side without the rate's noise (the release of
socket-local storage, which no program's time includes, is not in it).
Needs root (exit 77 = skip when not root, unless CULVERT_REQUIRE_PRIVILEGED=1).
"""

import argparse
import json
import os
import re
import resource
import shutil
import signal
import statistics
import subprocess
import sys
import time
import traceback

sys.path.insert(0, os.path.join(os.path.dirname(os.path.abspath(__file__)), "..", "integration"))
import testhosts as th  # noqa: E402
from culvertd_harness import describe, tail  # noqa: E402

CLIENT_IP, NODE_IP = "10.244.1.1", "10.244.1.254"
VIP = "10.96.0.10"
CAPTURE_PORT = 15001
WRK = shutil.which("wrk", path="/usr/bin:/bin") or "wrk"

BOOTSTRAP = """\
node:
  id: bench
admin:
  address: ""
  socket: "{tmp}/admin.sock"
workers: 1
resources:
  path: "{tmp}/resources"
capture:
  port: {capture_port}
  cgroup: "{cgroup}"
  fail_mode: closed
bpf:
  pin_root: "{pin_root}"
enrollment:
  socket: "{tmp}/cni.sock"
state_dir: "{tmp}/state"
log:
  level: warn
"""


def hcm(name: str) -> dict:
    return {
        "name": "envoy.filters.network.http_connection_manager",
        "typed_config": {
            "@type": "type.googleapis.com/envoy.extensions.filters.network.http_connection_manager.v3."
                     "HttpConnectionManager",
            "stat_prefix": name,
            "route_config": {
                "name": name,
                "virtual_hosts": [{"name": "all", "domains": ["*"], "routes": [
                    {"match": {"prefix": "/"},
                     "direct_response": {"status": 200, "body": {"inline_string": "ok\n"}}}]}],
            },
            "http_filters": [{"name": "envoy.filters.http.router", "typed_config": {
                "@type": "type.googleapis.com/envoy.extensions.filters.http.router.v3.Router"}}],
        },
    }


def listener(name: str, ip: str, port: int, bind: bool) -> dict:
    return {"@type": "type.googleapis.com/envoy.config.listener.v3.Listener", "name": name,
            "address": {"socket_address": {"address": ip, "port_value": port}},
            "bind_to_port": bind, "filter_chains": [{"filters": [hcm(name)]}]}


def resources(destinations: int, direct_port: int) -> dict:
    res = [listener("vip", VIP, 80, False), listener("direct", "127.0.0.1", direct_port, True)]
    for i in range(destinations - 1):  # the VIP is one of them
        res.append(listener(f"filler-{i}", f"10.97.{i // 250}.{i % 250 + 1}", 80, False))
    return {"version_info": f"d{destinations}", "resources": res}


def parse_wrk(out: str) -> tuple[float, str]:
    m = re.search(r"Requests/sec:\s+([0-9.]+)", out)
    problems = [l.strip() for l in out.splitlines()
                if "Socket errors" in l or "Non-2xx" in l]
    return (float(m.group(1)) if m else 0.0), "; ".join(problems)


def process_cpu_s(pid: int) -> float:
    """utime + stime of a process, all its threads, in seconds."""
    with open(f"/proc/{pid}/stat") as f:
        fields = f.read().rsplit(")", 1)[1].split()
    return (int(fields[11]) + int(fields[12])) / os.sysconf("SC_CLK_TCK")


def children_cpu_s() -> float:
    r = resource.getrusage(resource.RUSAGE_CHILDREN)
    return r.ru_utime + r.ru_stime


BPF_STATS = "/proc/sys/kernel/bpf_stats_enabled"


def bpf_program_times(cgroup: str) -> dict[str, tuple[int, int]]:
    """{program name: (run_time_ns, run_cnt)} of the programs attached to the cgroup."""
    cp = subprocess.run(["bpftool", "-j", "cgroup", "show", cgroup], capture_output=True, text=True, check=True)
    ids = {p["id"] for p in json.loads(cp.stdout or "[]")}
    cp = subprocess.run(["bpftool", "-j", "prog", "show"], capture_output=True, text=True, check=True)
    return {p["name"]: (p.get("run_time_ns", 0), p.get("run_cnt", 0)) for p in json.loads(cp.stdout) if p["id"] in ids}


def admin_get(sock_path: str, path: str, timeout: float = 5.0) -> tuple[int, str]:
    """HTTP GET over culvertd's admin unix socket (culvertd lives in another netns)."""
    import socket
    with socket.socket(socket.AF_UNIX, socket.SOCK_STREAM) as s:
        s.settimeout(timeout)
        s.connect(sock_path)
        s.sendall(f"GET {path} HTTP/1.1\r\nHost: admin\r\nConnection: close\r\n\r\n".encode())
        data = b""
        while True:
            chunk = s.recv(65536)
            if not chunk:
                break
            data += chunk
    head, _, body = data.decode(errors="replace").partition("\r\n\r\n")
    m = re.match(r"HTTP/1\.1 (\d+)", head)
    return (int(m.group(1)) if m else 0), body


class Bench:
    def __init__(self, net: th.TestNetwork, args, R: th.Results):
        self.net, self.args, self.R = net, args, R
        self.proc = None

    def ready(self) -> bool:
        try:
            return admin_get(self.admin_sock, "/ready", timeout=1.0)[0] == 200
        except OSError:
            return False

    def load(self, destinations: int) -> None:
        path = os.path.join(self.net.tmpdir, "resources", "bench.json")
        with open(path + ".tmp", "w") as f:
            json.dump(resources(destinations, self.direct_port), f)
        os.rename(path + ".tmp", path)
        if self.proc is None:
            with open(os.path.join(self.net.tmpdir, "culvertd.log"), "w") as logf:
                # nsenter, not `ip netns exec`: that remounts /sys, hiding the cgroup.
                self.proc = self.net.spawn(["/usr/bin/nsenter", f"--net={self.node.netns_path}", "/usr/bin/taskset",
                                            "-c", "0", self.args.culvertd, "--config", self.boot],
                                           stdout=logf, stderr=logf)
        else:
            self.proc.send_signal(signal.SIGHUP)
        deadline = time.monotonic() + 60
        want = f'"version": "d{destinations}"'
        while time.monotonic() < deadline:
            if self.proc.poll() is not None:
                self.R.check("culvertd running", False, f"exited {self.proc.returncode}: " +
                             tail(os.path.join(self.net.tmpdir, "culvertd.log"), 10), fatal=True)
            if self.ready():
                code, body = admin_get(self.admin_sock, "/config_dump", timeout=10.0)
                if code == 200 and want in body:
                    return
            time.sleep(0.2)
        self.R.check(f"configuration with {destinations} destinations loaded", False, fatal=True)

    def wrk(self, path: str, mode: str) -> dict:
        url = f"http://{VIP}/" if path == "capture" else f"http://127.0.0.1:{self.direct_port}/"
        argv = [WRK, "-t1", "-c16", f"-d{self.args.duration}s", url]
        if mode == "newconn":
            argv[1:1] = ["-H", "Connection: close"]
        argv = ["/usr/bin/taskset", "-c", "1", *argv]
        pod = self.client if path == "capture" else self.node
        bpf0 = bpf_program_times(self.cg.path) if self.args.bpf_stats else {}
        server0, client0, t0 = process_cpu_s(self.proc.pid), children_cpu_s(), time.monotonic()
        cp = pod.run(argv, cgroup=self.cg, timeout=self.args.duration + 30)
        server1, client1, t1 = process_cpu_s(self.proc.pid), children_cpu_s(), time.monotonic()
        bpf1 = bpf_program_times(self.cg.path) if self.args.bpf_stats else {}
        rps, problems = parse_wrk(cp.stdout)
        requests = max(rps * self.args.duration, 1.0)
        ok = cp.returncode == 0 and rps > 0 and "Non-2xx" not in problems
        if not ok:  # only failures are reported: the figures are the output
            self.R.check(f"wrk {path} {mode}", False, problems or describe(cp))
        elif problems:
            print(f"note: wrk {path} {mode}: {problems}", flush=True)
        # Per request: each program's ns and runs (the wrk run's requests, as rps says).
        bpf = {name: ((ns - bpf0.get(name, (0, 0))[0]) / requests, (cnt - bpf0.get(name, (0, 0))[1]) / requests)
               for name, (ns, cnt) in bpf1.items()}
        return {"rps": rps,
                "server_us": (server1 - server0) * 1e6 / requests,  # culvertd's CPU per request
                "client_us": (client1 - client0) * 1e6 / requests,  # wrk's, with its kernel work
                "server_busy": (server1 - server0) / (t1 - t0),
                "bpf": bpf}

    def run(self) -> dict:
        R, net = self.R, self.net
        if not os.access(WRK, os.X_OK):
            R.check("wrk installed (packaging/setup.sh)", False, WRK, fatal=True)
        self.client = net.add_pod("client", CLIENT_IP)
        self.node = net.add_pod("node", NODE_IP)  # culvertd's own netns
        self.cg = net.make_cgroup()
        self.pin_root = net.assign_pin_root()
        net.assert_isolated()
        tmp = net.tmpdir
        os.makedirs(os.path.join(tmp, "resources"))
        os.makedirs(os.path.join(tmp, "state"), mode=0o700)
        self.admin_sock = os.path.join(tmp, "admin.sock")
        self.direct_port = 18080  # inside the node netns: nothing else there
        self.boot = os.path.join(tmp, "bootstrap.yaml")
        with open(self.boot, "w") as f:
            f.write(BOOTSTRAP.format(tmp=tmp, capture_port=CAPTURE_PORT,
                                     cgroup=self.cg.path, pin_root=self.pin_root))
        self.load(10)
        cp = net.run([self.args.culvertctl, "--config", self.boot, "enroll", "--netns", self.client.netns_path,
                      "--namespace", "bench", "--name", "client", "--ip", CLIENT_IP], timeout=20)
        R.check("enroll the client pod", cp.returncode == 0, describe(cp), fatal=True)

        results: dict = {}
        for run in range(self.args.runs):
            for dests in (10, 10000):
                self.load(dests)
                for mode in ("keepalive", "newconn"):
                    order = ("capture", "direct") if (run + dests) % 2 == 0 else ("direct", "capture")
                    for path in order:
                        r = self.wrk(path, mode)
                        results.setdefault((dests, mode, path), []).append(r)
                        print(f"run {run + 1}: {dests:>5} destinations {mode:9} {path:7} {r['rps']:10.0f}/s "
                              f"culvertd {r['server_us']:.2f} CPU-us/req ({r['server_busy']:.0%} busy), "
                              f"client {r['client_us']:.2f} CPU-us/req", flush=True)
                        if r["bpf"]:
                            print("    BPF per request: " + ", ".join(
                                f"{name} {ns:.0f} ns ({runs:.1f} runs)" for name, (ns, runs) in sorted(r["bpf"].items())) +
                                  f"; total {sum(ns for ns, _ in r['bpf'].values()):.0f} ns", flush=True)
        net.stop(self.proc, signal.SIGTERM)
        cp = net.run([self.args.culvertd, "uninstall", "--config", self.boot], timeout=20)
        R.check("benchmark ran and culvertd uninstalled", cp.returncode == 0, describe(cp))
        return results


def summarize(results: dict, runs: int, duration: int) -> str:
    def med_range(xs, fmt):
        return f"{fmt.format(statistics.median(xs))} ({fmt.format(min(xs))}–{fmt.format(max(xs))})"

    def of(cells, key):
        return [c[key] for c in cells]

    lines = [
        f"{runs} interleaved runs of {duration} s each per cell; median (min–max).",
        "",
        "| destinations | measure | through capture | direct (bound listener) | ratio capture/direct (median of per-run ratios) |",
        "|---:|---|---:|---:|---:|",
    ]
    names = {"keepalive": "keep-alive requests/s", "newconn": "new connections/s"}
    cells = {}
    for dests in (10, 10000):
        for mode in ("keepalive", "newconn"):
            cap = results.get((dests, mode, "capture"), [])
            dct = results.get((dests, mode, "direct"), [])
            if not cap or not dct:
                continue
            cells[(dests, mode)] = (cap, dct)
            ratios = [c["rps"] / d["rps"] for c, d in zip(cap, dct) if d["rps"] > 0]
            lines.append(f"| {dests:,} | {names[mode]} | {med_range(of(cap, 'rps'), '{:,.0f}')} "
                         f"| {med_range(of(dct, 'rps'), '{:,.0f}')} | {med_range(ratios, '{:.3f}')} |")
    for mode in ("keepalive", "newconn"):
        a = results.get((10, mode, "capture"), [])
        b = results.get((10000, mode, "capture"), [])
        if a and b:
            lines.append("")
            lines.append(f"{names[mode]} through capture, 10,000 vs 10 destinations: "
                         f"{statistics.median(of(b, 'rps')) / statistics.median(of(a, 'rps')):.3f} "
                         "(ratio of medians)")
    lines += ["", "CPU time per request (µs): culvertd's (its core's busy share in brackets) and the client's "
              "(wrk, with the kernel work done on its behalf); ratio = capture / direct, median of per-run ratios.",
              "", "| destinations | measure | culvertd, capture | culvertd, direct | culvertd ratio "
              "| client, capture | client, direct | client ratio |", "|---:|---|---:|---:|---:|---:|---:|---:|"]
    for (dests, mode), (cap, dct) in cells.items():
        busy = {path: f" [{statistics.median(of(xs, 'server_busy')):.0%}]" for path, xs in (("c", cap), ("d", dct))}
        row = f"| {dests:,} | {names[mode].split(' ')[0]} |"
        for key in ("server_us", "client_us"):
            ratios = [c[key] / d[key] for c, d in zip(cap, dct) if d[key] > 0]
            mark = busy if key == "server_us" else {"c": "", "d": ""}
            row += (f" {med_range(of(cap, key), '{:.2f}')}{mark['c']} | {med_range(of(dct, key), '{:.2f}')}{mark['d']} |"
                    f" {med_range(ratios, '{:.3f}')} |")
        lines.append(row)
    if any(c["bpf"] for cells_ in cells.values() for xs in cells_ for c in xs):
        lines += ["", "culvert's BPF programs per request (ns, kernel.bpf_stats_enabled), median (min–max):", "",
                  "| destinations | measure | capture | direct |", "|---:|---|---:|---:|"]
        for (dests, mode), (cap, dct) in cells.items():
            totals = [[sum(ns for ns, _ in c["bpf"].values()) for c in xs] for xs in (cap, dct)]
            lines.append(f"| {dests:,} | {names[mode].split(' ')[0]} | {med_range(totals[0], '{:.0f}')} "
                         f"| {med_range(totals[1], '{:.0f}')} |")
    return "\n".join(lines) + "\n"


def main() -> int:
    ap = argparse.ArgumentParser(description=__doc__.split("\n")[0])
    ap.add_argument("--culvertd", required=True)
    ap.add_argument("--culvertctl", required=True)
    ap.add_argument("--runs", type=int, default=5)
    ap.add_argument("--duration", type=int, default=5, help="seconds per wrk run")
    ap.add_argument("--markdown", help="write the summary table to this file")
    ap.add_argument("--bpf-stats", action="store_true",
                    help="also count the BPF programs' run time per request (kernel.bpf_stats_enabled)")
    args = ap.parse_args()
    args.culvertd = os.path.abspath(args.culvertd)
    args.culvertctl = os.path.abspath(args.culvertctl)

    th.require_root_or_skip("bench_capture")
    R = th.Results()
    prefix = None
    summary = ""
    stats_before = None
    if args.bpf_stats:
        with open(BPF_STATS) as f:
            stats_before = f.read().strip()
        with open(BPF_STATS, "w") as f:
            f.write("1")
    try:
        with th.TestNetwork() as net:
            prefix = net.prefix
            b = Bench(net, args, R)
            try:
                summary = summarize(b.run(), args.runs, args.duration)
            except th.Fatal:
                pass
            except Exception:  # noqa: BLE001
                R.check("benchmark raised", False, traceback.format_exc())
    except th.Fatal:
        pass
    except Exception:  # noqa: BLE001
        R.check("test hosts", False, traceback.format_exc())
    finally:
        if stats_before is not None:
            with open(BPF_STATS, "w") as f:
                f.write(stats_before)
    if prefix:
        left = th.find_leftovers(prefix)
        R.check("cleanup: nothing of this run left", not left, str(left))
    if summary:
        print(summary)
        if args.markdown:
            with open(args.markdown, "w") as f:
                f.write(summary)
    return R.summary()


if __name__ == "__main__":
    sys.exit(main())
