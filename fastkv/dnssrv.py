"""DNS SRV lookups for ``--discovery-srv``, as etcd's pkg/srv does them.

Clients (etcdctl v2, ``fastkv gateway``): ``_etcd-client-ssl._tcp.<domain>`` gives
https endpoints and ``_etcd-client._tcp.<domain>`` http ones (``-<name>`` appended to
the service with ``--discovery-srv-name``); it is an error only when both lookups
fail. Members bootstrapping use ``_etcd-server(-ssl)._tcp`` (fastkv/discovery.py).

The standard library has no SRV lookup, so this is a minimal DNS client: one UDP
query to the first nameserver of /etc/resolv.conf, errors worded as Go's resolver
words them. ``FASTKV_NAMESERVER=host[:port]`` names another server (fastkv's own:
tests run a DNS server on a loopback port; an operator may point at a cluster DNS).
Target host names are resolved by the system resolver, as Go resolves them.
"""
from __future__ import annotations

import random
import socket
import struct

import os


class SRVLookupError(Exception):
    pass


def nameserver() -> tuple[str, int]:
    """(host, port): FASTKV_NAMESERVER, else the first nameserver of /etc/resolv.conf."""
    given = os.environ.get("FASTKV_NAMESERVER", "").strip()
    if given:
        if given.startswith("["):
            host, _, rest = given[1:].partition("]")
            return host, int(rest[1:]) if rest.startswith(":") else 53
        if given.count(":") == 1:
            host, port = given.split(":")
            return host, int(port)
        return given, 53
    try:
        with open("/etc/resolv.conf") as f:
            for line in f:
                parts = line.split()
                if len(parts) >= 2 and parts[0] == "nameserver":
                    return parts[1], 53
    except OSError:
        pass
    return "127.0.0.1", 53


def nameserver_text() -> str:
    """The nameserver as Go's resolver names it in its errors (host:port)."""
    host, port = nameserver()
    return f"{_join_host_port(host, port)}"


def _encode_name(name: str) -> bytes:
    out = b""
    for label in name.rstrip(".").split("."):
        raw = label.encode("idna") if label else b""
        out += bytes([len(raw)]) + raw
    return out + b"\x00"


def _read_name(msg: bytes, pos: int) -> tuple[str, int]:
    labels = []
    jumped = False
    end = pos
    for _ in range(128):
        length = msg[pos]
        if length & 0xC0 == 0xC0:
            if not jumped:
                end = pos + 2
            pos = ((length & 0x3F) << 8) | msg[pos + 1]
            jumped = True
            continue
        pos += 1
        if length == 0:
            break
        labels.append(msg[pos:pos + length].decode("ascii", "replace"))
        pos += length
    if not jumped:
        end = pos
    return ".".join(labels) + ".", end


def lookup_srv(service: str, proto: str, domain: str, timeout: float = 5.0) -> list[tuple[int, int, int, str]]:
    """net.LookupSRV: (priority, weight, port, target) sorted by priority."""
    name = f"_{service}._{proto}.{domain}"
    server, port = nameserver()
    where = _join_host_port(server, port)
    qid = random.randrange(1 << 16)
    query = struct.pack(">HHHHHH", qid, 0x0100, 1, 0, 0, 0) + _encode_name(name) + struct.pack(">HH", 33, 1)
    with socket.socket(socket.AF_INET6 if ":" in server else socket.AF_INET, socket.SOCK_DGRAM) as s:
        s.settimeout(timeout)
        try:
            s.sendto(query, (server, port))
            while True:
                msg, _ = s.recvfrom(65535)
                if len(msg) >= 12 and struct.unpack(">H", msg[:2])[0] == qid:
                    break
        except socket.timeout:
            raise SRVLookupError(f"lookup {name} on {where}: i/o timeout") from None
        except OSError as e:
            raise SRVLookupError(f"lookup {name} on {where}: {e.strerror or e}") from None
    _, flags, qd, an, _, _ = struct.unpack(">HHHHHH", msg[:12])
    rcode = flags & 0xF
    if rcode == 3:
        raise SRVLookupError(f"lookup {name} on {where}: no such host")
    if rcode != 0:
        raise SRVLookupError(f"lookup {name} on {where}: server misbehaving")
    pos = 12
    for _ in range(qd):
        _, pos = _read_name(msg, pos)
        pos += 4
    records = []
    for _ in range(an):
        _, pos = _read_name(msg, pos)
        rtype, _, _, rdlen = struct.unpack(">HHIH", msg[pos:pos + 10])
        pos += 10
        if rtype == 33:
            prio, weight, port = struct.unpack(">HHH", msg[pos:pos + 6])
            target, _ = _read_name(msg, pos + 6)
            records.append((prio, weight, port, target))
        pos += rdlen
    if not records:
        raise SRVLookupError(f"lookup {name} on {where}: no such host")
    records.sort(key=lambda r: (r[0], -r[1]))
    return records


def _service(service: str, name: str, scheme: str) -> str:
    if scheme == "https":
        service += "-ssl"
    return f"{service}-{name}" if name else service


def _join_host_port(host: str, port: int) -> str:
    return f"[{host}]:{port}" if ":" in host else f"{host}:{port}"


def discover(domain: str, service_name: str) -> list[str]:
    """client.NewSRVDiscover().Discover(domain, serviceName): the client URLs (https
    first). Raises SRVLookupError when both lookups fail."""
    endpoints: list[str] = []
    errors = []
    for scheme in ("https", "http"):
        try:
            for _, _, port, target in lookup_srv(_service("etcd-client", service_name, scheme), "tcp", domain):
                endpoints.append(f"{scheme}://{_join_host_port(target, port)}")
            errors.append(None)
        except SRVLookupError as e:
            errors.append(str(e))
    if errors[0] is not None and errors[1] is not None:
        raise SRVLookupError(f"dns lookup errors: {errors[0]} and {errors[1]}")
    return endpoints


def client_endpoints(domain: str, service_name: str, insecure: bool, ignored) -> list[str]:
    """etcdctl's endpoints from --discovery-srv: discover()'s, less the http ones unless
    `insecure` (--insecure-discovery); ignored(endpoint) is told of each one dropped."""
    eps = discover(domain, service_name)
    if insecure:
        return eps
    kept = []
    for ep in eps:
        if ep.startswith("http://"):
            ignored(ep)
            continue
        kept.append(ep)
    return kept
