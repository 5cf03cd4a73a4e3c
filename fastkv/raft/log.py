"""The in-memory Raft log: entries after the last snapshot, and the indexes over them."""
from __future__ import annotations

from fastkv.storage.wal import Entry


class RaftLog:
    """Entries (snapshot_index, last_index], plus the snapshot's (index, term)."""

    def __init__(self, snapshot_index: int = 0, snapshot_term: int = 0,
                 entries: list[Entry] | None = None):
        self.snapshot_index = snapshot_index
        self.snapshot_term = snapshot_term
        self.entries: list[Entry] = list(entries or [])
        if self.entries and self.entries[0].index != snapshot_index + 1:
            raise ValueError(f"log starts at {self.entries[0].index}, snapshot at {snapshot_index}")

    @property
    def first_index(self) -> int:
        return self.snapshot_index + 1

    @property
    def last_index(self) -> int:
        return self.entries[-1].index if self.entries else self.snapshot_index

    @property
    def last_term(self) -> int:
        return self.entries[-1].term if self.entries else self.snapshot_term

    def term_at(self, index: int) -> int:
        if index == self.snapshot_index:
            return self.snapshot_term
        if index < self.snapshot_index or index > self.last_index:
            raise IndexError(f"no entry at {index} (log holds {self.first_index}..{self.last_index})")
        return self.entries[index - self.first_index].term

    def append(self, entry: Entry) -> None:
        if entry.index != self.last_index + 1:
            raise ValueError(f"append at {entry.index}, expected {self.last_index + 1}")
        self.entries.append(entry)

    def slice(self, lo: int, hi: int) -> list[Entry]:
        """Entries with lo <= index <= hi."""
        lo = max(lo, self.first_index)
        if hi < lo:
            return []
        off = self.first_index
        return self.entries[lo - off: hi - off + 1]

    def compact(self, index: int) -> None:
        """Forget entries at or below index (they are in a snapshot now)."""
        if index <= self.snapshot_index:
            return
        if index > self.last_index:
            raise ValueError(f"compact to {index} beyond last index {self.last_index}")
        term = self.term_at(index)
        del self.entries[: index - self.first_index + 1]
        self.snapshot_index, self.snapshot_term = index, term
