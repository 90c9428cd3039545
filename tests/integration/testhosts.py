"""Throwaway test hosts for culvert's integration tests (DESIGN.md §8).

Standard library only; run with Debian's /usr/bin/python3 as root.

    with TestNetwork() as net:                  # per-run prefix, e.g. "cvt3fa9c"
        client = net.add_pod("client", "10.244.1.1")
        server = net.add_pod("server", "10.244.1.2")
        cg = net.make_cgroup()                  # <cgroup2 root>/<prefix>
        net.start_echo_server(server, 8080)
        net.assert_isolated()                   # before any traffic
        r = client.curl("http://10.244.1.2:8080/x", cgroup=cg)

Layout: one "switch" netns (<prefix>-sw) holds a Linux bridge; every pod is a
netns (<prefix>-<name>) with eth0, whose veth peer sits in the switch netns on
the bridge. Nothing is created in the root netns: no interface, address or
route. Pods get one /24 address (on-link only) and `lo` up, never a default
route; ip_forward is never written. assert_isolated() checks that.

Cleanup (close(), also run from __exit__, atexit and SIGTERM/SIGINT/SIGHUP)
kills only processes this run started (by PID / their process group, plus
whatever sits in this run's netns and cgroup), deletes the netns (which takes
the veths and the bridge with them), the cgroup, the bpf pin root it handed
out, and its temp dir. Each run records itself in /run/culvert-testhosts/;
a later run removes what a killed run (e.g. ctest timeout, SIGKILL) left.
"""

from __future__ import annotations

import atexit
import ipaddress
import json
import os
import secrets
import select
import shutil
import signal
import subprocess
import sys
import tempfile
import time

PYTHON = "/usr/bin/python3"
_SYS_PATH = "/usr/sbin:/usr/bin:/sbin:/bin"
IP = shutil.which("ip", path=_SYS_PATH) or "ip"
CURL = shutil.which("curl", path=_SYS_PATH) or "curl"
SH = "/bin/sh"

POD_SUPERNET = ipaddress.ip_network("10.244.0.0/16")
IP_FORWARD = "/proc/sys/net/ipv4/ip_forward"
BPFFS = "/sys/fs/bpf"
REGISTRY_DIR = "/run/culvert-testhosts"
PREFIX_BASE = "cvt"


class HostSafetyError(AssertionError):
    """A test host is not isolated the way DESIGN.md §8 requires."""


class CommandError(RuntimeError):
    pass


def log(msg: str) -> None:
    print(f"testhosts: {msg}", file=sys.stderr, flush=True)


def clean_env(extra: dict | None = None) -> dict:
    """The environment for child processes: no proxy variables, C locale."""
    env = {k: v for k, v in os.environ.items()
           if not k.lower().endswith("_proxy")}
    env["LC_ALL"] = "C"
    env["PATH"] = _SYS_PATH + ":" + env.get("PATH", "")
    if extra:
        env.update(extra)
    return env


def run(argv: list[str], check: bool = True, timeout: float = 30,
        **kw) -> subprocess.CompletedProcess:
    kw.setdefault("env", clean_env())
    cp = subprocess.run(argv, capture_output=True, text=True,
                        timeout=timeout, stdin=subprocess.DEVNULL, **kw)
    if check and cp.returncode != 0:
        raise CommandError(f"{' '.join(argv)} -> exit {cp.returncode}: "
                           f"{cp.stderr.strip() or cp.stdout.strip()}")
    return cp


def is_root() -> bool:
    return os.geteuid() == 0


# ---------------------------------------------------------------- mounts

def _unescape_mountinfo(s: str) -> str:
    # mountinfo escapes space, tab, newline and backslash as \ooo.
    out, i = [], 0
    while i < len(s):
        if s[i] == "\\" and i + 4 <= len(s) and s[i + 1:i + 4].isdigit():
            out.append(chr(int(s[i + 1:i + 4], 8)))
            i += 4
        else:
            out.append(s[i])
            i += 1
    return "".join(out)


def mounts() -> list[tuple[str, str, str]]:
    """(mount point, fstype, root within the fs) from /proc/self/mountinfo."""
    res = []
    with open("/proc/self/mountinfo") as f:
        for line in f:
            fields = line.split()
            try:
                sep = fields.index("-", 6)
            except ValueError:
                continue
            res.append((_unescape_mountinfo(fields[4]), fields[sep + 1],
                        _unescape_mountinfo(fields[3])))
    return res


def cgroup2_root() -> str:
    """Mount point of the cgroup2 hierarchy: /sys/fs/cgroup on most hosts,
    /sys/fs/cgroup/unified on hybrid ones (like the dev machine)."""
    found = [mp for mp, fs, _ in mounts() if fs == "cgroup2"]
    if not found:
        raise RuntimeError("no cgroup2 mount in /proc/self/mountinfo")
    for preferred in ("/sys/fs/cgroup", "/sys/fs/cgroup/unified"):
        if preferred in found:
            return preferred
    return found[0]


def bpffs_mounted(path: str = BPFFS) -> bool:
    return any(mp == path and fs == "bpf" for mp, fs, _ in mounts())


# ------------------------------------------------------------- processes

def _starttime(pid: int) -> str | None:
    try:
        with open(f"/proc/{pid}/stat") as f:
            stat = f.read()
    except OSError:
        return None
    return stat.rsplit(")", 1)[1].split()[19]


def _alive(pid: int, starttime: str | None) -> bool:
    st = _starttime(pid)
    return st is not None and (starttime is None or st == starttime)


def _kill_pid(pid: int, starttime: str | None, sig=signal.SIGKILL) -> None:
    if _alive(pid, starttime):
        try:
            os.kill(pid, sig)
        except ProcessLookupError:
            pass


def _netns_pids(ns: str) -> list[int]:
    cp = run([IP, "netns", "pids", ns], check=False)
    return [int(p) for p in cp.stdout.split() if p.isdigit()]


def _netns_exists(ns: str) -> bool:
    return os.path.exists(f"/run/netns/{ns}")


# ---------------------------------------------------------------- cgroup

class Cgroup:
    """A child cgroup of the cgroup2 root that this run owns."""

    def __init__(self, path: str):
        self.path = path

    @property
    def procs_file(self) -> str:
        return os.path.join(self.path, "cgroup.procs")

    def procs(self) -> list[int]:
        try:
            with open(self.procs_file) as f:
                return [int(x) for x in f.read().split()]
        except FileNotFoundError:
            return []

    def kill_all(self) -> None:
        # Only this run's processes ever enter this cgroup.
        kill_file = os.path.join(self.path, "cgroup.kill")
        if os.path.exists(kill_file):
            try:
                with open(kill_file, "w") as f:
                    f.write("1")
                return
            except OSError:
                pass
        for pid in self.procs():
            _kill_pid(pid, None)

    def remove(self, timeout: float = 5.0) -> None:
        if not os.path.isdir(self.path):
            return
        deadline = time.monotonic() + timeout
        while True:
            if self.procs():
                self.kill_all()
            try:
                os.rmdir(self.path)
                return
            except FileNotFoundError:
                return
            except OSError:
                if time.monotonic() > deadline:
                    raise
                time.sleep(0.05)

    def __str__(self) -> str:
        return self.path


# ------------------------------------------------------------------ pods

class Pod:
    def __init__(self, net: "TestNetwork", name: str, netns: str, ip: str,
                 plen: int, peer: str):
        self.net, self.name, self.netns = net, name, netns
        self.ip, self.plen, self.peer = ip, plen, peer
        self.ifname = "eth0"

    @property
    def netns_path(self) -> str:
        return f"/run/netns/{self.netns}"

    def run(self, argv, cgroup: Cgroup | None = None, **kw):
        self.net.assert_isolated_once()
        return self.net.run(argv, netns=self.netns, cgroup=cgroup, **kw)

    def spawn(self, argv, cgroup: Cgroup | None = None, **kw):
        self.net.assert_isolated_once()
        return self.net.spawn(argv, netns=self.netns, cgroup=cgroup, **kw)

    def curl(self, *args: str, cgroup: Cgroup | None = None,
             max_time: float = 5, timeout: float = 20):
        """curl in this pod (in `cgroup` first, if given). -q keeps ~/.curlrc
        out; proxies are off. Returns CompletedProcess (check=False)."""
        argv = [CURL, "-q", "-sS", "--noproxy", "*", "--max-time",
                str(max_time), *args]
        return self.run(argv, cgroup=cgroup, check=False, timeout=timeout)

    def __repr__(self) -> str:
        return f"Pod({self.name}, {self.netns}, {self.ip}/{self.plen})"


# --------------------------------------------------------------- network

ECHO_SERVER_PY = r'''
import http.server, socketserver, sys, itertools, threading
addr, port = sys.argv[1], int(sys.argv[2])
conn_ids = itertools.count(1)
class H(http.server.BaseHTTPRequestHandler):
    protocol_version = "HTTP/1.1"           # keep-alive
    def setup(self):
        super().setup()
        self.conn_id, self.nreq = next(conn_ids), 0
    def do_GET(self):
        self.nreq += 1
        body = ("peer=%s path=%s conn=%d req=%d host=%s\n" % (
            self.client_address[0], self.path, self.conn_id, self.nreq,
            self.headers.get("Host", ""))).encode()
        self.send_response(200)
        self.send_header("Content-Type", "text/plain")
        self.send_header("Content-Length", str(len(body)))
        self.end_headers()
        self.wfile.write(body)
    def log_message(self, fmt, *a):
        sys.stderr.write("%s %s\n" % (self.client_address[0], fmt % a))
        sys.stderr.flush()
class S(socketserver.ThreadingMixIn, http.server.HTTPServer):
    daemon_threads = True
    allow_reuse_address = True
    request_queue_size = 128  # socketserver's 5 drops SYNs under bursts on a busy host
srv = S((addr, port), H)
print("READY", flush=True)
srv.serve_forever()
'''


class TestNetwork:
    """Context manager owning one run's netns, bridge, cgroup, temp dir and
    bpf pin root. See the module docstring."""

    def __init__(self, prefix: str | None = None, keep_tmp: bool = False):
        self.prefix = prefix or PREFIX_BASE + secrets.token_hex(3)[:5]
        if len(self.prefix) > 10:
            raise ValueError("prefix too long for 15-char interface names")
        self.keep_tmp = keep_tmp
        self.switch_ns = f"{self.prefix}-sw"
        self.bridge = f"{self.prefix}br"
        self.pods: dict[str, Pod] = {}
        self.netns: list[str] = []
        self.cgroups: list[Cgroup] = []
        self.procs: list[subprocess.Popen] = []
        self.tmpdir: str | None = None
        self.pin_root: str | None = None
        self.mounted_bpffs = False
        self.ip_forward_before: str | None = None
        self._checked = False
        self._closed = True
        self._old_handlers: dict = {}
        self._registry = os.path.join(REGISTRY_DIR, f"{self.prefix}.json")

    # ----------------------------------------------------------- setup
    def __enter__(self) -> "TestNetwork":
        self.open()
        return self

    def __exit__(self, *exc) -> None:
        self.close()

    def open(self) -> None:
        if not is_root():
            raise PermissionError("testhosts needs root")
        self._closed = False
        atexit.register(self.close)
        for sig in (signal.SIGTERM, signal.SIGINT, signal.SIGHUP):
            try:
                self._old_handlers[sig] = signal.signal(sig, self._on_signal)
            except ValueError:  # not the main thread
                pass
        sweep_stale()
        self.ip_forward_before = _read(IP_FORWARD)
        self.tmpdir = tempfile.mkdtemp(prefix=f"{self.prefix}-")
        self._save()
        self._add_netns(self.switch_ns)
        ns = ["-n", self.switch_ns]
        run([IP, *ns, "link", "set", "lo", "up"])
        run([IP, *ns, "link", "add", self.bridge, "type", "bridge"])
        run([IP, *ns, "link", "set", self.bridge, "up"])
        log(f"run {self.prefix}: switch netns {self.switch_ns}, "
            f"tmp {self.tmpdir}")

    def _on_signal(self, signum, frame):
        # Unwind through finally/__exit__ so cleanup runs.
        raise SystemExit(128 + signum)

    def _add_netns(self, ns: str) -> None:
        self.netns.append(ns)      # record first: cleanup even if add fails
        self._save()
        run([IP, "netns", "add", ns])

    def add_pod(self, name: str, ip: str, plen: int = 24) -> Pod:
        addr = ipaddress.ip_address(ip)
        if addr not in POD_SUPERNET or plen < 16:
            raise HostSafetyError(f"pod address {ip}/{plen} outside {POD_SUPERNET}")
        if name in self.pods:
            raise ValueError(f"pod {name} exists")
        ns = f"{self.prefix}-{name}"
        peer = f"{self.prefix}v{len(self.pods)}"
        if len(peer) > 15:
            raise ValueError(peer)
        self._add_netns(ns)
        sw = ["-n", self.switch_ns]
        # Both ends are created inside netns: nothing appears in the root netns.
        run([IP, *sw, "link", "add", peer, "type", "veth",
             "peer", "name", "eth0", "netns", ns])
        run([IP, *sw, "link", "set", peer, "master", self.bridge])
        run([IP, *sw, "link", "set", peer, "up"])
        p = ["-n", ns]
        run([IP, *p, "link", "set", "lo", "up"])
        run([IP, *p, "addr", "add", f"{ip}/{plen}", "dev", "eth0"])
        run([IP, *p, "link", "set", "eth0", "up"])
        pod = Pod(self, name, ns, ip, plen, peer)
        self.pods[name] = pod
        self._checked = False
        return pod

    def make_cgroup(self, suffix: str = "") -> Cgroup:
        name = self.prefix + (f"-{suffix}" if suffix else "")
        path = os.path.join(cgroup2_root(), name)
        cg = Cgroup(path)
        self.cgroups.append(cg)
        self._save()
        os.mkdir(path)
        return cg

    def assign_pin_root(self) -> str:
        """A bpf pin root for this run: /sys/fs/bpf/<prefix> (not created;
        removed at cleanup). Mounts bpffs at /sys/fs/bpf if it is missing,
        and unmounts it at cleanup if this run mounted it and it is empty."""
        if not bpffs_mounted():
            os.makedirs(BPFFS, exist_ok=True)
            run(["mount", "-t", "bpf", "bpf", BPFFS])
            self.mounted_bpffs = True
            log(f"mounted bpffs at {BPFFS}")
        self.pin_root = os.path.join(BPFFS, self.prefix)
        self._save()
        return self.pin_root

    def path(self, *parts: str) -> str:
        return os.path.join(self.tmpdir, *parts)

    # ------------------------------------------------------ processes
    def wrap(self, argv: list[str], netns: str | None = None,
             cgroup: Cgroup | None = None) -> list[str]:
        """argv to run `argv` in cgroup (first) then netns. The shell joins
        the cgroup before `ip netns exec`, which remounts /sys."""
        argv = list(argv)
        if netns:
            argv = [IP, "netns", "exec", netns, *argv]
        if cgroup:
            argv = [SH, "-c", 'echo $$ > "$0" && exec "$@"',
                    cgroup.procs_file, *argv]
        return argv

    def spawn(self, argv: list[str], netns: str | None = None,
              cgroup: Cgroup | None = None, env: dict | None = None,
              **kw) -> subprocess.Popen:
        """Start a long-running process; it gets its own session (so its
        process group id is its PID) and is killed at cleanup."""
        kw.setdefault("stdin", subprocess.DEVNULL)
        proc = subprocess.Popen(self.wrap(argv, netns, cgroup),
                                env=clean_env(env), start_new_session=True,
                                **kw)
        proc.cvt_starttime = _starttime(proc.pid)
        self.procs.append(proc)
        self._save()
        return proc

    def run(self, argv: list[str], netns: str | None = None,
            cgroup: Cgroup | None = None, check: bool = False,
            timeout: float = 30, env: dict | None = None):
        """Run to completion; returns CompletedProcess (text)."""
        proc = self.spawn(argv, netns, cgroup, env=env, stdout=subprocess.PIPE,
                          stderr=subprocess.PIPE, text=True)
        try:
            out, err = proc.communicate(timeout=timeout)
        except subprocess.TimeoutExpired:
            self.stop(proc, sig=signal.SIGKILL)
            out, err = proc.communicate()
            raise CommandError(f"timeout after {timeout}s: {argv}\n{err}")
        finally:
            self._forget(proc)
        cp = subprocess.CompletedProcess(argv, proc.returncode, out, err)
        if check and cp.returncode != 0:
            raise CommandError(f"{argv} -> exit {cp.returncode}: {err.strip()}")
        return cp

    def _forget(self, proc: subprocess.Popen) -> None:
        if proc.poll() is not None and proc in self.procs:
            self.procs.remove(proc)
            self._save()

    def stop(self, proc: subprocess.Popen, sig=signal.SIGTERM,
             timeout: float = 3.0) -> int:
        """Signal proc's process group (only while proc is unreaped, so the
        id cannot have been reused), wait, escalate to SIGKILL."""
        if proc.poll() is None:
            try:
                os.killpg(proc.pid, sig)
            except ProcessLookupError:
                pass
            try:
                proc.wait(timeout=timeout)
            except subprocess.TimeoutExpired:
                try:
                    os.killpg(proc.pid, signal.SIGKILL)
                except ProcessLookupError:
                    pass
                proc.wait(timeout=10)
        self._forget(proc)
        return proc.returncode

    def start_echo_server(self, pod: Pod, port: int = 8080,
                          cgroup: Cgroup | None = None,
                          timeout: float = 10) -> subprocess.Popen:
        """HTTP/1.1 keep-alive server on pod.ip:port answering every GET
        with 200 and 'peer=<ip> path=<path> conn=<n> req=<n> host=<h>'."""
        script = self.path("echo_server.py")
        if not os.path.exists(script):
            with open(script, "w") as f:
                f.write(ECHO_SERVER_PY)
        errlog = open(self.path(f"echo-{pod.name}-{port}.log"), "w")
        proc = pod.spawn([PYTHON, "-B", script, pod.ip, str(port)],
                         cgroup=cgroup, stdout=subprocess.PIPE, stderr=errlog)
        errlog.close()
        proc.cvt_log = errlog.name
        deadline = time.monotonic() + timeout
        line = b""
        while time.monotonic() < deadline and proc.poll() is None:
            r, _, _ = select.select([proc.stdout], [], [], 0.1)
            if r:
                line = proc.stdout.readline()
                break
        if line.strip() != b"READY":
            self.stop(proc)
            raise CommandError(f"echo server in {pod.netns} did not start: "
                               f"{_read(proc.cvt_log)}")
        return proc

    # ------------------------------------------------------- isolation
    def assert_isolated_once(self) -> None:
        if not self._checked:
            self.assert_isolated()

    def assert_isolated(self) -> None:
        """DESIGN.md §8: no default route in any of our netns, only on-link
        routes inside the pod block, ip_forward untouched (root) and off (ours)."""
        problems = []
        now = _read(IP_FORWARD)
        if now != self.ip_forward_before:
            problems.append(f"root ip_forward changed: {self.ip_forward_before} -> {now}")
        for ns in self.netns:
            for fam in ("-4", "-6"):
                cp = run([IP, fam, "-n", ns, "route", "show", "default"],
                         check=False)
                if cp.stdout.strip():
                    problems.append(f"{ns}: default route {fam}: {cp.stdout.strip()}")
            cp = run([IP, "-4", "-n", ns, "-j", "route", "show", "table", "all"])
            for r in json.loads(cp.stdout or "[]"):
                if r.get("type", "unicast") != "unicast":
                    continue
                dst = r.get("dst", "")
                if r.get("gateway") or r.get("via"):
                    problems.append(f"{ns}: routed via gateway: {r}")
                try:
                    net = ipaddress.ip_network(dst, strict=False)
                except ValueError:
                    problems.append(f"{ns}: unexpected route {r}")
                    continue
                if not net.subnet_of(POD_SUPERNET):
                    problems.append(f"{ns}: route outside {POD_SUPERNET}: {r}")
            fwd = run([IP, "netns", "exec", ns, "cat", IP_FORWARD],
                      check=False).stdout.strip()
            if fwd != "0":
                problems.append(f"{ns}: ip_forward={fwd!r}")
        if problems:
            raise HostSafetyError("; ".join(problems))
        self._checked = True

    # --------------------------------------------------------- cleanup
    def close(self) -> list[str]:
        """Remove everything this run made. Idempotent; never raises; returns
        (and logs) what could not be removed."""
        if self._closed:
            return []
        self._closed = True
        errors: list[str] = []

        def attempt(what, fn, *a):
            try:
                fn(*a)
            except Exception as e:  # keep going: remove as much as possible
                errors.append(f"{what}: {e}")

        for proc in list(self.procs):
            attempt(f"stop pid {proc.pid}", self.stop, proc, signal.SIGTERM, 2.0)
        for ns in self.netns:
            for pid in _netns_pids(ns) if _netns_exists(ns) else []:
                attempt(f"kill pid {pid} in {ns}", _kill_pid, pid, None)
        for cg in self.cgroups:
            attempt(f"cgroup {cg}", cg.remove)
        for ns in reversed(self.netns):
            if _netns_exists(ns):
                attempt(f"netns {ns}", run, [IP, "netns", "del", ns])
        if self.pin_root:
            attempt(f"pin root {self.pin_root}", _rmtree, self.pin_root)
        if self.mounted_bpffs:
            attempt("bpffs", _umount_if_empty, BPFFS)
        if self.tmpdir and not self.keep_tmp:
            attempt(f"tmp {self.tmpdir}", _rmtree, self.tmpdir)
        now = _read(IP_FORWARD)
        if self.ip_forward_before is not None and now != self.ip_forward_before:
            errors.append(f"root ip_forward changed: {self.ip_forward_before} -> {now}")
        left = self.leftovers()
        if self.keep_tmp and self.tmpdir in left:
            left.remove(self.tmpdir)
        errors += [f"left over: {x}" for x in left]
        if not errors:
            attempt("registry", _unlink, self._registry)
        for sig, h in self._old_handlers.items():
            try:
                signal.signal(sig, h)
            except (ValueError, TypeError):
                pass
        self._old_handlers = {}
        try:
            atexit.unregister(self.close)
        except Exception:
            pass
        for e in errors:
            log(f"CLEANUP ERROR ({self.prefix}): {e}")
        if not errors:
            log(f"run {self.prefix}: cleaned up")
        return errors

    def leftovers(self) -> list[str]:
        """Anything carrying this run's prefix that still exists."""
        left = []
        cp = run([IP, "netns", "list"], check=False)
        left += [f"netns {line.split()[0]}" for line in cp.stdout.splitlines()
                 if line.startswith(self.prefix)]
        cp = run([IP, "-o", "link", "show"], check=False)
        left += [f"link {line.split(':')[1].strip()}"
                 for line in cp.stdout.splitlines() if self.prefix in line]
        for cg in self.cgroups:
            if os.path.exists(cg.path):
                left.append(cg.path)
        root = None
        try:
            root = cgroup2_root()
        except RuntimeError:
            pass
        if root:
            left += [os.path.join(root, d) for d in os.listdir(root)
                     if d.startswith(self.prefix)
                     and os.path.join(root, d) not in left]
        if os.path.isdir(BPFFS):
            left += [os.path.join(BPFFS, d) for d in _listdir(BPFFS)
                     if self.prefix in d]
        for p in (self.tmpdir,):
            if p and os.path.exists(p):
                left.append(p)
        for proc in self.procs:
            if proc.poll() is None:
                left.append(f"process {proc.pid}")
        return left

    def _save(self) -> None:
        rec = {
            "prefix": self.prefix,
            "pid": os.getpid(), "starttime": _starttime(os.getpid()),
            "netns": self.netns,
            "cgroups": [c.path for c in self.cgroups],
            "procs": [[p.pid, getattr(p, "cvt_starttime", None)]
                      for p in self.procs],
            "tmpdir": self.tmpdir, "pin_root": self.pin_root,
            "mounted_bpffs": self.mounted_bpffs,
        }
        try:
            os.makedirs(REGISTRY_DIR, exist_ok=True)
            tmp = self._registry + ".tmp"
            with open(tmp, "w") as f:
                json.dump(rec, f)
            os.replace(tmp, self._registry)
        except OSError as e:
            log(f"cannot write registry {self._registry}: {e}")


# ------------------------------------------------------------- helpers

def _read(path: str) -> str:
    try:
        with open(path) as f:
            return f.read().strip()
    except OSError as e:
        return f"<{e}>"


def _listdir(path: str) -> list[str]:
    try:
        return os.listdir(path)
    except OSError:
        return []


def _unlink(path: str) -> None:
    try:
        os.unlink(path)
    except FileNotFoundError:
        pass


def _rmtree(path: str) -> None:
    # Works on bpffs too: pins are unlinked, directories rmdir'ed.
    if os.path.lexists(path):
        shutil.rmtree(path)


# Entries the kernel itself puts into every new bpffs (CONFIG_BPF_PRELOAD).
_BPFFS_PRELOAD = {"maps.debug", "progs.debug"}


def _umount_if_empty(path: str) -> None:
    if not bpffs_mounted(path):
        return
    if set(_listdir(path)) - _BPFFS_PRELOAD:
        log(f"left {path} mounted: in use")
    else:
        run(["umount", path])


def sweep_stale() -> None:
    """Remove what earlier runs left when they were killed (their owner
    process is gone). Only names recorded by those runs are touched."""
    for fn in _listdir(REGISTRY_DIR):
        if not fn.endswith(".json"):
            continue
        path = os.path.join(REGISTRY_DIR, fn)
        try:
            with open(path) as f:
                rec = json.load(f)
        except (OSError, ValueError):
            continue
        if _alive(rec.get("pid", 0), rec.get("starttime")):
            continue
        prefix = rec.get("prefix", "")
        if not prefix.startswith(PREFIX_BASE):
            continue
        log(f"sweeping stale run {prefix}")
        for pid, st in rec.get("procs", []):
            if st:  # never kill by a bare, possibly reused PID
                _kill_pid(pid, st)
        for ns in rec.get("netns", []):
            if ns.startswith(prefix) and _netns_exists(ns):
                for pid in _netns_pids(ns):
                    _kill_pid(pid, None)
        for cg in rec.get("cgroups", []):
            if os.path.basename(cg).startswith(prefix):
                try:
                    Cgroup(cg).remove()
                except OSError as e:
                    log(f"  cgroup {cg}: {e}")
        for ns in rec.get("netns", []):
            if ns.startswith(prefix) and _netns_exists(ns):
                run([IP, "netns", "del", ns], check=False)
        for p in (rec.get("pin_root"), rec.get("tmpdir")):
            if p and prefix in os.path.basename(p):
                try:
                    _rmtree(p)
                except OSError as e:
                    log(f"  {p}: {e}")
        if rec.get("mounted_bpffs"):
            try:
                _umount_if_empty(BPFFS)
            except CommandError as e:
                log(f"  {BPFFS}: {e}")
        _unlink(path)


# ------------------------------------------------------------ test runs

def find_leftovers(prefix: str) -> list[str]:
    """Look for a run's prefix everywhere (independent of TestNetwork's own
    records): netns, root-netns links, cgroup2 root, bpffs, temp dir,
    registry, processes."""
    left = []
    out = run([IP, "netns", "list"], check=False).stdout
    left += [f"netns {l}" for l in out.splitlines() if prefix in l]
    out = run([IP, "-o", "link", "show"], check=False).stdout
    left += [f"link {l[:60]}" for l in out.splitlines() if prefix in l]
    root = cgroup2_root()
    left += [f"cgroup {root}/{d}" for d in _listdir(root) if prefix in d]
    left += [f"bpf {BPFFS}/{d}" for d in _listdir(BPFFS) if prefix in d]
    tmp = tempfile.gettempdir()
    left += [f"tmp {tmp}/{d}" for d in _listdir(tmp) if d.startswith(prefix)]
    if os.path.exists(os.path.join(REGISTRY_DIR, prefix + ".json")):
        left.append("registry entry")
    for pid in _listdir("/proc"):
        if not pid.isdigit() or int(pid) == os.getpid():
            continue
        try:
            with open(f"/proc/{pid}/cmdline", "rb") as f:
                cmd = f.read().replace(b"\0", b" ").decode(errors="replace")
        except OSError:
            continue
        if prefix in cmd:
            left.append(f"process {pid} {cmd[:80]}")
    return left


SKIP = 77  # ctest SKIP_RETURN_CODE


def require_root_or_skip(what: str) -> None:
    """Not root: exit 77 (skip), or fail when CULVERT_REQUIRE_PRIVILEGED=1."""
    if is_root():
        return
    if os.environ.get("CULVERT_REQUIRE_PRIVILEGED") == "1":
        print(f"FAIL {what}: needs root and CULVERT_REQUIRE_PRIVILEGED=1")
        print("0 passed, 1 failed")
        sys.exit(1)
    print(f"SKIP {what}: needs root (set CULVERT_REQUIRE_PRIVILEGED=1 to fail instead)")
    sys.exit(SKIP)


class Fatal(Exception):
    """A failed check after which the rest of the scenario cannot run."""


class Results:
    def __init__(self):
        self.passed = 0
        self.failed = 0

    def check(self, name: str, ok: bool, detail: str = "",
              fatal: bool = False) -> bool:
        if ok:
            self.passed += 1
            print(f"PASS {name}", flush=True)
        else:
            self.failed += 1
            print(f"FAIL {name}" + (f": {detail}" if detail else ""), flush=True)
            if fatal:
                raise Fatal(name)
        return ok

    def summary(self) -> int:
        print(f"{self.passed} passed, {self.failed} failed", flush=True)
        return 0 if self.failed == 0 and self.passed > 0 else 1
