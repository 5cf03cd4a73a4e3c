"""fastkv's pytest plugin (fastkv/pytest_plugin.py) as an application uses it: small test
projects run in a child pytest (pytester) against fastkv_server, fastkv_cluster and the
other fixtures, over the v3 JSON gateway and the python-etcd client (v2 API); after each
run, no member process, listener or data directory may be left, also after failures."""
from __future__ import annotations

import subprocess
import sys
import tomllib
from pathlib import Path

REPO = Path(__file__).resolve().parents[2]


def test_entry_point_is_declared():
    meta = tomllib.loads((REPO / "pyproject.toml").read_text())
    assert meta["project"]["entry-points"]["pytest11"] == {"fastkv": "fastkv.pytest_plugin"}


def test_importing_the_plugin_loads_nothing_heavy():
    """pytest imports the plugin in every project where fastkv is installed: it may load
    nothing of the server (nor uvloop, grpc, protobuf, urllib.request) until a fixture runs."""
    code = ("import sys, pytest\n"
            "before = set(sys.modules)\n"
            "import fastkv.pytest_plugin\n"
            "print(' '.join(sorted(set(sys.modules) - before)))\n")
    out = subprocess.run([sys.executable, "-c", code], capture_output=True, text=True,
                         check=True, timeout=60).stdout.split()
    assert {"fastkv", "fastkv.pytest_plugin"} <= set(out)
    heavy = [m for m in out if m.startswith(("fastkv.", "uvloop", "grpc", "google", "urllib.",
                                             "http", "ssl", "asyncio"))
             and m != "fastkv.pytest_plugin"]
    assert heavy == []


def test_server_v3_json_v2_client_and_teardown_after_failure(inner):
    inner.pytester.makepyfile(test_app='''
        import urllib.error
        import urllib.request

        import etcd
        import pytest

        from kvhelpers import get, put, record, tcp_listeners

        pytestmark = pytest.mark.fastkv("--enable-v2=true")


        def test_v3_json_and_v2(fastkv_server):
            srv = fastkv_server
            record(srv)
            assert srv.mode == "subprocess" and srv.url == f"http://127.0.0.1:{srv.port}"
            assert srv.endpoints == [f"127.0.0.1:{srv.port}"]
            put(srv.url, "a", "1")
            assert get(srv.url, "a") == "1"
            c = etcd.Client(host=srv.host, port=srv.port)
            c.write("/app/x", "y")
            assert c.read("/app/x").value == "y"
            # only the client and peer ports, only on loopback
            assert tcp_listeners(srv.pid) == sorted([("127.0.0.1", srv.port),
                                                     ("127.0.0.1", srv.peer_port)])
            old = srv.pid
            srv.restart()                      # same ports, same data
            record(srv)
            assert srv.pid != old
            assert get(srv.url, "a") == "1" and c.read("/app/x").value == "y"
            srv.kill()                         # a crash: recovered from the WAL
            srv.start()
            record(srv)
            assert get(srv.url, "a") == "1"


        @pytest.mark.fastkv("--enable-v2=false")     # the closest marker's flag wins
        def test_closest_flag_wins(fastkv_server):
            record(fastkv_server)
            with pytest.raises(urllib.error.HTTPError) as e:
                urllib.request.urlopen(fastkv_server.url + "/v2/keys/x", timeout=5)
            assert e.value.code == 404


        def test_fails(fastkv_server):
            record(fastkv_server)
            put(fastkv_server.url, "k", "v")
            assert get(fastkv_server.url, "k") == "not what was put"
    ''')
    result = inner.run("-rf")
    result.assert_outcomes(passed=2, failed=1)
    # the failed test's report carries the end of its member's log
    result.stdout.fnmatch_lines(["*fastkv default http://127.0.0.1:* log (end)*",
                                 "*ready to serve client requests*"])
    assert len(inner.records()) == 5
    inner.assert_nothing_left()


def test_cluster_failover_and_teardown_after_failure(inner):
    inner.pytester.makepyfile(test_cluster='''
        import time

        from kvhelpers import get, put, record


        def test_failover(fastkv_cluster):
            c = fastkv_cluster
            for m in c.members:
                record(m)
            assert len(c.members) == 3 and len(set(c.endpoints)) == 3
            lead = c.leader()
            put(lead.url, "k", "1")
            i = c.members.index(lead)
            c.stop_member(i)
            new = c.leader()
            assert new is not lead and new.running
            put(new.url, "k", "2")
            assert get(c.followers()[0].url, "k") == "2"
            record(c.restart_member(i))
            assert get(c[i].url, "k") == "2"     # linearizable: through the leader


        def test_fails_with_a_killed_member(fastkv_cluster):
            for m in fastkv_cluster.members:
                record(m)
            fastkv_cluster.kill_member(0)
            put(fastkv_cluster.leader().url, "k", "v")   # two of three: still a quorum
            assert False, "on purpose"
    ''')
    result = inner.run()
    result.assert_outcomes(passed=1, failed=1)
    result.stdout.fnmatch_lines(["*fastkv m1 http://127.0.0.1:* log (end)*"])
    assert len(inner.records()) == 7
    inner.assert_nothing_left()


def test_options_inprocess_session_factory_parametrize_and_start_error(inner):
    inner.pytester.makeini('''
        [pytest]
        fastkv_flags = --enable-v2=true
    ''')
    inner.pytester.makepyfile(test_opts='''
        import threading
        import urllib.error
        import urllib.request

        import etcd
        import pytest

        from kvhelpers import get, put, record

        seen = {}


        def test_inprocess(fastkv_server):
            srv = fastkv_server
            record(srv)
            assert srv.mode == "inprocess" and srv.pid is None   # --fastkv-mode=inprocess
            put(srv.url, "a", "1")
            assert get(srv.url, "a") == "1"
            # the ini option's flag
            assert etcd.Client(host=srv.host, port=srv.port).write("/v2", "ok").value == "ok"
            # the Server object, on its own event loop thread
            assert srv.run(srv.server.range({"key": b"a"}))["kvs"][0]["value"] == b"1"
            seen["thread"] = srv._thread.name
            srv.restart()
            assert get(srv.url, "a") == "1"
            seen["port"] = srv.port


        def test_inprocess_member_was_stopped():
            import socket
            assert seen["thread"] not in {t.name for t in threading.enumerate()}
            with socket.socket() as s:
                assert s.connect_ex(("127.0.0.1", seen["port"])) != 0


        @pytest.mark.parametrize("fastkv_server", [{"mode": "subprocess"},
                                                   ["--enable-v2=false"]], indirect=True)
        def test_parametrized(fastkv_server):
            record(fastkv_server)
            try:
                urllib.request.urlopen(fastkv_server.url + "/v2/keys/", timeout=5)
                v2 = True
            except urllib.error.HTTPError as e:
                v2 = e.code != 404
            assert v2 == (fastkv_server.mode == "subprocess")


        def test_session_1(fastkv_server_session):
            record(fastkv_server_session)
            put(fastkv_server_session.url, "shared", "yes")


        def test_session_2(fastkv_server_session):
            assert get(fastkv_server_session.url, "shared") == "yes"


        @pytest.fixture(scope="module")
        def module_kv(fastkv_factory):
            with fastkv_factory.server(mode="subprocess", flags=["--max-txn-ops=2"]) as srv:
                yield srv


        def test_factory_module_scope(module_kv):
            record(module_kv)
            assert module_kv.pid is not None and "--max-txn-ops=2" in module_kv.argv()
            put(module_kv.url, "m", "1")


        @pytest.mark.fastkv("--no-such-flag", mode="subprocess")
        def test_bad_flag(fastkv_server):
            pass
    ''')
    result = inner.run("--fastkv-mode=inprocess")
    result.assert_outcomes(passed=7, errors=1)
    # a member that cannot start: an error at setup, with the member's output
    result.stdout.fnmatch_lines(["*FastkvStartError: fastkv member default exited with 2*",
                                 "*no-such-flag*"])
    inner.assert_nothing_left()



def test_a_port_taken_meanwhile_is_retried_on_new_ports(monkeypatch):
    """Another program binds our client port between free_port() and the member's bind
    (here: another member answering /health there): the member is not taken for ours, and
    the factory starts it again on new ports."""
    from fastkv import pytest_plugin as plugin
    with plugin.FastkvServer() as other:
        taken = [other.port]
        real = plugin.free_port
        monkeypatch.setattr(plugin, "free_port", lambda: taken.pop() if taken else real())
        factory = plugin.FastkvFactory()
        try:
            srv = factory.server()
            assert srv.port != other.port and srv.member_id != other.member_id
            assert srv.pid is not None
        finally:
            factory.close()
        assert not srv.running and other.running
