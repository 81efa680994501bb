"""HTTP plumbing for the management API: routing on raw paths, auth, errors, rate limiting.

RabbitMQ clients encode the default vhost "/" as %2F inside a path segment, so routes are
matched on the raw (still-encoded) path split at "/", then each segment is decoded.
"""

from __future__ import annotations

import base64
import binascii
import json
import logging
import time
from collections.abc import Awaitable, Callable
from dataclasses import dataclass
from typing import Any
from urllib.parse import unquote

from aiohttp import web

from warren.api.rates import RequestLimiter
from warren.errors import AMQPError, ReplyCode

log = logging.getLogger(__name__)
MANAGEMENT_TAGS = frozenset({"administrator", "monitoring", "policymaker", "management"})
REALM = 'Basic realm="RabbitMQ Management"'


class HTTPProblem(Exception):
    """An error answered as RabbitMQ does: ``{"error": ..., "reason": ...}`` with a status."""

    def __init__(self, status: int, error: str, reason: str, headers: dict[str, str] | None = None) -> None:
        super().__init__(reason)
        self.status = status
        self.error = error
        self.reason = reason
        self.headers = headers or {}


def bad_request(reason: str) -> HTTPProblem:
    return HTTPProblem(400, "bad_request", reason)


def not_found(reason: str = "Not Found") -> HTTPProblem:
    return HTTPProblem(404, "Object Not Found", reason)


def forbidden(reason: str) -> HTTPProblem:
    """An authenticated user without the tag or vhost access: RabbitMQ 3.x answers these with
    401 ``not_authorised`` (not 403; its code says "consider changing to 403 in 4.0"), and
    without a WWW-Authenticate header, so a browser does not ask for another password."""
    return HTTPProblem(401, "not_authorised", reason)


def unauthorised(reason: str = "Login failed") -> HTTPProblem:
    """Missing or wrong credentials: RabbitMQ 3.10 spells this error ``not_authorized``."""
    return HTTPProblem(401, "not_authorized", reason, {"WWW-Authenticate": REALM})


def problem_from_amqp(error: AMQPError) -> HTTPProblem:
    if error.code == ReplyCode.NOT_FOUND:
        return not_found(error.text)
    if error.code == ReplyCode.ACCESS_REFUSED:
        return forbidden(error.text)
    if error.code == ReplyCode.INTERNAL_ERROR:  # the store failed to write: retry later
        return HTTPProblem(503, "service_unavailable", error.text)
    return bad_request(error.text)


def _json_default(value: Any) -> Any:
    if isinstance(value, bytes | bytearray | memoryview):
        return bytes(value).decode("utf-8", "replace")
    if isinstance(value, set | frozenset | tuple):
        return list(value)
    return str(value)


def json_response(data: Any, status: int = 200, headers: dict[str, str] | None = None) -> web.Response:
    body = json.dumps(data, default=_json_default)
    return web.Response(text=body, status=status, content_type="application/json", headers=headers)


def problem_response(problem: HTTPProblem) -> web.Response:
    return json_response({"error": problem.error, "reason": problem.reason}, problem.status, problem.headers)


@dataclass(frozen=True)
class Caller:
    """The authenticated user of a request (None name: an unauthenticated health check)."""

    name: str
    tags: frozenset[str]

    @property
    def is_admin(self) -> bool:
        return "administrator" in self.tags

    @property
    def is_monitoring(self) -> bool:
        return bool(self.tags & {"administrator", "monitoring"})

    @property
    def is_policymaker(self) -> bool:
        return bool(self.tags & {"administrator", "policymaker"})


def basic_credentials(header: str | None) -> tuple[str, str] | None:
    if not header or not header.lower().startswith("basic "):
        return None
    try:
        decoded = base64.b64decode(header[6:].strip(), validate=True).decode("utf-8")
    except (binascii.Error, UnicodeDecodeError):
        return None
    user, sep, password = decoded.partition(":")
    if not sep:
        return None
    return user, password


Handler = Callable[..., Awaitable[web.StreamResponse]]


@dataclass
class Route:
    methods: frozenset[str]
    pattern: tuple[str, ...]
    handler: Handler
    auth: str  # "user" (any management tag), "none" (public), "health" (public unless configured)


class Router:
    def __init__(self) -> None:
        self.routes: list[Route] = []

    def add(self, methods: str, path: str, handler: Handler, auth: str = "user") -> None:
        pattern = tuple(p for p in path.strip("/").split("/") if p)
        self.routes.append(Route(frozenset(methods.split()), pattern, handler, auth))

    def match(self, segments: list[str]) -> list[tuple[Route, dict[str, str]]]:
        found = []
        for route in self.routes:
            if len(route.pattern) != len(segments):
                continue
            params: dict[str, str] = {}
            for expected, actual in zip(route.pattern, segments, strict=True):
                if expected.startswith("{"):
                    params[expected[1:-1]] = actual
                elif expected != actual:
                    break
            else:
                found.append((route, params))
        return found


def split_raw_path(raw_path: str) -> list[str]:
    path = raw_path.split("?", 1)[0]
    return [unquote(p) for p in path.strip("/").split("/") if p != ""] if path.strip("/") else []


def check_path_segments(segments: list[str]) -> None:
    """400 for a segment that is not Unicode. ``unquote`` turns a %-escape that is not UTF-8
    into U+FFFD, a valid name; but aiohttp's pure-Python parser hands raw bytes that are not
    UTF-8 through as lone surrogates ("\\xff" -> "\\udcff"), which no store or AMQP frame
    can carry."""
    for segment in segments:
        if not _is_unicode(segment):
            raise bad_request(f"path segment {ascii(segment)} is not valid UTF-8")


class Api:
    """Dispatches /api/... requests through auth, rate limiting and error mapping."""

    def __init__(self, router: Router, authenticate: Callable[[str, str], dict[str, Any] | None],
                 may_log_in_from: Callable[[str, str], bool], limiter: RequestLimiter,
                 health_requires_auth: bool, clock: Callable[[], float] = time.monotonic) -> None:
        self.router = router
        self.authenticate = authenticate
        self.may_log_in_from = may_log_in_from
        self.limiter = limiter
        self.health_requires_auth = health_requires_auth
        self.clock = clock

    def caller(self, request: web.Request) -> Caller:
        credentials = basic_credentials(request.headers.get("Authorization"))
        if credentials is None:
            raise unauthorised("Not_Authorized")
        user = self.authenticate(*credentials)
        if user is None:
            raise unauthorised("Login failed")
        # the peer of this socket: Warren trusts no forwarded-for header, so a proxy on this
        # host makes every client look local (as with RabbitMQ)
        if not self.may_log_in_from(user["name"], request.remote or ""):
            raise forbidden("User can only log in via localhost")  # RabbitMQ's words and status
        tags = frozenset(user["tags"])
        if not tags & MANAGEMENT_TAGS:
            raise forbidden("Not management user")
        return Caller(user["name"], tags)

    async def dispatch(self, request: web.Request) -> web.StreamResponse:
        segments = split_raw_path(request.raw_path)
        matches = self.router.match(segments)
        # Health checks are cheap and never limited: behind a load balancer every API client
        # shares the balancer's address, and a busy dashboard must not get the node marked down.
        if not any(route.auth == "health" for route, _ in matches):
            wait = self.limiter.allow(request.remote or "unknown", self.clock())
            if wait > 0:
                return json_response(
                    {"error": "too_many_requests", "reason": "request rate limit exceeded, retry later"},
                    429, {"Retry-After": str(max(1, int(wait + 0.999)))},
                )
        try:
            check_path_segments(segments)
            if not matches:
                raise not_found()
            allowed = [(r, p) for r, p in matches if request.method in r.methods or
                       (request.method == "HEAD" and "GET" in r.methods)]
            if not allowed:
                methods = sorted({m for r, _ in matches for m in r.methods})
                raise HTTPProblem(405, "Method Not Allowed", f"allowed: {', '.join(methods)}",
                                  {"Allow": ", ".join(methods)})
            route, params = allowed[0]
            caller: Caller | None
            if route.auth == "none" or (route.auth == "health" and not self.health_requires_auth
                                        and "Authorization" not in request.headers):
                caller = None
            else:
                caller = self.caller(request)
            return await route.handler(request, caller, **params)
        except HTTPProblem as problem:
            if problem.status == 401 and request.headers.get("X-Requested-With") == "XMLHttpRequest":
                problem.headers.pop("WWW-Authenticate", None)  # no browser password dialog for the UI
            return problem_response(problem)
        except AMQPError as error:
            return problem_response(problem_from_amqp(error))
        except Exception as error:  # a bug: answer as RabbitMQ's API does, keep serving
            log.exception("management API request %s %s failed", request.method, request.raw_path)
            return json_response({"error": "internal_server_error", "reason": f"{type(error).__name__}: {error}"},
                                 500)


async def read_json(request: web.Request) -> dict[str, Any]:
    """The request body as a JSON object, or a 4xx: 413 over the size limit, 400 for bytes
    that are not UTF-8 (JSON's only encoding, whatever the Content-Type says), for JSON that
    is not an object, and for strings that are not Unicode or integers beyond 64 bits
    anywhere in it, so nothing unstorable reaches the broker model."""
    if not request.can_read_body:
        return {}
    try:
        raw = await request.read()
    except web.HTTPRequestEntityTooLarge:
        raise HTTPProblem(413, "payload_too_large",
                          f"Exceeded HTTP request body size limit of {request.client_max_size} bytes") from None
    try:
        text = raw.decode("utf-8")
    except UnicodeDecodeError as exc:
        raise bad_request(f"request body is not valid UTF-8: byte 0x{raw[exc.start]:02x} at position "
                          f"{exc.start}") from None
    if not text.strip():
        return {}
    try:
        data = json.loads(text, parse_constant=_no_constant)
    except json.JSONDecodeError as exc:
        raise bad_request(f"invalid JSON body: {exc.msg} at position {exc.pos}") from None
    except RecursionError:
        raise bad_request("invalid JSON body: nested too deeply") from None
    if not isinstance(data, dict):
        raise bad_request("JSON body must be an object")
    _check_values(data)
    return data


INT64 = (-(2**63), 2**63 - 1)  # what AMQP tables, the store and RabbitMQ carry


def _no_constant(name: str) -> Any:
    raise bad_request(f"invalid JSON body: {name} is not a number RabbitMQ accepts")


def _is_unicode(text: str) -> bool:
    try:
        text.encode("utf-8")
    except UnicodeEncodeError:  # a lone surrogate
        return False
    return True


def _check_values(data: Any) -> None:
    """Integers beyond 64 bits and strings with a lone surrogate ("\\ud800" is valid JSON but
    not Unicode) cannot be stored or sent over AMQP: refuse them here, keys included, before
    they reach the broker model (an unstorable value there would fail every later write)."""
    pending = [data]
    while pending:
        value = pending.pop()
        if isinstance(value, dict):
            for key, item in value.items():
                if not _is_unicode(key):
                    raise bad_request(f"invalid JSON body: key {ascii(key)} has a lone surrogate (not Unicode)")
                pending.append(item)
        elif isinstance(value, list):
            pending.extend(value)
        elif isinstance(value, str):
            if not _is_unicode(value):
                raise bad_request(f"invalid JSON body: string {ascii(value[:64])} has a lone surrogate "
                                  "(not Unicode)")
        elif isinstance(value, int) and not INT64[0] <= value <= INT64[1]:
            raise bad_request(f"number {value} is out of range (signed 64-bit integers only)")


def body_object(body: dict[str, Any], key: str) -> dict[str, Any]:
    """An optional JSON object in a request body (``arguments``, ``properties``...): {} when
    absent or null, a 400 naming the key when it is anything but an object."""
    value = body.get(key)
    if value is None:
        return {}
    if not isinstance(value, dict):
        raise bad_request(f"'{key}' must be a JSON object, got {json.dumps(value)}")
    return value


def body_string(body: dict[str, Any], key: str, default: str | None = None) -> str:
    value = body.get(key, default)
    if not isinstance(value, str):
        raise bad_request(f"'{key}' must be a string, got {json.dumps(value)}")
    return value


def body_int(body: dict[str, Any], key: str, default: int) -> int:
    """An integer, or a string of digits (rabbitmqadmin sends ``"count": "1"``)."""
    value = body.get(key, default)
    if isinstance(value, bool) or not isinstance(value, int | str):
        raise bad_request(f"'{key}' must be an integer, got {json.dumps(value)}")
    try:
        return int(value)
    except ValueError:
        raise bad_request(f"'{key}' must be an integer, got {json.dumps(value)}") from None


def header_text(request: web.Request, name: str, default: str) -> str:
    """A header's value as text; 400 when its bytes were not UTF-8 (aiohttp hands them over
    as lone surrogates, which an AMQP reply text cannot carry)."""
    value = request.headers.get(name, default)
    if not _is_unicode(value):
        raise bad_request(f"header {name} is not valid UTF-8")
    return value


def flag(request: web.Request, name: str) -> bool:
    return request.query.get(name, "false").lower() in ("true", "1", "yes")
