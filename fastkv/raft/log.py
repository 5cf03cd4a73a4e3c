"""The in-memory Raft log: entries after the last snapshot, and the indexes over them.

Entries are kept as parallel lists of terms, types and data rather than as
Entry objects: ints and bytes are not tracked by Python's cycle collector, so
a log of 100,000 entries costs a full GC pass nothing (with Entry objects it
cost ~35 ms per pass, which showed up as the put p99). Entry objects are made
on the way out, by ``slice``.
"""
from __future__ import annotations

from fastkv.storage.wal import Entry


class RaftLog:
    """Entries (snapshot_index, last_index], plus the snapshot's (index, term)."""

    __slots__ = ("snapshot_index", "snapshot_term", "_terms", "_types", "_data")

    def __init__(self, snapshot_index: int = 0, snapshot_term: int = 0,
                 entries: list[Entry] | None = None):
        self.snapshot_index = snapshot_index
        self.snapshot_term = snapshot_term
        self._terms: list[int] = []
        self._types: list[int] = []
        self._data: list[bytes] = []
        for e in entries or ():
            self.append(e)

    @property
    def first_index(self) -> int:
        return self.snapshot_index + 1

    @property
    def last_index(self) -> int:
        return self.snapshot_index + len(self._terms)

    @property
    def last_term(self) -> int:
        return self._terms[-1] if self._terms else self.snapshot_term

    def __len__(self) -> int:
        return len(self._terms)

    def term_at(self, index: int) -> int:
        if index == self.snapshot_index:
            return self.snapshot_term
        if index < self.snapshot_index or index > self.last_index:
            raise IndexError(f"no entry at {index} (log holds {self.first_index}..{self.last_index})")
        return self._terms[index - self.first_index]

    def append(self, entry: Entry) -> None:
        if entry.index != self.last_index + 1:
            raise ValueError(f"append at {entry.index}, expected {self.last_index + 1}")
        self._terms.append(entry.term)
        self._types.append(entry.type)
        self._data.append(entry.data)

    def append_new(self, term: int, etype: int, data: bytes) -> int:
        """Append an entry at the next index; returns that index."""
        self._terms.append(term)
        self._types.append(etype)
        self._data.append(data)
        return self.snapshot_index + len(self._terms)

    def slice(self, lo: int, hi: int) -> list[Entry]:
        """Entries with lo <= index <= hi."""
        lo = max(lo, self.first_index)
        hi = min(hi, self.last_index)
        if hi < lo:
            return []
        off = self.first_index
        terms, types, data = self._terms, self._types, self._data
        return [Entry(terms[i - off], i, types[i - off], data[i - off]) for i in range(lo, hi + 1)]

    def compact(self, index: int) -> None:
        """Forget entries at or below index (they are in a snapshot now)."""
        if index <= self.snapshot_index:
            return
        if index > self.last_index:
            raise ValueError(f"compact to {index} beyond last index {self.last_index}")
        term = self.term_at(index)
        cut = index - self.first_index + 1
        del self._terms[:cut], self._types[:cut], self._data[:cut]
        self.snapshot_index, self.snapshot_term = index, term
