#!/usr/bin/python3
"""The DaemonSet's install-cni init script, run for real in a private mount namespace.

    init_script_test.py --cache build/packaging-cache

The script is taken from the rendered base (Debian's kubectl), its paths moved under a
temporary directory (/sys/fs/bpf -> T/bpf, /run/culvert/cgroup2 -> T/cgroup2,
/hostproc/1 -> /proc/<this test>) and `culvertd install-cni` replaced by a marker. It
runs twice, like a container: in a child cgroup with its own cgroup namespace, inside
`unshare --mount --propagation private`, so nothing it mounts reaches the host and all
of it disappears with the namespace. Asserted: bpffs and cgroup2 end up mounted, the
cgroup2 mount is the host's root cgroup (same device and inode as this machine's
cgroup v2 root) although a plain mount in that namespace would give the container's
cgroup (checked as a control), and a second run mounts nothing new. Needs root (exit 77 = skip unless CULVERT_REQUIRE_PRIVILEGED=1).
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

sys.path.insert(0, os.path.join(os.path.dirname(os.path.dirname(os.path.abspath(__file__))), "integration"))
import testhosts as th  # noqa: E402

REPO = os.path.dirname(os.path.dirname(os.path.dirname(os.path.abspath(__file__))))
ARGS = None

PROBE = r"""
set -e
T="$1"
mkdir -p "$T/bpf" "$T/cgroup2"
sh -ec "$2"
sh -ec "$2"
echo "types $(stat -f -c %T "$T/bpf") $(stat -f -c %T "$T/cgroup2")"
echo "cgroup2 $(stat -c %d:%i "$T/cgroup2") host $(stat -c %d:%i "$3")"
echo "mounts $(grep -c " $T/" /proc/self/mountinfo)"
"""


class InitScript(unittest.TestCase):
    @classmethod
    def setUpClass(cls):
        if os.geteuid() != 0:
            if os.environ.get("CULVERT_REQUIRE_PRIVILEGED") == "1":
                raise AssertionError("needs root (CULVERT_REQUIRE_PRIVILEGED=1)")
            raise unittest.SkipTest("needs root to mount")
        out = subprocess.run([debian_kubectl(ARGS.cache), "kustomize", os.path.join(REPO, "packaging/kubernetes/base")],
                             check=True, capture_output=True, text=True).stdout
        ds = next(d for d in yaml.safe_load_all(out) if d and d["kind"] == "DaemonSet")
        init = ds["spec"]["template"]["spec"]["initContainers"][0]
        assert init["command"][:2] == ["/bin/sh", "-ec"], init["command"]
        cls.script = init["command"][2]

    def run_like_a_container(self, script: str) -> dict[str, str]:
        """Runs PROBE with `script` the way the init container runs: in a child cgroup and
        its own cgroup namespace rooted there, with this process standing in for the
        host's PID 1 (/hostproc/1 -> /proc/<this pid>)."""
        with tempfile.TemporaryDirectory(prefix="culvert-init-") as t:
            script = (script.replace("/sys/fs/bpf", f"{t}/bpf").replace("/run/culvert/cgroup2", f"{t}/cgroup2")
                      .replace("/hostproc/1/", f"/proc/{os.getpid()}/")
                      .replace("exec /usr/sbin/culvertd install-cni", f"echo install-cni >> {t}/ran"))
            cg = th.Cgroup(os.path.join(th.cgroup2_root(), f"culvert-init-test-{os.getpid()}"))
            os.mkdir(cg.path)
            try:
                r = subprocess.run(["sh", "-c", 'echo $$ > "$0" && exec "$@"', cg.procs_file,
                                    "unshare", "--mount", "--propagation", "private", "--cgroup",
                                    "sh", "-c", PROBE, "probe", t, script, th.cgroup2_root()],
                                   capture_output=True, text=True, timeout=30)
            finally:
                cg.remove()
            self.assertEqual(r.returncode, 0, r.stderr)
            out = dict(line.split(" ", 1) for line in r.stdout.splitlines())
            with open(os.path.join(t, "ran")) as f:
                out["ran"] = f.read()
            with open("/proc/self/mountinfo") as f:
                self.assertNotIn(t, f.read(), "a mount leaked out of the private namespace")
            return out

    def test_mounts_bpffs_and_the_host_root_cgroup_once(self):
        out = self.run_like_a_container(self.script)
        self.assertEqual(out["types"], "bpf_fs cgroup2fs")
        cgroup2, host = out["cgroup2"].split(" host ")
        self.assertEqual(cgroup2, host, "the mount is not the host's root cgroup")
        self.assertEqual(out["mounts"], "2", "a second run must not mount again")
        self.assertEqual(out["ran"], "install-cni\ninstall-cni\n")

    def test_without_nsenter_the_mount_would_be_the_containers_cgroup(self):
        # The control: proves the check above tells the host's root from the container's.
        plain = self.script.replace("nsenter --cgroup=/hostproc/1/ns/cgroup ", "")
        self.assertNotEqual(plain, self.script)
        out = self.run_like_a_container(plain)
        cgroup2, host = out["cgroup2"].split(" host ")
        self.assertNotEqual(cgroup2, host)

if __name__ == "__main__":
    parser = argparse.ArgumentParser()
    parser.add_argument("--cache", required=True)
    ARGS, rest = parser.parse_known_args()
    testmain.run([sys.argv[0]] + rest)
