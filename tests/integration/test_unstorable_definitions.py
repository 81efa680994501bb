"""A definition the store cannot encode is refused before anything changes (a real node process).

Before, `PUT /api/queues/%2F/sq` with a lone surrogate in an argument answered 500 with the queue
already in memory, and every later durable change in that vhost failed to persist while still
being applied, all of it gone after a restart.
"""

from __future__ import annotations

import base64
import json
import urllib.error
import urllib.request
from pathlib import Path
from typing import Any

import pytest

from tests.integration.conftest import ServerProcess, start_server

AUTH = "Basic " + base64.b64encode(b"guest:guest").decode()
SURROGATE = "\ud800"  # valid in JSON as an escape, not a Unicode scalar value


def _call(server: ServerProcess, method: str, path: str, body: Any = None) -> tuple[int, Any]:
    data = json.dumps(body).encode() if body is not None else None  # ensure_ascii keeps "\ud800"
    request = urllib.request.Request(f"http://127.0.0.1:{server.http_port}{path}", data=data, method=method,
                                     headers={"Authorization": AUTH, "Content-Type": "application/json"})
    try:
        with urllib.request.urlopen(request, timeout=10) as response:  # noqa: S310 - loopback test node
            raw = response.read()
            return response.status, json.loads(raw) if raw else None
    except urllib.error.HTTPError as exc:
        raw = exc.read()
        return exc.code, json.loads(raw) if raw else None


UNSTORABLE = [
    ("PUT", "/api/queues/%2F/sq", {"durable": True, "arguments": {"x-note": SURROGATE}}),
    ("PUT", "/api/exchanges/%2F/sx", {"type": "direct", "durable": True, "arguments": {"a": SURROGATE}}),
    ("POST", "/api/bindings/%2F/e/amq.direct/q/base", {"routing_key": "k" + SURROGATE}),
    ("PUT", "/api/policies/%2F/p", {"pattern": ".*", "definition": {"x-note": SURROGATE}}),
    ("PUT", "/api/users/guest", {"password": "guest", "tags": "administrator," + SURROGATE}),
]


@pytest.fixture
def server(tmp_path: Path) -> Any:
    running = start_server(tmp_path / "data")
    yield running
    running.kill()


def test_unstorable_definitions_answer_400_and_later_changes_survive_a_restart(server: ServerProcess,
                                                                                 tmp_path: Path) -> None:
    assert _call(server, "PUT", "/api/queues/%2F/base", {"durable": True})[0] == 201
    before = {path: _call(server, "GET", path)[1] for path in
              ("/api/queues/%2F", "/api/exchanges/%2F", "/api/bindings/%2F", "/api/policies/%2F", "/api/users")}
    for method, path, body in UNSTORABLE:
        status, answer = _call(server, method, path, body)
        assert status == 400, (path, status, answer)
        assert answer["error"] == "bad_request"
    after = {path: _call(server, "GET", path)[1] for path in before}
    assert [q["name"] for q in after["/api/queues/%2F"]] == [q["name"] for q in before["/api/queues/%2F"]]
    for path in ("/api/exchanges/%2F", "/api/bindings/%2F", "/api/policies/%2F", "/api/users"):
        assert after[path] == before[path], path
    assert _call(server, "GET", "/api/queues/%2F/sq")[0] == 404

    # the vhost keeps persisting: a later durable declare survives kill -9
    assert _call(server, "PUT", "/api/queues/%2F/later", {"durable": True})[0] == 201
    server.kill()
    restarted = start_server(tmp_path / "data")
    try:
        names = {q["name"] for q in _call(restarted, "GET", "/api/queues/%2F")[1]}
        assert names == {"base", "later"}
    finally:
        restarted.kill()


def test_names_and_keys_longer_than_an_amqp_short_string_answer_400(server: ServerProcess) -> None:
    too_long = "%C3%A9" * 128  # 256 bytes of UTF-8 in the path
    assert _call(server, "PUT", f"/api/queues/%2F/{too_long}", {"durable": True})[0] == 400
    assert _call(server, "PUT", f"/api/exchanges/%2F/{too_long}", {"type": "fanout"})[0] == 400
    status, _ = _call(server, "PUT", "/api/queues/%2F/dl", {"arguments": {
        "x-dead-letter-exchange": "amq.fanout", "x-dead-letter-routing-key": "k" * 300}})
    assert status == 400
    assert _call(server, "PUT", "/api/queues/%2F/target", {})[0] == 201
    status, answer = _call(server, "POST", "/api/exchanges/%2F/amq.default/publish", {
        "routing_key": "t" * 256, "payload": "x", "payload_encoding": "string", "properties": {}})
    assert status == 400, answer
    assert [q["name"] for q in _call(server, "GET", "/api/queues/%2F")[1]] == ["target"]
