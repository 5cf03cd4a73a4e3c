"""Checks for a lock whose holders' writes are fenced, and for the leases behind it.

**Fencing.** Lock holders write a protected key with a fenced write: a txn whose compare is
that the holder's lock key still exists with the create revision it had when the lock was
granted (etcd's ``Mutex.IsOwner``), and whose success branch puts
``<client>/<lock revision>/<seq>``. Lock keys are granted in create-revision order, so later
holders have higher lock revisions. :func:`check_fencing` reads the protected key's whole
history (every version, in mod-revision order) against every fenced write attempted, and finds:

* a write whose lock revision is lower than an earlier write's: a holder that had lost the
  lock wrote after a later holder (what an unfenced recipe does when a paused holder wakes);
* an acknowledged write (``status="ok"``: the txn answered succeeded=true) missing from the
  history: a lost write;
* a refused write (``status="fail"``: succeeded=false) in the history: the fence said no,
  yet the write happened;
* a value nobody wrote, or one written twice.

A write without an answer (``status="info"``) may or may not be in the history.

**Leases.** :func:`check_leases` sorts what happened to each lease a holder used, from the
client's side, into fates (see :func:`lease_fate`). Its one anomaly: a lease its holder
kept alive in time was revoked before its TTL ran out since the last keep-alive, with no
clock jump that could explain it. A renewal sent at ``t`` restarts the TTL at some moment
after ``t`` on the leader's clock, so on an honest clock the lease lives until ``t + TTL``
at least; an answer showing it gone that arrived before then is early. A jump of the
leader's clock does make a lease expire early (as a fast or jumping clock does in etcd);
that is expected, and fencing is what keeps the lock safe then.
"""
from __future__ import annotations

from dataclasses import dataclass, field


@dataclass
class FencedWrite:
    client: int
    lock_rev: int          # create revision of the holder's lock key
    seq: int               # unique per client
    invoke: float
    complete: float | None = None
    status: str = "info"   # "ok": succeeded=true; "fail": succeeded=false; "info": no answer
    paused: bool = False   # the holder stopped keeping its lease alive and slept past its TTL

    @property
    def value(self) -> str:
        return f"{self.client}/{self.lock_rev}/{self.seq}"

    def __str__(self) -> str:
        how = " after a pause" if self.paused else ""
        return (f"write {self.value!r} by client {self.client} holding lock rev "
                f"{self.lock_rev}{how} [{self.invoke:.2f}, "
                f"{'…' if self.complete is None else f'{self.complete:.2f}'}] ({self.status})")


@dataclass
class Version:
    """One version of the protected key, as its history (a watch from revision 1) shows it."""
    mod_revision: int
    value: str


@dataclass
class FencingResult:
    anomalies: list[str] = field(default_factory=list)
    accepted: int = 0      # fenced writes answered succeeded=true
    refused: int = 0       # answered succeeded=false
    refused_paused: int = 0
    unknown: int = 0       # no answer
    in_history: int = 0

    @property
    def ok(self) -> bool:
        return not self.anomalies


def check_fencing(writes: list[FencedWrite], history: list[Version]) -> FencingResult:
    res = FencingResult()
    by_value = {w.value: w for w in writes}
    res.accepted = sum(w.status == "ok" for w in writes)
    res.refused = sum(w.status == "fail" for w in writes)
    res.refused_paused = sum(w.status == "fail" and w.paused for w in writes)
    res.unknown = sum(w.status == "info" for w in writes)
    res.in_history = len(history)
    seen: dict[str, int] = {}
    last: tuple[int, FencedWrite] | None = None   # (mod revision, write) of the highest lock rev
    prev_rev = 0
    for v in history:
        if v.mod_revision <= prev_rev:
            res.anomalies.append(f"the history is out of order: mod revision {v.mod_revision} "
                                 f"after {prev_rev}")
        prev_rev = v.mod_revision
        w = by_value.get(v.value)
        if w is None:
            res.anomalies.append(f"mod revision {v.mod_revision}: value {v.value!r} that no "
                                 f"fenced write wrote")
            continue
        if v.value in seen:
            res.anomalies.append(f"{w} is in the history twice (mod revisions "
                                 f"{seen[v.value]} and {v.mod_revision})")
        seen[v.value] = v.mod_revision
        if w.status == "fail":
            res.anomalies.append(f"{w} was refused (succeeded=false) yet is in the history at "
                                 f"mod revision {v.mod_revision}")
        if last is not None and w.lock_rev < last[1].lock_rev:
            res.anomalies.append(
                f"lock revisions go backwards: {w} landed at mod revision {v.mod_revision}, "
                f"after {last[1]} at mod revision {last[0]}: a holder that had lost the lock "
                f"wrote after a later holder")
        if last is None or w.lock_rev >= last[1].lock_rev:
            last = (v.mod_revision, w)
    for w in writes:
        if w.status == "ok" and w.value not in seen:
            res.anomalies.append(f"{w} was acknowledged but is not in the history (lost)")
    return res


# ---- leases -----------------------------------------------------------------------------

@dataclass
class LeaseLife:
    """One lease, as its holder saw it (times in seconds since the run started)."""
    id: int
    ttl: float
    client: int
    renewed: list[float] = field(default_factory=list)  # send times of the grant and of
    #                                                     every keep-alive answered TTL > 0
    paused_at: float | None = None     # the holder stopped keeping it alive on purpose
    released_at: float | None = None   # the holder sent a revoke that may have worked
    gone_at: float | None = None       # arrival of the first answer showing it gone
    gone_how: str = ""                 # what that answer was

    def deadline(self) -> float:
        """Until when the lease must live, given the renewals sent before it was seen gone."""
        sent = [t for t in self.renewed if self.gone_at is None or t <= self.gone_at]
        return max(sent) + self.ttl if sent else float("-inf")


EXPECTED_FATES = ("released by its holder", "expired: its holder paused",
                  "expired: not kept alive in time", "expired early: clock jump",
                  "alive at the end")
EARLY = "REVOKED EARLY"


def lease_fate(lease: LeaseLife, clock_jumps: list[tuple[float, float]]) -> str:
    """Why the lease ended. ``clock_jumps``: (start, end) of every clock-jump fault (a
    member's clock is off from start to end, and jumps at both)."""
    if lease.gone_at is None or (lease.released_at is not None
                                 and lease.released_at <= lease.gone_at):
        return "released by its holder" if lease.released_at is not None else "alive at the end"
    if lease.paused_at is not None and lease.paused_at <= lease.gone_at:
        return "expired: its holder paused"
    if lease.gone_at >= lease.deadline():
        return "expired: not kept alive in time"
    last = lease.deadline() - lease.ttl
    if any(start <= lease.gone_at and last <= end for start, end in clock_jumps):
        return "expired early: clock jump"
    return EARLY


@dataclass
class LeaseResult:
    fates: dict[str, int] = field(default_factory=dict)
    anomalies: list[str] = field(default_factory=list)


def check_leases(leases: list[LeaseLife], clock_jumps: list[tuple[float, float]],
                 margin: float = 0.5) -> LeaseResult:
    """Count the leases' fates; an anomaly for each lease revoked early with no clock jump.
    Each clock-jump window is widened by ``margin`` seconds at its end (a member re-reads
    its fault file every 100 ms, so a jump back lands a little after the nemesis asked)."""
    windows = [(s, e + margin) for s, e in clock_jumps]
    res = LeaseResult()
    for lease in leases:
        fate = lease_fate(lease, windows)
        res.fates[fate] = res.fates.get(fate, 0) + 1
        if fate == EARLY:
            last = lease.deadline() - lease.ttl
            res.anomalies.append(
                f"lease {lease.id:x} of client {lease.client} kept alive in time yet revoked "
                f"early, with no clock jump: renewed at {last:.2f} (sent; TTL {lease.ttl:g} s, "
                f"so alive until {lease.deadline():.2f} at least), seen gone at "
                f"{lease.gone_at:.2f} ({lease.gone_how})")
    return res
