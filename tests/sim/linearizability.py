"""Wing & Gong linearizability check for a single register (Porcupine-style, memoized).

A history is a list of operations with call/return times. A write whose outcome is unknown
(the client timed out) has ``ret = inf``: it may take effect at any point after its call,
or never (linearized after everything else, where it changes nothing observable).
Reads that failed are simply not in the history; writes that definitely failed neither.
"""

from __future__ import annotations

from dataclasses import dataclass
from typing import Any

INF = float("inf")


@dataclass(frozen=True, slots=True)
class Op:
    call: float
    ret: float
    is_write: bool
    value: Any  # the value written, or the value a read returned
    client: int = 0
    node: int = 0  # the node that served it (for reports)


def check_register(ops: list[Op], initial: Any = None) -> bool:
    """True if some total order consistent with real time explains every read."""
    ops = sorted(ops, key=lambda o: o.call)
    n = len(ops)
    full = (1 << n) - 1
    seen: set[tuple[int, Any]] = set()
    stack: list[tuple[int, Any]] = [(0, initial)]
    while stack:
        done, value = stack.pop()
        if done == full:
            return True
        if (done, value) in seen:
            continue
        seen.add((done, value))
        # Candidates to go next: pending operations called before every pending one has
        # returned. Sorted by call, and ret >= call, so the scan stops at the first pending
        # operation called after the smallest return seen so far.
        i = (~done & (done + 1)).bit_length() - 1  # lowest pending
        earliest_ret = INF
        candidates = []
        while i < n:
            if not done >> i & 1:
                op = ops[i]
                if op.call > earliest_ret:
                    break
                candidates.append(i)
                if op.ret < earliest_ret:
                    earliest_ret = op.ret
            i += 1
        for i in candidates:
            op = ops[i]
            if op.call > earliest_ret:
                continue
            if op.is_write:
                stack.append((done | 1 << i, op.value))
            elif op.value == value:
                stack.append((done | 1 << i, value))
    return False
