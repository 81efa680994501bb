"""The ``warren`` command line. Sub-commands live in their own modules."""

from __future__ import annotations

import typer

app = typer.Typer(
    name="warren",
    help="Warren: a clustered AMQP 0-9-1 message broker.",
    no_args_is_help=True,
    add_completion=False,
)


def _register() -> None:
    # Each module adds its commands to `app`; imported here so `--help` lists them all.
    from warren.cli import bench_cmd, chaos_cmd, cluster_cmd, ctl_cmd, raft_cmd, server_cmd  # noqa: F401


def main() -> None:
    _register()
    app()


if __name__ == "__main__":
    main()
