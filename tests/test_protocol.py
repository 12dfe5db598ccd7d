"""The y-websocket codec, against frames built the way the reference client builds them."""

from __future__ import annotations

import pytest

from crdt_state import protocol
from crdt_state.protocol import AwarenessEntry, MessageType, ProtocolError, SyncType


@pytest.mark.parametrize("value", [0, 1, 127, 128, 300, 2**21, 2**53 - 1])
def test_var_uints_round_trip(value):
    encoded = protocol.write_var_uint(value)
    assert protocol.read_var_uint(encoded, 0) == (value, len(encoded))


def test_sync_frames_decode_to_their_parts():
    frame = protocol.sync_update(b"\x01\x02\x03")
    assert frame == b"\x00\x02\x03\x01\x02\x03"
    message = protocol.decode(frame)
    assert (message.type, message.sync_type, message.payload) == (
        MessageType.SYNC,
        SyncType.UPDATE,
        b"\x01\x02\x03",
    )


def test_awareness_updates_round_trip_and_keep_the_state_text():
    entries = [AwarenessEntry(1, 3, '{"user":{"name":"Ann"}}'), AwarenessEntry(2**40, 9, "null")]
    frame = protocol.awareness_message(protocol.encode_awareness(entries))
    message = protocol.decode(frame)
    assert message.type == MessageType.AWARENESS
    assert protocol.decode_awareness(message.payload) == entries


@pytest.mark.parametrize(
    "frame",
    [b"", b"\x80", b"\x05", b"\x00", b"\x00\x00", b"\x00\x00\x05ab", b"\x03\x00", b"\x02\x00"],
)
def test_malformed_frames_raise_protocol_errors(frame):
    with pytest.raises(ProtocolError):
        protocol.decode(frame)
