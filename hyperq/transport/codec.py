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


def decode(data: bytes) -> Any:
    if len(data) > MAX_FRAME_SIZE:
        raise ProtocolError(f"frame of {len(data)} bytes exceeds the limit of {MAX_FRAME_SIZE}")
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
