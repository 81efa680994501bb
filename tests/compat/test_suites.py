"""The fast client suites (py-amqp's and kombu's own integration tests) against a Warren node.

The sdists and their virtualenv come from ``scripts/install`` (``scripts/compat --prepare``);
after that this runs offline. ``scripts/compat`` runs every suite, including aiormq's,
aio-pika's and the Go client's, and prints the table that docs/compat.md records.
"""

from __future__ import annotations

from pathlib import Path

import pytest

from tests.compat.harness import SUITES, prepared, run_suite
from warren.embed import ThreadedNode

# What the same suites pass against RabbitMQ 3.10.8 (docs/compat.md); Warren must match.
EXPECTED_PASSED = {"py-amqp": 48, "kombu": 51}


@pytest.mark.parametrize("name", [s.name for s in SUITES if s.fast])
def test_client_suite_passes_against_warren(name: str, warren_node: ThreadedNode, tmp_path: Path) -> None:
    assert prepared(), "the client suites are not installed: run scripts/install (or scripts/compat --prepare)"
    suite = next(s for s in SUITES if s.name == name)
    result = run_suite(suite, "warren", warren_node.amqp_port, tmp_path)
    log = Path(result.log).read_text(errors="replace")[-4000:]
    assert result.failures == [], log
    assert (result.passed, result.failed, result.errors) == (EXPECTED_PASSED[name], 0, 0), log
