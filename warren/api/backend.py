"""What the management plane needs of a node: the seam between the HTTP API and the broker.

Every object is a plain dict already shaped as RabbitMQ's management API shows it, so the
HTTP layer only filters, sorts and serialises. Operating errors (absent objects, refused
operations, bad arguments) are raised as ``warren.errors.AMQPError`` with the reply code
RabbitMQ would use; the HTTP layer maps 404 -> 404, 403 -> 401 (as RabbitMQ 3.x's management
API answers refusals) and the rest to 400.
"""

from __future__ import annotations

from typing import Any, Protocol

from warren.api.cluster_view import ClusterView


class PublishRejected(Exception):
    """A queue the message was routed to refused it (``x-overflow: reject-publish``)."""


class PublishNotStored(Exception):
    """A persistent message for a durable queue was not confirmed by the store."""


class ManagementBackend(Protocol):
    # ---- identity and health ---------------------------------------------------------
    def authenticate(self, username: str, password: str) -> dict[str, Any] | None:
        """``{"name": ..., "tags": [...]}`` when the credentials are valid, else None."""

    def may_log_in_from(self, username: str, peer_host: str) -> bool:
        """False for a loopback-only user (``Broker.loopback_users``) calling from elsewhere."""

    def node_name(self) -> str: ...

    def overview(self) -> dict[str, Any]:
        """object_totals, queue_totals, listeners, counters (``totals()``), versions."""

    def totals(self) -> dict[str, int]:
        """Monotonic counters since start: publish, deliver_get, deliver, ack, redeliver,
        confirm, get, return_unroutable, drop_unroutable, connections/channels opened/closed."""

    def nodes(self) -> list[dict[str, Any]]: ...

    def quorum_raft_metrics(self) -> list[dict[str, Any]]:
        """Per quorum queue replica on this node: term, snapshot_index, applied, commit,
        last_written, commit_latency (seconds)."""

    async def quorum_status(self, vhost: str, name: str) -> list[dict[str, Any]]:
        """Each member's Raft state of a quorum queue's group (node, raft_state, log_index, ...)."""

    async def quorum_member(self, vhost: str, name: str, node: str, add: bool) -> bool:
        """Add ``node`` to a quorum queue's members, or remove it; True once in effect."""

    async def quorum_grow_shrink(self, node: str, grow: bool, strategy: str = "all",
                                 vhost_pattern: str = ".*", queue_pattern: str = ".*") -> list[dict[str, Any]]:
        """``node`` joins (grow) or leaves (shrink) every matching quorum queue; a row each."""

    async def quorum_rebalance(self, vhost_pattern: str = ".*", queue_pattern: str = ".*") -> list[dict[str, Any]]:
        """Move quorum queue leaderships to balance them over alive nodes; a row per move."""

    def quorum_critical(self) -> list[dict[str, str]] | None:
        """Quorum queues stopping this node would leave without a majority (None: standalone)."""

    def alarms(self) -> list[str]:
        """Active resource alarms: "memory", "disk"."""

    def listener_ports(self) -> list[int]: ...

    def listeners(self) -> list[dict[str, Any]]:
        """RabbitMQ's listener objects: protocol ("amqp", "amqp/ssl", "http"...), port, ip_address."""

    def certificate_files(self) -> list[str]:
        """The PEM files of the node's TLS listeners (certificate chain, CA bundle)."""

    # ---- clients ---------------------------------------------------------------------
    def connections(self) -> list[dict[str, Any]]: ...

    def close_connection(self, name: str, reason: str) -> None: ...

    def channels(self) -> list[dict[str, Any]]: ...

    def consumers(self) -> list[dict[str, Any]]: ...

    # ---- vhosts, users, permissions ---------------------------------------------------
    # Changes are coroutines: they answer once the change is durable (committed, in a cluster).
    def vhosts(self) -> list[dict[str, Any]]: ...

    async def put_vhost(self, name: str, default_queue_type: str = "") -> bool:
        """True when created."""

    async def delete_vhost(self, name: str) -> None: ...

    def users(self) -> list[dict[str, Any]]: ...

    async def put_user(self, name: str, password: str | None, password_hash: str | None,
                 hashing_algorithm: str | None, tags: list[str]) -> bool: ...

    async def delete_user(self, name: str) -> None: ...

    def permissions(self) -> list[dict[str, Any]]: ...

    def check_permission(self, user: str, vhost: str, permission: str, kind: str, name: str) -> None:
        """Raise ``AMQPError`` ACCESS_REFUSED unless ``user`` has ``permission`` (configure, write,
        read) on the ``kind`` ("queue", "exchange") called ``name``: the AMQP side's check."""

    async def put_permission(self, vhost: str, user: str, configure: str, write: str, read: str) -> None: ...

    async def delete_permission(self, vhost: str, user: str) -> None: ...

    # ---- topology --------------------------------------------------------------------
    def exchanges(self, vhost: str | None) -> list[dict[str, Any]]: ...

    async def declare_exchange(self, vhost: str, name: str, type: str, durable: bool, auto_delete: bool,
                         internal: bool, arguments: dict[str, Any]) -> None: ...

    async def delete_exchange(self, vhost: str, name: str, if_unused: bool) -> None: ...

    def queues(self, vhost: str | None) -> list[dict[str, Any]]: ...

    def queue_depths(self) -> dict[tuple[str, str], tuple[int, int, int]]:
        """(vhost, queue) -> (messages, ready, unacknowledged) for every queue; cheap, sampled each second."""

    async def declare_queue(self, vhost: str, name: str, durable: bool, auto_delete: bool,
                      arguments: dict[str, Any]) -> None: ...

    async def delete_queue(self, vhost: str, name: str, if_unused: bool, if_empty: bool) -> None: ...

    def purge_queue(self, vhost: str, name: str) -> int: ...

    def bindings(self, vhost: str | None) -> list[dict[str, Any]]: ...

    async def bind(self, vhost: str, source: str, destination_type: str, destination: str,
             routing_key: str, arguments: dict[str, Any]) -> None: ...

    async def unbind(self, vhost: str, source: str, destination_type: str, destination: str,
               routing_key: str, arguments: dict[str, Any]) -> None: ...

    def policies(self, vhost: str | None) -> list[dict[str, Any]]: ...

    async def put_policy(self, vhost: str, name: str, pattern: str, apply_to: str, priority: int,
                   definition: dict[str, Any]) -> None: ...

    async def delete_policy(self, vhost: str, name: str) -> None: ...

    # ---- messages --------------------------------------------------------------------
    def publish(self, vhost: str, exchange: str, routing_key: str, body: bytes,
                properties: dict[str, Any]) -> bool:
        """True when routed to at least one queue; ``PublishRejected`` when a queue refused it."""

    async def publish_confirmed(self, vhost: str, exchange: str, routing_key: str, body: bytes,
                                properties: dict[str, Any]) -> bool:
        """``publish``, answered only once a persistent message in a durable queue is stored
        (as a publisher confirm); ``PublishNotStored`` when the store failed or timed out."""

    def get_messages(self, vhost: str, queue: str, count: int, requeue: bool) -> list[dict[str, Any]]:
        """Up to ``count`` messages: payload (bytes), payload_bytes, redelivered, exchange,
        routing_key, message_count, properties."""

    # ---- definitions -----------------------------------------------------------------
    async def export_definitions(self) -> dict[str, Any]:
        """Everything committed before the call (a read barrier in a cluster)."""

    async def import_definitions(self, definitions: dict[str, Any]) -> dict[str, Any]:
        """Apply a RabbitMQ definitions document; returns {"skipped_queues": [...]} and, when the
        document has runtime parameters Warren does not apply, {"skipped_parameters": [...]}."""

    # ---- cluster membership (warren.api.cluster_backend) --------------------------------
    def cluster_info(self) -> dict[str, Any]:
        """local_id, leader, member_count, members (with health); ``ClusterNotEnabled``
        on a standalone node."""

    def cluster_members(self) -> list[dict[str, Any]]: ...

    def cluster_sharding(self) -> list[dict[str, Any]]:
        """Every queue with its home node: vhost, name, node, type, durable, exclusive."""

    async def cluster_join(self, name: str, addr: str, raft_addr: str) -> dict[str, Any]:
        """Admit a node by name before it starts (it claims the record when it joins)."""

    async def cluster_leave(self, member_id: int) -> None:
        """Remove a member: a graceful leave, or forgetting a dead one."""

    async def cluster_view(self) -> ClusterView | None:
        """Every member's node object, queue counts, connections and channels (each member
        asked at once, briefly); None on a standalone node."""

    def cluster_metrics(self) -> dict[str, Any] | None:
        """This node's view, for Prometheus: members (name -> up: heard from recently),
        leader (this node leads the metadata group), commit and applied (its Raft indexes),
        links (peer name -> up), forwarded and forward_errors (peer name -> count); None on a
        standalone node."""
