#!/usr/bin/python3
"""xDS over TLS: culvertd against a python3-grpcio control plane on
grpc.ssl_server_credentials, with certificates made by the openssl CLI at test time.

    /usr/bin/python3 tests/integration/xds_tls_test.py \
        --culvertd build/agent/culvertd --culvertctl build/agent/culvertctl

1. mTLS (the server requires a client certificate), server pinned by its SPIFFE URI
   SAN: culvertd connects, ACKs LDS/RDS/CDS/EDS and serves a captured request.
2. A server whose certificate (same CA) lacks the expected SAN: culvertd refuses it
   after chain verification; the reason is in /config_dump and the log; the server
   never sees a stream.
3. No client certificate where the server requires one: the server refuses the
   handshake; /config_dump names the likely cause.

Needs root (exit 77 = skip when not root, unless CULVERT_REQUIRE_PRIVILEGED=1).
"""

import json
import os
import subprocess
import sys
import time

sys.path.insert(0, os.path.dirname(os.path.abspath(__file__)))
import testhosts as th  # noqa: E402
from culvertd_harness import Culvertd, describe, free_port, run_test, tail  # noqa: E402
from xds_ads_test import CDS, EDS, LDS, RDS, ControlPlane, Resources, compile_protos  # noqa: E402

REPO = os.path.dirname(os.path.dirname(os.path.dirname(os.path.abspath(__file__))))
MAKE_CERTS = os.path.join(REPO, "tests", "unit", "proxy", "tls", "make_test_certs.sh")
CLIENT_IP, SERVER_IP, SERVER_PORT = "10.244.1.1", "10.244.1.2", 8080
VIP = "10.96.0.10"
CP_SPIFFE = "URI:spiffe://culvert.test/ns/cp/sa/xds"


def read(path: str) -> bytes:
    with open(path, "rb") as f:
        return f.read()


def xds_bootstrap(port: int, certs: str, client_cert: bool) -> str:
    text = (f"xds:\n  address: \"127.0.0.1:{port}\"\n  tls:\n"
            f"    ca_file: \"{certs}/ca.crt\"\n"
            f"    match_subject_alt_names: [\"{CP_SPIFFE}\"]\n")
    if client_cert:
        text += f"    cert_file: \"{certs}/client.crt\"\n    key_file: \"{certs}/client.key\"\n"
    return text


def connect_error(d: Culvertd, timeout: float = 10.0) -> str:
    """The ADS client's last_connect_error message from /config_dump, once there is one."""
    deadline = time.monotonic() + timeout
    while time.monotonic() < deadline:
        try:
            code, body = d.admin_get("/config_dump")
            if code == 200:
                err = json.loads(body).get("xds", {}).get("last_connect_error")
                if err:
                    return err["message"]
        except (OSError, ValueError):
            pass
        time.sleep(0.1)
    return ""


def scenario(net: th.TestNetwork, args, R: th.Results) -> None:
    import grpc

    certs = net.path("certs")
    cp = subprocess.run(["sh", MAKE_CERTS, certs], capture_output=True, text=True, timeout=60)
    R.check("test PKI made with the openssl CLI", cp.returncode == 0, describe(cp), fatal=True)
    pb = compile_protos(net.path("pb"))
    res = Resources(pb)

    def server_creds(name: str):
        return grpc.ssl_server_credentials([(read(f"{certs}/{name}.key"), read(f"{certs}/{name}.crt"))],
                                           root_certificates=read(f"{certs}/ca.crt"),
                                           require_client_auth=True)

    client = net.add_pod("client", CLIENT_IP)
    server = net.add_pod("server", SERVER_IP)
    try:
        net.assert_isolated()
    except th.HostSafetyError as e:
        R.check("test hosts isolated", False, str(e), fatal=True)
    net.start_echo_server(server, SERVER_PORT)

    # --- 1. mTLS, server pinned by its URI SAN: config arrives, traffic flows.
    port = free_port()
    good = ControlPlane(pb, f"127.0.0.1:{port}", credentials=server_creds("server"))
    d = Culvertd(net, args, R, extra_bootstrap=xds_bootstrap(port, certs, client_cert=True))
    try:
        d.start(wait=False)
        first = good.wait(lambda r: r.type_url == LDS, timeout=15)
        R.check("mTLS: culvertd opens the ADS stream and asks for listeners", first is not None,
                tail(d.log_path, 20), fatal=True)
        R.check("mTLS: node id sent over TLS", first.node.id == "test", str(first.node))
        R.check("node.client_features: only envoy.lb.does_not_support_overprovisioning",
                list(first.node.client_features) == ["envoy.lb.does_not_support_overprovisioning"],
                str(list(first.node.client_features)))
        for type_url, resources in ((LDS, [res.listener("vip", VIP, "routes")]),
                                    (RDS, [res.route("routes", "backend")]),
                                    (CDS, [res.cluster("backend")]),
                                    (EDS, [res.cla("backend", SERVER_IP, SERVER_PORT)])):
            mark = good.mark()
            if type_url in (RDS, EDS):
                good.wait(lambda r, t=type_url: r.type_url == t, timeout=10)
            nonce = good.push(type_url, "v1", resources)
            ack = good.wait(lambda r, t=type_url, n=nonce: r.type_url == t and r.response_nonce == n, mark)
            R.check(f"mTLS: {type_url.rsplit('.', 1)[1]} v1 ACKed",
                    ack is not None and ack.version_info == "v1" and not ack.HasField("error_detail"),
                    str(ack))
        d.wait_ready()
        d.enroll(client)
        got = client.curl(f"http://{VIP}/over-tls", cgroup=d.cgroup)
        R.check("mTLS: a captured request reaches the server with config from the TLS control plane",
                got.returncode == 0 and f"peer={CLIENT_IP} path=/over-tls " in got.stdout, describe(got))
        code, body = d.admin_get("/config_dump")
        dump = json.loads(body)["xds"] if code == 200 else {}
        R.check("mTLS: /config_dump says connected over TLS",
                dump.get("connected") is True and dump.get("tls") is True, str(dump)[:300])
        R.check("mTLS: culvert_xds_connected is 1", d.wait_metric("culvert_xds_connected", 1) == 1)
        d.unenroll(client)
    finally:
        d.stop()
        good.stop()

    # --- 2. Same CA, but the certificate lacks the expected SAN: refused by culvert.
    port = free_port()
    wrong = ControlPlane(pb, f"127.0.0.1:{port}", credentials=server_creds("wrong"))
    d2 = Culvertd(net, args, R, name="culvertd-wrong-san",
                  extra_bootstrap=xds_bootstrap(port, certs, client_cert=True))
    try:
        d2.start(wait=False)
        msg = connect_error(d2)
        want = (f"TLS: server certificate subject alt names (DNS:other.test, IP:127.0.0.2, "
                f"URI:spiffe://culvert.test/ns/cp/sa/other) match none of the expected ({CP_SPIFFE})")
        R.check("wrong SAN: refused, the reason in /config_dump's last_connect_error", msg == want,
                f"got {msg!r}")
        R.check("wrong SAN: the reason is logged", want in tail(d2.log_path, 50), tail(d2.log_path, 20))
        R.check("wrong SAN: the control plane never saw a stream", wrong.streams == 0, f"streams={wrong.streams}")
        R.check("wrong SAN: culvert_xds_connected is 0", d2.metric("culvert_xds_connected") == 0)
    finally:
        d2.stop()
        wrong.stop()

    # --- 3. No client certificate: the server refuses the handshake.
    port = free_port()
    strict = ControlPlane(pb, f"127.0.0.1:{port}", credentials=server_creds("server"))
    d3 = Culvertd(net, args, R, name="culvertd-no-client-cert",
                  extra_bootstrap=xds_bootstrap(port, certs, client_cert=False))
    try:
        d3.start(wait=False)
        msg = connect_error(d3)
        R.check("no client cert: refused by the server, the likely cause named",
                "no client certificate was configured" in msg, f"got {msg!r}")
        R.check("no client cert: the control plane never saw a stream", strict.streams == 0,
                f"streams={strict.streams}")
    finally:
        d3.stop()
        strict.stop()


if __name__ == "__main__":
    sys.exit(run_test("integration_xds_tls", scenario))
