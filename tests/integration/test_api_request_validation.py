"""Request bodies and paths the API must refuse with a 4xx before anything changes: bytes
that are not UTF-8, JSON strings that are not Unicode (a lone surrogate such as "\\ud800"
is valid JSON), a body over the size limit, and raw path bytes that are not UTF-8."""

from __future__ import annotations

import json
import socket
from collections.abc import Iterator
from pathlib import Path
from typing import Any
from urllib.parse import quote

import pytest
import requests

from tests.integration.conftest import ServerProcess, start_server
from warren.embed import ThreadedNode, run_node
from warren.limits import DEFAULT_LIMITS, Limits

LONE = "\\ud800"  # as it appears in the JSON text: a high surrogate with no low one


@pytest.fixture(scope="module")
def node() -> Iterator[ThreadedNode]:
    with run_node(http_port=0, limits=Limits(api_requests_per_second=10_000.0, api_burst=10_000)) as running:
        yield running


@pytest.fixture(scope="module")
def http(node: ThreadedNode) -> requests.Session:
    session = requests.Session()
    session.auth = ("guest", "guest")
    url = str(node.http_url)
    for path, body in (("/api/queues/%2F/val.q", {}), ("/api/exchanges/%2F/val.x", {"type": "topic"}),
                       ("/api/users/val-user", {"password": "pw", "tags": ""})):
        assert session.put(url + path, json=body, timeout=5).status_code in (201, 204)
    return session


def everything(node: ThreadedNode, http: requests.Session) -> dict[str, Any]:
    """What a refused request must leave as it was: the definitions and the queue depths."""
    url = str(node.http_url)
    document = http.get(f"{url}/api/definitions", timeout=5).json()
    depths = sorted((q["vhost"], q["name"], q["messages"]) for q in http.get(f"{url}/api/queues", timeout=5).json())
    return {**document, "depths": depths}


# (method, path, JSON text with a lone surrogate in one place)
SURROGATE_BODIES = [
    ("PUT", "/api/queues/%2F/val.new", '{"arguments": {"x-note": "' + LONE + '"}}'),
    ("PUT", "/api/queues/%2F/val.new", '{"arguments": {"x-' + LONE + '": 1}}'),  # in a key
    ("PUT", "/api/queues/%2F/val.new", '{"durable": true, "arguments": {"x-list": [["ok", "' + LONE + '"]]}}'),
    ("PUT", "/api/exchanges/%2F/val.new", '{"type": "direct", "arguments": {"alternate-exchange": "' + LONE + '"}}'),
    ("POST", "/api/bindings/%2F/e/val.x/q/val.q", '{"routing_key": "a.' + LONE + '"}'),
    ("POST", "/api/bindings/%2F/e/val.x/q/val.q", '{"routing_key": "a", "arguments": {"h": "' + LONE + '"}}'),
    ("PUT", "/api/policies/%2F/val.p", '{"pattern": "^val", "definition": {"alternate-exchange": "' + LONE + '"}}'),
    ("PUT", "/api/policies/%2F/val.p", '{"pattern": "^' + LONE + '", "definition": {"max-length": 1}}'),
    ("PUT", "/api/users/val-user", '{"password": "pw", "tags": "management,' + LONE + '"}'),
    ("PUT", "/api/users/val-new", '{"password": "' + LONE + '", "tags": ""}'),
    ("PUT", "/api/permissions/%2F/val-user", '{"configure": "' + LONE + '", "write": ".*", "read": ".*"}'),
    ("POST", "/api/exchanges/%2F/amq.default/publish",
     '{"routing_key": "val.q", "payload": "' + LONE + '", "payload_encoding": "string", "properties": {}}'),
    ("POST", "/api/exchanges/%2F/amq.default/publish",
     '{"routing_key": "val.q", "payload": "x", "payload_encoding": "string",'
     ' "properties": {"headers": {"h": "' + LONE + '"}}}'),
    ("POST", "/api/definitions", '{"queues": [{"name": "val.' + LONE + '", "vhost": "/", "durable": true,'
                                 ' "auto_delete": false, "arguments": {}}]}'),
    ("POST", "/api/definitions/%2F", '{"exchanges": [{"name": "val.' + LONE + '", "type": "direct"}]}'),
]


@pytest.mark.parametrize(("method", "path", "text"), SURROGATE_BODIES,
                         ids=[f"{m} {p} #{i}" for i, (m, p, _t) in enumerate(SURROGATE_BODIES)])
def test_a_lone_surrogate_anywhere_in_a_body_is_400_and_changes_nothing(
        node: ThreadedNode, http: requests.Session, method: str, path: str, text: str) -> None:
    assert json.loads(text)  # valid JSON: the parser alone lets it through
    before = everything(node, http)
    answer = http.request(method, f"{node.http_url}{path}", data=text.encode("ascii"),
                          headers={"Content-Type": "application/json"}, timeout=5)
    assert answer.status_code == 400, answer.text
    assert answer.json()["error"] == "bad_request" and "surrogate" in answer.json()["reason"], answer.text
    assert everything(node, http) == before


def test_a_body_that_is_not_utf8_is_400(node: ThreadedNode, http: requests.Session) -> None:
    before = everything(node, http)
    for raw in (b'{"arguments": {"x-note": "caf\xe9"}}', b"\xff\xfe{}", b'{"durable": true, "x": "\xed\xa0\x80"}'):
        answer = http.put(f"{node.http_url}/api/queues/%2F/val.latin1", data=raw,
                          headers={"Content-Type": "application/json"}, timeout=5)
        assert answer.status_code == 400, answer.text
        assert answer.json()["error"] == "bad_request" and "UTF-8" in answer.json()["reason"]
    assert everything(node, http) == before
    # valid UTF-8 beyond ASCII is accepted, in names and in values
    accepted = http.put(f"{node.http_url}/api/queues/%2F/val.caf%C3%A9", json={"arguments": {"x-note": "café ✓"}},
                        timeout=5)
    assert accepted.status_code == 201
    assert http.get(f"{node.http_url}/api/queues/%2F/val.caf%C3%A9", timeout=5).json()["arguments"] == {
        "x-note": "café ✓"}


def test_a_body_over_the_limit_is_413(node: ThreadedNode, http: requests.Session) -> None:
    before = everything(node, http)
    filler = b"x" * (DEFAULT_LIMITS.api_max_body_bytes + 1)
    body = b'{"routing_key": "val.q", "payload_encoding": "string", "properties": {}, "payload": "' + filler + b'"}'
    answer = http.post(f"{node.http_url}/api/exchanges/%2F/amq.default/publish", data=body,
                       headers={"Content-Type": "application/json"}, timeout=60)
    assert answer.status_code == 413, answer.text[:200]
    assert answer.json()["error"] == "payload_too_large"
    assert str(DEFAULT_LIMITS.api_max_body_bytes) in answer.json()["reason"]
    assert everything(node, http) == before
    # the node keeps serving on a new connection
    assert http.get(f"{node.http_url}/api/queues/%2F/val.q", timeout=5).status_code == 200


@pytest.fixture
def pure_python_parser_server(tmp_path: Path) -> Iterator[ServerProcess]:
    """aiohttp without its C extension (as where no wheel exists) passes raw path bytes that
    are not UTF-8 through as lone surrogates ("\\xff" -> "\\udcff"); the C parser refuses them."""
    server = start_server(tmp_path / "data", env={"AIOHTTP_NO_EXTENSIONS": "1"})
    try:
        yield server
    finally:
        server.stop()


def _raw_http(port: int, request: bytes) -> tuple[int, dict[str, Any]]:
    """Send ``request`` as is (bytes no HTTP client would send); (status, JSON body)."""
    with socket.create_connection(("127.0.0.1", port), timeout=10) as conn:
        conn.sendall(request)
        answer = b""
        while chunk := conn.recv(65536):
            answer += chunk
    head, _, body = answer.partition(b"\r\n\r\n")
    return int(head.split()[1]), json.loads(body) if body else {}


def _raw_request(port: int, method: str, path: bytes) -> tuple[int, dict[str, Any]]:
    token = b"Z3Vlc3Q6Z3Vlc3Q="  # guest:guest
    return _raw_http(port, method.encode() + b" " + path + b" HTTP/1.1\r\nHost: x\r\nAuthorization: Basic "
                     + token + b"\r\nContent-Type: application/json\r\nContent-Length: 2\r\n"
                     b"Connection: close\r\n\r\n{}")


def test_a_path_segment_that_is_not_utf8_is_400(pure_python_parser_server: ServerProcess) -> None:
    port = pure_python_parser_server.http_port
    assert port is not None
    for path in (b"/api/queues/%2F/a\xffb", b"/api/vhosts/v\xed\xa0\x80"):
        status, body = _raw_request(port, "PUT", path)
        assert status == 400 and body["error"] == "bad_request" and "UTF-8" in body["reason"], body
    listed = requests.get(f"http://127.0.0.1:{port}/api/queues", auth=("guest", "guest"), timeout=5).json()
    assert listed == []
    vhosts = requests.get(f"http://127.0.0.1:{port}/api/vhosts", auth=("guest", "guest"), timeout=5).json()
    assert [v["name"] for v in vhosts] == ["/"]
    # a percent-escape that is not UTF-8 decodes to U+FFFD: a valid name, kept as such
    status, _body = _raw_request(port, "PUT", b"/api/queues/%2F/a%FFb")
    assert status == 201
    listed = requests.get(f"http://127.0.0.1:{port}/api/queues", auth=("guest", "guest"), timeout=5).json()
    assert [q["name"] for q in listed] == ["a\ufffdb"]


def test_a_close_reason_header_that_is_not_utf8_is_400_and_the_connection_stays(node: ThreadedNode) -> None:
    """X-Reason becomes the AMQP connection.close text; bytes that are not UTF-8 cannot."""
    import pika

    conn = pika.BlockingConnection(pika.URLParameters(node.amqp_url))
    try:
        conn.channel().queue_declare("val.reason", auto_delete=True)
        listed = requests.get(f"{node.http_url}/api/connections", auth=("guest", "guest"), timeout=5).json()
        [name] = [c["name"] for c in listed if c["user"] == "guest"]
        port = int(str(node.http_url).rsplit(":", 1)[1])
        request = (b"DELETE /api/connections/" + quote(name, safe="").encode() + b" HTTP/1.1\r\nHost: x\r\n"
                   b"Authorization: Basic Z3Vlc3Q6Z3Vlc3Q=\r\nX-Reason: bye \xff\xed\xa0\x80\r\n"
                   b"Connection: close\r\n\r\n")
        status, body = _raw_http(port, request)
        assert status == 400 and "X-Reason" in body["reason"]
        # the connection was not half closed: it still works
        conn.process_data_events(0.2)
        assert conn.channel().queue_declare("val.reason", passive=True)
    finally:
        if conn.is_open:
            conn.close()
