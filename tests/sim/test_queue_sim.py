"""The quorum queue simulator (``queue_sim``) in the normal test run.

- seeds against the real Raft core and the real queue machine come out clean, and over
  each chunk of seeds they exercise what the checkers guard: leader changes, crashes and
  restarts from snapshots, snapshot installs, the new leader's resends and the duplicates
  channels drop, returns, redeliveries, dead letters, DOWNs, refused publishes, gets,
  cancels, and draining the queue at the end;
- every planted bug (``tests.sim.planted.PLANTED_QUEUE``: a machine overriding one method,
  and a harness that confirms publishes before they commit) is caught within seeds 0-99
  by the checker meant for it, and the violation replays;
- a seed replays identically.

More seeds on demand: ``python -m tests.sim.queue_sim --seeds 2000 --seed-start 0``
(about 0.11 s a seed) or ``pytest -m slow tests/sim/test_queue_sim.py``.
"""

from __future__ import annotations

from collections import Counter
from collections.abc import Callable
from functools import partial

import pytest

from tests.sim.planted import PLANTED_QUEUE
from tests.sim.queue_sim import Proposal, QueueSimulation, Violation

CHUNK = 35
CLEAN = range(0, 70)
BUG_SEEDS = range(0, 100)


class ConfirmsBeforeCommit(QueueSimulation):
    """Planted in the harness: a publish counts as confirmed as soon as the leader has
    appended it, before it is committed (a leader that loses its tail loses it)."""

    def _on_proposed(self, p: Proposal) -> None:
        if p.kind == "publish":
            self.confirmed.update(p.detail)


PLANTED: dict[str, tuple[Callable[[int], QueueSimulation], str]] = {
    "settle-acks-next": (partial(QueueSimulation, machine_class="settle-acks-next"), "confirmed messages lost"),
    "forgets-redelivered": (partial(QueueSimulation, machine_class="forgets-redelivered"), "without redelivered"),
    "snapshot-forgets-counts": (partial(QueueSimulation, machine_class="snapshot-forgets-counts"),
                                "restored a snapshot"),
    "refuses-but-keeps": (partial(QueueSimulation, machine_class="refuses-but-keeps"), "which the queue refused"),
    "confirms-before-commit": (ConfirmsBeforeCommit, "confirmed messages lost"),
    "forgets-publishes": (partial(QueueSimulation, machine_class="forgets-publishes"), "without redelivered"),
    "relocates-one-off": (partial(QueueSimulation, machine_class="relocates-one-off"),
                          "without redelivered | which nobody published"),
}


def replay_line(seed: int, bug: str | None = None) -> str:
    planted = f" --planted-bug {bug}" if bug in PLANTED_QUEUE else ""
    return f"replay: python -m tests.sim.queue_sim --seeds 1 --seed-start {seed}{planted} --trace"


@pytest.mark.parametrize("start", range(CLEAN.start, CLEAN.stop, CHUNK), ids=lambda s: f"seeds{s}-{s + CHUNK - 1}")
def test_clean_seeds_exercise_what_the_checkers_guard(start: int) -> None:
    seeds = range(start, min(start + CHUNK, CLEAN.stop))
    exercised: Counter[str] = Counter()
    for seed in seeds:
        sim = QueueSimulation(seed)
        try:
            sim.run()
        except Violation as v:
            pytest.fail(f"{v}\n{replay_line(seed)}", pytrace=False)
        exercised.update(k for k, v in sim.stats.items() if v)
        exercised["leader changes"] += sim.stats["elections"] > 1
    share = {k: round(v / len(seeds), 2) for k, v in exercised.items()}
    for what, least in [
        ("confirmed", 1.0), ("leader changes", 0.8), ("crashes", 0.5), ("restarts from a snapshot", 0.3),
        ("snapshot installs", 0.3), ("resent deliveries", 0.5), ("duplicate sends ignored", 0.3),
        ("return", 0.4), ("received redelivered", 0.8), ("dead letters", 0.3), ("downs", 0.8),
        ("refused", 0.05), ("gets", 0.1), ("cancels", 0.1), ("partitions", 0.3), ("transfers", 0.2),
        ("drained", 0.6), ("relocations", 0.2),
    ]:  # fmt: skip
        assert share.get(what, 0) >= least, (what, share)


@pytest.mark.parametrize("bug", sorted(PLANTED))
def test_planted_bug_is_caught_by_its_checker(bug: str) -> None:
    make, expected = PLANTED[bug]
    for seed in BUG_SEEDS:
        try:
            make(seed).run()
        except Violation as v:
            message = str(v)
            found = any(text in message for text in expected.split(" | "))  # "a | b": either checker
            assert message.startswith(f"seed {seed}: ") and found, f"{message}\n{replay_line(seed, bug)}"
            with pytest.raises(Violation) as again:
                make(seed).run()
            assert str(again.value) == message  # it replays
            return
    pytest.fail(f"planted bug {bug} survived seeds {BUG_SEEDS}")


def test_same_seed_same_run() -> None:
    def fingerprint(seed: int) -> str:
        sim = QueueSimulation(seed, duration_ticks=250)
        sim.run()
        return sim.fingerprint()

    assert fingerprint(5) == fingerprint(5)
    assert fingerprint(5) != fingerprint(6)


@pytest.mark.slow
@pytest.mark.timeout(3600)
def test_thousands_of_clean_seeds() -> None:
    """``pytest -m slow tests/sim/test_queue_sim.py`` (2,000 seeds, about 3 minutes)."""
    for seed in range(10_000, 12_000):
        try:
            QueueSimulation(seed).run()
        except Violation as v:
            pytest.fail(f"{v}\n{replay_line(seed)}", pytrace=False)
