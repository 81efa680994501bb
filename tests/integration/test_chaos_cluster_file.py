"""``warren chaos --cluster-file``: the schedule against a cluster it did not start, faulted
only through the commands the file gives (as an operator writes them for their own
cluster), and a clear refusal when the file lacks what a fault needs. The same against a
RabbitMQ cluster (``scripts/rabbitmq-cluster``) is a slow test: it needs rabbitmq-server."""

from __future__ import annotations

import json
import os
import shlex
import shutil
import subprocess
import sys
import tempfile
from pathlib import Path
from typing import Any

import pytest

from warren.cli.cluster_cmd import (
    node_amqp_url,
    node_command,
    node_http_url,
    start_cluster,
    stop_cluster,
)

ROOT = Path(__file__).resolve().parents[2]
pytestmark = pytest.mark.timeout(300)


def chaos(*args: str, timeout: float = 240) -> tuple[int, dict[str, Any] | None, str]:
    done = subprocess.run([sys.executable, "-m", "warren.cli", "chaos", "--json", *args],
                          capture_output=True, text=True, timeout=timeout)
    lines = [line for line in done.stdout.splitlines() if line.startswith("{")]
    return done.returncode, json.loads(lines[-1]) if lines else None, done.stderr


def operator_file(root: Path, state: dict[str, Any]) -> dict[str, Any]:
    """What an operator of these nodes would write: pkill by the node's command line, and
    the same command line to start it again (its own data; no seeds needed)."""
    secret = (root / "secret").read_text().strip()
    nodes = []
    for node in state["nodes"]:
        pattern = shlex.quote(f"[-]-data-dir {node['data_dir']} ")  # [-]: not pkill's own shell's line
        start = " ".join(shlex.quote(part) for part in node_command(node, []))
        nodes.append({"name": node["name"], "amqp": node_amqp_url(node), "http": node_http_url(node),
                      "kill": f"pkill -KILL -f -- {pattern}", "pause": f"pkill -STOP -f -- {pattern}",
                      "resume": f"pkill -CONT -f -- {pattern}",
                      "restart": f"WARREN_CLUSTER_SECRET={secret} nohup {start} >>{node['log']} 2>&1 </dev/null &"})
    return {"broker": "warren", "nodes": nodes}


def test_an_existing_cluster_is_faulted_through_its_own_commands(tmp_path: Path) -> None:
    root = tmp_path / "cluster"
    state = start_cluster(root, 3)
    try:
        cluster_file = tmp_path / "cluster-file.json"
        cluster_file.write_text(json.dumps(operator_file(root, state)))
        code, result, log = chaos("--cluster-file", str(cluster_file), "--nemesis", "kill,pause",
                                  "--duration", "22", "--interval", "3", "--fault-seconds", "3", "--seed", "4")
        assert result is not None, log
        verdict = result["verdict"]
        assert [f["nemesis"] for f in result["faults"]][:2] == ["kill", "pause"], log
        assert result["broker"] == "warren" and result["drained"], log
        assert verdict["confirmed"] > 500 and verdict["lost"] == 0 and verdict["duplicated_unflagged"] == 0, verdict
        assert code == 0
        killed = result["faults"][0]["node"]
        data_dir = next(n["data_dir"] for n in state["nodes"] if n["name"] == killed)
        restarted = subprocess.run(["pgrep", "-f", "--", f"[-]-data-dir {data_dir} "], capture_output=True, text=True)
        assert restarted.stdout.split() and int(restarted.stdout.split()[0]) != next(
            n["pid"] for n in state["nodes"] if n["name"] == killed)  # the file's restart command ran
    finally:
        stop_cluster(state)
        subprocess.run(["pkill", "-KILL", "-f", "--", str(root)], check=False)  # the restarted node


def test_a_file_without_what_a_fault_needs_is_refused(tmp_path: Path) -> None:
    cluster_file = tmp_path / "cluster-file.json"
    cluster_file.write_text(json.dumps({"nodes": [
        {"name": "a", "amqp": "amqp://guest:guest@127.0.0.1:1/%2F", "http": "http://127.0.0.1:1",
         "pause": "true", "resume": "true"}]}))
    code, _result, log = chaos("--cluster-file", str(cluster_file), "--nemesis", "pause,kill,partition", timeout=30)
    assert code == 2, log
    assert 'kill needs "kill" on a' in log and 'needs "restart" on a' in log and 'partition needs a "network"' in log
    cluster_file.write_text(json.dumps({"nodes": [{"name": "a", "amqp": "amqp://127.0.0.1:1/"}]}))
    code, _result, log = chaos("--cluster-file", str(cluster_file), "--nemesis", "pause", timeout=30)
    assert code == 2 and '"http" URL' in log, log
    code, _result, log = chaos("--cluster-file", str(tmp_path / "absent.json"), timeout=30)
    assert code == 2 and "cannot read the cluster file" in log, log


@pytest.mark.slow
@pytest.mark.skipif(os.geteuid() != 0 or shutil.which("rabbitmq-server") is None,
                    reason="needs root and rabbitmq-server (apt-get install -y rabbitmq-server)")
def test_the_same_schedule_against_rabbitmq() -> None:
    directory = Path(tempfile.mkdtemp(prefix="warren-rabbitmq-"))  # pytest's tmp_path is closed to user rabbitmq
    script = str(ROOT / "scripts" / "rabbitmq-cluster")
    subprocess.run([sys.executable, script, "up", "--nodes", "3", "--dir", str(directory)], check=True, timeout=300)
    try:
        code, result, log = chaos("--cluster-file", str(directory / "cluster-file.json"),
                                  "--nemesis", "partition,disk,kill,pause,leader", "--queues", "3",
                                  "--publishers", "3", "--consumers", "3", "--duration", "60",
                                  "--interval", "4", "--fault-seconds", "4", "--seed", "7", timeout=600)
        assert result is not None, log
        kinds = [f["nemesis"] for f in result["faults"]]  # RabbitMQ's faults last longer: its restarts are slower
        assert result["broker"] == "rabbitmq" and kinds[:3] == ["partition", "disk", "kill"], log
        assert result["verdict"]["lost"] == 0 and code == 0, result["verdict"]
    finally:
        subprocess.run([sys.executable, script, "down", "--dir", str(directory)], check=False, timeout=300)
        shutil.rmtree(directory, ignore_errors=True)
