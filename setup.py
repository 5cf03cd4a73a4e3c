"""Build the Cython hot paths in csrc/ as extension modules of the fastkv package.

CRC32C picks SSE4.2 (x86_64) or the ARMv8 CRC instructions (arm64) at run
time, with a table fallback, so no -march flag is needed and the same wheel
runs on every CPU of the architecture.

Before setup() runs, the gRPC modules of fastkv/proto/**/*.proto (fastkv's copy
of etcd 3.4's wire contract) are generated in place with grpc_tools.protoc,
for the protos whose outputs are missing or older than the .proto.
"""
import importlib.util
from pathlib import Path

from Cython.Build import cythonize
from setuptools import Extension, setup


def generate_protos():
    """Run fastkv.proto.ensure_generated(), loading that file by path: fastkv
    itself is not importable yet (its extensions are not built)."""
    path = Path(__file__).resolve().parent / "fastkv" / "proto" / "__init__.py"
    spec = importlib.util.spec_from_file_location("_fastkv_proto_build", path)
    module = importlib.util.module_from_spec(spec)
    spec.loader.exec_module(module)
    for proto in module.ensure_generated():
        print(f"generated Python modules of {proto}")


generate_protos()

CFLAGS = ["-O3", "-std=c11", "-fno-strict-aliasing"]
CRC_C = "csrc/crc32c_impl.c"

extensions = [
    Extension("fastkv._crc32c", ["csrc/crc32c.pyx", CRC_C],
              include_dirs=["csrc"], extra_compile_args=CFLAGS),
    Extension("fastkv.storage._walcodec", ["csrc/walcodec.pyx", CRC_C],
              include_dirs=["csrc"], extra_compile_args=CFLAGS),
    Extension("fastkv.mvcc._keyindex", ["csrc/keyindex.pyx"],
              include_dirs=["csrc"], extra_compile_args=CFLAGS),
    Extension("fastkv.raft._peercodec", ["csrc/peercodec.pyx"],
              include_dirs=["csrc"], extra_compile_args=CFLAGS),
    Extension("fastkv.api._relay", ["csrc/relay.pyx"],
              include_dirs=["csrc"], extra_compile_args=CFLAGS),
    Extension("fastkv.storage._syncwriter", ["csrc/syncwriter.pyx"],
              include_dirs=["csrc"], extra_compile_args=CFLAGS),
]

setup(
    ext_modules=cythonize(
        extensions,
        language_level=3,
        include_path=["csrc"],
        compiler_directives={"boundscheck": False, "wraparound": False,
                             "cdivision": True, "embedsignature": True},
    ),
)
