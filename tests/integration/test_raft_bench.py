"""``warren bench raft`` end to end: real processes, and the figures it promises, as JSON."""

from __future__ import annotations

import json
import subprocess
import sys

import pytest

pytestmark = pytest.mark.timeout(120)


def test_bench_raft_prints_throughput_latency_cpu_and_failover_as_json() -> None:
    out = subprocess.run(
        [sys.executable, "-m", "warren.cli", "bench", "raft", "--json"]
        + ["--groups", "3", "--seconds", "1", "--inflight", "30", "--failovers", "2"],
        capture_output=True,
        text=True,
        timeout=110,
        check=True,
    )
    result = json.loads(out.stdout.strip().splitlines()[-1])
    assert result["groups"] == 3 and result["entry_size"] == 1024
    assert result["committed"] > 0 and result["committed_per_second"] > 0
    assert 0 < result["latency_p50_ms"] <= result["latency_p99_ms"]
    # Leaders were spread over the three nodes before the run.
    assert result["groups_led_at_start"] == {"node1": 1, "node2": 1, "node3": 1}
    assert set(result["cpu_ms_per_1k_entries"]) == {"node1", "node2", "node3", "driver"}
    assert len(result["failover_seconds_all"]) == 2
    assert result["failover_seconds"] in result["failover_seconds_all"]
