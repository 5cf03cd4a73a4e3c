# cython: language_level=3
"""Byte relay between two connected sockets, run without the GIL.

The client port speaks HTTP/1.1 and gRPC (HTTP/2) on the same address, as etcd's
does. The HTTP/1.1 server sniffs each connection's first bytes; an HTTP/2
connection is handed to :func:`relay`, which copies bytes both ways between it
and the in-process gRPC server's private socket until both directions are
closed. Each direction has its own buffer and the sockets are non-blocking, so a
peer that stops reading only stalls its own direction. The loop holds no GIL:
a relayed byte costs two syscalls and no Python.

Portable POSIX (poll, read, write, shutdown): Linux x86_64 and arm64 alike.
"""
from libc.errno cimport errno, EINTR
from libc.stdlib cimport free, malloc

cdef extern from *:
    """
    #include <errno.h>
    static int fk_would_block(int e) { return e == EAGAIN || e == EWOULDBLOCK; }
    """
    int fk_would_block(int e) nogil

cdef extern from "<poll.h>" nogil:
    struct pollfd:
        int fd
        short events
        short revents
    int poll(pollfd *fds, unsigned long nfds, int timeout)
    enum:
        POLLIN
        POLLOUT
        POLLERR
        POLLHUP
        POLLNVAL

cdef extern from "<unistd.h>" nogil:
    ssize_t read(int fd, void *buf, size_t count)
    ssize_t write(int fd, const void *buf, size_t count)

cdef extern from "<fcntl.h>" nogil:
    int fcntl(int fd, int cmd, ...)
    enum:
        F_GETFL
        F_SETFL
        O_NONBLOCK

cdef extern from "<sys/socket.h>" nogil:
    int shutdown(int sockfd, int how)
    enum:
        SHUT_WR
        SHUT_RDWR

cdef enum:
    BUF_SIZE = 262144


cdef struct Pipe:
    # One direction: bytes read from `src` wait in buf[start:end] to be written to `dst`.
    int src
    int dst
    char *buf
    Py_ssize_t start
    Py_ssize_t end
    bint eof        # src said EOF (or failed): write what is left, then SHUT_WR dst
    bint done       # nothing more will flow this way


cdef int _nonblocking(int fd) noexcept nogil:
    cdef int flags = fcntl(fd, F_GETFL, 0)
    if flags < 0:
        return -1
    return fcntl(fd, F_SETFL, flags | O_NONBLOCK)


cdef int _pump_read(Pipe *p) noexcept nogil:
    """Read into an empty buffer. 1: progress, 0: would block, -1: EOF or error."""
    cdef ssize_t n
    while True:
        n = read(p.src, p.buf, BUF_SIZE)
        if n > 0:
            p.start = 0
            p.end = n
            return 1
        if n == 0:
            return -1
        if errno == EINTR:
            continue
        if fk_would_block(errno):
            return 0
        return -1


cdef int _pump_write(Pipe *p) noexcept nogil:
    """Write what is buffered. 1: progress, 0: would block, -1: error."""
    cdef ssize_t n
    while p.start < p.end:
        n = write(p.dst, p.buf + p.start, p.end - p.start)
        if n > 0:
            p.start += n
            continue
        if n < 0 and errno == EINTR:
            continue
        if n < 0 and fk_would_block(errno):
            return 0
        return -1
    return 1


cdef void _finish_if_drained(Pipe *p) noexcept nogil:
    if p.eof and p.start >= p.end and not p.done:
        p.done = True
        shutdown(p.dst, SHUT_WR)


cdef int _run(int a, int b, Pipe *ab, Pipe *ba) noexcept nogil:
    cdef pollfd fds[2]
    cdef int r
    while not (ab.done and ba.done):
        # fds[0] is `a`, fds[1] is `b`: read where the buffer is empty, write where full.
        fds[0].fd = a
        fds[1].fd = b
        fds[0].events = 0
        fds[1].events = 0
        if not ab.eof and ab.start >= ab.end:
            fds[0].events |= POLLIN
        if not ba.eof and ba.start >= ba.end:
            fds[1].events |= POLLIN
        if ab.start < ab.end:
            fds[1].events |= POLLOUT
        if ba.start < ba.end:
            fds[0].events |= POLLOUT
        r = poll(fds, 2, -1)
        if r < 0:
            if errno == EINTR:
                continue
            return -1
        if (fds[0].revents | fds[1].revents) & POLLNVAL:
            return -1
        # Reads (also on HUP/ERR: read reports EOF or the error).
        if fds[0].revents and not ab.eof and ab.start >= ab.end:
            if _pump_read(ab) < 0:
                ab.eof = True
        if fds[1].revents and not ba.eof and ba.start >= ba.end:
            if _pump_read(ba) < 0:
                ba.eof = True
        # Writes: try at once (the socket is usually writable).
        if ab.start < ab.end:
            if _pump_write(ab) < 0:
                return -1
        if ba.start < ba.end:
            if _pump_write(ba) < 0:
                return -1
        _finish_if_drained(ab)
        _finish_if_drained(ba)
    return 0


def relay(int a, int b, bytes initial=b""):
    """Copy bytes a -> b and b -> a until both directions reach EOF (or one fails).

    `initial` (bytes already read from `a`) is written to `b` first. Both fds are
    made non-blocking; the caller owns them and closes them afterwards. Returns
    True when both directions ended cleanly, False on an error (a reset peer).
    """
    cdef Pipe ab, ba
    cdef int rc
    cdef Py_ssize_t n = len(initial)
    if n > BUF_SIZE:
        raise ValueError("initial bytes exceed the relay buffer")
    ab.src, ab.dst, ba.src, ba.dst = a, b, b, a
    ab.buf = <char *> malloc(BUF_SIZE)
    ba.buf = <char *> malloc(BUF_SIZE)
    if ab.buf == NULL or ba.buf == NULL:
        free(ab.buf)
        free(ba.buf)
        raise MemoryError()
    ab.start = ab.end = ba.start = ba.end = 0
    ab.eof = ab.done = ba.eof = ba.done = False
    cdef const char *src = initial
    cdef Py_ssize_t i
    for i in range(n):
        ab.buf[i] = src[i]
    ab.end = n
    try:
        with nogil:
            if _nonblocking(a) < 0 or _nonblocking(b) < 0:
                rc = -1
            else:
                rc = _run(a, b, &ab, &ba)
            if rc < 0:
                shutdown(a, SHUT_RDWR)
                shutdown(b, SHUT_RDWR)
    finally:
        free(ab.buf)
        free(ba.buf)
    return rc == 0
