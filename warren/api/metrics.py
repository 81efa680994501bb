"""Prometheus metrics with RabbitMQ's names (so the RabbitMQ-Overview dashboard works) plus warren_*."""

from __future__ import annotations

from collections.abc import Iterator
from typing import Any

from prometheus_client.core import CounterMetricFamily, GaugeMetricFamily, InfoMetricFamily, Metric
from prometheus_client.registry import Collector, CollectorRegistry

from warren import __version__ as warren_version
from warren.api.backend import ManagementBackend

# (metric name without _total, totals() key, help)
GLOBAL_COUNTERS = (
    ("rabbitmq_global_messages_received", "publish", "Total number of messages received from publishers"),
    ("rabbitmq_global_messages_received_confirm", "publish", "Total number of messages received from publishers expecting confirmations"),
    ("rabbitmq_global_messages_confirmed", "confirm", "Total number of messages confirmed to publishers"),
    ("rabbitmq_global_messages_routed", "routed", "Total number of messages routed to queues or streams"),
    ("rabbitmq_global_messages_unroutable_dropped", "drop_unroutable", "Total number of messages published as non-mandatory into an exchange and dropped as unroutable"),
    ("rabbitmq_global_messages_unroutable_returned", "return_unroutable", "Total number of messages published as mandatory into an exchange and returned to the publisher as unroutable"),
    ("rabbitmq_global_messages_delivered", "deliver_get", "Total number of messages delivered to consumers"),
    ("rabbitmq_global_messages_delivered_consume_manual_ack", "deliver", "Total number of messages delivered to consumers using basic.consume"),
    ("rabbitmq_global_messages_delivered_get_manual_ack", "get", "Total number of messages delivered to consumers using basic.get"),
    ("rabbitmq_global_messages_redelivered", "redeliver", "Total number of messages redelivered to consumers"),
    ("rabbitmq_global_messages_acknowledged", "ack", "Total number of messages acknowledged by consumers"),
    # the per-channel family the RabbitMQ-Overview dashboard sums (aggregated, as RabbitMQ
    # exposes it by default). Warren does not split auto-ack from manual-ack deliveries yet:
    # every delivery counts as manual-ack, so the dashboard's sums stay right.
    ("rabbitmq_channel_messages_published", "publish", "Total number of messages published into an exchange on a channel"),
    ("rabbitmq_channel_messages_confirmed", "confirm", "Total number of messages published into an exchange and confirmed on the channel"),
    ("rabbitmq_channel_messages_unroutable_dropped", "drop_unroutable", "Total number of messages published as non-mandatory into an exchange and dropped as unroutable"),
    ("rabbitmq_channel_messages_unroutable_returned", "return_unroutable", "Total number of messages published as mandatory into an exchange and returned to the publisher as unroutable"),
    ("rabbitmq_channel_messages_delivered_ack", "deliver", "Total number of messages delivered to consumers in manual acknowledgement mode"),
    ("rabbitmq_channel_messages_delivered", "zero", "Total number of messages delivered to consumers in automatic acknowledgement mode"),
    ("rabbitmq_channel_get_ack", "get", "Total number of messages fetched with basic.get in manual acknowledgement mode"),
    ("rabbitmq_channel_get", "zero", "Total number of messages fetched with basic.get in automatic acknowledgement mode"),
    ("rabbitmq_channel_messages_redelivered", "redeliver", "Total number of messages redelivered to consumers"),
    ("rabbitmq_channel_messages_acked", "ack", "Total number of messages acknowledged by consumers"),
    ("rabbitmq_queue_messages_published", "routed", "Total number of messages published to queues"),
    ("rabbitmq_connections_opened", "connections_opened", "Total number of connections opened"),
    ("rabbitmq_connections_closed", "connections_closed", "Total number of connections closed or terminated"),
    ("rabbitmq_channels_opened", "channels_opened", "Total number of channels opened"),
    ("rabbitmq_channels_closed", "channels_closed", "Total number of channels closed"),
)


class BrokerCollector(Collector):
    """Reads the backend at scrape time; nothing is cached between scrapes."""

    def __init__(self, backend: ManagementBackend, per_queue: bool = False) -> None:
        self.backend = backend
        self.per_queue = per_queue

    def collect(self) -> Iterator[Metric]:
        b = self.backend
        node = b.node_name()
        overview = b.overview()
        identity = InfoMetricFamily("rabbitmq_identity", "RabbitMQ node & cluster identity info",
                                    labels=[])
        identity.add_metric([], {"rabbitmq_node": node, "rabbitmq_cluster": str(overview["cluster_name"]),
                                 "rabbitmq_cluster_permanent_id": f"warren-{overview['cluster_name']}"})
        yield identity
        build = InfoMetricFamily("rabbitmq_build", "RabbitMQ & Erlang/OTP version info")
        build.add_metric([], {"rabbitmq_version": "3.10.8", "prometheus_plugin_version": warren_version,
                              "erlang_version": str(overview["erlang_version"]), "product": "Warren"})
        yield build
        totals = overview["object_totals"]
        for name, key, text in (
            ("rabbitmq_connections", "connections", "Connections currently open"),
            ("rabbitmq_channels", "channels", "Channels currently open"),
            ("rabbitmq_consumers", "consumers", "Consumers currently connected"),
            ("rabbitmq_queues", "queues", "Queues available"),
            ("rabbitmq_channel_consumers", "consumers", "Consumers on a channel"),
        ):
            yield GaugeMetricFamily(name, text, value=totals[key])
        counters = b.totals()
        for name, key, text in GLOBAL_COUNTERS:
            yield CounterMetricFamily(name, text, value=counters.get(key, 0))
        yield from self._node_metrics(b.nodes()[0], b.alarms())
        # as RabbitMQ's: the queues that live on this node (the others' are stubs here)
        yield from self._queue_metrics([q for q in b.queues(None) if q.get("node", node) == node])
        yield from self._raft_metrics(b.quorum_raft_metrics())
        cluster = b.cluster_metrics()
        if cluster is not None:
            yield from self._cluster_metrics(cluster)

    @staticmethod
    def _cluster_metrics(c: dict[str, Any]) -> Iterator[Metric]:
        """What this node sees of the cluster (warren_cluster_*)."""
        yield GaugeMetricFamily("warren_cluster_members", "Members of the cluster", value=len(c["members"]))
        up = GaugeMetricFamily("warren_cluster_member_up",
                               "1 if this node heard from the member recently (status alive; itself always)",
                               labels=["node"])
        for name, alive in sorted(c["members"].items()):
            up.add_metric([name], int(alive))
        yield up
        yield GaugeMetricFamily("warren_cluster_leader", "1 if this node leads the metadata Raft group",
                                value=int(c["leader"]))
        yield GaugeMetricFamily("warren_cluster_raft_commit_index", "Metadata Raft group: commit index",
                                value=c["commit"])
        yield GaugeMetricFamily("warren_cluster_raft_applied_index", "Metadata Raft group: applied index",
                                value=c["applied"])
        links = GaugeMetricFamily("warren_cluster_peer_link_up",
                                  "1 if the peer link to this member is connected and the member answers",
                                  labels=["peer"])
        for name, linked in sorted(c["links"].items()):
            links.add_metric([name], int(linked))
        yield links
        forwarded = CounterMetricFamily(
            "warren_cluster_forwarded_messages",
            "Messages sent to another node: publishes to a queue's home, deliveries to a remote consumer",
            labels=["node"])
        errors = CounterMetricFamily("warren_cluster_forward_errors",
                                     "Publishes refused (nacked) because their queue's home node was down",
                                     labels=["node"])
        for name in sorted(set(c["links"]) | set(c["forwarded"]) | set(c["forward_errors"])):
            forwarded.add_metric([name], c["forwarded"].get(name, 0))
            errors.add_metric([name], c["forward_errors"].get(name, 0))
        yield forwarded
        yield errors

    @staticmethod
    def _node_metrics(info: dict[str, Any], alarms: list[str]) -> Iterator[Metric]:
        yield GaugeMetricFamily("rabbitmq_process_resident_memory_bytes", "Memory used in bytes",
                                value=info["mem_used"])
        yield GaugeMetricFamily("rabbitmq_resident_memory_limit_bytes", "Memory high watermark in bytes",
                                value=info["mem_limit"])
        yield GaugeMetricFamily("rabbitmq_disk_space_available_bytes", "Disk space available in bytes",
                                value=info["disk_free"])
        yield GaugeMetricFamily("rabbitmq_disk_space_available_limit_bytes", "Free disk space low watermark in bytes",
                                value=info["disk_free_limit"])
        yield GaugeMetricFamily("rabbitmq_process_open_fds", "Open file descriptors", value=info["fd_used"])
        yield GaugeMetricFamily("rabbitmq_process_max_fds", "Open file descriptors limit", value=info["fd_total"])
        yield GaugeMetricFamily("rabbitmq_process_open_tcp_sockets", "Open TCP sockets", value=info["sockets_used"])
        yield GaugeMetricFamily("rabbitmq_process_max_tcp_sockets", "Open TCP sockets limit", value=info["sockets_total"])
        yield GaugeMetricFamily("rabbitmq_alarms_memory_used_watermark",
                                "is 1 if VM memory watermark alarm is in effect", value=int("memory" in alarms))
        yield GaugeMetricFamily("rabbitmq_alarms_free_disk_space_watermark",
                                "is 1 if free disk space watermark alarm is in effect", value=int("disk" in alarms))
        yield GaugeMetricFamily("rabbitmq_alarms_file_descriptor_limit",
                                "is 1 if file descriptor limit alarm is in effect", value=0)
        yield GaugeMetricFamily("warren_uptime_seconds", "Seconds since the node started", value=info["uptime"] / 1000)
        yield GaugeMetricFamily("warren_processors", "Processors available to the node", value=info["processors"])

    def _queue_metrics(self, queues: list[dict[str, Any]]) -> Iterator[Metric]:
        """Aggregated over all queues (RabbitMQ's /metrics), or per queue (/metrics/per-object)."""
        labels = ["vhost", "queue"] if self.per_queue else []
        families = {
            "messages_ready": GaugeMetricFamily("rabbitmq_queue_messages_ready", "Messages ready to be delivered to consumers", labels=labels),
            "messages_unacknowledged": GaugeMetricFamily("rabbitmq_queue_messages_unacked", "Messages delivered to consumers but not yet acknowledged", labels=labels),
            "messages": GaugeMetricFamily("rabbitmq_queue_messages", "Sum of ready and unacknowledged messages - total queue depth", labels=labels),
            "message_bytes": GaugeMetricFamily("rabbitmq_queue_messages_bytes", "Size in bytes of ready and unacknowledged messages", labels=labels),
            "consumers": GaugeMetricFamily("rabbitmq_queue_consumers", "Consumers on a queue", labels=labels),
        }
        for key, family in families.items():
            if self.per_queue:
                for q in queues:
                    family.add_metric([q["vhost"], q["name"]], q[key])
            else:
                family.add_metric([], sum(q[key] for q in queues))
        yield from families.values()
        yield GaugeMetricFamily("warren_messages_ready", "Ready messages in all queues",
                                value=sum(q["messages_ready"] for q in queues))

    def _raft_metrics(self, rows: list[dict[str, Any]]) -> Iterator[Metric]:
        """RabbitMQ 3.x's ``ra_metrics`` family: every quorum queue replica on this node (per
        queue on /metrics/per-object; summed on /metrics, the latency as the largest)."""
        labels = ["vhost", "queue"] if self.per_queue else []
        for name, key, kind, text in RAFT_METRICS:
            family: Any = (CounterMetricFamily if kind == "counter" else GaugeMetricFamily)(name, text, labels=labels)
            if self.per_queue:
                for row in rows:
                    family.add_metric([row["vhost"], row["queue"]], row[key])
            elif rows:
                values = [row[key] for row in rows]
                family.add_metric([], max(values) if key == "commit_latency" else sum(values))
            yield family


# (name, quorum_raft_metrics() key, type, help): RabbitMQ 3.10's names, so its Raft dashboard works
RAFT_METRICS = (
    ("rabbitmq_raft_term", "term", "counter", "Current Raft term number"),
    ("rabbitmq_raft_log_snapshot_index", "snapshot_index", "gauge", "Raft log snapshot index"),
    ("rabbitmq_raft_log_last_applied_index", "applied", "gauge", "Raft log last applied index"),
    ("rabbitmq_raft_log_commit_index", "commit", "gauge", "Raft log commit index"),
    ("rabbitmq_raft_log_last_written_index", "last_written", "gauge", "Raft log last written index"),
    ("rabbitmq_raft_entry_commit_latency_seconds", "commit_latency", "gauge",
     "Time taken for a log entry to be committed"),
)


def make_registry(backend: ManagementBackend, per_queue: bool = False) -> CollectorRegistry:
    registry = CollectorRegistry(auto_describe=False)
    registry.register(BrokerCollector(backend, per_queue))
    return registry
