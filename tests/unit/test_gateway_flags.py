"""`fastkv gateway` command line (fastkv/gateway.py) as etcd 3.4's cobra/pflag reads it,
Go's durations, the endpoint list, and the endpoint pick (priority, weight, in turn).
The proxy itself runs against real processes in tests/integration/test_gateway.py."""
from __future__ import annotations

import pytest

from fastkv import gateway
from fastkv.gateway import (GatewayConfig, HelpRequested, Remote, TCPProxy, UsageError,
                            endpoint_remotes, format_duration, parse_duration,
                            parse_start_flags)

SEC = 10**9


def test_defaults_are_etcds():
    cfg = parse_start_flags([])
    assert cfg == GatewayConfig(listen_addr="127.0.0.1:23790", endpoints=["127.0.0.1:2379"],
                                discovery_srv="", discovery_srv_name="",
                                insecure_discovery=False, trusted_ca_file="",
                                retry_delay=60.0, args=[])


def test_flag_forms():
    cfg = parse_start_flags(["--listen-addr", "127.0.0.1:1", "--endpoints=a:1,b:2",
                             "--endpoints", "c:3", "--retry-delay=1m30s",
                             "--insecure-discovery", "--discovery-srv", "example.com",
                             "--discovery-srv-name=prod", "--trusted-ca-file=/ca.pem"])
    assert cfg.listen_addr == "127.0.0.1:1"
    # a string slice: the first use replaces the default, later ones append
    assert cfg.endpoints == ["a:1", "b:2", "c:3"]
    assert cfg.retry_delay == 90.0
    assert cfg.insecure_discovery is True
    assert (cfg.discovery_srv, cfg.discovery_srv_name, cfg.trusted_ca_file) == (
        "example.com", "prod", "/ca.pem")
    assert parse_start_flags(["--insecure-discovery=false"]).insecure_discovery is False
    assert parse_start_flags(["--insecure-discovery=T"]).insecure_discovery is True
    assert parse_start_flags(["--endpoints="]).endpoints == []
    # positional arguments are accepted and ignored, as etcd's gateway does
    assert parse_start_flags(["extra", "--", "--not-a-flag"]).args == ["extra", "--not-a-flag"]


@pytest.mark.parametrize("argv,message", [
    (["--bogus"], "unknown flag: --bogus"),
    (["--bogus=1"], "unknown flag: --bogus"),
    (["-endpoints=a:1"], "unknown shorthand flag: 'e' in -endpoints=a:1"),
    (["--retry-delay"], "flag needs an argument: --retry-delay"),
    (["--retry-delay=x"],
     'invalid argument "x" for "--retry-delay" flag: time: invalid duration "x"'),
    (["--retry-delay=5"],
     'invalid argument "5" for "--retry-delay" flag: time: missing unit in duration "5"'),
    (["--retry-delay=5d"],
     'invalid argument "5d" for "--retry-delay" flag: time: unknown unit "d" in duration "5d"'),
    (["--insecure-discovery=maybe"],
     'invalid argument "maybe" for "--insecure-discovery" flag: '
     'strconv.ParseBool: parsing "maybe": invalid syntax'),
    (["--listen-addr=localhost"], 'invalid argument "localhost" for "--listen-addr" flag'),
])
def test_usage_errors(argv, message):
    with pytest.raises(UsageError) as exc:
        parse_start_flags(argv)
    assert str(exc.value).startswith(message)


@pytest.mark.parametrize("argv", [["-h"], ["--help"], ["--endpoints=a:1", "--help=true"]])
def test_help(argv):
    with pytest.raises(HelpRequested):
        parse_start_flags(argv)


def test_main_exit_codes_and_usage(capsys):
    assert gateway.main([]) == 0
    assert "Available Commands:\n  start       start the gateway" in capsys.readouterr().out
    assert gateway.main(["--help"]) == 0
    assert "fastkv gateway [command]" in capsys.readouterr().out

    assert gateway.main(["start", "--help"]) == 0
    out = capsys.readouterr().out
    assert out.startswith("start the gateway\n\nUsage:\n  fastkv gateway start [flags]\n")
    for line in ["      --endpoints strings           comma separated etcd cluster endpoints "
                 "(default [127.0.0.1:2379])",
                 "  -h, --help                        help for start",
                 "      --retry-delay duration        duration of delay before retrying "
                 "failed endpoints (default 1m0s)"]:
        assert line in out.splitlines()

    assert gateway.main(["start", "--bogus"]) == 2
    err = capsys.readouterr().err
    assert err.startswith("Error: unknown flag: --bogus\nUsage:\n  fastkv gateway start [flags]")

    assert gateway.main(["stop"]) == 2
    err = capsys.readouterr().err
    assert err.startswith('Error: unknown command "stop" for "fastkv gateway"\nUsage:')

    assert gateway.main(["--bogus"]) == 2
    assert capsys.readouterr().err.startswith("Error: unknown flag: --bogus")

    # endpoints that are not host:port are refused before anything starts
    assert gateway.main(["start", "--endpoints=abc"]) == 2
    assert 'error parsing endpoint "abc"' in capsys.readouterr().err
    assert gateway.main(["start", "--endpoints="]) == 2
    assert "no endpoints found" in capsys.readouterr().err


@pytest.mark.parametrize("text,ns", [
    ("0", 0), ("1m0s", 60 * SEC), ("1m", 60 * SEC), ("1.5s", 3 * SEC // 2),
    ("100ms", SEC // 10), ("1h2m3s", 3723 * SEC), ("2us", 2000), ("2\u00b5s", 2000),
    ("3ns", 3), (".5s", SEC // 2), ("1.s", SEC), ("+5s", 5 * SEC), ("-5s", -5 * SEC),
])
def test_parse_duration_as_go(text, ns):
    assert parse_duration(text) == ns


@pytest.mark.parametrize("text", ["", "s", ".s", "1", "1x", "-", "1s1", "9999999999h"])
def test_parse_duration_refuses_as_go(text):
    with pytest.raises(ValueError):
        parse_duration(text)


@pytest.mark.parametrize("ns,text", [
    (0, "0s"), (60 * SEC, "1m0s"), (SEC // 10, "100ms"), (3 * SEC // 2, "1.5s"),
    (3723 * SEC, "1h2m3s"), (5 * 3600 * SEC, "5h0m0s"), (2000, "2\u00b5s"), (3, "3ns"),
    (-90 * SEC, "-1m30s"),
])
def test_format_duration_as_go(ns, text):
    assert format_duration(ns) == text


def test_negative_retry_delay_is_refused():
    with pytest.raises(UsageError):
        parse_start_flags(["--retry-delay=-1s"])


def test_endpoints_strip_the_scheme():
    got = endpoint_remotes(["http://10.0.0.1:2379", "https://user@host.example:2380",
                            "127.0.0.1:1", "localhost:2", "[::1]:3", "node.example.:4", ":5"])
    assert [(r.host, r.port) for r in got] == [
        ("10.0.0.1", 2379), ("host.example", 2380), ("127.0.0.1", 1), ("localhost", 2),
        ("::1", 3), ("node.example", 4), ("localhost", 5)]
    assert got[4].addr == "[::1]:3"
    for bad in ["abc", "http://abc", "a:b", "a:1:2", "a:70000", ""]:
        with pytest.raises(UsageError, match="error parsing endpoint"):
            endpoint_remotes([bad])


def test_pick_in_turn_among_the_active():
    rs = [Remote("a", 1), Remote("b", 2), Remote("c", 3)]
    p = TCPProxy(rs, 60.0)
    assert [p.pick().host for _ in range(6)] == ["a", "b", "c", "a", "b", "c"]
    rs[1].active = False
    assert [p.pick().host for _ in range(4)] == ["a", "c", "a", "c"]
    assert p.pick(exclude={id(rs[0]), id(rs[2])}) is None
    rs[0].active = rs[2].active = False
    assert p.pick() is None


def test_pick_by_priority_then_weight(monkeypatch):
    low = [Remote("w1", 1, priority=1, weight=1), Remote("w3", 2, priority=1, weight=3),
           Remote("zero", 3, priority=1, weight=0)]
    backup = Remote("backup", 4, priority=2)
    p = TCPProxy(low + [backup], 60.0)
    draws = []

    def randrange(n):
        v = draws.pop(0)
        assert 0 <= v < n
        return v

    monkeypatch.setattr(gateway.random, "randrange", randrange)
    # weight 0 gets a 1-in-100 chance (the draw == 1); otherwise a draw in [0, 1+3)
    draws[:] = [0, 0, 0, 1, 0, 3]
    assert [p.pick().host for _ in range(3)] == ["w1", "w3", "w3"]
    draws[:] = [1]
    assert p.pick().host == "zero"
    # the best priority class first; a lower one only when none of it is active
    for r in low:
        r.active = False
    assert p.pick().host == "backup"
    low[2].active = True
    assert p.pick().host == "zero"


def test_zero_retry_delay_is_five_minutes_as_etcds_tcpproxy():
    assert TCPProxy([Remote("a", 1)], 0.0).retry_delay == 300.0
