"""The GIL-free byte relay that hands gRPC connections from the client port to grpc.aio."""
from __future__ import annotations

import os
import socket
import threading

import pytest

from fastkv.api._relay import relay


def _relayed():
    """client <-> [a | relay | b] <-> upstream; returns (client, upstream, thread, result)."""
    client, a = socket.socketpair()
    b, upstream = socket.socketpair()
    result = []
    t = threading.Thread(target=lambda: result.append(relay(a.fileno(), b.fileno(), b"hello ")))
    t.start()
    return client, upstream, (a, b), t, result


def _recv_exactly(sock, n):
    out = b""
    while len(out) < n:
        chunk = sock.recv(n - len(out))
        if not chunk:
            break
        out += chunk
    return out


def test_bytes_flow_both_ways_and_initial_bytes_go_first():
    client, upstream, inner, t, result = _relayed()
    try:
        client.sendall(b"world")
        assert _recv_exactly(upstream, 11) == b"hello world"
        upstream.sendall(b"pong")
        assert _recv_exactly(client, 4) == b"pong"
        # half-close each way: EOF is passed on, the relay ends when both are closed
        client.shutdown(socket.SHUT_WR)
        assert upstream.recv(10) == b""
        upstream.sendall(b"late")
        assert _recv_exactly(client, 4) == b"late"
        upstream.shutdown(socket.SHUT_WR)
        assert client.recv(10) == b""
        t.join(5)
        assert not t.is_alive() and result == [True]
    finally:
        for s in (client, upstream) + inner:
            s.close()


def test_large_transfers_in_both_directions_at_once():
    """Each direction has its own buffer: a side that is busy writing still gets read."""
    client, upstream, inner, t, result = _relayed()
    payload = os.urandom(3 * 1024 * 1024)
    got = {}

    def pump(src, dst, name):
        dst.sendall(payload)
        dst.shutdown(socket.SHUT_WR)

    def drain(sock, name, n):
        got[name] = _recv_exactly(sock, n)

    try:
        ths = [threading.Thread(target=pump, args=(None, client, "c")),
               threading.Thread(target=pump, args=(None, upstream, "u")),
               threading.Thread(target=drain, args=(upstream, "u", 6 + len(payload))),
               threading.Thread(target=drain, args=(client, "c", len(payload)))]
        for x in ths:
            x.start()
        for x in ths:
            x.join(20)
        assert got["u"] == b"hello " + payload
        assert got["c"] == payload
        t.join(5)
        assert result == [True]
    finally:
        for s in (client, upstream) + inner:
            s.close()


def test_a_reset_peer_ends_the_relay():
    client, upstream, inner, t, result = _relayed()
    try:
        client.setsockopt(socket.SOL_SOCKET, socket.SO_LINGER, b"\x01\x00\x00\x00\x00\x00\x00\x00")
        client.close()   # RST-ish close of one end
        upstream.close()
        t.join(5)
        assert not t.is_alive()
    finally:
        for s in inner:
            s.close()


def test_initial_bytes_larger_than_the_buffer_are_refused():
    a, b = socket.socketpair()
    try:
        with pytest.raises(ValueError):
            relay(a.fileno(), b.fileno(), bytes(1 << 20))
    finally:
        a.close()
        b.close()
