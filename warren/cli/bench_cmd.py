"""``warren bench``: throughput and latency of an AMQP broker (and ``warren bench raft``)."""

from __future__ import annotations

import typer

from warren.cli.main import app

bench_app = typer.Typer(help="Benchmarks that print numbers.", invoke_without_command=True)
app.add_typer(bench_app, name="bench")


@bench_app.callback()
def bench(ctx: typer.Context) -> None:
    """Publish and consume through any AMQP broker; prints throughput and latency."""
    if ctx.invoked_subcommand is not None:
        return
    typer.echo("warren bench: the AMQP benchmark is not built yet", err=True)
    raise typer.Exit(2)
