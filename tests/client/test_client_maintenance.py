"""fastkv.client cluster and maintenance calls on one member (fastkv and etcd 3.4)."""
from __future__ import annotations

import io

import pytest
from servers import free_port

from fastkv.client import Alarm, HashKV, Member, MemberAddResult, Status, errors


def test_status_members_alarms(server, client):
    st = client.status()
    assert isinstance(st, Status)
    assert st.version.startswith("3.4.") and st.is_leader and st.leader == st.member_id
    assert st.raft_index >= st.raft_applied_index > 0 and st.raft_term > 0
    assert st.db_size > 0 and not st.is_learner and st.errors == ()
    assert client.status(endpoint=server.url).member_id == st.member_id

    (m,) = client.members()
    assert isinstance(m, Member) and m.id == st.member_id and m.name == "default"
    assert m.client_urls == (server.url,) and m.peer_urls == (server.peer_url,)

    assert client.alarms() == ()
    assert client.alarm_disarm() == ()
    assert client.alarm_disarm(st.member_id, "nospace") == ()
    assert all(isinstance(a, Alarm) for a in client.alarms())


def test_learner_add_update_promote_remove(client):
    peer = f"http://127.0.0.1:{free_port()}"
    added = client.member_add([peer], learner=True)
    assert isinstance(added, MemberAddResult)
    try:
        assert added.member.is_learner and added.member.peer_urls == (peer,)
        assert added.member.name == "" and added.member.client_urls == ()
        assert added.member.id in {m.id for m in added.members} and len(added.members) == 2
        assert added.header.member_id != 0

        with pytest.raises(errors.MemberError) as ei:   # etcd 3.4: "member ID already exist"
            client.member_add(peer)
        assert isinstance(ei.value, (errors.MemberExists, errors.PeerURLExists))

        new_peer = f"http://127.0.0.1:{free_port()}"
        after = client.member_update(added.member.id, new_peer)
        assert {m.id: m.peer_urls for m in after}[added.member.id] == (new_peer,)

        with pytest.raises(errors.LearnerNotReady) as ei:   # it never started
            client.member_promote(added.member.id)
        assert "in sync with leader" in str(ei.value)
        leader = client.status().member_id
        with pytest.raises(errors.MemberNotLearner):
            client.member_promote(leader)
    finally:
        left = client.member_remove(added.member.id)
    assert [m.id for m in left] == [client.status().member_id]
    with pytest.raises(errors.MemberNotFound) as ei:
        client.member_remove(added.member.id)
    assert str(ei.value) == "etcdserver: member not found"


def test_defragment_hash_snapshot(server, client, prefix, tmp_path):
    rev = client.put(prefix + "k", "v").revision
    client.defragment()
    client.defragment(endpoint=server.url)
    h = client.hash_kv(rev)
    assert isinstance(h, HashKV) and h.header.revision >= rev
    assert client.hash_kv(rev).hash == h.hash   # same history, same hash
    client.put(prefix + "k", "v2")
    assert client.hash_kv().header.revision > rev

    path = tmp_path / "snap.db"
    n = client.snapshot(path)
    assert n > 0 and path.stat().st_size == n
    assert not (tmp_path / "snap.db.part").exists()
    buf = io.BytesIO()
    assert client.snapshot(buf) == len(buf.getvalue()) > 0


def test_move_leader_needs_another_member(client):
    me = client.status().member_id
    with pytest.raises(errors.EtcdError):
        client.move_leader(me + 1)   # not a member
