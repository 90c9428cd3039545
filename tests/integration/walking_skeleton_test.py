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

import os
import re
import sys
import time

sys.path.insert(0, os.path.dirname(os.path.abspath(__file__)))
import testhosts as th  # noqa: E402
from culvertd_harness import BPF_LAYOUT_DIR, CURL_CONNECT_FAILED, Culvertd, check_isolated, describe, run_test  # noqa: E402

CLIENT_IP, SERVER_IP, SERVER_PORT = "10.244.1.1", "10.244.1.2", 8080
VIP = "10.96.0.10"
RQ_METRIC = "culvert_http_downstream_rq_total"

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


def thread_nice(pid: int) -> dict[int, int]:
    """Each thread's nice value, from /proc/PID/task/TID/stat (field 19)."""
    out = {}
    for tid in os.listdir(f"/proc/{pid}/task"):
        with open(f"/proc/{pid}/task/{tid}/stat") as f:
            stat = f.read()
        out[int(tid)] = int(stat[stat.rindex(")") + 2:].split()[16])
    return out


def scenario(net: th.TestNetwork, args, R: th.Results) -> None:
    client = net.add_pod("client", CLIENT_IP)
    server = net.add_pod("server", SERVER_IP)
    # main_thread_nice: the workers must run first on a shared core (checked below).
    d = Culvertd(net, args, R, extra_bootstrap="main_thread_nice: 10\n")
    check_isolated(net, R)
    net.start_echo_server(server, SERVER_PORT)

    def vip_curl(path: str):
        return client.curl(f"http://{VIP}{path}", cgroup=d.cgroup)

    def expect_body(name: str, cp, path: str) -> bool:
        want = f"peer={CLIENT_IP} path={path} "
        return R.check(name, cp.returncode == 0 and want in cp.stdout,
                       f"want {want!r}; {describe(cp)}")

    # --- baseline, before culvertd exists
    cp = client.curl(f"http://{SERVER_IP}:{SERVER_PORT}/baseline", cgroup=d.cgroup)
    expect_body("baseline: direct curl reaches the server", cp, "/baseline")
    cp = vip_curl("/hello")
    R.check("baseline: VIP is not routed (curl exit 7)",
            cp.returncode == CURL_CONNECT_FAILED, describe(cp), fatal=True)

    # --- start culvertd: root netns, root cgroup (not the test cgroup)
    d.start({"skeleton.yaml": RESOURCES.format(vip=VIP, server_ip=SERVER_IP,
                                               server_port=SERVER_PORT)})
    R.check("culvertd /ready returns 200", True)
    nice = thread_nice(d.proc.pid)
    R.check("main_thread_nice: the main thread at nice 10", nice.get(d.proc.pid) == 10, str(nice))
    R.check("main_thread_nice: the 2 workers keep nice 0",
            sum(1 for tid, n in nice.items() if tid != d.proc.pid and n == 0) >= 2, str(nice))
    names = sorted(open(f"/proc/{d.proc.pid}/task/{tid}/comm").read().strip()
                   for tid in os.listdir(f"/proc/{d.proc.pid}/task"))
    R.check("threads named: culvertd (main), worker-0, worker-1",
            {"culvertd", "worker-0", "worker-1"} <= set(names), str(names))

    cp = vip_curl("/hello")
    R.check("before enroll: VIP not captured (curl exit 7)",
            cp.returncode == CURL_CONNECT_FAILED, describe(cp))

    d.enroll(client)
    body = d.stats_text()
    R.check("admin /stats/prometheus answers", bool(body), "empty or non-200")
    before = d.metric(RQ_METRIC) or 0.0
    # Freed heap goes back to the kernel once configuration has been quiet for 2 s, once.
    trims = d.wait_metric("culvert_heap_trims_total", 1, timeout=6.0)
    time.sleep(2.5)
    trims_later = d.metric("culvert_heap_trims_total")
    R.check("heap trimmed once after the configuration loaded, not again while it stays",
            trims == 1 and trims_later == 1, f"culvert_heap_trims_total {trims}, then {trims_later}")

    # --- captured requests
    nreq = 0
    for i in range(3):
        cp = vip_curl("/hello")
        nreq += 1
        expect_body(f"VIP curl #{i + 1} proxied to the server", cp, "/hello")
    cp = client.curl("-w", r"\nNUM_CONNECTS=%{num_connects}\n",
                     f"http://{VIP}/ka1", f"http://{VIP}/ka2", cgroup=d.cgroup)
    nreq += 2
    expect_body("keep-alive: first of two requests", cp, "/ka1")
    expect_body("keep-alive: second of two requests", cp, "/ka2")
    conns = [int(x) for x in re.findall(r"NUM_CONNECTS=(\d+)", cp.stdout)]
    R.check("keep-alive: both requests on one downstream connection",
            conns == [1, 0], f"num_connects={conns}; {describe(cp)}")

    after = d.wait_metric(RQ_METRIC, before + nreq)
    R.check(f"{RQ_METRIC} rose by {nreq}",
            after is not None and after - before == nreq, f"before={before} after={after}")

    # --- direct traffic is not captured
    cp = client.curl(f"http://{SERVER_IP}:{SERVER_PORT}/direct", cgroup=d.cgroup)
    expect_body("direct curl reaches the server", cp, "/direct")
    time.sleep(1.0)
    still = d.metric(RQ_METRIC)
    R.check(f"direct curl does not move {RQ_METRIC}", still == after,
            f"before={after} after={still}")

    # --- unenroll
    d.unenroll(client)
    cp = vip_curl("/hello")
    R.check("after unenroll: VIP not captured (curl exit 7)",
            cp.returncode == CURL_CONNECT_FAILED, describe(cp))

    # --- stop: pins survive (restart safety); uninstall removes them
    d.stop()
    R.check("pins survive a stop",
            os.path.exists(os.path.join(d.pin_root, BPF_LAYOUT_DIR, "cv_enrolled")),
            f"{d.pin_root}: {th._listdir(d.pin_root)}")
    cp = net.run([args.culvertd, "uninstall", "--config", d.bootstrap], timeout=20)
    R.check("culvertd uninstall exits 0", cp.returncode == 0, describe(cp))
    R.check("pin root gone or empty after uninstall",
            not os.path.exists(d.pin_root) or not os.listdir(d.pin_root),
            f"{d.pin_root}: {th._listdir(d.pin_root)}")


if __name__ == "__main__":
    sys.exit(run_test("integration_walking_skeleton", scenario))
