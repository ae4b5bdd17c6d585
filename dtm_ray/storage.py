"""Storage behind the ``Storage`` protocol of ``dtm_ray.node``.

``MemoryStorage`` is the simulator's disk: a dict that survives a simulated crash (the same
object is handed to the restarted core) or is thrown away to model a lost disk. It counts synced
writes so that the simulator reports fsyncs per committed request like the real system.
``RocksStorage`` (``dtm_ray.storage_rocks``) is the production one.
"""

from __future__ import annotations

import bisect

from dtm_ray.node import Write


class MemoryStorage:
    def __init__(self) -> None:
        self._data: dict[bytes, bytes] = {}
        self._keys: list[bytes] = []  # sorted, for prefix scans
        self.synced_writes = 0
        self.bytes_written = 0

    def get(self, key: bytes) -> bytes | None:
        return self._data.get(key)

    def items(self, prefix: bytes = b"") -> list[tuple[bytes, bytes]]:
        i = bisect.bisect_left(self._keys, prefix)
        out = []
        while i < len(self._keys) and self._keys[i].startswith(prefix):
            k = self._keys[i]
            out.append((k, self._data[k]))
            i += 1
        return out

    def write(self, batch: list[Write], sync: bool = True) -> None:
        for key, value in batch:
            if value is None:
                if key in self._data:
                    del self._data[key]
                    self._keys.pop(bisect.bisect_left(self._keys, key))
            else:
                if key not in self._data:
                    bisect.insort(self._keys, key)
                self._data[key] = value
                self.bytes_written += len(key) + len(value)
        if sync:
            self.synced_writes += 1

    def __len__(self) -> int:
        return len(self._data)

    def size_bytes(self) -> int:
        return sum(len(k) + len(v) for k, v in self._data.items())
