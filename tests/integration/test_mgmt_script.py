"""A script written for RabbitMQ's management HTTP API, run unchanged against Warren.

``run_script`` is what an operations script does with plain ``requests``: create a vhost and
grant access, declare a classic queue with arguments, declare an exchange, bind them, publish
through the API, wait for the queue depth to show up (RabbitMQ's stats arrive a few seconds
late, so scripts poll), peek at a message, export the definitions, and clean up. Every status
code, header and JSON shape it checks is what RabbitMQ 3.10.8 answered when this script ran
against it (``python tests/integration/test_mgmt_script.py http://127.0.0.1:15672``).
"""

from __future__ import annotations

import json
import os
import subprocess
import sys
import time
from collections.abc import Iterator
from pathlib import Path
from typing import Any
from urllib.parse import quote, urljoin

import pika
import pytest
import requests

from warren.embed import ThreadedNode, run_node

VHOST = "script-vhost"
QUEUE = "jobs.pending"
EXCHANGE = "jobs"
QUEUE_ARGS = {"x-message-ttl": 60000, "x-max-length": 3}


def run_script(base: str, user: str = "guest", password: str = "guest") -> dict[str, Any]:
    http = requests.Session()
    http.auth = (user, password)
    v = quote(VHOST, safe="")

    def url(path: str) -> str:
        return base.rstrip("/") + path

    overview = http.get(url("/api/overview"), timeout=10)
    assert overview.status_code == 200 and overview.headers["Content-Type"].startswith("application/json")
    assert {"rabbitmq_version", "management_version", "node", "object_totals", "queue_totals", "listeners"} <= \
        overview.json().keys()
    assert http.get(url("/api/whoami"), timeout=10).json()["name"] == user

    # a vhost: its creator gets full permissions in it, so granting them again is a 204
    assert http.put(url(f"/api/vhosts/{v}"), timeout=10).status_code == 201
    assert http.put(url(f"/api/vhosts/{v}"), timeout=10).status_code == 204
    permissions = {"configure": ".*", "write": ".*", "read": ".*"}
    assert http.get(url(f"/api/vhosts/{v}/permissions"), timeout=10).json() == [
        {"user": user, "vhost": VHOST, **permissions}]
    assert http.put(url(f"/api/permissions/{v}/{quote(user, safe='')}"), json=permissions,
                    timeout=10).status_code == 204

    # a classic queue with arguments: 201 when created, 204 when it already exists as asked,
    # 400 when asked with different arguments
    queue_body = {"durable": True, "auto_delete": False, "arguments": QUEUE_ARGS}
    created = http.put(url(f"/api/queues/{v}/{QUEUE}"), json=queue_body, timeout=10)
    assert created.status_code == 201 and created.text == "", created.text
    assert http.put(url(f"/api/queues/{v}/{QUEUE}"), json=queue_body, timeout=10).status_code == 204
    clash = http.put(url(f"/api/queues/{v}/{QUEUE}"),
                     json={"durable": True, "arguments": {"x-message-ttl": 1000}}, timeout=10)
    assert clash.status_code == 400
    assert clash.json()["error"] == "bad_request" and "inequivalent arg 'x-message-ttl'" in clash.json()["reason"]

    exchange_body = {"type": "direct", "durable": True, "auto_delete": False, "internal": False, "arguments": {}}
    assert http.put(url(f"/api/exchanges/{v}/{EXCHANGE}"), json=exchange_body, timeout=10).status_code == 201
    assert http.put(url(f"/api/exchanges/{v}/{EXCHANGE}"), json=exchange_body, timeout=10).status_code == 204

    # binding: 201 with a Location that names the new binding
    bound = http.post(url(f"/api/bindings/{v}/e/{EXCHANGE}/q/{QUEUE}"),
                      json={"routing_key": "pending", "arguments": {}}, timeout=10)
    assert bound.status_code == 201, bound.text
    binding_url = urljoin(url(f"/api/bindings/{v}/e/{EXCHANGE}/q/{QUEUE}"), bound.headers["Location"])
    binding = http.get(binding_url, timeout=10)
    assert binding.status_code == 200
    assert binding.json() == {"source": EXCHANGE, "vhost": VHOST, "destination": QUEUE, "destination_type": "queue",
                              "routing_key": "pending", "arguments": {}, "properties_key": "pending"}
    listed = http.get(url(f"/api/bindings/{v}/e/{EXCHANGE}/q/{QUEUE}"), timeout=10).json()
    assert [b["properties_key"] for b in listed] == ["pending"]

    # publish through the API: five messages into a queue that keeps three (drop-head)
    for i in range(5):
        published = http.post(url(f"/api/exchanges/{v}/{EXCHANGE}/publish"), json={
            "properties": {"delivery_mode": 2, "content_type": "text/plain"}, "routing_key": "pending",
            "payload": f"job-{i}", "payload_encoding": "string"}, timeout=10)
        assert published.status_code == 200 and published.json() == {"routed": True}
    unroutable = http.post(url(f"/api/exchanges/{v}/{EXCHANGE}/publish"), json={
        "properties": {}, "routing_key": "nobody", "payload": "x", "payload_encoding": "string"}, timeout=10)
    assert unroutable.json() == {"routed": False}
    missing = http.post(url(f"/api/exchanges/{v}/no-such-exchange/publish"), json={
        "properties": {}, "routing_key": "x", "payload": "x", "payload_encoding": "string"}, timeout=10)
    assert missing.status_code == 400 and "NOT_FOUND" in missing.json()["reason"]

    # queue depth: RabbitMQ shows "messages" only once its stats are collected, so scripts poll
    deadline = time.monotonic() + 30
    while True:
        queue = http.get(url(f"/api/queues/{v}/{QUEUE}"), timeout=10).json()
        if queue.get("messages") == 3 or time.monotonic() > deadline:
            break
        time.sleep(0.5)
    assert queue["messages"] == 3 and queue["messages_ready"] == 3 and queue["messages_unacknowledged"] == 0
    assert queue["arguments"] == QUEUE_ARGS and queue["durable"] is True and queue["auto_delete"] is False
    assert queue["type"] == "classic" and queue["state"] == "running" and queue["consumers"] == 0

    peek = http.post(url(f"/api/queues/{v}/{QUEUE}/get"), json={
        "count": 1, "ackmode": "ack_requeue_true", "encoding": "auto", "truncate": 50000}, timeout=10)
    assert peek.status_code == 200
    assert peek.json() == [{"payload_bytes": 5, "redelivered": False, "exchange": EXCHANGE, "routing_key": "pending",
                            "message_count": 2, "properties": {"delivery_mode": 2, "content_type": "text/plain"},
                            "payload": "job-2", "payload_encoding": "string"}]

    # export definitions: the queue, exchange and binding as a RabbitMQ import expects them
    definitions = http.get(url("/api/definitions"), timeout=10)
    assert definitions.status_code == 200
    document = definitions.json()
    assert {"rabbit_version", "users", "vhosts", "permissions", "policies", "queues", "exchanges", "bindings"} <= \
        document.keys()
    assert {"name": QUEUE, "vhost": VHOST, "durable": True, "auto_delete": False,
            "arguments": QUEUE_ARGS} in document["queues"]
    assert {"name": EXCHANGE, "vhost": VHOST, "type": "direct", "durable": True, "auto_delete": False,
            "internal": False, "arguments": {}} in document["exchanges"]
    assert {"source": EXCHANGE, "vhost": VHOST, "destination": QUEUE, "destination_type": "queue",
            "routing_key": "pending", "arguments": {}} in document["bindings"]
    assert {"name": VHOST} in [{"name": x["name"]} for x in document["vhosts"]]
    # importing what was exported changes nothing and answers 204
    reimport = http.post(url("/api/definitions"), json=document, timeout=10)
    assert reimport.status_code == 204 and reimport.text == ""

    # clean up: 204 for each delete, 404 for what is gone
    assert http.delete(binding_url, timeout=10).status_code == 204
    assert http.get(url(f"/api/bindings/{v}/e/{EXCHANGE}/q/{QUEUE}"), timeout=10).json() == []
    assert http.delete(url(f"/api/queues/{v}/{QUEUE}/contents"), timeout=10).status_code == 204
    assert http.delete(url(f"/api/queues/{v}/{QUEUE}?if-empty=true"), timeout=10).status_code == 204
    gone = http.get(url(f"/api/queues/{v}/{QUEUE}"), timeout=10)
    assert gone.status_code == 404 and gone.json()["error"] == "Object Not Found"
    assert http.delete(url(f"/api/queues/{v}/{QUEUE}"), timeout=10).status_code == 404
    assert http.delete(url(f"/api/exchanges/{v}/{EXCHANGE}"), timeout=10).status_code == 204
    assert http.delete(url(f"/api/vhosts/{v}"), timeout=10).status_code == 204
    assert http.get(url(f"/api/vhosts/{v}"), timeout=10).status_code == 404
    return {"overview": overview.json(), "queue": queue, "definitions": document}


@pytest.fixture(scope="module")
def node() -> Iterator[ThreadedNode]:
    with run_node(http_port=0) as running:
        yield running


def test_rabbitmq_management_script_runs_unchanged(node: ThreadedNode) -> None:
    result = run_script(str(node.http_url))
    assert result["overview"]["node"] == "warren@localhost"


def test_the_script_sees_its_queue_from_amqp_clients_too(node: ThreadedNode) -> None:
    # what the script declared through HTTP is the broker's queue: pika consumes what it published
    http = requests.Session()
    http.auth = ("guest", "guest")
    base = str(node.http_url)
    assert http.put(f"{base}/api/queues/%2F/script.shared", json={"durable": True, "arguments": QUEUE_ARGS},
                    timeout=10).status_code == 201
    http.post(f"{base}/api/exchanges/%2F/amq.default/publish", json={
        "properties": {}, "routing_key": "script.shared", "payload": "hello", "payload_encoding": "string"},
        timeout=10)
    conn = pika.BlockingConnection(pika.URLParameters(node.amqp_url))
    ch = conn.channel()
    ok = ch.queue_declare("script.shared", durable=True, arguments=QUEUE_ARGS, passive=False)
    assert ok.method.message_count == 1
    _method, _props, body = ch.basic_get("script.shared", auto_ack=True)
    assert body == b"hello"
    conn.close()
    assert http.delete(f"{base}/api/queues/%2F/script.shared", timeout=10).status_code == 204


RABBITMQADMIN = "/usr/bin/rabbitmqadmin"  # RabbitMQ's own CLI for this API, from Debian's rabbitmq-server


def rabbitmqadmin(node: ThreadedNode, *args: str, ok: bool = True) -> str:
    assert os.path.exists(RABBITMQADMIN), f"{RABBITMQADMIN} is missing: install rabbitmq-server " \
        "(scripts/debian-packages.txt)"
    assert node.http_url is not None
    port = node.http_url.rsplit(":", 1)[1]
    # -I -S: rabbitmqadmin needs the standard library only, and starts faster without site packages
    result = subprocess.run([sys.executable, "-I", "-S", RABBITMQADMIN, "-H", "127.0.0.1", "-P", port, "-u", "guest",
                             "-p", "guest", *args], capture_output=True, text=True, timeout=60)
    assert (result.returncode == 0) == ok, (args, result.stdout, result.stderr)
    return result.stdout + result.stderr


def admin_json(node: ThreadedNode, *args: str) -> Any:
    return json.loads(rabbitmqadmin(node, "-f", "raw_json", *args))


def test_rabbitmqadmin_drives_warren(node: ThreadedNode, tmp_path: Path) -> None:
    """rabbitmqadmin sends flags as strings ("durable": "true") and counts as "1": the API
    must read them as RabbitMQ does."""
    assert "queue declared" in rabbitmqadmin(node, "declare", "queue", "name=adm.q", "durable=true",
                                             'arguments={"x-max-length": 5}')
    rabbitmqadmin(node, "declare", "exchange", "name=adm.x", "type=topic")
    rabbitmqadmin(node, "declare", "binding", "source=adm.x", "destination=adm.q", "routing_key=a.#")
    for i in range(7):
        assert "Message published" in rabbitmqadmin(node, "publish", "exchange=adm.x", "routing_key=a.b",
                                                    f"payload=hello-{i}")
    assert "NOT routed" in rabbitmqadmin(node, "publish", "exchange=adm.x", "routing_key=zzz", "payload=x")
    queues = {q["name"]: q for q in admin_json(node, "list", "queues", "name", "durable", "auto_delete",
                                               "messages", "arguments")}
    assert queues["adm.q"] == {"name": "adm.q", "durable": True, "auto_delete": False, "messages": 5,
                               "arguments": {"x-max-length": 5}}
    exchanges = {x["name"]: x for x in admin_json(node, "list", "exchanges", "name", "type", "durable",
                                                  "internal", "auto_delete")}
    assert exchanges["adm.x"] == {"name": "adm.x", "type": "topic", "durable": True, "internal": False,
                                  "auto_delete": False}
    got = admin_json(node, "get", "queue=adm.q", "count=2", "ackmode=ack_requeue_false")
    assert [m["payload"] for m in got] == ["hello-2", "hello-3"]  # x-max-length 5 dropped the first two
    assert {"source": "adm.x", "destination": "adm.q", "routing_key": "a.#"} in [
        {k: b[k] for k in ("source", "destination", "routing_key")} for b in admin_json(node, "list", "bindings")]

    rabbitmqadmin(node, "declare", "policy", "name=adm-cap", "pattern=^adm\\.", 'definition={"max-length": 1}',
                  "apply-to=queues", "priority=2")
    assert [p["name"] for p in admin_json(node, "list", "policies")] == ["adm-cap"]
    assert admin_json(node, "list", "queues", "name", "messages", "policy") == [
        {"name": "adm.q", "messages": 1, "policy": "adm-cap"}]
    rabbitmqadmin(node, "delete", "policy", "name=adm-cap")

    rabbitmqadmin(node, "declare", "vhost", "name=adm-vh")
    rabbitmqadmin(node, "declare", "user", "name=adm-user", "password=adm-pw", "tags=management")
    rabbitmqadmin(node, "declare", "permission", "vhost=adm-vh", "user=adm-user", "configure=.*", "write=.*",
                  "read=.*")
    conn = pika.BlockingConnection(pika.ConnectionParameters(
        "127.0.0.1", node.amqp_port, "adm-vh", pika.PlainCredentials("adm-user", "adm-pw")))
    connections = admin_json(node, "list", "connections", "name", "user", "vhost")
    assert [(c["user"], c["vhost"]) for c in connections] == [("adm-user", "adm-vh")]
    assert "connection closed" in rabbitmqadmin(node, "close", "connection", f"name={connections[0]['name']}")
    with pytest.raises(pika.exceptions.ConnectionClosedByBroker):
        for _ in range(50):
            conn.process_data_events(0.1)

    exported = tmp_path / "defs.json"
    assert "Exported definitions" in rabbitmqadmin(node, "export", str(exported))
    document = json.loads(exported.read_text())
    assert {"name": "adm.q", "vhost": "/", "durable": True, "auto_delete": False,
            "arguments": {"x-max-length": 5}} in document["queues"]
    assert "adm-user" in {u["name"] for u in document["users"]}
    rabbitmqadmin(node, "delete", "queue", "name=adm.q")
    rabbitmqadmin(node, "delete", "user", "name=adm-user")
    assert "Uploaded definitions" in rabbitmqadmin(node, "import", str(exported))
    assert admin_json(node, "list", "queues", "name", "arguments") == [
        {"name": "adm.q", "arguments": {"x-max-length": 5}}]
    assert admin_json(node, "list", "users", "name", "tags")[-1] == {"name": "adm-user", "tags": ["management"]}
    assert [n["name"] for n in admin_json(node, "list", "nodes")] == ["warren@localhost"]
    assert admin_json(node, "show", "overview")[0]["rabbitmq_version"] == "3.10.8"
    assert "Not found" in rabbitmqadmin(node, "delete", "queue", "name=no-such-queue", ok=False)
    for command in (("purge", "queue", "name=adm.q"), ("delete", "queue", "name=adm.q"),
                    ("delete", "exchange", "name=adm.x"), ("delete", "user", "name=adm-user"),
                    ("delete", "vhost", "name=adm-vh")):
        rabbitmqadmin(node, *command)
    assert admin_json(node, "list", "queues") == []


if __name__ == "__main__":  # run the same script against any broker: python test_mgmt_script.py URL [USER PASS]
    target = sys.argv[1] if len(sys.argv) > 1 else "http://127.0.0.1:15672"
    credentials = sys.argv[2:4] if len(sys.argv) >= 4 else ["guest", "guest"]
    started = time.monotonic()
    outcome = run_script(target, *credentials)
    print(f"OK against {target}: {outcome['overview'].get('product_name', 'RabbitMQ')} "
          f"{outcome['overview']['rabbitmq_version']}, queue depth {outcome['queue']['messages']}, "
          f"{time.monotonic() - started:.1f}s")
