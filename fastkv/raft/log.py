"""The in-memory Raft log: entries after the last snapshot, and the indexes over them.

Entries are kept as parallel lists of terms, types and data rather than as
Entry objects: ints and bytes are not tracked by Python's cycle collector, so
a log of 100,000 entries costs a full GC pass nothing (with Entry objects it
cost ~35 ms per pass, which showed up as the put p99). Entry objects are made
on the way out, by ``slice``.
"""
from __future__ import annotations

from bisect import bisect_right
from itertools import accumulate

from fastkv.storage.wal import Entry

ENTRY_CONF_CHANGE = 1  # fastkv.raft.messages.ENTRY_CONF_CHANGE (messages imports this module's deps)


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

    # ---- used by the Raft core (fastkv/raft/core.py) -----------------------------------

    def term_or_none(self, index: int) -> int | None:
        """The term of the entry at index, or None if it is compacted or not there yet."""
        if index == self.snapshot_index:
            return self.snapshot_term
        if index < self.snapshot_index or index > self.last_index:
            return None
        return self._terms[index - self.snapshot_index - 1]

    def match_term(self, index: int, term: int) -> bool:
        return self.term_or_none(index) == term

    def is_up_to_date(self, last_index: int, last_term: int) -> bool:
        """Raft §5.4.1: is a log ending at (last_index, last_term) at least as new as ours?"""
        mine = self.last_term
        return last_term > mine or (last_term == mine and last_index >= self.last_index)

    def find_conflict(self, index: int, terms: list[int]) -> int:
        """The first index > index where ``terms`` (entries index+1, index+2, ...) disagree
        with the log or go past its end; 0 if the log already holds them all."""
        n = len(terms)
        overlap = min(self.last_index - index, n)
        if overlap > 0:
            lo = index - self.snapshot_index   # index+1 sits at position index - snapshot_index
            ours = self._terms[lo:lo + overlap]
            if ours != terms[:overlap]:
                for i in range(overlap):
                    if ours[i] != terms[i]:
                        return index + 1 + i
        elif overlap < 0:
            overlap = 0
        return index + 1 + overlap if overlap < n else 0

    def find_conflict_by_term(self, index: int, term: int) -> int:
        """The largest index <= index whose term is <= term (the log's terms never
        decrease, so this is a bisection). Used for the fast back-off of rejected appends."""
        if index > self.last_index:
            index = self.last_index
        if index <= self.snapshot_index:
            return index
        hi = index - self.snapshot_index           # entries first..index are _terms[:hi]
        pos = bisect_right(self._terms, term, 0, hi)
        return self.snapshot_index + pos

    def truncate_and_append(self, after: int, terms: list[int], types: list[int],
                            data: list[bytes]) -> None:
        """Drop the entries after index ``after``, then append the given ones there."""
        if after < self.snapshot_index:
            raise ValueError(f"truncate at {after} below the snapshot {self.snapshot_index}")
        cut = after - self.snapshot_index
        if cut < len(self._terms):
            del self._terms[cut:], self._types[cut:], self._data[cut:]
        elif cut > len(self._terms):
            raise ValueError(f"append after {after} beyond last index {self.last_index}")
        self._terms.extend(terms)
        self._types.extend(types)
        self._data.extend(data)

    def restore(self, index: int, term: int) -> None:
        """Forget every entry: the log now starts after a snapshot at (index, term)."""
        self.snapshot_index, self.snapshot_term = index, term
        self._terms, self._types, self._data = [], [], []

    def limit_bytes(self, lo: int, max_bytes: int) -> int:
        """The last index hi >= lo such that entries lo..hi hold at most max_bytes of data
        (always at least the entry at lo). lo must be in the log."""
        data = self._data
        start = lo - self.snapshot_index - 1
        end = len(data)
        total = len(data[start])
        if total >= max_bytes:
            return lo
        pos = start + 1
        chunk = 256
        while pos < end:
            stop = min(end, pos + chunk)
            # data[pos:stop], not islice(data, pos, stop): islice walks the list from
            # its start, which made every MsgApp O(log length) (16% of a leader's loop)
            sums = list(accumulate(map(len, data[pos:stop]), initial=total))
            if sums[-1] > max_bytes:
                k = bisect_right(sums, max_bytes) - 1   # sums[k] <= max: entries pos..pos+k-1 fit
                return self.snapshot_index + pos + k
            total = sums[-1]
            pos = stop
            chunk *= 4
        return self.last_index

    def has_conf_change(self, lo: int, hi: int) -> bool:
        """Is there an ENTRY_CONF_CHANGE entry with lo <= index <= hi (in the log)?"""
        lo = max(lo, self.first_index)
        hi = min(hi, self.last_index)
        if hi < lo:
            return False
        off = self.snapshot_index + 1
        return ENTRY_CONF_CHANGE in self._types[lo - off:hi - off + 1]
