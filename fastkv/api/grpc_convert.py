"""Protobuf messages <-> the dicts the server speaks (docs/internals.md).

The dicts are named like etcd's protobuf fields, so the translation is driven by
the message descriptors: a field set in a message becomes a key of the dict
(proto3: a field at its default is "not there", exactly the dicts' convention),
and a dict becomes a message field by field. Builders are made once per message
type and cached. The hot messages (Range, Put) have hand-written paths that skip
the generic walk.
"""
from __future__ import annotations

from google.protobuf.descriptor import FieldDescriptor

from fastkv.mvcc.watch import SharedEvents
from fastkv.proto.etcdserverpb import rpc_pb2 as pb
from fastkv.proto.mvccpb import kv_pb2 as mvccpb

_MESSAGE = FieldDescriptor.TYPE_MESSAGE


def _is_repeated(fd) -> bool:
    # protobuf >= 5 has is_repeated; older ones only label
    rep = getattr(fd, "is_repeated", None)
    if rep is not None:
        return bool(rep)
    return fd.label == FieldDescriptor.LABEL_REPEATED


# ---------------------------------------------------------------- message -> dict

def to_dict(msg) -> dict:
    """Every set field of `msg`, nested messages as dicts, repeated as lists."""
    out = {}
    for fd, value in msg.ListFields():
        if fd.type == _MESSAGE:
            if _is_repeated(fd):
                out[fd.name] = [to_dict(v) for v in value]
            else:
                out[fd.name] = to_dict(value)
        elif _is_repeated(fd):
            out[fd.name] = list(value)
        else:
            out[fd.name] = value
    return out


def _flat_reader(*names):
    """A reader for a flat message (scalars only): the key, then each field that is set.
    For the hottest requests (Range, Put): no descriptor walk."""
    def read(msg) -> dict:
        d = {"key": msg.key}
        for name in names:
            v = getattr(msg, name)
            if v:
                d[name] = v
        return d
    return read


range_request = _flat_reader(
    "range_end", "limit", "revision", "sort_order", "sort_target", "serializable",
    "keys_only", "count_only", "min_mod_revision", "max_mod_revision",
    "min_create_revision", "max_create_revision")
put_request = _flat_reader("value", "lease", "prev_kv", "ignore_value", "ignore_lease")


# ---------------------------------------------------------------- dict -> message

_builders: dict = {}


def _builder(desc):
    """fields: name -> (sub-builder or None, repeated)."""
    b = _builders.get(desc.full_name)
    if b is None:
        fields = {}
        _builders[desc.full_name] = fields   # before recursing: messages may nest
        for fd in desc.fields:
            fields[fd.name] = (fd.message_type if fd.type == _MESSAGE else None,
                               _is_repeated(fd))
        b = fields
    return b


def fill(msg, d: dict):
    """Set `msg`'s fields from `d` (unknown keys are a bug: they raise)."""
    fields = _builder(msg.DESCRIPTOR)
    for name, value in d.items():
        try:
            sub, repeated = fields[name]
        except KeyError:
            raise KeyError(f"{msg.DESCRIPTOR.full_name} has no field {name!r}") from None
        if sub is None:
            if repeated:
                getattr(msg, name).extend(value)
            else:
                setattr(msg, name, value)
        elif repeated:
            rep = getattr(msg, name)
            for item in value:
                fill(rep.add(), item)
        elif value is not None:
            fill(getattr(msg, name), value)
    return msg


def from_dict(cls, d: dict):
    return fill(cls(), d)


def header(h: dict):
    return pb.ResponseHeader(cluster_id=h["cluster_id"], member_id=h["member_id"],
                             revision=h["revision"], raft_term=h["raft_term"])


def _kv(kv: dict):
    return mvccpb.KeyValue(**kv)


def range_response(d: dict):
    """RangeResponse, the hottest answer."""
    resp = pb.RangeResponse(header=header(d["header"]), kvs=[_kv(kv) for kv in d.get("kvs", ())],
                            more=d.get("more", False), count=d.get("count", 0))
    return resp


def put_response(d: dict):
    prev = d.get("prev_kv")
    if prev is None:
        return pb.PutResponse(header=header(d["header"]))
    return pb.PutResponse(header=header(d["header"]), prev_kv=_kv(prev))


# ---------------------------------------------------------------- WatchResponse bytes
#
# A watch fan-out sends the same events to many watchers: their WatchResponses differ
# only in watch_id. Protobuf's encoding of a message is the concatenation of its
# fields' encodings, so a response is built from parts encoded once and shared: the
# header (one dict per revision, fastkv/mvcc/watch.py's notify), the watch_id, and
# the events (a SharedEvents list keeps its encoding in `.wire`). The fields go in
# field-number order, as SerializeToString writes them: the bytes are the same.

_WATCH_FAST_KEYS = frozenset(("header", "watch_id", "events"))
_EVENTS_TAG = b"\x5a"      # field 11, length-delimited
_HEADER_TAG = b"\x0a"      # field 1, length-delimited
_WATCH_ID_TAG = b"\x10"    # field 2, varint


def _varint(n: int) -> bytes:
    n &= (1 << 64) - 1      # int64: a negative is its two's complement, 10 bytes
    out = bytearray()
    while n >= 0x80:
        out.append((n & 0x7F) | 0x80)
        n >>= 7
    out.append(n)
    return bytes(out)


def _length_delimited(tag: bytes, payload: bytes) -> bytes:
    return tag + _varint(len(payload)) + payload


_header_fields: dict[int, tuple] = {}   # id(header dict) -> (the dict, its field's bytes)


def header_field(h: dict) -> bytes:
    """The header field. The hub shares one header dict per revision among the streams
    it notifies: the last few are kept, by identity (the dict is held here, so its
    id is not reused while it is)."""
    hit = _header_fields.get(id(h))
    if hit is not None and hit[0] is h:
        return hit[1]
    wire = _length_delimited(_HEADER_TAG, fill(pb.ResponseHeader(), h).SerializeToString()) \
        if h else b""      # an empty dict sets nothing: from_dict leaves header unset
    if len(_header_fields) >= 16:
        _header_fields.clear()
    _header_fields[id(h)] = (h, wire)
    return wire


watch_id_fields: dict[int, bytes] = {}   # watch id -> its field (b"" for 0)


def watch_id_field(wid: int) -> bytes:
    wire = watch_id_fields.get(wid)
    if wire is None:
        wire = _WATCH_ID_TAG + _varint(wid) if wid else b""   # proto3: 0 is not sent
        if len(watch_id_fields) >= 65536:
            watch_id_fields.clear()
        watch_id_fields[wid] = wire
    return wire


def events_field(evs: list) -> bytes:
    """The repeated events field of `evs`, cached on a shared list (SharedEvents)."""
    wire = getattr(evs, "wire", None)
    if wire is None:
        wire = b"".join([_length_delimited(_EVENTS_TAG, fill(mvccpb.Event(), ev)
                                           .SerializeToString()) for ev in evs])
        if isinstance(evs, SharedEvents):
            evs.wire = wire
    return wire


def watch_response(resp: dict) -> bytes:
    """A WatchResponse dict's protobuf bytes, equal to
    ``from_dict(pb.WatchResponse, resp).SerializeToString()``: an event response
    (header, watch_id, events) is put together from shared parts, anything else
    (created, canceled, progress, fragment) takes the generic path."""
    if len(resp) == 3 and resp.keys() == _WATCH_FAST_KEYS:
        return (header_field(resp["header"]) + watch_id_field(resp["watch_id"])
                + events_field(resp["events"]))
    return fill(pb.WatchResponse(), resp).SerializeToString()
