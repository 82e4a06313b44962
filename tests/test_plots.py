"""plots.plot_run on hand-made run files: no TensorFlow, no training."""

import struct
import sys

import numpy as np
import pandas as pd
import pytest

from ottotrain.errors import RunError
from ottotrain.workflows.plots import plot_confusion, plot_curves, plot_run


def png_size(path):
    """(width, height) from the PNG signature and IHDR chunk; fails on anything else."""
    head = path.read_bytes()[:24]
    assert head[:8] == b"\x89PNG\r\n\x1a\n", f"{path}: no PNG signature"
    assert head[12:16] == b"IHDR", f"{path}: first chunk is not IHDR"
    return struct.unpack(">II", head[16:24])


def write_history(path, epochs=5, lr=None):
    rng = np.random.default_rng(0)
    lr = lr if lr is not None else [0.01] * epochs
    pd.DataFrame(
        {
            "epoch": range(1, epochs + 1),
            "loss": np.linspace(2, 1, epochs),
            "accuracy": np.linspace(0.3, 0.7, epochs),
            "val_loss": np.linspace(2.1, 1.2, epochs) + rng.normal(0, 0.01, epochs),
            "val_accuracy": np.linspace(0.3, 0.65, epochs),
            "lr": lr,
            "seconds": 0.5,
        }
    ).to_csv(path, index=False)


def write_predictions(path, n=200, classes=9, fold=False):
    rng = np.random.default_rng(1)
    names = [f"Class_{i + 1}" for i in range(classes)]
    p = rng.dirichlet(np.ones(classes), size=n)
    df = pd.DataFrame(p, columns=names)
    df.insert(0, "target", rng.choice(names, size=n))
    if fold:
        df.insert(0, "fold", rng.integers(1, 4, size=n))
    df.insert(0, "id", np.arange(n))
    df.to_csv(path, index=False)


def test_plot_run_writes_both_pngs_at_fixed_sizes(tmp_path):
    write_history(tmp_path / "history.csv")
    write_predictions(tmp_path / "val_predictions.csv")
    written = plot_run(tmp_path)
    assert [p.name for p in written] == ["curves.png", "confusion.png"]
    assert png_size(tmp_path / "curves.png") == (1200, 400)
    assert png_size(tmp_path / "confusion.png") == (700, 600)
    assert not list(tmp_path.glob(".*tmp*"))  # written atomically, no leftovers


def test_plot_run_skips_what_is_missing(tmp_path):
    assert plot_run(tmp_path) == []
    (tmp_path / "history.csv").write_text("epoch,loss,accuracy,val_loss,val_accuracy,lr,seconds\n")
    (tmp_path / "val_predictions.csv").write_text("")
    assert plot_run(tmp_path) == []  # header only / zero bytes: a run killed before any epoch
    with pytest.raises(RunError, match="nothing to plot"):
        plot_run(tmp_path, strict=True)
    with pytest.raises(RunError, match="no such run directory"):
        plot_run(tmp_path / "absent", strict=True)


def test_curves_handle_one_epoch_missing_values_and_lr_schedules(tmp_path):
    write_history(tmp_path / "one.csv", epochs=1)
    assert png_size(plot_curves(tmp_path / "one.csv", tmp_path / "one.png")) == (1200, 400)
    df = pd.read_csv(tmp_path / "one.csv")
    df["val_accuracy"] = np.nan
    df.to_csv(tmp_path / "nan.csv", index=False)
    assert plot_curves(tmp_path / "nan.csv", tmp_path / "nan.png").exists()
    write_history(tmp_path / "sched.csv", epochs=40, lr=list(0.1 * 0.8 ** np.arange(40)))
    assert png_size(plot_curves(tmp_path / "sched.csv", tmp_path / "sched.png")) == (1200, 400)


def test_confusion_from_a_cv_runs_oof_file(tmp_path):
    write_predictions(tmp_path / "oof.csv", fold=True, classes=4)
    assert [p.name for p in plot_run(tmp_path)] == ["confusion.png"]
    assert png_size(tmp_path / "confusion.png") == (700, 600)


def test_confusion_with_many_classes(tmp_path):
    write_predictions(tmp_path / "p.csv", n=500, classes=40)
    assert png_size(plot_confusion(tmp_path / "p.csv", tmp_path / "c.png")) == (700, 600)


def test_plots_do_not_touch_pyplot_or_the_backend(tmp_path):
    """A notebook or app importing ottotrain keeps its own matplotlib backend."""
    import subprocess

    write_history(tmp_path / "history.csv")
    # No pyplot means no backend chosen or switched (we never call matplotlib.use either).
    code = (
        f"import sys; from ottotrain.workflows.plots import plot_run; plot_run({str(tmp_path)!r}); "
        f"print('matplotlib.pyplot' in sys.modules)"
    )
    out = subprocess.run([sys.executable, "-c", code], capture_output=True, text=True, timeout=120)
    assert out.returncode == 0, out.stderr
    assert out.stdout.split() == ["False"], out.stdout


def test_a_cv_run_plots_every_members_curves(tmp_path):
    import shutil
    from pathlib import Path

    run = tmp_path / "cv"
    shutil.copytree(Path(__file__).parent / "data" / "runs-1.0" / "cv", run)
    assert [p.name for p in plot_run(run, strict=True)] == ["curves.png", "confusion.png"]
    assert png_size(run / "curves.png") == (1200, 400)
    every = (run / "curves.png").read_bytes()
    for extra in ("fold3-seed1", "fold3-seed2"):  # more members, more curves
        write_history(run / "models" / f"{extra}.history.csv", epochs=7)
    plot_run(run)
    assert (run / "curves.png").read_bytes() != every
