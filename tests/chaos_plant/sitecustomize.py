"""A planted fault for the chaos test, loaded into the nodes only: the chaos test puts this
directory on PYTHONPATH with ``WARREN_CHAOS_PLANT=confirm-without-enqueue``, and Python
imports ``sitecustomize`` at start-up. The product has no switch for it.

confirm-without-enqueue: a quorum queue's leader confirms every 500th publish without
proposing it, a confirm for a message no replica holds, which the checker must report lost.
"""

import os

if os.environ.get("WARREN_CHAOS_PLANT") == "confirm-without-enqueue":
    from warren.cluster.forwarding import Fwd
    from warren.cluster.queue_fsm import QOp
    from warren.node import quorum

    _lead = quorum.QuorumQueues._lead
    _seen = [0]

    def _planted(self, origin, token, group, op, args):  # type: ignore[no-untyped-def]
        if op is QOp.ENQUEUE and self.raft is not None and self.raft.is_leader(group):
            _seen[0] += 1
            if _seen[0] % 500 == 0:
                self._reply(origin, {"f": Fwd.QANSWER, "t": token, "ok": True, "v": True})
                return
        _lead(self, origin, token, group, op, args)

    quorum.QuorumQueues._lead = _planted
