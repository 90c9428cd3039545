#!/usr/bin/python3
"""Self-test of the test-host plumbing (testhosts.py), no culvert binaries.

    /usr/bin/python3 tests/integration/testhosts_selftest.py

Builds a bridge + two pods, serves HTTP in one, curls it from the other in
the test cgroup, checks isolation, tears down and checks nothing is left —
also after an exception, a SIGTERM, and a SIGKILL (swept by the next run).
"""

import os
import re
import signal
import subprocess
import sys
import time

sys.path.insert(0, os.path.dirname(os.path.abspath(__file__)))
import testhosts as th  # noqa: E402

HERE = os.path.dirname(os.path.abspath(__file__))
R = th.Results()


global_leftovers = th.find_leftovers


def pid_alive(pid: int) -> bool:
    try:
        os.kill(pid, 0)
    except ProcessLookupError:
        return False
    # a zombie we have not reaped is not "alive" for our purposes
    with open(f"/proc/{pid}/stat") as f:
        return f.read().rsplit(")", 1)[1].split()[0] != "Z"


def wait_for(cond, timeout: float = 5.0) -> bool:
    deadline = time.monotonic() + timeout
    while not cond():
        if time.monotonic() > deadline:
            return False
        time.sleep(0.02)
    return True


def normal_run() -> None:
    fwd_before = th._read(th.IP_FORWARD)
    with th.TestNetwork() as net:
        prefix = net.prefix
        client = net.add_pod("client", "10.244.1.1")
        server = net.add_pod("server", "10.244.1.2")
        cg = net.make_cgroup()
        pin = net.assign_pin_root()
        R.check("pin root under bpffs, named by prefix",
                pin == f"/sys/fs/bpf/{prefix}" and th.bpffs_mounted(), pin)
        os.mkdir(pin)  # as culvertd would; must be removed by cleanup

        try:
            net.assert_isolated()
            R.check("isolation asserted (no default route, ip_forward)", True)
        except th.HostSafetyError as e:
            R.check("isolation asserted", False, str(e), fatal=True)

        for pod in (client, server):
            cp = th.run([th.IP, "-n", pod.netns, "route", "show", "default"])
            R.check(f"{pod.name}: no default route", cp.stdout.strip() == "",
                    cp.stdout)
        R.check("interface names fit 15 chars",
                all(len(p.peer) <= 15 for p in net.pods.values())
                and len(net.bridge) <= 15)
        out = th.run([th.IP, "-o", "link", "show"]).stdout
        R.check("nothing of ours in the root netns", prefix not in out)

        cp = client.run(["cat", "/proc/self/cgroup"], cgroup=cg)
        R.check("process joins the cgroup before the netns",
                f"0::/{prefix}" in cp.stdout.splitlines(), cp.stdout + cp.stderr)
        cp = client.run([th.IP, "-4", "-o", "addr", "show", "eth0"], cgroup=cg)
        R.check("process runs in the client netns", "10.244.1.1/24" in cp.stdout,
                cp.stdout + cp.stderr)

        srv = net.start_echo_server(server, 8080)
        r = client.curl("http://10.244.1.2:8080/direct", cgroup=cg)
        R.check("direct curl client->server in cgroup",
                r.returncode == 0 and "peer=10.244.1.1 path=/direct " in r.stdout,
                f"rc={r.returncode} out={r.stdout!r} err={r.stderr!r}")

        r = client.curl("-w", r"\nNUM_CONNECTS=%{num_connects}\n",
                        "http://10.244.1.2:8080/ka1",
                        "http://10.244.1.2:8080/ka2", cgroup=cg)
        conns = [int(x) for x in re.findall(r"NUM_CONNECTS=(\d+)", r.stdout)]
        R.check("keep-alive: two requests on one connection",
                r.returncode == 0 and conns == [1, 0]
                and re.search(r"path=/ka1 conn=(\d+) req=1", r.stdout)
                and re.search(r"path=/ka2 conn=(\d+) req=2", r.stdout),
                f"rc={r.returncode} out={r.stdout!r}")

        t0 = time.monotonic()
        r = client.curl("http://10.96.0.10/hello", cgroup=cg)
        R.check("VIP unrouted: curl exit 7 (ENETUNREACH), at once",
                r.returncode == 7 and time.monotonic() - t0 < 2,
                f"rc={r.returncode} err={r.stderr!r}")

        sleeper = client.spawn(["sleep", "300"], cgroup=cg)
        R.check("spawned process is in the cgroup",
                wait_for(lambda: sleeper.pid in cg.procs()), str(cg.procs()))
        R.check("spawned process is in the client netns",
                wait_for(lambda: sleeper.pid in th._netns_pids(client.netns)))
        tracked = [srv.pid, sleeper.pid]
        tmpdir, cgpath = net.tmpdir, cg.path
    R.check("tracked processes killed", not any(pid_alive(p) for p in tracked))
    R.check("cgroup and tmp dir removed",
            not os.path.exists(cgpath) and not os.path.exists(tmpdir))
    left = global_leftovers(prefix)
    R.check("normal run: nothing left", not left, str(left))
    R.check("ip_forward unchanged", th._read(th.IP_FORWARD) == fwd_before)


def exception_run() -> None:
    prefix, pids = None, []
    try:
        with th.TestNetwork() as net:
            prefix = net.prefix
            client = net.add_pod("client", "10.244.1.1")
            server = net.add_pod("server", "10.244.1.2")
            cg = net.make_cgroup()
            os.mkdir(net.assign_pin_root())
            pids.append(net.start_echo_server(server, 8080).pid)
            pids.append(client.spawn(["sleep", "300"], cgroup=cg).pid)
            # a process in a netns of ours that testhosts did not track:
            stray = subprocess.Popen(
                [th.IP, "netns", "exec", server.netns, "sleep", "300"],
                start_new_session=True)
            pids.append(stray.pid)
            wait_for(lambda: stray.pid in th._netns_pids(server.netns))
            raise RuntimeError("forced failure mid-test")
    except RuntimeError as e:
        R.check("exception propagates out of TestNetwork",
                str(e) == "forced failure mid-test")
    R.check("exception run: processes killed (also one testhosts did not start)",
            wait_for(lambda: not any(pid_alive(p) for p in pids), 3.0),
            str([p for p in pids if pid_alive(p)]))
    try:
        stray.wait(timeout=1)  # reap it
    except (subprocess.TimeoutExpired, NameError):
        pass
    left = global_leftovers(prefix)
    R.check("exception run: nothing left", not left, str(left))


CHILD = r'''
import os, signal, sys, time
sys.path.insert(0, sys.argv[1])
import testhosts as th
net = th.TestNetwork()
net.open()
c = net.add_pod("client", "10.244.1.1")
s = net.add_pod("server", "10.244.1.2")
cg = net.make_cgroup()
os.mkdir(net.assign_pin_root())
net.start_echo_server(s, 8080)
c.spawn(["sleep", "300"], cgroup=cg)
print(net.prefix, flush=True)
if sys.argv[2] == "kill":
    os.kill(os.getpid(), signal.SIGKILL)
try:
    time.sleep(60)
finally:
    net.close()
'''


def child_run(mode: str) -> None:
    p = subprocess.Popen([th.PYTHON, "-B", "-c", CHILD, HERE, mode],
                         stdout=subprocess.PIPE, text=True)
    prefix = p.stdout.readline().strip()
    if mode == "term":
        time.sleep(0.3)
        p.send_signal(signal.SIGTERM)
    rc = p.wait(timeout=30)
    if mode == "term":
        R.check("SIGTERM: child exits 143 after cleanup", rc == 143, f"rc={rc}")
    else:
        R.check("SIGKILL: child died", rc == -9, f"rc={rc}")
        left = global_leftovers(prefix)
        R.check("SIGKILL: run left things behind (before sweep)",
                any(x.startswith("netns") for x in left), str(left))
        th.sweep_stale()
        time.sleep(0.2)
    left = global_leftovers(prefix)
    R.check(f"{mode} run: nothing left", bool(prefix) and not left,
            f"prefix={prefix!r} {left}")


def main() -> int:
    th.require_root_or_skip("testhosts self-test")
    bpffs_before = th.bpffs_mounted()
    for step in (normal_run, exception_run,
                 lambda: child_run("term"), lambda: child_run("kill")):
        try:
            step()
        except th.Fatal:
            pass
        except Exception as e:  # noqa: BLE001
            R.check(f"{getattr(step, '__name__', 'step')} raised", False,
                    f"{type(e).__name__}: {e}")
    R.check("bpffs mount state restored", th.bpffs_mounted() == bpffs_before)
    return R.summary()


if __name__ == "__main__":
    sys.exit(main())
