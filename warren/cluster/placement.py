"""Where a new queue lives: its home node, chosen by the node that submits the declare.

``client-local`` (RabbitMQ's default) homes it on the declaring connection's node;
``balanced`` spreads queues over the members by consistent hashing -- SHA-256 of the
member name and a replica number, 150 points per member on a ring, the queue's
(vhost, name) hashed onto it -- so adding or removing a member moves only the queues
whose points it takes or gives up, and every node computes the same answer. Exclusive
queues always stay on their connection's node. The choice is written into the declare's
log entry, so replicas never recompute it.
"""

from __future__ import annotations

import bisect
import hashlib
from collections.abc import Iterable
from functools import lru_cache

from warren.errors import precondition_failed

POINTS_PER_MEMBER = 150
LOCATORS = ("client-local", "balanced")


def _point(text: str) -> int:
    return int.from_bytes(hashlib.sha256(text.encode()).digest()[:8], "big")


class Ring:
    """Consistent-hash ring over member names."""

    def __init__(self, members: Iterable[str]) -> None:
        points = sorted((_point(f"{member}#{i}"), member) for member in set(members)
                        for i in range(POINTS_PER_MEMBER))
        self._keys = [p for p, _ in points]
        self._owners = [m for _, m in points]

    def owner(self, key: str) -> str:
        assert self._owners, "a ring needs at least one member"
        at = bisect.bisect(self._keys, _point(key)) % len(self._keys)
        return self._owners[at]

    def walk(self, key: str) -> list[str]:
        """Every member once, in the order met clockwise from ``key``'s point."""
        at = bisect.bisect(self._keys, _point(key))
        owners = self._owners
        seen: dict[str, None] = {}
        for i in range(len(owners)):
            seen.setdefault(owners[(at + i) % len(owners)])
        return list(seen)


def queue_locator(arguments: dict[str, object], policy_locator: object | None) -> str:
    """The locator in force: the queue's ``x-queue-leader-locator`` argument, else the
    policy's ``queue-leader-locator``, else client-local. An unknown value is a 406."""
    locator = arguments.get("x-queue-leader-locator", policy_locator)
    if locator is None:
        return "client-local"
    if locator not in LOCATORS:
        raise precondition_failed(
            f"invalid arg 'x-queue-leader-locator': {locator!r}; expected one of {', '.join(LOCATORS)}")
    return str(locator)


def home_node(vhost: str, queue: str, locator: str, local: str, members: Iterable[str],
              exclusive: bool = False) -> str:
    """The node a new queue lives on (``members``: the alive members' names)."""
    alive = sorted(set(members) | {local})
    if exclusive or locator == "client-local" or len(alive) == 1:
        return local
    return _ring(tuple(alive)).owner(f"{vhost}\x00{queue}")


def replica_nodes(vhost: str, queue: str, size: int, locator: str, local: str,
                  members: Iterable[str]) -> tuple[str, ...]:
    """A quorum queue's members, the preferred leader first: ``size`` distinct members
    (at most all of them) found walking the ring clockwise from the queue's point; with
    client-local, the declaring node is among them and leads."""
    alive = sorted(set(members) | {local})
    size = max(1, min(size, len(alive)))
    walk = _ring(tuple(alive)).walk(f"{vhost}\x00{queue}")
    if locator == "client-local":
        return (local, *[m for m in walk if m != local][:size - 1])
    return tuple(walk[:size])


def reconciled_members(vhost: str, queue: str, members: list[str], size: int, cluster: Iterable[str],
                       alive: Iterable[str], replaceable: Iterable[str] = ()) -> tuple[str, ...] | None:
    """A quorum queue's next target members, or None to leave them: members no longer in
    the cluster (forgotten) go; members in ``replaceable`` (down too long) give way to alive
    non-members; then the queue grows to ``size`` (capped at the cluster's size) with
    alive non-members, each change in the queue's ring order so every node would choose
    the same. Never empties a queue."""
    cluster, alive, replaceable = set(cluster), set(alive), set(replaceable)
    if len(members) >= min(size, len(cluster)) and cluster.issuperset(members) and replaceable.isdisjoint(members):
        return None  # the common case, asked of every queue every few seconds: no ring walk
    kept = [m for m in members if m in cluster]
    candidates = [m for m in _ring(tuple(sorted(alive))).walk(f"{vhost}\x00{queue}")
                  if m not in members] if alive else []
    for member in [m for m in kept if m in replaceable]:
        if candidates:
            kept.remove(member)
            kept.append(candidates.pop(0))
    while len(kept) < min(size, len(cluster)) and candidates:
        kept.append(candidates.pop(0))
    return tuple(kept) if kept and kept != members else None


def leader_moves(queues: list[tuple[str, str, list[str]]], alive: Iterable[str]) -> list[tuple[str, str]]:
    """rabbitmq-queues rebalance: ``queues`` as (key, leader, members); the (key, new
    leader) moves after which no alive node leads more than one queue more than another
    member of the same queue could."""
    alive = set(alive)
    counts = dict.fromkeys(sorted(alive), 0)
    leaders = {key: leader for key, leader, _ in queues}
    for leader in leaders.values():
        if leader in counts:
            counts[leader] += 1
    moves: dict[str, str] = {}
    moved = True
    while moved:
        moved = False
        for key, _, members in sorted(queues):
            leader = leaders[key]
            others = [m for m in members if m in alive and m != leader]
            if leader not in counts or not others:
                continue
            best = min(others, key=lambda m: (counts[m], m))
            if counts[leader] - counts[best] > 1:
                counts[leader] -= 1
                counts[best] += 1
                leaders[key] = moves[key] = best
                moved = True
    return sorted(moves.items())


@lru_cache(maxsize=16)
def _ring(members: tuple[str, ...]) -> Ring:
    return Ring(members)
