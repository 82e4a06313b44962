"""The names ``workflows.tune`` reads from here: they moved to ``ottotrain.execute``."""

from ottotrain.execute import DaskExecutor, check_options, default_threads, versions, write_files
from ottotrain.execute.dask import (
    TaskResult,
    check_worker,
    open_cluster,
    run_data,
    run_task,
    run_tasks,
    shared_data,
)

Cluster = DaskExecutor  # what open_cluster yields

__all__ = [
    "Cluster",
    "TaskResult",
    "check_options",
    "check_worker",
    "default_threads",
    "open_cluster",
    "run_data",
    "run_task",
    "run_tasks",
    "shared_data",
    "versions",
    "write_files",
]
