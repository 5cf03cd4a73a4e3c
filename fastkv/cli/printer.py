"""Output formats, byte for byte as etcdctl 3.4 prints them.

``simple`` is etcdctl's printer_simple.go; ``json`` is ``json.Marshal`` of the
clientv3 response structs (printer_json.go): int64 as JSON numbers, bytes as
base64, fields in struct order, zero values left out where the struct tag says
``omitempty``. Some clientv3 structs embed ``*pb.ResponseHeader``, so their
header fields are flattened into the top level (lease grant, keep-alive,
time-to-live, leases); the watch response has a capitalised ``Header``.

Responses come in as the gateway's JSON objects (ints already converted,
bytes still base64); :func:`b64` decodes.
"""
from __future__ import annotations

import base64
import json
from typing import BinaryIO


def b64(s: str | None) -> bytes:
    return base64.b64decode(s) if s else b""


def _dump(obj) -> bytes:
    text = json.dumps(obj, separators=(",", ":"), ensure_ascii=False)
    # encoding/json's HTML-safe escaping
    text = text.replace("<", "\\u003c").replace(">", "\\u003e").replace("&", "\\u0026")
    text = text.replace("\u2028", "\\u2028").replace("\u2029", "\\u2029")
    return text.encode() + b"\n"


def _omit(pairs) -> dict:
    return {k: v for k, v in pairs if v}


def header_fields(h: dict | None) -> dict:
    h = h or {}
    return _omit((f, h.get(f, 0)) for f in ("cluster_id", "member_id", "revision", "raft_term"))


def kv_json(kv: dict) -> dict:
    return _omit((f, kv.get(f)) for f in
                 ("key", "create_revision", "mod_revision", "version", "value", "lease"))


def event_json(ev: dict) -> dict:
    out = {}
    if ev.get("type") == "DELETE" or ev.get("type") == 1:
        out["type"] = 1
    if ev.get("kv"):
        out["kv"] = kv_json(ev["kv"])
    if ev.get("prev_kv"):
        out["prev_kv"] = kv_json(ev["prev_kv"])
    return out


def hex_escape(b: bytes) -> bytes:
    return "".join(f"\\x{c:02x}" for c in b).encode()


class Printer:
    """Interface of both formats; one method per etcdctl display call."""

    def __init__(self, out: BinaryIO, is_hex: bool = False):
        self.out = out
        self.is_hex = is_hex
        self.value_only = False


class SimplePrinter(Printer):
    def _line(self, b: bytes) -> None:
        self.out.write(b + b"\n")

    def _kv(self, kv: dict) -> None:
        k, v = b64(kv.get("key")), b64(kv.get("value"))
        if self.is_hex:
            k, v = hex_escape(k), hex_escape(v)
        if not self.value_only:
            self._line(k)
        self._line(v)

    def get(self, resp: dict, count_only: bool = False) -> None:
        if count_only:
            self._line(str(resp.get("count", 0)).encode())
            return
        for kv in resp.get("kvs", []):
            self._kv(kv)

    def put(self, resp: dict) -> None:
        self._line(b"OK")
        if resp.get("prev_kv"):
            self._kv(resp["prev_kv"])

    def delete(self, resp: dict) -> None:
        self._line(str(resp.get("deleted", 0)).encode())
        for kv in resp.get("prev_kvs", []):
            self._kv(kv)

    def watch(self, resp: dict) -> None:
        for ev in resp.get("events", []):
            deleted = ev.get("type") in ("DELETE", 1)
            self._line(b"DELETE" if deleted else b"PUT")
            if ev.get("prev_kv"):
                self._kv(ev["prev_kv"])
            self._kv(ev.get("kv", {}))

    def grant(self, resp: dict) -> None:
        self._line(b"lease %016x granted with TTL(%ds)" % (resp.get("ID", 0), resp.get("TTL", 0)))

    def revoke(self, lease_id: int, resp: dict) -> None:
        self._line(b"lease %016x revoked" % lease_id)

    def keepalive(self, resp: dict) -> None:
        self._line(b"lease %016x keepalived with TTL(%d)" % (resp.get("ID", 0), resp.get("TTL", 0)))

    def keepalive_ended(self, lease_id: int) -> None:
        self._line(b"lease %016x expired or revoked." % lease_id)

    def timetolive(self, resp: dict, with_keys: bool) -> None:
        lid, ttl, granted = resp.get("ID", 0), resp.get("TTL", 0), resp.get("grantedTTL", 0)
        if granted == 0 and ttl == -1:
            self._line(b"lease %016x already expired" % lid)
            return
        txt = b"lease %016x granted with TTL(%ds), remaining(%ds)" % (lid, granted, ttl)
        if with_keys:
            txt += b", attached keys([" + b" ".join(b64(k) for k in resp.get("keys", [])) + b"])"
        self._line(txt)

    def leases(self, resp: dict) -> None:
        items = resp.get("leases", [])
        self._line(b"found %d leases" % len(items))
        for item in items:
            self._line(b"%016x" % item.get("ID", 0))


class JSONPrinter(Printer):
    def _print(self, obj) -> None:
        self.out.write(_dump(obj))

    def _with_header(self, resp: dict) -> dict:
        h = header_fields(resp.get("header"))
        return {"header": h} if h or "header" in resp else {}

    def get(self, resp: dict, count_only: bool = False) -> None:
        out = self._with_header(resp)
        if resp.get("kvs"):
            out["kvs"] = [kv_json(kv) for kv in resp["kvs"]]
        if resp.get("more"):
            out["more"] = True
        if resp.get("count"):
            out["count"] = resp["count"]
        self._print(out)

    def put(self, resp: dict) -> None:
        out = self._with_header(resp)
        if resp.get("prev_kv"):
            out["prev_kv"] = kv_json(resp["prev_kv"])
        self._print(out)

    def delete(self, resp: dict) -> None:
        out = self._with_header(resp)
        if resp.get("deleted"):
            out["deleted"] = resp["deleted"]
        if resp.get("prev_kvs"):
            out["prev_kvs"] = [kv_json(kv) for kv in resp["prev_kvs"]]
        self._print(out)

    def watch(self, resp: dict) -> None:
        self._print({
            "Header": header_fields(resp.get("header")),
            "Events": [event_json(ev) for ev in resp.get("events", [])],
            "CompactRevision": resp.get("compact_revision", 0),
            "Canceled": bool(resp.get("canceled")),
            "Created": bool(resp.get("created")),
        })

    def grant(self, resp: dict) -> None:
        out = header_fields(resp.get("header"))
        out.update({"ID": resp.get("ID", 0), "TTL": resp.get("TTL", 0), "Error": resp.get("error", "")})
        self._print(out)

    def revoke(self, lease_id: int, resp: dict) -> None:
        self._print(self._with_header(resp))

    def keepalive(self, resp: dict) -> None:
        out = header_fields(resp.get("header"))
        out.update({"ID": resp.get("ID", 0), "TTL": resp.get("TTL", 0)})
        self._print(out)

    def keepalive_ended(self, lease_id: int) -> None:
        pass  # etcdctl prints the closing line only in the simple format

    def timetolive(self, resp: dict, with_keys: bool) -> None:
        out = header_fields(resp.get("header"))
        out.update({"id": resp.get("ID", 0), "ttl": resp.get("TTL", 0),
                    "granted-ttl": resp.get("grantedTTL", 0),
                    "keys": resp["keys"] if resp.get("keys") else None})
        self._print(out)

    def leases(self, resp: dict) -> None:
        out = header_fields(resp.get("header"))
        out["leases"] = [{"id": item.get("ID", 0)} for item in resp.get("leases", [])]
        self._print(out)


FORMATS = {"simple": SimplePrinter, "json": JSONPrinter}
# formats etcdctl knows but fastkvctl does not print (yet): etcdctl's ExitBadFeature message
KNOWN_FORMATS = ("simple", "json", "fields", "protobuf", "table")


def new_printer(fmt: str, out: BinaryIO, is_hex: bool) -> Printer:
    return FORMATS[fmt](out, is_hex)
