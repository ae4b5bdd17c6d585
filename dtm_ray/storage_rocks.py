"""RocksDB behind the ``Storage`` protocol of ``dtm_ray.node``: the production disk of one actor.

Each actor owns one directory (``data_dir/<party>``) and one ``RocksStorage`` over it. The rules:

- ``write(batch)`` is ONE RocksDB ``WriteBatch`` applied atomically with ``sync=True`` (one
  fsync of the write-ahead log). A core's step either happened entirely or not at all after a
  crash, and nothing that depends on it leaves before ``write`` returns (``dtm_ray.node.drive``).
- Keys and values are raw bytes (``raw_mode``): the cores own their encodings.
- ``items(prefix)`` is a forward scan from the prefix, stopped at the first key outside it.
- Counters (``synced_writes``, ``bytes_written``, ``keys_deleted``) feed the per-transaction cost
  figures (fsyncs per commit) and the boundedness check (checkpoint GC deletes keys here too).
"""

from __future__ import annotations

import os
import shutil

from rocksdict import Options, Rdict, WriteBatch, WriteOptions

from dtm_ray.node import Write

WRITE_BUFFER_BYTES = 4 << 20
MAX_WAL_BYTES = 8 << 20


class RocksStorage:
    def __init__(self, path: str | os.PathLike) -> None:
        self.path = os.fspath(path)
        os.makedirs(self.path, exist_ok=True)
        options = Options(raw_mode=True)
        options.create_if_missing(True)
        # Bounded memory and disk: a replica rewrites a few keys over and over (its stable
        # checkpoint's state, its safety record), and RocksDB keeps every version in the memtable
        # and the WAL until a flush, which by default waits for 64 MB. Small memtables and a WAL
        # cap flush (and let compaction drop the old versions) after a few MB instead.
        options.set_write_buffer_size(WRITE_BUFFER_BYTES)
        options.set_max_write_buffer_number(2)
        options.set_max_total_wal_size(MAX_WAL_BYTES)
        self._db = Rdict(self.path, options)
        self._synced = WriteOptions()
        self._synced.sync = True
        self._unsynced = WriteOptions()
        self.synced_writes = 0
        self.bytes_written = 0
        self.keys_deleted = 0

    # -- the Storage protocol ------------------------------------------------------------------
    def get(self, key: bytes) -> bytes | None:
        return self._db.get(key)

    def items(self, prefix: bytes = b"") -> list[tuple[bytes, bytes]]:
        out = []
        for key, value in self._db.items(from_key=prefix):
            if not key.startswith(prefix):
                break
            out.append((key, value))
        return out

    def write(self, batch: list[Write], sync: bool = True) -> None:
        if not batch:
            return
        wb = WriteBatch(raw_mode=True)
        for key, value in batch:
            if value is None:
                wb.delete(key)
                self.keys_deleted += 1
            else:
                wb.put(key, value)
                self.bytes_written += len(key) + len(value)
        self._db.write(wb, self._synced if sync else self._unsynced)
        if sync:
            self.synced_writes += 1

    # -- lifecycle and figures -----------------------------------------------------------------
    def __len__(self) -> int:
        return sum(1 for _ in self._db.keys())

    def size_bytes(self) -> int:
        """Live bytes of keys and values (what the cores keep, not RocksDB's files)."""
        return sum(len(k) + len(v) for k, v in self._db.items())

    def stats(self) -> dict:
        return {"synced_writes": self.synced_writes, "bytes_written": self.bytes_written,
                "keys_deleted": self.keys_deleted}

    def close(self) -> None:
        if self._db is not None:
            self._db.close()
            self._db = None

    @staticmethod
    def destroy(path: str | os.PathLike) -> None:
        """Remove a directory entirely (a lost disk: ``chaos.wipe``)."""
        shutil.rmtree(os.fspath(path), ignore_errors=True)
