"""What MLflow tracking costs a fit: configs/tutorial-mlp.yaml for 20 epochs, without tracking
and with ``--track`` to a local ``mlflow server`` (SQLite store, artifacts served by it), as
separate processes interleaved (plain, tracked, tracked, plain, ...); the ratio of the median
wall times (target <= 1.05). A tracked fit logs its params, every epoch, its files and its
model (the SavedModel export) once it has trained.

    python bench/tracking_cost.py            # real Otto where common.otto_files finds it, 5 rounds
    python bench/tracking_cost.py --quick    # 3 rounds
    python bench/tracking_cost.py --smoke    # 1 round, 2 epochs, small generated data, SQLite, no server

Writes its block of bench/results/tracking.md.
"""

import sys

import common

sys.path.insert(0, str(common.ROOT))  # the tests' mlflow server helper
from tests.mlflow_server import start_mlflow

CONFIG = common.ROOT / "configs" / "tutorial-mlp.yaml"


def fit_command(d: common.Data, runs, epochs: int, track: str | None) -> list[str]:
    sets = [f"data.train={d.train}", f"data.test={d.test}", f"train.epochs={epochs}"]
    args = ["fit", CONFIG, "--runs-root", runs, "-q", *(x for kv in sets for x in ("--set", kv))]
    return common.ottotrain(*args, *(("--track", track) if track else ()))


def measure(d: common.Data, work, rounds: int, epochs: int, serve: bool) -> tuple[list[float], list[float]]:
    """Wall seconds of the plain and the tracked fits; ``serve``: to a server (else to its SQLite file)."""
    store = f"sqlite:///{work}/mlflow.db"
    server = start_mlflow(store, work).wait() if serve else None

    def job(track):
        return lambda: common.timed(fit_command(d, work / "runs", epochs, track))[0]

    try:
        return tuple(common.interleave(rounds, job(None), job(server.url if server else store)))
    finally:
        if server is not None:
            server.stop()


def main(argv=None):
    ap = common.parser(__doc__)
    a = ap.parse_args(argv)
    r = common.Run.start(__file__, argv, a)
    with common.scratch() as work:
        d = common.data(r, work)
        # The smoke checks the script, not the server: its database migrations take a minute.
        plain, tracked = measure(d, work, r.pick(5, 3, 1), r.pick(20, 20, 2), serve=not r.smoke)
    ratio = common.median(tracked) / common.median(plain)
    rows = [
        ("no tracking", f"{common.median(plain):.2f}", f"{min(plain):.2f}", ""),
        (
            "--track (local mlflow server)",
            f"{common.median(tracked):.2f}",
            f"{min(tracked):.2f}",
            f"{ratio:.3f}",
        ),
    ]
    body = common.table(("fit", "median s", "min s", "ratio of medians"), rows)
    body += "\n\nPer round (tracked / plain): " + ", ".join(f"{t / p:.3f}" for p, t in zip(plain, tracked))
    print(body)
    r.record(
        "tracking",
        "MLflow tracking: a 20-epoch tutorial-MLP fit with and without --track",
        body,
        data=d.label,
    )


if __name__ == "__main__":
    main()
