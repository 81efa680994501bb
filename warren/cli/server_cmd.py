"""``warren server``: run one node in the foreground until SIGTERM or SIGINT."""

from __future__ import annotations

import asyncio
import logging
import signal
import sys
import tomllib
from pathlib import Path
from typing import Any

import typer

from warren.cli.main import app
from warren.errors import ClusterJoinError, ConfigError, StoreError
from warren.io.runtime import NodeConfig, NodeRuntime
from warren.limits import Limits

CONFIG_KEYS = {
    "data_dir", "amqp_port", "http_port", "prometheus_port", "bind", "node_name", "tls_port",
    "tls_cert", "tls_key", "tls_ca", "tls_verify_peer", "default_user", "default_pass",
    "default_vhost", "health_checks_require_auth", "loopback_users", "cluster_secret", "cluster_port", "seeds",
    "cluster_tls_cert", "cluster_tls_key", "cluster_tls_ca",
}


def load_config_file(path: str) -> tuple[dict[str, Any], dict[str, Any]]:
    """Read a TOML file: top-level node settings plus an optional [limits] table."""
    try:
        data = tomllib.loads(Path(path).read_text())
    except OSError as exc:
        raise ConfigError(f"cannot read --config {path}: {exc}") from exc
    except tomllib.TOMLDecodeError as exc:
        raise ConfigError(f"--config {path} is not valid TOML: {exc}") from exc
    limits = data.pop("limits", {})
    unknown = set(data) - CONFIG_KEYS
    if unknown:
        raise ConfigError(f"unknown setting(s) in {path}: {', '.join(sorted(unknown))}; known: {', '.join(sorted(CONFIG_KEYS))}")
    return data, limits


@app.command()
def server(
    ctx: typer.Context,
    data_dir: str = typer.Option("./warren-data", envvar="WARREN_DATA_DIR", help="Where the store lives."),
    amqp_port: int = typer.Option(5672, envvar="WARREN_AMQP_PORT", help="AMQP port (0 picks a free one)."),
    http_port: int = typer.Option(15672, envvar="WARREN_HTTP_PORT", help="Management HTTP port (0 picks one)."),
    prometheus_port: int = typer.Option(15692, envvar="WARREN_PROMETHEUS_PORT", help="Prometheus port; -1 disables."),
    bind: str = typer.Option("127.0.0.1", envvar="WARREN_BIND", help="Address to listen on."),
    node_name: str = typer.Option("warren@localhost", envvar="WARREN_NODE_NAME"),
    config: str | None = typer.Option(None, envvar="WARREN_CONFIG", help="TOML file with these settings and a limits table (see README)."),
    tls_port: int | None = typer.Option(None, envvar="WARREN_TLS_PORT", help="AMQPS port (e.g. 5671)."),
    tls_cert: str | None = typer.Option(None, envvar="WARREN_TLS_CERT", help="PEM certificate chain."),
    tls_key: str | None = typer.Option(None, envvar="WARREN_TLS_KEY", help="PEM private key."),
    tls_ca: str | None = typer.Option(None, envvar="WARREN_TLS_CA", help="PEM CA bundle for client certificates."),
    tls_verify_peer: bool = typer.Option(False, envvar="WARREN_TLS_VERIFY_PEER", help="Require client certificates."),
    max_message_size: int | None = typer.Option(None, envvar="WARREN_MAX_MESSAGE_SIZE", help="Bytes (default 128 MiB)."),
    memory_high_watermark: int | None = typer.Option(None, envvar="WARREN_MEMORY_HIGH_WATERMARK", help="Bytes of RSS that block publishers (default 40% of RAM)."),
    disk_free_limit: int | None = typer.Option(None, envvar="WARREN_DISK_FREE_LIMIT", help="Free bytes below which publishers block (default 50 MiB)."),
    cluster_secret: str | None = typer.Option(
        None, envvar="WARREN_CLUSTER_SECRET",
        help="The cluster's shared secret (the Erlang cookie's role; proven, never sent). Cluster "
             "mode is on when one is set; without it the node is standalone, with no cluster port."),
    cluster_port: int = typer.Option(25672, envvar="WARREN_CLUSTER_PORT", help="Cluster (peer) port (0 picks a free one)."),
    seeds: str = typer.Option("", envvar="WARREN_SEEDS", help="host:port,... of members to join through on first start "
                              "(none: bootstrap a new cluster; a member restarts from its own data)."),
    cluster_tls_cert: str | None = typer.Option(None, envvar="WARREN_CLUSTER_TLS_CERT", help="PEM certificate for the cluster port."),
    cluster_tls_key: str | None = typer.Option(None, envvar="WARREN_CLUSTER_TLS_KEY", help="PEM key for the cluster port."),
    cluster_tls_ca: str | None = typer.Option(None, envvar="WARREN_CLUSTER_TLS_CA", help="PEM CA that signs every member's certificate."),
    loopback_users: str = typer.Option(
        "guest", envvar="WARREN_LOOPBACK_USERS",
        help="Users who may log in only from localhost (RabbitMQ's loopback_users), comma-separated; "
             "'none' lets every user log in from anywhere."),
    log_level: str = typer.Option("info", envvar="WARREN_LOG_LEVEL"),
) -> None:
    """Run one Warren node (vhost '/', user guest/guest from localhost only)."""
    logging.basicConfig(level=log_level.upper(), format="%(asctime)s %(levelname)s %(name)s: %(message)s")
    settings: dict[str, Any] = {}
    limit_overrides: dict[str, Any] = {}
    try:
        if config:
            settings, limit_overrides = load_config_file(config)
        cli = {
            "data_dir": data_dir, "amqp_port": amqp_port, "http_port": http_port, "bind": bind,
            "node_name": node_name, "tls_port": tls_port, "tls_cert": tls_cert, "tls_key": tls_key,
            "tls_ca": tls_ca, "tls_verify_peer": tls_verify_peer,
            "prometheus_port": None if prometheus_port < 0 else prometheus_port,
            "cluster_secret": cluster_secret, "cluster_port": cluster_port, "seeds": seeds,
            "cluster_tls_cert": cluster_tls_cert, "cluster_tls_key": cluster_tls_key,
            "cluster_tls_ca": cluster_tls_ca, "loopback_users": loopback_users,
        }
        # Command-line and environment values win over the file only where they were given.
        for key, value in cli.items():
            source = ctx.get_parameter_source(key)
            if key not in settings or (source is not None and source.name != "DEFAULT"):
                settings[key] = value
        if max_message_size is not None:
            limit_overrides["max_message_size"] = max_message_size
        if memory_high_watermark is not None:
            limit_overrides["memory_high_watermark_bytes"] = memory_high_watermark
        if disk_free_limit is not None:
            limit_overrides["disk_free_limit_bytes"] = disk_free_limit
        try:
            limits = Limits().with_overrides(**limit_overrides)
        except ValueError as exc:
            raise ConfigError(str(exc)) from exc
        node_config = NodeConfig(limits=limits, **settings)
        _install_fast_loop()
        asyncio.run(_serve(node_config))
    except (ConfigError, StoreError, ClusterJoinError) as exc:
        typer.echo(f"warren server: {exc}", err=True)
        raise typer.Exit(2) from None
    except OSError as exc:
        typer.echo(f"warren server: cannot listen: {exc}; choose another port (--amqp-port/--http-port/"
                   "--cluster-port, 0 picks a free one)", err=True)
        raise typer.Exit(2) from None


def _install_fast_loop() -> None:
    try:
        import uvloop
    except ImportError:  # optional extra: pip install 'warrenmq[fast]'
        return
    asyncio.set_event_loop_policy(uvloop.EventLoopPolicy())


async def _serve(config: NodeConfig) -> None:
    runtime = NodeRuntime(config)
    await runtime.start()
    print(runtime.startup_line(), flush=True)
    stop = asyncio.Event()
    loop = asyncio.get_running_loop()
    for signum in (signal.SIGTERM, signal.SIGINT):
        loop.add_signal_handler(signum, stop.set)
    await stop.wait()
    print("Warren node shutting down", file=sys.stderr, flush=True)
    await runtime.stop()
