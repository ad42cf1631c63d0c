"""Malformed requests against a real server and worker: each costs one error reply; the
connection, the worker and later honest jobs are unaffected."""

from __future__ import annotations

import contextlib
import json
import logging
import socket
from typing import Any

import pytest
import trio

from hyperq.transport.wsclient import BlockingConnection, connect
from hyperq.transport.wsserver import serve_role
from tests.harness import ClusterEnv


def raw_client(cluster: ClusterEnv) -> BlockingConnection:
    record = json.loads(cluster.access_path().read_text())
    client = record["client"]
    return connect("127.0.0.1", client["port"], "client", bytes.fromhex(client["secret_key"]))


def honest_submit(cluster: ClusterEnv, args: list[str]) -> dict[str, Any]:
    return {
        "op": "submit",
        "job_desc": {"name": "honest", "max_fails": None},
        "submit_desc": {
            "submit_dir": str(cluster.work_dir),
            "program": {"args": args, "cwd": str(cluster.work_dir), "env": {}},
            "resources": [[["cpus", 10_000, "compact"]], 0, 0.0, 10_000],
            "tasks": {"ids": None, "entries": None},
        },
    }


MALFORMED: list[Any] = [
    "submit",
    [1, 2, 3],
    {"op": "submit"},
    {"op": "submit", "submit_desc": "x", "job_desc": 5},
    {"op": "submit", "submit_desc": {"program": {"args": [["ls"]]}}},
    {"op": "job-info", "selector": {"kind": "some"}},
    {"op": "job-cancel", "selector": {"kind": "ids", "ranges": [[0, 2**40, 1]]}},
    {"op": "task-list", "selector": {"kind": "all"}, "tasks": "0-5"},
    {"op": "no-such-op"},
]


def test_malformed_submits_cost_one_reply_each(cluster: ClusterEnv) -> None:
    cluster.start_server()
    worker = cluster.start_worker(cpus=1)
    conn = raw_client(cluster)
    try:
        errors = []
        for request in MALFORMED:
            reply = conn.request(request)
            assert set(reply) == {"error"}, (request, reply)
            errors.append(reply["error"])
        # Wrong types inside an otherwise honest submit: the field is named.
        bad_args = honest_submit(cluster, ["true"])
        bad_args["submit_desc"]["program"]["args"] = ["echo", ["nested"]]
        reply = conn.request(bad_args)
        assert reply == {
            "error": "Invalid submit request: submit_desc.program.args[1]: expected a string"
        }
        bad_env = honest_submit(cluster, ["true"])
        bad_env["submit_desc"]["program"]["env"] = {"A": 1}
        assert "submit_desc.program.env[...]: expected a string" in conn.request(bad_env)["error"]
        assert any("unknown request 'no-such-op'" in e for e in errors)
        assert any("expected 'last', 'all' or 'ids'" in e or "selector.kind" in e for e in errors)

        # The same connection still works, and nothing was created.
        reply = conn.request({"op": "job-list"})
        assert reply == {"ok": {"jobs": [], "total": 0}}

        # An honest job on the same connection runs on the same worker.
        reply = conn.request(honest_submit(cluster, ["true"]))
        job_id = reply["ok"]["job"]
        cluster.wait_for_job_state(job_id, "FINISHED")
    finally:
        conn.close()
    assert worker.poll() is None
    assert cluster.worker_states() == {1: "RUNNING"}


def test_tasks_that_cannot_start_fail_and_the_worker_goes_on(cluster: ClusterEnv) -> None:
    cluster.start_server()
    worker = cluster.start_worker(cpus=1)
    cluster.command(["submit", "--", "/nonexistent/program"])
    cluster.command(["submit", "--cwd", "/proc/self/hq-cannot-exist", "--", "true"])
    cluster.command(["submit", "--stdout", "/proc/self/hq-no/out", "--", "true"])
    cluster.command(["submit", "--", "true"])
    for job_id in (1, 2, 3):
        cluster.wait_for_job_state(job_id, "FAILED")
    cluster.wait_for_job_state(4, "FINISHED")
    tasks = cluster.json(["task", "list", "1-3"])
    texts = [tasks[str(job_id)][0]["error"] for job_id in (1, 2, 3)]
    assert "was not found" in texts[0]
    assert "Could not create working directory" in texts[1]
    assert "Cannot create stdout directory" in texts[2]
    assert worker.poll() is None


async def test_a_handler_error_is_logged_with_its_type_and_message(
    caplog: pytest.LogCaptureFixture,
) -> None:
    handled = trio.Event()

    async def broken(peer: Any) -> None:
        try:
            async with trio.open_nursery() as nursery:

                async def fail() -> None:
                    raise TypeError("argv must be a list of strings")

                nursery.start_soon(fail)
        finally:
            handled.set()

    caplog.set_level(logging.DEBUG, logger="hyperq.transport.wsserver")
    with socket.socket() as listener:
        listener.bind(("127.0.0.1", 0))
        listener.listen()
        port = listener.getsockname()[1]
        async with trio.open_nursery() as nursery:
            await nursery.start(serve_role, "client", None, listener, broken)
            conn = await trio.to_thread.run_sync(connect, "127.0.0.1", port, "client", None)
            try:
                with trio.fail_after(10):
                    await handled.wait()
                    while "Error in client connection handler" not in caplog.text:
                        await trio.sleep(0.01)
            finally:
                with contextlib.suppress(Exception):
                    conn.close()
            nursery.cancel_scope.cancel()
    records = [r for r in caplog.records if "connection handler" in r.getMessage()]
    assert records[0].levelname == "ERROR"
    assert records[0].getMessage() == (
        "Error in client connection handler: TypeError: argv must be a list of strings"
    )
    assert records[0].exc_info is not None  # the traceback, shown under --debug
