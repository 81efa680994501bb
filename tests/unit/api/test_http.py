"""Routing on raw paths (RabbitMQ's %2F vhost), credentials parsing and definitions helpers."""

from __future__ import annotations

import base64

import pytest

from warren.api.definitions import unimportable_queue_names, validate_document
from warren.api.http import Router, basic_credentials, split_raw_path
from warren.errors import AMQPError


async def _handler(*args: object, **kwargs: object) -> None:  # pragma: no cover - never awaited here
    return None


def test_default_vhost_is_one_path_segment() -> None:
    assert split_raw_path("/api/queues/%2F/my%2Fqueue?columns=name") == ["api", "queues", "/", "my/queue"]
    assert split_raw_path("/api/queues/") == ["api", "queues"]
    assert split_raw_path("/") == []


def test_router_matches_segments_and_binds_parameters() -> None:
    router = Router()
    router.add("GET PUT", "/api/queues/{vhost}/{name}", _handler)
    router.add("DELETE", "/api/queues/{vhost}/{name}/contents", _handler)
    [(route, params)] = router.match(split_raw_path("/api/queues/%2F/orders"))
    assert params == {"vhost": "/", "name": "orders"} and route.methods == {"GET", "PUT"}
    [(route, params)] = router.match(split_raw_path("/api/queues/v/q/contents"))
    assert route.methods == {"DELETE"}
    assert router.match(split_raw_path("/api/queues/v")) == []


def test_basic_credentials() -> None:
    token = base64.b64encode(b"guest:pa:ss").decode()
    assert basic_credentials(f"Basic {token}") == ("guest", "pa:ss")
    assert basic_credentials("Basic !!!") is None
    assert basic_credentials("Bearer abc") is None
    assert basic_credentials(None) is None
    assert basic_credentials("Basic " + base64.b64encode(b"no-colon").decode()) is None


def test_definitions_document_checks_and_quorum_queues() -> None:
    with pytest.raises(AMQPError):
        validate_document(["not", "an", "object"])
    with pytest.raises(AMQPError):
        validate_document({"queues": {"name": "q"}})
    document = {"queues": [
        {"vhost": "/", "name": "qq", "arguments": {"x-queue-type": "quorum"}},
        {"vhost": "/", "name": "s", "arguments": {"x-queue-type": "stream"}},
        {"vhost": "/", "name": "c", "arguments": {"x-queue-type": "classic"}},
        {"vhost": "/", "name": "plain"},
    ]}
    assert validate_document(document) is document
    assert unimportable_queue_names(document, clustered=False) == [{"vhost": "/", "name": "qq"},
                                                                   {"vhost": "/", "name": "s"}]
    assert unimportable_queue_names(document, clustered=True) == [{"vhost": "/", "name": "s"}]
