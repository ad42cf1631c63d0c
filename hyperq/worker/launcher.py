"""Run one task as a process, the way HyperQueue's worker does (jobs.md §2 and §5).

`run_task(spec)` prepares the environment and paths, spawns the program in its own
session, waits for it and turns the result into a `TaskOutcome` with HyperQueue's exact
error strings. Cancelling the caller's scope kills the task's whole process group
(SIGINT, then SIGKILL after 1 s) before the cancellation propagates. It must never do
networking or know about the server: the worker's main loop reports outcomes. Nothing
else in the worker may reap children (os.wait*): the launcher reaps its own.

Spawning: `tools/bench_spawn` (500 x `true`, 2 concurrent, 2-core VM, Python 3.11).
On a quiet machine: `os.posix_spawn(setsid=True)` + `pidfd_open` + `wait_readable` +
`waitpid` ran 1,400-1,700 spawns/s, `trio.open_process` (a thread hop per Popen)
900-1,000/s, an inline Popen 1,200/s, and anything with a `preexec_fn` (fork instead of
vfork; fork alone costs ~2.5 ms here) 230-280/s. With other test suites loading both
cores, wall-clock rates became noise, but the worker's own CPU per spawn stayed ordered:
posix_spawn 0.2-0.4 ms, run_task end to end 0.3-0.6 ms (files, env, paths), Popen
0.3-0.45 ms, trio.open_process 0.45-0.8 ms, preexec 1.7-3.3 ms. So the launcher uses
posix_spawn. posix_spawn has no working-directory argument, so the parent
switches its own cwd around the (synchronous, await-free) spawn call: no other trio task
can observe it, and the worker must not resolve relative paths in worker threads.
The parent-death signal (PR_SET_PDEATHSIG) needs code between fork and exec, i.e. the slow
preexec path, so it is off by default; `parent_death_signal=True` gets it by running the
program through util-linux `setpriv --pdeathsig TERM` (an extra exec: 660-790/s quiet).
Kernels without pidfd_open (< 5.3) fall back to waiting for the exit in a worker thread.
"""

from __future__ import annotations

import contextlib
import errno
import fcntl
import heapq
import logging
import math
import os
import select
import shutil
import signal
import stat
import tempfile
import time
from collections.abc import Callable, Mapping
from dataclasses import dataclass, field
from typing import TYPE_CHECKING, Any

import trio

from hyperq.common.placeholders import resolve_paths, task_values

if TYPE_CHECKING:
    from hyperq.worker.streaming import TaskStream

log = logging.getLogger(__name__)

KILL_GRACE_SECONDS = 1.0
PROGRAM_CACHE_SECONDS = 1.0
# After SIGKILL a process normally vanishes at once; one stuck in uninterruptible I/O is
# left behind rather than holding the caller's cancellation hostage.
REAP_TIMEOUT_SECONDS = 5.0
# How often `_Child.reap` gives the CPU away for a process whose pidfd says it exited
# before it is reapable (each try is a waitpid and a sched_yield, a few µs; usually one
# or two do; if not, the caller polls again later).
REAP_YIELDS = 10
# How long a cancelled `Reaper` waits for its streamed tasks' last output to be written
# (their pipes' drain and a copier's write).
FLUSH_WAIT_SECONDS = 10.0
MAX_ERROR_FILE_BYTES = 2048
ERROR_FILE_NAME = "hq-error"

SIGNAL_NAMES: dict[int, str] = {
    1: "SIGHUP",
    2: "SIGINT",
    3: "SIGQUIT",
    4: "SIGILL",
    5: "SIGTRAP",
    6: "SIGABRT",
    7: "SIGBUS",
    8: "SIGFPE",
    9: "SIGKILL",
    10: "SIGUSR1",
    11: "SIGSEGV",
    12: "SIGUSR2",
    13: "SIGPIPE",
    14: "SIGALRM",
    15: "SIGTERM",
    17: "SIGCHLD",
    18: "SIGCONT",
    19: "SIGSTOP",
}

# Python ignores SIGPIPE and SIGXFSZ and a worker started as a background job of a
# non-interactive shell ignores SIGINT; ignored dispositions survive exec, and the task
# must see the defaults (SIGINT is how a task is asked to stop).
_RESET_SIGNALS = (signal.SIGPIPE, signal.SIGXFSZ, signal.SIGINT)


@dataclass(frozen=True)
class TaskOutcome:
    """How a task ended when it was not cancelled: finished, or failed with an error."""

    error: str | None = None

    @property
    def finished(self) -> bool:
        return self.error is None


FINISHED = TaskOutcome()


def failed(error: str) -> TaskOutcome:
    return TaskOutcome(error)


@dataclass
class TaskLaunchSpec:
    """Everything needed to start one task instance; paths are stage-1 resolved."""

    job_id: int
    task_id: int
    instance: int
    argv: list[str]
    env: dict[str, str]  # the user's --env variables
    cwd: str
    stdout: str | None  # None = `none`
    stderr: str | None
    submit_dir: str
    server_uid: str
    work_dir: str
    stdout_rm_if_finished: bool = False
    stderr_rm_if_finished: bool = False
    stdin: bytes | None = None
    task_dir: bool = False
    pin: str | None = None  # None, "taskset" or "omp"
    time_limit: float | None = None  # seconds
    entry: str | None = None
    # A multi-node task (this worker is its root): every node's hostname, root first.
    node_hosts: list[str] = field(default_factory=list)
    # HQ_RESOURCE_*, CUDA_*, ROCR_* from the caller; HQ_CPUS, OMP_* and HQ_PIN are
    # derived here from cpu_labels.
    resource_env: dict[str, str] = field(default_factory=dict)
    cpu_labels: list[str] = field(default_factory=list)
    cpus_whole: bool = True  # OMP_NUM_THREADS only for a whole number of CPUs
    hq_executable: str | None = None
    parent_death_signal: bool = False
    # Told (pid, True) once the task's process group exists and (pid, False) once it is
    # gone, so the worker's guardian can kill the group if the worker itself is killed.
    on_process: Callable[[int, bool], None] | None = None
    # The worker's cache of PATH searches; None = search every time.
    programs: ProgramCache | None = None
    # The worker's environment, snapshotted once by the caller (copying os.environ costs
    # ~40 us per task); None = os.environ now.
    base_env: Mapping[str, str] | None = None
    # Streamed channels (`--stream`) go through pipes into this; their paths are None.
    stream: TaskStream | None = None
    # Shared by the tasks of one description and allocation (the worker's): what their
    # launches have in common, worked out by the first of them.
    template: LaunchTemplate | None = None

    def for_task(
        self,
        job_id: int,
        task_id: int,
        instance: int,
        entry: str | None,
        node_hosts: list[str],
        env: dict[str, str],
    ) -> TaskLaunchSpec:
        """This spec for another task of its template: its fields, shared (a launch
        only reads them), with the task's own. A copy of the field dict costs a third
        of building the spec field by field (~30 keywords), in a worker's hot path."""
        spec = object.__new__(TaskLaunchSpec)
        fields = spec.__dict__
        fields.update(self.__dict__)
        fields["job_id"] = job_id
        fields["task_id"] = task_id
        fields["instance"] = instance
        fields["entry"] = entry
        fields["node_hosts"] = node_hosts
        fields["env"] = env
        fields["stream"] = None
        return spec


class LaunchTemplate:
    """What every task of one description and allocation starts with, filled in by the
    first one's `_prepare`: the environment (per-task variables included, so that each
    task's copy keeps their order and only overwrites their values), argv, and the
    paths when they hold no placeholder. The worker makes one per (description, job,
    allocation, whether the task has an array entry, whether it has an access key)."""

    __slots__ = ("access_var", "argv", "env", "paths", "spec")

    def __init__(self, access_var: str | None) -> None:
        # The variable of the task's own access key (one per task), set in `spec.env`.
        self.access_var = access_var
        self.env: dict[str, str] | None = None
        self.argv: list[str] = []
        self.paths: tuple[str, str | None, str | None] | None = None
        # The fields its tasks share, as a spec of no task (the worker's `_spec` copies it).
        self.spec: TaskLaunchSpec | None = None


class _SetupError(Exception):
    """A task that cannot be started; the message is the task's error."""


def _os_error_text(error: OSError) -> str:
    code = error.errno or 0
    return f"{os.strerror(code)} (os error {code})"


def _debug_quoted(text: str) -> str:
    """`text` in double quotes with escapes, as HyperQueue prints a string with `{:?}`."""
    escapes = {'"': '\\"', "\\": "\\\\", "\n": "\\n", "\r": "\\r", "\t": "\\t", "\0": "\\0"}
    out = []
    for ch in text:
        if ch in escapes:
            out.append(escapes[ch])
        elif not ch.isprintable() and ch != " ":
            out.append(f"\\u{{{ord(ch):x}}}")
        else:
            out.append(ch)
    return '"' + "".join(out) + '"'


def spawn_error_message(error: OSError, argv: list[str], cwd: str) -> str:
    """The task error for a program that could not be executed (jobs.md §5.4)."""
    lines = [f"Cannot execute {_debug_quoted(' '.join(argv))}: {_os_error_text(error)}"]
    program = argv[0]
    if error.errno == errno.ENOENT:
        lines.append(f"The program that you have tried to execute (`{program}`) was not found.")
        implicit = not os.path.isabs(program) and program.split("/")[0] != "."
        candidate = os.path.join(cwd, program)
        if implicit and os.path.isfile(candidate):
            lines.append(
                f"The file `{candidate}` exists, maybe you have meant `./{program}` instead?"
            )
    elif error.errno == errno.EACCES:
        name = os.path.basename(program.rstrip("/"))
        if os.path.splitext(name)[1] == ".sh":
            lines.append(
                f"The script that you have tried to execute (`{program}`) is not executable."
            )
            lines.append("Try making it executable or add a shebang line to it.")
    return "\n".join(lines)


def exit_error_message(status: int) -> str:
    """The task error for a non-zero wait status."""
    if os.WIFSIGNALED(status):
        number = os.WTERMSIG(status)
        name = SIGNAL_NAMES.get(number, "unknown")
        return f"Program terminated with exit code -1. Received signal {number} ({name})."
    return f"Program terminated with exit code {os.waitstatus_to_exitcode(status)}."


def read_error_file(path: str) -> str | None:
    """The custom error a task left in HQ_ERROR_FILENAME, if it created the file."""
    try:
        with open(path, "rb") as f:
            data = f.read(MAX_ERROR_FILE_BYTES)
    except OSError:
        return None
    if not data:
        return "Task created an error file, but it is empty"
    message = data.decode("utf-8", errors="replace")
    if len(data) == MAX_ERROR_FILE_BYTES:
        message += "\n[The message was truncated]"
    return message


def _task_env(spec: TaskLaunchSpec) -> tuple[dict[str, str], list[str]]:
    """The task's environment and argv (with a `taskset` prefix when pinned)."""
    env = dict(os.environ if spec.base_env is None else spec.base_env)
    env.update(spec.env)
    env.update(spec.resource_env)
    argv = list(spec.argv)
    labels = ",".join(spec.cpu_labels)
    env["HQ_JOB_ID"] = str(spec.job_id)
    env["HQ_TASK_ID"] = str(spec.task_id)
    env["HQ_INSTANCE_ID"] = str(spec.instance)
    env["HQ_SUBMIT_DIR"] = spec.submit_dir
    if spec.entry is not None:
        env["HQ_ENTRY"] = spec.entry
    if spec.cpu_labels:
        env["HQ_CPUS"] = labels
        if spec.cpus_whole and "OMP_NUM_THREADS" not in spec.env:
            env["OMP_NUM_THREADS"] = str(len(spec.cpu_labels))
    if spec.pin is not None:
        if not spec.cpu_labels:
            raise _SetupError("Pinning failed, no CPU ids allocated for task")
        if spec.pin == "taskset":
            argv = ["taskset", "-c", labels, *argv]
            env["HQ_PIN"] = "taskset"
        elif spec.pin in ("omp", "openmp"):
            if "OMP_PROC_BIND" not in spec.env:
                env["OMP_PROC_BIND"] = "close"
            if "OMP_PLACES" not in spec.env:
                env["OMP_PLACES"] = "{" + labels + "}"
            env["HQ_PIN"] = "omp"
        else:
            raise _SetupError(f"Unknown pin mode {spec.pin!r}")
    if spec.hq_executable:
        env["HQ"] = spec.hq_executable
    return env, argv


def _has_placeholders(spec: TaskLaunchSpec) -> bool:
    """Whether the task's paths name a placeholder (they then differ from task to task)."""
    return "%" in spec.cwd or "%" in (spec.stdout or "") or "%" in (spec.stderr or "")


def _task_paths(spec: TaskLaunchSpec) -> tuple[str, str | None, str | None]:
    cwd, stdout, stderr = spec.cwd, spec.stdout, spec.stderr
    if _has_placeholders(spec):
        values = task_values(
            spec.job_id, spec.task_id, spec.instance, spec.submit_dir, spec.server_uid
        )
        cwd, stdout, stderr = resolve_paths(cwd, stdout, stderr, values, spec.submit_dir)
    else:
        # Nothing to fill in (the usual case): what resolve_paths makes of such paths,
        # without building the values for every task.
        cwd = os.path.join(spec.submit_dir, cwd)
        stdout = None if stdout is None else os.path.join(cwd, stdout)
        stderr = None if stderr is None else os.path.join(cwd, stderr)
    # Only unknown placeholders can keep a path relative here; anchor it like the rest
    # instead of letting it land relative to the worker's own cwd.
    cwd = os.path.join(spec.submit_dir, cwd)
    if stdout is not None:
        stdout = os.path.join(cwd, stdout)
    if stderr is not None:
        stderr = os.path.join(cwd, stderr)
    return cwd, stdout, stderr


def _high_fd(fd: int) -> int:
    """`fd` moved above 2 so that dup2 onto 0-2 in the child cannot clobber another source."""
    if fd > 2:
        return fd
    moved = fcntl.fcntl(fd, fcntl.F_DUPFD_CLOEXEC, 3)
    os.close(fd)
    return moved


def _open_output(path: str | None, name: str, devnull: int) -> int:
    if path is None:
        return devnull
    parent = os.path.dirname(path)
    try:
        if parent:
            os.makedirs(parent, exist_ok=True)
    except OSError as e:
        raise _SetupError(f"Cannot create {name} directory at {path}: {_os_error_text(e)}") from e
    try:
        fd = os.open(path, os.O_WRONLY | os.O_CREAT | os.O_TRUNC | os.O_CLOEXEC, 0o666)
    except OSError as e:
        raise _SetupError(f"Creating stream file failed: {_os_error_text(e)}") from e
    return _high_fd(fd)


class ProgramCache:
    """Recent PATH searches of one worker: an array of a million tasks would otherwise
    stat every PATH directory for every task. Entries live PROGRAM_CACHE_SECONDS, so a
    program installed or removed meanwhile is seen within that time. Also the working
    directories `launch` saw exist, and two descriptors every spawn needs (`/dev/null`
    and the worker's own directory, to return to), opened once instead of per task."""

    def __init__(self) -> None:
        self._found: dict[tuple[str, str, str], tuple[str, float]] = {}
        self._relative: dict[str, bool] = {}  # PATH value -> has a relative entry
        # Working directories seen to exist. One removed since is made again when the
        # spawn cannot enter it (`_spawn`), so this only saves the stat before each spawn.
        self.dirs: set[str] = set()
        self.home = os.getcwd()
        self._home_fd: int | None = None
        self._devnull: int | None = None
        self._options: dict[tuple[int, int, int], dict[str, Any]] = {}

    def home_fd(self) -> int:
        if self._home_fd is None:
            self._home_fd = _high_fd(os.open(".", os.O_PATH | os.O_CLOEXEC))
        return self._home_fd

    def devnull(self) -> int:
        if self._devnull is None:
            self._devnull = _high_fd(os.open(os.devnull, os.O_RDWR | os.O_CLOEXEC))
        return self._devnull

    def close(self) -> None:
        for fd in (self._home_fd, self._devnull):
            if fd is not None:
                os.close(fd)
        self._home_fd = self._devnull = None
        self._options.clear()

    def spawn_options(self, fds: tuple[int, int, int]) -> dict[str, Any]:
        """`_spawn_options(fds)`, kept: most tasks have /dev/null for all three (the
        worker keeps it open), so their spawns share one set of keywords."""
        options = self._options.get(fds)
        if options is None:
            if len(self._options) >= 64:
                self._options.clear()
            options = self._options[fds] = _spawn_options(fds)
        return options

    def find(self, name: str, env: dict[str, str]) -> str:
        if "/" in name:
            return name
        search = env.get("PATH", os.defpath)
        relative = self._relative.get(search)
        if relative is None:
            # Relative PATH entries are relative to the task's directory (the current one).
            relative = any(not d.startswith("/") for d in search.split(":"))
            if len(self._relative) >= 64:
                self._relative.clear()
            self._relative[search] = relative
        key = (name, search, os.getcwd() if relative else "")
        now = time.monotonic()
        hit = self._found.get(key)
        if hit is not None and now - hit[1] < PROGRAM_CACHE_SECONDS:
            return hit[0]
        path = _find_program(name, env)
        if len(self._found) >= 1024:
            self._found.clear()
        self._found[key] = (path, now)
        return path


def _find_program(name: str, env: dict[str, str]) -> str:
    """execvp's PATH search with the task's own PATH, relative to the current directory."""
    if "/" in name:
        return name
    search = env.get("PATH", os.defpath)
    denied = False
    if name:
        for directory in search.split(":"):
            candidate = os.path.join(directory or ".", name)
            try:
                st = os.stat(candidate)
            except OSError:
                continue
            if stat.S_ISREG(st.st_mode) and os.access(candidate, os.X_OK):
                return candidate
            denied = True
    code = errno.EACCES if denied else errno.ENOENT
    raise OSError(code, os.strerror(code))


def _spawn(
    argv: list[str],
    env: dict[str, str],
    cwd: str,
    fds: tuple[int, int, int],
    death_signal: bool,
    programs: ProgramCache | None = None,
) -> int:
    """Start the program in its own session with `fds` as 0-2; the pid, or OSError."""
    options = programs.spawn_options(fds) if programs is not None else _spawn_options(fds)
    # The worker's own directory is where it stays between spawns: a task there needs
    # no change of directory (and back) at all.
    away = programs is None or cwd != programs.home
    home = -1
    if away:
        home = (
            programs.home_fd() if programs is not None else os.open(".", os.O_PATH | os.O_CLOEXEC)
        )
    try:
        if away:
            try:
                os.chdir(cwd)
            except (FileNotFoundError, NotADirectoryError):
                # Removed (or replaced) since it was last seen: made again as at first.
                _ensure_cwd(cwd)
                os.chdir(cwd)
        try:
            program = (
                programs.find(argv[0], env) if programs is not None else _find_program(argv[0], env)
            )
            if death_signal:
                setpriv = shutil.which("setpriv", path=env.get("PATH"))
                if setpriv is not None:
                    wrapped = [setpriv, "--pdeathsig", "TERM", "--", program, *argv[1:]]
                    return os.posix_spawn(setpriv, wrapped, env, **options)
            try:
                return os.posix_spawn(program, argv, env, **options)
            except OSError as e:
                if e.errno != errno.ENOEXEC:
                    raise
                # execvp runs a script without a shebang with /bin/sh; so does HyperQueue.
                return os.posix_spawn("/bin/sh", ["/bin/sh", program, *argv[1:]], env, **options)
        finally:
            if away:
                os.fchdir(home)
    finally:
        if away and programs is None:
            os.close(home)


def _spawn_options(fds: tuple[int, int, int]) -> dict[str, Any]:
    """os.posix_spawn's keywords: `fds` as 0-2, a session of its own, default signals."""
    return {
        "file_actions": [(os.POSIX_SPAWN_DUP2, fd, target) for target, fd in enumerate(fds)],
        "setsid": True,
        "setsigdef": _RESET_SIGNALS,
        "setsigmask": (),
    }


class _Child:
    """A spawned task process; stays unreaped (so its pgid stays reserved) until reap()."""

    def __init__(self, pid: int) -> None:
        self.pid = pid
        self.status: int | None = None
        try:
            self.pidfd: int | None = os.pidfd_open(pid)
        except OSError:
            self.pidfd = None

    async def wait_exited(self) -> None:
        if self.status is not None:
            return
        if self.pidfd is not None:
            await trio.lowlevel.wait_readable(self.pidfd)
        else:
            # A limiter of its own: behind the shared default one (40 threads), exits of
            # short tasks would go unnoticed while long ones hold every thread.
            await trio.to_thread.run_sync(
                os.waitid,
                os.P_PID,
                self.pid,
                os.WEXITED | os.WNOWAIT,
                abandon_on_cancel=True,
                limiter=trio.CapacityLimiter(1),
            )

    def signal_group(self, signum: int) -> None:
        with contextlib.suppress(ProcessLookupError, PermissionError):
            os.killpg(self.pid, signum)

    def reap(self, exited: bool = False) -> int | None:
        """The wait status if the process has exited (reaping it), else None.

        `exited`: its pidfd said so. Recent kernels (6.x) make the pidfd readable a
        moment before the process can be reaped; that moment is waited out here, giving
        the CPU away meanwhile, rather than by going round the event loop (which cost
        ~10 rounds per task) or by calling it a time limit."""
        if self.status is None:
            pid, status = os.waitpid(self.pid, os.WNOHANG)
            tries = REAP_YIELDS if exited else 0
            while pid == 0 and tries > 0:
                tries -= 1
                os.sched_yield()
                pid, status = os.waitpid(self.pid, os.WNOHANG)
            if pid != 0:
                self.status = status
                self.close()
        return self.status

    def close(self) -> None:
        if self.pidfd is not None:
            os.close(self.pidfd)
            self.pidfd = None

    async def kill(self) -> None:
        """SIGINT the group; SIGKILL it after the grace period; reap. Call shielded."""
        if self.status is not None:
            return  # reaped: the pid may belong to someone else by now
        self.signal_group(signal.SIGINT)
        with trio.move_on_after(KILL_GRACE_SECONDS):
            await self.wait_exited()
        # Also when the leader obeyed: its children may have ignored SIGINT.
        self.signal_group(signal.SIGKILL)
        with trio.move_on_after(REAP_TIMEOUT_SECONDS):
            await self.wait_exited()
        if self.reap() is None:
            log.warning("Task process %d did not exit after SIGKILL", self.pid)


async def _feed_stdin(stream: trio.lowlevel.FdStream, data: bytes) -> None:
    try:
        await stream.send_all(data)
    except (trio.BrokenResourceError, trio.ClosedResourceError):
        pass  # the task does not have to read its stdin
    finally:
        stream.close()


async def _wait(child: _Child, stdin: trio.lowlevel.FdStream | None, data: bytes) -> None:
    if stdin is None:
        await child.wait_exited()
        return
    async with trio.open_nursery() as nursery:
        nursery.start_soon(_feed_stdin, stdin, data)
        await child.wait_exited()
        nursery.cancel_scope.cancel()


def _remove_outputs(spec: TaskLaunchSpec, stdout: str | None, stderr: str | None) -> None:
    for path, remove in (
        (stdout, spec.stdout_rm_if_finished),
        (stderr, spec.stderr_rm_if_finished),
    ):
        if remove and path is not None:
            try:
                os.unlink(path)
            except OSError as e:
                log.error("Could not delete file %s after task has been finished: %s", path, e)


def _prepare(
    spec: TaskLaunchSpec,
) -> tuple[dict[str, str], list[str], str | None, str, str | None, str | None]:
    """The task's env, argv, task_dir (made here), cwd, stdout and stderr; _SetupError
    if it cannot start. A task_dir made before a failure is removed again."""
    template = spec.template
    if template is not None and template.env is not None:
        env = template.env.copy()
        env["HQ_TASK_ID"] = str(spec.task_id)
        env["HQ_INSTANCE_ID"] = str(spec.instance)
        if spec.entry is not None:
            env["HQ_ENTRY"] = spec.entry
        if template.access_var is not None:
            env[template.access_var] = spec.env[template.access_var]
        argv = template.argv
    else:
        env, argv = _task_env(spec)
        if template is not None:
            template.argv = argv
            template.env = env.copy()  # before this task's own additions below
    task_dir: str | None = None
    if spec.task_dir or spec.node_hosts:
        try:
            task_dir = tempfile.mkdtemp(prefix="t", dir=spec.work_dir)
        except OSError as e:
            raise _SetupError(
                f"Cannot create task_dir in worker's workdir at "
                f"{spec.work_dir}: {_os_error_text(e)}"
            ) from e
        env["HQ_TASK_DIR"] = task_dir
        env["HQ_ERROR_FILENAME"] = os.path.join(task_dir, ERROR_FILE_NAME)
    try:
        if spec.node_hosts:
            assert task_dir is not None
            env.update(_write_node_files(task_dir, spec.node_hosts))
        if template is not None and template.paths is not None:
            cwd, stdout, stderr = template.paths
        else:
            cwd, stdout, stderr = _task_paths(spec)
            if template is not None and not _has_placeholders(spec):
                template.paths = (cwd, stdout, stderr)
    except BaseException:
        if task_dir is not None:
            shutil.rmtree(task_dir, ignore_errors=True)
        raise
    return env, argv, task_dir, cwd, stdout, stderr


async def run_task(spec: TaskLaunchSpec) -> TaskOutcome:
    """Run the task to its end; cancellation kills its process group and propagates."""
    if not spec.argv:
        return failed("No command arguments")
    task_dir: str | None = None
    try:
        env, argv, task_dir, cwd, stdout, stderr = _prepare(spec)
        if spec.stream is None:
            return await _run_process(spec, env, argv, cwd, stdout, stderr, task_dir)
        error = await spec.stream.open()
        if error is not None:
            return failed(error)
        async with spec.stream.running():
            outcome = await _run_process(spec, env, argv, cwd, stdout, stderr, task_dir)
        return outcome if spec.stream.error is None else failed(spec.stream.error)
    except _SetupError as e:
        return failed(str(e))
    finally:
        if task_dir is not None:
            shutil.rmtree(task_dir, ignore_errors=True)


def short_hostname(hostname: str) -> str:
    """The node file's name for a host: up to the first dot, but IPv4 stays whole."""
    if hostname and all(c.isdigit() or c == "." for c in hostname):
        return hostname
    return hostname.split(".", 1)[0]


def _write_node_files(task_dir: str, hosts: list[str]) -> dict[str, str]:
    """HQ_HOST_FILE / HQ_NODE_FILE of a multi-node task (cluster.md §1.4), and its env."""
    host_file = os.path.join(task_dir, "hq-hostfile")
    node_file = os.path.join(task_dir, "hq-nodefile")
    for path, names in ((host_file, hosts), (node_file, [short_hostname(h) for h in hosts])):
        try:
            with open(path, "w") as file:
                file.write("".join(f"{name}\n" for name in names))
        except OSError as e:
            raise _SetupError(f"Cannot write node file at {path}: {_os_error_text(e)}") from e
    return {
        "HQ_NUM_NODES": str(len(hosts)),
        "HQ_HOST_FILE": host_file,
        "HQ_NODE_FILE": node_file,
    }


def _ensure_cwd(cwd: str) -> None:
    try:
        if not os.path.isdir(cwd):  # one stat in the usual case; makedirs costs four
            os.makedirs(cwd, exist_ok=True)
    except OSError as e:
        raise _SetupError(f"Could not create working directory: {_os_error_text(e)}") from e


def _start_child(
    spec: TaskLaunchSpec,
    env: dict[str, str],
    argv: list[str],
    cwd: str,
    stdout: str | None,
    stderr: str | None,
) -> tuple[_Child | TaskOutcome, trio.lowlevel.FdStream | None]:
    """Open the task's files and spawn it: the child (and the write end of its stdin
    pipe when it has input), or the outcome of a task that could not be executed."""
    to_close: list[int] = []
    stdin_stream: trio.lowlevel.FdStream | None = None
    child: _Child | None = None
    programs = spec.programs
    devnull = -1
    try:
        if programs is not None:
            devnull = programs.devnull()  # kept open by the worker: never closed here
        else:
            devnull = _high_fd(os.open(os.devnull, os.O_RDWR | os.O_CLOEXEC))
            to_close.append(devnull)
        out_fd = err_fd = devnull
        if stdout is not None:
            out_fd = _open_output(stdout, "stdout", devnull)
            to_close.append(out_fd)
        if stderr is not None:
            err_fd = _open_output(stderr, "stderr", devnull)
            to_close.append(err_fd)
        if spec.stream is not None:
            out_fd, err_fd = spec.stream.child_fds(out_fd, err_fd)
            to_close += [out_fd, err_fd]
        in_fd = devnull
        if spec.stdin:
            read_end, write_end = os.pipe2(os.O_CLOEXEC)
            in_fd = _high_fd(read_end)
            to_close.append(in_fd)
            stdin_stream = trio.lowlevel.FdStream(_high_fd(write_end))
        try:
            child = _Child(
                _spawn(
                    argv,
                    env,
                    cwd,
                    (in_fd, out_fd, err_fd),
                    spec.parent_death_signal,
                    spec.programs,
                )
            )
        except OSError as e:
            return failed(spawn_error_message(e, argv, cwd)), None
        except ValueError as e:  # e.g. a NUL byte in an argument or variable
            return failed(f"Cannot execute {_debug_quoted(' '.join(argv))}: {e}"), None
        if spec.on_process is not None:
            spec.on_process(child.pid, True)
    finally:
        for fd in set(to_close):
            if fd != devnull or programs is None:
                os.close(fd)
        if child is None and stdin_stream is not None:
            stdin_stream.close()
    return child, stdin_stream


def _outcome(
    spec: TaskLaunchSpec,
    status: int,
    stdout: str | None,
    stderr: str | None,
    task_dir: str | None,
) -> TaskOutcome:
    """What an exited task's wait status means (its task_dir still there)."""
    if os.WIFEXITED(status) and os.WEXITSTATUS(status) == 0:
        _remove_outputs(spec, stdout, stderr)
        return FINISHED
    if task_dir is not None:
        custom = read_error_file(os.path.join(task_dir, ERROR_FILE_NAME))
        if custom is not None:
            return failed(custom)
    return failed(exit_error_message(status))


async def _run_process(
    spec: TaskLaunchSpec,
    env: dict[str, str],
    argv: list[str],
    cwd: str,
    stdout: str | None,
    stderr: str | None,
    task_dir: str | None,
) -> TaskOutcome:
    _ensure_cwd(cwd)
    child, stdin_stream = _start_child(spec, env, argv, cwd, stdout, stderr)
    if isinstance(child, TaskOutcome):
        return child

    try:
        deadline = float("inf")
        if spec.time_limit is not None:
            deadline = trio.current_time() + spec.time_limit
        with trio.move_on_at(deadline) as waited:
            await _wait(child, stdin_stream, spec.stdin or b"")
        status = child.reap(exited=not waited.cancelled_caught)
        if status is None:
            with trio.CancelScope(shield=True):
                await child.kill()
            return failed("Time limit reached")
    except BaseException:
        with trio.CancelScope(shield=True):
            await child.kill()
        raise
    finally:
        child.close()
        if stdin_stream is not None:
            stdin_stream.close()
        if spec.on_process is not None:
            spec.on_process(child.pid, False)

    return _outcome(spec, status, stdout, stderr, task_dir)


# --- many tasks, one waiter -----------------------------------------------------------
# `run_task` costs a trio task, three cancel scopes and an epoll registration of its own
# per task. The worker runs its tasks without stdin or streaming (nearly all of them)
# through `launch` and one `Reaper` instead: the spawn happens synchronously where the
# task arrives, and one trio task waits for every pidfd at once in a private epoll set.
# What each task ends as stays exactly `run_task`'s (the same helpers decide it).


def fast_path_available() -> bool:
    """Whether this kernel gives pidfds (Linux ≥ 5.3); without them `run_task` it is."""
    try:
        fd = os.pidfd_open(os.getpid())
    except (AttributeError, OSError):
        return False
    os.close(fd)
    return True


def can_launch(spec: TaskLaunchSpec) -> bool:
    """Whether `launch` takes this task: no input to feed, and streamed output only into
    a stream file that is open already (opening one is a thread's disk work, and its
    failure the task's error, which `run_task` does)."""
    return not spec.stdin and (spec.stream is None or spec.stream.can_open_now())


class RunningTask:
    """A task process started by `launch`, waited for by a `Reaper`; or a streamed task
    that failed between opening its pipes and its spawn (`child` None, `early` its
    outcome), whose END must still be written before its result is reported."""

    __slots__ = (
        "_reaper",
        "child",
        "deadline",
        "early",
        "spec",
        "stderr",
        "stdout",
        "task_dir",
    )

    def __init__(
        self,
        spec: TaskLaunchSpec,
        child: _Child | None,
        stdout: str | None,
        stderr: str | None,
        task_dir: str | None,
        deadline: float,
        early: TaskOutcome | None = None,
    ) -> None:
        self.spec = spec
        self.child = child
        self.stdout = stdout
        self.stderr = stderr
        self.task_dir = task_dir
        self.deadline = deadline  # trio time; inf without a time limit
        self.early = early
        self._reaper: Reaper | None = None

    def cancel(self) -> None:
        """Kill the task's process group (grace as in `run_task`); it ends unreported."""
        if self._reaper is not None:
            self._reaper.cancel(self)

    def outcome(self, status: int) -> TaskOutcome:
        return _outcome(self.spec, status, self.stdout, self.stderr, self.task_dir)

    def release(self) -> None:
        """After the process is gone (reaped or given up on): the pidfd, the guardian's
        entry and the task_dir go."""
        if self.child is not None:
            self.child.close()
            if self.spec.on_process is not None:
                self.spec.on_process(self.child.pid, False)
        if self.task_dir is not None:
            shutil.rmtree(self.task_dir, ignore_errors=True)
            self.task_dir = None


def launch(spec: TaskLaunchSpec) -> RunningTask | TaskOutcome:
    """`run_task` up to the spawn, synchronously, for a task that `can_launch` takes:
    the running task (for a `Reaper`), or how it ended without running."""
    if not spec.argv:
        return failed("No command arguments")
    task_dir: str | None = None
    started: _Child | TaskOutcome | None = None
    stream = spec.stream
    try:
        env, argv, task_dir, cwd, stdout, stderr = _prepare(spec)
        if stream is not None:
            error = stream.open_now()
            if error is not None:
                return failed(error)
        known = spec.programs.dirs if spec.programs is not None else None
        checked = known is None or cwd not in known
        if checked:
            _ensure_cwd(cwd)
            if known is not None:
                if len(known) >= 1024:
                    known.clear()
                known.add(cwd)
        try:
            started, _stdin = _start_child(spec, env, argv, cwd, stdout, stderr)
        except _SetupError:
            if not checked:
                _ensure_cwd(cwd)  # a cwd gone bad since is the first error, as it was
            raise
    except _SetupError as e:
        started = failed(str(e))
    finally:
        if not isinstance(started, _Child) and task_dir is not None:
            shutil.rmtree(task_dir, ignore_errors=True)
    if isinstance(started, TaskOutcome):
        if stream is not None and stream.opened:
            return RunningTask(spec, None, stdout, stderr, None, math.inf, started)
        return started
    deadline = math.inf
    if spec.time_limit is not None:
        deadline = trio.current_time() + spec.time_limit
    return RunningTask(spec, started, stdout, stderr, task_dir, deadline)


# Told how each watched task ended: its outcome, or None when it was cancelled (killed,
# nothing to report). Called after the task's `release`.
OnEnd = Callable[[RunningTask, TaskOutcome | None], None]


# A pidfd reports its process's exit once, then stays quiet until armed again.
_ONE_EXIT = select.EPOLLIN | select.EPOLLONESHOT


class Reaper:
    """Waits for the ends of many `RunningTask`s in one trio task (`run`): their pidfds
    in one epoll set that trio watches as a single fd, and their time limits in a heap.
    Cancelling `run` kills every task still watched, as cancelling `run_task` does."""

    def __init__(self, on_end: OnEnd) -> None:
        self.on_end = on_end
        self.running = False
        self._epoll = select.epoll()
        self._watched: dict[int, RunningTask] = {}  # by pidfd
        # A child without a pidfd (none left?) is waited for by a task of its own.
        self._threaded: dict[RunningTask, trio.CancelScope] = {}
        self._deadlines: list[tuple[float, int, RunningTask]] = []
        self._order = 0  # ties in the heap
        self._wait_scope: trio.CancelScope | None = None
        self._closing = False
        self._kills: trio.Nursery | None = None
        # Streamed tasks that ended, until their output is written (`TaskStream.finish`).
        self._flushing: set[RunningTask] = set()
        self._all_flushed: trio.Event | None = None

    def __len__(self) -> int:
        return len(self._watched) + len(self._threaded) + len(self._flushing)

    def watch(self, task: RunningTask) -> None:
        assert self._kills is not None, "the reaper is not running"
        task._reaper = self
        if task.child is None:
            self._end(task, task.early)
            return
        pidfd = task.child.pidfd
        if pidfd is None:
            scope = trio.CancelScope(deadline=task.deadline)
            self._threaded[task] = scope
            self._kills.start_soon(self._wait_threaded, task, scope)
            return
        self._epoll.register(pidfd, _ONE_EXIT)
        self._watched[pidfd] = task
        if task.deadline != math.inf:
            if len(self._deadlines) > 2 * len(self._watched) + 64:
                # Entries of tasks that ended stay until their time; drop them now and
                # then, or tasks with long limits that end early would pile up.
                self._deadlines = [e for e in self._deadlines if self._is_watched(e[2])]
                heapq.heapify(self._deadlines)
            self._order += 1
            heapq.heappush(self._deadlines, (task.deadline, self._order, task))
            scope = self._wait_scope
            if scope is not None and task.deadline < scope.deadline:
                scope.deadline = task.deadline

    def close_when_idle(self) -> None:
        """No more tasks come: `run` returns once the watched ones have ended."""
        self._closing = True
        if self._wait_scope is not None:
            self._wait_scope.cancel()

    def cancel(self, task: RunningTask) -> None:
        scope = self._threaded.pop(task, None)
        if scope is not None:
            scope.cancel()
        elif not self._unwatch(task):
            return
        if self._kills is not None:
            self._kills.start_soon(self._kill, task, None)

    def _is_watched(self, task: RunningTask) -> bool:
        if task.child is None:
            return False
        pidfd = task.child.pidfd
        return pidfd is not None and self._watched.get(pidfd) is task

    def _unwatch(self, task: RunningTask) -> bool:
        if not self._is_watched(task):
            return False
        assert task.child is not None
        pidfd = task.child.pidfd
        assert pidfd is not None
        del self._watched[pidfd]
        self._epoll.unregister(pidfd)
        return True

    async def run(self) -> None:
        self.running = True
        try:
            async with trio.open_nursery() as kills:
                self._kills = kills
                await self._loop()
        finally:
            self._kills = None
            self.running = False
            left = [*self._watched.values(), *self._threaded]
            for task in self._watched.values():
                self._epoll.unregister(task.child.pidfd)  # type: ignore[union-attr]
            self._watched.clear()
            self._threaded.clear()
            with trio.CancelScope(shield=True):
                if left:
                    async with trio.open_nursery() as nursery:
                        for task in left:
                            nursery.start_soon(self._kill, task, None)
                if self._flushing:
                    # What the killed tasks printed lands before the stream files close.
                    self._all_flushed = trio.Event()
                    with trio.move_on_after(FLUSH_WAIT_SECONDS):
                        await self._all_flushed.wait()
            self._epoll.close()

    async def _loop(self) -> None:
        epoll_fd = self._epoll.fileno()
        while len(self) or not self._closing:
            deadline = self._deadlines[0][0] if self._deadlines else math.inf
            # One scope for every wake-up until its deadline passes (`watch` moves it
            # earlier) or `close_when_idle` cancels it: a scope entered and left per
            # wake-up was a good part of the reaper's cost per task.
            with trio.CancelScope(deadline=deadline) as scope:
                self._wait_scope = scope
                while len(self) or not self._closing:
                    await trio.lowlevel.wait_readable(epoll_fd)
                    self._reap_ready()
            self._wait_scope = None
            self._reap_ready()
            if self._deadlines and self._deadlines[0][0] <= trio.current_time():
                self._expire()

    def _reap_ready(self) -> None:
        """Reap and report every watched task whose pidfd says it exited."""
        for pidfd, _events in self._epoll.poll(0):
            task = self._watched.get(pidfd)
            if task is None:
                continue
            # Registered one-shot, the pidfd is disarmed now that it reported: reaping
            # may close it at once. (A child spawned a moment ago may still hold a copy
            # of it — exec closes it only after posix_spawn has returned — and a closed
            # fd that still has a file stays in an epoll set; disarmed, it can never
            # report under the number that the next pidfd reuses.)
            assert task.child is not None
            if task.child.reap(exited=True) is None:
                self._epoll.modify(pidfd, _ONE_EXIT)  # armed again
                continue
            del self._watched[pidfd]
            self._end(task, None)

    def _expire(self) -> None:
        now = trio.current_time()
        while self._deadlines and self._deadlines[0][0] <= now:
            _deadline, _order, task = heapq.heappop(self._deadlines)
            if not self._unwatch(task):
                continue  # ended or cancelled meanwhile
            assert task.child is not None
            if task.child.reap() is not None:
                self._end(task, None)  # it made it just in time
            elif self._kills is not None:
                self._kills.start_soon(self._kill, task, failed("Time limit reached"))

    async def _wait_threaded(self, task: RunningTask, scope: trio.CancelScope) -> None:
        assert task.child is not None
        with scope:
            await task.child.wait_exited()
        if self._threaded.pop(task, None) is None:
            return  # cancelled: `cancel` started its kill
        if task.child.reap() is not None:
            self._end(task, None)
        else:
            await self._kill(task, failed("Time limit reached"))

    def _end(self, task: RunningTask, outcome: TaskOutcome | None) -> None:
        """Decide the outcome of a reaped task (None: from its status), release it, tell."""
        try:
            if outcome is None:
                assert task.child is not None
                status = task.child.status
                assert status is not None
                outcome = task.outcome(status)
        except Exception as error:
            log.exception("Task %d/%d: internal error", task.spec.job_id, task.spec.task_id)
            outcome = failed(f"internal error: {type(error).__name__}: {error}")
        finally:
            task.release()
        self._report(task, outcome)

    async def _kill(self, task: RunningTask, outcome: TaskOutcome | None) -> None:
        """Kill the task's group (SIGINT, SIGKILL after the grace), reap, release, tell
        (None: it was cancelled)."""
        assert task.child is not None
        with trio.CancelScope(shield=True):
            try:
                await task.child.kill()
            finally:
                task.release()
        self._report(task, outcome)

    def _report(self, task: RunningTask, outcome: TaskOutcome | None) -> None:
        """Tell `on_end`; for a streamed task only once its output is written (its
        pipes' EOF, its END acknowledged by the copier), as `run_task` does."""
        stream = task.spec.stream
        if stream is None or not stream.opened:
            self.on_end(task, outcome)
            return
        self._flushing.add(task)

        def flushed(error: str | None) -> None:
            self._flushing.discard(task)
            try:
                self.on_end(task, outcome if error is None or outcome is None else failed(error))
            finally:
                if not self._flushing and self._all_flushed is not None:
                    self._all_flushed.set()
                if self._closing and not len(self) and self._wait_scope is not None:
                    self._wait_scope.cancel()

        stream.finish(flushed)
