"""The blocking half of writing a stream file: create it, append bytes, and the buffer.

The worker's trio code decides when to write; its copier process (worker/streamcopier)
does the appending. Nothing here knows about tasks or trio. Records are appended whole
(one `write` per batch of whole records, retried on a short write), so a crash can only
cut the file's tail.
"""

from __future__ import annotations

import os
import secrets
import string

from hyperq.stream.format import FileHeader, encode_header
from hyperq.stream.reader import SUFFIX

NAME_ALPHABET = string.ascii_letters + string.digits
NAME_LENGTH = 12
# More pending than this goes to disk (stream.md §2); a running task's smaller output
# stays in memory until it ends.
FLUSH_THRESHOLD = 8 * 1024


def create_file(directory: str, header: FileHeader) -> tuple[int, str]:
    """Make `directory` if needed and a new `<random>.hqs` in it holding the header."""
    os.makedirs(directory, exist_ok=True)
    while True:
        name = "".join(secrets.choice(NAME_ALPHABET) for _ in range(NAME_LENGTH)) + SUFFIX
        path = os.path.join(directory, name)
        try:
            fd = os.open(
                path, os.O_WRONLY | os.O_CREAT | os.O_EXCL | os.O_APPEND | os.O_CLOEXEC, 0o666
            )
        except FileExistsError:
            continue
        break
    try:
        write_all(fd, encode_header(header))
    except BaseException:
        os.close(fd)
        raise
    return fd, path


def write_all(fd: int, data: bytes) -> None:
    view = memoryview(data)
    while view:
        written = os.write(fd, view)
        view = view[written:]


class Pending:
    """Encoded records waiting for a write; appends never block."""

    def __init__(self) -> None:
        self._chunks: list[bytes] = []
        self.size = 0

    def append(self, record: bytes) -> None:
        self._chunks.append(record)
        self.size += len(record)

    @property
    def over_threshold(self) -> bool:
        return self.size > FLUSH_THRESHOLD

    def take(self) -> bytes:
        data = b"".join(self._chunks)
        self._chunks.clear()
        self.size = 0
        return data
