"""DNS SRV discovery of client endpoints (``--discovery-srv``), as etcd's pkg/srv does it.

``_etcd-client-ssl._tcp.<domain>`` gives https endpoints and
``_etcd-client._tcp.<domain>`` http ones (``-<name>`` appended to the service
with ETCDCTL_DISCOVERY_SRV_NAME); it is an error only when both lookups fail.
The standard library has no SRV lookup, so this is a minimal DNS client: one
UDP query to the first nameserver of /etc/resolv.conf, errors worded as Go's
resolver words them.
"""
from __future__ import annotations

import random
import socket
import struct

from fastkv.cli.v2.client import ClientError, nameserver


class SRVLookupError(Exception):
    pass


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
    server = nameserver()
    qid = random.randrange(1 << 16)
    query = struct.pack(">HHHHHH", qid, 0x0100, 1, 0, 0, 0) + _encode_name(name) + struct.pack(">HH", 33, 1)
    with socket.socket(socket.AF_INET6 if ":" in server else socket.AF_INET, socket.SOCK_DGRAM) as s:
        s.settimeout(timeout)
        try:
            s.sendto(query, (server, 53))
            while True:
                msg, _ = s.recvfrom(65535)
                if len(msg) >= 12 and struct.unpack(">H", msg[:2])[0] == qid:
                    break
        except socket.timeout:
            raise SRVLookupError(f"lookup {name} on {server}:53: i/o timeout") from None
        except OSError as e:
            raise SRVLookupError(f"lookup {name} on {server}:53: {e.strerror or e}") from None
    _, flags, qd, an, _, _ = struct.unpack(">HHHHHH", msg[:12])
    rcode = flags & 0xF
    if rcode == 3:
        raise SRVLookupError(f"lookup {name} on {server}:53: no such host")
    if rcode != 0:
        raise SRVLookupError(f"lookup {name} on {server}:53: server misbehaving")
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
        raise SRVLookupError(f"lookup {name} on {server}:53: no such host")
    records.sort(key=lambda r: (r[0], -r[1]))
    return records


def _service(service: str, name: str, scheme: str) -> str:
    if scheme == "https":
        service += "-ssl"
    return f"{service}-{name}" if name else service


def _join_host_port(host: str, port: int) -> str:
    return f"[{host}]:{port}" if ":" in host else f"{host}:{port}"


def discover(domain: str, service_name: str) -> list[str]:
    """client.NewSRVDiscover().Discover(domain, serviceName)."""
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
        raise ClientError(f"dns lookup errors: {errors[0]} and {errors[1]}")
    return endpoints
