#!/usr/bin/python3
"""The two ends of the tunnels test, standard library only (RFC 6455 handshake and
framing written out here, no WebSocket package needed).

    tunnel_peers.py server ADDR WS_PORT ECHO_PORT PROXY_PORT EVENTS_FILE
        WS_PORT:    a WebSocket echo server. Its first message on every connection is a
                    JSON text frame with the path and request headers it received; then
                    each message comes back as sent. The text message "bye" makes it
                    close the TCP connection at once. GET /reject is answered with a
                    plain 403 (an upstream that refuses the upgrade).
        ECHO_PORT:  raw TCP echo (the target of a terminated CONNECT).
        PROXY_PORT: a minimal forward proxy: reads a CONNECT head, records it, answers
                    200, then echoes (the upstream of a forwarded CONNECT).
        Every connection's "open" and "eof" go to EVENTS_FILE as JSON lines.

    tunnel_peers.py client SCENARIO HOST PORT ...: one scenario, result on stdout as JSON.
"""

import base64
import hashlib
import json
import os
import socket
import struct
import sys
import threading
import time

GUID = "258EAFA5-E914-47DA-95CA-C5AB0DC85B11"


def read_head(sock: socket.socket) -> tuple[bytes, bytes]:
    buf = b""
    while b"\r\n\r\n" not in buf:
        chunk = sock.recv(65536)
        if not chunk:
            raise EOFError("closed before the end of the head")
        buf += chunk
    head, _, rest = buf.partition(b"\r\n\r\n")
    return head, rest


def parse_head(head: bytes) -> tuple[str, list[list[str]]]:
    lines = head.decode("latin-1").split("\r\n")
    headers = []
    for line in lines[1:]:
        name, _, value = line.partition(":")
        headers.append([name.strip().lower(), value.strip()])
    return lines[0], headers


def header(headers: list[list[str]], name: str) -> str | None:
    for k, v in headers:
        if k == name:
            return v
    return None


class Reader:
    """Buffered exact reads over a socket."""

    def __init__(self, sock: socket.socket, initial: bytes = b""):
        self.sock, self.buf = sock, initial

    def exact(self, n: int) -> bytes:
        while len(self.buf) < n:
            chunk = self.sock.recv(1 << 20)
            if not chunk:
                raise EOFError(f"closed with {len(self.buf)} of {n} bytes")
            self.buf += chunk
        out, self.buf = self.buf[:n], self.buf[n:]
        return out


def xor_mask(payload: bytes, key: bytes) -> bytes:
    """RFC 6455 §5.3 masking (its own inverse), as one wide integer XOR: fast in CPython."""
    whole = (key * (len(payload) // 4 + 1))[: len(payload)]
    return (int.from_bytes(payload, "big") ^ int.from_bytes(whole, "big")).to_bytes(len(payload), "big")


def frame(opcode: int, payload: bytes, mask: bool) -> bytes:
    """One final frame; clients mask, servers do not."""
    b0, n, m = 0x80 | opcode, len(payload), 0x80 if mask else 0
    if n < 126:
        head = struct.pack("!BB", b0, m | n)
    elif n < 65536:
        head = struct.pack("!BBH", b0, m | 126, n)
    else:
        head = struct.pack("!BBQ", b0, m | 127, n)
    if not mask:
        return head + payload
    key = os.urandom(4)
    return head + key + xor_mask(payload, key)


def read_message(r: Reader) -> tuple[int, bytes]:
    """One message (fragments joined); returns (opcode, payload)."""
    data, first_op = b"", None
    while True:
        b0, b1 = r.exact(2)
        op, n = b0 & 0x0F, b1 & 0x7F
        if n == 126:
            n = struct.unpack("!H", r.exact(2))[0]
        elif n == 127:
            n = struct.unpack("!Q", r.exact(8))[0]
        key = r.exact(4) if b1 & 0x80 else None
        payload = r.exact(n)
        if key:
            payload = xor_mask(payload, key)
        if first_op is None:
            first_op = op
        data += payload
        if b0 & 0x80:
            return first_op, data


# ------------------------------------------------------------------ server

def log_event(events_file: str, lock: threading.Lock, **event) -> None:
    with lock, open(events_file, "a") as f:
        f.write(json.dumps(event) + "\n")


def serve(port: int, addr: str, handler) -> None:
    srv = socket.socket(socket.AF_INET, socket.SOCK_STREAM)
    srv.setsockopt(socket.SOL_SOCKET, socket.SO_REUSEADDR, 1)
    srv.bind((addr, port))
    srv.listen(64)

    def loop():
        while True:
            conn, peer = srv.accept()
            threading.Thread(target=handler, args=(conn, peer), daemon=True).start()

    threading.Thread(target=loop, daemon=True).start()


def server(addr: str, ws_port: int, echo_port: int, proxy_port: int, events: str) -> None:
    lock = threading.Lock()

    def until_eof(conn, r: Reader, kind: str, peer) -> None:
        try:
            while True:
                chunk = r.buf or conn.recv(65536)
                r.buf = b""
                if not chunk:
                    break
                conn.sendall(chunk)
        except OSError:
            pass
        log_event(events, lock, kind=kind, event="eof", peer=peer[0])
        conn.close()

    def ws(conn: socket.socket, peer) -> None:
        try:
            head, rest = read_head(conn)
        except (EOFError, OSError):
            conn.close()
            return
        line, headers = parse_head(head)
        path = line.split(" ")[1]
        log_event(events, lock, kind="ws", event="open", path=path, peer=peer[0])
        if path == "/reject":
            body = b"upstream refuses\n"
            conn.sendall(b"HTTP/1.1 403 Forbidden\r\nContent-Type: text/plain\r\nX-Upstream: yes\r\n"
                         b"Content-Length: " + str(len(body)).encode() + b"\r\n\r\n" + body)
            conn.close()
            return
        key = header(headers, "sec-websocket-key") or ""
        accept = base64.b64encode(hashlib.sha1((key + GUID).encode()).digest()).decode()
        conn.sendall(("HTTP/1.1 101 Switching Protocols\r\nUpgrade: websocket\r\nConnection: Upgrade\r\n"
                      f"Sec-WebSocket-Accept: {accept}\r\n\r\n").encode())
        hello = json.dumps({"path": path, "headers": headers}).encode()
        conn.sendall(frame(0x1, hello, mask=False))
        r = Reader(conn, rest)
        try:
            while True:
                op, data = read_message(r)
                if op == 0x8:
                    conn.sendall(frame(0x8, data[:2], mask=False))
                    break
                if op == 0x1 and data == b"bye":
                    break
                conn.sendall(frame(op, data, mask=False))
        except (EOFError, OSError):
            pass
        log_event(events, lock, kind="ws", event="eof", path=path, peer=peer[0])
        conn.close()

    def echo(conn: socket.socket, peer) -> None:
        log_event(events, lock, kind="echo", event="open", peer=peer[0])
        until_eof(conn, Reader(conn), "echo", peer)

    def proxy(conn: socket.socket, peer) -> None:
        try:
            head, rest = read_head(conn)
        except (EOFError, OSError):
            conn.close()
            return
        line, headers = parse_head(head)
        log_event(events, lock, kind="proxy", event="open", line=line, headers=headers, peer=peer[0])
        conn.sendall(b"HTTP/1.1 200 Connection established\r\n\r\n")
        until_eof(conn, Reader(conn, rest), "proxy", peer)

    serve(ws_port, addr, ws)
    serve(echo_port, addr, echo)
    serve(proxy_port, addr, proxy)
    print("READY", flush=True)
    while True:
        time.sleep(3600)


# ------------------------------------------------------------------ client

def connect(host: str, port: int) -> socket.socket:
    s = socket.create_connection((host, port), timeout=10)
    s.setsockopt(socket.IPPROTO_TCP, socket.TCP_NODELAY, 1)
    return s


def upgrade_request(path: str, extra: str = "") -> bytes:
    key = base64.b64encode(os.urandom(16)).decode()
    return (f"GET {path} HTTP/1.1\r\nHost: ws.test\r\nConnection: Upgrade\r\nUpgrade: websocket\r\n"
            f"Sec-WebSocket-Key: {key}\r\nSec-WebSocket-Version: 13\r\n{extra}\r\n").encode()


def response(s: socket.socket) -> tuple[dict, bytes]:
    head, rest = read_head(s)
    line, headers = parse_head(head)
    return {"status": int(line.split(" ")[1]), "line": line, "headers": headers}, rest


def eof_within(s: socket.socket, r: Reader | None, seconds: float) -> bool:
    """True when the peer closes within `seconds` (bytes before that are dropped)."""
    s.settimeout(seconds)
    try:
        if r and r.buf:
            r.buf = b""
        while True:
            if not s.recv(65536):
                return True
    except socket.timeout:
        return False
    except OSError:
        return True


def client_ws(host: str, port: int, path: str, sizes: list[int], slow_reader: float) -> dict:
    s = connect(host, port)
    s.sendall(upgrade_request(path))
    head, rest = response(s)
    out = {"response": head}
    if head["status"] != 101:
        r = Reader(s, rest)
        length = int(header(head["headers"], "content-length") or 0)
        out["body"] = r.exact(length).decode(errors="replace")
        out["closed_after"] = eof_within(s, None, 3)
        return out
    r = Reader(s, rest)
    op, hello = read_message(r)
    out["upstream_saw"] = json.loads(hello)
    echoed = []
    for size in sizes:
        payload = os.urandom(size // 2).hex().encode()[:size] if size else b""
        t0 = time.monotonic()
        s.sendall(frame(0x2, payload, mask=True))
        if slow_reader and size >= 1 << 20:
            time.sleep(slow_reader)  # the echo backs up in culvert's buffers and the kernel
        op, data = read_message(r)
        echoed.append({"size": size, "ok": op == 0x2 and data == payload,
                       "ms": round((time.monotonic() - t0) * 1000, 1)})
    out["echoed"] = echoed
    # Several frames in one write, answered in order.
    burst = [f"m{i}".encode() for i in range(20)]
    s.sendall(b"".join(frame(0x1, m, mask=True) for m in burst))
    out["burst_ok"] = all(read_message(r) == (0x1, m) for m in burst)
    s.sendall(frame(0x8, struct.pack("!H", 1000), mask=True))
    op, data = read_message(r)
    out["close_echoed"] = op == 0x8
    out["eof_after_close"] = eof_within(s, r, 3)
    s.close()
    return out


def client_ws_hold(host: str, port: int, path: str, action: str, wait: float) -> dict:
    """Opens a WebSocket, then: 'bye' (the upstream closes: do we see EOF?), 'drop' (we
    close: the server logs its eof), 'idle' (send nothing: does culvert close?)."""
    s = connect(host, port)
    s.sendall(upgrade_request(path))
    head, rest = response(s)
    if head["status"] != 101:
        return {"response": head}
    r = Reader(s, rest)
    read_message(r)
    t0 = time.monotonic()
    if action == "bye":
        s.sendall(frame(0x1, b"bye", mask=True))
        return {"eof": eof_within(s, r, wait), "s": round(time.monotonic() - t0, 2)}
    if action == "drop":
        s.close()
        return {"dropped": True}
    return {"eof": eof_within(s, r, wait), "s": round(time.monotonic() - t0, 2)}


def client_connect(host: str, port: int, target: str, size: int, then: str) -> dict:
    s = connect(host, port)
    s.sendall(f"CONNECT {target} HTTP/1.1\r\nHost: {target}\r\n\r\n".encode())
    head, rest = response(s)
    out = {"response": head}
    if not 200 <= head["status"] < 300:
        out["closed_after"] = eof_within(s, None, 3)
        return out
    r = Reader(s, rest)
    payload = os.urandom(size)
    done = threading.Event()

    def send():
        s.sendall(payload)
        done.set()

    t0 = time.monotonic()
    threading.Thread(target=send, daemon=True).start()
    got = r.exact(size)
    out["echo_ms"] = round((time.monotonic() - t0) * 1000, 1)
    done.wait(10)
    out["echo_ok"] = got == payload
    if then == "half-close":
        # Our FIN goes through; the echo server answers with its own, then culvert closes.
        s.shutdown(socket.SHUT_WR)
        out["eof"] = eof_within(s, r, 3)
    s.close()
    return out


def main() -> int:
    if sys.argv[1] == "server":
        server(sys.argv[2], int(sys.argv[3]), int(sys.argv[4]), int(sys.argv[5]), sys.argv[6])
        return 0
    scenario, host, port = sys.argv[2], sys.argv[3], int(sys.argv[4])
    if scenario == "ws":
        sizes = [int(x) for x in sys.argv[6].split(",")] if len(sys.argv) > 6 else []
        slow = float(sys.argv[7]) if len(sys.argv) > 7 else 0
        out = client_ws(host, port, sys.argv[5], sizes, slow)
    elif scenario == "ws-hold":
        out = client_ws_hold(host, port, sys.argv[5], sys.argv[6], float(sys.argv[7]))
    elif scenario == "connect":
        out = client_connect(host, port, sys.argv[5], int(sys.argv[6]), sys.argv[7] if len(sys.argv) > 7 else "")
    else:
        raise SystemExit(f"unknown scenario {scenario}")
    print(json.dumps(out), flush=True)
    return 0


if __name__ == "__main__":
    sys.exit(main())
