#!/usr/bin/python3
"""Capture end to end through culvertd: IPv4 and IPv6, bypass, per-pod stats,
enrollment refused when the capture port is taken, fail closed while culvertd
is down (also with an app listening on the capture port), kill -9 + restart with a pod
connecting in a loop (the registry restores the enrollment; the window is measured),
re-adopting the pinned BPF state, uninstall.

    /usr/bin/python3 tests/integration/capture_test.py \
        --culvertd build/agent/culvertd --culvertctl build/agent/culvertctl

Needs root (exit 77 = skip when not root, unless CULVERT_REQUIRE_PRIVILEGED=1).
Same hosts as walking_skeleton_test.py (DESIGN.md §8): pods on a private bridge,
never-routed VIPs 10.96.0.10 and fd00:96::10, culvertd in the root netns
capturing at a per-run cgroup.
"""

import json
import os
import signal
import subprocess
import sys
import time

sys.path.insert(0, os.path.dirname(os.path.abspath(__file__)))
import testhosts as th  # noqa: E402
import walking_skeleton_test as ws  # noqa: E402  (its RESOURCES document)
from culvertd_harness import BPF_LAYOUT_DIR, BPF_LINKS, CURL_CONNECT_FAILED, Culvertd, describe, run_test, tail  # noqa: E402

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


# A pod app that keeps making requests to the VIP (one new connection each, every
# 10 ms) and logs "<wall time> ok|<errno name>": the kill -9 window as an app sees it.
CONNECT_LOOP = r"""
import errno, http.client, sys, time
while True:
    t = time.time()
    c = http.client.HTTPConnection(sys.argv[1], 80, timeout=1)
    try:
        c.request("GET", "/loop"); r = c.getresponse(); r.read()
        out = "ok" if r.status == 200 else f"http{r.status}"
    except OSError as e:
        out = errno.errorcode.get(e.errno, type(e).__name__)
    except http.client.HTTPException as e:  # cut mid-response by the kill
        out = type(e).__name__
    finally:
        c.close()
    print(f"{t:.3f} {out}", flush=True)
    time.sleep(0.01)
"""


QUEUED_THEN_CLOSED = r"""
import socket, sys
s = socket.create_connection((sys.argv[1], 80), timeout=2)
s.sendall(b"GET /queued HTTP/1.1\r\nHost: x\r\n\r\n")
s.close()
print("sent")
"""


class CaptureScenario:
    def __init__(self, net: th.TestNetwork, args, R: th.Results):
        self.net, self.args, self.R = net, args, R

    # ------------------------------------------------------------ helpers
    def curl(self, url: str, max_time: float = 5):
        return self.client.curl("-g", "-w", "\\ntime_total=%{time_total}\\n", url,
                                cgroup=self.cg, max_time=max_time)

    def ok_body(self, cp, path: str) -> bool:
        return cp.returncode == 0 and f"path={path} " in cp.stdout

    def pod_metric(self, outcome: str) -> float:
        return self.d.metric("culvert_capture_pod_connects_total",
                             {"pod": "client", "outcome": outcome}) or 0.0

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

    def orig_dst_records(self) -> int:
        cp = self.net.run(["bpftool", "-j", "map", "dump", "pinned",
                           os.path.join(self.pin_root, BPF_LAYOUT_DIR, "cv_orig_dst")])
        try:
            return len(json.loads(cp.stdout.strip() or "[]"))
        except ValueError:
            return -1

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
        self.d = d = Culvertd(net, a, R, capture_port=CAPTURE_PORT)
        self.cg, self.pin_root = d.cgroup, d.pin_root
        try:
            net.assert_isolated()
        except th.HostSafetyError as e:
            R.check("test hosts isolated", False, str(e), fatal=True)
        net.start_echo_server(self.server, SERVER_PORT)

        d.start({"v4.yaml": ws.RESOURCES.format(vip=VIP4, server_ip=SERVER_IP, server_port=SERVER_PORT),
                 "v6.yaml": RESOURCES_V6.format(vip6=VIP6)})
        cp = d.ctl("enroll", "--netns", self.client.netns_path, "--namespace", "team-a", "--name", "client",
                      "--container-id", "c-client", "--ip", CLIENT_IP, "--fail-mode", "closed")
        R.check("enroll client (fail mode closed)", cp.returncode == 0, describe(cp), fatal=True)

        cp = self.client.run(["/bin/cat", "/proc/sys/net/ipv4/tcp_migrate_req"], check=False)
        R.check("enrollment set tcp_migrate_req=1 in the pod", cp.stdout.strip() == "1", describe(cp))
        cp = self.client.run(["ss", "-Hltn", f"sport = :{CAPTURE_PORT}"], check=False)
        local = sorted(l.split()[3] for l in cp.stdout.splitlines() if l.strip())
        R.check("the pod's listener is one SO_REUSEPORT socket per worker and family (2 workers)",
                local == [f"127.0.0.1:{CAPTURE_PORT}"] * 2 + [f"[::1]:{CAPTURE_PORT}"] * 2, describe(cp))

        # --- one pod's connections spread over every worker (kernel reuseport hash)
        accepted = {w: d.metric("culvert_worker_downstream_cx_total", {"worker": w}) or 0 for w in ("0", "1")}
        cp = self.client.curl("-H", "Connection: close", *[f"http://{VIP4}/spread{i}" for i in range(24)],
                              cgroup=self.cg, timeout=30)
        R.check("24 requests on 24 connections from one pod", cp.returncode == 0 and cp.stdout.count("path=/spread") == 24,
                describe(cp)[-600:])
        gained = {w: (d.metric("culvert_worker_downstream_cx_total", {"worker": w}) or 0) - accepted[w] for w in accepted}
        R.check("both workers accepted some of them", sum(gained.values()) == 24 and min(gained.values()) > 0,
                str(gained))

        # --- IPv4 and IPv6 through capture
        cp = self.curl(f"http://{VIP4}/v4")
        R.check("IPv4 VIP captured and proxied", self.ok_body(cp, "/v4"), describe(cp))
        cp = self.curl(f"http://[{VIP6}]/v6")
        R.check("IPv6 VIP captured ([::1] listener group) and proxied", self.ok_body(cp, "/v6"), describe(cp))
        cp = d.ctl("pods")
        R.check("culvertctl pods shows the capture state", "on (IPv4+IPv6)" in cp.stdout, describe(cp))
        captured = self.pod_metric("captured")
        R.check("per-pod captured counter in /stats/prometheus", captured >= 2, f"captured={captured}")
        R.check("per-tenant counter in /stats/prometheus",
                'culvert_capture_tenant_connects_total{tenant="team-a",outcome="captured"}' in d.stats_text())

        # --- a pod that leaves keeps its counts in its tenant's series (a counter never drops)
        tenant_captured = {"tenant": "team-a", "outcome": "captured"}
        cp = d.ctl("enroll", "--netns", self.busy.netns_path, "--namespace", "team-a", "--name", "busy",
                   "--container-id", "c-busy-a", "--ip", BUSY_IP)
        R.check("enroll busy in team-a", cp.returncode == 0, describe(cp), fatal=True)
        cp = self.busy.curl("-g", f"http://{VIP4}/busy", cgroup=self.cg)
        R.check("busy's VIP captured", self.ok_body(cp, "/busy"), describe(cp))
        before = d.metric("culvert_capture_tenant_connects_total", tenant_captured)
        cp = d.ctl("unenroll", "--container-id", "c-busy-a")
        R.check("unenroll busy", cp.returncode == 0, describe(cp))
        after = d.metric("culvert_capture_tenant_connects_total", tenant_captured)
        R.check("team-a's captured count stays after busy leaves", after == before and after >= 3,
                f"before {before}, after {after}")
        R.check("busy's own series is gone", 'pod="busy"' not in d.stats_text())

        # --- global bypass
        cp = d.ctl("capture", "off")
        R.check("culvertctl capture off", cp.returncode == 0 and "capture off" in cp.stdout, describe(cp))
        cp = self.curl(f"http://{VIP4}/bypassed", max_time=2)
        R.check("bypass: VIP not captured (curl exit 7)", cp.returncode == CURL_CONNECT_FAILED, describe(cp))
        cp = d.ctl("pods")
        R.check("culvertctl pods says bypassed", "bypassed" in cp.stdout, describe(cp))
        cp = d.ctl("capture", "on")
        R.check("culvertctl capture on", cp.returncode == 0 and "capture on" in cp.stdout, describe(cp))
        cp = self.curl(f"http://{VIP4}/again")
        R.check("capture on again: VIP captured", self.ok_body(cp, "/again"), describe(cp))

        # --- enrollment refused when an app holds the capture port in the pod
        app = self.busy.spawn(["/usr/bin/python3", "-c", APP_ON_CAPTURE_PORT, str(CAPTURE_PORT)],
                              stdout=subprocess.PIPE, stderr=subprocess.DEVNULL, text=True)
        line = app.stdout.readline()
        R.check("app listens on the capture port in pod busy", "listening" in line, line)
        cp = d.ctl("enroll", "--netns", self.busy.netns_path, "--namespace", "team-b", "--name", "busy",
                      "--container-id", "c-busy", "--ip", BUSY_IP)
        R.check("enroll refused: capture port taken, named clearly",
                cp.returncode == 1 and f"capture port {CAPTURE_PORT} on 127.0.0.1 is taken in the pod" in cp.stderr,
                describe(cp))
        net.stop(app, signal.SIGKILL)

        # --- kill -9: fail closed at once, also with an app on the capture port
        pins_before = th._listdir(os.path.join(self.pin_root, BPF_LAYOUT_DIR))
        loop_log = os.path.join(net.tmpdir, "connect-loop.log")
        with open(loop_log, "w") as logf:
            loop = self.client.spawn(["/usr/bin/python3", "-u", "-c", CONNECT_LOOP, VIP4], cgroup=self.cg,
                                     stdout=logf, stderr=subprocess.STDOUT)
        for _ in range(100):  # until the loop has been served (python starts slowly on a busy host)
            if tail(loop_log).count(" ok") >= 10:
                break
            time.sleep(0.05)
        # A connection the old process will never accept: queued while culvertd is
        # stopped, closed gracefully by the client, then reset by the kill below.
        t_stop_wall = time.time()
        os.kill(d.proc.pid, signal.SIGSTOP)
        cp = self.client.run(["/usr/bin/python3", "-c", QUEUED_THEN_CLOSED, VIP4], cgroup=self.cg, check=False,
                             timeout=10)
        R.check("a request queued on the stopped culvertd, closed by the client", cp.stdout.strip() == "sent",
                describe(cp))
        t_kill = time.monotonic()
        t_kill_wall = time.time()
        d.kill()
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
            if "listening" in tail(app_log):
                break
            time.sleep(0.05)
        R.check("an app listens on the capture port in the client pod", "listening" in tail(app_log))
        err = self.connect_errno(VIP4)
        R.check("app on the capture port while culvertd is down: still ECONNREFUSED", err == "ECONNREFUSED", err)
        net.stop(app, signal.SIGKILL)
        R.check("the app on the capture port received nothing", "accepted" not in tail(app_log), tail(app_log))

        # --- restart: pins re-adopted, one program per hook, enrollment kept in BPF
        d.start(validate=False)
        t_ready = time.monotonic()
        t_ready_wall = time.time()
        R.check("restart: pinned BPF state re-adopted", "re-adopted pinned BPF maps" in tail(d.log_path),
                tail(d.log_path, 20))
        R.check("restart: exactly one culvert program on connect4", self.connect4_programs() == 1,
                f"{self.connect4_programs()} programs")
        R.check("restart: same pins", th._listdir(os.path.join(self.pin_root, BPF_LAYOUT_DIR)) == pins_before)
        # No re-enrollment: the registry (state_dir) re-opens the pod's listener at start.
        cp = d.ctl("pods")
        R.check("restart: the registry restored the client's enrollment",
                "client" in cp.stdout and "on (IPv4+IPv6)" in cp.stdout, describe(cp))
        cp = self.curl(f"http://{VIP4}/after")
        t_ok = time.monotonic()
        R.check("restart: captured connect works", self.ok_body(cp, "/after"), describe(cp))
        print(f"MEASURE fail-mode window kill -9 -> first captured success: {t_ok - t_kill:.3f}s "
              f"(restart to /ready {t_ready - t_kill:.3f}s, /ready -> success {t_ok - t_ready:.3f}s)", flush=True)
        R.check("restart: first captured connect within 1 s of /ready", t_ok - t_ready < 1.0,
                f"{t_ok - t_ready:.3f}s")
        time.sleep(0.3)
        net.stop(loop, signal.SIGKILL)
        samples = [line.split() for line in tail(loop_log, 100000).splitlines() if len(line.split()) == 2]
        samples = [(float(t), out) for t, out in samples if t.replace(".", "", 1).isdigit()]
        before = [out for t, out in samples if t < t_stop_wall - 0.05]
        # A request in flight at the kill is cut; every later one is refused at once.
        during = [out for t, out in samples if t_kill_wall + 0.05 < t < t_ready_wall - 0.05]
        after_ok = [t for t, out in samples if t >= t_ready_wall and out == "ok"]
        R.check("connect loop: requests succeeded before the kill", before and all(o == "ok" for o in before),
                str(sorted(set(before))))
        # Until the restarted culvertd re-opens the pod's listener (from its registry, a
        # little before /ready) every connect is refused at once: no hang, no reset.
        R.check("connect loop: while down, connects refused at once (fail closed), then served",
                "ECONNREFUSED" in during and set(during) <= {"ECONNREFUSED", "ok"}
                and ("ok" not in during or "ECONNREFUSED" not in during[during.index("ok"):]),
                str(during))
        R.check("connect loop: first success within 1 s of /ready",
                bool(after_ok) and after_ok[0] - t_ready_wall < 1.0,
                f"{(after_ok[0] - t_ready_wall) if after_ok else None}")
        time.sleep(1.0)
        records = self.orig_dst_records()
        R.check("1 s after every connection closed, no original-destination record is left "
                "(also of the connection queued on the killed process)", records == 0, f"{records} records")
        if after_ok:
            last_before = max((t for t, out in samples if t < t_kill_wall and out == "ok"), default=t_kill_wall)
            print(f"MEASURE connect loop: no successful request for {after_ok[0] - last_before:.3f}s across "
                  f"kill -9 + restart ({len(during)} refused connects, first success "
                  f"{after_ok[0] - t_ready_wall:.3f}s after /ready)", flush=True)

        # --- stop keeps pins; uninstall removes them and capture stops
        d.stop()
        R.check("stop keeps the pins", os.path.exists(os.path.join(self.pin_root, BPF_LAYOUT_DIR, "cv_enrolled")))
        cp = net.run([a.culvertd, "uninstall", "--config", d.bootstrap], timeout=20)
        R.check("culvertd uninstall", cp.returncode == 0 and f"detached {BPF_LINKS} links" in cp.stdout, describe(cp))
        n = self.connect4_programs()
        R.check("uninstall: the pins and the registry are gone",
                not os.path.exists(os.path.join(self.pin_root, BPF_LAYOUT_DIR))
                and not os.listdir(os.path.join(d.tmp, "state")), describe(cp))
        R.check("uninstall: no program left on the cgroup", n == 0,
                f"{n}: {net.run(['bpftool', 'cgroup', 'show', self.cg.path]).stdout}")
        err = self.connect_errno(VIP4)
        R.check("uninstall: VIP no longer captured (ENETUNREACH, not refused)", err == "ENETUNREACH", err)



def scenario(net: th.TestNetwork, args, R: th.Results) -> None:
    CaptureScenario(net, args, R).run()


if __name__ == "__main__":
    sys.exit(run_test("integration_capture", scenario))
