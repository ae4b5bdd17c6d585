"""Measure the canonical codec: microseconds to encode and strictly decode typical messages.

    python -m benchmarks.wire_codec
"""

from __future__ import annotations

import json
import time

from dtm_ray.wire import Message, decode, encode


class BenchBatch(Message, tag=990):
    view: int
    seq: int
    digest: bytes
    requests: tuple[bytes, ...]


def cost_us(fn, repeat: int) -> float:
    start = time.perf_counter()
    for _ in range(repeat):
        fn()
    return (time.perf_counter() - start) / repeat * 1e6


def main() -> dict:
    out = {}
    for batch in (1, 100):
        msg = BenchBatch(3, 1234, b"d" * 32, tuple(b"r" * 200 for _ in range(batch)))
        data = encode(msg)
        repeat = 20000 // batch + 200
        out[f"batch_{batch}"] = {
            "bytes": len(data),
            "encode_us": cost_us(lambda: encode(msg), repeat),
            "decode_us": cost_us(lambda: decode(data), repeat),
        }
    return out


if __name__ == "__main__":
    print(json.dumps(main(), indent=2))
