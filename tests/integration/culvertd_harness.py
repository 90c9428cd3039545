"""culvertd under test: what every integration test needs besides test hosts.

Standard library only; builds on testhosts.py (DESIGN.md §8).

    def scenario(net, args, R):
        client = net.add_pod("client", "10.244.1.1")
        d = Culvertd(net, args, R)               # per-run cgroup, pin root, admin port
        d.start({"main.yaml": RESOURCES})        # resource files; waits for /ready
        d.enroll(client, namespace="team-a")
        cp = client.curl("http://10.96.0.10/x", cgroup=d.cgroup)
        R.check("counted", d.wait_metric("culvert_http_downstream_rq_total", 1))

    if __name__ == "__main__":
        sys.exit(run_test("integration_example", scenario))

run_test() parses --culvertd/--culvertctl/--keep-tmp, skips (exit 77) when not root
unless CULVERT_REQUIRE_PRIVILEGED=1, owns the TestNetwork, prints culvertd's log
when a check failed, and checks that nothing of the run was left behind.
"""

from __future__ import annotations

import argparse
import os
import re
import signal
import socket
import subprocess
import sys
import time
import traceback
import urllib.error
import urllib.request
from typing import Callable

sys.path.insert(0, os.path.dirname(os.path.abspath(__file__)))
import testhosts as th  # noqa: E402

def _bpf_layout_dir() -> str:
    """The pin directory of this build's BPF layout, "v<CV_LAYOUT_VERSION>"."""
    header = os.path.join(os.path.dirname(os.path.abspath(__file__)), "..", "..", "ebpf", "include", "culvert_bpf.h")
    with open(header) as f:
        return "v" + re.search(r"^#define CV_LAYOUT_VERSION (\d+)$", f.read(), re.M).group(1)


BPF_LAYOUT_DIR = _bpf_layout_dir()
BPF_LINKS = 5  # connect4/6, getpeername4/6, sockops

READY_TIMEOUT = 15.0
STOP_TIMEOUT = 5.0
CURL_CONNECT_FAILED = 7

BOOTSTRAP = """\
node:
  id: test
admin:
  address: "127.0.0.1:{admin_port}"
  socket: "{tmp}/admin.sock"
workers: {workers}
resources:
  path: "{resources}"
capture:
  port: {capture_port}
  cgroup: "{cgroup}"
  fail_mode: {fail_mode}
bpf:
  pin_root: "{pin_root}"
enrollment:
  socket: "{tmp}/cni.sock"
state_dir: "{tmp}/state"
log:
  level: {log_level}
"""

# urllib without proxies: the admin port is on loopback.
_HTTP = urllib.request.build_opener(urllib.request.ProxyHandler({}))


def http_get(url: str, timeout: float = 2.0) -> tuple[int, str]:
    try:
        with _HTTP.open(url, timeout=timeout) as r:
            return r.status, r.read().decode(errors="replace")
    except urllib.error.HTTPError as e:
        return e.code, e.read().decode(errors="replace")


def free_port() -> int:
    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        return s.getsockname()[1]


def parse_labels(text: str) -> dict[str, str]:
    return dict(re.findall(r'(\w+)="((?:[^"\\]|\\.)*)"', text or ""))


def sum_metric(text: str, name: str, labels: dict[str, str] | None = None) -> float | None:
    """Sum every sample of `name` in Prometheus text whose labels include `labels`."""
    total, seen = 0.0, False
    for line in text.splitlines():
        if line.startswith("#"):
            continue
        m = re.match(r"^([a-zA-Z_:][a-zA-Z0-9_:]*)(\{[^}]*\})?\s+(\S+)", line)
        if not m or m.group(1) != name:
            continue
        have = parse_labels(m.group(2))
        if labels and any(have.get(k) != v for k, v in labels.items()):
            continue
        total += float(m.group(3))
        seen = True
    return total if seen else None


def tail(path: str, lines: int = 200) -> str:
    try:
        with open(path, errors="replace") as f:
            return "".join(f.readlines()[-lines:])
    except OSError as e:
        return f"<{e}>"


def describe(cp) -> str:
    return (f"rc={cp.returncode} stdout={cp.stdout.strip()[:400]!r} "
            f"stderr={cp.stderr.strip()[:400]!r}")


def check_isolated(net: th.TestNetwork, R: th.Results) -> None:
    """DESIGN.md §8 before any traffic: the test hosts have no way off the machine (fatal if not)."""
    try:
        net.assert_isolated()
        R.check("test hosts isolated (no default route, ip_forward unchanged)", True)
    except th.HostSafetyError as e:
        R.check("test hosts isolated", False, str(e), fatal=True)


class CurlReply:
    """What `curl -i -w CURL_STATUS_TIME` printed: the status; `time`, from the TCP
    connection being up to the response head's arrival (when culvert's timeout or retry
    answered; a SYN retransmitted under load adds a whole second before the connection
    is up); and the headers of the response head and, after an HTTP/2 body, its trailers
    (which curl -i prints as "name: value" lines).

    Not time_total: Debian 12's curl 7.88.1 now and then waits a whole second after an
    HTTP/2 response that is a lone HEADERS frame with END_STREAM (a gRPC trailers-only
    reply) before it ends the transfer, though the bytes came at once (seen in a pcap)."""

    def __init__(self, cp):
        self.cp = cp
        m = re.search(r"CODE=(\d+) HEAD=([0-9.]+) CONNECTED=([0-9.]+)\s*$", cp.stdout)
        self.status = int(m.group(1)) if m else None
        self.time = float(m.group(2)) - float(m.group(3)) if m else None
        self.connect_time = float(m.group(3)) if m else None
        self.headers: dict[str, str] = {}
        # Text mode: curl's CRLFs arrive as LFs; a gRPC body's NULs may precede a trailer.
        for line in cp.stdout.replace("\r\n", "\n").replace("\x00", "").split("\n")[1:]:
            k, sep, v = line.partition(":")
            if sep and re.fullmatch(r"[A-Za-z0-9-]+", k.strip()):
                self.headers[k.strip().lower()] = v.strip()

    def __str__(self):
        return describe(self.cp)


CURL_STATUS_TIME = r"\nCODE=%{http_code} HEAD=%{time_starttransfer} CONNECTED=%{time_connect}\n"


def fault_request(pod: th.Pod, cgroup: th.Cgroup, url: str, key: str, headers=(), data: str | None = None,
                  http2: bool = False, max_time: float = 8) -> CurlReply:
    """curl `url` from `pod` with "x-fault-key: key" and `headers` (fault_upstream.py's
    and fault_upstream_h2.py's request headers), optionally a body, over HTTP/2 prior
    knowledge when `http2`."""
    argv = ["-i", "-w", CURL_STATUS_TIME, "-H", f"x-fault-key: {key}"]
    if http2:
        argv.append("--http2-prior-knowledge")
    for h in headers:
        argv += ["-H", h]
    if data is not None:
        argv += ["-H", "Expect:", "--data-binary", data]
    return CurlReply(pod.curl(*argv, url, cgroup=cgroup, max_time=max_time))


class Culvertd:
    """One culvertd process with its own bootstrap, resource dir, per-run capture
    cgroup and bpf pin root (both from the TestNetwork, so cleanup is shared)."""

    def __init__(self, net: th.TestNetwork, args, R: th.Results, *, name: str = "culvertd",
                 workers: int = 2, capture_port: int = 15001, fail_mode: str = "open",
                 log_level: str = "debug", extra_bootstrap: str = "",
                 cgroup: th.Cgroup | None = None, pin_root: str | None = None):
        self.net, self.R, self.name = net, R, name
        self.bin, self.ctl_bin = args.culvertd, args.culvertctl
        self.tmp = net.path(name)
        self.resources_dir = os.path.join(self.tmp, "resources")
        os.makedirs(self.resources_dir, exist_ok=True)
        os.makedirs(os.path.join(self.tmp, "state"), mode=0o700, exist_ok=True)
        # Each instance its own cgroup and pin root (a sub-directory of the run's, so
        # the TestNetwork's cleanup removes it); the first keeps the run's own cgroup.
        first = not any(d.net is net for d in _instances)
        self.cgroup = cgroup or net.make_cgroup("" if first else name)
        self.pin_root = pin_root or os.path.join(net.assign_pin_root(), name)
        self.admin_port = free_port()
        self.capture_port = capture_port
        self.bootstrap = os.path.join(self.tmp, "bootstrap.yaml")
        with open(self.bootstrap, "w") as f:
            f.write(BOOTSTRAP.format(admin_port=self.admin_port, tmp=self.tmp,
                                     resources=self.resources_dir, workers=workers,
                                     capture_port=capture_port, cgroup=self.cgroup.path,
                                     fail_mode=fail_mode, pin_root=self.pin_root,
                                     log_level=log_level))
            f.write(extra_bootstrap)
        self.log_path = os.path.join(self.tmp, "culvertd.log")
        self.proc: subprocess.Popen | None = None
        _instances.append(self)

    # ------------------------------------------------------------ lifecycle
    def write_resources(self, filename: str, text: str) -> None:
        """Writes one resource file atomically (a running culvertd reloads it)."""
        path = os.path.join(self.resources_dir, filename)
        with open(path + ".tmp", "w") as f:
            f.write(text)
        os.rename(path + ".tmp", path)

    def start(self, resources: dict[str, str] | None = None, validate: bool = True,
              wait: bool = True) -> None:
        """wait=False: return once spawned (e.g. /ready waits for a control plane)."""
        for filename, text in (resources or {}).items():
            self.write_resources(filename, text)
        if validate:
            cp = self.net.run([self.bin, "--validate", "--config", self.bootstrap], timeout=20)
            self.R.check(f"{self.name} --validate exits 0", cp.returncode == 0, describe(cp),
                         fatal=True)
        with open(self.log_path, "a") as logf:
            self.proc = self.net.spawn([self.bin, "--config", self.bootstrap],
                                       stdout=logf, stderr=logf)
        if wait:
            self.wait_ready()

    def wait_ready(self, timeout: float = READY_TIMEOUT) -> None:
        deadline = time.monotonic() + timeout
        last = ""
        while time.monotonic() < deadline:
            rc = self.proc.poll()
            if rc is not None:
                self.R.check(f"{self.name} ready", False,
                             f"exited with {rc} before /ready", fatal=True)
            try:
                code, body = self.admin_get("/ready", timeout=1.0)
                if code == 200:
                    return
                last = f"HTTP {code}: {body[:200]}"
            except OSError as e:
                last = str(e)
            time.sleep(0.05)
        self.R.check(f"{self.name} /ready returns 200", False,
                     f"not ready within {timeout}s: {last}", fatal=True)

    def stop(self, expect_clean_exit: bool = True) -> int | None:
        """SIGTERM, then SIGKILL after STOP_TIMEOUT. Returns the exit code."""
        p = self.proc
        if p is None:
            return None
        p.send_signal(signal.SIGTERM)
        try:
            rc = p.wait(timeout=STOP_TIMEOUT)
        except subprocess.TimeoutExpired:
            rc = None
        if expect_clean_exit:
            self.R.check(f"{self.name} exits 0 within {STOP_TIMEOUT:.0f}s of SIGTERM",
                         rc == 0, f"rc={rc}")
        self.net.stop(p, signal.SIGKILL)
        self.proc = None
        return rc

    def kill(self) -> None:
        """kill -9, as a crash or the OOM killer would."""
        if self.proc is not None:
            self.net.stop(self.proc, signal.SIGKILL)
            self.proc = None

    # ------------------------------------------------------------ control
    def ctl(self, *argv: str, timeout: float = 20):
        return self.net.run([self.ctl_bin, "--config", self.bootstrap, *argv], timeout=timeout)

    def enroll(self, pod: th.Pod, namespace: str = "default", name: str | None = None,
               extra: tuple[str, ...] = ()) -> None:
        cp = self.ctl("enroll", "--netns", pod.netns_path, "--namespace", namespace,
                      "--name", name or pod.name, "--ip", pod.ip, *extra)
        self.R.check(f"enroll {pod.name} ({namespace})", cp.returncode == 0, describe(cp),
                     fatal=True)

    def unenroll(self, pod: th.Pod) -> None:
        cp = self.ctl("unenroll", "--netns", pod.netns_path)
        self.R.check(f"unenroll {pod.name}", cp.returncode == 0, describe(cp))

    # ------------------------------------------------------------ admin
    def admin_get(self, path: str, timeout: float = 2.0) -> tuple[int, str]:
        return http_get(f"http://127.0.0.1:{self.admin_port}{path}", timeout=timeout)

    def stats_text(self) -> str:
        code, body = self.admin_get("/stats/prometheus")
        return body if code == 200 else ""

    def metric(self, name: str, labels: dict[str, str] | None = None) -> float | None:
        return sum_metric(self.stats_text(), name, labels)

    def wait_metric(self, name: str, want: float, labels: dict[str, str] | None = None,
                    timeout: float = 3.0) -> float | None:
        """Polls until the sum reaches `want` (workers merge counters lazily); returns
        the last value seen, so a check can report it."""
        deadline = time.monotonic() + timeout
        while True:
            v = self.metric(name, labels)
            if (v is not None and v >= want) or time.monotonic() > deadline:
                return v
            time.sleep(0.05)

    def dump_log(self, lines: int = 200) -> None:
        print(f"----- {self.name} log ({self.log_path}, last {lines} lines) -----")
        print(tail(self.log_path, lines), end="")
        print(f"----- end {self.name} log -----", flush=True)


_instances: list[Culvertd] = []


# ---------------------------------------------------------------- resource YAML
# Pieces of a resource file (an xDS DiscoveryResponse in YAML), so that tests do not each
# repeat the same blocks. Indents match what yaml_resources() puts them in.

# A cluster's typed_extension_protocol_options choosing HTTP/2 (h2c) to its endpoints.
HTTP2_UPSTREAM = """\
  typed_extension_protocol_options:
    envoy.extensions.upstreams.http.v3.HttpProtocolOptions:
      "@type": type.googleapis.com/envoy.extensions.upstreams.http.v3.HttpProtocolOptions
      explicit_http_config: {http2_protocol_options: {}}
"""


def yaml_resources(*resources: str) -> str:
    """A resource file holding `resources` (each from yaml_http_listener/yaml_cluster)."""
    return 'version_info: "1"\nresources:' + "".join(resources)


def yaml_route(prefix: str, cluster: str, extra: str = "") -> str:
    """One route of yaml_http_listener's `routes`; `extra`: more RouteAction fields (16 spaces in)."""
    return f"""
            - match: {{prefix: "{prefix}"}}
              route:
                cluster: {cluster}
{extra}"""


def yaml_retry_policy(body: str, indent: int = 16) -> str:
    """A RouteAction's retry_policy (for yaml_route's `extra`); `body` indented by 2."""
    pad = " " * indent
    return "\n".join(pad + line for line in ("retry_policy:\n" + body).splitlines())


def yaml_http_listener(name: str, vip: str, port: int, routes: str, hcm_extra: str = "") -> str:
    """A virtual (captured) listener on vip:port with one HttpConnectionManager whose one
    virtual host ("*") has `routes` (yaml_route()s); `hcm_extra`: more HCM fields, 8 in."""
    return f"""
- "@type": type.googleapis.com/envoy.config.listener.v3.Listener
  name: {name}
  address: {{socket_address: {{address: {vip}, port_value: {port}}}}}
  bind_to_port: false
  filter_chains:
  - filters:
    - name: envoy.filters.network.http_connection_manager
      typed_config:
        "@type": type.googleapis.com/envoy.extensions.filters.network.http_connection_manager.v3.HttpConnectionManager
        stat_prefix: {name}
{hcm_extra}        route_config:
          name: local
          virtual_hosts:
          - name: all
            domains: ["*"]
            routes:{routes}
        http_filters:
        - name: envoy.filters.http.router
          typed_config: {{"@type": type.googleapis.com/envoy.extensions.filters.http.router.v3.Router}}
"""


def yaml_cluster(name: str, endpoints: list[tuple[str, int, int]], extra: str = "") -> str:
    """A STATIC cluster of (ip, port, weight) endpoints; `extra`: more Cluster fields, 2 in
    (HTTP2_UPSTREAM for an HTTP/2 upstream)."""
    eps = "".join(f"""
      - endpoint: {{address: {{socket_address: {{address: {ip}, port_value: {port}}}}}}}
        load_balancing_weight: {w}""" for ip, port, w in endpoints)
    return f"""
- "@type": type.googleapis.com/envoy.config.cluster.v3.Cluster
  name: {name}
  type: STATIC
  connect_timeout: 1s
{extra}  load_assignment:
    cluster_name: {name}
    endpoints:
    - lb_endpoints:{eps}
"""


def run_test(test_name: str, scenario: Callable[[th.TestNetwork, argparse.Namespace, th.Results], None],
             add_args: Callable[[argparse.ArgumentParser], None] | None = None) -> int:
    """The main() of an integration test; see the module docstring."""
    ap = argparse.ArgumentParser(description=test_name)
    ap.add_argument("--culvertd", required=True)
    ap.add_argument("--culvertctl", required=True)
    ap.add_argument("--keep-tmp", action="store_true",
                    help="keep the temp dir (config, logs) for debugging")
    if add_args:
        add_args(ap)
    args = ap.parse_args()
    args.culvertd = os.path.abspath(args.culvertd)
    args.culvertctl = os.path.abspath(args.culvertctl)

    th.require_root_or_skip(test_name)
    R = th.Results()
    prefix = None
    try:
        with th.TestNetwork(keep_tmp=args.keep_tmp) as net:
            prefix = net.prefix
            for b in (args.culvertd, args.culvertctl):
                R.check(f"binary exists: {b}", os.path.isfile(b) and os.access(b, os.X_OK),
                        fatal=True)
            try:
                scenario(net, args, R)
            except th.Fatal:
                pass
            except Exception:  # noqa: BLE001
                R.check("scenario raised", False, traceback.format_exc())
            finally:
                if R.failed:
                    for d in _instances:
                        d.dump_log()
    except th.Fatal:
        pass
    except Exception:  # noqa: BLE001 (setup/teardown of the hosts)
        R.check("test hosts", False, traceback.format_exc())
    if prefix:
        left = th.find_leftovers(prefix)
        if args.keep_tmp:
            left = [x for x in left if not x.startswith("tmp ")]
        R.check("cleanup: nothing of this run left", not left, str(left))
    return R.summary()
