#!/usr/bin/python3
"""xds/proto against the canonical xDS v3 definitions.

    /usr/bin/python3 tests/unit/xds/proto/canonical_wire_test.py [--cache DIR]

The canonical .proto files come from the npm tarball pinned in xds/proto/canonical.env
(packaging/setup.sh puts it in /var/cache/culvert/npm; its integrity hash is checked
here too). Both sets are compiled with protoc into descriptor sets, then:

1. every message, field and enum of the project's envoy/** and google/** files exists
   in the canonical set with the same name, number, type, label, message/enum type and
   oneof; every enum value with the same number;
2. representative resources encoded with the canonical definitions decode with the
   project's to the same content (JSON of both, Any payloads included).

Exit 0 = pass, 1 = a mismatch (each one printed), 77 = the tarball is not there (run
packaging/setup.sh).
"""

import argparse
import base64
import hashlib
import os
import subprocess
import sys
import tarfile
import tempfile

REPO = os.path.dirname(os.path.dirname(os.path.dirname(os.path.dirname(os.path.dirname(os.path.abspath(__file__))))))
PROJECT_ROOT = os.path.join(REPO, "xds", "proto")
SKIP = 77


def read_env(path):
    out = {}
    with open(path) as f:
        for line in f:
            line = line.strip()
            if line and not line.startswith("#"):
                k, v = line.split("=", 1)
                out[k] = v
    return out


def integrity(path):
    with open(path, "rb") as f:
        return "sha512-" + base64.b64encode(hashlib.sha512(f.read()).digest()).decode()


def project_protos():
    """The project's copies of canonical files; culvert/ holds culvert's own messages,
    which have no canonical counterpart."""
    protos = []
    for root, _, files in os.walk(PROJECT_ROOT):
        if os.path.relpath(root, PROJECT_ROOT).split(os.sep)[0] == "culvert":
            continue
        for f in files:
            if f.endswith(".proto"):
                protos.append(os.path.relpath(os.path.join(root, f), PROJECT_ROOT))
    return sorted(protos)


def compile_set(includes, files, out):
    cmd = ["protoc", *[f"-I{i}" for i in includes], "-I/usr/include", "--include_imports", "-o", out, *files]
    cp = subprocess.run(cmd, capture_output=True, text=True)
    if cp.returncode != 0:
        raise SystemExit(f"protoc failed: {' '.join(cmd)}\n{cp.stderr}")
    from google.protobuf import descriptor_pb2
    fds = descriptor_pb2.FileDescriptorSet()
    with open(out, "rb") as f:
        fds.ParseFromString(f.read())
    return fds


def pgv_overlay(deps, tmp):
    """The tarball's protoc-gen-validate predates StringRules.ignore_empty, which
    envoy-api's protocol.proto uses in a validation option. Options never reach the
    wire, so a copy with that one field added lets protoc compile the canonical set."""
    src = os.path.join(deps, "protoc-gen-validate", "validate", "validate.proto")
    with open(src) as f:
        text = f.read()
    if "ignore_empty" not in text[text.index("message StringRules {"):]:
        start = text.index("message StringRules {")
        end = text.index("\n}", start)
        text = text[:end] + "\n    optional bool ignore_empty = 26;" + text[end:]
    overlay = os.path.join(tmp, "pgv-overlay")
    os.makedirs(os.path.join(overlay, "validate"))
    with open(os.path.join(overlay, "validate", "validate.proto"), "w") as f:
        f.write(text)
    return overlay


# ------------------------------------------------------------------ 1. descriptors
def index(fds, only_files=None):
    """full name -> DescriptorProto / EnumDescriptorProto, for messages and enums."""
    messages, enums = {}, {}

    def walk_msg(prefix, m, owned):
        name = f"{prefix}.{m.name}"
        if owned:
            messages[name] = m
        for n in m.nested_type:
            walk_msg(name, n, owned)
        for e in m.enum_type:
            if owned:
                enums[f"{name}.{e.name}"] = e

    for f in fds.file:
        owned = only_files is None or f.name in only_files
        for m in f.message_type:
            walk_msg(f".{f.package}" if f.package else "", m, owned)
        for e in f.enum_type:
            if owned:
                enums[f".{f.package}.{e.name}"] = e
    return messages, enums


def compare_descriptors(project_fds, canonical_fds, project_files):
    from google.protobuf import descriptor_pb2
    FD = descriptor_pb2.FieldDescriptorProto
    problems = []
    pm, pe = index(project_fds, set(project_files))
    cm, ce = index(canonical_fds)
    fields_checked = 0
    for name, msg in sorted(pm.items()):
        canon = cm.get(name)
        if canon is None:
            problems.append(f"message {name}: not in the canonical definitions")
            continue
        by_number = {f.number: f for f in canon.field}

        def oneof_of(m, f):
            return m.oneof_decl[f.oneof_index].name if f.HasField("oneof_index") and not f.proto3_optional else None

        for f in msg.field:
            fields_checked += 1
            c = by_number.get(f.number)
            where = f"{name}.{f.name} (= {f.number})"
            if c is None:
                problems.append(f"{where}: no canonical field has number {f.number}")
                continue
            for attr, label in (("name", "name"), ("type", "type"), ("label", "label"), ("type_name", "type")):
                a, b = getattr(f, attr), getattr(c, attr)
                if a != b:
                    if attr in ("type", "label"):
                        a = (FD.Type.Name(a) if attr == "type" else FD.Label.Name(a))
                        b = (FD.Type.Name(b) if attr == "type" else FD.Label.Name(b))
                    problems.append(f"{where}: {attr} {a!r}, canonical {b!r}")
            if oneof_of(msg, f) != oneof_of(canon, c):
                problems.append(f"{where}: oneof {oneof_of(msg, f)!r}, canonical {oneof_of(canon, c)!r}")
            if f.proto3_optional != c.proto3_optional:
                problems.append(f"{where}: proto3 optional {f.proto3_optional}, canonical {c.proto3_optional}")
    for name, enum in sorted(pe.items()):
        canon = ce.get(name)
        if canon is None:
            problems.append(f"enum {name}: not in the canonical definitions")
            continue
        by_name = {v.name: v.number for v in canon.value}
        for v in enum.value:
            if by_name.get(v.name) != v.number:
                problems.append(f"enum {name}.{v.name} = {v.number}: canonical {by_name.get(v.name)}")
    return problems, len(pm), fields_checked, len(pe)


# ------------------------------------------------------------------ 2. round trip
def pool_of(fds):
    from google.protobuf import descriptor_pool
    pool = descriptor_pool.DescriptorPool()
    for f in fds.file:
        pool.Add(f)
    return pool


def message_class(pool, full_name):
    from google.protobuf import message_factory
    return message_factory.MessageFactory(pool).GetPrototype(pool.FindMessageTypeByName(full_name))


T = "type.googleapis.com/"
HCM = T + "envoy.extensions.filters.network.http_connection_manager.v3.HttpConnectionManager"
REPRESENTATIVE = [
    ("envoy.config.listener.v3.Listener", {
        "name": "vip",
        "address": {"socket_address": {"address": "10.96.0.10", "port_value": 80}},
        "bind_to_port": False,
        "filter_chains": [
            {"filter_chain_match": {"destination_port": 80,
                                    "prefix_ranges": [{"address_prefix": "10.96.0.0", "prefix_len": 16}],
                                    "server_names": ["a.example"], "transport_protocol": "raw_buffer"},
             "filters": [{"name": "envoy.filters.network.http_connection_manager", "typed_config": {
                 "@type": HCM, "stat_prefix": "vip", "codec_type": "AUTO",
                 "rds": {"route_config_name": "routes", "config_source": {"ads": {}, "resource_api_version": "V3"}},
                 "http_filters": [{"name": "envoy.filters.http.router", "typed_config": {
                     "@type": T + "envoy.extensions.filters.http.router.v3.Router"}}]}}]},
            {"filters": [{"name": "envoy.filters.network.tcp_proxy", "typed_config": {
                "@type": T + "envoy.extensions.filters.network.tcp_proxy.v3.TcpProxy",
                "stat_prefix": "tcp", "cluster": "db", "idle_timeout": "30s"}}]}]}),
    ("envoy.config.route.v3.RouteConfiguration", {
        "name": "routes",
        "virtual_hosts": [{"name": "all", "domains": ["*", "a.example"], "routes": [
            {"match": {"prefix": "/api", "case_sensitive": False,
                       "headers": [{"name": "x-env", "exact_match": "prod", "invert_match": True}]},
             "route": {"cluster": "backend", "prefix_rewrite": "/", "host_rewrite_literal": "b.example",
                       "timeout": "2.500s"}},
            {"match": {"path": "/healthz"}, "direct_response": {"status": 200, "body": {"inline_string": "ok"}}}]}]}),
    ("envoy.config.cluster.v3.Cluster", {
        "name": "backend", "type": "EDS", "lb_policy": "ROUND_ROBIN", "connect_timeout": "1s",
        "eds_cluster_config": {"eds_config": {"ads": {}}, "service_name": "backend-eds"}}),
    ("envoy.config.endpoint.v3.ClusterLoadAssignment", {
        "cluster_name": "backend",
        "endpoints": [{"locality": {"region": "r", "zone": "z"}, "lb_endpoints": [
            {"endpoint": {"address": {"socket_address": {"address": "10.244.1.2", "port_value": 8080}}},
             "health_status": "HEALTHY", "load_balancing_weight": 3},
            {"endpoint": {"address": {"socket_address": {"address": "fd00::2", "port_value": 8080}}},
             "health_status": "DRAINING"}]}]}),
    ("envoy.service.discovery.v3.DiscoveryRequest", {
        "version_info": "v1", "response_nonce": "n1", "type_url": T + "envoy.config.cluster.v3.Cluster",
        "resource_names": ["a", "b"],
        "node": {"id": "node", "cluster": "c", "user_agent_name": "culvert", "user_agent_version": "0.1.0",
                 "locality": {"zone": "z1"}, "metadata": {"team": "net"}},
        "error_detail": {"code": 3, "message": "backend: bad"}}),
    ("envoy.service.discovery.v3.DeltaDiscoveryResponse", {
        "system_version_info": "3", "type_url": T + "envoy.config.cluster.v3.Cluster", "nonce": "d1",
        "removed_resources": ["gone"],
        "resources": [{"name": "backend", "version": "7", "resource": {
            "@type": T + "envoy.config.cluster.v3.Cluster", "name": "backend", "type": "STATIC",
            "load_assignment": {"cluster_name": "backend", "endpoints": [{"lb_endpoints": [{"endpoint": {
                "address": {"socket_address": {"address": "127.0.0.1", "port_value": 9}}}}]}]}}}]}),
]


def round_trip(project_pool, canonical_pool):
    from google.protobuf import json_format
    problems = []
    for full_name, doc in REPRESENTATIVE:
        canon = message_class(canonical_pool, full_name)()
        json_format.ParseDict(doc, canon, descriptor_pool=canonical_pool)
        wire = canon.SerializeToString()
        ours = message_class(project_pool, full_name)()
        ours.ParseFromString(wire)
        want = json_format.MessageToDict(canon, descriptor_pool=canonical_pool, preserving_proto_field_name=True)
        got = json_format.MessageToDict(ours, descriptor_pool=project_pool, preserving_proto_field_name=True)
        if got != want:
            problems.append(f"{full_name}: decoded differently\n  canonical: {want}\n  project:   {got}")
        if ours.SerializeToString(deterministic=True) != canon.SerializeToString(deterministic=True):
            problems.append(f"{full_name}: re-encoded bytes differ")
    return problems


def main():
    ap = argparse.ArgumentParser()
    ap.add_argument("--cache", default=os.environ.get("CULVERT_CACHE_DIR", "/var/cache/culvert/npm"))
    args = ap.parse_args()
    env = read_env(os.path.join(PROJECT_ROOT, "canonical.env"))
    tarball = os.path.join(args.cache, env["CANONICAL_NPM_TARBALL"])
    if not os.path.isfile(tarball):
        print(f"SKIP: {tarball} is missing; packaging/setup.sh fetches it")
        return SKIP
    got = integrity(tarball)
    if got != env["CANONICAL_NPM_INTEGRITY"]:
        print(f"FAIL: {tarball} integrity {got}, pinned {env['CANONICAL_NPM_INTEGRITY']}")
        return 1
    with tempfile.TemporaryDirectory(prefix="culvert-canonical-") as tmp:
        with tarfile.open(tarball) as t:
            t.extractall(tmp, members=[m for m in t.getmembers()
                                       if m.name.startswith("package/deps/") and m.name.endswith(".proto")])
        deps = os.path.join(tmp, "package", "deps")
        files = project_protos()
        ours = compile_set([PROJECT_ROOT], files, os.path.join(tmp, "project.pb"))
        canonical = compile_set([pgv_overlay(deps, tmp)] + [os.path.join(deps, d) for d in
                                                            ("envoy-api", "xds", "googleapis", "protoc-gen-validate")],
                                files, os.path.join(tmp, "canonical.pb"))
        problems, nmsg, nfields, nenums = compare_descriptors(ours, canonical, files)
        problems += round_trip(pool_of(ours), pool_of(canonical))
    for p in problems:
        print("MISMATCH", p)
    print(f"{len(files)} files, {nmsg} messages, {nfields} fields, {nenums} enums checked against "
          f"{env['CANONICAL_NPM_PACKAGE']}@{env['CANONICAL_NPM_VERSION']}; {len(REPRESENTATIVE)} resources "
          f"round-tripped; {len(problems)} mismatches")
    return 1 if problems else 0


if __name__ == "__main__":
    sys.exit(main())
