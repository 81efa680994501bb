"""The management backend over a running node (``warren.io.runtime.NodeRuntime``).

Runs on the node's event loop thread (the HTTP server shares the loop), so it may touch the
broker model directly. Every change is persisted the way the AMQP session persists it, and
the node is flushed so consumers see the effects at once.
"""

from __future__ import annotations

import asyncio
import platform
import re
import sys
from typing import Any

import psutil

from warren import __version__ as warren_version
from warren.api.backend import PublishNotStored, PublishRejected
from warren.api.cluster_backend import ClusterBackend
from warren.api.cluster_view import ClusterView, queue_stats
from warren.api.definitions import (
    export_document,
    skipped_parameters,
    unimportable_queue_names,
    user_password_args,
)
from warren.broker.auth import SHA256, Broker
from warren.broker.message import Message
from warren.broker.queue import MANAGEMENT_REF
from warren.broker.queue_args import check_short_string
from warren.broker.vhost import VirtualHost
from warren.cluster.definitions import (
    BindExchange,
    BindQueue,
    ClearPermissions,
    ClearPolicy,
    Command,
    DeclareExchange,
    DeclareQueue,
    DeleteExchange,
    DeleteQueue,
    DeleteUser,
    DeleteVhost,
    PutUser,
    PutVhost,
    SetPermissions,
    SetPolicy,
    SetQueueMembers,
    UnbindExchange,
    UnbindQueue,
)
from warren.errors import AMQPError, ReplyCode, not_found, precondition_failed
from warren.node.commands import Outcome
from warren.node.quorum import member_role, settled_leader

PROTOCOL = "AMQP 0-9-1"
CONFIRM_TIMEOUT_SECONDS = 30.0  # how long the API's publish waits for the store, as a confirm


def _get_vhost(broker: Broker, name: str) -> VirtualHost:
    vhost = broker.vhosts.get(name)
    if vhost is None:
        raise not_found(f"no vhost '{name}'")
    return vhost


class NodeBackend:
    """``ManagementBackend`` over one node and its broker model."""

    def __init__(self, runtime: Any) -> None:
        self.runtime = runtime
        self._last_publish_stored = False
        self.cluster = ClusterBackend(runtime)

    @property
    def node(self) -> Any:
        return self.runtime.node

    @property
    def broker(self) -> Broker:
        broker: Broker = self.runtime.node.broker
        return broker

    def _vhosts(self, name: str | None) -> list[VirtualHost]:
        if name is None:
            return list(self.broker.vhosts.values())
        return [_get_vhost(self.broker, name)]

    # ---- identity and health ---------------------------------------------------------
    def authenticate(self, username: str, password: str) -> dict[str, Any] | None:
        user = self.broker.authenticate(username, password)
        if user is None:
            return None
        return {"name": user.name, "tags": list(user.tags)}

    def may_log_in_from(self, username: str, peer_host: str) -> bool:
        return self.broker.may_log_in_from(username, peer_host)

    def node_name(self) -> str:
        return str(self.node.name)

    def totals(self) -> dict[str, int]:
        c = self.node.counters
        return {
            "publish": c.messages_received,
            "confirm": c.messages_confirmed,
            "routed": c.messages_routed,
            "return_unroutable": c.messages_unroutable_returned,
            "drop_unroutable": c.messages_unroutable_dropped,
            "deliver": c.messages_delivered,
            "get": c.messages_delivered_get,
            "deliver_get": c.messages_delivered + c.messages_delivered_get,
            "redeliver": c.messages_redelivered,
            "ack": c.messages_acknowledged,
            "connections_opened": c.connections_opened,
            "connections_closed": c.connections_closed,
            "channels_opened": c.channels_opened,
            "channels_closed": c.channels_closed,
        }

    def overview(self) -> dict[str, Any]:
        queues = [q for v in self.broker.vhosts.values() for q in v.queues.values()]
        return {
            "management_version": warren_version,
            "rabbitmq_version": "3.10.8",
            "product_name": "Warren",
            "product_version": warren_version,
            "erlang_version": f"Python {platform.python_version()}",
            "cluster_name": self.cluster.cluster_name() or self.node.name,
            "node": self.node.name,
            "object_totals": {
                "connections": len(self.node.sessions),
                "channels": sum(len(s.channels) for s in self.node.sessions.values()),
                "consumers": sum(q.consumer_count for q in queues),
                "exchanges": sum(len(v.exchanges) for v in self.broker.vhosts.values()),
                "queues": len(queues),
            },
            "queue_totals": {
                "messages": sum(q.messages for q in queues),
                "messages_ready": sum(q.messages_ready for q in queues),
                "messages_unacknowledged": sum(q.messages_unacknowledged for q in queues),
            },
            "listeners": [{"node": self.node.name, **listener} for listener in self.node.listeners],
        }

    def nodes(self) -> list[dict[str, Any]]:
        process = psutil.Process()
        try:
            disk_free = psutil.disk_usage(self.runtime.config.data_dir).free
        except OSError:
            disk_free = 0
        return [{
            "name": self.node.name,
            "type": "disc",
            "running": True,
            "uptime": int(self.node.wall_ms() - self.node.started_at_ms),
            "mem_used": process.memory_info().rss,
            "mem_limit": int(getattr(self.runtime, "memory_limit", 0)),
            "mem_alarm": bool(self.node.memory_alarm),
            "disk_free": disk_free,
            "disk_free_limit": self.node.limits.disk_free_limit_bytes,
            "disk_free_alarm": bool(self.node.disk_alarm),
            "fd_used": process.num_fds() if sys.platform != "win32" else 0,
            "proc_used": 1,
            "processors": psutil.cpu_count() or 1,
            "os_pid": str(process.pid),
            "fd_total": _fd_limit(),
            "sockets_used": len(self.node.sessions),
            "sockets_total": self.node.limits.max_connections,
            "connections": len(self.node.sessions),
            "partitions": self.cluster.partitions(),
            "listeners": list(self.node.listeners),
            "proc_total": self.node.limits.max_connections,
            "run_queue": 0,
            "rates_mode": "basic",
            "net_ticktime": 60,
            "db_dir": str(self.runtime.config.data_dir),
            "config_files": [],
            "log_files": [],
            "exchange_types": [{"name": t, "enabled": True} for t in ("direct", "fanout", "headers", "topic")],
            "auth_mechanisms": [{"name": m, "enabled": True} for m in ("PLAIN", "AMQPLAIN")],
            "applications": [{"name": "warren", "description": "Warren", "version": warren_version}],
            "enabled_plugins": ["rabbitmq_management", "rabbitmq_prometheus"],  # what Warren provides of them
        }]

    def quorum_raft_metrics(self) -> list[dict[str, Any]]:
        return self.node.quorum.raft_metrics() if self.node.quorum is not None else []

    def _quorum_queue(self, vhost: str, name: str) -> Any:
        queue = _get_vhost(self.broker, vhost).queues.get(name)
        if queue is None:
            raise not_found(f"no queue '{name}' in vhost '{vhost}'")
        if self.node.quorum is None or not queue.members:
            raise precondition_failed(f"queue '{name}' in vhost '{vhost}' is not a quorum queue")
        return queue

    async def _member_statuses(self, queue: Any, members: list[str], timeout: float) -> list[Any]:
        """Each member's own Raft state of ``queue`` (a dict), or why it gave none (text)."""
        quorum = self.node.quorum
        assert quorum is not None
        loop = asyncio.get_running_loop()
        asked: list[asyncio.Future[Any]] = []
        for member in members:
            future: asyncio.Future[Any] = loop.create_future()

            def answer(ok: bool, value: Any, text: str, future: asyncio.Future[Any] = future) -> None:
                future.set_result(value if ok else text)
            quorum.member_status(queue, member, answer, timeout)
            asked.append(future)
        self.node.flush()
        return [await future for future in asked]

    async def quorum_status(self, vhost: str, name: str, timeout: float = 5.0) -> list[dict[str, Any]]:
        """Each member's Raft state of a quorum queue's group, as it reports it (rabbitmq-queues
        quorum_status); a member that does not answer shows its reason as its state."""
        queue = self._quorum_queue(vhost, name)
        rows = []
        members = list(queue.members)
        for member, status in zip(members, await self._member_statuses(queue, members, timeout), strict=True):
            if isinstance(status, dict):
                rows.append({"node": member, "raft_state": status["role"], "log_index": status["last_index"],
                             "commit_index": status["commit"], "applied_index": status["applied"],
                             "snapshot_index": status["snapshot_index"], "term": status["term"],
                             "machine_version": 0, "membership": member_role(status, member)})
            else:
                rows.append({"node": member, "raft_state": status or "noproc"})
        return rows

    async def quorum_member(self, vhost: str, name: str, node: str, add: bool, wait: float = 5.0) -> bool:
        """rabbitmq-queues add_member / delete_member: the metadata records the new target
        members, the group's leader changes its configuration towards it. True once the
        leader has it in effect (``node`` a voter, or gone), False if still under way
        after ``wait`` seconds (it carries on)."""
        queue = self._quorum_queue(vhost, name)
        self._require_member(node)
        members = list(queue.members)
        if add and node in members:
            raise precondition_failed(f"{node} is already a member of queue '{name}' in vhost '{vhost}'")
        if not add and node not in members:
            raise precondition_failed(f"{node} is not a member of queue '{name}' in vhost '{vhost}'")
        if not add and members == [node]:
            raise precondition_failed(
                f"{node} is the last member of queue '{name}' in vhost '{vhost}'; delete the queue instead")
        target = [*members, node] if add else [m for m in members if m != node]
        await self._run(SetQueueMembers(vhost, name, tuple(target), len(target)))
        deadline = asyncio.get_running_loop().time() + wait
        asked = sorted(set(members) | set(target))
        while asyncio.get_running_loop().time() < deadline and not queue.deleted:
            for status in await self._member_statuses(queue, asked, 2.0):
                if settled_leader(status) and member_role(status, node) == ("voter" if add else "non_voter"):
                    return True
            await asyncio.sleep(0.1)
        return False

    async def quorum_grow_shrink(self, node: str, grow: bool, strategy: str = "all",
                                 vhost_pattern: str = ".*", queue_pattern: str = ".*") -> list[dict[str, Any]]:
        """rabbitmq-queues grow / shrink: ``node`` joins every matching quorum queue that
        lacks it (strategy ``even``: only those with an even number of members), or leaves
        every one it is in (never its last member). One row per queue, as RabbitMQ's."""
        self._require_member(node)
        if strategy not in ("all", "even"):
            raise precondition_failed(f"strategy must be 'all' or 'even', not {strategy!r}")
        rows = []
        for queue in self._quorum_queues(vhost_pattern, queue_pattern):
            members = list(queue.members)
            if grow and (node in members or (strategy == "even" and len(members) % 2)):
                continue
            if not grow and node not in members:
                continue
            row = {"vhost": queue.vhost, "name": queue.name, "size": len(members), "result": "ok"}
            if not grow and len(members) == 1:
                row["result"] = "error: last member"
            else:
                target = [*members, node] if grow else [m for m in members if m != node]
                try:
                    await self._run(SetQueueMembers(queue.vhost, queue.name, tuple(target), len(target)))
                    row["size"] = len(target)
                except AMQPError as error:
                    row["result"] = f"error: {error.text}"
            rows.append(row)
        return rows

    async def quorum_rebalance(self, vhost_pattern: str = ".*", queue_pattern: str = ".*") -> list[dict[str, Any]]:
        """rabbitmq-queues rebalance quorum: leaderships move so that alive nodes lead
        about as many quorum queues each; a row per move (vhost, name, from, to, result)."""
        quorum = self.node.quorum
        if quorum is None:
            raise precondition_failed("a standalone node has no quorum queues to rebalance")
        queues = self._quorum_queues(vhost_pattern, queue_pattern)
        before = {queue.group: quorum.listing(queue)["leader"] for queue in queues}
        future: asyncio.Future[list[Any]] = asyncio.get_running_loop().create_future()
        quorum.rebalance(quorum.leader_plan(queues), future.set_result)
        self.node.flush()
        return [{"vhost": queue.vhost, "name": queue.name, "from": before[queue.group], "to": target,
                 "result": "ok" if started else "error: not moved"} for queue, target, started in await future]

    def _quorum_queues(self, vhost_pattern: str, queue_pattern: str) -> list[Any]:
        """The quorum queues whose vhost and name match these patterns (searched, as
        rabbitmq-queues matches them)."""
        try:
            vhost_re, queue_re = re.compile(vhost_pattern), re.compile(queue_pattern)
        except re.error as exc:
            raise precondition_failed(f"invalid pattern: {exc}") from None
        return [queue for vhost in self.broker.vhosts.values() if vhost_re.search(vhost.name)
                for queue in vhost.queues.values() if queue.members and queue_re.search(queue.name)]

    def _require_member(self, node: str) -> None:
        names = [m["name"] for m in self.cluster.members()]
        if node not in names:
            raise precondition_failed(f"{node} is not a member of this cluster (members: {', '.join(names)})")

    def quorum_critical(self) -> list[dict[str, str]] | None:
        """Quorum queues that stopping this node would leave without a majority, as
        RabbitMQ lists them; None on a standalone node."""
        quorum = self.node.quorum
        if quorum is None:
            return None
        return [{"name": q.name, "readable_name": f"queue '{q.name}' in vhost '{q.vhost}'",
                 "virtual_host": q.vhost, "type": "quorum"} for q in quorum.critical()]

    def alarms(self) -> list[str]:
        active = []
        if self.node.memory_alarm:
            active.append("memory")
        if self.node.disk_alarm:
            active.append("disk")
        return active

    def listener_ports(self) -> list[int]:
        return [int(listener["port"]) for listener in self.node.listeners]

    def listeners(self) -> list[dict[str, Any]]:
        return [dict(listener) for listener in self.node.listeners]

    def certificate_files(self) -> list[str]:
        config = self.runtime.config
        return [path for path in (getattr(config, "tls_cert", None), getattr(config, "tls_ca", None)) if path]

    # ---- clients ---------------------------------------------------------------------
    def connections(self) -> list[dict[str, Any]]:
        listed = []
        for s in self.node.sessions.values():
            listed.append({
                "name": s.name,
                "node": self.node.name,
                "vhost": s.vhost.name if s.vhost is not None else None,
                "user": s.user.name if s.user is not None else None,
                "state": "blocked" if s.blocked else ("running" if s.conn.is_open else "starting"),
                "channels": len(s.channels),
                "peer_host": s.peer_host,
                "peer_port": s.peer_port,
                "host": s.local_host,
                "port": s.local_port,
                "protocol": PROTOCOL,
                "ssl": bool(s.tls),
                "type": "network",
                "connected_at": s.connected_at,
                "timeout": s.conn.heartbeat,
                "frame_max": s.conn.frame_max,
                "channel_max": s.conn.channel_max,
                "recv_oct": s.recv_octets,
                "send_oct": s.send_octets,
                "client_properties": s.conn.client_properties,
                **_user_provided_name(s.conn.client_properties),
            })
        return listed

    def close_connection(self, name: str, reason: str) -> None:
        for session in list(self.node.sessions.values()):
            if session.name == name:
                text = f"CONNECTION_FORCED - {reason}"
                session.conn.close(ReplyCode.CONNECTION_FORCED, text)
                self.node.session_changed(session)
                self.node.flush()
                return
        raise not_found(f"no connection '{name}'")

    def channels(self) -> list[dict[str, Any]]:
        listed = []
        for s in self.node.sessions.values():
            for number, ch in s.channels.items():
                listed.append({
                    "name": f"{s.name} ({number})",
                    "number": number,
                    "node": self.node.name,
                    "vhost": s.vhost.name if s.vhost is not None else None,
                    "user": s.user.name if s.user is not None else None,
                    "connection_details": {"name": s.name, "peer_host": s.peer_host, "peer_port": s.peer_port},
                    "state": "running" if ch.flow_active else "flow",
                    "confirm": ch.confirm_mode,
                    "transactional": ch.tx_mode,
                    "consumer_count": len(ch.consumers),
                    "messages_unacknowledged": len(ch.unacked),
                    "messages_unconfirmed": len(ch.unconfirmed),
                    "prefetch_count": ch.prefetch_per_consumer,
                    "global_prefetch_count": ch.prefetch_channel,
                })
        return listed

    def consumers(self) -> list[dict[str, Any]]:
        listed = []
        for vhost in self.broker.vhosts.values():
            for queue in vhost.queues.values():
                active = queue.active_consumer
                for consumer in queue.consumers:
                    number = consumer.owner.channel
                    session = self.node.sessions.get(consumer.owner.session_id)
                    if session is None:
                        continue
                    listed.append({
                        "consumer_tag": consumer.tag,
                        "queue": {"name": queue.name, "vhost": vhost.name},
                        "channel_details": {
                            "name": f"{session.name} ({number})", "number": number,
                            "connection_name": session.name, "peer_host": session.peer_host,
                            "peer_port": session.peer_port,
                            "user": session.user.name if session.user is not None else None,
                        },
                        "ack_required": not consumer.no_ack,
                        "exclusive": consumer.exclusive,
                        "prefetch_count": consumer.prefetch,
                        "priority": consumer.priority,
                        "active": active is None or active is consumer,
                        "activity_status": "up" if active is None or active is consumer else "waiting",
                        "arguments": {"x-priority": consumer.priority} if consumer.priority else {},
                    })
        return listed

    # ---- vhosts, users, permissions ---------------------------------------------------
    def vhosts(self) -> list[dict[str, Any]]:
        listed = []
        for vhost in self.broker.vhosts.values():
            queues = list(vhost.queues.values())
            listed.append({
                "name": vhost.name,
                "description": "",
                "tags": [],
                "metadata": {"description": "", "tags": [], "default_queue_type": vhost.default_queue_type},
                "default_queue_type": vhost.default_queue_type,
                "tracing": False,
                "cluster_state": {self.node.name: "running"},
                "messages": sum(q.messages for q in queues),
                "messages_ready": sum(q.messages_ready for q in queues),
                "messages_unacknowledged": sum(q.messages_unacknowledged for q in queues),
            })
        return listed

    async def _run(self, command: Command) -> Any:
        """Submit a definition change on the node's one write path; its value once durable."""
        future: asyncio.Future[Any] = asyncio.get_running_loop().create_future()

        def done(outcome: Outcome) -> None:
            if future.done():
                return
            if outcome.error is not None:
                future.set_exception(outcome.error)
            else:
                future.set_result(outcome.value)

        self.node.commands.submit(command, done)
        return await future

    async def _barrier(self) -> None:
        """Returns once everything committed before the call is applied here."""
        future: asyncio.Future[None] = asyncio.get_running_loop().create_future()

        def done(outcome: Outcome) -> None:
            if not future.done():
                future.set_exception(outcome.error) if outcome.error is not None else future.set_result(None)

        self.node.commands.barrier(done)
        await future

    async def put_vhost(self, name: str, default_queue_type: str = "") -> bool:
        return bool(await self._run(PutVhost(name, default_queue_type)))

    async def delete_vhost(self, name: str) -> None:
        await self._run(DeleteVhost(name))

    def users(self) -> list[dict[str, Any]]:
        return [{**u.as_dict(), "limits": {}} for u in self.broker.users.values()]

    async def put_user(self, name: str, password: str | None, password_hash: str | None,
                       hashing_algorithm: str | None, tags: list[str]) -> bool:
        if password is not None:
            password_hash, hashing_algorithm = self.broker.new_password_hash(name, password), SHA256
        else:
            password_hash, hashing_algorithm = user_password_args(password_hash, hashing_algorithm)
        return bool(await self._run(PutUser(name, password_hash, hashing_algorithm, tuple(tags))))

    async def delete_user(self, name: str) -> None:
        await self._run(DeleteUser(name))

    def permissions(self) -> list[dict[str, Any]]:
        return [
            {"user": user, "vhost": vhost, "configure": p.configure, "write": p.write, "read": p.read}
            for (user, vhost), p in self.broker.permissions.items()
        ]

    def check_permission(self, user: str, vhost: str, permission: str, kind: str, name: str) -> None:
        self.broker.check_permission(user, vhost, permission, kind, name)

    async def put_permission(self, vhost: str, user: str, configure: str, write: str, read: str) -> None:
        await self._run(SetPermissions(user, vhost, configure, write, read))

    async def delete_permission(self, vhost: str, user: str) -> None:
        await self._run(ClearPermissions(user, vhost))

    # ---- topology --------------------------------------------------------------------
    def exchanges(self, vhost: str | None) -> list[dict[str, Any]]:
        return [
            {**x, "name": x["name"], "user_who_performed_action": "rmq-internal"}
            for v in self._vhosts(vhost) for x in v.list_exchanges()
        ]

    async def declare_exchange(self, vhost: str, name: str, type: str, durable: bool, auto_delete: bool,
                               internal: bool, arguments: dict[str, Any]) -> None:
        await self._run(DeclareExchange(vhost, name, type, durable, auto_delete, internal, arguments))

    async def delete_exchange(self, vhost: str, name: str, if_unused: bool) -> None:
        await self._run(DeleteExchange(vhost, name, if_unused, must_exist=True))

    def _queue_dict(self, vhost: VirtualHost, queue: Any) -> dict[str, Any]:
        shown = queue.as_dict()
        policy = vhost.policies.get(queue.policy) if queue.policy else None
        shown["effective_policy_definition"] = dict(policy.definition) if policy is not None else {}
        shown["node"] = queue.home or self.node.name
        shown["state"] = "running"
        shown["exclusive_consumer_tag"] = None
        owner = self.node.session_for_owner(queue.owner) if queue.owner is not None else None
        shown["owner_pid_details"] = {"name": owner.name} if owner is not None else None
        shown["operator_policy"] = None
        if queue.members and self.node.quorum is not None:
            shown.update(self.node.quorum.listing(queue))
        shown["message_bytes_unacknowledged"] = shown["message_bytes"] - shown["message_bytes_ready"]
        return shown

    def queues(self, vhost: str | None) -> list[dict[str, Any]]:
        return [self._queue_dict(v, q) for v in self._vhosts(vhost) for q in v.queues.values()]

    def queue_depths(self) -> dict[tuple[str, str], tuple[int, int, int]]:
        return {(v.name, q.name): (q.messages, q.messages_ready, q.messages_unacknowledged)
                for v in self.broker.vhosts.values() for q in v.queues.values()}

    async def declare_queue(self, vhost: str, name: str, durable: bool, auto_delete: bool,
                            arguments: dict[str, Any]) -> None:
        v = self.broker.vhosts.get(vhost)
        if v is not None:
            arguments = self.node.declared_arguments(v, name, arguments, durable, False, auto_delete)
        home, members = self.node.place_queue(vhost, name, arguments, False)
        await self._run(DeclareQueue(vhost, name, durable, False, auto_delete, arguments,
                                     now_ms=self.node.wall_ms(), home=home, members=members))

    async def delete_queue(self, vhost: str, name: str, if_unused: bool, if_empty: bool) -> None:
        await self._run(DeleteQueue(vhost, name, if_unused, if_empty, must_exist=True))

    def purge_queue(self, vhost: str, name: str) -> int:
        v = _get_vhost(self.broker, vhost)
        if name not in v.queues:
            raise not_found(f"no queue '{name}' in vhost '{vhost}'")
        count = v.purge_queue(name)
        self.node.queue_changed(v.queues[name])
        self.node.flush()
        return count

    def bindings(self, vhost: str | None) -> list[dict[str, Any]]:
        listed = []
        for v in self._vhosts(vhost):
            for b in v.list_bindings():
                b["properties_key"] = b["routing_key"] or "~"
                listed.append(b)
        return listed

    async def bind(self, vhost: str, source: str, destination_type: str, destination: str,
                   routing_key: str, arguments: dict[str, Any]) -> None:
        if destination_type == "queue":
            await self._run(BindQueue(vhost, destination, source, routing_key, arguments))
        else:
            await self._run(BindExchange(vhost, destination, source, routing_key, arguments))

    async def unbind(self, vhost: str, source: str, destination_type: str, destination: str,
                     routing_key: str, arguments: dict[str, Any]) -> None:
        if destination_type == "queue":
            await self._run(UnbindQueue(vhost, destination, source, routing_key, arguments))
        else:
            await self._run(UnbindExchange(vhost, destination, source, routing_key, arguments))

    def policies(self, vhost: str | None) -> list[dict[str, Any]]:
        return [p for v in self._vhosts(vhost) for p in v.list_policies()]

    async def put_policy(self, vhost: str, name: str, pattern: str, apply_to: str, priority: int,
                         definition: dict[str, Any]) -> None:
        await self._run(SetPolicy(vhost, name, pattern, apply_to, priority, definition, self.node.wall_ms()))

    async def delete_policy(self, vhost: str, name: str) -> None:
        await self._run(ClearPolicy(vhost, name, self.node.wall_ms()))

    # ---- messages --------------------------------------------------------------------
    def publish(self, vhost: str, exchange: str, routing_key: str, body: bytes,
                properties: dict[str, Any]) -> bool:
        v = _get_vhost(self.broker, vhost)
        if exchange not in v.exchanges:
            raise not_found(f"no exchange '{exchange}' in vhost '{vhost}'")
        check_short_string("routing key", routing_key, vhost)  # it travels in basic.deliver
        message = Message.from_publish(exchange, routing_key, body, None, properties)
        node = self.node
        node.counters.messages_received += 1
        outcome = v.publish(message, node.wall_ms())
        if outcome.unroutable:
            node.counters.messages_unroutable_dropped += 1
        else:
            node.counters.messages_routed += 1
        stored = [*outcome.routed_queues, *outcome.dead_letter_queues]
        for queue in stored:
            node.queue_changed(queue)
        node.flush()  # journals the persistent message into the store's next batch
        if outcome.rejected_queues:  # a publisher with confirms would get a nack
            raise PublishRejected(", ".join(q.name for q in outcome.rejected_queues))
        self._last_publish_stored = message.persistent and any(q.durable for q in stored)
        return not outcome.unroutable

    async def publish_confirmed(self, vhost: str, exchange: str, routing_key: str, body: bytes,
                                properties: dict[str, Any]) -> bool:
        routed = self.publish(vhost, exchange, routing_key, body, properties)
        persistence = self.node.persistence
        if persistence is None or not self._last_publish_stored:
            return routed
        # wait, as a publisher confirm does, until the batch that holds the message is fsynced:
        # the store calls the waiters of a batch once it is committed (or failed)
        done: asyncio.Future[None] = asyncio.get_running_loop().create_future()
        persistence.after_commit(_CommitWaiter(done), 0, 0)
        try:
            await asyncio.wait_for(done, CONFIRM_TIMEOUT_SECONDS)
        except TimeoutError:
            raise PublishNotStored(f"not stored within {CONFIRM_TIMEOUT_SECONDS:.0f}s") from None
        return routed

    def get_messages(self, vhost: str, queue: str, count: int, requeue: bool) -> list[dict[str, Any]]:
        v = _get_vhost(self.broker, vhost)
        q = v.queues.get(queue)
        if q is None:
            raise not_found(f"no queue '{queue}' in vhost '{vhost}'")
        owner = MANAGEMENT_REF
        taken = []
        now_ms = self.node.wall_ms()
        for _ in range(count):
            result = q.get(now_ms, no_ack=not requeue, owner=owner)
            if result is None:
                break
            taken.append(result)
        if requeue and taken:
            q.requeue([r.msg_id for r in taken])
        got = []
        for r in taken:
            message = r.message
            body = message.body
            if body is None and self.node.persistence is not None:
                body = self.node.persistence.load_body(q, message)
            got.append({
                "payload": body or b"",
                "payload_bytes": len(body or b""),
                "redelivered": r.redelivered,
                "exchange": message.exchange,
                "routing_key": message.routing_key,
                "message_count": r.message_count,
                "properties": {k: val for k, val in message.props.items() if val is not None},
            })
        self.node.counters.messages_delivered_get += len(got)
        self.node.queue_changed(q)
        self.node.flush()
        return got

    # ---- definitions -----------------------------------------------------------------
    async def export_definitions(self) -> dict[str, Any]:
        await self._barrier()
        return export_document(
            warren_version,
            self.users(),
            self.vhosts(),
            self.permissions(),
            self.policies(None),
            [q for q in self.queues(None) if q["durable"] and not q["exclusive"]],
            [x for x in self.exchanges(None) if x["name"] and not x["name"].startswith("amq.")],
            [b for b in self.bindings(None) if b["source"]],
        )

    async def import_definitions(self, definitions: dict[str, Any]) -> dict[str, Any]:
        skipped = unimportable_queue_names(definitions, clustered=self.node.quorum is not None)
        for vhost in definitions.get("vhosts", []):
            await self.put_vhost(vhost["name"], vhost.get("default_queue_type")
                                 or (vhost.get("metadata") or {}).get("default_queue_type", ""))
        for user in definitions.get("users", []):
            await self.put_user(user["name"], None, user.get("password_hash", ""),
                                user.get("hashing_algorithm"), _tags(user.get("tags", [])))
        for p in definitions.get("permissions", []):
            await self.put_permission(p["vhost"], p["user"], p["configure"], p["write"], p["read"])
        for p in definitions.get("policies", []):
            await self.put_policy(p["vhost"], p["name"], p["pattern"], p.get("apply-to", "all"),
                                  int(p.get("priority", 0)), p["definition"])
        for x in definitions.get("exchanges", []):
            await self.declare_exchange(x["vhost"], x["name"], x["type"], x.get("durable", True),
                                        x.get("auto_delete", False), x.get("internal", False), x.get("arguments", {}))
        skipped_keys = {(s["vhost"], s["name"]) for s in skipped}
        for q in definitions.get("queues", []):
            if (q["vhost"], q["name"]) in skipped_keys:
                continue
            await self.declare_queue(q["vhost"], q["name"], q.get("durable", True),
                                     q.get("auto_delete", False), q.get("arguments", {}))
        for b in definitions.get("bindings", []):
            if b["destination_type"] == "queue" and (b["vhost"], b["destination"]) in skipped_keys:
                continue
            await self.bind(b["vhost"], b["source"], b["destination_type"], b["destination"],
                            b.get("routing_key", ""), b.get("arguments", {}))
        report: dict[str, Any] = {"skipped_queues": skipped}
        parameters = skipped_parameters(definitions)
        if parameters:
            report["skipped_parameters"] = parameters
        # topic permissions restrict users further; Warren does not enforce them: say so
        topic = [{"user": str(t.get("user")), "vhost": str(t.get("vhost")), "exchange": str(t.get("exchange"))}
                 for t in definitions.get("topic_permissions", []) if isinstance(t, dict)]
        if topic:
            report["skipped_topic_permissions"] = topic
        return report

    # ---- cluster membership: delegated to warren.api.cluster_backend --------------------
    def cluster_info(self) -> dict[str, Any]:
        return self.cluster.info()

    def cluster_members(self) -> list[dict[str, Any]]:
        return self.cluster.members()

    def cluster_sharding(self) -> list[dict[str, Any]]:
        return self.cluster.sharding()

    async def cluster_join(self, name: str, addr: str, raft_addr: str) -> dict[str, Any]:
        return await self.cluster.join(name, addr, raft_addr)

    async def cluster_leave(self, member_id: int) -> None:
        await self.cluster.leave(member_id)

    # ---- the cluster view: every member's stats (warren.api.cluster_view) ---------------
    def local_stats(self) -> dict[str, Any]:
        """This node's answer to ``{"op": "stats"}``: its node object, the counts of the
        queues that live here, its connections and channels."""
        name = self.node.name
        return {
            "node": self.nodes()[0],
            "queues": [queue_stats(q) for q in self.queues(None) if q["node"] == name],
            "connections": self.connections(),
            "channels": self.channels(),
        }

    def cluster_metrics(self) -> dict[str, Any] | None:
        return self.cluster.metrics(getattr(self.node, "forwarder", None))

    async def cluster_view(self) -> ClusterView | None:
        if not self.cluster.clustered:
            return None
        return await self.cluster.view(self.node.name, self.nodes()[0])


class _CommitWaiter:
    """Stands where the store expects a session waiting for a confirm: (session, channel, seq)."""

    def __init__(self, done: asyncio.Future[None]) -> None:
        self.done = done

    def store_committed(self, channel: int, seq: int) -> None:
        if not self.done.done():
            self.done.set_result(None)

    def store_failed(self, channel: int, seq: int) -> None:
        if not self.done.done():
            self.done.set_exception(PublishNotStored("the store failed to write it"))


def _user_provided_name(client_properties: dict[str, Any] | None) -> dict[str, str]:
    """RabbitMQ shows a client's ``connection_name`` property as ``user_provided_name``, and only
    when the client gave one."""
    name = (client_properties or {}).get("connection_name")
    if isinstance(name, bytes):
        name = name.decode("utf-8", "replace")
    return {"user_provided_name": name} if isinstance(name, str) else {}


def _fd_limit() -> int:
    try:
        import resource
    except ImportError:  # not on this platform
        return 0
    return int(resource.getrlimit(resource.RLIMIT_NOFILE)[0])


def _tags(tags: Any) -> list[str]:
    if isinstance(tags, str):
        return [t.strip() for t in tags.split(",") if t.strip()]
    return [str(t) for t in tags]
