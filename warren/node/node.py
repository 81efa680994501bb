"""One broker node: client sessions, queues, deliveries, persistence and alarms.

The node is driven by the I/O layer through a handful of inputs (client bytes, client
lost, tick, store batch committed, resource readings) and answers through each session's
outbound buffer and a write batch for the store. It never blocks: the store commit runs
in the I/O layer's disk executor, and publisher confirms wait for it.
"""

from __future__ import annotations

import logging
from collections.abc import Callable, Iterator
from contextlib import contextmanager
from dataclasses import dataclass, field
from typing import Any, Protocol

from warren.broker.auth import Broker
from warren.broker.policy import matching_policy
from warren.broker.queue import ConsumerRef
from warren.broker.vhost import VirtualHost
from warren.cluster.definitions import (
    Applied,
    Command,
    CommandRunner,
    DeclareQueue,
    DeleteQueue,
    apply_command,
    vhost_of,
)
from warren.cluster.placement import home_node, queue_locator, replica_nodes
from warren.errors import AMQPError, ReplyCode, StoreError, UnstorableValue, precondition_failed
from warren.limits import Limits
from warren.node.commands import LocalCommands
from warren.node.memory import MemoryMonitor
from warren.node.persistence import Persistence
from warren.node.quorum import QuorumQueues
from warren.node.remote import Forwarder
from warren.session.client import ClientSession, SessionHost

log = logging.getLogger(__name__)


class ClientTransport(Protocol):
    """What the node needs of a client socket (implemented in warren.io)."""

    def write(self, data: bytes) -> None: ...

    def close(self) -> None: ...

    def set_reading(self, enabled: bool) -> None: ...


@dataclass
class NodeCounters:
    """Totals since start, for the management API and Prometheus."""

    connections_opened: int = 0
    connections_closed: int = 0
    channels_opened: int = 0
    channels_closed: int = 0
    messages_received: int = 0
    messages_confirmed: int = 0
    messages_routed: int = 0
    messages_unroutable_returned: int = 0
    messages_unroutable_dropped: int = 0
    messages_delivered: int = 0
    messages_delivered_get: int = 0
    messages_redelivered: int = 0
    messages_acknowledged: int = 0
    extra: dict[str, int] = field(default_factory=dict)


class Node(SessionHost):
    def __init__(
        self,
        *,
        name: str,
        limits: Limits,
        broker: Broker,
        persistence: Persistence | None,
        monotonic: Callable[[], float],
        wall_ms: Callable[[], int],
        unique_name: Callable[[str], str],
    ) -> None:
        self.name = name
        self.limits = limits
        self.broker = broker
        broker.set_node_name(name)
        self.persistence = persistence
        self.monotonic = monotonic
        self.wall_ms = wall_ms
        self.unique_name = unique_name
        self.counters = NodeCounters()
        self.sessions: dict[int, ClientSession] = {}
        self._transports: dict[int, ClientTransport] = {}
        self._next_session_id = 1
        self._dirty_sessions: set[ClientSession] = set()
        self._dirty_queues: set[Any] = set()
        self.memory_alarm = False
        self.disk_low = False  # free space under disk_free_limit_bytes
        self.store_error: str | None = None  # the last store write failed; cleared by one that succeeds
        # set by the I/O layer, which reads RSS into it; raises the alarm between readings
        self.memory_monitor: MemoryMonitor | None = None
        self.started_at_ms = wall_ms()
        self.listeners: list[dict[str, Any]] = []
        # where definition changes go: applied here, or through the metadata group (cluster)
        self.commands: CommandRunner = LocalCommands(self)
        # in a cluster the metadata group's log is the durable record of definitions: the
        # store keeps messages only, and a durable queue's store id is its declare's index
        self.definitions_in_log = False
        self.boot_id = ""  # set by the I/O layer: tells this run's connections from earlier ones
        self.accepting = True  # False while a clustered node restores its definitions
        # in a cluster: the names of the members alive now (for placing new queues)
        self.alive_members: Callable[[], list[str]] | None = None
        # in a cluster: queues that live on other nodes (warren.node.remote)
        self.forwarder: Forwarder | None = None
        self.quorum: QuorumQueues | None = None  # in a cluster: quorum queues (warren.node.quorum)
        self._expiring: set[str] = set()  # x-expires deletions submitted, not yet applied

    # ---- inputs from the I/O layer -------------------------------------------------

    def open_session(
        self,
        transport: ClientTransport,
        peer_host: str,
        peer_port: int,
        local_host: str,
        local_port: int,
        tls: bool,
    ) -> ClientSession | None:
        if not self.accepting:
            log.info("refusing connection from %s:%s: the node is not ready yet", peer_host, peer_port)
            return None
        if len(self.sessions) >= self.limits.max_connections:
            log.warning("refusing connection from %s:%s: max_connections=%d reached",
                        peer_host, peer_port, self.limits.max_connections)
            return None
        session_id = self.new_ref_id()
        session = ClientSession(
            self, session_id, peer_host, peer_port, local_host, local_port, tls, self.monotonic()
        )
        self.sessions[session_id] = session
        self._transports[session_id] = transport
        self.counters.connections_opened += 1
        return session

    def client_data(self, session: ClientSession, data: bytes) -> None:
        session.receive(data, self.monotonic())
        self._dirty_sessions.add(session)

    def client_lost(self, session: ClientSession) -> None:
        session.lost()
        self.sessions.pop(session.id, None)
        self._transports.pop(session.id, None)
        self._dirty_sessions.discard(session)
        self.counters.connections_closed += 1

    def client_writable(self, session: ClientSession, writable: bool) -> None:
        session.writable = writable
        if writable:
            self._dirty_sessions.add(session)
            self._dirty_queues.update(session.consumed_queues())

    def tick(self) -> None:
        now = self.monotonic()
        now_ms = self.wall_ms()
        for session in list(self.sessions.values()):
            if session.tick(now):
                self._dirty_sessions.add(session)
        if self.forwarder is not None:
            self.forwarder.tick(now)
        if self.quorum is not None:
            self.quorum.tick(now)
        unused = self._expired_in_cluster if self.definitions_in_log else None
        for vhost in list(self.broker.vhosts.values()):
            for queue in vhost.expire(now_ms, unused):
                self._dirty_queues.add(queue)
            for queue in vhost.take_deleted():
                self.queue_deleted(vhost, queue)

        self.flush()

    def _expired_in_cluster(self, queue: Any) -> bool:
        """x-expires in a cluster: the queue's home node (which sees its use) deletes it on
        every member, by command, once; the other members' copies wait for that. A quorum
        queue's use (consumers, gets) is known to its leader's replica: the leader deletes it
        once both that and the metadata's copy (redeclares) have been idle long enough."""
        if queue.members:
            mine = self.quorum is not None and self.quorum.unused_expired(queue, self.wall_ms())
        else:
            mine = queue.home in ("", self.name)
        if mine and queue.name not in self._expiring:
            self._expiring.add(queue.name)
            self.commands.submit(DeleteQueue(queue.vhost, queue.name),
                                 lambda outcome: self._expiring.discard(queue.name))
        return False

    def set_resource_alarms(self, memory: bool, disk: bool) -> None:
        if memory == self.memory_alarm and disk == self.disk_low:
            return
        if memory != self.memory_alarm:
            log.warning("memory alarm %s", "set" if memory else "cleared")
        if disk != self.disk_low:
            log.warning("disk alarm %s", "set" if disk else "cleared")
        self.memory_alarm, self.disk_low = memory, disk
        self._alarms_changed()

    def set_store_error(self, error: str | None) -> None:
        """A store write failed (``error``) or, with None, one succeeded again.

        A failing store is a disk alarm, whatever the free space says: publishers are blocked
        and the alarms health check fails until a write succeeds.
        """
        if (error is None) == (self.store_error is None):
            self.store_error = error
            return
        if error is None:
            log.warning("store writes succeed again: disk alarm cleared")
        else:
            log.error("store write failed, disk alarm set: %s", error)
        self.store_error = error
        if error is not None and self.persistence is not None:
            self.persistence.request_commit()  # the committer probes until a write succeeds
        self._alarms_changed()

    @property
    def disk_alarm(self) -> bool:
        return self.disk_low or self.store_error is not None

    def _alarms_changed(self) -> None:
        for session in self.sessions.values():
            session.alarms_changed()
            self._dirty_sessions.add(session)
        self.flush()

    @property
    def blocked_reason(self) -> str | None:
        if self.memory_alarm:
            return "low on memory"
        if self.store_error is not None:
            return "disk writes failing"
        if self.disk_low:
            return "low on disk"
        return None

    # ---- SessionHost: what sessions ask of the node -------------------------------------

    def queue_changed(self, queue: Any) -> None:
        self._dirty_queues.add(queue)

    def policy_applied(self, queue: Any) -> None:
        """A policy may have given the queue a dead-letter exchange: its bodies must be in RAM."""
        if self.persistence is not None and not self.persistence.may_evict([queue]):
            self.persistence.ensure_bodies(queue)
        self.queue_changed(queue)

    @contextmanager
    def changing_definitions(self, *vhosts: VirtualHost) -> Iterator[None]:
        """Run a change of definitions that stays in memory only if its write succeeds.

        The body changes the broker model (declare, bind, delete, users, policies...) in
        these vhosts, or adds and deletes vhosts; on leaving, what changed is written and
        fsynced. When the write fails, or the body raises, the model returns to what it was
        on entry, so nothing is ever applied in memory that a restart would not bring back.
        A value the store cannot encode is the caller's error (406, HTTP 400); a failing
        disk is a 541 (HTTP 503) and a disk alarm until a write succeeds.
        """
        # With vhosts named, the change is inside them; without, it is of users, permissions
        # or the vhosts themselves (only then are those checkpointed and written).
        broker_checkpoint = None if vhosts else self.broker.checkpoint()
        for vhost in vhosts:
            vhost.begin_change()
        try:
            yield
            if self.persistence is not None and not self.definitions_in_log:
                touched = list(vhosts)
                if broker_checkpoint is not None:
                    before, after = broker_checkpoint.vhosts, self.broker.vhosts
                    touched += [after[n] for n in after.keys() - before.keys()]
                    touched += [before[n] for n in before.keys() - after.keys()]
                self.persistence.write_definitions(touched, users=broker_checkpoint is not None)
        except BaseException as exc:
            if broker_checkpoint is not None:
                self.broker.rollback(broker_checkpoint)
            now_ms = self.wall_ms()
            for vhost in vhosts:
                checkpoint = vhost.end_change()
                if checkpoint is not None:
                    vhost.rollback(checkpoint, now_ms)
            if isinstance(exc, UnstorableValue):
                raise precondition_failed(str(exc)) from exc
            if isinstance(exc, StoreError):
                self.set_store_error(str(exc))
                raise AMQPError(ReplyCode.INTERNAL_ERROR, f"the change was not stored: {exc}") from exc
            raise
        for vhost in vhosts:
            vhost.end_change()

    def apply_definition(self, command: Command, index: int = 0) -> Applied:
        """Apply a definition command to the broker model and store it (see
        ``changing_definitions``); the runner calls this, and ``follow_up`` after replying.
        ``index`` is the command's entry in the metadata log (0 on a standalone node)."""
        vhosts = [vhost_of(self.broker, command.vhost)] if command.vhost_scoped else []  # type: ignore[attr-defined]
        with self.changing_definitions(*vhosts):
            applied = apply_command(self.broker, command)
        if index and isinstance(command, DeclareQueue) and self.persistence is not None:
            queue = vhosts[0].queues[applied.value[0]]
            if queue.members:  # a quorum queue: its group holds its messages
                if not queue.group:
                    queue.group = index  # unique, and the same on every member
                if self.quorum is not None:
                    self.quorum.queue_declared(queue, declare=True)
            elif queue.durable and not queue.store_id:
                queue.store_id = index  # unique, and the same on every member and after a replay
                queue.journal = []
        return applied

    def follow_up(self, applied: Applied) -> None:
        """What a change means beyond the model: consumers of deleted queues cancelled, their
        rows forgotten, connections to a deleted vhost closed, bodies kept for a new DLX."""
        vhost = applied.deleted_vhost
        for queue in applied.deleted_queues:
            self.queue_deleted(vhost or self.broker.vhosts.get(queue.vhost), queue)
        if vhost is not None:
            for session in list(self.sessions.values()):
                if session.vhost is vhost:
                    session.conn.close(ReplyCode.CONNECTION_FORCED, "CONNECTION_FORCED - vhost deleted")
                    self._dirty_sessions.add(session)
        if applied.policy_vhost is not None:
            for queue in applied.policy_vhost.queues.values():
                self.policy_applied(queue)
            if self.quorum is not None:
                self.quorum.policies_changed(applied.policy_vhost)
        if applied.members_changed is not None and self.quorum is not None:
            self.quorum.members_changed(applied.members_changed)
        self.flush()

    def declared_arguments(self, vhost: Any, name: str, arguments: dict[str, Any], durable: bool,
                           exclusive: bool, auto_delete: bool) -> dict[str, Any]:
        """A declare's arguments with ``vhost``'s default queue type applied; a standalone
        node (which cannot host quorum queues) declares what the client asked for."""
        if self.quorum is None:
            return arguments
        return vhost.typed_arguments(name, arguments, durable, exclusive, auto_delete)

    def place_queue(self, vhost: str, name: str, arguments: dict[str, Any],
                    exclusive: bool) -> tuple[str, tuple[str, ...]]:
        """Where a queue declared here lives: its home node ("" on a standalone node) and,
        for a quorum queue, its members (the preferred leader first, also its home). In a
        cluster, by the locator (``x-queue-leader-locator`` or the policy's
        ``queue-leader-locator``)."""
        quorum = arguments.get("x-queue-type") == "quorum"
        if self.alive_members is None:
            if quorum:
                raise precondition_failed(
                    f"cannot declare queue '{name}' in vhost '{vhost}': quorum queues need "
                    "Warren's cluster mode; start the node with --cluster-secret (one node "
                    "is a cluster of one)")
            return "", ()
        v = self.broker.vhosts.get(vhost)
        kind = "quorum_queue" if quorum else "queue"
        policy = matching_policy(v.policies.values(), kind, name) if v is not None else None
        locator = queue_locator(arguments, policy.definition.get("queue-leader-locator") if policy else None)
        alive = self.alive_members()
        if quorum:
            size = arguments.get("x-quorum-initial-group-size")
            if not isinstance(size, int) or isinstance(size, bool):
                size = self.limits.quorum_default_group_size
            members = replica_nodes(vhost, name, size, locator, self.name, alive)
            return members[0], members
        return home_node(vhost, name, locator, self.name, alive, exclusive), ()

    def routes_elsewhere(self, queue: Any) -> bool:
        """Routed here, enqueued elsewhere: a quorum queue (by its leader), a classic queue
        that lives on another node."""
        return bool(queue.members) or (self.forwarder is not None and self.forwarder.is_remote(queue))

    def host_quorum_queues(self, delete_gone: bool = False) -> None:
        """Host the quorum queues' replicas after the metadata was restored from a snapshot
        or replayed at start (see ``QuorumQueues.host_all``)."""
        if self.quorum is not None:
            queues = [q for vhost in self.broker.vhosts.values() for q in vhost.queues.values() if q.members]
            self.quorum.host_all(queues, delete_gone)

    def new_ref_id(self) -> int:
        """A fresh id for a session, or for a remote session's proxy (one space: a consumer
        ref names either)."""
        ref_id = self._next_session_id
        self._next_session_id += 1
        return ref_id

    # ---- the home side of forwarding (warren.node.remote calls these) ------------------

    def stored_publish(self, outcome: Any, message: Any, waiter: Any) -> None:
        """A message forwarded here, enqueued: store it as a local publish is stored, and
        tell ``waiter`` (``outcome(ok)``, or the store's ``store_committed``) when it is safe."""
        self.counters.messages_received += 1
        persistence = self.persistence
        waits = persistence is not None and persistence.journal_publish(outcome.routed_queues, message)
        if waiter is not None:
            if outcome.rejected_queues:
                waiter.outcome(False)
            elif waits:
                persistence.after_commit(waiter, 0, 0)  # type: ignore[union-attr]
            else:
                waiter.outcome(True)
        for queue in (*outcome.routed_queues, *outcome.dead_letter_queues):
            self.queue_changed(queue)

    def settle_here(self, queue: Any, how: str, ids: list[int]) -> None:
        """Acks, requeues and rejects of a remote channel, for a queue that lives here."""
        if how == "ack":
            self.counters.messages_acknowledged += queue.ack(ids)
        elif how == "requeue":
            queue.requeue(ids)
        else:
            vhost = self.broker.vhosts.get(queue.vhost)
            if vhost is not None:
                for target in vhost.reject(queue, ids, self.wall_ms()):
                    self.queue_changed(target)
        self.queue_changed(queue)

    def auto_delete_check(self, queue: Any) -> None:
        """An auto-delete queue whose last consumer (a remote one) went: delete it everywhere."""
        if queue.auto_delete and not queue.deleted and queue.consumer_count == 0 and queue.had_consumers:
            self.commands.submit(DeleteQueue(queue.vhost, queue.name), lambda outcome: None)

    def owner_id(self, session: ClientSession) -> str:
        """The id an exclusive queue records for its owning connection (plain data, unique
        across the cluster and across this node's restarts)."""
        return f"{self.owner_prefix}{session.id}"

    @property
    def owner_prefix(self) -> str:
        return f"{self.name}#{self.boot_id}#"

    def session_for_owner(self, owner: str) -> ClientSession | None:
        prefix, number = self.owner_prefix, owner[len(self.owner_prefix):]
        return self.sessions.get(int(number)) if owner.startswith(prefix) and number.isdigit() else None

    def queue_deleted(self, vhost: Any, queue: Any) -> None:
        """A queue is gone: server-cancel its consumers, forget its stored messages.

        Deletions the node makes on its own (x-expires, auto-delete, exclusive owner gone)
        write the definition here; a client's delete has written it already (see
        ``changing_definitions``) and this finds nothing left to write.
        """
        for consumer in queue.consumers:
            ref = consumer.owner
            session = self.sessions.get(ref.session_id)
            if session is not None:
                session.consumer_cancelled_by_server(ref.channel, consumer.tag)
        if self.forwarder is not None:  # this node's consumers of it, where it lived elsewhere
            self.forwarder.queue_gone(queue.vhost, queue.name)
        if queue.members:
            if self.quorum is not None:
                self.quorum.queue_deleted(queue)
            return
        if self.persistence is None:
            return
        self.persistence.queue_deleted(vhost, queue)
        if self.definitions_in_log:
            return
        try:
            self.persistence.write_definitions([vhost])
        except StoreError as exc:  # memory leads here: the queue would come back after a restart
            self.set_store_error(str(exc))

    def session_changed(self, session: ClientSession) -> None:
        self._dirty_sessions.add(session)

    def set_reading(self, session: ClientSession, enabled: bool) -> None:
        transport = self._transports.get(session.id)
        if transport is not None:
            transport.set_reading(enabled)

    def buffered_changed(self, delta: int) -> None:
        """A session's partial bodies grew or shrank: raise the memory alarm now if that
        crosses the watermark, rather than at the next reading (up to a second of reads)."""
        monitor = self.memory_monitor
        if monitor is not None and monitor.buffered_changed(delta):
            self.set_resource_alarms(True, self.disk_low)

    # ---- output ------------------------------------------------------------------------

    def flush(self) -> None:
        """Deliver what can be delivered, then write every session's pending bytes."""
        rounds = 0
        while self._dirty_queues and rounds < 16:
            rounds += 1
            queues, self._dirty_queues = self._dirty_queues, set()
            now_ms = self.wall_ms()
            for queue in queues:
                self._deliver(queue, now_ms)
        if self.broker.forward_letters:
            self._forward_dead_letters()
        sessions, self._dirty_sessions = self._dirty_sessions, set()
        for session in sessions:
            transport = self._transports.get(session.id)
            if transport is None:
                continue
            data = session.data_to_send()
            if data:
                transport.write(data)
            if session.terminated:
                transport.close()
        if self.forwarder is not None:
            self.forwarder.flush()
        if self.quorum is not None:
            self.quorum.flush()

    def _forward_dead_letters(self) -> None:
        """Dead letters routed here to queues that live elsewhere: to their home node, or
        to a quorum queue's leader (at most once, as RabbitMQ's default dead-lettering)."""
        letters = self.broker.forward_letters[:]
        self.broker.forward_letters.clear()  # the vhosts share this list: keep it
        for queue, message in letters:
            if queue.members:
                if self.quorum is not None:
                    self.quorum.publish(queue, message, None)
            elif self.forwarder is not None:
                self.forwarder.publish(queue.home, queue.vhost, [queue.name], message, None)

    def _deliver(self, queue: Any, now_ms: int) -> None:
        if queue.deleted:
            return
        # The queue decides from data: the refs whose channels may receive now (flow,
        # channel-wide prefetch, a writable socket), judged here for its candidates in
        # order, and no further than the ready messages can reach (see candidate_refs).
        sessions = self.sessions
        eligible: set[ConsumerRef] = set()
        need = queue.messages_ready
        if need:
            forwarder = self.forwarder
            for ref in queue.candidate_refs():
                session = sessions.get(ref.session_id)
                if session is not None:
                    if not session.may_deliver(ref.channel):
                        continue
                elif forwarder is None or not forwarder.may_deliver(ref):  # a remote consumer's proxy
                    continue
                eligible.add(ref)
                if len(eligible) >= need:
                    break
        deliveries = queue.take_deliveries(now_ms, eligible)
        if deliveries:
            dirty = self._dirty_sessions
            for delivery in deliveries:
                session = sessions.get(delivery.consumer.owner.session_id)
                if session is None:
                    assert self.forwarder is not None
                    self.forwarder.deliver(queue, delivery)
                    continue
                session.deliver(queue, delivery)
                dirty.add(session)
        if self.persistence is not None:
            self.persistence.drain(queue)
