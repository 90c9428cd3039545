#!/usr/bin/python3
"""HTTP/1.1 proxy benchmark: culvert beside HAProxy, nginx, nghttpx and a direct connection.

All on loopback, in one run, interleaved: each round runs every target once, so drift of
this shared machine hits all of them alike. The proxy under test is pinned to CPU 0; the
origin (nginx) and the load generator (wrk, 64 keep-alive connections) share CPU 1, so
raw requests per second is capped by that core: the figure of merit is the proxy's CPU
time per request (user + system, from /proc), which does not depend on that cap.

  tests/bench/http1_proxy_bench.py --culvertd build/agent/culvertd [--rounds 5] [--seconds 5]
  tests/bench/http1_proxy_bench.py --culvertd ... --smoke      # one short round (ctest)

Prints a Markdown report (medians and ranges over rounds). Needs root (culvertd loads its
capture programs, here attached to a private cgroup so nothing else is affected).
"""
import argparse
import json
import os
import re
import shutil
import signal
import socket
import statistics
import subprocess
import sys
import tempfile
import time
import urllib.request

HERE = os.path.dirname(os.path.abspath(__file__))


def free_port():
    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        return s.getsockname()[1]


def cgroup2_root():
    with open("/proc/self/mountinfo") as f:
        for line in f:
            parts = line.split()
            sep = parts.index("-")
            if parts[sep + 1] == "cgroup2":
                return parts[4]
    raise RuntimeError("no cgroup2 mount")


def process_tree(pids):
    """The pids and all their descendants (nghttpx and nginx fork their workers)."""
    children = {}
    for entry in os.listdir("/proc"):
        if entry.isdigit():
            try:
                with open(f"/proc/{entry}/stat") as f:
                    ppid = int(f.read().rsplit(")", 1)[1].split()[1])
                children.setdefault(ppid, []).append(int(entry))
            except OSError:
                pass
    out, todo = [], list(pids)
    while todo:
        pid = todo.pop()
        out.append(pid)
        todo.extend(children.get(pid, []))
    return out


def cpu_seconds(pids):
    total = 0
    tick = os.sysconf("SC_CLK_TCK")
    for pid in process_tree(pids):
        for task in os.listdir(f"/proc/{pid}/task"):
            with open(f"/proc/{pid}/task/{task}/stat") as f:
                fields = f.read().rsplit(")", 1)[1].split()
            total += int(fields[11]) + int(fields[12])  # utime, stime
    return total / tick


def rss_kib(pid):
    with open(f"/proc/{pid}/status") as f:
        for line in f:
            if line.startswith("VmRSS:"):
                return int(line.split()[1])
    return 0


def wait_port(port, timeout=10):
    deadline = time.time() + timeout
    while time.time() < deadline:
        try:
            with socket.create_connection(("127.0.0.1", port), timeout=0.2):
                return
        except OSError:
            time.sleep(0.05)
    raise RuntimeError(f"nothing listens on {port}")


class Bench:
    # What the measured proxy runs under (instructions_per_request.py: valgrind) and how
    # long it may take to listen.
    proxy_prefix = []
    proxy_start_timeout = 10

    def __init__(self, args):
        self.args = args
        self.tmp = tempfile.mkdtemp(prefix="culvert-bench-")
        self.procs = []
        self.cgroup = None
        self.pin_root = f"/sys/fs/bpf/culvert-bench-{os.getpid()}"

    def spawn(self, cmd, cpu, **kw):
        p = subprocess.Popen(["taskset", "-c", str(cpu)] + cmd, stdout=subprocess.DEVNULL,
                             stderr=open(os.path.join(self.tmp, f"{os.path.basename(cmd[0])}-{len(self.procs)}.log"), "w"),
                             start_new_session=True, **kw)
        self.procs.append(p)
        return p

    def cleanup(self):
        for p in self.procs:
            if p.poll() is None:
                try:
                    os.killpg(p.pid, signal.SIGTERM)
                except ProcessLookupError:
                    pass
        for p in self.procs:
            try:
                p.wait(timeout=5)
            except subprocess.TimeoutExpired:
                os.killpg(p.pid, signal.SIGKILL)
        if self.cgroup and os.path.isdir(self.cgroup):
            os.rmdir(self.cgroup)
        shutil.rmtree(self.tmp, ignore_errors=True)
        shutil.rmtree(self.pin_root, ignore_errors=True)

    # --- targets ---------------------------------------------------------------------

    def start_origin(self):
        self.origin_port = free_port()
        conf = os.path.join(self.tmp, "origin.conf")
        with open(conf, "w") as f:
            f.write(f"""daemon off; worker_processes 1; pid {self.tmp}/origin.pid; error_log stderr error;
events {{ worker_connections 4096; }}
http {{ access_log off; keepalive_requests 1000000;
  server {{ listen 127.0.0.1:{self.origin_port} backlog=4096;
    location /6 {{ return 200 "hello\\n"; }}
    location /1k {{ return 200 "{'x' * 1023}\\n"; }}
  }}
}}
""")
        self.spawn(["/usr/sbin/nginx", "-c", conf, "-p", self.tmp], cpu=1)
        wait_port(self.origin_port)

    def start_culvert(self):
        port = free_port()
        self.cgroup = os.path.join(cgroup2_root(), f"culvert-bench-{os.getpid()}")
        os.makedirs(self.cgroup, exist_ok=True)
        res = os.path.join(self.tmp, "resources")
        os.makedirs(res, exist_ok=True)
        with open(os.path.join(res, "bench.yaml"), "w") as f:
            json.dump({"version_info": "1", "resources": [
                {"@type": "type.googleapis.com/envoy.config.listener.v3.Listener", "name": "bench",
                 "address": {"socket_address": {"address": "127.0.0.1", "port_value": port}},
                 "filter_chains": [{"filters": [{"name": "envoy.filters.network.http_connection_manager", "typed_config": {
                     "@type": "type.googleapis.com/envoy.extensions.filters.network.http_connection_manager.v3.HttpConnectionManager",
                     "stat_prefix": "bench",
                     "route_config": {"name": "r", "virtual_hosts": [{"name": "all", "domains": ["*"],
                                      "routes": [{"match": {"prefix": "/"}, "route": {"cluster": "origin"}}]}]},
                     "http_filters": [{"name": "envoy.filters.http.router", "typed_config": {
                         "@type": "type.googleapis.com/envoy.extensions.filters.http.router.v3.Router"}}]}}]}]},
                {"@type": "type.googleapis.com/envoy.config.cluster.v3.Cluster", "name": "origin", "type": "STATIC",
                 "load_assignment": {"cluster_name": "origin", "endpoints": [{"lb_endpoints": [{"endpoint": {"address": {
                     "socket_address": {"address": "127.0.0.1", "port_value": self.origin_port}}}}]}]}}]}, f)
        boot = os.path.join(self.tmp, "culvertd.yaml")
        with open(boot, "w") as f:
            f.write(f"""node: {{id: bench}}
admin: {{address: "127.0.0.1:{free_port()}", socket: ""}}
workers: 1
resources: {{path: {res}}}
capture: {{cgroup: {self.cgroup}, port: {free_port()}}}
bpf: {{pin_root: {self.pin_root}}}
enrollment: {{socket: {self.tmp}/cni.sock}}
state_dir: {self.tmp}/state
log: {{level: warn}}
""")
        p = self.spawn(self.proxy_prefix + [self.args.culvertd, "--config", boot], cpu=0)
        wait_port(port, self.proxy_start_timeout)
        return port, [p.pid]

    def start_haproxy(self):
        port = free_port()
        conf = os.path.join(self.tmp, "haproxy.cfg")
        with open(conf, "w") as f:
            f.write(f"""global
  nbthread 1
  maxconn 9000
defaults
  mode http
  timeout connect 5s
  timeout client 30s
  timeout server 30s
  option http-keep-alive
  http-reuse always
frontend fe
  bind 127.0.0.1:{port}
  default_backend be
backend be
  server origin 127.0.0.1:{self.origin_port}
""")
        p = self.spawn(self.proxy_prefix + ["/usr/sbin/haproxy", "-db", "-f", conf], cpu=0)
        wait_port(port, self.proxy_start_timeout)
        return port, [p.pid]

    def start_nginx_proxy(self):
        port = free_port()
        conf = os.path.join(self.tmp, "proxy.conf")
        with open(conf, "w") as f:
            f.write(f"""daemon off; master_process off; worker_processes 1; pid {self.tmp}/proxy.pid; error_log stderr error;
events {{ worker_connections 4096; }}
http {{ access_log off; keepalive_requests 1000000;
  upstream origin {{ server 127.0.0.1:{self.origin_port}; keepalive 128; }}
  server {{ listen 127.0.0.1:{port} backlog=4096;
    location / {{ proxy_pass http://origin; proxy_http_version 1.1; proxy_set_header Connection ""; }}
  }}
}}
""")
        p = self.spawn(["/usr/sbin/nginx", "-c", conf, "-p", self.tmp], cpu=0)
        wait_port(port)
        return port, [p.pid]

    def start_nghttpx(self):
        port = free_port()
        p = self.spawn(self.proxy_prefix + ["/usr/sbin/nghttpx", f"--frontend=127.0.0.1,{port};no-tls",
                        f"--backend=127.0.0.1,{self.origin_port}", "--workers=1", "--single-thread",
                        "--no-ocsp", "--errorlog-file=/dev/null", "--accesslog-file=/dev/null",
                        f"--pid-file={self.tmp}/nghttpx.pid", "--conf=/dev/null"], cpu=0)
        wait_port(port, self.proxy_start_timeout)
        return port, [p.pid]

    # --- measurement -----------------------------------------------------------------

    def wrk(self, port, path, connections, seconds):
        out = subprocess.run(["taskset", "-c", "1", "wrk", "-t1", f"-c{connections}", f"-d{seconds}s", "--latency",
                              f"http://127.0.0.1:{port}{path}"], capture_output=True, text=True, check=True).stdout
        requests = int(re.search(r"(\d+) requests in", out).group(1))
        errors = sum(int(x) for x in re.findall(r"(?:connect|read|write|timeout) (\d+)", out))
        non2xx = re.search(r"Non-2xx or 3xx responses: (\d+)", out)
        def pct(p):
            m = re.search(rf"^\s+{p}%\s+([\d.]+)(us|ms|s)\s*$", out, re.M)
            v, unit = float(m.group(1)), m.group(2)
            return v * {"us": 1e-3, "ms": 1, "s": 1e3}[unit]
        return {"requests": requests, "errors": errors + (int(non2xx.group(1)) if non2xx else 0),
                "p50_ms": pct(50), "p99_ms": pct(99)}

    def run(self):
        self.start_origin()
        targets = {"direct": (self.origin_port, [])}
        for name, start in [("culvert", self.start_culvert), ("haproxy", self.start_haproxy),
                            ("nginx", self.start_nginx_proxy), ("nghttpx", self.start_nghttpx)]:
            targets[name] = start()
        results = {}
        for rnd in range(self.args.rounds):
            for body in ("/6", "/1k"):
                for name, (port, pids) in targets.items():
                    self.wrk(port, body, 64, 1)  # warm pools and caches
                    before = cpu_seconds(pids)
                    r = self.wrk(port, body, 64, self.args.seconds)
                    cpu = cpu_seconds(pids) - before
                    r["cpu_us_per_rq"] = cpu * 1e6 / max(r["requests"], 1) if pids else 0.0
                    r["rps"] = r["requests"] / self.args.seconds
                    r["proxy_core_busy"] = cpu / self.args.seconds
                    results.setdefault((body, name), []).append(r)
                    one = self.wrk(port, body, 1, max(1, self.args.seconds // 2))
                    results.setdefault((body + "@1", name), []).append(one)
            print(f"round {rnd + 1}/{self.args.rounds} done", file=sys.stderr)
        culvert_pid = targets["culvert"][1][0]
        memory = self.idle_memory(targets["culvert"][0], culvert_pid)
        return results, memory

    def idle_memory(self, port, pid, count=2000):
        """RSS delta per idle keep-alive connection, two ways, each over `count` connections
        that made one `GET /6`:
        - one at a time: each request is answered before the next connection opens, so
          the delta is what an idle connection keeps;
        - in a burst, `count` more while the first stay open: every request is sent
          before any response is read, so all are in flight at once, and the delta also
          holds what the burst left behind (heap grown for the requests' state and not
          returned, upstream connections the pool keeps)."""
        def open_idle(one_at_a_time):
            socks = []
            for _ in range(count):
                s = socket.create_connection(("127.0.0.1", port))
                s.sendall(b"GET /6 HTTP/1.1\r\nHost: b\r\n\r\n")
                if one_at_a_time:
                    s.recv(4096)
                socks.append(s)
            if not one_at_a_time:
                for s in socks:
                    s.recv(4096)  # one response each: the connection is now an idle keep-alive one
            time.sleep(0.5)
            return socks

        base = rss_kib(pid)
        socks = open_idle(one_at_a_time=True)
        one_at_a_time = rss_kib(pid)
        socks += open_idle(one_at_a_time=False)
        burst = rss_kib(pid)
        for s in socks:
            s.close()
        return {"base_rss_kib": base, "idle_connections": count,
                "per_idle_cx_bytes": (one_at_a_time - base) * 1024 / count,
                "per_idle_cx_bytes_burst": (burst - one_at_a_time) * 1024 / count}


def med_range(values, fmt):
    return f"{fmt.format(statistics.median(values))} ({fmt.format(min(values))}–{fmt.format(max(values))})"


def report(results, memory, args):
    lines = [f"Rounds: {args.rounds}, {args.seconds} s per run; median (min–max). Proxy on CPU 0; origin (nginx) and wrk on CPU 1.", ""]
    for body in ("/6", "/1k"):
        label = "6-byte" if body == "/6" else "1 KiB"
        hap = statistics.median(r["cpu_us_per_rq"] for r in results[(body, "haproxy")])
        lines += [f"**HTTP/1.1, {label} body, wrk 64 keep-alive connections**", "",
                  "| target | requests/s | proxy CPU-µs per request | ÷ HAProxy | proxy core busy | p50 ms | p99 ms | p99 ms at 1 connection | errors |",
                  "|---|---|---|---|---|---|---|---|---|"]
        for name in ("direct", "culvert", "haproxy", "nginx", "nghttpx"):
            rs = results[(body, name)]
            one = results[(body + "@1", name)]
            cpu = [r["cpu_us_per_rq"] for r in rs]
            ratio = f"{statistics.median(cpu) / hap:.2f}" if name != "direct" else "—"
            lines.append(f"| {name} | {med_range([r['rps'] for r in rs], '{:.0f}')} | "
                         f"{med_range(cpu, '{:.1f}') if name != 'direct' else '—'} | {ratio} | "
                         f"{med_range([r['proxy_core_busy'] * 100 for r in rs], '{:.0f}%') if name != 'direct' else '—'} | "
                         f"{med_range([r['p50_ms'] for r in rs], '{:.2f}')} | {med_range([r['p99_ms'] for r in rs], '{:.2f}')} | "
                         f"{med_range([r['p99_ms'] for r in one], '{:.3f}')} | {sum(r['errors'] for r in rs)} |")
        lines.append("")
    lines.append(f"culvertd (workers: 1) base RSS: {memory['base_rss_kib'] / 1024:.1f} MiB; user-space memory per idle "
                 f"HTTP/1.1 keep-alive connection: {memory['per_idle_cx_bytes']:.0f} bytes "
                 f"(RSS delta over {memory['idle_connections']} connections served one at a time); "
                 f"{memory['per_idle_cx_bytes_burst']:.0f} bytes over {memory['idle_connections']} more opened in a "
                 f"burst (all their requests in flight at once).")
    return "\n".join(lines)


def main():
    ap = argparse.ArgumentParser()
    ap.add_argument("--culvertd", required=True)
    ap.add_argument("--rounds", type=int, default=5)
    ap.add_argument("--seconds", type=int, default=5)
    ap.add_argument("--smoke", action="store_true", help="one short round: checks the harness works")
    args = ap.parse_args()
    if args.smoke:
        args.rounds, args.seconds = 1, 1
    if os.geteuid() != 0:
        print("needs root (culvertd loads BPF programs)", file=sys.stderr)
        return 77 if os.environ.get("CULVERT_REQUIRE_PRIVILEGED") != "1" else 1
    bench = Bench(args)
    try:
        results, memory = bench.run()
    finally:
        bench.cleanup()
    print(report(results, memory, args))
    failed = [k for k, rs in results.items() if any(r["errors"] for r in rs) and k[1] in ("culvert", "direct")]
    if failed:
        print(f"errors in {failed}", file=sys.stderr)
        return 1
    return 0


if __name__ == "__main__":
    sys.exit(main())
