#!/usr/bin/python3
"""HTTP/2 proxy benchmark: culvert beside nghttpx and a direct connection.

The method of http1_proxy_bench.py (whose harness this reuses): all on loopback, one run,
interleaved rounds; the proxy pinned to CPU 0, origin (nginx, HTTP/1.1 behind the
proxies, h2c for the direct row) and h2load (4 connections × 32 streams) on CPU 1; the
figure of merit is the proxy's CPU time per request. Both proxies take HTTP/2 with prior
knowledge downstream and speak HTTP/1.1 to the origin.

  tests/bench/http2_proxy_bench.py --culvertd build/agent/culvertd [--rounds 5] [--seconds 5]
  tests/bench/http2_proxy_bench.py --culvertd ... --smoke      # one short round (ctest)
"""
import argparse
import os
import re
import socket
import statistics
import subprocess
import sys
import time

sys.path.insert(0, os.path.dirname(os.path.abspath(__file__)))
from http1_proxy_bench import Bench, cpu_seconds, free_port, med_range, process_tree, rss_kib, wait_port  # noqa: E402

def tree_rss_kib(pid):
    """RSS of a process and its children (nghttpx serves from a forked worker)."""
    return sum(rss_kib(p) for p in process_tree([pid]))


PREFACE = b"PRI * HTTP/2.0\r\n\r\nSM\r\n\r\n" + b"\x00\x00\x00\x04\x00\x00\x00\x00\x00"  # + empty SETTINGS


class H2Bench(Bench):
    def start_origin(self):
        super().start_origin()
        # The same answers over h2c for the direct row.
        self.origin_h2_port = free_port()
        conf = os.path.join(self.tmp, "origin-h2.conf")
        with open(conf, "w") as f:
            f.write(f"""daemon off; master_process off; worker_processes 1; pid {self.tmp}/origin-h2.pid; error_log stderr error;
events {{ worker_connections 4096; }}
http {{ access_log off; keepalive_requests 1000000; http2_max_requests 100000000; http2_max_concurrent_streams 128;
  server {{ listen 127.0.0.1:{self.origin_h2_port} http2 backlog=4096;
    location /6 {{ return 200 "hello\\n"; }}
    location /1k {{ return 200 "{'x' * 1023}\\n"; }}
  }}
}}
""")
        self.spawn(["/usr/sbin/nginx", "-c", conf, "-p", self.tmp], cpu=1)
        wait_port(self.origin_h2_port)

    def h2load(self, port, path, seconds):
        out = subprocess.run(["taskset", "-c", "1", "h2load", "-t1", "-c4", "-m32", "-D", str(seconds),
                              f"http://127.0.0.1:{port}{path}"], capture_output=True, text=True, check=True).stdout
        m = re.search(r"requests: (\d+) total, (\d+) started, (\d+) done, (\d+) succeeded, (\d+) failed, (\d+) errored",
                      out)
        return {"requests": int(m.group(4)), "errors": int(m.group(5)) + int(m.group(6))}

    def run(self):
        self.start_origin()
        targets = {"direct": (self.origin_h2_port, []), "culvert": self.start_culvert(),
                   "nghttpx": self.start_nghttpx()}
        results = {}
        for rnd in range(self.args.rounds):
            for body in ("/6", "/1k"):
                for name, (port, pids) in targets.items():
                    self.h2load(port, body, 1)  # warm pools and caches
                    before = cpu_seconds(pids)
                    r = self.h2load(port, body, self.args.seconds)
                    cpu = cpu_seconds(pids) - before
                    r["cpu_us_per_rq"] = cpu * 1e6 / max(r["requests"], 1) if pids else 0.0
                    r["rps"] = r["requests"] / self.args.seconds
                    r["proxy_core_busy"] = cpu / self.args.seconds
                    results.setdefault((body, name), []).append(r)
            print(f"round {rnd + 1}/{self.args.rounds} done", file=sys.stderr)
        memory = {name: self.idle_h2_memory(targets[name][0], targets[name][1][0]) for name in ("culvert", "nghttpx")}
        return results, memory

    def idle_h2_memory(self, port, pid, count=500):
        """RSS per idle HTTP/2 connection: preface and SETTINGS exchanged, no stream."""
        base = tree_rss_kib(pid)
        socks = []
        for _ in range(count):
            s = socket.create_connection(("127.0.0.1", port))
            s.sendall(PREFACE)
            socks.append(s)
        for s in socks:
            s.recv(4096)  # the server's SETTINGS
        time.sleep(0.5)
        loaded = tree_rss_kib(pid)
        for s in socks:
            s.close()
        return {"base_rss_kib": base, "per_idle_cx_bytes": (loaded - base) * 1024 / count, "idle_connections": count}


def report(results, memory, args):
    lines = [f"Rounds: {args.rounds}, {args.seconds} s per run; median (min–max). Proxy on CPU 0; origin (nginx) "
             "and h2load (4 connections × 32 streams) on CPU 1.", ""]
    for body in ("/6", "/1k"):
        label = "6-byte" if body == "/6" else "1 KiB"
        ref = statistics.median(r["cpu_us_per_rq"] for r in results[(body, "nghttpx")])
        lines += [f"**HTTP/2 downstream (HTTP/1.1 to the origin), {label} body**", "",
                  "| target | requests/s | proxy CPU-µs per request | ÷ nghttpx | proxy core busy | errors |",
                  "|---|---|---|---|---|---|"]
        for name in ("direct", "culvert", "nghttpx"):
            rs = results[(body, name)]
            errors = sum(r["errors"] for r in rs)
            rps = med_range([r["rps"] for r in rs], "{:.0f}")
            if name == "direct":
                lines.append(f"| {name} | {rps} | — | — | — | {errors} |")
                continue
            cpu = [r["cpu_us_per_rq"] for r in rs]
            busy = med_range([r["proxy_core_busy"] * 100 for r in rs], "{:.0f}%")
            lines.append(f"| {name} | {rps} | {med_range(cpu, '{:.1f}')} | {statistics.median(cpu) / ref:.2f} | "
                         f"{busy} | {errors} |")
        lines.append("")
    for name, m in memory.items():
        lines.append(f"{name}: user-space memory per idle HTTP/2 connection {m['per_idle_cx_bytes'] / 1024:.1f} KiB "
                     f"(RSS delta over {m['idle_connections']} connections; base RSS {m['base_rss_kib'] / 1024:.1f} MiB).")
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
    bench = H2Bench(args)
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
