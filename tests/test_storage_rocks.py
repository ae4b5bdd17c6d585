"""RocksStorage keeps the Storage contract of MemoryStorage, durably."""

from __future__ import annotations

import random

from dtm_ray.storage import MemoryStorage
from dtm_ray.storage_rocks import RocksStorage


def test_same_behaviour_as_memory_storage_on_random_batches(tmp_path):
    seed = random.randrange(1 << 30)
    rng = random.Random(seed)
    rocks, mem = RocksStorage(tmp_path / "db"), MemoryStorage()
    keys = [bytes([p]) + b"/" + str(i).encode() for p in b"abc" for i in range(20)]
    for _ in range(200):
        batch = [(rng.choice(keys), rng.choice([None, rng.randbytes(rng.randrange(0, 20))]))
                 for _ in range(rng.randrange(1, 6))]
        rocks.write(batch)
        mem.write(batch)
    for prefix in (b"", b"a", b"b/", b"c/1", b"zz"):
        assert rocks.items(prefix) == mem.items(prefix), f"seed={seed} prefix={prefix!r}"
    assert rocks.synced_writes == 200


def test_writes_survive_reopen_and_deletes_stay_deleted(tmp_path):
    s = RocksStorage(tmp_path / "db")
    s.write([(b"log/1", b"one"), (b"log/2", b"two"), (b"meta", b"m")])
    s.write([(b"log/1", None)])
    s.close()
    s = RocksStorage(tmp_path / "db")
    assert s.items(b"log/") == [(b"log/2", b"two")]
    assert s.get(b"meta") == b"m" and s.get(b"log/1") is None
    assert s.stats()["keys_deleted"] == 0  # counters are per process, not persisted


def test_counts_fsyncs_bytes_and_deletes(tmp_path):
    s = RocksStorage(tmp_path / "db")
    s.write([])  # nothing to do: no fsync
    s.write([(b"k", b"vv")])
    s.write([(b"x", b"y")], sync=False)
    s.write([(b"k", None)])
    assert s.stats() == {"synced_writes": 2, "bytes_written": 5, "keys_deleted": 1}
    assert len(s) == 1 and s.size_bytes() == 2


def test_destroy_removes_the_directory(tmp_path):
    s = RocksStorage(tmp_path / "db")
    s.write([(b"k", b"v")])
    s.close()
    RocksStorage.destroy(tmp_path / "db")
    assert RocksStorage(tmp_path / "db").items() == []


def test_a_key_rewritten_with_a_growing_value_keeps_the_directory_small(tmp_path):
    """A replica rewrites its stable checkpoint's state (which grows with the decided-transaction
    table) under one key every checkpoint: 300 rewrites write ~15 MB; the directory must stay a few
    MB (RocksDB's defaults kept every version until a 64 MB memtable flush: 14 MB here)."""
    import os

    storage = RocksStorage(tmp_path / "db")
    for i in range(300):
        storage.write([(b"stable", os.urandom(100 + 333 * i))])
    size = sum(os.path.getsize(os.path.join(d, f)) for d, _, files in os.walk(tmp_path / "db") for f in files)
    assert storage.get(b"stable") is not None and len(storage.get(b"stable")) == 100 + 333 * 299
    assert size < 8 << 20, f"{size / 2**20:.1f} MB on disk"
    storage.close()
