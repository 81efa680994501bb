"""ReadIndex requests of the Raft host, from asking to the moment the read point is applied.

A request gets a context unique per boot (a random prefix and a counter: a reply meant for
an earlier run of this node must not answer a new request). The core answers with a read
point (``ReadState``); the request completes once this node has applied that index.
"""

from __future__ import annotations

import asyncio
import itertools
import os
from collections.abc import Sequence
from typing import Any

from warren.store.raft_store import GroupId


class ReadWaiters:
    def __init__(self) -> None:
        self._prefix = os.urandom(8)
        self._seq = itertools.count(1)
        self._asked: dict[bytes, asyncio.Future[int]] = {}  # context -> waiting for a point
        self._points: dict[GroupId, list[tuple[int, asyncio.Future[int]]]] = {}  # -> applied

    def ask(self) -> tuple[bytes, asyncio.Future[int]]:
        context = self._prefix + next(self._seq).to_bytes(8, "big")
        future: asyncio.Future[int] = asyncio.get_running_loop().create_future()
        self._asked[context] = future
        return context, future

    def forget(self, context: bytes) -> None:
        self._asked.pop(context, None)

    def waiting(self, group: GroupId) -> bool:
        return group in self._points

    def resolve(self, group: GroupId, read_states: Sequence[Any], applied: int,
                no_leader: Exception) -> None:
        """Take the core's answers for ``group``; complete every point ``applied`` reached."""
        points = self._points.get(group)
        for rs in read_states:
            future = self._asked.pop(rs.context, None)
            if future is None or future.done():
                continue
            if not rs.ok:
                future.set_exception(no_leader)
                continue
            if points is None:
                points = self._points[group] = []
            points.append((rs.index, future))
        if not points:
            return
        still = []
        for index, future in points:
            if future.done():
                continue
            if index <= applied:
                future.set_result(index)
            else:
                still.append((index, future))
        if still:
            self._points[group] = still
        else:
            del self._points[group]

    def fail_all(self, error: Exception) -> None:
        futures = list(self._asked.values()) + [f for p in self._points.values() for _, f in p]
        self._asked.clear()
        self._points.clear()
        for future in futures:
            if not future.done():
                future.set_exception(error)
