"""A checker for etcd's watch guarantees (the API guarantees page), against the true history.

Inputs:

* the true history of the keys watched: ``[(revision, [Event, ...]), ...]``, revisions
  increasing, each revision's events in their order within the revision (as a watch from
  revision 1 with prev_kv reports them; the workload also checks this history against the
  writes it made);
* :class:`Session` records: one per watch, what it asked (key range, start revision,
  filters, prev_kv, progress_notify) and every :class:`Response` it got, in order.

What is checked in each session (the guarantee named in each :class:`Anomaly`):

* **ordered**: the revision of the events never goes backwards, and the events of one
  revision come in the history's order; a response's header revision is not below the
  events it carries;
* **unique**: no event (revision, key) is delivered twice;
* **atomic**: a response carrying an event of revision R carries every event of R the watch
  matches (a revision is never split over responses);
* **reliable**: every matching event of the history from the start revision up to the last
  revision the session vouches for (the highest event or progress revision it got) is
  delivered, and nothing else is: no event missing in between, no phantom event (absent from
  the history, excluded by the range or the filters, or below the start revision), and each
  delivered event identical to the history's (value, versions, lease, prev_kv when asked);
  a watch cancelled as compacted although its start revision was not compacted breaks it too;
* **bookmarkable**: a progress notification (a response with no events that is neither
  created nor canceled) at revision R comes after every matching event up to R, and no event
  up to R comes after it;
* **resumable**: a session that resumes another (``resumes`` names it) starts right after
  the last revision that session vouched for. The server's side of resuming (a watch from
  R+1 gives exactly the events after R) is each session's own reliability.

``check(history, sessions)`` returns a :class:`WatchCheck`; ``ok`` is false on any anomaly.
"""
from __future__ import annotations

import bisect
from dataclasses import dataclass, field, replace

PUT, DELETE = "PUT", "DELETE"
NOPUT, NODELETE = "NOPUT", "NODELETE"
MAX_PER_KIND = 5     # anomalies reported per session and guarantee (the rest are counted)


@dataclass(frozen=True, slots=True)
class Event:
    """One event as a watch delivers it; ``prev`` is the prev_kv (as an Event) or None."""
    rev: int                    # kv.mod_revision (the deletion's revision for a DELETE)
    key: str
    type: str = PUT
    value: str = ""
    create_rev: int = 0
    version: int = 0
    lease: int = 0
    prev: "Event | None" = None

    def __str__(self) -> str:
        what = f"{self.type} {self.key}" + (f"={self.value!r}" if self.type == PUT else "")
        return f"{what}@{self.rev}"


@dataclass(slots=True)
class Response:
    """One WatchResponse: its header revision and what it carried."""
    rev: int
    events: list = field(default_factory=list)
    created: bool = False
    canceled: bool = False
    compact_revision: int = 0
    fragment: bool = False

    @property
    def is_progress(self) -> bool:
        return not (self.events or self.created or self.canceled or self.fragment)


@dataclass
class Session:
    """One watch: what was asked and what came back. ``range_end``: None for the key alone,
    "\\0" for every key from ``key`` on, else the end of [key, range_end)."""
    name: str
    key: str
    range_end: str | None = None
    start_revision: int = 0        # 0: from the revision after the created response's
    filters: tuple = ()
    prev_kv: bool = False
    progress_notify: bool = False
    responses: list = field(default_factory=list)
    resumes: str | None = None     # the name of the session this one resumes, if any

    def matches(self, ev: Event) -> bool:
        if ev.type == PUT and NOPUT in self.filters:
            return False
        if ev.type == DELETE and NODELETE in self.filters:
            return False
        if self.range_end is None:
            return ev.key == self.key
        return ev.key >= self.key and (self.range_end == "\0" or ev.key < self.range_end)

    def expected(self, ev: Event) -> Event:
        """The history's event as this session should see it."""
        return ev if self.prev_kv else replace(ev, prev=None)

    def horizon(self) -> int:
        """The last revision this session vouches for: its highest event or progress
        revision (0 if none)."""
        h = 0
        for r in self.responses:
            if r.events:
                h = max(h, max(e.rev for e in r.events))
            elif r.is_progress:
                h = max(h, r.rev)
        return h


@dataclass
class Anomaly:
    guarantee: str
    session: str
    revision: int
    detail: str

    def __str__(self) -> str:
        return (f"watch not {self.guarantee}: session {self.session}, revision "
                f"{self.revision}: {self.detail}")


@dataclass
class WatchCheck:
    anomalies: list = field(default_factory=list)
    sessions: int = 0
    events: int = 0              # events delivered and checked
    progress: int = 0            # progress notifications seen
    resumed: int = 0

    @property
    def ok(self) -> bool:
        return not self.anomalies

    def summary(self) -> str:
        return (f"{self.sessions} sessions ({self.resumed} resumed), {self.events} events "
                f"checked, {self.progress} progress notifications: "
                f"{'ordered, unique, atomic, reliable, bookmarkable' if self.ok else 'FAILED'}")


class History:
    """The true history, indexed by revision and by (revision, key)."""

    def __init__(self, history):
        self.revs: list[int] = []
        self.by_rev: dict[int, list[Event]] = {}
        self.by_id: dict[tuple, Event] = {}
        for rev, events in history:
            if self.revs and rev <= self.revs[-1]:
                raise ValueError(f"history revisions must increase: {rev} after {self.revs[-1]}")
            if not events:
                continue
            for ev in events:
                if ev.rev != rev or (rev, ev.key) in self.by_id:
                    raise ValueError(f"bad history event {ev} at revision {rev}")
                self.by_id[(rev, ev.key)] = ev
            self.revs.append(rev)
            self.by_rev[rev] = list(events)

    def matching(self, s: Session, lo: int, hi: int):
        """The events session ``s`` matches with lo <= revision <= hi, in order."""
        i = bisect.bisect_left(self.revs, lo)
        while i < len(self.revs) and self.revs[i] <= hi:
            for ev in self.by_rev[self.revs[i]]:
                if s.matches(ev):
                    yield ev
            i += 1


def check(history, sessions, compact_revision: int = 0) -> WatchCheck:
    """Check every session against the history (see the module docstring).
    ``compact_revision``: the store's compaction, if any (a watch starting below it may be
    cancelled as compacted)."""
    hist = history if isinstance(history, History) else History(history)
    res = WatchCheck(sessions=len(sessions))
    by_name = {s.name: s for s in sessions}
    for s in sessions:
        found = _check_session(hist, s, compact_revision, res)
        if s.resumes is not None:
            res.resumed += 1
            found += _check_resume(s, by_name.get(s.resumes))
        res.anomalies += _capped(found)
    return res


def _merged(responses):
    """Responses with fragments joined to the response they belong to."""
    out, pending = [], []
    for r in responses:
        if r.fragment:
            pending += r.events
            continue
        if pending:
            r = replace(r, events=pending + list(r.events))
            pending = []
        out.append(r)
    return out


def effective_start(s: Session) -> int | None:
    """The first revision the session watches: its start revision, or for 0 the revision
    after the created response's (None if it got none)."""
    if s.start_revision:
        return s.start_revision
    created = next((r for r in s.responses if r.created), None)
    return None if created is None else created.rev + 1


def _check_session(hist: History, s: Session, compact_revision: int, res: WatchCheck) -> list:
    found: list[Anomaly] = []

    def bad(guarantee, rev, detail):
        found.append(Anomaly(guarantee, s.name, rev, detail))

    start = effective_start(s)
    seen: set = set()            # (revision, key) delivered
    reported: set = set()        # (revision, key) already reported missing
    split: set = set()           # revisions already reported split
    last_rev = 0                 # the highest event revision delivered
    bookmark = 0                 # the highest progress notification revision
    for r in _merged(s.responses):
        if r.canceled:
            if r.compact_revision and not (start is not None and start < r.compact_revision
                                           <= compact_revision):
                bad("reliable", r.compact_revision,
                    f"cancelled as compacted at {r.compact_revision} (start revision {start}, "
                    f"store compacted at {compact_revision})")
            break
        if r.created:
            continue
        if r.is_progress:
            res.progress += 1
            if r.rev < last_rev:
                bad("bookmarkable", r.rev, f"progress notification at {r.rev} after an event "
                                           f"of revision {last_rev} was delivered")
            elif start is not None:
                # vouched for, not delivered, and above every event delivered so far (one
                # below is a gap between delivered events: reliability, checked at the end)
                missing = [ev for ev in hist.matching(s, max(start, last_rev + 1), r.rev)
                           if (ev.rev, ev.key) not in seen]
                if missing:
                    reported.update((ev.rev, ev.key) for ev in missing)
                    bad("bookmarkable", r.rev,
                        f"progress notification at {r.rev} before {len(missing)} event(s) it "
                        f"vouches for were delivered: {_few(missing)}")
            bookmark = max(bookmark, r.rev)
            continue
        top = max(ev.rev for ev in r.events)
        if r.rev < top:
            bad("ordered", top, f"response header revision {r.rev} is below its event {top}")
        for ev in r.events:
            res.events += 1
            ident = (ev.rev, ev.key)
            if ev.rev < last_rev:
                bad("ordered", ev.rev, f"{ev} delivered after an event of revision {last_rev}")
            elif ident in seen:
                bad("unique", ev.rev, f"{ev} delivered twice")
            elif start is not None and ev.rev < start:
                bad("reliable", ev.rev, f"{ev} is below the start revision {start}")
            elif ev.rev <= bookmark:
                bad("bookmarkable", ev.rev, f"{ev} delivered after a progress notification "
                                            f"at {bookmark}")
            else:
                _compare(hist, s, ev, bad)
            seen.add(ident)
            last_rev = max(last_rev, ev.rev)
        _check_response_revisions(hist, s, r, split, bad)
    horizon = max(last_rev, bookmark)
    if start is not None:
        missing = [ev for ev in hist.matching(s, start, horizon)
                   if (ev.rev, ev.key) not in seen and (ev.rev, ev.key) not in reported]
        for gap in _gaps(missing, sorted({rev for rev, _ in seen})):
            bad("reliable", gap[0].rev,
                f"{len(gap)} event(s) never delivered though the session vouches up to "
                f"revision {horizon}: {_few(gap)}")
    return found


def _compare(hist: History, s: Session, ev: Event, bad) -> None:
    true = hist.by_id.get((ev.rev, ev.key))
    if true is None:
        bad("reliable", ev.rev, f"phantom event {ev}: not in the history")
    elif not s.matches(true):
        bad("reliable", ev.rev, f"{ev} is outside the watch's range or filters")
    elif s.expected(true) != ev:
        bad("reliable", ev.rev, f"delivered {_full(ev)}, the history has "
                                f"{_full(s.expected(true))}")


def _check_response_revisions(hist: History, s: Session, r: Response, split: set, bad) -> None:
    """Atomic: each revision in the response complete; ordered: in the history's order."""
    keys_by_rev: dict[int, list[str]] = {}
    for ev in r.events:
        keys_by_rev.setdefault(ev.rev, []).append(ev.key)
    for rev, keys in keys_by_rev.items():
        want = [ev.key for ev in hist.by_rev.get(rev, ()) if s.matches(ev)]
        if rev in split or not want:
            continue
        missing = [k for k in want if k not in keys]
        if missing and len(missing) < len(want):
            split.add(rev)
            bad("atomic", rev, f"revision {rev} split: this response carries {keys}, "
                               f"not {missing}")
        elif not missing and list(dict.fromkeys(k for k in keys if k in want)) != want:
            bad("ordered", rev, f"events of revision {rev} in the order {keys}, the history's "
                                f"is {want}")


def _check_resume(s: Session, prev: Session | None) -> list:
    if prev is None:
        return [Anomaly("resumable", s.name, s.start_revision,
                        f"resumes {s.resumes!r}, which was not recorded")]
    h = prev.horizon()
    if h and s.start_revision != h + 1:
        return [Anomaly("resumable", s.name, s.start_revision,
                        f"resumed at {s.start_revision} but {prev.name} vouched up to {h}")]
    return []


def _gaps(missing: list, delivered_revs: list) -> list[list]:
    """Missing events grouped into gaps: those between the same two delivered revisions."""
    gaps: dict[int, list] = {}
    for ev in missing:
        gaps.setdefault(bisect.bisect_left(delivered_revs, ev.rev), []).append(ev)
    return [gaps[k] for k in sorted(gaps)]


def _capped(found: list) -> list:
    out, count = [], {}
    for a in found:
        count[a.guarantee] = count.get(a.guarantee, 0) + 1
        if count[a.guarantee] <= MAX_PER_KIND:
            out.append(a)
    for g, n in count.items():
        if n > MAX_PER_KIND:
            first = next(a for a in found if a.guarantee == g)
            out.append(Anomaly(g, first.session, first.revision,
                               f"... and {n - MAX_PER_KIND} more of this kind in this session"))
    return out


def _few(events, n: int = 4) -> str:
    shown = ", ".join(str(e) for e in events[:n])
    return shown + (f" (+{len(events) - n} more)" if len(events) > n else "")


def _full(ev: Event) -> str:
    prev = "none" if ev.prev is None else f"{ev.prev.value!r}@{ev.prev.rev}"
    return (f"{ev} (create {ev.create_rev}, version {ev.version}, lease {ev.lease}, "
            f"prev_kv {prev})")
