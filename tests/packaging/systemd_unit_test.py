#!/usr/bin/python3
"""packaging/systemd/culvertd.service: structure, `systemd-analyze verify`, exposure.

    systemd_unit_test.py --culvertd build/agent/culvertd

verify resolves ExecStart= binaries on this machine, so it runs on a copy whose
/usr/sbin/culvertd is the built binary (the .deb installs it at /usr/sbin; deb_test.py
checks that). systemd need not be PID 1: verify and `security --offline` read files.
"""

import argparse
import os
import re
import subprocess
import sys
import tempfile
import unittest

import yaml

sys.path.insert(0, os.path.dirname(os.path.abspath(__file__)))
import testmain  # noqa: E402

REPO = os.path.dirname(os.path.dirname(os.path.dirname(os.path.abspath(__file__))))
UNIT = os.path.join(REPO, "packaging/systemd/culvertd.service")
HOST_BOOTSTRAP = os.path.join(REPO, "packaging/etc/bootstrap.yaml")
CAPABILITIES = {"CAP_BPF", "CAP_PERFMON", "CAP_NET_ADMIN", "CAP_SYS_ADMIN"}
ARGS = None


def parse_unit(text: str) -> dict[str, dict[str, list[str]]]:
    sections, current = {}, None
    for line in text.splitlines():
        line = line.strip()
        if not line or line.startswith(("#", ";")):
            continue
        if line.startswith("["):
            current = sections.setdefault(line.strip("[]"), {})
            continue
        k, _, v = line.partition("=")
        current.setdefault(k, []).append(v)
    return sections


class Unit(unittest.TestCase):
    @classmethod
    def setUpClass(cls):
        with open(UNIT) as f:
            cls.text = f.read()
        cls.unit = parse_unit(cls.text)
        cls.svc = cls.unit["Service"]
        with open(HOST_BOOTSTRAP) as f:
            cls.bootstrap = yaml.safe_load(f)

    def one(self, key: str) -> str:
        self.assertEqual(len(self.svc[key]), 1, key)
        return self.svc[key][0]

    def test_notify_readiness_and_watchdog(self):
        self.assertEqual(self.one("Type"), "notify")
        self.assertEqual(self.one("NotifyAccess"), "main")
        self.assertRegex(self.one("WatchdogSec"), r"^\d+s$")

    def test_runs_the_packaged_binary_on_the_packaged_config(self):
        self.assertEqual(self.one("ExecStart"), "/usr/sbin/culvertd --config /etc/culvert/bootstrap.yaml")
        self.assertEqual(self.one("ExecStartPre"), "/usr/sbin/culvertd --validate --config /etc/culvert/bootstrap.yaml")
        self.assertEqual(self.unit["Install"]["WantedBy"], ["multi-user.target"])

    def test_capability_bounding_set_is_exactly_what_culvert_uses(self):
        self.assertEqual(set(self.one("CapabilityBoundingSet").split()), CAPABILITIES)
        self.assertEqual(self.one("AmbientCapabilities"), "")

    def test_hardening(self):
        expected = {"NoNewPrivileges": "yes", "ProtectSystem": "strict", "ProtectHome": "yes", "PrivateTmp": "yes",
                    "PrivateDevices": "yes", "ProtectKernelModules": "yes", "RestrictNamespaces": "net",
                    "RestrictSUIDSGID": "yes", "LockPersonality": "yes", "MemoryDenyWriteExecute": "yes"}
        for k, v in expected.items():
            self.assertEqual(self.one(k), v, k)
        self.assertNotIn("ProtectKernelTunables", self.svc, "/sys/fs/bpf and the pods' /proc/sys must stay writable")

    def test_writable_paths_are_the_bootstrap_paths(self):
        b = self.bootstrap
        self.assertIn(os.path.dirname(b["bpf"]["pin_root"]), self.one("ReadWritePaths").split())
        self.assertEqual("/run/" + self.one("RuntimeDirectory"), os.path.dirname(b["enrollment"]["socket"]))
        self.assertEqual("/var/lib/" + self.one("StateDirectory"), b["state_dir"])
        self.assertEqual("/etc/" + self.one("ConfigurationDirectory"), os.path.dirname(b["resources"]["path"]))

    def test_host_bootstrap_validates(self):
        r = subprocess.run([ARGS.culvertd, "--validate", "--config", HOST_BOOTSTRAP], capture_output=True, text=True)
        self.assertEqual(r.returncode, 0, r.stderr)

    def test_systemd_analyze_verify(self):
        with tempfile.TemporaryDirectory() as tmp:
            copy = os.path.join(tmp, "culvertd.service")
            with open(copy, "w") as f:
                f.write(self.text.replace("/usr/sbin/culvertd", os.path.abspath(ARGS.culvertd)))
            r = subprocess.run(["systemd-analyze", "verify", "--man=no", copy], capture_output=True, text=True)
            self.assertEqual(r.returncode, 0, r.stderr)
            # verify only warns about unknown keys and bad values: any line about the unit fails.
            self.assertNotIn("culvertd.service", r.stdout + r.stderr)
            # The check itself catches a typo.
            with open(copy, "w") as f:
                f.write(self.text.replace("/usr/sbin/culvertd", os.path.abspath(ARGS.culvertd))
                        .replace("NoNewPrivileges=yes", "NoNewPrivilege=yes"))
            r = subprocess.run(["systemd-analyze", "verify", "--man=no", copy], capture_output=True, text=True)
            self.assertIn("Unknown key", r.stderr)

    def test_exposure_level_is_ok(self):
        r = subprocess.run(["systemd-analyze", "security", "--offline=true", "--no-pager", UNIT],
                           capture_output=True, text=True)
        m = re.search(r"Overall exposure level for culvertd\.service: (\d+\.\d+)", r.stdout)
        self.assertTrue(m, r.stdout[-500:] + r.stderr)
        self.assertLessEqual(float(m.group(1)), 5.0, "hardening regressed")


if __name__ == "__main__":
    parser = argparse.ArgumentParser()
    parser.add_argument("--culvertd", required=True)
    ARGS, rest = parser.parse_known_args()
    testmain.run([sys.argv[0]] + rest)
