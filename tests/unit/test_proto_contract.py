"""fastkv/proto/**/*.proto against etcd 3.4's own protos (Debian's golang-etcd-server-dev).

Both sets are compiled with grpc_tools.protoc into FileDescriptorSets and compared
message by message, enum by enum, service by service: what an etcd client's
generated code sees on the wire must be exactly what fastkv's generated code sees.
"""
from __future__ import annotations

import importlib.resources
import os
import subprocess
import sys
from pathlib import Path

import pytest
from google.protobuf import descriptor_pb2

import fastkv.proto
from fastkv.proto import PROTO_FILES, ROOT

ETCD_SRC = Path("/usr/share/gocode/src/go.etcd.io")
# etcd's protos import each other as "etcd/<path>", relative to ETCD_SRC.
ETCD_PROTOS = (
    "etcd/mvcc/mvccpb/kv.proto",
    "etcd/auth/authpb/auth.proto",
    "etcd/etcdserver/etcdserverpb/rpc.proto",
    "etcd/etcdserver/api/v3lock/v3lockpb/v3lock.proto",
    "etcd/etcdserver/api/v3election/v3electionpb/v3election.proto",
)
# etcd package -> fastkv package (the same names: the full names are the wire contract).
PACKAGES = {p: p for p in ("mvccpb", "authpb", "etcdserverpb", "v3lockpb", "v3electionpb")}

# Just enough of gogoproto and google.api to compile etcd's files; the options are
# dropped from the comparison anyway.
GOGO_STUB = """\
syntax = "proto2";
package gogoproto;
import "google/protobuf/descriptor.proto";
extend google.protobuf.FileOptions {
  optional bool goproto_getters_all = 63001;
  optional bool goproto_enum_prefix_all = 63002;
  optional bool marshaler_all = 63017;
  optional bool unmarshaler_all = 63018;
  optional bool sizer_all = 63020;
}
"""
ANNOTATIONS_STUB = """\
syntax = "proto3";
package google.api;
import "google/protobuf/descriptor.proto";
message HttpRule {
  string post = 4;
  string body = 7;
  repeated HttpRule additional_bindings = 11;
}
extend google.protobuf.MethodOptions {
  HttpRule http = 72295728;
}
"""

LABELS = {descriptor_pb2.FieldDescriptorProto.LABEL_REPEATED: "repeated"}


def _protoc(args: list[str]) -> None:
    include = importlib.resources.files("grpc_tools") / "_proto"
    cmd = [sys.executable, "-m", "grpc_tools.protoc", f"-I{include}", *args]
    proc = subprocess.run(cmd, capture_output=True, text=True)
    assert proc.returncode == 0, f"protoc failed: {' '.join(cmd)}\n{proc.stderr}"


def _load_set(path: Path) -> descriptor_pb2.FileDescriptorSet:
    return descriptor_pb2.FileDescriptorSet.FromString(path.read_bytes())


@pytest.fixture(scope="module")
def etcd_set(tmp_path_factory) -> descriptor_pb2.FileDescriptorSet:
    missing = [p for p in ETCD_PROTOS if not (ETCD_SRC / p).is_file()]
    if missing:
        pytest.fail(f"etcd 3.4's protos are missing ({ETCD_SRC / missing[0]}): this test "
                    "compares fastkv's protos against them; install Debian's "
                    "golang-etcd-server-dev (apt-get install -y golang-etcd-server-dev, "
                    "as ci/test does)", pytrace=False)
    tmp = tmp_path_factory.mktemp("etcd_protos")
    stubs = tmp / "include"
    (stubs / "gogoproto").mkdir(parents=True)
    (stubs / "google" / "api").mkdir(parents=True)
    (stubs / "gogoproto" / "gogo.proto").write_text(GOGO_STUB)
    (stubs / "google" / "api" / "annotations.proto").write_text(ANNOTATIONS_STUB)
    out = tmp / "etcd.pb"
    # Stubs first, so they win over any real gogo/googleapis copy.
    _protoc([f"-I{stubs}", f"-I{ETCD_SRC}", "--include_imports",
             f"--descriptor_set_out={out}", *ETCD_PROTOS])
    return _load_set(out)


@pytest.fixture(scope="module")
def our_set(tmp_path_factory) -> descriptor_pb2.FileDescriptorSet:
    out = tmp_path_factory.mktemp("fastkv_protos") / "fastkv.pb"
    _protoc([f"-I{ROOT}", "--include_imports", f"--descriptor_set_out={out}",
             *(str(ROOT / p) for p in PROTO_FILES)])
    return _load_set(out)


def _type_name(name: str) -> str:
    """'.etcdserverpb.RangeRequest.SortOrder' with the package mapped to ours."""
    if not name:
        return ""
    pkg, _, rest = name.lstrip(".").partition(".")
    return f".{PACKAGES.get(pkg, '?' + pkg)}.{rest}"


def _contract(files) -> dict:
    """Everything of the five packages that generated code depends on."""
    messages, enums, services = {}, {}, {}

    def add_enum(prefix, enum):
        enums[f"{prefix}.{enum.name}"] = [(v.name, v.number) for v in enum.value]

    def add_message(prefix, msg):
        name = f"{prefix}.{msg.name}"
        oneofs = [o.name for o in msg.oneof_decl]
        messages[name] = {
            f.name: {
                "number": f.number,
                "type": descriptor_pb2.FieldDescriptorProto.Type.Name(f.type),
                "type_name": _type_name(f.type_name),
                "label": LABELS.get(f.label, "single"),
                "oneof": oneofs[f.oneof_index] if f.HasField("oneof_index") else None,
                "proto3_optional": f.proto3_optional,
            }
            for f in msg.field
        }
        for e in msg.enum_type:
            add_enum(name, e)
        for nested in msg.nested_type:
            add_message(name, nested)

    for f in files:
        if f.package not in PACKAGES.values():
            continue
        pkg = PACKAGES.get(f.package, f.package)
        for e in f.enum_type:
            add_enum(pkg, e)
        for m in f.message_type:
            add_message(pkg, m)
        for s in f.service:
            services[f"{pkg}.{s.name}"] = {
                m.name: (_type_name(m.input_type), _type_name(m.output_type),
                         m.client_streaming, m.server_streaming)
                for m in s.method
            }
    return {"messages": messages, "enums": enums, "services": services}


def _assert_same(kind: str, ours: dict, theirs: dict) -> None:
    assert sorted(ours) == sorted(theirs), f"{kind}: the set of names differs"
    for name in theirs:
        assert ours[name] == theirs[name], f"{kind} {name} differs from etcd 3.4"


@pytest.mark.parametrize("kind", ["messages", "enums", "services"])
def test_matches_etcd(kind, etcd_set, our_set):
    theirs = _contract(etcd_set.file)
    ours = _contract(our_set.file)
    assert theirs[kind], f"no {kind} found in etcd's protos"
    _assert_same(kind, ours[kind], theirs[kind])


def test_contract_is_not_trivial(etcd_set):
    c = _contract(etcd_set.file)
    assert len(c["services"]) == 8  # KV Watch Lease Cluster Maintenance Auth Lock Election
    assert c["services"]["etcdserverpb.Watch"]["Watch"][2:] == (True, True)
    assert c["messages"]["etcdserverpb.Compare"]["range_end"]["number"] == 64
    assert c["messages"]["etcdserverpb.WatchResponse"]["events"]["number"] == 11


def test_our_files_stand_alone(our_set):
    names = {f.name: f for f in our_set.file}
    assert sorted(names) == sorted(PROTO_FILES), "our protos must import only each other"
    for f in our_set.file:
        assert f.syntax == "proto3", f.name
        assert not f.options.ListFields(), f"{f.name}: file options left in"
        for s in f.service:
            for m in s.method:
                assert not m.options.ListFields(), f"{f.name} {m.name}: method options left in"


def test_generated_modules_are_current(our_set):
    """The generated modules hold the contract of the .proto files as they are now."""
    from fastkv.proto.authpb import auth_pb2
    from fastkv.proto.etcdserverpb import rpc_pb2
    from fastkv.proto.mvccpb import kv_pb2
    from fastkv.proto.v3electionpb import v3election_pb2
    from fastkv.proto.v3lockpb import v3lock_pb2

    modules = [kv_pb2, auth_pb2, rpc_pb2, v3lock_pb2, v3election_pb2]
    assert [m.DESCRIPTOR.name for m in modules] == list(PROTO_FILES)
    generated = [descriptor_pb2.FileDescriptorProto.FromString(m.DESCRIPTOR.serialized_pb)
                 for m in modules]
    assert _contract(generated) == _contract(our_set.file), (
        "generated modules are stale: run python setup.py build_ext --inplace")
    assert fastkv.proto.stale() == []
    assert fastkv.proto.ensure_generated() == []


def test_grpc_modules_import_and_round_trip():
    from fastkv.proto.etcdserverpb import rpc_pb2, rpc_pb2_grpc
    from fastkv.proto.mvccpb import kv_pb2
    from fastkv.proto.v3electionpb import v3election_pb2_grpc
    from fastkv.proto.v3lockpb import v3lock_pb2_grpc

    for svc in ("KV", "Watch", "Lease", "Cluster", "Maintenance", "Auth"):
        assert hasattr(rpc_pb2_grpc, f"{svc}Stub")
        assert hasattr(rpc_pb2_grpc, f"{svc}Servicer")
        assert hasattr(rpc_pb2_grpc, f"add_{svc}Servicer_to_server")
    assert hasattr(v3lock_pb2_grpc, "LockStub")
    assert hasattr(v3election_pb2_grpc, "ElectionStub")

    assert rpc_pb2.PutRequest.DESCRIPTOR.full_name == "etcdserverpb.PutRequest"
    wire = rpc_pb2.PutRequest(key=b"k", value=b"v").SerializeToString()
    assert wire == b"\x0a\x01k\x12\x01v"
    back = rpc_pb2.PutRequest.FromString(wire)
    assert (back.key, back.value, back.lease) == (b"k", b"v", 0)

    resp = rpc_pb2.RangeResponse(kvs=[kv_pb2.KeyValue(key=b"a", mod_revision=7)], count=1)
    assert rpc_pb2.RangeResponse.FromString(resp.SerializeToString()) == resp
    txn = rpc_pb2.TxnRequest(compare=[rpc_pb2.Compare(key=b"a", mod_revision=7,
                                                      target=rpc_pb2.Compare.MOD)])
    assert rpc_pb2.TxnRequest.FromString(txn.SerializeToString()).compare[0] \
        .WhichOneof("target_union") == "mod_revision"


def test_gitignore_covers_generated_files():
    for proto in PROTO_FILES:
        for out in fastkv.proto.outputs(proto):
            proc = subprocess.run(["git", "check-ignore", "-q", str(out.relative_to(ROOT))],
                                  cwd=ROOT, env={**os.environ, "GIT_OPTIONAL_LOCKS": "0"})
            if proc.returncode == 128:   # not a git checkout: read the patterns instead
                kind = out.name[out.name.index("_pb2"):]          # _pb2.py, _pb2_grpc.py, ...
                patterns = (ROOT / ".gitignore").read_text().split()
                assert f"fastkv/proto/**/*{kind}" in patterns, f"{out} must be git-ignored"
                continue
            assert proc.returncode == 0, f"{out} must be git-ignored (generated)"


def test_source_tree_generates_on_import(tmp_path):
    """A source tree without generated modules generates them when fastkv.proto is
    imported; ensure_generated() then redoes only the protos edited since."""
    (tmp_path / "fastkv").mkdir()
    (tmp_path / "fastkv" / "__init__.py").write_text("")
    (tmp_path / "setup.py").write_text("")  # marks a source tree
    src = ROOT / "fastkv" / "proto"
    for path in [src / "__init__.py", *src.glob("*/__init__.py"), *src.glob("*/*.proto")]:
        dest = tmp_path / path.relative_to(ROOT)
        dest.parent.mkdir(parents=True, exist_ok=True)
        dest.write_bytes(path.read_bytes())

    def run(code: str) -> str:
        proc = subprocess.run([sys.executable, "-W", "error", "-c", code], cwd=tmp_path,
                              env={**os.environ, "PYTHONPATH": str(tmp_path)},
                              capture_output=True, text=True)
        assert proc.returncode == 0, proc.stderr
        return proc.stdout.strip()

    out = run("import fastkv.proto.etcdserverpb.rpc_pb2_grpc as g, fastkv.proto as p;"
              "print(g.__file__.startswith(p.ROOT.as_posix()), p.stale())")
    assert out == "True []"
    for proto in PROTO_FILES:
        for gen in fastkv.proto.outputs(proto):
            assert (tmp_path / gen.relative_to(ROOT)).is_file(), gen
    kv = "fastkv/proto/mvccpb/kv.proto"
    earlier = (tmp_path / kv).stat().st_mtime - 10  # as if kv.proto was edited since
    for gen in fastkv.proto.outputs(kv):
        os.utime(tmp_path / gen.relative_to(ROOT), (earlier, earlier))
    assert run("import warnings; warnings.simplefilter('ignore'); import fastkv.proto as p;"
               "print(p.ensure_generated(), p.stale())") \
        == "['fastkv/proto/mvccpb/kv.proto'] []"
    assert not list((tmp_path / "fastkv" / "proto").glob(".protoc-*")), "scratch dir left"
