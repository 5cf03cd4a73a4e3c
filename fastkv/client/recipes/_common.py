"""What the recipes share: their errors, key names, deadlines, and waiting for a key
to be deleted (or put) with a watch instead of polling.

Every wait follows one shape: read the state, and if it is not the wanted one, watch
from the revision right after that read (so no change in between is missed) until a
change that may have made it so; then read again. A watch whose start revision was
compacted meanwhile just sends us back to reading.
"""
from __future__ import annotations

import asyncio
import contextlib
import inspect
import time
from typing import Callable

from fastkv.client import errors
from fastkv.client._requests import KeyLike, to_bytes
from fastkv.client._types import Event
from fastkv.client.txn import create_revision, delete_op

__all__ = ["RecipeError", "LockLost", "NotLeader", "TooManyClients", "STMConflict",
           "NoInstanceAvailable"]


# ---- errors ---------------------------------------------------------------------------------

class RecipeError(errors.EtcdError):
    """Base class of the errors the recipes raise themselves."""


class LockLost(RecipeError):
    """The lock is no longer ours: its key is gone or was made again (its lease
    expired, it was revoked, someone deleted the key). A fenced write was refused,
    or the lease was lost while waiting for the lock."""


class NotLeader(RecipeError):
    """This Election is not (or no longer) the leader (etcd's ErrElectionNotLeader)."""


class TooManyClients(RecipeError):
    """More participants entered a DoubleBarrier than its count (etcd's
    ErrTooManyClients)."""


class STMConflict(RecipeError):
    """An STM transaction was still conflicting after ``max_retries`` attempts."""


class NoInstanceAvailable(RecipeError, LookupError):
    """A picker was asked for an instance of a service that has none."""


# ---- keys -----------------------------------------------------------------------------------

def name_prefix(name: KeyLike) -> bytes:
    """``name`` + ``/``: the prefix under which a recipe keeps its keys (etcd's
    concurrency package appends the ``/`` the same way)."""
    b = to_bytes(name, "name")
    if not b:
        raise ValueError("a recipe needs a non-empty name")
    return b + b"/"


def lease_key(prefix: bytes, lease_id: int) -> bytes:
    """etcd's ``fmt.Sprintf("%s%x", pfx, leaseID)``: the key of one session."""
    return prefix + format(lease_id, "x").encode()


def unique_suffix() -> bytes:
    """etcd contrib/recipes' unique key suffix: the time in nanoseconds (``%v`` of
    ``time.Now().UnixNano()``). Made unique by a create-if-absent transaction."""
    return str(time.time_ns()).encode()


def lease_id_of(lease) -> int:
    """A Lease/AsyncLease object or a lease ID."""
    lid = getattr(lease, "id", lease)
    if not isinstance(lid, int) or isinstance(lid, bool) or lid <= 0:
        raise ValueError(f"not a lease or a lease ID: {lease!r}")
    return lid


# ---- deadlines ------------------------------------------------------------------------------

#: how often a wait wakes up to run its check (e.g. "is my lease still alive?")
CHECK_EVERY = 0.5


class Deadline:
    """A point in time from ``timeout`` seconds (None: never)."""

    __slots__ = ("at",)

    def __init__(self, timeout: float | None):
        if timeout is not None and timeout < 0:
            raise ValueError("timeout must be >= 0 (or None)")
        self.at = None if timeout is None else time.monotonic() + timeout

    def remaining(self) -> float | None:
        return None if self.at is None else max(self.at - time.monotonic(), 0.0)

    def expired(self) -> bool:
        return self.at is not None and time.monotonic() >= self.at

    def step(self, most: float = CHECK_EVERY) -> float:
        """How long the next bounded wait may last."""
        r = self.remaining()
        return most if r is None else min(r, most)


#: what a wait returns when the state must simply be read again (the watch's start
#: revision was compacted: the change we waited for may already have happened)
RECHECK = object()


def is_put(ev: Event) -> bool:
    return ev.is_put


def is_delete(ev: Event) -> bool:
    return ev.is_delete


# ---- waiting: blocking client ---------------------------------------------------------------

def wait_event(client, key: bytes, after_revision: int, deadline: Deadline,
               wanted: Callable[[Event], bool], *, prefix: bool = False,
               check: Callable[[], None] | None = None):
    """Watch ``key`` (or the prefix) from ``after_revision + 1`` for the first event
    ``wanted`` accepts: that Event, None when the deadline passed, or RECHECK.
    ``check()`` runs every CHECK_EVERY seconds (it may raise to give up)."""
    try:
        w = client.watch(key, prefix=prefix, start_revision=after_revision + 1)
    except errors.WatchCompacted:
        return RECHECK
    with w:
        while True:
            if deadline.expired():
                return None
            try:
                ev = w.get(timeout=deadline.step())
            except TimeoutError:
                if check is not None:
                    check()
                continue
            except errors.WatchCompacted:
                return RECHECK
            if wanted(ev):
                return ev


def wait_deletes(client, prefix: bytes, max_create_revision: int, deadline: Deadline,
                 check: Callable[[], None] | None = None) -> bool:
    """etcd's waitDeletes: wait until no key under ``prefix`` was created at or before
    ``max_create_revision``. Each round watches only the newest such key (the one just
    before us in the line), so a release wakes one waiter, not all of them. False when
    the deadline passed."""
    while True:
        if check is not None:
            check()
        r = client.range(prefix, prefix=True, sort_target="create", sort_order="descend",
                         limit=1, max_create_revision=max_create_revision)
        if not r.kvs:
            return True
        got = wait_event(client, r.kvs[0].key, r.revision, deadline, is_delete, check=check)
        if got is None:
            return False


# ---- waiting: asyncio client ----------------------------------------------------------------

async def await_event(client, key: bytes, after_revision: int, deadline: Deadline,
                      wanted: Callable[[Event], bool], *, prefix: bool = False,
                      check: Callable[[], None] | None = None):
    """:func:`wait_event` for an AsyncClient."""
    try:
        w = await client.watch(key, prefix=prefix, start_revision=after_revision + 1)
    except errors.WatchCompacted:
        return RECHECK
    async with w:
        while True:
            if deadline.expired():
                return None
            try:
                ev = await w.get(timeout=deadline.step())
            except TimeoutError:
                if check is not None:
                    check()
                continue
            except errors.WatchCompacted:
                return RECHECK
            if wanted(ev):
                return ev


async def await_deletes(client, prefix: bytes, max_create_revision: int, deadline: Deadline,
                        check: Callable[[], None] | None = None) -> bool:
    """:func:`wait_deletes` for an AsyncClient."""
    while True:
        if check is not None:
            check()
        r = await client.range(prefix, prefix=True, sort_target="create",
                               sort_order="descend", limit=1,
                               max_create_revision=max_create_revision)
        if not r.kvs:
            return True
        got = await await_event(client, r.kvs[0].key, r.revision, deadline, is_delete,
                                check=check)
        if got is None:
            return False


# ---- one body for both clients --------------------------------------------------------------
#
# A recipe step that talks to the cluster can be written once, as a generator that yields
# each call to make (a function of no arguments) and is sent back its result, or has its
# exception thrown in at the ``yield``. run_steps() makes the calls with a blocking
# Client; arun_steps() awaits what they return with an AsyncClient (a coroutine, an
# AsyncLease or AsyncWatch to start). The logic lives in the generator; the sync and
# async classes are shells that pick a runner. Such a generator is always run to its
# end: cleanup in ``except``/``finally`` may yield calls too.

def _resume(steps, result, error):
    """Hand the last call's result (or error) to the generator: ``(next call, None)``,
    or ``(None, StopIteration)`` once it returned."""
    try:
        return (steps.send(result) if error is None else steps.throw(error)), None
    except StopIteration as stop:
        return None, stop


def run_steps(steps):
    """Run a step generator with a blocking client; what it returns."""
    op, stop = _resume(steps, None, None)
    while stop is None:
        try:
            result, error = op(), None
        except BaseException as e:   # noqa: BLE001 - handed to the generator
            result, error = None, e
        op, stop = _resume(steps, result, error)
    return stop.value


async def arun_steps(steps):
    """Run a step generator with an AsyncClient (awaiting what the calls return)."""
    op, stop = _resume(steps, None, None)
    while stop is None:
        try:
            result, error = op(), None
            if inspect.isawaitable(result):
                result = await result
        except BaseException as e:   # noqa: BLE001 - handed to the generator
            result, error = None, e
        op, stop = _resume(steps, result, error)
    return stop.value


def remove_key_steps(client, key: bytes | None, revision: int | None, lease):
    """Steps that remove a contender's key (a Mutex's, an Election candidate's): revoke
    ``lease`` if it is our own (the key goes with it), else delete the key if it is still
    the one created at ``revision`` (on a lease of the caller's, which lives on)."""
    if lease is not None:
        yield lease.revoke
    elif key is not None:
        yield client.txn().if_(create_revision(key) == revision).then(delete_op(key)).commit


async def cancel_task(task) -> None:
    """Cancel a task of ours (unless it is the current one) and wait for it to end."""
    if task is None or task.done() or task is asyncio.current_task():
        return
    task.cancel()
    with contextlib.suppress(asyncio.CancelledError, Exception):
        await task


class SyncSteps:
    """Mixin of a recipe's blocking shell: how its steps run and wait for an event (or
    for the keys before theirs to go)."""
    _run = staticmethod(run_steps)
    _wait_event = staticmethod(wait_event)
    _wait_deletes = staticmethod(wait_deletes)


class AsyncSteps:
    """Mixin of a recipe's asyncio shell (``await self._run(steps)``)."""
    _run = staticmethod(arun_steps)
    _wait_event = staticmethod(await_event)
    _wait_deletes = staticmethod(await_deletes)


class AwaitableStart:
    """An asyncio object started by ``await obj`` or ``async with obj`` (which
    closes it on exit): its ``start()`` (returns self, runs once) and ``close()``."""

    def __await__(self):
        return self.start().__await__()

    async def __aenter__(self):
        return await self.start()

    async def __aexit__(self, *exc) -> None:
        await self.close()
