"""Seconds per epoch of TabM-style ensembles against the plain net and k separate nets.

    python bench/tabm_speed.py DIR [ROWS] [FEATURES]   # default 42,000 x 138: Otto with KNN features
    python bench/tabm_speed.py DIR --xla               # XLA against the default, interleaved

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

import subprocess
import sys
from pathlib import Path

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
    subprocess.run(
        [sys.executable, "-m", "ottotrain", "fit", str(path), "--run-dir", str(run), "-q"],
        check=True,
        capture_output=True,
    )
    seconds = pd.read_csv(run / "history.csv")["seconds"]
    return seconds if all_epochs else float(seconds.iloc[-1])


def xla(d: Path):
    print(f"{'model':<24} {'XLA':>5} {'first epoch s':>14} {'later epochs s':>15}", flush=True)
    for rep in range(2):
        for label, ens in (("plain 3 x 512", None), ("batch k=4 width 512", {"k": 4, "kind": "batch"})):
            for jit in (False, True):
                cfg = config(d, 512, ens)
                cfg["train"].update(epochs=3, jit_compile=jit)
                name = f"xla-{rep}-{label.replace(' ', '-').replace('=', '')}-{jit}"
                s = epoch_seconds(d, name, cfg, all_epochs=True)
                on = "on" if jit else "off"
                print(f"{label:<24} {on:>5} {s.iloc[0]:>14.2f} {s.iloc[1:].mean():>15.2f}", flush=True)


def main():
    d = Path(sys.argv[1])
    args = [a for a in sys.argv[2:] if a != "--xla"]
    rows = int(args[0]) if args else 42_000
    features = int(args[1]) if len(args) > 1 else 138
    if not (d / "train.csv").exists():
        from ottotrain.data.synth import make_data

        make_data(d, rows=rows, test_rows=0, n_features=features)
    if "--xla" in sys.argv:
        return xla(d)
    plain = {w: epoch_seconds(d, f"plain-{w}", config(d, w)) for w in (512, 256)}
    print(f"{'model':<28} {'s/epoch':>8} {'/ plain':>8} {'/ k nets':>9}", flush=True)
    for w, s in plain.items():
        print(f"{f'plain 3 x {w}':<28} {s:>8.2f} {s / plain[512]:>8.2f} {'':>9}", flush=True)
    runs = [(f"batch k={k} width 512", 512, {"k": k, "kind": "batch"}, k) for k in (4, 8, 16, 32)]
    runs += [(f"batch k={k} width 256", 256, {"k": k, "kind": "batch"}, k) for k in (8, 32)]
    runs += [("packed k=4 width 512", 512, {"k": 4, "kind": "packed"}, 4)]
    for label, width, ens, k in runs:
        s = epoch_seconds(d, label.replace(" ", "-").replace("=", ""), config(d, width, ens))
        print(f"{label:<28} {s:>8.2f} {s / plain[512]:>8.2f} {s / (k * plain[width]):>9.2f}", flush=True)


if __name__ == "__main__":
    main()
