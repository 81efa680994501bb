"""The real Raft host and LMDB store in the deterministic simulator (``host_sim``).

- seeds against the production host come out clean (3 and 5 nodes);
- a host that confirms a proposal by its index alone (the false-confirm bug this host once
  had after restarts) is caught within a bounded range of seeds;
- a seed replays identically;
- the faults (crashes, lost and failed writes, partitions) and snapshot installs with
  retained entries really happen.

More seeds on demand: ``pytest -m slow tests/sim/test_host_sim.py``.
"""

from __future__ import annotations

from typing import Any

import pytest

from tests.sim.host_sim import HostSimulation, Violation
from warren.io.raft_host import RaftHost

CLEAN_3 = range(0, 40)
CLEAN_5 = range(0, 8)
BUG_SEEDS = range(0, 40)


class ConfirmsByIndex(RaftHost):
    """Planted: answers a proposal with whatever entry commits at its index."""

    def _is_own_entry(self, entry: Any, proposed_in_term: int) -> bool:
        return True


def run_clean(seeds: range, nodes: int) -> None:
    for seed in seeds:
        sim = HostSimulation(seed, nodes=nodes)
        try:
            sim.run()
        except Violation as v:
            pytest.fail(f"{v}\nreplay: HostSimulation({seed}, nodes={nodes}).run()", pytrace=False)
        # The faults really happened (over the whole range, not necessarily in each seed).
        assert sim.acked, f"seed {seed}: nothing was acknowledged"


def test_clean_host_three_nodes() -> None:
    run_clean(CLEAN_3, nodes=3)


def test_clean_host_five_nodes() -> None:
    run_clean(CLEAN_5, nodes=5)


def test_faults_are_injected() -> None:
    totals: dict[str, int] = {}
    for seed in range(10):
        sim = HostSimulation(seed)
        sim.run()
        for key, value in sim.stats.items():
            totals[key] = totals.get(key, 0) + value
    assert all(value > 0 for value in totals.values()), totals  # snapshot restores included


def test_a_host_confirming_by_index_is_caught() -> None:
    for seed in BUG_SEEDS:
        try:
            HostSimulation(seed, host_class=ConfirmsByIndex).run()
        except Violation as v:
            assert "confirmed" in str(v), v
            with pytest.raises(Violation) as again:
                HostSimulation(seed, host_class=ConfirmsByIndex).run()
            assert str(again.value) == str(v)  # it replays
            return
    pytest.fail(f"confirming by index survived seeds {BUG_SEEDS}")


def test_same_seed_same_run() -> None:
    def outcome(seed: int) -> list[Any]:
        sim = HostSimulation(seed, seconds=4.0)
        sim.run()
        return [sim.acked, sim.stats, sim.reads]

    assert outcome(3) == outcome(3)
    assert outcome(3) != outcome(4)


@pytest.mark.slow
@pytest.mark.timeout(3600)
@pytest.mark.parametrize("nodes, seeds", [(3, range(1000, 2000)), (5, range(2000, 2200))])
def test_many_clean_host_seeds(nodes: int, seeds: range) -> None:
    run_clean(seeds, nodes)
