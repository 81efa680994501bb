"""A tiny synchronous cluster of real ``RaftNode``s over MemoryStorage, for unit tests.

Messages go through the wire encoding; ``cut`` holds directed links that drop everything.
``settle()`` runs every node's ready/persist/send/apply/advance loop until nothing moves.
"""

from __future__ import annotations

import random
from collections.abc import Callable
from typing import Any

from warren.raft.node import RaftNode, ReadState, Role
from warren.raft.storage import MemoryStorage
from warren.raft.types import EntryKind, Message, message_from_wire


class Cluster:
    def __init__(
        self,
        voters: tuple[int, ...] = (1, 2, 3),
        learners: tuple[int, ...] = (),
        seed: int = 0,
        node_class: type[RaftNode] = RaftNode,
        **node_kw: Any,
    ) -> None:
        self.rng = random.Random(seed)
        self.node_class = node_class
        self.voters, self.learners = voters, learners
        self.node_kw = node_kw
        self.disks = {n: MemoryStorage() for n in voters + learners}
        self.nodes: dict[int, RaftNode] = {}
        self.cut: set[tuple[int, int]] = set()
        self.drop: Callable[[Message], bool] = lambda m: False  # lose matching messages
        self.down: set[int] = set()
        self.applied: dict[int, list[bytes]] = {n: [] for n in self.disks}
        self.reads: dict[int, list[ReadState]] = {n: [] for n in self.disks}
        self.sent: list[Message] = []  # every message that left a node
        for n in self.disks:
            self.start(n)

    def start(self, n: int) -> None:
        self.down.discard(n)
        self.nodes[n] = self.node_class(
            n, "g", self.disks[n], self.rng, voters=self.voters, learners=self.learners,
            **self.node_kw,
        )  # fmt: skip

    def isolate(self, n: int) -> None:
        for m in self.disks:
            if m != n:
                self.cut |= {(n, m), (m, n)}

    def heal(self) -> None:
        self.cut.clear()

    def settle(self, rounds: int = 200) -> None:
        for _ in range(rounds):
            inbox: list[Message] = []
            for n, node in self.nodes.items():
                if n in self.down or not node.has_ready():
                    continue
                rd = node.ready()
                disk = self.disks[n]
                rd.persist_to(disk)
                for e in rd.committed_entries:
                    if e.kind == EntryKind.NORMAL:
                        self.applied[n].append(e.data)
                self.reads[n].extend(rd.read_states)
                node.advance(rd)
                for m in rd.messages:
                    self.sent.append(m)
                    if (m.frm, m.to) in self.cut or m.to in self.down or self.drop(m):
                        continue
                    inbox.append(message_from_wire(m.to_wire()))
            if not inbox and not any(
                node.has_ready() for n, node in self.nodes.items() if n not in self.down
            ):
                return
            for m in inbox:
                self.nodes[m.to].step(m)
        raise AssertionError("cluster did not settle")

    def tick(self, times: int = 1, only: tuple[int, ...] | None = None) -> None:
        for _ in range(times):
            for n, node in self.nodes.items():
                if n not in self.down and (only is None or n in only):
                    node.tick()
            self.settle()

    def leaders(self) -> list[int]:
        return [
            n for n, node in self.nodes.items() if n not in self.down and node.role == Role.LEADER
        ]

    def elect(self, max_ticks: int = 100) -> int:
        for _ in range(max_ticks):
            self.tick()
            leaders = self.leaders()
            if len(leaders) == 1:
                return leaders[0]
        raise AssertionError(f"no single leader after {max_ticks} ticks: {self.leaders()}")

    def propose(self, leader: int, data: bytes) -> int:
        index = self.nodes[leader].propose(data)
        assert index is not None
        self.settle()
        return index
