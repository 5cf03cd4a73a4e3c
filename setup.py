"""Build the Cython hot paths in csrc/ as extension modules of the fastkv package.

CRC32C picks SSE4.2 (x86_64) or the ARMv8 CRC instructions (arm64) at run
time, with a table fallback, so no -march flag is needed and the same wheel
runs on every CPU of the architecture.
"""
from Cython.Build import cythonize
from setuptools import Extension, setup

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
