"""Changes of definitions as data: one command type per change, one pure apply.

Every change of vhosts, users, permissions, exchanges, queues, bindings and policies is a
:class:`Command`: AMQP sessions and the HTTP API build the same commands and the node runs
them through one path (``warren.node.commands``). A command holds only plain values (names,
flags, argument tables, an exclusive owner's id, the timestamp the submitter picked), so it
can be written to the metadata group's log and applied identically on every node:
:func:`apply_command` is deterministic given the broker model and the command.

Encoding: ``[kind, *fields]`` in field order, msgpack. Kind numbers are append-only, as the
log's op codes are: never renumber one.
"""

from __future__ import annotations

from collections.abc import Callable
from dataclasses import astuple, dataclass, field
from typing import Any, ClassVar, Protocol

from warren.broker.auth import Broker
from warren.broker.policy import Policy
from warren.broker.queue import QueueState
from warren.broker.vhost import VirtualHost
from warren.errors import AMQPError, not_found, precondition_failed
from warren.store.broker_store import pack_definition, unpack_definition


@dataclass(frozen=True, slots=True)
class Command:
    kind: ClassVar[int] = 0
    # broker-wide commands (vhosts, users, permissions) name no vhost to change inside
    vhost_scoped: ClassVar[bool] = True


@dataclass(frozen=True, slots=True)
class DeclareExchange(Command):
    kind: ClassVar[int] = 1
    vhost: str
    name: str
    type: str
    durable: bool = True
    auto_delete: bool = False
    internal: bool = False
    arguments: dict[str, Any] = field(default_factory=dict)


@dataclass(frozen=True, slots=True)
class DeleteExchange(Command):
    kind: ClassVar[int] = 2
    vhost: str
    name: str
    if_unused: bool = False
    must_exist: bool = False  # the HTTP API answers 404 for an absent one; AMQP succeeds


@dataclass(frozen=True, slots=True)
class BindExchange(Command):
    kind: ClassVar[int] = 3
    vhost: str
    destination: str
    source: str
    routing_key: str
    arguments: dict[str, Any] = field(default_factory=dict)


@dataclass(frozen=True, slots=True)
class UnbindExchange(Command):
    kind: ClassVar[int] = 4
    vhost: str
    destination: str
    source: str
    routing_key: str
    arguments: dict[str, Any] = field(default_factory=dict)


@dataclass(frozen=True, slots=True)
class DeclareQueue(Command):
    kind: ClassVar[int] = 5
    vhost: str
    name: str
    durable: bool = False
    exclusive: bool = False
    auto_delete: bool = False
    arguments: dict[str, Any] = field(default_factory=dict)
    owner: str | None = None  # the declaring connection's id; kept only for exclusive queues
    server_named: bool = False
    now_ms: int = 0
    home: str = ""  # the node it lives on (chosen by the submitter; "" on a standalone node)
    members: tuple[str, ...] = ()  # a quorum queue's members, the preferred leader first


@dataclass(frozen=True, slots=True)
class DeleteQueue(Command):
    kind: ClassVar[int] = 6
    vhost: str
    name: str
    if_unused: bool = False
    if_empty: bool = False
    owner: str | None = None
    must_exist: bool = False


@dataclass(frozen=True, slots=True)
class BindQueue(Command):
    kind: ClassVar[int] = 7
    vhost: str
    queue: str
    exchange: str
    routing_key: str
    arguments: dict[str, Any] = field(default_factory=dict)
    owner: str | None = None


@dataclass(frozen=True, slots=True)
class UnbindQueue(Command):
    kind: ClassVar[int] = 8
    vhost: str
    queue: str
    exchange: str
    routing_key: str
    arguments: dict[str, Any] = field(default_factory=dict)
    owner: str | None = None


@dataclass(frozen=True, slots=True)
class PutVhost(Command):
    kind: ClassVar[int] = 9
    vhost_scoped: ClassVar[bool] = False
    name: str
    default_queue_type: str = ""  # "" leaves it as it is (a new vhost: classic)


@dataclass(frozen=True, slots=True)
class DeleteVhost(Command):
    kind: ClassVar[int] = 10
    vhost_scoped: ClassVar[bool] = False
    name: str


@dataclass(frozen=True, slots=True)
class PutUser(Command):
    """The password travels only as its hash: the submitter hashes a plain one first."""

    kind: ClassVar[int] = 11
    vhost_scoped: ClassVar[bool] = False
    name: str
    password_hash: str
    hashing_algorithm: str
    tags: tuple[str, ...] = ()


@dataclass(frozen=True, slots=True)
class DeleteUser(Command):
    kind: ClassVar[int] = 12
    vhost_scoped: ClassVar[bool] = False
    name: str


@dataclass(frozen=True, slots=True)
class SetPermissions(Command):
    kind: ClassVar[int] = 13
    vhost_scoped: ClassVar[bool] = False
    user: str
    vhost: str
    configure: str
    write: str
    read: str


@dataclass(frozen=True, slots=True)
class ClearPermissions(Command):
    kind: ClassVar[int] = 14
    vhost_scoped: ClassVar[bool] = False
    user: str
    vhost: str


@dataclass(frozen=True, slots=True)
class SetPolicy(Command):
    kind: ClassVar[int] = 15
    vhost: str
    name: str
    pattern: str
    apply_to: str
    priority: int
    definition: dict[str, Any]
    now_ms: int = 0


@dataclass(frozen=True, slots=True)
class ClearPolicy(Command):
    kind: ClassVar[int] = 16
    vhost: str
    name: str
    now_ms: int = 0


@dataclass(frozen=True, slots=True)
class SetQueueMembers(Command):
    """A quorum queue's members from now on (rabbitmq-queues add_member, delete_member,
    grow, shrink): the metadata records the target; each group's leader then changes its
    Raft configuration towards it, one member at a time (``warren.io.quorum_groups``).
    An operator's change also sets the size the queue keeps from then on (``size``); the
    metadata leader's own repairs (``size`` 0) keep it."""

    kind: ClassVar[int] = 17
    vhost: str
    name: str
    members: tuple[str, ...]
    size: int = 0


COMMANDS: dict[int, type[Command]] = {cls.kind: cls for cls in (
    DeclareExchange, DeleteExchange, BindExchange, UnbindExchange, DeclareQueue, DeleteQueue,
    BindQueue, UnbindQueue, PutVhost, DeleteVhost, PutUser, DeleteUser, SetPermissions,
    ClearPermissions, SetPolicy, ClearPolicy, SetQueueMembers,
)}


def describe(command: Command) -> str:
    """What the command does, as RabbitMQ words its failures: "declare queue 'q' in vhost '/'"."""
    c: Any = command
    verb = type(command).__name__
    words = {"DeclareExchange": "declare exchange", "DeleteExchange": "delete exchange",
             "DeclareQueue": "declare queue", "DeleteQueue": "delete queue", "SetPolicy": "set policy",
             "ClearPolicy": "clear policy", "PutVhost": "add vhost", "DeleteVhost": "delete vhost",
             "PutUser": "add user", "DeleteUser": "delete user", "SetQueueMembers": "change the members of queue"}
    if verb in words:
        where = f" in vhost '{c.vhost}'" if command.vhost_scoped else ""
        return f"{words[verb]} '{c.name}'{where}"
    if isinstance(command, BindQueue | UnbindQueue):
        action = "bind" if isinstance(command, BindQueue) else "unbind"
        return f"{action} queue '{c.queue}' and exchange '{c.exchange}' in vhost '{c.vhost}'"
    if isinstance(command, BindExchange | UnbindExchange):
        action = "bind" if isinstance(command, BindExchange) else "unbind"
        return f"{action} exchange '{c.destination}' and exchange '{c.source}' in vhost '{c.vhost}'"
    return f"set permissions of user '{c.user}' in vhost '{c.vhost}'"


def encode_command(command: Command) -> bytes:
    """msgpack ``[kind, *fields]``; ``UnstorableValue`` for a value the store cannot hold."""
    return pack_definition([command.kind, *astuple(command)])


def decode_command(data: bytes) -> Command:
    kind, *values = unpack_definition(data)
    cls = COMMANDS[kind]
    if cls is PutUser:
        values[3] = tuple(values[3])
    if cls is DeclareQueue and len(values) > 10:
        values[10] = tuple(values[10])
    if cls is SetQueueMembers:
        values[2] = tuple(values[2])
    return cls(*values)


@dataclass(frozen=True, slots=True)
class Outcome:
    """A submitted command's answer: its value, or the error that refused it."""

    value: Any = None
    error: AMQPError | None = None


Done = Callable[[Outcome], None]


class CommandRunner(Protocol):
    """Where a node's definition commands go (``warren.node.commands`` documents the contract)."""

    def submit(self, command: Command, done: Done) -> None: ...

    def barrier(self, done: Done) -> None: ...


@dataclass
class Applied:
    """What a command did: the value its reply needs, and what the node must follow up on."""

    value: Any = None
    deleted_queues: list[QueueState] = field(default_factory=list)
    deleted_vhost: VirtualHost | None = None
    policy_vhost: VirtualHost | None = None  # its policies changed: every queue may differ now
    members_changed: QueueState | None = None  # a quorum queue with new target members


def vhost_of(broker: Broker, name: str) -> VirtualHost:
    vhost = broker.vhosts.get(name)
    if vhost is None:
        raise not_found(f"no vhost '{name}'")
    return vhost


def apply_command(broker: Broker, command: Command) -> Applied:
    """Apply one command to the broker model; raises ``AMQPError`` with nothing changed
    when the command is refused (the caller's checkpoint undoes a partial change)."""
    kind = type(command)
    if not command.vhost_scoped:
        return _apply_broker_wide(broker, command)
    v = vhost_of(broker, command.vhost)  # type: ignore[attr-defined]
    if kind is DeclareExchange:
        c: Any = command
        v.declare_exchange(c.name, c.type, durable=c.durable, auto_delete=c.auto_delete,
                           internal=c.internal, arguments=c.arguments)
        return Applied()
    if kind is DeleteExchange:
        c = command
        if c.must_exist and c.name not in v.exchanges:
            raise not_found(f"no exchange '{c.name}' in vhost '{v.name}'")
        v.delete_exchange(c.name, if_unused=c.if_unused)
        return Applied()
    if kind is BindExchange:
        c = command
        v.bind_exchange(c.destination, c.source, c.routing_key, c.arguments)
        return Applied()
    if kind is UnbindExchange:
        c = command
        v.unbind_exchange(c.destination, c.source, c.routing_key, c.arguments)
        return Applied()
    if kind is DeclareQueue:
        c = command
        queue, created = v.declare_queue(
            c.name, durable=c.durable, exclusive=c.exclusive, auto_delete=c.auto_delete,
            arguments=c.arguments, owner=c.owner, server_named=c.server_named, now_ms=c.now_ms,
        )
        if not queue.home:
            queue.home = c.home  # a redeclare never moves a queue
            queue.members = list(c.members)
        return Applied(value=(queue.name, queue.messages_ready, queue.consumer_count, created))
    if kind is DeleteQueue:
        c = command
        existing = v.queues.get(c.name)
        if existing is None and c.must_exist:
            raise not_found(f"no queue '{c.name}' in vhost '{v.name}'")
        count = v.delete_queue(c.name, if_unused=c.if_unused, if_empty=c.if_empty, owner=c.owner)
        return Applied(value=count, deleted_queues=[existing] if existing is not None else [])
    if kind is BindQueue:
        c = command
        v.bind_queue(c.queue, c.exchange, c.routing_key, c.arguments, owner=c.owner)
        return Applied()
    if kind is UnbindQueue:
        c = command
        v.unbind_queue(c.queue, c.exchange, c.routing_key, c.arguments, owner=c.owner)
        return Applied()
    if kind is SetQueueMembers:
        c = command
        target = v.queues.get(c.name)
        if target is None:
            raise not_found(f"no queue '{c.name}' in vhost '{v.name}'")
        if not target.members:
            raise precondition_failed(f"queue '{c.name}' in vhost '{v.name}' is not a quorum queue")
        if not c.members or len(set(c.members)) != len(c.members):
            raise precondition_failed(f"a quorum queue needs one or more distinct members, not {list(c.members)}")
        target.members = list(c.members)
        if c.size:
            target.target_size = c.size
        return Applied(members_changed=target)
    if kind is SetPolicy:
        c = command
        v.set_policy(Policy(c.name, c.pattern, c.apply_to, c.priority, c.definition), c.now_ms)
        return Applied(policy_vhost=v)
    if kind is ClearPolicy:
        c = command
        v.clear_policy(c.name, c.now_ms)
        return Applied(policy_vhost=v)
    raise AssertionError(f"unknown command {command!r}")


def _apply_broker_wide(broker: Broker, command: Any) -> Applied:
    kind = type(command)
    if kind is PutVhost:
        created = command.name not in broker.vhosts
        vhost = broker.add_vhost(command.name)
        if command.default_queue_type and command.default_queue_type != vhost.default_queue_type:
            vhost.default_queue_type = command.default_queue_type
            vhost.durable_version += 1
        return Applied(value=created)
    if kind is DeleteVhost:
        vhost = broker.delete_vhost(command.name)
        return Applied(deleted_queues=list(vhost.queues.values()), deleted_vhost=vhost)
    if kind is PutUser:
        created = command.name not in broker.users
        broker.add_user_with_hash(command.name, command.password_hash, command.hashing_algorithm,
                                  tags=list(command.tags))
        return Applied(value=created)
    if kind is DeleteUser:
        broker.delete_user(command.name)
        return Applied()
    if kind is SetPermissions:
        broker.set_permissions(command.user, command.vhost, command.configure, command.write, command.read)
        return Applied()
    if kind is ClearPermissions:
        if (command.user, command.vhost) not in broker.permissions:
            raise not_found(f"no permissions for user '{command.user}' in vhost '{command.vhost}'")
        broker.clear_permissions(command.user, command.vhost)
        return Applied()
    raise AssertionError(f"unknown command {command!r}")
