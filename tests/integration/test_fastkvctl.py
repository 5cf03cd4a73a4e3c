"""fastkvctl end to end, against fastkv and against etcd 3.4 (``any_server``).

The expected outputs are etcdctl 3.4's, written out literally (revisions
included: both servers start empty at revision 1), so the same assertions pin
fastkvctl's printing and the server's answers. tests/compat compares against
real etcdctl line by line; this file states what the output is. One-shot commands
run as processes forked by tests/ctlfork.py; the long-running watch and keep-alive
run ``python -m fastkv.cli`` itself (ci/install-check runs the installed program).
"""
from __future__ import annotations

import json
import os
import re
import signal
import subprocess
import time

from ctlfork import FASTKVCTL as CTL, run_command
from servers import REPO, free_port


def env(extra: dict | None = None) -> dict:
    e = {k: v for k, v in os.environ.items() if not k.startswith("ETCDCTL_")}
    e["PYTHONPATH"] = REPO + os.pathsep + e.get("PYTHONPATH", "")
    e.update(extra or {})
    return e


def ctl(server, *args, stdin: bytes = b"", extra_env: dict | None = None, endpoints=True):
    cmd = CTL + (["--endpoints", server.url] if endpoints else []) + list(args)
    p = run_command(cmd, input=stdin, timeout=60, env=env(extra_env), cwd=REPO)
    return p.returncode, p.stdout.decode(), p.stderr.decode()


def ok(server, *args, **kw) -> str:
    rc, out, err = ctl(server, *args, **kw)
    assert rc == 0, f"fastkvctl {' '.join(args)} failed ({rc}): {err}"
    return out


def header(out: str) -> dict:
    return json.loads(out)["header"]


def test_put_get_del_simple(any_server):
    s = any_server
    assert ok(s, "put", "foo", "bar") == "OK\n"
    assert ok(s, "get", "foo") == "foo\nbar\n"
    assert ok(s, "put", "foo", "baz", "--prev-kv") == "OK\nfoo\nbar\n"
    assert ok(s, "put", "fromstdin", stdin=b"multi\nline") == "OK\n"
    assert ok(s, "get", "fromstdin", "--print-value-only") == "multi\nline\n"
    assert ok(s, "get", "nosuch") == ""
    for k, v in (("k/1", "a"), ("k/2", "b"), ("k/3", "c")):
        ok(s, "put", k, v)
    assert ok(s, "get", "k/", "--prefix") == "k/1\na\nk/2\nb\nk/3\nc\n"
    assert ok(s, "get", "k/", "--prefix", "--keys-only") == "k/1\n\nk/2\n\nk/3\n\n"
    assert ok(s, "get", "k/", "--prefix", "--limit", "1", "--order", "DESCEND") == "k/3\nc\n"
    assert ok(s, "get", "k/1", "k/3") == "k/1\na\nk/2\nb\n"
    assert ok(s, "get", "k/2", "--from-key", "--keys-only") == "k/2\n\nk/3\n\n"
    assert ok(s, "get", "k/", "--prefix", "--sort-by=VALUE", "--order=DESCEND",
              "--print-value-only") == "c\nb\na\n"
    assert ok(s, "get", "foo", "--rev", "2") == "foo\nbar\n"
    assert ok(s, "get", "foo", "--hex") == "\\x66\\x6f\\x6f\n\\x62\\x61\\x7a\n"
    assert ok(s, "del", "k/1", "--prev-kv") == "1\nk/1\na\n"
    assert ok(s, "del", "k/", "--prefix") == "2\n"
    assert ok(s, "del", "k/", "--prefix") == "0\n"
    assert ok(s, "get", "", "--from-key", "--keys-only") == "foo\n\nfromstdin\n\n"


def test_json_output(any_server):
    s = any_server
    out = ok(s, "put", "j", "v1", "-w", "json")
    h = header(out)
    assert set(h) == {"cluster_id", "member_id", "revision", "raft_term"}
    assert h["revision"] == 2 and isinstance(h["cluster_id"], int)
    assert out == (f'{{"header":{{"cluster_id":{h["cluster_id"]},"member_id":{h["member_id"]},'
                   f'"revision":2,"raft_term":{h["raft_term"]}}}}}\n')
    hdr = out[len('{"header":'):out.index("}") + 1]
    assert ok(s, "put", "j", "v2", "--prev-kv", "-w", "json") == (
        f'{{"header":{hdr.replace(":2,", ":3,")},"prev_kv":{{"key":"ag==","create_revision":2,'
        f'"mod_revision":2,"version":1,"value":"djE="}}}}\n')
    assert ok(s, "get", "j", "-w", "json") == (
        f'{{"header":{hdr.replace(":2,", ":3,")},"kvs":[{{"key":"ag==","create_revision":2,'
        f'"mod_revision":3,"version":2,"value":"djI="}}],"count":1}}\n')
    ok(s, "put", "j2", "")
    assert ok(s, "get", "j", "--prefix", "--limit", "1", "-w", "json") == (
        f'{{"header":{hdr.replace(":2,", ":4,")},"kvs":[{{"key":"ag==","create_revision":2,'
        f'"mod_revision":3,"version":2,"value":"djI="}}],"more":true,"count":2}}\n')
    assert ok(s, "get", "j2", "-w", "json") == (
        f'{{"header":{hdr.replace(":2,", ":4,")},"kvs":[{{"key":"ajI=","create_revision":4,'
        f'"mod_revision":4,"version":1}}],"count":1}}\n')
    assert ok(s, "get", "none", "-w", "json") == f'{{"header":{hdr.replace(":2,", ":4,")}}}\n'
    out = ok(s, "get", "j", "--prefix", "--count-only", "-w", "json")
    assert json.loads(out)["count"] == 2 and "kvs" not in json.loads(out)
    assert ok(s, "get", "j", "--prefix", "--count-only") == "2\n"
    assert ok(s, "del", "j", "--prefix", "--prev-kv", "-w", "json") == (
        f'{{"header":{hdr.replace(":2,", ":5,")},"deleted":2,"prev_kvs":[{{"key":"ag==",'
        f'"create_revision":2,"mod_revision":3,"version":2,"value":"djI="}},{{"key":"ajI=",'
        f'"create_revision":4,"mod_revision":4,"version":1}}]}}\n')


def test_errors_and_exit_codes(any_server):
    s = any_server
    assert ctl(s, "get", "x", "--rev", "100") == (
        1, "", "Error: etcdserver: mvcc: required revision is a future revision\n")
    assert ctl(s, "put", "x", "y", "--lease", "1234") == (
        1, "", "Error: etcdserver: requested lease not found\n")
    assert ctl(s, "put", "x", "--ignore-value") == (1, "", "Error: etcdserver: key not found\n")
    assert ctl(s, "put") == (
        128, "", "Error: put command needs 1 argument and input from stdin or 2 arguments\n")
    assert ctl(s, "get") == (
        128, "", "Error: get command needs one argument as key and an optional argument as range_end\n")
    assert ctl(s, "get", "a", "--sort-by", "size") == (4, "", "Error: bad sort target size\n")
    assert ctl(s, "get", "a", "-w", "json", "--print-value-only") == (
        128, "", "Error: print-value-only is only for `--write-out=simple`\n")
    rc, out, err = ctl(s, "get", "a", "--nope")
    assert rc == 1 and out.startswith("NAME:\n\tget - Gets the key or a range of keys\n")
    assert err == "Error: unknown flag: --nope\n\nError: unknown flag: --nope\n"
    assert ctl(s, "frobnicate") == (1, "", 'Error: unknown command "frobnicate" for "etcdctl"\n'
                                           "Run 'etcdctl --help' for usage.\n"
                                           'Error: unknown command "frobnicate" for "etcdctl"\n')
    assert ctl(s, "lease", "revoke", "zz") == (
        128, "", 'Error: bad lease ID arg (strconv.ParseInt: parsing "zz": invalid syntax), expecting ID in Hex\n')
    dead = f"127.0.0.1:{free_port()}"
    t0 = time.monotonic()
    assert ctl(s, "--endpoints", dead, "--dial-timeout", "500ms", "get", "a", endpoints=False) == (
        1, "", "Error: context deadline exceeded\n")
    assert time.monotonic() - t0 < 10
    # a dead endpoint first in the list: the next one serves
    assert ctl(s, "--endpoints", f"{dead},{s.url}", "put", "fo", "ok", endpoints=False) == (0, "OK\n", "")


def test_env_vars(any_server):
    s = any_server
    e = {"ETCDCTL_ENDPOINTS": s.url.replace("http://", ""), "ETCDCTL_WRITE_OUT": "json"}
    rc, out, _ = ctl(s, "put", "e", "1", extra_env=e, endpoints=False)
    assert rc == 0 and json.loads(out)["header"]["revision"] == 2
    rc, out, err = ctl(s, "get", "e", "-w", "simple", extra_env=e, endpoints=False)
    assert rc == 1 and out == "" and "conflicting environment variable \"ETCDCTL_WRITE_OUT\"" in err
    rc, out, _ = ctl(s, "get", "e", extra_env={"ETCDCTL_ENDPOINTS": s.url}, endpoints=False)
    assert (rc, out) == (0, "e\n1\n")


def test_leases(any_server):
    s = any_server
    out = ok(s, "lease", "grant", "600")
    m = re.fullmatch(r"lease ([0-9a-f]{16}) granted with TTL\(600s\)\n", out)
    assert m, out
    lid = m.group(1)
    grant = json.loads(ok(s, "lease", "grant", "300", "-w", "json"))
    assert grant["TTL"] == 300 and grant["Error"] == "" and grant["revision"] == 1
    lid2 = f"{grant['ID']:016x}"
    head, *listed_ids = ok(s, "lease", "list").splitlines()  # etcd lists leases in map order
    assert head == "found 2 leases" and sorted(listed_ids) == sorted([lid, lid2])
    listed = json.loads(ok(s, "lease", "list", "-w", "json"))
    assert sorted(x["id"] for x in listed["leases"]) == sorted([int(lid, 16), grant["ID"]])
    assert ok(s, "put", "la", "1", "--lease", lid) == "OK\n"
    assert ok(s, "put", "lb", "2", f"--lease={lid}") == "OK\n"
    lease_field = json.loads(ok(s, "get", "la", "-w", "json"))["kvs"][0]["lease"]
    assert lease_field == int(lid, 16)
    out = ok(s, "lease", "timetolive", lid, "--keys")
    m = re.fullmatch(rf"lease {lid} granted with TTL\(600s\), remaining\((\d+)s\), attached keys\(\[(.*)\]\)\n", out)
    assert m and 590 <= int(m.group(1)) <= 600 and sorted(m.group(2).split()) == ["la", "lb"], out
    ttl = json.loads(ok(s, "lease", "timetolive", lid2, "-w", "json"))
    assert (ttl["id"], ttl["granted-ttl"], ttl["keys"]) == (grant["ID"], 300, None)
    assert ok(s, "lease", "keep-alive", "--once", lid) == f"lease {lid} keepalived with TTL(600)\n"
    ka = json.loads(ok(s, "lease", "keep-alive", "--once", lid2, "-w", "json"))
    assert (ka["ID"], ka["TTL"]) == (grant["ID"], 300)
    assert ok(s, "lease", "revoke", lid) == f"lease {lid} revoked\n"
    assert ok(s, "get", "l", "--prefix") == ""
    assert ok(s, "lease", "timetolive", lid) == f"lease {lid} already expired\n"
    assert ctl(s, "lease", "revoke", lid) == (
        1, "", "Error: failed to revoke lease (etcdserver: requested lease not found)\n")
    assert ctl(s, "lease", "keep-alive", "--once", lid) == (
        2, "", "Error: etcdserver: requested lease not found\n")
    # keep-alive without --once ends by itself when the lease is gone
    assert ok(s, "lease", "keep-alive", lid) == f"lease {lid} expired or revoked.\n"
    assert ctl(s, "lease", "grant", "x") == (
        128, "", 'Error: bad TTL (strconv.ParseInt: parsing "x": invalid syntax)\n')


def test_lease_keep_alive_stream(any_server):
    s = any_server
    lid = ok(s, "lease", "grant", "3").split()[1]
    proc = subprocess.Popen(CTL + ["--endpoints", s.url, "lease", "keep-alive", lid],
                            stdout=subprocess.PIPE, stderr=subprocess.PIPE, env=env(), cwd=REPO)
    try:
        time.sleep(4.5)  # longer than the TTL: only the keep-alives keep it
        assert ok(s, "lease", "timetolive", lid).startswith(f"lease {lid} granted with TTL(3s)")
        ok(s, "lease", "revoke", lid)
        out, err = proc.communicate(timeout=20)
    finally:
        if proc.poll() is None:
            proc.kill()
            proc.communicate()
    lines = out.decode().splitlines()
    assert proc.returncode == 0, err
    assert len(lines) >= 3 and set(lines[:-1]) == {f"lease {lid} keepalived with TTL(3)"}
    assert lines[-1] == f"lease {lid} expired or revoked."


def test_watch(any_server):
    s = any_server
    ok(s, "put", "w/0", "before")
    proc = subprocess.Popen(CTL + ["--endpoints", s.url, "watch", "w/", "--prefix", "--prev-kv"],
                            stdout=subprocess.PIPE, stderr=subprocess.PIPE, env=env(), cwd=REPO)
    hist = subprocess.Popen(CTL + ["--endpoints", s.url, "watch", "w/0", "--rev", "1", "-w", "json"],
                            stdout=subprocess.PIPE, stderr=subprocess.PIPE, env=env(), cwd=REPO)
    try:
        time.sleep(1.5)
        ok(s, "put", "w/1", "one")
        ok(s, "put", "w/1", "two")
        ok(s, "put", "x", "outside")
        ok(s, "del", "w/", "--prefix")
        time.sleep(1.5)
        for p in (proc, hist):
            p.send_signal(signal.SIGINT)
        out, _ = proc.communicate(timeout=20)
        hout, _ = hist.communicate(timeout=20)
    finally:
        for p in (proc, hist):
            if p.poll() is None:
                p.kill()
                p.communicate()
    assert out.decode() == ("PUT\nw/1\none\n"
                            "PUT\nw/1\none\nw/1\ntwo\n"
                            "DELETE\nw/0\nbefore\nw/0\n\n"
                            "DELETE\nw/1\ntwo\nw/1\n\n")
    assert proc.returncode == -signal.SIGINT
    events = [json.loads(line) for line in hout.decode().splitlines()]
    assert [e["Events"] for e in events] == [
        [{"kv": {"key": "dy8w", "create_revision": 2, "mod_revision": 2, "version": 1, "value": "YmVmb3Jl"}}],
        [{"type": 1, "kv": {"key": "dy8w", "mod_revision": 6}}],
    ]
    assert [(e["Header"]["revision"], e["Canceled"], e["Created"]) for e in events] == [(2, False, False),
                                                                                       (6, False, False)]


def test_watch_compacted(any_server):
    s = any_server
    for v in "123":
        ok(s, "put", "c", v)
    import urllib.request
    urllib.request.urlopen(urllib.request.Request(
        s.url + "/v3/kv/compaction", data=b'{"revision":"3","physical":true}'), timeout=10).read()
    assert ctl(s, "watch", "c", "--rev", "2") == (
        5, "", "watch was canceled (etcdserver: mvcc: required revision has been compacted)\n"
               "Error: watch is canceled by the server\n")
    assert ctl(s, "get", "c", "--rev", "2") == (
        1, "", "Error: etcdserver: mvcc: required revision has been compacted\n")
    assert ok(s, "get", "c", "--rev", "3") == "c\n2\n"


def test_check_clients_connect_before_the_load(fastkv_server):
    """check perf / datascale dial their clients before timing anything (etcdctl's
    gRPC clients connect once made); one refused dial stops the dialling (each
    request then dials and reports the error itself)."""
    from types import SimpleNamespace

    from fastkv.cli import check_commands
    from fastkv.cli.transport import GatewayClient

    base = GatewayClient([fastkv_server.url])
    clients = check_commands._clients(SimpleNamespace(client=lambda: base), 5)
    try:
        assert all(c._conn is not None for c in clients)
        assert len({c._conn.sock.getsockname() for c in clients}) == 5   # one connection each
    finally:
        for c in clients:
            c.close()
    dead = GatewayClient([f"http://127.0.0.1:{free_port()}"], dial_timeout=0.2)
    clients = check_commands._clients(SimpleNamespace(client=lambda: dead), 50)
    assert len(clients) == 50 and all(c._conn is None for c in clients)
