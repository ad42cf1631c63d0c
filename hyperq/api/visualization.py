"""The task graph of a job as a DOT file (through pydot, an optional package)."""

from __future__ import annotations

from typing import Any

from hyperq.api.common import GenericPath
from hyperq.api.job import Job
from hyperq.api.task.task import Task
from hyperq.api.utils.package import MissingPackageException


def visualize_job(job: Job, path: GenericPath) -> None:
    """Write the job's tasks and dependency edges to `path` in the DOT format."""
    try:
        import pydot
    except ImportError:
        raise MissingPackageException("pydot") from None

    graph = pydot.Dot("job", graph_type="digraph")
    nodes: dict[int, Any] = {}

    def visit(task: Task) -> Any:
        node = nodes.get(task.task_id)
        if node is not None:
            return node
        node = pydot.Node(task.label)
        graph.add_node(node)
        for dependency in task.dependencies:
            dep_node = visit(dependency)
            graph.add_edge(pydot.Edge(dep_node.get_name(), node.get_name()))
        nodes[task.task_id] = node
        return node

    for task in job.tasks:
        visit(task)
    graph.write(str(path))
