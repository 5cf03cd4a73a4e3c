"""docs/recipes.md runs: every ```python block of it, in order, in one namespace,
against a fresh fastkv and a fresh etcd 3.4 (the page's endpoint replaced by the
member's), the way test_client_docs.py runs docs/client.md. Blocks fenced ```py
are shown only (other processes, etcdctl)."""
from __future__ import annotations

import os

from clientsupport import KINDS, run_doc_blocks

from servers import REPO

DOC = os.path.join(REPO, "docs", "recipes.md")


def test_recipes_doc_examples_run(kind, module_servers):
    srv = module_servers.get(("recipes-docs", kind), lambda: KINDS[kind]().start())
    printed = run_doc_blocks(DOC, srv.url, "recipes_md")
    # the outputs the page promises
    for line in ["True True", "False False", "refused: LockLost", "done",
                 "b'node-1'", "b'node-1 at 10.0.0.1'", "not the leader",
                 "3 b'job-0' b'job-1'", "b'now' b'later'", "empty",
                 "True False", "through: True", "70\n", "70 30",
                 "['10.0.0.1:8080', '10.0.0.2:8080']", "['api-1', 'api-2', 'api-1']",
                 "10.0.0.2:8080 [('added', 'api-1'), ('added', 'api-2'), ('removed', 'api-1')]",
                 "{'log-level': 'info'}",
                 "{'workers': '8'} [('log-level', 'debug'), ('workers', '8'), "
                 "('log-level', None)]",
                 "b'task-1'",
                 # the asyncio section
                 "gate open: True", "[True, True, True] None", "['web-1', 'web-2', 'web-1']",
                 "[('added', 'web-1'), ('added', 'web-2'), ('removed', 'web-2'), "
                 "('removed', 'web-1')]",
                 "{'workers': '4'}", "reload workers 16"]:
        assert line in printed, (line, printed)
