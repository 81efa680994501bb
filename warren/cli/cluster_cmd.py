"""``warren cluster up|down|status``: a local cluster of real ``warren server`` processes.

``up`` starts N detached nodes (each in its own session, with its own data dir and log file
under DIR), optionally a HAProxy in front of them, waits until every member sees all N
alive, and records what it started in ``DIR/cluster.json``; ``down`` and ``status`` read
that file. A pid counts as ours only while its process start time matches the recorded one,
so a reused pid is never signalled.
"""

from __future__ import annotations

import base64
import json
import os
import secrets
import shutil
import signal
import socket
import subprocess
import sys
import time
import urllib.error
import urllib.parse
import urllib.request
from pathlib import Path
from typing import Any, NoReturn

import psutil
import typer

from warren.cli.chaos import tmpfs
from warren.cli.chaos.netlab import NetLab, NetLabError
from warren.cli.main import app

cluster_app = typer.Typer(help="A local cluster of warren server processes (for development and tests).",
                          no_args_is_help=True)
app.add_typer(cluster_app, name="cluster")

STATE_FILE = "cluster.json"
SECRET_FILE = "secret"
HAPROXY_CONFIG = "haproxy.cfg"
HAPROXY_SOCKET = "haproxy.sock"
HAPROXY_LOG = "haproxy.log"
HOST = "127.0.0.1"
MAX_NODES = 7  # the cluster's member limit
HTTP_OFFSET, CLUSTER_OFFSET = 10000, 20000  # RabbitMQ's 5672 / 15672 / 25672 spacing
MAX_BASE_PORT = 65535 - CLUSTER_OFFSET - MAX_NODES
HEALTH_CHECK = "/api/health/checks/alarms"
NETNS_PORTS = {"amqp": 5672, "http": 15672, "cluster": 25672}  # a node alone in its namespace: the defaults

DIR_OPTION = typer.Option("./warren-cluster", "--dir", "-d", envvar="WARREN_CLUSTER_DIR",
                          help="The cluster's directory: data dirs, logs, secret, state file.")


class ClusterError(Exception):
    """An operating error of `warren cluster`: printed, exit code 1."""


def _fail(message: str, code: int = 1) -> NoReturn:
    typer.echo(f"warren cluster: {message}", err=True)
    raise typer.Exit(code)


# ---- state and processes ---------------------------------------------------------------

def _load_state(directory: Path) -> dict[str, Any] | None:
    path = directory / STATE_FILE
    try:
        state: dict[str, Any] = json.loads(path.read_text())
    except FileNotFoundError:
        return None
    except (OSError, ValueError) as exc:
        raise ClusterError(f"cannot read {path}: {exc}") from exc
    return state


def _save_state(directory: Path, state: dict[str, Any]) -> None:
    path = directory / STATE_FILE
    tmp = path.with_suffix(".tmp")
    tmp.write_text(json.dumps(state, indent=2) + "\n")
    os.replace(tmp, path)


def _start_ticks(pid: int) -> int | None:
    """When the process started, in clock ticks since boot (Linux): unlike a wall-clock start
    time it does not move when the clock is stepped (a VM's was by 16 s in 20 minutes, and
    ``warren cluster down`` then took its own nodes for strangers and left them running)."""
    try:
        stat = Path(f"/proc/{pid}/stat").read_text()
    except OSError:
        return None
    return int(stat.rpartition(")")[2].split()[19])  # field 22, counted after "pid (comm)"


def _alive(proc: dict[str, Any] | None) -> bool:
    """Is the recorded process still the one we started (same pid and start), not a zombie?"""
    if not proc or not proc.get("pid"):
        return False
    try:
        p = psutil.Process(int(proc["pid"]))
        if proc.get("start_ticks") is not None:
            if _start_ticks(p.pid) != proc["start_ticks"]:
                return False  # the pid was reused by another process
        elif abs(p.create_time() - float(proc.get("create_time", 0))) > 1.0:  # a record without ticks
            return False
        return p.status() != psutil.STATUS_ZOMBIE
    except psutil.Error:
        return False


def _processes(state: dict[str, Any]) -> list[dict[str, Any]]:
    procs = [n for n in state.get("nodes", [])]
    if state.get("lb"):
        procs.append(state["lb"])
    return procs


def _spawn(cmd: list[str], log_path: Path, env: dict[str, str] | None = None) -> dict[str, Any]:
    """Start ``cmd`` detached from this CLI (own session, no terminal), output to ``log_path``."""
    with open(log_path, "ab") as log:
        proc = subprocess.Popen(cmd, stdin=subprocess.DEVNULL, stdout=log, stderr=subprocess.STDOUT,
                                env={**os.environ, **(env or {})}, start_new_session=True)
    try:
        created = psutil.Process(proc.pid).create_time()
    except psutil.Error:
        created = time.time()
    return {"pid": proc.pid, "create_time": created, "start_ticks": _start_ticks(proc.pid)}


def _signal(proc: dict[str, Any], sig: int) -> None:
    if not _alive(proc):
        return
    pid = int(proc["pid"])
    try:
        os.killpg(pid, sig)  # its session's process group: the node and anything it started
    except OSError:
        try:
            os.kill(pid, sig)
        except OSError:
            pass


def _stop(procs: list[dict[str, Any]], timeout: float) -> list[int]:
    """SIGTERM, then SIGKILL what still runs after ``timeout`` seconds; the pids it had to kill."""
    for proc in procs:
        _signal(proc, signal.SIGTERM)
    deadline = time.monotonic() + timeout
    while any(_alive(p) for p in procs) and time.monotonic() < deadline:
        time.sleep(0.05)
    killed = [int(p["pid"]) for p in procs if _alive(p)]
    for proc in procs:
        _signal(proc, signal.SIGKILL)
    deadline = time.monotonic() + 5
    while any(_alive(p) for p in procs) and time.monotonic() < deadline:
        time.sleep(0.05)
    return killed


def _tail(path: Path, lines: int = 15) -> str:
    try:
        text = path.read_text(errors="replace").splitlines()
    except OSError:
        return "(no log)"
    return "\n".join("    " + line for line in text[-lines:])


# ---- ports -----------------------------------------------------------------------------

def _port_free(port: int) -> bool:
    with socket.socket() as s:
        s.setsockopt(socket.SOL_SOCKET, socket.SO_REUSEADDR, 1)  # as asyncio's listeners do
        try:
            s.bind((HOST, port))
        except OSError:
            return False
    return True


def _free_ports(count: int) -> list[int]:
    """``count`` distinct ports the kernel calls free right now (held together, then released)."""
    held = []
    try:
        for _ in range(count):
            s = socket.socket()
            s.bind((HOST, 0))
            held.append(s)
        return [int(s.getsockname()[1]) for s in held]
    finally:
        for s in held:
            s.close()


def _plan_ports(nodes: int, base_port: int | None, lb: bool) -> tuple[list[dict[str, int]], dict[str, int]]:
    if base_port is not None:
        plan = [{"amqp": base_port + i, "http": base_port + HTTP_OFFSET + i,
                 "cluster": base_port + CLUSTER_OFFSET + i} for i in range(1, nodes + 1)]
        return plan, {"amqp": base_port, "http": base_port + HTTP_OFFSET}
    ports = _free_ports(3 * nodes + 2)
    plan = [{"amqp": ports[3 * i], "http": ports[3 * i + 1], "cluster": ports[3 * i + 2]} for i in range(nodes)]
    return plan, {"amqp": ports[-2], "http": ports[-1]}


def _check_ports(wanted: list[tuple[int, str]]) -> None:
    for port, what in wanted:
        if not _port_free(port):
            raise ClusterError(
                f"port {port} ({what}) is in use on {HOST}: stop what holds it, choose another "
                "--base-port, or omit --base-port to use free ports")


# ---- HTTP ------------------------------------------------------------------------------

def _get_json(url: str, timeout: float = 2.0) -> Any:
    """GET as the URL's user (``http://user:password@host:port``), else as guest."""
    parts = urllib.parse.urlsplit(url)
    user = f"{urllib.parse.unquote(parts.username or 'guest')}:{urllib.parse.unquote(parts.password or 'guest')}"
    bare = urllib.parse.urlunsplit(parts._replace(netloc=parts.netloc.rpartition("@")[2]))
    request = urllib.request.Request(bare, headers={"Authorization": "Basic " + base64.b64encode(user.encode()).decode()})
    with urllib.request.urlopen(request, timeout=timeout) as response:
        return json.loads(response.read())


def node_api(node: dict[str, Any], path: str, timeout: float = 2.0) -> Any:
    """GET a node's HTTP API (as guest, the local cluster's user, unless its ``http`` URL
    names one); raises OSError or ValueError."""
    return _get_json(f"{node_http_url(node).rstrip('/')}{path}", timeout)


def _cluster_info(node: dict[str, Any]) -> dict[str, Any]:
    info: dict[str, Any] = node_api(node, "/v1/cluster/info")
    return info


def metadata_leader(info: dict[str, Any]) -> str | None:
    """The member a ``/v1/cluster/info`` answer names as the metadata group's leader."""
    return next((str(m["name"]) for m in info["members"] if m.get("is_leader")), None)


def _amqp_url(port: int, host: str = HOST) -> str:
    return f"amqp://guest:guest@{host}:{port}/%2F"


def _http_url(port: int, host: str = HOST) -> str:
    return f"http://{host}:{port}"


def node_host(node: dict[str, Any]) -> str:
    """Where a node of ``cluster.json`` listens: loopback, or its namespace's address."""
    return str(node.get("host", HOST))


def node_amqp_url(node: dict[str, Any]) -> str:
    """A node's AMQP URL: given (a ``--cluster-file`` node's ``amqp``), or from its port."""
    return str(node.get("amqp") or _amqp_url(node["amqp_port"], node_host(node)))


def node_http_url(node: dict[str, Any]) -> str:
    return str(node.get("http") or _http_url(node["http_port"], node_host(node)))


# ---- HAProxy ---------------------------------------------------------------------------

def _haproxy_config(directory: Path, nodes: list[dict[str, Any]], lb: dict[str, Any]) -> str:
    amqp_servers = "\n".join(
        f"    server {n['name']} {HOST}:{n['amqp_port']} check port {n['http_port']}" for n in nodes)
    http_servers = "\n".join(f"    server {n['name']} {HOST}:{n['http_port']} check" for n in nodes)
    return f"""# written by `warren cluster up`; HAProxy in front of {len(nodes)} Warren nodes
global
    maxconn 4096
    stats socket {directory / HAPROXY_SOCKET} mode 600 level admin

defaults
    log global
    timeout connect 5s
    # AMQP connections live long; heartbeats (60 s by default) keep them inside this
    timeout client 3h
    timeout server 3h
    # a check a second; two failures take a node out, one success puts it back
    default-server inter 1s fall 2 rise 1

frontend warren_amqp
    mode tcp
    bind {HOST}:{lb['amqp_port']}
    default_backend warren_amqp

# Health: the management port's {HEALTH_CHECK} (200, or 503 in a resource alarm),
# so a node that blocks publishers leaves the rotation, not only one that is down.
backend warren_amqp
    mode tcp
    balance roundrobin
    option httpchk GET {HEALTH_CHECK}
    http-check expect status 200
{amqp_servers}

frontend warren_http
    mode http
    bind {HOST}:{lb['http_port']}
    default_backend warren_http

backend warren_http
    mode http
    balance roundrobin
    option httpchk GET {HEALTH_CHECK}
    http-check expect status 200
{http_servers}
"""


def _haproxy_binary() -> str:
    found = shutil.which("haproxy") or next(
        (p for p in ("/usr/sbin/haproxy", "/usr/local/sbin/haproxy") if os.access(p, os.X_OK)), None)
    if found is None:
        raise ClusterError("--lb needs HAProxy, which is not installed: apt-get install haproxy "
                           "(Debian/Ubuntu), dnf install haproxy, or brew install haproxy")
    return found


def _haproxy_command(socket_path: Path, line: str) -> str:
    with socket.socket(socket.AF_UNIX, socket.SOCK_STREAM) as s:
        s.settimeout(2)
        s.connect(str(socket_path))
        s.sendall(line.encode() + b"\n")
        chunks = []
        while chunk := s.recv(65536):
            chunks.append(chunk)
    return b"".join(chunks).decode()


def _haproxy_servers(directory: Path) -> dict[str, dict[str, str]]:
    """``show stat``: "backend/server" -> its status (UP, DOWN, ...) and last check."""
    import csv
    import io

    text = _haproxy_command(directory / HAPROXY_SOCKET, "show stat").lstrip("# ")
    return {f"{row['pxname']}/{row['svname']}": {"status": row["status"], "check": row.get("check_status", "")}
            for row in csv.DictReader(io.StringIO(text)) if row["svname"] not in ("FRONTEND", "BACKEND")}


# ---- up --------------------------------------------------------------------------------

def _wait_ready(node: dict[str, Any], log_path: Path, deadline: float, offset: int = 0) -> None:
    """Until the node prints its start-up line (after ``offset`` in its log); a node that
    exits first is an error."""
    while time.monotonic() < deadline:
        try:
            if " ready: AMQP on " in log_path.read_text(errors="replace")[offset:]:
                return
        except OSError:
            pass
        if not _alive(node):
            raise ClusterError(f"{node['name']} exited during start-up; its log ({log_path}):\n{_tail(log_path)}")
        time.sleep(0.05)
    raise ClusterError(f"{node['name']} did not start in time; its log ({log_path}):\n{_tail(log_path)}")


def _wait_formed(nodes: list[dict[str, Any]], deadline: float) -> None:
    """Until every node's /v1/cluster/info lists all N members alive with one agreed leader."""
    names = {n["name"] for n in nodes}
    last = "no answer yet"
    while time.monotonic() < deadline:
        try:
            infos = [_cluster_info(n) for n in nodes]
            views = [{m["name"]: m["status"] for m in info["members"]} for info in infos]
            leaders = {info.get("leader") for info in infos}
            if all(v == dict.fromkeys(names, "alive") for v in views) and len(leaders) == 1 \
                    and None not in leaders:
                return
            last = "; ".join(f"{n['name']} sees {v}" for n, v in zip(nodes, views, strict=True))
        except (OSError, ValueError, KeyError) as exc:
            last = str(exc)
        for n in nodes:
            if not _alive(n):
                raise ClusterError(f"{n['name']} exited; its log ({n['log']}):\n{_tail(Path(n['log']))}")
        time.sleep(0.1)
    raise ClusterError(f"the cluster did not form in time: {last}")


def _wait_lb(directory: Path, lb: dict[str, Any], count: int, deadline: float) -> None:
    """Until HAProxy's stats socket answers and shows every server of both backends UP."""
    socket_path = directory / HAPROXY_SOCKET
    last = "no stats socket yet"
    while time.monotonic() < deadline:
        if not _alive(lb):
            raise ClusterError(f"haproxy exited; its log ({lb['log']}):\n{_tail(Path(lb['log']))}")
        if socket_path.exists():
            try:
                servers = _haproxy_servers(directory)
                if len(servers) == 2 * count and all(s["status"] == "UP" for s in servers.values()):
                    return
                last = ", ".join(f"{k} {v['status']}" for k, v in sorted(servers.items()))
            except OSError as exc:
                last = str(exc)
        time.sleep(0.05)
    raise ClusterError(f"HAProxy did not see every node UP in time: {last}")


def _summary(directory: Path, state: dict[str, Any]) -> dict[str, Any]:
    lb = state.get("lb")
    return {
        "nodes": [{"name": n["name"], "amqp_url": node_amqp_url(n), "http_url": node_http_url(n),
                   "cluster_address": f"{node_host(n)}:{n['cluster_port']}", "pid": n["pid"],
                   "data_dir": n["data_dir"]}
                  for n in state["nodes"]],
        "lb": None if not lb else {"amqp_url": _amqp_url(lb["amqp_port"]), "http_url": _http_url(lb["http_port"]),
                                   "pid": lb["pid"]},
        "dir": str(directory),
    }


def _secret(directory: Path, given: str | None) -> str:
    path = directory / SECRET_FILE
    if given:
        value = given
    elif path.exists():
        value = path.read_text().strip()
    else:
        value = secrets.token_urlsafe(32)
    if not path.exists() or path.read_text().strip() != value:
        fd = os.open(path, os.O_WRONLY | os.O_CREAT | os.O_TRUNC, 0o600)
        with os.fdopen(fd, "w") as f:
            f.write(value + "\n")
    return value


@cluster_app.command()
def up(
    nodes: int = typer.Option(3, "--nodes", "-n", min=1, max=MAX_NODES, help="How many nodes (1 to 7)."),
    base_port: int | None = typer.Option(
        None, "--base-port", min=1024, max=MAX_BASE_PORT,
        help="Fixed ports from P: node i (1..N) gets AMQP P+i, HTTP P+10000+i and cluster P+20000+i; "
             "the --lb gets AMQP P and HTTP P+10000 (so --base-port 5672 puts HAProxy on "
             "RabbitMQ's 5672/15672 and the nodes on 5673.., 15673.., 25673..). A port in use is "
             "an error naming it. Without --base-port: free ports, picked once and reused by a "
             "later `up` on the same --dir."),
    lb: bool = typer.Option(False, "--lb", help="Also start HAProxy in front (AMQP and HTTP, round robin)."),
    as_json: bool = typer.Option(False, "--json", help="Print one JSON object (nodes, lb, dir) and nothing else."),
    directory: str = DIR_OPTION,
    secret: str | None = typer.Option(None, "--secret", envvar="WARREN_CLUSTER_SECRET",
                                      help="The cluster secret (default: DIR/secret, made on first use)."),
    timeout: float = typer.Option(60.0, "--timeout", min=1.0, help="Seconds to wait for the cluster to form."),
) -> None:
    """Start N local nodes (and a HAProxy) and wait until all are alive.

    The nodes are named warren-1..warren-N: warren-1 bootstraps, the others join through it. `up` returns once every node sees all N alive, and prints their URLs.

    Each node's data is DIR/warren-i and its log DIR/warren-i.log; DIR/cluster.json records pids and ports for `down` and `status`. Data kept by `down` is reused: the nodes restart from it with the same ports and secret.
    """
    started = time.monotonic()
    root = Path(directory).resolve()
    say = (lambda _m: None) if as_json else (lambda m: typer.echo(m, err=True))
    try:
        state = _up(root, nodes, base_port, lb, secret, timeout, say)
    except ClusterError as exc:
        _fail(str(exc))
    summary = _summary(root, state)
    if as_json:
        typer.echo(json.dumps(summary))
        return
    typer.echo(f"Warren cluster of {nodes} node{'s' if nodes > 1 else ''} up in "
               f"{time.monotonic() - started:.1f}s, dir {root}")
    for n in summary["nodes"]:
        typer.echo(f"  {n['name']:<10} {n['amqp_url']}  {n['http_url']}  cluster {n['cluster_address']}  pid {n['pid']}")
    if summary["lb"]:
        b = summary["lb"]
        typer.echo(f"  {'haproxy':<10} {b['amqp_url']}  {b['http_url']}  pid {b['pid']}")
    typer.echo(f"Status: warren cluster status --dir {root}   Stop: warren cluster down --dir {root}")


def node_command(node: dict[str, Any], seeds: list[str]) -> list[str]:
    """The ``warren server`` command line of a node of ``cluster.json`` (run inside its
    network namespace when it has one)."""
    prefix = ["ip", "netns", "exec", node["netns"]] if node.get("netns") else []  # it execs: the pid is the node's
    cmd = [*prefix, sys.executable, "-m", "warren.cli", "server", "--data-dir", node["data_dir"],
           "--node-name", node["name"], "--bind", node_host(node), "--amqp-port", str(node["amqp_port"]),
           "--http-port", str(node["http_port"]), "--cluster-port", str(node["cluster_port"]),
           "--prometheus-port", "-1"]
    if node.get("netns"):
        cmd += ["--loopback-users", "none"]  # its clients come from the bridge, not from loopback
    return cmd + (["--seeds", ",".join(seeds)] if seeds else [])


def restart_node(root: Path, state: dict[str, Any], name: str, timeout: float = 30.0) -> None:
    """Start a stopped node of the cluster again, from its own data (no seeds needed)."""
    node = next(n for n in state["nodes"] if n["name"] == name)
    log_path = Path(node["log"])
    offset = len(log_path.read_text(errors="replace")) if log_path.exists() else 0
    node.update(_spawn(node_command(node, []), log_path, {"WARREN_CLUSTER_SECRET": _secret(root, None)}))
    _save_state(root, state)
    _wait_ready(node, log_path, time.monotonic() + timeout, offset)


def start_cluster(root: Path, count: int, timeout: float = 60.0, netns: bool = False,
                  own_disks: bool = False) -> dict[str, Any]:
    """``warren cluster up --nodes COUNT --dir ROOT`` for other commands (raises ClusterError).

    With ``netns`` every node runs in its own network namespace (:class:`NetLab`, recorded
    as the state's ``network``), so that partitions between nodes can be made for real;
    with ``own_disks`` every node's data dir is a small tmpfs of its own, one that can be
    filled (:mod:`warren.cli.chaos.tmpfs`). Both need root and go with the processes.
    """
    return _up(root, count, None, False, None, timeout, lambda _message: None, netns, own_disks)


def stop_cluster(state: dict[str, Any], timeout: float = 10.0) -> None:
    _stop(_processes(state), timeout)
    _release_lab(state)


def _release_lab(state: dict[str, Any]) -> None:
    """Remove the namespaces and unmount the tmpfs data dirs of a stopped cluster."""
    if state.get("network"):
        NetLab.from_dict(state["network"]).destroy()
        state["network"] = None
    for node in state.get("nodes", []):
        if node.pop("tmpfs", False):
            tmpfs.unmount(Path(node["data_dir"]))


def _up(root: Path, count: int, base_port: int | None, lb: bool, given_secret: str | None, timeout: float,
        say: Any, netns: bool = False, own_disks: bool = False) -> dict[str, Any]:
    previous = _load_state(root) if root.exists() else None
    if previous is not None:
        running = [p for p in _processes(previous) if _alive(p)]
        if running:
            raise ClusterError(
                f"{root} already has a running cluster (pids {', '.join(str(p['pid']) for p in running)}): "
                f"stop it with `warren cluster down --dir {root}` first")
    haproxy = _haproxy_binary() if lb else None
    root.mkdir(parents=True, exist_ok=True)

    names = [f"warren-{i}" for i in range(1, count + 1)]
    kept = previous is not None and (root / names[0]).exists()
    if kept and previous is not None and not netns and any(n.get("netns") for n in previous["nodes"]):
        raise ClusterError(f"{root} holds the data of nodes that ran in network namespaces, now gone: "
                           f"`warren cluster down --purge --dir {root}` to start afresh")
    if (netns or own_disks) and (kept or lb):
        raise ClusterError("nodes in network namespaces or on their own tmpfs start from empty data and "
                           "without a load balancer")
    plan, lb_plan = _plan_ports(count, base_port, lb)
    if kept and previous is not None:
        # Members find each other at the addresses in their logs: restart on the recorded ports.
        old = previous["nodes"]
        if len(old) != count:
            raise ClusterError(f"{root} holds the data of a {len(old)}-node cluster: use --nodes {len(old)}, "
                               f"or `warren cluster down --purge --dir {root}` to start afresh")
        recorded = [{"amqp": n["amqp_port"], "http": n["http_port"], "cluster": n["cluster_port"]} for n in old]
        if base_port is not None and plan != recorded:
            raise ClusterError(f"{root} holds a cluster made with other ports; omit --base-port to reuse "
                               f"them, or `warren cluster down --purge --dir {root}` to start afresh")
        plan = recorded
        if base_port is None and previous.get("lb_ports"):
            lb_plan = previous["lb_ports"]
    wanted = [(p[kind], f"{kind.upper() if kind == 'amqp' else kind} of {name}")
              for name, p in zip(names, plan, strict=True) for kind in ("amqp", "http", "cluster")]
    if lb:
        wanted += [(lb_plan["amqp"], "AMQP of the HAProxy"), (lb_plan["http"], "HTTP of the HAProxy")]
    if netns:
        plan = [dict(NETNS_PORTS) for _ in names]  # every node has its own address
        try:
            network = NetLab.create(names)
        except NetLabError as exc:
            raise ClusterError(str(exc)) from None
    else:
        network = None
        _check_ports(wanted)

    secret = _secret(root, given_secret)
    state: dict[str, Any] = {"version": 1, "dir": str(root), "nodes": [], "lb": None, "lb_ports": lb_plan,
                             "network": network.as_dict() if network else None}
    deadline = time.monotonic() + timeout
    try:
        # Every node's record (and ports) is saved before the first starts: a failed `up`
        # leaves a state file that a later `up` on the same data can restart from.
        state["nodes"] = [{"name": name, "amqp_port": ports["amqp"], "http_port": ports["http"],
                           "cluster_port": ports["cluster"], "data_dir": str(root / name),
                           "log": str(root / f"{name}.log"), "pid": None}
                          for name, ports in zip(names, plan, strict=True)]
        for node in state["nodes"]:
            if network is not None:
                node.update(host=network.host(node["name"]), netns=network.namespace(node["name"]))
            if own_disks:
                try:
                    tmpfs.mount(Path(node["data_dir"]))
                except tmpfs.TmpfsError as exc:
                    raise ClusterError(str(exc)) from None
                node["tmpfs"] = True
        for i, node in enumerate(state["nodes"]):
            seeds = [f"{node_host(state['nodes'][0])}:{plan[0]['cluster']}"] if i > 0 else []
            node.update(_spawn(node_command(node, seeds), Path(node["log"]), {"WARREN_CLUSTER_SECRET": secret}))
            _save_state(root, state)
            say(f"started {node['name']} (pid {node['pid']}), log {node['log']}")
            if i == 0 and not kept:
                _wait_ready(node, Path(node["log"]), deadline)  # it bootstraps; the others join through it
        for node in state["nodes"]:
            _wait_ready(node, Path(node["log"]), deadline)
        _wait_formed(state["nodes"], deadline)
        say(f"all {count} members alive")
        if lb:
            assert haproxy is not None
            lb_state = {"amqp_port": lb_plan["amqp"], "http_port": lb_plan["http"],
                        "config": str(root / HAPROXY_CONFIG), "log": str(root / HAPROXY_LOG)}
            config_path = root / HAPROXY_CONFIG
            config_path.write_text(_haproxy_config(root, state["nodes"], lb_state))
            checked = subprocess.run([haproxy, "-c", "-f", str(config_path)], capture_output=True, text=True,
                                     timeout=30)
            if checked.returncode != 0:
                raise ClusterError(f"haproxy rejected {config_path}:\n{checked.stdout}{checked.stderr}")
            (root / HAPROXY_SOCKET).unlink(missing_ok=True)
            state["lb"] = {**lb_state, **_spawn([haproxy, "-db", "-f", str(config_path)], root / HAPROXY_LOG)}
            _save_state(root, state)
            say(f"started haproxy (pid {state['lb']['pid']}), config {config_path}")
            _wait_lb(root, state["lb"], count, deadline)
    except BaseException:
        _stop(_processes(state), timeout=5)
        _release_lab(state)
        for proc in _processes(state):
            proc["pid"] = None
        _save_state(root, state)
        raise
    return state


# ---- down ------------------------------------------------------------------------------

@cluster_app.command()
def down(
    directory: str = DIR_OPTION,
    purge: bool = typer.Option(False, "--purge", help="Also delete the data dirs, logs, secret and state file."),
    timeout: float = typer.Option(15.0, "--timeout", min=0.0, help="Seconds after SIGTERM before SIGKILL."),
) -> None:
    """Stop the cluster's processes (HAProxy included); data dirs stay unless --purge.

    SIGTERM, then SIGKILL after --timeout. Harmless when nothing runs.
    """
    root = Path(directory).resolve()
    try:
        state = _load_state(root) if root.exists() else None
    except ClusterError as exc:
        _fail(str(exc))
    if state is None:
        typer.echo(f"no cluster in {root}: nothing to stop")
    else:
        procs = _processes(state)
        running = [p for p in procs if _alive(p)]
        started = time.monotonic()
        killed = _stop(running, timeout)
        _release_lab(state)
        for proc in procs:
            proc["pid"] = None
        if not purge:
            _save_state(root, state)
        if running:
            note = f" ({len(killed)} needed SIGKILL: {', '.join(map(str, killed))})" if killed else ""
            typer.echo(f"stopped {len(running)} process{'es' if len(running) != 1 else ''} in "
                       f"{time.monotonic() - started:.1f}s{note}")
        else:
            typer.echo(f"the cluster in {root} is not running")
    if purge and root.exists():
        for path in root.iterdir():
            if path.name.startswith("warren-") and path.is_dir():
                shutil.rmtree(path)
            elif path.name.startswith("warren-") and path.suffix == ".log" or path.name in (
                    STATE_FILE, SECRET_FILE, HAPROXY_CONFIG, HAPROXY_SOCKET, HAPROXY_LOG):
                path.unlink()
        try:
            root.rmdir()
        except OSError:
            pass  # something else lives there: leave it
        typer.echo(f"purged {root}")


# ---- status ----------------------------------------------------------------------------

@cluster_app.command()
def status(
    directory: str = DIR_OPTION,
    as_json: bool = typer.Option(False, "--json", help="Print one JSON object."),
) -> None:
    """Each node's pid and view of the members (status, leader), and the HAProxy's.

    Exit code 0 when every process runs, every node sees every member alive and HAProxy sees every server UP; 3 when not; 1 when DIR has no cluster.
    """
    root = Path(directory).resolve()
    try:
        state = _load_state(root) if root.exists() else None
    except ClusterError as exc:
        _fail(str(exc))
    if state is None:
        _fail(f"no cluster in {root} (start one with `warren cluster up --dir {root}`)")
    report: dict[str, Any] = {"dir": str(root), "nodes": [], "lb": None}
    healthy = True
    for n in state["nodes"]:
        row: dict[str, Any] = {"name": n["name"], "pid": n["pid"], "running": _alive(n),
                               "amqp_url": node_amqp_url(n), "http_url": node_http_url(n)}
        if row["running"]:
            try:
                info = _cluster_info(n)
                row.update(member_id=info.get("local_id"), leader=metadata_leader(info),
                           members={m["name"]: m["status"] for m in info["members"]})
                healthy &= set(row["members"].values()) == {"alive"} and len(row["members"]) == len(state["nodes"])
            except (OSError, ValueError, KeyError) as exc:
                row["error"] = f"no answer from {row['http_url']}: {exc}"
                healthy = False
        else:
            healthy = False
        report["nodes"].append(row)
    if state.get("lb"):
        b = state["lb"]
        lb_row: dict[str, Any] = {"pid": b["pid"], "running": _alive(b), "amqp_url": _amqp_url(b["amqp_port"]),
                                  "http_url": _http_url(b["http_port"])}
        if lb_row["running"]:
            try:
                lb_row["servers"] = {k: v["status"] for k, v in _haproxy_servers(root).items()}
            except OSError as exc:
                lb_row["error"] = f"no answer on {root / HAPROXY_SOCKET}: {exc}"
        healthy &= lb_row["running"] and set(lb_row.get("servers", {}).values()) == {"UP"}
        report["lb"] = lb_row
    report["healthy"] = healthy
    if as_json:
        typer.echo(json.dumps(report))
    else:
        _print_status(report)
    if not healthy:
        raise typer.Exit(3)


def _print_status(report: dict[str, Any]) -> None:
    typer.echo(f"Cluster in {report['dir']}: {'healthy' if report['healthy'] else 'NOT healthy'}")
    for n in report["nodes"]:
        if not n["running"]:
            typer.echo(f"  {n['name']:<10} " + (f"not running (pid {n['pid']} is gone)" if n["pid"] else "stopped"))
            continue
        if "error" in n:
            typer.echo(f"  {n['name']:<10} pid {n['pid']}  {n['error']}")
            continue
        members = ", ".join(f"{k} {v}" for k, v in n["members"].items())
        typer.echo(f"  {n['name']:<10} pid {n['pid']}  leader {n['leader']}  sees: {members}")
    lb = report["lb"]
    if lb is not None:
        if not lb["running"]:
            typer.echo(f"  {'haproxy':<10} " + (f"not running (pid {lb['pid']} is gone)" if lb["pid"] else "stopped"))
        elif "error" in lb:
            typer.echo(f"  {'haproxy':<10} pid {lb['pid']}  {lb['error']}")
        else:
            servers = ", ".join(f"{k} {v}" for k, v in sorted(lb["servers"].items()))
            typer.echo(f"  {'haproxy':<10} pid {lb['pid']}  {lb['amqp_url']}  {lb['http_url']}  {servers}")
