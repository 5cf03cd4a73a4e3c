"""docs/client.md runs: every ```python block of it, in order, in one namespace,
against a fresh fastkv and a fresh etcd 3.4 (the page's endpoint replaced by the
member's). Blocks fenced ```py are shown only (several members, TLS files...)."""
from __future__ import annotations

import os

from clientsupport import KINDS, run_doc_blocks

from servers import REPO

DOC = os.path.join(REPO, "docs", "client.md")


def test_doc_examples_run(kind, module_servers):
    srv = module_servers.get(("docs", kind), lambda: KINDS[kind]().start())
    printed = run_doc_blocks(DOC, srv.url, "client_md")
    # a few of the outputs the page promises
    assert "hello 1" in printed and "PUT b'config/mode' b'fast'" in printed
    assert "etcdserver: mvcc: required revision has been compacted" in printed
    assert "DELETE b'docs/w/x' b'' b'2'" in printed
    assert "etcdserver: permission denied" in printed
    assert "EmptyKey INVALID_ARGUMENT etcdserver: key is not provided" in printed
