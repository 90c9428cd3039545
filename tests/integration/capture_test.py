#!/usr/bin/python3
"""Capture end to end through culvertd: IPv4 and IPv6, bypass, per-pod stats,
enrollment refused when the capture port is taken, fail closed while culvertd
is down (also with an app listening on the capture port), kill -9 + restart
re-adopting the pinned BPF state, uninstall.

    /usr/bin/python3 tests/integration/capture_test.py \
        --culvertd build/agent/culvertd --culvertctl build/agent/culvertctl

Needs root (exit 77 = skip when not root, unless CULVERT_REQUIRE_PRIVILEGED=1).
Same hosts as walking_skeleton_test.py (DESIGN.md §8): pods on a private bridge,
never-routed VIPs 10.96.0.10 and fd00:96::10, culvertd in the root netns
capturing at a per-run cgroup.
"""

import argparse
import json
import os
import signal
import subprocess
import sys
import time
import traceback

sys.path.insert(0, os.path.dirname(os.path.abspath(__file__)))
import testhosts as th  # noqa: E402
import culvertd_harness as hs  # noqa: E402  (shared helpers)
import walking_skeleton_test as ws  # noqa: E402  (shared documents)

CLIENT_IP, SERVER_IP, BUSY_IP, SERVER_PORT = "10.244.1.1", "10.244.1.2", "10.244.1.3", 8080
VIP4, VIP6 = "10.96.0.10", "fd00:96::10"
CAPTURE_PORT = 15001

RESOURCES_V6 = """\
version_info: "1"
resources:
- "@type": type.googleapis.com/envoy.config.listener.v3.Listener
  name: vip6
  address: {{socket_address: {{address: "{vip6}", port_value: 80}}}}
  bind_to_port: false
  filter_chains:
  - filters:
    - name: envoy.filters.network.http_connection_manager
      typed_config:
        "@type": type.googleapis.com/envoy.extensions.filters.network.http_connection_manager.v3.HttpConnectionManager
        stat_prefix: vip6
        route_config:
          name: local6
          virtual_hosts:
          - name: all
            domains: ["*"]
            routes:
            - match: {{prefix: "/"}}
              route: {{cluster: backend}}
        http_filters:
        - name: envoy.filters.http.router
          typed_config: {{"@type": type.googleapis.com/envoy.extensions.filters.http.router.v3.Router}}
"""

# An app of the pod's own that binds the capture port (reports what it accepted).
APP_ON_CAPTURE_PORT = r"""
import socket, sys
s = socket.socket()
s.setsockopt(socket.SOL_SOCKET, socket.SO_REUSEADDR, 1)
s.bind(("127.0.0.1", int(sys.argv[1])))
s.listen(16)
print("listening", flush=True)
while True:
    c, a = s.accept()
    print("accepted", a, flush=True)
    c.close()
"""


class CaptureScenario:
    def __init__(self, net: th.TestNetwork, args, R: th.Results):
        self.net, self.args, self.R = net, args, R
        self.proc = None
        self.log = None

    # ------------------------------------------------------------ helpers
    def ctl(self, *argv: str):
        return self.net.run([self.args.culvertctl, "--config", self.boot, *argv], timeout=20)

    def curl(self, url: str, max_time: float = 5):
        return self.client.curl("-g", "-w", "\\ntime_total=%{time_total}\\n", url,
                                cgroup=self.cg, max_time=max_time)

    def ok_body(self, cp, path: str) -> bool:
        return cp.returncode == 0 and f"path={path} " in cp.stdout

    def stats(self) -> str:
        code, body = hs.http_get(f"http://127.0.0.1:{self.admin_port}/stats/prometheus")
        return body if code == 200 else ""

    def pod_metric(self, outcome: str) -> float:
        total = 0.0
        for line in self.stats().splitlines():
            if (line.startswith("culvert_capture_pod_connects_total{") and 'pod="client"' in line
                    and f'outcome="{outcome}"' in line):
                total += float(line.split()[-1])
        return total

    def start(self, name: str) -> float:
        self.log = os.path.join(self.net.tmpdir, f"culvertd-{name}.log")
        with open(self.log, "w") as logf:
            self.proc = self.net.spawn([self.args.culvertd, "--config", self.boot], stdout=logf, stderr=logf)
        t0 = time.monotonic()
        deadline = t0 + hs.READY_TIMEOUT
        while time.monotonic() < deadline:
            if self.proc.poll() is not None:
                self.R.check(f"{name}: culvertd ready", False, f"exited {self.proc.returncode}", fatal=True)
            try:
                if hs.http_get(f"http://127.0.0.1:{self.admin_port}/ready", timeout=1.0)[0] == 200:
                    return time.monotonic()
            except OSError:
                pass
            time.sleep(0.05)
        self.R.check(f"{name}: culvertd ready", False, "not ready in time", fatal=True)
        return 0.0

    def connect_errno(self, ip: str, port: int = 80) -> str:
        """connect() from the client pod (in the capture cgroup): "ok" or the errno name."""
        code = ("import errno, socket, sys\n"
                "fam = socket.AF_INET6 if ':' in sys.argv[1] else socket.AF_INET\n"
                "s = socket.socket(fam); s.settimeout(2)\n"
                "try:\n    s.connect((sys.argv[1], int(sys.argv[2]))); print('ok')\n"
                "except OSError as e:\n    print(errno.errorcode.get(e.errno, str(e)))\n")
        cp = self.client.run(["/usr/bin/python3", "-c", code, ip, str(port)], cgroup=self.cg, check=False,
                             timeout=10)
        return cp.stdout.strip() or cp.stderr.strip()

    def connect4_programs(self) -> int:
        cp = self.net.run(["bpftool", "-j", "cgroup", "show", self.cg.path])
        try:
            progs = json.loads(cp.stdout.strip() or "[]")
        except ValueError:
            return -1
        return sum(1 for p in progs if p.get("attach_type") in ("cgroup_inet4_connect", "connect4"))

    # ----------------------------------------------------------- scenario
    def run(self) -> None:
        R, net, a = self.R, self.net, self.args
        self.client = net.add_pod("client", CLIENT_IP)
        self.server = net.add_pod("server", SERVER_IP)
        self.busy = net.add_pod("busy", BUSY_IP)
        self.cg = net.make_cgroup()
        self.pin_root = net.assign_pin_root()
        try:
            net.assert_isolated()
        except th.HostSafetyError as e:
            R.check("test hosts isolated", False, str(e), fatal=True)
        net.start_echo_server(self.server, SERVER_PORT)

        tmp = net.tmpdir
        os.makedirs(os.path.join(tmp, "resources"))
        os.makedirs(os.path.join(tmp, "state"), mode=0o700)
        self.admin_port = hs.free_port()
        self.boot = os.path.join(tmp, "bootstrap.yaml")
        with open(self.boot, "w") as f:
            f.write(hs.BOOTSTRAP.format(admin_port=self.admin_port, tmp=tmp, capture_port=CAPTURE_PORT,
                                        cgroup=self.cg.path, pin_root=self.pin_root, workers=2,
                                        resources=os.path.join(tmp, "resources"), fail_mode="open",
                                        log_level="debug"))
        with open(os.path.join(tmp, "resources", "v4.yaml"), "w") as f:
            f.write(ws.RESOURCES.format(vip=VIP4, server_ip=SERVER_IP, server_port=SERVER_PORT))
        with open(os.path.join(tmp, "resources", "v6.yaml"), "w") as f:
            f.write(RESOURCES_V6.format(vip6=VIP6))

        self.start("first")
        cp = self.ctl("enroll", "--netns", self.client.netns_path, "--namespace", "team-a", "--name", "client",
                      "--container-id", "c-client", "--ip", CLIENT_IP, "--fail-mode", "closed")
        R.check("enroll client (fail mode closed)", cp.returncode == 0, hs.describe(cp), fatal=True)

        cp = self.client.run(["/bin/cat", "/proc/sys/net/ipv4/tcp_migrate_req"], check=False)
        R.check("enrollment set tcp_migrate_req=1 in the pod", cp.stdout.strip() == "1", hs.describe(cp))

        # --- IPv4 and IPv6 through capture
        cp = self.curl(f"http://{VIP4}/v4")
        R.check("IPv4 VIP captured and proxied", self.ok_body(cp, "/v4"), hs.describe(cp))
        cp = self.curl(f"http://[{VIP6}]/v6")
        R.check("IPv6 VIP captured ([::1] listener group) and proxied", self.ok_body(cp, "/v6"), hs.describe(cp))
        cp = self.ctl("pods")
        R.check("culvertctl pods shows the capture state", "on (IPv4+IPv6)" in cp.stdout, hs.describe(cp))
        captured = self.pod_metric("captured")
        R.check("per-pod captured counter in /stats/prometheus", captured >= 2, f"captured={captured}")
        R.check("per-tenant counter in /stats/prometheus",
                'culvert_capture_tenant_connects_total{tenant="team-a",outcome="captured"}' in self.stats())

        # --- global bypass
        cp = self.ctl("capture", "off")
        R.check("culvertctl capture off", cp.returncode == 0 and "capture off" in cp.stdout, hs.describe(cp))
        cp = self.curl(f"http://{VIP4}/bypassed", max_time=2)
        R.check("bypass: VIP not captured (curl exit 7)", cp.returncode == hs.CURL_CONNECT_FAILED, hs.describe(cp))
        cp = self.ctl("pods")
        R.check("culvertctl pods says bypassed", "bypassed" in cp.stdout, hs.describe(cp))
        cp = self.ctl("capture", "on")
        R.check("culvertctl capture on", cp.returncode == 0 and "capture on" in cp.stdout, hs.describe(cp))
        cp = self.curl(f"http://{VIP4}/again")
        R.check("capture on again: VIP captured", self.ok_body(cp, "/again"), hs.describe(cp))

        # --- enrollment refused when an app holds the capture port in the pod
        app = self.busy.spawn(["/usr/bin/python3", "-c", APP_ON_CAPTURE_PORT, str(CAPTURE_PORT)],
                              stdout=subprocess.PIPE, stderr=subprocess.DEVNULL, text=True)
        line = app.stdout.readline()
        R.check("app listens on the capture port in pod busy", "listening" in line, line)
        cp = self.ctl("enroll", "--netns", self.busy.netns_path, "--namespace", "team-b", "--name", "busy",
                      "--container-id", "c-busy", "--ip", BUSY_IP)
        R.check("enroll refused: capture port taken, named clearly",
                cp.returncode == 1 and f"capture port {CAPTURE_PORT} on 127.0.0.1 is taken in the pod" in cp.stderr,
                hs.describe(cp))
        net.stop(app, signal.SIGKILL)

        # --- kill -9: fail closed at once, also with an app on the capture port
        pins_before = th._listdir(os.path.join(self.pin_root, "v2"))
        t_kill = time.monotonic()
        net.stop(self.proc, signal.SIGKILL)
        t0 = time.monotonic()
        err = self.connect_errno(VIP4)
        took = time.monotonic() - t0
        R.check("culvertd down + fail closed: connect() refused at once", err == "ECONNREFUSED" and took < 1.0,
                f"{err} after {took:.3f}s (includes starting python)")
        app_log = os.path.join(net.tmpdir, "app-on-capture-port.log")
        with open(app_log, "w") as logf:
            app = self.client.spawn(["/usr/bin/python3", "-u", "-c", APP_ON_CAPTURE_PORT, str(CAPTURE_PORT)],
                                    stdout=logf, stderr=subprocess.DEVNULL)
        for _ in range(50):
            if "listening" in hs.tail(app_log):
                break
            time.sleep(0.05)
        R.check("an app listens on the capture port in the client pod", "listening" in hs.tail(app_log))
        err = self.connect_errno(VIP4)
        R.check("app on the capture port while culvertd is down: still ECONNREFUSED", err == "ECONNREFUSED", err)
        net.stop(app, signal.SIGKILL)
        R.check("the app on the capture port received nothing", "accepted" not in hs.tail(app_log), hs.tail(app_log))

        # --- restart: pins re-adopted, one program per hook, enrollment kept in BPF
        t_ready = self.start("restart")
        R.check("restart: pinned BPF state re-adopted", "re-adopted pinned BPF maps" in hs.tail(self.log),
                hs.tail(self.log, 20))
        R.check("restart: exactly one culvert program on connect4", self.connect4_programs() == 1,
                f"{self.connect4_programs()} programs")
        R.check("restart: same pins", th._listdir(os.path.join(self.pin_root, "v2")) == pins_before)
        # Re-opening the pod's listener: what the registry of issue #7 does at start.
        cp = self.ctl("enroll", "--netns", self.client.netns_path, "--namespace", "team-a", "--name", "client",
                      "--container-id", "c-client", "--ip", CLIENT_IP, "--fail-mode", "closed")
        R.check("restart: re-enroll client", cp.returncode == 0, hs.describe(cp))
        cp = self.curl(f"http://{VIP4}/after")
        t_ok = time.monotonic()
        R.check("restart: captured connect works", self.ok_body(cp, "/after"), hs.describe(cp))
        print(f"MEASURE fail-mode window kill -9 -> first captured success: {t_ok - t_kill:.3f}s "
              f"(restart to /ready {t_ready - t_kill:.3f}s, /ready -> success {t_ok - t_ready:.3f}s)", flush=True)
        R.check("restart: first captured connect within 1 s of /ready", t_ok - t_ready < 1.0,
                f"{t_ok - t_ready:.3f}s")

        # --- stop keeps pins; uninstall removes them and capture stops
        net.stop(self.proc, signal.SIGTERM)
        R.check("stop keeps the pins", os.path.exists(os.path.join(self.pin_root, "v2", "cv_enrolled")))
        cp = net.run([a.culvertd, "uninstall", "--config", self.boot], timeout=20)
        R.check("culvertd uninstall", cp.returncode == 0 and "detached 5 links" in cp.stdout, hs.describe(cp))
        n = self.connect4_programs()
        R.check("uninstall: no program left on the cgroup", n == 0,
                f"{n}: {net.run(['bpftool', 'cgroup', 'show', self.cg.path]).stdout}")
        err = self.connect_errno(VIP4)
        R.check("uninstall: VIP no longer captured (ENETUNREACH, not refused)", err == "ENETUNREACH", err)

    def dump_logs(self) -> None:
        for name in sorted(os.listdir(self.net.tmpdir)):
            if name.startswith("culvertd-") and name.endswith(".log"):
                print(f"----- {name} -----")
                print(hs.tail(os.path.join(self.net.tmpdir, name), 100), end="", flush=True)


def main() -> int:
    ap = argparse.ArgumentParser(description=__doc__.split("\n")[0])
    ap.add_argument("--culvertd", required=True)
    ap.add_argument("--culvertctl", required=True)
    ap.add_argument("--keep-tmp", action="store_true")
    args = ap.parse_args()
    args.culvertd = os.path.abspath(args.culvertd)
    args.culvertctl = os.path.abspath(args.culvertctl)

    th.require_root_or_skip("integration_capture")
    R = th.Results()
    prefix = None
    try:
        with th.TestNetwork(keep_tmp=args.keep_tmp) as net:
            prefix = net.prefix
            sc = CaptureScenario(net, args, R)
            try:
                sc.run()
            except th.Fatal:
                pass
            except Exception:  # noqa: BLE001
                R.check("scenario raised", False, traceback.format_exc())
            finally:
                if R.failed:
                    sc.dump_logs()
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
