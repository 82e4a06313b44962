"""What MLflow tracking costs a fit: configs/tutorial-mlp.yaml for 20 epochs, without tracking,
with ``--track`` to a local ``mlflow server`` (SQLite store, artifacts served by it), and the
same with ``tracking.log_model: false``, as separate processes interleaved (A B C, C B A, ...);
the ratios of the median wall times to the untracked fit's (target <= 1.05). A tracked fit
starts its MLflow run beside the training and logs its params, every epoch, its files and
(unless log_model is false) its model, the SavedModel export, once it has trained.

    python bench/tracking_cost.py            # real Otto where common.otto_files finds it, 4 rounds
    python bench/tracking_cost.py --quick    # 2 rounds
    python bench/tracking_cost.py --smoke    # 1 round, 2 epochs, small generated data, SQLite, no server

Writes its block of bench/results/tracking.md.
"""

import sys

import common

sys.path.insert(0, str(common.ROOT))  # the tests' mlflow server helper
from tests.mlflow_server import start_mlflow

CONFIG = common.ROOT / "configs" / "tutorial-mlp.yaml"


def fit_command(d: common.Data, runs, epochs: int, track: str | None, model: bool = True) -> list[str]:
    sets = [f"data.train={d.train}", f"data.test={d.test}", f"train.epochs={epochs}"]
    sets += [] if model else ["tracking.log_model=false"]
    args = ["fit", CONFIG, "--runs-root", runs, "-q", *(x for kv in sets for x in ("--set", kv))]
    return common.ottotrain(*args, *(("--track", track) if track else ()))


def measure(d: common.Data, work, rounds: int, epochs: int, serve: bool) -> list[list[float]]:
    """Wall seconds of the plain fits, the tracked ones and the tracked ones without their model;
    ``serve``: to a server (else to its SQLite file)."""
    store = f"sqlite:///{work}/mlflow.db"
    server = start_mlflow(store, work).wait() if serve else None

    def job(track, model=True):
        return lambda: common.timed(fit_command(d, work / "runs", epochs, track, model))[0]

    uri = server.url if server else store
    try:
        return common.interleave(rounds, job(None), job(uri), job(uri, model=False))
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
        times = measure(d, work, r.pick(4, 2, 1), r.pick(20, 20, 2), serve=not r.smoke)
    names = ("no tracking", "--track (local mlflow server)", "--track, tracking.log_model: false")
    base = common.median(times[0])
    rows = []
    for name, t in zip(names, times):
        per_round = ", ".join(f"{x / p:.3f}" for p, x in zip(times[0], t))
        rows.append(
            (name, f"{common.median(t):.2f}", f"{min(t):.2f}", f"{common.median(t) / base:.3f}", per_round)
        )
    body = common.table(("fit", "median s", "min s", "ratio of medians", "per round (to no tracking)"), rows)
    print(body)
    r.record(
        "tracking",
        "MLflow tracking: a 20-epoch tutorial-MLP fit with and without --track",
        body,
        data=d.label,
    )


if __name__ == "__main__":
    main()
