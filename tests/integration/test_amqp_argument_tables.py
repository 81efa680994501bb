"""Malformed method-argument tables against a real node, over a bare socket."""

from __future__ import annotations

import struct

import pika
import pytest
from pamqp import commands

from tests.integration.test_amqp_basics import _raw_connection
from warren.embed import ThreadedNode


def test_argument_string_longer_than_its_table_closes_the_connection_with_502(node: ThreadedNode) -> None:
    sock, frames, send = _raw_connection(node.amqp_port)
    send(1, commands.Channel.Open())
    assert isinstance(next(frames), commands.Channel.OpenOk)
    # queue.declare "truncated-args" with x-queue-type => a long string claiming 100 bytes,
    # of which the table holds 6 (the frame has more bytes after the table)
    declare = commands.Queue.Declare(queue="truncated-args")
    entries = b"\x0cx-queue-typeS" + struct.pack(">I", 100) + b"quorum"
    payload = (struct.pack(">I", declare.index) + declare.marshal()[:-4]
               + struct.pack(">I", len(entries)) + entries + b"\x00" * 120)
    sock.sendall(struct.pack(">BHI", 1, 1, len(payload)) + payload + b"\xce")
    close = next(frames)
    assert isinstance(close, commands.Connection.Close)
    assert close.reply_code == 502
    assert close.reply_text == "SYNTAX_ERROR - cannot decode Queue.Declare arguments"
    assert (close.class_id, close.method_id) == (50, 10)
    send(0, commands.Connection.CloseOk())
    sock.close()
    # nothing was declared
    conn = pika.BlockingConnection(pika.URLParameters(node.amqp_url))
    with pytest.raises(pika.exceptions.ChannelClosedByBroker) as missing:
        conn.channel().queue_declare("truncated-args", passive=True)
    assert missing.value.reply_code == 404
    conn.close()
