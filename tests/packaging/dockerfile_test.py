#!/usr/bin/python3
"""packaging/Dockerfile, checked without a container engine.

    dockerfile_test.py --build-dir build --cache build/packaging-cache

1. Lint: the file is parsed the way the Docker builder reads it (line continuations,
   comments, instructions, stages) and held to the rules that matter here (pinned
   base image, stage references, JSON-form ENTRYPOINT/CMD, apt hygiene, COPY sources
   that exist).
2. Layout: the runtime stage is replayed in a Debian 12 debootstrap (minbase) root:
   its RUN lines run in the chroot, its COPY --from=build sources come from
   `cmake --install` of this build (the build stage's own command), and then
   `culvertd --version`, `culvertd --validate` with the image's default arguments,
   culvertctl and culvert-cni run inside the root.
Root is needed for the chroot (exit 77 = skip unless CULVERT_REQUIRE_PRIVILEGED=1).
"""

import argparse
import json
import os
import re
import shlex
import shutil
import subprocess
import sys
import tempfile
import unittest

sys.path.insert(0, os.path.dirname(os.path.abspath(__file__)))
import testmain  # noqa: E402
from chroot_root import ChrootRoot  # noqa: E402

REPO = os.path.dirname(os.path.dirname(os.path.dirname(os.path.abspath(__file__))))
DOCKERFILE = os.path.join(REPO, "packaging/Dockerfile")
INSTRUCTIONS = {"FROM", "RUN", "CMD", "LABEL", "EXPOSE", "ENV", "ADD", "COPY", "ENTRYPOINT", "VOLUME",
                "USER", "WORKDIR", "ARG", "ONBUILD", "STOPSIGNAL", "HEALTHCHECK", "SHELL"}
ARGS = None
BINARIES = ["agent/culvertd", "agent/ctl/culvertctl", "cni/plugin/culvert-cni"]


class ParseError(ValueError):
    pass


def parse(text: str) -> list[tuple[int, str, str]]:
    """(line number, INSTRUCTION, arguments) with continuations joined and comments dropped."""
    out, buf, start = [], "", 0
    for n, raw in enumerate(text.splitlines(), 1):
        line = raw.rstrip()
        if not buf and (not line.strip() or line.lstrip().startswith("#")):
            continue
        if buf and line.lstrip().startswith("#"):
            continue  # comment lines inside a continuation are removed by the builder
        if not buf:
            start = n
        if line.endswith("\\"):
            buf += line[:-1] + " "
            continue
        buf += line
        m = re.match(r"\s*([A-Za-z]+)\s+(.*)$", buf)
        if not m:
            raise ParseError(f"line {start}: not an instruction: {buf.strip()}")
        keyword = m.group(1).upper()
        if keyword not in INSTRUCTIONS:
            raise ParseError(f"line {start}: unknown instruction {m.group(1)}")
        if m.group(1) != keyword:
            raise ParseError(f"line {start}: instruction {m.group(1)} is not upper case")
        out.append((start, keyword, " ".join(m.group(2).split())))
        buf = ""
    if buf:
        raise ParseError("file ends inside a line continuation")
    return out


class Stage:
    def __init__(self, image: str, name: str | None):
        self.image, self.name, self.instructions = image, name, []


def stages(instructions) -> tuple[dict[str, str], list[Stage]]:
    global_args, out = {}, []
    for n, keyword, args in instructions:
        if keyword == "ARG" and not out:
            k, _, v = args.partition("=")
            global_args[k] = v
            continue
        if keyword == "FROM":
            m = re.fullmatch(r"(\S+)(?:\s+AS\s+(\S+))?", args, re.IGNORECASE)
            if not m:
                raise ParseError(f"line {n}: FROM {args}")
            out.append(Stage(m.group(1), m.group(2)))
            continue
        if not out:
            raise ParseError(f"line {n}: {keyword} before the first FROM")
        out[-1].instructions.append((n, keyword, args))
    return global_args, out


def resolve(image: str, global_args: dict[str, str]) -> str:
    return re.sub(r"\$\{?(\w+)\}?", lambda m: global_args.get(m.group(1), m.group(0)), image)


def copy_args(args: str) -> tuple[dict[str, str], list[str], str]:
    words = shlex.split(args)
    flags = {}
    while words and words[0].startswith("--"):
        k, _, v = words.pop(0)[2:].partition("=")
        flags[k] = v
    return flags, words[:-1], words[-1]


def load():
    with open(DOCKERFILE, encoding="utf-8") as f:
        text = f.read()
    return stages(parse(text))


class Lint(unittest.TestCase):
    def test_parser_rejects_what_the_builder_rejects(self):
        for bad in ["FROM debian:12\nRUN true \\\n", "FROM debian:12\nFETCH x\n", "FROM debian:12\nrun true\n",
                    "RUN true\n"]:
            with self.assertRaises(ParseError, msg=bad):
                stages(parse(bad))
        self.assertEqual(parse("FROM a:1\n# c\nRUN a \\\n# inner\n  && b\n"),
                         [(1, "FROM", "a:1"), (3, "RUN", "a && b")])

    def test_base_images_pinned_and_stages_named(self):
        global_args, sts = load()
        self.assertEqual([s.name for s in sts], ["build", "runtime"])
        for s in sts:
            image = resolve(s.image, global_args)
            self.assertNotIn("$", image, f"unresolved ARG in FROM {s.image}")
            repo, _, tag = image.partition(":")
            self.assertEqual(repo, "debian", "Debian 12 build and runtime")
            self.assertRegex(tag, r"^12\.\d+(-slim)?$", f"{image}: pin a Debian 12 point release, never latest")

    def test_copy_from_names_an_earlier_stage_and_context_sources_exist(self):
        _, sts = load()
        seen = set()
        for s in sts:
            for n, keyword, args in s.instructions:
                self.assertNotEqual(keyword, "ADD", f"line {n}: use COPY")
                if keyword != "COPY":
                    continue
                flags, sources, dest = copy_args(args)
                if "from" in flags:
                    self.assertIn(flags["from"], seen, f"line {n}: --from={flags['from']} is not an earlier stage")
                else:
                    for src in sources:
                        self.assertTrue(src == "." or os.path.exists(os.path.join(REPO, src)), f"line {n}: {src}")
            seen.add(s.name)

    def test_apt_hygiene_and_absolute_workdir(self):
        _, sts = load()
        for s in sts:
            for n, keyword, args in s.instructions:
                if keyword == "WORKDIR":
                    self.assertTrue(args.startswith("/"), f"line {n}")
                if keyword != "RUN":
                    continue
                self.assertNotRegex(args, r"\bapt-get (dist-)?upgrade\b|\bsudo\b|(^|&&|;)\s*cd\s", f"line {n}")
                if "apt-get install" in args:
                    self.assertIn("apt-get update", args.split("apt-get install")[0], f"line {n}: update first")
                    self.assertIn("--no-install-recommends", args, f"line {n}")
                    self.assertRegex(args, r"apt-get install -y\b", f"line {n}")
                    self.assertTrue(args.rstrip().endswith("rm -rf /var/lib/apt/lists/*"), f"line {n}")

    def test_context_excludes_build_trees(self):
        with open(DOCKERFILE + ".dockerignore", encoding="utf-8") as f:
            ignored = {line.strip() for line in f if line.strip() and not line.startswith("#")}
        self.assertTrue({".git", "build", "build-*"} <= ignored, ignored)

    def test_build_stage_installs_into_out(self):
        _, sts = load()
        runs = " ".join(a for _, k, a in sts[0].instructions if k == "RUN")
        # RuntimeLayout replays this exact install against the local build.
        self.assertIn("DESTDIR=/out cmake --install /build --prefix /usr --component culvert --strip", runs)
        self.assertIn("CULVERT_SETUP_PACKAGES_ONLY=1 packaging/setup.sh", runs)

    def test_runtime_entrypoint_is_json_exec_form(self):
        _, sts = load()
        runtime = {k: a for _, k, a in sts[-1].instructions if k in ("ENTRYPOINT", "CMD", "USER")}
        entry, cmd = json.loads(runtime["ENTRYPOINT"]), json.loads(runtime["CMD"])
        self.assertEqual(entry, ["/usr/sbin/culvertd"])
        self.assertTrue(all(isinstance(x, str) for x in entry + cmd))
        self.assertEqual(cmd, ["--config", "/etc/culvert/bootstrap.yaml"])

    def test_runtime_packages_cover_the_binaries_shared_libraries(self):
        _, sts = load()
        runs = " ".join(a for _, k, a in sts[-1].instructions if k == "RUN")
        listed = set(runs.split("--no-install-recommends", 1)[1].split("&&")[0].split())
        with tempfile.TemporaryDirectory() as tmp:
            os.makedirs(os.path.join(tmp, "debian"))
            open(os.path.join(tmp, "debian", "control"), "w").close()
            r = subprocess.run(["dpkg-shlibdeps", "-O"] + [os.path.abspath(os.path.join(ARGS.build_dir, b)) for b in BINARIES],
                               cwd=tmp, capture_output=True, text=True, check=True)
        needed = {d.split()[0] for d in r.stdout.split("=", 1)[1].split(",")}
        essential_in_slim = {"libc6", "libgcc-s1"}
        self.assertEqual(needed - essential_in_slim - listed, set(),
                         "add these to the runtime stage's apt-get install list")
        self.assertEqual({p for p in listed if p.startswith("lib")} - needed, set(),
                         "no binary links these (static archives?): drop them from the runtime stage")

    def test_runtime_stage_has_no_build_tools(self):
        _, sts = load()
        runtime_runs = " ".join(a for _, k, a in sts[-1].instructions if k == "RUN")
        for tool in ["build-essential", "cmake", "clang", "-dev ", "setup.sh"]:
            self.assertNotIn(tool, runtime_runs + " ")


class RuntimeLayout(unittest.TestCase):
    @classmethod
    def setUpClass(cls):
        if os.geteuid() != 0:
            if os.environ.get("CULVERT_REQUIRE_PRIVILEGED") == "1":
                raise AssertionError("RuntimeLayout needs root (CULVERT_REQUIRE_PRIVILEGED=1)")
            raise unittest.SkipTest("needs root for chroot")
        cls.out = tempfile.mkdtemp(prefix="culvert-image-out-")
        # The build stage's install command, against this build.
        subprocess.run(["cmake", "--install", ARGS.build_dir, "--prefix", "/usr", "--component", "culvert", "--strip"],
                       check=True, env=dict(os.environ, DESTDIR=cls.out), stdout=subprocess.DEVNULL)
        cls.root = ChrootRoot(ARGS.cache).__enter__()
        try:
            _, sts = load()
            for n, keyword, args in sts[-1].instructions:
                if keyword == "RUN":
                    cls.root.run(["/bin/sh", "-ec", args])
                elif keyword == "COPY":
                    flags, sources, dest = copy_args(args)
                    base = cls.out if flags.get("from") == "build" else REPO
                    for src in sources:
                        src_path = os.path.join(base, src.lstrip("/").removeprefix("out/"))
                        assert os.path.exists(src_path), f"line {n}: the build stage does not produce {src}"
                        os.makedirs(os.path.dirname(cls.root.p(dest)), exist_ok=True)
                        shutil.copy2(src_path, cls.root.p(dest))
            cls.entry = json.loads({k: a for _, k, a in sts[-1].instructions if k == "ENTRYPOINT"}["ENTRYPOINT"])
            cls.cmd = json.loads({k: a for _, k, a in sts[-1].instructions if k == "CMD"}["CMD"])
        except BaseException:
            cls.tearDownClass()
            raise

    @classmethod
    def tearDownClass(cls):
        if getattr(cls, "root", None):
            cls.root.__exit__(None, None, None)
        shutil.rmtree(cls.out, ignore_errors=True)

    def test_culvertd_version_runs_in_the_image_root(self):
        r = self.root.run(self.entry + ["--version"])
        self.assertRegex(r.stdout, r"^culvertd \d+\.\d+\.\d+\n$")

    def test_default_command_validates(self):
        r = self.root.run(self.entry + self.cmd + ["--validate"])
        self.assertIn("bootstrap valid", r.stdout)

    def test_culvertctl_and_cni_plugin_run(self):
        r = self.root.run(["/usr/bin/culvertctl", "--help"], check=False)
        self.assertEqual(r.returncode, 0, r.stderr)
        r = self.root.run(["/usr/lib/cni/culvert-cni"], env={"CNI_COMMAND": "VERSION"})
        self.assertIn("supportedVersions", json.loads(r.stdout))

    def test_init_container_tools_present(self):
        for tool in ["/bin/sh", "stat", "mount", "nsenter"]:
            r = self.root.run(["/bin/sh", "-c", f"command -v {tool}"], check=False)
            self.assertEqual(r.returncode, 0, f"{tool} missing from the runtime image")

    def test_no_unresolved_libraries(self):
        for binary in ["/usr/sbin/culvertd", "/usr/bin/culvertctl", "/usr/lib/cni/culvert-cni"]:
            r = self.root.run(["/usr/bin/ldd", binary])
            self.assertNotIn("not found", r.stdout, binary)


if __name__ == "__main__":
    parser = argparse.ArgumentParser()
    parser.add_argument("--build-dir", required=True)
    parser.add_argument("--cache", required=True)
    ARGS, rest = parser.parse_known_args()
    testmain.run([sys.argv[0]] + rest)
