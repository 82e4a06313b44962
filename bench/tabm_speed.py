"""Seconds per epoch of TabM-style ensembles against the plain net and k separate nets.

    python bench/tabm_speed.py [DIR] [ROWS] [FEATURES]   # default 42,000 x 138: Otto with KNN features
    python bench/tabm_speed.py [DIR] --xla               # XLA against the default, interleaved
    python bench/tabm_speed.py --quick                   # k = 4 and 8 at width 512 only
    python bench/tabm_speed.py --smoke                   # 1,000 x 20 rows, the plain net and k = 2

Without DIR the rows go to a scratch folder. Writes its block of bench/results/tabm.md.

Generates Otto-shaped rows once into DIR (``make_data``), then for each model fits 2 epochs
(batch 512, Adam, no early stopping) in a fresh process and reads the second epoch's
seconds from ``history.csv`` (the first one includes tracing). Models: the plain 3 x 512
ReLU net; ``model.ensemble: {k, kind: batch}`` on the same layers for k = 4, 8, 16, 32; the
same at width 256; and ``packed`` (k independent nets in one) for k = 4. "k separate
nets" is k times the plain net's epoch at the same width: a bag trains them one after another.
"/ plain" is against the plain 3 x 512 net.

``--xla`` times the plain 3 x 512 net and k = 4 at width 512 with ``train.jit_compile``
off and on, twice each, interleaved, 3 epochs each: the first epoch (tracing and XLA's
compile) and the mean of the other two.
"""

from __future__ import annotations

from pathlib import Path

import common
import pandas as pd
import yaml


def config(d: Path, width: int, ensemble=None) -> dict:
    layers = []
    for _ in range(3):
        layers += [{"Dense": {"units": width, "activation": "relu"}}, {"Dropout": {"rate": 0.1}}]
    layers += [{"Dense": {"units": "n_classes"}}, {"Activation": "softmax"}]
    model = {"layers": layers, **({"ensemble": ensemble} if ensemble else {})}
    return {
        "data": {"train": str(d / "train.csv"), "validation_split": 0.15},
        "model": model,
        "train": {"optimizer": {"name": "adam", "learning_rate": 0.001}, "epochs": 2, "batch_size": 512},
    }


def epoch_seconds(d: Path, name: str, cfg: dict, all_epochs: bool = False):
    path = d / f"{name}.yaml"
    path.write_text(yaml.safe_dump(cfg))
    run = d / "runs" / name
    common.timed(common.ottotrain("fit", path, "--run-dir", run, "-q"))
    seconds = pd.read_csv(run / "history.csv")["seconds"]
    return seconds if all_epochs else float(seconds.iloc[-1])


def xla(d: Path, reps: int) -> list[str]:
    lines = [f"{'model':<24} {'XLA':>5} {'first epoch s':>14} {'later epochs s':>15}"]
    for rep in range(reps):
        for label, ens in (("plain 3 x 512", None), ("batch k=4 width 512", {"k": 4, "kind": "batch"})):
            for jit in (False, True):
                cfg = config(d, 512, ens)
                cfg["train"].update(epochs=3, jit_compile=jit)
                name = f"xla-{rep}-{label.replace(' ', '-').replace('=', '')}-{jit}"
                s = epoch_seconds(d, name, cfg, all_epochs=True)
                on = "on" if jit else "off"
                lines.append(f"{label:<24} {on:>5} {s.iloc[0]:>14.2f} {s.iloc[1:].mean():>15.2f}")
                print(lines[-1], flush=True)
    return lines


def speeds(d: Path, r: common.Run) -> list[str]:
    widths = r.pick((512, 256), (512,), (512,))
    plain = {w: epoch_seconds(d, f"plain-{w}", config(d, w)) for w in widths}
    lines = [f"{'model':<28} {'s/epoch':>8} {'/ plain':>8} {'/ k nets':>9}"]
    for w, s in plain.items():
        lines.append(f"{f'plain 3 x {w}':<28} {s:>8.2f} {s / plain[512]:>8.2f} {'':>9}")
    runs = [
        (f"batch k={k} width 512", 512, {"k": k, "kind": "batch"}, k)
        for k in r.pick((4, 8, 16, 32), (4, 8), (2,))
    ]
    if not (r.smoke or r.quick):
        runs += [(f"batch k={k} width 256", 256, {"k": k, "kind": "batch"}, k) for k in (8, 32)]
        runs += [("packed k=4 width 512", 512, {"k": 4, "kind": "packed"}, 4)]
    for label, width, ens, k in runs:
        s = epoch_seconds(d, label.replace(" ", "-").replace("=", ""), config(d, width, ens))
        lines.append(f"{label:<28} {s:>8.2f} {s / plain[512]:>8.2f} {s / (k * plain[width]):>9.2f}")
        print(lines[-1], flush=True)
    return lines


def main(argv=None):
    ap = common.parser(__doc__)
    ap.add_argument("dir", nargs="?", type=Path)
    ap.add_argument("rows", nargs="?", type=int)
    ap.add_argument("features", nargs="?", type=int)
    ap.add_argument("--xla", action="store_true", help="XLA against the default, interleaved")
    a = ap.parse_args(argv)
    r = common.Run.start(__file__, argv, a)
    rows, features = a.rows or r.pick(42_000, 42_000, 1_000), a.features or r.pick(138, 138, 20)
    with common.scratch() as work:
        d = a.dir or work
        if not (d / "train.csv").exists():
            from ottotrain.data.synth import make_data

            make_data(d, rows=rows, test_rows=0, n_features=features)
        lines = xla(d, r.pick(2, 1, 1)) if a.xla else speeds(d, r)
    title = "XLA on the ensemble" if a.xla else "TabM-style ensembles: seconds per epoch"
    body = f"{rows:,} rows x {features} features.\n\n```\n" + "\n".join(lines) + "\n```"
    r.record("tabm", title, body, key="--xla" if a.xla else "")


if __name__ == "__main__":
    main()
