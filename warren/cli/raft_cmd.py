"""``warren raft-node`` (hidden) and ``warren bench raft``: Raft groups as real processes.

``raft-node`` hosts K groups of a replicated-log state machine and serves a small client
protocol on ``--client-port`` (loopback test harness, no authentication), using the same
framing as the peer transport (4-byte length + msgpack):

- ``[id, "propose", group, data]``  -> ``[id, "ok", index]`` once committed and applied here,
  or ``[id, "err", reason, leader]`` (not the leader, leadership lost, timed out)
- ``[id, "status"]``                -> ``[id, "ok", {group: {...}}]``
- ``[id, "transfer", group, node]`` -> ``[id, "ok", started]`` (hand this node's leadership
  of ``group`` to ``node``)
- ``[id, "log", group, start, max]``-> ``[id, "ok", [[index, data], ...]]`` (applied entries)
"""

from __future__ import annotations

import asyncio
import contextlib
import itertools
import logging
import random
import signal
import sys
import time
from collections.abc import Callable, Coroutine
from dataclasses import dataclass, field
from functools import partial
from typing import Any, TypeVar

import msgpack
import typer

from warren.cli.main import app
from warren.errors import PeerProtocolError
from warren.io.peer import FrameDecoder, PeerTransport, encode_frame
from warren.io.raft_host import ProposalFailed, RaftHost
from warren.limits import Limits
from warren.raft.node import RaftNode
from warren.raft.types import message_from_wire
from warren.store.raft_group_storage import GroupStorage
from warren.store.raft_store import GroupId, RaftStore

log = logging.getLogger("warren.raft")

CLIENT_MAX_FRAME = 16 * 1024 * 1024
T = TypeVar("T")


@dataclass
class ReplicatedLog:
    """The state machine: every group's applied payloads, in order (or just their count)."""

    keep: bool = True
    entries: dict[GroupId, list[tuple[int, bytes]]] = field(default_factory=dict)
    applied: dict[GroupId, int] = field(default_factory=dict)

    def apply(self, group: GroupId, index: int, data: bytes) -> None:
        if self.keep:
            self.entries.setdefault(group, []).append((index, data))
        self.applied[group] = index

    def snapshot(self, group: GroupId) -> bytes:
        """The whole state (every payload kept): a test harness, not a message store."""
        return msgpack.packb([self.applied.get(group, 0), self.entries.get(group, [])])

    def restore(self, group: GroupId, index: int, data: bytes) -> None:
        applied, entries = msgpack.unpackb(data)
        self.applied[group] = applied
        if self.keep:
            self.entries[group] = [(i, payload) for i, payload in entries]


def parse_peers(spec: str) -> dict[int, tuple[str, int]]:
    """``1=127.0.0.1:7001,2=127.0.0.1:7002`` -> {1: ("127.0.0.1", 7001), ...}."""
    peers: dict[int, tuple[str, int]] = {}
    for part in spec.split(","):
        try:
            node, address = part.split("=", 1)
            host, port = address.rsplit(":", 1)
            peers[int(node)] = (host, int(port))
        except ValueError as exc:
            raise typer.BadParameter(f"--peers item {part!r} is not id=host:port") from exc
    return peers


# --- the client service ----------------------------------------------------------------


class ClientService:
    """Serves the client protocol for one node."""

    def __init__(
        self, host: RaftHost, machine: ReplicatedLog, status: Callable[[], dict[Any, Any]]
    ) -> None:
        self.host = host
        self.machine = machine
        self.status = status

    async def serve(self, reader: asyncio.StreamReader, writer: asyncio.StreamWriter) -> None:
        decoder = FrameDecoder(CLIENT_MAX_FRAME)
        out: list[bytes] = []

        def reply(obj: Any) -> None:
            if not out:
                asyncio.get_running_loop().call_soon(flush)
            out.append(encode_frame(obj))

        def flush() -> None:
            if not writer.is_closing():
                writer.write(b"".join(out))
            out.clear()

        try:
            while data := await reader.read(256 * 1024):
                for request in decoder.feed(data):
                    self._handle(request, reply)
        except (PeerProtocolError, ConnectionError):
            pass
        finally:
            writer.close()

    def _handle(self, request: Any, reply: Callable[[Any], None]) -> None:
        if not isinstance(request, list) or len(request) < 2:
            return
        rid, op = request[0], request[1]
        if op == "propose" and len(request) == 4:
            group = request[2]

            def done(index: int | None, error: ProposalFailed | None) -> None:
                if error is None:
                    reply([rid, "ok", index])
                else:
                    reply([rid, "err", str(error), self._leader(group)])

            self.host.propose_with(group, request[3], done)
        elif op == "status":
            reply([rid, "ok", self.status()])
        elif op == "transfer" and len(request) == 4:
            reply([rid, "ok", self.host.transfer_leadership(request[2], request[3])])
        elif op == "log" and len(request) == 5:
            _, _, group, start, limit = request
            entries = self.machine.entries.get(group, [])
            lo = next((i for i, (index, _) in enumerate(entries) if index >= start), len(entries))
            reply([rid, "ok", [list(e) for e in entries[lo : lo + limit]]])
        else:
            reply([rid, "err", f"bad request {op!r}", None])

    def _leader(self, group: GroupId) -> Any:
        slot = self.host.groups.get(group)
        return None if slot is None else slot.node.status().get("leader")  # type: ignore[attr-defined]


class RaftClient:
    """Pipelined client of one node's client port."""

    def __init__(self, reader: asyncio.StreamReader, writer: asyncio.StreamWriter) -> None:
        self.reader = reader
        self.writer = writer
        self._ids = itertools.count(1)
        self._waiting: dict[int, asyncio.Future[Any]] = {}
        self._out: list[bytes] = []
        self._reader_task = asyncio.get_running_loop().create_task(self._read())

    @classmethod
    async def connect(cls, host: str, port: int) -> RaftClient:
        reader, writer = await asyncio.open_connection(host, port)
        return cls(reader, writer)

    async def _read(self) -> None:
        decoder = FrameDecoder(CLIENT_MAX_FRAME)
        error: BaseException = ConnectionError("node closed the connection")
        try:
            while data := await self.reader.read(256 * 1024):
                for rid, *rest in decoder.feed(data):
                    future = self._waiting.pop(rid, None)
                    if future is not None and not future.done():
                        future.set_result(rest)
        except (OSError, PeerProtocolError) as exc:
            error = exc
        finally:  # also on close(): nobody waits for a reply that cannot come
            for future in self._waiting.values():
                if not future.done():
                    future.set_exception(error)
            self._waiting.clear()

    async def request(self, *args: Any) -> list[Any]:
        rid = next(self._ids)
        future: asyncio.Future[Any] = asyncio.get_running_loop().create_future()
        self._waiting[rid] = future
        if self._reader_task.done():
            raise ConnectionError("node closed the connection")
        if not self._out:
            asyncio.get_running_loop().call_soon(self._flush)
        self._out.append(encode_frame([rid, *args]))
        result: list[Any] = await future
        return result

    def _flush(self) -> None:
        if not self.writer.is_closing():
            self.writer.write(b"".join(self._out))
        self._out.clear()

    async def propose(self, group: GroupId, data: bytes) -> int:
        result = await self.request("propose", group, data)
        if result[0] != "ok":
            raise ProposalFailed(f"{result[1]} (leader: {result[2]})")
        return int(result[1])

    async def status(self) -> dict[Any, Any]:
        return dict((await self.request("status"))[1])

    async def transfer(self, group: GroupId, target: int) -> bool:
        return bool((await self.request("transfer", group, target))[1])

    async def log(
        self, group: GroupId, start: int = 1, limit: int = 1_000_000
    ) -> list[tuple[int, bytes]]:
        return [(i, d) for i, d in (await self.request("log", group, start, limit))[1]]

    async def close(self) -> None:
        self.writer.close()
        self._reader_task.cancel()
        await asyncio.gather(self._reader_task, return_exceptions=True)


# --- the node --------------------------------------------------------------------------


@dataclass
class NodeOptions:
    node_id: int
    peers: dict[int, tuple[str, int]]
    data_dir: str
    secret: bytes
    groups: int
    client_port: int
    tick_ms: float
    seed: int
    keep_log: bool
    quiesce_after_ticks: int
    snapshot_every: int


# How often a thread waiting for the GIL makes the running one hand it over (Python's
# default: 5 ms). The disk thread needs the GIL for a moment when its fsync returns, to hand
# the batch back to the loop; with the loop thread busy that moment waited up to 5 ms per
# batch, which a group pays in commit latency. Measured on 3 raft-node processes, 1 group:
# 10-18% more committed entries/s and a lower p99 at 0.5 ms, same CPU per entry.
GIL_SWITCH_INTERVAL_SECONDS = 0.0005


async def run_node(options: NodeOptions) -> None:
    sys.setswitchinterval(GIL_SWITCH_INTERVAL_SECONDS)
    limits = Limits().with_overrides(raft_snapshot_every_entries=options.snapshot_every)
    store = RaftStore(options.data_dir, limits.lmdb_map_size)
    machine = ReplicatedLog(keep=options.keep_log)
    rng = random.Random(options.seed * 1000 + options.node_id)
    transport: PeerTransport | None = None

    def send(peer: int, wire: Any) -> None:
        assert transport is not None
        transport.send(peer, wire)

    host = RaftHost(
        options.node_id,
        store,
        send,
        message_from_wire,
        machine,
        options.tick_ms / 1000,
        limits=limits,
        peers=options.peers,
    )
    voters = tuple(sorted(options.peers))
    build = partial(
        RaftNode,
        options.node_id,
        rng=rng,
        voters=voters,
        election_ticks=ELECTION_TICKS,
        heartbeat_ticks=HEARTBEAT_TICKS,
        quiesce_after_ticks=options.quiesce_after_ticks,
        limits=limits,
    )
    for group in range(options.groups):
        storage = GroupStorage(store, group)
        host.add_group(group, build(group, storage), storage)
    transport = PeerTransport(
        options.node_id,
        options.peers[options.node_id],
        options.peers,
        options.secret,
        host.on_peer_message,
        limits,
        rng,
    )
    await transport.start()
    await host.start()
    service = ClientService(
        host,
        machine,
        lambda: {g: s.node.status() for g, s in host.groups.items()},  # type: ignore[attr-defined]
    )
    server = await asyncio.start_server(service.serve, "127.0.0.1", options.client_port)
    port = server.sockets[0].getsockname()[1]
    print(f"raft-node {options.node_id} ready client_port={port}", flush=True)
    stop = asyncio.Event()
    loop = asyncio.get_running_loop()
    for sig in (signal.SIGTERM, signal.SIGINT):
        loop.add_signal_handler(sig, stop.set)
    await stop.wait()
    server.close()
    await transport.stop()
    await host.stop()
    store.close()


# Election timeout 300-600 ms and heartbeats every 50 ms at the default 10 ms tick: quick
# failover, yet no spurious elections when a loaded 2-core machine stalls a node briefly.
ELECTION_TICKS = 30
HEARTBEAT_TICKS = 5


@app.command("raft-node", hidden=True)
def raft_node(
    node_id: int = typer.Option(..., "--id", help="This node's id (a key of --peers)."),
    peers: str = typer.Option(..., help="Every node, this one included: id=host:port,..."),
    data_dir: str = typer.Option(..., help="Where the Raft store lives."),
    secret: str = typer.Option(..., help="The cluster's shared secret."),
    groups: int = typer.Option(1, help="How many Raft groups to host."),
    client_port: int = typer.Option(0, help="Client protocol port on 127.0.0.1 (0: any)."),
    tick_ms: float = typer.Option(10.0, help="Raft tick interval."),
    seed: int = typer.Option(1, help="Seed of the election-timeout randomness."),
    keep_log: bool = typer.Option(True, help="Keep applied payloads in memory (for GET log)."),
    quiesce_after_ticks: int = typer.Option(
        Limits().raft_quiesce_after_ticks, help="Idle ticks before a group goes quiet (0: never)."
    ),
    snapshot_every: int = typer.Option(
        Limits().raft_snapshot_every_entries, help="Snapshot a group every N applied entries (0: never)."
    ),
) -> None:
    """Run one node of a test Raft cluster hosting K replicated-log groups."""
    peer_map = parse_peers(peers)
    if node_id not in peer_map:
        raise typer.BadParameter(f"--id {node_id} is not in --peers")
    logging.basicConfig(level=logging.WARNING, format="%(asctime)s %(name)s %(message)s")
    options = NodeOptions(
        node_id,
        peer_map,
        data_dir,
        secret.encode(),
        groups,
        client_port,
        tick_ms,
        seed,
        keep_log,
        quiesce_after_ticks,
        snapshot_every,
    )
    _run(run_node(options))


def _run(main: Coroutine[Any, Any, T]) -> T:
    """Run ``main`` on uvloop when it is installed (the nodes and the benchmark's driver
    share the machine's cores: the faster loop leaves more of them to the nodes)."""
    try:
        import uvloop
    except ImportError:
        return asyncio.run(main)
    return uvloop.run(main)


# --- a local cluster of raft-node processes (the benchmark's and the tests' harness) ---


def free_ports(count: int) -> list[int]:
    import socket

    sockets = [socket.socket() for _ in range(count)]
    try:
        for s in sockets:
            s.bind(("127.0.0.1", 0))
        return [s.getsockname()[1] for s in sockets]
    finally:
        for s in sockets:
            s.close()


@dataclass
class NodeProcess:
    node_id: int
    args: list[str]
    client_port: int
    proc: Any = None  # subprocess.Popen
    client: RaftClient | None = None

    def start(self) -> None:
        import subprocess

        self.proc = subprocess.Popen(
            # This module directly, so a node starts even if another command fails to import.
            [sys.executable, "-m", "warren.cli.raft_cmd", *self.args],
            stdout=subprocess.PIPE,
            stderr=subprocess.STDOUT,
            text=True,
        )

    async def wait_ready(self, timeout: float = 20.0) -> None:
        loop = asyncio.get_running_loop()
        line = await asyncio.wait_for(
            loop.run_in_executor(None, self.proc.stdout.readline), timeout
        )
        if "ready" not in line:
            rest = await loop.run_in_executor(None, self.proc.stdout.read)
            raise RuntimeError(f"raft-node {self.node_id} failed to start: {line}{rest}")
        # Keep draining its output so a chatty node never blocks on a full pipe.
        loop.run_in_executor(None, self.proc.stdout.read)
        self.client = await RaftClient.connect("127.0.0.1", self.client_port)

    def signal(self, sig: int) -> None:
        if self.proc is not None and self.proc.poll() is None:
            self.proc.send_signal(sig)

    async def kill(self) -> None:
        self.signal(signal.SIGKILL)
        if self.client is not None:
            await self.client.close()
            self.client = None
        if self.proc is not None:
            await asyncio.get_running_loop().run_in_executor(None, self.proc.wait)


class LocalCluster:
    """N ``warren raft-node`` processes on loopback, each with its own data directory."""

    def __init__(
        self,
        base_dir: str,
        nodes: int = 3,
        groups: int = 1,
        keep_log: bool = True,
        quiesce_after_ticks: int | None = None,
        snapshot_every: int | None = None,
        tick_ms: float = 10.0,
        secret: str = "bench-secret",
    ) -> None:
        ports = free_ports(2 * nodes)
        peers = ",".join(f"{i + 1}=127.0.0.1:{ports[i]}" for i in range(nodes))
        self.nodes: dict[int, NodeProcess] = {}
        for i in range(nodes):
            node_id = i + 1
            args = [
                "raft-node",
                "--id",
                str(node_id),
                "--peers",
                peers,
                "--data-dir",
                f"{base_dir}/node{node_id}",
                "--secret",
                secret,
                "--groups",
                str(groups),
                "--client-port",
                str(ports[nodes + i]),
                "--tick-ms",
                str(tick_ms),
                "--seed",
                str(node_id),
                "--keep-log" if keep_log else "--no-keep-log",
                *(() if quiesce_after_ticks is None
                  else ("--quiesce-after-ticks", str(quiesce_after_ticks))),
                *(() if snapshot_every is None else ("--snapshot-every", str(snapshot_every))),
            ]
            self.nodes[node_id] = NodeProcess(node_id, args, ports[nodes + i])

    async def start(self) -> None:
        for node in self.nodes.values():
            node.start()
        await asyncio.gather(*(node.wait_ready() for node in self.nodes.values()))

    async def restart(self, node_id: int) -> None:
        node = self.nodes[node_id]
        node.start()
        await node.wait_ready()

    async def stop(self) -> None:
        for node in self.nodes.values():
            node.signal(signal.SIGCONT)
            await node.kill()

    async def balance_leaders(self, groups: int, timeout: float = 30.0) -> None:
        """Move leaderships so group g is led by node ``g % nodes + 1`` (as a cluster with
        balanced leaders would place them), and wait until they are."""
        ids = sorted(self.nodes)
        loop = asyncio.get_running_loop()
        deadline = loop.time() + timeout
        while True:
            moved = 0
            for g in range(groups):
                want = ids[g % len(ids)]
                have = await self.leader(g, timeout=max(0.1, deadline - loop.time()))
                if have != want:
                    client = self.nodes[have].client
                    assert client is not None
                    await client.transfer(g, want)
                    moved += 1
            if not moved:
                return
            if loop.time() > deadline:
                raise TimeoutError(f"leaders still moving after {timeout}s")
            await asyncio.sleep(0.2)

    async def leader(self, group: GroupId, timeout: float = 10.0) -> int:
        """The node that reports itself leader of ``group`` (waits for one)."""
        loop = asyncio.get_running_loop()
        deadline = loop.time() + timeout
        while True:
            for node_id, node in self.nodes.items():
                if node.client is None:
                    continue
                try:
                    status = await asyncio.wait_for(node.client.status(), 0.5)
                except (OSError, TimeoutError, ConnectionError):
                    continue
                if (
                    status.get(group, {}).get("leader") == node_id
                    and status[group].get("role") == "leader"
                ):
                    return node_id
            if loop.time() > deadline:
                raise TimeoutError(f"no leader for group {group} within {timeout}s")
            await asyncio.sleep(0.02)


# --- warren bench raft ------------------------------------------------------------------


def percentile(sorted_values: list[float], q: float) -> float:
    if not sorted_values:
        return float("nan")
    return sorted_values[min(len(sorted_values) - 1, int(q * len(sorted_values)))]


async def _drive(
    cluster: LocalCluster, groups: int, entry_size: int, inflight: int, seconds: float
) -> dict[str, Any]:
    clock = time.perf_counter  # uvloop's loop clock counts whole milliseconds
    payload = b"x" * entry_size
    if groups > 1:
        await cluster.balance_leaders(groups)
    leaders = {g: await cluster.leader(g) for g in range(groups)}
    led = {f"node{n}": sum(1 for x in leaders.values() if x == n) for n in cluster.nodes}
    latencies: list[float] = []
    failures = 0
    stop_at = clock() + seconds

    async def worker(group: int) -> None:
        nonlocal failures
        client = cluster.nodes[leaders[group]].client
        assert client is not None
        while clock() < stop_at:
            start = clock()
            try:
                await client.propose(group, payload)
            except ProposalFailed:
                failures += 1
                # Leadership moved (an election during the run): follow it, do not spin.
                await asyncio.sleep(0.05)
                with contextlib.suppress(TimeoutError):
                    leaders[group] = await cluster.leader(group, timeout=2.0)
                client = cluster.nodes[leaders[group]].client
                assert client is not None
                continue
            latencies.append(clock() - start)

    workers = [worker(w % groups) for w in range(max(inflight, groups))]
    cpu_before = _cpu_seconds(cluster)
    started = clock()
    await asyncio.gather(*workers)
    elapsed = clock() - started
    cpu_after = _cpu_seconds(cluster)
    latencies.sort()
    per_1k = 1000 / max(1, len(latencies))
    return {
        "groups": groups,
        "entry_size": entry_size,
        "inflight": max(inflight, groups),
        "seconds": round(elapsed, 2),
        "committed": len(latencies),
        "committed_per_second": round(len(latencies) / elapsed),
        "latency_p50_ms": round(percentile(latencies, 0.5) * 1000, 2),
        "latency_p99_ms": round(percentile(latencies, 0.99) * 1000, 2),
        "failed_proposals": failures,
        "groups_led_at_start": led,
        # CPU (user + system) each process spent per 1,000 committed entries: a figure that
        # other load on the machine disturbs less than the rates above.
        "cpu_ms_per_1k_entries": {
            name: round((cpu_after[name] - cpu_before[name]) * 1000 * per_1k, 1)
            for name in cpu_before
        },
    }


def _cpu_seconds(cluster: LocalCluster) -> dict[str, float]:
    """CPU time so far of every running node process and of this driver process."""
    import psutil

    out: dict[str, float] = {}
    for node_id, node in cluster.nodes.items():
        if node.proc is not None and node.proc.poll() is None:
            t = psutil.Process(node.proc.pid).cpu_times()
            out[f"node{node_id}"] = t.user + t.system
    t = psutil.Process().cpu_times()
    out["driver"] = t.user + t.system
    return out


async def _failover(cluster: LocalCluster) -> tuple[int, float]:
    """Kill -9 group 0's leader: (its id, seconds to the first commit under a successor)."""
    clock = time.perf_counter
    old = await cluster.leader(0)
    killed_at = clock()
    await cluster.nodes[old].kill()
    while clock() - killed_at < 30:
        for node_id, node in cluster.nodes.items():
            if node_id == old or node.client is None:
                continue
            try:
                await asyncio.wait_for(node.client.propose(0, b"after failover"), 0.2)
            except (ProposalFailed, TimeoutError, ConnectionError):
                continue
            return old, clock() - killed_at
        await asyncio.sleep(0.005)
    raise TimeoutError("no commit within 30 s of the leader's death")


async def run_bench(
    groups: int,
    entry_size: int,
    inflight: int,
    seconds: float,
    failover: bool,
    failovers: int = 3,
) -> dict[str, Any]:
    import tempfile

    with tempfile.TemporaryDirectory(prefix="warren-bench-raft-") as base:
        cluster = LocalCluster(base, nodes=3, groups=groups, keep_log=False)
        await cluster.start()
        try:
            result = await _drive(cluster, groups, entry_size, inflight, seconds)
            times = []
            victim: int | None = None
            for _ in range(failovers if failover else 0):
                if victim is not None:  # bring the last victim back, let the group settle
                    await cluster.restart(victim)
                    await asyncio.sleep(1.0)
                victim, seconds_taken = await _failover(cluster)
                times.append(round(seconds_taken, 3))
            if times:
                result["failover_seconds"] = sorted(times)[len(times) // 2]  # the median
                result["failover_seconds_all"] = times
            return result
        finally:
            await cluster.stop()


async def run_idle_bench(groups: int, seconds: float, quiesce_after_ticks: int | None) -> dict[str, Any]:
    """CPU that 3 nodes hosting ``groups`` idle groups spend per second of wall time."""
    import tempfile

    with tempfile.TemporaryDirectory(prefix="warren-bench-raft-idle-") as base:
        cluster = LocalCluster(base, nodes=3, groups=groups, keep_log=False,
                               quiesce_after_ticks=quiesce_after_ticks)
        await cluster.start()
        try:
            for g in range(groups):
                await cluster.leader(g, timeout=60.0)
            # One proposal per group, so each went through a term's traffic, then let it settle.
            client = cluster.nodes[1].client
            assert client is not None
            for g in range(groups):
                leader = cluster.nodes[await cluster.leader(g, timeout=30.0)].client
                assert leader is not None
                await leader.propose(g, b"x")
            await asyncio.sleep(3.0)
            before, started = _cpu_seconds(cluster), time.perf_counter()
            await asyncio.sleep(seconds)
            after, elapsed = _cpu_seconds(cluster), time.perf_counter() - started
            status = await client.status()
            return {
                "groups": groups,
                "seconds": round(elapsed, 2),
                "quiesced_groups_on_node1": sum(1 for s in status.values() if s.get("quiesced")),
                "cpu_percent_of_a_core": {
                    name: round(100 * (after[name] - before[name]) / elapsed, 2)
                    for name in before if name != "driver"
                },
            }
        finally:
            await cluster.stop()


def register_bench() -> None:
    from warren.cli.bench_cmd import bench_app

    @bench_app.command("raft")
    def bench_raft(
        groups: int = typer.Option(1, help="Raft groups (each a 3-node group on loopback)."),
        entry_size: int = typer.Option(1024, help="Bytes per proposed entry."),
        inflight: int = typer.Option(256, help="Proposals in flight in total."),
        seconds: float = typer.Option(10.0, help="How long to drive proposals."),
        failover: bool = typer.Option(True, help="Then kill -9 a leader and time the failover."),
        failovers: int = typer.Option(
            3, help="How many failovers to time (the victim restarts between them)."
        ),
        json_output: bool = typer.Option(False, "--json", help="Print one JSON object."),
    ) -> None:
        """Committed entries/s and commit latency of 3 real raft-node processes (fsync on)."""
        import json

        result = _run(run_bench(groups, entry_size, inflight, seconds, failover, failovers))
        if json_output:
            typer.echo(json.dumps(result))
            return
        for key, value in result.items():
            typer.echo(f"{key:>22}: {value}")


    @bench_app.command("raft-idle")
    def bench_raft_idle(
        groups: int = typer.Option(1000, help="Idle Raft groups on 3 real raft-node processes."),
        seconds: float = typer.Option(10.0, help="How long to measure."),
        quiesce_after_ticks: int = typer.Option(
            Limits().raft_quiesce_after_ticks, help="Idle ticks before a group goes quiet (0: never)."
        ),
        json_output: bool = typer.Option(False, "--json", help="Print one JSON object."),
    ) -> None:
        """CPU per node of idle groups: what quiescence and node-level heartbeats save."""
        import json

        result = _run(run_idle_bench(groups, seconds, quiesce_after_ticks))
        if json_output:
            typer.echo(json.dumps(result))
            return
        for key, value in result.items():
            typer.echo(f"{key:>26}: {value}")


register_bench()


if __name__ == "__main__":
    app()
