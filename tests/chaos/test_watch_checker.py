"""The watch checker (tests/checkers/watch.py) and the watch workload
(tests/chaos/workloads/watch.py): crafted histories show each guarantee's violation is caught
and valid sessions pass. The real-process run (all workloads at once) is
test_nemesis_short.py."""
from __future__ import annotations

import os
import sys

sys.path.insert(0, os.path.dirname(os.path.abspath(__file__)))

import nemesis  # noqa: E402,F401 (sets up sys.path as the harness does)
from workloads.watch import (Write, check_history_against_writes,  # noqa: E402
                             response_from_json)

from checkers.watch import (DELETE, NODELETE, NOPUT, Event, History, Response,  # noqa: E402
                            Session, check)


def put(rev, key, value, version=1, create=None, prev=None):
    return Event(rev, key, "PUT", value, create or rev, version, 0, prev)


def delete(rev, key, prev=None):
    return Event(rev, key, DELETE, "", 0, 0, 0, prev)


# The true history of keys a, b, c (revision 3 is a key outside them, so it is absent):
#   2: a=a1   4: a=a2, b=b1 (one txn)   5: c=c1   6: delete a   7: b=b2, c=c2 (one txn)
A1 = put(2, "a", "a1")
A2 = put(4, "a", "a2", version=2, create=2, prev=A1)
B1 = put(4, "b", "b1")
C1 = put(5, "c", "c1")
DA = delete(6, "a", prev=A2)
B2 = put(7, "b", "b2", version=2, create=4, prev=B1)
C2 = put(7, "c", "c2", version=2, create=5, prev=C1)
HISTORY = [(2, [A1]), (4, [A2, B1]), (5, [C1]), (6, [DA]), (7, [B2, C2])]


def bare(*events):
    """Events as a watch without prev_kv gets them."""
    return [Event(e.rev, e.key, e.type, e.value, e.create_rev, e.version, e.lease)
            for e in events]


def session(responses, key="a", range_end="d", start=1, **kw):
    return Session("s1", key, range_end, start, responses=[Response(1, created=True)]
                   + responses, **kw)


def ev_resp(*events, rev=None):
    return Response(rev or max(e.rev for e in events), list(events))


def progress(rev):
    return Response(rev)


def guarantees(*sessions, history=HISTORY):
    res = check(history, list(sessions))
    return sorted({a.guarantee for a in res.anomalies}), res


# ---- valid sessions pass ---------------------------------------------------------------

def test_a_complete_session_passes():
    s = session([ev_resp(*bare(A1)), ev_resp(*bare(A2, B1)), progress(4),
                 ev_resp(*bare(C1, DA, B2, C2), rev=9), progress(9)])
    found, res = guarantees(s)
    assert found == [] and res.ok
    assert res.events == 7 and res.progress == 2 and res.sessions == 1


def test_a_session_may_stop_anywhere_after_a_whole_revision():
    """Nothing after the last revision a session vouches for is owed: it may have ended."""
    s = session([ev_resp(*bare(A1)), ev_resp(*bare(A2, B1))])
    assert guarantees(s)[0] == []
    assert guarantees(session([]))[0] == []


def test_ranges_filters_prev_kv_and_start_revision_0_pass():
    single = Session("b", "b", None, 0, responses=[Response(3, created=True),
                                                   ev_resp(*bare(B1)), ev_resp(*bare(B2))])
    no_delete = session([ev_resp(A1, rev=3), ev_resp(A2, B1), ev_resp(C1), ev_resp(B2, C2),
                         progress(8)], filters=(NODELETE,), prev_kv=True)
    no_put = session([ev_resp(*bare(DA)), progress(7)], filters=(NOPUT,))
    from_c = Session("c", "c", "\0", 5, responses=[Response(7, created=True),
                                                   ev_resp(*bare(C1, C2), rev=7)])
    assert guarantees(single, no_delete, no_put, from_c)[0] == []


def test_a_resumed_session_continues_where_the_first_vouched():
    first = Session("s1", "a", "d", 1, responses=[Response(1, created=True),
                                                  ev_resp(*bare(A1, A2, B1, C1), rev=5),
                                                  progress(5)])
    second = Session("s2", "a", "d", 6, responses=[Response(6, created=True),
                                                   ev_resp(*bare(DA)), ev_resp(*bare(B2, C2))],
                     resumes="s1")
    found, res = guarantees(first, second)
    assert found == [] and res.resumed == 1
    # resumed one revision too late: the events of revision 6 would be lost to the watcher
    late = Session("s2", "a", "d", 7, responses=[Response(7, created=True)], resumes="s1")
    found, res = guarantees(first, late)
    assert found == ["resumable"] and "vouched up to 5" in str(res.anomalies[0])


def test_fragments_are_joined_before_checking():
    s = session([ev_resp(*bare(A1)), Response(4, bare(A2), fragment=True),
                 ev_resp(*bare(B1))])
    assert guarantees(s)[0] == []


# ---- each guarantee's violation is caught ----------------------------------------------

def test_reordered_events_break_ordered():
    s = session([ev_resp(*bare(A2, B1)), ev_resp(*bare(A1))])
    found, res = guarantees(s)
    assert "ordered" in found
    a = next(a for a in res.anomalies if a.guarantee == "ordered")
    assert a.session == "s1" and a.revision == 2
    # the events of one revision in another order than the history's
    assert guarantees(session([ev_resp(*bare(A1)), ev_resp(*bare(B1, A2))]))[0] == ["ordered"]


def test_a_duplicated_event_breaks_unique():
    s = session([ev_resp(*bare(A1)), ev_resp(*bare(A2, B1)), ev_resp(*bare(A2, B1))])
    found, res = guarantees(s)
    assert found == ["unique"] and res.anomalies[0].revision == 4
    # within one response too
    assert guarantees(session([ev_resp(*bare(A1, A1))]))[0] == ["unique"]


def test_a_split_revision_breaks_atomic():
    s = session([ev_resp(*bare(A1)), ev_resp(*bare(A2)), ev_resp(*bare(B1))])
    found, res = guarantees(s)
    assert found == ["atomic"]
    assert res.anomalies[0].revision == 4 and "split" in res.anomalies[0].detail
    # half a revision, the other half never sent: atomic (and the missing half a gap)
    found, _ = guarantees(session([ev_resp(*bare(A1)), ev_resp(*bare(A2)),
                                   ev_resp(*bare(C1))]))
    assert found == ["atomic", "reliable"]


def test_a_missing_event_breaks_reliable():
    s = session([ev_resp(*bare(A1)), ev_resp(*bare(C1))])     # revision 4 skipped
    found, res = guarantees(s)
    assert found == ["reliable"]
    a = res.anomalies[0]
    assert a.revision == 4 and "never delivered" in a.detail and "a=" in a.detail
    # a gap between delivered events stays a reliability break when a progress
    # notification vouches for it later
    found, res = guarantees(session([ev_resp(*bare(A1)), ev_resp(*bare(C1)), progress(5)]))
    assert found == ["reliable"] and res.anomalies[0].revision == 4
    # a gap at the start: the session started at 1 but its first event is revision 4
    assert guarantees(session([ev_resp(*bare(A2, B1))]))[0] == ["reliable"]


def test_phantom_and_out_of_range_events_break_reliable():
    phantom = put(5, "b", "zz")                       # b was not written at revision 5
    s = session([ev_resp(*bare(A1)), ev_resp(*bare(A2, B1)), ev_resp(*bare(C1, phantom))])
    found, res = guarantees(s)
    assert found == ["reliable"] and "phantom" in res.anomalies[0].detail
    # c is outside [a, c)
    found, res = guarantees(session([ev_resp(*bare(A1)), ev_resp(*bare(A2, B1)),
                                     ev_resp(*bare(C1))], range_end="c"))
    assert found == ["reliable"] and "outside" in res.anomalies[0].detail
    # a delete delivered to a NODELETE watch
    found, _ = guarantees(session([ev_resp(*bare(A1)), ev_resp(*bare(A2, B1)),
                                   ev_resp(*bare(C1)), ev_resp(*bare(DA))],
                                  filters=(NODELETE,)))
    assert found == ["reliable"]
    # an event below the start revision
    found, res = guarantees(session([ev_resp(*bare(A1)), ev_resp(*bare(A2, B1))], start=3))
    assert found == ["reliable"] and "start revision" in res.anomalies[0].detail


def test_a_wrong_value_or_prev_kv_breaks_reliable():
    wrong = put(4, "b", "not-b1")
    found, res = guarantees(session([ev_resp(*bare(A1)), ev_resp(*bare(A2), wrong)]))
    assert found == ["reliable"] and "'not-b1'" in res.anomalies[0].detail
    # prev_kv asked for but left out
    found, _ = guarantees(session([ev_resp(A1), ev_resp(*bare(A2, B1))], prev_kv=True))
    assert found == ["reliable"]


def test_an_early_progress_notification_breaks_bookmarkable():
    # a progress notification at 5 before revision 4 was delivered...
    s = session([ev_resp(*bare(A1)), progress(5), ev_resp(*bare(A2, B1))])
    found, res = guarantees(s)
    assert found == ["bookmarkable"]
    assert {a.revision for a in res.anomalies} == {4, 5}
    assert "before 3 event(s)" in res.anomalies[0].detail   # a=2@4, b=1@4, c=1@5
    # ...and one that is never followed by the event it vouched for
    found, res = guarantees(session([ev_resp(*bare(A1)), progress(4)]))
    assert found == ["bookmarkable"] and len(res.anomalies) == 1
    # a progress notification that goes back behind an event already delivered
    found, _ = guarantees(session([ev_resp(*bare(A1)), ev_resp(*bare(A2, B1)), progress(3)]))
    assert found == ["bookmarkable"]


def test_a_cancellation_as_compacted_without_compaction_breaks_reliable():
    s = session([ev_resp(*bare(A1)), Response(0, canceled=True, compact_revision=5)])
    found, res = guarantees(s)
    assert found == ["reliable"] and "compacted" in res.anomalies[0].detail
    # legitimate when the store was compacted above the start revision
    assert check(HISTORY, [s], compact_revision=5).ok


def test_anomalies_per_session_are_capped():
    hist = [(r, [put(r, "a", str(r))]) for r in range(2, 40)]
    s = session([ev_resp(*bare(e)) for _, [e] in reversed(hist)])
    res = check(hist, [s])
    ordered = [a for a in res.anomalies if a.guarantee == "ordered"]
    assert len(ordered) == 6 and "more of this kind" in ordered[-1].detail


def test_the_history_itself_is_validated():
    import pytest
    with pytest.raises(ValueError):
        History([(4, [A2]), (2, [A1])])
    with pytest.raises(ValueError):
        History([(2, [A1, A1])])


# ---- the workload's own pieces ---------------------------------------------------------

def test_json_responses_are_read_as_etcd_writes_them():
    res = response_from_json({
        "header": {"revision": "7"},
        "events": [{"kv": {"key": "Yg==", "create_revision": "4", "mod_revision": "7",
                           "version": "2", "value": "Mg=="},
                    "prev_kv": {"key": "Yg==", "create_revision": "4", "mod_revision": "4",
                                "version": "1", "value": "MQ=="}},
                   {"type": "DELETE", "kv": {"key": "Yw==", "mod_revision": "7"}}]})
    assert res.rev == 7 and not res.is_progress
    assert res.events[0] == put(7, "b", "2", version=2, create=4, prev=put(4, "b", "1"))
    assert res.events[1] == delete(7, "c")
    assert response_from_json({"header": {"revision": "9"}, "watch_id": "-1"}).is_progress
    assert response_from_json({"header": {"revision": "9"}, "created": True}).created


def test_history_against_writes():
    hist = [(2, bare(A1)), (4, bare(A2, B1)), (6, bare(DA))]
    writes = [Write(0, [("a", "a1")], status="ok", rev=2),
              Write(0, [("a", "a2"), ("b", "b1")], status="ok", rev=4),
              Write(1, [], [("a", None)], status="ok", rev=6, deleted=1),
              Write(1, [("c", "c9")])]                       # unanswered, never applied
    final = {"b": ("b1", 4)}
    assert check_history_against_writes(hist, writes, final) == []
    # an acknowledged write missing from the history
    lost = writes + [Write(0, [("c", "c5")], status="ok", rev=8)]
    assert "not there whole" in check_history_against_writes(hist, lost, final)[0]
    # a txn applied in part
    half = [(2, bare(A1)), (4, bare(A2)), (6, bare(DA))]
    assert any("whole" in a or "in part" in a
               for a in check_history_against_writes(half, writes, final))
    # a value nobody wrote, a value twice, a delete nobody asked for
    assert "never written" in check_history_against_writes(
        hist + [(8, [put(8, "c", "zz")])], writes, {**final, "c": ("zz", 8)})[0]
    assert "put twice" in check_history_against_writes(
        hist + [(8, [put(8, "a", "a1")])], writes, {**final, "a": ("a1", 8)})[0]
    assert "no write tried" in check_history_against_writes(
        hist + [(8, [delete(8, "b")])], writes, {})[0]
    # the final state disagrees with the last events
    assert "after the run" in check_history_against_writes(hist, writes, {"b": ("b0", 4)})[0]
