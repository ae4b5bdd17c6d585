"""The sans-I/O PBFT core.

Public surface (what hosts, the simulator and the transaction layer use):

- ``Replica(replica_id, config, keys, app, storage)``: a ``Node`` (receive / tick / take_ready)
  that rebuilds itself from ``storage``; ``status()`` is a JSON-serialisable dict.
- ``ClientCore(client_id, config, keys)``: a ``Node``; ``submit(operation) -> request_id``, a
  ``ClientResult`` output once f+1 replicas sent matching replies.
- ``KvApp``: a small deterministic key-value ``App`` for tests.
- ``PbftConfig`` and the outputs in ``events``.

Modules, one idea each: ``messages`` (wire kinds 10..39), ``quorum`` (2f+1 / f+1 math),
``safety`` (the only signer of votes), ``log`` (slots and watermarks), ``checkpoint``,
``viewchange`` (pure build/verify of VIEW-CHANGE and NEW-VIEW), ``persist`` (storage layout),
``replica`` (the facade that wires them) and its parts ``intake`` (client requests),
``normalcase`` (batches, votes, execution), ``views`` (timers and view change), ``stability``
(checkpoints, state transfer), ``catchup`` (retransmission, STATUS), ``recovery``; ``client``,
``kvapp``.
"""

from dtm_ray.pbft.client import ClientCore
from dtm_ray.pbft.config import PbftConfig
from dtm_ray.pbft.kvapp import KvApp
from dtm_ray.pbft.replica import Replica

__all__ = ["ClientCore", "KvApp", "PbftConfig", "Replica"]
