"""The durability workload: puts of fresh keys under ``d/``; after every fault healed and
every member applied the same index, each member must hold every acknowledged key (read
serializably, so each member answers from its own state), and no key nobody wrote."""
from __future__ import annotations

import time

import requests

from httpclient import NoAnswer, b64, post, unb64

from . import Workload


def compare_durable(acked, indeterminate, have_by_member) -> tuple[list[str], list[str]]:
    """The durability check: (lost, anomalies). Lost: "m<i>:<key>" for each acknowledged key
    member i does not hold; anomalies: a member holds a key nobody tried to write."""
    acked, maybe = set(acked), set(indeterminate)
    lost, anomalies = [], []
    for i, have in enumerate(have_by_member):
        lost += [f"m{i}:{k}" for k in sorted(acked - have)]
        unexpected = have - acked - maybe
        if unexpected:
            anomalies.append(f"m{i} holds keys never written: {sorted(unexpected)[:5]}")
    return lost, anomalies


class DurabilityWorkload(Workload):
    name = "durability"

    def __init__(self, nem, first_client: int = 0, clients: int = 1):
        super().__init__(nem, first_client)
        self.n_clients = clients
        self.acked_keys: list[str] = []
        self.info_keys: list[str] = []

    def threads(self):
        return [self.thread(self._client, self.first_client + c, name=str(c))
                for c in range(self.n_clients)]

    def _client(self, cid: int) -> None:
        nem = self.nem
        session = requests.Session()
        idx = cid % nem.n
        seq = 0
        while not nem.stop_clients.is_set():
            seq += 1
            key = f"d/{cid}/{seq}"
            self.attempt()
            try:
                post(session, nem.url(idx), "/v3/kv/put", {"key": b64(key), "value": b64("x")})
            except NoAnswer:
                with self.lock:
                    self.info_keys.append(key)
                self.indeterminate()
                idx = (idx + 1) % nem.n
                time.sleep(0.05)
                continue
            with self.lock:
                self.acked_keys.append(key)
            self.acked()
            time.sleep(0.01)

    def after_heal(self, rep) -> None:
        have = []
        for i in range(self.nem.n):
            body = {"key": b64("d/"), "range_end": b64("d0"), "keys_only": True,
                    "serializable": True}
            resp = requests.post(self.nem.url(i) + "/v3/kv/range", json=body, timeout=30).json()
            have.append({unb64(kv["key"]) for kv in resp.get("kvs") or []})
        rep.durable_acked += len(set(self.acked_keys))
        lost, anomalies = compare_durable(self.acked_keys, self.info_keys, have)
        rep.lost += lost
        rep.anomalies += anomalies
