"""Events a :class:`~warren.amqp.connection.ServerConnection` reports to its driver.

Each is a frozen, slotted dataclass; the driver dispatches on ``type(event)``.
"""

from __future__ import annotations

from dataclasses import dataclass
from typing import Any

from pamqp import commands


@dataclass(frozen=True, slots=True)
class LoginRequested:
    """start-ok arrived; answer with ``accept_login()`` or ``refuse_login(text)``."""

    mechanism: str
    username: str
    password: str


@dataclass(frozen=True, slots=True)
class VhostRequested:
    """connection.open arrived; answer with ``accept_vhost()`` or ``refuse_vhost(code, text)``."""

    vhost: str


@dataclass(frozen=True, slots=True)
class ChannelOpened:
    """channel.open arrived and channel.open-ok was already sent."""

    channel: int


@dataclass(frozen=True, slots=True)
class ChannelClosedByPeer:
    """The client sent channel.close; close-ok was already sent. Release the channel."""

    channel: int


@dataclass(frozen=True, slots=True)
class ChannelCloseConfirmed:
    """The client's close-ok to our channel.close (or its own close crossing ours)."""

    channel: int


@dataclass(frozen=True, slots=True)
class ChannelProtocolError:
    """We closed a channel because the client broke the protocol on it (e.g. 406 message
    too large). channel.close is queued; ChannelCloseConfirmed follows the client's close-ok.
    Stop using the channel now."""

    channel: int
    code: int
    text: str


@dataclass(frozen=True, slots=True)
class MethodReceived:
    """Any other method (queue.*, exchange.*, basic.*, confirm.*, tx.*, channel.flow...)."""

    channel: int
    method: Any  # a pamqp.commands method object


@dataclass(frozen=True, slots=True)
class PublishReceived:
    """A complete published message: basic.publish + content header + body."""

    channel: int
    method: commands.Basic.Publish
    properties: bytes  # the encoded property block (flags + list) exactly as received
    body: bytes


@dataclass(frozen=True, slots=True)
class ConnectionClosedByPeer:
    """The client sent connection.close; close-ok was sent. ConnectionTerminated follows."""

    code: int
    text: str


@dataclass(frozen=True, slots=True)
class ConnectionProtocolError:
    """We are closing the connection because the client broke the protocol.

    connection.close is queued; all channels are gone. ConnectionTerminated follows (at once
    for framing errors, else after the client's close-ok or the close timeout)."""

    code: int
    text: str


@dataclass(frozen=True, slots=True)
class ConnectionTerminated:
    """Flush ``data_to_send()`` and close the socket; nothing more will be read."""

    reason: str


@dataclass(frozen=True, slots=True)
class HeartbeatTimeout:
    """Nothing arrived for two heartbeat intervals. ConnectionTerminated follows."""


Event = (
    LoginRequested
    | VhostRequested
    | ChannelOpened
    | ChannelClosedByPeer
    | ChannelCloseConfirmed
    | ChannelProtocolError
    | MethodReceived
    | PublishReceived
    | ConnectionClosedByPeer
    | ConnectionProtocolError
    | ConnectionTerminated
    | HeartbeatTimeout
)
