"""The transport's pure parts: framing limits, handshake proofs and reconnect backoff."""

from __future__ import annotations

import random
from types import SimpleNamespace

import msgpack
import pytest

from warren.errors import PeerProtocolError
from warren.io.peer import Backoff, FrameDecoder, _Outbound, encode_frame, handshake_mac
from warren.limits import Limits


def test_frames_split_across_reads_and_joined_in_one_read_decode_in_order() -> None:
    stream = encode_frame({"a": 1}) + encode_frame([1, 2, b"x"]) + encode_frame("three")
    decoder = FrameDecoder(1024)
    got = []
    for i in range(0, len(stream), 3):
        got.extend(decoder.feed(stream[i : i + 3]))
    assert got == [{"a": 1}, [1, 2, b"x"], "three"]
    assert FrameDecoder(1024).feed(stream) == got


def test_oversize_frame_is_refused_before_its_body_arrives() -> None:
    decoder = FrameDecoder(100)
    with pytest.raises(PeerProtocolError, match="exceeds the limit"):
        decoder.feed((101).to_bytes(4, "big"))
    assert FrameDecoder(100).feed(encode_frame(b"x" * 90)) == [b"x" * 90]


def test_a_large_frame_read_with_the_handshakes_last_is_decoded_under_the_later_limit() -> None:
    """A dialer sends its proof and at once its first Raft messages: one read may hold both.
    Found by `warren chaos` (a reconnect after a partition was dropped, "frame of 1803
    bytes exceeds the limit of 512")."""
    decoder = FrameDecoder(512)
    big = {"append": b"x" * 1800}
    assert decoder.feed(encode_frame({"mac": b"m"}) + encode_frame(big), at_most=1) == [{"mac": b"m"}]
    decoder.max_frame_bytes = 64 * 1024
    assert decoder.feed(b"") == [big]
    with pytest.raises(PeerProtocolError, match="exceeds the limit of 512"):
        FrameDecoder(512).feed(encode_frame({"mac": b"m"}) + encode_frame(big))  # all at once: the old way


def test_garbage_bytes_are_a_protocol_error() -> None:
    # An HTTP request on the peer port: "GET " read as a length is ~1.2 GB.
    with pytest.raises(PeerProtocolError):
        FrameDecoder(64 * 1024 * 1024).feed(b"GET / HTTP/1.1\r\n\r\n")
    # A frame of the right length holding something that is not msgpack.
    with pytest.raises(PeerProtocolError, match="undecodable"):
        FrameDecoder(1024).feed((2).to_bytes(4, "big") + b"\xc1\xc1")
    # Trailing bytes inside a frame.
    body = msgpack.packb(1) + msgpack.packb(2)
    with pytest.raises(PeerProtocolError):
        FrameDecoder(1024).feed(len(body).to_bytes(4, "big") + body)


def test_handshake_proof_depends_on_secret_nonces_ids_and_role() -> None:
    base = handshake_mac(b"s", "dialer", b"n1", b"n2", 1, 2)
    assert base == handshake_mac(b"s", "dialer", b"n1", b"n2", 1, 2)
    for other in [
        handshake_mac(b"t", "dialer", b"n1", b"n2", 1, 2),
        handshake_mac(b"s", "listener", b"n1", b"n2", 1, 2),
        handshake_mac(b"s", "dialer", b"n3", b"n2", 1, 2),
        handshake_mac(b"s", "dialer", b"n1", b"n2", 2, 1),
    ]:
        assert other != base


def test_backoff_doubles_to_a_cap_with_jitter_and_resets() -> None:
    backoff = Backoff(0.1, 1.0, random.Random(7))
    delays = [backoff.next_delay() for _ in range(8)]
    ceilings = [0.1, 0.2, 0.4, 0.8, 1.0, 1.0, 1.0, 1.0]
    for delay, ceiling in zip(delays, ceilings, strict=True):
        assert ceiling / 2 <= delay <= ceiling
    assert len(set(delays[4:])) > 1  # jittered, not a fixed 1.0
    backoff.reset()
    assert backoff.next_delay() <= 0.1
    # The same seed gives the same schedule (jitter comes from the injected random).
    again = Backoff(0.1, 1.0, random.Random(7))
    assert [again.next_delay() for _ in range(8)] == delays


def test_a_flush_onto_a_closing_connection_keeps_the_frames_for_the_next_one() -> None:
    """The peer went away between the enqueue and the flush: writing would raise in the
    loop's callback (seen in a chaos run); the frames wait for the reconnect instead."""

    class ClosingWriter:
        def is_closing(self) -> bool:
            return True

        def write(self, data: bytes) -> None:
            raise RuntimeError("unable to perform operation on a closed transport")

    transport = SimpleNamespace(limits=Limits(), rng=random.Random(1))
    outbound = _Outbound(transport, 2, ("127.0.0.1", 1))  # type: ignore[arg-type]
    outbound.writer = ClosingWriter()  # type: ignore[assignment]
    outbound.queue.append(b"frame")
    outbound.flush()
    assert list(outbound.queue) == [b"frame"]
