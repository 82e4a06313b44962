"""Predicting from a finished run directory, with nothing but the directory."""

from __future__ import annotations

import time
from pathlib import Path

from ottotrain import runs
from ottotrain.errors import DataError


def load_run(run_dir):
    """Open a finished run safely; return (preprocessor, keras model, status)."""
    from ottotrain.data import Preprocessor

    run_dir = Path(run_dir)
    info = runs.open_finished_run(run_dir)
    path = run_dir / "preprocess.json"
    pre = Preprocessor.from_json(path.read_bytes().decode("utf-8", "replace"), path)
    # Checked for foreign modules and code first, then loaded in Keras' safe mode.
    model = runs.load_model(run_dir / "model.keras", compile=False)
    return pre, model, info


def predict(run_dir, test_csv, out=None):
    """Write a Kaggle submission for ``test_csv`` from a finished run.

    Args:
        run_dir: a run directory made by ``fit``.
        test_csv: CSV with the id column and the features seen at fit.
        out: output path (default ``<run_dir>/submission-<test name>.csv``).

    Returns:
        dict with the output path, the row count and rows per second.
    """
    from ottotrain.data import load_test
    from ottotrain.train import predict_proba, write_submission

    run_dir = Path(run_dir)
    if out is not None:
        from ottotrain.io import check_output_path

        out = check_output_path(out)
        if out.exists() and out.resolve() == Path(test_csv).resolve():
            raise DataError(f"{out}: is the test file itself; give another output file name")
        if out.resolve().parent == run_dir.resolve() and out.name in (*runs.REQUIRED, "metrics.json",
                                                                      "history.csv", "summary.txt"):
            raise DataError(f"{out}: would overwrite the run's own {out.name}; give another "
                            "output file name")
    from ottotrain.cv import is_cv_run

    if is_cv_run(run_dir):  # a cv run: the average of its fold x seed models
        from ottotrain.cv import ensemble_proba, load_ensemble

        members, _ = load_ensemble(run_dir)
        s = members[0][0].state
        t0 = time.perf_counter()
        ids, x = load_test(test_csv, s["id_column"], s["target_column"], s["features"])
        proba = ensemble_proba(members, x)
    else:
        pre, model, _ = load_run(run_dir)
        s = pre.state
        t0 = time.perf_counter()
        ids, x = load_test(test_csv, s["id_column"], s["target_column"], s["features"])
        proba = predict_proba(model, pre.transform(x))
    if out is None:
        out = run_dir / f"submission-{Path(test_csv).name.split('.')[0]}.csv"
    write_submission(out, ids, proba, s["classes"], s["id_column"])
    dt = time.perf_counter() - t0
    return {"output": str(out), "rows": int(len(ids)), "seconds": round(dt, 3),
            "rows_per_second": round(len(ids) / dt, 1) if dt > 0 else None}
