"""Two checkouts of ottotrain side by side: the same commands, interleaved, as ratios.

    python bench/before_after.py --before /path/to/old/checkout [--reps 3]

Runs each command with ``PYTHONPATH`` set to one checkout, then the other (A B, B A, ...),
in separate processes, and reports the median wall time of each side and after/before.
The data are the real Otto files in ../shared/otto/ when present, else generated data
of the same shape. Used for issue 15 (the restructuring must not slow anything down);
results go to bench/RESULTS.md by hand, with this command.
"""

from __future__ import annotations

import argparse
import os
import statistics
import subprocess
import sys
import tempfile
import time
from pathlib import Path

ROOT = Path(__file__).resolve().parent.parent
REAL = ROOT.parent / "shared" / "otto"


def timed(cmd, pythonpath, cwd) -> float:
    env = dict(os.environ, PYTHONPATH=str(pythonpath), TF_CPP_MIN_LOG_LEVEL="2")
    t0 = time.perf_counter()
    p = subprocess.run(cmd, env=env, cwd=cwd, capture_output=True, text=True)
    wall = time.perf_counter() - t0
    if p.returncode not in (0, 1):  # the bad config exits 1 on purpose
        raise SystemExit(f"failed ({p.returncode}): {' '.join(map(str, cmd))}\n{p.stderr[-2000:]}")
    return wall


def main():
    ap = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    ap.add_argument("--before", required=True, help="the other checkout's root")
    ap.add_argument("--reps", type=int, default=3)
    args = ap.parse_args()
    before, after = Path(args.before).resolve(), ROOT
    work = Path(tempfile.mkdtemp(prefix="ottotrain-ab-"))
    py = sys.executable
    if (REAL / "train.csv.gz").exists():
        train, data = REAL / "train.csv.gz", "real Otto data (../shared/otto/)"
    else:
        subprocess.run(
            [py, "-m", "ottotrain", "make-data", work / "d", "--rows", "61878", "--test-rows", "1000"],
            check=True,
            capture_output=True,
        )
        train, data = work / "d" / "train.csv", "generated Otto-shaped data, 61,878 rows"
    bad = work / "bad.yaml"
    bad.write_text("model: {layers: [Dense]}\n")
    ot = [py, "-m", "ottotrain"]
    cfgs = ROOT / "bench" / "configs"
    commands = {
        "ottotrain --help": lambda d: [*ot, "--help"],
        "fit bad.yaml (config error)": lambda d: [*ot, "fit", bad],
        "fit logreg, 3 epochs": lambda d: [
            *ot,
            "fit",
            cfgs / "logreg.yaml",
            "--set",
            f"data.train={train}",
            "--set",
            "train.epochs=3",
            "--run-dir",
            d,
            "-q",
        ],
        "fit mlp, 3 epochs": lambda d: [
            *ot,
            "fit",
            cfgs / "mlp.yaml",
            "--set",
            f"data.train={train}",
            "--set",
            "train.epochs=3",
            "--run-dir",
            d,
            "-q",
        ],
        "fit mlp3x512, 2 epochs": lambda d: [
            *ot,
            "fit",
            cfgs / "mlp3x512.yaml",
            "--set",
            f"data.train={train}",
            "--set",
            "train.epochs=2",
            "--run-dir",
            d,
            "-q",
        ],
        "cv mlp, 3 folds x 1, 2 epochs": lambda d: [
            *ot,
            "cv",
            cfgs / "mlp.yaml",
            "--set",
            f"data.train={train}",
            "--set",
            "train.epochs=2",
            "--folds",
            "3",
            "--run-dir",
            d,
            "-q",
        ],
    }
    print(f"data: {data}; reps: {args.reps}; load before: {os.getloadavg()[0]:.1f}")
    print("| command | before (s) | after (s) | after / before |")
    print("|---|---|---|---|")
    for name, make in commands.items():
        times = {"before": [], "after": []}
        for rep in range(args.reps):
            order = [("before", before), ("after", after)]
            if rep % 2:
                order.reverse()
            for side, tree in order:
                d = work / f"{side}-{abs(hash(name))}-{rep}"
                times[side].append(timed(make(d), tree, work))
        b, a = statistics.median(times["before"]), statistics.median(times["after"])
        print(f"| {name} | {b:.3f} | {a:.3f} | {a / b:.3f} |", flush=True)
    print(f"load after: {os.getloadavg()[0]:.1f}")


if __name__ == "__main__":
    main()
