"""CBOR framing: one websocket binary message carries one CBOR value.

Frames are size-checked before anything decodes them, and decoded with cbor2's strict
options, so a hostile peer can neither make us allocate without bound nor recurse
deeply. No I/O here.
"""

from __future__ import annotations

from typing import Any

import cbor2

# One frame may hold at most this many bytes. Large replies (huge task lists) are paged
# by the server so they stay below it; 16 MiB also bounds what one peer can make us buffer.
MAX_FRAME_SIZE = 16 * 1024 * 1024
# Our messages are shallow (a few levels of maps and lists); 64 leaves room and stops
# recursion bombs long before the interpreter's limit.
MAX_DEPTH = 64


class ProtocolError(Exception):
    """The peer sent something we refuse; the connection is closed with this reason."""


def encode(value: Any) -> bytes:
    data = cbor2.dumps(value)
    if len(data) > MAX_FRAME_SIZE:
        raise ProtocolError(f"frame of {len(data)} bytes exceeds the limit of {MAX_FRAME_SIZE}")
    return data


# A reply too large for one frame travels as parts of this size (see `split_large`).
PART_SIZE = 8 * 1024 * 1024
# A multi-part reply may not grow beyond this, whoever sends it.
MAX_LARGE_SIZE = 1024 * 1024 * 1024


def encode_unbounded(value: Any) -> bytes:
    return cbor2.dumps(value)


def split_large(data: bytes) -> list[dict[str, Any]]:
    """Messages carrying an encoded value too large for one frame, in order."""
    parts = [data[i : i + PART_SIZE] for i in range(0, len(data), PART_SIZE)]
    return [{"part": part, "last": index == len(parts) - 1} for index, part in enumerate(parts)]


def decode(data: bytes) -> Any:
    if len(data) > MAX_FRAME_SIZE:
        raise ProtocolError(f"frame of {len(data)} bytes exceeds the limit of {MAX_FRAME_SIZE}")
    return decode_unbounded(data)


def decode_unbounded(data: bytes) -> Any:
    """Strict decoding without the frame cap (reassembled multi-part values)."""
    if len(data) > MAX_LARGE_SIZE:
        raise ProtocolError(f"value of {len(data)} bytes exceeds the limit of {MAX_LARGE_SIZE}")
    try:
        return cbor2.loads(
            data,
            max_depth=MAX_DEPTH,
            allow_indefinite=False,
            allow_duplicate_keys=False,
            strict_hashable_types=True,
        )
    except (cbor2.CBORDecodeError, ValueError, TypeError, RecursionError) as error:
        raise ProtocolError(f"malformed frame: {error}") from None
