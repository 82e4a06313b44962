"""``ottotrain runs --track URI --experiment NAME``: an experiment's runs, as run directories are listed."""

from __future__ import annotations

from datetime import UTC, datetime

from mlflow.tracking import MlflowClient

from ottotrain.errors import RunError
from ottotrain.tracking.client import PARENT_TAG
from ottotrain.tracking.settings import allow_file_store, redact, without_credentials

_SCORES = ("val_log_loss", "oof_log_loss", "best_val_log_loss", "best_fold_log_loss")
_ACCURACY = ("val_accuracy", "final_val_accuracy", "oof_accuracy")


def list_experiment(uri: str, experiment: str, sort: str = "date") -> list[dict]:
    """One row per top-level run of the experiment (child runs are their parents' members):
    the columns of ``ottotrain runs``, plus the MLflow run id."""
    uri = without_credentials(uri)
    allow_file_store(uri)
    client = MlflowClient(uri)
    try:
        found = client.get_experiment_by_name(experiment)
        if found is None:
            raise RunError(f"--experiment {experiment}: no such experiment at {redact(uri)}")
        runs = client.search_runs([found.experiment_id], max_results=50_000)
    except RunError:
        raise
    except Exception as e:  # the server's own error, in one line
        why = redact(str(e)).splitlines()[0] if str(e) else ""
        raise RunError(f"--track {redact(uri)}: {type(e).__name__}: {why}") from None
    rows = [_row(r) for r in runs if PARENT_TAG not in r.data.tags]
    if sort == "score":
        return sorted(rows, key=lambda r: (r["log_loss"] is None, r["log_loss"] or 0.0))
    return sorted(rows, key=lambda r: r["date"])


def _row(run) -> dict:
    m, tags, info = run.data.metrics, run.data.tags, run.info
    score = next((k for k in _SCORES if k in m), None)
    return {  # the keys of workflows.report.list_runs' rows, which format_runs prints
        "name": info.run_name,
        "kind": tags.get("ottotrain.kind", ""),
        "smoke": False,
        "date": datetime.fromtimestamp(info.start_time / 1000, UTC).isoformat(timespec="seconds"),
        "status": info.status.lower(),
        "epochs": int(m["epochs_run"]) if "epochs_run" in m else None,
        "log_loss": None if score is None else m[score],
        "log_loss_key": score,
        "accuracy": next((m[k] for k in _ACCURACY if k in m), None),
        "seconds": round(((info.end_time or info.start_time) - info.start_time) / 1000, 1),
        "run_id": info.run_id,
        "run_dir": tags.get("ottotrain.run_dir"),
    }
