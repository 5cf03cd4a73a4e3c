# cython: language_level=3
"""Peer frame codec (fastkv.raft._peercodec): batches of Raft messages.

The pure-Python reference, with the wire format, is
fastkv/raft/peercodec_ref.py; this module has the same API, the same errors
and byte-identical output (tests/unit/test_peercodec.py checks it).

Hot paths: frame_messages/encode_messages size the whole batch first, then
fill one bytes object per frame in place (no intermediate Python objects per
message or entry); decode_messages walks the buffer in C, checking every
length and count against what is left before using it, and builds only the
Message/Entry objects themselves.
"""
from cpython.buffer cimport PyBUF_SIMPLE, PyBuffer_Release, PyObject_GetBuffer
from cpython.bytes cimport PyBytes_AS_STRING, PyBytes_FromStringAndSize, PyBytes_GET_SIZE
from cpython.list cimport PyList_GET_SIZE
from cpython.object cimport PyObject
from libc.stdint cimport uint8_t, uint32_t, uint64_t

from byteorder cimport ld32, ld64, st32, st64
from libc.string cimport memcpy

from fastkv.raft.messages import ConfState, Message, SnapshotMeta
from fastkv.storage.wal import Entry

FRAME_HEADER_SIZE = 5
FRAME_HELLO = 1
FRAME_HELLO_OK = 2
FRAME_ERROR = 3
FRAME_MSGS = 4
FRAME_SNAP_BEGIN = 5
FRAME_SNAP_CHUNK = 6
FRAME_SNAP_END = 7
FRAME_SNAP_DONE = 8
FRAME_CALL = 9
FRAME_REPLY = 10
MAX_FRAME_TYPE = 10
DEFAULT_MAX_FRAME = 8 << 20
MSG_HEAD_SIZE = 66
ENTRY_HEAD_SIZE = 21
SNAP_HEAD_SIZE = 24
MAX_MSG_TYPE = 18
FLAG_REJECT = 1
FLAG_SNAPSHOT = 2

cdef enum:
    C_FRAME_HEADER = 5
    C_FRAME_MSGS = 4
    C_MAX_FRAME_TYPE = 10
    C_MSG_HEAD = 66
    C_ENTRY_HEAD = 21
    C_SNAP_HEAD = 24
    C_MAX_MSG_TYPE = 18
    C_FLAG_REJECT = 1
    C_FLAG_SNAPSHOT = 2

cdef tuple _EMPTY = ()

cdef extern from *:
    """
    /* type(cls).__new__(cls) without the call machinery (object.__new__ for
       the dataclasses we build; their fields are set right after). */
    static PyObject *fk_new_instance(PyObject *cls, PyObject *args) {
        return ((PyTypeObject *)cls)->tp_new((PyTypeObject *)cls, args, NULL);
    }
    """
    object fk_new_instance(object cls, object args)
cdef object _Message = Message
cdef object _Entry = Entry


# Little-endian loads/stores: csrc/byteorder.pxd.


# --- frames ----------------------------------------------------------------

def encode_frame(ftype, body):
    """u32 length | u8 type | body."""
    cdef long t = ftype
    cdef Py_buffer view
    if t < 1 or t > 255:
        raise ValueError(f"frame type must be in 1..255, not {t}")
    PyObject_GetBuffer(body, &view, PyBUF_SIMPLE)
    try:
        if view.len > 0xFFFFFFFF:
            raise ValueError(f"frame body too large: {view.len} bytes")
        out = PyBytes_FromStringAndSize(NULL, C_FRAME_HEADER + view.len)
        p = <uint8_t *>PyBytes_AS_STRING(out)
        st32(p, <uint32_t>view.len)
        p[4] = <uint8_t>t
        memcpy(p + C_FRAME_HEADER, view.buf, view.len)
        return out
    finally:
        PyBuffer_Release(&view)


def parse_frame_header(head, max_frame=DEFAULT_MAX_FRAME):
    """(body length, frame type) of a 5-byte frame header; ValueError if the
    length is over max_frame or the type is unknown."""
    cdef Py_buffer view
    cdef const uint8_t *p
    cdef uint32_t length
    cdef uint8_t ftype
    PyObject_GetBuffer(head, &view, PyBUF_SIMPLE)
    try:
        if view.len != C_FRAME_HEADER:
            raise ValueError(f"frame header must be {C_FRAME_HEADER} bytes, not {view.len}")
        p = <const uint8_t *>view.buf
        length = ld32(p)
        ftype = p[4]
    finally:
        PyBuffer_Release(&view)
    if length > max_frame:
        raise ValueError(f"frame of {length} bytes is over the limit of {max_frame} bytes")
    if ftype < 1 or ftype > C_MAX_FRAME_TYPE:
        raise ValueError(f"unknown frame type {ftype}")
    return length, ftype


# --- encoding ---------------------------------------------------------------
#
# One pass over the messages: each is written straight into a bytes object
# that grows by doubling (_PyBytes_Resize, so no final copy), reading every
# attribute once.

cdef extern from "Python.h":
    PyObject *bytes_new "PyBytes_FromStringAndSize" (const char *, Py_ssize_t) except NULL
    int _PyBytes_Resize(PyObject **, Py_ssize_t) except -1
    char *bytes_ptr "PyBytes_AS_STRING" (PyObject *)
    void Py_XDECREF(PyObject *)


cdef struct Out:
    PyObject *obj     # owned bytes object (refcount 1 while we write), or NULL
    uint8_t *p
    Py_ssize_t len
    Py_ssize_t cap


cdef int out_init(Out *o, Py_ssize_t cap) except -1:
    o.obj = bytes_new(NULL, cap)
    o.p = <uint8_t *>bytes_ptr(o.obj)
    o.len = 0
    o.cap = cap
    return 0


cdef inline int reserve(Out *o, Py_ssize_t extra) except -1:
    cdef Py_ssize_t cap
    if extra <= o.cap - o.len:
        return 0
    if extra > 0xFFFFFFFF - o.len:
        raise ValueError(f"message batch too large: {o.len + extra} bytes")
    cap = o.cap * 2
    if cap < o.len + extra:
        cap = o.len + extra
    _PyBytes_Resize(&o.obj, cap)   # on failure obj is freed and set to NULL
    o.p = <uint8_t *>bytes_ptr(o.obj)
    o.cap = cap
    return 0


cdef object out_take(Out *o):
    """The bytes written so far; o no longer owns them."""
    _PyBytes_Resize(&o.obj, o.len)
    result = <object>o.obj
    Py_XDECREF(o.obj)
    o.obj = NULL
    return result


cdef inline int put_bytes(Out *o, object data) except -1:
    """Append data (bytes-like) to o."""
    cdef Py_buffer view
    cdef Py_ssize_t n
    if type(data) is bytes:
        n = PyBytes_GET_SIZE(data)
        reserve(o, n)
        memcpy(o.p + o.len, PyBytes_AS_STRING(data), n)
        o.len += n
        return 0
    if isinstance(data, str):
        raise TypeError("entry data must be bytes-like, not str")
    PyObject_GetBuffer(data, &view, PyBUF_SIMPLE)
    try:
        reserve(o, view.len)
        memcpy(o.p + o.len, view.buf, view.len)
        o.len += view.len
    finally:
        PyBuffer_Release(&view)
    return 0


cdef inline int put64(Out *o, object value) except -1:
    cdef uint64_t v = value
    reserve(o, 8)
    st64(o.p + o.len, v)
    o.len += 8
    return 0


cdef int write_msg(Out *o, object m) except -1:
    """Append m to o."""
    cdef long t = m.type
    cdef uint64_t to, frm, term, log_term, index, commit, hint, eterm, eindex
    cdef Py_ssize_t head, start, n, i
    cdef uint8_t flags = 0
    cdef uint8_t etype
    cdef uint8_t *p
    if t < 0 or t > C_MAX_MSG_TYPE:
        raise ValueError(f"unknown message type {t}")
    to = m.to
    frm = m.frm
    term = m.term
    log_term = m.log_term
    index = m.index
    commit = m.commit
    hint = m.reject_hint
    if m.reject:
        flags |= C_FLAG_REJECT
    snap = m.snapshot
    if snap is not None:
        flags |= C_FLAG_SNAPSHOT
    ents = m.entries
    if type(ents) is not list:
        ents = list(ents)
    n = PyList_GET_SIZE(ents)
    reserve(o, C_MSG_HEAD)
    head = o.len
    o.len += C_MSG_HEAD
    p = o.p + head
    p[0] = <uint8_t>t
    p[1] = flags
    st64(p + 2, to)
    st64(p + 10, frm)
    st64(p + 18, term)
    st64(p + 26, log_term)
    st64(p + 34, index)
    st64(p + 42, commit)
    st64(p + 50, hint)
    st32(p + 62, <uint32_t>n)
    start = o.len
    put_bytes(o, m.context)
    st32(o.p + head + 58, <uint32_t>(o.len - start))
    if snap is not None:
        cs = snap.conf_state
        voters = list(cs.voters)
        learners = list(cs.learners)
        put64(o, snap.index)
        put64(o, snap.term)
        reserve(o, 8)
        st32(o.p + o.len, <uint32_t>len(voters))
        st32(o.p + o.len + 4, <uint32_t>len(learners))
        o.len += 8
        for x in voters:
            put64(o, x)
        for x in learners:
            put64(o, x)
    for i in range(n):
        e = (<list>ents)[i]
        eterm = e.term
        eindex = e.index
        etype = e.type
        data = e.data
        reserve(o, C_ENTRY_HEAD)
        p = o.p + o.len
        st64(p, eterm)
        st64(p + 8, eindex)
        p[16] = etype
        o.len += C_ENTRY_HEAD
        start = o.len
        put_bytes(o, data)
        st32(o.p + start - 4, <uint32_t>(o.len - start))
    return 0


def encode_messages(msgs):
    """One FRAME_MSGS body holding every message of msgs."""
    if type(msgs) is not list:
        msgs = list(msgs)
    cdef Py_ssize_t n = PyList_GET_SIZE(msgs), i
    cdef Out o
    o.obj = NULL
    out_init(&o, 4 + 128 * n)
    try:
        st32(o.p, <uint32_t>n)
        o.len = 4
        for i in range(n):
            write_msg(&o, (<list>msgs)[i])
        return out_take(&o)
    finally:
        Py_XDECREF(o.obj)


def message_size(m):
    """Bytes msg takes in a FRAME_MSGS body (without the u32 count)."""
    cdef Out o
    o.obj = NULL
    out_init(&o, 128)
    try:
        write_msg(&o, m)
        return o.len
    finally:
        Py_XDECREF(o.obj)


cdef object close_frame(Out *o, Py_ssize_t count):
    st32(o.p, <uint32_t>(o.len - C_FRAME_HEADER))
    o.p[4] = C_FRAME_MSGS
    st32(o.p + C_FRAME_HEADER, <uint32_t>count)
    return out_take(o)


def frame_messages(msgs, max_frame=DEFAULT_MAX_FRAME):
    """Complete FRAME_MSGS frames (header included) for msgs, in order, each
    body at most max_frame bytes, greedily packed. Returns (frames, too_big):
    too_big are the messages that do not fit in a frame on their own (left out)."""
    if type(msgs) is not list:
        msgs = list(msgs)
    cdef Py_ssize_t cap = min(max_frame, 0xFFFFFFFF)
    cdef Py_ssize_t n = PyList_GET_SIZE(msgs), i, mark, size, count = 0
    cdef Py_ssize_t first = C_FRAME_HEADER + 4
    cdef Out o
    cdef Out nxt
    frames = []
    too_big = []
    if n == 0:
        return frames, too_big
    o.obj = NULL
    nxt.obj = NULL
    try:
        out_init(&o, min(first + 128 * n, first + cap))
        o.len = first
        for i in range(n):
            m = (<list>msgs)[i]
            mark = o.len
            write_msg(&o, m)
            size = o.len - mark
            if 4 + size > cap:
                too_big.append(m)
                o.len = mark
            elif o.len - C_FRAME_HEADER > cap:
                # Full: m starts the next frame.
                out_init(&nxt, max(first + size, min(o.cap, first + cap)))
                memcpy(nxt.p + first, o.p + mark, size)
                nxt.len = first + size
                o.len = mark
                frames.append(close_frame(&o, count))
                o = nxt
                nxt.obj = NULL
                count = 1
            else:
                count += 1
        if count:
            frames.append(close_frame(&o, count))
        return frames, too_big
    finally:
        Py_XDECREF(o.obj)
        Py_XDECREF(nxt.obj)


# --- decoding --------------------------------------------------------------

cdef inline int need(Py_ssize_t k, Py_ssize_t pos, Py_ssize_t n, str what) except -1:
    if k > n - pos:
        raise ValueError(f"truncated message batch: {what} needs {k} bytes at offset "
                         f"{pos}, {n - pos} left")
    return 0


def decode_messages(body):
    """The messages of a FRAME_MSGS body; ValueError if it is not well-formed."""
    cdef Py_buffer view
    cdef const uint8_t *p
    cdef const char *c
    cdef Py_ssize_t n, pos, k, j, ctx_len, dlen
    cdef uint32_t count, n_ents, nv, nl
    cdef uint8_t mtype, flags
    PyObject_GetBuffer(body, &view, PyBUF_SIMPLE)
    try:
        p = <const uint8_t *>view.buf
        c = <const char *>view.buf
        n = view.len
        need(4, 0, n, "the message count")
        count = ld32(p)
        pos = 4
        if count > (n - pos) // C_MSG_HEAD:
            raise ValueError(f"garbled message batch: {count} messages cannot fit in "
                             f"{n - pos} bytes")
        msgs = []
        for k in range(count):
            need(C_MSG_HEAD, pos, n, "a message header")
            mtype = p[pos]
            flags = p[pos + 1]
            if mtype > C_MAX_MSG_TYPE:
                raise ValueError(f"garbled message batch: unknown message type {mtype} "
                                 f"at offset {pos}")
            if flags & ~(C_FLAG_REJECT | C_FLAG_SNAPSHOT):
                raise ValueError(f"garbled message batch: unknown flags {flags:#x} "
                                 f"at offset {pos + 1}")
            m = fk_new_instance(_Message, _EMPTY)
            m.type = mtype
            m.to = ld64(p + pos + 2)
            m.frm = ld64(p + pos + 10)
            m.term = ld64(p + pos + 18)
            m.log_term = ld64(p + pos + 26)
            m.index = ld64(p + pos + 34)
            commit = ld64(p + pos + 42)
            hint = ld64(p + pos + 50)
            ctx_len = ld32(p + pos + 58)
            n_ents = ld32(p + pos + 62)
            pos += C_MSG_HEAD
            need(ctx_len, pos, n, "a message context")
            context = PyBytes_FromStringAndSize(c + pos, ctx_len)
            pos += ctx_len
            snapshot = None
            if flags & C_FLAG_SNAPSHOT:
                need(C_SNAP_HEAD, pos, n, "a snapshot header")
                s_index = ld64(p + pos)
                s_term = ld64(p + pos + 8)
                nv = ld32(p + pos + 16)
                nl = ld32(p + pos + 20)
                pos += C_SNAP_HEAD
                if nv > (n - pos) // 8 or nl > (n - pos) // 8 - nv:
                    raise ValueError(f"truncated message batch: {nv} voters and {nl} "
                                     f"learners at offset {pos}, {n - pos} bytes left")
                voters = [ld64(p + pos + 8 * j) for j in range(nv)]
                pos += 8 * nv
                learners = [ld64(p + pos + 8 * j) for j in range(nl)]
                pos += 8 * nl
                snapshot = SnapshotMeta(s_index, s_term, ConfState(voters, learners))
            if n_ents > (n - pos) // C_ENTRY_HEAD:
                raise ValueError(f"truncated message batch: {n_ents} entries at offset "
                                 f"{pos}, {n - pos} bytes left")
            entries = []
            for j in range(n_ents):
                need(C_ENTRY_HEAD, pos, n, "an entry header")
                dlen = ld32(p + pos + 17)
                need(dlen, pos + C_ENTRY_HEAD, n, "entry data")
                e = fk_new_instance(_Entry, _EMPTY)
                e.term = ld64(p + pos)
                e.index = ld64(p + pos + 8)
                e.type = p[pos + 16]
                e.data = PyBytes_FromStringAndSize(c + pos + C_ENTRY_HEAD, dlen)
                entries.append(e)
                pos += C_ENTRY_HEAD + dlen
            m.entries = entries
            m.commit = commit
            m.reject = (flags & C_FLAG_REJECT) != 0
            m.reject_hint = hint
            m.context = context
            m.snapshot = snapshot
            msgs.append(m)
        if pos != n:
            raise ValueError(f"garbled message batch: {n - pos} trailing bytes "
                             f"at offset {pos}")
        return msgs
    finally:
        PyBuffer_Release(&view)
