import os
import sys

import pytest

sys.path.insert(0, os.path.dirname(os.path.abspath(__file__)))

from servers import EtcdProcess, FastkvProcess  # noqa: E402

# pytester runs small pytest sessions for tests/plugin/ (fastkv's pytest plugin). pytest
# accepts pytest_plugins only in the top-level conftest.
pytest_plugins = ["pytester"]


def pytest_sessionfinish(session, exitstatus):
    """The fastkvctl fork server (tests/ctlfork.py) ends with the session."""
    ctlfork = sys.modules.get("ctlfork")
    if ctlfork is not None:
        ctlfork.shutdown()


# The fixtures below are fastkv's own (servers.py); fastkv's pytest plugin
# (fastkv/pytest_plugin.py, loaded when fastkv is installed) has a fixture named
# fastkv_server too: these conftest fixtures take precedence for every test in tests/.
@pytest.fixture
def fastkv_server():
    """A fresh single-member fastkv on loopback, stopped after the test."""
    srv = FastkvProcess().start()
    try:
        yield srv
    finally:
        srv.cleanup()


@pytest.fixture
def etcd_server():
    """A fresh Debian etcd 3.4 on loopback, stopped after the test."""
    srv = EtcdProcess().start()
    try:
        yield srv
    finally:
        srv.cleanup()


@pytest.fixture(params=["fastkv", "etcd"])
def any_server(request):
    """The same test against fastkv and against etcd 3.4."""
    cls = FastkvProcess if request.param == "fastkv" else EtcdProcess
    srv = cls().start()
    try:
        yield srv
    finally:
        srv.cleanup()
