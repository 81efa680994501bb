"""pytest plugin: a real Warren node for your tests, no Docker.

Installed with warrenmq (entry point ``pytest11``). Fixtures:

- ``warren_broker``: one node per test session; ``warren_broker.amqp_url`` is the URL.
- ``warren_node``: a fresh node per test, for tests that need an empty broker.
"""

from __future__ import annotations

from collections.abc import Iterator

import pytest

from warren.embed import ThreadedNode, run_node


@pytest.fixture(scope="session")
def warren_broker() -> Iterator[ThreadedNode]:
    with run_node() as node:
        yield node


@pytest.fixture
def warren_node() -> Iterator[ThreadedNode]:
    with run_node() as node:
        yield node
