"""Pure pieces of the connection handshake: server properties, SASL responses, tuning.

Failures raise :class:`~warren.errors.AMQPError` with the reply code and text RabbitMQ uses.
"""

from __future__ import annotations

import sys
from typing import Any

from warren import __version__
from warren.amqp.properties import decode_table
from warren.errors import AMQPError, ReplyCode

MECHANISMS = "PLAIN AMQPLAIN"
LOCALES = "en_US"

CAPABILITIES: dict[str, bool] = {
    "publisher_confirms": True,
    "exchange_exchange_bindings": True,
    "basic.nack": True,
    "consumer_cancel_notify": True,
    "connection.blocked": True,
    "consumer_priorities": True,
    "authentication_failure_close": True,
    "per_consumer_qos": True,
    "direct_reply_to": False,
}

_START_OK = (10, 11)
_TUNE = (10, 30)


def server_properties(extra: dict[str, Any] | None = None) -> dict[str, Any]:
    """connection.start server-properties as RabbitMQ announces them (product Warren)."""
    props: dict[str, Any] = {
        "capabilities": dict(CAPABILITIES),
        "cluster_name": "warren",
        "copyright": "Copyright (c) the Warren authors",
        "information": "Licensed under the Apache License 2.0",
        "platform": f"Python {sys.version_info.major}.{sys.version_info.minor}",
        "product": "Warren",
        "version": __version__,
    }
    if extra:
        props.update(extra)
    return props


def credentials(mechanism: str, response: str | bytes | None) -> tuple[str, str]:
    """(username, password) from a start-ok response for PLAIN or AMQPLAIN."""
    raw = response.encode() if isinstance(response, str) else bytes(response or b"")
    username: Any
    password: Any
    if mechanism == "PLAIN":  # [authzid] NUL authcid NUL passwd
        parts = raw.split(b"\x00")
        if len(parts) != 3:
            raise AMQPError(ReplyCode.SYNTAX_ERROR, "PLAIN response invalid", *_START_OK)
        username, password = parts[1], parts[2]
    elif mechanism == "AMQPLAIN":  # a field table without its length prefix
        try:  # strictly: pamqp's decoder reads a value past the table's end
            table = decode_table(raw, 0, len(raw))
        except ValueError:
            table = {}
        username = table.get("LOGIN")
        password = table.get("PASSWORD")
        if username is None or password is None:
            raise AMQPError(
                ReplyCode.SYNTAX_ERROR, "AMQPLAIN response without LOGIN and PASSWORD", *_START_OK
            )
    else:
        raise AMQPError(
            ReplyCode.COMMAND_INVALID, f"unknown authentication mechanism '{mechanism}'", *_START_OK
        )
    try:
        user = username.decode() if isinstance(username, bytes) else str(username)
        secret = password.decode() if isinstance(password, bytes) else str(password)
    except UnicodeDecodeError:
        raise AMQPError(ReplyCode.SYNTAX_ERROR, "credentials are not UTF-8", *_START_OK) from None
    return user, secret


def negotiate(field: str, minimum: int, client: int, server: int) -> int:
    """The client's tune-ok value, validated as RabbitMQ does: it may lower ours, never
    exceed it, and ask for "no limit" (0) only when we have none either."""
    if client != 0 and client < minimum:
        bound, relation, limit = "minimum", "lower", minimum
    elif server != 0 and (client == 0 or client > server):
        bound, relation, limit = "maximum", "higher", server
    else:
        return client
    detail = " (no limit)" if client == 0 else ""
    raise AMQPError(
        ReplyCode.NOT_ALLOWED,
        f"negotiated {field} = {client}{detail} is {relation} than the {bound} allowed value ({limit})",
        *_TUNE,
    )
