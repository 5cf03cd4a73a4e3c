# cython: language_level=3
"""CRC-32C (Castagnoli) over any contiguous buffer.

fastkv._crc32c wraps csrc/crc32c_impl.c, which picks the SSE4.2 (x86_64) or
ARMv8 CRC32 instructions at run time and falls back to a slicing-by-8 table.
Set FASTKV_CRC32C=table before the first call to force the table path.

    crc32c(b"123456789") == 0xE3069283
    crc32c(b, crc32c(a)) == crc32c(a + b)
"""
from cpython.buffer cimport PyBUF_SIMPLE, PyBuffer_Release, PyObject_GetBuffer
from libc.stdint cimport uint32_t

cdef extern from "crc32c_impl.h" nogil:
    uint32_t fastkv_crc32c(uint32_t crc, const void *buf, size_t len)
    uint32_t fastkv_crc32c_sw(uint32_t crc, const void *buf, size_t len)
    const char *fastkv_crc32c_backend()

# Buffers larger than this are checksummed with the GIL released, so other
# threads (the event loop while the WAL thread checksums a segment) run.
cdef enum:
    NOGIL_THRESHOLD = 65536


cdef uint32_t _check_value(object value) except? 0xFFFFFFFF:
    if not (0 <= value <= 0xFFFFFFFF):
        raise ValueError("crc32c value must be in [0, 2**32)")
    return <uint32_t>value


ctypedef uint32_t (*crc_fn)(uint32_t, const void *, size_t) noexcept nogil


cdef uint32_t _checksum(crc_fn fn, object data, object value) except? 0xFFFFFFFF:
    """Run fn over data's buffer, without the GIL for large buffers."""
    cdef Py_buffer view
    cdef uint32_t crc = _check_value(value)
    PyObject_GetBuffer(data, &view, PyBUF_SIMPLE)
    try:
        if view.len > NOGIL_THRESHOLD:
            with nogil:
                crc = fn(crc, view.buf, <size_t>view.len)
        else:
            crc = fn(crc, view.buf, <size_t>view.len)
    finally:
        PyBuffer_Release(&view)
    return crc


def crc32c(data, value=0):
    """CRC-32C of `data` (bytes-like), continuing from checksum `value`."""
    return _checksum(fastkv_crc32c, data, value)


def crc32c_table(data, value=0):
    """CRC-32C of `data` through the portable table path (for tests/benchmarks)."""
    return _checksum(fastkv_crc32c_sw, data, value)


def backend():
    """The implementation crc32c() uses: "sse4.2", "armv8" or "table"."""
    return fastkv_crc32c_backend().decode("ascii")
