"""cv of configs/tutorial-mlp.yaml on Otto, serially and on a local Dask cluster (``--workers 2``).

    python bench/cluster_cv.py [--train /work/shared/otto/train.csv.gz] [--folds 5] [--seeds 4]
    python bench/cluster_cv.py --smoke   # 1,500 generated rows, 2 folds x 1 seed, 2 epochs

The serial run's members use 2 TensorFlow threads one after another; the cluster's two
workers each train one member at a time with 1 thread. Printed: each run's wall time (the
whole command), the sum of its member times, the wall-time ratio, and the scheduler overhead
per member, two ways: (workers x the cluster phase's wall - the sum of task times) / members,
i.e. the worker time per member not spent in a task; and the round trip of a no-op task
on a fresh 2-worker local cluster (the median of 50).
"""

import argparse
import json
import statistics
import subprocess
import sys
import tempfile
import time
from pathlib import Path

ROOT = Path(__file__).resolve().parent.parent


def cv(out: Path, name: str, args: list[str], common: list[str]) -> dict:
    cmd = [sys.executable, "-m", "ottotrain", "cv", *common, "--run-dir", str(out / name), "-q", *args]
    print("$", " ".join(cmd), flush=True)
    t0 = time.perf_counter()
    subprocess.run(cmd, check=True)
    wall = time.perf_counter() - t0
    m = json.loads((out / name / "metrics.json").read_text())
    return {"wall": wall, "metrics": m}


def noop_round_trip() -> float:
    from distributed import Client, LocalCluster

    with LocalCluster(n_workers=2, threads_per_worker=1, processes=True, dashboard_address=":0") as lc:
        with Client(lc) as client:
            client.submit(int, 0, pure=False).result()  # connections made
            times = []
            for i in range(50):
                t0 = time.perf_counter()
                client.submit(int, i, pure=False).result()
                times.append(time.perf_counter() - t0)
    return statistics.median(times)


def main(argv=None):
    p = argparse.ArgumentParser()
    p.add_argument("--train", default="/work/shared/otto/train.csv.gz")
    p.add_argument("--folds", type=int, default=5)
    p.add_argument("--seeds", type=int, default=4)
    p.add_argument("--smoke", action="store_true", help="seconds: small generated data, 2 epochs")
    a = p.parse_args(argv)
    with tempfile.TemporaryDirectory(prefix="cluster-cv-") as tmp:
        out = Path(tmp)
        smoke = []
        if a.smoke:
            from ottotrain.data.synth import make_data

            a.train, a.folds, a.seeds = make_data(out / "data", rows=1_500, test_rows=0)[0], 2, 1
            smoke = ["--set", "train.epochs=2"]
        common = [
            str(ROOT / "configs" / "tutorial-mlp.yaml"),
            "--set", f"data.train={a.train}", "--set", "data.test=null",
            "--folds", str(a.folds), "--seeds", str(a.seeds), *smoke,
        ]  # fmt: skip
        serial = cv(out, "serial", ["--member-threads", "2"], common)
        workers = cv(out, "workers2", ["--workers", "2"], common)
    n = a.folds * a.seeds
    t = workers["metrics"]["timings"]
    idle = (2 * t["cluster_wall_seconds"] - t["cluster_member_seconds"]) / n
    rt = noop_round_trip()
    print()
    print("| run | member threads | wall s | sum of member train s | OOF log loss |")
    print("|---|---|---|---|---|")
    for name, r, threads in (("serial", serial, 2), ("--workers 2", workers, 1)):
        m = r["metrics"]
        print(
            f"| {name} | {threads} | {r['wall']:.1f} | {m['timings']['member_train_seconds']:.1f} | "
            f"{m['oof_log_loss']:.4f} |"
        )
    print()
    print(f"wall-time ratio (--workers 2 / serial): {workers['wall'] / serial['wall']:.2f}")
    print(
        f"cluster phase: {t['cluster_wall_seconds']:.1f} s wall, {t['cluster_member_seconds']:.1f} s of "
        f"task time on 2 workers: {idle:.2f} s per member not spent in a task"
    )
    print(f"no-op task round trip on a local 2-worker cluster: {rt * 1000:.1f} ms (median of 50)")


if __name__ == "__main__":
    main()
