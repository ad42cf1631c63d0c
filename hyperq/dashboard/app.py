"""The Textual application: header with tabs and the time window, the Jobs, AutoAllocator,
Workers and worker-detail views. Every view is rebuilt from `DashboardData` as of the end
of the current time window."""

from __future__ import annotations

import time
from collections.abc import Callable
from typing import Any, ClassVar

from rich.markup import escape
from textual.app import App, ComposeResult
from textual.binding import Binding
from textual.containers import Horizontal, Vertical
from textual.css.query import NoMatches
from textual.screen import ModalScreen
from textual.widgets import ContentSwitcher, DataTable, Static

from hyperq.common.duration import format_duration
from hyperq.dashboard.data import (
    DashboardData,
    TimeWindow,
    bar,
    load_color,
    resources_text,
    samples,
    sparkline,
)

STREAM_WINDOW = 600.0
REPLAY_WINDOW = 300.0
# Redraw at most this often (cluster.md §7: about ten times a second).
TICK = 0.1
# A live window moves with the clock; its views are rebuilt this often even without events.
LIVE_REFRESH = 1.0
CHART_POINTS = 60
# Filling a table costs ~40 µs a row on every redraw: a big array shows its running tasks
# first and then the lowest IDs, up to this many.
TASK_ROWS = 500

CPU_VIEWS = ("Worker CPUs", "Assigned CPUs", "Node CPUs")


def _clock(t: float | None, today: float) -> str:
    if t is None:
        return ""
    stamp = time.localtime(t)
    prefix = "" if time.strftime("%Y-%m-%d", stamp) == time.strftime(
        "%Y-%m-%d", time.localtime(today)
    ) else time.strftime("%Y-%m-%d ", stamp)
    return prefix + time.strftime("%H:%M:%S", stamp)


class WarningPopup(ModalScreen[None]):
    """Closed by any key."""

    DEFAULT_CSS = """
    WarningPopup { align: center middle; }
    WarningPopup > Static { width: 70; padding: 1 2; border: thick $warning; background: $panel; }
    """

    def __init__(self, message: str) -> None:
        super().__init__()
        self.message = message

    def compose(self) -> ComposeResult:
        yield Static(self.message + "\n\n(press any key)", id="warning")

    def on_key(self, event: Any) -> None:
        event.stop()
        self.dismiss()


class Dashboard(App[None]):
    TITLE = "HyperQueue dashboard"
    CSS = """
    #header { height: 1; background: $primary-background; }
    .pane { height: 1fr; }
    .half { width: 1fr; }
    DataTable { height: 1fr; }
    .box { border: round $secondary; height: auto; max-height: 16; }
    #job-chart, #workers-chart, #wd-chart, #alloc-timeline { height: auto; }
    #cpu-table { border: round $secondary; }
    #tasks-table { border-title-align: right; }
    """
    BINDINGS: ClassVar[list[Binding | tuple[str, str] | tuple[str, str, str]]] = [
        Binding("q", "quit", "Quit"),
        Binding("j", "tab('jobs')", "Jobs"),
        Binding("a", "tab('autoalloc')", "AutoAllocator"),
        Binding("w", "tab('workers')", "Workers"),
        Binding("o", "earlier", "Earlier"),
        Binding("p", "later", "Later"),
        Binding("k", "zoom_in", "Zoom in"),
        Binding("l", "zoom_out", "Zoom out"),
        Binding("r", "live", "Live"),
        Binding("i", "inspect", "Worker detail"),
        Binding("backspace", "back", "Back"),
        Binding("c", "cpu_view", "CPU view"),
        Binding("1", "focus_table(1)", show=False),
        Binding("2", "focus_table(2)", show=False),
        Binding("escape", "clear_selection", show=False),
    ]

    def __init__(
        self,
        data: DashboardData,
        *,
        live: bool,
        warning: str | None = None,
        clock: Callable[[], float] = time.time,
    ) -> None:
        super().__init__()
        self.data = data
        self.live = live
        self.clock = clock
        self.warning = warning
        now = clock()
        if live:
            self.window = TimeWindow(now, STREAM_WINDOW, live=True)
        else:
            self.window = TimeWindow(data.last or now, REPLAY_WINDOW, live=False)
        self.tab = "jobs"
        self.detail_worker: int | None = None
        self.cpu_view = 0
        self.dirty = True
        self.last_refresh = 0.0
        # The key (first cell) of the selected row of the jobs and queues tables.
        self.selection: dict[str, str | None] = {}

    # --- layout ----------------------------------------------------------------------
    def compose(self) -> ComposeResult:
        yield Static(id="header")
        with ContentSwitcher(initial="jobs", classes="pane"):
            with Vertical(id="jobs"):
                with Horizontal(classes="box"):
                    yield Static(id="job-detail", classes="half")
                    yield Static(id="job-chart", classes="half")
                with Horizontal():
                    yield DataTable(id="jobs-table", classes="half", cursor_type="row")
                    yield DataTable(id="tasks-table", classes="half", cursor_type="row")
            with Vertical(id="autoalloc"):
                yield Static(id="alloc-timeline", classes="box")
                with Horizontal():
                    yield DataTable(id="queues-table", classes="half", cursor_type="row")
                    yield Static(id="queue-params", classes="half")
                yield DataTable(id="allocations-table", cursor_type="row")
            with Vertical(id="workers"):
                yield Static(id="workers-chart", classes="box")
                yield DataTable(id="workers-table", cursor_type="row")
            with Vertical(id="worker-detail"):
                yield Static(id="wd-header")
                yield Static(id="wd-chart", classes="box")
                with Horizontal():
                    yield DataTable(id="cpu-table", classes="half", cursor_type="row")
                    with Vertical(classes="half"):
                        yield DataTable(id="wd-tasks", cursor_type="row")
                        yield DataTable(id="wd-config", cursor_type="row")

    def on_mount(self) -> None:
        columns = {
            "jobs-table": ("Job ID", "Name"),
            "tasks-table": ("Task ID", "Worker ID", "State", "Start", "End", "Makespan"),
            "queues-table": ("ID", "#Allocations", "Creation Time", "Removal Time"),
            "allocations-table": (
                "Allocation ID",
                "Status",
                "#Workers",
                "Queued Time",
                "Start Time",
                "Finish Time",
            ),
            "workers-table": ("ID", "Hostname", "Status", "Running tasks", "CPU util", "Mem util"),
            "cpu-table": ("CPU", "Utilization"),
            "wd-tasks": ("Task", "State", "Start"),
            "wd-config": ("Configuration", "Value"),
        }
        for table_id, names in columns.items():
            self.query_one(f"#{table_id}", DataTable).add_columns(*names)
        self.query_one("#jobs-table", DataTable).focus()
        self.set_interval(TICK, self._tick)
        self.refresh_views()
        if self.warning:
            self.push_screen(WarningPopup(self.warning))

    # --- events from the stream ---------------------------------------------------------
    def add_events(self, events: list[dict[str, Any]]) -> None:
        for event in events:
            self.data.add(event)
        self.dirty = True

    def _tick(self) -> None:
        now = self.clock()
        if self.window.live and now - self.last_refresh >= LIVE_REFRESH:
            self.window.follow(now)
            self.dirty = True
        if self.dirty:
            self.refresh_views()

    # --- actions ---------------------------------------------------------------------
    def action_tab(self, tab: str) -> None:
        self.tab = tab
        self.detail_worker = None
        self.query_one(ContentSwitcher).current = tab
        first = {"jobs": "#jobs-table", "autoalloc": "#queues-table", "workers": "#workers-table"}
        self.query_one(first[tab], DataTable).focus()
        self.refresh_views()

    def action_earlier(self) -> None:
        self.window.earlier()
        self.refresh_views()

    def action_later(self) -> None:
        self.window.later(self.clock())
        self.refresh_views()

    def action_zoom_in(self) -> None:
        self.window.zoom_in()
        self.refresh_views()

    def action_zoom_out(self) -> None:
        self.window.zoom_out()
        self.refresh_views()

    def action_live(self) -> None:
        if self.live:
            self.window.live = True
            self.window.follow(self.clock())
            self.refresh_views()

    def action_inspect(self) -> None:
        worker_id = None
        if self.detail_worker is not None:
            return
        if self.tab == "jobs":
            table = self.query_one("#tasks-table", DataTable)
            row = self._selected(table)
            if row is not None and row[1] not in ("", "-"):
                worker_id = int(row[1])
        elif self.tab == "workers":
            row = self._selected(self.query_one("#workers-table", DataTable))
            if row is not None:
                worker_id = int(row[0])
        if worker_id is not None and worker_id in self.data.workers:
            self.detail_worker = worker_id
            self.cpu_view = 0
            self.query_one(ContentSwitcher).current = "worker-detail"
            self.query_one("#cpu-table", DataTable).focus()
            self.refresh_views()

    def action_back(self) -> None:
        if self.detail_worker is not None:
            self.action_tab(self.tab)

    def action_cpu_view(self) -> None:
        if self.detail_worker is not None:
            self.cpu_view = (self.cpu_view + 1) % len(self._cpu_views())
            self.refresh_views()

    def action_focus_table(self, which: int) -> None:
        tables = {
            "jobs": ("#jobs-table", "#tasks-table"),
            "autoalloc": ("#queues-table", "#allocations-table"),
        }.get(self.tab)
        if tables and self.detail_worker is None:
            self.query_one(tables[which - 1], DataTable).focus()

    def action_clear_selection(self) -> None:
        if self.tab == "autoalloc":
            self.query_one("#queues-table", DataTable).move_cursor(row=0)

    def on_data_table_row_highlighted(self, event: DataTable.RowHighlighted) -> None:
        # Refilling a table highlights its row again: redraw only when the selection
        # really moved, or the views would redraw each other forever.
        table = event.data_table
        if table.id in ("jobs-table", "queues-table"):
            row = self._selected(table)
            key = row[0] if row else None
            if self.selection.get(table.id) != key:
                self.selection[table.id] = key
                self.refresh_views()

    @staticmethod
    def _selected(table: DataTable[Any]) -> list[Any] | None:
        if table.row_count == 0:
            return None
        return [str(v) for v in table.get_row_at(table.cursor_row)]

    # --- drawing ---------------------------------------------------------------------
    def refresh_views(self) -> None:
        if not self.screen_stack:
            return  # the app is closing
        if isinstance(self.screen, ModalScreen):
            # The views live on the main screen; draw them once the popup is gone.
            self.dirty = True
            return
        try:
            self._draw_all()
        except NoMatches:
            pass  # the app is closing and its widgets are gone

    def _draw_all(self) -> None:
        self.dirty = False
        self.last_refresh = self.clock()
        self._header()
        if self.detail_worker is not None:
            self._worker_detail(self.detail_worker)
        elif self.tab == "jobs":
            self._jobs()
        elif self.tab == "workers":
            self._draw_workers()
        else:
            self._autoalloc()

    def _header(self) -> None:
        tabs = []
        for key, name, tab in (("j", "Jobs", "jobs"), ("a", "AutoAllocator", "autoalloc"),
                               ("w", "Workers", "workers")):
            style = "reverse" if self.tab == tab else "bold"
            tabs.append(f"[{style}] {name} [/] ({key})")
        window = self.window
        now = self.clock()
        span = (
            f"{_clock(window.start, now)} - {_clock(window.end, now)} "
            f"({format_duration(window.length)})"
        )
        mode = escape("[stream]" if self.live else "[replay]")
        keys = "o/p: earlier/later  k/l: zoom  " + ("r: live  " if self.live else "") + "q: quit"
        self.query_one("#header", Static).update(f"{' '.join(tabs)}  {span} {mode}  {keys}")

    @staticmethod
    def _fill(table: DataTable[Any], rows: list[tuple[Any, ...]]) -> None:
        cursor = table.cursor_row
        table.clear()
        for row in rows:
            table.add_row(*row)
        if rows:
            table.move_cursor(row=min(cursor, len(rows) - 1))

    def _jobs(self) -> None:
        t = self.window.end
        jobs = self.data.jobs_at(t)
        jobs_table = self.query_one("#jobs-table", DataTable)
        self._fill(jobs_table, [(str(j.id), j.name) for j in jobs])
        selected = self._selected(jobs_table)
        job = self.data.jobs.get(int(selected[0])) if selected else None
        detail = self.query_one("#job-detail", Static)
        chart = self.query_one("#job-chart", Static)
        tasks_table = self.query_one("#tasks-table", DataTable)
        if job is None:
            detail.update("No jobs in this time window")
            chart.update("")
            self._fill(tasks_table, [])
            return
        descs = job.task_descs
        first = descs[0] if descs else {}
        kind = "Graph" if "n_tasks" in first else "Array"
        limit = first.get("time_limit")
        lines = [
            f"[b]Job {job.id}[/b] {job.name}",
            f"Type: {kind}",
            f"Resources: {' | '.join(resources_text(d) for d in descs)}",
            f"Time limit: {format_duration(limit) if limit else 'None'}",
            f"Priority: {first.get('priority', 0)}",
            f"Created: {_clock(job.created, self.clock())}",
            f"Completed: {_clock(job.completed, self.clock()) if job.completed and job.completed <= t else '-'}",  # noqa: E501
            f"Tasks: {job.n_tasks}",
            f"Max fails: {job.max_fails if job.max_fails is not None else 'None'}",
        ]
        detail.update("\n".join(lines))
        points = samples(self.window.start, t, CHART_POINTS)
        history = self.data.task_count_series(job.id, points)
        counts = {state: values[-1] for state, values in history.items()}
        title = ", ".join(f"{name} {count}" for name, count in counts.items())
        series = []
        for state in counts:
            values = [float(v) for v in history[state]]
            colour = {"running": "yellow", "finished": "green", "failed": "red"}.get(
                state, "magenta"
            )
            series.append(f"{state:>9} [{colour}]{sparkline(values, job.n_tasks or None)}[/]")
        chart.update(f"[b]Task counts:[/b] {title}\n" + "\n".join(series))
        rows = []
        tasks = self.data.tasks_of(job.id, t)
        tasks_table.border_title = (
            f"Tasks (first {TASK_ROWS} of {len(tasks)})" if len(tasks) > TASK_ROWS else None
        )
        for record in tasks[:TASK_ROWS]:
            end = record.end if record.end is not None and record.end <= t else None
            start = record.start
            makespan = (end if end is not None else t) - start if start is not None else None
            rows.append(
                (
                    str(record.task),
                    str(record.worker) if record.worker is not None else "-",
                    record.state_at(t),
                    _clock(start, self.clock()),
                    _clock(end, self.clock()),
                    format_duration(round(makespan, 3)) if makespan is not None else "",
                )
            )
        self._fill(tasks_table, rows)

    def _draw_workers(self) -> None:
        t = self.window.end
        points = samples(self.window.start, t, CHART_POINTS)
        counts = [float(self.data.online_count(x)) for x in points]
        self.query_one("#workers-chart", Static).update(
            f"[b]Connected workers:[/b] {self.data.online_count(t)}\n"
            f"[cyan]{sparkline(counts)}[/]"
        )
        rows = []
        running = self.data.running_by_worker(t)
        for worker in self.data.workers_at(t):
            overview = worker.overview_at(t)
            online = worker.online_at(t)
            rows.append(
                (
                    str(worker.id),
                    worker.hostname,
                    worker.status_at(t),
                    str(running.get(worker.id, 0)) if online else "",
                    bar(overview.cpu_avg) if overview and online else "",
                    bar(overview.mem_percent) if overview and online else "",
                )
            )
        self._fill(self.query_one("#workers-table", DataTable), rows)

    def _cpu_views(self) -> list[str]:
        worker = self.data.workers.get(self.detail_worker or -1)
        overview = worker.overview_at(self.window.end) if worker else None
        views = list(CPU_VIEWS[:2])
        if worker is not None and overview is not None:
            if set(worker.cpu_ids()) != set(range(len(overview.cpu))):
                views.append(CPU_VIEWS[2])  # the worker manages a subset of the node
        return views

    def _worker_detail(self, worker_id: int) -> None:
        t = self.window.end
        worker = self.data.workers[worker_id]
        self.query_one("#wd-header", Static).update(
            f"[b]Worker {worker_id}[/b] {worker.hostname} ({worker.status_at(t)})  "
            "c: CPU view  Backspace: back"
        )
        points = samples(self.window.start, t, CHART_POINTS)
        history = [worker.overview_at(x) for x in points]
        cpu = [o.cpu_avg if o else 0.0 for o in history]
        mem = [o.mem_percent if o else 0.0 for o in history]
        gpu = [o.gpu_avg if o else 0.0 for o in history]
        lines = [
            "[b]Utilization history[/b]",
            f"CPU avg % [green]{sparkline(cpu, 100)}[/]",
            f"Mem %     [blue]{sparkline(mem, 100)}[/]",
        ]
        if any(v > 0 for v in gpu):
            lines.append(f"GPU avg % [magenta]{sparkline(gpu, 100)}[/]")
        self.query_one("#wd-chart", Static).update("\n".join(lines))

        overview = worker.overview_at(t)
        cpu_table = self.query_one("#cpu-table", DataTable)
        managed = set(worker.cpu_ids())
        views = self._cpu_views()
        view = views[min(self.cpu_view, len(views) - 1)]
        rows = []
        if overview is not None:
            running = self.data.running_tasks_on(worker_id, t)
            # Workers list their tasks' CPUs in each overview; without that (a journal
            # from elsewhere), every managed CPU counts as assigned while tasks run.
            assigned = overview.assigned
            if assigned is None:
                assigned = set(managed) if running else set()
            for index, usage in enumerate(overview.cpu):
                if view == "Worker CPUs" and index not in managed:
                    continue
                if view == "Assigned CPUs" and index not in assigned:
                    continue
                if index in assigned:
                    colour = load_color(usage)
                elif index in managed:
                    colour = "#87cefa"
                else:
                    colour = "magenta"
                rows.append((f"CPU {index}", f"[{colour}]{usage:5.1f}%[/]"))
            used_mib = (overview.mem_total - overview.mem_free) >> 20
            cpu_table.border_title = (
                f"{view} Utilization ({len(rows)} CPUs), Avg CPU = {overview.cpu_avg:.1f}%, "
                f"Mem = {overview.mem_percent:.1f}% ({used_mib} MiB/{overview.mem_total >> 20} MiB)"
            )
        else:
            cpu_table.border_title = f"{view} Utilization: no overview yet"
        self._fill(cpu_table, rows)
        self._fill(
            self.query_one("#wd-tasks", DataTable),
            [
                (f"{r.job}@{r.task}", r.state_at(t), _clock(r.start, self.clock()))
                for r in self.data.tasks_on(worker_id, t)
            ],
        )
        config = worker.configuration

        def duration(key: str) -> str:
            value = config.get(key)
            return format_duration(value) if value else "None"

        self._fill(
            self.query_one("#wd-config", DataTable),
            [
                ("Listen address", str(config.get("listen_address", ""))),
                ("Hostname", worker.hostname),
                ("Workdir", str(config.get("work_dir", ""))),
                ("Heartbeat", duration("heartbeat_interval")),
                ("Overview interval", duration("overview_interval")),
                ("Idle timeout", duration("idle_timeout")),
                ("Time limit", duration("time_limit")),
            ],
        )

    def _autoalloc(self) -> None:
        t = self.window.end
        now = self.clock()
        queues = self.data.queues_at(t)
        queues_table = self.query_one("#queues-table", DataTable)
        self._fill(
            queues_table,
            [
                (
                    str(q.id),
                    str(len(self.data.allocations_of(q.id, t))),
                    _clock(q.created, now),
                    _clock(q.removed, now) if q.removed is not None and q.removed <= t else "",
                )
                for q in queues
            ],
        )
        selected = self._selected(queues_table)
        queue = self.data.queues.get(int(selected[0])) if selected else None
        timeline = self.query_one("#alloc-timeline", Static)
        if queue is None:
            timeline.update("[b]Allocations[/b]\nNo allocation queues in this time window")
            self.query_one("#queue-params", Static).update("")
            self._fill(self.query_one("#allocations-table", DataTable), [])
            return
        self.query_one("#queue-params", Static).update(
            "\n".join(f"{key}: {value}" for key, value in queue.params.items())
        )
        allocations = self.data.allocations_of(queue.id, t)
        points = samples(self.window.start, t, CHART_POINTS)
        colours = {"queued": "yellow", "running": "green", "finished": "grey50"}
        lines = [f"[b]Allocations of queue {queue.id}[/b]"]
        for allocation in allocations[-10:]:
            cells = []
            for x in points:
                if x < allocation.queued:
                    cells.append(" ")
                else:
                    cells.append(f"[{colours[allocation.status_at(x)]}]█[/]")
            lines.append(f"{allocation.id:>12} {''.join(cells)}")
        timeline.update("\n".join(lines))
        self._fill(
            self.query_one("#allocations-table", DataTable),
            [
                (
                    a.id,
                    a.status_at(t),
                    str(a.workers),
                    _clock(a.queued, now),
                    _clock(a.started, now) if a.started is not None and a.started <= t else "",
                    _clock(a.finished, now) if a.finished is not None and a.finished <= t else "",
                )
                for a in allocations
            ],
        )

