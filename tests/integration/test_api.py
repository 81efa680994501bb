"""The management HTTP API against a real node, driven by HTTP and by pika."""

from __future__ import annotations

import json
import time
from collections.abc import Iterator
from datetime import UTC, datetime, timedelta
from pathlib import Path

import pika
import pytest
import requests

from warren.api.client import APIError, ManagementClient
from warren.embed import ThreadedNode, run_node
from warren.limits import Limits

DEFINITIONS = Path(__file__).parent.parent / "data" / "rabbitmq-3.10.8-definitions.json"


@pytest.fixture(scope="module")
def node() -> Iterator[ThreadedNode]:
    with run_node(http_port=0) as running:
        yield running


@pytest.fixture
def api(node: ThreadedNode) -> ManagementClient:
    assert node.http_url is not None
    return ManagementClient(node.http_url, "guest", "guest")


def amqp(node: ThreadedNode, user: str = "guest", password: str = "guest", vhost: str = "/") -> pika.BlockingConnection:
    return pika.BlockingConnection(pika.ConnectionParameters(
        "127.0.0.1", node.amqp_port, vhost, pika.PlainCredentials(user, password)))


def wait_for(predicate, timeout: float = 5.0):  # type: ignore[no-untyped-def]
    deadline = time.monotonic() + timeout
    while True:
        value = predicate()
        if value or time.monotonic() > deadline:
            return value
        time.sleep(0.05)


def test_overview_has_rabbitmq_shape_and_counts_a_pika_queue(node: ThreadedNode, api: ManagementClient) -> None:
    conn = amqp(node)
    ch = conn.channel()
    ch.queue_declare("ov-q")
    for _ in range(3):
        ch.basic_publish("", "ov-q", b"x")
    overview = wait_for(lambda: (o := api.get("/api/overview"))["queue_totals"]["messages"] >= 3 and o)
    assert overview["object_totals"]["connections"] >= 1
    assert overview["object_totals"]["queues"] >= 1
    assert overview["queue_totals"]["messages_ready"] >= 3
    assert {"publish", "publish_details", "deliver_get_details", "ack_details"} <= overview["message_stats"].keys()
    assert overview["rates_mode"] == "basic"
    assert wait_for(lambda: api.get("/api/overview")["churn_rates"]["connection_created"] >= 1)
    assert "channel_closed_details" in overview["churn_rates"]
    assert any(listener["protocol"] == "amqp" and listener["port"] == node.amqp_port
               for listener in overview["listeners"])
    # publish rate becomes visible once the sampler saw the publishes
    rate = wait_for(lambda: api.get("/api/overview")["message_stats"]["publish_details"]["rate"] > 0, 4.0)
    assert rate
    conn.close()
    api.delete("/api/queues/%2F/ov-q")


def test_queue_objects_show_how_fast_their_depth_changes(node: ThreadedNode, api: ManagementClient) -> None:
    conn = amqp(node)
    ch = conn.channel()
    ch.queue_declare("rate-q")
    assert api.get("/api/queues/%2F/rate-q")["messages_details"] == {"rate": 0.0}
    deadline = time.monotonic() + 10
    rate = 0.0
    while time.monotonic() < deadline and rate <= 0:  # publish until the sampler sees the growth
        for _ in range(20):
            ch.basic_publish("", "rate-q", b"x")
        conn.process_data_events(0.1)
        queue = api.get("/api/queues/%2F/rate-q")
        rate = queue["messages_details"]["rate"]
    assert rate > 0 and queue["messages_ready_details"]["rate"] > 0
    assert queue["messages_unacknowledged_details"] == {"rate": 0.0}
    listed = [q for q in api.get("/api/queues/%2F") if q["name"] == "rate-q"]
    assert listed[0]["messages_details"]["rate"] > 0
    assert api.get("/api/overview")["queue_totals"]["messages_details"]["rate"] > 0
    assert [v for v in api.get("/api/vhosts") if v["name"] == "/"][0]["messages_ready_details"]["rate"] > 0
    conn.close()
    api.delete("/api/queues/%2F/rate-q")


def test_listings_take_rabbitmqs_columns_sort_and_pages(api: ManagementClient) -> None:
    for i in range(5):
        api.put(f"/api/queues/%2F/pg-{i}", {"arguments": {"x-max-length": 10 + i}})
    assert api.get("/api/queues/%2F?columns=name,arguments.x-max-length&sort=name&sort_reverse=true")[:2] == [
        {"name": "pg-4", "arguments": {"x-max-length": 14}}, {"name": "pg-3", "arguments": {"x-max-length": 13}}]
    page = api.get("/api/queues?page=2&page_size=2&name=pg-&sort=name&columns=name,vhost")
    assert page["items"] == [{"name": "pg-2", "vhost": "/"}, {"name": "pg-3", "vhost": "/"}]
    assert (page["page"], page["page_count"], page["filtered_count"]) == (2, 3, 5)
    with pytest.raises(APIError) as out_of_range:
        api.get("/api/queues?page=9&page_size=2&name=pg-")
    assert out_of_range.value.status == 400
    assert api.get("/api/overview?columns=node")["node"] == "warren@localhost"
    assert api.get("/api/queues/%2F/pg-0?columns=name,messages") == {"name": "pg-0", "messages": 0}
    for i in range(5):
        api.delete(f"/api/queues/%2F/pg-{i}")


def test_endpoints_for_what_warren_does_not_have_answer_like_rabbitmq(node: ThreadedNode,
                                                                       api: ManagementClient) -> None:
    for listing in ("parameters", "parameters/federation-upstream", "parameters/shovel/%2F", "operator-policies",
                    "vhost-limits", "topic-permissions", "user-limits", "extensions"):
        assert api.get(f"/api/{listing}") == []
    with pytest.raises(APIError) as one:
        api.get("/api/parameters/shovel/%2F/move-it")
    assert one.value.status == 404
    with pytest.raises(APIError) as refused:
        api.put("/api/parameters/shovel/%2F/move-it", {"value": {}})
    assert refused.value.status == 400 and "not supported by Warren" in refused.value.reason
    assert api.get("/api/cluster-name") == {"name": "warren@localhost"}
    conn = amqp(node)
    conn.channel()
    connections = wait_for(lambda: api.get("/api/vhosts/%2F/connections"))
    assert [c["vhost"] for c in connections] == ["/"]
    channels = wait_for(lambda: api.get("/api/vhosts/%2F/channels"))
    name = channels[0]["name"]
    assert api.get(f"/api/channels/{requests.utils.quote(name, safe='')}")["number"] == 1
    conn.close()


def test_auth_and_tags(node: ThreadedNode, api: ManagementClient) -> None:
    url = node.http_url
    anonymous = requests.get(f"{url}/api/overview", timeout=5)
    assert anonymous.status_code == 401
    assert anonymous.headers["WWW-Authenticate"].startswith("Basic")
    assert anonymous.json()["error"] == "not_authorized"  # RabbitMQ 3.10's spelling for a failed login
    wrong = requests.get(f"{url}/api/overview", auth=("guest", "wrong"), timeout=5)
    assert wrong.status_code == 401 and wrong.json() == {"error": "not_authorized", "reason": "Login failed"}

    api.put("/api/users/plain", {"password": "p1", "tags": ""})
    api.put("/api/users/mgr", {"password": "p2", "tags": "management"})
    api.put("/api/users/mon", {"password": "p3", "tags": ["monitoring"]})
    api.put("/api/permissions/%2F/mgr", {"configure": ".*", "write": ".*", "read": ".*"})
    no_tag = requests.get(f"{url}/api/overview", auth=("plain", "p1"), timeout=5)
    assert no_tag.status_code == 401 and no_tag.json() == {"error": "not_authorised", "reason": "Not management user"}
    assert requests.get(f"{url}/api/whoami", auth=("mgr", "p2"), timeout=5).json() == {
        "name": "mgr", "tags": ["management"]}
    # a logged-in user refused for a missing tag or vhost gets 401 "not_authorised", as from
    # RabbitMQ 3.10 (measured), without WWW-Authenticate so browsers do not ask for a password
    users_as_mgr = requests.get(f"{url}/api/users", auth=("mgr", "p2"), timeout=5)
    assert users_as_mgr.status_code == 401
    assert users_as_mgr.json() == {"error": "not_authorised", "reason": "Not administrator user"}
    assert "WWW-Authenticate" not in users_as_mgr.headers
    assert requests.get(f"{url}/api/definitions", auth=("mgr", "p2"), timeout=5).status_code == 401
    nodes_as_mgr = requests.get(f"{url}/api/nodes", auth=("mgr", "p2"), timeout=5)
    assert nodes_as_mgr.status_code == 401 and nodes_as_mgr.json()["reason"] == "Not monitor user"
    node_name = api.get("/api/nodes")[0]["name"]
    assert requests.get(f"{url}/api/nodes/{node_name}", auth=("mgr", "p2"), timeout=5).status_code == 401
    assert requests.get(f"{url}/api/nodes/{node_name}", auth=("mon", "p3"), timeout=5).json()["name"] == node_name
    # management may declare in its vhost, but not set policies; monitoring may read but not write
    assert requests.put(f"{url}/api/queues/%2F/mgr-q", json={}, auth=("mgr", "p2"), timeout=5).status_code == 201
    policy = requests.put(f"{url}/api/policies/%2F/p", json={"pattern": "x", "definition": {}},
                          auth=("mgr", "p2"), timeout=5)
    assert policy.status_code == 401 and policy.json()["reason"] == "Not policymaker user"
    assert requests.get(f"{url}/api/connections", auth=("mon", "p3"), timeout=5).status_code == 200
    mon_write = requests.put(f"{url}/api/queues/%2F/mon-q", json={}, auth=("mon", "p3"), timeout=5)
    assert mon_write.status_code == 401
    # mgr has no permissions on a new vhost: it does not see it
    api.put("/api/vhosts/private")
    assert "private" not in [v["name"] for v in requests.get(f"{url}/api/vhosts", auth=("mgr", "p2"), timeout=5).json()]
    assert requests.get(f"{url}/api/queues/private", auth=("mgr", "p2"), timeout=5).status_code == 401
    # policymaker: policies in the vhosts it may use, not elsewhere, and no user administration
    api.put("/api/users/pol", {"password": "p4", "tags": "policymaker"})
    api.put("/api/permissions/%2F/pol", {"configure": ".*", "write": ".*", "read": ".*"})
    rule = {"pattern": "^pol", "definition": {"max-length": 3}, "apply-to": "queues"}
    assert requests.put(f"{url}/api/policies/%2F/pol-p", json=rule, auth=("pol", "p4"), timeout=5).status_code == 201
    assert requests.put(f"{url}/api/policies/private/pol-p", json=rule, auth=("pol", "p4"),
                        timeout=5).status_code == 401
    assert requests.delete(f"{url}/api/policies/%2F/pol-p", auth=("pol", "p4"), timeout=5).status_code == 204
    assert requests.get(f"{url}/api/users", auth=("pol", "p4"), timeout=5).status_code == 401
    # connections: monitoring sees everybody's, management only its own
    conn = amqp(node, "mgr", "p2")
    other = amqp(node)
    seen_by_mon = wait_for(lambda: {c["user"] for c in requests.get(f"{url}/api/connections", auth=("mon", "p3"),
                                                                   timeout=5).json()} >= {"mgr", "guest"})
    assert seen_by_mon
    seen_by_mgr = requests.get(f"{url}/api/connections", auth=("mgr", "p2"), timeout=5).json()
    assert {c["user"] for c in seen_by_mgr} == {"mgr"}
    conn.close()
    other.close()
    for user in ("plain", "mgr", "mon", "pol"):
        api.delete(f"/api/users/{user}")
    api.delete("/api/queues/%2F/mgr-q")
    api.delete("/api/vhosts/private")


def test_errors_are_rabbitmq_shaped(node: ThreadedNode, api: ManagementClient) -> None:
    url = node.http_url
    missing = requests.get(f"{url}/api/queues/%2F/no-such-queue", auth=("guest", "guest"), timeout=5)
    assert missing.status_code == 404 and missing.json()["error"] == "Object Not Found"
    assert requests.get(f"{url}/api/queues/nohost", auth=("guest", "guest"), timeout=5).status_code == 404
    wrong_method = requests.post(f"{url}/api/overview", auth=("guest", "guest"), timeout=5)
    assert wrong_method.status_code == 405
    bad_json = requests.put(f"{url}/api/queues/%2F/bad", data="{nope", auth=("guest", "guest"), timeout=5)
    assert bad_json.status_code == 400 and "invalid JSON" in bad_json.json()["reason"]
    bad_arg = requests.put(f"{url}/api/queues/%2F/bad", json={"arguments": {"x-max-length": "many"}},
                           auth=("guest", "guest"), timeout=5)
    assert bad_arg.status_code == 400 and bad_arg.json()["error"] == "bad_request"
    maybe = requests.put(f"{url}/api/queues/%2F/bad", json={"durable": "maybe"}, auth=("guest", "guest"), timeout=5)
    assert maybe.status_code == 400 and maybe.json()["reason"] == "'durable' must be true or false, got \"maybe\""
    reserved = requests.put(f"{url}/api/queues/%2F/amq.mine", json={}, auth=("guest", "guest"), timeout=5)
    assert reserved.status_code == 401 and reserved.json()["error"] == "not_authorised"


def test_queue_lifecycle_publish_get_purge_delete(node: ThreadedNode, api: ManagementClient) -> None:
    assert api.put("/api/queues/%2F/life", {"durable": True, "auto_delete": False,
                                            "arguments": {"x-max-length": 10}}) == 201
    assert api.put("/api/queues/%2F/life", {"durable": True, "arguments": {"x-max-length": 10}}) == 204
    queue = api.get("/api/queues/%2F/life")
    assert queue["durable"] is True and queue["arguments"] == {"x-max-length": 10}
    for i in range(3):
        routed = api.post("/api/exchanges/%2F/amq.default/publish", {
            "routing_key": "life", "payload": f"m{i}", "payload_encoding": "string",
            "properties": {"delivery_mode": 2, "headers": {"k": "v"}}})
        assert routed == {"routed": True}
    assert api.post("/api/exchanges/%2F/amq.default/publish", {
        "routing_key": "nowhere", "payload": "", "payload_encoding": "string", "properties": {}}) == {"routed": False}
    peek = api.post("/api/queues/%2F/life/get", {"count": 2, "ackmode": "ack_requeue_true", "encoding": "auto"})
    assert [m["payload"] for m in peek] == ["m0", "m1"]
    assert peek[0]["properties"]["headers"] == {"k": "v"} and peek[0]["payload_encoding"] == "string"
    life = api.get("/api/queues/%2F/life")
    assert life["messages_ready"] == 3 and life["message_bytes"] == 6 and life["message_bytes_unacknowledged"] == 0
    taken = api.post("/api/queues/%2F/life/get", {"count": 1, "ackmode": "ack_requeue_false", "encoding": "base64"})
    assert taken[0]["payload_encoding"] == "base64" and taken[0]["payload"] == "bTA="
    assert api.get("/api/queues/%2F/life")["messages_ready"] == 2
    # a pika consumer sees what the API published
    conn = amqp(node)
    ch = conn.channel()
    method, _props, body = ch.basic_get("life", auto_ack=True)
    assert body == b"m1"
    with pytest.raises(APIError) as not_empty:
        api.delete("/api/queues/%2F/life?if-empty=true")
    assert not_empty.value.status == 400
    assert api.delete("/api/queues/%2F/life/contents") == 204
    assert api.get("/api/queues/%2F/life")["messages"] == 0
    assert api.delete("/api/queues/%2F/life?if-empty=true") == 204
    with pytest.raises(APIError) as gone:
        api.get("/api/queues/%2F/life")
    assert gone.value.status == 404
    conn.close()


def test_bindings_queue_and_exchange_to_exchange(api: ManagementClient) -> None:
    api.put("/api/exchanges/%2F/b-src", {"type": "topic", "durable": True})
    api.put("/api/exchanges/%2F/b-dst", {"type": "fanout", "durable": True})
    api.put("/api/queues/%2F/b-q", {})
    created = api.request("POST", "/api/bindings/%2F/e/b-src/q/b-q", {"routing_key": "a.*", "arguments": {}})
    assert created[0] == 201
    api.post("/api/bindings/%2F/e/b-src/e/b-dst", {"routing_key": "#"})
    api.post("/api/bindings/%2F/e/b-dst/q/b-q", {"routing_key": ""})
    listed = api.get("/api/bindings/%2F/e/b-src/q/b-q")
    assert [(b["routing_key"], b["properties_key"]) for b in listed] == [("a.*", "a.*")]
    assert {b["destination"] for b in api.get("/api/exchanges/%2F/b-src/bindings/source")} == {"b-q", "b-dst"}
    # b-q is reached directly and through b-dst: like RabbitMQ, it gets the message once
    api.post("/api/exchanges/%2F/b-src/publish", {"routing_key": "a.b", "payload": "x",
                                                   "payload_encoding": "string", "properties": {}})
    assert api.get("/api/queues/%2F/b-q")["messages"] == 1
    api.post("/api/exchanges/%2F/b-src/publish", {"routing_key": "zzz", "payload": "x",
                                                   "payload_encoding": "string", "properties": {}})
    assert api.get("/api/queues/%2F/b-q")["messages"] == 2  # only through b-dst
    assert api.delete("/api/bindings/%2F/e/b-src/q/b-q/a.*") == 204
    assert api.get("/api/bindings/%2F/e/b-src/q/b-q") == []
    names = {(b["source"], b["destination"]) for b in api.get("/api/queues/%2F/b-q/bindings")}
    assert names == {("", "b-q"), ("b-dst", "b-q")}
    api.delete("/api/queues/%2F/b-q")
    api.delete("/api/exchanges/%2F/b-src")
    api.delete("/api/exchanges/%2F/b-dst")


def test_policy_applies_at_once_and_shows_effective_definition(api: ManagementClient) -> None:
    api.put("/api/queues/%2F/pol.q", {})
    for i in range(5):
        api.post("/api/exchanges/%2F/amq.default/publish", {"routing_key": "pol.q", "payload": str(i),
                                                             "payload_encoding": "string", "properties": {}})
    definition = {"max-length": 2, "overflow": "drop-head", "message-ttl": 60000}
    assert api.put("/api/policies/%2F/cap", {"pattern": "^pol\\.", "apply-to": "queues", "priority": 1,
                                             "definition": definition}) == 201
    queue = api.get("/api/queues/%2F/pol.q")
    assert queue["policy"] == "cap"
    assert queue["effective_policy_definition"] == definition
    assert queue["messages"] == 2  # the two newest survive drop-head
    assert api.get("/api/policies/%2F/cap")["apply-to"] == "queues"
    bad = requests_put(api, "/api/policies/%2F/bad", {"pattern": "x", "definition": {"max-length": "lots"}})
    assert bad == 400
    api.delete("/api/policies/%2F/cap")
    assert api.get("/api/queues/%2F/pol.q")["policy"] is None
    api.delete("/api/queues/%2F/pol.q")


def publish_text(api: ManagementClient, queue: str, body: str, vhost: str = "%2F") -> bool:
    result = api.post(f"/api/exchanges/{vhost}/amq.default/publish", {
        "routing_key": queue, "payload": body, "payload_encoding": "string", "properties": {}})
    return bool(result["routed"])


def test_policy_keys_priority_and_apply_to(api: ManagementClient) -> None:
    # priority: of two matching policies the higher one applies, alone, as in RabbitMQ
    api.put("/api/policies/%2F/low", {"pattern": "^pk\\.", "apply-to": "queues", "priority": 1,
                                      "definition": {"max-length": 100}})
    api.put("/api/policies/%2F/high", {"pattern": "^pk\\.bytes$", "apply-to": "queues", "priority": 5,
                                       "definition": {"max-length-bytes": 12, "overflow": "drop-head",
                                                      "delivery-limit": 3}})
    api.put("/api/queues/%2F/pk.bytes", {"durable": False})
    api.put("/api/queues/%2F/pk.other", {"durable": False})
    queue = api.get("/api/queues/%2F/pk.bytes")
    assert queue["policy"] == "high"
    assert queue["effective_policy_definition"] == {"max-length-bytes": 12, "overflow": "drop-head",
                                                    "delivery-limit": 3}
    assert api.get("/api/queues/%2F/pk.other")["policy"] == "low"
    # max-length-bytes with drop-head: 5+5 bytes fit in 12; the third 5 pushes the oldest out
    for body in ("aaaaa", "bbbbb", "ccccc"):
        assert publish_text(api, "pk.bytes", body)
    kept = api.post("/api/queues/%2F/pk.bytes/get", {"count": 5, "ackmode": "ack_requeue_true", "encoding": "auto"})
    assert [m["payload"] for m in kept] == ["bbbbb", "ccccc"]
    # max-length with reject-publish: the API's publish answers as RabbitMQ's does for a nack
    api.put("/api/policies/%2F/full", {"pattern": "^pk\\.full$", "apply-to": "queues", "priority": 9,
                                       "definition": {"max-length": 2, "overflow": "reject-publish"}})
    api.put("/api/queues/%2F/pk.full", {"durable": False})
    assert publish_text(api, "pk.full", "1") and publish_text(api, "pk.full", "2")
    with pytest.raises(APIError) as rejected:
        publish_text(api, "pk.full", "3")
    assert rejected.value.status == 400
    assert rejected.value.reason == "rejected Unable to publish message. Check queue limits."
    assert api.get("/api/queues/%2F/pk.full")["messages"] == 2
    # apply-to: a policy for exchanges does not touch queues
    api.put("/api/policies/%2F/high", {"pattern": "^pk\\.bytes$", "apply-to": "exchanges", "priority": 5,
                                       "definition": {"max-length": 1}})
    assert api.get("/api/queues/%2F/pk.bytes")["policy"] == "low"
    # message-ttl by policy: messages expire; expires by policy: the unused queue goes away
    api.put("/api/policies/%2F/ttl", {"pattern": "^pk\\.ttl$", "apply-to": "queues", "priority": 9,
                                      "definition": {"message-ttl": 100}})
    api.put("/api/policies/%2F/gone", {"pattern": "^pk\\.gone$", "apply-to": "queues", "priority": 9,
                                       "definition": {"expires": 200}})
    api.put("/api/queues/%2F/pk.ttl", {"durable": False})
    api.put("/api/queues/%2F/pk.gone", {"durable": False})
    publish_text(api, "pk.ttl", "short-lived")
    assert wait_for(lambda: api.get("/api/queues/%2F/pk.ttl")["messages"] == 0)
    assert api.post("/api/queues/%2F/pk.ttl/get", {"count": 1, "ackmode": "ack_requeue_false",
                                                    "encoding": "auto"}) == []
    assert wait_for(lambda: "pk.gone" not in [q["name"] for q in api.get("/api/queues/%2F")])
    for name in ("low", "high", "ttl", "gone", "full"):
        assert api.delete(f"/api/policies/%2F/{name}") == 204
    for name in ("pk.bytes", "pk.other", "pk.ttl", "pk.full"):
        api.delete(f"/api/queues/%2F/{name}")


def test_single_objects_and_conditional_deletes(node: ThreadedNode, api: ManagementClient) -> None:
    conn = amqp(node)
    ch = conn.channel()
    ch.exchange_declare("one-x", "fanout", durable=True)
    ch.queue_declare("one-q")
    ch.queue_bind("one-q", "one-x")
    ch.basic_consume("one-q", lambda *a: None, consumer_tag="one-tag")
    exchange = api.get("/api/exchanges/%2F/one-x")
    assert {k: exchange[k] for k in ("name", "vhost", "type", "durable", "auto_delete", "internal")} == {
        "name": "one-x", "vhost": "/", "type": "fanout", "durable": True, "auto_delete": False, "internal": False}
    assert api.get("/api/exchanges/%2F/amq.default")["name"] == ""
    assert [c["consumer_tag"] for c in api.get("/api/consumers") if c["queue"]["name"] == "one-q"] == ["one-tag"]
    with pytest.raises(APIError) as in_use:
        api.delete("/api/queues/%2F/one-q?if-unused=true")
    assert in_use.value.status == 400
    with pytest.raises(APIError) as bound:
        api.delete("/api/exchanges/%2F/one-x?if-unused=true")
    assert bound.value.status == 400
    name = wait_for(lambda: [c["name"] for c in api.get("/api/connections") if c["user"] == "guest"])[0]
    quoted = requests.utils.quote(name, safe="")
    assert api.get(f"/api/connections/{quoted}")["client_properties"]["product"] == "Pika Python Client Library"
    assert [c["consumer_count"] for c in api.get(f"/api/connections/{quoted}/channels")] == [1]
    assert api.get("/api/users/guest")["tags"] == ["administrator"]
    assert {"user": "guest", "vhost": "/", "configure": ".*", "write": ".*", "read": ".*"} in \
        api.get("/api/users/guest/permissions")
    assert {"user": "guest", "vhost": "/", "configure": ".*", "write": ".*", "read": ".*"} in \
        api.get("/api/permissions")
    conn.close()
    assert wait_for(lambda: not api.get("/api/queues/%2F/one-q")["consumers"])
    assert api.delete("/api/queues/%2F/one-q?if-unused=true") == 204
    assert api.delete("/api/exchanges/%2F/one-x?if-unused=true") == 204
    with pytest.raises(APIError) as gone:
        api.get("/api/exchanges/%2F/one-x")
    assert gone.value.status == 404


def test_dead_letter_policy_added_after_confirm_keeps_bodies(node: ThreadedNode, api: ManagementClient) -> None:
    # Confirmed persistent messages in a durable queue without a DLX keep their bodies only in
    # the store; a policy that adds a DLX later must not dead-letter them empty.
    conn = amqp(node)
    ch = conn.channel()
    ch.confirm_delivery()
    ch.queue_declare("evict.q", durable=True)
    ch.queue_declare("evict.dlq", durable=True)
    for i in range(3):
        ch.basic_publish("", "evict.q", f"body-{i}".encode(), pika.BasicProperties(delivery_mode=2))
    held, _, _ = ch.basic_get("evict.q")  # delivered, unacknowledged while the policy arrives
    assert held is not None
    assert api.put("/api/policies/%2F/evict-dlx", {"pattern": "^evict\\.q$", "apply-to": "queues", "definition": {
        "dead-letter-exchange": "", "dead-letter-routing-key": "evict.dlq"}}) == 201
    ch.basic_nack(held.delivery_tag, requeue=False)
    for _ in range(2):
        method, _, _ = ch.basic_get("evict.q")
        ch.basic_reject(method.delivery_tag, requeue=False)
    bodies = []
    for _ in range(3):
        method, _, body = ch.basic_get("evict.dlq", auto_ack=True)
        bodies.append(body)
    assert sorted(bodies) == [b"body-0", b"body-1", b"body-2"]
    conn.close()
    api.delete("/api/policies/%2F/evict-dlx")


def requests_put(api: ManagementClient, path: str, body: dict) -> int:  # type: ignore[type-arg]
    try:
        return api.put(path, body)
    except APIError as error:
        return error.status


def test_connections_channels_consumers_and_close(node: ThreadedNode, api: ManagementClient) -> None:
    conn = amqp(node)
    ch = conn.channel()
    ch.queue_declare("cons-q")
    ch.basic_consume("cons-q", lambda *a: None, consumer_tag="ctag-1")
    connections = wait_for(lambda: [c for c in api.get("/api/connections") if c["user"] == "guest"])
    assert connections and connections[0]["protocol"] == "AMQP 0-9-1"
    assert connections[0]["client_properties"]["product"] == "Pika Python Client Library"
    channels = api.get("/api/channels")
    assert any(c["consumer_count"] == 1 for c in channels)
    consumers = api.get("/api/consumers/%2F")
    assert [c["consumer_tag"] for c in consumers if c["queue"]["name"] == "cons-q"] == ["ctag-1"]
    name = connections[0]["name"]
    assert api.delete(f"/api/connections/{requests.utils.quote(name, safe='')}",
                      headers={"X-Reason": "test close"}) == 204
    with pytest.raises(pika.exceptions.ConnectionClosedByBroker) as closed:
        for _ in range(50):
            conn.process_data_events(0.1)
    assert closed.value.reply_code == 320 and "test close" in closed.value.reply_text
    assert wait_for(lambda: not [c for c in api.get("/api/connections") if c["name"] == name])
    api.delete("/api/queues/%2F/cons-q")


def test_vhost_percent_encoding_and_permissions(node: ThreadedNode, api: ManagementClient) -> None:
    assert api.put("/api/vhosts/a%2Fb") == 201
    assert api.put("/api/vhosts/a%2Fb") == 204
    api.put("/api/permissions/a%2Fb/guest", {"configure": ".*", "write": ".*", "read": ".*"})
    api.put("/api/queues/a%2Fb/q", {})
    assert [q["vhost"] for q in api.get("/api/queues/a%2Fb")] == ["a/b"]
    assert api.get("/api/permissions/a%2Fb/guest")["configure"] == ".*"
    conn = amqp(node, vhost="a/b")
    conn.channel().queue_declare("q", passive=True)
    conn.close()
    assert api.delete("/api/vhosts/a%2Fb") == 204
    assert "a/b" not in [v["name"] for v in api.get("/api/vhosts")]


def test_health_checks_answer_without_credentials(node: ThreadedNode) -> None:
    url = node.http_url
    alarms = requests.get(f"{url}/api/health/checks/alarms", timeout=5)
    assert alarms.status_code == 200 and alarms.json() == {"status": "ok"}
    assert requests.get(f"{url}/api/health/checks/local-alarms", timeout=5).status_code == 200
    assert requests.get(f"{url}/api/health/checks/virtual-hosts", timeout=5).status_code == 200
    assert requests.get(f"{url}/api/health/checks/node-is-quorum-critical", timeout=5).status_code == 200
    assert requests.get(f"{url}/api/health/checks/port-listener/{node.amqp_port}", timeout=5).status_code == 200
    closed_port = requests.get(f"{url}/api/health/checks/port-listener/1", timeout=5)
    assert closed_port.status_code == 503 and closed_port.json()["status"] == "failed"
    alive = requests.get(f"{url}/api/aliveness-test/%2F", auth=("guest", "guest"), timeout=5)
    assert alive.json() == {"status": "ok"}
    assert requests.get(f"{url}/api/aliveness-test/%2F", timeout=5).status_code == 401


def test_health_check_details_only_with_credentials(node: ThreadedNode) -> None:
    url = node.http_url
    auth = ("guest", "guest")
    quorum = requests.get(f"{url}/api/health/checks/node-is-quorum-critical", auth=auth, timeout=5)
    assert quorum.json() == {"status": "ok", "reason": "single node cluster"}  # as RabbitMQ 3.10
    closed_port = requests.get(f"{url}/api/health/checks/port-listener/1", auth=auth, timeout=5)
    assert closed_port.status_code == 503
    assert closed_port.json()["missing"] == 1 and node.amqp_port in closed_port.json()["ports"]
    anonymous = requests.get(f"{url}/api/health/checks/port-listener/1", timeout=5).json()
    assert "ports" not in anonymous and "missing" not in anonymous
    for bad in ("abc", "0", "70000"):
        bad_port = requests.get(f"{url}/api/health/checks/port-listener/{bad}", timeout=5)
        assert bad_port.status_code == 400 and bad_port.json()["error"] == "bad_request"
    assert requests.get(f"{url}/api/aliveness-test/no-such-vhost", auth=auth, timeout=5).status_code == 404
    assert requests.get(f"{url}/api/nodes/nobody@nowhere", auth=auth, timeout=5).status_code == 404
    node_name = requests.get(f"{url}/api/nodes", auth=auth, timeout=5).json()[0]["name"]
    one = requests.get(f"{url}/api/nodes/{node_name}", auth=auth, timeout=5).json()
    assert one["running"] is True and one["mem_used"] > 0 and one["disk_free"] > 0
    assert one["db_dir"] and {"name": "PLAIN", "enabled": True} in one["auth_mechanisms"]
    assert {"mem_alarm", "disk_free_alarm", "fd_used", "sockets_used", "uptime", "partitions"} <= one.keys()


def test_protocol_listener_and_certificate_expiration_checks(tmp_path: Path) -> None:
    from cryptography.hazmat.primitives import serialization
    from cryptography.hazmat.primitives.asymmetric import ec

    from tests.unit.api.test_certificates import certificate

    # the node's TLS certificate expires in ten days
    expires = datetime.now(UTC) + timedelta(days=10)
    cert, key = tmp_path / "cert.pem", tmp_path / "key.pem"
    private_key = ec.generate_private_key(ec.SECP256R1())
    cert.write_bytes(certificate(expires, private_key))
    key.write_bytes(private_key.private_bytes(
        serialization.Encoding.PEM, serialization.PrivateFormat.PKCS8, serialization.NoEncryption()))
    with run_node(http_port=0) as plain:
        url = plain.http_url
        for alias in ("amqp", "amqp091", "http"):
            ok = requests.get(f"{url}/api/health/checks/protocol-listener/{alias}", timeout=5)
            assert ok.status_code == 200 and ok.json()["status"] == "ok"
        missing = requests.get(f"{url}/api/health/checks/protocol-listener/amqps", auth=("guest", "guest"), timeout=5)
        assert missing.status_code == 503
        assert missing.json()["missing"] == "amqp/ssl" and "amqp" in missing.json()["protocols"]
        # no TLS listener: no certificate to expire
        assert requests.get(f"{url}/api/health/checks/certificate-expiration/1/years", timeout=5).json() == {
            "status": "ok"}
    with run_node(http_port=0, tls_port=0, tls_cert=str(cert), tls_key=str(key)) as tls:
        url = tls.http_url
        assert requests.get(f"{url}/api/health/checks/protocol-listener/amqps", timeout=5).status_code == 200
        week = requests.get(f"{url}/api/health/checks/certificate-expiration/1/weeks", timeout=5)
        assert week.status_code == 200 and week.json() == {"status": "ok"}
        month = requests.get(f"{url}/api/health/checks/certificate-expiration/1/months", timeout=5)
        assert month.status_code == 503 and month.json() == {"status": "failed", "reason": "Certificates expiring"}
        detailed = requests.get(f"{url}/api/health/checks/certificate-expiration/2/weeks", auth=("guest", "guest"),
                                timeout=5).json()
        assert detailed["expired"] == [{"file": str(cert), "not_after": expires.replace(microsecond=0).isoformat()}]
        bad_unit = requests.get(f"{url}/api/health/checks/certificate-expiration/1/fortnights", timeout=5)
        assert bad_unit.status_code == 400 and "Supported units" in bad_unit.json()["reason"]
        assert requests.get(f"{url}/api/health/checks/certificate-expiration/x/weeks", timeout=5).status_code == 400


def test_health_checks_fail_with_503_during_a_resource_alarm() -> None:
    # a memory watermark of one byte: the node is always above it, so the memory alarm is on
    with run_node(http_port=0, limits=Limits(memory_high_watermark_bytes=1)) as alarmed:
        url = alarmed.http_url
        auth = ("guest", "guest")
        assert wait_for(lambda: requests.get(f"{url}/api/nodes", auth=auth, timeout=5).json()[0]["mem_alarm"])
        for check in ("alarms", "local-alarms"):
            anonymous = requests.get(f"{url}/api/health/checks/{check}", timeout=5)
            assert anonymous.status_code == 503
            assert anonymous.json() == {"status": "failed", "reason": "resource alarm(s) in effect"}
            detailed = requests.get(f"{url}/api/health/checks/{check}", auth=auth, timeout=5).json()
            assert {"node": "warren@localhost", "resource": "memory"} in detailed["alarms"]


def test_api_publish_is_answered_only_once_stored(tmp_path: Path) -> None:
    """RabbitMQ's API publishes with confirms: a 200 for a persistent message to a durable
    queue means it is on disk. Kill -9 right after the last answer loses none of them."""
    from tests.integration.conftest import start_server

    data_dir = tmp_path / "data"
    expected: list[str] = []
    for round_number in range(2):
        server = start_server(data_dir)
        try:
            url = f"http://127.0.0.1:{server.http_port}"
            http = requests.Session()
            http.auth = ("guest", "guest")
            assert http.get(f"{url}/api/queues/%2F/kept", timeout=10).status_code == (200 if expected else 404)
            http.put(f"{url}/api/queues/%2F/kept", json={"durable": True}, timeout=10)
            for i in range(200):
                body = f"r{round_number}-{i}"
                answer = http.post(f"{url}/api/exchanges/%2F/amq.default/publish", json={
                    "routing_key": "kept", "payload": body, "payload_encoding": "string",
                    "properties": {"delivery_mode": 2}}, timeout=10)
                assert answer.json() == {"routed": True}
                expected.append(body)
        finally:
            server.proc.kill()  # SIGKILL: no clean shutdown, no last flush
            server.proc.wait()
    server = start_server(data_dir)
    try:
        url = f"http://127.0.0.1:{server.http_port}"
        got = requests.post(f"{url}/api/queues/%2F/kept/get", json={
            "count": 1000, "ackmode": "ack_requeue_true", "encoding": "auto"}, auth=("guest", "guest"), timeout=10)
        assert [m["payload"] for m in got.json()] == expected
    finally:
        server.stop()


WEIRD_VALUES = [None, [], "x", 1.5, True, {"a": None}, [1], -1, 2**70, "true", {"x": [1, {"y": 2}]}]
BODY_FIELDS = {
    ("PUT", "/api/queues/%2F/fz.q"): ({}, ["durable", "auto_delete", "arguments"]),
    ("PUT", "/api/exchanges/%2F/fz.x"): ({}, ["type", "durable", "auto_delete", "internal", "arguments"]),
    ("POST", "/api/exchanges/%2F/amq.default/publish"): (
        {"routing_key": "fz", "payload": "p", "payload_encoding": "string", "properties": {}},
        ["routing_key", "payload", "payload_encoding", "properties"]),
    ("POST", "/api/queues/%2F/fz/get"): ({"count": 1, "ackmode": "ack_requeue_true", "encoding": "auto"},
                                         ["count", "ackmode", "encoding", "truncate"]),
    ("PUT", "/api/policies/%2F/fz.p"): ({"pattern": "^fz", "definition": {"max-length": 1}, "apply-to": "queues"},
                                        ["pattern", "definition", "priority", "apply-to"]),
    ("PUT", "/api/users/fz-user"): ({"password": "x", "tags": ""},
                                    ["password", "password_hash", "hashing_algorithm", "tags"]),
    ("PUT", "/api/permissions/%2F/fz-user"): ({"configure": ".*", "write": ".*", "read": ".*"},
                                              ["configure", "write", "read"]),
    ("POST", "/api/bindings/%2F/e/amq.direct/q/fz"): ({}, ["routing_key", "arguments"]),
    ("POST", "/api/definitions"): ({}, ["users", "vhosts", "permissions", "policies", "queues", "exchanges",
                                        "bindings"]),
}


def test_bad_bodies_get_400s_and_never_break_the_node() -> None:
    with run_node(http_port=0, limits=Limits(api_requests_per_second=10_000.0, api_burst=10_000)) as fuzzed:
        http = requests.Session()
        http.auth = ("guest", "guest")
        url = str(fuzzed.http_url)
        assert http.put(f"{url}/api/queues/%2F/fz", json={"durable": True}, timeout=5).status_code == 201
        server_errors = []
        for (method, path), (base, fields) in BODY_FIELDS.items():
            bodies = [{**base, field: value} for field in fields for value in WEIRD_VALUES]
            bodies += [{**base, "arguments": {"x-max-length": value}} for value in WEIRD_VALUES]
            for body in bodies:
                answer = http.request(method, url + path, json=body, timeout=5)
                if answer.status_code >= 500:
                    server_errors.append((method, path, body, answer.status_code, answer.text[:200]))
            for raw in ("[1]", '"x"', "1e999", "NaN", "[" * 100_000):
                answer = http.request(method, url + path, data=raw, timeout=5)
                if answer.status_code >= 500:
                    server_errors.append((method, path, raw[:20], answer.status_code, answer.text[:200]))
        assert server_errors == []
        too_big = http.put(f"{url}/api/policies/%2F/huge", json={"pattern": "x", "definition": {"max-length": 1},
                                                                   "priority": 2**70}, timeout=5)
        assert too_big.status_code == 400 and "out of range" in too_big.json()["reason"]
        bad_import = http.post(f"{url}/api/definitions", json={"queues": [{"name": "q"}]}, timeout=5)
        assert bad_import.status_code == 400 and bad_import.json()["reason"] == \
            "definitions queues[0] needs 'vhost' (a string)"
        # every later change still applies and is stored
        assert http.put(f"{url}/api/queues/%2F/after-fuzz", json={"durable": True}, timeout=5).status_code == 201
        assert http.post(f"{url}/api/bindings/%2F/e/amq.direct/q/after-fuzz", json={"routing_key": "k"},
                         timeout=5).status_code == 201
        assert http.get(f"{url}/api/health/checks/alarms", timeout=5).json() == {"status": "ok"}
        conn = amqp(fuzzed)
        assert conn.channel().queue_declare("after-fuzz", passive=True, durable=True)
        conn.close()


def test_health_checks_can_require_auth() -> None:
    with run_node(http_port=0, health_checks_require_auth=True) as guarded:
        url = guarded.http_url
        assert requests.get(f"{url}/api/health/checks/alarms", timeout=5).status_code == 401
        ok = requests.get(f"{url}/api/health/checks/alarms", auth=("guest", "guest"), timeout=5)
        assert ok.status_code == 200


def test_rate_limit_answers_429_with_retry_after() -> None:
    with run_node(http_port=0, limits=Limits(api_requests_per_second=1.0, api_burst=3)) as limited:
        url = limited.http_url
        statuses = [requests.get(f"{url}/api/overview", auth=("guest", "guest"), timeout=5) for _ in range(5)]
        assert [r.status_code for r in statuses[:3]] == [200, 200, 200]
        assert statuses[4].status_code == 429
        assert int(statuses[4].headers["Retry-After"]) >= 1
        # a load balancer's health checks still pass while API clients are held back
        for _ in range(10):
            assert requests.get(f"{url}/api/health/checks/alarms", timeout=5).status_code == 200
        assert requests.get(f"{url}/api/overview", auth=("guest", "guest"), timeout=5).status_code == 429


# the passwords of the users in the RabbitMQ export (/work/shared/fixtures/README.md)
FIXTURE_PASSWORDS = {"admin": "password", "rabbitmquser": "rabbitmqpass", "monitor": "monitorpass"}


def assert_users_log_in(node: ThreadedNode, document: dict) -> None:  # type: ignore[type-arg]
    """Every user of the export logs in over AMQP, into each vhost it has permissions in, and
    into the management API with its tags."""
    assert {u["name"] for u in document["users"]} == set(FIXTURE_PASSWORDS)
    for user, password in FIXTURE_PASSWORDS.items():
        vhosts = [p["vhost"] for p in document["permissions"] if p["user"] == user]
        assert vhosts, f"{user} has no vhost in the fixture"
        for vhost in vhosts:
            conn = amqp(node, user, password, vhost)
            assert conn.is_open
            conn.close()
        with pytest.raises(pika.exceptions.ProbableAuthenticationError):
            amqp(node, user, password + "-wrong", vhosts[0])
        whoami = requests.get(f"{node.http_url}/api/whoami", auth=(user, password), timeout=5)
        assert whoami.status_code == 200 and whoami.json()["name"] == user


def _sections(document: dict) -> dict:  # type: ignore[type-arg]
    """The parts of a definitions document an import reads, in a canonical order."""
    def key(item: dict) -> str:  # type: ignore[type-arg]
        return json.dumps(item, sort_keys=True)
    return {k: sorted(document[k], key=key) for k in
            ("users", "vhosts", "permissions", "policies", "queues", "exchanges", "bindings")}


def test_definitions_export_import_round_trip_into_a_fresh_node() -> None:
    document = json.loads(DEFINITIONS.read_text())
    with run_node(http_port=0) as first, run_node(http_port=0) as second:
        a = ManagementClient(str(first.http_url), "guest", "guest")
        b = ManagementClient(str(second.http_url), "guest", "guest")
        a.post("/api/definitions", document)
        exported = a.get("/api/definitions")
        # nothing skipped (the export holds no quorum queue): 204, as RabbitMQ answers an import
        assert b.request("POST", "/api/definitions", exported) == (204, None)
        again = b.get("/api/definitions")
        assert _sections(again) == _sections(exported)
        # the users came across with their RabbitMQ password hashes: they log in on the second node
        assert_users_log_in(second, document)
        # the policies apply on the second node too, and the topology routes
        audit = b.get("/api/queues/hyperion/audit.log")
        assert audit["policy"] == "audit-limits"
        assert audit["effective_policy_definition"] == {"max-length": 500000, "overflow": "drop-head"}
        # the document grants guest nothing on hyperion; as on RabbitMQ, an administrator needs
        # write permission to publish there through the API
        b.put("/api/permissions/hyperion/guest", {"configure": "", "write": ".*", "read": ""})
        assert b.post("/api/exchanges/hyperion/events/publish", {
            "routing_key": "order.1.created", "payload": "o", "payload_encoding": "string",
            "properties": {}}) == {"routed": True}
        assert b.get("/api/queues/hyperion/audit.log")["messages"] == 1
        # one vhost's definitions (RabbitMQ's per-vhost export: no "vhost" keys) copied to another
        hyperion = b.get("/api/definitions/hyperion")
        assert set(hyperion) == {"rabbit_version", "parameters", "policies", "queues", "exchanges", "bindings"}
        assert {"name": "audit.log", "durable": True, "auto_delete": False, "arguments": {
            "x-max-length-bytes": 104857600, "x-message-ttl": 86400000, "x-queue-type": "classic"}} in hyperion["queues"]
        assert all("vhost" not in item for key in ("policies", "queues", "exchanges", "bindings") for item in hyperion[key])
        b.put("/api/vhosts/copy")
        assert b.request("POST", "/api/definitions/copy", hyperion) == (204, None)
        copy = b.get("/api/definitions/copy")
        assert {k: sorted(map(json.dumps, copy[k])) for k in ("policies", "queues", "exchanges", "bindings")} == \
            {k: sorted(map(json.dumps, hyperion[k])) for k in ("policies", "queues", "exchanges", "bindings")}
        assert b.get("/api/queues/copy/audit.log")["policy"] == "audit-limits"


def test_definitions_import_lists_the_runtime_parameters_it_does_not_apply(api: ManagementClient) -> None:
    document = {
        "vhosts": [{"name": "params-vh"}],
        "parameters": [{"value": {"uri": "amqp://upstream"}, "vhost": "params-vh", "component": "federation-upstream",
                        "name": "up"}],
        "global_parameters": [{"name": "cluster_name", "value": "prod"},
                              {"name": "internal_cluster_id", "value": "rabbitmq-cluster-id-x"}],
        "topic_permissions": [{"user": "guest", "vhost": "params-vh", "exchange": "amq.topic", "write": "^a",
                               "read": ".*"}],
    }
    status, report = api.request("POST", "/api/definitions", document)
    assert status == 200 and report == {"skipped_queues": [], "skipped_parameters": [
        {"component": "federation-upstream", "vhost": "params-vh", "name": "up"},
        {"component": "global", "vhost": "", "name": "cluster_name"}],
        "skipped_topic_permissions": [{"user": "guest", "vhost": "params-vh", "exchange": "amq.topic"}]}
    api.get("/api/vhosts/params-vh")  # the rest was imported
    api.delete("/api/vhosts/params-vh")


def test_definitions_import_of_a_real_rabbitmq_export(node: ThreadedNode, api: ManagementClient) -> None:
    document = json.loads(DEFINITIONS.read_text())
    report = api.post("/api/definitions", document)
    quorum = {(q["vhost"], q["name"]) for q in document["queues"]
              if q["arguments"].get("x-queue-type") == "quorum"}
    assert {(q["vhost"], q["name"]) for q in report["skipped_queues"]} == quorum
    assert "skipped_parameters" not in report  # its only global parameter is RabbitMQ's internal cluster id
    users = {u["name"]: u for u in api.get("/api/users")}
    for user in document["users"]:
        assert users[user["name"]]["tags"] == user["tags"]
    for vhost in document["vhosts"]:
        api.get(f"/api/vhosts/{requests.utils.quote(vhost['name'], safe='')}")
    queues = {(q["vhost"], q["name"]): q for q in api.get("/api/queues")}
    for q in document["queues"]:
        if (q["vhost"], q["name"]) not in quorum:
            assert queues[(q["vhost"], q["name"])]["arguments"] == q["arguments"]
    exchanges = {(x["vhost"], x["name"]) for x in api.get("/api/exchanges")}
    assert {(x["vhost"], x["name"]) for x in document["exchanges"]} <= exchanges
    policies = {(p["vhost"], p["name"]) for p in api.get("/api/policies")}
    assert {(p["vhost"], p["name"]) for p in document["policies"]} <= policies
    bindings = {(b["vhost"], b["source"], b["destination"], b["routing_key"]) for b in api.get("/api/bindings")}
    for b in document["bindings"]:
        if (b["vhost"], b["destination"]) not in quorum:
            assert (b["vhost"], b["source"], b["destination"], b["routing_key"]) in bindings
    assert_users_log_in(node, document)
    exported = api.get("/api/definitions")
    assert {u["name"] for u in document["users"]} <= {u["name"] for u in exported["users"]}
    assert {(q["vhost"], q["name"]) for q in exported["queues"]} >= {
        (q["vhost"], q["name"]) for q in document["queues"] if (q["vhost"], q["name"]) not in quorum}
