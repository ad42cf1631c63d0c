"""Log lines on stderr in the format scripts and tests grep for.

Without --debug a line is `<UTC timestamp> <LEVEL> <message>`; with --debug it starts
with `[` and names the source. Short-lived client commands log through the small
functions here, which cost nothing to import; the long-running server and worker route
the standard `logging` module into the same format with `setup_logging`.
"""

from __future__ import annotations

import sys
import time

_LEVELS = {"DEBUG": 10, "INFO": 20, "WARN": 30, "ERROR": 40}


class _Settings:
    """Per-process log settings; set once by the entry point before anything logs."""

    debug = False


def configure(debug: bool) -> None:
    _Settings.debug = debug


def format_line(level: str, message: str, source: str = "hq", created: float | None = None) -> str:
    stamp = time.strftime(
        "%Y-%m-%dT%H:%M:%SZ", time.gmtime(created if created is not None else time.time())
    )
    if _Settings.debug:
        return f"[{stamp} {level} {source}] {message}"
    return f"{stamp} {level} {message}"


def emit(level: str, message: str) -> None:
    if level == "DEBUG" and not _Settings.debug:
        return
    print(format_line(level, message), file=sys.stderr, flush=True)


def debug(message: str) -> None:
    emit("DEBUG", message)


def info(message: str) -> None:
    emit("INFO", message)


def warn(message: str) -> None:
    emit("WARN", message)


def error(message: str) -> None:
    emit("ERROR", message)


def setup_logging(debug: bool) -> None:
    """Route the standard logging module (server, worker, libraries) into our format."""
    import logging

    configure(debug)
    names = {
        logging.DEBUG: "DEBUG",
        logging.INFO: "INFO",
        logging.WARNING: "WARN",
        logging.ERROR: "ERROR",
        logging.CRITICAL: "ERROR",
    }

    class Formatter(logging.Formatter):
        def format(self, record: logging.LogRecord) -> str:
            message = record.getMessage()
            if record.exc_info and debug:
                message += "\n" + self.formatException(record.exc_info)
            level = names.get(record.levelno, record.levelname)
            return format_line(level, message, record.name, record.created)

    handler = logging.StreamHandler(sys.stderr)
    handler.setFormatter(Formatter())
    root = logging.getLogger()
    root.handlers[:] = [handler]
    root.setLevel(logging.DEBUG if debug else logging.INFO)
    if not debug:
        # Libraries must not chatter at INFO on a user's terminal.
        for name in ("trio-websocket", "trio_websocket", "wsproto"):
            logging.getLogger(name).setLevel(logging.WARNING)
