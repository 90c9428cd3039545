#!/usr/bin/python3
"""Renders packaging/kubernetes with Debian 12's kubectl kustomize and checks the result.

    manifests_test.py --culvertd build/agent/culvertd --cache build/packaging-cache

Checks every DaemonSet host path, capability, probe host and mount propagation the
operator guide promises, that the bootstrap's paths are the DaemonSet's mounts, and
that the bootstrap in each rendered ConfigMap passes `culvertd --validate`.
"""

import argparse
import os
import subprocess
import sys
import tempfile
import unittest

import yaml

sys.path.insert(0, os.path.dirname(os.path.abspath(__file__)))
import testmain  # noqa: E402
from kubectl_debian import debian_kubectl  # noqa: E402

REPO = os.path.dirname(os.path.dirname(os.path.dirname(os.path.abspath(__file__))))
KUBE = os.path.join(REPO, "packaging/kubernetes")
ARGS = None

# host path -> (init container propagation, main container propagation); None = not mounted there.
HOST_PATHS = {
    "/sys/fs/bpf": ("Bidirectional", "HostToContainer"),
    "/run/culvert/cgroup2": ("Bidirectional", "HostToContainer"),
    "/proc": (None, None),  # init only, read-only, plain (no propagation needed)
    "/run/culvert": (None, "HostToContainer"),
    "/run/netns": (None, "HostToContainer"),
    "/var/lib/culvert": (None, None),
    "/opt/cni/bin": (None, None),
    "/etc/cni/net.d": (None, None),
}
CAPABILITIES = {"BPF", "NET_ADMIN", "SYS_ADMIN", "PERFMON"}


def render(directory: str) -> list[dict]:
    out = subprocess.run([ARGS.kubectl, "kustomize", directory], check=True, capture_output=True, text=True)
    return [d for d in yaml.safe_load_all(out.stdout) if d]


def one(docs: list[dict], kind: str) -> dict:
    found = [d for d in docs if d["kind"] == kind]
    assert len(found) == 1, f"expected one {kind}, got {len(found)}"
    return found[0]


def validate(bootstrap_text: str) -> subprocess.CompletedProcess:
    with tempfile.NamedTemporaryFile("w", suffix=".yaml") as f:
        f.write(bootstrap_text)
        f.flush()
        return subprocess.run([ARGS.culvertd, "--validate", "--config", f.name], capture_output=True, text=True)


class Rendered:
    def __init__(self, directory: str):
        self.docs = render(directory)
        self.ds = one(self.docs, "DaemonSet")
        self.cm = one(self.docs, "ConfigMap")
        self.sa = one(self.docs, "ServiceAccount")
        self.pod = self.ds["spec"]["template"]["spec"]
        self.init = {c["name"]: c for c in self.pod["initContainers"]}["install-cni"]
        self.main = {c["name"]: c for c in self.pod["containers"]}["culvertd"]
        self.volumes = {v["name"]: v for v in self.pod["volumes"]}
        self.bootstrap_text = self.cm["data"]["bootstrap.yaml"]
        self.bootstrap = yaml.safe_load(self.bootstrap_text)

    def mounts(self, container: dict) -> dict[str, dict]:
        """host path -> volumeMount, for the container's hostPath mounts."""
        out = {}
        for m in container.get("volumeMounts", []):
            v = self.volumes[m["name"]]
            if "hostPath" in v:
                out[v["hostPath"]["path"]] = m
        return out

    def mount_for(self, container: dict, path: str) -> dict | None:
        """The volumeMount whose mountPath contains `path` (longest match)."""
        best = None
        for m in container.get("volumeMounts", []):
            mp = m["mountPath"].rstrip("/")
            if path == mp or path.startswith(mp + "/"):
                if best is None or len(mp) > len(best["mountPath"]):
                    best = m
        return best


class DaemonSetChecks:
    r: Rendered

    def test_everything_in_one_namespace_and_image_set(self):
        for d in self.r.docs:
            self.assertEqual(d["metadata"].get("namespace"), "kube-system", d["kind"])
        for c in [self.r.init, self.r.main]:
            self.assertEqual(c["image"], "registry.example.com/culvert/culvert:0.1.0")

    def test_pod_level_settings(self):
        pod, spec = self.r.pod, self.r.ds["spec"]
        self.assertIs(pod["hostNetwork"], True)
        self.assertEqual(pod["dnsPolicy"], "ClusterFirstWithHostNet")
        self.assertEqual(pod["priorityClassName"], "system-node-critical")
        self.assertIn({"operator": "Exists"}, pod["tolerations"], "must tolerate every taint")
        self.assertEqual(spec["updateStrategy"]["type"], "RollingUpdate")
        self.assertEqual(spec["updateStrategy"]["rollingUpdate"]["maxUnavailable"], 1)
        self.assertEqual(pod["serviceAccountName"], self.r.sa["metadata"]["name"])
        self.assertEqual(spec["selector"]["matchLabels"].items() - self.r.ds["spec"]["template"]["metadata"]["labels"].items(),
                         set())

    def test_every_host_path_and_its_propagation(self):
        host_paths = {v["hostPath"]["path"] for v in self.r.volumes.values() if "hostPath" in v}
        self.assertEqual(host_paths, set(HOST_PATHS))
        init_mounts, main_mounts = self.r.mounts(self.r.init), self.r.mounts(self.r.main)
        self.assertEqual(set(init_mounts) | set(main_mounts), set(HOST_PATHS), "every host path is mounted")
        for path, (init_prop, main_prop) in HOST_PATHS.items():
            if init_prop:
                self.assertEqual(init_mounts[path].get("mountPropagation"), init_prop, f"init {path}")
            if main_prop:
                self.assertEqual(main_mounts[path].get("mountPropagation"), main_prop, f"culvertd {path}")
        for path, m in main_mounts.items():
            self.assertNotEqual(m.get("mountPropagation"), "Bidirectional",
                                f"unprivileged culvertd cannot have Bidirectional {path}")
        self.assertNotIn("/proc", main_mounts, "culvertd never needs the host's /proc")
        self.assertTrue(init_mounts["/proc"].get("readOnly"))

    def test_init_container_is_privileged_and_installs_the_cni_plugin(self):
        init = self.r.init
        self.assertIs(init["securityContext"]["privileged"], True)
        script = " ".join(init["command"])
        self.assertIn("culvertd install-cni", script)
        # A hostPath volume is always a mount point: decide by filesystem type.
        self.assertIn('[ "$(stat -f -c %T /sys/fs/bpf)" = bpf_fs ] || mount -t bpf bpf /sys/fs/bpf', script)
        self.assertIn('[ "$(stat -f -c %T /run/culvert/cgroup2)" = cgroup2fs ] ||', script)
        self.assertNotIn("mountpoint -q", script)
        self.assertIn("nsenter --cgroup=/hostproc/1/ns/cgroup mount -t cgroup2", script)
        mounts = {m["mountPath"] for m in init["volumeMounts"]}
        self.assertTrue({"/opt/cni/bin", "/etc/cni/net.d", "/hostproc"} <= mounts)

    def test_main_container_capabilities(self):
        sc = self.r.main["securityContext"]
        self.assertFalse(sc.get("privileged", False))
        self.assertIs(sc["allowPrivilegeEscalation"], False)
        self.assertIs(sc["readOnlyRootFilesystem"], True)
        self.assertEqual(sc["capabilities"]["drop"], ["ALL"])
        self.assertEqual(set(sc["capabilities"]["add"]), CAPABILITIES)
        self.assertNotIn("SYS_PTRACE", sc["capabilities"]["add"])

    def test_probes_on_loopback_admin_port(self):
        host, port = self.r.bootstrap["admin"]["address"].rsplit(":", 1)
        self.assertEqual(host, "127.0.0.1")
        for probe, path in [("readinessProbe", "/ready"), ("livenessProbe", "/healthz")]:
            get = self.r.main[probe]["httpGet"]
            self.assertEqual((get["host"], get["port"], get["path"]), ("127.0.0.1", int(port), path), probe)

    def test_requests_and_limits(self):
        for c in [self.r.init, self.r.main]:
            for kind in ["requests", "limits"]:
                self.assertEqual(set(c["resources"][kind]), {"cpu", "memory"}, f"{c['name']} {kind}")

    def test_bootstrap_paths_are_the_daemonset_mounts(self):
        b, main = self.r.bootstrap, self.r.main
        host_of = {m["mountPath"]: self.r.volumes[m["name"]] for m in main["volumeMounts"]}
        cgroup_mount = self.r.mount_for(main, b["capture"]["cgroup"])
        self.assertEqual(cgroup_mount["mountPath"], b["capture"]["cgroup"], "capture.cgroup is the host cgroup2 mount")
        self.assertEqual(host_of[cgroup_mount["mountPath"]]["hostPath"]["path"], "/run/culvert/cgroup2")
        self.assertEqual(host_of[self.r.mount_for(main, b["bpf"]["pin_root"])["mountPath"]]["hostPath"]["path"],
                         "/sys/fs/bpf")
        sock_dir = os.path.dirname(b["enrollment"]["socket"])
        self.assertEqual(host_of[self.r.mount_for(main, sock_dir)["mountPath"]]["hostPath"]["path"], sock_dir,
                         "the CNI plugin on the host reaches the enrollment socket at the same path")
        self.assertEqual(host_of[self.r.mount_for(main, b["state_dir"])["mountPath"]]["hostPath"]["path"],
                         "/var/lib/culvert")
        self.assertIn("configMap", host_of[self.r.mount_for(main, b["resources"]["path"])["mountPath"]])
        config = self.r.mount_for(main, "/etc/culvert/bootstrap.yaml")
        self.assertEqual(self.r.volumes[config["name"]]["configMap"]["name"], self.r.cm["metadata"]["name"])
        self.assertEqual(main["command"], ["/usr/sbin/culvertd", "--config", "/etc/culvert/bootstrap.yaml"])


class Base(DaemonSetChecks, unittest.TestCase):
    @classmethod
    def setUpClass(cls):
        cls.r = Rendered(os.path.join(KUBE, "base"))

    def test_configmap_bootstrap_passes_validate(self):
        r = validate(self.r.bootstrap_text)
        self.assertEqual(r.returncode, 0, r.stdout + r.stderr)
        self.assertIn("bootstrap valid", r.stdout)

    def test_validate_would_catch_a_broken_bootstrap(self):
        r = validate(self.r.bootstrap_text.replace("fail_mode: open", "fail_mode: sometimes"))
        self.assertNotEqual(r.returncode, 0)
        self.assertIn("capture.fail_mode", r.stderr)


class ExternalXdsOverlay(DaemonSetChecks, unittest.TestCase):
    @classmethod
    def setUpClass(cls):
        cls.r = Rendered(os.path.join(KUBE, "overlays/external-xds"))

    def test_bootstrap_points_at_the_control_plane(self):
        self.assertEqual(self.r.bootstrap["xds"]["address"],
                         "xds-control-plane.culvert-system.svc.cluster.local:18000")

    def test_configmap_bootstrap_passes_validate(self):
        r = validate(self.r.bootstrap_text)
        self.assertEqual(r.returncode, 0, r.stdout + r.stderr)

    def test_only_the_bootstrap_differs_from_the_base(self):
        base = Rendered(os.path.join(KUBE, "base"))
        self.assertNotEqual(self.r.cm["metadata"]["name"], base.cm["metadata"]["name"],
                            "a changed bootstrap gets a new ConfigMap name, so the DaemonSet rolls")
        normalized = yaml.safe_dump(self.r.ds).replace(self.r.cm["metadata"]["name"], base.cm["metadata"]["name"])
        self.assertEqual(yaml.safe_load(normalized), base.ds)
        strip = dict(self.r.bootstrap)
        strip.pop("xds")
        self.assertEqual(strip, base.bootstrap)

if __name__ == "__main__":
    parser = argparse.ArgumentParser()
    parser.add_argument("--culvertd", required=True)
    parser.add_argument("--cache", required=True)
    parser.add_argument("--kubectl")
    ARGS, rest = parser.parse_known_args()
    ARGS.kubectl = ARGS.kubectl or debian_kubectl(ARGS.cache)
    testmain.run([sys.argv[0]] + rest)
