"""``warren ctl``: rabbitmqctl's command names and columns, over the management HTTP API."""

from __future__ import annotations

import json
import sys
from dataclasses import dataclass
from typing import Any, NoReturn

import typer

from warren.api.client import APIError, ManagementClient, NodeUnreachable, seg
from warren.cli.main import app

ctl = typer.Typer(help="Manage a running node (rabbitmqctl's commands, over the HTTP API).",
                  no_args_is_help=True, add_completion=False)
app.add_typer(ctl, name="ctl")

EXIT_UNAVAILABLE = 69  # rabbitmqctl's exit code when the node cannot be reached
EXIT_ERROR = 70  # the node refused the operation

VHOST = typer.Option("/", "--vhost", "-p", help="Virtual host.")


@dataclass
class Target:
    client: ManagementClient
    formatter: str


@ctl.callback()
def _options(
    ctx: typer.Context,
    node: str = typer.Option("http://127.0.0.1:15672", "--node", "-n", envvar="WARREN_CTL_URL",
                             help="Management API URL of the node."),
    user: str = typer.Option("guest", "--user", "-u", envvar="WARREN_CTL_USER"),
    password: str = typer.Option("guest", "--password", envvar="WARREN_CTL_PASSWORD"),
    formatter: str = typer.Option("table", "--formatter", "-f", help="table or json"),
) -> None:
    if formatter not in ("table", "json"):
        raise typer.BadParameter("--formatter must be 'table' or 'json'")
    ctx.obj = Target(ManagementClient(node, user, password), formatter)


def _fail(message: str, code: int) -> NoReturn:
    typer.echo(f"Error: {message}", err=True)
    raise typer.Exit(code)


def _call(ctx: typer.Context, method: str, path: str, body: Any = None, passing: tuple[int, ...] = (),
          with_status: bool = False) -> Any:
    """The node's answer (``with_status``: its status and answer); an error status names the
    fix and exits, except those in ``passing``, raised as :class:`APIError` for the caller."""
    target: Target = ctx.obj
    try:
        if method == "GET":
            return target.client.get(path)
        if method == "DELETE" and body is None:
            return target.client.delete(path)
        answer = target.client.request(method, path, body if body is not None else {})
        return answer if with_status else answer[1]
    except NodeUnreachable as error:
        _fail(f"cannot reach the node's management API at {error.url} ({error.cause}); check that the "
              f"node is running and that --node/WARREN_CTL_URL names its HTTP port "
              f"(try: curl {error.url}/api/health/checks/alarms)", EXIT_UNAVAILABLE)
    except APIError as error:
        if error.status in passing:
            raise
        hint = ""
        if error.status == 401 and error.reason in ("Login failed", "Not_Authorized"):
            hint = " (check --user/--password or WARREN_CTL_USER/WARREN_CTL_PASSWORD)"
        elif error.status == 401:
            hint = " (the user lacks a tag or vhost permission; see list_users and list_permissions)"
        _fail(f"{error.reason or 'HTTP ' + str(error.status)}{hint}", EXIT_ERROR)


def _cell(value: Any) -> str:
    if isinstance(value, dict | list):
        return json.dumps(value, separators=(",", ":"))
    if isinstance(value, bool):
        return "true" if value else "false"
    return "" if value is None else str(value)


def _emit(ctx: typer.Context, rows: list[dict[str, Any]], columns: list[str], title: str | None = None) -> None:
    target: Target = ctx.obj
    picked = [{c: row.get(c) for c in columns} for row in rows]
    if target.formatter == "json":
        typer.echo(json.dumps(picked, indent=None))
        return
    if title:
        typer.echo(title)
    typer.echo("\t".join(columns))
    for row in picked:
        typer.echo("\t".join(_cell(row[c]) for c in columns))


def _done(ctx: typer.Context, message: str) -> None:
    if ctx.obj.formatter == "table":
        typer.echo(message)


# ---- node ------------------------------------------------------------------------------------


@ctl.command("status")
def status(ctx: typer.Context) -> None:
    """Node status: versions, uptime, memory, disk, alarms, listeners."""
    overview = _call(ctx, "GET", "/api/overview")
    nodes = _call(ctx, "GET", "/api/nodes")  # in a cluster, every member: this one is overview's node
    node = next((n for n in nodes if n["name"] == overview["node"]), nodes[0])
    alarms = [a for a, on in (("memory", node["mem_alarm"]), ("disk", node["disk_free_alarm"])) if on]
    data = {
        "node": node["name"], "product_name": overview["product_name"],
        "product_version": overview["product_version"], "uptime_seconds": node["uptime"] // 1000,
        "memory_used": node["mem_used"], "memory_limit": node["mem_limit"], "disk_free": node["disk_free"],
        "disk_free_limit": node["disk_free_limit"], "alarms": alarms,
        "listeners": [f"{x['protocol']}:{x['port']}" for x in overview["listeners"]],
        "connections": overview["object_totals"]["connections"], "queues": overview["object_totals"]["queues"],
    }
    if ctx.obj.formatter == "json":
        typer.echo(json.dumps(data))
        return
    typer.echo(f"Status of node {data['node']} ...")
    for key, value in data.items():
        typer.echo(f"{key}: {_cell(value)}")


@ctl.command("cluster_status")
def cluster_status(ctx: typer.Context) -> None:
    """Cluster name, disk and running nodes, versions, alarms, partitions, listeners (rabbitmqctl's)."""
    overview = _call(ctx, "GET", "/api/overview")
    nodes = sorted(_call(ctx, "GET", "/api/nodes"), key=lambda n: str(n["name"]))
    running = [n for n in nodes if n["running"]]
    listeners: dict[str, list[dict[str, Any]]] = {}
    for x in overview.get("listeners", []):
        listeners.setdefault(str(x.get("node", overview["node"])), []).append({
            "node": x.get("node", overview["node"]), "interface": x.get("ip_address", ""), "port": x["port"],
            "protocol": x["protocol"], "purpose": LISTENER_PURPOSES.get(str(x["protocol"]), str(x["protocol"]))})
    data = {
        "cluster_name": overview["cluster_name"],
        "disk_nodes": [n["name"] for n in nodes],  # every Warren node keeps its data on disk
        "ram_nodes": [],
        "running_nodes": [n["name"] for n in running],
        "versions": {n["name"]: {"rabbitmq_version": overview["rabbitmq_version"],
                                 "erlang_version": overview["erlang_version"]} for n in running},
        "maintenance_status": {n["name"]: "not under maintenance" for n in running},
        "alarms": [{"node": n["name"], "resource": resource, "type": "resource_alarm"} for n in running
                   for resource, on in (("memory", n.get("mem_alarm")), ("disk", n.get("disk_free_alarm"))) if on],
        "partitions": {n["name"]: list(n["partitions"]) for n in running if n.get("partitions")},
        "listeners": listeners,
        "feature_flags": [],
    }
    if ctx.obj.formatter == "json":
        typer.echo(json.dumps(data))
        return
    alarm_names = {"memory": "Memory", "disk": "Free disk space"}
    lines = [f"Cluster status of node {overview['node']} ...", "Basics", "", f"Cluster name: {data['cluster_name']}",
             "", "Disk Nodes", "", *data["disk_nodes"], "", "Running Nodes", "", *data["running_nodes"],
             "", "Versions", "",
             *[f"{n}: RabbitMQ {v['rabbitmq_version']} on {v['erlang_version']}" for n, v in data["versions"].items()],
             "", "Maintenance status", "",
             *[f"Node: {n}, status: {st}" for n, st in data["maintenance_status"].items()],
             "", "Alarms", "",
             *([f"{alarm_names[a['resource']]} alarm on node {a['node']}" for a in data["alarms"]] or ["(none)"]),
             "", "Network Partitions", "",
             *([f"Node {n} cannot communicate with {', '.join(peers)}" for n, peers in data["partitions"].items()]
               or ["(none)"]),
             "", "Listeners", "",
             *([f"Node: {n}, interface: {x['interface']}, port: {x['port']}, protocol: {x['protocol']}, "
                f"purpose: {x['purpose']}" for n, xs in listeners.items() for x in xs] or ["(none)"]),
             "", "Feature flags", "", "(none)"]
    typer.echo("\n".join(lines))


LISTENER_PURPOSES = {"amqp": "AMQP 0-9-1 and AMQP 1.0", "amqp/ssl": "AMQP 0-9-1 and AMQP 1.0 over TLS",
                     "http": "HTTP API", "http/ssl": "HTTP API over TLS",
                     "http/prometheus": "Prometheus exporter API over HTTP"}


@ctl.command("list_nodes")
def list_nodes(ctx: typer.Context, columns: list[str] = typer.Argument(None)) -> None:
    """Cluster members: columns name type running uptime mem_used mem_alarm disk_free disk_free_alarm partitions."""
    rows = sorted(_call(ctx, "GET", "/api/nodes"), key=lambda n: str(n["name"]))
    _emit(ctx, rows, columns or ["name", "type", "running"], "Listing nodes ...")


@ctl.command("check_if_node_is_quorum_critical")
def check_if_node_is_quorum_critical(ctx: typer.Context) -> None:
    """Fail (exit 69) if stopping --node would leave a quorum queue without a majority."""
    try:
        _call(ctx, "GET", "/api/health/checks/node-is-quorum-critical", passing=(503,))
    except APIError as error:  # 503: critical
        queues = (error.body or {}).get("queues", [])
        if ctx.obj.formatter == "json":
            typer.echo(json.dumps({"result": "error", "message": error.reason, "queues": queues}))
        else:
            typer.echo(f"Error: {error.reason}:", err=True)
            for q in queues:
                typer.echo(f"  {q['readable_name']}", err=True)
        raise typer.Exit(EXIT_UNAVAILABLE) from None
    _done(ctx, "Node is not quorum critical: stopping it leaves every quorum queue a majority")


@ctl.command("quorum_status")
def quorum_status(ctx: typer.Context, queue: str, vhost: str = VHOST) -> None:
    """Each member's Raft state of a quorum queue, as rabbitmq-queues quorum_status shows it."""
    rows = _call(ctx, "GET", f"/api/queues/quorum/{seg(vhost)}/{seg(queue)}/status")
    _emit(ctx, rows, ["node", "raft_state", "membership", "log_index", "commit_index", "snapshot_index", "term",
                      "machine_version"],
          f"Status of quorum queue {queue} ...")


@ctl.command("add_member")
def add_member(ctx: typer.Context, queue: str, node: str, vhost: str = VHOST) -> None:
    """Add a replica of a quorum queue on NODE (rabbitmq-queues add_member)."""
    _change_member(ctx, queue, node, vhost, "add", "Adding a replica for queue")


@ctl.command("delete_member")
def delete_member(ctx: typer.Context, queue: str, node: str, vhost: str = VHOST) -> None:
    """Remove a quorum queue's replica on NODE (rabbitmq-queues delete_member)."""
    _change_member(ctx, queue, node, vhost, "delete", "Removing a replica for queue")


def _change_member(ctx: typer.Context, queue: str, node: str, vhost: str, action: str, doing: str) -> None:
    _done(ctx, f"{doing} {queue} in vhost {vhost} on node {node} ...")
    status, _ = _call(ctx, "DELETE" if action == "delete" else "POST",
                      f"/api/queues/quorum/{seg(vhost)}/{seg(queue)}/replicas/{action}", {"node": node},
                      with_status=True)
    if status == 202:
        _done(ctx, "The change is recorded and still under way (the new member is catching up); "
                   f"see: warren ctl quorum_status {queue}")


@ctl.command("grow")
def grow(ctx: typer.Context, node: str, strategy: str = typer.Argument(..., help="all or even"),
         vhost_pattern: str = typer.Option(".*", "--vhost-pattern"),
         queue_pattern: str = typer.Option(".*", "--queue-pattern")) -> None:
    """Add a replica on NODE to every matching quorum queue (rabbitmq-queues grow)."""
    rows = _call(ctx, "POST", f"/api/queues/quorum/replicas/on/{seg(node)}/grow",
                 {"strategy": strategy, "vhost_pattern": vhost_pattern, "queue_pattern": queue_pattern})
    _emit(ctx, rows, ["vhost", "name", "size", "result"], f"Growing {strategy} quorum queues on {node} ...")


@ctl.command("shrink")
def shrink(ctx: typer.Context, node: str) -> None:
    """Remove NODE's replica from every quorum queue it is a member of (rabbitmq-queues shrink)."""
    rows = _call(ctx, "DELETE", f"/api/queues/quorum/replicas/on/{seg(node)}/shrink", {})
    _emit(ctx, rows, ["vhost", "name", "size", "result"], f"Shrinking quorum queues on {node} ...")


REBALANCE_TIMEOUT_SECONDS = 45.0  # above a quorum command's answer timeout (30 s) on the node


@ctl.command("rebalance")
def rebalance(ctx: typer.Context, queue_type: str = typer.Argument("all", help="quorum or all"),
              vhost_pattern: str = typer.Option(".*", "--vhost-pattern"),
              queue_pattern: str = typer.Option(".*", "--queue-pattern")) -> None:
    """Spread quorum queue leaders evenly over the alive nodes (rabbitmq-queues rebalance)."""
    target: Target = ctx.obj  # the node answers once every leader did, or after 30 s for one that cannot
    target.client.timeout = max(target.client.timeout, REBALANCE_TIMEOUT_SECONDS)
    rows = _call(ctx, "POST", "/api/rebalance/queues",
                 {"type": queue_type, "vhost_pattern": vhost_pattern, "queue_pattern": queue_pattern})
    _emit(ctx, rows, ["vhost", "name", "from", "to", "result"], "Re-balancing leaders of quorum queues ...")


def _members(ctx: typer.Context) -> list[dict[str, Any]]:
    members: list[dict[str, Any]] = _call(ctx, "GET", "/v1/cluster/members")
    return members


@ctl.command("join_cluster")
def join_cluster(ctx: typer.Context, node: str,
                 raft_addr: str = typer.Option("", "--raft-addr", help="NODE's cluster address, host:port."),
                 addr: str = typer.Option("", "--addr", help="NODE's AMQP address, host:port."),
                 ram: bool = typer.Option(False, "--ram", help="Accepted: every Warren node is a disc node.")) -> None:
    """Admit NODE (a node name) into the cluster of --node, before NODE starts.

    Unlike rabbitmqctl (run on the joining node), Warren's join is asked of a member: NODE then
    claims its record when it starts with --node-name NODE --seeds <a member's cluster port>."""
    if ram:
        typer.echo("Warren has no RAM nodes: every node is a disc node; joining as a disc node")
    if not raft_addr:
        _fail(f"join_cluster needs NODE's cluster address: --raft-addr host:port (where {node} will listen "
              "with --cluster-port); or start the node with --seeds, which joins it without this step", 64)
    reply = _call(ctx, "POST", "/v1/cluster/join", {"node_id": node, "addr": addr, "raft_addr": raft_addr})
    if ctx.obj.formatter == "json":
        typer.echo(json.dumps(reply))
        return
    typer.echo(f"Clustering node {node} as member {reply['id']}: start it with --node-name {node} to claim it")


@ctl.command("forget_cluster_node")
def forget_cluster_node(ctx: typer.Context, node: str,
                        offline: bool = typer.Option(False, "--offline", help="Not needed by Warren.")) -> None:
    """Remove the member called NODE from the cluster (a dead one, or a graceful leave)."""
    members = _members(ctx)
    found = [m for m in members if m["name"] == node]
    if not found:
        _fail(f"{node} is not a member of the cluster; members: {', '.join(m['name'] for m in members)}",
              EXIT_ERROR)
    if len(members) == 1:
        _fail(f"{node} is the cluster's last member: it cannot be forgotten (stop it, or delete its data "
              "directory to start afresh)", EXIT_ERROR)
    _call(ctx, "POST", "/v1/cluster/leave", {"node_id": found[0]["id"]})
    _done(ctx, f"Removing node {node} from the cluster")


@ctl.command("change_cluster_node_type")
def change_cluster_node_type(ctx: typer.Context, node_type: str) -> None:
    """Accepted for rabbitmqctl's scripts: every Warren node is a disc node."""
    if node_type not in ("ram", "disc", "disk"):
        _fail(f"node type must be ram or disc, got {node_type!r}", 64)
    typer.echo("Every Warren node is a disc node (it keeps the cluster's metadata on disk): nothing to change")


def _not_supported(command: str, instead: str) -> NoReturn:
    _fail(f"{command} is not supported by Warren: {instead}", EXIT_ERROR)


@ctl.command("stop_app")
def stop_app(ctx: typer.Context) -> None:
    """Not supported: stop the process (or `warren cluster down`)."""
    _not_supported("stop_app", "stop the warren server process (SIGTERM), or use warren cluster down")


@ctl.command("start_app")
def start_app(ctx: typer.Context) -> None:
    """Not supported: start the process (or `warren cluster up`)."""
    _not_supported("start_app", "start the warren server process, or use warren cluster up")


@ctl.command("reset")
def reset(ctx: typer.Context) -> None:
    """Not supported: forget the member and delete its data directory."""
    _not_supported("reset", "stop the node, forget it (forget_cluster_node NODE on another member) and "
                   "delete its data directory")


# ---- listings ----------------------------------------------------------------------------------


@ctl.command("list_queues")
def list_queues(ctx: typer.Context, columns: list[str] = typer.Argument(None), vhost: str = VHOST) -> None:
    """Queues: columns name messages messages_ready messages_unacknowledged consumers type durable ..."""
    rows = _call(ctx, "GET", f"/api/queues/{seg(vhost)}")
    _emit(ctx, rows, columns or ["name", "messages"], f"Listing queues for vhost {vhost} ...")


@ctl.command("list_exchanges")
def list_exchanges(ctx: typer.Context, columns: list[str] = typer.Argument(None), vhost: str = VHOST) -> None:
    """Exchanges: columns name type durable auto_delete internal arguments policy."""
    rows = _call(ctx, "GET", f"/api/exchanges/{seg(vhost)}")
    _emit(ctx, rows, columns or ["name", "type"], f"Listing exchanges for vhost {vhost} ...")


@ctl.command("list_bindings")
def list_bindings(ctx: typer.Context, columns: list[str] = typer.Argument(None), vhost: str = VHOST) -> None:
    """Bindings: source_name source_kind destination_name destination_kind routing_key arguments."""
    rows = [{"source_name": b["source"], "source_kind": "exchange", "destination_name": b["destination"],
             "destination_kind": b["destination_type"], "routing_key": b["routing_key"],
             "arguments": b["arguments"], "vhost": b["vhost"]}
            for b in _call(ctx, "GET", f"/api/bindings/{seg(vhost)}")]
    default = ["source_name", "source_kind", "destination_name", "destination_kind", "routing_key", "arguments"]
    _emit(ctx, rows, columns or default, f"Listing bindings for vhost {vhost}...")


@ctl.command("list_connections")
def list_connections(ctx: typer.Context, columns: list[str] = typer.Argument(None)) -> None:
    """Connections: columns name user peer_host peer_port state vhost channels protocol ..."""
    rows = _call(ctx, "GET", "/api/connections")
    _emit(ctx, rows, columns or ["user", "peer_host", "peer_port", "state"], "Listing connections ...")


@ctl.command("list_channels")
def list_channels(ctx: typer.Context, columns: list[str] = typer.Argument(None)) -> None:
    """Channels: columns name user consumer_count messages_unacknowledged confirm prefetch_count ..."""
    rows = _call(ctx, "GET", "/api/channels")
    _emit(ctx, rows, columns or ["name", "user", "consumer_count", "messages_unacknowledged"], "Listing channels ...")


@ctl.command("list_consumers")
def list_consumers(ctx: typer.Context, columns: list[str] = typer.Argument(None), vhost: str = VHOST) -> None:
    """Consumers: queue_name channel_pid consumer_tag ack_required prefetch_count active arguments."""
    rows = [{"queue_name": c["queue"]["name"], "channel_pid": c["channel_details"]["name"],
             "consumer_tag": c["consumer_tag"], "ack_required": c["ack_required"],
             "prefetch_count": c["prefetch_count"], "active": c["active"], "arguments": c["arguments"],
             "exclusive": c["exclusive"], "priority": c["priority"]}
            for c in _call(ctx, "GET", f"/api/consumers/{seg(vhost)}")]
    default = ["queue_name", "channel_pid", "consumer_tag", "ack_required", "prefetch_count", "active", "arguments"]
    _emit(ctx, rows, columns or default, f"Listing consumers in vhost {vhost} ...")


@ctl.command("list_users")
def list_users(ctx: typer.Context) -> None:
    """Users and their tags."""
    users = _call(ctx, "GET", "/api/users")
    if ctx.obj.formatter == "json":  # rabbitmqctl: tags as a JSON list; in a table as [a, b]
        rows = [{"user": u["name"], "tags": list(u["tags"])} for u in users]
    else:
        rows = [{"user": u["name"], "tags": "[" + ", ".join(u["tags"]) + "]"} for u in users]
    _emit(ctx, rows, ["user", "tags"], "Listing users ...")


@ctl.command("list_vhosts")
def list_vhosts(ctx: typer.Context, columns: list[str] = typer.Argument(None)) -> None:
    """Virtual hosts."""
    _emit(ctx, _call(ctx, "GET", "/api/vhosts"), columns or ["name"], "Listing vhosts ...")


@ctl.command("list_permissions")
def list_permissions(ctx: typer.Context, vhost: str = VHOST) -> None:
    """Permissions in a vhost: user configure write read."""
    rows = _call(ctx, "GET", f"/api/vhosts/{seg(vhost)}/permissions")
    _emit(ctx, rows, ["user", "configure", "write", "read"], f"Listing permissions for vhost \"{vhost}\" ...")


@ctl.command("list_policies")
def list_policies(ctx: typer.Context, vhost: str = VHOST) -> None:
    """Policies in a vhost: vhost name pattern apply-to definition priority."""
    rows = _call(ctx, "GET", f"/api/policies/{seg(vhost)}")
    _emit(ctx, rows, ["vhost", "name", "pattern", "apply-to", "definition", "priority"],
          f"Listing policies for vhost \"{vhost}\" ...")


# ---- changes ---------------------------------------------------------------------------------------


@ctl.command("add_user")
def add_user(ctx: typer.Context, username: str, password: str) -> None:
    """Create a user (no tags)."""
    _call(ctx, "PUT", f"/api/users/{seg(username)}", {"password": password, "tags": ""})
    _done(ctx, f'Adding user "{username}" ...')


@ctl.command("delete_user")
def delete_user(ctx: typer.Context, username: str) -> None:
    _call(ctx, "DELETE", f"/api/users/{seg(username)}")
    _done(ctx, f'Deleting user "{username}" ...')


def _user(ctx: typer.Context, username: str) -> dict[str, Any]:
    user: dict[str, Any] = _call(ctx, "GET", f"/api/users/{seg(username)}")
    return user


@ctl.command("change_password")
def change_password(ctx: typer.Context, username: str, new_password: str) -> None:
    user = _user(ctx, username)
    _call(ctx, "PUT", f"/api/users/{seg(username)}", {"password": new_password, "tags": user["tags"]})
    _done(ctx, f'Changing password for user "{username}" ...')


@ctl.command("set_user_tags")
def set_user_tags(ctx: typer.Context, username: str, tags: list[str] = typer.Argument(None)) -> None:
    user = _user(ctx, username)
    _call(ctx, "PUT", f"/api/users/{seg(username)}", {"password_hash": user["password_hash"],
                                                      "hashing_algorithm": user["hashing_algorithm"],
                                                      "tags": list(tags or [])})
    _done(ctx, f'Setting tags for user "{username}" to [{", ".join(tags or [])}] ...')


@ctl.command("add_vhost")
def add_vhost(ctx: typer.Context, name: str,
              default_queue_type: str = typer.Option("", "--default-queue-type",
                                                     help="classic or quorum: what declares without x-queue-type get.")) -> None:
    _call(ctx, "PUT", f"/api/vhosts/{seg(name)}", {"default_queue_type": default_queue_type} if default_queue_type else None)
    _done(ctx, f'Adding vhost "{name}" ...')


@ctl.command("delete_vhost")
def delete_vhost(ctx: typer.Context, name: str) -> None:
    _call(ctx, "DELETE", f"/api/vhosts/{seg(name)}")
    _done(ctx, f'Deleting vhost "{name}" ...')


@ctl.command("set_permissions")
def set_permissions(ctx: typer.Context, username: str, configure: str, write: str, read: str,
                    vhost: str = VHOST) -> None:
    _call(ctx, "PUT", f"/api/permissions/{seg(vhost)}/{seg(username)}",
          {"configure": configure, "write": write, "read": read})
    _done(ctx, f'Setting permissions for user "{username}" in vhost "{vhost}" ...')


@ctl.command("set_policy")
def set_policy(ctx: typer.Context, name: str, pattern: str, definition: str, vhost: str = VHOST,
               priority: int = typer.Option(0, "--priority"),
               apply_to: str = typer.Option("all", "--apply-to")) -> None:
    """Set a policy: NAME PATTERN DEFINITION (JSON), e.g. '{"max-length": 100}'."""
    try:
        parsed = json.loads(definition)
    except json.JSONDecodeError as exc:
        _fail(f"policy definition is not valid JSON ({exc.msg}); e.g. '{{\"max-length\": 100}}'", 64)
    _call(ctx, "PUT", f"/api/policies/{seg(vhost)}/{seg(name)}",
          {"pattern": pattern, "definition": parsed, "priority": priority, "apply-to": apply_to})
    _done(ctx, f'Setting policy "{name}" for pattern "{pattern}" to "{definition}" with priority "{priority}" for vhost "{vhost}" ...')


@ctl.command("clear_policy")
def clear_policy(ctx: typer.Context, name: str, vhost: str = VHOST) -> None:
    _call(ctx, "DELETE", f"/api/policies/{seg(vhost)}/{seg(name)}")
    _done(ctx, f'Clearing policy "{name}" on vhost "{vhost}" ...')


@ctl.command("purge_queue")
def purge_queue(ctx: typer.Context, queue: str, vhost: str = VHOST) -> None:
    _call(ctx, "DELETE", f"/api/queues/{seg(vhost)}/{seg(queue)}/contents")
    _done(ctx, f'Purging queue "{queue}" in vhost "{vhost}" ...')


@ctl.command("delete_queue")
def delete_queue(ctx: typer.Context, queue: str, vhost: str = VHOST,
                 if_empty: bool = typer.Option(False, "--if-empty", "-e"),
                 if_unused: bool = typer.Option(False, "--if-unused", "-u")) -> None:
    query = "&".join(q for q, on in (("if-empty=true", if_empty), ("if-unused=true", if_unused)) if on)
    _call(ctx, "DELETE", f"/api/queues/{seg(vhost)}/{seg(queue)}" + (f"?{query}" if query else ""))
    _done(ctx, f'Deleting queue "{queue}" on vhost "{vhost}" ...')


@ctl.command("close_connection")
def close_connection(ctx: typer.Context, connection_name: str, explanation: str) -> None:
    target: Target = ctx.obj
    try:
        target.client.delete(f"/api/connections/{seg(connection_name)}", headers={"X-Reason": explanation})
    except NodeUnreachable:
        _call(ctx, "GET", "/api/overview")  # reports the unreachable node
    except APIError as error:
        _fail(error.reason, EXIT_ERROR)
    _done(ctx, f'Closing connection "{connection_name}", reason: {explanation}...')


@ctl.command("export_definitions")
def export_definitions(ctx: typer.Context, path: str) -> None:
    """Write the definitions to PATH ("-" for stdout)."""
    document = _call(ctx, "GET", "/api/definitions")
    text = json.dumps(document, indent=2)
    if path == "-":
        sys.stdout.write(text + "\n")
        return
    with open(path, "w") as out:
        out.write(text)
    _done(ctx, f"Exported definitions to {path}")


@ctl.command("import_definitions")
def import_definitions(ctx: typer.Context, path: str) -> None:
    """Import a RabbitMQ definitions file (quorum queues are skipped and listed)."""
    try:
        with open(path) as source:
            document = json.load(source)
    except (OSError, json.JSONDecodeError) as exc:
        _fail(f"cannot read definitions from {path}: {exc}", 66)
    report = _call(ctx, "POST", "/api/definitions", document) or {"skipped_queues": []}  # 204: all imported
    skipped = report.get("skipped_queues", [])
    if ctx.obj.formatter == "json":
        typer.echo(json.dumps(report))
        return
    typer.echo(f"Imported definitions from {path}")
    for q in skipped:
        typer.echo(f"skipped quorum queue '{q['name']}' in vhost '{q['vhost']}' (replication not available yet)")
    for p in report.get("skipped_parameters", []):
        where = "global" if p["component"] == "global" else f"{p['component']} in vhost '{p['vhost']}'"
        typer.echo(f"skipped runtime parameter '{p['name']}' ({where}): not supported by Warren")
    for t in report.get("skipped_topic_permissions", []):
        typer.echo(f"skipped topic permission of user '{t['user']}' on exchange '{t['exchange']}' in vhost "
                   f"'{t['vhost']}': not enforced by Warren")
