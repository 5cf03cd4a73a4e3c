# cython: language_level=3
"""Ordered key index with per-key revision history (fastkv.mvcc._keyindex).

Semantics are etcd 3.4's treeIndex/keyIndex; fastkv/mvcc/keyindex_ref.py is
the readable reference (and explains generations and compaction); the
property tests check that both agree after every operation.

Layout, chosen for a million keys:

* ``_map``: dict key -> _History, so point operations are one hash lookup.
* ``_kchunks``: the keys in order, cut into sorted lists of at most
  CHUNK_MAX keys, plus ``_maxes`` (the last key of each chunk). Finding a
  position is a bisect over _maxes then one within a chunk, and inserting a
  key moves at most CHUNK_MAX pointers (the sortedcontainers idea), never
  the whole index. ``_hchunks`` holds the _History objects in the same
  places, so scans need no dict lookups while bisection only touches keys
  (one pointer hop per comparison instead of two: fewer cache misses).
* a _History keeps every revision of its key in one C array of int64
  (generations are consecutive slices of it, described by a small C array of
  Gen), with inline room for the common case of one generation of up to two
  revisions, so most keys need no malloc at all.
"""
cimport cython
from cpython.bytes cimport PyBytes_AS_STRING, PyBytes_GET_SIZE
from cpython.list cimport PyList_GET_ITEM, PyList_GET_SIZE
from cpython.mem cimport PyMem_Free, PyMem_Malloc, PyMem_Realloc
from libc.stdint cimport int64_t
from libc.string cimport memcmp, memcpy, memmove

cdef enum:
    SUB_BITS = 24
    CHUNK_MAX = 512    # a chunk is split in two when it would exceed this
    CHUNK_BUILD = 256  # chunk size when the chunk list is rebuilt (compact)
    INLINE_REVS = 2
    INLINE_GENS = 1


cdef struct Gen:
    Py_ssize_t start   # index in revs of its first revision
    int64_t created    # first revision ever put in the generation
    int64_t ver        # number of puts, including compacted ones


cdef inline int bytes_cmp(bytes a, bytes b) noexcept:
    """memcmp ordering of two bytes objects (<0, 0, >0)."""
    cdef Py_ssize_t la = PyBytes_GET_SIZE(a), lb = PyBytes_GET_SIZE(b)
    cdef int c = memcmp(PyBytes_AS_STRING(a), PyBytes_AS_STRING(b), la if la < lb else lb)
    if c:
        return c
    return (la > lb) - (la < lb)


cdef inline bytes as_bytes(key):
    if type(key) is bytes:
        return <bytes>key
    return bytes(key)


@cython.final
@cython.no_gc
cdef class _History:
    """etcd's keyIndex: all generations of one key.

    Generation g covers revs[gens[g].start : gens[g + 1].start] (the last one
    up to nrevs); the last generation is empty after a tombstone.
    """
    cdef readonly bytes key
    cdef int64_t modified
    cdef int64_t *revs
    cdef Gen *gens
    cdef Py_ssize_t nrevs, rcap, ngens, gcap
    cdef int64_t rbuf[INLINE_REVS]
    cdef Gen gbuf[INLINE_GENS]

    def __cinit__(self, bytes key):
        self.key = key
        self.modified = -1  # any revision >= 0 is after it
        self.revs = self.rbuf
        self.rcap = INLINE_REVS
        self.nrevs = 0
        self.gens = self.gbuf
        self.gcap = INLINE_GENS
        self.ngens = 0

    def __dealloc__(self):
        if self.revs != self.rbuf:
            PyMem_Free(self.revs)
        if self.gens != self.gbuf:
            PyMem_Free(self.gens)

    # --- storage ---------------------------------------------------------

    cdef int grow_revs(self) except -1:
        cdef Py_ssize_t cap = self.rcap * 2
        cdef int64_t *p
        if self.revs == self.rbuf:
            p = <int64_t *>PyMem_Malloc(cap * sizeof(int64_t))
            if p == NULL:
                raise MemoryError()
            memcpy(p, self.rbuf, self.nrevs * sizeof(int64_t))
        else:
            p = <int64_t *>PyMem_Realloc(self.revs, cap * sizeof(int64_t))
            if p == NULL:
                raise MemoryError()
        self.revs = p
        self.rcap = cap
        return 0

    cdef int grow_gens(self) except -1:
        cdef Py_ssize_t cap = self.gcap * 2
        cdef Gen *p
        if self.gens == self.gbuf:
            p = <Gen *>PyMem_Malloc(cap * sizeof(Gen))
            if p == NULL:
                raise MemoryError()
            memcpy(p, self.gbuf, self.ngens * sizeof(Gen))
        else:
            p = <Gen *>PyMem_Realloc(self.gens, cap * sizeof(Gen))
            if p == NULL:
                raise MemoryError()
        self.gens = p
        self.gcap = cap
        return 0

    cdef void shrink(self) noexcept:
        """Give memory back after compaction dropped most of the history."""
        cdef int64_t *p
        cdef Gen *g
        if self.revs != self.rbuf:
            if self.nrevs <= INLINE_REVS:
                memcpy(self.rbuf, self.revs, self.nrevs * sizeof(int64_t))
                PyMem_Free(self.revs)
                self.revs = self.rbuf
                self.rcap = INLINE_REVS
            elif self.nrevs * 4 < self.rcap:
                p = <int64_t *>PyMem_Realloc(self.revs, self.nrevs * 2 * sizeof(int64_t))
                if p != NULL:
                    self.revs = p
                    self.rcap = self.nrevs * 2
        if self.gens != self.gbuf:
            if self.ngens <= INLINE_GENS:
                memcpy(self.gbuf, self.gens, self.ngens * sizeof(Gen))
                PyMem_Free(self.gens)
                self.gens = self.gbuf
                self.gcap = INLINE_GENS
            elif self.ngens * 4 < self.gcap:
                g = <Gen *>PyMem_Realloc(self.gens, self.ngens * 2 * sizeof(Gen))
                if g != NULL:
                    self.gens = g
                    self.gcap = self.ngens * 2

    cdef inline Py_ssize_t gen_end(self, Py_ssize_t g) noexcept:
        return self.gens[g + 1].start if g + 1 < self.ngens else self.nrevs

    cdef int new_gen(self) except -1:
        if self.ngens == self.gcap:
            self.grow_gens()
        self.gens[self.ngens].start = self.nrevs
        self.gens[self.ngens].created = 0
        self.gens[self.ngens].ver = 0
        self.ngens += 1
        return 0

    # --- etcd keyIndex operations -----------------------------------------

    cdef inline bint is_empty(self) noexcept:
        return self.ngens == 1 and self.nrevs == self.gens[0].start

    cdef inline bint is_live(self) noexcept:
        return self.ngens > 0 and self.nrevs > self.gens[self.ngens - 1].start

    cdef int put(self, int64_t rev) except -1:
        cdef Gen *g
        if rev <= self.modified:
            raise ValueError(f"put of revision {rev:#x} not after {self.modified:#x} "
                             f"on key {self.key!r}")
        if self.ngens == 0:
            self.new_gen()
        if self.nrevs == self.rcap:
            self.grow_revs()
        g = &self.gens[self.ngens - 1]
        if self.nrevs == g.start:
            g.created = rev
        self.revs[self.nrevs] = rev
        self.nrevs += 1
        g.ver += 1
        self.modified = rev
        return 0

    cdef int tombstone(self, int64_t rev) except -1:
        self.put(rev)
        self.new_gen()
        return 0

    cdef Py_ssize_t last_at(self, Py_ssize_t lo, Py_ssize_t hi, int64_t at_main) noexcept:
        """Position of the newest revision in revs[lo:hi] whose main part is
        <= at_main (binary search: revisions only grow), or -1."""
        cdef Py_ssize_t mid
        # Invariant: revs[< lo] are <= at_main, revs[>= hi] are > at_main.
        while lo < hi:
            mid = (lo + hi) >> 1
            if (self.revs[mid] >> SUB_BITS) <= at_main:
                lo = mid + 1
            else:
                hi = mid
        return lo - 1

    cdef Py_ssize_t find_generation(self, int64_t at_main) noexcept:
        """The generation alive at at_main, or -1 (not created yet, or deleted)."""
        cdef Py_ssize_t last = self.ngens - 1, g = last, s, e
        while g >= 0:
            s = self.gens[g].start
            e = self.gen_end(g)
            if s == e:
                g -= 1
                continue
            if g != last and (self.revs[e - 1] >> SUB_BITS) <= at_main:
                return -1  # its tombstone is at or before at_main
            if (self.revs[s] >> SUB_BITS) <= at_main:
                return g
            g -= 1
        return -1

    cdef bint get(self, int64_t at_main, int64_t *mod, int64_t *created,
                  int64_t *ver) noexcept:
        cdef Py_ssize_t g = self.find_generation(at_main), s, e, n
        if g < 0:
            return False
        s = self.gens[g].start
        e = self.gen_end(g)
        n = self.last_at(s, e, at_main)
        if n < s:
            return False
        mod[0] = self.revs[n]
        created[0] = self.gens[g].created
        ver[0] = self.gens[g].ver - (e - n - 1)
        return True

    cdef int do_compact(self, int64_t at_main, set available,
                        Py_ssize_t *gen_idx, Py_ssize_t *rev_pos) except -1:
        """etcd's doCompact: the first generation alive at or after at_main,
        and the absolute position of its newest revision <= at_main (added to
        `available`), or -1."""
        cdef Py_ssize_t g = 0, s, e, n
        while g < self.ngens - 1 and (self.revs[self.gen_end(g) - 1] >> SUB_BITS) <= at_main:
            g += 1
        s = self.gens[g].start
        e = self.gen_end(g)
        n = self.last_at(s, e, at_main)
        if n >= s:
            available.add(self.revs[n])
        else:
            n = -1
        gen_idx[0] = g
        rev_pos[0] = n
        return 0

    cdef int compact(self, int64_t at_main, set available) except -1:
        cdef Py_ssize_t g, n, cut, i
        self.do_compact(at_main, available, &g, &n)
        cut = self.gens[g].start  # revisions before this position go
        if self.gen_end(g) > cut:
            if n != -1:
                cut = n  # drop the generation's revisions older than n
                self.gens[g].start = n
            # A generation reduced to its tombstone is no longer needed.
            if self.gen_end(g) - cut == 1 and g != self.ngens - 1:
                available.discard(self.revs[cut])
                g += 1
                cut = self.gens[g].start
        if cut:
            memmove(self.revs, self.revs + cut, (self.nrevs - cut) * sizeof(int64_t))
            self.nrevs -= cut
        if g:
            memmove(self.gens, self.gens + g, (self.ngens - g) * sizeof(Gen))
            self.ngens -= g
        if cut:
            for i in range(self.ngens):
                self.gens[i].start -= cut
        self.shrink()
        return 0

    cdef int keep(self, int64_t at_main, set available) except -1:
        cdef Py_ssize_t g, n
        if self.is_empty():
            return 0
        self.do_compact(at_main, available, &g, &n)
        if (n != -1 and n == self.gen_end(g) - 1 and g != self.ngens - 1):
            available.discard(self.revs[n])
        return 0

    def generations(self):
        """[(created, ver, [revs...]), ...] oldest first (for debugging/tests)."""
        return [(self.gens[g].created, self.gens[g].ver,
                 [self.revs[i] for i in range(self.gens[g].start, self.gen_end(g))])
                for g in range(self.ngens)]


cdef inline _History chunk_item(list chunk, Py_ssize_t i):
    return <_History>PyList_GET_ITEM(chunk, i)


cdef Py_ssize_t bisect_keys(list keys, bytes key) noexcept:
    """First position in a sorted list of bytes whose item is >= key."""
    cdef Py_ssize_t lo = 0, hi = PyList_GET_SIZE(keys), mid
    while lo < hi:
        mid = (lo + hi) >> 1
        if bytes_cmp(<bytes>PyList_GET_ITEM(keys, mid), key) < 0:
            lo = mid + 1
        else:
            hi = mid
    return lo


cdef list merge_by_key(list a, list b):
    """Two lists of histories in key order (no key in both), merged in key order."""
    cdef Py_ssize_t i = 0, j = 0, na = PyList_GET_SIZE(a), nb = PyList_GET_SIZE(b)
    cdef list out = []
    while i < na and j < nb:
        if bytes_cmp(chunk_item(a, i).key, chunk_item(b, j).key) < 0:
            out.append(chunk_item(a, i))
            i += 1
        else:
            out.append(chunk_item(b, j))
            j += 1
    out.extend(a[i:])
    out.extend(b[j:])
    return out


@cython.final
cdef class KeyIndex:
    """Ordered index of keys to their revision history (etcd's treeIndex).

    Revisions are packed ints ``main << 24 | sub``; `at_main` arguments are
    main revisions.
    """
    cdef dict _map
    cdef list _kchunks  # sorted keys, in chunks
    cdef list _hchunks  # their _History objects, same shape
    cdef list _maxes    # last key of each chunk

    def __cinit__(self):
        self._map = {}
        self._kchunks = []
        self._hchunks = []
        self._maxes = []

    def __len__(self):
        return len(self._map)

    cdef _insert_sorted(self, _History h):
        """Put a new key's history at its place in the chunk list."""
        cdef Py_ssize_t ci, pos, half
        cdef list kchunk, hchunk
        if not self._kchunks:
            self._kchunks.append([h.key])
            self._hchunks.append([h])
            self._maxes.append(h.key)
            return
        ci = bisect_keys(self._maxes, h.key)
        if ci == len(self._maxes):
            # Larger than every key: append to the last chunk.
            ci -= 1
            kchunk = <list>self._kchunks[ci]
            hchunk = <list>self._hchunks[ci]
            kchunk.append(h.key)
            hchunk.append(h)
            self._maxes[ci] = h.key
        else:
            kchunk = <list>self._kchunks[ci]
            hchunk = <list>self._hchunks[ci]
            pos = bisect_keys(kchunk, h.key)
            kchunk.insert(pos, h.key)
            hchunk.insert(pos, h)
        if len(kchunk) > CHUNK_MAX:
            half = len(kchunk) >> 1
            self._kchunks.insert(ci + 1, kchunk[half:])
            self._hchunks.insert(ci + 1, hchunk[half:])
            del kchunk[half:]
            del hchunk[half:]
            self._maxes.insert(ci + 1, self._maxes[ci])
            self._maxes[ci] = kchunk[half - 1]

    cdef _set_chunks(self, list hs):
        """Cut histories, in key order, into fresh chunks of CHUNK_BUILD."""
        cdef Py_ssize_t i
        self._hchunks = [hs[i:i + CHUNK_BUILD] for i in range(0, len(hs), CHUNK_BUILD)]
        self._kchunks = [[(<_History>x).key for x in c] for c in self._hchunks]
        self._maxes = [c[len(c) - 1] for c in self._kchunks]

    cdef _add_sorted(self, list new):
        """Give the histories of keys new to the index their places in the key order:
        one insertion each when they are few, else one sort and one merge with the
        keys already there (restoring a snapshot adds a million keys at once; a
        million insertions cost more than a sort)."""
        cdef list keys, hs, old
        cdef Py_ssize_t n_old = len(self._map) - len(new)
        cdef _History h
        if len(new) * 16 < n_old:
            for h in new:
                self._insert_sorted(h)
            return
        keys = [(<_History>h).key for h in new]
        keys.sort()
        hs = [self._map[k] for k in keys]
        if n_old:
            old = [h for chunk in self._hchunks for h in <list>chunk]
            hs = merge_by_key(old, hs)
        self._set_chunks(hs)

    def put_many(self, list keys, list revs, tombstones=()):
        """The same as ``put(keys[i], revs[i])`` for each i in order, but
        ``tombstone(keys[i], revs[i])`` for the positions listed (ascending) in
        `tombstones`: a snapshot's records, loaded in one call. An error stops
        at the same op as the one-by-one calls would, with the ops before it done."""
        cdef Py_ssize_t i, n = PyList_GET_SIZE(keys), ti = 0
        cdef Py_ssize_t nt = len(tombstones)
        cdef Py_ssize_t next_tomb = tombstones[0] if nt else -1
        cdef bytes k
        cdef _History h
        cdef list new = []
        if PyList_GET_SIZE(revs) != n:
            raise ValueError(f"put_many: {n} keys but {PyList_GET_SIZE(revs)} revisions")
        try:
            for i in range(n):
                k = as_bytes(<object>PyList_GET_ITEM(keys, i))
                h = <_History>self._map.get(k)
                if i == next_tomb:
                    if h is None or not h.is_live():
                        raise KeyError(k)
                    h.tombstone(<object>PyList_GET_ITEM(revs, i))
                    ti += 1
                    next_tomb = tombstones[ti] if ti < nt else -1
                elif h is None:
                    h = _History(k)
                    h.put(<object>PyList_GET_ITEM(revs, i))
                    self._map[k] = h
                    new.append(h)
                else:
                    h.put(<object>PyList_GET_ITEM(revs, i))
        finally:
            if new:
                self._add_sorted(new)

    def put(self, key, int64_t rev):
        """Record a put of `key` at revision `rev` (must exceed its last one)."""
        cdef bytes k = as_bytes(key)
        cdef _History h = <_History>self._map.get(k)
        if h is None:
            h = _History(k)
            h.put(rev)
            self._map[k] = h
            self._insert_sorted(h)
        else:
            h.put(rev)

    def tombstone(self, key, int64_t rev):
        """Record the deletion of live `key` at `rev`; KeyError if not live."""
        cdef bytes k = as_bytes(key)
        cdef _History h = <_History>self._map.get(k)
        if h is None or not h.is_live():
            raise KeyError(k)
        h.tombstone(rev)

    def get(self, key, int64_t at_main):
        """(mod_rev, create_rev, version) of `key` at at_main, or None."""
        cdef _History h = <_History>self._map.get(as_bytes(key))
        cdef int64_t mod, created, ver
        if h is None or not h.get(at_main, &mod, &created, &ver):
            return None
        return mod, created, ver

    cdef tuple _scan(self, start, end, int64_t at_main, Py_ssize_t limit, bint want_keys):
        """(keys, mod revs, count) of the keys live at at_main in [start, end).
        Lists are None unless want_keys."""
        cdef bytes k_start = as_bytes(start), k_end
        cdef bint unbounded
        cdef Py_ssize_t ci, pos, nchunks, clen, found = 0
        cdef list chunk
        cdef list keys = None, revs = None
        cdef _History h
        cdef int64_t mod, created, ver
        if want_keys:
            keys = []
            revs = []
        if end is None or len(end) == 0:
            h = <_History>self._map.get(k_start)
            if h is not None and h.get(at_main, &mod, &created, &ver):
                if want_keys:
                    keys.append(h.key)
                    revs.append(mod)
                found = 1
            return keys, revs, found
        k_end = as_bytes(end)
        unbounded = k_end == b"\x00"
        nchunks = len(self._hchunks)
        ci = bisect_keys(self._maxes, k_start)
        if ci == nchunks:
            return keys, revs, 0
        pos = bisect_keys(<list>self._kchunks[ci], k_start)
        while ci < nchunks:
            chunk = <list>PyList_GET_ITEM(self._hchunks, ci)
            clen = PyList_GET_SIZE(chunk)
            while pos < clen:
                h = chunk_item(chunk, pos)
                if not unbounded and bytes_cmp(h.key, k_end) >= 0:
                    return keys, revs, found
                if h.get(at_main, &mod, &created, &ver):
                    found += 1
                    if want_keys:
                        keys.append(h.key)
                        revs.append(mod)
                    if limit > 0 and found >= limit:
                        return keys, revs, found
                pos += 1
            ci += 1
            pos = 0
        return keys, revs, found

    def range(self, start, end, int64_t at_main, Py_ssize_t limit=0):
        """Keys live at at_main in [start, end), ascending, and their mod revs.

        end None or b"": only `start`; end b"\\x00": every key >= start;
        limit > 0: at most `limit` keys.
        """
        keys, revs, _ = self._scan(start, end, at_main, limit, True)
        return keys, revs

    def count(self, start, end, int64_t at_main):
        """How many keys range() would return without a limit."""
        return self._scan(start, end, at_main, 0, False)[2]

    def compact(self, int64_t at_main):
        """etcd's treeIndex.Compact: drop history before at_main; return the
        set of revisions still needed. Keys with nothing left are removed."""
        cdef set available = set()
        cdef list chunk, kept = []
        cdef _History h
        cdef Py_ssize_t i, removed = 0
        for chunk in self._hchunks:
            for i in range(PyList_GET_SIZE(chunk)):
                h = chunk_item(chunk, i)
                h.compact(at_main, available)
                if h.is_empty():
                    del self._map[h.key]
                    removed += 1
                else:
                    kept.append(h)
        if removed:
            # Rebuild evenly sized chunks (removals may have left tiny ones).
            self._set_chunks(kept)
        return available

    def keep(self, int64_t at_main):
        """etcd's treeIndex.Keep: the set compact(at_main) would return."""
        cdef set available = set()
        cdef list chunk
        cdef Py_ssize_t i
        for chunk in self._hchunks:
            for i in range(PyList_GET_SIZE(chunk)):
                chunk_item(chunk, i).keep(at_main, available)
        return available

    def history(self, key):
        """[(created, ver, [revs...]), ...] of `key`, oldest generation first,
        or None (for debugging and tests)."""
        cdef _History h = <_History>self._map.get(as_bytes(key))
        return None if h is None else h.generations()
