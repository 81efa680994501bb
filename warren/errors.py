"""Operating errors and the AMQP reply codes that report them.

Programmer errors are assertions; everything a client, a peer or the machine can
cause is one of these types, carrying the reply code RabbitMQ would send.
"""

from __future__ import annotations

from enum import IntEnum


class ReplyCode(IntEnum):
    REPLY_SUCCESS = 200
    CONTENT_TOO_LARGE = 311
    NO_ROUTE = 312
    NO_CONSUMERS = 313
    CONNECTION_FORCED = 320
    INVALID_PATH = 402
    ACCESS_REFUSED = 403
    NOT_FOUND = 404
    RESOURCE_LOCKED = 405
    PRECONDITION_FAILED = 406
    FRAME_ERROR = 501
    SYNTAX_ERROR = 502
    COMMAND_INVALID = 503
    CHANNEL_ERROR = 504
    UNEXPECTED_FRAME = 505
    RESOURCE_ERROR = 506
    NOT_ALLOWED = 530
    NOT_IMPLEMENTED = 540
    INTERNAL_ERROR = 541


# Reply codes that close only the channel; the rest close the connection (AMQP 0-9-1 §1.2).
CHANNEL_REPLY_CODES = frozenset(
    {
        ReplyCode.CONTENT_TOO_LARGE,
        ReplyCode.NO_ROUTE,
        ReplyCode.NO_CONSUMERS,
        ReplyCode.ACCESS_REFUSED,
        ReplyCode.NOT_FOUND,
        ReplyCode.RESOURCE_LOCKED,
        ReplyCode.PRECONDITION_FAILED,
    }
)


class WarrenError(Exception):
    """Base of every operating error Warren raises."""


class AMQPError(WarrenError):
    """An error the broker reports to an AMQP client with a reply code.

    ``class_id``/``method_id`` name the method that failed (0 when none did).
    Whether it closes the channel or the connection follows from the code, as in
    RabbitMQ: soft errors (403, 404, 405, 406) close the channel.
    """

    def __init__(self, code: ReplyCode | int, text: str, class_id: int = 0, method_id: int = 0):
        super().__init__(text)
        self.code = ReplyCode(code)
        self.text = text
        self.class_id = class_id
        self.method_id = method_id

    @property
    def closes_connection(self) -> bool:
        return self.code not in CHANNEL_REPLY_CODES

    def reply_text(self) -> str:
        """The reply text as RabbitMQ formats it: ``NOT_FOUND - no queue 'x' in vhost '/'``."""
        return f"{self.code.name} - {self.text}"[:255]

    def __repr__(self) -> str:
        return f"{type(self).__name__}({self.code.name}, {self.text!r})"


def access_refused(text: str) -> AMQPError:
    return AMQPError(ReplyCode.ACCESS_REFUSED, text)


def not_found(text: str) -> AMQPError:
    return AMQPError(ReplyCode.NOT_FOUND, text)


def resource_locked(text: str) -> AMQPError:
    return AMQPError(ReplyCode.RESOURCE_LOCKED, text)


def precondition_failed(text: str) -> AMQPError:
    return AMQPError(ReplyCode.PRECONDITION_FAILED, text)


def not_allowed(text: str) -> AMQPError:
    return AMQPError(ReplyCode.NOT_ALLOWED, text)


def command_invalid(text: str) -> AMQPError:
    return AMQPError(ReplyCode.COMMAND_INVALID, text)


def not_implemented(text: str) -> AMQPError:
    return AMQPError(ReplyCode.NOT_IMPLEMENTED, text)


class StoreError(WarrenError):
    """The durable store failed (full disk, corrupt file)."""


class UnstorableValue(WarrenError):
    """A definition holds a value the store cannot encode (e.g. a lone UTF-16 surrogate)."""


class PeerProtocolError(WarrenError):
    """A cluster peer sent something malformed or unauthenticated."""


class ConfigError(WarrenError):
    """A setting is invalid; the message names the setting and the fix."""


class ClusterUnavailable(WarrenError):
    """The cluster cannot take this write or read now: no leader, no quorum, or it did not
    answer in time. Retrying later may succeed; the outcome of a timed-out write is unknown."""


class ClusterJoinError(WarrenError):
    """This node cannot join (or rejoin) the cluster; the message names the fix."""
