"""Pure-Python reference of the ordered key index (fastkv.mvcc._keyindex).

Only the property tests use it; the store uses the Cython KeyIndex. Both
mirror etcd 3.4's treeIndex/keyIndex (mvcc/index.go, mvcc/key_index.go).

A revision is one int, ``main << 24 | sub`` (fastkv.mvcc.revision). "At main
revision M" means considering only revisions whose main part is <= M.

Each key has a history of *generations*. A generation is the life of the key
from its creation to its deletion: the revisions of every put, ending with
the tombstone revision of the delete. Deleting a key appends the tombstone to
the current generation and opens a new, empty one; the next put fills it. For
put(1.0) put(2.0) tombstone(3.0) put(4.0) tombstone(5.0)::

    {1.0, 2.0, 3.0(t)}  {4.0, 5.0(t)}  {}

Each generation also keeps `created` (its first revision) and `ver` (the
number of puts it has seen, including those compaction dropped), so
versions stay right after a compaction.

compact(M) drops, in every key, the revisions older than the newest one at or
before M (which is kept, and reported "available", unless it is a tombstone:
a deleted key needs nothing from before its deletion). Generations left empty
are dropped, and a key with nothing left leaves the index.
"""
from bisect import bisect_left, insort

SUB_BITS = 24


class _Generation:
    __slots__ = ("created", "ver", "revs")

    def __init__(self) -> None:
        self.created = 0
        self.ver = 0
        self.revs: list[int] = []


class _KeyHistory:
    """etcd's keyIndex: the generations of one key."""

    __slots__ = ("key", "modified", "generations")

    def __init__(self, key: bytes) -> None:
        self.key = key
        self.modified = -1  # no revision yet; any rev >= 0 is greater
        self.generations: list[_Generation] = []

    def is_empty(self) -> bool:
        return len(self.generations) == 1 and not self.generations[0].revs

    def put(self, rev: int) -> None:
        if rev <= self.modified:
            raise ValueError(f"put of revision {rev:#x} not after {self.modified:#x} "
                             f"on key {self.key!r}")
        if not self.generations:
            self.generations.append(_Generation())
        g = self.generations[-1]
        if not g.revs:
            g.created = rev
        g.revs.append(rev)
        g.ver += 1
        self.modified = rev

    def is_live(self) -> bool:
        return bool(self.generations) and bool(self.generations[-1].revs)

    def tombstone(self, rev: int) -> None:
        self.put(rev)
        self.generations.append(_Generation())

    def find_generation(self, at_main: int):
        """The generation alive at at_main, or None (not yet created or deleted)."""
        last = len(self.generations) - 1
        for gi in range(last, -1, -1):
            g = self.generations[gi]
            if not g.revs:
                continue
            if gi != last and g.revs[-1] >> SUB_BITS <= at_main:
                return None  # its tombstone is at or before at_main: deleted
            if g.revs[0] >> SUB_BITS <= at_main:
                return g
        return None

    def get(self, at_main: int):
        g = self.find_generation(at_main)
        if g is None:
            return None
        for n in range(len(g.revs) - 1, -1, -1):
            if g.revs[n] >> SUB_BITS <= at_main:
                return g.revs[n], g.created, g.ver - (len(g.revs) - n - 1)
        return None

    def _do_compact(self, at_main: int, available: set) -> tuple[int, int]:
        """etcd's doCompact: the first generation that is alive at or after
        at_main, and the position in it of the newest revision <= at_main
        (added to `available`), or -1."""
        gens = self.generations
        gi = 0
        while gi < len(gens) - 1 and gens[gi].revs[-1] >> SUB_BITS <= at_main:
            gi += 1
        revs = gens[gi].revs
        for n in range(len(revs) - 1, -1, -1):
            if revs[n] >> SUB_BITS <= at_main:
                available.add(revs[n])
                return gi, n
        return gi, -1

    def compact(self, at_main: int, available: set) -> None:
        gi, ri = self._do_compact(at_main, available)
        g = self.generations[gi]
        if g.revs:
            if ri != -1:
                del g.revs[:ri]
            # A generation reduced to its tombstone is no longer needed.
            if len(g.revs) == 1 and gi != len(self.generations) - 1:
                available.discard(g.revs[0])
                gi += 1
        del self.generations[:gi]

    def keep(self, at_main: int, available: set) -> None:
        if self.is_empty():
            return
        gi, ri = self._do_compact(at_main, available)
        g = self.generations[gi]
        if g.revs and ri == len(g.revs) - 1 and gi != len(self.generations) - 1:
            available.discard(g.revs[ri])


class KeyIndex:
    """Ordered index of keys to their revision history (etcd's treeIndex)."""

    def __init__(self) -> None:
        self._hist: dict[bytes, _KeyHistory] = {}
        self._keys: list[bytes] = []  # sorted

    def __len__(self) -> int:
        return len(self._hist)

    def put(self, key: bytes, rev: int) -> None:
        key = bytes(key)
        h = self._hist.get(key)
        if h is None:
            h = _KeyHistory(key)
            h.put(rev)
            self._hist[key] = h
            insort(self._keys, key)
        else:
            h.put(rev)

    def put_many(self, keys: list, revs: list, tombstones=()) -> None:
        """put(keys[i], revs[i]) for each i in order; tombstone() at the positions
        listed in `tombstones` (the Cython index loads a snapshot with it)."""
        if len(keys) != len(revs):
            raise ValueError(f"put_many: {len(keys)} keys but {len(revs)} revisions")
        deletes = set(tombstones)
        for i, (key, rev) in enumerate(zip(keys, revs)):
            if i in deletes:
                self.tombstone(key, rev)
            else:
                self.put(key, rev)

    def tombstone(self, key: bytes, rev: int) -> None:
        key = bytes(key)
        h = self._hist.get(key)
        if h is None or not h.is_live():
            raise KeyError(key)
        h.tombstone(rev)

    def get(self, key: bytes, at_main: int):
        h = self._hist.get(bytes(key))
        if h is None:
            return None
        return h.get(at_main)

    def _scan(self, start: bytes, end, at_main: int, limit: int):
        start = bytes(start)
        if not end:
            r = self.get(start, at_main)
            return ([start], [r[0]]) if r is not None else ([], [])
        end = bytes(end)
        keys, revs = [], []
        all_from = end == b"\x00"
        sorted_keys = self._keys
        for i in range(bisect_left(sorted_keys, start), len(sorted_keys)):
            k = sorted_keys[i]
            if not all_from and k >= end:
                break
            r = self._hist[k].get(at_main)
            if r is not None:
                keys.append(k)
                revs.append(r[0])
                if limit > 0 and len(keys) >= limit:
                    break
        return keys, revs

    def range(self, start: bytes, end, at_main: int, limit: int = 0):
        """Keys live at at_main in [start, end), ascending, and their mod revs."""
        return self._scan(start, end, at_main, limit)

    def count(self, start: bytes, end, at_main: int) -> int:
        return len(self._scan(start, end, at_main, 0)[0])

    def compact(self, at_main: int) -> set:
        available: set = set()
        kept = []
        for k in self._keys:
            h = self._hist[k]
            h.compact(at_main, available)
            if h.is_empty():
                del self._hist[k]
            else:
                kept.append(k)
        self._keys = kept
        return available

    def keep(self, at_main: int) -> set:
        available: set = set()
        for k in self._keys:
            self._hist[k].keep(at_main, available)
        return available

    def history(self, key: bytes):
        """[(created, ver, [revs...]), ...] of `key`, oldest generation first,
        or None (for debugging and tests)."""
        h = self._hist.get(bytes(key))
        if h is None:
            return None
        return [(g.created, g.ver, list(g.revs)) for g in h.generations]
