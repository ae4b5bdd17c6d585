"""Measure the canonical codec: microseconds to encode and strictly decode typical messages.

    python -m benchmarks.wire_codec

``preprepare_N``: a PRE-PREPARE of N sealed 200-byte requests (flat: a tuple of bytes);
``prepare_batch_N``: a participant's PrepareBatch of N items of two ops each (nested messages
and Values: the shape that cost the hand-written codec most).
"""

from __future__ import annotations

import json
import time

from dtm_ray.pbft.messages import PrePrepare
from dtm_ray.txn.messages import PrepareBatch, PrepareItem
from dtm_ray.txn.ops import Op
from dtm_ray.wire import decode, encode


def cost_us(fn, repeat: int) -> float:
    start = time.perf_counter()
    for _ in range(repeat):
        fn()
    return (time.perf_counter() - start) / repeat * 1e6


def samples(batch: int) -> dict[str, object]:
    items = tuple(PrepareItem(f"client-{i}:{i}", i, (Op.add("db-0", f"acct-{i}", -5, min=0),
                                                    Op.add("db-0", f"acct-{i + 1}", 5)))
                  for i in range(batch))
    return {f"preprepare_{batch}": PrePrepare(3, 1234, b"d" * 32, tuple(b"r" * 200 for _ in range(batch)), ()),
            f"prepare_batch_{batch}": PrepareBatch(items)}


def main() -> dict:
    out = {}
    for batch in (1, 100):
        for name, msg in samples(batch).items():
            data = encode(msg)
            repeat = 20000 // batch + 200
            out[name] = {
                "bytes": len(data),
                "encode_us": round(cost_us(lambda: encode(msg), repeat), 2),
                "decode_us": round(cost_us(lambda: decode(data), repeat), 2),
            }
    return out


if __name__ == "__main__":
    print(json.dumps(main(), indent=2))
