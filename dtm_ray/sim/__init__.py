"""Deterministic simulation: one process, one seed, a virtual clock, a faulty network.

- ``simulation``: the event loop (``Simulation``): nodes built by ``factory(storage)``, crashed and
  restarted with their disk kept or wiped, driven by the production ``drive`` loop;
- ``network``: delays, drops, duplicates, reordering, partitions, cuts, slow parties, counters;
- ``verify_cache``: an opt-in cache of Ed25519 verifications (simulator only, counted apart);
- ``checkers``: the PBFT properties over recorded outputs (agreement, validity, exactly-once,
  bounded log, liveness);
- ``pbft_world`` and ``plans``: a PBFT cluster with a counter workload, and seeded fault plans;
- ``txn_*``: the transaction layer's worlds and plans built on the same simulator.

Byzantine behaviours live in ``dtm_ray.faults`` (shared with the Ray actors).
"""
