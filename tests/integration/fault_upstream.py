#!/usr/bin/python3
"""A controllable HTTP/1.1 upstream for integration tests (standard library only).

Each request says how it wants to be treated, through request headers:

    x-fault-key: K            groups attempts (one key per scenario); default: the path
    x-fault-status: N         answer status N (default 200)
    x-fault-fail-first: K     apply the fault only to the first K attempts of the key
                              (counted across every server sharing the log); later
                              attempts get 200
    x-fault-stall: 1          never answer (hold the connection until the peer closes it)
    x-fault-reset: 1          reset the connection (RST) instead of answering
    x-fault-delay-ms: D       wait D ms before answering
    x-fault-trickle-ms: D     send the head, then one body byte every D ms (5 bytes)
    x-fault-retry-after: S    add "Retry-After: S" to a faulty answer
    x-fault-grpc-status: N    a gRPC trailers-only answer: 200, application/grpc,
                              grpc-status N (with fail-first: 0 afterwards)
    x-fault-header: name=val  add a header to a faulty answer

Every attempt is appended to a JSON-lines log shared by all servers of a test (written
under an exclusive lock, so the attempt numbers of a key are global):

    {"t": <CLOCK_MONOTONIC seconds>, "server": name, "key": K, "attempt": n,
     "method": ..., "path": ..., "headers": {...}, "body_bytes": n, "faulty": bool}

Each connection's life goes to "<log>.conns" when it ends (read with `connections(log)`):

    {"server": name, "peer_port": p, "opened": t, "closed": t, "requests": n}

where "closed" is when the server saw the peer close it (or closed it itself).

CLOCK_MONOTONIC is system-wide, so a test compares these times with its own
time.monotonic(). Run one server per pod:

    python3 fault_upstream.py --addr 10.244.1.2 --port 8080 --name a --log /tmp/x.jsonl

From a test (tests/integration/*), `FaultUpstream.start(net, pod, port, name, log)`
spawns it in the pod's netns and `attempts(log, key)` reads what it saw.
"""

import argparse
import fcntl
import http.server
import json
import os
import select
import socket
import socketserver
import struct
import subprocess
import sys
import time


def _append_attempt(log_path: str, record: dict, fail_first: int | None) -> int:
    """Appends `record` with its attempt number for the key and whether that attempt is
    faulty (all are, unless only the first `fail_first` are); returns the number."""
    with open(log_path, "a+") as f:
        fcntl.flock(f, fcntl.LOCK_EX)
        try:
            f.seek(0)
            n = 1
            for line in f:
                try:
                    if json.loads(line).get("key") == record["key"]:
                        n += 1
                except ValueError:
                    pass
            record["attempt"] = n
            record["faulty"] = fail_first is None or n <= fail_first
            f.seek(0, os.SEEK_END)
            f.write(json.dumps(record) + "\n")
            f.flush()
        finally:
            fcntl.flock(f, fcntl.LOCK_UN)
    return n


def append_record(path: str, record: dict) -> None:
    """Appends one JSON line to `path` under an exclusive lock (read back with attempts())."""
    with open(path, "a") as f:
        fcntl.flock(f, fcntl.LOCK_EX)
        f.write(json.dumps(record) + "\n")
        fcntl.flock(f, fcntl.LOCK_UN)


def attempts(log_path: str, key: str | None = None) -> list[dict]:
    """The attempts recorded in `log_path` (all, or those of `key`), in order."""
    if not os.path.exists(log_path):
        return []
    out = []
    with open(log_path) as f:
        for line in f:
            try:
                rec = json.loads(line)
            except ValueError:
                continue
            if key is None or rec.get("key") == key:
                out.append(rec)
    return out


def connections(log_path: str, server: str | None = None) -> list[dict]:
    """The connections that ended, from `log_path`'s ".conns" companion, in order of ending."""
    return [c for c in attempts(log_path + ".conns") if server is None or c.get("server") == server]


class FaultUpstream:
    """One fault server process in a test pod (see the module docstring). Subclasses name
    another server script (fault_upstream_h2.py: the same log, over HTTP/2)."""

    SCRIPT = os.path.abspath(__file__)

    def __init__(self, proc, name: str, log_path: str):
        self.proc, self.name, self.log_path = proc, name, log_path

    @classmethod
    def start(cls, net, pod, port: int, name: str, log_path: str, timeout: float = 10) -> "FaultUpstream":
        """Spawns the server on pod.ip:port (net: testhosts.TestNetwork) and waits for READY."""
        errlog = open(net.path(f"fault-{name}.log"), "w")
        proc = pod.spawn([sys.executable or "/usr/bin/python3", "-B", cls.SCRIPT,
                          "--addr", pod.ip, "--port", str(port), "--name", name, "--log", log_path],
                         stdout=subprocess.PIPE, stderr=errlog)
        errlog.close()
        deadline = time.monotonic() + timeout
        line = b""
        while time.monotonic() < deadline and proc.poll() is None:
            r, _, _ = select.select([proc.stdout], [], [], 0.1)
            if r:
                line = proc.stdout.readline()
                break
        if line.strip() != b"READY":
            net.stop(proc)
            with open(errlog.name) as f:
                raise RuntimeError(f"fault upstream {name} did not start: {f.read()}")
        return cls(proc, name, log_path)

    def attempts(self, key: str | None = None) -> list[dict]:
        return [a for a in attempts(self.log_path, key) if a.get("server") == self.name]


class _Handler(http.server.BaseHTTPRequestHandler):
    protocol_version = "HTTP/1.1"
    server_name_ = "fault"
    log_path = ""

    def setup(self):
        super().setup()
        self.opened_, self.requests_ = time.monotonic(), 0

    def finish(self):
        try:
            super().finish()
        except OSError:
            pass
        append_record(self.log_path + ".conns", {
            "server": self.server_name_, "peer_port": self.client_address[1], "opened": self.opened_,
            "closed": time.monotonic(), "requests": self.requests_})

    def _read_body(self) -> int:
        if self.headers.get("Transfer-Encoding", "").lower() == "chunked":
            total = 0
            while True:
                size = int(self.rfile.readline().split(b";")[0].strip() or b"0", 16)
                if size == 0:
                    while self.rfile.readline() not in (b"\r\n", b"\n", b""):
                        pass
                    return total
                self.rfile.read(size)
                self.rfile.readline()
                total += size
        length = int(self.headers.get("Content-Length") or 0)
        if length:
            self.rfile.read(length)
        return length

    def _handle(self):
        t = time.monotonic()
        self.requests_ += 1
        body_bytes = self._read_body()
        h = {k.lower(): v for k, v in self.headers.items()}
        key = h.get("x-fault-key", self.path)
        record = {"t": t, "server": self.server_name_, "peer_port": self.client_address[1], "key": key,
                  "method": self.command,
                  "path": self.path, "headers": h, "body_bytes": body_bytes}
        fail_first = h.get("x-fault-fail-first")
        n = _append_attempt(self.log_path, record, None if fail_first is None else int(fail_first))
        faulty = record["faulty"]

        if faulty and h.get("x-fault-reset") == "1":
            self.connection.setsockopt(socket.SOL_SOCKET, socket.SO_LINGER, struct.pack("ii", 1, 0))
            self.connection.close()
            self.close_connection = True
            return
        if faulty and h.get("x-fault-stall") == "1":
            self.connection.settimeout(60)
            try:
                while self.connection.recv(4096):
                    pass
            except OSError:
                pass
            self.close_connection = True
            return
        if faulty and "x-fault-delay-ms" in h:
            time.sleep(int(h["x-fault-delay-ms"]) / 1000.0)

        status = int(h.get("x-fault-status", "200")) if faulty else 200
        extra = []
        if faulty and "x-fault-retry-after" in h:
            extra.append(("Retry-After", h["x-fault-retry-after"]))
        if faulty and "x-fault-header" in h:
            name, _, value = h["x-fault-header"].partition("=")
            extra.append((name, value))
        if "x-fault-grpc-status" in h:
            self.send_response(200)
            self.send_header("Content-Type", "application/grpc")
            self.send_header("grpc-status", h["x-fault-grpc-status"] if faulty else "0")
            self.send_header("Content-Length", "0")
            for k, v in extra:
                self.send_header(k, v)
            self.end_headers()
            return
        payload = f"server={self.server_name_} key={key} attempt={n} status={status}\n".encode()
        self.send_response(status)
        self.send_header("Content-Type", "text/plain")
        for k, v in extra:
            self.send_header(k, v)
        if faulty and "x-fault-trickle-ms" in h:
            self.send_header("Content-Length", "5")
            self.end_headers()
            self.wfile.flush()
            for _ in range(5):
                time.sleep(int(h["x-fault-trickle-ms"]) / 1000.0)
                self.wfile.write(b".")
                self.wfile.flush()
            return
        self.send_header("Content-Length", str(len(payload)))
        self.end_headers()
        self.wfile.write(payload)

    do_GET = do_POST = do_PUT = do_DELETE = _handle

    def log_message(self, fmt, *a):
        sys.stderr.write("%s %s\n" % (self.client_address[0], fmt % a))


class _Server(socketserver.ThreadingMixIn, http.server.HTTPServer):
    daemon_threads = True
    allow_reuse_address = True


def server_args(doc: str) -> argparse.Namespace:
    """A fault server's command line (this one's, or fault_upstream_h2.py's)."""
    p = argparse.ArgumentParser(description=doc.splitlines()[0])
    p.add_argument("--addr", required=True)
    p.add_argument("--port", type=int, required=True)
    p.add_argument("--name", required=True)
    p.add_argument("--log", required=True, help="JSON-lines attempt log (shared by a test's servers)")
    return p.parse_args()


def main() -> None:
    a = server_args(__doc__)
    handler = type("Handler", (_Handler,), {"server_name_": a.name, "log_path": a.log})
    srv = _Server((a.addr, a.port), handler)
    print("READY", flush=True)
    srv.serve_forever()


if __name__ == "__main__":
    main()
