"""Snapshot files: atomic save, newest wins, corruption is refused."""
import os

import pytest

from fastkv.errors import StorageCorruption
from fastkv.storage import snapshot
from fastkv.storage.snapshot import Snapshotter


def test_save_and_load_newest(tmp_path):
    s = Snapshotter(str(tmp_path))
    assert s.load_newest() is None
    s.save(1, 10, {"a": 1})
    s.save(2, 20, {"a": 2, "kv": [(b"k", b"v")]}, [b"blob1", b"", b"blob3" * 1000])
    term, index, state, blobs = s.load_newest()
    assert (term, index, state) == (2, 20, {"a": 2, "kv": [(b"k", b"v")]})
    assert blobs == [b"blob1", b"", b"blob3" * 1000]


def test_keeps_a_bounded_number(tmp_path):
    s = Snapshotter(str(tmp_path))
    for i in range(1, 10):
        s.save(1, i, {"i": i})
    assert len(s.files()) == snapshot.KEEP
    assert s.load_newest()[2] == {"i": 9}


def test_encode_decode_round_trip():
    data = snapshot.encode({"k": [1, 2]}, [b"a", b"bc"])
    assert snapshot.decode(data) == ({"k": [1, 2]}, [b"a", b"bc"])


@pytest.mark.parametrize("damage", ["flip", "truncate", "magic", "frame"])
def test_corrupt_newest_is_refused(tmp_path, damage):
    s = Snapshotter(str(tmp_path))
    s.save(1, 5, {"x": b"y" * 100}, [b"z" * 50])
    path = s.files()[-1][2]
    data = bytearray(open(path, "rb").read())
    if damage == "flip":
        data[-10] ^= 0x04
    elif damage == "truncate":
        data = data[:-7]
    elif damage == "magic":
        data[0:8] = b"NOTASNAP"
    else:  # a frame length that runs past the end, with a CRC that matches
        import struct
        from fastkv._crc32c import crc32c
        data[snapshot.HEADER.size:snapshot.HEADER.size + 8] = struct.pack("<Q", 1 << 40)
        body = bytes(data[snapshot.HEADER.size:])
        data[0:snapshot.HEADER.size] = snapshot.HEADER.pack(snapshot.MAGIC, crc32c(body), len(body))
    open(path, "wb").write(bytes(data))
    with pytest.raises(StorageCorruption) as exc:
        s.load_newest()
    assert path in str(exc.value)


def test_leftover_temp_file_is_ignored_and_removed(tmp_path):
    s = Snapshotter(str(tmp_path))
    s.save(1, 5, {"ok": True})
    tmp = os.path.join(str(tmp_path), snapshot.snapshot_name(1, 9) + ".tmp")
    open(tmp, "wb").write(b"half a snapshot")
    assert s.load_newest()[2] == {"ok": True}
    assert not os.path.exists(tmp)
