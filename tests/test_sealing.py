"""The handshake and sealed frames: tampering, replay, reordering and wrong keys fail."""

import os

import pytest
from hypothesis import given
from hypothesis import strategies as st

from hyperq.transport.codec import MAX_FRAME_SIZE, ProtocolError, decode, encode
from hyperq.transport.sealing import ClientHandshake, ServerHandshake, Session


def pair(
    client_key: bytes | None,
    server_key: bytes | None,
    role: str = "client",
    server_role: str = "client",
) -> tuple[Session, Session]:
    client = ClientHandshake(role, client_key)
    server = ServerHandshake(server_role, server_key)
    challenge = server.receive_hello(client.hello())
    proof = client.receive_challenge(challenge)
    server_session = server.receive_proof(proof)
    assert client.session is not None
    return client.session, server_session


KEY = os.urandom(32)


def test_round_trip_both_directions() -> None:
    client, server = pair(KEY, KEY)
    assert client.encrypted and server.encrypted
    for i in range(5):
        assert server.open(client.seal({"op": "x", "i": i})) == {"op": "x", "i": i}
        assert client.open(server.seal([i, b"data"])) == [i, b"data"]


def test_key_never_on_the_wire() -> None:
    client = ClientHandshake("client", KEY)
    server = ServerHandshake("client", KEY)
    hello = client.hello()
    challenge = server.receive_hello(hello)
    proof = client.receive_challenge(challenge)
    for frame in (hello, challenge, proof):
        assert KEY not in frame


def test_tampered_frame_rejected() -> None:
    client, server = pair(KEY, KEY)
    frame = bytearray(client.seal({"op": "submit"}))
    frame[-1] ^= 1
    with pytest.raises(ProtocolError, match="authentication"):
        server.open(bytes(frame))


def test_replayed_frame_rejected() -> None:
    client, server = pair(KEY, KEY)
    frame = client.seal({"op": "submit"})
    assert server.open(frame) == {"op": "submit"}
    with pytest.raises(ProtocolError):
        server.open(frame)


def test_reordered_frames_rejected() -> None:
    client, server = pair(KEY, KEY)
    first = client.seal(1)
    second = client.seal(2)
    with pytest.raises(ProtocolError):
        server.open(second)
    del first


def test_reflected_frame_rejected() -> None:
    client, _server = pair(KEY, KEY)
    frame = client.seal("hello")
    # A frame sent back to its sender must not verify: directions use different keys.
    with pytest.raises(ProtocolError):
        client.open(frame)


def test_wrong_key_fails_handshake_on_both_sides() -> None:
    other = os.urandom(32)
    client = ClientHandshake("client", other)
    server = ServerHandshake("client", KEY)
    challenge = server.receive_hello(client.hello())
    with pytest.raises(ProtocolError, match="prove"):
        client.receive_challenge(challenge)
    # A client that fakes a proof is refused by the server.
    with pytest.raises(ProtocolError, match="prove"):
        server.receive_proof(encode({"proof": b"\0" * 32}))


def test_wrong_role_refused() -> None:
    with pytest.raises(ProtocolError, match="wrong role"):
        pair(KEY, KEY, role="worker", server_role="client")


def test_auth_mismatch_refused() -> None:
    with pytest.raises(ProtocolError):
        pair(None, KEY)
    with pytest.raises(ProtocolError):
        pair(KEY, None)


def test_plain_sessions_when_disabled() -> None:
    client, server = pair(None, None)
    assert not client.encrypted
    frame = client.seal({"a": 1})
    assert decode(frame) == {"a": 1}
    assert server.open(frame) == {"a": 1}


def test_garbage_handshake_is_a_protocol_error() -> None:
    server = ServerHandshake("client", KEY)
    with pytest.raises(ProtocolError):
        server.receive_hello(b"\xff\xff\xff garbage")
    with pytest.raises(ProtocolError):
        server.receive_hello(encode([1, 2, 3]))


def test_strict_decoding() -> None:
    with pytest.raises(ProtocolError):
        decode(b"\x9f\x01\xff")  # indefinite-length array
    with pytest.raises(ProtocolError):
        decode(b"\xa2\x61a\x01\x61a\x02")  # duplicate key
    with pytest.raises(ProtocolError):
        decode(b"\x81" * 100 + b"\x01")  # nesting deeper than the limit
    with pytest.raises(ProtocolError):
        decode(b"\x00" * (MAX_FRAME_SIZE + 1))


@given(
    st.recursive(
        st.none()
        | st.booleans()
        | st.integers()
        | st.text()
        | st.binary()
        | st.floats(allow_nan=False),
        lambda children: (
            st.lists(children, max_size=4) | st.dictionaries(st.text(), children, max_size=4)
        ),
        max_leaves=20,
    )
)
def test_codec_round_trip(value: object) -> None:
    assert decode(encode(value)) == value


@given(st.binary(max_size=200))
def test_decode_never_crashes_on_random_bytes(data: bytes) -> None:
    try:
        decode(data)
    except ProtocolError:
        pass


def test_large_values_travel_in_parts() -> None:
    from hyperq.transport.codec import (
        PART_SIZE,
        decode_unbounded,
        encode_unbounded,
        split_large,
    )

    value = {
        "ok": {"tasks": [{"id": i, "state": "waiting", "blob": b"x" * 100} for i in range(200_000)]}
    }
    data = encode_unbounded(value)
    assert len(data) > MAX_FRAME_SIZE
    client, server = pair(KEY, KEY)
    frames = [server.seal(message) for message in split_large(data)]
    assert len(frames) == -(-len(data) // PART_SIZE)
    assert all(len(frame) <= MAX_FRAME_SIZE for frame in frames)
    parts = [client.open(frame) for frame in frames]
    assert [p["last"] for p in parts] == [False] * (len(parts) - 1) + [True]
    assert decode_unbounded(b"".join(p["part"] for p in parts)) == value


@given(
    message=st.binary(max_size=300),
    nonce=st.binary(min_size=24, max_size=24),
    key=st.binary(min_size=32, max_size=32),
)
def test_direct_sodium_calls_match_pynacl(message: bytes, nonce: bytes, key: bytes) -> None:
    """hyperq.transport.sodium gives exactly what PyNaCl's bindings give (and takes it)."""
    from nacl import bindings

    from hyperq.transport import sodium

    sealed = sodium.crypto_secretbox(message, nonce, key)
    assert sealed == bindings.crypto_secretbox(message, nonce, key)
    assert sodium.crypto_secretbox_open(sealed, nonce, key) == message
    assert bindings.crypto_secretbox_open(sealed, nonce, key) == message
    tampered = bytes([sealed[0] ^ 1]) + sealed[1:]
    with pytest.raises(sodium.CryptoError):
        sodium.crypto_secretbox_open(tampered, nonce, key)
    with pytest.raises(sodium.CryptoError):
        sodium.crypto_secretbox_open(sealed[:10], nonce, key)
    mac = sodium.crypto_generichash_blake2b_salt_personal(message, digest_size=32, key=key)
    assert mac == bindings.crypto_generichash_blake2b_salt_personal(
        message, digest_size=32, key=key
    )
    assert sodium.sodium_memcmp(mac, mac) and not sodium.sodium_memcmp(
        mac, mac[:-1] + bytes([mac[-1] ^ 1])
    )
