"""The total-queue check of a chaos run, as Jepsen's checker words it (pure).

Every message carries a unique id. Publishers record what they attempted and what was
confirmed; consumers record every delivery with its redelivered flag. After the faults
heal and every queue is drained:

- lost: confirmed, never consumed (a broker bug: a confirm is a promise);
- unexpected: consumed, never published (a bug);
- duplicated: consumed more than once; allowed only when at most one of its deliveries
  came without the redelivered flag (an ack lost with its connection), else a bug. (Not
  "every delivery after the first": a consumer of a paused node may take the original
  after another consumer took the flagged redelivery.)
- recovered: not confirmed (nacked, or its connection died first), yet consumed: allowed.
"""

from __future__ import annotations

from collections import Counter
from collections.abc import Iterable
from dataclasses import dataclass, field
from typing import Any


@dataclass
class Ledger:
    """What the clients saw."""

    attempted: set[int] = field(default_factory=set)
    confirmed: set[int] = field(default_factory=set)
    nacked: set[int] = field(default_factory=set)
    deliveries: list[tuple[int, bool]] = field(default_factory=list)  # (id, redelivered), in order

    def delivered(self, message_id: int, redelivered: bool) -> None:
        self.deliveries.append((message_id, redelivered))


def check(ledger: Ledger) -> dict[str, Any]:
    """The verdict: counts, a sample of each kind of bad id, and ``ok``."""
    seen = Counter(message_id for message_id, _ in ledger.deliveries)
    plain = Counter(message_id for message_id, redelivered in ledger.deliveries if not redelivered)
    unflagged = {message_id for message_id, n in plain.items() if n > 1}
    consumed = set(seen)
    lost = ledger.confirmed - consumed
    unexpected = consumed - ledger.attempted
    duplicated = {m for m, n in seen.items() if n > 1}
    verdict = {
        "attempted": len(ledger.attempted),
        "confirmed": len(ledger.confirmed),
        "nacked": len(ledger.nacked),
        "consumed": len(consumed),
        "lost": len(lost),
        "unexpected": len(unexpected),
        "duplicated": len(duplicated),
        "duplicated_flagged_redelivered": len(duplicated - unflagged),
        "duplicated_unflagged": len(unflagged),
        "recovered": len((consumed & ledger.attempted) - ledger.confirmed),
        "samples": {"lost": _sample(lost), "unexpected": _sample(unexpected),
                    "duplicated_unflagged": _sample(unflagged)},
    }
    verdict["ok"] = not (lost or unexpected or unflagged)
    return verdict


def _sample(ids: Iterable[int], count: int = 10) -> list[int]:
    return sorted(ids)[:count]
