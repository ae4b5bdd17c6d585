"""Checkers of transactional histories, pure and reusable (simulator, Ray tests, benchmarks).

- ``bank``: money is neither created nor destroyed, and no balance goes negative;
- ``elle``: serializability of a list-append history (Elle-style dependency cycles: G0, G1c,
  G-single, G2, with real-time edges for strict serializability; plus G1a, G1b, duplicate and lost
  appends);
- ``atomicity``: no transaction committed at one participant and aborted or absent at another.

Each returns a list of ``Anomaly``: empty means the property held.
"""

from dtm_ray.checks.report import Anomaly

__all__ = ["Anomaly"]
