"""Run directories: layout and status (``rundir``), typed state, artifacts, the run's life and
the resume rules. Nothing here imports the engine. This package's namespace re-exports ``rundir``."""

from ottotrain.runs.rundir import (
    CV_FILE,
    CV_KIND,
    ENSEMBLE_FILE,
    FAILED,
    FINISHED,
    FOLDS_FILE,
    INTERRUPTED,
    MODELS,
    OOF_FILE,
    REQUIRED,
    RUNNING,
    STATE_DIR,
    STATUS,
    UNSAFE_SUFFIXES,
    WORK,
    check_format,
    check_not_running,
    check_run_dir_free,
    check_safe,
    claim_run_dir,
    died_while_running,
    new_run_dir,
    read_status,
    remove_temp_files,
    write_status,
)

__all__ = [
    "CV_FILE", "CV_KIND", "ENSEMBLE_FILE", "FAILED", "FINISHED", "FOLDS_FILE", "INTERRUPTED",
    "MODELS", "OOF_FILE", "REQUIRED", "RUNNING", "STATE_DIR", "STATUS", "UNSAFE_SUFFIXES", "WORK",
    "check_format", "check_not_running", "check_run_dir_free", "check_safe", "claim_run_dir",
    "died_while_running", "new_run_dir", "read_status", "remove_temp_files", "write_status",
]
