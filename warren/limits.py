"""Every maximum and default Warren enforces, in one place.

Each limit has a default here; the node checks the whole set at start-up
(:func:`Limits.validate`) so a bad setting fails before any listener opens.
"""

from __future__ import annotations

from dataclasses import dataclass, fields, replace
from typing import Any

KIB = 1024
MIB = 1024 * KIB
GIB = 1024 * MIB

# AMQP 0-9-1 protocol constants that are not tunable.
FRAME_MIN_SIZE = 4096  # spec: peers must accept frames of at least this size
FRAME_OVERHEAD = 8  # type(1) + channel(2) + size(4) + frame-end(1)


@dataclass(frozen=True, slots=True)
class Limits:
    """Tunable limits of one node. Defaults match RabbitMQ's where it has one."""

    # AMQP connection negotiation
    frame_max: int = 131072  # RabbitMQ default
    channel_max: int = 2047  # RabbitMQ default
    heartbeat_seconds: int = 60  # server's proposed heartbeat
    max_message_size: int = 128 * MIB  # RabbitMQ 3.8+ default
    max_connections: int = 10000
    handshake_timeout_seconds: float = 10.0
    close_ok_timeout_seconds: float = 30.0  # wait for the client's close-ok (RabbitMQ: 30 s)
    # Content headers and short strings in frames
    max_header_frame_size: int = 1 * MIB
    # Server-side buffering
    max_outbound_buffer_bytes: int = 16 * MIB  # per connection before we stop reading it
    max_unconfirmed_per_channel: int = 100_000
    max_consumers_per_channel: int = 10_000
    max_queues: int = 100_000
    max_exchanges: int = 100_000
    max_priority: int = 255  # x-max-priority upper bound, as RabbitMQ
    # Resource alarms
    memory_high_watermark_bytes: int = 0  # 0: derived as 40% of RAM (RabbitMQ's 0.4 ratio)
    memory_high_watermark_ratio: float = 0.4
    # The alarm clears only below this fraction of the watermark (hysteresis: a node hovering
    # at the watermark does not block and unblock its publishers every reading).
    memory_alarm_clear_ratio: float = 0.9
    disk_free_limit_bytes: int = 50 * MIB  # RabbitMQ default
    # Store
    group_commit_max_entries: int = 4096
    group_commit_max_delay_ms: float = 2.0
    lmdb_map_size: int = 64 * GIB
    # Management API
    api_requests_per_second: float = 200.0
    api_burst: int = 400
    # a larger request body is answered 413 (RabbitMQ's max_http_body_size is 20 MB); above the
    # largest definitions exports seen, and a publish body beyond it belongs on AMQP
    api_max_body_bytes: int = 64 * MIB
    # Raft
    raft_max_append_entries: int = 512
    raft_max_append_bytes: int = 1 * MIB
    raft_max_apply_bytes: int = 4 * MIB  # committed entries handed to the state machine per ready
    raft_max_inflight_appends: int = 64
    raft_snapshot_chunk_bytes: int = 1 * MIB
    # The host snapshots a group's state machine and compacts its log once this many entries
    # (or this much entry data) were applied since its last snapshot; 0 turns either off.
    # Bounds restart work (replay after the snapshot) and what a lagging follower is sent.
    raft_snapshot_every_entries: int = 65_536
    raft_snapshot_every_bytes: int = 256 * MIB
    # A state machine holding at least this many records (its snapshot_size) is snapshotted
    # by a forked child, not on the event loop (warren.io.snapshot_child); 0: never forked.
    raft_snapshot_fork_records: int = 20_000
    peer_max_message_bytes: int = 64 * MIB
    peer_handshake_timeout_seconds: float = 5.0
    peer_max_queued_messages: int = 100_000  # per peer while disconnected/slow; older ones drop
    peer_max_write_buffer_bytes: int = 64 * MIB  # socket backlog above which new sends drop
    peer_reconnect_min_seconds: float = 0.05
    peer_reconnect_max_seconds: float = 2.0
    # Node-level liveness between Raft hosts, in host ticks (10 ms by default): one heartbeat
    # per node pair stands in for the per-group heartbeats that quiesced groups stop sending,
    # and a peer silent for the timeout (the election timeout's low end) counts as down.
    raft_node_heartbeat_ticks: int = 5
    raft_node_timeout_ticks: int = 30
    raft_quiesce_after_ticks: int = 100  # an idle group goes quiet after this many ticks
    # --- cluster: membership of the metadata group (warren.cluster.membership) ---------
    # A member not heard from (any peer message; node heartbeats come every 50 ms) for this
    # long is shown "suspect", and after the second "dead" (shown only: a dead member stays
    # a member until it leaves or is forgotten).
    cluster_suspect_after_seconds: float = 5.0
    cluster_dead_after_seconds: float = 30.0
    # How long `warren server --seeds` tries to join before it exits non-zero; also bounds
    # a restarted member's wait for its peers' first word.
    cluster_join_timeout_seconds: float = 30.0
    # One request on the cluster port (join, forwarded proposal, leave) and a proposal or
    # read barrier of the metadata group: ClusterUnavailable after this long.
    cluster_request_timeout_seconds: float = 5.0
    # The management plane's cluster view (/api/nodes, /api/queues...) asks every member not
    # dead for its stats at once; one that does not answer within this is shown not running.
    cluster_stats_timeout_seconds: float = 1.0
    cluster_max_members: int = 7
    # A channel consuming from a queue on another node has at most this many deliveries
    # from that node on their way to its client; credit goes back as the client's socket takes them.
    forward_consumer_credit: int = 256
    # Quorum queues: members of a new one without x-quorum-initial-group-size (capped at the
    # cluster's size); how many unacknowledged messages a consumer with prefetch 0, or a
    # no-ack consumer, may hold (its node settles no-ack ones as its client takes them).
    quorum_default_group_size: int = 3
    quorum_unlimited_prefetch: int = 2000
    # A quorum queue's log is its message store: each replica snapshots and truncates it once
    # max(this, 2 x the messages it holds) entries were applied since it last did, and its
    # leader copies forward a message whose entry is more than 4 x the messages held plus
    # this many entries old (see warren.cluster.queue_fsm), so disk follows the queue's depth.
    quorum_snapshot_min_entries: int = 4096
    # a node's publishes to one quorum queue in one loop iteration go as one log entry, of
    # at most this many messages (<= queue_fsm.BATCH_SLOTS) and about this many body bytes
    quorum_publish_batch_messages: int = 512
    quorum_publish_batch_bytes: int = 512 * 1024
    # Membership that mends itself: every quorum_membership_check_seconds the metadata
    # leader brings each quorum queue back to its size on alive nodes, replacing members
    # that left the cluster and, if quorum_replace_down_after_seconds > 0, members down that
    # long; leaders unevenly spread for quorum_rebalance_after_seconds (a node came back)
    # are spread again (0: never).
    quorum_membership_check_seconds: float = 5.0
    quorum_replace_down_after_seconds: float = 300.0
    quorum_rebalance_after_seconds: float = 10.0

    def validate(self) -> None:
        """Raise ValueError naming the setting when a limit is out of range."""
        if self.frame_max != 0 and self.frame_max < FRAME_MIN_SIZE:
            raise ValueError(f"frame_max must be 0 or at least {FRAME_MIN_SIZE}, got {self.frame_max}")
        if not 0 <= self.channel_max <= 65535:
            raise ValueError(f"channel_max must be in 0..65535, got {self.channel_max}")
        if not 0 <= self.heartbeat_seconds <= 65535:
            raise ValueError(f"heartbeat_seconds must be in 0..65535, got {self.heartbeat_seconds}")
        if not 1 <= self.max_message_size <= 512 * MIB:
            raise ValueError(
                f"max_message_size must be in 1..{512 * MIB} (512 MiB), got {self.max_message_size}"
            )
        if not 0.0 < self.memory_high_watermark_ratio <= 1.0:
            raise ValueError("memory_high_watermark_ratio must be in (0, 1]")
        if not 0.0 < self.memory_alarm_clear_ratio <= 1.0:
            raise ValueError(f"memory_alarm_clear_ratio must be in (0, 1], got {self.memory_alarm_clear_ratio}")
        if not 0 < self.raft_node_heartbeat_ticks < self.raft_node_timeout_ticks:
            raise ValueError("raft_node_heartbeat_ticks must be positive and below raft_node_timeout_ticks")
        if self.raft_snapshot_chunk_bytes < 1:
            raise ValueError(f"raft_snapshot_chunk_bytes must be at least 1, got {self.raft_snapshot_chunk_bytes}")
        if not 0 < self.cluster_suspect_after_seconds < self.cluster_dead_after_seconds:
            raise ValueError("cluster_suspect_after_seconds must be positive and below "
                             "cluster_dead_after_seconds")
        if self.cluster_stats_timeout_seconds <= 0:
            raise ValueError("cluster_stats_timeout_seconds must be positive")
        if self.cluster_join_timeout_seconds <= 0 or self.cluster_request_timeout_seconds <= 0:
            raise ValueError("cluster_join_timeout_seconds and cluster_request_timeout_seconds "
                             "must be positive")
        if self.forward_consumer_credit < 1:
            raise ValueError(f"forward_consumer_credit must be at least 1, got {self.forward_consumer_credit}")
        if not 1 <= self.quorum_publish_batch_messages <= 4096:
            raise ValueError(f"quorum_publish_batch_messages must be 1..4096, got {self.quorum_publish_batch_messages}")
        if self.quorum_snapshot_min_entries < 1:
            raise ValueError(f"quorum_snapshot_min_entries must be at least 1, got {self.quorum_snapshot_min_entries}")
        if self.quorum_membership_check_seconds <= 0:
            raise ValueError("quorum_membership_check_seconds must be positive")
        if not 1 <= self.cluster_max_members <= 7:
            raise ValueError(f"cluster_max_members must be in 1..7, got {self.cluster_max_members}")
        for f in fields(self):
            value = getattr(self, f.name)
            if isinstance(value, int | float) and value < 0:
                raise ValueError(f"{f.name} must not be negative, got {value}")

    def with_overrides(self, **overrides: Any) -> Limits:
        """Copy with some limits replaced; unknown names are an error."""
        known = {f.name for f in fields(self)}
        unknown = set(overrides) - known
        if unknown:
            raise ValueError(f"unknown limit(s): {', '.join(sorted(unknown))}")
        result = replace(self, **overrides)
        result.validate()
        return result


DEFAULT_LIMITS = Limits()
