"""``warren bench``: throughput and latency of an AMQP broker (and ``warren bench raft``)."""

from __future__ import annotations

import json
from typing import Any

import typer

from warren.cli.main import app

bench_app = typer.Typer(help="Benchmarks that print numbers.", invoke_without_command=True)
app.add_typer(bench_app, name="bench")


@bench_app.callback()
def bench(
    ctx: typer.Context,
    url: str = typer.Option("amqp://guest:guest@127.0.0.1:5672/%2F", "--url", envvar="WARREN_BENCH_URL",
                            help="Any AMQP 0-9-1 broker (amqp:// or amqps://)."),
    publishers: int = typer.Option(1, "--publishers", "-p", min=1, help="Publishing connections (one process each)."),
    consumers: int = typer.Option(1, "--consumers", "-c", min=0, help="Consuming connections (one process each)."),
    size: int = typer.Option(1024, "--size", "-s", min=16, help="Body bytes (the first 16 carry the timestamp)."),
    confirm_window: int = typer.Option(100, "--confirm-window", min=0,
                                       help="Unconfirmed publishes per publisher; 0 publishes without confirms."),
    prefetch: int = typer.Option(100, "--prefetch", min=0, help="basic.qos prefetch per consumer (0 = unlimited)."),
    queue_type: str = typer.Option("classic", "--queue-type", help="classic or quorum."),
    persistent: bool = typer.Option(True, "--persistent/--transient", help="delivery_mode 2 or 1."),
    duration: float = typer.Option(10.0, "--duration", "-d", min=0.1, help="Seconds of publishing."),
    messages: int | None = typer.Option(None, "--messages", "-n", min=1,
                                        help="Publish this many messages in total instead of --duration."),
    queue: str | None = typer.Option(None, "--queue", help="Use (and keep) this durable queue; default: a new one."),
    drain_timeout: float = typer.Option(30.0, "--drain-timeout", help="Seconds without a delivery before giving up."),
    as_json: bool = typer.Option(False, "--json", help="Print the result as one JSON object."),
) -> None:
    """Publish and consume through any AMQP broker; prints throughput and latency.

    Publishers use publisher confirms (--confirm-window unconfirmed at most), consumers ack
    each message. Latency is publish to delivery, measured with a timestamp in the body.
    """
    if ctx.invoked_subcommand is not None:
        return
    from warren.cli.amqp_bench import BenchConfig, BenchError, run

    if queue_type not in ("classic", "quorum"):
        _fail("--queue-type must be classic or quorum")
    config = BenchConfig(
        url=url, publishers=publishers, consumers=consumers, size=size, confirm_window=confirm_window,
        prefetch=prefetch, queue_type=queue_type, persistent=persistent,
        duration=None if messages is not None else duration, messages=messages, queue=queue,
        drain_timeout=drain_timeout,
    )
    try:
        with _progress(config, enabled=not as_json) as progress:
            result = run(config, progress)
    except BenchError as exc:
        _fail(str(exc))
    except KeyboardInterrupt:
        _fail("interrupted")
    data = result.as_dict()
    if as_json:
        typer.echo(json.dumps(data))
    else:
        _print_table(data)
    if result.errors:
        for error in result.errors:
            typer.echo(f"warren bench: {error}", err=True)
        raise typer.Exit(1)


def _fail(message: str) -> None:
    typer.echo(f"warren bench: {message}", err=True)
    raise typer.Exit(1)


class _RichProgress:
    def __init__(self, config: Any, enabled: bool) -> None:
        from rich.console import Console
        from rich.progress import BarColumn, Progress, TextColumn, TimeElapsedColumn

        self._console = Console(stderr=True)
        self._enabled = enabled and self._console.is_terminal
        self._total = config.messages
        self._progress = Progress(
            TextColumn("[bold]{task.fields[phase]:<10}"), BarColumn(),
            TextColumn("published {task.fields[published]:>10,}  delivered {task.fields[delivered]:>10,}"),
            TimeElapsedColumn(), console=self._console, disable=not self._enabled, transient=True,
        )
        self._duration = config.duration
        self._task = self._progress.add_task("bench", total=self._total or config.duration, phase="connecting",
                                             published=0, delivered=0)
        import time

        self._clock = time.monotonic
        self._started: float | None = None

    def __enter__(self) -> _RichProgress:
        self._progress.__enter__()
        return self

    def __exit__(self, *exc: object) -> None:
        self._progress.__exit__(None, None, None)

    def update(self, published: int, delivered: int, phase: str) -> None:
        if not self._enabled:
            return
        if self._started is None:
            self._started = self._clock()
        if self._total:
            completed = float(delivered if phase != "publishing" else published)
        else:
            completed = min(self._clock() - self._started, self._duration or 0.0)
        self._progress.update(self._task, completed=completed, phase=phase, published=published, delivered=delivered)


def _progress(config: Any, enabled: bool) -> _RichProgress:
    return _RichProgress(config, enabled)


def _print_table(data: dict[str, Any]) -> None:
    from rich.console import Console
    from rich.table import Table

    table = Table(title=f"warren bench: {data['broker']}", show_header=True)
    table.add_column("figure")
    table.add_column("value", justify="right")
    mode = "persistent" if data["persistent"] else "transient"
    confirms = f"window {data['confirm_window']}" if data["confirm_window"] else "off"
    table.add_row("setup", f"{data['queue_type']} queue, {data['publishers']} pub / {data['consumers']} con, "
                  f"{data['size']} B {mode}, confirms {confirms}, prefetch {data['prefetch']}")
    table.add_row("published / confirmed / nacked", f"{data['published']:,} / {data['confirmed']:,} / {data['nacked']:,}")
    table.add_row("delivered (redelivered)", f"{data['delivered']:,} ({data['redelivered']:,})")
    label = "confirmed publishes/s" if data["confirm_window"] else "publishes/s"
    table.add_row(label, f"{data['publish_rate']:,.0f}")
    table.add_row("deliveries/s", f"{data['deliver_rate']:,.0f}")
    latency = data["latency_ms"]
    if latency:
        table.add_row("latency p50 / p95 / p99 (ms)", f"{latency['p50']:.2f} / {latency['p95']:.2f} / {latency['p99']:.2f}")
        table.add_row("latency min / max (ms)", f"{latency['min']:.2f} / {latency['max']:.2f}")
    Console().print(table)
