# cython: language_level=3
"""Durable writes (pwrite + fdatasync) in a thread that never takes the GIL.

Why: the WAL's group commit wrote and fsynced each batch in a Python worker
thread (asyncio.to_thread). That thread needs the GIL to start the job and again
to hand the result back, and the event loop holds the GIL while it serves
requests: under load each hop waited ~0.7-1.3 ms for it (measured with a
timer around the hop, bench/README.md "The WAL's fsync thread"), several times
the 0.2 ms the disk took. Every batch, and so every write request, paid it.

Here a thread runs one C loop for its whole life: it waits on a condition
variable for a job, writes it with pwrite, calls fdatasync, records the errno,
and writes one byte to a notification pipe the event loop watches
(``loop.add_reader``). Neither the job hand-over nor the completion needs the
GIL; the loop learns of the result when it next polls.

One job at a time (the Raft ready loop awaits each batch before the next).
Portable POSIX (pthreads, pwrite, fdatasync, write): Linux x86_64 and arm64.
"""
import threading

from cpython.bytes cimport PyBytes_AS_STRING, PyBytes_GET_SIZE
from libc.errno cimport errno, EINTR
from posix.types cimport off_t

cdef extern from "<pthread.h>" nogil:
    ctypedef struct pthread_mutex_t:
        pass
    ctypedef struct pthread_cond_t:
        pass
    int pthread_mutex_init(pthread_mutex_t *m, void *attr)
    int pthread_mutex_destroy(pthread_mutex_t *m)
    int pthread_mutex_lock(pthread_mutex_t *m)
    int pthread_mutex_unlock(pthread_mutex_t *m)
    int pthread_cond_init(pthread_cond_t *c, void *attr)
    int pthread_cond_destroy(pthread_cond_t *c)
    int pthread_cond_wait(pthread_cond_t *c, pthread_mutex_t *m)
    int pthread_cond_signal(pthread_cond_t *c)

cdef extern from "<unistd.h>" nogil:
    ssize_t pwrite(int fd, const void *buf, size_t count, off_t offset)
    ssize_t write(int fd, const void *buf, size_t count)
    int fdatasync(int fd)


cdef struct Job:
    pthread_mutex_t mu
    pthread_cond_t cv
    int pending         # a job waits for (or is in) the thread
    int stop            # the thread ends once no job is pending
    int fd
    const char *buf
    Py_ssize_t length
    off_t offset
    int sync            # fdatasync after the write
    int err             # the job's errno, 0 when it succeeded
    int notify_fd       # one byte per finished job


cdef int _write_all(int fd, const char *buf, Py_ssize_t length, off_t offset) noexcept nogil:
    cdef ssize_t n
    while length > 0:
        n = pwrite(fd, buf, <size_t>length, offset)
        if n < 0:
            if errno == EINTR:
                continue
            return errno
        if n == 0:
            return 5    # EIO: a disk that takes nothing
        buf += n
        length -= n
        offset += n
    return 0


cdef void _notify(int fd) noexcept nogil:
    cdef char one = 1
    while write(fd, &one, 1) < 0 and errno == EINTR:
        pass


cdef void _serve(Job *j) noexcept nogil:
    cdef int err
    pthread_mutex_lock(&j.mu)
    while True:
        while not j.pending and not j.stop:
            pthread_cond_wait(&j.cv, &j.mu)
        if not j.pending:
            break
        pthread_mutex_unlock(&j.mu)
        # The job's fields do not change while it is pending: read them unlocked.
        err = _write_all(j.fd, j.buf, j.length, j.offset)
        if err == 0 and j.sync:
            while fdatasync(j.fd) != 0:
                if errno != EINTR:
                    err = errno
                    break
        pthread_mutex_lock(&j.mu)
        j.err = err
        j.pending = 0
        pthread_mutex_unlock(&j.mu)
        _notify(j.notify_fd)
        pthread_mutex_lock(&j.mu)
    pthread_mutex_unlock(&j.mu)


cdef class SyncWriter:
    """A GIL-free writer thread. ``submit`` hands it one write; when it is done the
    thread writes a byte to ``notify_fd`` and ``result()`` gives its errno (0: the
    bytes are written and, with ``sync``, on disk)."""
    cdef Job job
    cdef object _buf        # the pending job's bytes, kept alive until it is done
    cdef object _thread
    cdef bint _closed

    def __cinit__(self):
        pthread_mutex_init(&self.job.mu, NULL)
        pthread_cond_init(&self.job.cv, NULL)
        self.job.pending = 0
        self.job.stop = 0
        self.job.err = 0
        self.job.notify_fd = -1

    def __init__(self, int notify_fd):
        self.job.notify_fd = notify_fd
        self._closed = False
        self._thread = threading.Thread(target=self._run, name="fastkv-wal-sync", daemon=True)
        self._thread.start()

    def _run(self):
        with nogil:
            _serve(&self.job)

    @property
    def busy(self) -> bool:
        return self._buf is not None

    def submit(self, int fd, bytes buf, off_t offset, bint sync=True):
        """Start writing buf at offset of fd (then fdatasync it, if sync)."""
        if self._closed:
            raise RuntimeError("SyncWriter is closed")
        if self._buf is not None:
            raise RuntimeError("SyncWriter: a write is already in flight")
        self._buf = buf
        with nogil:
            pthread_mutex_lock(&self.job.mu)
        self.job.fd = fd
        self.job.buf = PyBytes_AS_STRING(buf)
        self.job.length = PyBytes_GET_SIZE(buf)
        self.job.offset = offset
        self.job.sync = sync
        self.job.err = 0
        self.job.pending = 1
        pthread_cond_signal(&self.job.cv)
        pthread_mutex_unlock(&self.job.mu)

    def result(self):
        """None while the job runs; else its errno (0: success), and the writer is free."""
        cdef int pending, err
        with nogil:
            pthread_mutex_lock(&self.job.mu)
        pending = self.job.pending
        err = self.job.err
        pthread_mutex_unlock(&self.job.mu)
        if pending:
            return None
        self._buf = None
        return err

    def close(self):
        """Let a pending job finish, then end the thread."""
        if self._closed:
            return
        self._closed = True
        with nogil:
            pthread_mutex_lock(&self.job.mu)
            self.job.stop = 1
            pthread_cond_signal(&self.job.cv)
            pthread_mutex_unlock(&self.job.mu)
        self._thread.join()

    def __dealloc__(self):
        if not self._closed and self._thread is not None and self._thread.is_alive():
            return  # never reached through the Python API: close() joins first
        pthread_cond_destroy(&self.job.cv)
        pthread_mutex_destroy(&self.job.mu)
