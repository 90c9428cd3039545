"""Debian 12's kubectl (package kubernetes-client), for rendering the kustomize base.

The manifests must build with the kustomize inside Debian's kubectl 1.20, whatever
kubectl the machine has on PATH (a newer one accepts more). The package's kubectl is
extracted from its .deb (`apt-get download`, the ordinary apt client) into the cache
dir, not installed: on a machine that already has another `kubectl` package the two
packages would both own /usr/bin/kubectl. $CULVERT_KUBECTL overrides.
"""

import glob
import os
import subprocess

PACKAGE = "kubernetes-client"


def debian_kubectl(cache_dir: str) -> str:
    override = os.environ.get("CULVERT_KUBECTL")
    if override:
        return override
    root = os.path.join(cache_dir, PACKAGE)
    kubectl = os.path.join(root, "usr/bin/kubectl")
    if os.path.exists(kubectl):
        return kubectl
    os.makedirs(cache_dir, exist_ok=True)
    debs = glob.glob(os.path.join(cache_dir, f"{PACKAGE}_*.deb"))
    if not debs:
        subprocess.run(["apt-get", "download", "-q", PACKAGE], cwd=cache_dir, check=True,
                       stdout=subprocess.DEVNULL)
        debs = glob.glob(os.path.join(cache_dir, f"{PACKAGE}_*.deb"))
    subprocess.run(["dpkg-deb", "-x", debs[0], root + ".tmp"], check=True)
    os.rename(root + ".tmp", root)
    return kubectl
