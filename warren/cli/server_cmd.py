"""``warren server``: run one node."""

from __future__ import annotations

import typer

from warren.cli.main import app


@app.command()
def server() -> None:
    """Run one Warren node."""
    typer.echo("not yet")
    raise typer.Exit(1)
