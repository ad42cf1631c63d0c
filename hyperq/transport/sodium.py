"""The four libsodium calls of the transport, straight through PyNaCl's cffi module.

`nacl.bindings` imports every binding PyNaCl has: ~65M instructions, a fifth of the CPU
of a short CLI command such as `hq submit --wait`; `nacl._sodium` alone costs ~2M. The
functions here make the same libsodium calls as PyNaCl's functions of the same names and
give the same bytes (tests/test_sealing.py compares them). Should PyNaCl ever move its
cffi module, PyNaCl's own functions are used.
"""

from __future__ import annotations

from nacl.exceptions import CryptoError

__all__ = [
    "CryptoError",
    "crypto_generichash_blake2b_salt_personal",
    "crypto_secretbox",
    "crypto_secretbox_open",
    "sodium_memcmp",
]

KEY_SIZE = 32
NONCE_SIZE = 24
MAC_SIZE = 16
PERSONAL_SIZE = 16  # also the salt's

try:
    from nacl._sodium import ffi, lib
except ImportError:  # pragma: no cover - a PyNaCl without its cffi module where it was
    from nacl.bindings import (  # type: ignore[assignment]
        crypto_generichash_blake2b_salt_personal,
        crypto_secretbox,
        crypto_secretbox_open,
        sodium_memcmp,
    )
else:
    # Picks the fastest implementations for this CPU; required before any other call
    # (PyNaCl does it when `nacl.bindings` is imported).
    if lib.sodium_init() < 0:  # pragma: no cover
        raise RuntimeError("libsodium could not be initialised")

    def crypto_secretbox(message: bytes, nonce: bytes, key: bytes) -> bytes:
        """The MAC and the ciphertext of `message` (XSalsa20-Poly1305)."""
        if len(key) != KEY_SIZE:
            raise ValueError("Invalid key")
        if len(nonce) != NONCE_SIZE:
            raise ValueError("Invalid nonce")
        size = len(message) + MAC_SIZE
        out = ffi.new("unsigned char[]", size)
        if lib.crypto_secretbox_easy(out, message, len(message), nonce, key) != 0:
            raise CryptoError("Encryption failed")
        return ffi.buffer(out, size)[:]

    def crypto_secretbox_open(ciphertext: bytes, nonce: bytes, key: bytes) -> bytes:
        """The message sealed by `crypto_secretbox`; CryptoError if it fails the MAC."""
        if len(key) != KEY_SIZE:
            raise ValueError("Invalid key")
        if len(nonce) != NONCE_SIZE:
            raise ValueError("Invalid nonce")
        size = len(ciphertext) - MAC_SIZE
        if size < 0:
            raise CryptoError("Decryption failed. Ciphertext failed verification")
        out = ffi.new("unsigned char[]", max(size, 1))
        if lib.crypto_secretbox_open_easy(out, ciphertext, len(ciphertext), nonce, key) != 0:
            raise CryptoError("Decryption failed. Ciphertext failed verification")
        return ffi.buffer(out, size)[:]

    def crypto_generichash_blake2b_salt_personal(
        data: bytes, digest_size: int = 32, key: bytes = b""
    ) -> bytes:
        """Keyed BLAKE2b with an all-zero salt and personalisation."""
        if not 16 <= digest_size <= 64 or len(key) > 64:
            raise ValueError("Invalid digest size or key")
        out = ffi.new("unsigned char[]", digest_size)
        zeros = ffi.new("unsigned char[]", PERSONAL_SIZE)
        if (
            lib.crypto_generichash_blake2b_salt_personal(
                out, digest_size, data, len(data), key, len(key), zeros, zeros
            )
            != 0
        ):
            raise CryptoError("Hashing failed")
        return ffi.buffer(out, digest_size)[:]

    def sodium_memcmp(a: bytes, b: bytes) -> bool:
        """Constant-time equality of two byte strings of the same length."""
        if len(a) != len(b):
            return False
        return bool(lib.sodium_memcmp(a, b, len(a)) == 0)
