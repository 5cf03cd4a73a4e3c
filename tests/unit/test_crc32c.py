"""CRC-32C: fastkv._crc32c (hardware and table paths) against known vectors,
the pure-Python reference and the `crc32c` PyPI package."""
import mmap
import os
import platform
import random
import subprocess
import sys

import crc32c as crc32c_pypi
import pytest
from hypothesis import given, settings
from hypothesis import strategies as st

from fastkv import _crc32c
from fastkv.crc32c_ref import crc32c as crc32c_ref

IMPLS = {
    "native": _crc32c.crc32c,
    "table": _crc32c.crc32c_table,
    "ref": crc32c_ref,
    "pypi": crc32c_pypi.crc32c,
}

# Published check values of CRC-32C (RFC 3720 B.4 and the CRC catalogue).
VECTORS = [
    (b"", 0x00000000),
    (b"a", 0xC1D04330),
    (b"123456789", 0xE3069283),
    (bytes(32), 0x8A9136AA),
    (b"\xff" * 32, 0x62A8AB43),
    (bytes(range(32)), 0x46DD794E),
    (bytes(range(31, -1, -1)), 0x113FDB5C),
    (b"The quick brown fox jumps over the lazy dog", 0x22620404),
]


@pytest.mark.parametrize("name", sorted(IMPLS))
@pytest.mark.parametrize("data,expected", VECTORS)
def test_known_vectors(name, data, expected):
    assert IMPLS[name](data) == expected


@pytest.mark.parametrize("name", ["native", "table", "ref"])
def test_chaining(name):
    f = IMPLS[name]
    data = os.urandom(5000)
    whole = f(data)
    for cut in (0, 1, 7, 8, 100, 2500, 4999, 5000):
        assert f(data[cut:], f(data[:cut])) == whole
    # Byte by byte.
    crc = 0
    for i in range(200):
        crc = f(data[i:i + 1], crc)
    assert crc == f(data[:200])


def test_every_length_and_alignment():
    """Lengths 0..300 at offsets 0..15 of a buffer, through memoryview slices:
    all four implementations agree."""
    rng = random.Random(1234)
    buf = bytes(rng.getrandbits(8) for _ in range(300 + 16))
    mv = memoryview(buf)
    for length in range(301):
        offset = rng.randrange(16)
        view = mv[offset:offset + length]
        want = crc32c_pypi.crc32c(bytes(view))
        assert _crc32c.crc32c(view) == want, (length, offset)
        assert _crc32c.crc32c_table(view) == want, (length, offset)
        assert crc32c_ref(view) == want, (length, offset)
        seed = rng.getrandbits(32)
        assert _crc32c.crc32c(view, seed) == crc32c_pypi.crc32c(bytes(view), seed)
        assert _crc32c.crc32c_table(view, seed) == _crc32c.crc32c(view, seed)


@pytest.mark.parametrize("length", [767, 768, 769, 1000, 8191, 24575, 24576, 24577,
                                    50000, 100000, (1 << 20) + 3])
def test_large_buffers_use_interleaved_paths(length):
    """The hardware path processes 3 x 256 and 3 x 8192 byte blocks in
    parallel and joins them; check around those sizes and above the
    release-the-GIL threshold, at every alignment mod 8."""
    data = os.urandom(length + 8)
    for offset in range(8):
        view = memoryview(data)[offset:offset + length]
        want = crc32c_pypi.crc32c(bytes(view))
        assert _crc32c.crc32c(view) == want
        assert _crc32c.crc32c_table(view) == want


@settings(max_examples=300, deadline=None)
@given(st.binary(max_size=2000), st.integers(0, 0xFFFFFFFF), st.integers(0, 64))
def test_hypothesis_matches_pypi(data, value, offset):
    view = memoryview(data)[min(offset, len(data)):]
    want = crc32c_pypi.crc32c(bytes(view), value)
    assert _crc32c.crc32c(view, value) == want
    assert _crc32c.crc32c_table(view, value) == want


def test_buffer_types(tmp_path):
    data = os.urandom(10000)
    want = crc32c_pypi.crc32c(data)
    assert _crc32c.crc32c(bytearray(data)) == want
    assert _crc32c.crc32c(memoryview(data)) == want
    path = tmp_path / "seg"
    path.write_bytes(data)
    with open(path, "rb") as f, mmap.mmap(f.fileno(), 0, access=mmap.ACCESS_READ) as m:
        assert _crc32c.crc32c(m) == want
        assert _crc32c.crc32c_table(m) == want
        assert crc32c_ref(m) == want


def test_bad_arguments():
    with pytest.raises(TypeError):
        _crc32c.crc32c("not bytes")
    with pytest.raises(ValueError):
        _crc32c.crc32c(b"x", -1)
    with pytest.raises(ValueError):
        _crc32c.crc32c(b"x", 1 << 32)
    with pytest.raises(BufferError):
        _crc32c.crc32c(memoryview(b"abcdef")[::2])  # not contiguous


def _cpu_has_sse42() -> bool:
    try:
        with open("/proc/cpuinfo") as f:
            return "sse4_2" in f.read().split()
    except OSError:
        return False


def test_backend():
    assert _crc32c.backend() in ("sse4.2", "armv8", "table")
    if os.environ.get("FASTKV_CRC32C") == "table":
        assert _crc32c.backend() == "table"
    elif platform.machine() == "x86_64" and _cpu_has_sse42():
        assert _crc32c.backend() == "sse4.2"


def test_forced_table_backend_in_subprocess():
    script = (
        "import os, crc32c\n"
        "from fastkv import _crc32c\n"
        "assert _crc32c.backend() == 'table', _crc32c.backend()\n"
        "assert _crc32c.crc32c(b'123456789') == 0xE3069283\n"
        "for n in (0, 1, 7, 8, 9, 255, 769, 24577, 100000):\n"
        "    d = os.urandom(n)\n"
        "    assert _crc32c.crc32c(d) == crc32c.crc32c(d) == _crc32c.crc32c_table(d), n\n"
        "print(_crc32c.backend())\n"
    )
    env = dict(os.environ, FASTKV_CRC32C="table")
    root = os.path.dirname(os.path.dirname(os.path.dirname(os.path.abspath(__file__))))
    env["PYTHONPATH"] = root + os.pathsep + env.get("PYTHONPATH", "")
    out = subprocess.run([sys.executable, "-c", script], env=env, cwd=root,
                         capture_output=True, text=True, timeout=60)
    assert out.returncode == 0, out.stderr
    assert out.stdout.strip() == "table"
