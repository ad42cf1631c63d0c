"""Authentication handshake and sealed frames, as a sans-IO core.

Both sides prove they hold the role's secret key without sending it: each sends a fresh
random nonce, each answers with a keyed BLAKE2b MAC over both nonces, the role and its
own direction. Fresh per-session keys are derived from the secret and both nonces, one
per direction, so frames cannot be reflected back. Every later frame is a SecretBox
(XSalsa20-Poly1305) whose nonce is an implicit per-direction counter: tampering, replay,
reordering and a wrong key all fail the MAC. With authentication disabled the same
handshake runs without proofs and frames are plain CBOR.

The classes take and return Python values (before CBOR) or bytes; the trio server and
the blocking client are thin loops around them. No I/O here.
"""

from __future__ import annotations

import os
from typing import Any

from hyperq.transport.codec import ProtocolError, decode, encode
from hyperq.transport.sodium import (
    CryptoError,
    crypto_generichash_blake2b_salt_personal,
    crypto_secretbox,
    crypto_secretbox_open,
    sodium_memcmp,
)

PROTOCOL = "hyperq/1"
NONCE_SIZE = 32
MAC_SIZE = 32
SECRETBOX_NONCE_SIZE = 24


def _same(a: bytes, b: bytes) -> bool:
    """Constant-time comparison, so a forged proof learns nothing from timing."""
    return len(a) == len(b) and sodium_memcmp(a, b)


def _mac(key: bytes, label: bytes, role: str, client_nonce: bytes, server_nonce: bytes) -> bytes:
    data = label + b"\0" + role.encode() + b"\0" + client_nonce + server_nonce
    return crypto_generichash_blake2b_salt_personal(data, digest_size=MAC_SIZE, key=key)


class Session:
    """Seals outgoing and opens incoming frames of one authenticated connection."""

    def __init__(self, send_key: bytes | None, recv_key: bytes | None) -> None:
        self._send_key = send_key
        self._recv_key = recv_key
        self._send_counter = 0
        self._recv_counter = 0

    @property
    def encrypted(self) -> bool:
        return self._send_key is not None

    def seal(self, value: Any) -> bytes:
        return self.seal_bytes(encode(value))

    def seal_bytes(self, data: bytes) -> bytes:
        """Seal an already encoded frame."""
        if self._send_key is None:
            return data
        nonce = self._send_counter.to_bytes(SECRETBOX_NONCE_SIZE, "little")
        self._send_counter += 1
        return crypto_secretbox(data, nonce, self._send_key)

    def open(self, frame: bytes) -> Any:
        if self._recv_key is None:
            return decode(frame)
        nonce = self._recv_counter.to_bytes(SECRETBOX_NONCE_SIZE, "little")
        try:
            data = crypto_secretbox_open(frame, nonce, self._recv_key)
        except (CryptoError, ValueError, TypeError):
            raise ProtocolError(
                "frame failed authentication (tampered, replayed, reordered or wrong key)"
            ) from None
        self._recv_counter += 1
        return decode(data)


def _session_keys(
    key: bytes, role: str, client_nonce: bytes, server_nonce: bytes
) -> tuple[bytes, bytes]:
    c2s = _mac(key, b"key client->server", role, client_nonce, server_nonce)
    s2c = _mac(key, b"key server->client", role, client_nonce, server_nonce)
    return c2s, s2c


def _expect_map(frame: bytes, what: str) -> dict[str, Any]:
    value = decode(frame)
    if not isinstance(value, dict):
        raise ProtocolError(f"{what}: expected a map")
    return value


class ClientHandshake:
    """Client side: hello → (challenge) → proof; then `session` is ready."""

    def __init__(self, role: str, key: bytes | None) -> None:
        self.role = role
        self.key = key
        self.nonce = os.urandom(NONCE_SIZE) if key is not None else b""
        self.session: Session | None = None

    def hello(self) -> bytes:
        return encode(
            {
                "protocol": PROTOCOL,
                "role": self.role,
                "nonce": self.nonce,
                "auth": self.key is not None,
            }
        )

    def receive_challenge(self, frame: bytes) -> bytes:
        """Check the server's proof; returns our proof frame."""
        msg = _expect_map(frame, "handshake")
        if "error" in msg:
            raise ProtocolError(f"server refused the connection: {msg['error']}")
        if self.key is None:
            if msg.get("auth"):
                raise ProtocolError(
                    "server requires authentication but the access record has no key"
                )
            self.session = Session(None, None)
            return encode({"proof": b""})
        server_nonce, proof = msg.get("nonce"), msg.get("proof")
        if not isinstance(server_nonce, bytes) or len(server_nonce) != NONCE_SIZE:
            raise ProtocolError("handshake: bad server nonce")
        expected = _mac(self.key, b"server proof", self.role, self.nonce, server_nonce)
        if not isinstance(proof, bytes) or not _same(proof, expected):
            raise ProtocolError("server failed to prove it holds the secret key")
        c2s, s2c = _session_keys(self.key, self.role, self.nonce, server_nonce)
        self.session = Session(c2s, s2c)
        return encode(
            {"proof": _mac(self.key, b"client proof", self.role, self.nonce, server_nonce)}
        )


class ServerHandshake:
    """Server side: hello → challenge; proof → `session` is ready."""

    def __init__(self, role: str, key: bytes | None) -> None:
        self.role = role
        self.key = key
        self.nonce = os.urandom(NONCE_SIZE) if key is not None else b""
        self._client_nonce = b""
        self.session: Session | None = None

    def receive_hello(self, frame: bytes) -> bytes:
        msg = _expect_map(frame, "handshake")
        if msg.get("protocol") != PROTOCOL:
            raise ProtocolError(f"unknown protocol {msg.get('protocol')!r}")
        if msg.get("role") != self.role:
            raise ProtocolError(f"wrong role {msg.get('role')!r} on the {self.role} port")
        if self.key is None:
            if msg.get("auth"):
                raise ProtocolError("client wants authentication but it is disabled here")
            return encode({"auth": False})
        client_nonce = msg.get("nonce")
        if (
            not msg.get("auth")
            or not isinstance(client_nonce, bytes)
            or len(client_nonce) != NONCE_SIZE
        ):
            raise ProtocolError("authentication required")
        self._client_nonce = client_nonce
        proof = _mac(self.key, b"server proof", self.role, client_nonce, self.nonce)
        return encode({"auth": True, "nonce": self.nonce, "proof": proof})

    def receive_proof(self, frame: bytes) -> Session:
        msg = _expect_map(frame, "handshake")
        if self.key is None:
            self.session = Session(None, None)
            return self.session
        expected = _mac(self.key, b"client proof", self.role, self._client_nonce, self.nonce)
        proof = msg.get("proof")
        if not isinstance(proof, bytes) or not _same(proof, expected):
            raise ProtocolError("client failed to prove it holds the secret key")
        c2s, s2c = _session_keys(self.key, self.role, self._client_nonce, self.nonce)
        self.session = Session(s2c, c2s)
        return self.session
