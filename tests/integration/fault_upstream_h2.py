#!/usr/bin/python3
"""A controllable HTTP/2 upstream (h2c, prior knowledge) for integration tests.

The HTTP/2 sibling of fault_upstream.py, on Debian's python3-h2 (4.1.0): the same
request headers say how each stream is treated, and every stream that carries a request
is one attempt in the same JSON-lines log (same format, same global attempt numbers per
key, so `attempts(log, key)` counts streams exactly). What only HTTP/2 can do:

    x-fault-status: N            answer status N (default 200)
    x-fault-fail-first: K        apply the fault only to the first K attempts of the key
    x-fault-grpc-status: N       gRPC trailers-only answer: HEADERS(:status 200,
                                 application/grpc, grpc-status N) with END_STREAM
    x-fault-grpc-trailer: N      gRPC answer with a message: HEADERS(:status 200), one
                                 DATA frame (an empty message), then trailers grpc-status N
    x-fault-rst: CODE            RST_STREAM with HTTP/2 error CODE instead of an answer
                                 (7 REFUSED_STREAM, 2 INTERNAL_ERROR, 8 CANCEL, ...)
    x-fault-goaway: 1            GOAWAY (NO_ERROR) whose last-stream-id is just below this
                                 stream's (the previous client stream, or 0); streams at or
                                 below it are still served; the connection closes when the
                                 client closes it
    x-fault-close: MODE          close the connection mid-stream: "1" (FIN, before any
                                 answer), "rst" (TCP RST, before any answer) or "after-head"
                                 (the response HEADERS without END_STREAM, then FIN)
    x-fault-stall: 1             never answer (until the client resets the stream)
    x-fault-delay-ms: D          answer D ms late (other streams go on meanwhile)
    x-fault-trickle-ms: D        the head, then one body byte every D ms (5 bytes)
    x-fault-key: K               as fault_upstream.py (default: the path)
    x-fault-early: 1             apply x-fault-rst / -goaway / -close (1, rst) as soon as
                                 the request HEADERS arrive, while the body may still come;
                                 the attempt is logged then (body_bytes 0)

    x-fault-plan: S1 | S2 | ...  a different fault per attempt of the key: attempt n takes Sn,
                                 a comma-separated list of the x-fault-* headers above
                                 without their prefix ("status=503,delay-ms=300"), in place
                                 of the request's; an empty Sn or an attempt past the list
                                 is answered 200 at once (the log's "faulty" is then
                                 whether Sn is non-empty; x-fault-fail-first is ignored)

A plain answer's body says "server=... key=... attempt=n status=N stream=id body=B"
(B: request body bytes received), so a test can see what the answering stream got.

Other faults apply when the request ended (END_STREAM), after its body was read. Each attempt
record also has "stream_id" and "conn" (this server's connection number, 1, 2, ...), so
a test can tell a retry on the same connection from one on a new connection. Besides
"<log>.conns" (as fault_upstream.py, plus "conn" and "goaway"), resets the client sent
go to "<log>.resets":

    {"t": ..., "server": name, "conn": n, "stream_id": id, "key": K, "error_code": c}

Run it like fault_upstream.py; from a test, `FaultUpstreamH2.start(net, pod, port, name,
log)` spawns it in the pod's netns, and `resets(log)` reads the resets.
"""

import asyncio
import itertools
import os
import socket
import struct
import sys
import time

sys.path.insert(0, os.path.dirname(os.path.abspath(__file__)))
from fault_upstream import FaultUpstream, _append_attempt, append_record, attempts, server_args  # noqa: E402

try:  # the test process itself only needs FaultUpstreamH2 and resets()
    import h2.config
    import h2.connection
    import h2.events
    import h2.exceptions
    from hyperframe.frame import GoAwayFrame
except ImportError:  # pragma: no cover - reported by the server's own start
    h2 = None

REFUSED_STREAM = 0x7


class FaultUpstreamH2(FaultUpstream):
    """One HTTP/2 fault server process in a test pod."""

    SCRIPT = os.path.abspath(__file__)

    def resets(self, key: str | None = None) -> list[dict]:
        return [r for r in resets(self.log_path, key) if r.get("server") == self.name]


def resets(log_path: str, key: str | None = None) -> list[dict]:
    """The RST_STREAMs the client sent, from `log_path`'s ".resets" companion, in order."""
    return attempts(log_path + ".resets", key)


class _Stream:
    def __init__(self, headers: dict):
        self.headers = headers
        self.t = time.monotonic()
        self.body_bytes = 0
        self.key = headers.get("x-fault-key", headers.get(":path", ""))
        self.task: asyncio.Task | None = None
        self.attempt = 0  # its attempt number once logged
        self.faulty = False


class _Connection(asyncio.Protocol):
    ids = itertools.count(1)

    def __init__(self, name: str, log_path: str):
        self.name, self.log_path = name, log_path
        self.h2 = h2.connection.H2Connection(
            h2.config.H2Configuration(client_side=False, header_encoding="utf-8"))
        self.streams: dict[int, _Stream] = {}
        self.transport = None
        self.requests = 0
        self.goaway = False
        self.closed = False
        self.drained_by_client = False  # the client's GOAWAY came while streams were open

    # ------------------------------------------------------------ transport
    def connection_made(self, transport):
        self.transport = transport
        self.conn = next(self.ids)
        self.peer_port = transport.get_extra_info("peername")[1]
        self.opened = time.monotonic()
        self.h2.initiate_connection()
        # DATA the client sent on streams refused or reset early is never acknowledged
        # stream by stream: a large connection window keeps later streams flowing.
        self.h2.increment_flow_control_window(1 << 24)
        self.flush()

    def connection_lost(self, exc):
        self.closed = True
        for s in self.streams.values():
            if s.task:
                s.task.cancel()
        append_record(self.log_path + ".conns", {
            "server": self.name, "conn": self.conn, "peer_port": self.peer_port, "opened": self.opened,
            "closed": time.monotonic(), "requests": self.requests, "goaway": self.goaway})

    def flush(self):
        data = self.h2.data_to_send()
        if data and not self.closed:
            self.transport.write(data)

    def data_received(self, data: bytes):
        if self.drained_by_client:
            return  # python-h2 would take any frame now as a protocol error
        try:
            events = self.h2.receive_data(data)
        except h2.exceptions.ProtocolError as e:
            sys.stderr.write(f"conn {self.conn}: protocol error {e!r}\n")
            self.flush()
            self.transport.close()
            return
        for ev in events:
            if isinstance(ev, h2.events.RequestReceived):
                # A request without a body ends in the same frame: StreamEnded follows.
                s = self.streams[ev.stream_id] = _Stream(dict(ev.headers))
                if s.headers.get("x-fault-early") == "1":
                    self.on_request(ev.stream_id, early=True)
            elif isinstance(ev, h2.events.DataReceived):
                s = self.streams.get(ev.stream_id)
                if s:
                    s.body_bytes += len(ev.data)
                try:
                    self.h2.acknowledge_received_data(ev.flow_controlled_length, ev.stream_id)
                except h2.exceptions.StreamClosedError:
                    pass
            elif isinstance(ev, h2.events.StreamEnded):
                self.on_request(ev.stream_id)
            elif isinstance(ev, h2.events.StreamReset):
                s = self.streams.pop(ev.stream_id, None)
                if s and s.task:
                    s.task.cancel()
                if ev.remote_reset:
                    append_record(self.log_path + ".resets", {
                        "t": time.monotonic(), "server": self.name, "conn": self.conn, "stream_id": ev.stream_id,
                        "key": s.key if s else None, "error_code": int(ev.error_code)})
            elif isinstance(ev, h2.events.ConnectionTerminated):
                self.flush()
                if self.streams:
                    # The client's GOAWAY (a drain): the streams it opened stay its to
                    # finish. python-h2 takes any received GOAWAY as the connection's end
                    # and sends nothing more, so they are held unanswered (as a stalled
                    # upstream would) until the client closes the connection.
                    self.drained_by_client = True
                    return
                self.transport.close()
                return
        self.flush()

    # ------------------------------------------------------------ requests
    def record(self, s: _Stream, stream_id: int) -> None:
        """Logs the stream as one attempt of its key (once), and whether it is faulty."""
        if s.attempt:
            return
        self.requests += 1
        h = s.headers
        record = {"t": s.t, "server": self.name, "peer_port": self.peer_port, "conn": self.conn,
                  "stream_id": stream_id, "key": s.key, "method": h.get(":method"), "path": h.get(":path"),
                  "headers": {k: v for k, v in h.items() if not k.startswith(":")},
                  "body_bytes": s.body_bytes, "protocol": "h2"}
        plan = h.get("x-fault-plan")
        fail_first = h.get("x-fault-fail-first") if plan is None else None
        s.attempt = _append_attempt(self.log_path, record, None if fail_first is None else int(fail_first))
        s.faulty = record["faulty"]
        if plan is not None:
            steps = plan.split("|")
            step = steps[s.attempt - 1].strip() if s.attempt <= len(steps) else ""
            kept = {k: v for k, v in h.items() if k in ("x-fault-key", "x-fault-early") or not k.startswith("x-fault-")}
            for item in filter(None, (x.strip() for x in step.split(","))):
                name, _, value = item.partition("=")
                kept["x-fault-" + name.strip()] = value.strip()
            s.headers, s.faulty = kept, bool(step)

    def on_request(self, stream_id: int, early: bool = False) -> None:
        """The request's HEADERS (early) or its end arrived: act on the x-fault-* headers."""
        s = self.streams.get(stream_id)
        if s is None:
            return
        self.record(s, stream_id)
        h, faulty, n = s.headers, s.faulty, s.attempt
        if faulty and "x-fault-rst" in h:
            self.streams.pop(stream_id, None)
            self.h2.reset_stream(stream_id, error_code=int(h["x-fault-rst"], 0))
            return
        if faulty and h.get("x-fault-goaway") == "1":
            # Written by hand so that h2 keeps serving the streams at or below it.
            frame = GoAwayFrame(0)
            frame.last_stream_id = max(0, stream_id - 2)
            frame.error_code = 0
            self.flush()
            self.transport.write(frame.serialize())
            self.goaway = True
            self.streams.pop(stream_id, None)
            return
        close = h.get("x-fault-close") if faulty else None
        if close in ("1", "rst"):
            if close == "rst":
                sock = self.transport.get_extra_info("socket")
                sock.setsockopt(socket.SOL_SOCKET, socket.SO_LINGER, struct.pack("ii", 1, 0))
                self.transport.abort()
            else:
                self.transport.close()
            return
        if early:
            return  # any other answer waits for the body
        if close == "after-head":
            self.h2.send_headers(stream_id, [(":status", "200"), ("content-type", "text/plain")])
            self.flush()
            self.transport.close()
            return
        if faulty and h.get("x-fault-stall") == "1":
            return  # until the client resets the stream or closes the connection
        delay = int(h.get("x-fault-delay-ms", "0")) / 1000.0 if faulty else 0.0
        trickle = int(h["x-fault-trickle-ms"]) / 1000.0 if faulty and "x-fault-trickle-ms" in h else None
        status = int(h.get("x-fault-status", "200")) if faulty else 200
        if delay or trickle is not None:
            s.task = asyncio.get_running_loop().create_task(self.answer_later(stream_id, delay, trickle, status, n,
                                                                              faulty))
            return
        self.answer(stream_id, status, n, faulty)

    async def answer_later(self, stream_id: int, delay: float, trickle: float | None, status: int, n: int,
                           faulty: bool) -> None:
        await asyncio.sleep(delay)
        if stream_id not in self.streams or self.closed:
            return
        if trickle is None:
            self.answer(stream_id, status, n, faulty)
            self.flush()
            return
        try:
            self.h2.send_headers(stream_id, [(":status", str(status)), ("content-type", "text/plain"),
                                             ("content-length", "5")])
            self.flush()
            for i in range(5):
                await asyncio.sleep(trickle)
                if stream_id not in self.streams or self.closed:
                    return
                self.h2.send_data(stream_id, b".", end_stream=i == 4)
                self.flush()
        except h2.exceptions.StreamClosedError:
            pass
        self.streams.pop(stream_id, None)

    def answer(self, stream_id: int, status: int, n: int, faulty: bool) -> None:
        s = self.streams.pop(stream_id, None)
        if s is None:
            return
        h = s.headers
        extra = []
        if faulty and "x-fault-header" in h:
            name, _, value = h["x-fault-header"].partition("=")
            extra.append((name.lower(), value))
        try:
            if "x-fault-grpc-status" in h:
                grpc = h["x-fault-grpc-status"] if faulty else "0"
                self.h2.send_headers(stream_id, [(":status", "200"), ("content-type", "application/grpc"),
                                                 ("grpc-status", grpc), *extra], end_stream=True)
                return
            if "x-fault-grpc-trailer" in h:
                grpc = h["x-fault-grpc-trailer"] if faulty else "0"
                self.h2.send_headers(stream_id, [(":status", "200"), ("content-type", "application/grpc"), *extra])
                self.h2.send_data(stream_id, b"\x00\x00\x00\x00\x00")  # one empty message
                self.h2.send_headers(stream_id, [("grpc-status", grpc)], end_stream=True)
                return
            payload = (f"server={self.name} key={s.key} attempt={n} status={status} stream={stream_id} "
                       f"body={s.body_bytes}\n").encode()
            self.h2.send_headers(stream_id, [(":status", str(status)), ("content-type", "text/plain"),
                                             ("content-length", str(len(payload))), *extra])
            self.h2.send_data(stream_id, payload, end_stream=True)
        except h2.exceptions.StreamClosedError:
            pass


def main() -> None:
    a = server_args(__doc__)
    if h2 is None:
        sys.exit("fault_upstream_h2.py needs python3-h2 (packaging/setup.sh installs it)")

    async def serve():
        loop = asyncio.get_running_loop()
        server = await loop.create_server(lambda: _Connection(a.name, a.log), a.addr, a.port, reuse_address=True,
                                          backlog=128)
        print("READY", flush=True)
        async with server:
            await server.serve_forever()

    asyncio.run(serve())


if __name__ == "__main__":
    main()
