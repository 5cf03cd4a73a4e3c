"""docs/client.md runs: every ```python block of it, in order, in one namespace,
against a fresh fastkv and a fresh etcd 3.4 (the page's endpoint replaced by the
member's). Blocks fenced ```py are shown only (several members, TLS files...)."""
from __future__ import annotations

import contextlib
import io
import os
import re

from clientsupport import KINDS

from servers import REPO

DOC = os.path.join(REPO, "docs", "client.md")
DOC_ENDPOINT = "http://127.0.0.1:2379"


def python_blocks(text: str) -> list[str]:
    return re.findall(r"^```python\n(.*?)^```", text, re.S | re.M)


def test_doc_examples_run(kind, module_servers):
    srv = module_servers.get(("docs", kind), lambda: KINDS[kind]().start())
    with open(DOC) as f:
        blocks = python_blocks(f.read())
    assert len(blocks) >= 10
    namespace: dict = {"__name__": "client_md"}
    out = io.StringIO()
    for i, block in enumerate(blocks):
        code = compile(block.replace(DOC_ENDPOINT, srv.url), f"docs/client.md block {i + 1}",
                       "exec")
        with contextlib.redirect_stdout(out):
            exec(code, namespace)   # noqa: S102 - our own documentation
    printed = out.getvalue()
    # a few of the outputs the page promises
    assert "hello 1" in printed and "PUT b'config/mode' b'fast'" in printed
    assert "etcdserver: mvcc: required revision has been compacted" in printed
    assert "DELETE b'docs/w/x' b'' b'2'" in printed
    assert "etcdserver: permission denied" in printed
    assert "EmptyKey INVALID_ARGUMENT etcdserver: key is not provided" in printed
