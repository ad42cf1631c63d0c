"""Python function tasks: pickled here, run by `task_main` in the worker's interpreter."""

from __future__ import annotations

import pickle
from pathlib import Path

import pytest

from hyperq.api import Client, Job
from hyperq.api.client import FailedJobsException
from hyperq.api.ffi.protocol import ResourceRequest
from hyperq.api.task.function import PythonEnv, cloud_wrap, purge_cache
from hyperq.api.task.function.wrapper import CloudWrapper
from tests.api.conftest import ApiEnv
from tests.harness import wait_until


def prepare(api_env: ApiEnv, cpus: int = 1, **job_args: object) -> tuple[Job, Client]:
    api_env.start_server()
    api_env.start_worker(cpus=cpus)
    return Job(**job_args), Client(api_env.server_dir)  # type: ignore[arg-type]


def module_level_function(path: str) -> None:
    # Only pickled by reference if this module imports on the worker; tests/ does.
    Path(path).write_text("module level\n")


def test_closure_args_kwargs_and_stdout(api_env: ApiEnv) -> None:
    job, client = prepare(api_env)
    prefix = "stdout"

    def body(a: int, b: int, c: int = 0) -> None:
        print(prefix, a, b, c)

    job.function(body, args=(1, 2), kwargs={"c": 3}, stdout="out")
    job.function(lambda: print("lambda ran"), stdout="lambda-out")
    submitted = client.submit(job)
    assert client.wait_for_jobs([submitted]) is True
    assert Path("out").read_text() == "stdout 1 2 3\n"
    assert Path("lambda-out").read_text() == "lambda ran\n"


def test_function_defined_in_main_like_module(api_env: ApiEnv) -> None:
    job, client = prepare(api_env)
    namespace: dict[str, object] = {"__name__": "__main__"}
    exec("def from_main(path):\n    open(path, 'w').write('main\\n')\n", namespace)
    job.function(namespace["from_main"], args=("main-out",))  # type: ignore[arg-type]
    client.wait_for_jobs([client.submit(job)])
    assert Path("main-out").read_text() == "main\n"


def test_python_prologue(api_env: ApiEnv) -> None:
    init = api_env.work_dir / "init.sh"
    init.write_text("export ABC=xyz\n")
    job, _client = prepare(api_env)
    client = Client(api_env.server_dir, python_env=PythonEnv(prologue=f"source {init}"))

    def body() -> None:
        import os

        print(os.environ.get("ABC"))

    job.function(body, stdout="out")
    client.wait_for_jobs([client.submit(job)])
    assert Path("out").read_text() == "xyz\n"


def test_function_exception_traceback(api_env: ApiEnv) -> None:
    job, client = prepare(api_env)

    def failing() -> None:
        raise Exception("MyException")

    job.function(failing, stderr="err")
    submitted = client.submit(job)
    assert client.wait_for_jobs([submitted], raise_on_error=False) is False
    errors = client.get_failed_tasks(submitted)
    assert list(errors) == [0]
    error = errors[0].error
    assert error.startswith("Traceback (most recent call last):\n")
    # cloudpickle >= 3.1 renames the code's file `<dynamic-code>`, so the traceback
    # names the function but cannot quote its source line (the original's neither).
    assert ", in failing\n" in error
    assert error.endswith("\nException: MyException\n")
    assert errors[0].stderr == str(api_env.work_dir / "err")
    # The traceback is printed to stderr too.
    assert "Exception: MyException" in Path("err").read_text()


def test_function_name_in_exception(api_env: ApiEnv) -> None:
    job, client = prepare(api_env)

    def foo() -> None:
        raise SystemExit(3)

    job.function(foo, stdout=None, stderr=None)
    submitted = client.submit(job)
    with pytest.raises(FailedJobsException) as info:
        client.wait_for_jobs([submitted])
    text = str(info.value)
    assert text.startswith("The following tasks of job `1` have failed:\nTask foo/0 (id=0):\n")
    assert "SystemExit: 3\n" in text
    assert text.endswith(
        f"You can find more information here:\nWorking directory: {api_env.work_dir}\n\n"
    )


def test_function_names() -> None:
    def foo() -> None:
        pass

    job = Job()
    assert job.function(foo).label == "foo/0"
    assert job.function(foo).name == "foo/1"
    assert job.function(lambda: 0).name == "<lambda>/2"
    assert job.function(foo, name="bar").label == "bar"
    assert job.program("ls").label == "4"
    assert repr(job.tasks[0]) == "<PyFunction fn=foo>"


def test_default_workdir_and_env(api_env: ApiEnv) -> None:
    job, client = prepare(
        api_env, default_workdir=api_env.work_dir / "not-yet", default_env={"A": "1", "B": "2"}
    )

    def body() -> None:
        import os

        with open("seen", "w") as f:
            f.write(f"{os.getcwd()} {os.environ['A']} {os.environ['B']}\n")

    job.function(body, env={"B": "override"})
    client.wait_for_jobs([client.submit(job)])
    workdir = api_env.work_dir / "not-yet"
    assert (workdir / "seen").read_text() == f"{workdir} 1 override\n"


def test_function_resources(api_env: ApiEnv) -> None:
    job, client = prepare(api_env)
    job.function(lambda: 0, resources=ResourceRequest(cpus="1"))
    job.function(lambda: 0, resources=ResourceRequest(cpus="2"))
    job.function(lambda: 0, resources=ResourceRequest(cpus="all"))
    submitted = client.submit(job)
    wait_until(
        lambda: api_env.task_states(submitted.id) == {0: "finished", 1: "waiting", 2: "finished"},
        what="function tasks 0 and 2 to finish",
    )


def test_cloud_wrapper_pickles_by_value_and_caches() -> None:
    counter = [0]

    def inc(x: int) -> int:
        counter[0] += 1
        return x + 1

    purge_cache()
    wrapper = cloud_wrap(inc)
    assert cloud_wrap(wrapper) is wrapper
    assert wrapper.__name__ == "inc"
    restored = pickle.loads(pickle.dumps(wrapper))
    assert isinstance(restored, CloudWrapper)
    assert restored(41) == 42
    assert wrapper.pickled_fn is not None  # cached after the first pickle
    job = Job()
    first = job.function(inc)
    second = job.function(inc)
    assert first.fn is second.fn
    with pytest.raises(ValueError, match="Pass at least one of `fn` and `pickled_fn`"):
        CloudWrapper(None)


def test_python_env_args() -> None:
    code = "from hyperq.api.task.function import task_main as m; m()"
    assert PythonEnv().args == ["python3", "-c", code]
    assert PythonEnv(python_bin="py", prologue="module load x", shell="sh").args == [
        "sh",
        "-c",
        f'module load x\n\npy -c "{code}"',
    ]
