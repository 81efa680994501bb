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


@lru_cache(maxsize=16)
def _ring(members: tuple[str, ...]) -> Ring:
    return Ring(members)
