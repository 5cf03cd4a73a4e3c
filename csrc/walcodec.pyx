# cython: language_level=3
"""WAL record framing and batch encode/decode (fastkv.storage._walcodec).

The pure-Python reference, with the record format and the definition of a
bad record, is fastkv/storage/walcodec_ref.py; this module has the same API,
the same errors and byte-identical output (the property tests check it).

Hot paths: encode_entries (one allocation of the exact output size, headers,
payloads and CRCs written in place, no intermediate Python objects per record)
and decode/find_next_valid (C loops over the buffer).
"""
from cpython.buffer cimport PyBUF_SIMPLE, PyBuffer_Release, PyObject_GetBuffer
from cpython.bytes cimport PyBytes_AS_STRING, PyBytes_FromStringAndSize, PyBytes_GET_SIZE
from libc.stdint cimport uint8_t, uint32_t, uint64_t

from byteorder cimport ld32, ld64, st32, st64
from libc.string cimport memcpy, memset

cdef extern from "crc32c_impl.h" nogil:
    uint32_t fastkv_crc32c(uint32_t crc, const void *buf, size_t len)

HEADER_SIZE = 16
TYPE_ENTRY = 1
TYPE_HARDSTATE = 2
TYPE_SNAPSHOT = 3
TYPE_METADATA = 4
FLAG_BATCH_END = 1
MAX_PAYLOAD = 1 << 30

cdef enum:
    C_HEADER_SIZE = 16
    C_TYPE_ENTRY = 1
    C_TYPE_HARDSTATE = 2
    C_FLAG_BATCH_END = 1
    C_ENTRY_HEAD = 17         # <QQB: term, index, entry_type
    C_HARDSTATE_SIZE = 24     # <QQQ: term, vote, commit
    C_SNAPSHOT_SIZE = 16      # <QQ: index, term
    C_SCAN_NOGIL = 65536      # scans longer than this release the GIL

cdef Py_ssize_t C_MAX_PAYLOAD = 1 << 30


# Little-endian loads/stores: csrc/byteorder.pxd.

cdef inline Py_ssize_t padded(Py_ssize_t n) noexcept nogil:
    return (n + 7) & ~(<Py_ssize_t>7)

cdef inline bint all_zero(const uint8_t *p, Py_ssize_t n) noexcept nogil:
    cdef Py_ssize_t i
    for i in range(n):
        if p[i]:
            return False
    return True


# --- framing ---------------------------------------------------------------

cdef inline void write_header(uint8_t *rec, Py_ssize_t length, uint32_t batch_seq,
                              uint8_t rtype, uint8_t flags) noexcept nogil:
    """Fill the header and zero padding of a record whose payload is already
    at rec + 16, then compute its CRC."""
    cdef Py_ssize_t pad = padded(length) - length
    st32(rec, <uint32_t>length)
    st32(rec + 8, batch_seq)
    rec[12] = rtype
    rec[13] = flags
    rec[14] = 0
    rec[15] = 0
    if pad:
        memset(rec + C_HEADER_SIZE + length, 0, pad)
    cdef uint32_t crc = fastkv_crc32c(0, rec, 4)
    crc = fastkv_crc32c(crc, rec + 8, 8 + <size_t>length)
    st32(rec + 4, crc)


cdef uint8_t record_type(object rtype) except? 0:
    cdef long t = rtype
    if t < 1 or t > 255:
        raise ValueError(f"record type must be in 1..255, not {t}")
    return <uint8_t>t


cdef inline int check_payload_size(Py_ssize_t length) except -1:
    if length > C_MAX_PAYLOAD:
        raise ValueError(f"record payload too large: {length} > {C_MAX_PAYLOAD}")
    return 0


def encode_batch(batch_seq, records):
    """Frame each (type, payload) of one write batch; BATCH_END on the last."""
    cdef uint32_t seq = batch_seq
    if type(records) is not list:
        records = list(records)
    cdef Py_ssize_t n = len(records), i, total = 0, off = 0
    cdef Py_buffer view
    cdef uint8_t *out
    if n == 0:
        return b""
    # Pass 1: validate and size.
    for i in range(n):
        rtype, payload = records[i]
        record_type(rtype)
        PyObject_GetBuffer(payload, &view, PyBUF_SIMPLE)
        try:
            check_payload_size(view.len)
            total += C_HEADER_SIZE + padded(view.len)
        finally:
            PyBuffer_Release(&view)
    # Pass 2: copy payloads in place and frame them.
    result = PyBytes_FromStringAndSize(NULL, total)
    out = <uint8_t *>PyBytes_AS_STRING(result)
    for i in range(n):
        rtype, payload = records[i]
        PyObject_GetBuffer(payload, &view, PyBUF_SIMPLE)
        try:
            if off + C_HEADER_SIZE + padded(view.len) > total:
                raise RuntimeError("records changed while being encoded")
            memcpy(out + off + C_HEADER_SIZE, view.buf, view.len)
            write_header(out + off, view.len, seq, record_type(rtype),
                         C_FLAG_BATCH_END if i == n - 1 else 0)
            off += C_HEADER_SIZE + padded(view.len)
        finally:
            PyBuffer_Release(&view)
    if off != total:
        raise RuntimeError("records changed while being encoded")
    return result


def encode_entries(batch_seq, entries, hardstate=None):
    """One ENTRY record per (term, index, entry_type, data), then a HARDSTATE
    record if `hardstate` (term, vote, commit) is given; BATCH_END on the last.

    The output size is computed first and the single bytes object is filled
    in place.
    """
    cdef uint32_t seq = batch_seq
    if type(entries) is not list:
        entries = list(entries)
    cdef Py_ssize_t n = len(entries), i, total = 0, off = 0, dlen
    cdef uint64_t term, index, hs_term = 0, hs_vote = 0, hs_commit = 0
    cdef uint8_t etype
    cdef Py_buffer view
    cdef uint8_t *out
    cdef uint8_t *rec
    cdef bint has_hs = hardstate is not None
    cdef const char *src
    if has_hs:
        t, v, c = hardstate
        hs_term = t
        hs_vote = v
        hs_commit = c
    elif n == 0:
        return b""
    # Pass 1: validate every field and size the output.
    for i in range(n):
        t, ix, et, data = entries[i]
        term = t
        index = ix
        etype = et
        if type(data) is bytes:
            dlen = PyBytes_GET_SIZE(data)
        else:
            PyObject_GetBuffer(data, &view, PyBUF_SIMPLE)
            dlen = view.len
            PyBuffer_Release(&view)
        check_payload_size(C_ENTRY_HEAD + dlen)
        total += C_HEADER_SIZE + padded(C_ENTRY_HEAD + dlen)
    if has_hs:
        total += C_HEADER_SIZE + C_HARDSTATE_SIZE
    # Pass 2: write payloads in place, then frame them.
    result = PyBytes_FromStringAndSize(NULL, total)
    out = <uint8_t *>PyBytes_AS_STRING(result)
    for i in range(n):
        t, ix, et, data = entries[i]
        term = t
        index = ix
        etype = et
        rec = out + off
        if type(data) is bytes:
            dlen = PyBytes_GET_SIZE(data)
            if off + C_HEADER_SIZE + padded(C_ENTRY_HEAD + dlen) > total:
                raise RuntimeError("entries changed while being encoded")
            memcpy(rec + C_HEADER_SIZE + C_ENTRY_HEAD, PyBytes_AS_STRING(data), dlen)
        else:
            PyObject_GetBuffer(data, &view, PyBUF_SIMPLE)
            try:
                dlen = view.len
                if off + C_HEADER_SIZE + padded(C_ENTRY_HEAD + dlen) > total:
                    raise RuntimeError("entries changed while being encoded")
                memcpy(rec + C_HEADER_SIZE + C_ENTRY_HEAD, view.buf, dlen)
            finally:
                PyBuffer_Release(&view)
        st64(rec + C_HEADER_SIZE, term)
        st64(rec + C_HEADER_SIZE + 8, index)
        rec[C_HEADER_SIZE + 16] = etype
        write_header(rec, C_ENTRY_HEAD + dlen, seq, C_TYPE_ENTRY,
                     C_FLAG_BATCH_END if (i == n - 1 and not has_hs) else 0)
        off += C_HEADER_SIZE + padded(C_ENTRY_HEAD + dlen)
    if has_hs:
        rec = out + off
        st64(rec + C_HEADER_SIZE, hs_term)
        st64(rec + C_HEADER_SIZE + 8, hs_vote)
        st64(rec + C_HEADER_SIZE + 16, hs_commit)
        write_header(rec, C_HARDSTATE_SIZE, seq, C_TYPE_HARDSTATE, C_FLAG_BATCH_END)
        off += C_HEADER_SIZE + C_HARDSTATE_SIZE
    if off != total:
        raise RuntimeError("entries changed while being encoded")
    return result


# --- decoding --------------------------------------------------------------

cdef Py_ssize_t good_record(const uint8_t *p, Py_ssize_t n, Py_ssize_t off) noexcept nogil:
    """Payload length of a good record at `off` (see walcodec_ref for what
    "good" means), or -1."""
    cdef const uint8_t *rec = p + off
    cdef Py_ssize_t length, body
    if n - off < C_HEADER_SIZE:
        return -1
    length = ld32(rec)
    if length > C_MAX_PAYLOAD or C_HEADER_SIZE + padded(length) > n - off:
        return -1
    if rec[12] == 0 or (rec[13] & ~C_FLAG_BATCH_END) or rec[14] or rec[15]:
        return -1
    body = C_HEADER_SIZE + length
    if not all_zero(rec + body, padded(length) - length):
        return -1
    cdef uint32_t crc = fastkv_crc32c(0, rec, 4)
    crc = fastkv_crc32c(crc, rec + 8, 8 + <size_t>length)
    if crc != ld32(rec + 4):
        return -1
    return length


def decode(buf, Py_ssize_t start=0):
    """Decode records from `start`.

    Returns (records, end, clean): records are (offset, batch_seq, type,
    flags, payload); `end` is the offset just past the last good record.
    clean=True: the data ends there (end of buffer, or zeros). clean=False:
    the record at `end` is bad.
    """
    cdef Py_buffer view
    cdef const uint8_t *p
    cdef Py_ssize_t n, off, rem, length
    PyObject_GetBuffer(buf, &view, PyBUF_SIMPLE)
    try:
        p = <const uint8_t *>view.buf
        n = view.len
        if start < 0 or start > n:
            raise ValueError(f"start {start} outside the buffer (length {n})")
        records = []
        off = start
        while True:
            rem = n - off
            if rem == 0:
                return records, off, True
            if rem < C_HEADER_SIZE:
                return records, off, all_zero(p + off, rem)
            if all_zero(p + off, C_HEADER_SIZE):
                return records, off, True
            length = good_record(p, n, off)
            if length < 0:
                return records, off, False
            records.append((off, ld32(p + off + 8), p[off + 12], p[off + 13],
                            PyBytes_FromStringAndSize(<const char *>p + off + C_HEADER_SIZE,
                                                      length)))
            off += C_HEADER_SIZE + padded(length)
    finally:
        PyBuffer_Release(&view)


cdef Py_ssize_t scan(const uint8_t *p, Py_ssize_t n, Py_ssize_t off) noexcept nogil:
    while off + C_HEADER_SIZE <= n:
        # Cheap filter first: the type byte of a record is never zero.
        if p[off + 12] and good_record(p, n, off) >= 0:
            return off
        off += 8
    return -1


def find_next_valid(buf, Py_ssize_t start):
    """The first good record at an 8-byte-aligned offset strictly after
    `start`, as (offset, batch_seq, type, flags); None if there is none."""
    cdef Py_buffer view
    cdef const uint8_t *p
    cdef Py_ssize_t n, off, found
    off = 0 if start < 0 else (start // 8 + 1) * 8
    PyObject_GetBuffer(buf, &view, PyBUF_SIMPLE)
    try:
        p = <const uint8_t *>view.buf
        n = view.len
        if n - off > C_SCAN_NOGIL:
            with nogil:
                found = scan(p, n, off)
        else:
            found = scan(p, n, off)
        if found < 0:
            return None
        return found, ld32(p + found + 8), p[found + 12], p[found + 13]
    finally:
        PyBuffer_Release(&view)


# --- payload helpers -------------------------------------------------------

def decode_entry(payload):
    """ENTRY payload -> (term, index, entry_type, data)."""
    cdef Py_buffer view
    cdef const uint8_t *p
    PyObject_GetBuffer(payload, &view, PyBUF_SIMPLE)
    try:
        if view.len < C_ENTRY_HEAD:
            raise ValueError(f"entry payload too short: {view.len} bytes")
        p = <const uint8_t *>view.buf
        return (ld64(p), ld64(p + 8), p[16],
                PyBytes_FromStringAndSize(<const char *>p + C_ENTRY_HEAD,
                                          view.len - C_ENTRY_HEAD))
    finally:
        PyBuffer_Release(&view)


def decode_hardstate(payload):
    """HARDSTATE payload -> (term, vote, commit)."""
    cdef Py_buffer view
    cdef const uint8_t *p
    PyObject_GetBuffer(payload, &view, PyBUF_SIMPLE)
    try:
        if view.len != C_HARDSTATE_SIZE:
            raise ValueError(f"hardstate payload must be {C_HARDSTATE_SIZE} bytes, "
                             f"not {view.len}")
        p = <const uint8_t *>view.buf
        return ld64(p), ld64(p + 8), ld64(p + 16)
    finally:
        PyBuffer_Release(&view)


def decode_snapshot(payload):
    """SNAPSHOT payload -> (index, term)."""
    cdef Py_buffer view
    cdef const uint8_t *p
    PyObject_GetBuffer(payload, &view, PyBUF_SIMPLE)
    try:
        if view.len != C_SNAPSHOT_SIZE:
            raise ValueError(f"snapshot payload must be {C_SNAPSHOT_SIZE} bytes, "
                             f"not {view.len}")
        p = <const uint8_t *>view.buf
        return ld64(p), ld64(p + 8)
    finally:
        PyBuffer_Release(&view)


def encode_hardstate(term, vote, commit):
    cdef uint64_t t = term, v = vote, c = commit
    result = PyBytes_FromStringAndSize(NULL, C_HARDSTATE_SIZE)
    cdef uint8_t *out = <uint8_t *>PyBytes_AS_STRING(result)
    st64(out, t)
    st64(out + 8, v)
    st64(out + 16, c)
    return result


def encode_snapshot(index, term):
    cdef uint64_t i = index, t = term
    result = PyBytes_FromStringAndSize(NULL, C_SNAPSHOT_SIZE)
    cdef uint8_t *out = <uint8_t *>PyBytes_AS_STRING(result)
    st64(out, i)
    st64(out + 8, t)
    return result
