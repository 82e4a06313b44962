"""Two checkouts of ottotrain side by side: the same commands, interleaved, as ratios.

    python bench/before_after.py --before /path/to/old/checkout [--reps 3]
    python bench/before_after.py --quick --before PATH   # one repetition
    python bench/before_after.py --smoke                 # this checkout against itself, 2 short commands

Runs each command with ``PYTHONPATH`` set to one checkout, then the other (A B, B A, ...),
in separate processes, and reports the median wall time of each side and after/before.
Without ``--before`` both sides are this checkout: the ratios then show the noise floor.
The data are the real Otto files (``common.otto_files``) when present, else generated data
of the same shape. Used for issue 15 (the restructuring must not slow anything down).
Writes its block of bench/results/side_by_side.md.
"""

from __future__ import annotations

import os
import subprocess
import time
from pathlib import Path

import common

CONFIGS = common.BENCH / "configs"


def timed(cmd, pythonpath, cwd) -> float:
    env = dict(os.environ, PYTHONPATH=str(pythonpath), TF_CPP_MIN_LOG_LEVEL="2")
    t0 = time.perf_counter()
    p = subprocess.run(cmd, env=env, cwd=cwd, capture_output=True, text=True)
    wall = time.perf_counter() - t0
    if p.returncode not in (0, 1):  # the bad config exits 1 on purpose
        raise SystemExit(f"failed ({p.returncode}): {' '.join(map(str, cmd))}\n{p.stderr[-2000:]}")
    return wall


def commands(train: Path, bad: Path, smoke: bool) -> dict:
    """Name -> a function of the run directory giving the command."""

    def fit(model, epochs, *extra):
        sets = ["--set", f"data.train={train}", "--set", f"train.epochs={epochs}"]
        return lambda d: common.ottotrain(*extra[:1] or ["fit"], CONFIGS / f"{model}.yaml", *sets, *extra[1:],
                                          "--run-dir", d, "-q")  # fmt: skip

    out = {
        "ottotrain --help": lambda d: common.ottotrain("--help"),
        "fit bad.yaml (config error)": lambda d: common.ottotrain("fit", bad),
        "fit logreg, 3 epochs": fit("logreg", 3),
        "fit mlp, 3 epochs": fit("mlp", 3),
        "fit mlp3x512, 2 epochs": fit("mlp3x512", 2),
        "cv mlp, 3 folds x 1, 2 epochs": fit("mlp", 2, "cv", "--folds", "3"),
    }
    # A smoke run times the two that start no TensorFlow (seconds, not tens of them).
    return dict(list(out.items())[:2]) if smoke else out


def main(argv=None):
    ap = common.parser(__doc__)
    ap.add_argument("--before", type=Path, default=common.ROOT, help="the other checkout's root")
    ap.add_argument("--reps", type=int, default=None)
    args = ap.parse_args(argv)
    r = common.Run.start(__file__, argv, args)
    reps = args.reps or r.pick(3, 1, 1)
    before, after = args.before.resolve(), common.ROOT
    rows = []
    with common.scratch("ottotrain-ab-") as work:
        data = common.data(r, work, test_rows=1_000)
        bad = work / "bad.yaml"
        bad.write_text("model: {layers: [Dense]}\n")
        print(f"data: {data.label}; reps: {reps}; load before: {r.load_before}", flush=True)
        for i, (name, make) in enumerate(commands(data.train, bad, r.smoke).items()):
            times = {"before": [], "after": []}
            for rep in range(reps):
                order = [("before", before), ("after", after)]
                if rep % 2:
                    order.reverse()
                for side, tree in order:
                    times[side].append(timed(make(work / f"{side}-{i}-{rep}"), tree, work))
            b, a = common.median(times["before"]), common.median(times["after"])
            rows.append((name, f"{b:.3f}", f"{a:.3f}", f"{a / b:.3f}"))
            print(f"| {' | '.join(rows[-1])} |", flush=True)
    same = " (both sides this checkout: the noise floor)" if before == after else ""
    body = f"*Before*: `{before}`; *after*: `{after}`{same}; {reps} interleaved runs per side, medians.\n\n"
    body += common.table(("command", "before (s)", "after (s)", "after / before"), rows)
    r.record("side_by_side", "Two checkouts, the same commands", body, data=data.label)


if __name__ == "__main__":
    main()
