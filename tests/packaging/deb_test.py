#!/usr/bin/python3
"""The culvert .deb, built by CPack from this build and installed in a Debian 12 root.

    deb_test.py --build-dir build --cache build/packaging-cache

Builds the package (`cpack -G DEB`), checks its file list, control fields and
conffiles, then installs it with `apt-get install ./culvert_*.deb` into a debootstrap
(minbase) root whose policy-rc.d records and denies every service action, and asserts
the service ends up enabled but not started; then exercises conffile upgrade, remove
and purge. Root is needed (exit 77 = skip unless CULVERT_REQUIRE_PRIVILEGED=1).
"""

import argparse
import glob
import os
import shutil
import subprocess
import sys
import tempfile
import unittest

sys.path.insert(0, os.path.dirname(os.path.abspath(__file__)))
import testmain  # noqa: E402
from chroot_root import ChrootRoot  # noqa: E402

ARGS = None
UNIT = "/lib/systemd/system/culvertd.service"
WANTS = "/etc/systemd/system/multi-user.target.wants/culvertd.service"
FILES = {
    "/usr/sbin/culvertd",
    "/usr/bin/culvertctl",
    "/usr/lib/cni/culvert-cni",
    UNIT,
    "/etc/culvert/bootstrap.yaml",
    "/usr/share/doc/culvert/operator-guide.md",
    "/usr/share/doc/culvert/bootstrap.md",
    "/usr/share/doc/culvert/metrics.md",
    "/usr/share/doc/culvert/xds-support.md",
}
POLICY_RC_D = """#!/bin/sh
# Records what a maintainer script asked of the service manager, allows nothing.
echo "$@" >> /var/log/policy-rc.d.calls
exit 101
"""


_DEB = {}


def build_deb() -> str:
    """cpack -G DEB from this build, once per run; returns the .deb's path."""
    if "path" not in _DEB:
        _DEB["dir"] = tempfile.mkdtemp(prefix="culvert-deb-")
        subprocess.run(["cpack", "-G", "DEB", "--config", os.path.join(ARGS.build_dir, "CPackConfig.cmake"),
                        "-B", _DEB["dir"]], check=True, stdout=subprocess.DEVNULL)
        debs = glob.glob(os.path.join(_DEB["dir"], "culvert_*.deb"))
        assert len(debs) == 1, debs
        _DEB["path"] = debs[0]
    return _DEB["path"]


def package_files(deb: str) -> tuple[set[str], set[str]]:
    out = subprocess.run(["dpkg-deb", "--fsys-tarfile", deb], check=True, capture_output=True).stdout
    listing = subprocess.run(["tar", "-tvf", "-"], input=out, check=True, capture_output=True).stdout.decode()
    files, dirs = set(), set()
    for line in listing.splitlines():
        path = line.split()[5].removeprefix(".")
        (dirs if line.startswith("d") else files).add(path.rstrip("/"))
    return files, dirs


class Deb(unittest.TestCase):
    @classmethod
    def setUpClass(cls):
        cls.deb = build_deb()
        cls.tmp = tempfile.mkdtemp(prefix="culvert-deb-control-")

    @classmethod
    def tearDownClass(cls):
        shutil.rmtree(cls.tmp, ignore_errors=True)

    def field(self, name: str) -> str:
        return subprocess.run(["dpkg-deb", "-f", self.deb, name], check=True, capture_output=True,
                              text=True).stdout.strip()

    def test_file_list(self):
        files, dirs = package_files(self.deb)
        self.assertEqual(files, FILES)
        self.assertIn("/etc/culvert/resources", dirs)

    def test_control_fields(self):
        self.assertEqual(self.field("Package"), "culvert")
        self.assertRegex(os.path.basename(self.deb), r"^culvert_\d+\.\d+\.\d+_amd64\.deb$")
        depends = self.field("Depends")
        for dep in ["init-system-helpers", "libuv1", "libc6"]:
            self.assertIn(dep, depends)

    def test_conffiles_and_maintainer_scripts(self):
        control = tempfile.mkdtemp(dir=self.tmp)
        subprocess.run(["dpkg-deb", "-e", self.deb, control], check=True)
        with open(os.path.join(control, "conffiles")) as f:
            self.assertEqual(f.read().split(), ["/etc/culvert/bootstrap.yaml"])
        for script in ["postinst", "prerm", "postrm"]:
            self.assertTrue(os.access(os.path.join(control, script), os.X_OK), script)
        with open(os.path.join(control, "postinst")) as f:
            code = [line for line in f.read().splitlines() if not line.lstrip().startswith("#")]
        self.assertIn("deb-systemd-helper enable culvertd.service", "\n".join(code))
        for line in code:
            self.assertNotRegex(line, r"deb-systemd-invoke|invoke-rc\.d|systemctl[^\n]*(start|restart)")


class InstalledInDebianRoot(unittest.TestCase):
    @classmethod
    def setUpClass(cls):
        if os.geteuid() != 0:
            if os.environ.get("CULVERT_REQUIRE_PRIVILEGED") == "1":
                raise AssertionError("needs root (CULVERT_REQUIRE_PRIVILEGED=1)")
            raise unittest.SkipTest("needs root for chroot")
        cls.deb = build_deb()
        cls.root = ChrootRoot(ARGS.cache).__enter__()
        try:
            with open(cls.root.p("/usr/sbin/policy-rc.d"), "w") as f:
                f.write(POLICY_RC_D)
            os.chmod(cls.root.p("/usr/sbin/policy-rc.d"), 0o755)
            shutil.copy(cls.deb, cls.root.p("/tmp/"))
            cls.deb_inside = "/tmp/" + os.path.basename(cls.deb)
            cls.install = cls.root.run(["apt-get", "install", "-y", "-q", "--no-install-recommends", cls.deb_inside])
        except BaseException:
            cls.tearDownClass()
            raise

    @classmethod
    def tearDownClass(cls):
        if getattr(cls, "root", None):
            cls.root.__exit__(None, None, None)

    def policy_calls(self) -> str:
        path = self.root.p("/var/log/policy-rc.d.calls")
        return open(path).read() if os.path.exists(path) else ""

    def culvertd_processes_in_root(self) -> list[int]:
        pids = []
        for pid in filter(str.isdigit, os.listdir("/proc")):
            try:
                if os.readlink(f"/proc/{pid}/root") == self.root.path and "culvertd" in os.readlink(f"/proc/{pid}/exe"):
                    pids.append(int(pid))
            except OSError:
                pass
        return pids

    def test_1_files_installed(self):
        listed = set(self.root.run(["dpkg-query", "-L", "culvert"]).stdout.split())
        self.assertTrue(FILES <= listed, FILES - listed)
        for path in FILES:
            self.assertTrue(os.path.isfile(self.root.p(path)), path)
        self.assertTrue(os.path.isdir(self.root.p("/etc/culvert/resources")))

    def test_2_conffiles_registered(self):
        conffiles = self.root.run(["dpkg-query", "-W", "-f=${Conffiles}", "culvert"]).stdout.split()
        self.assertEqual(conffiles[0], "/etc/culvert/bootstrap.yaml")
        self.assertRegex(conffiles[1], r"^[0-9a-f]{32}$")

    def test_3_enabled_not_started(self):
        link = self.root.p(WANTS)
        self.assertTrue(os.path.islink(link), "postinst did not enable culvertd.service")
        self.assertEqual(os.readlink(link), UNIT)
        # deb-systemd-helper answers only "from dpkg", i.e. with DPKG_MAINTSCRIPT_PACKAGE set.
        r = self.root.run(["deb-systemd-helper", "is-enabled", "culvertd.service"], check=False,
                          env={"DPKG_MAINTSCRIPT_PACKAGE": "culvert"})
        self.assertEqual((r.returncode, r.stderr.strip()), (0, "enabled"))
        self.assertNotIn("start", self.policy_calls(), "a maintainer script tried to start the service")
        self.assertEqual(self.culvertd_processes_in_root(), [])

    def test_4_binaries_run(self):
        self.assertRegex(self.root.run(["culvertd", "--version"]).stdout, r"^culvertd \d+\.\d+\.\d+\n$")
        r = self.root.run(["culvertd", "--validate", "--config", "/etc/culvert/bootstrap.yaml"])
        self.assertEqual(r.stdout, "configuration valid: 0 listeners, 0 clusters\n")

    def test_5_upgrade_keeps_edited_conffile_and_does_not_start(self):
        path = self.root.p("/etc/culvert/bootstrap.yaml")
        with open(path) as f:
            edited = f.read().replace("level: info", "level: debug")
        with open(path, "w") as f:
            f.write(edited)
        self.root.run(["apt-get", "install", "-y", "-q", "--reinstall", "-o", "Dpkg::Options::=--force-confold",
                       self.deb_inside])
        with open(path) as f:
            self.assertEqual(f.read(), edited)
        self.assertNotIn("start", self.policy_calls())
        self.assertEqual(self.culvertd_processes_in_root(), [])

    def test_6_disabled_stays_disabled_across_upgrade(self):
        os.unlink(self.root.p(WANTS))  # what `systemctl disable culvertd` does
        self.root.run(["apt-get", "install", "-y", "-q", "--reinstall", "-o", "Dpkg::Options::=--force-confold",
                       self.deb_inside])
        self.assertFalse(os.path.lexists(self.root.p(WANTS)), "upgrade re-enabled a service the admin disabled")
        os.symlink(UNIT, self.root.p(WANTS))

    def test_7_remove_keeps_conffiles_purge_removes_everything(self):
        os.makedirs(self.root.p("/var/lib/culvert"), exist_ok=True)
        self.root.run(["apt-get", "remove", "-y", "-q", "culvert"])
        self.assertFalse(os.path.exists(self.root.p("/usr/sbin/culvertd")))
        self.assertTrue(os.path.exists(self.root.p("/etc/culvert/bootstrap.yaml")), "remove must keep conffiles")
        self.root.run(["apt-get", "purge", "-y", "-q", "culvert"])
        self.assertFalse(os.path.exists(self.root.p("/etc/culvert/bootstrap.yaml")))
        self.assertFalse(os.path.exists(self.root.p("/var/lib/culvert")))
        self.assertFalse(os.path.lexists(self.root.p(WANTS)))


if __name__ == "__main__":
    parser = argparse.ArgumentParser()
    parser.add_argument("--build-dir", required=True)
    parser.add_argument("--cache", required=True)
    ARGS, rest = parser.parse_known_args()
    try:
        testmain.run([sys.argv[0]] + rest)
    finally:
        if _DEB.get("dir"):
            shutil.rmtree(_DEB["dir"], ignore_errors=True)
