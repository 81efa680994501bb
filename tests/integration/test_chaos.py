"""``warren chaos`` as a user runs it: a 3-node cluster, each nemesis once, a confirmed
workload, then Jepsen's total-queue check. The same run with a planted fault (a leader that
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


def test_each_nemesis_once_loses_nothing_confirmed(tmp_path: Path) -> None:
    code, result, log = chaos(tmp_path, "--duration", "33", "--interval", "4", "--fault-seconds", "4",
                              "--nemesis", "kill,pause,leader")
    verdict = result["verdict"]
    assert [f["nemesis"] for f in result["faults"]] == ["kill", "pause", "leader"], log
    assert result["drained"], log
    assert verdict["confirmed"] > 1000 and verdict["lost"] == 0 and verdict["unexpected"] == 0, verdict
    assert verdict["duplicated_unflagged"] == 0, verdict
    assert code == 0
    for fault in result["faults"]:  # a killed leader's queues confirm again before it returns
        if fault["nemesis"] != "pause":  # (a publisher on a paused node waits out the pause)
            assert fault["unavailable_seconds"] < fault["healed"] - fault["start"], fault
    html = (tmp_path / "report" / "timeline.html").read_text()
    assert "warren chaos: OK" in html and "kill warren-" in html
    assert json.loads((tmp_path / "report" / "report.json").read_text())["verdict"]["ok"] is True


def test_a_planted_confirm_without_enqueue_is_caught(tmp_path: Path) -> None:
    code, result, log = chaos(tmp_path, "--duration", "12", "--interval", "3", "--fault-seconds", "3",
                              "--nemesis", "kill",
                              env={"WARREN_CHAOS_PLANT": "confirm-without-enqueue",
                                   "PYTHONPATH": os.pathsep.join([str(PLANT), os.environ.get("PYTHONPATH", "")])})
    assert code == 1, log
    assert result["verdict"]["lost"] > 0 and not result["verdict"]["ok"]
