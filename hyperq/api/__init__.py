"""The Python API: a twin of HyperQueue's `hyperqueue` package (`hyperqueue` → `hyperq.api`).

It builds jobs in the user's process and talks to a server through the blocking client
session of `hyperq.client`; it never imports the server, the worker or the CLI. Function
tasks import `hyperq.api.task.function` in a fresh interpreter on the worker, so this
package loads its heavy parts lazily: the names below are resolved on first use.
"""

from __future__ import annotations

from typing import TYPE_CHECKING, Any

if TYPE_CHECKING:
    from hyperq.api.client import Client
    from hyperq.api.cluster import LocalCluster
    from hyperq.api.ffi import get_version
    from hyperq.api.job import Job

__all__ = ["Client", "Job", "LocalCluster", "get_version"]

_HOMES = {
    "Client": "hyperq.api.client",
    "LocalCluster": "hyperq.api.cluster",
    "Job": "hyperq.api.job",
    "get_version": "hyperq.api.ffi",
}


def __getattr__(name: str) -> Any:
    home = _HOMES.get(name)
    if home is None:
        raise AttributeError(f"module {__name__!r} has no attribute {name!r}")
    import importlib

    value = getattr(importlib.import_module(home), name)
    globals()[name] = value
    return value
