"""Fixtures of the fastkv.client tests: every test runs against fastkv and against
Debian's etcd 3.4 (the ``kind`` parameter), on loopback.

Servers are started lazily, once, and shared: ``server`` (one single member of
each kind for the whole session); test modules that need servers of their own
(TLS, auth, a 3-member cluster) take them from ``module_servers``, which stops
them at the end of the module. Every process is stopped by the fixture that
started it, also when tests fail.
"""
from __future__ import annotations

import os
import sys

import pytest

sys.path.insert(0, os.path.dirname(os.path.abspath(__file__)))   # clientsupport, clientfakes

from clientsupport import KINDS, ServerPool  # noqa: E402
from servers import Cluster  # noqa: E402

from fastkv.client import Client  # noqa: E402


@pytest.fixture(scope="session")
def session_servers():
    pool = ServerPool()
    try:
        yield pool
    finally:
        pool.close()


@pytest.fixture(scope="module")
def module_servers():
    pool = ServerPool()
    try:
        yield pool
    finally:
        pool.close()


@pytest.fixture(params=list(KINDS))
def kind(request) -> str:
    """Which server: each test runs once against "fastkv" and once against "etcd"."""
    return request.param


@pytest.fixture
def server(kind, session_servers):
    """The shared single member of this kind."""
    return session_servers.get(kind, lambda: KINDS[kind]().start())


@pytest.fixture
def client(server):
    with Client(server.url) as c:
        yield c


@pytest.fixture
def cluster(kind, module_servers) -> Cluster:
    """A 3-member cluster of this kind, shared by the tests of one module."""
    def start():
        c = Cluster(KINDS[kind], 3)
        c.start()
        return c
    return module_servers.get(("cluster", kind), start)


@pytest.fixture
def prefix(request) -> str:
    """A key prefix of this test alone (the servers are shared)."""
    return f"/{request.node.name}/"
