"""Nemesis workloads: client threads that run while faults are injected, and their checks.

A workload is a :class:`Workload` subclass registered in :data:`WORKLOADS` by name. The
nemesis (tests/chaos/nemesis.py) makes one of each workload it runs, starts the threads
``threads()`` returns, stops them by setting ``nem.stop_clients``, and then calls, in order:

* ``after_heal(rep)``: with every fault healed and every member at the same applied index,
  while the cluster still runs (e.g. read back what was acknowledged);
* ``analyse(rep)``: after the cluster is stopped (e.g. search the history).

Both add what they find to the :class:`~nemesis.Report`: ``rep.anomalies`` (strings; any
anomaly fails the run), ``rep.lost`` (acknowledged writes missing), and summary lines with
``rep.note(line)``. Operation counts go through :meth:`Workload.attempt`, :meth:`acked` and
:meth:`indeterminate`, which the nemesis sums into the report; :meth:`acked` also feeds the
worst-unavailability measure.

What a workload may use of the nemesis ``nem``: ``nem.n`` (members), ``nem.url(i)`` (member
i's client URL, read it per request: a replaced member may move), ``nem.seed``,
``nem.now()`` (seconds since the run started), ``nem.log(msg)`` (verbose only),
``nem.stop_clients`` (a threading.Event), ``nem.status(i)``, ``nem.leader()``,
``nem.fault_log`` (the faults done: (kind, victim indexes, start, end) in ``nem.now()`` time).
"""
from __future__ import annotations

import threading


class Workload:
    name = "?"

    def __init__(self, nem, first_client: int = 0):
        self.nem = nem
        self.first_client = first_client
        self.lock = threading.Lock()
        self.n_attempted = 0
        self.n_acked = 0
        self.n_indeterminate = 0
        self.failed_reads = 0

    # ---- what a workload defines --------------------------------------------------------

    def threads(self) -> list[threading.Thread]:
        raise NotImplementedError

    def after_heal(self, rep) -> None:
        """Checks that need the healed, running cluster (default: none)."""

    def analyse(self, rep) -> None:
        """Checks on what was recorded, after the cluster stopped (default: none)."""

    # ---- counting -----------------------------------------------------------------------

    def attempt(self) -> None:
        with self.lock:
            self.n_attempted += 1

    def acked(self, when: float | None = None) -> None:
        with self.lock:
            self.n_acked += 1
        self.nem.note_ok(self.nem.now() if when is None else when)

    def indeterminate(self) -> None:
        with self.lock:
            self.n_indeterminate += 1

    def thread(self, target, *args, name: str) -> threading.Thread:
        return threading.Thread(target=target, args=args, daemon=True,
                                name=f"{self.name}-{name}")


def _registry() -> dict:
    from .append import AppendWorkload
    from .durability import DurabilityWorkload
    from .lock import LockWorkload
    from .register import RegisterWorkload
    from .watch import WatchWorkload
    return {
        "register": RegisterWorkload,
        "durability": DurabilityWorkload,
        "lock": LockWorkload,
        "append": AppendWorkload,
        "watch": WatchWorkload,
    }


WORKLOADS = _registry()
DEFAULT_WORKLOADS = ("register", "durability", "append", "watch", "lock")
