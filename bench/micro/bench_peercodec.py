"""Peer frame codec throughput: one MsgApp carrying 1,000 entries of 100
bytes, and a batch of 1,000 heartbeats, encoded (frame_messages) and decoded
(decode_messages), Cython against the pure-Python reference.

    python bench/micro/bench_peercodec.py --fast

pyperf prints the time per batch; a summary (µs per batch, per-item cost and
speed-up over the reference) follows at the end.
"""
import os
import random
import sys

sys.path.insert(0, os.path.dirname(os.path.dirname(os.path.dirname(os.path.abspath(__file__)))))

import pyperf

from fastkv.raft import _peercodec, peercodec_ref
from fastkv.raft.messages import MSG_APP, MSG_HEARTBEAT, Message
from fastkv.storage.wal import Entry

CODECS = {"cython": _peercodec, "reference": peercodec_ref}


def batches():
    rng = random.Random(1)
    ents = [Entry(7, 1000 + i, 0, rng.randbytes(100)) for i in range(1000)]
    app = [Message(MSG_APP, to=2, frm=1, term=7, log_term=7, index=999, entries=ents,
                   commit=990)]
    hbs = [Message(MSG_HEARTBEAT, to=2, frm=1, term=7, commit=990 + i) for i in range(1000)]
    return {"1 MsgApp x 1000 entries": app, "1000 heartbeats": hbs}


def main():
    runner = pyperf.Runner()
    results = []
    for label, msgs in batches().items():
        body = _peercodec.encode_messages(msgs)
        assert body == peercodec_ref.encode_messages(msgs)
        for op in ("encode", "decode"):
            for name, codec in CODECS.items():
                if op == "encode":
                    bench = runner.bench_func(f"peercodec {op} {label} {name}",
                                              codec.frame_messages, msgs)
                else:
                    bench = runner.bench_func(f"peercodec {op} {label} {name}",
                                              codec.decode_messages, body)
                if bench is not None and not runner.args.worker:
                    results.append((label, op, name, bench.mean()))
    if results:
        print("\nper batch (µs), per item (ns), speed-up of cython over the reference:")
        ref_times = {(lb, op): t for lb, op, name, t in results if name == "reference"}
        for lb, op, name, t in results:
            print(f"  {lb:26s} {op:7s} {name:10s} {t * 1e6:9.1f} µs {t * 1e6:7.0f} ns/item"
                  f"  x{ref_times[(lb, op)] / t:5.1f}")


if __name__ == "__main__":
    main()
