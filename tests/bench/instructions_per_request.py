#!/usr/bin/python3
"""User-space instructions per proxied request, counted by callgrind (issue #4).

CPU time per request on these shared 2-core VMs moved by up to 1.8x between identical
runs (2026-11-29), more than most single changes to the request path. An instruction
count does not: culvertd runs under valgrind's callgrind, h2load sends --warmup
requests, the counters are zeroed, then --requests more are sent and the count is
dumped. Runs of one binary agree to within 0.5 %. It covers culvertd's user space only
(the kernel's share, about half of a request's CPU, is not in it), so it ranks changes;
the CPU benches decide the targets.

The paths are those of http1_proxy_bench.py and http2_proxy_bench.py, whose harness and
peer configurations this reuses: culvert on a bound listener (workers: 1), HAProxy and
nghttpx, each relaying to an nginx origin over HTTP/1.1; downstream HTTP/2 (h2load -c4
-m32) and HTTP/1.1 (h2load --h1 -c16), the /6 body.

  tests/bench/instructions_per_request.py --culvertd build/agent/culvertd [--requests 20000]
  tests/bench/instructions_per_request.py --culvertd ... --smoke      # a few requests (ctest)
  tests/bench/instructions_per_request.py --culvertd ... --keep-profiles /tmp/prof  # then callgrind_annotate
"""
import argparse
import glob
import os
import re
import shutil
import subprocess
import sys

sys.path.insert(0, os.path.dirname(os.path.abspath(__file__)))
from http1_proxy_bench import process_tree  # noqa: E402
from http2_proxy_bench import H2Bench  # noqa: E402

DOWNSTREAM = {
    "http2": ["-c4", "-m32"],
    "http1": ["--h1", "-c16"],
}
# Who is measured for each downstream protocol (HAProxy 2.6 is run for HTTP/1.1 only, as
# in the CPU benches).
PEERS = {"http2": ["culvert", "nghttpx"], "http1": ["culvert", "haproxy", "nghttpx"]}


def h2load(port, flags, requests):
    out = subprocess.run(["taskset", "-c", "1", "h2load", "-t1", *flags, "-n", str(requests),
                          f"http://127.0.0.1:{port}/6"], capture_output=True, text=True, check=True).stdout
    m = re.search(r"requests: \d+ total, \d+ started, \d+ done, (\d+) succeeded, (\d+) failed, (\d+) errored", out)
    return int(m.group(1)), int(m.group(2)) + int(m.group(3))


def count(args, target, protocol):
    """Ir per request for one proxy and downstream protocol, in a fresh process under
    callgrind. nghttpx serves from a forked worker: every process of the tree counts."""
    bench = H2Bench(args)
    out_pattern = os.path.join(bench.tmp, "callgrind.out.%p")
    bench.proxy_prefix = ["valgrind", "--tool=callgrind", "--trace-children=yes",
                          f"--callgrind-out-file={out_pattern}"]
    bench.proxy_start_timeout = 120  # valgrind reads the binary's debug info first
    try:
        bench.start_origin()
        port, pids = getattr(bench, f"start_{target}")()
        flags = DOWNSTREAM[protocol]
        h2load(port, flags, args.warmup)
        tree = [str(p) for p in process_tree(pids)]
        for pid in tree:
            subprocess.run(["callgrind_control", "-z", pid], check=True, capture_output=True)
        ok, errors = h2load(port, flags, args.requests)
        for pid in tree:
            subprocess.run(["callgrind_control", "-d", "measured", pid], check=True, capture_output=True)
        total = 0
        dumps = 0
        for path in glob.glob(os.path.join(bench.tmp, "callgrind.out.*")):
            with open(path) as f:
                text = f.read()
            if "\ndesc: Trigger: dump measured" in text[:4096]:
                total += int(re.search(r"^summary: (\d+)", text, re.M).group(1))
                dumps += 1
                if args.keep_profiles:
                    os.makedirs(args.keep_profiles, exist_ok=True)
                    shutil.copy(path, os.path.join(args.keep_profiles,
                                                   f"{target}-{protocol}.{os.path.basename(path)}"))
        if dumps == 0 or ok == 0:
            raise RuntimeError(f"{target} {protocol}: {dumps} dumps, {ok} requests answered")
        return {"ir_per_request": total / ok, "requests": ok, "errors": errors}
    finally:
        bench.cleanup()


def main():
    ap = argparse.ArgumentParser(description=__doc__.split("\n")[0])
    ap.add_argument("--culvertd", required=True)
    ap.add_argument("--requests", type=int, default=20000)
    ap.add_argument("--warmup", type=int, default=3000)
    ap.add_argument("--protocols", nargs="+", default=list(DOWNSTREAM), choices=list(DOWNSTREAM))
    ap.add_argument("--targets", nargs="+", default=["culvert", "haproxy", "nghttpx"],
                    choices=["culvert", "haproxy", "nghttpx"], help="culvert first: the others are given ÷ culvert")
    ap.add_argument("--smoke", action="store_true", help="a few requests: checks the harness works")
    ap.add_argument("--keep-profiles", metavar="DIR",
                    help="copy each measured callgrind dump here, for callgrind_annotate")
    args = ap.parse_args()
    if args.smoke:
        args.requests, args.warmup, args.targets = 300, 100, ["culvert"]
    if os.geteuid() != 0:
        print("needs root (culvertd loads BPF programs)", file=sys.stderr)
        return 77 if os.environ.get("CULVERT_REQUIRE_PRIVILEGED") != "1" else 1
    args.culvertd = os.path.abspath(args.culvertd)
    lines = ["| proxy | downstream | user-space instructions per request (callgrind Ir) | ÷ culvert | requests | errors |",
             "|---|---|---|---|---|---|"]
    errors = 0
    for protocol in args.protocols:
        culvert = None
        for target in args.targets:
            if target not in PEERS[protocol]:
                continue
            r = count(args, target, protocol)
            errors += r["errors"]
            culvert = r["ir_per_request"] if target == "culvert" else culvert
            ratio = f"{r['ir_per_request'] / culvert:.2f}" if culvert else "—"
            lines.append(f"| {target} | {protocol} | {r['ir_per_request']:.0f} | {ratio} | {r['requests']} | "
                         f"{r['errors']} |")
    print("\n".join(lines))
    return 1 if errors else 0


if __name__ == "__main__":
    sys.exit(main())
