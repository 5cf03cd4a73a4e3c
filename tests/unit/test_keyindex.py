"""The ordered key index: the Cython KeyIndex against the pure-Python
reference under random operation sequences, and etcd's own key_index_test.go
/ index_test.go cases (generations, tombstones, compaction)."""
import random

import pytest
from hypothesis import settings
from hypothesis import strategies as st
from hypothesis.stateful import RuleBasedStateMachine, initialize, invariant, rule

from fastkv.mvcc import keyindex
from fastkv.mvcc._keyindex import KeyIndex as CyKeyIndex
from fastkv.mvcc.keyindex_ref import KeyIndex as RefKeyIndex
from fastkv.mvcc.revision import pack

IMPLS = pytest.mark.parametrize("KI", [CyKeyIndex, RefKeyIndex], ids=["cython", "ref"])


def R(main, sub=0):
    return pack(main, sub)


def test_store_uses_the_cython_index():
    assert keyindex.KeyIndex is CyKeyIndex


# --- etcd mvcc/key_index_test.go --------------------------------------------

def new_test_key_index(KI):
    """etcd's newTestKeyIndex: key "foo" with three generations:
    {2, 4, 6(t)} {8, 10, 12(t)} {14.0, 14.1, 16(t)} {}"""
    ki = KI()
    ki.put(b"foo", R(2))
    ki.put(b"foo", R(4))
    ki.tombstone(b"foo", R(6))
    ki.put(b"foo", R(8))
    ki.put(b"foo", R(10))
    ki.tombstone(b"foo", R(12))
    ki.put(b"foo", R(14))
    ki.put(b"foo", R(14, 1))
    ki.tombstone(b"foo", R(16))
    return ki


@IMPLS
def test_key_index_get_after_compact(KI):
    ki = new_test_key_index(KI)
    ki.compact(4)
    want = {
        17: None, 16: None,
        15: (R(14, 1), R(14), 2), 14: (R(14, 1), R(14), 2),
        13: None, 12: None,
        11: (R(10), R(8), 2), 10: (R(10), R(8), 2), 9: (R(8), R(8), 1), 8: (R(8), R(8), 1),
        7: None, 6: None,
        5: (R(4), R(2), 2), 4: (R(4), R(2), 2),
        3: None, 2: None, 1: None, 0: None,
    }
    for at, w in want.items():
        assert ki.get(b"foo", at) == w, at


@IMPLS
def test_key_index_tombstone(KI):
    ki = KI()
    ki.put(b"foo", R(5))
    ki.tombstone(b"foo", R(7))
    assert ki.history(b"foo") == [(R(5), 2, [R(5), R(7)]), (0, 0, [])]
    ki.put(b"foo", R(8))
    ki.put(b"foo", R(9))
    ki.tombstone(b"foo", R(15))
    assert ki.history(b"foo") == [(R(5), 2, [R(5), R(7)]), (R(8), 3, [R(8), R(9), R(15)]),
                                  (0, 0, [])]
    with pytest.raises(KeyError):
        ki.tombstone(b"foo", R(16))  # already deleted
    with pytest.raises(KeyError):
        ki.tombstone(b"bar", R(16))  # never existed
    assert len(ki) == 1


@IMPLS
def test_put_must_increase(KI):
    ki = KI()
    ki.put(b"k", R(5, 1))
    with pytest.raises(ValueError):
        ki.put(b"k", R(5, 1))
    with pytest.raises(ValueError):
        ki.put(b"k", R(5))
    with pytest.raises(ValueError):
        ki.tombstone(b"k", R(4))
    ki.put(b"k", R(5, 2))
    assert ki.get(b"k", 5) == (R(5, 2), R(5, 1), 2)


# (compact at, generations left, revisions available), from
# TestKeyIndexCompactAndKeep; generations are (created, ver, revs).
GENS_2 = (R(8), 3, [R(8), R(10), R(12)])
GENS_3 = (R(14), 3, [R(14), R(14, 1), R(16)])
EMPTY = (0, 0, [])
COMPACT_TABLE = [
    (1, [(R(2), 3, [R(2), R(4), R(6)]), GENS_2, GENS_3, EMPTY], set()),
    (2, [(R(2), 3, [R(2), R(4), R(6)]), GENS_2, GENS_3, EMPTY], {R(2)}),
    (3, [(R(2), 3, [R(2), R(4), R(6)]), GENS_2, GENS_3, EMPTY], {R(2)}),
    (4, [(R(2), 3, [R(4), R(6)]), GENS_2, GENS_3, EMPTY], {R(4)}),
    (5, [(R(2), 3, [R(4), R(6)]), GENS_2, GENS_3, EMPTY], {R(4)}),
    (6, [GENS_2, GENS_3, EMPTY], set()),
    (7, [GENS_2, GENS_3, EMPTY], set()),
    (8, [GENS_2, GENS_3, EMPTY], {R(8)}),
    (9, [GENS_2, GENS_3, EMPTY], {R(8)}),
    (10, [(R(8), 3, [R(10), R(12)]), GENS_3, EMPTY], {R(10)}),
    (11, [(R(8), 3, [R(10), R(12)]), GENS_3, EMPTY], {R(10)}),
    (12, [GENS_3, EMPTY], set()),
    (13, [GENS_3, EMPTY], set()),
    (14, [(R(14), 3, [R(14, 1), R(16)]), EMPTY], {R(14, 1)}),
    (15, [(R(14), 3, [R(14, 1), R(16)]), EMPTY], {R(14, 1)}),
    (16, None, set()),  # only the empty generation left: the key is removed
]


def check_compact_step(ki, at, want_gens, want_available):
    before = ki.history(b"foo")
    assert ki.keep(at) == want_available, at
    assert ki.history(b"foo") == before, at  # keep does not mutate
    assert ki.compact(at) == want_available, at
    assert ki.history(b"foo") == want_gens, at
    assert len(ki) == (0 if want_gens is None else 1)


@IMPLS
def test_key_index_compact_and_keep_continuous(KI):
    ki = new_test_key_index(KI)
    for at, gens, avail in COMPACT_TABLE:
        check_compact_step(ki, at, gens, avail)


@IMPLS
def test_key_index_compact_and_keep_jump(KI):
    ki = new_test_key_index(KI)
    for i, (at, gens, avail) in enumerate(COMPACT_TABLE):
        if (i % 2 == 0 and i < 6) or (i % 2 == 1 and i > 6):
            check_compact_step(ki, at, gens, avail)


@IMPLS
def test_key_index_compact_and_keep_once(KI):
    for at, gens, avail in COMPACT_TABLE:
        check_compact_step(new_test_key_index(KI), at, gens, avail)


@IMPLS
def test_key_index_compact_on_further_rev(KI):
    ki = KI()
    ki.put(b"foo", R(1))
    ki.put(b"foo", R(2))
    assert ki.compact(3) == {R(2)}
    assert ki.history(b"foo") == [(R(1), 2, [R(2)])]
    assert ki.get(b"foo", 3) == (R(2), R(1), 2)


# --- etcd mvcc/index_test.go -------------------------------------------------

@IMPLS
def test_index_range(KI):
    ki = KI()
    keys = [b"foo", b"foo1", b"foo2"]
    for i, k in enumerate(keys):
        ki.put(k, R(i + 1))
    revs = [R(1), R(2), R(3)]
    cases = [
        (b"bar", None, [], []),
        (b"foo", None, keys[:1], revs[:1]),
        (b"foo", b"foo1", keys[:1], revs[:1]),
        (b"foo", b"foo2", keys[:2], revs[:2]),
        (b"foo", b"fop", keys, revs),
        (b"foo1", b"fop", keys[1:], revs[1:]),
        (b"foo2", b"fop", keys[2:], revs[2:]),
        (b"foo3", b"fop", [], []),
        (b"foo", b"", keys[:1], revs[:1]),
        (b"a", b"\x00", keys, revs),
        (b"foo1", b"\x00", keys[1:], revs[1:]),
        (b"fop", b"foo", [], []),
    ]
    for start, end, wkeys, wrevs in cases:
        assert ki.range(start, end, 3) == (wkeys, wrevs), (start, end)
        assert ki.count(start, end, 3) == len(wkeys), (start, end)
    assert ki.range(b"foo", b"fop", 3, limit=2) == (keys[:2], revs[:2])
    assert ki.range(b"foo", b"fop", 2) == (keys[:2], revs[:2])
    assert ki.count(b"foo", b"fop", 0) == 0


INDEX_OPS = [  # (key, remove, rev, created, ver) from TestIndexCompactAndKeep
    (b"foo", False, R(1), R(1), 1),
    (b"foo1", False, R(2), R(2), 1),
    (b"foo2", False, R(3), R(3), 1),
    (b"foo2", False, R(4), R(3), 2),
    (b"foo", False, R(5), R(1), 2),
    (b"foo1", False, R(6), R(2), 2),
    (b"foo1", True, R(7), 0, 0),
    (b"foo2", True, R(8), 0, 0),
    (b"foo", True, R(9), 0, 0),
    (b"foo", False, R(10, 0), R(10, 0), 1),
    (b"foo1", False, R(10, 1), R(10, 1), 1),
]


def build_index(KI):
    ki = KI()
    for key, remove, rev, _, _ in INDEX_OPS:
        (ki.tombstone if remove else ki.put)(key, rev)
    return ki


def index_state(ki, max_main=20):
    return {k: [ki.get(k, at) for at in range(max_main)] for k in (b"foo", b"foo1", b"foo2")}


@IMPLS
def test_index_compact_and_keep(KI):
    full = index_state(build_index(KI))
    continuous = build_index(KI)
    for at in range(1, 20):
        for ki in (continuous, build_index(KI)):
            keep = ki.keep(at)
            assert ki.compact(at) == keep
            # What compaction keeps is exactly the newest revision <= at of
            # every key live at `at`.
            assert keep == {r[0] for r in (ki.get(k, at) for k in full) if r is not None}
            # Nothing at or after the compaction revision changed.
            state = index_state(ki)
            for k in full:
                assert state[k][at:] == full[k][at:], (at, k)
    assert len(continuous) == 2  # foo2 was deleted for good and compacted away


# --- random operation sequences: Cython == reference --------------------------

KEYS = [b"", b"\x00", b"\x00\x00", b"a", b"a\x00", b"ab", b"abc", b"b", b"ba",
        b"foo", b"foo1", b"foo2", b"\x7f", b"\xff", b"\xff\xff"]
RANGE_ENDS = [None, b"", b"\x00", b"a", b"ab", b"b", b"foo1", b"fop", b"\xff", b"\xff\xff\xff"]


class KeyIndexMachine(RuleBasedStateMachine):
    """Drives both implementations with the same transactions, compactions
    and reads; every read must agree."""

    @initialize()
    def setup(self):
        self.cy = CyKeyIndex()
        self.ref = RefKeyIndex()
        self.main = 1
        self.compacted = 0

    def both(self, name, *args):
        results = []
        for ki in (self.cy, self.ref):
            try:
                results.append(("ok", getattr(ki, name)(*args)))
            except (KeyError, ValueError) as e:
                results.append((type(e).__name__, None))
        assert results[0] == results[1], (name, args, results)
        return results[0]

    @rule(ops=st.lists(st.tuples(st.sampled_from(KEYS), st.booleans()), min_size=1, max_size=4))
    def txn(self, ops):
        """One revision; each op gets the next sub revision (as a txn)."""
        for sub, (key, delete) in enumerate(ops):
            self.both("tombstone" if delete else "put", key, R(self.main, sub))
        self.main += 1

    @rule(ops=st.lists(st.tuples(st.sampled_from(KEYS), st.booleans()), min_size=1, max_size=6))
    def txn_put_many(self, ops):
        """One revision through put_many (deletes listed as tombstone positions)."""
        keys = [k for k, _ in ops]
        revs = [R(self.main, sub) for sub in range(len(ops))]
        self.both("put_many", keys, revs, [i for i, (_, delete) in enumerate(ops) if delete])
        self.main += 1

    @rule(data=st.data())
    def compact(self, data):
        at = data.draw(st.integers(self.compacted, self.main))
        window = range(at, self.main + 1)
        before = {k: [self.ref.get(k, m) for m in window] for k in KEYS}
        self.both("compact", at)
        self.compacted = at
        for ki in (self.cy, self.ref):
            assert {k: [ki.get(k, m) for m in window] for k in KEYS} == before

    @rule(data=st.data())
    def keep(self, data):
        self.both("keep", data.draw(st.integers(0, self.main + 1)))

    @rule(key=st.sampled_from(KEYS), data=st.data())
    def stale_put(self, key, data):
        """A put at an older revision than the key's last is refused by both."""
        self.both("put", key, R(data.draw(st.integers(0, self.main))))

    @rule(start=st.sampled_from(KEYS), end=st.sampled_from(RANGE_ENDS),
          limit=st.integers(0, 4), data=st.data())
    def range_read(self, start, end, limit, data):
        at = data.draw(st.integers(0, self.main + 1))
        self.both("range", start, end, at, limit)
        self.both("count", start, end, at)

    @invariant()
    def same_state(self):
        if not hasattr(self, "cy"):
            return
        assert len(self.cy) == len(self.ref)
        for k in KEYS:
            assert self.cy.history(k) == self.ref.history(k), k
        for at in {0, self.compacted, self.main // 2, self.main - 1, self.main}:
            for k in KEYS:
                assert self.cy.get(k, at) == self.ref.get(k, at), (k, at)
            assert self.cy.range(b"", b"\x00", at) == self.ref.range(b"", b"\x00", at)


TestKeyIndexMachine = KeyIndexMachine.TestCase
TestKeyIndexMachine.settings = settings(max_examples=150, stateful_step_count=40, deadline=None)


def test_many_keys_random_against_reference():
    """Thousands of keys (so the Cython chunk list splits and is rebuilt by
    compaction) under puts, deletes and compactions, checked against the
    reference and against a plain model of what is live."""
    rng = random.Random(42)
    cy, ref = CyKeyIndex(), RefKeyIndex()
    live: dict[bytes, int] = {}
    universe = [rng.randbytes(rng.randrange(1, 6)) for _ in range(6000)]
    main = 1
    for step in range(40):
        for _ in range(rng.randrange(100, 600)):
            key = rng.choice(universe)
            if key in live and rng.random() < 0.3:
                cy.tombstone(key, R(main))
                ref.tombstone(key, R(main))
                del live[key]
            else:
                cy.put(key, R(main))
                ref.put(key, R(main))
                live[key] = R(main)
            main += 1
        if step % 7 == 6:
            at = main - rng.randrange(0, 300)
            assert cy.compact(at) == ref.compact(at)
        assert len(cy) == len(ref)
        want = sorted(live)
        assert cy.range(b"", b"\x00", main) == (want, [live[k] for k in want])
        assert cy.count(b"", b"\x00", main) == len(want)
        for _ in range(20):
            a, b = sorted(rng.sample(universe, 2))
            at = main - rng.randrange(0, 500)
            limit = rng.choice([0, 1, 10, 100])
            assert cy.range(a, b, at, limit) == ref.range(a, b, at, limit)
            assert cy.count(a, b, at) == ref.count(a, b, at)
            assert cy.range(a, b"\x00", at, 50) == ref.range(a, b"\x00", at, 50)
        for key in rng.sample(universe, 50):
            at = main - rng.randrange(0, 500)
            assert cy.get(key, at) == ref.get(key, at)
    assert cy.keep(main) == ref.keep(main)
    assert cy.compact(main) == ref.compact(main) == set(live.values())
    assert len(cy) == len(live)


def one_by_one(ki, keys, revs, tombstones):
    deletes = set(tombstones)
    for i, (k, r) in enumerate(zip(keys, revs)):
        if i in deletes:
            ki.tombstone(k, r)
        else:
            ki.put(k, r)


def test_put_many_equals_one_by_one():
    """put_many sorts and merges new keys in bulk (or inserts them one by one when
    they are few next to the index): the index ends up the same as with put and
    tombstone, in an empty index, a large batch into a full one (merge) and a small
    batch into a full one (insertions)."""
    rng = random.Random(3)
    bulk, single = CyKeyIndex(), CyKeyIndex()
    universe = [rng.randbytes(rng.randrange(1, 8)) for _ in range(20000)]
    main = 1
    live: set[bytes] = set()
    for batch in (5000, 3000, 100, 2):
        keys, revs, tombs = [], [], []
        for _ in range(batch):
            k = rng.choice(universe)
            if k in live and rng.random() < 0.2:
                tombs.append(len(keys))
                live.discard(k)
            else:
                live.add(k)
            keys.append(k)
            revs.append(R(main))
            main += 1
        bulk.put_many(keys, revs, tombs)
        one_by_one(single, keys, revs, tombs)
        assert len(bulk) == len(single)
        for at in (main // 2, main):
            assert bulk.range(b"", b"\x00", at) == single.range(b"", b"\x00", at)
            a, b = sorted(rng.sample(universe, 2))
            assert bulk.range(a, b, at, 10) == single.range(a, b, at, 10)
        for k in rng.sample(universe, 200):
            assert bulk.history(k) == single.history(k)
    assert bulk.range(b"", b"\x00", main)[0] == sorted(live)
    assert bulk.compact(main // 2) == single.compact(main // 2)
    assert bulk.range(b"", b"\x00", main) == single.range(b"", b"\x00", main)


@IMPLS
def test_put_many_stops_where_one_by_one_would(KI):
    """An op that one-by-one calls would refuse stops put_many there, with the ops
    before it done (and the keys they created in the key order)."""
    ki = KI()
    with pytest.raises(ValueError):
        ki.put_many([b"b", b"a", b"b"], [R(5), R(6), R(4)])   # b's second put goes back
    assert ki.range(b"", b"\x00", 10) == ([b"a", b"b"], [R(6), R(5)])
    with pytest.raises(KeyError):
        ki.put_many([b"c", b"zz"], [R(7), R(8)], [1])   # deleting a key that never was
    assert ki.range(b"", b"\x00", 10) == ([b"a", b"b", b"c"], [R(6), R(5), R(7)])
    with pytest.raises(ValueError):
        ki.put_many([b"d"], [R(9), R(10)])
    assert len(ki) == 3


def test_hot_key_history_and_compaction():
    """One key with many revisions (heap-allocated history, binary search in
    get, shrinking after compaction)."""
    cy, ref = CyKeyIndex(), RefKeyIndex()
    for m in range(1, 5001):
        for ki in (cy, ref):
            if m % 1000 == 0:
                ki.tombstone(b"hot", R(m))
            else:
                ki.put(b"hot", R(m))
    for at in range(0, 5002, 7):
        assert cy.get(b"hot", at) == ref.get(b"hot", at), at
    for at in (10, 999, 1000, 1001, 2500, 4999, 5000):
        assert cy.compact(at) == ref.compact(at)
        assert cy.history(b"hot") == ref.history(b"hot")
        assert [cy.get(b"hot", m) for m in range(at, 5002)] == \
               [ref.get(b"hot", m) for m in range(at, 5002)]
    assert len(cy) == len(ref) == 0


@IMPLS
def test_non_bytes_keys_are_converted(KI):
    ki = KI()
    ki.put(bytearray(b"k"), R(1))
    ki.put(memoryview(b"j"), R(2))
    assert ki.get(b"k", 1) == (R(1), R(1), 1)
    assert ki.range(bytearray(b"a"), memoryview(b"z"), 2) == ([b"j", b"k"], [R(2), R(1)])
