"""Ports of the original's `tests/test_coupling.py` (cluster.md §2) onto our harness."""

from __future__ import annotations

import collections

from tests.harness import ClusterEnv, wait_until
from tests.tableparse import parse_table

ECHO = ["bash", "-c", 'echo "$HQ_RESOURCE_VALUES_cpus;$HQ_RESOURCE_VALUES_foo"']


def output(cluster: ClusterEnv, job_id: int, task_id: int = 0) -> str:
    return (cluster.work_dir / f"job-{job_id}" / f"{task_id}.stdout").read_text()


def failing_worker(cluster: ClusterEnv, *args: str) -> str:
    process = cluster.start_worker(*args, wait=False)
    wait_until(lambda: process.poll() is not None, what="worker to fail")
    assert process.returncode == 1
    return cluster.log_of(f"worker{cluster.n_workers}")


def test_coupling_invalid_inputs(cluster: ClusterEnv) -> None:
    cluster.start_server()
    log = failing_worker(cluster, "--coupling", "foo[0]:goo[1]")
    assert "Resource not found: foo" in log
    log = failing_worker(
        cluster,
        "--resource",
        "xxx=[1,2,3]",
        "--resource",
        "yyy=[[1,2,3], [10,11]]",
        "--coupling",
        "xxx[0]:yyy[0]",
    )
    assert "Resource 'xxx' has only a single group" in log
    log = failing_worker(
        cluster,
        "--resource",
        "xxx=[[1,2,3], [10, 20, 30]]",
        "--resource",
        "yyy=[[1,2,3], [10,11]]",
        "--coupling",
        "xxx[0]:yyy[3]",
    )
    assert "Invalid group id 3 for resource 'yyy'" in log
    assert len(log.strip().splitlines()) == 1  # one clear line, no traceback
    assert cluster.running_hosts() == []


def test_coupling_output(cluster: ClusterEnv) -> None:
    cluster.start_server()
    cluster.start_worker(
        "--coupling=cpus[0]:foo[0],cpus[1]:foo[1]",
        "--resource=ddd=sum(123)",
        "--resource=foo=[[10,20,30],[40,50,60]]",
        cpus="[[1, 2, 3], [4, 5, 6]]",
    )
    table = parse_table(cluster.command(["worker", "info", "1"]))
    table.check_row_value("Resources", "cpus: 2x3 [coupled]\nddd: 123\nfoo: 2x3 [coupled]")
    listed = parse_table(cluster.command(["worker", "list"]))
    assert listed.get_column_value("Resources") == [
        "cpus 2x3 [coupled]; ddd 123; foo 2x3 [coupled]"
    ]
    (info,) = cluster.json(["worker", "info", "1"])
    assert info["configuration"]["resources"]["coupling"] == {
        "weights": [
            {
                "group1_idx": 0,
                "group2_idx": 0,
                "resource1_idx": 0,
                "resource2_idx": 2,
                "weight": 256,
            },
            {
                "group1_idx": 1,
                "group2_idx": 1,
                "resource1_idx": 0,
                "resource2_idx": 2,
                "weight": 256,
            },
        ]
    }


def test_coupling_alloc1(cluster: ClusterEnv) -> None:
    cluster.start_server()
    for amount in (3, 1):
        cluster.command(
            [
                "submit",
                "--array=1-20",
                "--cpus=1",
                f"--resource=foo={amount} compact!",
                "--",
                *ECHO,
            ]
        )
    cluster.start_worker(
        "--coupling=cpus[0]:foo[0],cpus[1]:foo[1]",
        "--resource=ddd=sum(123)",
        "--resource=foo=[[10,20,30,40],[50,60,70,80]]",
        cpus="[[1, 2, 3], [4, 5, 6]]",
    )
    cluster.wait_for_job_state(1, "FINISHED", timeout=30)
    cluster.wait_for_job_state(2, "FINISHED", timeout=30)
    for job_id in (1, 2):
        for task_id in range(1, 21):
            cpus, foos = (part.split(",") for part in output(cluster, job_id, task_id).split(";"))
            used = {int(c) // 4 for c in cpus} | {int(f) // 50 for f in foos}
            assert len(used) == 1, (job_id, task_id, cpus, foos)


def test_coupling_alloc2(cluster: ClusterEnv) -> None:
    cluster.start_server()
    cluster.command(["submit", "--cpus=4", "--resource=foo=2", "--", *ECHO])
    cluster.command(["submit", "--cpus=2", "--resource=foo=4", "--", *ECHO])
    cluster.start_worker(
        "--coupling=cpus[0]:foo[0],cpus[1]:foo[1],cpus[2]:foo[2]",
        "--resource=ddd=sum(123)",
        "--resource=foo=[[1, 2, 3],[10, 11, 12],[20, 21, 23]]",
        cpus="[[1, 2, 3], [10, 11, 12], [21, 22, 23]]",
    )
    for job_id in (1, 2):
        cluster.wait_for_job_state(job_id, "FINISHED")
        cpus, foos = (part.split(",") for part in output(cluster, job_id).split(";"))
        assert len({int(v) // 10 for v in cpus + foos}) == 2


def test_coupling_combined(cluster: ClusterEnv) -> None:
    cluster.start_server()
    cluster.start_worker(
        "--resource=foo=[[1, 2],[10,11],[22,21]]",
        "--coupling=cpus[0]:foo[0],cpus[1]:foo[1],cpus[2]:foo[2]",
        cpus="[[1, 2, 3, 4], [11, 12, 13, 14], [21, 22, 23, 24]]",
    )
    cases = [
        ("6 tight", "2 tight", ([2, 4], [2])),
        ("6 scatter", "2 scatter", ([2, 2, 2], [1, 1])),
        ("6 compact", "2 compact", ([3, 3], [1, 1])),
        ("6 tight", "2 compact", ([2, 4], [1, 1])),
        ("6 compact", "2 tight", ([3, 3], [2])),
        ("6 scatter", "2 tight", ([2, 2, 2], [2])),
        ("6 scatter", "2 compact", ([2, 2, 2], [2])),
    ]
    for job_id, (cpus, foo, expected) in enumerate(cases, 1):
        cluster.command(["submit", f"--cpus={cpus}", "--resource", f"foo={foo}", "--", *ECHO])
        cluster.wait_for_job_state(job_id, "FINISHED")
        first, second = output(cluster, job_id).strip().split(";")
        got = tuple(
            sorted(collections.Counter(int(v) // 10 for v in part.split(",")).values())
            for part in (first, second)
        )
        assert got == expected, (cpus, foo)
