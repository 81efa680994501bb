"""``VirtualHost``: exchanges, queues, bindings and policies of one vhost, with RabbitMQ's checks.

Methods mirror the AMQP methods (errors are ``AMQPError`` with RabbitMQ's codes and texts)::

    declare_exchange(name, type, passive=False, durable=True, auto_delete=False, internal=False,
                     arguments=None) -> (Exchange, created)
    delete_exchange(name, if_unused=False)
    declare_queue(name, passive=False, durable=False, exclusive=False, auto_delete=False,
                  arguments=None, owner=None, server_named=False, now_ms=None) -> (QueueState, created)
    delete_queue(name, if_unused=False, if_empty=False, owner=None) -> message count
    purge_queue(name, owner=None) -> count;  queue_for(name, owner=None) -> QueueState
    bind_queue(queue, exchange, routing_key, arguments=None, owner=None) / unbind_queue(...)
    bind_exchange(destination, source, routing_key, arguments=None) / unbind_exchange(...)
    publish(message, now_ms, mandatory=False) -> PublishOutcome
    reject(queue, msg_ids, now_ms) -> queues that received dead letters
    expire(now_ms) -> queues that changed (TTL, dead letters, x-expires deletions)
    owner_closed(owner) -> exclusive queues of that connection, now deleted
    set_policy(policy, now_ms=0) / clear_policy(name, now_ms=0)
    list_exchanges() / list_queues() / list_bindings() / list_policies()
    export_durable() -> dict;  VirtualHost.from_definition(name, dict)

Server-named queues: the caller generates the name ("amq.gen-..." from its own id source,
since this layer has no randomness) and passes ``server_named=True`` so that the reserved
``amq.`` prefix is allowed. Queues deleted by the vhost on its own (x-expires, exclusive
owner gone) are also collected for ``take_deleted()`` so persistence can forget them.
"""

from __future__ import annotations

from collections.abc import Callable, Hashable, Iterable
from dataclasses import dataclass, field
from typing import Any

from warren.broker.exchange import EXCHANGE_TYPES, Binding, Exchange
from warren.broker.message import Message, death_history, routing_keys_of
from warren.broker.policy import Policy, effective_queue_args, matching_policy, queue_kind
from warren.broker.queue import DeadLetter, QueueState
from warren.broker.queue_args import (
    check_equivalent_arguments,
    check_short_string,
    describe_value,
    parse_queue_arguments,
    resource_name,
)
from warren.errors import (
    access_refused,
    command_invalid,
    not_found,
    precondition_failed,
    resource_locked,
)
from warren.limits import DEFAULT_LIMITS, Limits

DEFAULT_EXCHANGES = (
    ("amq.direct", "direct"),
    ("amq.fanout", "fanout"),
    ("amq.topic", "topic"),
    ("amq.headers", "headers"),
    ("amq.match", "headers"),
)


@dataclass(slots=True)
class Checkpoint:
    """The definitions of a vhost at one moment, to undo a change whose write failed."""

    exchanges: dict[str, Exchange]
    bindings: dict[str, dict[tuple[str, str, str, Hashable], Binding]]
    queues: dict[str, QueueState]
    policies: dict[str, Policy]


@dataclass(slots=True)
class PublishOutcome:
    routed_queues: list[QueueState]  # accepted the message
    rejected_queues: list[QueueState]  # refused it (x-overflow reject-publish): nack when confirming
    unroutable: bool  # routed to no queue at all: basic.return when mandatory
    dead_letter_queues: list[QueueState] = field(default_factory=list)  # got dead letters (drop-head)
    remote_queues: list[QueueState] = field(default_factory=list)  # live on other nodes: forward to them


def _flag(value: bool) -> str:
    return "true" if value else "false"


def _shown(value: Any) -> str:
    return _flag(value) if isinstance(value, bool) else str(value)


class VirtualHost:
    def __init__(self, name: str, limits: Limits = DEFAULT_LIMITS) -> None:
        self.name = name
        self.limits = limits
        # in a cluster: this node's name, and dead letters for queues that live elsewhere (a
        # quorum queue, a classic queue homed on another node), which the node forwards
        self.node_name = ""
        self.forward_letters: list[tuple[QueueState, Message]] = []
        self.exchanges: dict[str, Exchange] = {"": Exchange("", "direct", durable=True)}
        for exchange_name, exchange_type in DEFAULT_EXCHANGES:
            self.exchanges[exchange_name] = Exchange(exchange_name, exchange_type, durable=True)
        self.queues: dict[str, QueueState] = {}
        self.policies: dict[str, Policy] = {}
        self._sources_of: dict[tuple[str, str], dict[str, None]] = {}  # destination -> source exchanges
        self._deleted: list[QueueState] = []
        self.default_queue_type = "classic"  # what a declare without x-queue-type gets (if it may)
        self.durable_version = 0  # bumped by every change to what export_durable() returns
        self._changing = False
        self._change_checkpoint: Checkpoint | None = None

    # ---- helpers ---------------------------------------------------------------------

    def _rs(self, kind: str, name: str) -> str:
        return resource_name(kind, name, self.name)

    def _exchange(self, name: str) -> Exchange:
        exchange = self.exchanges.get(name)
        if exchange is None:
            raise not_found(f"no exchange '{name}' in vhost '{self.name}'")
        return exchange

    def _check_exclusive(self, queue: QueueState, owner: Hashable, strict: bool = False) -> None:
        """rabbit_amqqueue:check_exclusive_access: an owned queue only for its owner; in strict
        mode (a redeclare) an unowned queue only for a non-exclusive declaration.
        ``owner=None`` outside strict mode is an administrative caller and may use any queue."""
        if owner is None and not strict:
            return  # an administrative caller (management API, the node itself), as RabbitMQ allows
        if queue.owner is not None:
            allowed = queue.owner == owner
        else:
            allowed = not strict or owner is None
        if not allowed:
            raise resource_locked(
                f"cannot obtain exclusive access to locked {self._rs('queue', queue.name)}. It could be "
                "originally declared on another connection or the exclusive property value does not "
                "match that of the original declaration."
            )

    def queue_for(self, name: str, owner: Hashable = None) -> QueueState:
        """The queue, checking existence (404) and exclusive ownership (405)."""
        queue = self.queues.get(name)
        if queue is None:
            raise not_found(f"no queue '{name}' in vhost '{self.name}'")
        self._check_exclusive(queue, owner)
        return queue

    # ---- exchanges -------------------------------------------------------------------

    def declare_exchange(
        self,
        name: str,
        type: str,
        passive: bool = False,
        durable: bool = True,
        auto_delete: bool = False,
        internal: bool = False,
        arguments: dict[str, Any] | None = None,
    ) -> tuple[Exchange, bool]:
        if passive:
            if name == "":  # RabbitMQ refuses even a passive declare of the default exchange
                raise access_refused("operation not permitted on the default exchange")
            return self._exchange(name), False
        if type not in EXCHANGE_TYPES:
            raise command_invalid(f"unknown exchange type '{type}'")
        if name == "":
            raise access_refused("operation not permitted on the default exchange")
        arguments = dict(arguments or {})
        existing = self.exchanges.get(name)
        if existing is not None:
            where = self._rs("exchange", name)
            for field_name, current, received in (
                ("type", existing.type, type),
                ("durable", existing.durable, durable),
                ("auto_delete", existing.auto_delete, auto_delete),
                ("internal", existing.internal, internal),
            ):
                if current != received:
                    raise precondition_failed(
                        f"inequivalent arg '{field_name}' for {where}: "
                        f"received '{_shown(received)}' but current is '{_shown(current)}'"
                    )
            old_ae, new_ae = existing.arguments.get("alternate-exchange"), arguments.get("alternate-exchange")
            if old_ae != new_ae:
                raise precondition_failed(
                    f"inequivalent arg 'alternate-exchange' for {where}: "
                    f"received {describe_value(new_ae)} but current is {describe_value(old_ae)}"
                )
            return existing, False
        if name.startswith("amq."):
            raise access_refused(f"exchange name '{name}' contains reserved prefix 'amq.*'")
        check_short_string("exchange", name, self.name)
        if len(self.exchanges) >= self.limits.max_exchanges:
            raise precondition_failed(
                f"cannot declare {self._rs('exchange', name)}: exchange limit ({self.limits.max_exchanges}) is reached"
            )
        exchange = Exchange(name, type, durable, auto_delete, internal, arguments)
        self._apply_exchange_policy(exchange)
        if durable:
            self._durable_change()
        self.exchanges[name] = exchange
        return exchange, True

    def delete_exchange(self, name: str, if_unused: bool = False) -> None:
        if name == "":
            raise access_refused("operation not permitted on the default exchange")
        if name.startswith("amq."):
            raise access_refused(f"deletion of system {self._rs('exchange', name)} not allowed")
        exchange = self.exchanges.get(name)
        if exchange is None:
            return  # deleting an absent exchange succeeds, as in RabbitMQ
        if if_unused and exchange.bindings:
            raise precondition_failed(f"{self._rs('exchange', name)} in use")
        self._remove_exchange(exchange)

    def _remove_exchange(self, exchange: Exchange) -> None:
        if exchange.durable:
            self._durable_change()
        del self.exchanges[exchange.name]
        for binding in list(exchange.bindings.values()):
            self._forget_source(binding)
        exchange.bindings.clear()
        self._unbind_destination("exchange", exchange.name)

    def _forget_source(self, binding: Binding) -> None:
        dest = (binding.destination_kind, binding.destination)
        sources = self._sources_of.get(dest)
        if sources is None:
            return
        source = self.exchanges.get(binding.source)
        if source is None or not source.bindings_to(*dest):
            sources.pop(binding.source, None)
            if not sources:
                del self._sources_of[dest]

    def _unbind_destination(self, kind: str, name: str) -> None:
        """Remove every binding to a deleted queue or exchange (and auto-delete sources)."""
        for source_name in list(self._sources_of.pop((kind, name), {})):
            source = self.exchanges.get(source_name)
            if source is None:
                continue
            for binding in source.bindings_to(kind, name):
                source.remove_binding(binding)
            self._maybe_auto_delete(source)

    def _maybe_auto_delete(self, exchange: Exchange) -> None:
        if exchange.auto_delete and not exchange.bindings and exchange.name in self.exchanges:
            self._remove_exchange(exchange)

    # ---- bindings --------------------------------------------------------------------

    def _add_binding(self, binding: Binding) -> None:
        source = self.exchanges[binding.source]
        if self._is_durable_binding(binding) and binding.identity not in source.bindings:
            self._durable_change()
        if source.add_binding(binding):
            self._sources_of.setdefault((binding.destination_kind, binding.destination), {})[binding.source] = None

    def _remove_binding(self, binding: Binding) -> None:
        source = self.exchanges[binding.source]
        if self._is_durable_binding(binding) and binding.identity in source.bindings:
            self._durable_change()
        if source.remove_binding(binding):
            self._forget_source(binding)
            self._maybe_auto_delete(source)

    def _check_bindable(self, source: str) -> None:
        if source == "":
            raise access_refused("operation not permitted on the default exchange")
        self._exchange(source)

    def bind_queue(
        self, queue: str, exchange: str, routing_key: str, arguments: dict[str, Any] | None = None,
        owner: Hashable = None,
    ) -> None:
        self._check_bindable(exchange)
        self.queue_for(queue, owner)
        self._add_binding(Binding(exchange, "queue", queue, routing_key, dict(arguments or {})))

    def unbind_queue(
        self, queue: str, exchange: str, routing_key: str, arguments: dict[str, Any] | None = None,
        owner: Hashable = None,
    ) -> None:
        # RabbitMQ 3.x: unbinding is idempotent, a missing exchange or queue is no error
        if exchange == "":
            raise access_refused("operation not permitted on the default exchange")
        if exchange not in self.exchanges or queue not in self.queues:
            return
        self.queue_for(queue, owner)
        self._remove_binding(Binding(exchange, "queue", queue, routing_key, dict(arguments or {})))

    def bind_exchange(
        self, destination: str, source: str, routing_key: str, arguments: dict[str, Any] | None = None
    ) -> None:
        self._check_bindable(source)
        if destination == "":
            raise access_refused("operation not permitted on the default exchange")
        self._exchange(destination)
        self._add_binding(Binding(source, "exchange", destination, routing_key, dict(arguments or {})))

    def unbind_exchange(
        self, destination: str, source: str, routing_key: str, arguments: dict[str, Any] | None = None
    ) -> None:
        if source == "" or destination == "":
            raise access_refused("operation not permitted on the default exchange")
        if source not in self.exchanges or destination not in self.exchanges:
            return  # idempotent, as in RabbitMQ
        self._remove_binding(Binding(source, "exchange", destination, routing_key, dict(arguments or {})))

    # ---- queues ----------------------------------------------------------------------

    def typed_arguments(self, name: str, arguments: dict[str, Any], durable: bool, exclusive: bool,
                        auto_delete: bool) -> dict[str, Any]:
        """``arguments`` with the vhost's default queue type where the declare names none, for
        a queue that may be a quorum queue (durable, not exclusive, not auto-delete; the others
        stay classic). A redeclare of a queue of that type is equivalent; one of a queue of
        another type (declared before the default changed) keeps what it is."""
        default = self.default_queue_type
        existing = self.queues.get(name)
        if (default == "classic" or "x-queue-type" in arguments or not durable or exclusive or auto_delete
                or (existing is not None and existing.arguments.get("x-queue-type") != default)):
            return arguments
        return {**arguments, "x-queue-type": self.default_queue_type}

    def declare_queue(
        self,
        name: str,
        passive: bool = False,
        durable: bool = False,
        exclusive: bool = False,
        auto_delete: bool = False,
        arguments: dict[str, Any] | None = None,
        owner: Hashable = None,
        server_named: bool = False,
        now_ms: int | None = None,
    ) -> tuple[QueueState, bool]:
        arguments = dict(arguments or {})
        existing = self.queues.get(name)
        if passive:
            queue = self.queue_for(name, owner)
            return queue, False
        if existing is not None:
            self._check_exclusive(existing, owner if exclusive else None, strict=True)
            where = self._rs("queue", name)
            for field_name, current, received in (
                ("durable", existing.durable, durable),
                ("auto_delete", existing.auto_delete, auto_delete),
            ):
                if current != received:
                    raise precondition_failed(
                        f"inequivalent arg '{field_name}' for {where}: "
                        f"received '{_flag(received)}' but current is '{_flag(current)}'"
                    )
            check_equivalent_arguments(existing.arguments, arguments, name, self.name)
            existing.touch(now_ms)
            return existing, False
        if name.startswith("amq.") and not server_named:
            raise access_refused(f"queue name '{name}' contains reserved prefix 'amq.*'")
        if not name:
            raise precondition_failed("queue name must not be empty (the caller names server-named queues)")
        check_short_string("queue", name, self.name)
        if len(self.queues) >= self.limits.max_queues:
            raise precondition_failed(
                f"cannot declare {self._rs('queue', name)}: queue limit in vhost '{self.name}' "
                f"({self.limits.max_queues}) is reached"
            )
        declared = parse_queue_arguments(arguments, name, self.name)
        if declared.max_priority is not None and declared.max_priority > self.limits.max_priority:
            raise precondition_failed(
                f"invalid arg 'x-max-priority' for {self._rs('queue', name)}: "
                f"{{max_value_exceeded,{declared.max_priority}}}"
            )
        if declared.queue_type == "quorum":
            _check_quorum_properties(self._rs("queue", name), durable, exclusive, auto_delete)
        policy = matching_policy(self.policies.values(), queue_kind(declared), name)
        queue = QueueState(
            name, self.name, durable, exclusive, auto_delete, arguments,
            owner if exclusive else None, effective_queue_args(declared, policy),
        )
        queue.policy = policy.name if policy else None
        queue.touch(now_ms)
        if durable:
            self._durable_change()
        self.queues[name] = queue
        return queue, True

    def delete_queue(
        self, name: str, if_unused: bool = False, if_empty: bool = False, owner: Hashable = None
    ) -> int:
        queue = self.queues.get(name)
        if queue is None:
            return 0  # deleting an absent queue succeeds with count 0, as in RabbitMQ
        self._check_exclusive(queue, owner)
        if if_unused and queue.consumer_count:
            raise precondition_failed(f"{self._rs('queue', name)} in use")
        if if_empty and queue.messages_ready:
            raise precondition_failed(f"{self._rs('queue', name)} is not empty")
        count = queue.messages_ready
        self._remove_queue(queue)
        return count

    def _remove_queue(self, queue: QueueState) -> None:
        if queue.durable:
            self._durable_change()
        del self.queues[queue.name]
        queue.deleted = True
        self._unbind_destination("queue", queue.name)

    def purge_queue(self, name: str, owner: Hashable = None) -> int:
        return self.queue_for(name, owner).purge()

    def durable_queues_with_journal(self) -> list[QueueState]:
        return [q for q in self.queues.values() if q.journal is not None]

    def owner_closed(self, owner: Hashable) -> list[QueueState]:
        """A connection closed: delete its exclusive queues; returns them."""
        gone = [q for q in self.queues.values() if q.exclusive and q.owner == owner]
        for queue in gone:
            self._remove_queue(queue)
        return gone

    def cancel_consumer(self, queue: QueueState, tag: str) -> bool:
        """Cancel a consumer; an auto-delete queue goes with its last consumer. True if deleted."""
        queue.cancel_consumer(tag)
        if queue.auto_delete and queue.had_consumers and not queue.consumer_count and not queue.deleted:
            self._remove_queue(queue)
            return True
        return False

    def take_deleted(self) -> list[QueueState]:
        """Queues the vhost deleted on its own (x-expires) since the last call."""
        taken, self._deleted = self._deleted, []
        return taken

    # ---- routing ---------------------------------------------------------------------

    def route(self, exchange: Exchange, keys: list[str], headers: dict[str, Any] | None) -> list[QueueState]:
        """Queues the message reaches, each once: e2e bindings without loops, alternate exchanges."""
        if exchange.name == "":
            found = [self.queues[k] for k in dict.fromkeys(keys) if k in self.queues]
            return found
        queues: dict[str, QueueState] = {}
        seen = {exchange.name}
        pending = [exchange]
        while pending:
            current = pending.pop()
            dests = list(current.route(keys, headers))
            if not dests:
                alternate = current.alternate_exchange
                if alternate is not None:
                    dests = [("exchange", alternate)]
            for kind, name in dests:
                if kind == "queue":
                    queue = self.queues.get(name)
                    if queue is not None:
                        queues[name] = queue
                elif name not in seen:
                    seen.add(name)
                    target = self.exchanges.get(name)
                    if target is not None:
                        pending.append(target)
        return list(queues.values())

    def publish(self, message: Message, now_ms: int, mandatory: bool = False,
                elsewhere: Callable[[QueueState], bool] | None = None) -> PublishOutcome:
        """Route and enqueue; queues ``elsewhere`` says live on another node are only
        routed to (``outcome.remote_queues``: the caller forwards the message to them)."""
        exchange = self._exchange(message.exchange)
        if exchange.internal:
            raise access_refused(f"cannot publish to internal {self._rs('exchange', exchange.name)}")
        keys = routing_keys_of(message)
        headers = message.headers
        if headers and "BCC" in headers:
            bcc = headers["BCC"]
            if isinstance(bcc, list):
                keys.extend(k.decode() if isinstance(k, bytes) else str(k) for k in bcc)
            headers = {k: v for k, v in headers.items() if k != "BCC"}
            message.props = {**message.props, "headers": headers}
            message.properties = None  # BCC never reaches consumers
        queues = self.route(exchange, keys, headers)
        remote: list[QueueState] = []
        if elsewhere is not None:
            remote = [q for q in queues if elsewhere(q)]
            if remote:
                queues = [q for q in queues if not elsewhere(q)]
        outcome = self.enqueue_to(queues, message, now_ms)
        if remote:
            outcome.remote_queues = remote
            outcome.unroutable = False
        return outcome

    def enqueue_to(self, queues: list[QueueState], message: Message, now_ms: int) -> PublishOutcome:
        """A message another node routed, into these (local) queues: as ``publish`` after
        its routing."""
        routed: list[QueueState] = []
        rejected: list[QueueState] = []
        for queue in queues:
            (routed if queue.enqueue(message, now_ms).accepted else rejected).append(queue)
        return PublishOutcome(routed, rejected, not queues, self._route_dead_letters(queues, now_ms))

    def _route_dead_letters(self, sources: Iterable[QueueState], now_ms: int) -> list[QueueState]:
        """Publish queued dead letters to their DLX, cascading; RabbitMQ's cycle detection."""
        letters = [letter for q in sources if q.dead_letters for letter in q.take_dead_letters()]
        return self.route_dead_letters(letters, now_ms) if letters else []

    def route_dead_letters(self, letters: list[DeadLetter], now_ms: int) -> list[QueueState]:
        """Route dead letters (of a queue here, or a quorum queue's leader's) to their DLX's
        queues, cascading; returns the local queues that got some. Those for queues that
        live elsewhere wait in ``forward_letters`` for the node to send them."""
        changed: dict[str, QueueState] = {}
        work = list(letters)
        while work:
            letter = work.pop()
            exchange = self.exchanges.get(letter.exchange)
            if exchange is None:
                continue  # a missing DLX drops the message, as RabbitMQ does
            message = letter.message
            history = death_history(message)
            for target in self.route(exchange, routing_keys_of(message), message.headers):
                if letter.reason != "rejected" and _is_cycle(target.name, history):
                    continue
                if target.members or (target.home and target.home != self.node_name):
                    self.forward_letters.append((target, message))
                    continue
                target.enqueue(message, now_ms)
                changed[target.name] = target
                if target.dead_letters:
                    work.extend(target.take_dead_letters())
        return list(changed.values())

    def reject(self, queue: QueueState, msg_ids: Iterable[int], now_ms: int) -> list[QueueState]:
        """basic.reject/nack without requeue; returns the queues that received dead letters."""
        queue.reject(msg_ids, now_ms)
        return self._route_dead_letters([queue], now_ms)

    def expire(self, now_ms: int, unused: Callable[[QueueState], bool] | None = None) -> list[QueueState]:
        """Message TTL, queue x-expires, pending dead letters; returns queues that changed.

        ``unused(queue)``, when given, hears of each queue whose x-expires passed instead of
        the queue being removed here, and says whether to remove it anyway (a cluster deletes
        it by command, from its home node only)."""
        changed: dict[str, QueueState] = {}
        for queue in list(self.queues.values()):
            if queue.deleted:
                continue
            if queue.expire(now_ms) or queue.dead_letters:
                changed[queue.name] = queue
                for target in self._route_dead_letters([queue], now_ms):
                    changed[target.name] = target
            if queue.unused_expired(now_ms) and (unused is None or unused(queue)):
                self._remove_queue(queue)
                self._deleted.append(queue)
                changed[queue.name] = queue
        return list(changed.values())

    # ---- policies --------------------------------------------------------------------

    def set_policy(self, policy: Policy, now_ms: int = 0) -> None:
        self._durable_change()
        self.policies[policy.name] = policy
        self._apply_policies(now_ms)

    def clear_policy(self, name: str, now_ms: int = 0) -> None:
        if name not in self.policies:
            raise not_found(f"no policy '{name}' in vhost '{self.name}'")
        self._durable_change()
        del self.policies[name]
        self._apply_policies(now_ms)

    def reapply_policies(self, now_ms: int = 0) -> None:
        """Match every exchange and queue against the policies again (after a restore)."""
        self._apply_policies(now_ms)

    def _apply_exchange_policy(self, exchange: Exchange) -> None:
        policy = matching_policy(self.policies.values(), "exchange", exchange.name)
        exchange.policy = policy.name if policy else None
        alternate = policy.definition.get("alternate-exchange") if policy else None
        exchange.policy_alternate_exchange = alternate if isinstance(alternate, str) else None

    def _apply_policies(self, now_ms: int) -> None:
        for exchange in self.exchanges.values():
            if exchange.name:
                self._apply_exchange_policy(exchange)
        for queue in self.queues.values():
            policy = matching_policy(self.policies.values(), queue_kind(queue.declared_args), queue.name)
            queue.policy = policy.name if policy else None
            queue.apply_args(effective_queue_args(queue.declared_args, policy), now_ms)
        self._route_dead_letters(list(self.queues.values()), now_ms)

    # ---- undoing a change ---------------------------------------------------------------
    # A change of definitions runs between begin_change() and end_change(). The first
    # mutation of durable state in it takes a checkpoint first (so transient declares cost
    # neither a checkpoint nor a write) and every one bumps durable_version.

    def begin_change(self) -> None:
        self._changing = True
        self._change_checkpoint = None

    def end_change(self) -> Checkpoint | None:
        """Close the change; its checkpoint, if it changed durable state."""
        checkpoint, self._change_checkpoint, self._changing = self._change_checkpoint, None, False
        return checkpoint

    def _durable_change(self) -> None:
        if self._changing and self._change_checkpoint is None:
            self._change_checkpoint = self.checkpoint()
        self.durable_version += 1

    def _is_durable_binding(self, binding: Binding) -> bool:
        source = self.exchanges.get(binding.source)
        if source is None or not source.durable:
            return False
        if binding.destination_kind == "queue":
            queue = self.queues.get(binding.destination)
            return queue is not None and queue.durable
        destination = self.exchanges.get(binding.destination)
        return destination is not None and destination.durable

    def checkpoint(self) -> Checkpoint:
        """What ``rollback`` returns to: O(exchanges + bindings + queues), like an export."""
        return Checkpoint(
            dict(self.exchanges),
            {name: dict(x.bindings) for name, x in self.exchanges.items() if x.bindings},
            dict(self.queues),
            dict(self.policies),
        )

    def rollback(self, checkpoint: Checkpoint, now_ms: int = 0) -> None:
        """Return exchanges, bindings, queues and policies to ``checkpoint``.

        Objects removed since come back as they were (a deleted queue with its messages);
        objects created since are dropped. Messages a policy change already expired or
        dead-lettered stay gone.
        """
        for queue in self.queues.values():
            if queue.name not in checkpoint.queues:
                queue.deleted = True
        for queue in checkpoint.queues.values():
            queue.deleted = False
        self.exchanges = dict(checkpoint.exchanges)
        self.queues = dict(checkpoint.queues)
        for exchange in self.exchanges.values():
            wanted = checkpoint.bindings.get(exchange.name, {})
            for ident, binding in list(exchange.bindings.items()):
                if ident not in wanted:
                    exchange.remove_binding(binding)
            for ident, binding in wanted.items():
                if ident not in exchange.bindings:
                    exchange.add_binding(binding)
        self._sources_of = {}
        for exchange in self.exchanges.values():
            for binding in exchange.bindings.values():
                dest = (binding.destination_kind, binding.destination)
                self._sources_of.setdefault(dest, {})[binding.source] = None
        if self.policies != checkpoint.policies:
            self.policies = dict(checkpoint.policies)
            self._apply_policies(now_ms)

    # ---- listing and export -------------------------------------------------------------

    def list_exchanges(self) -> list[dict[str, Any]]:
        return [x.as_dict(self.name) for x in self.exchanges.values()]

    def list_queues(self) -> list[dict[str, Any]]:
        return [q.as_dict() for q in self.queues.values()]

    def list_bindings(self) -> list[dict[str, Any]]:
        """Explicit bindings plus the default exchange's implicit one per queue, as RabbitMQ lists them."""
        listed = [
            Binding("", "queue", name, name, {}).as_dict(self.name) for name in self.queues
        ]
        for exchange in self.exchanges.values():
            listed.extend(b.as_dict(self.name) for b in exchange.bindings.values())
        return listed

    def list_policies(self) -> list[dict[str, Any]]:
        return [p.as_dict(self.name) for p in self.policies.values()]

    def export_durable(self) -> dict[str, Any]:
        """Durable definitions as plain data (msgpack/JSON-able)."""
        exchanges = [
            x.as_dict(self.name) for x in self.exchanges.values()
            if x.durable and x.name and not x.name.startswith("amq.")
        ]
        queues = [
            {**q.as_dict(), "store_id": q.store_id}
            for q in self.queues.values() if q.durable and not q.exclusive
        ]
        durable_names = {("queue", q["name"]) for q in queues} | {("exchange", x.name) for x in self.exchanges.values() if x.durable}
        bindings = [
            b.as_dict(self.name)
            for x in self.exchanges.values() if x.durable
            for b in x.bindings.values() if (b.destination_kind, b.destination) in durable_names
        ]
        return {"exchanges": exchanges, "queues": queues, "bindings": bindings, "policies": self.list_policies(),
                "default_queue_type": self.default_queue_type}

    def export_all(self) -> dict[str, Any]:
        """Every definition, transient and exclusive ones too, in ``export_durable``'s shape
        (the metadata group's snapshot of this vhost; ``from_definition`` reads it back)."""
        exchanges = [x.as_dict(self.name) for x in self.exchanges.values() if x.name and not x.name.startswith("amq.")]
        queues: list[dict[str, Any]] = [
            {"name": q.name, "durable": q.durable, "exclusive": q.exclusive, "auto_delete": q.auto_delete,
             "arguments": q.arguments, "owner": q.owner, "store_id": q.store_id, "home": q.home,
             **({"members": q.members, "group": q.group, "genesis": q.genesis,
                 "target_size": q.target_size} if q.group else {})}
            for q in self.queues.values()
        ]
        bindings = [b.as_dict(self.name) for x in self.exchanges.values() for b in x.bindings.values()]
        return {"exchanges": exchanges, "queues": queues, "bindings": bindings, "policies": self.list_policies(),
                "default_queue_type": self.default_queue_type}

    @classmethod
    def from_definition(cls, name: str, definition: dict[str, Any], limits: Limits = DEFAULT_LIMITS) -> VirtualHost:
        vhost = cls(name, limits)
        vhost.default_queue_type = definition.get("default_queue_type", "classic")
        for p in definition.get("policies", []):
            vhost.policies[p["name"]] = Policy(p["name"], p["pattern"], p["apply-to"], p["priority"], p["definition"])
        for x in definition.get("exchanges", []):
            vhost.declare_exchange(x["name"], x["type"], durable=x.get("durable", True), auto_delete=x["auto_delete"],
                                   internal=x["internal"], arguments=x["arguments"])
        for q in definition.get("queues", []):
            queue, _ = vhost.declare_queue(q["name"], durable=q.get("durable", True), auto_delete=q["auto_delete"],
                                           exclusive=q.get("exclusive", False), owner=q.get("owner"),
                                           arguments=q["arguments"], server_named=True)
            queue.store_id = q.get("store_id", 0)
            queue.home = q.get("home", "")
            queue.members = list(q.get("members", ()))
            queue.group = q.get("group", 0)
            queue.genesis = list(q.get("genesis", ()))
            queue.target_size = q.get("target_size", 0)
        for b in definition.get("bindings", []):
            if b["source"] not in vhost.exchanges:
                continue
            if b["destination_type"] == "queue" and b["destination"] in vhost.queues:
                vhost._add_binding(Binding(b["source"], "queue", b["destination"], b["routing_key"], b["arguments"]))
            elif b["destination_type"] == "exchange" and b["destination"] in vhost.exchanges:
                vhost._add_binding(Binding(b["source"], "exchange", b["destination"], b["routing_key"], b["arguments"]))
        return vhost


def _is_cycle(queue: str, history: list[tuple[str, str]]) -> bool:
    """rabbit_dead_letter:is_cycle: the queue was died from before with no rejection since."""
    for seen_queue, reason in history:
        if reason == "rejected":
            return False
        if seen_queue == queue:
            return True
    return False


def _check_quorum_properties(where: str, durable: bool, exclusive: bool, auto_delete: bool) -> None:
    """RabbitMQ's rules for quorum queues, in its order and words (rabbit_queue_type_util)."""
    if auto_delete:
        raise precondition_failed(f"invalid property 'auto-delete' for {where}")
    if exclusive:
        raise precondition_failed(f"invalid property 'exclusive-owner' for {where}")
    if not durable:
        raise precondition_failed(f"invalid property 'non-durable' for {where}")
