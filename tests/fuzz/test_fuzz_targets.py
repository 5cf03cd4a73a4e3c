"""A short run of every fuzz target (tests/fuzz/targets.py) under hypothesis, plus the
inputs that once broke a target. The long runs are `ci/fuzz` (atheris)."""
from __future__ import annotations

import os
import sys

import pytest
from hypothesis import HealthCheck, given, settings
from hypothesis import strategies as st

sys.path.insert(0, os.path.dirname(os.path.abspath(__file__)))

import targets  # noqa: E402

EXAMPLES = int(os.environ.get("FUZZ_EXAMPLES", "1000"))

# Inputs that once broke a target (target name, bytes): they must stay fixed.
REGRESSIONS: list[tuple[str, bytes]] = [
    # valid-looking WAL damage: a bit flipped inside an entry's payload
    ("wal_damage", bytes([255, 0, 200, 0x01])),
    # an incomplete Huffman string: the hpack package's own error escaped the decoder
    ("hpack", b"\x00\x81\x00"),
    # JSON nested deeper than Python's recursion limit (Go allows 10000 levels): the
    # parser's RecursionError escaped (atheris, v3_json, 600 nested arrays)
    ("v3_json", b"\x01" + b"[4," * 600 + b"]" * 600),
    ("v3_json", b"\x01" + b'{"key":' + b"[" * 2000 + b"]" * 2000 + b"}"),
]


def test_nesting_beyond_gos_limit_is_gos_error():
    from fastkv.api import v3_gateway as gw
    from fastkv.api.gojson import GoJSONError
    deep = b'{"key":' + b"[" * 10001 + b"]" * 10001 + b"}"
    with pytest.raises(GoJSONError, match="invalid character '\\[' exceeded max depth"):
        gw.decode_request(gw.RANGE_REQ, deep)
    ok = b'{"key":"YQ==","junk":' + b"[" * 9000 + b"]" * 9000 + b"}"
    assert gw.decode_request(gw.RANGE_REQ, ok) == {"key": b"a"}


@pytest.mark.parametrize("name", sorted(targets.TARGETS))
def test_target_survives_random_input(name):
    @settings(max_examples=EXAMPLES, deadline=None, database=None,
              suppress_health_check=[HealthCheck.too_slow])
    @given(st.binary(max_size=2048))
    def run(data):
        targets.run(name, data)
    run()


@pytest.mark.parametrize("name,data", REGRESSIONS)
def test_regressions(name, data):
    targets.run(name, data)


def test_http_target_catches_a_failing_handler(monkeypatch):
    """The HTTP target's checks bite: a handler that raises (the server answers 500 and logs
    it) fails the target; the same request with the real handler passes and writes."""
    from fastkv.api import v3_gateway as gw
    put = b"POST /v3/kv/put HTTP/1.1\r\nContent-Length: 30\r\n\r\n" \
          b'{"key":"Zg==","value":"YmFy"}\n'
    _loop, server, _log = targets._member()
    rev = server.store.rev
    targets.http_request(b"\x00" + put)
    assert server.store.rev == rev + 1

    async def broken(server, body, req):
        raise RuntimeError("a bug")
    monkeypatch.setitem(gw.GATEWAY_ROUTES, "/v3/kv/put", (broken, False))
    with pytest.raises(AssertionError, match="handler failed"):
        targets.http_request(b"\x00" + put)


def test_damage_is_detected_not_applied():
    """The damage targets really damage: a flipped bit in a WAL record or a snapshot
    is refused (not silently accepted with other data)."""
    with pytest.raises(targets.Rejected):
        targets.snapshot_damage(bytes([255, 0, 40, 0x10]))
    with pytest.raises(targets.Rejected):
        targets.wal_damage(bytes([255, 0, 40, 0x10]))
