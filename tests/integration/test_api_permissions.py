"""The HTTP API enforces configure/write/read permissions exactly as AMQP does.

One table: every resource endpoint x a set of permission patterns x the user's tag. Each
row performs the HTTP call and the AMQP method it mirrors (pika, same node, same user) on
the same starting state, and asserts both answers agree: allowed, or refused (HTTP 401
``not_authorised`` as RabbitMQ's API answers; AMQP 403 ACCESS_REFUSED, or 530 NOT_ALLOWED
at connection.open for a user with no permissions on the vhost). A refused HTTP call must
leave the vhost as it was.
"""

from __future__ import annotations

import re
from collections.abc import Callable, Iterator
from dataclasses import dataclass
from typing import Any

import pika
import pytest
import requests
from pika.adapters.blocking_connection import BlockingChannel

from warren.embed import ThreadedNode, run_node
from warren.limits import Limits

VHOST = "perm"
V = "perm"  # the vhost as a path segment
PASSWORD = "secret-pw"
NO_ENTRY = None  # the user has no permission entry at all on the vhost


@pytest.fixture(scope="module")
def node() -> Iterator[ThreadedNode]:
    with run_node(http_port=0, limits=Limits(api_requests_per_second=100_000.0, api_burst=100_000)) as running:
        yield running


@pytest.fixture(scope="module")
def admin(node: ThreadedNode) -> requests.Session:
    """guest: administrator with full permissions on the test vhost (it creates it)."""
    session = requests.Session()
    session.auth = ("guest", "guest")
    url = str(node.http_url)
    assert session.put(f"{url}/api/vhosts/{V}", timeout=5).status_code in (201, 204)
    for user, tags in (("mgmt-user", "management"), ("admin-user", "administrator")):
        answer = session.put(f"{url}/api/users/{user}", json={"password": PASSWORD, "tags": tags}, timeout=5)
        assert answer.status_code in (201, 204)
    return session


def reset(node: ThreadedNode, admin: requests.Session) -> None:
    """The starting state of every row: queue secretq with one message, exchanges src-x and
    dst-x, bindings src-x -> secretq and src-x -> dst-x with key "k"; newq, new-x and the
    aliveness-test queue absent."""
    url = f"{node.http_url}/api"
    for path in (f"/queues/{V}/newq", f"/exchanges/{V}/new-x", f"/queues/{V}/aliveness-test"):
        assert admin.delete(url + path, timeout=5).status_code in (204, 404)
    assert admin.put(f"{url}/queues/{V}/secretq", json={}, timeout=5).status_code in (201, 204)
    assert admin.delete(f"{url}/queues/{V}/secretq/contents", timeout=5).status_code == 204
    for name, kind in (("src-x", "direct"), ("dst-x", "fanout")):
        assert admin.put(f"{url}/exchanges/{V}/{name}", json={"type": kind}, timeout=5).status_code in (201, 204)
    for kind, destination in (("q", "secretq"), ("e", "dst-x")):
        bound = admin.post(f"{url}/bindings/{V}/e/src-x/{kind}/{destination}", json={"routing_key": "k"}, timeout=5)
        assert bound.status_code == 201
    published = admin.post(f"{url}/exchanges/{V}/amq.default/publish", json={
        "routing_key": "secretq", "payload": "the secret", "payload_encoding": "string", "properties": {}},
        timeout=5)
    assert published.json() == {"routed": True}


def vhost_state(node: ThreadedNode, admin: requests.Session) -> dict[str, Any]:
    url = f"{node.http_url}/api"
    return {
        "queues": sorted((q["name"], q["messages"]) for q in admin.get(f"{url}/queues/{V}", timeout=5).json()),
        "exchanges": sorted(x["name"] for x in admin.get(f"{url}/exchanges/{V}", timeout=5).json()),
        "bindings": sorted((b["source"], b["destination_type"], b["destination"], b["routing_key"])
                           for b in admin.get(f"{url}/bindings/{V}", timeout=5).json()),
    }


@dataclass(frozen=True)
class Operation:
    name: str
    method: str
    path: str
    body: dict[str, Any] | None
    amqp: Callable[[BlockingChannel], None]
    needs: tuple[tuple[str, str], ...]  # (permission, resource name) the operation requires


def _aliveness(ch: BlockingChannel) -> None:
    ch.queue_declare("aliveness-test")
    ch.basic_publish("", "aliveness-test", b"test_message")
    ch.basic_get("aliveness-test", auto_ack=True)


GET_BODY = {"count": 1, "ackmode": "ack_requeue_false", "encoding": "auto"}
OPERATIONS = [
    Operation("declare queue", "PUT", f"/api/queues/{V}/newq", {},
              lambda ch: ch.queue_declare("newq"), (("configure", "newq"),)),
    Operation("delete queue", "DELETE", f"/api/queues/{V}/secretq", None,
              lambda ch: ch.queue_delete("secretq"), (("configure", "secretq"),)),
    Operation("declare exchange", "PUT", f"/api/exchanges/{V}/new-x", {"type": "direct"},
              lambda ch: ch.exchange_declare("new-x", "direct"), (("configure", "new-x"),)),
    Operation("delete exchange", "DELETE", f"/api/exchanges/{V}/dst-x", None,
              lambda ch: ch.exchange_delete("dst-x"), (("configure", "dst-x"),)),
    Operation("publish to the default exchange", "POST", f"/api/exchanges/{V}/amq.default/publish",
              {"routing_key": "secretq", "payload": "x", "payload_encoding": "string", "properties": {}},
              lambda ch: ch.basic_publish("", "secretq", b"x"), (("write", "amq.default"),)),
    Operation("publish to a named exchange", "POST", f"/api/exchanges/{V}/src-x/publish",
              {"routing_key": "k", "payload": "x", "payload_encoding": "string", "properties": {}},
              lambda ch: ch.basic_publish("src-x", "k", b"x"), (("write", "src-x"),)),
    Operation("get", "POST", f"/api/queues/{V}/secretq/get", GET_BODY,
              lambda ch: ch.basic_get("secretq", auto_ack=True), (("read", "secretq"),)),
    Operation("purge", "DELETE", f"/api/queues/{V}/secretq/contents", None,
              lambda ch: ch.queue_purge("secretq"), (("read", "secretq"),)),
    Operation("bind queue", "POST", f"/api/bindings/{V}/e/src-x/q/secretq", {"routing_key": "k2"},
              lambda ch: ch.queue_bind("secretq", "src-x", "k2"), (("write", "secretq"), ("read", "src-x"))),
    Operation("unbind queue", "DELETE", f"/api/bindings/{V}/e/src-x/q/secretq/k", None,
              lambda ch: ch.queue_unbind("secretq", "src-x", "k"), (("write", "secretq"), ("read", "src-x"))),
    Operation("bind exchange", "POST", f"/api/bindings/{V}/e/src-x/e/dst-x", {"routing_key": "k2"},
              lambda ch: ch.exchange_bind("dst-x", "src-x", "k2"), (("write", "dst-x"), ("read", "src-x"))),
    Operation("unbind exchange", "DELETE", f"/api/bindings/{V}/e/src-x/e/dst-x/k", None,
              lambda ch: ch.exchange_unbind("dst-x", "src-x", "k"), (("write", "dst-x"), ("read", "src-x"))),
    Operation("aliveness test", "GET", f"/api/aliveness-test/{V}", None, _aliveness,
              (("configure", "aliveness-test"), ("write", "amq.default"), ("read", "aliveness-test"))),
]

ALL, NOTHING = ".*", "^$"
# (configure, write, read) regexes, or NO_ENTRY
PERMISSIONS: dict[str, tuple[str, str, str] | None] = {
    "none": (NOTHING, NOTHING, NOTHING),
    "configure": (ALL, NOTHING, NOTHING),
    "write": (NOTHING, ALL, NOTHING),
    "read": (NOTHING, NOTHING, ALL),
    "configure+write": (ALL, ALL, NOTHING),
    "configure+read": (ALL, NOTHING, ALL),
    "write+read": (NOTHING, ALL, ALL),
    "all": (ALL, ALL, ALL),
    "read only ^public$ (the issue's user)": (NOTHING, NOTHING, "^public$"),
    "write all, read only the queue": (NOTHING, ALL, "^secretq$"),
    "no entry on the vhost": NO_ENTRY,
}
# administrators go through the same checks (RabbitMQ's API runs the AMQP method as the user)
ADMIN_PERMISSIONS = ("none", "all", "read only ^public$ (the issue's user)", "no entry on the vhost")
ROWS = [(tag, op, perm) for tag in ("management",) for op in OPERATIONS for perm in PERMISSIONS] + \
       [("administrator", op, perm) for op in OPERATIONS for perm in ADMIN_PERMISSIONS]
USER_BY_TAG = {"management": "mgmt-user", "administrator": "admin-user"}


def expected_allowed(op: Operation, granted: tuple[str, str, str] | None) -> bool:
    if granted is None:
        return False
    patterns = dict(zip(("configure", "write", "read"), granted, strict=True))
    return all(patterns[perm] != "" and re.search(patterns[perm], name) for perm, name in op.needs)


def http_answer(node: ThreadedNode, user: str, op: Operation) -> tuple[bool, requests.Response]:
    answer = requests.request(op.method, f"{node.http_url}{op.path}", json=op.body, auth=(user, PASSWORD), timeout=5)
    if answer.status_code < 300:
        return True, answer
    assert answer.status_code == 401, (answer.status_code, answer.text)
    assert answer.json()["error"] == "not_authorised", answer.text
    assert "WWW-Authenticate" not in answer.headers
    return False, answer


def amqp_answer(node: ThreadedNode, user: str, op: Operation) -> tuple[bool, str]:
    params = pika.ConnectionParameters("127.0.0.1", node.amqp_port, VHOST, pika.PlainCredentials(user, PASSWORD))
    try:
        conn = pika.BlockingConnection(params)
    except pika.exceptions.ProbableAccessDeniedError as refused:  # pika's name for a refused connection.open
        assert "(530) \"NOT_ALLOWED - access to vhost" in str(refused), refused
        return False, str(refused)
    try:
        channel = conn.channel()
        channel.confirm_delivery()  # a refused publish closes the channel before basic.ack
        op.amqp(channel)
        return True, ""
    except pika.exceptions.ChannelClosedByBroker as refused:
        assert refused.reply_code == 403, refused
        return False, refused.reply_text
    finally:
        if conn.is_open:
            conn.close()


@pytest.mark.parametrize(("tag", "op", "permission"), ROWS,
                         ids=[f"{tag}-{op.name}-{perm}" for tag, op, perm in ROWS])
def test_http_and_amqp_give_the_same_answer(node: ThreadedNode, admin: requests.Session, tag: str,
                                            op: Operation, permission: str) -> None:
    user = USER_BY_TAG[tag]
    granted = PERMISSIONS[permission]
    url = f"{node.http_url}/api/permissions/{V}/{user}"
    if granted is None:
        assert admin.delete(url, timeout=5).status_code in (204, 404)
    else:
        configure, write, read = granted
        answer = admin.put(url, json={"configure": configure, "write": write, "read": read}, timeout=5)
        assert answer.status_code in (201, 204)

    reset(node, admin)
    before = vhost_state(node, admin)
    http_allowed, http = http_answer(node, user, op)
    if not http_allowed:
        assert vhost_state(node, admin) == before, "a refused HTTP call changed the vhost"
        assert re.search(r"access to .* refused for user '" + user + "'", http.json()["reason"]), http.text

    reset(node, admin)
    amqp_allowed, amqp_reason = amqp_answer(node, user, op)

    assert (http_allowed, amqp_allowed) == (expected_allowed(op, granted),) * 2, (http.text, amqp_reason)


def test_the_issues_reader_cannot_read_the_secret_but_reads_public(node: ThreadedNode,
                                                                   admin: requests.Session) -> None:
    """configure ^$, write ^$, read ^public$: get from 'public' works, from 'secretq' not."""
    url = f"{node.http_url}/api"
    admin.put(f"{url}/permissions/{V}/mgmt-user", json={"configure": "^$", "write": "^$", "read": "^public$"},
              timeout=5)
    reset(node, admin)
    admin.put(f"{url}/queues/{V}/public", json={}, timeout=5)
    admin.post(f"{url}/exchanges/{V}/amq.default/publish", json={
        "routing_key": "public", "payload": "hello", "payload_encoding": "string", "properties": {}}, timeout=5)
    reader = ("mgmt-user", PASSWORD)
    secret = requests.post(f"{url}/queues/{V}/secretq/get", json=GET_BODY, auth=reader, timeout=5)
    assert secret.status_code == 401 and "the secret" not in secret.text
    assert secret.json() == {"error": "not_authorised",
                             "reason": f"read access to queue 'secretq' in vhost '{VHOST}' refused for user "
                                       "'mgmt-user'"}
    public = requests.post(f"{url}/queues/{V}/public/get", json=GET_BODY, auth=reader, timeout=5)
    assert public.status_code == 200 and [m["payload"] for m in public.json()] == ["hello"]
    # listing what it may see stays allowed: visibility needs only access to the vhost
    assert requests.get(f"{url}/queues/{V}", auth=reader, timeout=5).status_code == 200
    assert admin.delete(f"{url}/queues/{V}/public", timeout=5).status_code == 204


def test_missing_resources_answer_in_rabbitmqs_order(node: ThreadedNode, admin: requests.Session) -> None:
    """RabbitMQ's API (cowboy_rest) answers a DELETE of something absent with 404 before the
    operation runs; a POST runs the AMQP method, which checks permissions before it looks
    the queue or exchange up. A user without permissions learns nothing from a POST."""
    url = f"{node.http_url}/api"
    admin.put(f"{url}/permissions/{V}/mgmt-user", json={"configure": "^$", "write": "^$", "read": "^$"}, timeout=5)
    reader = ("mgmt-user", PASSWORD)
    publish = {"routing_key": "", "payload": "", "payload_encoding": "string", "properties": {}}
    for method, path, body, status in (
            ("DELETE", f"/queues/{V}/nosuchq", None, 404),
            ("DELETE", f"/queues/{V}/nosuchq/contents", None, 404),
            ("DELETE", f"/exchanges/{V}/nosuch-x", None, 404),
            ("DELETE", f"/bindings/{V}/e/src-x/q/nosuchq/k", None, 404),
            ("POST", f"/queues/{V}/nosuchq/get", GET_BODY, 401),
            ("POST", f"/exchanges/{V}/nosuch-x/publish", publish, 401),
            ("POST", f"/bindings/{V}/e/src-x/q/nosuchq", {"routing_key": "k"}, 401)):
        answer = requests.request(method, url + path, json=body, auth=reader, timeout=5)
        assert answer.status_code == status, (method, path, answer.text)
