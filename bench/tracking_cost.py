"""What MLflow tracking costs a fit: configs/tutorial-mlp.yaml for 20 epochs, without tracking,
with ``--track`` to a local ``mlflow server`` (SQLite store, artifacts served by it), and the
same with ``tracking.log_model: false``, as separate processes interleaved (A B C, C B A, ...);
the ratios of the median wall times to the untracked fit's (target <= 1.05). A tracked fit
starts its tracking process with the command (it imports MLflow while the command reads the
data and imports TensorFlow), starts its MLflow run beside the training and logs its params,
every epoch, its files and (unless log_model is false) its model, the SavedModel export, once
it has trained.

Then where a tracked fit's time goes: one more tracked fit in this process, with timers
around each part of tracking this process runs (MLflow's import timed alone first, as the
tracking process pays it while this one reads the data and imports TensorFlow).

    python bench/tracking_cost.py            # real Otto where common.otto_files finds it, 4 rounds
    python bench/tracking_cost.py --quick    # 2 rounds (--rounds N: N)
    python bench/tracking_cost.py --smoke    # 1 round, 2 epochs, small generated data, SQLite, no server

Writes its block of bench/results/tracking.md.
"""

import contextlib
import importlib
import sys
import time
from collections import defaultdict

import common

sys.path.insert(0, str(common.ROOT))  # the tests' mlflow server helper
from tests.mlflow_server import start_mlflow

CONFIG = common.ROOT / "configs" / "tutorial-mlp.yaml"


def fit_command(d: common.Data, runs, epochs: int, track: str | None, model: bool = True) -> list[str]:
    sets = [f"data.train={d.train}", f"data.test={d.test}", f"train.epochs={epochs}"]
    sets += [] if model else ["tracking.log_model=false"]
    args = ["fit", CONFIG, "--runs-root", runs, "-q", *(x for kv in sets for x in ("--set", kv))]
    return common.ottotrain(*args, *(("--track", track) if track else ()))


def measure(d: common.Data, work, rounds: int, epochs: int, uri: str, smoke=False) -> list[list[float]]:
    """Wall seconds of the plain fits, the tracked ones and the tracked ones without their model
    (left out of a smoke: it checks the script, and each fit is a process importing TensorFlow)."""

    def job(track, model=True):
        return lambda: common.timed(fit_command(d, work / "runs", epochs, track, model))[0]

    return common.interleave(rounds, job(None), job(uri), *([] if smoke else [job(uri, model=False)]))


# (label, module, attribute): the parts of a tracked fit timed in ``split``, in the order they
# run. MLflow itself runs in the tracking process (tracking/session.py): its import is timed
# alone here, the rest of its work is inside the command's wait for it at the end.
PARTS = (
    ("the fit's own test predictions, submission, plots (for scale)", "ottotrain.workflows.fit", "_finish"),
    ("after the training: the command waits for the tracking process (it logs the run's params, "
     "metrics and files while this process exports the model, then saves and uploads the model)",
     "ottotrain.tracking.session", "_Side.end"),
    ("of that, here: the run opened as a graph", "ottotrain.workflows.export", "open_any_graph"),
    ("of that, here: the SavedModel traced and written", "ottotrain.engine.export", "save"),
)  # fmt: skip
IMPORT = "importing MLflow's client (in the tracking process, as the command reads its data; timed alone)"
ORDER = (IMPORT, *(p[0] for p in PARTS))


@contextlib.contextmanager
def _timers(seconds: dict):
    """Wrap each part of ``PARTS`` to add its seconds to ``seconds``."""
    undo = []

    def wrap(owner, name, label):
        fn = getattr(owner, name)

        def timed(*args, **kwargs):
            t0 = time.perf_counter()
            try:
                return fn(*args, **kwargs)
            finally:
                seconds[label] += time.perf_counter() - t0

        setattr(owner, name, timed)
        undo.append((owner, name, fn))

    for label, module, attr in PARTS:
        owner = importlib.import_module(module)
        *path, name = attr.split(".")
        for part in path:
            owner = getattr(owner, part)
        wrap(owner, name, label)
    try:
        yield
    finally:
        for owner, name, fn in reversed(undo):
            setattr(owner, name, fn)


def split(d: common.Data, work, epochs: int, uri: str) -> list[tuple[str, str]]:
    """One tracked fit here, its tracking's parts timed: (part, seconds) rows."""
    importlib.import_module("ottotrain.engine.build")  # TensorFlow: imported before a fit tracks
    t0 = time.perf_counter()
    for module in ("ottotrain.tracking.client", "ottotrain.tracking.kinds"):
        importlib.import_module(module)
    seconds = defaultdict(float, {IMPORT: time.perf_counter() - t0})
    with _timers(seconds):
        t1 = time.perf_counter()
        rc, _, err = common.in_process(fit_command(d, work / "split-runs", epochs, uri))
        total = time.perf_counter() - t1
    if rc != 0 or "Warning: MLflow" in err:
        raise RuntimeError(f"the timed fit failed or warned: {err[-2000:]}")
    rows = [(k, f"{seconds[k]:.3f}") for k in ORDER]
    return rows + [("the whole fit (this process: TensorFlow imported already)", f"{total:.2f}")]


def main(argv=None):
    ap = common.parser(__doc__)
    ap.add_argument("--rounds", type=int, help="interleaved rounds (default 4, --quick 2)")
    a = ap.parse_args(argv)
    r = common.Run.start(__file__, argv, a)
    with common.scratch() as work:
        d = common.data(r, work)
        # The smoke checks the script, not the server: its database migrations take a minute.
        store = f"sqlite:///{work}/mlflow.db"
        server = None if r.smoke else start_mlflow(store, work).wait()
        uri, epochs = server.url if server else store, r.pick(20, 20, 2)
        try:
            times = measure(d, work, a.rounds or r.pick(4, 2, 1), epochs, uri, r.smoke)
            parts = split(d, work, epochs, uri)
        finally:
            if server is not None:
                server.stop()
    names = ("no tracking", "--track (local mlflow server)", "--track, tracking.log_model: false")
    base = common.median(times[0])
    rows = []
    for name, t in zip(names, times):
        per_round = ", ".join(f"{x / p:.3f}" for p, x in zip(times[0], t))
        rows.append(
            (name, f"{common.median(t):.2f}", f"{min(t):.2f}", f"{common.median(t) / base:.3f}", per_round)
        )
    body = common.table(("fit", "median s", "min s", "ratio of medians", "per round (to no tracking)"), rows)
    body += "\n\nWhere a tracked fit's time goes (one more fit, in this process):\n\n"
    body += common.table(("part", "seconds"), parts)
    print(body)
    r.record(
        "tracking",
        "MLflow tracking: a 20-epoch tutorial-MLP fit with and without --track",
        body,
        data=d.label,
    )


if __name__ == "__main__":
    main()
