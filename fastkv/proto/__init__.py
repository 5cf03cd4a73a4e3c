"""fastkv's copy of etcd 3.4's gRPC wire contract, and its Python generation.

The .proto files below this package (mvccpb, authpb, etcdserverpb, v3lockpb,
v3electionpb) are fastkv's own, field for field the same as etcd 3.4's. Their
Python modules (``*_pb2.py``, ``*_pb2.pyi``, ``*_pb2_grpc.py``) are generated,
never committed: setup.py generates them at build time (``pip install``,
``python setup.py build_ext --inplace``), and importing this package
generates them when they are missing, so a plain source tree works too.

The protos import each other by their path from the repo root
(``import "fastkv/proto/mvccpb/kv.proto";``), so the generated modules import
``fastkv.proto.mvccpb.kv_pb2`` and register in protobuf's default descriptor
pool as ``fastkv/proto/...`` files holding ``mvccpb.*``, ``etcdserverpb.*``,
... messages (the full names etcd clients use on the wire).

This module must import nothing but the standard library at the top: setup.py
loads it by path, before fastkv is installed.
"""
from __future__ import annotations

import os
import shutil
import tempfile
import warnings
from pathlib import Path

PROTO_DIR = Path(__file__).resolve().parent
ROOT = PROTO_DIR.parent.parent

# Paths from the repo root; the same strings are the protos' import paths.
PROTO_FILES = (
    "fastkv/proto/mvccpb/kv.proto",
    "fastkv/proto/authpb/auth.proto",
    "fastkv/proto/etcdserverpb/rpc.proto",
    "fastkv/proto/v3lockpb/v3lock.proto",
    "fastkv/proto/v3electionpb/v3election.proto",
)

OUTPUT_SUFFIXES = ("_pb2.py", "_pb2.pyi", "_pb2_grpc.py")


def outputs(proto: str) -> list[Path]:
    """The generated files of one proto (a path from the repo root)."""
    stem = proto[: -len(".proto")]
    return [ROOT / (stem + suffix) for suffix in OUTPUT_SUFFIXES]


def _mtime(path: Path) -> float | None:
    try:
        return path.stat().st_mtime
    except FileNotFoundError:
        return None


def missing() -> list[str]:
    """Protos with at least one generated file missing."""
    return [p for p in PROTO_FILES
            if any(_mtime(out) is None for out in outputs(p))]


def stale() -> list[str]:
    """Protos with a generated file missing or older than the .proto."""
    result = []
    for proto in PROTO_FILES:
        src = _mtime(ROOT / proto)
        if src is None:
            raise FileNotFoundError(f"fastkv: {ROOT / proto} is missing")
        outs = [_mtime(out) for out in outputs(proto)]
        if any(t is None or t < src for t in outs):
            result.append(proto)
    return result


def generate(protos=PROTO_FILES) -> None:
    """Run grpc_tools.protoc on `protos` (paths from the repo root), in place.

    protoc writes into a scratch directory next to the outputs; each file then
    replaces its old version atomically, so a process importing the modules at
    the same time never reads a half-written one.
    """
    protos = list(protos)
    if not protos:
        return
    try:
        from grpc_tools import protoc
    except ImportError as exc:
        raise ImportError(
            "fastkv: generating the gRPC modules from fastkv/proto/**/*.proto needs "
            "grpcio-tools (pip install 'grpcio-tools>=1.60'), or build fastkv with "
            "pip / setup.py, which generates them") from exc
    scratch = tempfile.mkdtemp(prefix=".protoc-", dir=PROTO_DIR)
    try:
        args = ["grpc_tools.protoc", f"-I{ROOT}",
                f"--python_out={scratch}", f"--pyi_out={scratch}",
                f"--grpc_python_out={scratch}"]
        rc = protoc.main(args + [str(ROOT / p) for p in protos])
        if rc != 0:
            raise RuntimeError(f"fastkv: grpc_tools.protoc failed (exit {rc}) on {protos}")
        for proto in protos:
            for out in outputs(proto):
                rel = out.relative_to(ROOT)
                os.replace(os.path.join(scratch, rel), out)
    finally:
        shutil.rmtree(scratch, ignore_errors=True)


def ensure_generated(force: bool = False) -> list[str]:
    """(Re)generate the modules of every proto whose outputs are missing or
    older than the .proto (every proto if `force`); returns those protos."""
    todo = list(PROTO_FILES) if force else stale()
    generate(todo)
    return todo


def _generate_if_missing() -> None:
    # Import-time check: a few stat() calls. Only missing outputs trigger
    # generation here (an installed wheel's files may carry any mtimes, and
    # grpcio-tools is only a build dependency); in a source tree, outputs older
    # than their .proto get a warning.
    if missing():
        ensure_generated()
    elif (ROOT / "setup.py").exists() and stale():
        warnings.warn("fastkv: generated gRPC modules are older than their .proto "
                      "files; rebuild (python setup.py build_ext --inplace) or call "
                      "fastkv.proto.ensure_generated()", stacklevel=2)


if __name__ == "fastkv.proto":  # not when setup.py loads this file by path
    _generate_if_missing()
