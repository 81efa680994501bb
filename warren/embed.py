"""Run a Warren node inside a program or a test, no Docker and no separate process.

Async code::

    async with EmbeddedNode() as node:
        connection = await aio_pika.connect(node.amqp_url)

Synchronous code (the node runs on its own event loop in a background thread)::

    with run_node() as node:
        pika.BlockingConnection(pika.URLParameters(node.amqp_url))

With no ``data_dir`` the node stores into a temporary directory removed on exit. Ports
default to 0: the operating system picks free ones, read back from the node.
"""

from __future__ import annotations

import asyncio
import tempfile
import threading
from collections.abc import Iterator
from contextlib import contextmanager
from typing import Any

from warren.io.runtime import NodeConfig, NodeRuntime
from warren.limits import Limits


def _config(data_dir: str | None, amqp_port: int, http_port: int | None, limits: Limits | None,
            **settings: Any) -> tuple[NodeConfig, tempfile.TemporaryDirectory[str] | None]:
    tmp = None
    if data_dir is None:
        tmp = tempfile.TemporaryDirectory(prefix="warren-")
        data_dir = tmp.name
    config = NodeConfig(
        data_dir=data_dir,
        amqp_port=amqp_port,
        http_port=http_port if http_port is not None else 0,
        http_enabled=http_port is not None,
        prometheus_port=None,
        limits=limits or Limits(),
        **settings,
    )
    return config, tmp


class EmbeddedNode:
    """An async context manager running a node on the current event loop."""

    def __init__(self, data_dir: str | None = None, amqp_port: int = 0, http_port: int | None = None,
                 limits: Limits | None = None, **settings: Any) -> None:
        self._config, self._tmp = _config(data_dir, amqp_port, http_port, limits, **settings)
        self.runtime = NodeRuntime(self._config)

    @property
    def amqp_url(self) -> str:
        return self.runtime.amqp_url

    @property
    def amqp_port(self) -> int:
        assert self.runtime.amqp_port is not None
        return self.runtime.amqp_port

    @property
    def http_url(self) -> str | None:
        if self.runtime.http_port is None:
            return None
        return f"http://127.0.0.1:{self.runtime.http_port}"

    @property
    def data_dir(self) -> str:
        return self._config.data_dir

    async def __aenter__(self) -> EmbeddedNode:
        await self.runtime.start()
        return self

    async def __aexit__(self, *exc_info: object) -> None:
        await self.runtime.stop()
        if self._tmp is not None:
            self._tmp.cleanup()


class ThreadedNode:
    """A node on its own event loop in a daemon thread, for synchronous code."""

    def __init__(self, **kwargs: Any) -> None:
        self.embedded = EmbeddedNode(**kwargs)
        self._loop = asyncio.new_event_loop()
        self._thread = threading.Thread(target=self._loop.run_forever, name="warren-node", daemon=True)

    @property
    def amqp_url(self) -> str:
        return self.embedded.amqp_url

    @property
    def amqp_port(self) -> int:
        return self.embedded.amqp_port

    @property
    def http_url(self) -> str | None:
        return self.embedded.http_url

    @property
    def runtime(self) -> NodeRuntime:
        return self.embedded.runtime

    def call(self, fn: Any, *args: Any) -> Any:
        """Run ``fn(*args)`` on the node's loop thread and return its result."""
        async def run() -> Any:
            return fn(*args)
        return asyncio.run_coroutine_threadsafe(run(), self._loop).result(timeout=30)

    def start(self) -> ThreadedNode:
        self._thread.start()
        asyncio.run_coroutine_threadsafe(self.embedded.__aenter__(), self._loop).result(timeout=30)
        return self

    def stop(self) -> None:
        asyncio.run_coroutine_threadsafe(self.embedded.__aexit__(None, None, None), self._loop).result(timeout=30)
        self._loop.call_soon_threadsafe(self._loop.stop)
        self._thread.join(timeout=10)
        self._loop.close()


@contextmanager
def run_node(**kwargs: Any) -> Iterator[ThreadedNode]:
    """Start a node in a background thread for the ``with`` block; yields it (``.amqp_url``)."""
    node = ThreadedNode(**kwargs).start()
    try:
        yield node
    finally:
        node.stop()
