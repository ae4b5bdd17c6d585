"""The transaction layer: two-phase commit on top of the PBFT log (pure, sans-I/O).

Modules, one idea each:

- ``ops``: ``Op`` (the operations of a transaction) and ``TxnResult`` (what a client learns);
- ``config``: ``TxnConfig`` and per-client ``ClientPolicy``;
- ``messages``: every message and persisted record of the layer (wire kinds 40..59);
- ``coordinator``: ``CoordinatorApp``, the 2PC coordinator the PBFT replica executes;
- ``participant``: ``Participant``, a kv database or a queue voting in sequence order, with
  ``engine`` (what ops do to data), ``locks`` (deterministic locking) and ``quorum`` (f+1 rule);
- ``client``: ``TxnClient``, a PBFT client whose operations are transactions;
- ``events``: what participants report (``Applied``, ``Voted``) for checkers and metrics;
- ``byzantine``: forge-decision, forge-votes and equivocate-vote, registered in
  ``dtm_ray.faults.CATALOGUE``.
"""
