#!/usr/bin/python3
"""culvertd speaks systemd's notification protocol (Type=notify in culvertd.service).

    sd_notify_daemon_test.py --culvertd build/agent/culvertd

culvertd runs as systemd would start it: NOTIFY_SOCKET names a datagram socket this
test listens on, WATCHDOG_USEC asks for keep-alives. Asserted: the first message is
READY=1, sent only when /ready answers 200; WATCHDOG=1 follows at about half the
watchdog interval; SIGTERM yields STOPPING=1 and a clean exit. Capture attaches at a
per-run cgroup with a per-run bpf pin root (tests/integration/testhosts.py, DESIGN.md
§8). Needs root (exit 77 = skip unless CULVERT_REQUIRE_PRIVILEGED=1).
"""

import argparse
import os
import signal
import socket
import sys
import time
import urllib.error
import urllib.request

HERE = os.path.dirname(os.path.abspath(__file__))
sys.path.insert(0, os.path.join(os.path.dirname(HERE), "integration"))
import testhosts as th  # noqa: E402

BOOTSTRAP = """\
node: {{id: sd-notify-test}}
admin: {{address: "127.0.0.1:{admin_port}", socket: ""}}
workers: 2
resources: {{path: "{tmp}/resources"}}
capture: {{port: 15001, cgroup: "{cgroup}", fail_mode: open}}
bpf: {{pin_root: "{pin_root}"}}
enrollment: {{socket: "{tmp}/cni.sock"}}
state_dir: "{tmp}/state"
"""
WATCHDOG_USEC = 2_000_000  # culvertd should ping every ~1 s


def free_port() -> int:
    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        return s.getsockname()[1]


def http_status(url: str) -> int:
    try:
        with urllib.request.urlopen(url, timeout=2) as r:
            return r.status
    except urllib.error.HTTPError as e:
        return e.code
    except OSError:
        return -1


def main() -> int:
    parser = argparse.ArgumentParser()
    parser.add_argument("--culvertd", required=True)
    args = parser.parse_args()
    th.require_root_or_skip("packaging_sd_notify_daemon")
    R = th.Results()
    with th.TestNetwork() as net:
        cgroup = net.make_cgroup()
        pin_root = net.assign_pin_root()
        tmp = net.path()
        admin_port = free_port()
        boot = net.path("bootstrap.yaml")
        with open(boot, "w") as f:
            f.write(BOOTSTRAP.format(admin_port=admin_port, tmp=tmp, cgroup=cgroup.path, pin_root=pin_root))
        notify_path = net.path("notify")
        sock = socket.socket(socket.AF_UNIX, socket.SOCK_DGRAM)
        sock.bind(notify_path)
        sock.settimeout(15)
        log = open(net.path("culvertd.log"), "w")
        started = time.monotonic()
        proc = net.spawn([os.path.abspath(args.culvertd), "--config", boot], stdout=log, stderr=log,
                         env={"NOTIFY_SOCKET": notify_path, "WATCHDOG_USEC": str(WATCHDOG_USEC)})
        try:
            first = sock.recv(4096).decode()
            ready_status = http_status(f"http://127.0.0.1:{admin_port}/ready")
            R.check("first notification is READY=1", first.split("\n")[0] == "READY=1", repr(first))
            R.check("/ready answers 200 once READY=1 was sent", ready_status == 200, str(ready_status))
            sock.settimeout(5)
            pings, t0 = [], time.monotonic()
            while len(pings) < 2:
                msg = sock.recv(4096).decode()
                if msg == "WATCHDOG=1":
                    pings.append(time.monotonic() - t0)
            R.check("WATCHDOG=1 at about half of WATCHDOG_USEC", pings[1] - pings[0] < 1.8,
                    f"ping gaps {pings}")
            os.kill(proc.pid, signal.SIGTERM)
            msgs = []
            while "STOPPING=1" not in msgs:
                msgs.append(sock.recv(4096).decode())
            R.check("SIGTERM: STOPPING=1 sent", True)
            rc = proc.wait(timeout=10)
            R.check("culvertd exits 0 after SIGTERM", rc == 0, f"exit {rc}")
        except (socket.timeout, TimeoutError) as e:
            R.check(f"notification within the timeout ({time.monotonic() - started:.1f}s in)", False, repr(e))
        finally:
            net.stop(proc)
            sock.close()
            log.close()
            if R.failed:
                with open(net.path("culvertd.log")) as f:
                    sys.stderr.write(f.read()[-3000:])
    return R.summary()


if __name__ == "__main__":
    sys.exit(main())
