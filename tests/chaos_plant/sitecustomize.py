"""Planted faults for tests of real nodes, loaded into the nodes only: a test puts this
directory on PYTHONPATH with ``WARREN_CHAOS_PLANT=<fault>``, and Python imports
``sitecustomize`` at start-up. The product has no switch for them.

confirm-without-enqueue (the chaos test): a quorum queue's leader confirms every 500th
publish without proposing it, a confirm for a message no replica holds, which the checker
must report lost.

lose-group-delete (test_quorum_recovery): a quorum queue group's data is never deleted, as
if the node died between applying the change that ends its replica and the write that
deletes the data (a window too narrow to hit with a real kill); what the model remembers
of that change goes on to a snapshot, so a restart does not replay it.
"""

import os

if os.environ.get("WARREN_CHAOS_PLANT") == "confirm-without-enqueue":
    from warren.cluster.forwarding import Fwd
    from warren.cluster.queue_fsm import QOp
    from warren.node import quorum

    _lead = quorum.QuorumQueues._lead
    _reply = quorum.QuorumQueues._reply
    _seen = [0]
    _planted_in: dict = {}  # (origin, token) -> (places confirmed unproposed, messages in the batch)

    def _planted(self, origin, token, group, op, args):  # type: ignore[no-untyped-def]
        if op is QOp.PUBLISH and self.raft is not None and self.raft.is_leader(group):
            messages, planted = args[0], []
            for place in range(len(messages)):
                _seen[0] += 1
                if _seen[0] % 500 == 0:
                    planted.append(place)
            if planted:
                kept = [m for place, m in enumerate(messages) if place not in planted]
                if not kept:
                    self._reply(origin, {"f": Fwd.QANSWER, "t": token, "ok": True, "v": [True] * len(messages)})
                    return
                _planted_in[(origin, token)] = (planted, len(messages))
                args = [kept, *args[1:]]
        _lead(self, origin, token, group, op, args)

    def _answer(self, origin, m):  # type: ignore[no-untyped-def]
        found = _planted_in.pop((origin, m.get("t")), None)
        if found is not None and m.get("ok"):
            planted, count = found
            kept = iter(m["v"])
            m = {**m, "v": [True if place in planted else next(kept) for place in range(count)]}
        _reply(self, origin, m)

    quorum.QuorumQueues._lead = _planted
    quorum.QuorumQueues._reply = _answer


if os.environ.get("WARREN_CHAOS_PLANT") == "lose-group-delete":
    from warren.io import quorum_groups

    quorum_groups.QuorumGroups.drop = lambda self, group: None
