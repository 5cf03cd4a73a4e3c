"""Pending ReadIndex requests on the leader (etcd raft's readOnly, ReadOnlySafe).

A read is served at the commit index the leader had when the request arrived,
once a heartbeat round that started after it was acknowledged by a quorum
(proving nobody else was leader meanwhile). Requests are kept in arrival order;
an acknowledged round for one context releases it and every earlier request,
so one heartbeat round carrying the newest context serves all reads queued
before it.
"""
from __future__ import annotations

from collections import OrderedDict

from fastkv.raft.messages import Message


class ReadIndexStatus:
    __slots__ = ("req", "index", "acks")

    def __init__(self, req: Message, index: int):
        self.req = req          # MSG_READ_INDEX; entries[0].data is the context
        self.index = index      # the commit index when it arrived
        self.acks: dict[int, bool] = {}


class ReadOnly:
    __slots__ = ("pending",)

    def __init__(self):
        self.pending: OrderedDict[bytes, ReadIndexStatus] = OrderedDict()

    def __len__(self) -> int:
        return len(self.pending)

    def add_request(self, index: int, req: Message) -> bool:
        """Queue a read; False if a read with the same context is already pending."""
        ctx = req.entries[0].data
        if ctx in self.pending:
            return False
        self.pending[ctx] = ReadIndexStatus(req, index)
        return True

    def recv_ack(self, member: int, ctx: bytes) -> dict[int, bool] | None:
        rs = self.pending.get(ctx)
        if rs is None:
            return None
        rs.acks[member] = True
        return rs.acks

    def advance(self, ctx: bytes) -> list[ReadIndexStatus]:
        """Release the request with this context and every request queued before it."""
        if ctx not in self.pending:
            return []
        out = []
        pending = self.pending
        while pending:
            k, rs = pending.popitem(last=False)
            out.append(rs)
            if k == ctx:
                break
        return out

    def last_pending_ctx(self) -> bytes | None:
        if not self.pending:
            return None
        return next(reversed(self.pending))
