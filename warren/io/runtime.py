"""Runs one node on an asyncio loop: listeners, the disk committer, ticks, alarms, shutdown."""

from __future__ import annotations

import asyncio
import ctypes
import logging
import os
import queue
import secrets
import shutil
import ssl
import threading
import time
from collections.abc import Callable
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

import psutil

from warren.broker.auth import SHA256, Broker
from warren.errors import ConfigError, ReplyCode, StoreError
from warren.io.amqp_listener import Flusher, start_amqp_listener
from warren.limits import Limits
from warren.node.memory import MemoryMonitor
from warren.node.node import Node
from warren.node.persistence import Persistence
from warren.store.broker_store import BrokerStore

log = logging.getLogger("warren")

TICK_SECONDS = 0.1
ALARM_CHECK_SECONDS = 1.0
STORE_RETRY_SECONDS = 1.0  # a failed store commit is tried again this often


@dataclass
class NodeConfig:
    data_dir: str = "./warren-data"
    amqp_port: int = 5672
    http_port: int = 15672
    prometheus_port: int | None = None
    bind: str = "127.0.0.1"
    node_name: str = "warren@localhost"
    tls_port: int | None = None
    tls_cert: str | None = None
    tls_key: str | None = None
    tls_ca: str | None = None
    tls_verify_peer: bool = False
    http_enabled: bool = True
    limits: Limits = field(default_factory=Limits)
    default_user: str = "guest"
    default_pass: str = "guest"
    default_vhost: str = "/"
    health_checks_require_auth: bool = False
    # RabbitMQ's loopback_users: who may log in only from localhost ("none": nobody)
    loopback_users: str | list[str] = "guest"
    # Cluster mode is on when a cluster secret is set; without one the node is standalone
    # (no cluster port). See warren.io.cluster.
    cluster_secret: str | None = None
    cluster_port: int = 25672  # 0 picks a free one
    seeds: str | list[str] = ""  # host:port,... of members to join through (first start only)
    cluster_tls_cert: str | None = None
    cluster_tls_key: str | None = None
    cluster_tls_ca: str | None = None

    @property
    def clustered(self) -> bool:
        return bool(self.cluster_secret)


def _unique_name(prefix: str) -> str:
    return prefix + secrets.token_urlsafe(16)


def _release_free_heap() -> None:
    """Return the C heap's free pages to the OS (glibc keeps freed memory mapped otherwise)."""
    try:
        trim = ctypes.CDLL(None).malloc_trim
    except (OSError, AttributeError):  # not glibc
        return
    trim(0)


def _wall_ms() -> int:
    return int(time.time() * 1000)


def build_ssl_context(config: NodeConfig) -> ssl.SSLContext | None:
    if config.tls_port is None:
        return None
    if not config.tls_cert or not config.tls_key:
        raise ConfigError("--tls-port needs --tls-cert and --tls-key (PEM files)")
    context = ssl.create_default_context(ssl.Purpose.CLIENT_AUTH)
    try:
        context.load_cert_chain(config.tls_cert, config.tls_key)
        if config.tls_ca:
            context.load_verify_locations(config.tls_ca)
    except (OSError, ssl.SSLError) as exc:
        raise ConfigError(f"cannot load TLS files: {exc}; check --tls-cert/--tls-key/--tls-ca") from exc
    if config.tls_verify_peer:
        if not config.tls_ca:
            raise ConfigError("--tls-verify-peer needs --tls-ca (the CA that signs client certificates)")
        context.verify_mode = ssl.CERT_REQUIRED
    return context


class DiskThread:
    """The thread that runs store commits, one at a time, and hands each result to the loop.

    Lighter than ``run_in_executor`` on the hot path (no concurrent.futures machinery, no
    thread-pool bookkeeping): one queue put to start a commit, one ``call_soon_threadsafe``
    to finish it.
    """

    def __init__(self, loop: asyncio.AbstractEventLoop) -> None:
        self._loop = loop
        self._jobs: queue.SimpleQueue[tuple[Callable[[Any], Any], Any, asyncio.Future[Any]] | None] = (
            queue.SimpleQueue())
        self._thread = threading.Thread(target=self._run, name="warren-disk", daemon=True)
        self._thread.start()

    def run(self, fn: Callable[[Any], Any], arg: Any) -> asyncio.Future[Any]:
        future = self._loop.create_future()
        self._jobs.put((fn, arg, future))
        return future

    def stop(self) -> None:
        self._jobs.put(None)
        self._thread.join(timeout=30)

    def _run(self) -> None:
        while True:
            job = self._jobs.get()
            if job is None:
                return
            fn, arg, future = job
            try:
                result, error = fn(arg), None
            except Exception as exc:  # noqa: BLE001 - handed to the awaiting coroutine
                result, error = None, exc
            try:
                self._loop.call_soon_threadsafe(_settle, future, result, error)
            except RuntimeError:  # the loop is closed: nobody waits any more
                return


def _settle(future: asyncio.Future[Any], result: Any, error: Exception | None) -> None:
    if future.cancelled():
        return
    if error is not None:
        future.set_exception(error)
    else:
        future.set_result(result)


class NodeRuntime:
    """A running node. Use ``await start()``, then ``await stop()`` (or run_forever)."""

    def __init__(self, config: NodeConfig) -> None:
        config.limits.validate()
        self.config = config
        self.loop: asyncio.AbstractEventLoop | None = None
        self.node: Node | None = None
        self.store: BrokerStore | None = None
        self.amqp_port: int | None = None
        self.tls_port: int | None = None
        self.http_port: int | None = None
        self.prometheus_port: int | None = None
        self.cluster: Any = None  # warren.io.cluster.ClusterRuntime when clustered
        self.replicated: Any = None  # its warren.io.cluster_commands.ReplicatedCommands
        self._servers: list[asyncio.AbstractServer] = []
        self._tasks: list[asyncio.Task[Any]] = []
        self._http_runner: Any = None
        self._commit_wakeup = asyncio.Event()
        self._stopping = False
        self.memory_monitor = MemoryMonitor(0, config.limits.memory_alarm_clear_ratio)

    @property
    def amqp_url(self) -> str:
        host = self.config.bind if self.config.bind not in ("0.0.0.0", "::") else "127.0.0.1"
        return f"amqp://{self.config.default_user}:{self.config.default_pass}@{host}:{self.amqp_port}/%2F"

    async def start(self) -> None:
        self.loop = asyncio.get_running_loop()
        config = self.config
        limits = config.limits
        self.store = BrokerStore(config.data_dir, limits.lmdb_map_size)
        persistence = Persistence(self.store, self._commit_wakeup.set)
        if config.clustered:
            # definitions come from the metadata group (and its first member's defaults)
            if persistence.has_definitions():
                raise ConfigError(
                    f"{config.data_dir} holds a standalone node's definitions: start it without "
                    "--cluster-secret, or give the clustered node a new --data-dir (export the "
                    "definitions over HTTP and import them into the cluster)")
            broker = Broker(salt_source=os.urandom, limits=limits)
        else:
            broker = Broker.with_defaults(
                config.default_user, config.default_pass, config.default_vhost, salt_source=os.urandom,
                limits=limits)
            persistence.recover(broker)
            self._released_recovery_memory()
        broker.loopback_users = set(parse_loopback_users(config.loopback_users))
        self.node = Node(
            name=config.node_name,
            limits=limits,
            broker=broker,
            persistence=persistence,
            monotonic=time.monotonic,
            wall_ms=_wall_ms,
            unique_name=_unique_name,
        )
        persistence.attach(self.node)
        self.node.boot_id = secrets.token_hex(4)
        if config.clustered:
            from warren.io.cluster_commands import ReplicatedCommands

            self.node.definitions_in_log = True
            self.node.accepting = False  # until the metadata group restored the definitions
            self.node.commands = self.replicated = ReplicatedCommands(self.node)
        flusher = Flusher(self.loop, self.node)
        self._flusher = flusher
        server = await start_amqp_listener(self.loop, self.node, flusher, config.bind, config.amqp_port)
        self._servers.append(server)
        self.amqp_port = server.sockets[0].getsockname()[1]
        self.node.listeners.append({"protocol": "amqp", "port": self.amqp_port, "ip_address": config.bind})
        ssl_context = build_ssl_context(config)
        if ssl_context is not None and config.tls_port is not None:
            tls_server = await start_amqp_listener(
                self.loop, self.node, flusher, config.bind, config.tls_port, ssl_context
            )
            self._servers.append(tls_server)
            self.tls_port = tls_server.sockets[0].getsockname()[1]
            self.node.listeners.append({"protocol": "amqp/ssl", "port": self.tls_port, "ip_address": config.bind})
        total = psutil.virtual_memory().total
        self.memory_limit = limits.memory_high_watermark_bytes or int(total * limits.memory_high_watermark_ratio)
        self.node.memory_monitor = self.memory_monitor
        if config.http_enabled:
            await self._start_http()
        if config.clustered:
            try:
                await self._start_cluster()
            except BaseException:
                await self.stop()
                raise
        # a first reading, with everything loaded: the fast path adds to it from the first client on
        self.node.set_resource_alarms(self.memory_monitor.reading(psutil.Process().memory_info().rss), self.node.disk_low)
        self._tasks.append(self.loop.create_task(self._ticker()))
        self._tasks.append(self.loop.create_task(self._committer()))
        self._tasks.append(self.loop.create_task(self._alarm_watcher()))

    def _released_recovery_memory(self) -> None:
        assert self.store is not None
        if self.store.stat()["messages"]:
            # recovery read every stored message: drop those pages and the freed bodies from RSS
            self.store.release_pages()
            _release_free_heap()

    async def _start_http(self) -> None:
        try:
            from warren.api.server import start_http  # the management plane, when installed
        except ImportError:
            return
        assert self.node is not None
        result = await start_http(self, self.config.bind, self.config.http_port, self.config.prometheus_port)
        self._http_runner = result.runner
        self.http_port = result.http_port
        self.prometheus_port = result.prometheus_port
        self.node.listeners.append({"protocol": "http", "port": self.http_port, "ip_address": self.config.bind})
        if self.prometheus_port is not None:  # as RabbitMQ lists its Prometheus plugin's listener
            self.node.listeners.append({"protocol": "http/prometheus", "port": self.prometheus_port,
                                        "ip_address": self.config.bind})

    async def _start_cluster(self) -> None:
        from warren.io.cluster import ClusterRuntime, ClusterSettings
        from warren.io.peer import peer_tls

        config = self.config
        tls_files = (config.cluster_tls_cert, config.cluster_tls_key, config.cluster_tls_ca)
        tls = None
        if any(tls_files):
            if not all(tls_files):
                raise ConfigError("cluster TLS needs all of --cluster-tls-cert, --cluster-tls-key "
                                  "and --cluster-tls-ca (PEM files)")
            tls = peer_tls(*tls_files)  # type: ignore[arg-type]
        host = config.bind if config.bind not in ("0.0.0.0", "::") else "127.0.0.1"
        assert config.cluster_secret
        settings = ClusterSettings(
            data_dir=config.data_dir, node_name=config.node_name,
            secret=config.cluster_secret.encode(), bind=config.bind, port=config.cluster_port,
            seeds=parse_seeds(config.seeds), tls=tls, limits=config.limits,
            amqp_address=f"{host}:{self.amqp_port}",
            http_address=f"{host}:{self.http_port}" if self.http_port else "",
        )
        self.cluster = ClusterRuntime(settings, definitions=self.replicated)
        self.cluster.on_stats = getattr(self, "cluster_stats", None)  # set by warren.api.server
        self.replicated.group = self.cluster
        from warren.io.quorum_groups import QuorumGroups
        from warren.node.quorum import QuorumQueues

        assert self.node is not None
        # before start(): replaying the metadata log hosts the quorum queues' groups
        assert self._flusher is not None
        quorum = self.node.quorum = QuorumQueues(self.node, self.cluster.send_to, self.cluster.is_up,
                                                 schedule_flush=self._flusher.schedule)
        QuorumGroups(self.cluster, quorum)
        await self.cluster.start()
        await self.cluster.wait_recovered()
        node = self.node
        assert node is not None and node.persistence is not None
        node.host_quorum_queues(delete_gone=True)  # what the replay left: removed while down
        node.persistence.recover_messages(node.broker)
        self._released_recovery_memory()
        await self._create_cluster_defaults()
        cluster = self.cluster
        node.alive_members = lambda: [m["name"] for m in cluster.members() if m["status"] == "alive"]
        from warren.node.remote import Forwarder

        assert self._flusher is not None
        forwarder = node.forwarder = Forwarder(node, cluster.send_to, cluster.is_up,
                                               self.config.limits.forward_consumer_credit,
                                               schedule_flush=self._flusher.schedule)
        from warren.cluster.forwarding import QUORUM_KINDS, Fwd

        def forwarded(peer: str, message: dict[str, Any]) -> None:
            if message.get("f") == Fwd.RELEASED:
                forwarder.released_by(peer)
                quorum.peer_up(peer)
                return
            (quorum.on_message if message.get("f") in QUORUM_KINDS else forwarder.on_message)(peer, message)

        cluster.on_forwarded = forwarded

        def link_changed(name: str, up: bool) -> None:
            if up:  # it may not know it was away (a pause): tell it what we let go of
                cluster.send_to(name, {"f": Fwd.RELEASED})
                quorum.peer_up(name)
            else:
                forwarder.peer_down(name)
                quorum.peer_down(name)

        cluster.on_link_change = link_changed
        node.accepting = True
        self._tasks.append(self.loop.create_task(self._delete_stale_exclusive_queues()))

    async def _create_cluster_defaults(self) -> None:
        """The first member creates the default vhost and user, once (a marker file
        remembers it, so an operator's later deletion of guest is never undone)."""
        from warren.cluster.definitions import PutUser, PutVhost, SetPermissions

        assert self.node is not None and self.cluster is not None
        node, config = self.node, self.config
        marker = Path(config.data_dir) / "cluster" / "defaults-created"
        if self.cluster.local_id != 1 or marker.exists():
            return
        for command in (
            PutVhost(config.default_vhost),
            PutUser(config.default_user, node.broker.new_password_hash(config.default_user, config.default_pass),
                    SHA256, ("administrator",)),
            SetPermissions(config.default_user, config.default_vhost, ".*", ".*", ".*"),
        ):
            outcome = await self._submit(command)
            if outcome.error is not None:
                raise ConfigError(f"cannot create the default vhost and user: {outcome.error.text}")
        marker.write_text("the default vhost and user were created\n")

    async def _delete_stale_exclusive_queues(self) -> None:
        """Exclusive queues this node's earlier runs owned: their connections are gone."""
        from warren.cluster.definitions import DeleteQueue

        assert self.node is not None
        node = self.node
        mine = f"{node.name}#"
        for vhost in list(node.broker.vhosts.values()):
            for stale in list(vhost.queues.values()):
                owner = stale.owner
                if isinstance(owner, str) and owner.startswith(mine) and not owner.startswith(node.owner_prefix):
                    outcome = await self._submit(DeleteQueue(vhost.name, stale.name, owner=owner))
                    if outcome.error is not None:
                        log.warning("could not delete stale exclusive queue %r: %s", stale.name, outcome.error.text)

    async def _submit(self, command: Any) -> Any:
        assert self.node is not None
        future: asyncio.Future[Any] = self.loop.create_future()
        self.node.commands.submit(command, future.set_result)
        return await future

    def startup_line(self) -> str:
        parts = [f"Warren node {self.config.node_name} ready: AMQP on {self.config.bind}:{self.amqp_port}"]
        if self.tls_port is not None:
            parts.append(f"AMQPS on {self.config.bind}:{self.tls_port}")
        if self.http_port is not None:
            parts.append(f"HTTP on {self.config.bind}:{self.http_port}")
        if self.prometheus_port is not None:
            parts.append(f"Prometheus on {self.config.bind}:{self.prometheus_port}")
        if self.cluster is not None:
            parts.append(f"cluster on {self.cluster.address} as member {self.cluster.local_id}")
        parts.append(f"data in {os.path.abspath(self.config.data_dir)}")
        return ", ".join(parts)

    async def _ticker(self) -> None:
        assert self.node is not None
        while True:
            await asyncio.sleep(TICK_SECONDS)
            self.node.tick()

    async def _committer(self) -> None:
        """Group commit: everything written while the previous fsync ran goes in the next one.

        A failed commit nacks the publishes it covered and sets the store error (a disk
        alarm); its writes are retried, with whatever came since, every
        STORE_RETRY_SECONDS until one succeeds, which clears the alarm.
        """
        assert self.node is not None and self.node.persistence is not None and self.loop is not None
        persistence = self.node.persistence
        disk = DiskThread(self.loop)
        try:
            while True:
                failing = persistence.retry_pending or self.node.store_error is not None
                if failing:
                    try:
                        await asyncio.wait_for(self._commit_wakeup.wait(), STORE_RETRY_SECONDS)
                    except TimeoutError:
                        pass
                else:
                    await self._commit_wakeup.wait()
                self._commit_wakeup.clear()
                batch = persistence.take_batch(probe=failing)
                if batch is None:
                    continue
                try:
                    await disk.run(persistence.store.commit, batch.writes)
                except StoreError as exc:
                    persistence.commit_failed(batch)
                    self.node.set_store_error(str(exc))
                    self.node.flush()
                    continue
                persistence.committed(batch)
                self.node.set_store_error(None)
                self.node.flush()
        finally:
            disk.stop()  # after the commit in progress, if any: stop() then commits the rest

    async def _alarm_watcher(self) -> None:
        """Read memory and disk once a second into the node's alarms (see warren.node.memory)."""
        assert self.node is not None
        process = psutil.Process()
        limits = self.config.limits
        monitor = self.memory_monitor
        while True:
            await asyncio.sleep(ALARM_CHECK_SECONDS)
            try:
                rss = process.memory_info().rss
                if monitor.should_trim(rss):
                    # freed memory that glibc keeps mapped is not in use: give it back first;
                    # in a thread, as a trim of a large heap takes milliseconds
                    await asyncio.to_thread(_release_free_heap)
                    rss = process.memory_info().rss
                free = shutil.disk_usage(self.config.data_dir).free
            except OSError:
                continue
            self.node.set_resource_alarms(monitor.reading(rss), free < limits.disk_free_limit_bytes)

    @property
    def memory_limit(self) -> int:
        """The memory high watermark in bytes."""
        return self.memory_monitor.limit

    @memory_limit.setter
    def memory_limit(self, limit: int) -> None:
        self.memory_monitor.limit = limit

    async def stop(self) -> None:
        """Clean shutdown: refuse new connections, close clients with 320, flush the store."""
        if self._stopping:
            return
        self._stopping = True
        for server in self._servers:
            server.close()
        if self.node is not None:
            for session in list(self.node.sessions.values()):
                session.conn.close(ReplyCode.CONNECTION_FORCED, "CONNECTION_FORCED - broker forced connection closure with reason 'shutdown'")
                self.node.session_changed(session)
            self.node.flush()
            await asyncio.sleep(0.05)  # let close frames reach the sockets
        for task in self._tasks:
            task.cancel()
        for task in self._tasks:
            try:
                await task
            except (asyncio.CancelledError, Exception):  # noqa: PERF203 - shutdown path
                pass
        if self.node is not None and self.node.persistence is not None:
            batch = self.node.persistence.take_batch()
            if batch is not None:
                self.node.persistence.store.commit(batch.writes)
                self.node.persistence.committed(batch)
        if self.replicated is not None:
            self.replicated.stop()
        if self.cluster is not None:
            await self.cluster.stop()
        if self._http_runner is not None:
            await self._http_runner.cleanup()
        for server in self._servers:
            try:
                await asyncio.wait_for(server.wait_closed(), 1.0)
            except (TimeoutError, Exception):
                pass
        if self.node is not None:
            for transport_session in list(self.node.sessions.values()):
                self.node.client_lost(transport_session)
        if self.store is not None:
            self.store.close()
            self.store = None


def parse_loopback_users(users: str | list[str]) -> list[str]:
    """``guest,admin`` or a TOML list; ``none`` (or nothing) for no loopback-only user."""
    items = users.split(",") if isinstance(users, str) else list(users)
    names = [item.strip() for item in items if item.strip()]
    return [] if names == ["none"] else names


def parse_seeds(seeds: str | list[str]) -> list[tuple[str, int]]:
    """``"h1:25672,h2:25672"`` (or a TOML list of them) -> [(host, port), ...]."""
    items = seeds.split(",") if isinstance(seeds, str) else list(seeds)
    out = []
    for item in (i.strip() for i in items):
        if not item:
            continue
        host, sep, port = item.rpartition(":")
        if not sep or not host or not port.isdigit() or not 0 < int(port) < 65536:
            raise ConfigError(f"--seeds item {item!r} is not host:port (e.g. node1:25672)")
        out.append((host.strip("[]"), int(port)))
    return out


def ensure_data_dir(path: str) -> Path:
    target = Path(path)
    try:
        target.mkdir(parents=True, exist_ok=True, mode=0o700)  # the store tightens it further
    except OSError as exc:
        raise ConfigError(f"cannot create data directory {path}: {exc}; pass --data-dir DIR") from exc
    return target
