"""Quorum queues on one node: the replicas it hosts and the clients it serves (sans-I/O).

A quorum queue is a Raft group (its id: the declare's index in the metadata log) whose
members each apply its entries to a :class:`QuorumQueueMachine`
(``warren.cluster.queue_fsm``). Two halves, as in ``warren.node.remote``:

- *replicas*: the machines of the queues this node is a member of, fed by the Raft host
  (``apply``). Where this node leads a group it acts on what an apply returns: deliveries
  go to the consumer's session here or to its channel's node (``QDELIVER``), the proposer
  hears the result. A node that becomes leader tells every member (``QLEADER``), sends
  again every message checked out to a consumer (the old leader may have died before it
  left; the consumer's node drops what its client has already), and releases the channels
  of nodes that are down (``DOWN``).
- *the log as the message store*: a replica holds no bodies; it reads them from the group's
  log (``RaftGroups.entry``) when the leader sends a stored message, and the Raft host
  snapshots it every ``snapshot_every`` entries keeping the log from ``keep_from``. A
  leader relocates messages whose entries lie too far back (``RELOCATE``), so the log's
  length follows the queue's depth.
- *access*: this node's clients' commands go to the group's leader (``QCOMMAND``), which
  proposes them stamped with its clock and answers once they are committed and applied
  (``QANSWER``). A publish is confirmed then; an answer naming another leader sends the
  command there. When the leader changes, commands still waiting are sent to the new one,
  except publishes, which are nacked (re-proposing could duplicate them). Consumers are
  registered again with a new leader (a resent checkout is a no-op for the machine).

The I/O layer provides :class:`RaftGroups` (the node's Raft host) and ``send``.
"""

from __future__ import annotations

import itertools
import logging
from collections.abc import Callable
from dataclasses import dataclass, field
from typing import TYPE_CHECKING, Any, Protocol

from warren.broker.message import Message
from warren.broker.policy import matching_policy
from warren.cluster.forwarding import Fwd
from warren.cluster.placement import leader_moves
from warren.cluster.queue_fsm import QDelivery, QOp, QResult, QuorumQueueMachine, encode
from warren.session.methods import encoded_properties

if TYPE_CHECKING:
    from warren.node.node import Node

log = logging.getLogger("warren.quorum")

Answer = Callable[[bool, Any, str], None]  # (ok, value, error text)
PROPOSAL_RETRY_HOPS = 5  # redirects a command follows before it fails
TICK_EVERY_MS = 1000  # a leader of a queue with expiring messages proposes a TICK this often
RELOCATE_BATCH = 64  # old messages a leader copies forward in the log per tick


class RaftGroups(Protocol):
    """What this needs of the node's Raft host (warren.io.cluster provides it)."""

    def host(self, group: int, genesis: list[int], campaign: bool) -> None: ...
    def drop(self, group: int) -> None: ...
    def propose(self, group: int, payload: bytes, done: Callable[[int | None, Exception | None], None]) -> None: ...
    def leader(self, group: int) -> str | None: ...
    def is_leader(self, group: int) -> bool: ...
    # where this node leads and has applied its term's first entry: that entry's index; else 0
    def term_start(self, group: int) -> int: ...
    def transfer(self, group: int, to: str) -> bool: ...
    def status(self, group: int) -> dict[str, Any] | None: ...
    def entry(self, group: int, index: int) -> bytes | None: ...  # an entry's data, also a retained one
    def stored_groups(self) -> set[int]: ...  # groups whose data the node's store holds, hosted or not
    def member_ids(self, names: list[str]) -> list[int]: ...
    def member_names(self, ids: list[int]) -> list[str]: ...


@dataclass
class Replica:
    queue: Any  # the metadata's QueueState (name, vhost, members, group)
    machine: QuorumQueueMachine
    leading: bool = False
    last_result: QResult | None = None  # of the entry applied last (its proposer reads it)
    ticked_ms: int = 0
    commit_latency: float = 0.0  # seconds from the leader's proposal to its apply, last entry
    span_checked_at: int = 0  # the applied index when its leader last looked for messages to relocate
    relocating: int = 0  # RELOCATE proposals in flight


@dataclass
class Pending:
    """An access-side command waiting for its answer."""

    queue: Any
    op: QOp
    args: list[Any]
    answer: Answer
    deadline: float
    hops: int = 0
    stalled: bool = False  # no leader known: sent again at the next tick
    sent_to: str = ""  # the node it went to last


@dataclass
class QConsumer:
    queue: Any
    session: int
    number: int
    tag: str
    no_ack: bool
    args: list[Any]  # the CHECKOUT's fields (sent again to a new leader)
    # deliveries that came before the checkout's answer: they follow the client's consume-ok
    early: list[dict[str, Any]] | None = field(default_factory=list)


@dataclass
class _Publishes:
    """A queue's publishes since the last flush: one PUBLISH entry's messages."""

    queue: Any
    messages: list[list[Any]] = field(default_factory=list)
    outcomes: list[Callable[[bool], None] | None] = field(default_factory=list)
    size: int = 0


@dataclass
class _Channel:
    """Per (group, channel): the messages its client holds (delivered, not yet settled
    for good): a leader's resend of one of them is a duplicate to drop."""

    queue: Any
    held: set[int] = field(default_factory=set)


class QuorumQueues:
    def __init__(self, node: Node, send: Callable[[str, dict[str, Any]], None],
                 is_up: Callable[[str], bool], answer_timeout: float = 30.0,
                 schedule_flush: Callable[[], None] | None = None) -> None:
        self.node = node
        # what an apply or a local answer wrote to sessions leaves once per loop iteration
        self.schedule_flush = schedule_flush or node.flush
        self.send = send
        self.is_up = is_up
        self.raft: RaftGroups | None = None
        self.answer_timeout = answer_timeout
        self.replicas: dict[int, Replica] = {}
        self.leader_hint: dict[int, str] = {}
        self.pending: dict[int, Pending] = {}
        self.consumers: dict[tuple[int, str, str], QConsumer] = {}  # (group, channel, tag)
        self.channels: dict[tuple[int, str], _Channel] = {}
        self._settles: dict[tuple[int, str, QOp], tuple[Any, list[int]]] = {}
        self._publishes: dict[int, _Publishes] = {}  # group -> publishes since the last flush
        self._publish_seq: dict[int, int] = {}  # group -> the seq of this boot's last PUBLISH to it
        self._tokens = itertools.count(1)
        self.unacked_cap = node.limits.quorum_unlimited_prefetch

    # ---- names -------------------------------------------------------------------------

    def channel_name(self, session_id: int, number: int) -> str:
        return f"{self.node.owner_prefix}{session_id}/{number}/"

    def _local_channel(self, channel: str) -> tuple[Any, int] | None:
        """(session, channel number) of a channel on this node, or None."""
        prefix = self.node.owner_prefix
        if not channel.startswith(prefix):
            return None
        session_id, number, _ = channel[len(prefix):].split("/")
        session = self.node.sessions.get(int(session_id))
        return (session, int(number)) if session is not None else None

    # ---- replicas: hosting, applying ---------------------------------------------------

    def queue_declared(self, queue: Any, declare: bool = False) -> None:
        """A quorum queue exists in the metadata (``declare``: its declare's entry was just
        applied): host its replica if this node is a member. The group's first voters are
        its members at the declare, by member id (names can be reused, ids are not), kept
        with the queue: a member added later replays the log from those."""
        assert self.raft is not None
        if declare and not queue.genesis:
            queue.genesis = self.raft.member_ids(queue.members)
        if queue.group and self.node.name in queue.members and queue.group not in self.replicas:
            self._host(queue, campaign=declare and queue.members[0] == self.node.name)

    def _host(self, queue: Any, campaign: bool) -> None:
        assert self.raft is not None
        machine = QuorumQueueMachine(queue.name, queue.vhost, queue.arguments, self._log_of(queue.group),
                                     self.node.limits.quorum_snapshot_min_entries)
        self.replicas[queue.group] = Replica(queue, machine)
        self.raft.host(queue.group, queue.genesis or self.raft.member_ids(queue.members), campaign)

    def _log_of(self, group: int) -> Callable[[int], bytes | None]:
        """The reader of ``group``'s log the replica reads its bodies back with."""
        raft = self.raft
        assert raft is not None
        return lambda index: raft.entry(group, index)

    def host_all(self, queues: list[Any], delete_gone: bool = False) -> None:
        """After the metadata was restored (from a snapshot, or replayed at start): host a
        replica of each quorum queue in ``queues`` this node is a member of, and of each one
        whose data its store still holds although it is no longer a target (it may still be
        a voter: as a hosted replica it asks the leader, and deletes itself once its removal
        has committed). ``delete_gone``: the model holds every queue this node ever hosted
        a group for (the start's replay is done), so a stored group no queue names belongs
        to a queue deleted meanwhile: its data is deleted."""
        assert self.raft is not None
        stored = self.raft.stored_groups()
        named = set()
        for queue in queues:
            named.add(queue.group)
            if queue.group and queue.group not in self.replicas and (
                    self.node.name in queue.members or queue.group in stored):
                self._host(queue, campaign=False)
        if delete_gone:
            for group in sorted(stored - named):
                log.info("quorum queue group %d belongs to a deleted queue: its data is deleted", group)
                self.raft.drop(group)

    def members_changed(self, queue: Any) -> None:
        """The metadata names new target members: a member new here hosts an empty replica
        (not a voter: the leader adds it, first as a learner, and sends it the log). A
        replica here that is no longer a target stays until its removal from the group's
        configuration has committed (``warren.io.quorum_groups`` then drops it)."""
        if self.node.name in queue.members and queue.group not in self.replicas:
            self._host(queue, campaign=False)

    def drop_replica(self, group: int) -> None:
        """This node is no longer a member of the group: forget its replica and its log."""
        if self.replicas.pop(group, None) is not None and self.raft is not None:
            log.info("no longer a member of quorum queue group %d: its replica is deleted", group)
            self.raft.drop(group)

    def queue_deleted(self, queue: Any) -> None:
        """The queue is gone: its consumers here are cancelled, its replica dropped."""
        group = queue.group
        for key in [k for k in self.consumers if k[0] == group]:
            consumer = self.consumers.pop(key)
            session = self.node.sessions.get(consumer.session)
            if session is not None:
                session.consumer_cancelled_by_server(consumer.number, consumer.tag)
        for key in [k for k in self.channels if k[0] == group]:
            del self.channels[key]
        for token in [t for t, p in self.pending.items() if p.queue.group == group]:
            self.pending.pop(token).answer(False, None, f"queue '{queue.name}' in vhost '{queue.vhost}' was deleted")
        if self.replicas.pop(group, None) is not None and self.raft is not None:
            self.raft.drop(group)

    def apply(self, group: int, index: int, data: bytes) -> None:
        """A committed entry of ``group`` (the Raft host calls this, in log order)."""
        replica = self.replicas.get(group)
        if replica is None:
            return
        result = replica.machine.apply(index, data)
        replica.last_result = result
        # Only a leader delivers, and only what its own term's entries hand out: entries of
        # an earlier term were acted on by their leader, and what they checked out that is
        # still out goes again once this leader has applied up to its term (``_took_over``);
        # sending it now could repeat a delivery whose ack is further down the log.
        if (result.deliveries or result.dead_letters) and self._serving(group, index):
            for delivery in result.deliveries:
                self._send_delivery(replica, delivery)
            if result.dead_letters:  # the leader routes them (at most once, as RabbitMQ)
                vhost = self.node.broker.vhosts.get(replica.queue.vhost)
                if vhost is not None:
                    replica.machine.fill_bodies(result.dead_letters)
                    for queue in vhost.route_dead_letters(result.dead_letters, self.node.wall_ms()):
                        self.node.queue_changed(queue)
            self.schedule_flush()

    def _serving(self, group: int, index: int) -> bool:
        """This node leads ``group`` and ``index`` is of its own term."""
        start = self.raft.term_start(group) if self.raft is not None else 0
        return bool(start) and index >= start

    def _send_delivery(self, replica: Replica, d: QDelivery) -> None:
        message = d.message
        count = d.delivery_count
        properties = _with_delivery_count(message, count) if count else encoded_properties(message)
        target = d.channel.split("#", 1)[0]
        m = {"f": Fwd.QDELIVER, "g": replica.queue.group, "ch": d.channel, "tag": d.tag, "id": d.msg_id,
             "r": d.redelivered, "n": d.delivery_count, "x": message.exchange, "k": message.routing_key,
             "p": properties, "b": d.body if d.body is not None else replica.machine.body_of(message)}
        if target == self.node.name:
            self._on_deliver(target, m)
        elif self.is_up(target):
            self.send(target, m)

    # ---- the leader's side of commands -------------------------------------------------

    def _lead(self, origin: str, token: int, group: int, op: QOp, args: list[Any]) -> None:
        replica = self.replicas.get(group)
        raft = self.raft
        if op is QOp.STATUS:  # asked of this member, leader or not
            status = raft.status(group) if raft is not None and replica is not None else None
            shown = None
            if status is not None and raft is not None:
                shown = {k: status[k] for k in _STATUS_FIELDS}
                shown["voters"], shown["learners"] = (raft.member_names(status[k]) for k in ("voters", "learners"))
            self._reply(origin, {"f": Fwd.QANSWER, "t": token, "ok": True, "v": shown})
            return
        if replica is None or raft is None or not raft.is_leader(group):
            leader = raft.leader(group) if raft is not None and replica is not None else None
            self._reply(origin, {"f": Fwd.QANSWER, "t": token, "ok": False, "l": leader or "",
                                 "e": "no leader", "retry": True})  # not proposed: safe to send again
            return
        if op is QOp.TRANSFER:
            self._reply(origin, {"f": Fwd.QANSWER, "t": token, "ok": True, "v": raft.transfer(group, str(args[0]))})
            return
        if op is QOp.STAT:  # it has applied every entry it answered for (confirms included)
            q = replica.machine.queue
            self._reply(origin, {"f": Fwd.QANSWER, "t": token, "ok": True, "v": [q.messages_ready, q.consumer_count]})
            return

        proposed = self.node.monotonic()

        def done(index: int | None, error: Exception | None) -> None:
            replica.commit_latency = self.node.monotonic() - proposed
            result = replica.last_result
            if error is not None or result is None:
                # refused before the log (a leadership transfer under way): safe to send again
                retry = bool(getattr(error, "never_appended", False))
                self._reply(origin, {"f": Fwd.QANSWER, "t": token, "ok": False, "l": "",
                                     "e": f"not committed: {error}", "retry": retry})
                return
            self._reply(origin, {"f": Fwd.QANSWER, "t": token, "ok": True, "v": _wire_value(op, result.value)})

        raft.propose(group, encode(op, self.node.wall_ms(), *args), done)

    def _reply(self, origin: str, m: dict[str, Any]) -> None:
        if origin == self.node.name:
            self._on_answer(origin, m)
            self.schedule_flush()
        else:
            self.send(origin, m)

    # ---- the access side ---------------------------------------------------------------

    def command(self, queue: Any, op: QOp, args: list[Any], answer: Answer | None = None) -> None:
        """Send a command to ``queue``'s leader; ``answer(ok, value, error)`` once it is
        committed (or has failed)."""
        if self._settles or self._publishes:
            self.flush()
        # every command waits for its answer, also those nobody needs an answer to: one that
        # met no leader (an election) is sent again
        token = next(self._tokens)
        pending = self.pending[token] = Pending(queue, op, args, answer or _no_answer,
                                                self.node.monotonic() + self.answer_timeout)
        self._dispatch(token, pending)

    def member_status(self, queue: Any, member: str, answer: Answer, timeout: float) -> None:
        """``answer`` gets ``member``'s Raft state of ``queue``'s group (None: it hosts none),
        or fails: "unreachable", or no answer within ``timeout`` seconds."""
        if not self.is_up(member) and member != self.node.name:
            answer(False, None, "unreachable")
            return
        token = next(self._tokens)
        pending = self.pending[token] = Pending(queue, QOp.STATUS, [], answer, self.node.monotonic() + timeout)
        self._send_command(token, pending, member)

    def _target(self, queue: Any) -> str | None:
        hint = self.leader_hint.get(queue.group)
        if hint and self.is_up(hint):
            return hint
        for member in queue.members:
            if self.is_up(member):
                return str(member)
        return None

    def _dispatch(self, token: int, pending: Pending) -> None:
        queue = pending.queue
        target = self._target(queue)
        if target is None:
            self._fail(token, f"no member of queue '{queue.name}' in vhost '{queue.vhost}' is reachable")
            return
        self._send_command(token, pending, target)

    def _send_command(self, token: int, pending: Pending, target: str) -> None:
        pending.sent_to = target
        group = pending.queue.group
        if target == self.node.name:
            self._lead(target, token, group, pending.op, pending.args)
        else:
            self.send(target, {"f": Fwd.QCOMMAND, "t": token, "g": group, "o": int(pending.op), "a": pending.args})

    def _fail(self, token: int, text: str) -> None:
        pending = self.pending.pop(token, None)
        if pending is not None:
            log.debug("quorum queue command %s failed: %s", pending.op.name, text)
            pending.answer(False, None, text)

    def publish(self, queue: Any, message: Message, outcome: Callable[[bool], None] | None) -> None:
        """Publishes wait for the node's flush: one PUBLISH entry per queue and flush (up to
        ``quorum_publish_batch_messages`` / ``_bytes``), not one entry per message."""
        batch = self._publishes.get(queue.group)
        if batch is None:
            batch = self._publishes[queue.group] = _Publishes(queue)
        body = message.body
        batch.messages.append([message.exchange, message.routing_key, encoded_properties(message), body])
        batch.outcomes.append(outcome)
        batch.size += len(body)
        limits = self.node.limits
        if len(batch.messages) >= limits.quorum_publish_batch_messages or batch.size >= limits.quorum_publish_batch_bytes:
            del self._publishes[queue.group]
            self._send_publishes(batch)

    def _send_publishes(self, batch: _Publishes) -> None:
        outcomes = batch.outcomes

        def answered(ok: bool, value: Any, text: str) -> None:
            accepted = value if ok and isinstance(value, list) else ()
            for n, outcome in enumerate(outcomes):
                if outcome is not None:
                    outcome(bool(n < len(accepted) and accepted[n]))

        group = batch.queue.group
        seq = self._publish_seq[group] = self._publish_seq.get(group, 0) + 1
        # (enqueuer, seq): a resend after a leadership change is not enqueued twice
        self.command(batch.queue, QOp.PUBLISH, [batch.messages, self.node.owner_prefix, seq], answered)

    def consume(self, queue: Any, session_id: int, number: int, tag: str, prefetch: int, priority: int,
                exclusive: bool, no_ack: bool, answer: Answer) -> None:
        channel = self.channel_name(session_id, number)
        credit = prefetch if prefetch and not no_ack else self.unacked_cap
        args = [channel, tag, credit, priority, exclusive]
        key = (queue.group, channel, tag)

        def answered(ok: bool, value: Any, text: str) -> None:
            if not ok or value:
                self.consumers.pop(key, None)
            answer(ok, value, text)
            consumer = self.consumers.get(key)
            if consumer is not None and consumer.early is not None:
                early, consumer.early = consumer.early, None
                for m in early:
                    self._on_deliver(self.node.name, m)

        self.consumers[key] = QConsumer(queue, session_id, number, tag, no_ack, args)
        self.channels.setdefault((queue.group, channel), _Channel(queue))
        self.command(queue, QOp.CHECKOUT, args, answered)

    # settlements wait for the node's flush: one entry per channel and kind, not per ack
    def _batch(self, queue: Any, channel: str, op: QOp, ids: list[int]) -> None:
        key = (queue.group, channel, op)
        batch = self._settles.get(key)
        if batch is None:
            self._settles[key] = (queue, list(ids))
        else:
            batch[1].extend(ids)

    def flush(self) -> None:
        """Send the settlements and publishes batched since the last flush (before any other
        command, so a channel's commands keep their order)."""
        settles, self._settles = self._settles, {}
        publishes, self._publishes = self._publishes, {}
        for (_, channel, op), (queue, ids) in settles.items():
            state = self.channels.get((queue.group, channel))

            def settled(ok: bool, value: Any, text: str, state: Any = state, ids: list[int] = ids) -> None:
                if state is not None:
                    state.held.difference_update(ids)

            self.command(queue, op, [channel, ids], settled)
        for batch in publishes.values():
            self._send_publishes(batch)

    def cancel(self, queue: Any, session_id: int, number: int, tag: str) -> None:
        channel = self.channel_name(session_id, number)
        if self.consumers.pop((queue.group, channel, tag), None) is not None:
            self.command(queue, QOp.CANCEL, [channel, tag])

    def settle(self, queue: Any, session_id: int, number: int, how: str, ids: list[int]) -> None:
        op = QOp.SETTLE if how == "ack" else QOp.RETURN if how == "requeue" else QOp.DISCARD
        self._batch(queue, self.channel_name(session_id, number), op, ids)

    def get(self, queue: Any, session_id: int, number: int, no_ack: bool, answer: Answer) -> None:
        channel = self.channel_name(session_id, number)
        self.channels.setdefault((queue.group, channel), _Channel(queue))
        self.command(queue, QOp.GET, [channel, no_ack, next(self._tokens)], answer)  # (resent: answered once)

    def stat(self, queue: Any, answer: Answer) -> None:
        """``answer`` gets [ready messages, consumers] as the leader knows them."""
        self.command(queue, QOp.STAT, [], answer)

    def leader_plan(self, queues: list[Any]) -> list[tuple[Any, str]]:
        """The (queue, new leader) moves after which alive nodes lead about as many of
        ``queues`` as each other. A queue whose leader this node does not know stays."""
        alive = self.node.alive_members() if self.node.alive_members else [self.node.name]
        known = {}
        for queue in queues:
            leader = self.raft.leader(queue.group) if self.raft is not None and queue.group in self.replicas else None
            leader = leader or self.leader_hint.get(queue.group)
            if leader:
                known[f"{queue.vhost}\x00{queue.name}"] = (queue, leader)
        moves = leader_moves([(key, leader, list(q.members)) for key, (q, leader) in known.items()], alive)
        return [(known[key][0], target) for key, target in moves]

    def rebalance(self, moves: list[tuple[Any, str]], done: Callable[[list[tuple[Any, str, bool]]], None]) -> None:
        """rabbitmq-queues rebalance: ask each queue's leader to hand over to its new one;
        ``done`` gets (queue, new leader, started) per move."""
        results: list[tuple[Any, str, bool]] = []
        if not moves:
            done(results)
            return
        for queue, target in moves:

            def answered(ok: bool, value: Any, text: str, queue: Any = queue, target: str = target) -> None:
                results.append((queue, target, bool(ok and value)))
                if len(results) == len(moves):
                    done(results)
            self.command(queue, QOp.TRANSFER, [target], answered)

    def purge(self, queue: Any, answer: Answer) -> None:
        self.command(queue, QOp.PURGE, [], answer)

    def channel_closed(self, session_id: int, number: int) -> None:
        """The channel's consumers are cancelled and what it held goes back (one DOWN)."""
        self._release(self.channel_name(session_id, number))

    def _release(self, prefix: str) -> None:
        for key in [k for k in self.consumers if k[1].startswith(prefix)]:
            del self.consumers[key]
        for key in [k for k in self.channels if k[1].startswith(prefix)]:
            self.command(self.channels.pop(key).queue, QOp.DOWN, [prefix])

    def snapshot(self, group: int) -> bytes:
        return self.replicas[group].machine.snapshot()

    def restore(self, group: int, index: int, data: bytes) -> None:
        replica = self.replicas.get(group)
        if replica is not None:
            replica.machine = QuorumQueueMachine.restore(data, self._log_of(group),
                                                         self.node.limits.quorum_snapshot_min_entries)
            replica.span_checked_at = index

    def keep_from(self, group: int) -> int | None:
        replica = self.replicas.get(group)
        return replica.machine.keep_from() if replica is not None else None

    def snapshot_size(self, group: int) -> int:
        """Records in a replica's snapshot: a deep queue's is built by a forked child."""
        replica = self.replicas.get(group)
        return replica.machine.queue.messages if replica is not None else 0

    def snapshot_every(self, group: int) -> int | None:
        """Entries between a replica's snapshots: a snapshot holds every message's record,
        so its interval grows with the queue (the Raft host asks)."""
        replica = self.replicas.get(group)
        return replica.machine.log_span if replica is not None else None

    def _mind_the_log(self, group: int, replica: Replica, leading: bool, now_ms: int) -> None:
        """On the leader: relocate old messages that would pin the log's start (queue_fsm)."""
        raft, machine = self.raft, replica.machine
        assert raft is not None
        if leading and not replica.relocating and machine.applied - replica.span_checked_at >= machine.log_span:
            stale = machine.stale(RELOCATE_BATCH)
            if len(stale) < RELOCATE_BATCH:  # (else the next tick, once these are in, looks again)
                replica.span_checked_at = machine.applied
            for msg_id, message in stale:
                replica.relocating += 1

                def relocated(index: int | None, error: Exception | None, replica: Replica = replica) -> None:
                    replica.relocating -= 1

                raft.propose(group, encode(QOp.RELOCATE, now_ms, msg_id, machine.body_of(message)), relocated)

    def listing(self, queue: Any) -> dict[str, Any]:
        """A quorum queue's fields in the management API, as RabbitMQ shows them (counts
        from this node's replica, when it has one)."""
        group = queue.group
        replica = self.replicas.get(group)
        leader = self.raft.leader(group) if replica is not None and self.raft is not None else None
        leader = leader or self.leader_hint.get(group, "")
        shown: dict[str, Any] = {"type": "quorum", "leader": leader, "node": leader or queue.home,
                                 "members": list(queue.members),
                                 "online": [m for m in queue.members if self.is_up(m)]}
        if replica is not None:
            counted = replica.machine.queue.as_dict()
            for key in ("messages", "messages_ready", "messages_unacknowledged", "message_bytes",
                        "message_bytes_ready", "consumers"):
                shown[key] = counted[key]
        return shown

    def unused_expired(self, queue: Any, now_ms: int) -> bool:
        """x-expires: this node leads ``queue``'s group and its replica has had no consumer
        and no get for that long (a new leader starts the period afresh: later, never early)."""
        replica = self.replicas.get(queue.group)
        return (replica is not None and self.raft is not None and self.raft.is_leader(queue.group)
                and replica.machine.queue.unused_expired(now_ms))

    def raft_metrics(self) -> list[dict[str, Any]]:
        """Per replica on this node, what RabbitMQ's ``ra_metrics`` report."""
        rows: list[dict[str, Any]] = []
        if self.raft is None:
            return rows
        for group, replica in self.replicas.items():
            status = self.raft.status(group)
            if status is None:
                continue
            rows.append({"vhost": replica.queue.vhost, "queue": replica.queue.name, "term": status["term"],
                         "snapshot_index": status["snapshot_index"], "applied": status["applied"],
                         "commit": status["commit"], "last_written": status["last_index"],
                         "commit_latency": replica.commit_latency})
        return rows

    def critical(self) -> list[Any]:
        """The quorum queues that would lose their majority if this node stopped (RabbitMQ's
        ``list_with_minimum_quorum``: a member here, and the online members less this one
        fewer than a majority)."""
        shown = []
        for replica in self.replicas.values():  # a replica here: this node is a member
            members = replica.queue.members
            others_online = sum(1 for m in members if m != self.node.name and self.is_up(m))
            if others_online < len(members) // 2 + 1:
                shown.append(replica.queue)
        return shown

    # ---- peer messages -------------------------------------------------------------------

    def on_message(self, peer: str, m: dict[str, Any]) -> None:
        try:
            kind = m["f"]
            if kind == Fwd.QCOMMAND:
                self._lead(peer, int(m["t"]), int(m["g"]), QOp(m["o"]), list(m["a"]))
            elif kind == Fwd.QANSWER:
                self._on_answer(peer, m)
            elif kind == Fwd.QDELIVER:
                self._on_deliver(peer, m)
            elif kind == Fwd.QLEADER:
                self._on_leader(int(m["g"]), str(m["l"]))
        except (KeyError, TypeError, ValueError) as exc:
            log.warning("malformed quorum queue message from %s: %s", peer, exc)
        self.node.flush()

    def _on_answer(self, peer: str, m: dict[str, Any]) -> None:
        token = m["t"]
        pending = self.pending.get(token)
        if pending is None:
            return
        if m["ok"]:
            del self.pending[token]
            pending.answer(True, m.get("v"), "")
            return
        leader = m.get("l") or ""
        group = pending.queue.group
        if pending.queue.deleted:
            self._fail(token, "the queue is gone")
            return
        if leader and leader != peer:
            self.leader_hint[group] = leader
            pending.hops += 1
            if pending.hops <= PROPOSAL_RETRY_HOPS:
                self._dispatch(token, pending)
                return
        elif self.leader_hint.get(group) == peer:
            del self.leader_hint[group]
        pending.stalled = True  # no leader known (an election?): the tick sends it again

    def _on_deliver(self, peer: str, m: dict[str, Any]) -> None:
        group, channel, tag, msg_id = m["g"], m["ch"], m["tag"], m["id"]
        consumer = self.consumers.get((group, channel, tag))
        local = self._local_channel(channel)
        if consumer is None or local is None:
            return  # gone: its DOWN is on its way (or the consumer was cancelled)
        if consumer.early is not None:  # consume-ok has not gone out yet
            consumer.early.append(m)
            return
        state = self.channels.setdefault((group, channel), _Channel(consumer.queue))
        if msg_id in state.held:
            return  # a new leader's resend of a message the client has
        session, number = local
        if not session.deliver_from_peer(number, consumer.queue, m, consumer.no_ack):
            return
        if consumer.no_ack:  # settled as its client takes it
            self._batch(consumer.queue, channel, QOp.SETTLE, [msg_id])
        else:
            state.held.add(msg_id)
        self.node.session_changed(session)

    def _on_leader(self, group: int, leader: str) -> None:
        if self.leader_hint.get(group) == leader:
            return
        self.leader_hint[group] = leader
        for token, pending in list(self.pending.items()):
            if pending.queue.group != group or pending.sent_to == leader or pending.op is QOp.STATUS:
                continue  # (a STATUS is for the member it went to)
            pending.stalled = False  # (a PUBLISH resent is not enqueued twice: see queue_fsm)
            self._dispatch(token, pending)
        for key, consumer in list(self.consumers.items()):
            if key[0] == group:
                self.command(consumer.queue, QOp.CHECKOUT, consumer.args)

    # ---- time and links ------------------------------------------------------------------

    def tick(self, now: float) -> None:
        raft = self.raft
        if raft is None:
            return
        now_ms = self.node.wall_ms()
        for group, replica in self.replicas.items():
            leading = bool(raft.term_start(group))  # (once it has applied all before its term)
            if leading and not replica.leading:
                self._took_over(replica)
            replica.leading = leading
            if leading and replica.machine.queue.args.expires is not None:
                replica.machine.queue.unused_expired(now_ms)  # keeps x-expires' idle clock running
            if leading and replica.machine.needs_ticks and now_ms - replica.ticked_ms >= TICK_EVERY_MS:
                replica.ticked_ms = now_ms
                raft.propose(group, encode(QOp.TICK, now_ms), _ignore)
            self._mind_the_log(group, replica, leading, now_ms)
        for token, pending in list(self.pending.items()):
            if pending.deadline < now:
                self._fail(token, "no answer in time")
            elif pending.stalled:
                pending.stalled = False
                pending.hops = 0
                self._dispatch(token, pending)

    def _took_over(self, replica: Replica) -> None:
        """This node leads the group now: say so, resend what consumers hold, release the
        channels of nodes that are down."""
        group, machine = replica.queue.group, replica.machine
        log.info("leading quorum queue '%s' in vhost '%s'", replica.queue.name, replica.queue.vhost)
        notice = {"f": Fwd.QLEADER, "g": group, "l": self.node.name}
        self._on_leader(group, self.node.name)
        for member in self.node.alive_members() if self.node.alive_members else ():
            if member != self.node.name:
                self.send(member, notice)
        for delivery in machine.checked_out():
            self._send_delivery(replica, delivery)
        self._release_down_nodes(replica)
        self._propose_policy(replica)  # a change made while the group had no leader

    def policies_changed(self, vhost: Any) -> None:
        """The policies of ``vhost`` changed: where this node leads one of its quorum queues,
        the policy that applies now goes into the queue's log."""
        for replica in self.replicas.values():
            if replica.queue.vhost == vhost.name:
                self._propose_policy(replica)

    def _propose_policy(self, replica: Replica) -> None:
        """If the policy matching the queue is not the one its replica applied, propose it
        (a leader only; one that takes over checks again, so a lost proposal is made good)."""
        raft, group = self.raft, replica.queue.group
        vhost = self.node.broker.vhosts.get(replica.queue.vhost)
        if raft is None or vhost is None or not raft.term_start(group):
            return
        policy = matching_policy(vhost.policies.values(), "quorum_queue", replica.queue.name)
        name, definition = (policy.name, policy.definition) if policy is not None else ("", None)
        if ([name, definition] if name else None) != replica.machine.policy:
            raft.propose(group, encode(QOp.POLICY, self.node.wall_ms(), name, definition), _ignore)

    def _release_down_nodes(self, replica: Replica) -> None:
        nodes = {channel.split("#", 1)[0] for channel in replica.machine.channels()}
        for name in nodes:
            if name != self.node.name and not self.is_up(name):
                assert self.raft is not None
                self.raft.propose(replica.queue.group, encode(QOp.DOWN, self.node.wall_ms(), f"{name}#"), _ignore)

    def peer_up(self, peer: str) -> None:
        """``peer`` answers again. While it could not reach us it may have led a group whose
        leader released our channels (``DOWN``: their consumers gone from its state, their
        messages returned): register our consumers of the groups it leads again (a no-op for
        a consumer the leader still has). What a channel's client holds comes back to the
        same channel, so its acks still count."""
        for key, consumer in list(self.consumers.items()):
            leader = self.leader_hint.get(key[0])
            if leader is None or leader == peer:
                self.command(consumer.queue, QOp.CHECKOUT, consumer.args)
        self.schedule_flush()

    def peer_down(self, peer: str) -> None:
        """Where this node leads, ``peer``'s channels are released (their messages return)."""
        if self.raft is None:
            return
        for group, replica in self.replicas.items():
            if self.raft.is_leader(group):
                self._release_down_nodes(replica)
        if peer in self.leader_hint.values():
            for group in [g for g, name in self.leader_hint.items() if name == peer]:
                del self.leader_hint[group]


def settled_leader(status: Any) -> bool:
    """A member's STATUS answer is the leader's, with its configuration committed: what it
    says of the group's membership is in effect."""
    return isinstance(status, dict) and status["role"] == "leader" and status["commit"] >= status["config_index"]


def member_role(status: dict[str, Any], member: str) -> str:
    """RabbitMQ's quorum_status ``membership`` of ``member`` in a STATUS answer: a voter, a
    learner still catching up ("promotable"), or neither ("non_voter")."""
    if member in status["voters"]:
        return "voter"
    return "promotable" if member in status["learners"] else "non_voter"


_STATUS_FIELDS = ("role", "term", "commit", "applied", "last_index", "snapshot_index", "config_index")


def _ignore(index: int | None, error: Exception | None) -> None:
    return None


def _no_answer(ok: bool, value: Any, text: str) -> None:
    return None


def _wire_value(op: QOp, value: Any) -> Any:
    """A result as it crosses a peer link (a GET's message as its fields)."""
    if op is QOp.GET and value is not None:
        msg_id, count, redelivered, left, message = value
        properties = _with_delivery_count(message, count) if count else encoded_properties(message)
        # the shape of a forwarded get's answer (warren.node.remote)
        return [msg_id, redelivered, message.exchange, message.routing_key, left, properties, message.body]
    return value


def _with_delivery_count(message: Message, count: int) -> bytes:
    """The properties with RabbitMQ's ``x-delivery-count`` header (a quorum queue's count
    of earlier deliveries that ended in a return)."""
    props = dict(message.props)
    props["headers"] = {**(props.get("headers") or {}), "x-delivery-count": count}
    copy = Message(message.exchange, message.routing_key, message.body, None, props)
    return encoded_properties(copy)
