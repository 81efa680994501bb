"""A small synchronous client of the management HTTP API (used by ``warren ctl`` and tests).

Standard library only (urllib), so the CLI starts fast and needs nothing extra.
"""

from __future__ import annotations

import base64
import http.client
import json
import urllib.error
import urllib.request
from typing import Any
from urllib.parse import quote


class APIError(Exception):
    """The node answered with an error status."""

    def __init__(self, status: int, reason: str, path: str, body: Any = None) -> None:
        super().__init__(f"HTTP {status} on {path}: {reason}")
        self.status = status
        self.reason = reason
        self.path = path
        self.body = body  # the decoded JSON answer, when it was JSON


class NodeUnreachable(Exception):
    """No HTTP answer at all (refused, timed out, DNS)."""

    def __init__(self, url: str, cause: str) -> None:
        super().__init__(f"cannot reach {url}: {cause}")
        self.url = url
        self.cause = cause


def seg(value: str) -> str:
    """One path segment, %-encoded as RabbitMQ expects ("/" -> "%2F")."""
    return quote(value, safe="")


class ManagementClient:
    def __init__(self, url: str, user: str, password: str, timeout: float = 10.0) -> None:
        self.url = url.rstrip("/")
        self.timeout = timeout
        token = base64.b64encode(f"{user}:{password}".encode()).decode()
        self._auth = f"Basic {token}"

    def request(self, method: str, path: str, body: Any = None,
                headers: dict[str, str] | None = None) -> tuple[int, Any]:
        data = json.dumps(body).encode() if body is not None else None
        req = urllib.request.Request(self.url + path, data=data, method=method)
        req.add_header("Authorization", self._auth)
        if data is not None:
            req.add_header("Content-Type", "application/json")
        for name, value in (headers or {}).items():
            req.add_header(name, value)
        try:
            with urllib.request.urlopen(req, timeout=self.timeout) as resp:
                raw = resp.read()
                try:
                    return resp.status, json.loads(raw) if raw else None
                except ValueError:
                    raise APIError(resp.status, f"the answer is not JSON: {raw[:80]!r}", path) from None
        except urllib.error.HTTPError as error:
            raw = error.read()
            answer = None
            try:
                answer = json.loads(raw) if raw else None
                reason = answer.get("reason", "") if answer else ""
            except (ValueError, AttributeError):
                reason = raw.decode("utf-8", "replace")
            raise APIError(error.code, str(reason or error.reason), path, answer) from None
        except (urllib.error.URLError, OSError, http.client.HTTPException) as error:
            # refused, reset, timed out, or a connection cut in the middle of an answer
            cause = getattr(error, "reason", error)
            raise NodeUnreachable(self.url, str(cause) or type(error).__name__) from None

    def get(self, path: str) -> Any:
        return self.request("GET", path)[1]

    def put(self, path: str, body: Any = None) -> int:
        return self.request("PUT", path, body if body is not None else {})[0]

    def post(self, path: str, body: Any = None) -> Any:
        return self.request("POST", path, body if body is not None else {})[1]

    def delete(self, path: str, headers: dict[str, str] | None = None) -> int:
        return self.request("DELETE", path, headers=headers)[0]
