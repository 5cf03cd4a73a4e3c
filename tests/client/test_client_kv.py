"""fastkv.client KV and transactions, against fastkv and etcd 3.4."""
from __future__ import annotations

import pytest

from fastkv.client import (DeleteResult, KeyValue, PutResult, RangeResult, SortOrder,
                           SortTarget, TxnResult, create_revision, delete_op, errors, get_op,
                           lease, mod_revision, prefix_end, put_op, txn_op, value, version)


def test_put_get_delete(client, prefix):
    k = prefix + "a"
    r = client.put(k, "héllo")
    assert isinstance(r, PutResult) and r.revision > 0 and r.prev_kv is None
    kv = client.get(k)
    assert isinstance(kv, KeyValue)
    assert kv.key == k.encode() and kv.value == "héllo".encode() and kv.text == "héllo"
    assert kv.key_text == k
    assert kv.create_revision == kv.mod_revision == r.revision and kv.version == 1
    assert kv.lease == 0

    r2 = client.put(k.encode(), b"\x00\xff", prev_kv=True)   # bytes in, prev_kv out
    assert r2.prev_kv is not None and r2.prev_kv.value == "héllo".encode()
    assert client.get(k).value == b"\x00\xff"
    assert client.get(k, revision=r.revision).text == "héllo"   # history
    assert client.get(k, serializable=True).version == 2
    assert client.get(prefix + "missing") is None

    d = client.delete(k, prev_kv=True)
    assert isinstance(d, DeleteResult) and d.deleted == 1
    assert [kv.value for kv in d.prev_kvs] == [b"\x00\xff"]
    assert d.revision > r2.revision
    assert client.get(k) is None
    assert client.delete(k).deleted == 0


def test_put_ignore_value_and_lease(client, prefix):
    k = prefix + "k"
    g = client.lease_grant(30)
    try:
        client.put(k, "v1", lease=g.id)
        client.put(k, "", ignore_value=True, ignore_lease=True)   # touch: new revision only
        kv = client.get(k)
        assert kv.text == "v1" and kv.lease == g.id and kv.version == 2
    finally:
        client.lease_revoke(g.id)


def test_range_forms(client, prefix):
    for name in ("a", "b", "c", "d"):
        client.put(prefix + name, name.upper())
    client.put(prefix[:-1] + "0", "outside")   # sorts after the prefix, not in it

    r = client.range(prefix, prefix=True)
    assert isinstance(r, RangeResult)
    assert r.keys() == [(prefix + n).encode() for n in "abcd"] and r.count == 4
    assert len(r) == 4 and r[0].text == "A" and [kv.text for kv in r] == list("ABCD")
    assert r.to_dict()[(prefix + "b").encode()] == b"B"

    assert [kv.text for kv in client.range(prefix + "b", prefix + "d")] == ["B", "C"]
    assert [kv.text for kv in client.range(prefix + "c", prefix_end(prefix))] == ["C", "D"]

    lim = client.range(prefix, prefix=True, limit=2)
    assert len(lim) == 2 and lim.more and lim.count == 4

    desc = client.range(prefix, prefix=True, sort_order="descend", sort_target=SortTarget.KEY)
    assert [kv.text for kv in desc] == list("DCBA")
    by_value = client.range(prefix, prefix=True, sort_order=SortOrder.ASCEND,
                            sort_target="value")
    assert [kv.text for kv in by_value] == list("ABCD")

    ko = client.range(prefix, prefix=True, keys_only=True)
    assert all(kv.value == b"" for kv in ko) and len(ko) == 4
    co = client.range(prefix, prefix=True, count_only=True)
    assert co.count == 4 and len(co) == 0

    fk = client.range(prefix + "c", from_key=True)
    assert (prefix + "c").encode() in fk.keys() and (prefix[:-1] + "0").encode() in fk.keys()
    assert (prefix + "b").encode() not in fk.keys()

    rev_before = client.put(prefix + "a", "A2").revision - 1
    old = client.range(prefix, prefix=True, revision=rev_before)
    assert old[0].text == "A" and old.revision > rev_before

    mods = client.range(prefix, prefix=True, min_mod_revision=rev_before + 1)
    assert [kv.text for kv in mods] == ["A2"]

    d = client.delete(prefix, prefix=True)
    assert d.deleted == 4
    assert client.range(prefix, prefix=True).count == 0
    client.delete(prefix[:-1] + "0")


def test_bad_arguments(client, prefix):
    with pytest.raises(ValueError):
        client.range(prefix, prefix + "z", prefix=True)
    with pytest.raises(TypeError):
        client.put(prefix + "k", 42)
    with pytest.raises(ValueError):
        client.range(prefix, sort_order="sideways")


def test_errors_carry_etcd_messages(client, prefix):
    with pytest.raises(errors.EmptyKey) as ei:
        client.put("", "v")
    assert str(ei.value) == "etcdserver: key is not provided"
    assert isinstance(ei.value, errors.InvalidArgument)

    with pytest.raises(errors.FutureRevision) as ei:
        client.get(prefix, revision=client.status().header.revision + 1000)
    assert ei.value.message == "etcdserver: mvcc: required revision is a future revision"

    with pytest.raises(errors.LeaseNotFound) as ei:
        client.put(prefix + "k", "v", lease=0x1234567)
    assert str(ei.value) == "etcdserver: requested lease not found"

    with pytest.raises(errors.DuplicateKey):
        client.txn().then(put_op(prefix + "k", "1"), put_op(prefix + "k", "2")).commit()


def test_compact_and_compacted_error(client, prefix):
    k = prefix + "k"
    first = client.put(k, "1").revision
    last = client.put(k, "2").revision
    client.compact(last, physical=True)
    with pytest.raises(errors.Compacted) as ei:
        client.get(k, revision=first)
    assert str(ei.value) == "etcdserver: mvcc: required revision has been compacted"
    assert isinstance(ei.value, errors.OutOfRange) and ei.value.code is not None
    assert client.get(k, revision=last).text == "2"
    with pytest.raises(errors.Compacted):
        client.compact(first)   # already compacted


def test_txn_branches(client, prefix):
    k, other = prefix + "k", prefix + "other"
    # create if absent
    res = (client.txn().if_(create_revision(k) == 0)
           .then(put_op(k, "v1"), get_op(k))
           .else_(get_op(k)).commit())
    assert isinstance(res, TxnResult) and res.succeeded
    put_r, get_r = res.responses
    assert isinstance(put_r, PutResult) and isinstance(get_r, RangeResult)
    assert get_r[0].text == "v1" and put_r.revision == res.revision

    # second time: the key exists, so the else branch runs
    res = (client.txn().if_(create_revision(k) == 0).then(put_op(k, "v2"))
           .else_(get_op(k)).commit())
    assert not res.succeeded and res[0][0].text == "v1"

    kv = client.get(k)
    assert client.txn().if_(value(k) == "v1", version(k) > 0, version(k) < 2,
                            mod_revision(k) == kv.mod_revision,
                            value(k) != "nope", lease(k) == 0).commit().succeeded
    assert not client.txn().if_(value(k) == b"v2").commit().succeeded
    assert not client.txn().if_(mod_revision(k) > kv.mod_revision).commit().succeeded

    # range comparison over a prefix (every key in it must match)
    client.put(other, "v1")
    assert client.txn().if_(value(prefix, prefix=True) == "v1").commit().succeeded
    client.put(other, "x")
    assert not client.txn().if_(value(prefix, prefix=True) == "v1").commit().succeeded

    # deletes in a branch, with prev_kv
    res = client.txn().then(delete_op(prefix, prefix=True, prev_kv=True)).commit()
    assert res[0].deleted == 2 and {p.text for p in res[0].prev_kvs} == {"v1", "x"}


def test_nested_txn(client, prefix):
    a, b = prefix + "a", prefix + "b"
    client.put(a, "1")
    inner_ok = txn_op().if_(value(a) == "1").then(put_op(b, "from-inner"), get_op(b))
    inner_fail = txn_op([value(a) == "nope"], [put_op(prefix + "c", "never")], [get_op(a)])
    res = client.txn().if_(version(a) == 1).then(inner_ok, inner_fail).commit()
    assert res.succeeded
    r1, r2 = res.responses
    assert isinstance(r1, TxnResult) and r1.succeeded
    assert r1[1][0].text == "from-inner"
    assert isinstance(r2, TxnResult) and not r2.succeeded and r2[0][0].text == "1"
    assert client.get(b).text == "from-inner" and client.get(prefix + "c") is None

    # a key put in two nested transactions is a duplicate, even in different branches
    with pytest.raises(errors.DuplicateKey):
        client.txn().then(txn_op().then(put_op(b, "x")), txn_op().else_(put_op(b, "y"))).commit()


def test_txn_builder_checks_types(client, prefix):
    with pytest.raises(TypeError):
        client.txn().if_(prefix)            # not a comparison
    with pytest.raises(TypeError):
        client.txn().then(prefix)           # not an operation
    with pytest.raises(TypeError):
        version(prefix) >= 1                # etcd has no >=
    with pytest.raises(TypeError):
        version(prefix) == "1"              # versions are ints
