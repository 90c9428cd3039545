"""A Debian 12 minbase root for the packaging tests, built once with debootstrap.

The first use runs `debootstrap --variant=minbase bookworm` against the Debian mirror
apt is configured with (/etc/apt/sources.list*), runs `apt-get update` inside, and
caches the result as a tarball under the build dir; later uses unpack the tarball
into a fresh temporary directory (seconds). Downloaded .debs are kept in a cache
directory that is bind-mounted as the root's /var/cache/apt/archives.

    with ChrootRoot(cache_dir) as root:
        root.run(["apt-get", "install", "-y", "./x.deb"])

Every mount is undone and the directory removed on exit, also after a failure.
"""

import glob
import os
import re
import shutil
import subprocess
import sys
import tempfile

SUITE = "bookworm"
FALLBACK_MIRROR = "http://deb.debian.org/debian"


def log(msg: str) -> None:
    print(msg, flush=True)


def debian_sources() -> list[tuple[str, list[str], list[str]]]:
    """(uri, suites, components) of the Debian archives in apt's configuration."""
    out = []
    for path in sorted(glob.glob("/etc/apt/sources.list.d/*.sources")):
        text = open(path, encoding="utf-8").read()
        for stanza in re.split(r"\n\s*\n", text):
            fields = {}
            for line in stanza.splitlines():
                if line.startswith("#") or ":" not in line:
                    continue
                k, v = line.split(":", 1)
                fields[k.strip().lower()] = v.split()
            if "deb" in fields.get("types", []) and fields.get("uris"):
                for uri in fields["uris"]:
                    out.append((uri, fields.get("suites", []), fields.get("components", ["main"])))
    lists = ["/etc/apt/sources.list"] + sorted(glob.glob("/etc/apt/sources.list.d/*.list"))
    for path in lists:
        if not os.path.exists(path):
            continue
        for line in open(path, encoding="utf-8"):
            line = re.sub(r"\[[^]]*\]", "", line.split("#", 1)[0]).split()
            if len(line) >= 3 and line[0] == "deb":
                out.append((line[1], [line[2]], line[3:] or ["main"]))
    # Only Debian's own archives: the root must not see third-party repositories.
    return [s for s in out if re.search(r"/debian(-security)?/?$", s[0]) and
            any(x.startswith(SUITE) for x in s[1])]


def main_mirror() -> str:
    for uri, suites, _ in debian_sources():
        if SUITE in suites and not uri.rstrip("/").endswith("-security"):
            return uri
    return FALLBACK_MIRROR


def sources_list() -> str:
    lines = []
    for uri, suites, components in debian_sources():
        for suite in suites:
            if suite.startswith(SUITE):
                lines.append(f"deb {uri} {suite} {' '.join(components)}")
    return "\n".join(lines or [f"deb {FALLBACK_MIRROR} {SUITE} main"]) + "\n"


def ensure_tarball(cache_dir: str) -> str:
    os.makedirs(cache_dir, exist_ok=True)
    tarball = os.path.join(cache_dir, f"{SUITE}-minbase.tar")
    if os.path.exists(tarball):
        return tarball
    work = tempfile.mkdtemp(prefix="culvert-debootstrap-", dir=cache_dir)
    os.chmod(work, 0o755)
    try:
        mirror = main_mirror()
        log(f"debootstrap --variant=minbase {SUITE} from {mirror} (cached as {tarball})")
        subprocess.run(["debootstrap", "--variant=minbase", SUITE, work, mirror], check=True,
                       stdout=subprocess.DEVNULL)
        with open(os.path.join(work, "etc/apt/sources.list"), "w", encoding="utf-8") as f:
            f.write(sources_list())
        shutil.copy("/etc/resolv.conf", os.path.join(work, "etc/resolv.conf"))
        subprocess.run(["chroot", work, "apt-get", "update", "-qq"], check=True)
        subprocess.run(["chroot", work, "apt-get", "clean"], check=True)
        subprocess.run(["tar", "-C", work, "-cf", tarball + ".tmp", "."], check=True)
        os.rename(tarball + ".tmp", tarball)
    finally:
        _umount_below(work)
        shutil.rmtree(work, ignore_errors=True)
    return tarball


def _umount_below(root: str) -> None:
    root = os.path.realpath(root)
    with open("/proc/self/mountinfo", encoding="utf-8") as f:
        points = [line.split()[4] for line in f]
    for p in sorted((p for p in points if p == root or p.startswith(root + "/")), key=len, reverse=True):
        subprocess.run(["umount", "-l", p], check=False)


def _sweep_stale_roots(cache_dir: str) -> None:
    """Roots left by a run that was killed (e.g. a ctest timeout): their owner is gone."""
    for path in glob.glob(os.path.join(cache_dir, "culvert-root-*-*")):
        pid = os.path.basename(path).split("-")[2]
        if pid.isdigit() and not os.path.exists(f"/proc/{pid}"):
            _umount_below(path)
            shutil.rmtree(path, ignore_errors=True)


class ChrootRoot:
    def __init__(self, cache_dir: str):
        self.cache_dir = os.path.abspath(cache_dir)
        self.path = ""

    def __enter__(self) -> "ChrootRoot":
        tarball = ensure_tarball(self.cache_dir)
        _sweep_stale_roots(self.cache_dir)
        self.path = tempfile.mkdtemp(prefix=f"culvert-root-{os.getpid()}-", dir=self.cache_dir)
        try:
            subprocess.run(["tar", "-C", self.path, "-xf", tarball], check=True)
            os.chmod(self.path, 0o755)  # mkdtemp's 0700 would lock non-root users (apt's _apt) out of "/"
            shutil.copy("/etc/resolv.conf", os.path.join(self.path, "etc/resolv.conf"))
            archives = os.path.join(self.cache_dir, "apt-archives")
            os.makedirs(os.path.join(archives, "partial"), exist_ok=True)
            subprocess.run(["mount", "--bind", archives, self.p("/var/cache/apt/archives")], check=True)
            subprocess.run(["mount", "-t", "proc", "proc", self.p("/proc")], check=True)
        except BaseException:
            self.__exit__(None, None, None)
            raise
        return self

    def __exit__(self, *exc) -> None:
        if self.path:
            _umount_below(self.path)
            shutil.rmtree(self.path, ignore_errors=True)
            self.path = ""

    def p(self, inside: str) -> str:
        """Host path of a path inside the root."""
        return os.path.join(self.path, inside.lstrip("/"))

    def run(self, argv: list[str], check: bool = True, env: dict | None = None,
            input: str | None = None) -> subprocess.CompletedProcess:
        full_env = {"PATH": "/usr/sbin:/usr/bin:/sbin:/bin", "LC_ALL": "C", "DEBIAN_FRONTEND": "noninteractive"}
        full_env.update(env or {})
        r = subprocess.run(["chroot", self.path] + argv, capture_output=True, text=True, env=full_env,
                           input=input, timeout=600)
        if check and r.returncode != 0:
            sys.stderr.write(r.stdout + r.stderr)
            raise AssertionError(f"in chroot: {' '.join(argv)} exited {r.returncode}")
        return r


if __name__ == "__main__":
    # Fixture setup: build the cached tarball (ctest FIXTURES_SETUP).
    if os.geteuid() != 0:
        sys.exit(1 if os.environ.get("CULVERT_REQUIRE_PRIVILEGED") == "1" else 77)
    print(ensure_tarball(sys.argv[1]))
