"""Snapshot files: atomic save, newest wins, corruption is refused."""
import os

import pytest

from fastkv.errors import StorageCorruption
from fastkv.storage import snapshot
from fastkv.storage.snapshot import Snapshotter


def test_save_and_load_newest(tmp_path):
    s = Snapshotter(str(tmp_path))
    assert s.load_newest() is None
    s.save(1, 10, snapshot.encode({"a": 1}))
    s.save(2, 20, snapshot.encode({"a": 2, "kv": [(b"k", b"v")]}))
    term, index, state = s.load_newest()
    assert (term, index, state) == (2, 20, {"a": 2, "kv": [(b"k", b"v")]})


def test_keeps_a_bounded_number(tmp_path):
    s = Snapshotter(str(tmp_path))
    for i in range(1, 10):
        s.save(1, i, snapshot.encode({"i": i}))
    assert len(s.files()) == snapshot.KEEP
    assert s.load_newest()[2] == {"i": 9}


@pytest.mark.parametrize("damage", ["flip", "truncate", "magic"])
def test_corrupt_newest_is_refused(tmp_path, damage):
    s = Snapshotter(str(tmp_path))
    path = s.save(1, 5, snapshot.encode({"x": b"y" * 100}))
    data = bytearray(open(path, "rb").read())
    if damage == "flip":
        data[-10] ^= 0x04
    elif damage == "truncate":
        data = data[:-7]
    else:
        data[0:8] = b"NOTASNAP"
    open(path, "wb").write(bytes(data))
    with pytest.raises(StorageCorruption) as exc:
        s.load_newest()
    assert path in str(exc.value)


def test_leftover_temp_file_is_ignored_and_removed(tmp_path):
    s = Snapshotter(str(tmp_path))
    s.save(1, 5, snapshot.encode({"ok": True}))
    tmp = os.path.join(str(tmp_path), snapshot.snapshot_name(1, 9) + ".tmp")
    open(tmp, "wb").write(b"half a snapshot")
    assert s.load_newest()[2] == {"ok": True}
    assert not os.path.exists(tmp)
