"""``warren chaos`` as a user runs it: a 3-node cluster, each nemesis once (kill, pause,
leader kill, partition, full disk), a confirmed workload, then Jepsen's total-queue check. The same run with a planted fault (a leader that
confirms publishes it never enqueued) must fail: the check can see a loss."""

from __future__ import annotations

import json
import os
import subprocess
import sys
from pathlib import Path
from typing import Any

import pytest

pytestmark = pytest.mark.timeout(240)
PLANT = Path(__file__).resolve().parents[1] / "chaos_plant"


def chaos(tmp_path: Path, *args: str, env: dict[str, str] | None = None) -> tuple[int, dict[str, Any], str]:
    report = tmp_path / "report"
    done = subprocess.run(
        [sys.executable, "-m", "warren.cli", "chaos", "--nodes", "3", "--queues", "2", "--publishers", "2",
         "--consumers", "2", "--json", "--report", str(report), "--seed", "7", "--dir", str(tmp_path / "cluster"),
         *args],
        capture_output=True, text=True, timeout=220, env={**os.environ, **(env or {})})
    lines = [line for line in done.stdout.splitlines() if line.startswith("{")]
    assert lines, f"no report (exit {done.returncode}):\n{done.stdout}\n{done.stderr[-3000:]}"
    return done.returncode, json.loads(lines[-1]), done.stderr


@pytest.mark.skipif(os.geteuid() != 0, reason="partitions and a full disk need root (namespaces, nftables, tmpfs)")
def test_each_nemesis_once_loses_nothing_confirmed(tmp_path: Path) -> None:
    """Every node in its own network namespace on its own tmpfs; each fault once. Clients
    reach every node all along, so a cut-off node's behaviour shows."""
    before = namespaces()
    code, result, log = chaos(tmp_path, "--duration", "60", "--interval", "4", "--fault-seconds", "4",
                              "--nemesis", "partition,disk,kill,pause,leader",  # clients spread: one per node
                              "--queues", "3", "--publishers", "3", "--consumers", "3")
    verdict = result["verdict"]
    # each nemesis in turn (a sixth fault fits when restarts are quick: the schedule starts over)
    assert [f["nemesis"] for f in result["faults"]][:5] == ["partition", "disk", "kill", "pause", "leader"], log
    assert result["drained"], log  # healed with no manual step: every queue drained
    assert verdict["confirmed"] > 1000 and verdict["lost"] == 0 and verdict["unexpected"] == 0, verdict
    assert verdict["duplicated_unflagged"] == 0, verdict
    assert code == 0
    for fault in result["faults"][2:]:  # a killed leader's queues confirm again before it returns
        if fault["nemesis"] != "pause":  # (a publisher on a paused node waits out the pause)
            assert fault["unavailable_seconds"] < fault["healed"] - fault["start"], fault
    partition, disk = result["faults"][:2]
    assert partition["node"].startswith("isolate "), partition
    minority = [node for node, side in partition["sides"].items() if side == "minority"]
    majority = [node for node, side in partition["sides"].items() if side == "majority"]
    assert len(minority) == 1 and len(majority) == 2, partition
    for node in minority:  # cut off: nothing confirmed or delivered there, metadata refused
        seen = partition["observed"][node]
        assert seen["confirms_per_second"] == 0 and seen["deliveries_per_second"] == 0, partition
        assert seen["metadata"]["declare"] == "refused", partition
        assert "541" in seen["metadata"]["error"] and "timed out" in seen["metadata"]["error"], partition
    # the majority carries on (a new leader, confirms, deliveries, declares) wherever it has clients
    assert all(partition["observed"][node]["metadata"]["declare"] == "ok" for node in majority), partition
    for node in majority:
        seen = partition["observed"][node]
        assert (seen["confirms_per_second"] > 0) == (seen["publishers"] > 0), partition
        assert (seen["deliveries_per_second"] > 0) == (seen["consumers"] > 0), partition
    assert sum(partition["observed"][node]["publishers"] for node in majority) == 2, partition
    for node, side in disk["sides"].items():  # the full node blocks its publishers; the others go on
        seen = disk["observed"][node]
        if side == "full disk":
            assert seen["confirms_per_second"] == 0, disk
            if seen["metadata"]["declare"] == "refused":  # it says why: its disk, not the majority
                assert "disk is full" in seen["metadata"]["error"], disk
        else:
            assert (seen["confirms_per_second"] > 0) == (seen["publishers"] > 0), disk
            assert seen["metadata"]["declare"] == "ok", disk
    html = (tmp_path / "report" / "timeline.html").read_text()
    assert "warren chaos: OK" in html and "kill warren-" in html and "partition isolate" in html
    assert json.loads((tmp_path / "report" / "report.json").read_text())["verdict"]["ok"] is True
    png = (tmp_path / "report" / "timeline.png").read_bytes()
    assert png.startswith(b"\x89PNG\r\n\x1a\n") and len(png) > 20_000  # a drawn chart, not an empty canvas
    assert namespaces() == before  # the run removed its namespaces


def test_a_planted_confirm_without_enqueue_is_caught(tmp_path: Path) -> None:
    code, result, log = chaos(tmp_path, "--duration", "12", "--interval", "3", "--fault-seconds", "3",
                              "--nemesis", "kill",
                              env={"WARREN_CHAOS_PLANT": "confirm-without-enqueue",
                                   "PYTHONPATH": os.pathsep.join([str(PLANT), os.environ.get("PYTHONPATH", "")])})
    assert code == 1, log
    assert result["verdict"]["lost"] > 0 and not result["verdict"]["ok"]


def namespaces() -> set[str]:
    listed = subprocess.run(["ip", "netns", "list"], capture_output=True, text=True, check=True).stdout
    return {line.split()[0] for line in listed.splitlines() if line.startswith("warren-")}
