#!/usr/bin/python3
"""Walking-skeleton end-to-end test: capture -> proxy -> upstream.

    /usr/bin/python3 tests/integration/walking_skeleton_test.py \
        --culvertd build/agent/culvertd --culvertctl build/agent/culvertctl

Needs root (exit 77 = skip when not root, unless CULVERT_REQUIRE_PRIVILEGED=1).
Pods "client" (10.244.1.1) and "server" (10.244.1.2) on a private bridge; an
echo server on 10.244.1.2:8080; culvertd in the root netns capturing at a
per-run cgroup; the client curls the never-routed VIP 10.96.0.10:80 from that
cgroup and must reach the server through culvert. Prints PASS/FAIL lines and
"N passed, N failed"; exits non-zero on any failure.
"""

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

sys.path.insert(0, os.path.dirname(os.path.abspath(__file__)))
import testhosts as th  # noqa: E402

CLIENT_IP, SERVER_IP, SERVER_PORT = "10.244.1.1", "10.244.1.2", 8080
VIP = "10.96.0.10"
CAPTURE_PORT = 15001
RQ_METRIC = "culvert_http_downstream_rq_total"
READY_TIMEOUT = 15.0
STOP_TIMEOUT = 5.0
CURL_CONNECT_FAILED = 7

BOOTSTRAP = """\
node:
  id: test
admin:
  address: "127.0.0.1:{admin_port}"
  socket: "{tmp}/admin.sock"
workers: 2
resources:
  path: "{tmp}/resources"
capture:
  port: {capture_port}
  cgroup: "{cgroup}"
  fail_mode: open
bpf:
  pin_root: "{pin_root}"
enrollment:
  socket: "{tmp}/cni.sock"
state_dir: "{tmp}/state"
log:
  level: debug
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
    - name: envoy.filters.network.http_connection_manager
      typed_config:
        "@type": type.googleapis.com/envoy.extensions.filters.network.http_connection_manager.v3.HttpConnectionManager
        stat_prefix: vip
        route_config:
          name: local
          virtual_hosts:
          - name: all
            domains: ["*"]
            routes:
            - match: {{prefix: "/"}}
              route: {{cluster: backend}}
        http_filters:
        - name: envoy.filters.http.router
          typed_config: {{"@type": type.googleapis.com/envoy.extensions.filters.http.router.v3.Router}}
- "@type": type.googleapis.com/envoy.config.cluster.v3.Cluster
  name: backend
  type: STATIC
  connect_timeout: 1s
  load_assignment:
    cluster_name: backend
    endpoints:
    - lb_endpoints:
      - endpoint: {{address: {{socket_address: {{address: {server_ip}, port_value: {server_port}}}}}}}
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


def sum_metric(text: str, name: str) -> float | None:
    """Sum every sample of `name` (any labels) in Prometheus text format."""
    total, seen = 0.0, False
    for line in text.splitlines():
        if line.startswith("#"):
            continue
        m = re.match(r"^([a-zA-Z_:][a-zA-Z0-9_:]*)(\{[^}]*\})?\s+(\S+)", line)
        if m and m.group(1) == name:
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


class Skeleton:
    def __init__(self, net: th.TestNetwork, args, R: th.Results):
        self.net, self.args, self.R = net, args, R
        self.culvertd_proc = None
        self.culvertd_log = None
        self.echo = None

    # ------------------------------------------------------------ helpers
    def ctl(self, *argv: str):
        return self.net.run([self.args.culvertctl, "--config", self.boot, *argv],
                            timeout=20)

    def stats(self) -> tuple[float | None, str]:
        try:
            code, body = http_get(f"http://127.0.0.1:{self.admin_port}/stats/prometheus")
        except OSError as e:
            return None, f"<{e}>"
        if code != 200:
            return None, f"HTTP {code}: {body[:300]}"
        return sum_metric(body, RQ_METRIC), body

    def wait_counter(self, want: float, timeout: float = 3.0) -> float | None:
        """Stats may be merged from workers lazily: poll until >= want."""
        deadline = time.monotonic() + timeout
        while True:
            v, _ = self.stats()
            if (v is not None and v >= want) or time.monotonic() > deadline:
                return v
            time.sleep(0.1)

    def vip_curl(self, path: str):
        return self.client.curl(f"http://{VIP}{path}", cgroup=self.cg)

    def expect_body(self, name: str, cp, path: str) -> bool:
        want = f"peer={CLIENT_IP} path={path} "
        return self.R.check(name, cp.returncode == 0 and want in cp.stdout,
                            f"want {want!r}; {describe(cp)}")

    # ----------------------------------------------------------- scenario
    def run(self) -> None:
        R, net, a = self.R, self.net, self.args
        for b in (a.culvertd, a.culvertctl):
            R.check(f"binary exists: {b}", os.path.isfile(b) and os.access(b, os.X_OK),
                    fatal=True)

        # --- hosts
        self.client = net.add_pod("client", CLIENT_IP)
        self.server = net.add_pod("server", SERVER_IP)
        self.cg = net.make_cgroup()
        self.pin_root = net.assign_pin_root()
        try:
            net.assert_isolated()
            R.check("test hosts isolated (no default route, ip_forward unchanged)", True)
        except th.HostSafetyError as e:
            R.check("test hosts isolated", False, str(e), fatal=True)
        self.echo = net.start_echo_server(self.server, SERVER_PORT)

        # --- baseline, before culvertd exists
        cp = self.client.curl(f"http://{SERVER_IP}:{SERVER_PORT}/baseline",
                              cgroup=self.cg)
        self.expect_body("baseline: direct curl reaches the server", cp, "/baseline")
        cp = self.vip_curl("/hello")
        R.check("baseline: VIP is not routed (curl exit 7)",
                cp.returncode == CURL_CONNECT_FAILED, describe(cp), fatal=True)

        # --- config
        tmp = net.tmpdir
        os.makedirs(os.path.join(tmp, "resources"))
        os.makedirs(os.path.join(tmp, "state"), mode=0o700)
        self.admin_port = free_port()
        self.boot = os.path.join(tmp, "bootstrap.yaml")
        with open(self.boot, "w") as f:
            f.write(BOOTSTRAP.format(admin_port=self.admin_port, tmp=tmp,
                                     capture_port=CAPTURE_PORT, cgroup=self.cg.path,
                                     pin_root=self.pin_root))
        with open(os.path.join(tmp, "resources", "skeleton.yaml"), "w") as f:
            f.write(RESOURCES.format(vip=VIP, server_ip=SERVER_IP,
                                     server_port=SERVER_PORT))

        cp = net.run([a.culvertd, "--validate", "--config", self.boot], timeout=20)
        R.check("culvertd --validate exits 0", cp.returncode == 0, describe(cp),
                fatal=True)

        # --- start culvertd: root netns, root cgroup (not the test cgroup)
        self.culvertd_log = os.path.join(tmp, "culvertd.log")
        with open(self.culvertd_log, "w") as logf:
            self.culvertd_proc = net.spawn([a.culvertd, "--config", self.boot],
                                           stdout=logf, stderr=logf)
        self.wait_ready()

        cp = self.vip_curl("/hello")
        R.check("before enroll: VIP not captured (curl exit 7)",
                cp.returncode == CURL_CONNECT_FAILED, describe(cp))

        # --- enroll
        cp = self.ctl("enroll", "--netns", self.client.netns_path,
                      "--namespace", "default", "--name", "client",
                      "--ip", CLIENT_IP)
        R.check("culvertctl enroll exits 0", cp.returncode == 0, describe(cp),
                fatal=True)

        before, body = self.stats()
        R.check("admin /stats/prometheus answers", not body.startswith("<")
                and not body.startswith("HTTP "), body[:300])
        before = before or 0.0

        # --- captured requests
        nreq = 0
        for i in range(3):
            cp = self.vip_curl("/hello")
            nreq += 1
            self.expect_body(f"VIP curl #{i + 1} proxied to the server", cp, "/hello")
        cp = self.client.curl("-w", r"\nNUM_CONNECTS=%{num_connects}\n",
                              f"http://{VIP}/ka1", f"http://{VIP}/ka2",
                              cgroup=self.cg)
        nreq += 2
        self.expect_body("keep-alive: first of two requests", cp, "/ka1")
        self.expect_body("keep-alive: second of two requests", cp, "/ka2")
        conns = [int(x) for x in re.findall(r"NUM_CONNECTS=(\d+)", cp.stdout)]
        R.check("keep-alive: both requests on one downstream connection",
                conns == [1, 0], f"num_connects={conns}; {describe(cp)}")

        after = self.wait_counter(before + nreq)
        R.check(f"{RQ_METRIC} rose by {nreq}",
                after is not None and after - before == nreq,
                f"before={before} after={after}"
                + ("" if after is not None else f"; metrics: {self.metric_names()}"))

        # --- direct traffic is not captured
        cp = self.client.curl(f"http://{SERVER_IP}:{SERVER_PORT}/direct",
                              cgroup=self.cg)
        self.expect_body("direct curl reaches the server", cp, "/direct")
        time.sleep(1.0)
        still, _ = self.stats()
        R.check(f"direct curl does not move {RQ_METRIC}", still == after,
                f"before={after} after={still}")

        # --- unenroll
        cp = self.ctl("unenroll", "--netns", self.client.netns_path)
        R.check("culvertctl unenroll exits 0", cp.returncode == 0, describe(cp))
        cp = self.vip_curl("/hello")
        R.check("after unenroll: VIP not captured (curl exit 7)",
                cp.returncode == CURL_CONNECT_FAILED, describe(cp))

        # --- stop: pins survive (restart safety); uninstall removes them
        self.stop_culvertd()
        R.check("pins survive a stop",
                os.path.exists(os.path.join(self.pin_root, "v2", "cv_enrolled")),
                f"{self.pin_root}: {th._listdir(self.pin_root)}")
        cp = net.run([a.culvertd, "uninstall", "--config", self.boot], timeout=20)
        R.check("culvertd uninstall exits 0", cp.returncode == 0, describe(cp))
        R.check("pin root gone or empty after uninstall",
                not os.path.exists(self.pin_root) or not os.listdir(self.pin_root),
                f"{self.pin_root}: {th._listdir(self.pin_root)}")

    def wait_ready(self) -> None:
        url = f"http://127.0.0.1:{self.admin_port}/ready"
        deadline = time.monotonic() + READY_TIMEOUT
        last = ""
        while time.monotonic() < deadline:
            rc = self.culvertd_proc.poll()
            if rc is not None:
                self.R.check("culvertd ready", False,
                             f"culvertd exited with {rc} before /ready", fatal=True)
            try:
                code, body = http_get(url, timeout=1.0)
                if code == 200:
                    self.R.check("culvertd /ready returns 200", True)
                    return
                last = f"HTTP {code}: {body[:200]}"
            except OSError as e:
                last = str(e)
            time.sleep(0.1)
        self.R.check("culvertd /ready returns 200", False,
                     f"not ready within {READY_TIMEOUT}s: {last}", fatal=True)

    def stop_culvertd(self) -> None:
        p = self.culvertd_proc
        p.send_signal(signal.SIGTERM)
        t0 = time.monotonic()
        try:
            rc = p.wait(timeout=STOP_TIMEOUT)
        except subprocess.TimeoutExpired:
            rc = None
        self.R.check(f"culvertd exits 0 within {STOP_TIMEOUT:.0f}s of SIGTERM",
                     rc == 0, f"rc={rc} after {time.monotonic() - t0:.1f}s")
        self.net.stop(p, signal.SIGKILL)

    def metric_names(self) -> str:
        _, body = self.stats()
        names = sorted({l.split("{")[0].split()[0] for l in body.splitlines()
                        if l and not l.startswith("#")})
        return ", ".join(names[:40])

    def dump_logs(self) -> None:
        if self.culvertd_log:
            print(f"----- culvertd log ({self.culvertd_log}, last 200 lines) -----")
            print(tail(self.culvertd_log), end="")
            print("----- end culvertd log -----", flush=True)
        if self.echo is not None and getattr(self.echo, "cvt_log", None):
            print("----- echo server log -----")
            print(tail(self.echo.cvt_log, 50), end="")
            print("----- end echo server log -----", flush=True)


def main() -> int:
    ap = argparse.ArgumentParser(description=__doc__.split("\n")[0])
    ap.add_argument("--culvertd", required=True)
    ap.add_argument("--culvertctl", required=True)
    ap.add_argument("--keep-tmp", action="store_true",
                    help="keep the temp dir (config, logs) for debugging")
    args = ap.parse_args()
    args.culvertd = os.path.abspath(args.culvertd)
    args.culvertctl = os.path.abspath(args.culvertctl)

    th.require_root_or_skip("integration_walking_skeleton")
    R = th.Results()
    prefix = None
    try:
        with th.TestNetwork(keep_tmp=args.keep_tmp) as net:
            prefix = net.prefix
            sk = Skeleton(net, args, R)
            try:
                sk.run()
            except th.Fatal:
                pass
            except Exception:  # noqa: BLE001
                R.check("scenario raised", False, traceback.format_exc())
            finally:
                if R.failed:
                    sk.dump_logs()
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


if __name__ == "__main__":
    sys.exit(main())
