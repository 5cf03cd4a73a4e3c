"""A real DNS server on a loopback UDP port for discovery tests (dnslib).

``with dns_server() as zone:`` starts it; ``zone.srv(name, target, port)`` and
``zone.a(name, ip)`` add records; ``zone.address`` is "127.0.0.1:<port>", what
``FASTKV_NAMESERVER`` takes. Unknown names answer NXDOMAIN. Stopped on exit.
"""
from __future__ import annotations

import contextlib
import threading

from dnslib import QTYPE, RCODE, RR, SRV, A
from dnslib.server import BaseResolver, DNSLogger, DNSServer


class Zone(BaseResolver):
    def __init__(self):
        self.records: list[RR] = []
        self.queries: list[str] = []
        self.lock = threading.Lock()
        self.address = ""

    def srv(self, name: str, target: str, port: int, priority: int = 0, weight: int = 0,
            ttl: int = 0) -> None:
        if not name.endswith("."):
            name += "."
        with self.lock:
            self.records.append(RR(name, QTYPE.SRV, ttl=ttl, rdata=SRV(
                priority=priority, weight=weight, port=port, target=target)))

    def a(self, name: str, ip: str, ttl: int = 60) -> None:
        with self.lock:
            self.records.append(RR(name, QTYPE.A, ttl=ttl, rdata=A(ip)))

    def clear(self) -> None:
        with self.lock:
            self.records.clear()

    def resolve(self, request, handler):
        reply = request.reply()
        q = request.q
        with self.lock:
            self.queries.append(f"{q.qname} {QTYPE[q.qtype]}")
            for rr in self.records:
                if rr.rname == q.qname and (rr.rtype == q.qtype or q.qtype == QTYPE.ANY):
                    reply.add_answer(rr)
        if not reply.rr:
            reply.header.rcode = RCODE.NXDOMAIN
        return reply


@contextlib.contextmanager
def dns_server():
    zone = Zone()
    server = DNSServer(zone, port=0, address="127.0.0.1", logger=DNSLogger(logf=lambda *_: None))
    zone.address = f"127.0.0.1:{server.server.server_address[1]}"
    server.start_thread()
    try:
        yield zone
    finally:
        server.stop()
        server.server.server_close()
