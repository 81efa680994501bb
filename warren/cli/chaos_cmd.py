"""``warren chaos``: start a local cluster (or take an existing one, Warren's or RabbitMQ's,
from ``--cluster-file``), run a confirmed workload through a schedule of real faults, heal,
drain every queue, and check that nothing confirmed was lost.

The schedule: after a quiet ``--interval`` seconds, one fault at a time, taking the
``--nemesis`` kinds in turn (so every kind runs once before any runs twice), each lasting
``--fault-seconds`` before it heals, then ``--interval`` seconds of calm; the next fault
starts only if it can heal before ``--duration`` ends. A partition or a full disk lasts until a
metadata probe (a queue.declare on every node, 1 s in) has its answer: the minority's
refusal comes after the cluster's request timeout. Then publishers stop, the faults
are healed, consumers drain every queue (until it is empty and quiet for 2 s, at most
``--drain-timeout``), and the checker (``warren.cli.chaos.checker``) gives the verdict.
Exit status 1 when anything confirmed was lost, anything unexpected arrived, or a duplicate
came without the redelivered flag.
"""

from __future__ import annotations

import asyncio
import json
import random
import shutil
import signal
import tempfile
import time
from pathlib import Path
from typing import Any

import typer
from pamqp import commands as spec

from warren.cli.amqp_bench import BenchError, connect
from warren.cli.chaos import external
from warren.cli.chaos.checker import Ledger, check
from warren.cli.chaos.nemesis import (
    NEMESES,
    Fault,
    LocalProcesses,
    Nemesis,
    NemesisError,
    Processes,
    listed_queues,
    unavailable_seconds,
)
from warren.cli.chaos.report import write_report
from warren.cli.chaos.workload import ChaosConsumer, ChaosPublisher, Stats
from warren.cli.cluster_cmd import ClusterError, node_amqp_url, start_cluster, stop_cluster
from warren.cli.main import app

QUIET_SECONDS = 2.0
OBSERVED = ("partition", "disk")  # faults that leave nodes up: each node's clients are watched, metadata probed
GRACE_SECONDS = 1.0  # what was in flight when the fault came is not counted
PROBE_DELAY_SECONDS = 1.0
PROBE_TIMEOUT_SECONDS = 15.0  # above the cluster's request timeout (5 s), which answers a minority


@app.command()
def chaos(
    nodes: int = typer.Option(3, "--nodes", min=1, max=7, help="Nodes of the local cluster to start."),
    cluster_file: str | None = typer.Option(
        None, "--cluster-file", help="Run against an existing cluster (Warren or RabbitMQ) this JSON file "
        "describes: nodes' AMQP and HTTP URLs and the commands that kill, pause and restart them."),
    duration: float = typer.Option(60.0, "--duration", min=5.0, help="Seconds of workload and faults."),
    nemesis: str = typer.Option(",".join(NEMESES), "--nemesis",
                                help="Faults, comma-separated (partition and disk need root)."),
    queues: int = typer.Option(2, "--queues", min=1),
    publishers: int = typer.Option(2, "--publishers", min=1),
    consumers: int = typer.Option(2, "--consumers", min=1),
    queue_type: str = typer.Option("quorum", "--queue-type", help="quorum or classic."),
    interval: float = typer.Option(8.0, "--interval", min=0.5, help="Calm seconds before and after each fault."),
    fault_seconds: float = typer.Option(5.0, "--fault-seconds", min=0.5, help="How long each fault lasts."),
    window: int = typer.Option(32, "--confirm-window", min=1, help="Unconfirmed publishes per publisher."),
    size: int = typer.Option(64, "--size", min=16, help="Message body bytes."),
    drain_timeout: float = typer.Option(120.0, "--drain-timeout", min=1.0),
    seed: int = typer.Option(0, "--seed", help="Chooses the faults' nodes (0: random)."),
    directory: str | None = typer.Option(None, "--dir", help="The cluster's directory (default: a temporary one)."),
    keep: bool = typer.Option(False, "--keep", help="Leave the cluster running and its data in place."),
    as_json: bool = typer.Option(False, "--json", help="Print the report as one JSON object."),
    report: str | None = typer.Option(None, "--report", help="Write report.json, timeline.html and timeline.png to DIR."),
) -> None:
    """Faults against a cluster under a confirmed workload; exits 1 if a confirmed message
    was lost (Jepsen's total-queue check)."""
    kinds = [k.strip() for k in nemesis.split(",") if k.strip()]
    unknown = [k for k in kinds if k not in NEMESES]
    if unknown or not kinds:
        raise typer.BadParameter(f"unknown nemesis {', '.join(unknown) or '(none)'}; choose from {', '.join(NEMESES)}")
    if queue_type not in ("quorum", "classic"):
        raise typer.BadParameter("--queue-type must be quorum or classic")
    say = (lambda _m: None) if as_json else (lambda m: typer.echo(m, err=True))
    signal.signal(signal.SIGTERM, _terminated)
    if cluster_file:
        try:
            state = external.load(Path(cluster_file))
        except external.ClusterFileError as exc:
            typer.echo(f"Error: {exc}", err=True)
            raise typer.Exit(2) from None
        missing = external.missing_for(state, kinds)
        if missing:  # plain lines, not a wrapped box: they name the keys to add
            typer.echo(f"Error: {cluster_file} cannot run these faults (add the keys, or leave the "
                       "faults out of --nemesis):\n" + "\n".join(f"  {m}" for m in missing), err=True)
            raise typer.Exit(2)
        processes: Processes = external.CommandProcesses(state)
        say(f"{state['broker']} cluster of {len(state['nodes'])} from {cluster_file}")
    else:
        root = Path(directory).resolve() if directory else Path(tempfile.mkdtemp(prefix="warren-chaos-"))
        try:
            state = start_cluster(root, nodes, netns="partition" in kinds, own_disks="disk" in kinds)
        except ClusterError as exc:
            typer.echo(f"Error: cannot start the cluster: {exc}", err=True)
            raise typer.Exit(2) from None
        processes = LocalProcesses(root, state)
        say(f"cluster of {nodes} up in {root}")
    names = [f"chaos-{i}" for i in range(queues)]
    rng = random.Random(seed or None)
    nemeses = Nemesis(state, processes, names, rng)
    ok = False
    try:
        result = asyncio.run(_run(state, nemeses, kinds, names, queue_type, duration, interval, fault_seconds,
                                  publishers, consumers, window, size, drain_timeout, say))
        ok = result["verdict"]["ok"]
    finally:
        nemeses.heal_all()
        if not keep and not cluster_file:
            stop_cluster(state)
            if ok and not directory:
                shutil.rmtree(root, ignore_errors=True)
            elif not ok:
                typer.echo(f"the nodes' data and logs are kept in {root}", err=True)
    if report:
        no_png = write_report(Path(report), result)
        if no_png:
            typer.echo(f"note: {no_png}", err=True)
    verdict = result["verdict"]
    if as_json:
        typer.echo(json.dumps({k: v for k, v in result.items() if k != "series"}))
    else:
        _print(result)
    if verdict["ok"] and result["nemesis_errors"]:
        typer.echo("Error: the schedule did not run as asked: " + "; ".join(result["nemesis_errors"]), err=True)
        raise typer.Exit(2)
    raise typer.Exit(0 if verdict["ok"] else 1)


def _terminated(_signum: int, _frame: object) -> None:
    """SIGTERM ends a run as Ctrl-C does: faults healed, the cluster stopped, namespaces gone."""
    raise KeyboardInterrupt


async def _run(state: dict[str, Any], nemeses: Nemesis, kinds: list[str], names: list[str], queue_type: str,
               duration: float, interval: float, fault_seconds: float, publishers: int, consumers: int,
               window: int, size: int, drain_timeout: float, say: Any) -> dict[str, Any]:
    endpoints = [(str(n["name"]), node_amqp_url(n)) for n in state["nodes"]]
    await _declare(endpoints[0][1], names, queue_type)
    ledger, stats = Ledger(), Stats()
    stop = asyncio.Event()
    consumer_tasks = [asyncio.ensure_future(ChaosConsumer(i, endpoints, names[i % len(names)], ledger, stats, 64).run(stop))
                      for i in range(consumers)]
    until = time.monotonic() + duration
    publisher_tasks = [asyncio.ensure_future(
        ChaosPublisher(i, endpoints, names[i % len(names)], ledger, stats, window, size).run(until))
        for i in range(publishers)]
    faults: list[Fault] = []
    nemesis_errors: list[str] = []  # a fault not made or not healed (a node gone, a command failed)
    probes_made: list[str] = []
    turn = 0
    while True:
        await asyncio.sleep(interval)
        if time.monotonic() + fault_seconds > until:
            break
        kind = kinds[turn % len(kinds)]
        turn += 1
        node = nemeses.target(kind)
        fault = Fault(kind, node, stats.now())
        say(f"{fault.start:6.1f}s  {kind} {node}")
        try:
            nemeses.start(kind, node)
        except NemesisError as exc:
            nemesis_errors.append(str(exc))
            say(f"{stats.now():6.1f}s  {exc}; no more faults")
            break
        if kind in OBSERVED:
            fault.sides = nemeses.sides(kind, node)
            placement = dict(stats.placement)
            probes_made.append(f"chaos-probe-{turn}")
            probes = asyncio.ensure_future(_probe_metadata(endpoints, probes_made[-1]))
            await asyncio.sleep(fault_seconds)
            probed = await probes
        else:
            await asyncio.sleep(fault_seconds)
        healing = stats.now()  # what arrives once the heal starts is not the fault's
        try:
            await asyncio.to_thread(nemeses.heal, node)
        except NemesisError as exc:
            nemesis_errors.append(str(exc))
            say(f"{stats.now():6.1f}s  {exc}")
        fault.healed = stats.now()
        if kind in OBSERVED:
            fault.observed = _observed(stats, fault, healing, probed, placement)
        say(f"{fault.healed:6.1f}s  healed {node}")
        faults.append(fault)
    await asyncio.gather(*publisher_tasks)
    nemesis_errors += await asyncio.to_thread(nemeses.heal_all)
    await _delete_probes(endpoints[0][1], [f"{prefix}-{name}" for prefix in probes_made for name, _url in endpoints])
    say(f"{stats.now():6.1f}s  publishers done; draining")
    drained = await _drain(state, names, stats, drain_timeout)
    stop.set()
    await asyncio.gather(*consumer_tasks)
    for fault in faults:
        # over the fault and the calm after it, but not past the end of publishing
        fault.unavailable_seconds = unavailable_seconds(stats.confirms, fault.start,
                                                        min(fault.healed + interval, duration))
    verdict = check(ledger)
    all_confirms = [t for times in stats.confirms.values() for t in times]
    calm_end = faults[0].start if faults else duration  # before the first fault, after a warm-up second
    calm = sum(1 for t in all_confirms if 1.0 <= t < calm_end) / max(calm_end - 1.0, 0.001)
    return {"verdict": verdict, "drained": drained, "faults": [f.as_dict() for f in faults],
            "nemesis_errors": nemesis_errors,
            "calm_confirms_per_second": round(calm, 1),
            "broker": state.get("broker", "warren"), "nodes": len(state["nodes"]), "queues": names, "queue_type": queue_type, "duration": duration, "interval": interval,
            "failed_connects": stats.failed_connects,
            "series": {"confirms": all_confirms,
                       "deliveries": stats.deliveries, "latencies": stats.latencies}}


async def _declare(url: str, names: list[str], queue_type: str) -> None:
    arguments: dict[str, Any] = {"x-queue-type": "quorum"} if queue_type == "quorum" else {}
    client = await connect(url, 10.0, name="warren-chaos")
    try:
        for name in names:
            await client.call(spec.Queue.Declare(queue=name, durable=True, arguments=arguments), spec.Queue.DeclareOk)
            await client.call(spec.Queue.Purge(queue=name), spec.Queue.PurgeOk)
    finally:
        await client.close()


async def _probe_metadata(endpoints: list[tuple[str, str]], prefix: str) -> dict[str, dict[str, Any]]:
    """A queue.declare through every node, at once, a second into a partition: how each
    side answers a metadata change (the queue is ``PREFIX-NODE``, deleted after the run)."""
    await asyncio.sleep(PROBE_DELAY_SECONDS)

    async def probe(node: str, url: str) -> dict[str, Any]:
        started = time.monotonic()
        client = None
        try:
            client = await connect(url, PROBE_TIMEOUT_SECONDS, name="warren-chaos-probe")
            await client.call(spec.Queue.Declare(queue=f"{prefix}-{node}"), spec.Queue.DeclareOk,
                              timeout=PROBE_TIMEOUT_SECONDS)
            outcome: dict[str, Any] = {"declare": "ok"}
        except (BenchError, OSError) as exc:
            outcome = {"declare": "refused", "error": str(exc)}
        finally:
            if client is not None and client.transport is not None:
                client.transport.close()
        return {**outcome, "seconds": round(time.monotonic() - started, 2)}

    answers = await asyncio.gather(*(probe(node, url) for node, url in endpoints))
    return {node: answer for (node, _url), answer in zip(endpoints, answers, strict=True)}


def _observed(stats: Stats, fault: Fault, end: float, probed: dict[str, dict[str, Any]],
              placement: dict[str, str]) -> dict[str, dict[str, Any]]:
    """Per node, what its clients saw while the fault stood: how many were on it, confirms
    and deliveries per second (after a grace second), and the metadata probe's answer."""
    start = fault.start + GRACE_SECONDS
    span = max(end - start, 0.001)

    def rate(times: list[float]) -> float:
        return round(sum(1 for t in times if start <= t <= end) / span, 1)

    def clients(node: str, kind: str) -> int:
        return sum(1 for client, on in placement.items() if on == node and client.startswith(kind))

    return {node: {"publishers": clients(node, "publisher"), "consumers": clients(node, "consumer"),
                   "confirms_per_second": rate(stats.node_confirms.get(node, [])),
                   "deliveries_per_second": rate(stats.node_deliveries.get(node, [])),
                   "metadata": probed.get(node, {})}
            for node in fault.sides}


async def _delete_probes(url: str, queues: list[str]) -> None:
    if not queues:
        return
    client = await connect(url, 10.0, name="warren-chaos")
    try:
        for queue in queues:
            await client.call(spec.Queue.Delete(queue=queue), spec.Queue.DeleteOk, timeout=30.0)
    finally:
        await client.close()


async def _drain(state: dict[str, Any], names: list[str], stats: Stats, timeout: float) -> bool:
    """Until every queue is empty on every node's view and no delivery came for a while."""
    deadline = time.monotonic() + timeout
    while time.monotonic() < deadline:
        await asyncio.sleep(0.5)
        quiet = not stats.deliveries or stats.now() - stats.deliveries[-1] > QUIET_SECONDS
        if quiet and await asyncio.to_thread(_all_empty, state, names):
            return True
    return False


def _all_empty(state: dict[str, Any], names: list[str]) -> bool:
    for node in state["nodes"]:
        listed = listed_queues(node)
        if listed is None:
            return False
        counts = {q["name"]: q.get("messages", 1) for q in listed}
        if any(counts.get(name, 1) for name in names):
            return False
    return True


def _print(result: dict[str, Any]) -> None:
    v = result["verdict"]
    typer.echo(f"attempted {v['attempted']}  confirmed {v['confirmed']}  nacked {v['nacked']}  "
               f"consumed {v['consumed']}")
    typer.echo(f"lost {v['lost']}  unexpected {v['unexpected']}  duplicated {v['duplicated']} "
               f"({v['duplicated_flagged_redelivered']} flagged redelivered, {v['duplicated_unflagged']} not)  "
               f"recovered {v['recovered']}")
    typer.echo(f"confirms/s before the first fault: {result['calm_confirms_per_second']}")
    for fault in result["faults"]:
        typer.echo(f"  {fault['start']:6.1f}s {fault['nemesis']:<9} {fault['node']:<10} "
                   f"no confirms on some queue for at most {fault['unavailable_seconds']:.2f}s")
        for node, seen in fault.get("observed", {}).items():
            metadata = seen["metadata"]
            answer = metadata.get("declare", "?") + (f" ({metadata['error']})" if "error" in metadata else "")
            typer.echo(f"           {node:<10} {fault['sides'][node]:<9} {seen['publishers']}p/{seen['consumers']}c "
                       f"confirms/s {seen['confirms_per_second']:>7} "
                       f" deliveries/s {seen['deliveries_per_second']:>7}  declare {answer} "
                       f"in {metadata.get('seconds', 0)}s")
    for error in result["nemesis_errors"]:
        typer.echo(f"fault not made or not healed: {error}")
    if not result["drained"]:
        typer.echo("warning: the queues did not drain in time; lost counts may include messages still queued")
    typer.echo("OK: nothing confirmed was lost" if v["ok"] else f"FAILED: {json.dumps(v['samples'])}")



