"""The API's module map (spec §1) and that `hq` never loads it."""

from __future__ import annotations

import importlib
import subprocess
import sys

import pytest

MODULE_MAP = {
    "hyperq.api": ["Client", "LocalCluster", "Job", "get_version"],
    "hyperq.api.client": [
        "Client",
        "FailedJobsException",
        "MAX_PRINTED_TASKS",
        "JobMap",
        "create_progress_callback",
        "PythonEnv",
        "Job",
        "SubmittedJob",
        "FailedTaskContext",
        "JobId",
        "TaskId",
    ],
    "hyperq.api.job": ["Job", "SubmittedJob", "HasJobId", "get_job_id", "merge_envs"],
    "hyperq.api.cluster": ["LocalCluster", "WorkerConfig"],
    "hyperq.api.output": [
        "StdioDef",
        "Stdio",
        "FileOnCloseBehavior",
        "default_output",
        "default_stdout",
        "default_stderr",
        "Output",
        "gather_outputs",
    ],
    "hyperq.api.task.task": ["Task", "EnvType", "build_stdio"],
    "hyperq.api.task.program": ["ExternalProgram", "ProgramArgs", "to_arg_list"],
    "hyperq.api.task.function": [
        "PythonEnv",
        "PythonFunction",
        "task_main",
        "cloud_wrap",
        "purge_cache",
        "LOG_LEVELS",
        "get_logging_level",
        "generate_task_name",
    ],
    "hyperq.api.task.function.wrapper": ["CloudWrapper"],
    "hyperq.api.ffi": ["JobId", "TaskId", "get_version"],
    "hyperq.api.ffi.client": [
        "ClientConnection",
        "FailedTaskContext",
        "TaskFailureMap",
        "HqClientContext",
    ],
    "hyperq.api.ffi.cluster": ["Cluster", "HqClusterContext"],
    "hyperq.api.ffi.protocol": ["ResourceRequest", "TaskDescription", "JobDescription"],
    "hyperq.api.visualization": ["visualize_job"],
    "hyperq.api.validation": ["ValidationException", "validate_args"],
    "hyperq.api.utils.package": ["MissingPackageException"],
    "hyperq.api.utils.string": ["pluralize"],
    "hyperq.api.common": ["GenericPath"],
}


@pytest.mark.parametrize("module", sorted(MODULE_MAP))
def test_module_map(module: str) -> None:
    loaded = importlib.import_module(module)
    missing = [name for name in MODULE_MAP[module] if not hasattr(loaded, name)]
    assert missing == []


def test_version_and_values() -> None:
    from hyperq import __version__
    from hyperq.api import get_version
    from hyperq.api.client import MAX_PRINTED_TASKS
    from hyperq.api.ffi.protocol import ResourceRequest
    from hyperq.api.output import default_stdout

    assert get_version() == __version__
    assert MAX_PRINTED_TASKS == 5
    assert default_stdout() == "%{CWD}/%{TASK_ID}.stdout"
    given = {"cpus": 8, "gpus": 1}
    request = ResourceRequest(cpus=2, resources=given)
    assert given == {"cpus": 2, "gpus": 1} and request.resources is given
    assert repr(ResourceRequest()) == (
        "<ResourceRequest n_nodes=0 resources={'cpus': 1} min_time=None>"
    )


def run_python(code: str, *flags: str) -> subprocess.CompletedProcess[str]:
    return subprocess.run(
        [sys.executable, *flags, "-c", code], capture_output=True, text=True, timeout=60
    )


def test_hq_startup_does_not_import_the_api() -> None:
    result = run_python(
        "import sys; sys.argv = ['hq', 'server', '--help']\n"
        "from hyperq.cli.main import main\n"
        "try:\n    main()\nexcept SystemExit:\n    pass\n"
        "print(sorted(m for m in sys.modules if m.startswith('hyperq.api') or m == 'cloudpickle'))"
    )
    assert result.stdout.strip().splitlines()[-1] == "[]", result.stderr


def test_api_imports_cloudpickle_only_for_functions() -> None:
    result = run_python(
        "import sys\n"
        "from hyperq.api import Client, Job, LocalCluster\n"
        "job = Job(); job.program('ls')\n"
        "print('cloudpickle' in sys.modules)\n"
        "job.function(len)\n"
        "print('cloudpickle' in sys.modules)"
    )
    assert result.stdout.split() == ["False", "True"], result.stderr
