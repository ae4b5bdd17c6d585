"""What a checker reports."""

from __future__ import annotations

from dataclasses import dataclass


@dataclass(frozen=True, slots=True)
class Anomaly:
    kind: str  # e.g. "G0", "G1a", "lost-append", "split", "total-changed"
    detail: str
    txns: tuple[str, ...] = ()

    def __str__(self) -> str:
        return f"{self.kind}: {self.detail}"
