"""The /api/... endpoints, RabbitMQ's paths, shapes and tag rules, over a ManagementBackend."""

from __future__ import annotations

import base64
import binascii
import json
from datetime import UTC, datetime, timedelta
from typing import Any
from urllib.parse import quote

from aiohttp import web

from warren.api.backend import ManagementBackend, PublishNotStored, PublishRejected
from warren.api.certificates import CertificateError, pem_expiry_dates
from warren.api.cluster_backend import ClusterNotEnabled, ClusterRefused
from warren.api.definitions import validate_document
from warren.api.http import (
    Caller,
    HTTPProblem,
    Router,
    bad_request,
    body_int,
    body_object,
    body_string,
    flag,
    forbidden,
    header_text,
    json_response,
    not_found,
    read_json,
)
from warren.api.listing import shape_listing, shape_object
from warren.api.rates import RateTracker
from warren.errors import AMQPError, ClusterUnavailable

NO_CONTENT = 204
ACCEPTED = 202
# RabbitMQ's names for the protocol-listener check
PROTOCOL_ALIASES = {"amqp091": "amqp", "amqp0.9.1": "amqp", "amqp0-9-1": "amqp", "amqps": "amqp/ssl",
                    "amqp091/ssl": "amqp/ssl", "https": "http/ssl"}
QUORUM_CRITICAL_REASON = "There are quorum queues that would lose their quorum if the target node is shut down"
CERTIFICATE_UNITS = {"days": 1, "weeks": 7, "months": 30, "years": 365}
GET_ACKMODES = {"ack_requeue_true": True, "reject_requeue_true": True,
                "ack_requeue_false": False, "reject_requeue_false": False}


def _created(existed: bool) -> web.Response:
    return web.Response(status=NO_CONTENT if existed else 201)


class Endpoints:
    def __init__(self, backend: ManagementBackend, rates: RateTracker) -> None:
        self.b = backend
        self.rates = rates

    # ---- access rules (as RabbitMQ's management plugin) --------------------------------
    def _visible_vhosts(self, caller: Caller) -> set[str]:
        names = {v["name"] for v in self.b.vhosts()}
        if caller.is_monitoring:
            return names
        return {p["vhost"] for p in self.b.permissions() if p["user"] == caller.name} & names

    def _require_vhost(self, caller: Caller, vhost: str) -> None:
        if vhost not in {v["name"] for v in self.b.vhosts()}:
            raise not_found()
        if not caller.is_admin and vhost not in self._visible_vhosts(caller):
            raise forbidden(f"access to vhost '{vhost}' refused for user '{caller.name}'")

    def _require_vhost_write(self, caller: Caller, vhost: str) -> None:
        """Changing objects needs vhost access; monitoring alone is read-only."""
        if vhost not in {v["name"] for v in self.b.vhosts()}:
            raise not_found()
        if caller.is_admin:
            return
        if vhost not in {p["vhost"] for p in self.b.permissions() if p["user"] == caller.name}:
            raise forbidden(f"access to vhost '{vhost}' refused for user '{caller.name}'")

    def _require_permission(self, caller: Caller, vhost: str, *needs: tuple[str, str, str]) -> None:
        """Each (permission, kind, name) in ``needs``, checked by the function AMQP methods use.

        RabbitMQ's API runs every resource operation as the AMQP method on behalf of the caller
        (``rabbit_mgmt_util:direct_request`` / ``with_channel``), so the method's permission
        checks apply to administrators too: the tag opens the vhost gate, not its resources.
        A refusal is 401 ``not_authorised`` as in RabbitMQ 3.10+. Its reason is the AMQP
        refusal's text ("read access to queue 'q' in vhost 'v' refused for user 'u'"), which
        RabbitMQ gives for get and publish; for declare, delete and bind it says only "Access
        refused.", and naming the missing permission is more use to the caller.
        """
        for permission, kind, name in needs:
            self.b.check_permission(caller.name, vhost, permission, kind, name)

    @staticmethod
    def _admin(caller: Caller) -> None:
        if not caller.is_admin:
            raise forbidden("Not administrator user")

    @staticmethod
    def _monitor(caller: Caller) -> None:
        if not caller.is_monitoring:
            raise forbidden("Not monitor user")

    def _filter(self, caller: Caller, items: list[dict[str, Any]]) -> list[dict[str, Any]]:
        if caller.is_monitoring:
            return items
        visible = self._visible_vhosts(caller)
        return [i for i in items if i.get("vhost") in visible]

    @staticmethod
    def _one(items: list[dict[str, Any]], **match: Any) -> dict[str, Any]:
        for item in items:
            if all(item.get(k) == v for k, v in match.items()):
                return item
        raise not_found()

    # ---- overview, nodes, health ------------------------------------------------------
    async def overview(self, request: web.Request, caller: Caller) -> web.Response:
        data = self.b.overview()
        view = await self.b.cluster_view()
        if view is not None:  # totals across the cluster: each queue's counts from its home
            queues = [view.queue(q) for q in self.b.queues(None)]
            data["object_totals"] = {
                **data["object_totals"],
                "connections": data["object_totals"]["connections"] + len(view.connections),
                "channels": data["object_totals"]["channels"] + len(view.channels),
                "consumers": sum(int(q["consumers"]) for q in queues),
            }
            data["queue_totals"] = {k: sum(int(q[k]) for q in queues)
                                    for k in ("messages", "messages_ready", "messages_unacknowledged")}
            data["listeners"] = [*data["listeners"], *view.listeners()]
        data["message_stats"] = self.rates.message_stats()
        data["queue_totals"] = {**data["queue_totals"], **self.rates.depths.totals_details()}
        data["statistics_db_event_queue"] = 0
        data["rates_mode"] = "basic"
        data["disable_stats"] = False
        data["enable_queue_totals"] = False
        data["sample_retention_policies"] = {"global": [600, 3600, 28800, 86400], "basic": [600, 3600],
                                             "detailed": [600]}
        data["churn_rates"] = self.rates.churn_rates()
        data["exchange_types"] = [{"name": t} for t in ("direct", "fanout", "headers", "topic")]
        if caller.is_monitoring:  # as RabbitMQ: where the node listens is for monitors and administrators
            data["contexts"] = web_contexts(self.b.node_name(), self.b.listeners())
        else:
            data.pop("listeners", None)
        return shown(request, data)

    async def whoami(self, request: web.Request, caller: Caller) -> web.Response:
        return json_response({"name": caller.name, "tags": sorted(caller.tags)})

    async def _nodes(self) -> list[dict[str, Any]]:
        view = await self.b.cluster_view()
        return view.nodes if view is not None else self.b.nodes()

    async def _queues(self, vhost: str | None) -> list[dict[str, Any]]:
        """The queues with the counts of their home nodes (in a cluster)."""
        queues = self.b.queues(vhost)
        view = await self.b.cluster_view()
        return queues if view is None else [view.queue(q) for q in queues]

    async def _connections(self) -> list[dict[str, Any]]:
        view = await self.b.cluster_view()
        return self.b.connections() + (view.connections if view is not None else [])

    async def _channels(self) -> list[dict[str, Any]]:
        view = await self.b.cluster_view()
        return self.b.channels() + (view.channels if view is not None else [])

    async def nodes(self, request: web.Request, caller: Caller) -> web.Response:
        self._monitor(caller)
        return listed(request, await self._nodes())

    async def node(self, request: web.Request, caller: Caller, name: str) -> web.Response:
        self._monitor(caller)
        return shown(request, self._one(await self._nodes(), name=name))

    async def health_alarms(self, request: web.Request, caller: Caller | None) -> web.Response:
        alarms = self.b.alarms()
        if not alarms:
            return json_response({"status": "ok"})
        body: dict[str, Any] = {"status": "failed", "reason": "resource alarm(s) in effect"}
        if caller is not None:
            body["alarms"] = [{"node": self.b.node_name(), "resource": a} for a in alarms]
        return json_response(body, 503)

    async def node_health(self, request: web.Request, caller: Caller, node: str | None = None) -> web.Response:
        """RabbitMQ's deprecated /api/healthchecks/node[/{node}] (``rabbit_health_check:local``):
        of its checks (channels, queues, alarms, partitions) only an alarm can fail on Warren."""
        if node is not None and node != self.b.node_name():
            raise not_found()
        alarms = self.b.alarms()
        if alarms:
            return json_response({"status": "failed", "reason": f"resource alarm(s) in effect: {', '.join(alarms)}"},
                                 503)
        return json_response({"status": "ok"})

    async def health_ok(self, request: web.Request, caller: Caller | None) -> web.Response:
        return json_response({"status": "ok"})

    async def health_port(self, request: web.Request, caller: Caller | None, port: str) -> web.Response:
        if not port.isdigit() or not 0 < int(port) < 65536:
            raise bad_request(f"invalid port '{port}'")
        if int(port) in self.b.listener_ports():
            return json_response({"status": "ok", "port": int(port)})
        body: dict[str, Any] = {"status": "failed", "reason": f"No active listener on port {port}"}
        if caller is not None:
            body["missing"] = int(port)
            body["ports"] = self.b.listener_ports()
        return json_response(body, 503)

    async def health_protocol(self, request: web.Request, caller: Caller | None, protocol: str) -> web.Response:
        name = PROTOCOL_ALIASES.get(protocol.lower(), protocol.lower())
        active = sorted({str(listener["protocol"]) for listener in self.b.listeners()})
        if name in active:
            return json_response({"status": "ok", "protocol": name})
        body: dict[str, Any] = {"status": "failed", "reason": f"No active listener for protocol {name}"}
        if caller is not None:
            body["missing"] = name
            body["protocols"] = active
        return json_response(body, 503)

    async def health_certificates(self, request: web.Request, caller: Caller | None, within: str,
                                  unit: str) -> web.Response:
        if not within.isdigit():
            raise bad_request("Invalid expiration value.")
        if unit not in CERTIFICATE_UNITS:
            raise bad_request("Time unit not recognised. Supported units: days, weeks, months, years.")
        horizon = datetime.now(UTC) + timedelta(days=int(within) * CERTIFICATE_UNITS[unit])
        expiring: list[dict[str, str]] = []
        for path in self.b.certificate_files():
            try:
                with open(path, "rb") as pem:
                    dates = pem_expiry_dates(pem.read())
            except (OSError, CertificateError) as error:
                expiring.append({"file": path, "error": str(error)})
                continue
            expiring += [{"file": path, "not_after": d.isoformat()} for d in dates if d <= horizon]
        if not expiring:
            return json_response({"status": "ok"})
        body: dict[str, Any] = {"status": "failed", "reason": "Certificates expiring"}
        if caller is not None:
            body["expired"] = expiring
        return json_response(body, 503)

    async def health_quorum_critical(self, request: web.Request, caller: Caller | None) -> web.Response:
        critical = self.b.quorum_critical()
        if critical is None:  # standalone
            return json_response({"status": "ok", "reason": "single node cluster"} if caller else {"status": "ok"})
        if not critical:
            return json_response({"status": "ok"})
        body: dict[str, Any] = {"status": "failed", "reason": QUORUM_CRITICAL_REASON}
        if caller is not None:
            body["queues"] = critical
        return json_response(body, 503)

    async def aliveness(self, request: web.Request, caller: Caller, vhost: str) -> web.Response:
        self._require_vhost_write(caller, vhost)
        # RabbitMQ declares, publishes and gets over a channel of the caller's
        self._require_permission(caller, vhost, ("configure", "queue", "aliveness-test"),
                                 ("write", "exchange", ""), ("read", "queue", "aliveness-test"))
        await self.b.declare_queue(vhost, "aliveness-test", False, False, {})
        self.b.publish(vhost, "", "aliveness-test", b"test_message", {})
        got = self.b.get_messages(vhost, "aliveness-test", 1, False)
        if not got or got[0]["payload"] != b"test_message":
            return json_response({"status": "failed", "reason": "message did not arrive"}, 503)
        return json_response({"status": "ok"})

    # ---- connections, channels, consumers ----------------------------------------------
    def _own_or_all(self, caller: Caller, items: list[dict[str, Any]]) -> list[dict[str, Any]]:
        if caller.is_monitoring:
            return items
        return [i for i in items if i.get("user") == caller.name]

    async def connections(self, request: web.Request, caller: Caller, vhost: str | None = None) -> web.Response:
        items = self._own_or_all(caller, await self._connections())
        if vhost is not None:
            self._require_vhost(caller, vhost)
            items = [c for c in items if c["vhost"] == vhost]
        return listed(request, items)

    async def connection(self, request: web.Request, caller: Caller, name: str) -> web.Response:
        found = self._one(self._own_or_all(caller, await self._connections()), name=name)
        if request.method == "DELETE":
            if not caller.is_admin and found.get("user") != caller.name:
                raise forbidden("Not administrator user")
            if found["node"] != self.b.node_name():
                raise bad_request(f"connection '{name}' is on node '{found['node']}': close it through "
                                  "that node's management API")
            reason = header_text(request, "X-Reason", "Closed via management plugin")
            self.b.close_connection(name, reason)
            return web.Response(status=NO_CONTENT)
        return shown(request, found)

    async def connection_channels(self, request: web.Request, caller: Caller, name: str) -> web.Response:
        self._one(self._own_or_all(caller, await self._connections()), name=name)
        return listed(request, [c for c in await self._channels() if c["connection_details"]["name"] == name])

    async def channels(self, request: web.Request, caller: Caller, vhost: str | None = None) -> web.Response:
        items = self._own_or_all(caller, await self._channels())
        if vhost is not None:
            self._require_vhost(caller, vhost)
            items = [c for c in items if c["vhost"] == vhost]
        return listed(request, items)

    async def channel(self, request: web.Request, caller: Caller, name: str) -> web.Response:
        return shown(request, self._one(self._own_or_all(caller, await self._channels()), name=name))

    async def cluster_name(self, request: web.Request, caller: Caller) -> web.Response:
        if request.method == "PUT":
            self._admin(caller)
            raise bad_request("Warren's cluster name is the node name until clustering arrives; it cannot be set")
        return json_response({"name": self.b.overview()["cluster_name"]})

    async def none_defined(self, request: web.Request, caller: Caller, **path: str) -> web.Response:
        """Runtime parameters, operator policies, limits, topic permissions: Warren has none, and
        says so with RabbitMQ's empty listing; setting one is refused with a reason."""
        if request.method != "GET":
            self._admin(caller)
            raise bad_request(f"{request.path} is not supported by Warren")
        if len(path) == 3:  # one named object: there is none
            raise not_found()
        return listed(request, [])

    async def extensions(self, request: web.Request, caller: Caller) -> web.Response:
        return json_response([])

    async def consumers(self, request: web.Request, caller: Caller, vhost: str | None = None) -> web.Response:
        items = self.b.consumers()
        if vhost is not None:
            self._require_vhost(caller, vhost)
            items = [c for c in items if c["queue"]["vhost"] == vhost]
        if not caller.is_monitoring:
            visible = self._visible_vhosts(caller)
            items = [c for c in items if c["queue"]["vhost"] in visible]
        return listed(request, items)

    # ---- vhosts --------------------------------------------------------------------------
    async def vhosts(self, request: web.Request, caller: Caller) -> web.Response:
        visible = self._visible_vhosts(caller)
        return listed(request, [{**v, **self.rates.depths.totals_details(v["name"])} for v in self.b.vhosts()
                                if caller.is_admin or v["name"] in visible])

    async def vhost(self, request: web.Request, caller: Caller, vhost: str) -> web.Response:
        if request.method == "PUT":
            self._admin(caller)
            body = await read_json(request)
            # RabbitMQ 3.10 takes it at the top; later versions also under "metadata"
            queue_type = body.get("default_queue_type", (body.get("metadata") or {}).get("default_queue_type", ""))
            if queue_type not in ("", "classic", "quorum"):
                raise bad_request(f"default_queue_type must be 'classic' or 'quorum', not {queue_type!r}")
            created = await self.b.put_vhost(vhost, queue_type)
            if created:  # as RabbitMQ's API: the user who creates a vhost gets full access to it
                await self.b.put_permission(vhost, caller.name, ".*", ".*", ".*")
            return _created(not created)
        if request.method == "DELETE":
            self._admin(caller)
            await self.b.delete_vhost(vhost)
            return web.Response(status=NO_CONTENT)
        self._require_vhost(caller, vhost)
        return shown(request, {**self._one(self.b.vhosts(), name=vhost), **self.rates.depths.totals_details(vhost)})

    async def vhost_permissions(self, request: web.Request, caller: Caller, vhost: str) -> web.Response:
        self._admin(caller)
        self._one(self.b.vhosts(), name=vhost)
        return listed(request, [p for p in self.b.permissions() if p["vhost"] == vhost])

    # ---- users and permissions ------------------------------------------------------------
    @staticmethod
    def _user_shape(user: dict[str, Any]) -> dict[str, Any]:
        return {"name": user["name"], "password_hash": user["password_hash"],
                "hashing_algorithm": user["hashing_algorithm"], "tags": user["tags"], "limits": {}}

    async def users(self, request: web.Request, caller: Caller) -> web.Response:
        self._admin(caller)
        return listed(request, [self._user_shape(u) for u in self.b.users()])

    async def user(self, request: web.Request, caller: Caller, user: str) -> web.Response:
        self._admin(caller)
        if request.method == "PUT":
            body = await read_json(request)
            tags = body.get("tags", "")
            if isinstance(tags, str):
                tags = [t.strip() for t in tags.split(",") if t.strip()]
            if not isinstance(tags, list):
                raise bad_request("tags must be a string or a list")
            password = body.get("password")
            password_hash = body.get("password_hash")
            algorithm = body.get("hashing_algorithm")
            for key, value in (("password", password), ("password_hash", password_hash),
                               ("hashing_algorithm", algorithm)):
                if value is not None and not isinstance(value, str):
                    raise bad_request(f"{key} must be a string")
            existed = not await self.b.put_user(user, password, password_hash, algorithm, [str(t) for t in tags])
            return _created(existed)
        if request.method == "DELETE":
            await self.b.delete_user(user)
            return web.Response(status=NO_CONTENT)
        return shown(request, self._user_shape(self._one(self.b.users(), name=user)))

    async def users_bulk_delete(self, request: web.Request, caller: Caller) -> web.Response:
        """``{"users": [...]}``. Every name is checked first: one that does not exist is a 400
        and nothing is deleted (RabbitMQ deletes the names before it, then answers 400)."""
        self._admin(caller)
        names = (await read_json(request)).get("users")
        if not isinstance(names, list) or not all(isinstance(n, str) for n in names):
            raise bad_request("the body needs 'users': a list of user names")
        existing = {u["name"] for u in self.b.users()}
        missing = [n for n in names if n not in existing]
        if missing:
            raise bad_request(f"no such user(s): {', '.join(missing)}; nothing was deleted")
        for name in dict.fromkeys(names):
            await self.b.delete_user(name)
        return web.Response(status=NO_CONTENT)

    async def user_permissions(self, request: web.Request, caller: Caller, user: str) -> web.Response:
        self._admin(caller)
        self._one(self.b.users(), name=user)
        return listed(request, [p for p in self.b.permissions() if p["user"] == user])

    async def permissions(self, request: web.Request, caller: Caller) -> web.Response:
        self._admin(caller)
        return listed(request, self.b.permissions())

    async def permission(self, request: web.Request, caller: Caller, vhost: str, user: str) -> web.Response:
        self._admin(caller)
        if request.method == "PUT":
            body = await read_json(request)
            values = [body.get(k) for k in ("configure", "write", "read")]
            if not all(isinstance(v, str) for v in values):
                raise bad_request("configure, write and read must be regular expressions (strings)")
            configure, write, read = (str(v) for v in values)
            existed = any(p["user"] == user and p["vhost"] == vhost for p in self.b.permissions())
            await self.b.put_permission(vhost, user, configure, write, read)
            return _created(existed)
        if request.method == "DELETE":
            await self.b.delete_permission(vhost, user)
            return web.Response(status=NO_CONTENT)
        return shown(request, self._one(self.b.permissions(), vhost=vhost, user=user))

    # ---- exchanges ----------------------------------------------------------------------------
    async def exchanges(self, request: web.Request, caller: Caller, vhost: str | None = None) -> web.Response:
        if vhost is not None:
            self._require_vhost(caller, vhost)
        return listed(request, self._filter(caller, self.b.exchanges(vhost)))

    async def exchange(self, request: web.Request, caller: Caller, vhost: str, name: str) -> web.Response:
        name = _exchange_name(name)
        if request.method == "GET":
            self._require_vhost(caller, vhost)
            found = self._one(self.b.exchanges(vhost), name=name)
            return shown(request, found)
        self._require_vhost_write(caller, vhost)
        if request.method == "DELETE":  # a missing exchange is 404 whatever the permissions, as RabbitMQ
            self._one(self.b.exchanges(vhost), name=name)
        self._require_permission(caller, vhost, ("configure", "exchange", name))
        if request.method == "PUT":
            body = await read_json(request)
            existed = any(x["name"] == name for x in self.b.exchanges(vhost))
            # absent keys take exchange.declare's defaults, as RabbitMQ's API does: direct, transient
            await self.b.declare_exchange(vhost, name, body_string(body, "type", "direct"), _bool(body, "durable"),
                                    _bool(body, "auto_delete"), _bool(body, "internal"),
                                    body_object(body, "arguments"))
            return _created(existed)
        await self.b.delete_exchange(vhost, name, flag(request, "if-unused"))
        return web.Response(status=NO_CONTENT)

    async def exchange_publish(self, request: web.Request, caller: Caller, vhost: str, name: str) -> web.Response:
        name = _exchange_name(name)
        self._require_vhost_write(caller, vhost)
        self._require_permission(caller, vhost, ("write", "exchange", name))
        body = await read_json(request)
        for key in ("routing_key", "payload", "payload_encoding", "properties"):
            if key not in body:
                raise bad_request(f"'{key}' is required in the publish body")
        payload = body_string(body, "payload")
        if body["payload_encoding"] == "base64":
            try:
                data = base64.b64decode(payload, validate=True)
            except (binascii.Error, TypeError, ValueError):
                raise bad_request("payload is not valid base64") from None
        elif body["payload_encoding"] == "string":
            data = str(payload).encode("utf-8")
        else:
            raise bad_request("payload_encoding must be 'string' or 'base64'")
        properties = dict(body_object(body, "properties"))
        if "delivery_mode" in properties:
            properties["delivery_mode"] = body_int(properties, "delivery_mode", 1)
        try:
            routed = await self.b.publish_confirmed(vhost, name, body_string(body, "routing_key"), data, properties)
        except AMQPError as error:
            # RabbitMQ publishes through a channel and reports the channel error as a 400
            raise bad_request(f"{int(error.code)} {error.reply_text()}") from None
        except PublishRejected:
            # RabbitMQ publishes with confirms and answers a nack so (3.10's exact text)
            raise bad_request("rejected Unable to publish message. Check queue limits.") from None
        except PublishNotStored as error:
            return json_response({"error": "not_stored", "reason": f"the message was not confirmed: {error}"}, 503)
        return json_response({"routed": routed})

    async def exchange_bindings(self, request: web.Request, caller: Caller, vhost: str, name: str,
                                direction: str) -> web.Response:
        name = _exchange_name(name)
        self._require_vhost(caller, vhost)
        self._one(self.b.exchanges(vhost), name=name)
        if direction not in ("source", "destination"):
            raise not_found()
        items = self.b.bindings(vhost)
        if direction == "source":
            items = [b for b in items if b["source"] == name]
        else:
            items = [b for b in items if b["destination_type"] == "exchange" and b["destination"] == name]
        return listed(request, items)

    # ---- queues ---------------------------------------------------------------------------------
    def _with_rates(self, queue: dict[str, Any]) -> dict[str, Any]:
        queue.update(self.rates.depths.details(queue["vhost"], queue["name"]))
        return queue

    async def queues(self, request: web.Request, caller: Caller, vhost: str | None = None) -> web.Response:
        if vhost is not None:
            self._require_vhost(caller, vhost)
        return listed(request, [self._with_rates(q) for q in self._filter(caller, await self._queues(vhost))])

    async def queue(self, request: web.Request, caller: Caller, vhost: str, name: str) -> web.Response:
        if request.method == "GET":
            self._require_vhost(caller, vhost)
            found = self._one(await self._queues(vhost), name=name)
            found["consumer_details"] = [c for c in self.b.consumers()
                                         if c["queue"] == {"name": name, "vhost": vhost}]
            return shown(request, self._with_rates(found))
        self._require_vhost_write(caller, vhost)
        if request.method == "DELETE":  # a missing queue is 404 whatever the permissions, as RabbitMQ
            self._one(self.b.queues(vhost), name=name)
        self._require_permission(caller, vhost, ("configure", "queue", name))
        if request.method == "PUT":
            body = await read_json(request)
            arguments = body_object(body, "arguments")
            existed = any(q["name"] == name for q in self.b.queues(vhost))
            # absent keys take queue.declare's defaults, as RabbitMQ's API does: transient
            await self.b.declare_queue(vhost, name, _bool(body, "durable"), _bool(body, "auto_delete"), arguments)
            return _created(existed)
        await self.b.delete_queue(vhost, name, flag(request, "if-unused"), flag(request, "if-empty"))
        return web.Response(status=NO_CONTENT)

    async def queue_contents(self, request: web.Request, caller: Caller, vhost: str, name: str) -> web.Response:
        self._require_vhost_write(caller, vhost)
        self._one(self.b.queues(vhost), name=name)  # 404 first, as RabbitMQ's DELETE
        self._require_permission(caller, vhost, ("read", "queue", name))
        self.b.purge_queue(vhost, name)
        return web.Response(status=NO_CONTENT)

    async def queue_get(self, request: web.Request, caller: Caller, vhost: str, name: str) -> web.Response:
        self._require_vhost_write(caller, vhost)
        self._require_permission(caller, vhost, ("read", "queue", name))
        body = await read_json(request)
        ackmode = body.get("ackmode")
        if not isinstance(ackmode, str) or ackmode not in GET_ACKMODES:
            raise bad_request(f"ackmode must be one of {', '.join(GET_ACKMODES)}")
        encoding = body.get("encoding", "auto")
        if encoding not in ("auto", "base64"):
            raise bad_request("encoding must be 'auto' or 'base64'")
        count = body_int(body, "count", 1)
        truncate = body_int(body, "truncate", -1) if body.get("truncate") is not None else None
        if truncate is not None and truncate < 0:
            raise bad_request("'truncate' must not be negative")
        messages = self.b.get_messages(vhost, name, max(0, min(count, 1000)), GET_ACKMODES[ackmode])
        shown = []
        for m in messages:
            payload: bytes = m["payload"]
            if truncate is not None:
                payload = payload[:truncate]
            text: str | None = None
            if encoding == "auto":
                try:
                    text = payload.decode("utf-8")
                except UnicodeDecodeError:
                    text = None
            shown.append({**m, "payload": text if text is not None else base64.b64encode(payload).decode(),
                          "payload_encoding": "string" if text is not None else "base64"})
        return json_response(shown)

    async def quorum_status(self, request: web.Request, caller: Caller, vhost: str, name: str) -> web.Response:
        """Each member's Raft state of a quorum queue (``rabbitmq-queues quorum_status``)."""
        self._require_vhost(caller, vhost)
        return json_response(await self.b.quorum_status(vhost, name))

    async def quorum_add_member(self, request: web.Request, caller: Caller, vhost: str, name: str) -> web.Response:
        """``{"node": N}``: rabbitmq-queues add_member. 204 once N is a voter, 202 while it
        is still catching up (the change carries on)."""
        return await self._quorum_member(request, caller, vhost, name, add=True)

    async def quorum_delete_member(self, request: web.Request, caller: Caller, vhost: str, name: str) -> web.Response:
        """``{"node": N}``: rabbitmq-queues delete_member. 204 once N has left the group."""
        return await self._quorum_member(request, caller, vhost, name, add=False)

    async def _quorum_member(self, request: web.Request, caller: Caller, vhost: str, name: str,
                             add: bool) -> web.Response:
        self._admin(caller)
        self._require_vhost(caller, vhost)
        node = (await read_json(request)).get("node")
        if not isinstance(node, str) or not node:
            raise bad_request("the body needs 'node': the name of a cluster member")
        done = await self.b.quorum_member(vhost, name, node, add)
        return web.Response(status=NO_CONTENT if done else ACCEPTED)

    async def quorum_grow(self, request: web.Request, caller: Caller, node: str) -> web.Response:
        """``{"strategy": "all"|"even", "vhost_pattern", "queue_pattern"}``: rabbitmq-queues grow."""
        self._admin(caller)
        options = await _string_options(request, strategy="all", vhost_pattern=".*", queue_pattern=".*")
        return json_response(await self.b.quorum_grow_shrink(node, True, **options))

    async def rebalance_queues(self, request: web.Request, caller: Caller) -> web.Response:
        """``{"type": "quorum"|"all", "vhost_pattern", "queue_pattern"}``: rabbitmq-queues
        rebalance (classic queues have no leader to move)."""
        self._admin(caller)
        options = await _string_options(request, type="all", vhost_pattern=".*", queue_pattern=".*")
        if options.pop("type") not in ("all", "quorum"):
            raise bad_request("type must be 'quorum' or 'all'")
        return json_response(await self.b.quorum_rebalance(**options))

    async def quorum_shrink(self, request: web.Request, caller: Caller, node: str) -> web.Response:
        """rabbitmq-queues shrink: ``node`` leaves every quorum queue it is a member of."""
        self._admin(caller)
        return json_response(await self.b.quorum_grow_shrink(node, False))

    async def queue_bindings(self, request: web.Request, caller: Caller, vhost: str, name: str) -> web.Response:
        self._require_vhost(caller, vhost)
        self._one(self.b.queues(vhost), name=name)
        return listed(request, [b for b in self.b.bindings(vhost)
                              if b["destination_type"] == "queue" and b["destination"] == name])

    # ---- bindings ---------------------------------------------------------------------------------
    async def bindings(self, request: web.Request, caller: Caller, vhost: str | None = None) -> web.Response:
        if vhost is not None:
            self._require_vhost(caller, vhost)
        return listed(request, self._filter(caller, self.b.bindings(vhost)))

    def _require_bind_permission(self, caller: Caller, vhost: str, source: str, kind: str,
                                 destination: str) -> None:
        """queue.bind / exchange.bind (and unbind): write on the destination, read on the source."""
        self._require_permission(caller, vhost, ("write", "queue" if kind == "q" else "exchange", destination),
                                 ("read", "exchange", source))

    def _pair(self, vhost: str, source: str, kind: str, destination: str) -> str:
        source = _exchange_name(source)
        if kind not in ("q", "e"):
            raise not_found()
        self._one(self.b.exchanges(vhost), name=source)
        if kind == "q":
            self._one(self.b.queues(vhost), name=destination)
            return "queue"
        self._one(self.b.exchanges(vhost), name=destination)
        return "exchange"

    async def binding_pair(self, request: web.Request, caller: Caller, vhost: str, source: str, kind: str,
                           destination: str) -> web.Response:
        source = _exchange_name(source)
        if request.method == "GET":
            self._require_vhost(caller, vhost)
        else:
            self._require_vhost_write(caller, vhost)
        if request.method == "POST" and kind in ("q", "e"):
            # a POST is the AMQP bind: permissions first, then the lookups (RabbitMQ's order)
            self._require_bind_permission(caller, vhost, source, kind, destination)
        dtype = self._pair(vhost, source, kind, destination)
        if request.method == "POST":
            body = await read_json(request)
            key = body_string(body, "routing_key", "")
            arguments = body_object(body, "arguments")
            await self.b.bind(vhost, source, dtype, destination, key, arguments)
            props = key or "~"
            location = f"/api/bindings/{_q(vhost)}/e/{_q(source)}/{kind}/{_q(destination)}/{_q(props)}"
            return web.Response(status=201, headers={"Location": location})
        return listed(request, [b for b in self.b.bindings(vhost) if b["source"] == source
                              and b["destination_type"] == dtype and b["destination"] == destination])

    async def binding(self, request: web.Request, caller: Caller, vhost: str, source: str, kind: str,
                      destination: str, props: str) -> web.Response:
        source = _exchange_name(source)
        if request.method == "GET":
            self._require_vhost(caller, vhost)
        else:
            self._require_vhost_write(caller, vhost)
        dtype = self._pair(vhost, source, kind, destination)
        found = self._one(self.b.bindings(vhost), source=source, destination_type=dtype,
                          destination=destination, properties_key=props)
        if request.method == "DELETE":  # found: a missing binding was 404 whatever the permissions
            self._require_bind_permission(caller, vhost, source, kind, destination)
            await self.b.unbind(vhost, source, dtype, destination, found["routing_key"], found["arguments"])
            return web.Response(status=NO_CONTENT)
        return shown(request, found)

    # ---- policies -----------------------------------------------------------------------------------
    async def policies(self, request: web.Request, caller: Caller, vhost: str | None = None) -> web.Response:
        if vhost is not None:
            self._require_vhost(caller, vhost)
        return listed(request, self._filter(caller, self.b.policies(vhost)))

    async def policy(self, request: web.Request, caller: Caller, vhost: str, name: str) -> web.Response:
        if request.method == "GET":
            self._require_vhost(caller, vhost)
            return shown(request, self._one(self.b.policies(vhost), name=name))
        if not caller.is_policymaker:
            raise forbidden("Not policymaker user")
        self._require_vhost_write(caller, vhost)
        if request.method == "PUT":
            body = await read_json(request)
            pattern, definition = body.get("pattern"), body.get("definition")
            if not isinstance(pattern, str) or not isinstance(definition, dict):
                raise bad_request("a policy needs 'pattern' (string) and 'definition' (object)")
            priority = body_int(body, "priority", 0)
            existed = any(p["name"] == name for p in self.b.policies(vhost))
            await self.b.put_policy(vhost, name, pattern, body_string(body, "apply-to", "all"), priority, definition)
            return _created(existed)
        await self.b.delete_policy(vhost, name)
        return web.Response(status=NO_CONTENT)

    # ---- definitions ----------------------------------------------------------------------------------
    async def definitions(self, request: web.Request, caller: Caller) -> web.Response:
        self._admin(caller)
        if request.method == "GET":
            return json_response(await self.b.export_definitions())
        document = validate_document(await read_json(request))
        return _import_answer(await self.b.import_definitions(document))

    async def vhost_definitions(self, request: web.Request, caller: Caller, vhost: str) -> web.Response:
        """RabbitMQ's per-vhost definitions: topology and policies, entries without "vhost"."""
        self._admin(caller)
        self._one(self.b.vhosts(), name=vhost)
        if request.method == "GET":
            full = await self.b.export_definitions()
            document: dict[str, Any] = {"rabbit_version": full["rabbit_version"], "parameters": []}
            for key in VHOST_SECTIONS:
                document[key] = [{k: v for k, v in item.items() if k != "vhost"}
                                 for item in full[key] if item.get("vhost") == vhost]
            return json_response(document)
        body = await read_json(request)
        document = {key: body.get(key, []) for key in VHOST_SECTIONS}
        for key in VHOST_SECTIONS:
            if isinstance(document[key], list):
                document[key] = [{**item, "vhost": vhost} if isinstance(item, dict) else item
                                 for item in document[key]]
        return _import_answer(await self.b.import_definitions(validate_document(document)))

    # ---- cluster membership (Warren's own API, under /v1/cluster) -----------------------
    async def cluster_info(self, request: web.Request, caller: Caller) -> web.Response:
        self._monitor(caller)
        return json_response(_clustered(self.b.cluster_info))

    async def cluster_members(self, request: web.Request, caller: Caller) -> web.Response:
        self._monitor(caller)
        return json_response(_clustered(self.b.cluster_members))

    async def cluster_sharding(self, request: web.Request, caller: Caller) -> web.Response:
        self._monitor(caller)
        return json_response(_clustered(self.b.cluster_sharding))

    async def cluster_join(self, request: web.Request, caller: Caller) -> web.Response:
        self._admin(caller)
        body = await read_json(request)
        name, addr, raft_addr = (body_string(body, k) for k in ("node_id", "addr", "raft_addr"))
        return json_response(await _clustered_async(self.b.cluster_join(name, addr, raft_addr)), 201)

    async def cluster_leave(self, request: web.Request, caller: Caller) -> web.Response:
        self._admin(caller)
        body = await read_json(request)
        member_id = body.get("node_id")
        if isinstance(member_id, bool) or not isinstance(member_id, int):
            raise bad_request(f"'node_id' must be a member id (an integer), got {json.dumps(member_id)}")
        await _clustered_async(self.b.cluster_leave(member_id))
        return web.Response(status=NO_CONTENT)

    def register(self, r: Router) -> None:
        r.add("GET", "/v1/cluster/info", self.cluster_info)
        r.add("GET", "/v1/cluster/members", self.cluster_members)
        r.add("GET", "/v1/cluster/sharding", self.cluster_sharding)
        r.add("POST", "/v1/cluster/join", self.cluster_join)
        r.add("POST", "/v1/cluster/leave", self.cluster_leave)
        r.add("GET", "/api/overview", self.overview)
        r.add("GET", "/api/whoami", self.whoami)
        r.add("GET", "/api/nodes", self.nodes)
        r.add("GET", "/api/nodes/{name}", self.node)
        r.add("GET", "/api/health/checks/alarms", self.health_alarms, auth="health")
        r.add("GET", "/api/health/checks/local-alarms", self.health_alarms, auth="health")
        r.add("GET", "/api/health/checks/virtual-hosts", self.health_ok, auth="health")
        r.add("GET", "/api/health/checks/port-listener/{port}", self.health_port, auth="health")
        r.add("GET", "/api/health/checks/protocol-listener/{protocol}", self.health_protocol, auth="health")
        r.add("GET", "/api/health/checks/certificate-expiration/{within}/{unit}", self.health_certificates,
              auth="health")
        r.add("GET", "/api/health/checks/node-is-quorum-critical", self.health_quorum_critical, auth="health")
        r.add("GET", "/api/health/checks/node-is-mirror-sync-critical", self.health_ok, auth="health")
        r.add("GET", "/api/healthchecks/node", self.node_health)
        r.add("GET", "/api/healthchecks/node/{node}", self.node_health)
        r.add("GET", "/api/aliveness-test/{vhost}", self.aliveness)
        r.add("GET", "/api/connections", self.connections)
        r.add("GET DELETE", "/api/connections/{name}", self.connection)
        r.add("GET", "/api/connections/{name}/channels", self.connection_channels)
        r.add("GET", "/api/channels", self.channels)
        r.add("GET", "/api/channels/{name}", self.channel)
        r.add("GET", "/api/vhosts/{vhost}/connections", self.connections)
        r.add("GET", "/api/vhosts/{vhost}/channels", self.channels)
        r.add("GET PUT", "/api/cluster-name", self.cluster_name)
        r.add("GET", "/api/extensions", self.extensions)
        for listing in ("parameters", "operator-policies", "vhost-limits", "topic-permissions", "user-limits"):
            r.add("GET", f"/api/{listing}", self.none_defined)
            r.add("GET", f"/api/{listing}/{{a}}", self.none_defined)
            r.add("GET PUT DELETE", f"/api/{listing}/{{a}}/{{b}}", self.none_defined)
            r.add("GET PUT DELETE", f"/api/{listing}/{{a}}/{{b}}/{{c}}", self.none_defined)
        r.add("GET", "/api/consumers", self.consumers)
        r.add("GET", "/api/consumers/{vhost}", self.consumers)
        r.add("GET", "/api/vhosts", self.vhosts)
        r.add("GET PUT DELETE", "/api/vhosts/{vhost}", self.vhost)
        r.add("GET", "/api/vhosts/{vhost}/permissions", self.vhost_permissions)
        r.add("GET", "/api/users", self.users)
        r.add("POST", "/api/users/bulk-delete", self.users_bulk_delete)
        r.add("GET PUT DELETE", "/api/users/{user}", self.user)
        r.add("GET", "/api/users/{user}/permissions", self.user_permissions)
        r.add("GET", "/api/permissions", self.permissions)
        r.add("GET PUT DELETE", "/api/permissions/{vhost}/{user}", self.permission)
        r.add("GET", "/api/exchanges", self.exchanges)
        r.add("GET", "/api/exchanges/{vhost}", self.exchanges)
        r.add("GET PUT DELETE", "/api/exchanges/{vhost}/{name}", self.exchange)
        r.add("POST", "/api/exchanges/{vhost}/{name}/publish", self.exchange_publish)
        r.add("GET", "/api/exchanges/{vhost}/{name}/bindings/{direction}", self.exchange_bindings)
        r.add("GET", "/api/queues", self.queues)
        r.add("GET", "/api/queues/{vhost}", self.queues)
        r.add("GET PUT DELETE", "/api/queues/{vhost}/{name}", self.queue)
        r.add("DELETE", "/api/queues/{vhost}/{name}/contents", self.queue_contents)
        r.add("POST", "/api/queues/{vhost}/{name}/get", self.queue_get)
        r.add("GET", "/api/queues/{vhost}/{name}/bindings", self.queue_bindings)
        r.add("GET", "/api/queues/quorum/{vhost}/{name}/status", self.quorum_status)
        r.add("POST", "/api/queues/quorum/{vhost}/{name}/replicas/add", self.quorum_add_member)
        r.add("DELETE", "/api/queues/quorum/{vhost}/{name}/replicas/delete", self.quorum_delete_member)
        r.add("POST", "/api/queues/quorum/replicas/on/{node}/grow", self.quorum_grow)
        r.add("DELETE", "/api/queues/quorum/replicas/on/{node}/shrink", self.quorum_shrink)
        r.add("POST", "/api/rebalance/queues", self.rebalance_queues)
        r.add("GET", "/api/bindings", self.bindings)
        r.add("GET", "/api/bindings/{vhost}", self.bindings)
        r.add("GET POST", "/api/bindings/{vhost}/e/{source}/{kind}/{destination}", self.binding_pair)
        r.add("GET DELETE", "/api/bindings/{vhost}/e/{source}/{kind}/{destination}/{props}", self.binding)
        r.add("GET", "/api/policies", self.policies)
        r.add("GET", "/api/policies/{vhost}", self.policies)
        r.add("GET PUT DELETE", "/api/policies/{vhost}/{name}", self.policy)
        r.add("GET POST", "/api/definitions", self.definitions)
        r.add("GET POST", "/api/definitions/{vhost}", self.vhost_definitions)


VHOST_SECTIONS = ("policies", "queues", "exchanges", "bindings")
# RabbitMQ's web contexts, one per HTTP listener of a plugin (rabbit_web_dispatch registry)
WEB_CONTEXTS = {"http": "RabbitMQ Management", "http/prometheus": "RabbitMQ Prometheus"}


def _cluster_problem(exc: Exception) -> HTTPProblem:
    if isinstance(exc, ClusterNotEnabled):
        return HTTPProblem(404, "not_clustered", str(exc))
    if isinstance(exc, ClusterRefused):
        return HTTPProblem(409, "refused", str(exc))
    return HTTPProblem(503, "cluster_unavailable", str(exc))


def _clustered(call: Any) -> Any:
    try:
        return call()
    except (ClusterNotEnabled, ClusterRefused, ClusterUnavailable) as exc:
        raise _cluster_problem(exc) from None


async def _clustered_async(awaitable: Any) -> Any:
    try:
        return await awaitable
    except (ClusterNotEnabled, ClusterRefused, ClusterUnavailable) as exc:
        raise _cluster_problem(exc) from None


def web_contexts(node: str, listeners: list[dict[str, Any]]) -> list[dict[str, Any]]:
    """The overview's ``contexts``, shaped as RabbitMQ 3.10 formats them (rabbit_mgmt_format:
    web_context): options it prints with ``~w`` are strings, the port among them; RabbitMQ
    lists a plugin's own protocol (Prometheus's) and sorts by description, port, node."""
    contexts = []
    for listener in listeners:
        description = WEB_CONTEXTS.get(str(listener["protocol"]))
        if description is None:
            continue
        context: dict[str, Any] = {"ssl_opts": [], "node": node, "description": description, "path": "/",
                                   "cowboy_opts": "[{sendfile,false}]", "port": str(listener["port"])}
        if listener["protocol"] != "http":
            context["protocol"] = listener["protocol"]
        contexts.append(context)
    return sorted(contexts, key=lambda c: (c["description"], c["port"], c["node"]))


def _import_answer(report: dict[str, Any]) -> web.Response:
    """RabbitMQ answers a successful import with 204; when Warren skipped something (quorum
    queues, until replication exists) it answers 200 with the report naming each one."""
    if not any(report.values()):
        return web.Response(status=NO_CONTENT)
    return json_response(report)


def listed(request: web.Request, items: list[dict[str, Any]]) -> web.Response:
    """A listing with RabbitMQ's columns/sort/pagination query parameters applied."""
    return json_response(shape_listing(request.query, items))


def shown(request: web.Request, item: dict[str, Any]) -> web.Response:
    """One object, with RabbitMQ's ``columns`` query parameter applied."""
    return json_response(shape_object(request.query, item))


def _bool(body: dict[str, Any], key: str, default: bool = False) -> bool:
    """A flag as RabbitMQ's API reads it: JSON true/false or the strings "true"/"false"
    (rabbitmqadmin sends ``"durable": "true"``)."""
    value = body.get(key, default)
    if isinstance(value, bool):
        return value
    if isinstance(value, str) and value.lower() in ("true", "false"):
        return value.lower() == "true"
    raise bad_request(f"'{key}' must be true or false, got {json.dumps(value)}")


def _exchange_name(name: str) -> str:
    """RabbitMQ names the default exchange "amq.default" in paths."""
    return "" if name == "amq.default" else name


def _q(value: str) -> str:
    return quote(value, safe="")


async def _string_options(request: web.Request, **defaults: str) -> dict[str, str]:
    """The body's values for these keys (the defaults where absent); a 400 for a non-string."""
    body = await read_json(request)
    options = {key: body.get(key, default) for key, default in defaults.items()}
    if not all(isinstance(v, str) for v in options.values()):
        raise bad_request(f"{', '.join(defaults)} must be strings")
    return options
